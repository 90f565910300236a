//! The scrub of a volume: every replica of every object checks every
//! block of every version (head and snapshot clones) on its own disk, and
//! repairs the bad ones from the other replicas. Then the replicas are
//! compared with each other: a digest entry in each PG's Raft log has
//! every replica take a blake3 digest of its objects at that same point
//! of the log (writes go on meanwhile), and a replica whose digest differs
//! from the others' is reported. A block check alone cannot see such a
//! replica: its blocks match its own records, which differ.
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
use crate::net::proto::{DigestQuery, ObjectScrubReport, ScrubRequest, ScrubTarget};
use crate::pg::backend::CHECKED_BLOCK_BYTES;
use crate::pg::command::Digest;
use crate::pg::group_id;
use crate::replication::NodeId;
use crate::volume::{DigestsNotTaken, DigestsTaken, VolumeError};

/// One replica's answer for a digest entry: its digests, or why none.
type ReplicaDigests = (NodeId, u32, Result<Vec<Digest>, String>);

/// How long a replica may take to apply a digest entry its leader applied.
const DIGEST_WAIT: Duration = Duration::from_secs(10);

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

/// A replica whose digest of an object differs from the other replicas'
/// at the same point of the PG's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DifferingReplica {
    pub object: u64,
    pub node: NodeId,
    pub disk: u32,
    /// The replicas that agree with each other (`node N disk D`); empty
    /// when no two replicas agree.
    pub agreeing: Vec<String>,
    pub reason: String,
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
    /// Objects whose digests at least two replicas gave.
    pub objects_compared: u64,
    /// Objects on which some replica differs from the others.
    pub objects_differing: u64,
    pub differing: Vec<DifferingReplica>,
    /// Replicas whose digests could not be had.
    pub compare_skipped: Vec<SkippedReplica>,
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

    /// Compares the replicas' digests of what [`VolumeClient::take_digests`]
    /// had them take, adding what it finds to `step`.
    ///
    /// [`VolumeClient::take_digests`]: crate::volume::VolumeClient::take_digests
    pub async fn compare_replicas(
        &self,
        taken: Vec<Result<DigestsTaken, DigestsNotTaken>>,
        step: &mut ScrubStep,
    ) {
        let not_compared = |group: u64, objects: usize, reason: String| SkippedReplica {
            node: 0,
            disk: 0,
            objects: objects as u64,
            reason: format!("PG {group:x}: {reason}"),
        };
        let mut tasks = tokio::task::JoinSet::new();
        for entry in taken {
            let entry = match entry {
                Ok(entry) => entry,
                Err(failed) => {
                    step.compare_skipped.push(not_compared(
                        failed.group,
                        failed.objects.len(),
                        format!(
                            "no digest entry for objects {:?}: {}; scrub again once the PG has a leader (all of its nodes at this version)",
                            failed.objects, failed.reason
                        ),
                    ));
                    continue;
                }
            };
            let replicas = match self.replicas(entry.group) {
                Ok(r) => r,
                Err(reason) => {
                    step.compare_skipped.push(not_compared(
                        entry.group,
                        entry.objects.len(),
                        reason,
                    ));
                    continue;
                }
            };
            let this = self.clone();
            tasks.spawn(async move {
                let mut answers = Vec::new();
                for (disk, node) in replicas {
                    let query = DigestQuery {
                        disk,
                        group: entry.group,
                        index: entry.index,
                        wait_ms: DIGEST_WAIT.as_millis() as u32,
                    };
                    answers.push((node, disk, this.replica_digests(node, query).await));
                }
                (entry, answers)
            });
        }
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((entry, answers)) => step.compare(entry, answers),
                Err(e) => step.compare_skipped.push(not_compared(
                    0,
                    0,
                    format!("a comparison task failed: {e}"),
                )),
            }
        }
        step.differing.sort_by_key(|d| (d.object, d.node, d.disk));
        step.differing.truncate(FINDINGS_MAX);
    }

    async fn replica_digests(
        &self,
        node: NodeId,
        query: DigestQuery,
    ) -> Result<Vec<Digest>, String> {
        let reply = if node == self.node_id() {
            self.serve_digests(query).await
        } else {
            let mut client = self.client(node)?;
            match tokio::time::timeout(DIGEST_WAIT * 2, client.digests(query)).await {
                Ok(Ok(reply)) => reply.into_inner(),
                Ok(Err(status)) => {
                    return Err(format!("node {node} did not answer: {}", status.message()))
                }
                Err(_) => return Err(format!("node {node} did not answer in time")),
            }
        };
        if !reply.error.is_empty() {
            return Err(reply.error);
        }
        reply
            .digests
            .iter()
            .map(|d| {
                Digest::try_from(d.as_slice())
                    .map_err(|_| format!("node {node} sent a digest of {} bytes", d.len()))
            })
            .collect()
    }
}

