//! Repairing this node's blocks from the other replicas of their PG, and
//! serving this node's block copies to them.

use hpchain_placement::ClusterMap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

use super::version_name;
use crate::cluster::ClusterMapState;
use crate::net::proto::integrity_client::IntegrityClient;
use crate::net::proto::{
    BlockReply, BlockRequest, DigestQuery, DigestReply, ObjectScrubReport, PgReply, RepairedBlock,
    ScrubReply, ScrubRequest, UnrepairedBlock,
};
use crate::net::server::pg_reply;
use crate::pg::backend::{
    BackendError, BadBlock, BlockRef, BlockRepair, PgBackend, CHECKED_BLOCK_BYTES,
};
use crate::pg::command::{corrupt_in_answer, ObjectId};
use crate::pg::{disk_of_peer, pg_disks, pg_of_group};
use crate::replication::{GroupId, NodeId, RaftNodeHandle};

/// Reads retried after repairing what the previous one met.
const READ_REPAIR_ROUNDS: usize = 3;
/// How long a replica waits to reach the asker's applied index before it
/// answers that it lags.
const CATCH_UP_WAIT: Duration = Duration::from_secs(3);
const CATCH_UP_POLL: Duration = Duration::from_millis(20);
/// One block copy from another node, catch-up wait included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// What found a bad block (a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Read,
    Scrub,
}

impl Trigger {
    fn index(self) -> usize {
        match self {
            Trigger::Read => 0,
            Trigger::Scrub => 1,
        }
    }
}

/// Per-node counters, by trigger.
#[derive(Default)]
struct Counters {
    found: [AtomicU64; 2],
    repaired: [AtomicU64; 2],
    unrepairable: [AtomicU64; 2],
    objects_scrubbed: AtomicU64,
}

struct Inner {
    me: NodeId,
    raft: RaftNodeHandle,
    map: Arc<RwLock<ClusterMapState>>,
    disks: HashMap<u32, Arc<dyn PgBackend>>,
    placement: Mutex<Option<(u64, Arc<ClusterMap>)>>,
    channels: Mutex<HashMap<NodeId, Channel>>,
    counters: Counters,
}

/// This node's repairer; cheap to clone.
#[derive(Clone)]
pub struct Repairer {
    inner: Arc<Inner>,
}

/// Where a repaired block's good bytes came from.
enum Source {
    /// Another replica's copy, rewritten here.
    Peer(NodeId, u32),
    /// The block must be zero (no record): punched out again.
    Zeroes,
    /// Good again by the time the lock was held (repaired by a concurrent
    /// repair, rewritten by a write, or its version removed).
    Nothing,
}

/// Why a bad block was not repaired.
struct NotRepaired {
    /// What each other replica answered.
    reason: String,
    /// Every other replica answered with a copy, and none matched the
    /// record: the block's data is lost (not merely out of reach now).
    lost: bool,
}

impl From<String> for NotRepaired {
    fn from(reason: String) -> NotRepaired {
        NotRepaired {
            reason,
            lost: false,
        }
    }
}

/// Runs a backend call off the async threads.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, BackendError> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(call).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(e) => Err(format!("the disk task failed: {e}")),
    }
}

fn block_reply_error(error: String) -> BlockReply {
    BlockReply {
        error,
        ..BlockReply::default()
    }
}

impl Repairer {
    /// The repairer of node `me`, whose disks are `disks` (by disk id).
    pub fn new(
        me: NodeId,
        raft: RaftNodeHandle,
        map: Arc<RwLock<ClusterMapState>>,
        disks: HashMap<u32, Arc<dyn PgBackend>>,
    ) -> Repairer {
        Repairer {
            inner: Arc::new(Inner {
                me,
                raft,
                map,
                disks,
                placement: Mutex::new(None),
                channels: Mutex::new(HashMap::new()),
                counters: Counters::default(),
            }),
        }
    }

    pub fn node_id(&self) -> NodeId {
        self.inner.me
    }

