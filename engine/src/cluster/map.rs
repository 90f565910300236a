//! The cluster map's data and the commands that change it.
//!
//! Every command is validated against the current map before it changes
//! anything, so a refused command leaves the map (and its epoch) as it was.
//! Errors name the object, the reason and what to do.

use hpchain_placement::{ClusterMap, MapSpec, Rule};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use crate::volume::qos::QosLimits;

/// Most snapshots one volume may hold.
pub const MAX_SNAPSHOTS: usize = 4096;

/// Names of the placement hierarchy's types, leaf first.
pub const PLACEMENT_TYPES: [&str; 5] = ["disk", "host", "rack", "zone", "root"];
/// The root every node's host hangs under.
pub const PLACEMENT_ROOT: &str = "default";

/// A disk of a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskInfo {
    /// Cluster-wide id, also the disk's Raft peer id minus one.
    pub id: u32,
    pub path: String,
    pub weight: f64,
    /// Takes data; set false to drain it.
    pub is_in: bool,
}

/// A node (one `hpchain node` process).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: u64,
    pub name: String,
    /// Node-to-node gRPC address.
    pub peer_addr: String,
    /// Management API address.
    pub api_addr: String,
    /// iSCSI portal address.
    pub iscsi_addr: String,
    pub host: String,
    pub rack: String,
    pub zone: String,
    pub disks: Vec<DiskInfo>,
    /// Seen by the monitors within the heartbeat grace period.
    pub up: bool,
}

/// The failure domain a pool spreads replicas over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureDomain {
    Disk,
    Host,
    Rack,
    Zone,
}

impl FailureDomain {
    pub fn type_name(self) -> &'static str {
        match self {
            FailureDomain::Disk => "disk",
            FailureDomain::Host => "host",
            FailureDomain::Rack => "rack",
            FailureDomain::Zone => "zone",
        }
    }
}

/// A pool of replicated placement groups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pool {
    pub id: u32,
    pub name: String,
    pub size: u32,
    pub min_size: u32,
    pub pg_num: u32,
    pub failure_domain: FailureDomain,
    pub object_size: u64,
    /// QoS for volumes of the pool that set no limit of their own.
    #[serde(default)]
    pub qos_default: QosLimits,
    /// The nodes as the pool was created: the placement they give is
    /// each PG's first Raft configuration, which only those replicas
    /// bootstrap; replicas placed later join through membership changes.
    /// `None` for pools created before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_with: Option<BTreeMap<u64, NodeInfo>>,
}

/// A thin volume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Volume {
    pub id: u64,
    pub name: String,
    pub pool: String,
    pub size: u64,
    pub block_size: u32,
    pub created_epoch: u64,
    /// Exported over iSCSI by every node's portal when set.
    #[serde(default)]
    pub iscsi: Option<IscsiExport>,
    /// The newest snapshot id ever given (ids are never reused); every
    /// write carries it so that objects preserve versions older snapshots
    /// need.
    #[serde(default)]
    pub snap_seq: u64,
    /// Live snapshots, oldest first.
    #[serde(default)]
    pub snapshots: Vec<Snapshot>,
    /// For a clone: the snapshot its unwritten objects read through to.
    #[serde(default)]
    pub parent: Option<ParentRef>,
    #[serde(default)]
    pub qos: QosLimits,
}

impl Volume {
    pub fn snapshot(&self, name: &str) -> Option<&Snapshot> {
        self.snapshots.iter().find(|s| s.name == name)
    }

    /// The nearest live snapshot ids below and above `id` (0 and
    /// `u64::MAX` for none): what trimming after its removal needs.
    pub fn live_neighbours(&self, id: u64) -> (u64, u64) {
        let lower = self
            .snapshots
            .iter()
            .map(|s| s.id)
            .filter(|&s| s < id)
            .max()
            .unwrap_or(0);
        let upper = self
            .snapshots
            .iter()
            .map(|s| s.id)
            .filter(|&s| s > id)
            .min()
            .unwrap_or(u64::MAX);
        (lower, upper)
    }
}

/// A point-in-time, read-only image of a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub id: u64,
    pub name: String,
    /// The volume's size when it was taken.
    pub size: u64,
    pub created_epoch: u64,
    /// Wall-clock time of the request, ms since the Unix epoch (0 if
    /// unknown), carried in the command so every monitor records the same.
    #[serde(default)]
    pub created_ms: u64,
    /// Refuses removal while set.
    #[serde(default)]
    pub protected: bool,
    /// Exported read-only over iSCSI by every node's portal when set.
    #[serde(default)]
    pub iscsi: Option<IscsiExport>,
}

/// Where a clone's unwritten objects read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentRef {
    pub volume: String,
    pub volume_id: u64,
    pub snapshot: String,
    pub snapshot_id: u64,
    /// Bytes of the clone that still read through (the snapshot's size,
    /// lowered when the clone shrinks).
    pub overlap: u64,
}

/// A CHAP user name and secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChapCredentials {
    pub user: String,
    pub secret: String,
}

