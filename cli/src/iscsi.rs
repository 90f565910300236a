//! The node's iSCSI portal: hpchain volumes as `BlockDevice`s, and a
//! reconciler that keeps the portal's exports equal to the cluster map's.
//!
//! This lives in the binary because neither crate knows the other
//! (docs/architecture.md): the engine offers volumes, the target offers a
//! `BlockDevice` trait, and this module joins them.

use async_trait::async_trait;
use hpchain_engine::api::metric_family;
use hpchain_engine::cluster::map::{iscsi_snapshot_target_name, iscsi_target_name, IscsiExport};
use hpchain_engine::cluster::ClusterMapState;
use hpchain_engine::daemon::{Extension, NodeContext};
use hpchain_engine::volume::{VolumeClient, VolumeError};
use hpchain_iscsi::{BlockDevice, Chap, DeviceError, ExportConfig, Portal};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// How often the portal compares its exports with the map.
const RECONCILE_EVERY: Duration = Duration::from_millis(300);

/// A volume seen through the volume client. Its size is read from the
/// map at every command, so a resize reaches initiators as a unit
/// attention without any notification.
struct VolumeDevice {
    name: String,
    /// Serves this snapshot of the volume (read-only) instead of the head.
    snapshot: Option<String>,
    block_size: u32,
    object_size: u64,
    volumes: VolumeClient,
    map: Arc<RwLock<ClusterMapState>>,
}

fn device_error(e: VolumeError) -> DeviceError {
    match e {
        VolumeError::OutOfRange { .. } => DeviceError::OutOfRange,
        VolumeError::Unavailable { .. } => DeviceError::Unavailable(e.to_string()),
        // Lost on every replica: an unrecovered read error, as a disk says it.
        VolumeError::Corrupt { .. } => DeviceError::Medium(e.to_string()),
        VolumeError::NotFound(_)
        | VolumeError::SnapshotNotFound { .. }
        | VolumeError::TooLarge { .. }
        | VolumeError::Failed { .. } => DeviceError::Io(e.to_string()),
    }
}

#[async_trait]
impl BlockDevice for VolumeDevice {
    fn block_size(&self) -> u32 {
        self.block_size
    }
    fn size(&self) -> u64 {
        self.map
            .read()
            .ok()
            .and_then(|m| {
                let v = m.volumes.get(&self.name)?;
                match &self.snapshot {
                    None => Some(v.size),
                    Some(s) => v.snapshot(s).map(|s| s.size),
                }
            })
            .unwrap_or(0)
    }
    async fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, DeviceError> {
        self.volumes
            .read_at(&self.name, self.snapshot.as_deref(), offset, len as u64)
            .await
            .map_err(device_error)
    }
    async fn write(&self, offset: u64, data: &[u8]) -> Result<(), DeviceError> {
        if self.snapshot.is_some() {
            // The logical unit is write-protected; this is a second guard.
            return Err(DeviceError::Io("a snapshot is read-only".into()));
        }
        self.volumes
            .write(&self.name, offset, data)
            .await
            .map_err(device_error)
    }
    async fn flush(&self) -> Result<(), DeviceError> {
        // A write is acknowledged only once durable on a majority.
        Ok(())
    }
    async fn discard(&self, offset: u64, len: u64) -> Result<(), DeviceError> {
        if self.snapshot.is_some() {
            return Err(DeviceError::Io("a snapshot is read-only".into()));
        }
        self.volumes
            .discard(&self.name, offset, len)
            .await
            .map_err(device_error)
    }
    fn discard_granularity(&self) -> u64 {
        // Space comes back a whole object at a time.
        self.object_size
    }
    async fn settle(&self) {
        // An attempt whose answer was lost or abandoned may still be
        // proposed for a short while (VolumeClient::settle_writes).
        self.volumes.settle_writes().await;
    }
}

fn chap(c: &Option<hpchain_engine::cluster::map::ChapCredentials>) -> Option<Chap> {
    c.as_ref().map(|c| Chap {
        user: c.user.clone(),
        secret: c.secret.clone(),
    })
}

fn export_config(iqn: &str, export: &IscsiExport) -> ExportConfig {
    ExportConfig {
        iqn: iqn.to_string(),
        chap: chap(&export.chap),
        mutual_chap: chap(&export.mutual_chap),
        allowed_initiators: export.allowed_initiators.clone(),
        read_only: export.read_only,
    }
}

/// What one export serves: a volume's head or one of its snapshots.
#[derive(Clone, PartialEq, Eq)]
struct Served {
    volume: String,
    snapshot: Option<String>,
    /// Volume id and snapshot id: a different object under the same
    /// name must be exported anew.
    ids: (u64, Option<u64>),
    block_size: u32,
    object_size: u64,
    export: IscsiExport,
}

/// Every export in the map, by target name.
fn wanted_exports(map: &ClusterMapState) -> HashMap<String, Served> {
    let mut wanted = HashMap::new();
    for v in map.volumes.values() {
        let Some(object_size) = map.pools.get(&v.pool).map(|p| p.object_size) else {
            continue;
        };
        if let Some(export) = &v.iscsi {
            wanted.insert(
                iscsi_target_name(&v.name),
                Served {
                    volume: v.name.clone(),
                    snapshot: None,
                    ids: (v.id, None),
                    block_size: v.block_size,
                    object_size,
                    export: export.clone(),
                },
            );
        }
        for s in &v.snapshots {
            if let Some(export) = &s.iscsi {
                wanted.insert(
                    iscsi_snapshot_target_name(&v.name, &s.name),
                    Served {
                        volume: v.name.clone(),
                        snapshot: Some(s.name.clone()),
                        ids: (v.id, Some(s.id)),
                        block_size: v.block_size,
                        object_size,
                        export: export.clone(),
                    },
                );
            }
        }
    }
    wanted
}