    pub(super) fn map(&self) -> &Arc<RwLock<ClusterMapState>> {
        &self.inner.map
    }

    fn placement(&self) -> Result<Arc<ClusterMap>, String> {
        let map = self.inner.map.read().expect("map lock");
        let mut cache = self.inner.placement.lock().expect("placement lock");
        if let Some((epoch, placement)) = cache.as_ref() {
            if *epoch == map.epoch {
                return Ok(placement.clone());
            }
        }
        let placement = Arc::new(map.placement_map().map_err(|e| e.to_string())?);
        *cache = Some((map.epoch, placement.clone()));
        Ok(placement)
    }

    /// The (disk, node) of every replica of `group`, in placement order.
    pub(super) fn replicas(&self, group: GroupId) -> Result<Vec<(u32, NodeId)>, String> {
        let (pool_id, index) =
            pg_of_group(group).ok_or_else(|| format!("group {group:x} is not a PG"))?;
        let placement = self.placement()?;
        let map = self.inner.map.read().expect("map lock");
        let pool = map
            .pools
            .values()
            .find(|p| p.id == pool_id)
            .ok_or_else(|| format!("PG {group:x}: pool {pool_id} is not in the map"))?;
        let (disks, _) = pg_disks(&placement, pool, index)?;
        Ok(disks
            .into_iter()
            .filter_map(|d| map.node_of_disk(d).map(|n| (d, n.id)))
            .collect())
    }

    /// The disk of this node that holds `group`'s replica (the first
    /// local one in placement order, as the PG manager picks it).
    fn local_disk(&self, group: GroupId) -> Result<u32, String> {
        self.replicas(group)?
            .into_iter()
            .find(|(disk, node)| *node == self.inner.me && self.inner.disks.contains_key(disk))
            .map(|(disk, _)| disk)
            .ok_or_else(|| {
                format!(
                    "PG {group:x} has no replica on node {}'s disks",
                    self.inner.me
                )
            })
    }

    fn backend(&self, disk: u32) -> Result<Arc<dyn PgBackend>, String> {
        self.inner
            .disks
            .get(&disk)
            .cloned()
            .ok_or_else(|| format!("disk {disk} is not on node {}", self.inner.me))
    }

    fn channel(&self, node: NodeId) -> Option<Channel> {
        let mut channels = self.inner.channels.lock().expect("channels lock");
        if let Some(c) = channels.get(&node) {
            return Some(c.clone());
        }
        let addr = self
            .inner
            .map
            .read()
            .ok()?
            .nodes
            .get(&node)?
            .peer_addr
            .clone();
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .ok()?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .connect_lazy();
        channels.insert(node, channel.clone());
        Some(channel)
    }

    pub(super) fn client(&self, node: NodeId) -> Result<IntegrityClient<Channel>, String> {
        self.channel(node)
            .map(IntegrityClient::new)
            .ok_or_else(|| format!("node {node} has no address in the map"))
    }

    /// A linearizable read of a PG this node leads (as the PG service and
    /// the local volume client send it). A corrupt block it meets on this
    /// node's disk is repaired from another replica and the read made
    /// again; a block no replica holds a good copy of fails the read with
    /// `corrupt` set and the block named.
    pub async fn read(&self, group: GroupId, query: Vec<u8>, timeout: Duration) -> PgReply {
        for _ in 0..=READ_REPAIR_ROUNDS {
            let result = self
                .inner
                .raft
                .read_async(group, query.clone(), timeout)
                .await;
            let bad = match &result {
                Ok(answer) => corrupt_in_answer(answer),
                Err(_) => None,
            };
            let Some(bad) = bad else {
                return pg_reply(result);
            };
            if let Err(reason) = self.repair_after_read(group, &bad).await {
                return PgReply {
                    error: reason,
                    corrupt: true,
                    ..PgReply::default()
                };
            }
        }
        PgReply {
            error: format!(
                "PG {group:x}: the read still meets corrupt blocks after {READ_REPAIR_ROUNDS} repairs; the disk of node {} may be failing: check it (dmesg, smartctl) and run `hpchain volume scrub`",
                self.inner.me
            ),
            corrupt: true,
            ..PgReply::default()
        }
    }