/// How a volume is exported over iSCSI: target
/// `iqn.2026-11.io.hpchain:<volume>`, LUN 0.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IscsiExport {
    /// Initiators must log in with this CHAP account.
    #[serde(default)]
    pub chap: Option<ChapCredentials>,
    /// The target's own credentials for mutual CHAP.
    #[serde(default)]
    pub mutual_chap: Option<ChapCredentials>,
    /// Initiator IQNs allowed to log in; empty allows any.
    #[serde(default)]
    pub allowed_initiators: Vec<String>,
    #[serde(default)]
    pub read_only: bool,
}

/// The iSCSI target name of a volume.
pub fn iscsi_target_name(volume: &str) -> String {
    format!("iqn.2026-11.io.hpchain:{volume}")
}

/// The iSCSI target name of a snapshot (`:` cannot occur in names).
pub fn iscsi_snapshot_target_name(volume: &str, snapshot: &str) -> String {
    format!("iqn.2026-11.io.hpchain:{volume}:{snapshot}")
}

/// A change to the cluster map, as proposed to group 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    RegisterNode {
        node: NodeInfo,
    },
    SetNodeUp {
        node: u64,
        up: bool,
    },
    SetDiskIn {
        disk: u32,
        is_in: bool,
    },
    CreatePool {
        name: String,
        size: u32,
        min_size: u32,
        pg_num: u32,
        failure_domain: FailureDomain,
        object_size: u64,
    },
    DeletePool {
        name: String,
    },
    CreateVolume {
        name: String,
        pool: String,
        size: u64,
        block_size: u32,
        #[serde(default)]
        qos: QosLimits,
    },
    ResizeVolume {
        name: String,
        size: u64,
        /// Shrinking discards the tail; refused unless set.
        #[serde(default)]
        allow_shrink: bool,
    },
    DeleteVolume {
        name: String,
    },
    /// Exports a volume over iSCSI, or replaces its export settings.
    ExportVolume {
        name: String,
        export: IscsiExport,
    },
    UnexportVolume {
        name: String,
    },
    CreateSnapshot {
        volume: String,
        name: String,
        #[serde(default)]
        created_ms: u64,
    },
    DeleteSnapshot {
        volume: String,
        name: String,
    },
    ProtectSnapshot {
        volume: String,
        name: String,
        protected: bool,
    },
    /// Recorded once a rollback's data is in place: the volume takes the
    /// snapshot's size.
    RollbackVolume {
        volume: String,
        snapshot: String,
    },
    CloneVolume {
        name: String,
        parent: String,
        snapshot: String,
        #[serde(default)]
        qos: QosLimits,
    },
    /// Recorded once every shared object is copied: the link is cut.
    FlattenVolume {
        name: String,
    },
    SetVolumeQos {
        name: String,
        qos: QosLimits,
    },
    SetPoolQos {
        name: String,
        qos: QosLimits,
    },
    /// Exports a snapshot read-only over iSCSI (or replaces its settings).
    ExportSnapshot {
        volume: String,
        snapshot: String,
        export: IscsiExport,
    },
    UnexportSnapshot {
        volume: String,
        snapshot: String,
    },
}

impl Command {
    /// What the command does and to what, for audit records:
    /// (`"volume.create"`, `"volume/demo"`).
    pub fn describe(&self) -> (&'static str, String) {
        match self {
            Command::RegisterNode { node } => ("node.register", format!("node/{}", node.id)),
            Command::SetNodeUp { node, up } => (
                if *up { "node.up" } else { "node.down" },
                format!("node/{node}"),
            ),
            Command::SetDiskIn { disk, is_in } => (
                if *is_in { "disk.in" } else { "disk.out" },
                format!("disk/{disk}"),
            ),
            Command::CreatePool { name, .. } => ("pool.create", format!("pool/{name}")),
            Command::DeletePool { name } => ("pool.delete", format!("pool/{name}")),
            Command::CreateVolume { name, .. } => ("volume.create", format!("volume/{name}")),
            Command::ResizeVolume { name, .. } => ("volume.resize", format!("volume/{name}")),
            Command::DeleteVolume { name } => ("volume.delete", format!("volume/{name}")),
            Command::ExportVolume { name, .. } => ("volume.export", format!("volume/{name}")),
            Command::UnexportVolume { name } => ("volume.unexport", format!("volume/{name}")),
            Command::CreateSnapshot { volume, name, .. } => {
                ("snapshot.create", format!("volume/{volume}@{name}"))
            }
            Command::DeleteSnapshot { volume, name } => {
                ("snapshot.delete", format!("volume/{volume}@{name}"))
            }
            Command::ProtectSnapshot {
                volume,
                name,
                protected,
            } => (
                if *protected {
                    "snapshot.protect"
                } else {
                    "snapshot.unprotect"
                },
                format!("volume/{volume}@{name}"),
            ),
            Command::RollbackVolume { volume, snapshot } => {
                ("volume.rollback", format!("volume/{volume}@{snapshot}"))
            }
            Command::CloneVolume { name, .. } => ("volume.clone", format!("volume/{name}")),
            Command::FlattenVolume { name } => ("volume.flatten", format!("volume/{name}")),
            Command::SetVolumeQos { name, .. } => ("volume.qos", format!("volume/{name}")),
            Command::SetPoolQos { name, .. } => ("pool.qos", format!("pool/{name}")),
            Command::ExportSnapshot {
                volume, snapshot, ..
            } => ("snapshot.export", format!("volume/{volume}@{snapshot}")),
            Command::UnexportSnapshot { volume, snapshot } => {
                ("snapshot.unexport", format!("volume/{volume}@{snapshot}"))
            }
        }
    }
}

