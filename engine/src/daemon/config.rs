//! The node daemon's configuration file (TOML), with defaults that make a
//! one-line config enough for a single local node.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use crate::cluster::map::{DiskInfo, NodeInfo};

fn default_peer_addr() -> String {
    "127.0.0.1:9401".into()
}
fn default_api_addr() -> String {
    "127.0.0.1:9400".into()
}
fn default_iscsi_addr() -> String {
    "127.0.0.1:3260".into()
}
fn default_rack() -> String {
    "rack1".into()
}
fn default_zone() -> String {
    "zone1".into()
}
fn default_weight() -> f64 {
    1.0
}
fn default_tick_ms() -> u64 {
    100
}
fn default_down_after_secs() -> u64 {
    5
}
fn default_out_after_secs() -> u64 {
    600
}
fn default_applied_sync_ms() -> u64 {
    1000
}

fn default_recovery_max_copies() -> usize {
    2
}

/// How many copies `recovery_max_copies` may allow.
pub const RECOVERY_MAX_COPIES_RANGE: std::ops::RangeInclusive<usize> = 1..=64;

/// The rates `recovery_max_bytes_per_sec` may take, besides 0 (no limit).
pub const RECOVERY_BYTES_PER_SEC_RANGE: std::ops::RangeInclusive<u64> =
    1_000_000..=crate::volume::qos::MAX_RATE;

/// The periods `applied_sync_ms` may take, in milliseconds.
pub const APPLIED_SYNC_MS_RANGE: std::ops::RangeInclusive<u64> = 10..=600_000;

/// A disk this node stores data on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskConfig {
    /// Cluster-unique id.
    pub id: u32,
    /// A directory on a file system.
    pub path: PathBuf,
    #[serde(default = "default_weight")]
    pub weight: f64,
    /// How object data moves: `auto` (io_uring if it can be set up here,
    /// else positional), `io_uring`, or `positional`.
    #[serde(default)]
    pub io: crate::store::file_io::FileIoKind,
}

/// A member of the cluster map's Raft group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorConfig {
    pub id: u64,
    pub peer_addr: String,
}

/// The node's part in the HP chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainConfig {
    /// The chain's genesis file (the same on every node).
    pub genesis: PathBuf,
    /// This node's ed25519 key file; a delegate produces blocks and signs
    /// the audit records of the changes it commits.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// Repair damaged final blocks from peers as soon as they are found
    /// (at start, or by `hpchain chain verify`). `false` keeps a damaged
    /// store as it is, for inspection, until `hpchain chain repair`; it
    /// serves and builds nothing from the damage meanwhile.
    #[serde(default = "auto_repair_default")]
    pub auto_repair: bool,
}

fn auto_repair_default() -> bool {
    true
}

/// Everything `hpchain node` needs to start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonConfig {
    /// Stable, cluster-unique node id (not 0).
    pub id: u64,
    pub name: String,
    pub data_dir: PathBuf,
    #[serde(default = "default_peer_addr")]
    pub peer_addr: String,
    #[serde(default = "default_api_addr")]
    pub api_addr: String,
    #[serde(default = "default_iscsi_addr")]
    pub iscsi_addr: String,
    /// Host name in the placement hierarchy; the node name if unset.
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default = "default_rack")]
    pub rack: String,
    #[serde(default = "default_zone")]
    pub zone: String,
    #[serde(default)]
    pub disks: Vec<DiskConfig>,
    /// The cluster map group's members; this node runs a replica if listed.
    pub monitors: Vec<MonitorConfig>,
    /// File holding the API bearer token; created (0600) if missing.
    pub api_token_file: PathBuf,
    /// One Raft tick.
    #[serde(default = "default_tick_ms")]
    pub tick_ms: u64,
    /// A node silent this long is marked down.
    #[serde(default = "default_down_after_secs")]
    pub down_after_secs: u64,
    /// A node down this long has its disks marked out (their data moves).
    #[serde(default = "default_out_after_secs")]
    pub out_after_secs: u64,
    /// How often applied object data is synced to the disks. The Raft log
    /// holds it durably meanwhile, so a longer period means fewer syncs
    /// and more log to replay after a crash. Each sync costs one fsync per
    /// file written since: at 100 ms the syncs took a fifth of the
    /// machine's CPU under 4 KiB random writes (docs/benchmarks.md). A
    /// group whose log waits to be compacted for three seconds syncs on
    /// its own, so periods past that mostly move syncs to the Raft loop.
    #[serde(default = "default_applied_sync_ms")]
    pub applied_sync_ms: u64,
    /// New replicas this node copies at once (re-replication, as the
    /// receiving side); the leaders of the others ask again. Each copy
    /// streams a whole PG, and a lost node's PGs all get new replicas at
    /// the same moment.
    #[serde(default = "default_recovery_max_copies")]
    pub recovery_max_copies: usize,
    /// Bytes per second this node's copies may receive together; 0 (the
    /// default) sets no limit. Set one when re-replication slows client
    /// I/O too much; a lower rate keeps the cluster short of a replica for
    /// longer.
    #[serde(default)]
    pub recovery_max_bytes_per_sec: u64,
    /// The embedded ledger; off if absent.
    #[serde(default)]
    pub chain: Option<ChainConfig>,
}