    /// Repairs every bad block of the object a read met `bad` in; an error
    /// names `bad` when it could not be repaired.
    async fn repair_after_read(&self, group: GroupId, bad: &BadBlock) -> Result<(), String> {
        // The volume client puts the volume's name in front of the error.
        let where_ = self.describe(bad, false);
        let disk = self
            .local_disk(group)
            .map_err(|e| format!("{where_} is corrupt on this node and cannot be repaired: {e}"))?;
        tracing::warn!(
            node = self.inner.me,
            disk,
            "read met {}: corrupt; repairing",
            self.describe(bad, true)
        );
        let report = self
            .repair_object(disk, group, bad.at.object, Trigger::Read)
            .await;
        if !report.error.is_empty() {
            return Err(format!(
                "{where_} is corrupt on node {} disk {disk}, and checking the object failed: {}",
                self.inner.me, report.error
            ));
        }
        let same = |u: &&UnrepairedBlock| {
            u.block == bad.at.block && u.clone_seq == bad.at.clone_seq.unwrap_or(0)
        };
        let Some(u) = report.unrepaired.iter().find(same) else {
            return Ok(());
        };
        let here = format!(
            "{where_} is corrupt on node {} disk {disk} (crc32c {:08x} where {:08x} is recorded)",
            self.inner.me,
            bad.actual,
            bad.expected()
        );
        if u.lost {
            return Err(format!(
                "{here}, and no other replica holds a good copy ({}). The data of this block is lost: rewrite those bytes (from a backup, or a snapshot's copy of them), then run `hpchain volume scrub` on the volume",
                u.reason
            ));
        }
        Err(format!(
            "{here}, and no good copy could be fetched now ({}). Retry once the PG's other replicas are up and caught up; `hpchain volume scrub` repairs it then",
            u.reason
        ))
    }

    /// `volume NAME (id X) object N head block B (volume bytes A..Z)`,
    /// without the volume's name and id unless `volume_named`.
    pub(super) fn describe(&self, bad: &BadBlock, volume_named: bool) -> String {
        let map = self.inner.map.read().expect("map lock");
        let volume = map.volumes.values().find(|v| v.id == bad.at.object.volume);
        let object_size = volume
            .and_then(|v| map.pools.get(&v.pool))
            .map(|p| p.object_size);
        let name = volume.map_or_else(|| "?".to_string(), |v| format!("{:?}", v.name));
        let mut out = if volume_named {
            format!("volume {name} (id {:x}) ", bad.at.object.volume)
        } else {
            String::new()
        };
        out.push_str(&format!(
            "object {} {} block {}",
            bad.at.object.object_no,
            version_name(bad.at.clone_seq),
            bad.at.block
        ));
        if let Some(size) = object_size {
            let start = bad.at.object.object_no * size + bad.at.block * CHECKED_BLOCK_BYTES as u64;
            out.push_str(&format!(
                " (volume bytes {start}..{})",
                start + CHECKED_BLOCK_BYTES as u64
            ));
        }
        out
    }