/// Why a command was refused. Each variant names the object and the fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MapError {
    #[error("pool {0:?} already exists; pick another name or use the existing pool")]
    PoolExists(String),
    #[error("pool {0:?} does not exist; list pools with `hpchain pool ls`")]
    PoolNotFound(String),
    #[error("pool {pool:?} still holds {volumes} volume(s); delete them first")]
    PoolNotEmpty { pool: String, volumes: usize },
    #[error("volume {0:?} already exists; pick another name")]
    VolumeExists(String),
    #[error("volume {0:?} does not exist; list volumes with `hpchain volume ls`")]
    VolumeNotFound(String),
    #[error("pool {pool:?}: {reason}")]
    BadPool { pool: String, reason: String },
    #[error("volume {volume:?}: size {size} is not a positive multiple of its block size {block_size}; round it up to a multiple of {block_size}")]
    BadSize {
        volume: String,
        size: u64,
        block_size: u32,
    },
    #[error("volume {volume:?}: block size {block_size} is not supported; use 512 or 4096")]
    BadBlockSize { volume: String, block_size: u32 },
    #[error("volume {volume:?}: new size {new} is smaller than the current {current} bytes; shrinking discards the tail, so pass --allow-shrink (API: \"allow_shrink\": true) if that is what you want")]
    Shrink {
        volume: String,
        current: u64,
        new: u64,
    },
    #[error("node {0} is not registered; start it with `hpchain node` and let it join")]
    NodeNotFound(u64),
    #[error("disk {0} is not in the map")]
    DiskNotFound(u32),
    #[error("disk id {disk} is already used by node {node}; give each disk a cluster-unique id")]
    DiskIdTaken { disk: u32, node: u64 },
    #[error("name {0:?} is not valid: use 1-64 characters of a-z, 0-9, '-', '_' and '.'")]
    BadName(String),
    #[error("volume {0:?} is exported over iSCSI; unexport it first with `hpchain volume unexport-iscsi {0}`")]
    VolumeExported(String),
    #[error(
        "volume {0:?} is not exported over iSCSI; export it with `hpchain volume export-iscsi {0}`"
    )]
    NotExported(String),
    #[error("volume {volume:?}: iSCSI export refused: {reason}")]
    BadExport { volume: String, reason: String },
    #[error("snapshot {volume}@{snapshot} already exists; pick another name")]
    SnapshotExists { volume: String, snapshot: String },
    #[error("snapshot {volume}@{snapshot} does not exist; list snapshots with `hpchain snap ls {volume}`")]
    SnapshotNotFound { volume: String, snapshot: String },
    #[error("snapshot {volume}@{snapshot} is protected; unprotect it first with `hpchain snap unprotect {volume}@{snapshot}`")]
    SnapshotProtected { volume: String, snapshot: String },
    #[error("snapshot {volume}@{snapshot} has clones ({children}); flatten or delete them first (`hpchain volume flatten NAME`)")]
    SnapshotHasClones {
        volume: String,
        snapshot: String,
        children: String,
    },
    #[error("volume {volume:?} already has {count} snapshots, the most one volume may hold; remove some with `hpchain snap rm`")]
    TooManySnapshots { volume: String, count: usize },
    #[error("volume {volume:?} still has {count} snapshot(s); remove them first (`hpchain snap ls {volume}`, `hpchain snap rm {volume}@NAME`)")]
    VolumeHasSnapshots { volume: String, count: usize },
    #[error("volume {0:?} is not a clone; only clones can be flattened")]
    NotAClone(String),
    #[error("volume {volume:?}: QoS refused: {reason}")]
    BadQos { volume: String, reason: String },
    #[error("snapshot {volume}@{snapshot} is exported over iSCSI; unexport it first with `hpchain snap unexport-iscsi {volume}@{snapshot}`")]
    SnapshotExported { volume: String, snapshot: String },
    #[error("snapshot {volume}@{snapshot} is not exported over iSCSI; export it with `hpchain snap export-iscsi {volume}@{snapshot}`")]
    SnapshotNotExported { volume: String, snapshot: String },
}