/// A config that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

impl DaemonConfig {
    /// Reads and checks a TOML config file.
    pub fn load(path: &Path) -> Result<DaemonConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config: DaemonConfig = toml::from_str(&text).map_err(|e| ConfigError::Invalid {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        config.check().map_err(|reason| ConfigError::Invalid {
            path: path.to_path_buf(),
            reason,
        })?;
        Ok(config)
    }

    /// Checks what serde cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.id == 0 {
            return Err("id must not be 0".into());
        }
        if self.monitors.is_empty() {
            return Err("list at least one monitor (this node, for a one-node cluster)".into());
        }
        if self.down_after_secs == 0 || self.out_after_secs < self.down_after_secs {
            return Err("need 0 < down_after_secs <= out_after_secs".into());
        }
        if !APPLIED_SYNC_MS_RANGE.contains(&self.applied_sync_ms) {
            return Err(format!(
                "applied_sync_ms must be between {} and {}",
                APPLIED_SYNC_MS_RANGE.start(),
                APPLIED_SYNC_MS_RANGE.end()
            ));
        }
        if !RECOVERY_MAX_COPIES_RANGE.contains(&self.recovery_max_copies) {
            return Err(format!(
                "recovery_max_copies must be between {} and {}",
                RECOVERY_MAX_COPIES_RANGE.start(),
                RECOVERY_MAX_COPIES_RANGE.end()
            ));
        }
        if self.recovery_max_bytes_per_sec != 0
            && !RECOVERY_BYTES_PER_SEC_RANGE.contains(&self.recovery_max_bytes_per_sec)
        {
            return Err(format!(
                "recovery_max_bytes_per_sec must be 0 (no limit) or between {} and {}: a copy message carries up to 16 MiB, which a lower rate would take over 16 s to let through",
                RECOVERY_BYTES_PER_SEC_RANGE.start(),
                RECOVERY_BYTES_PER_SEC_RANGE.end()
            ));
        }
        if self.disks.is_empty() {
            return Err("list at least one disk ([[disks]] id = 0, path = \"...\")".into());
        }
        Ok(())
    }

    /// Whether this node holds a replica of the cluster map.
    pub fn is_monitor(&self) -> bool {
        self.monitors.iter().any(|m| m.id == self.id)
    }

    /// The liveness policy from this config.
    pub fn health_policy(&self) -> crate::cluster::HealthPolicy {
        crate::cluster::HealthPolicy {
            heartbeat_every: std::time::Duration::from_secs(1),
            down_after: std::time::Duration::from_secs(self.down_after_secs),
            out_after: std::time::Duration::from_secs(self.out_after_secs),
        }
    }

    /// This node as the cluster map records it.
    pub fn node_info(&self) -> NodeInfo {
        NodeInfo {
            id: self.id,
            name: self.name.clone(),
            peer_addr: self.peer_addr.clone(),
            api_addr: self.api_addr.clone(),
            iscsi_addr: self.iscsi_addr.clone(),
            host: self.host.clone().unwrap_or_else(|| self.name.clone()),
            rack: self.rack.clone(),
            zone: self.zone.clone(),
            disks: self
                .disks
                .iter()
                .map(|d| DiskInfo {
                    id: d.id,
                    path: d.path.display().to_string(),
                    weight: d.weight,
                    is_in: true,
                })
                .collect(),
            up: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
id = 1
name = "node1"
data_dir = "/tmp/hpchain-node1"
api_token_file = "/tmp/hpchain-node1/api-token"
[[disks]]
id = 0
path = "/tmp/hpchain-node1/disk0"
[[monitors]]
id = 1
peer_addr = "127.0.0.1:9401"
"#;

    fn load(extra: &str) -> Result<DaemonConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, format!("{extra}\n{MINIMAL}")).unwrap();
        DaemonConfig::load(&path)
    }

    #[test]
    fn recovery_limits_default_to_two_copies_at_any_rate_and_refuse_what_cannot_work() {
        let config = load("").unwrap();
        assert_eq!(config.recovery_max_copies, 2);
        assert_eq!(config.recovery_max_bytes_per_sec, 0);
        let config =
            load("recovery_max_copies = 8\nrecovery_max_bytes_per_sec = 104857600").unwrap();
        assert_eq!(config.recovery_max_copies, 8);
        assert_eq!(config.recovery_max_bytes_per_sec, 100 << 20);
        let error = load("recovery_max_bytes_per_sec = 4096")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("recovery_max_bytes_per_sec must be 0 (no limit) or between 1000000"),
            "{error}"
        );
        for copies in [0, 65] {
            let error = load(&format!("recovery_max_copies = {copies}"))
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("recovery_max_copies must be between 1 and 64"),
                "{error}"
            );
        }
    }
}
