//! The volume client: byte-range I/O on a volume, routed to PG leaders.

use hpchain_placement::{pg_of, ClusterMap};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

use super::qos::{IoKind, QosLimiter, QosLimits};
use crate::cluster::map::{ParentRef, Pool};
use crate::cluster::ClusterMapState;
use crate::net::pg_stream::{PgStreams, PROPOSE_WITHIN};
use crate::net::proto::space_client::SpaceClient;
use crate::net::proto::PgReply;
use crate::net::server::pg_reply;
use crate::pg::command::{
    decode_digest_answer, decode_read_answer, encode, encode_digest_entry, CopyUp, Digest,
    ObjectId, ObjectOp, ObjectStat, Query, ReadQuery, ANSWER_COPY_UP_NEEDED,
};
use crate::pg::{disk_of_peer, group_id};
use crate::replication::{GroupId, NodeId, RaftNodeHandle};

/// How long one piece of I/O chases its PG's leader before failing.
const PIECE_DEADLINE: Duration = Duration::from_secs(30);
const PIECE_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// How far apart node clocks may be: NTP keeps them within milliseconds;
/// past this, the ordering of retried writes (`WriteFences`) is not
/// assured (docs/operations.md, "Clocks").
pub const CLOCK_SKEW_MAX: Duration = Duration::from_millis(500);

/// Per placement group, the instant before which no write attempt starts.
///
/// A write attempt whose fate is unknown (its answer lost, or its caller
/// cancelled: an iSCSI task abort, a dropped HTTP request, a sibling
/// piece's failure) may still be proposed until [`PROPOSE_WITHIN`] after
/// it started, on the serving node's clock. A write to the same blocks
/// started before that (the retry, or the next write) could be overtaken
/// by it and overwritten with older data after it was acknowledged. So
/// such an attempt fences its group until it can no longer be proposed.
#[derive(Default)]
struct WriteFences {
    until: Mutex<HashMap<GroupId, Instant>>,
}

impl WriteFences {
    /// Waits out `group`'s fence, then starts an attempt: on another node
    /// (`remote`), or on this one.
    async fn enter(self: &Arc<Self>, group: GroupId, remote: bool) -> WriteAttempt {
        self.wait([group]).await;
        // The wall clock first: the fence below is then never earlier
        // than the deadline the serving node is given.
        let deadline_unix_ms = crate::ledger::now_ms() + PROPOSE_WITHIN.as_millis() as u64 + 1;
        let now = Instant::now();
        let skew = if remote {
            CLOCK_SKEW_MAX
        } else {
            Duration::ZERO
        };
        WriteAttempt {
            fences: self.clone(),
            group,
            propose_by: now + PROPOSE_WITHIN,
            deadline_unix_ms,
            settles: now + PROPOSE_WITHIN + skew,
            open: true,
        }
    }

    /// Waits out the fences `groups` have now. A fence raised later comes
    /// from an attempt that runs alongside the caller's, and concurrent
    /// writes may land in either order anyway.
    async fn wait(&self, groups: impl IntoIterator<Item = GroupId>) {
        self.sleep_past(|fences| {
            groups
                .into_iter()
                .filter_map(|group| fences.get(&group).copied())
                .max()
        })
        .await;
    }

    /// Waits out every fence up now: no write attempt lost or abandoned
    /// here before the call can still be proposed anywhere (at most
    /// [`PROPOSE_WITHIN`] plus [`CLOCK_SKEW_MAX`]).
    async fn settle(&self) {
        self.sleep_past(|fences| fences.values().copied().max())
            .await;
    }

    /// Drops the passed fences, then sleeps until the instant `pick`
    /// chooses among those up.
    async fn sleep_past(&self, pick: impl FnOnce(&HashMap<GroupId, Instant>) -> Option<Instant>) {
        let latest = {
            let mut fences = self.until.lock().expect("write fences lock");
            let now = Instant::now();
            fences.retain(|_, until| *until > now);
            pick(&fences)
        };
        if let Some(until) = latest {
            tokio::time::sleep_until(until.into()).await;
        }
    }

    #[cfg(test)]
    fn until(&self, group: GroupId) -> Option<Instant> {
        self.until
            .lock()
            .expect("write fences lock")
            .get(&group)
            .copied()
    }
}

/// One write attempt; dropped before [`WriteAttempt::answered`], it fences
/// its group.
struct WriteAttempt {
    fences: Arc<WriteFences>,
    group: GroupId,
    /// Not proposed on this node after this.
    propose_by: Instant,
    /// Not proposed on another node after this (its clock).
    deadline_unix_ms: u64,
    /// When it can no longer be proposed anywhere.
    settles: Instant,
    open: bool,
}

impl WriteAttempt {
    /// The serving node answered: the write was proposed, or never will be.
    fn answered(mut self) {
        self.open = false;
    }
}

impl Drop for WriteAttempt {
    fn drop(&mut self) {
        if self.open {
            let mut fences = self.fences.until.lock().expect("write fences lock");
            let until = fences.entry(self.group).or_insert(self.settles);
            *until = (*until).max(self.settles);
        }
    }
}
/// Objects a walk (rollback, trim, purge, flatten) works on at once.
const WALK_PARALLEL: usize = 16;
/// Largest single read or write the client accepts.
pub const IO_MAX_BYTES: u64 = 64 << 20;