impl MapError {
    /// A stable code for the API.
    pub fn code(&self) -> &'static str {
        match self {
            MapError::PoolExists(_) => "pool.exists",
            MapError::PoolNotFound(_) => "pool.not_found",
            MapError::PoolNotEmpty { .. } => "pool.not_empty",
            MapError::VolumeExists(_) => "volume.exists",
            MapError::VolumeNotFound(_) => "volume.not_found",
            MapError::BadPool { .. } => "pool.invalid",
            MapError::BadSize { .. } => "volume.bad_size",
            MapError::BadBlockSize { .. } => "volume.bad_block_size",
            MapError::Shrink { .. } => "volume.shrink",
            MapError::NodeNotFound(_) => "node.not_found",
            MapError::DiskNotFound(_) => "disk.not_found",
            MapError::DiskIdTaken { .. } => "disk.id_taken",
            MapError::BadName(_) => "name.invalid",
            MapError::VolumeExported(_) => "volume.exported",
            MapError::NotExported(_) => "volume.not_exported",
            MapError::BadExport { .. } => "volume.bad_export",
            MapError::SnapshotExists { .. } => "snapshot.exists",
            MapError::SnapshotNotFound { .. } => "snapshot.not_found",
            MapError::SnapshotProtected { .. } => "snapshot.protected",
            MapError::SnapshotHasClones { .. } => "snapshot.has_clones",
            MapError::TooManySnapshots { .. } => "snapshot.too_many",
            MapError::VolumeHasSnapshots { .. } => "volume.has_snapshots",
            MapError::NotAClone(_) => "volume.not_a_clone",
            MapError::BadQos { .. } => "qos.invalid",
            MapError::SnapshotExported { .. } => "snapshot.exported",
            MapError::SnapshotNotExported { .. } => "snapshot.not_exported",
        }
    }
}

fn check_name(name: &str) -> Result<(), MapError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        });
    if ok {
        Ok(())
    } else {
        Err(MapError::BadName(name.to_string()))
    }
}

/// The whole cluster map.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterMapState {
    /// Bumped by every change that commits.
    pub epoch: u64,
    pub nodes: BTreeMap<u64, NodeInfo>,
    pub pools: BTreeMap<String, Pool>,
    pub volumes: BTreeMap<String, Volume>,
    pub next_pool_id: u32,
    pub next_volume_id: u64,
}

impl ClusterMapState {
    /// Validates and applies `command`; on error nothing changes.
    pub fn apply(&mut self, command: &Command) -> Result<(), MapError> {
        self.validate(command)?;
        match command.clone() {
            Command::RegisterNode { node } => {
                self.nodes.insert(node.id, node);
            }
            Command::SetNodeUp { node, up } => {
                self.nodes.get_mut(&node).expect("validated").up = up;
            }
            Command::SetDiskIn { disk, is_in } => {
                for node in self.nodes.values_mut() {
                    for d in node.disks.iter_mut().filter(|d| d.id == disk) {
                        d.is_in = is_in;
                    }
                }
            }
            Command::CreatePool {
                name,
                size,
                min_size,
                pg_num,
                failure_domain,
                object_size,
            } => {
                self.next_pool_id += 1;
                let pool = Pool {
                    id: self.next_pool_id,
                    name: name.clone(),
                    size,
                    min_size,
                    pg_num,
                    failure_domain,
                    object_size,
                    qos_default: QosLimits::default(),
                    created_with: Some(self.nodes.clone()),
                };
                self.pools.insert(name, pool);
            }
            Command::DeletePool { name } => {
                self.pools.remove(&name);
            }
            Command::CreateVolume {
                name,
                pool,
                size,
                block_size,
                qos,
            } => {
                self.next_volume_id += 1;
                let volume = Volume {
                    id: self.next_volume_id,
                    name: name.clone(),
                    pool,
                    size,
                    block_size,
                    created_epoch: self.epoch + 1,
                    iscsi: None,
                    snap_seq: 0,
                    snapshots: Vec::new(),
                    parent: None,
                    qos,
                };
                self.volumes.insert(name, volume);
            }
            Command::ResizeVolume { name, size, .. } => {
                let volume = self.volumes.get_mut(&name).expect("validated");
                volume.size = size;
                if let Some(parent) = volume.parent.as_mut() {
                    parent.overlap = parent.overlap.min(size);
                }
            }
            Command::DeleteVolume { name } => {
                self.volumes.remove(&name);
            }
            Command::ExportVolume { name, export } => {
                self.volumes.get_mut(&name).expect("validated").iscsi = Some(export);
            }
            Command::UnexportVolume { name } => {
                self.volumes.get_mut(&name).expect("validated").iscsi = None;
            }
            Command::CreateSnapshot {
                volume,
                name,
                created_ms,
            } => {
                let created_epoch = self.epoch + 1;
                let v = self.volumes.get_mut(&volume).expect("validated");
                v.snap_seq += 1;
                let snapshot = Snapshot {
                    id: v.snap_seq,
                    name,
                    size: v.size,
                    created_epoch,
                    created_ms,
                    protected: false,
                    iscsi: None,
                };
                v.snapshots.push(snapshot);
            }
            Command::DeleteSnapshot { volume, name } => {
                let v = self.volumes.get_mut(&volume).expect("validated");
                v.snapshots.retain(|s| s.name != name);
            }
            Command::ProtectSnapshot {
                volume,
                name,
                protected,
            } => {
                let v = self.volumes.get_mut(&volume).expect("validated");
                if let Some(s) = v.snapshots.iter_mut().find(|s| s.name == name) {
                    s.protected = protected;
                }
            }
            Command::RollbackVolume { volume, snapshot } => {
                let v = self.volumes.get_mut(&volume).expect("validated");
                let size = v.snapshot(&snapshot).expect("validated").size;
                v.size = size;
                if let Some(parent) = v.parent.as_mut() {
                    parent.overlap = parent.overlap.min(size);
                }
            }
            Command::CloneVolume {
                name,
                parent,
                snapshot,
                qos,
            } => {
                let source = &self.volumes[&parent];
                let snap = source.snapshot(&snapshot).expect("validated");
                let parent_ref = ParentRef {
                    volume: parent.clone(),
                    volume_id: source.id,
                    snapshot: snapshot.clone(),
                    snapshot_id: snap.id,
                    overlap: snap.size,
                };
                let volume = Volume {
                    id: self.next_volume_id + 1,
                    name: name.clone(),
                    pool: source.pool.clone(),
                    size: snap.size,
                    block_size: source.block_size,
                    created_epoch: self.epoch + 1,
                    iscsi: None,
                    snap_seq: 0,
                    snapshots: Vec::new(),
                    parent: Some(parent_ref),
                    qos,
                };
                self.next_volume_id += 1;
                self.volumes.insert(name, volume);
            }
            Command::FlattenVolume { name } => {
                self.volumes.get_mut(&name).expect("validated").parent = None;
            }
            Command::SetVolumeQos { name, qos } => {
                self.volumes.get_mut(&name).expect("validated").qos = qos;
            }
            Command::SetPoolQos { name, qos } => {
                self.pools.get_mut(&name).expect("validated").qos_default = qos;
            }
            Command::ExportSnapshot {
                volume,
                snapshot,
                mut export,
            } => {
                export.read_only = true;
                self.snapshot_mut(&volume, &snapshot).iscsi = Some(export);
            }
            Command::UnexportSnapshot { volume, snapshot } => {
                self.snapshot_mut(&volume, &snapshot).iscsi = None;
            }
        }
        self.epoch += 1;
        Ok(())
    }

