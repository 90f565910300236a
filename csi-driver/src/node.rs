//! The CSI Node service: attach a published volume with open-iscsi's
//! `iscsiadm`, find its device by path, put a file system on it if it has
//! none, mount it at the staging path, and bind-mount it (or the raw
//! device, for volumeMode: Block) into pods.
//!
//! The kernel's iSCSI initiator is needed for a device. Where it is not
//! usable (no `iscsi_tcp` in the kernel, no `iscsiadm`), staging fails with
//! FAILED_PRECONDITION naming what is missing; everything else (arguments,
//! idempotent unstage/unpublish, info) still works.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tonic::{Request, Response, Status};

use crate::csi::node_server::Node;
use crate::csi::node_service_capability::rpc::Type as Rpc;
use crate::csi::volume_capability::AccessType;
use crate::csi::*;
use crate::names::required;

pub struct NodeService {
    /// This node's initiator name, also its CSI node id.
    pub node_id: String,
    pub max_volumes: i64,
    pub topology: HashMap<String, String>,
    /// CHAP secret for logins (the user comes in the publish context).
    pub chap_secret: Option<String>,
}

/// Why this machine cannot attach iSCSI devices, if it cannot.
pub fn initiator_problem() -> Option<String> {
    if !Path::new("/sys/class/iscsi_transport").exists()
        && !Path::new("/sys/module/iscsi_tcp").exists()
    {
        return Some(
            "the kernel iSCSI initiator is not available (no iscsi_tcp module: run `modprobe iscsi_tcp`, or use a kernel built with it)"
                .into(),
        );
    }
    if which("iscsiadm").is_none() {
        return Some("iscsiadm is not installed (Debian: apt-get install open-iscsi)".into());
    }
    None
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.exists())
}