/// Makes the portal serve exactly the exports in the map. Exports and
/// node liveness change only with the map's epoch, so an unchanged epoch
/// means nothing to do.
fn reconcile(
    portal: &Portal,
    context: &NodeContext,
    applied_epoch: &mut Option<u64>,
    applied: &mut HashMap<String, Served>,
) {
    let (wanted, mut portals) = {
        let Ok(map) = context.map.read() else {
            return;
        };
        if *applied_epoch == Some(map.epoch) {
            return;
        }
        *applied_epoch = Some(map.epoch);
        let portals: Vec<String> = map
            .nodes
            .values()
            .filter(|n| n.up && n.id != context.config.id)
            .map(|n| n.iscsi_addr.clone())
            .collect();
        (wanted_exports(&map), portals)
    };
    portals.insert(0, context.config.iscsi_addr.clone());
    portal.set_addresses(portals);
    // Gone, or a different volume under the same name: remove.
    let stale: Vec<String> = applied
        .iter()
        .filter(|(iqn, served)| match wanted.get(*iqn) {
            None => true,
            Some(w) => w.ids != served.ids || w.export.read_only != served.export.read_only,
        })
        .map(|(iqn, _)| iqn.clone())
        .collect();
    for iqn in stale {
        portal.remove_export(&iqn);
        applied.remove(&iqn);
    }
    for (iqn, served) in wanted {
        match applied.get(&iqn) {
            Some(current) if current.export == served.export => {}
            Some(_) => {
                if let Err(e) = portal.update_export(export_config(&iqn, &served.export)) {
                    tracing::warn!(target = %iqn, "iscsi export update failed: {e}");
                    continue;
                }
                applied.insert(iqn, served);
            }
            None => {
                let device = Arc::new(VolumeDevice {
                    name: served.volume.clone(),
                    snapshot: served.snapshot.clone(),
                    block_size: served.block_size,
                    object_size: served.object_size,
                    volumes: context.volumes.clone(),
                    map: context.map.clone(),
                });
                // The WWN derives from this name: a snapshot's differs
                // from its volume's.
                let identity = match &served.snapshot {
                    None => served.volume.clone(),
                    Some(s) => format!("{}@{s}", served.volume),
                };
                match portal.add_export(&identity, export_config(&iqn, &served.export), device) {
                    Ok(()) => {
                        applied.insert(iqn, served);
                    }
                    Err(e) => tracing::warn!(target = %iqn, "iscsi export failed: {e}"),
                }
            }
        }
    }
}

/// The portal's counters in the node's `/metrics`.
fn register_metrics(context: &NodeContext, portal: Arc<Portal>) {
    let node = format!("node=\"{}\"", context.config.id);
    context.metrics.register(Arc::new(move |out: &mut String| {
        let stats = &portal.stats;
        let counters = [
            (
                "hpchain_iscsi_logins_total",
                "Successful iSCSI logins.",
                &stats.logins,
            ),
            (
                "hpchain_iscsi_login_failures_total",
                "Refused iSCSI logins (authentication, ACL, unknown target, bad keys).",
                &stats.login_failures,
            ),
            (
                "hpchain_iscsi_commands_total",
                "SCSI commands received.",
                &stats.commands,
            ),
            (
                "hpchain_iscsi_read_bytes_total",
                "Bytes sent to initiators as Data-In.",
                &stats.read_bytes,
            ),
            (
                "hpchain_iscsi_write_bytes_total",
                "Bytes received from initiators.",
                &stats.write_bytes,
            ),
            (
                "hpchain_iscsi_rejects_total",
                "PDUs answered with a Reject.",
                &stats.rejects,
            ),
        ];
        for (name, help, value) in counters {
            metric_family(
                out,
                name,
                "counter",
                help,
                &[(node.clone(), value.load(Ordering::Relaxed))],
            );
        }
        let sessions: Vec<(String, u64)> = portal
            .sessions_by_target()
            .into_iter()
            .map(|(iqn, n)| (format!("{node},target=\"{iqn}\""), n as u64))
            .collect();
        metric_family(
            out,
            "hpchain_iscsi_sessions",
            "gauge",
            "Sessions logged in, per exported target.",
            &sessions,
        );
    }));
}

/// The node extension that runs the portal on `iscsi_addr`.
pub fn portal_extension() -> Extension {
    Box::new(|context: NodeContext| {
        let addr = context.config.iscsi_addr.clone();
        let listener = std::net::TcpListener::bind(&addr).map_err(|e| {
            format!("cannot listen on {addr} (iSCSI portal): {e}; is the port in use? set iscsi_addr in the config")
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("iSCSI portal {addr}: {e}"))?;
        let listener = tokio::net::TcpListener::from_std(listener)
            .map_err(|e| format!("iSCSI portal {addr}: {e}"))?;
        let portal = Portal::new(vec![addr.clone()]);
        register_metrics(&context, portal.clone());
        let serving = {
            let portal = portal.clone();
            tokio::spawn(async move {
                if let Err(e) = portal.serve(listener).await {
                    tracing::error!("iSCSI portal stopped: {e}");
                }
            })
        };
        let reconciler = tokio::spawn(async move {
            let mut applied = HashMap::new();
            let mut applied_epoch = None;
            let mut tick = tokio::time::interval(RECONCILE_EVERY);
            loop {
                tick.tick().await;
                reconcile(&portal, &context, &mut applied_epoch, &mut applied);
            }
        });
        tracing::info!(portal = %addr, "iSCSI portal listening");
        Ok(vec![serving, reconciler])
    })
}