    fn validate(&self, command: &Command) -> Result<(), MapError> {
        match command {
            Command::RegisterNode { node } => {
                for other in self.nodes.values().filter(|n| n.id != node.id) {
                    if let Some(d) = node
                        .disks
                        .iter()
                        .find(|d| other.disks.iter().any(|o| o.id == d.id))
                    {
                        return Err(MapError::DiskIdTaken {
                            disk: d.id,
                            node: other.id,
                        });
                    }
                }
                Ok(())
            }
            Command::SetNodeUp { node, .. } => self
                .nodes
                .get(node)
                .map(|_| ())
                .ok_or(MapError::NodeNotFound(*node)),
            Command::SetDiskIn { disk, .. } => {
                let known = self
                    .nodes
                    .values()
                    .any(|n| n.disks.iter().any(|d| d.id == *disk));
                known.then_some(()).ok_or(MapError::DiskNotFound(*disk))
            }
            Command::CreatePool {
                name,
                size,
                min_size,
                pg_num,
                object_size,
                ..
            } => {
                check_name(name)?;
                if self.pools.contains_key(name) {
                    return Err(MapError::PoolExists(name.clone()));
                }
                let bad = |reason: String| MapError::BadPool {
                    pool: name.clone(),
                    reason,
                };
                if *size == 0 || *size > 16 {
                    return Err(bad(format!("size {size} must be 1 to 16 replicas")));
                }
                if *min_size == 0 || min_size > size {
                    return Err(bad(format!(
                        "min_size {min_size} must be 1 to size ({size})"
                    )));
                }
                if !pg_num.is_power_of_two() || *pg_num > 65_536 {
                    return Err(bad(format!(
                        "pg_num {pg_num} must be a power of two up to 65536"
                    )));
                }
                if !object_size.is_power_of_two() || !(4096..=64 << 20).contains(object_size) {
                    return Err(bad(format!(
                        "object size {object_size} must be a power of two from 4 KiB to 64 MiB"
                    )));
                }
                Ok(())
            }
            Command::DeletePool { name } => {
                if !self.pools.contains_key(name) {
                    return Err(MapError::PoolNotFound(name.clone()));
                }
                let volumes = self.volumes.values().filter(|v| &v.pool == name).count();
                if volumes > 0 {
                    return Err(MapError::PoolNotEmpty {
                        pool: name.clone(),
                        volumes,
                    });
                }
                Ok(())
            }
            Command::CreateVolume {
                name,
                pool,
                size,
                block_size,
                qos,
            } => {
                check_name(name)?;
                if self.volumes.contains_key(name) {
                    return Err(MapError::VolumeExists(name.clone()));
                }
                if !self.pools.contains_key(pool) {
                    return Err(MapError::PoolNotFound(pool.clone()));
                }
                check_qos(name, qos)?;
                check_size(name, *size, *block_size)
            }
            Command::ResizeVolume {
                name,
                size,
                allow_shrink,
            } => {
                let volume = self
                    .volumes
                    .get(name)
                    .ok_or_else(|| MapError::VolumeNotFound(name.clone()))?;
                check_size(name, *size, volume.block_size)?;
                if *size < volume.size && !allow_shrink {
                    return Err(MapError::Shrink {
                        volume: name.clone(),
                        current: volume.size,
                        new: *size,
                    });
                }
                Ok(())
            }
            Command::DeleteVolume { name } => {
                let volume = self.volume(name)?;
                if volume.iscsi.is_some() {
                    return Err(MapError::VolumeExported(name.clone()));
                }
                if !volume.snapshots.is_empty() {
                    return Err(MapError::VolumeHasSnapshots {
                        volume: name.clone(),
                        count: volume.snapshots.len(),
                    });
                }
                Ok(())
            }
            Command::ExportVolume { name, export } => {
                if !self.volumes.contains_key(name) {
                    return Err(MapError::VolumeNotFound(name.clone()));
                }
                check_export(name, export)
            }
            Command::UnexportVolume { name } => {
                let volume = self
                    .volumes
                    .get(name)
                    .ok_or_else(|| MapError::VolumeNotFound(name.clone()))?;
                if volume.iscsi.is_none() {
                    return Err(MapError::NotExported(name.clone()));
                }
                Ok(())
            }
            Command::CreateSnapshot { volume, name, .. } => {
                check_name(name)?;
                let v = self.volume(volume)?;
                if v.snapshot(name).is_some() {
                    return Err(MapError::SnapshotExists {
                        volume: volume.clone(),
                        snapshot: name.clone(),
                    });
                }
                if v.snapshots.len() >= MAX_SNAPSHOTS {
                    return Err(MapError::TooManySnapshots {
                        volume: volume.clone(),
                        count: v.snapshots.len(),
                    });
                }
                Ok(())
            }
            Command::DeleteSnapshot { volume, name } => {
                let snapshot = self.snapshot(volume, name)?;
                if snapshot.protected {
                    return Err(MapError::SnapshotProtected {
                        volume: volume.clone(),
                        snapshot: name.clone(),
                    });
                }
                if snapshot.iscsi.is_some() {
                    return Err(MapError::SnapshotExported {
                        volume: volume.clone(),
                        snapshot: name.clone(),
                    });
                }
                self.check_no_clones(volume, name)
            }
            Command::ProtectSnapshot {
                volume,
                name,
                protected,
            } => {
                self.snapshot(volume, name)?;
                if !protected {
                    self.check_no_clones(volume, name)?;
                }
                Ok(())
            }
            Command::RollbackVolume { volume, snapshot } => {
                self.snapshot(volume, snapshot).map(|_| ())
            }
            Command::CloneVolume {
                name,
                parent,
                snapshot,
                qos,
            } => {
                check_name(name)?;
                if self.volumes.contains_key(name) {
                    return Err(MapError::VolumeExists(name.clone()));
                }
                check_qos(name, qos)?;
                self.snapshot(parent, snapshot).map(|_| ())
            }
            Command::FlattenVolume { name } => {
                if self.volume(name)?.parent.is_none() {
                    return Err(MapError::NotAClone(name.clone()));
                }
                Ok(())
            }
            Command::SetVolumeQos { name, qos } => {
                self.volume(name)?;
                check_qos(name, qos)
            }
            Command::SetPoolQos { name, qos } => {
                if !self.pools.contains_key(name) {
                    return Err(MapError::PoolNotFound(name.clone()));
                }
                check_qos(name, qos)
            }
            Command::ExportSnapshot {
                volume,
                snapshot,
                export,
            } => {
                self.snapshot(volume, snapshot)?;
                check_export(&format!("{volume}@{snapshot}"), export)
            }
            Command::UnexportSnapshot { volume, snapshot } => {
                if self.snapshot(volume, snapshot)?.iscsi.is_none() {
                    return Err(MapError::SnapshotNotExported {
                        volume: volume.clone(),
                        snapshot: snapshot.clone(),
                    });
                }
                Ok(())
            }
        }
    }