/// Why volume I/O failed. Each names the volume and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VolumeError {
    #[error("volume {0:?} does not exist; list volumes with `hpchain volume ls`")]
    NotFound(String),
    #[error("snapshot {volume}@{snapshot} does not exist; list snapshots with `hpchain snap ls {volume}`")]
    SnapshotNotFound { volume: String, snapshot: String },
    #[error("volume {volume:?}: bytes {offset}..{end} are past its end ({size} bytes); stay inside the volume or grow it")]
    OutOfRange {
        volume: String,
        offset: u64,
        end: u64,
        size: u64,
    },
    #[error(
        "volume {volume:?}: a request of {len} bytes exceeds the limit of {IO_MAX_BYTES}; split it"
    )]
    TooLarge { volume: String, len: u64 },
    #[error("volume {volume:?}: placement group {group:x} has no reachable leader after {PIECE_DEADLINE:?}; check that a majority of its replicas' nodes is up")]
    Unavailable { volume: String, group: GroupId },
    #[error("volume {volume:?}: {reason}")]
    Failed { volume: String, reason: String },
    /// A block of the range is corrupt on its PG's leader and could not be
    /// repaired: no replica holds a copy matching its recorded crc32c (the
    /// data is lost), or none could be fetched now; the reason says which.
    #[error("volume {volume:?}: {reason}")]
    Corrupt { volume: String, reason: String },
}

impl VolumeError {
    /// A stable code for the API.
    pub fn code(&self) -> &'static str {
        match self {
            VolumeError::NotFound(_) => "volume.not_found",
            VolumeError::SnapshotNotFound { .. } => "snapshot.not_found",
            VolumeError::OutOfRange { .. } => "volume.out_of_range",
            VolumeError::TooLarge { .. } => "volume.io_too_large",
            VolumeError::Unavailable { .. } => "volume.unavailable",
            VolumeError::Failed { .. } => "volume.io_failed",
            VolumeError::Corrupt { .. } => "volume.corrupt",
        }
    }
}

/// The placement map computed for one map epoch, with the map it came
/// from, so that an I/O does not copy the cluster map.
type PlacementAtEpoch = (u64, Arc<ClusterMap>, Arc<ClusterMapState>);

enum Io {
    Write(Vec<u8>),
    Read(Vec<u8>),
}

/// Objects one digest entry names, at most: each costs every replica
/// database reads on its Raft loop while applying.
const DIGEST_OBJECTS_PER_ENTRY: usize = 16;
/// Object bytes one digest entry covers, at most (a 4 KiB block is one
/// crc record to read).
const DIGEST_BYTES_PER_ENTRY: u64 = 64 << 20;

/// One digest entry's outcome: its PG, its index, and each object with
/// the digest its leader took.
#[derive(Debug, Clone)]
pub struct DigestsTaken {
    pub group: GroupId,
    pub index: u64,
    pub objects: Vec<(u64, Digest)>,
}

/// A digest entry that could not be made: its PG, its objects, why.
#[derive(Debug, Clone)]
pub struct DigestsNotTaken {
    pub group: GroupId,
    pub objects: Vec<u64>,
    pub reason: String,
}

/// What I/O needs of a volume, taken from the map without copying its
/// snapshot list (a volume may have thousands).
#[derive(Debug, Clone)]
struct VolumeIo {
    id: u64,
    name: String,
    size: u64,
    snap_seq: u64,
    parent: Option<ParentRef>,
    qos: QosLimits,
    pool: Pool,
}

impl VolumeIo {
    /// The Raft group of the PG that holds object `object_no`.
    fn group_of(&self, object_no: u64) -> GroupId {
        group_id(self.pool.id, pg_of(self.id, object_no, self.pool.pg_num))
    }

    /// The object size, and whether object `object_no` still reads
    /// through to the parent snapshot.
    fn reads_through(&self, object_no: u64) -> bool {
        self.parent
            .as_ref()
            .is_some_and(|p| object_no * self.pool.object_size < p.overlap)
    }

    /// `[offset, offset + len)` lies within `size` (the volume's or a
    /// snapshot's).
    fn check_range(&self, size: u64, offset: u64, len: u64) -> Result<(), VolumeError> {
        let end = offset.saturating_add(len);
        if end > size {
            return Err(VolumeError::OutOfRange {
                volume: self.name.clone(),
                offset,
                end,
                size,
            });
        }
        Ok(())
    }

    /// A read or write of `len` bytes is within the per-request limit.
    fn check_len(&self, len: u64) -> Result<(), VolumeError> {
        if len > IO_MAX_BYTES {
            return Err(VolumeError::TooLarge {
                volume: self.name.clone(),
                len,
            });
        }
        Ok(())
    }

    fn failed(&self, reason: impl ToString) -> VolumeError {
        VolumeError::Failed {
            volume: self.name.clone(),
            reason: reason.to_string(),
        }
    }
}

/// A pass over every object of a volume (or a range of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walk {
    /// Put each object back as snapshot `snapshot` saw it.
    Rollback { snapshot: u64 },
    /// Drop versions no live snapshot reads after `removed` went.
    Trim {
        removed: u64,
        lower: u64,
        upper: u64,
    },
    /// Remove every version (the volume is being deleted).
    Purge,
    /// Copy what still reads through to the parent into the clone.
    Flatten,
}

/// How far a walk got: objects `[0, next)` are done, of `total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WalkProgress {
    pub next_object: u64,
    pub total_objects: u64,
}

/// Allocated bytes of a volume and of each of its snapshots, counted once
/// per version (not per replica). "Exclusive" bytes are held for that
/// volume head or snapshot alone; "shared" bytes are also read by another.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SpaceUsage {
    pub allocated_bytes: u64,
    pub exclusive_bytes: u64,
    pub shared_bytes: u64,
    pub snapshots: Vec<SnapshotUsage>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SnapshotUsage {
    pub name: String,
    pub id: u64,
    pub allocated_bytes: u64,
    pub exclusive_bytes: u64,
    pub shared_bytes: u64,
}