    /// Checks every block of every version of `object` on local `disk`
    /// and repairs each bad one from the other replicas of `group`.
    pub async fn repair_object(
        &self,
        disk: u32,
        group: GroupId,
        object: ObjectId,
        trigger: Trigger,
    ) -> ObjectScrubReport {
        let mut report = ObjectScrubReport {
            object: object.object_no,
            ..ObjectScrubReport::default()
        };
        let backend = match self.backend(disk) {
            Ok(b) => b,
            Err(e) => {
                report.error = e;
                return report;
            }
        };
        let scrub = match blocking(move || backend.scrub_object(&object)).await {
            Ok(s) => s,
            Err(e) => {
                report.error = e;
                return report;
            }
        };
        let counters = &self.inner.counters;
        if trigger == Trigger::Scrub {
            counters.objects_scrubbed.fetch_add(1, Ordering::Relaxed);
        }
        report.versions = scrub.versions;
        report.blocks_checked = scrub.blocks_checked;
        report.blocks_bad = scrub.bad.len() as u64;
        counters.found[trigger.index()].fetch_add(report.blocks_bad, Ordering::Relaxed);
        for bad in scrub.bad {
            let where_ = self.describe(&bad, true);
            match self.repair_block(disk, group, &bad).await {
                Ok(source) => {
                    let (from_node, from_disk) = match source {
                        Source::Peer(node, disk) => (node, disk),
                        Source::Zeroes | Source::Nothing => (0, 0),
                    };
                    if !matches!(source, Source::Nothing) {
                        counters.repaired[trigger.index()].fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            node = self.inner.me,
                            disk,
                            from_node,
                            from_disk,
                            "repaired {where_}"
                        );
                    }
                    report.repaired.push(RepairedBlock {
                        clone_seq: bad.at.clone_seq.unwrap_or(0),
                        block: bad.at.block,
                        from_node,
                        from_disk,
                    });
                }
                Err(NotRepaired { reason, lost }) => {
                    counters.unrepairable[trigger.index()].fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        node = self.inner.me,
                        disk,
                        lost,
                        "{where_} is corrupt and could not be repaired: {reason}"
                    );
                    report.unrepaired.push(UnrepairedBlock {
                        clone_seq: bad.at.clone_seq.unwrap_or(0),
                        block: bad.at.block,
                        has_record: bad.recorded.is_some(),
                        recorded_crc: bad.recorded.unwrap_or(0),
                        actual_crc: bad.actual,
                        reason,
                        lost,
                    });
                }
            }
        }
        report
    }

    /// Rewrites one bad block of local `disk`: with zeroes if it has no
    /// record, else with the first other replica's copy whose crc32c is
    /// the recorded one. The error says what each replica offered.
    async fn repair_block(
        &self,
        disk: u32,
        group: GroupId,
        bad: &BadBlock,
    ) -> Result<Source, NotRepaired> {
        let backend = self.backend(disk)?;
        let at = bad.at;
        if bad.recorded.is_none() {
            let b = backend.clone();
            let outcome =
                blocking(move || b.repair_block(&at, &[0u8; CHECKED_BLOCK_BYTES])).await?;
            return match outcome {
                BlockRepair::Rewritten => Ok(Source::Zeroes),
                BlockRepair::AlreadyGood | BlockRepair::Gone => Ok(Source::Nothing),
                // A block without a record gained one: it was written since.
                BlockRepair::Refused { .. } => Ok(Source::Nothing),
            };
        }
        // What this replica applied, synced or not: its reads, and so the
        // bad block's record, reflect that much.
        let min_applied = match self.applied(group, disk).await? {
            Some(index) => index,
            None => return Err(format!("PG {group:x} has no replica on this node any more").into()),
        };
        let mut offers = Vec::new();
        let mut all_mismatched = true;
        for (peer_disk, node) in self
            .replicas(group)?
            .into_iter()
            .filter(|(d, _)| *d != disk)
        {
            let request = BlockRequest {
                group,
                disk: peer_disk,
                volume: at.object.volume,
                object: at.object.object_no,
                clone_seq: at.clone_seq.unwrap_or(0),
                block: at.block,
                min_applied,
            };
            let bytes = match self.fetch(node, request).await {
                Ok(bytes) => bytes,
                Err(why) => {
                    all_mismatched = false;
                    offers.push(format!("node {node} disk {peer_disk}: {why}"));
                    continue;
                }
            };
            let crc = crc32c::crc32c(&bytes);
            if crc != bad.expected() {
                offers.push(format!(
                    "node {node} disk {peer_disk}: its copy has crc32c {crc:08x}"
                ));
                continue;
            }
            let b = backend.clone();
            match blocking(move || b.repair_block(&at, &bytes)).await? {
                BlockRepair::Rewritten => return Ok(Source::Peer(node, peer_disk)),
                BlockRepair::AlreadyGood | BlockRepair::Gone => return Ok(Source::Nothing),
                BlockRepair::Refused { expected, .. } => {
                    all_mismatched = false;
                    offers.push(format!(
                        "node {node} disk {peer_disk}: its copy matched, but the block's record here changed to {expected:08x} meanwhile (a write landed); scrub again"
                    ))
                }
            }
        }
        if offers.is_empty() {
            return Err("the PG has no other replica".to_string().into());
        }
        Err(NotRepaired {
            reason: offers.join("; "),
            lost: all_mismatched,
        })
    }

    /// A block copy from `node` (this node included), raw.
    async fn fetch(&self, node: NodeId, request: BlockRequest) -> Result<Vec<u8>, String> {
        let reply = if node == self.inner.me {
            self.serve_block(request).await
        } else {
            let mut client = self.client(node)?;
            match tokio::time::timeout(FETCH_TIMEOUT, client.read_block(request)).await {
                Ok(Ok(reply)) => reply.into_inner(),
                Ok(Err(status)) => return Err(format!("unreachable ({})", status.message())),
                Err(_) => return Err(format!("no answer within {FETCH_TIMEOUT:?}")),
            }
        };
        if !reply.error.is_empty() {
            return Err(reply.error);
        }
        if !reply.found {
            return Err("does not hold this version".into());
        }
        if reply.data.len() != CHECKED_BLOCK_BYTES {
            return Err(format!(
                "sent {} bytes instead of {CHECKED_BLOCK_BYTES}",
                reply.data.len()
            ));
        }
        Ok(reply.data)
    }

    /// The index this node's replica of `group` on `disk` has applied;
    /// `None` when the node hosts no replica of it there.
    async fn applied(&self, group: GroupId, disk: u32) -> Result<Option<u64>, String> {
        let replica = self
            .inner
            .raft
            .applied_async(group)
            .await
            .map_err(|e| format!("replication: {e}"))?;
        Ok(replica
            .filter(|&(peer, _)| disk_of_peer(peer) == Some(disk))
            .map(|(_, applied)| applied))
    }

    /// The index this node's replica of `group` on `disk` applied; an
    /// error when it holds none there.
    async fn replica_applied(&self, group: GroupId, disk: u32) -> Result<u64, String> {
        self.applied(group, disk)
            .await?
            .ok_or_else(|| format!("holds no replica of PG {group:x} on disk {disk}"))
    }

    /// Serves a block of one of this node's replicas, raw, once the
    /// replica has applied the asker's index.
    pub async fn serve_block(&self, request: BlockRequest) -> BlockReply {
        let backend = match self.backend(request.disk) {
            Ok(b) => b,
            Err(e) => return block_reply_error(e),
        };
        let group = request.group;
        let deadline = Instant::now() + CATCH_UP_WAIT;
        let applied = loop {
            // The index applied, not the one synced: a new replica syncs
            // its first data up to a second after applying it, and a read
            // sees applied data either way.
            let applied = match self.replica_applied(group, request.disk).await {
                Ok(a) => a,
                Err(e) => return block_reply_error(e),
            };
            if applied >= request.min_applied {
                break applied;
            }
            if Instant::now() >= deadline {
                return block_reply_error(format!(
                    "lags: applied index {applied} of PG {group:x}, the asker's is {}",
                    request.min_applied
                ));
            }
            tokio::time::sleep(CATCH_UP_POLL).await;
        };
        let at = BlockRef {
            object: ObjectId {
                volume: request.volume,
                object_no: request.object,
            },
            clone_seq: Some(request.clone_seq).filter(|&s| s != 0),
            block: request.block,
        };
        match blocking(move || backend.block_copy(&at)).await {
            Ok(Some(copy)) => BlockReply {
                found: true,
                data: copy.bytes,
                has_record: copy.recorded.is_some(),
                recorded_crc: copy.recorded.unwrap_or(0),
                applied,
                error: String::new(),
            },
            Ok(None) => BlockReply {
                applied,
                ..BlockReply::default()
            },
            Err(e) => block_reply_error(e),
        }
    }

    /// Checks and repairs the objects of `request` on one of this node's
    /// disks, one after the other (the disk is the bottleneck).
    pub async fn scrub_disk(&self, request: ScrubRequest) -> ScrubReply {
        if let Err(e) = self.backend(request.disk) {
            return ScrubReply {
                error: e,
                ..ScrubReply::default()
            };
        }
        let mut objects = Vec::with_capacity(request.objects.len());
        for target in request.objects {
            let object = ObjectId {
                volume: request.volume,
                object_no: target.object,
            };
            objects.push(
                self.repair_object(request.disk, target.group, object, Trigger::Scrub)
                    .await,
            );
        }
        ScrubReply {
            objects,
            error: String::new(),
        }
    }

    /// The digests a digest entry took on one of this node's replicas,
    /// waiting up to `wait_ms` for the replica to apply it.
    pub async fn serve_digests(&self, query: DigestQuery) -> DigestReply {
        let error = |error: String| DigestReply {
            digests: Vec::new(),
            error,
        };
        let backend = match self.backend(query.disk) {
            Ok(b) => b,
            Err(e) => return error(e),
        };
        let (group, index) = (query.group, query.index);
        let deadline = Instant::now() + Duration::from_millis(query.wait_ms.into());
        loop {
            // The applied index first: the entry records its digests
            // before the replica's applied index passes it.
            let applied = match self.replica_applied(group, query.disk).await {
                Ok(a) => a,
                Err(e) => return error(e),
            };
            if let Some(digests) = backend.digests().get(group, index) {
                return DigestReply {
                    digests: digests.iter().map(|d| d.to_vec()).collect(),
                    error: String::new(),
                };
            }
            if applied >= index {
                // Applied without taking it here: the replica got the
                // entry's effects in a copy of another replica, or took
                // it too long ago to keep.
                return error(format!(
                    "replica of PG {group:x} on disk {} applied entry {index} without a digest kept (copied from another replica, digested too long ago, or its digest failed there)",
                    query.disk
                ));
            }
            if Instant::now() >= deadline {
                return error(format!(
                    "lags: applied index {applied} of PG {group:x}, the digest entry is {index}"
                ));
            }
            tokio::time::sleep(CATCH_UP_POLL).await;
        }
    }

    /// This node's integrity counters, in Prometheus text format.
    pub fn render_metrics(&self, out: &mut String) {
        let node = format!("node=\"{}\"", self.inner.me);
        let c = &self.inner.counters;
        let by_trigger = |values: &[AtomicU64; 2]| -> Vec<(String, u64)> {
            [("read", 0), ("scrub", 1)]
                .iter()
                .map(|(name, i)| {
                    (
                        format!("{node},found_by=\"{name}\""),
                        values[*i].load(Ordering::Relaxed),
                    )
                })
                .collect()
        };
        crate::api::metric_family(
            out,
            "hpchain_store_corrupt_blocks_total",
            "counter",
            "Blocks of this node's disks found not to match their recorded crc32c.",
            &by_trigger(&c.found),
        );
        crate::api::metric_family(
            out,
            "hpchain_store_blocks_repaired_total",
            "counter",
            "Corrupt blocks of this node's disks rewritten with a good copy.",
            &by_trigger(&c.repaired),
        );
        crate::api::metric_family(
            out,
            "hpchain_store_blocks_unrepairable_total",
            "counter",
            "Repairs that found no replica with a copy matching the recorded crc32c.",
            &by_trigger(&c.unrepairable),
        );
        crate::api::metric_family(
            out,
            "hpchain_scrub_objects_total",
            "counter",
            "Object replicas checked by scrub on this node's disks.",
            &[(node.clone(), c.objects_scrubbed.load(Ordering::Relaxed))],
        );
    }
}