    fn snapshot_mut(&mut self, volume: &str, name: &str) -> &mut Snapshot {
        self.volumes
            .get_mut(volume)
            .and_then(|v| v.snapshots.iter_mut().find(|s| s.name == name))
            .expect("validated")
    }

    fn volume(&self, name: &str) -> Result<&Volume, MapError> {
        self.volumes
            .get(name)
            .ok_or_else(|| MapError::VolumeNotFound(name.to_string()))
    }

    fn snapshot(&self, volume: &str, name: &str) -> Result<&Snapshot, MapError> {
        self.volume(volume)?
            .snapshot(name)
            .ok_or_else(|| MapError::SnapshotNotFound {
                volume: volume.to_string(),
                snapshot: name.to_string(),
            })
    }

    /// The clones whose parent is `volume@snapshot`.
    pub fn children(&self, volume: &str, snapshot: &str) -> Vec<&Volume> {
        self.volumes
            .values()
            .filter(|v| {
                v.parent
                    .as_ref()
                    .is_some_and(|p| p.volume == volume && p.snapshot == snapshot)
            })
            .collect()
    }

    fn check_no_clones(&self, volume: &str, snapshot: &str) -> Result<(), MapError> {
        let children = self.children(volume, snapshot);
        if children.is_empty() {
            return Ok(());
        }
        Err(MapError::SnapshotHasClones {
            volume: volume.to_string(),
            snapshot: snapshot.to_string(),
            children: children
                .iter()
                .map(|v| v.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// The placement map for this cluster map: every node's disks under
    /// its host, rack and zone, and one rule per pool named after it.
    pub fn placement_map(&self) -> Result<ClusterMap, hpchain_placement::MapError> {
        let mut spec = MapSpec::new(&PLACEMENT_TYPES);
        spec.bucket(PLACEMENT_ROOT, "root", None);
        let mut seen = std::collections::HashSet::new();
        for node in self.nodes.values() {
            let zone = format!("zone:{}", node.zone);
            let rack = format!("rack:{}", node.rack);
            let host = format!("host:{}", node.host);
            if seen.insert(zone.clone()) {
                spec.bucket(&zone, "zone", Some(PLACEMENT_ROOT));
            }
            if seen.insert(rack.clone()) {
                spec.bucket(&rack, "rack", Some(&zone));
            }
            if seen.insert(host.clone()) {
                spec.bucket(&host, "host", Some(&rack));
            }
            for disk in &node.disks {
                spec.disk(disk.id, &format!("disk:{}", disk.id), &host, disk.weight);
                spec.disk_mut(disk.id).expect("just added").is_in = disk.is_in;
                spec.disk_mut(disk.id).expect("just added").up = node.up;
            }
        }
        for pool in self.pools.values() {
            spec.rule(Rule::replicated(
                &pool.name,
                PLACEMENT_ROOT,
                pool.failure_domain.type_name(),
            ));
        }
        ClusterMap::from_spec(spec)
    }

    /// The placement `pool` had when it was created (see
    /// [`Pool::created_with`]); the current one for older pools.
    pub fn initial_placement(
        &self,
        pool: &Pool,
    ) -> Result<ClusterMap, hpchain_placement::MapError> {
        match &pool.created_with {
            Some(nodes) => ClusterMapState {
                nodes: nodes.clone(),
                pools: BTreeMap::from([(pool.name.clone(), pool.clone())]),
                ..ClusterMapState::default()
            }
            .placement_map(),
            None => self.placement_map(),
        }
    }

    /// The node that holds disk `disk`.
    pub fn node_of_disk(&self, disk: u32) -> Option<&NodeInfo> {
        self.nodes
            .values()
            .find(|n| n.disks.iter().any(|d| d.id == disk))
    }
}

/// CHAP secrets initiators accept are 12 to 16 bytes (open-iscsi and
/// Windows refuse shorter ones); names and IQNs must be printable.
fn check_export(volume: &str, export: &IscsiExport) -> Result<(), MapError> {
    let bad = |reason: String| MapError::BadExport {
        volume: volume.to_string(),
        reason,
    };
    for (what, chap) in [("CHAP", &export.chap), ("mutual CHAP", &export.mutual_chap)] {
        if let Some(c) = chap {
            if c.user.is_empty() || c.user.len() > 255 || c.user.contains(['\0', '=']) {
                return Err(bad(format!(
                    "{what} user {:?} must be 1-255 characters without '=' or NUL",
                    c.user
                )));
            }
            if !(12..=255).contains(&c.secret.len()) || c.secret.contains('\0') {
                return Err(bad(format!(
                    "{what} secret must be 12 to 255 characters (it has {}); initiators refuse shorter ones",
                    c.secret.len()
                )));
            }
        }
    }
    if export.mutual_chap.is_some() && export.chap.is_none() {
        return Err(bad("mutual CHAP needs initiator CHAP too; set both".into()));
    }
    if let (Some(a), Some(b)) = (&export.chap, &export.mutual_chap) {
        if a.secret == b.secret {
            return Err(bad(
                "the mutual CHAP secret must differ from the initiator's".into(),
            ));
        }
    }
    for iqn in &export.allowed_initiators {
        let valid = (iqn.starts_with("iqn.") || iqn.starts_with("eui.") || iqn.starts_with("naa."))
            && iqn.len() <= 223
            && !iqn.contains(|c: char| c.is_whitespace() || c == ',' || c == '\0');
        if !valid {
            return Err(bad(format!(
                "initiator name {iqn:?} is not an iqn., eui. or naa. name"
            )));
        }
    }
    Ok(())
}

fn check_qos(volume: &str, qos: &QosLimits) -> Result<(), MapError> {
    qos.validate().map_err(|e| MapError::BadQos {
        volume: volume.to_string(),
        reason: e.to_string(),
    })
}

fn check_size(volume: &str, size: u64, block_size: u32) -> Result<(), MapError> {
    if block_size != 512 && block_size != 4096 {
        return Err(MapError::BadBlockSize {
            volume: volume.to_string(),
            block_size,
        });
    }
    if size == 0 || !size.is_multiple_of(u64::from(block_size)) {
        return Err(MapError::BadSize {
            volume: volume.to_string(),
            size,
            block_size,
        });
    }
    Ok(())
}

#[cfg(test)]
impl NodeInfo {
    /// A node for tests: up, host `h{id}` in rack r1 of zone z1, each of
    /// `disks` in with weight 1.
    pub(crate) fn for_test(id: u64, disks: &[u32]) -> NodeInfo {
        NodeInfo {
            id,
            name: format!("n{id}"),
            peer_addr: format!("127.0.0.1:{}", 9401 + id * 10),
            api_addr: String::new(),
            iscsi_addr: String::new(),
            host: format!("h{id}"),
            rack: "r1".into(),
            zone: "z1".into(),
            disks: disks
                .iter()
                .map(|&d| DiskInfo {
                    id: d,
                    path: format!("/d{d}"),
                    weight: 1.0,
                    is_in: true,
                })
                .collect(),
            up: true,
        }
    }
}

#[cfg(test)]
impl Pool {
    /// A pool for tests: 3 replicas (2 at least) on distinct disks, 4 MiB
    /// objects.
    pub(crate) fn for_test(id: u32, name: &str, pg_num: u32) -> Pool {
        Pool {
            id,
            name: name.into(),
            size: 3,
            min_size: 2,
            pg_num,
            failure_domain: FailureDomain::Disk,
            object_size: 4 << 20,
            qos_default: Default::default(),
            created_with: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u64, disks: &[u32]) -> NodeInfo {
        NodeInfo::for_test(id, disks)
    }

    fn pool(name: &str) -> Command {
        Command::CreatePool {
            name: name.into(),
            size: 3,
            min_size: 2,
            pg_num: 64,
            failure_domain: FailureDomain::Host,
            object_size: 4 << 20,
        }
    }

    fn volume(name: &str, size: u64) -> Command {
        Command::CreateVolume {
            name: name.into(),
            pool: "rbd".into(),
            size,
            block_size: 512,
            qos: QosLimits::default(),
        }
    }

    #[test]
    fn every_committed_change_bumps_the_epoch_and_refusals_change_nothing() {
        let mut map = ClusterMapState::default();
        map.apply(&pool("rbd")).unwrap();
        map.apply(&volume("demo", 1 << 30)).unwrap();
        assert_eq!(map.epoch, 2);
        let before = map.clone();
        let refused = [
            (pool("rbd"), "pool.exists"),
            (volume("demo", 1 << 30), "volume.exists"),
            (volume("odd", 1000), "volume.bad_size"),
            (
                Command::CreateVolume {
                    name: "x".into(),
                    pool: "nope".into(),
                    size: 4096,
                    block_size: 512,
                    qos: QosLimits::default(),
                },
                "pool.not_found",
            ),
            (
                Command::ResizeVolume {
                    name: "demo".into(),
                    size: 1 << 20,
                    allow_shrink: false,
                },
                "volume.shrink",
            ),
            (Command::DeletePool { name: "rbd".into() }, "pool.not_empty"),
            (volume("Bad Name", 4096), "name.invalid"),
        ];
        for (command, code) in refused {
            let err = map.apply(&command).unwrap_err();
            assert_eq!(err.code(), code, "{command:?}");
            assert_eq!(map, before, "a refused {command:?} changed the map");
        }
        map.apply(&Command::ResizeVolume {
            name: "demo".into(),
            size: 2 << 30,
            allow_shrink: false,
        })
        .unwrap();
        assert_eq!((map.epoch, map.volumes["demo"].size), (3, 2 << 30));
    }

    #[test]
    fn error_messages_name_the_object_and_the_fix() {
        let mut map = ClusterMapState::default();
        map.apply(&pool("rbd")).unwrap();
        let err = map.apply(&volume("v", 1000)).unwrap_err().to_string();
        assert!(
            err.contains("\"v\"") && err.contains("multiple of 512"),
            "{err}"
        );
        let err = map.apply(&pool("rbd")).unwrap_err().to_string();
        assert!(
            err.contains("\"rbd\"") && err.contains("already exists"),
            "{err}"
        );
    }

    #[test]
    fn placement_map_puts_each_pools_replicas_on_distinct_hosts() {
        let mut map = ClusterMapState::default();
        for (id, disks) in [(1, vec![0, 1]), (2, vec![2]), (3, vec![3, 4])] {
            map.apply(&Command::RegisterNode {
                node: node(id, &disks),
            })
            .unwrap();
        }
        map.apply(&pool("rbd")).unwrap();
        let placement = map.placement_map().unwrap();
        for index in 0..64 {
            let disks = hpchain_placement::place(
                &placement,
                "rbd",
                hpchain_placement::PgId { pool: 1, index },
                3,
            )
            .unwrap();
            let mut hosts: Vec<u64> = disks
                .iter()
                .map(|d| map.node_of_disk(d.0).unwrap().id)
                .collect();
            hosts.sort();
            assert_eq!(hosts, vec![1, 2, 3]);
        }
    }

    #[test]
    fn a_disk_id_cannot_belong_to_two_nodes() {
        let mut map = ClusterMapState::default();
        map.apply(&Command::RegisterNode {
            node: node(1, &[0]),
        })
        .unwrap();
        let err = map
            .apply(&Command::RegisterNode {
                node: node(2, &[0]),
            })
            .unwrap_err();
        assert_eq!(err, MapError::DiskIdTaken { disk: 0, node: 1 });
    }
}