/// Byte-range I/O on volumes, from any node.
#[derive(Clone)]
pub struct VolumeClient {
    me: NodeId,
    local: RaftNodeHandle,
    map: Arc<RwLock<ClusterMapState>>,
    placement: Arc<Mutex<Option<PlacementAtEpoch>>>,
    leaders: Arc<Mutex<HashMap<GroupId, NodeId>>>,
    channels: Arc<Mutex<HashMap<NodeId, Channel>>>,
    /// PG I/O to other nodes, pipelined on one stream per node.
    streams: PgStreams,
    write_fences: Arc<WriteFences>,
    limiters: Arc<Mutex<HashMap<u64, (String, QosLimiter)>>>,
    /// Serves this node's own PG reads, repairing corrupt blocks; `None`
    /// reads without repair (tests).
    repairer: Option<crate::integrity::Repairer>,
}

impl VolumeClient {
    pub fn new(
        me: NodeId,
        local: RaftNodeHandle,
        map: Arc<RwLock<ClusterMapState>>,
    ) -> VolumeClient {
        VolumeClient {
            me,
            local,
            map,
            placement: Arc::new(Mutex::new(None)),
            leaders: Arc::new(Mutex::new(HashMap::new())),
            channels: Arc::new(Mutex::new(HashMap::new())),
            streams: PgStreams::default(),
            write_fences: Arc::default(),
            limiters: Arc::new(Mutex::new(HashMap::new())),
            repairer: None,
        }
    }

    /// Waits until no write this client lost or abandoned (its answer
    /// lost, its caller cancelled) can still be proposed. A front end
    /// calls it before it reports such a write as ended (an iSCSI task
    /// aborted) to a client that may send it again through another node.
    pub async fn settle_writes(&self) {
        self.write_fences.settle().await;
    }

    /// Reads of PGs this node leads repair the corrupt blocks they meet,
    /// as reads arriving over gRPC do.
    pub fn with_repairer(mut self, repairer: crate::integrity::Repairer) -> VolumeClient {
        self.repairer = Some(repairer);
        self
    }

    fn view(&self, name: &str) -> Result<VolumeIo, VolumeError> {
        let map = self.map.read().expect("map lock");
        let (volume, pool) = volume_and_pool(&map, name)?;
        Ok(VolumeIo {
            id: volume.id,
            name: volume.name.clone(),
            size: volume.size,
            snap_seq: volume.snap_seq,
            parent: volume.parent.clone(),
            qos: volume.qos,
            pool: pool.clone(),
        })
    }

    /// The snapshot's id and size.
    fn snapshot_of(&self, volume: &str, snapshot: &str) -> Result<(u64, u64), VolumeError> {
        let map = self.map.read().expect("map lock");
        let v = map
            .volumes
            .get(volume)
            .ok_or_else(|| VolumeError::NotFound(volume.to_string()))?;
        v.snapshot(snapshot)
            .map(|s| (s.id, s.size))
            .ok_or_else(|| VolumeError::SnapshotNotFound {
                volume: volume.to_string(),
                snapshot: snapshot.to_string(),
            })
    }

    /// Waits for the volume's QoS allowance (if it has limits).
    async fn admit(&self, view: &VolumeIo, kind: IoKind, bytes: u64) {
        let limits = view.qos.or_default(&view.pool.qos_default);
        let limiter = {
            let mut limiters = self.limiters.lock().expect("limiters lock");
            if limits.is_unlimited() && !limiters.contains_key(&view.id) {
                return;
            }
            let (_, limiter) = limiters
                .entry(view.id)
                .or_insert_with(|| (view.name.clone(), QosLimiter::new(limits)));
            if limiter.limits() != limits {
                limiter.update(limits);
            }
            limiter.clone()
        };
        limiter.admit(kind, bytes).await;
    }

