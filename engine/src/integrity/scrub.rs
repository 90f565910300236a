//! The scrub of a volume: every replica of every object checks every
//! block of every version (head and snapshot clones) on its own disk, and
//! repairs the bad ones from the other replicas.
//!
//! The node that runs the scrub only routes: it sends each replica's node
//! the objects that replica holds (one request per node and disk for up to
//! [`OBJECTS_PER_REQUEST`] objects) and adds up what they report. Like
//! the other walks it goes in steps (`from_object`, `objects`), so a
//! client shows progress and a large volume is scrubbed in many requests.

use hpchain_placement::pg_of;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

use super::repair::Repairer;
use super::version_name;
use crate::net::proto::{ObjectScrubReport, ScrubRequest, ScrubTarget};
use crate::pg::backend::CHECKED_BLOCK_BYTES;
use crate::pg::group_id;
use crate::replication::NodeId;
use crate::volume::VolumeError;

/// Objects one scrub request to a node carries.
pub const OBJECTS_PER_REQUEST: usize = 64;
/// One request: every block of up to [`OBJECTS_PER_REQUEST`] objects, and
/// their repairs.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Findings listed per step (the counts are always complete).
const FINDINGS_MAX: usize = 1000;

/// One bad block of one replica: repaired, or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockFinding {
    pub object: u64,
    /// `head` or `clone@SEQ` (a version kept for snapshots).
    pub version: String,
    pub block: u64,
    /// Where the block lies in the volume (or in the snapshots that read
    /// that clone version).
    pub volume_offset: u64,
    /// The replica the block is bad on.
    pub node: NodeId,
    pub disk: u32,
    /// Repaired: the replica the good copy came from (`None`: the block
    /// had to be zero, or was good again by the time it was repaired).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_node: Option<NodeId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_disk: Option<u32>,
    /// Not repaired: the crc32c recorded for it (`None`: it must be zero)
    /// and what each other replica offered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recorded_crc: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual_crc: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Not repaired: every other replica sent a copy and none matched, so
    /// the block's data is lost (false: no copy could be fetched now).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost: Option<bool>,
}

/// Replicas that could not be checked (their node did not answer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedReplica {
    pub node: NodeId,
    pub disk: u32,
    pub objects: u64,
    pub reason: String,
}

/// What one step of a scrub did: objects `[from, next_object)` checked on
/// every replica that answered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ScrubStep {
    pub next_object: u64,
    pub total_objects: u64,
    pub done: bool,
    pub objects_checked: u64,
    /// Object versions (heads and clones) found, over all replicas.
    pub versions_checked: u64,
    pub blocks_checked: u64,
    pub blocks_bad: u64,
    pub blocks_repaired: u64,
    pub blocks_unrepaired: u64,
    /// Objects whose check failed on a replica (I/O or metadata errors).
    pub objects_failed: u64,
    pub repaired: Vec<BlockFinding>,
    pub unrepaired: Vec<BlockFinding>,
    pub failed: Vec<SkippedReplica>,
    pub skipped: Vec<SkippedReplica>,
}

impl Repairer {
    /// Scrubs objects `[from, from + count)` of `volume` (clamped to its
    /// objects, snapshots' included) on every replica.
    pub async fn scrub_volume(
        &self,
        volume: &str,
        from: u64,
        count: u64,
    ) -> Result<ScrubStep, VolumeError> {
        let (volume_id, pool_id, pg_num, object_size, total) = {
            let map = self.map().read().expect("map lock");
            let v = map
                .volumes
                .get(volume)
                .ok_or_else(|| VolumeError::NotFound(volume.to_string()))?;
            let pool = map
                .pools
                .get(&v.pool)
                .ok_or_else(|| VolumeError::NotFound(volume.to_string()))?;
            let largest = v.snapshots.iter().map(|s| s.size).fold(v.size, u64::max);
            (
                v.id,
                pool.id,
                pool.pg_num,
                pool.object_size,
                largest.div_ceil(pool.object_size),
            )
        };
        let end = from.saturating_add(count).min(total);
        let start = from.min(end);
        let mut per_replica: BTreeMap<(NodeId, u32), Vec<ScrubTarget>> = BTreeMap::new();
        for object in start..end {
            let group = group_id(pool_id, pg_of(volume_id, object, pg_num));
            let replicas = self.replicas(group).map_err(|reason| VolumeError::Failed {
                volume: volume.to_string(),
                reason,
            })?;
            for (disk, node) in replicas {
                per_replica
                    .entry((node, disk))
                    .or_default()
                    .push(ScrubTarget { object, group });
            }
        }
        let mut tasks = tokio::task::JoinSet::new();
        for ((node, disk), targets) in per_replica {
            let this = self.clone();
            tasks.spawn(async move {
                let answers = this.scrub_replica(node, disk, volume_id, targets).await;
                (node, disk, answers)
            });
        }
        let mut step = ScrubStep {
            next_object: end.max(from.min(total)),
            total_objects: total,
            done: end >= total,
            objects_checked: end - start,
            ..ScrubStep::default()
        };
        while let Some(done) = tasks.join_next().await {
            let (node, disk, answers) = done.map_err(|e| VolumeError::Failed {
                volume: volume.to_string(),
                reason: e.to_string(),
            })?;
            for answer in answers {
                match answer {
                    Ok(reports) => {
                        for report in reports {
                            step.add(node, disk, report, object_size);
                        }
                    }
                    Err(skipped) => step.skipped.push(skipped),
                }
            }
        }
        for list in [&mut step.repaired, &mut step.unrepaired] {
            list.sort_by_key(|f| (f.object, f.node, f.disk, f.block));
            list.truncate(FINDINGS_MAX);
        }
        Ok(step)
    }