impl ScrubStep {
    /// Adds one digest entry's comparison: per object, the digest most
    /// replicas gave, and each replica that gave another.
    fn compare(&mut self, entry: DigestsTaken, answers: Vec<ReplicaDigests>) {
        let mut usable = Vec::new();
        for (node, disk, answer) in answers {
            match answer {
                Ok(digests) if digests.len() == entry.objects.len() => {
                    usable.push((node, disk, digests))
                }
                Ok(digests) => self.compare_skipped.push(SkippedReplica {
                    node,
                    disk,
                    objects: entry.objects.len() as u64,
                    reason: format!(
                        "gave {} digests for {} objects",
                        digests.len(),
                        entry.objects.len()
                    ),
                }),
                Err(reason) => self.compare_skipped.push(SkippedReplica {
                    node,
                    disk,
                    objects: entry.objects.len() as u64,
                    reason,
                }),
            }
        }
        if usable.len() < 2 {
            return;
        }
        let name = |node: NodeId, disk: u32| format!("node {node} disk {disk}");
        for (i, &(object, _)) in entry.objects.iter().enumerate() {
            self.objects_compared += 1;
            // Each digest given, with the replicas that gave it.
            let mut tally: Vec<(Digest, Vec<(NodeId, u32)>)> = Vec::new();
            for (node, disk, digests) in &usable {
                match tally.iter_mut().find(|(d, _)| *d == digests[i]) {
                    Some((_, holders)) => holders.push((*node, *disk)),
                    None => tally.push((digests[i], vec![(*node, *disk)])),
                }
            }
            if tally.len() == 1 {
                continue;
            }
            self.objects_differing += 1;
            tally.sort_by_key(|(_, holders)| std::cmp::Reverse(holders.len()));
            let majority = tally[0].1.len() > tally[1].1.len();
            let mut agreeing: Vec<String> = if majority {
                tally[0].1.iter().map(|&(n, d)| name(n, d)).collect()
            } else {
                Vec::new()
            };
            agreeing.sort();
            let differing = tally.iter().skip(usize::from(majority));
            for (_, holders) in differing {
                for &(node, disk) in holders {
                    self.differing.push(DifferingReplica {
                        object,
                        node,
                        disk,
                        agreeing: agreeing.clone(),
                        reason: if majority {
                            format!(
                                "at entry {} of PG {:x} this replica's digest differs from the other replicas': it holds other data or versions than they do",
                                entry.index, entry.group
                            )
                        } else {
                            format!(
                                "at entry {} of PG {:x} no two of the {} replicas that answered agree",
                                entry.index,
                                entry.group,
                                usable.len()
                            )
                        },
                    });
                }
            }
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(objects: &[u64]) -> DigestsTaken {
        DigestsTaken {
            group: 0x7_0000_0001,
            index: 40,
            objects: objects.iter().map(|&o| (o, [0; 32])).collect(),
        }
    }

    /// Per object, the replica outvoted by the other two is named with
    /// them; with no two agreeing, every replica is named and none as
    /// agreeing; a replica that gave no digests is listed as not compared,
    /// and one answer alone compares nothing.
    #[test]
    fn the_replica_that_differs_from_the_others_is_named() {
        let mut step = ScrubStep::default();
        step.compare(
            taken(&[10, 11]),
            vec![
                (1, 0, Ok(vec![[1; 32], [5; 32]])),
                (2, 0, Ok(vec![[1; 32], [6; 32]])),
                (3, 1, Ok(vec![[2; 32], [7; 32]])),
            ],
        );
        assert_eq!(step.objects_compared, 2);
        assert_eq!(step.objects_differing, 2);
        let outvoted: Vec<_> = step.differing.iter().filter(|d| d.object == 10).collect();
        assert_eq!(outvoted.len(), 1);
        assert_eq!((outvoted[0].node, outvoted[0].disk), (3, 1));
        assert_eq!(outvoted[0].agreeing, ["node 1 disk 0", "node 2 disk 0"]);
        assert!(outvoted[0].reason.contains("entry 40 of PG 700000001"));
        let split: Vec<_> = step.differing.iter().filter(|d| d.object == 11).collect();
        assert_eq!(split.len(), 3);
        assert!(split.iter().all(|d| d.agreeing.is_empty()));

        let mut step = ScrubStep::default();
        step.compare(
            taken(&[10]),
            vec![
                (1, 0, Ok(vec![[1; 32]])),
                (2, 0, Ok(vec![[1; 32]])),
                (3, 0, Err("lags".into())),
            ],
        );
        assert_eq!((step.objects_compared, step.objects_differing), (1, 0));
        assert_eq!(step.compare_skipped.len(), 1);
        assert_eq!(step.compare_skipped[0].node, 3);

        let mut step = ScrubStep::default();
        step.compare(
            taken(&[10]),
            vec![(1, 0, Ok(vec![[1; 32]])), (2, 0, Ok(vec![]))],
        );
        assert_eq!(step.objects_compared, 0);
        assert_eq!(step.compare_skipped.len(), 1);
    }
}