    /// (volume name, limits, throttled nanoseconds, throttled operations)
    /// of every volume this node has throttled or limits.
    pub fn qos_stats(&self) -> Vec<(String, QosLimits, u64, u64)> {
        let limiters = self.limiters.lock().expect("limiters lock");
        let mut out: Vec<_> = limiters
            .values()
            .map(|(name, l)| {
                (
                    name.clone(),
                    l.limits(),
                    l.throttled_nanos(),
                    l.throttled_ops(),
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The pieces of `[offset, offset + len)`: (object no, offset in object, length).
    fn pieces(pool: &Pool, offset: u64, len: u64) -> Vec<(u64, u64, u64)> {
        let mut out = Vec::new();
        let mut at = offset;
        while at < offset + len {
            let object_no = at / pool.object_size;
            let within = at % pool.object_size;
            let take = (pool.object_size - within).min(offset + len - at);
            out.push((object_no, within, take));
            at += take;
        }
        out
    }

    /// Writes `data` at `offset`; returns once every piece is committed on
    /// a majority of its PG's replicas.
    pub async fn write(&self, volume: &str, offset: u64, data: &[u8]) -> Result<(), VolumeError> {
        let view = self.view(volume)?;
        view.check_len(data.len() as u64)?;
        view.check_range(view.size, offset, data.len() as u64)?;
        self.admit(&view, IoKind::Write, data.len() as u64).await;
        // The pieces run in this task, not spawned: when the caller is
        // cancelled (an iSCSI task abort), their attempts in flight drop
        // with it, and fence their PGs, before it hears of the end.
        let mut pieces = futures_util::stream::FuturesUnordered::new();
        let mut groups = Vec::new();
        for (object_no, within, take) in Self::pieces(&view.pool, offset, data.len() as u64) {
            groups.push(view.group_of(object_no));
            let start = (object_no * view.pool.object_size + within - offset) as usize;
            let op = ObjectOp::Write {
                object: ObjectId {
                    volume: view.id,
                    object_no,
                },
                offset: within,
                data: data[start..start + take as usize].to_vec(),
                seq: view.snap_seq,
                copy_up: CopyUp::None,
            };
            let view = &view;
            let piece = async move { self.change(view, object_no, op).await };
            // A panic fails the write, as it did in a task of its own.
            pieces.push(futures_util::FutureExt::map(
                futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(piece)),
                |done| done.unwrap_or_else(|_| Err(view.failed("a piece of the write panicked"))),
            ));
        }
        while let Some(done) = futures_util::StreamExt::next(&mut pieces).await {
            if let Err(e) = done {
                // The caller may send the write again through another
                // node: first, nothing of this one may still commit.
                drop(pieces);
                self.write_fences.wait(groups).await;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Sends a change to one object. A clone's object that has never
    /// existed first needs the parent's bytes: the PG says so, and the
    /// change goes again with them.
    async fn change(
        &self,
        view: &VolumeIo,
        object_no: u64,
        op: ObjectOp,
    ) -> Result<(), VolumeError> {
        let op = if view.reads_through(object_no) {
            op.with_copy_up(CopyUp::Required)
        } else {
            op
        };
        let answer = self
            .call(
                view,
                object_no,
                Io::Write(encode(std::slice::from_ref(&op))),
            )
            .await?;
        if answer != ANSWER_COPY_UP_NEEDED {
            return Ok(());
        }
        let base = self.parent_object(view, object_no).await?;
        let op = op.with_copy_up(CopyUp::Data(base));
        self.call(view, object_no, Io::Write(encode(&[op]))).await?;
        Ok(())
    }

    /// The bytes of object `object_no` that a clone reads through to its
    /// parent snapshot (up to the overlap).
    async fn parent_object(&self, view: &VolumeIo, object_no: u64) -> Result<Vec<u8>, VolumeError> {
        let Some(parent) = view.parent.as_ref() else {
            return Ok(Vec::new());
        };
        let start = object_no * view.pool.object_size;
        let len = view
            .pool
            .object_size
            .min(parent.overlap.saturating_sub(start));
        let parent_view = self.view(&parent.volume)?;
        self.read_piece(
            Arc::new(parent_view),
            Some(parent.snapshot_id),
            object_no,
            0,
            len,
        )
        .await
    }

    /// Discards (zeroes and releases) `len` bytes at `offset`.
    pub async fn discard(&self, volume: &str, offset: u64, len: u64) -> Result<(), VolumeError> {
        let view = self.view(volume)?;
        // Any length: a discard carries no data.
        view.check_range(view.size, offset, len)?;
        self.admit(&view, IoKind::Write, 0).await;
        for (object_no, within, take) in Self::pieces(&view.pool, offset, len) {
            let object = ObjectId {
                volume: view.id,
                object_no,
            };
            let seq = view.snap_seq;
            // A clone's object that reads through must become zeroes, not
            // vanish (which would expose the parent's bytes again).
            let op = if take == view.pool.object_size && !view.reads_through(object_no) {
                ObjectOp::Delete { object, seq }
            } else {
                ObjectOp::Discard {
                    object,
                    offset: within,
                    len: take,
                    seq,
                    copy_up: CopyUp::None,
                }
            };
            self.change(&view, object_no, op).await?;
        }
        Ok(())
    }

    /// Reads `len` bytes at `offset` of the volume, linearizably (each
    /// piece from its PG's leader after a ReadIndex round).
    pub async fn read(&self, volume: &str, offset: u64, len: u64) -> Result<Vec<u8>, VolumeError> {
        self.read_at(volume, None, offset, len).await
    }

    /// Reads `len` bytes at `offset` of the volume or, with `snapshot`, of
    /// that snapshot of it.
    pub async fn read_at(
        &self,
        volume: &str,
        snapshot: Option<&str>,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, VolumeError> {
        let view = self.view(volume)?;
        let (snap, size) = match snapshot {
            Some(name) => {
                let (id, size) = self.snapshot_of(volume, name)?;
                (Some(id), size)
            }
            None => (None, view.size),
        };
        view.check_len(len)?;
        view.check_range(size, offset, len)?;
        self.admit(&view, IoKind::Read, len).await;
        let view = Arc::new(view);
        let mut tasks = tokio::task::JoinSet::new();
        for (object_no, within, take) in Self::pieces(&view.pool, offset, len) {
            let this = self.clone();
            let view = view.clone();
            let start = object_no * view.pool.object_size + within - offset;
            tasks.spawn(async move {
                let data = this.read_piece(view, snap, object_no, within, take).await?;
                Ok::<_, VolumeError>((start, data))
            });
        }
        let mut out = vec![0u8; len as usize];
        while let Some(done) = tasks.join_next().await {
            let (start, data) = done.map_err(|e| view.failed(e))??;
            out[start as usize..start as usize + data.len()].copy_from_slice(&data);
        }
        Ok(out)
    }

    /// `take` bytes of one object at `within`, as `snapshot` (or the head)
    /// sees it; a clone's object that does not exist there reads its
    /// parent snapshot's bytes, at any depth.
    fn read_piece(
        &self,
        view: Arc<VolumeIo>,
        snapshot: Option<u64>,
        object_no: u64,
        within: u64,
        take: u64,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<u8>, VolumeError>> + Send + 'static>> {
        let this = self.clone();
        Box::pin(async move {
            let query = Query::Read(ReadQuery {
                object: ObjectId {
                    volume: view.id,
                    object_no,
                },
                offset: within,
                len: take as u32,
                snapshot,
            });
            let answer = this
                .call(&view, object_no, Io::Read(query.encode()))
                .await?;
            if let Some(data) = decode_read_answer(answer).map_err(|e| view.failed(e))? {
                return Ok(data);
            }
            let mut out = vec![0u8; take as usize];
            let Some(parent) = view.parent.as_ref() else {
                return Ok(out);
            };
            let start = object_no * view.pool.object_size + within;
            let shared = parent.overlap.saturating_sub(start).min(take);
            if shared > 0 {
                let parent_view = Arc::new(this.view(&parent.volume)?);
                let data = this
                    .read_piece(
                        parent_view,
                        Some(parent.snapshot_id),
                        object_no,
                        within,
                        shared,
                    )
                    .await?;
                out[..data.len()].copy_from_slice(&data);
            }
            Ok(out)
        })
    }

    /// Objects a walk over the volume covers: every object of the volume
    /// or of any of its snapshots.
    pub fn object_count(&self, volume: &str) -> Result<u64, VolumeError> {
        let map = self.map.read().expect("map lock");
        let (v, pool) = volume_and_pool(&map, volume)?;
        let largest = v.snapshots.iter().map(|s| s.size).fold(v.size, u64::max);
        Ok(largest.div_ceil(pool.object_size))
    }

    /// Runs `walk` on objects `[from, from + count)` of the volume (clamped
    /// to its objects), a few at a time; safe to repeat after a crash.
    pub async fn walk(
        &self,
        volume: &str,
        walk: Walk,
        from: u64,
        count: u64,
    ) -> Result<WalkProgress, VolumeError> {
        let view = Arc::new(self.view(volume)?);
        let total = self.object_count(volume)?;
        let end = from.saturating_add(count).min(total);
        self.per_object(&view, from..end, move |this, view, object_no| async move {
            this.walk_object(&view, walk, object_no).await
        })
        .await?;
        Ok(WalkProgress {
            next_object: end.max(from.min(total)),
            total_objects: total,
        })
    }

    async fn walk_object(
        &self,
        view: &VolumeIo,
        walk: Walk,
        object_no: u64,
    ) -> Result<(), VolumeError> {
        let object = ObjectId {
            volume: view.id,
            object_no,
        };
        if walk == Walk::Flatten && !view.reads_through(object_no) {
            return Ok(());
        }
        // A linearizable read is far cheaper than a Raft write. Flatten
        // acts only on objects the clone never had (done ones are skipped,
        // so it resumes); every other walk only on objects that exist (most
        // of a thin volume costs only the read).
        let pristine = self.stat(view, object_no).await?.is_pristine();
        if pristine != (walk == Walk::Flatten) {
            return Ok(());
        }
        let op = match walk {
            Walk::Rollback { snapshot } => ObjectOp::Rollback {
                object,
                snapshot,
                seq: view.snap_seq,
            },
            Walk::Trim {
                removed,
                lower,
                upper,
            } => ObjectOp::Trim {
                object,
                removed,
                lower,
                upper,
            },
            Walk::Purge => ObjectOp::Purge { object },
            Walk::Flatten => {
                let base = self.parent_object(view, object_no).await?;
                if base.iter().all(|&b| b == 0) {
                    // Zeroes in the parent read as zeroes once the link is
                    // cut, too: nothing to copy or allocate.
                    return Ok(());
                }
                ObjectOp::Write {
                    object,
                    offset: 0,
                    data: Vec::new(),
                    seq: view.snap_seq,
                    copy_up: CopyUp::Data(base),
                }
            }
        };
        self.call(view, object_no, Io::Write(encode(&[op])))
            .await
            .map(|_| ())
    }

    async fn stat(&self, view: &VolumeIo, object_no: u64) -> Result<ObjectStat, VolumeError> {
        let query = Query::Stat(ObjectId {
            volume: view.id,
            object_no,
        });
        let answer = self.call(view, object_no, Io::Read(query.encode())).await?;
        serde_json::from_slice(&answer).map_err(|e| view.failed(e))
    }

    /// Allocated, exclusive and shared bytes of the volume and of each
    /// snapshot, from every object's versions.
    pub async fn usage(&self, volume: &str) -> Result<SpaceUsage, VolumeError> {
        let view = Arc::new(self.view(volume)?);
        let snapshots: Vec<(u64, String)> = {
            let map = self.map.read().expect("map lock");
            map.volumes
                .get(volume)
                .map(|v| v.snapshots.iter().map(|s| (s.id, s.name.clone())).collect())
                .unwrap_or_default()
        };
        let total = self.object_count(volume)?;
        let stats = self
            .per_object(&view, 0..total, |this, view, object_no| async move {
                this.stat(&view, object_no).await
            })
            .await?;
        Ok(space_usage(&stats, &snapshots))
    }

    /// Runs `each` on every object of `objects`, [`WALK_PARALLEL`] at a
    /// time; the results come in the order they finish.
    async fn per_object<T, F, Fut>(
        &self,
        view: &Arc<VolumeIo>,
        objects: std::ops::Range<u64>,
        each: F,
    ) -> Result<Vec<T>, VolumeError>
    where
        T: Send + 'static,
        F: Fn(VolumeClient, Arc<VolumeIo>, u64) -> Fut,
        Fut: Future<Output = Result<T, VolumeError>> + Send + 'static,
    {
        let mut out = Vec::with_capacity((objects.end - objects.start) as usize);
        let mut tasks = tokio::task::JoinSet::new();
        for object_no in objects {
            if tasks.len() >= WALK_PARALLEL {
                if let Some(done) = tasks.join_next().await {
                    out.push(done.map_err(|e| view.failed(e))??);
                }
            }
            tasks.spawn(each(self.clone(), view.clone(), object_no));
        }
        while let Some(done) = tasks.join_next().await {
            out.push(done.map_err(|e| view.failed(e))??);
        }
        Ok(out)
    }
    /// Asks every node's Space service at once; a node that does not
    /// answer within a second is left out of the answers.
    async fn ask_every_node<T, F, Fut>(&self, nodes: &[NodeId], ask: F) -> HashMap<NodeId, T>
    where
        T: Send + 'static,
        F: Fn(SpaceClient<Channel>) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>> + Send + 'static,
    {
        let mut asks = tokio::task::JoinSet::new();
        for &node in nodes {
            let Some(channel) = self.channel(node) else {
                continue;
            };
            let answer = ask(SpaceClient::new(channel));
            asks.spawn(async move {
                match tokio::time::timeout(Duration::from_secs(1), answer).await {
                    Ok(Ok(value)) => Some((node, value)),
                    _ => None,
                }
            });
        }
        let mut answers = HashMap::new();
        while let Some(done) = asks.join_next().await {
            if let Ok(Some((node, value))) = done {
                answers.insert(node, value);
            }
        }
        answers
    }

    /// Bytes the volume's objects occupy on each node's disks (every
    /// replica counted), asking all nodes at once; a node that does not
    /// answer within a second is left out of the map returned.
    pub async fn allocated_bytes_by_node(
        &self,
        volume: &str,
    ) -> Result<(Vec<NodeId>, HashMap<NodeId, u64>), VolumeError> {
        let (id, nodes) = {
            let map = self.map.read().expect("map lock");
            let v = map
                .volumes
                .get(volume)
                .ok_or_else(|| VolumeError::NotFound(volume.to_string()))?;
            (v.id, map.nodes.keys().copied().collect::<Vec<_>>())
        };
        let answers = self
            .ask_every_node(&nodes, |mut client| async move {
                let request = crate::net::proto::AllocatedRequest { volume: id };
                Ok(client.allocated(request).await?.into_inner().bytes)
            })
            .await;
        Ok((nodes, answers))
    }

    /// (total, available) bytes of every disk of each node that answers
    /// within a second, and the nodes that did not.
    pub async fn disk_space_by_node(&self) -> (HashMap<NodeId, (u64, u64)>, Vec<NodeId>) {
        let nodes = self.node_ids();
        let answers = self
            .ask_every_node(&nodes, |mut client| async move {
                let disks = client
                    .disks(crate::net::proto::DisksRequest {})
                    .await?
                    .into_inner()
                    .disks;
                let total = disks.iter().map(|d| d.total_bytes).sum();
                let available = disks.iter().map(|d| d.available_bytes).sum();
                Ok((total, available))
            })
            .await;
        let missing = nodes
            .into_iter()
            .filter(|n| !answers.contains_key(n))
            .collect();
        (answers, missing)
    }

    /// Every node of the map.
    fn node_ids(&self) -> Vec<NodeId> {
        self.map
            .read()
            .expect("map lock")
            .nodes
            .keys()
            .copied()
            .collect()
    }

    /// The Raft groups each node leads, with its replicas' progress, from
    /// every node that answers within a second.
    pub async fn led_groups_by_node(&self) -> HashMap<NodeId, Vec<crate::net::proto::LedGroup>> {
        let nodes = self.node_ids();
        self.ask_every_node(&nodes, |mut client| async move {
            Ok(client
                .led_groups(crate::net::proto::LedGroupsRequest {})
                .await?
                .into_inner()
                .groups)
        })
        .await
    }

    fn placement(&self) -> Result<(Arc<ClusterMap>, Arc<ClusterMapState>), String> {
        let epoch = self.map.read().expect("map lock").epoch;
        let mut cache = self.placement.lock().expect("placement lock");
        if let Some((cached, placement, map)) = cache.as_ref() {
            if *cached == epoch {
                return Ok((placement.clone(), map.clone()));
            }
        }
        let map = Arc::new(self.map.read().expect("map lock").clone());
        let placement = Arc::new(map.placement_map().map_err(|e| e.to_string())?);
        *cache = Some((map.epoch, placement.clone(), map.clone()));
        Ok((placement, map))
    }

    /// The nodes holding `group`'s replicas, primary first.
    fn replica_nodes(&self, pool: &Pool, index: u32) -> Result<Vec<NodeId>, String> {
        let (placement, map) = self.placement()?;
        let (disks, _) = crate::pg::pg_disks(&placement, pool, index)?;
        Ok(disks
            .into_iter()
            .filter_map(|d| map.node_of_disk(d).map(|n| n.id))
            .collect())
    }

    fn channel(&self, node: NodeId) -> Option<Channel> {
        let mut channels = self.channels.lock().expect("channels lock");
        if let Some(c) = channels.get(&node) {
            return Some(c.clone());
        }
        let addr = self.map.read().ok()?.nodes.get(&node)?.peer_addr.clone();
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .ok()?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            // A peer that stops answering breaks the I/O stream within
            // seconds, so calls move on instead of each timing out.
            .http2_keep_alive_interval(Duration::from_secs(2))
            .keep_alive_timeout(Duration::from_secs(3))
            .keep_alive_while_idle(true)
            .connect_lazy();
        channels.insert(node, channel.clone());
        Some(channel)
    }

    /// One try of `io` on `node`; a write with its `WriteAttempt`.
    async fn attempt(
        &self,
        node: NodeId,
        group: GroupId,
        io: &Io,
        write: Option<&WriteAttempt>,
    ) -> Option<PgReply> {
        if node == self.me {
            let result = match io {
                Io::Write(payload) => {
                    let propose_by =
                        write.map_or_else(|| Instant::now() + PROPOSE_WITHIN, |w| w.propose_by);
                    self.local
                        .propose_async_before(
                            group,
                            payload.clone(),
                            propose_by,
                            PIECE_ATTEMPT_TIMEOUT,
                        )
                        .await
                }
                Io::Read(payload) => match &self.repairer {
                    Some(repairer) => {
                        return Some(
                            repairer
                                .read(group, payload.clone(), PIECE_ATTEMPT_TIMEOUT)
                                .await,
                        )
                    }
                    None => {
                        self.local
                            .read_async(group, payload.clone(), PIECE_ATTEMPT_TIMEOUT)
                            .await
                    }
                },
            };
            return Some(pg_reply(result));
        }
        let payload = match io {
            Io::Write(p) | Io::Read(p) => p.clone(),
        };
        self.streams
            .call(
                node,
                || self.channel(node),
                write.is_some(),
                group,
                payload,
                write.map_or(0, |w| w.deadline_unix_ms),
                PIECE_ATTEMPT_TIMEOUT,
            )
            .await
    }

    /// Has every replica of `volume`'s objects `objects` take their
    /// digests at one point of its PG's log: one digest entry per PG and
    /// up to [`DIGEST_OBJECTS_PER_ENTRY`] objects, the PGs at once. The
    /// replicas keep them for a while, by entry index, for a scrub to
    /// compare. A PG whose entry fails (no leader, an older leader) is
    /// listed as not taken; the others go on.
    pub async fn take_digests(
        &self,
        volume: &str,
        objects: std::ops::Range<u64>,
    ) -> Result<Vec<Result<DigestsTaken, DigestsNotTaken>>, VolumeError> {
        let view = Arc::new(self.view(volume)?);
        let per_entry = usize::try_from(DIGEST_BYTES_PER_ENTRY / view.pool.object_size.max(1))
            .unwrap_or(usize::MAX)
            .clamp(1, DIGEST_OBJECTS_PER_ENTRY);
        let mut by_group: BTreeMap<GroupId, Vec<u64>> = BTreeMap::new();
        for object_no in objects {
            by_group
                .entry(view.group_of(object_no))
                .or_default()
                .push(object_no);
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (group, numbers) in by_group {
            for chunk in numbers.chunks(per_entry) {
                let (this, view, chunk) = (self.clone(), view.clone(), chunk.to_vec());
                tasks.spawn(async move {
                    let taken = this.take_digest(&view, group, &chunk).await;
                    taken.map_err(|reason| DigestsNotTaken {
                        group,
                        objects: chunk,
                        reason,
                    })
                });
            }
        }
        let mut taken = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            taken.push(joined.map_err(|e| VolumeError::Failed {
                volume: volume.to_string(),
                reason: e.to_string(),
            })?);
        }
        Ok(taken)
    }

    /// One digest entry of `group` for `objects` (all in that PG).
    async fn take_digest(
        &self,
        view: &VolumeIo,
        group: GroupId,
        objects: &[u64],
    ) -> Result<DigestsTaken, String> {
        let ids: Vec<ObjectId> = objects
            .iter()
            .map(|&object_no| ObjectId {
                volume: view.id,
                object_no,
            })
            .collect();
        let answer = self
            .call(view, objects[0], Io::Write(encode_digest_entry(&ids)))
            .await
            .map_err(|e| e.to_string())?;
        let (index, digests) = decode_digest_answer(&answer).map_err(|e| e.to_string())?;
        if digests.len() != objects.len() {
            return Err(format!(
                "its leader answered {} digests for {} objects",
                digests.len(),
                objects.len()
            ));
        }
        Ok(DigestsTaken {
            group,
            index,
            objects: objects.iter().copied().zip(digests).collect(),
        })
    }

    async fn call(
        &self,
        volume: &VolumeIo,
        object_no: u64,
        io: Io,
    ) -> Result<Vec<u8>, VolumeError> {
        let pool = &volume.pool;
        let index = pg_of(volume.id, object_no, pool.pg_num);
        let group = group_id(pool.id, index);
        let result = self.chase_leader(volume, index, group, &io).await;
        if result.is_err() && matches!(io, Io::Write(_)) {
            // A lost attempt may still commit, and once told of the
            // failure the caller may send the write again elsewhere.
            self.write_fences.wait([group]).await;
        }
        result
    }

    /// [`VolumeClient::call`]'s tries, following the PG's leader.
    async fn chase_leader(
        &self,
        volume: &VolumeIo,
        index: u32,
        group: GroupId,
        io: &Io,
    ) -> Result<Vec<u8>, VolumeError> {
        let pool = &volume.pool;
        let deadline = Instant::now() + PIECE_DEADLINE;
        let mut round = 0usize;
        while Instant::now() < deadline {
            let replicas =
                self.replica_nodes(pool, index)
                    .map_err(|reason| VolumeError::Failed {
                        volume: volume.name.clone(),
                        reason,
                    })?;
            if replicas.is_empty() {
                break;
            }
            let cached = self
                .leaders
                .lock()
                .expect("leaders lock")
                .get(&group)
                .copied();
            let target = cached.unwrap_or(replicas[round % replicas.len()]);
            round += 1;
            let write = match io {
                Io::Write(_) => Some(self.write_fences.enter(group, target != self.me).await),
                Io::Read(_) => None,
            };
            let reply = self.attempt(target, group, io, write.as_ref()).await;
            if let (Some(_), Some(write)) = (&reply, write) {
                write.answered();
            }
            match reply {
                Some(reply) if reply.corrupt => {
                    return Err(VolumeError::Corrupt {
                        volume: volume.name.clone(),
                        reason: reply.error,
                    })
                }
                Some(reply) if !reply.error.is_empty() => {
                    return Err(VolumeError::Failed {
                        volume: volume.name.clone(),
                        reason: reply.error,
                    })
                }
                Some(reply) if reply.expired => {
                    // Not proposed: the leader is right, it was late.
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Some(reply) if reply.not_leader => {
                    let hinted = disk_of_peer(reply.leader_peer)
                        .and_then(|disk| self.map.read().ok()?.node_of_disk(disk).map(|n| n.id));
                    let next = hinted.filter(|&n| n != target);
                    {
                        let mut leaders = self.leaders.lock().expect("leaders lock");
                        match next {
                            Some(node) => leaders.insert(group, node),
                            None => leaders.remove(&group),
                        };
                    }
                    if next.is_none() {
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                }
                Some(reply) => {
                    self.leaders
                        .lock()
                        .expect("leaders lock")
                        .insert(group, target);
                    return Ok(reply.data);
                }
                None => {
                    // A lost write's fence holds the retry back.
                    self.leaders.lock().expect("leaders lock").remove(&group);
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
        Err(VolumeError::Unavailable {
            volume: volume.name.clone(),
            group,
        })
    }
}

/// A volume and its pool, or NotFound naming the volume.
fn volume_and_pool<'a>(
    map: &'a ClusterMapState,
    name: &str,
) -> Result<(&'a crate::cluster::map::Volume, &'a Pool), VolumeError> {
    let volume = map
        .volumes
        .get(name)
        .ok_or_else(|| VolumeError::NotFound(name.to_string()))?;
    let pool = map
        .pools
        .get(&volume.pool)
        .ok_or_else(|| VolumeError::NotFound(name.to_string()))?;
    Ok((volume, pool))
}

/// Adds up object stats into a volume's and its snapshots' usage.
fn space_usage(stats: &[ObjectStat], snapshots: &[(u64, String)]) -> SpaceUsage {
    use crate::pg::versions::{CloneVersion, ObjectMeta, Version};
    let mut usage = SpaceUsage {
        snapshots: snapshots
            .iter()
            .map(|(id, name)| SnapshotUsage {
                name: name.clone(),
                id: *id,
                ..SnapshotUsage::default()
            })
            .collect(),
        ..SpaceUsage::default()
    };
    for stat in stats {
        let meta = ObjectMeta {
            stamp: stat.stamp,
            head: stat.head_bytes.is_some(),
            clones: stat
                .clones
                .iter()
                .map(|&(seq, from, _)| CloneVersion { seq, from })
                .collect(),
        };
        let bytes_of = |v: Version| match v {
            Version::Head => stat.head_bytes.unwrap_or(0),
            Version::Clone(seq) => stat.clones.iter().find(|c| c.0 == seq).map_or(0, |c| c.2),
            Version::Absent => 0,
        };
        let seen: Vec<Version> = snapshots
            .iter()
            .map(|(id, _)| meta.version_at(Some(*id)))
            .collect();
        let readers = |v: Version| seen.iter().filter(|&&s| s == v).count();
        let head = bytes_of(Version::Head);
        usage.allocated_bytes += head;
        if readers(Version::Head) == 0 {
            usage.exclusive_bytes += head;
        } else {
            usage.shared_bytes += head;
        }
        for (snap, &v) in usage.snapshots.iter_mut().zip(&seen) {
            let bytes = bytes_of(v);
            snap.allocated_bytes += bytes;
            let alone = v != Version::Head && readers(v) == 1;
            if alone {
                snap.exclusive_bytes += bytes;
            } else {
                snap.shared_bytes += bytes;
            }
        }
    }
    usage
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write attempt that ends without an answer, or whose caller is
    /// cancelled, holds its group's writes back until it can no longer be
    /// proposed anywhere; an answered one holds nothing back.
    #[tokio::test]
    async fn an_unanswered_or_cancelled_write_attempt_fences_its_group() {
        let fences = Arc::new(WriteFences::default());
        let started = Instant::now();
        fences.enter(1, false).await.answered();
        assert_eq!(fences.until(1), None);

        drop(fences.enter(2, true).await);
        let lost = fences
            .until(2)
            .expect("a lost remote write fences its group");
        let window = PROPOSE_WITHIN + CLOCK_SKEW_MAX;
        assert!(lost >= started + window && lost <= Instant::now() + window);

        let (entered, is_in) = tokio::sync::oneshot::channel();
        let cancelled = tokio::spawn({
            let fences = fences.clone();
            async move {
                let _attempt = fences.enter(3, false).await;
                let _ = entered.send(());
                std::future::pending::<()>().await;
            }
        });
        is_in.await.unwrap();
        cancelled.abort();
        assert!(cancelled.await.unwrap_err().is_cancelled());
        let abandoned = fences.until(3).expect("a cancelled write fences its group");
        assert!(abandoned > Instant::now() + PROPOSE_WITHIN / 2);

        let other = Instant::now();
        fences.enter(4, true).await.answered();
        assert!(
            other.elapsed() < Duration::from_millis(200),
            "group 4 is not fenced"
        );

        let next = fences.enter(2, true).await;
        assert!(
            Instant::now() >= lost,
            "the next write waited the fence out"
        );
        next.answered();
        let again = Instant::now();
        fences.enter(2, true).await.answered();
        assert!(
            again.elapsed() < Duration::from_millis(50),
            "a passed fence holds nothing back"
        );

        // What a failed write or an iSCSI task abort waits for: every
        // fence up when it asks.
        drop(fences.enter(5, false).await);
        let last = fences.until(5).expect("fenced");
        fences.settle().await;
        assert!(Instant::now() >= last && Instant::now() >= abandoned);
        let idle = Instant::now();
        fences.settle().await;
        assert!(
            idle.elapsed() < Duration::from_millis(50),
            "nothing left to wait for"
        );
    }
}