    /// Sends one replica its objects, [`OBJECTS_PER_REQUEST`] at a time.
    async fn scrub_replica(
        &self,
        node: NodeId,
        disk: u32,
        volume: u64,
        targets: Vec<ScrubTarget>,
    ) -> Vec<Result<Vec<ObjectScrubReport>, SkippedReplica>> {
        let mut out = Vec::new();
        for chunk in targets.chunks(OBJECTS_PER_REQUEST) {
            let request = ScrubRequest {
                disk,
                volume,
                objects: chunk.to_vec(),
            };
            let skipped = |reason: String| SkippedReplica {
                node,
                disk,
                objects: chunk.len() as u64,
                reason,
            };
            let reply = if node == self.node_id() {
                self.scrub_disk(request).await
            } else {
                let mut client = match self.client(node) {
                    Ok(c) => c,
                    Err(e) => {
                        out.push(Err(skipped(e)));
                        continue;
                    }
                };
                match tokio::time::timeout(REQUEST_TIMEOUT, client.scrub(request)).await {
                    Ok(Ok(reply)) => reply.into_inner(),
                    Ok(Err(status)) => {
                        out.push(Err(skipped(format!(
                            "node {node} did not answer: {}",
                            status.message()
                        ))));
                        continue;
                    }
                    Err(_) => {
                        out.push(Err(skipped(format!(
                            "node {node} did not answer within {REQUEST_TIMEOUT:?}"
                        ))));
                        continue;
                    }
                }
            };
            if !reply.error.is_empty() {
                out.push(Err(skipped(reply.error)));
                continue;
            }
            out.push(Ok(reply.objects));
        }
        out
    }
}

impl ScrubStep {
    fn add(&mut self, node: NodeId, disk: u32, report: ObjectScrubReport, object_size: u64) {
        if !report.error.is_empty() {
            self.objects_failed += 1;
            self.failed.push(SkippedReplica {
                node,
                disk,
                objects: 1,
                reason: format!("object {}: {}", report.object, report.error),
            });
            return;
        }
        self.versions_checked += u64::from(report.versions);
        self.blocks_checked += report.blocks_checked;
        self.blocks_bad += report.blocks_bad;
        self.blocks_repaired += report.repaired.len() as u64;
        self.blocks_unrepaired += report.unrepaired.len() as u64;
        let offset = |block: u64| report.object * object_size + block * CHECKED_BLOCK_BYTES as u64;
        let seq = |s: u64| Some(s).filter(|&s| s != 0);
        for r in &report.repaired {
            self.repaired.push(BlockFinding {
                object: report.object,
                version: version_name(seq(r.clone_seq)),
                block: r.block,
                volume_offset: offset(r.block),
                node,
                disk,
                from_node: (r.from_node != 0).then_some(r.from_node),
                from_disk: (r.from_node != 0).then_some(r.from_disk),
                recorded_crc: None,
                actual_crc: None,
                reason: None,
                lost: None,
            });
        }
        for u in &report.unrepaired {
            self.unrepaired.push(BlockFinding {
                object: report.object,
                version: version_name(seq(u.clone_seq)),
                block: u.block,
                volume_offset: offset(u.block),
                node,
                disk,
                from_node: None,
                from_disk: None,
                recorded_crc: Some(if u.has_record {
                    format!("{:08x}", u.recorded_crc)
                } else {
                    "none (must be zero)".into()
                }),
                actual_crc: Some(format!("{:08x}", u.actual_crc)),
                reason: Some(u.reason.clone()),
                lost: Some(u.lost),
            });
        }
    }
}