async fn run(program: &str, args: &[&str]) -> Result<String, Status> {
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(program).args(args).output(),
    )
    .await
    .map_err(|_| {
        Status::deadline_exceeded(format!("{program} {} took over 120 s", args.join(" ")))
    })?
    .map_err(|e| Status::internal(format!("cannot run {program}: {e}")))?;
    if !output.status.success() {
        return Err(Status::internal(format!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Whether `path` is a mount point (in /proc/self/mountinfo).
fn is_mounted(path: &str) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = path.trim_end_matches('/');
    info.lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .any(|mount_point| mount_point == wanted)
}

fn device_path(portal: &str, iqn: &str, lun: &str) -> String {
    format!("/dev/disk/by-path/ip-{portal}-iscsi-{iqn}-lun-{lun}")
}

impl NodeService {
    /// Logs in to every portal of the target and waits for its device.
    async fn attach(&self, context: &HashMap<String, String>) -> Result<String, Status> {
        let iqn = context.get("targetIqn").ok_or_else(|| {
            Status::invalid_argument(
                "publish_context lacks targetIqn; was the volume published by this driver?",
            )
        })?;
        let lun = context.get("lun").map(String::as_str).unwrap_or("0");
        let portals: Vec<&str> = context
            .get("portals")
            .map(|p| p.split(',').filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
        let portal = portals
            .first()
            .ok_or_else(|| Status::invalid_argument("publish_context lacks portals"))?;
        run(
            "iscsiadm",
            &["-m", "discovery", "-t", "sendtargets", "-p", portal],
        )
        .await?;
        if let (Some(user), Some(secret)) = (context.get("chapUser"), &self.chap_secret) {
            for (key, value) in [
                ("node.session.auth.authmethod", "CHAP"),
                ("node.session.auth.username", user.as_str()),
                ("node.session.auth.password", secret.as_str()),
            ] {
                run(
                    "iscsiadm",
                    &[
                        "-m", "node", "-T", iqn, "-p", portal, "-o", "update", "-n", key, "-v",
                        value,
                    ],
                )
                .await?;
            }
        }
        let device = device_path(portal, iqn, lun);
        if !Path::new(&device).exists() {
            run(
                "iscsiadm",
                &["-m", "node", "-T", iqn, "-p", portal, "--login"],
            )
            .await?;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while !Path::new(&device).exists() {
            if Instant::now() > deadline {
                return Err(Status::deadline_exceeded(format!(
                    "logged in to {iqn} but {device} did not appear within 30 s"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(device)
    }
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_stage_volume(
        &self,
        request: Request<NodeStageVolumeRequest>,
    ) -> Result<Response<NodeStageVolumeResponse>, Status> {
        let r = request.into_inner();
        required(&r.volume_id, "volume_id")?;
        required(&r.staging_target_path, "staging_target_path")?;
        let capability = r
            .volume_capability
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("volume_capability is required"))?;
        if is_mounted(&r.staging_target_path) {
            return Ok(Response::new(NodeStageVolumeResponse {}));
        }
        if let Some(problem) = initiator_problem() {
            return Err(Status::failed_precondition(format!(
                "cannot attach volume {}: {problem}",
                r.volume_id
            )));
        }
        let device = self.attach(&r.publish_context).await?;
        if let Some(AccessType::Mount(mount)) = &capability.access_type {
            let fs = if mount.fs_type.is_empty() {
                r.volume_context
                    .get("fsType")
                    .cloned()
                    .unwrap_or_else(|| "ext4".into())
            } else {
                mount.fs_type.clone()
            };
            // A file system only where there is none: never format data.
            let existing = run("blkid", &["-o", "value", "-s", "TYPE", &device])
                .await
                .unwrap_or_default();
            if existing.trim().is_empty() {
                run(&format!("mkfs.{fs}"), &[&device]).await?;
            }
            std::fs::create_dir_all(&r.staging_target_path)
                .map_err(|e| Status::internal(format!("{}: {e}", r.staging_target_path)))?;
            let mut args = vec!["-t", fs.as_str()];
            let flags = mount.mount_flags.join(",");
            if !flags.is_empty() {
                args.extend(["-o", flags.as_str()]);
            }
            args.extend([device.as_str(), r.staging_target_path.as_str()]);
            run("mount", &args).await?;
        }
        Ok(Response::new(NodeStageVolumeResponse {}))
    }

    async fn node_unstage_volume(
        &self,
        request: Request<NodeUnstageVolumeRequest>,
    ) -> Result<Response<NodeUnstageVolumeResponse>, Status> {
        let r = request.into_inner();
        required(&r.volume_id, "volume_id")?;
        required(&r.staging_target_path, "staging_target_path")?;
        if is_mounted(&r.staging_target_path) {
            run("umount", &[&r.staging_target_path]).await?;
        }
        if initiator_problem().is_none() {
            let iqn = format!("iqn.2026-11.io.hpchain:{}", r.volume_id);
            // Not logged in is fine: unstage is idempotent.
            let _ = run("iscsiadm", &["-m", "node", "-T", &iqn, "--logout"]).await;
        }
        Ok(Response::new(NodeUnstageVolumeResponse {}))
    }

    async fn node_publish_volume(
        &self,
        request: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        let r = request.into_inner();
        required(&r.volume_id, "volume_id")?;
        required(&r.target_path, "target_path")?;
        let capability = r
            .volume_capability
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("volume_capability is required"))?;
        required(&r.staging_target_path, "staging_target_path")?;
        if is_mounted(&r.target_path) {
            return Ok(Response::new(NodePublishVolumeResponse {}));
        }
        if let Some(problem) = initiator_problem() {
            return Err(Status::failed_precondition(format!(
                "cannot publish volume {}: {problem}",
                r.volume_id
            )));
        }
        let source = match &capability.access_type {
            Some(AccessType::Block(_)) => {
                let device = self.attach(&r.publish_context).await?;
                if let Some(parent) = Path::new(&r.target_path).parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| Status::internal(format!("{}: {e}", parent.display())))?;
                }
                std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&r.target_path)
                    .map_err(|e| Status::internal(format!("{}: {e}", r.target_path)))?;
                device
            }
            _ => {
                std::fs::create_dir_all(&r.target_path)
                    .map_err(|e| Status::internal(format!("{}: {e}", r.target_path)))?;
                r.staging_target_path.clone()
            }
        };
        run("mount", &["--bind", &source, &r.target_path]).await?;
        if r.readonly {
            run("mount", &["-o", "remount,bind,ro", &r.target_path]).await?;
        }
        Ok(Response::new(NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<NodeUnpublishVolumeRequest>,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        let r = request.into_inner();
        required(&r.volume_id, "volume_id")?;
        required(&r.target_path, "target_path")?;
        if is_mounted(&r.target_path) {
            run("umount", &[&r.target_path]).await?;
        }
        let path = Path::new(&r.target_path);
        if path.is_dir() {
            let _ = std::fs::remove_dir(path);
        } else if path.exists() {
            let _ = std::fs::remove_file(path);
        }
        Ok(Response::new(NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_volume_stats(
        &self,
        request: Request<NodeGetVolumeStatsRequest>,
    ) -> Result<Response<NodeGetVolumeStatsResponse>, Status> {
        let r = request.into_inner();
        required(&r.volume_id, "volume_id")?;
        required(&r.volume_path, "volume_path")?;
        let path = std::ffi::CString::new(r.volume_path.clone())
            .map_err(|_| Status::invalid_argument("volume_path holds a NUL byte"))?;
        if !Path::new(&r.volume_path).exists() {
            return Err(Status::not_found(format!(
                "{} does not exist on this node",
                r.volume_path
            )));
        }
        // SAFETY: statvfs fills the struct we own from a valid C string.
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
            return Err(Status::internal(format!(
                "statvfs {}: {}",
                r.volume_path,
                std::io::Error::last_os_error()
            )));
        }
        let block = stat.f_frsize as i64;
        let usage = vec![
            VolumeUsage {
                available: stat.f_bavail as i64 * block,
                total: stat.f_blocks as i64 * block,
                used: (stat.f_blocks - stat.f_bfree) as i64 * block,
                unit: volume_usage::Unit::Bytes as i32,
            },
            VolumeUsage {
                available: stat.f_favail as i64,
                total: stat.f_files as i64,
                used: (stat.f_files - stat.f_ffree) as i64,
                unit: volume_usage::Unit::Inodes as i32,
            },
        ];
        Ok(Response::new(NodeGetVolumeStatsResponse {
            usage,
            volume_condition: Some(VolumeCondition {
                abnormal: false,
                message: String::new(),
            }),
        }))
    }

    async fn node_expand_volume(
        &self,
        request: Request<NodeExpandVolumeRequest>,
    ) -> Result<Response<NodeExpandVolumeResponse>, Status> {
        let r = request.into_inner();
        required(&r.volume_id, "volume_id")?;
        required(&r.volume_path, "volume_path")?;
        if !Path::new(&r.volume_path).exists() {
            return Err(Status::not_found(format!(
                "{} does not exist on this node",
                r.volume_path
            )));
        }
        let block = r
            .volume_capability
            .as_ref()
            .is_some_and(|c| matches!(c.access_type, Some(AccessType::Block(_))));
        if !block {
            // The device behind the mount, then the file system's own tool.
            let source = run("findmnt", &["-n", "-o", "SOURCE,FSTYPE", &r.volume_path]).await?;
            let mut parts = source.split_whitespace();
            let (device, fs) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            match fs {
                "xfs" => run("xfs_growfs", &[&r.volume_path]).await?,
                _ => run("resize2fs", &[device]).await?,
            };
        }
        Ok(Response::new(NodeExpandVolumeResponse {
            capacity_bytes: r
                .capacity_range
                .map(|c| c.required_bytes)
                .unwrap_or_default(),
        }))
    }

    async fn node_get_capabilities(
        &self,
        _request: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        let rpcs = [
            Rpc::StageUnstageVolume,
            Rpc::ExpandVolume,
            Rpc::GetVolumeStats,
            Rpc::VolumeCondition,
            Rpc::SingleNodeMultiWriter,
        ];
        Ok(Response::new(NodeGetCapabilitiesResponse {
            capabilities: rpcs
                .iter()
                .map(|&t| NodeServiceCapability {
                    r#type: Some(node_service_capability::Type::Rpc(
                        node_service_capability::Rpc { r#type: t as i32 },
                    )),
                })
                .collect(),
        }))
    }

    async fn node_get_info(
        &self,
        _request: Request<NodeGetInfoRequest>,
    ) -> Result<Response<NodeGetInfoResponse>, Status> {
        Ok(Response::new(NodeGetInfoResponse {
            node_id: self.node_id.clone(),
            max_volumes_per_node: self.max_volumes,
            accessible_topology: Some(Topology {
                segments: self.topology.clone(),
            }),
        }))
    }
}
