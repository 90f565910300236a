//! Re-replication: bringing a new replica of a PG up to date.
//!
//! When placement moves a PG to a new disk, the group's leader adds the
//! replica as a Raft learner and sends it a snapshot that carries no data
//! (`replication::log_store`). The receiving node's [`PgInstaller`] then
//! copies the PG's objects from the leader's replica ([`RecoveryService`],
//! a gRPC stream, object by object), drops any object it held that the
//! copy lacks, records the copy as applied at the snapshot's index
//! (synced), and lets Raft step the snapshot; the log after the index
//! follows as usual, and the leader promotes the learner once it has
//! caught up.
//!
//! After a node is lost, every PG it held gets a new replica at once, and
//! each copy streams a whole PG. [`CopyLimits`] keep that from starving
//! client I/O on the receiving node: a number of copies at a time (the
//! rest are turned away, and their leaders ask again), and a byte rate all
//! of them share.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::cluster::{ClusterMapState, MapClient};
use crate::net::proto::recovery_client::RecoveryClient;
use crate::net::proto::recovery_server::Recovery;
use crate::net::proto::{CopiedBlock, CopiedObject, CopiedVersion, CopyPgRequest};
use crate::pg::backend::{ObjectImage, PgBackend, VersionImage};
use crate::pg::command::ObjectId;
use crate::pg::{disk_of_peer, pg_of_group};
use crate::replication::{GroupId, InstallRequest, RaftNodeHandle, SnapshotInstaller};

/// Largest message of a copy stream; an object's versions are split to
/// stay under it.
const COPY_MESSAGE_MAX_BYTES: usize = 16 << 20;
/// How long the source waits for its replica to apply the snapshot's index.
const APPLIED_WAIT: Duration = Duration::from_secs(30);

/// The objects of `group` that `backend` holds, per the map's volumes.
pub fn group_objects(
    backend: &dyn PgBackend,
    map: &ClusterMapState,
    group: GroupId,
) -> Result<Vec<ObjectId>, String> {
    let (pool_id, index) = pg_of_group(group).ok_or("the map group has no objects")?;
    let pool = map
        .pools
        .values()
        .find(|p| p.id == pool_id)
        .ok_or_else(|| format!("pool {pool_id} is not in the map"))?;
    let mut out = Vec::new();
    for volume in map.volumes.values().filter(|v| v.pool == pool.name) {
        for object_no in backend
            .object_numbers(volume.id)
            .map_err(|e| e.to_string())?
        {
            if hpchain_placement::pg_of(volume.id, object_no, pool.pg_num) == index {
                out.push(ObjectId {
                    volume: volume.id,
                    object_no,
                });
            }
        }
    }
    Ok(out)
}

/// The messages that carry `image`, each under [`COPY_MESSAGE_MAX_BYTES`]
/// unless a single version is larger.
fn image_messages(mut image: ObjectImage) -> Vec<CopiedObject> {
    let new_message = |image: &ObjectImage| CopiedObject {
        volume: image.object.volume,
        object: image.object.object_no,
        has_record: image.record.is_some(),
        record: image.record.clone().unwrap_or_default(),
        versions: Vec::new(),
        more: false,
    };
    let mut out = vec![new_message(&image)];
    let mut size = 0usize;
    for version in std::mem::take(&mut image.versions) {
        let bytes: usize = version.blocks.iter().map(|(_, _, d)| d.len() + 16).sum();
        if size > 0 && size + bytes > COPY_MESSAGE_MAX_BYTES {
            out.last_mut().expect("one message").more = true;
            out.push(new_message(&image));
            size = 0;
        }
        size += bytes;
        out.last_mut()
            .expect("one message")
            .versions
            .push(CopiedVersion {
                clone_seq: version.clone_seq.unwrap_or(0),
                blocks: version
                    .blocks
                    .into_iter()
                    .map(|(block, crc, data)| CopiedBlock { block, crc, data })
                    .collect(),
            });
    }
    out
}

/// The `hpchain.node.v1.Recovery` service: streams a PG replica's objects.
pub struct RecoveryService {
    backends: Arc<HashMap<u32, Arc<dyn PgBackend>>>,
    raft: RaftNodeHandle,
    maps: MapClient,
}

impl RecoveryService {
    pub fn new(
        backends: HashMap<u32, Arc<dyn PgBackend>>,
        raft: RaftNodeHandle,
        maps: MapClient,
    ) -> RecoveryService {
        RecoveryService {
            backends: Arc::new(backends),
            raft,
            maps,
        }
    }

    pub fn into_server(
        self,
    ) -> crate::net::proto::recovery_server::RecoveryServer<RecoveryService> {
        crate::net::proto::recovery_server::RecoveryServer::new(self)
            .max_encoding_message_size(2 * COPY_MESSAGE_MAX_BYTES)
    }

    /// Waits until this node's replica of `group` applied `index`.
    async fn wait_applied(&self, group: GroupId, index: u64) -> Result<(), Status> {
        let deadline = Instant::now() + APPLIED_WAIT;
        loop {
            let (_, applied) = self
                .raft
                .applied_async(group)
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?
                .ok_or_else(|| {
                    Status::not_found(format!("group {group:x} has no replica on this node"))
                })?;
            if applied >= index {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Status::unavailable(format!(
                    "group {group:x}: this replica applied {applied}, the copy needs {index}; retry later"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

type CopyStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<CopiedObject, Status>> + Send>>;

#[tonic::async_trait]
impl Recovery for RecoveryService {
    type CopyPgStream = CopyStream;

    async fn copy_pg(
        &self,
        request: Request<CopyPgRequest>,
    ) -> Result<Response<CopyStream>, Status> {
        let request = request.into_inner();
        let backend = self.backends.get(&request.disk).cloned().ok_or_else(|| {
            Status::not_found(format!("disk {} is not on this node", request.disk))
        })?;
        self.wait_applied(request.group, request.min_applied)
            .await?;
        // A map read after the replica applied the index: it has every
        // volume whose objects those entries wrote.
        let map = self
            .maps
            .read()
            .await
            .map_err(|e| Status::unavailable(format!("cluster map: {e}")))?;
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let group = request.group;
        tokio::task::spawn_blocking(move || {
            let objects = match group_objects(&*backend, &map, group) {
                Ok(o) => o,
                Err(e) => {
                    let _ = tx.blocking_send(Err(Status::internal(e)));
                    return;
                }
            };
            for object in objects {
                let image = match backend.export_object(&object) {
                    Ok(image) => image,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(Status::internal(format!(
                            "object {:x}.{:x}: {e}",
                            object.volume, object.object_no
                        ))));
                        return;
                    }
                };
                for message in image_messages(image) {
                    if tx.blocking_send(Ok(message)).is_err() {
                        return; // the receiver went away
                    }
                }
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Copies snapshots' state into this node's replicas (see the module docs).
pub struct PgInstaller {
    runtime: tokio::runtime::Handle,
    backends: Arc<HashMap<u32, Arc<dyn PgBackend>>>,
    map: Arc<RwLock<ClusterMapState>>,
    maps: MapClient,
    limits: CopyLimits,
}

impl PgInstaller {
    pub fn new(
        runtime: tokio::runtime::Handle,
        backends: HashMap<u32, Arc<dyn PgBackend>>,
        map: Arc<RwLock<ClusterMapState>>,
        maps: MapClient,
        limits: CopyLimits,
    ) -> PgInstaller {
        PgInstaller {
            runtime,
            backends: Arc::new(backends),
            map,
            maps,
            limits,
        }
    }
}

impl SnapshotInstaller for PgInstaller {
    fn install(
        &self,
        request: InstallRequest,
        done: Box<dyn FnOnce(Result<(), String>) + Send>,
    ) -> bool {
        // No waiting for a slot here: a replica whose copy has started
        // hears nothing and cannot be dropped, so one waiting behind slow
        // copies would be held for as long as they last.
        let Some(slot) = self.limits.try_slot(request.group) else {
            return false;
        };
        let backends = self.backends.clone();
        let map = self.map.clone();
        let maps = self.maps.clone();
        let limits = self.limits.clone();
        self.runtime.spawn(async move {
            let _slot = slot;
            let started = Instant::now();
            let result =
                copy_replica(&request, &backends, &map, &maps, &limits, COPY_SILENCE_MAX).await;
            match &result {
                Ok(copied) => tracing::info!(
                    group = format!("{:x}", request.group),
                    index = request.index,
                    objects = copied.objects,
                    bytes = copied.bytes,
                    removed = copied.removed,
                    seconds = started.elapsed().as_secs_f64(),
                    "new replica copied"
                ),
                Err(e) => tracing::warn!(
                    group = format!("{:x}", request.group),
                    "copying the replica failed: {e}"
                ),
            }
            done(result.map(|_| ()));
        });
        true
    }
}

/// How much re-replication a node takes on at once (see the module docs),
/// and what its copies did, for `/metrics`.
#[derive(Clone)]
pub struct CopyLimits {
    /// One permit per copy that may run; the copies running are the
    /// permits taken.
    slots: Arc<tokio::sync::Semaphore>,
    slot_count: usize,
    bandwidth: crate::volume::qos::QosLimiter,
    counts: Arc<CopyCounts>,
}

struct CopyCounts {
    turned_away: AtomicU64,
    received_bytes: AtomicU64,
    /// Copies turned away are logged at most every 10 s (their leaders
    /// ask again at each heartbeat).
    turned_away_logged: crate::log_gate::LogGate,
}

impl CopyLimits {
    /// At most `copies` copies at once (at least 1), receiving at most
    /// `bytes_per_second` together (0: no limit).
    pub fn new(copies: usize, bytes_per_second: u64) -> CopyLimits {
        use crate::volume::qos::{Limit, QosLimits};
        let copies = copies.max(1);
        CopyLimits {
            slots: Arc::new(tokio::sync::Semaphore::new(copies)),
            slot_count: copies,
            bandwidth: crate::volume::qos::QosLimiter::new(QosLimits {
                write_bps: Limit::per_second(bytes_per_second),
                ..QosLimits::default()
            }),
            counts: Arc::new(CopyCounts {
                turned_away: AtomicU64::new(0),
                received_bytes: AtomicU64::new(0),
                turned_away_logged: crate::log_gate::LogGate::new(Duration::from_secs(10)),
            }),
        }
    }

    /// A copy slot for `group`, if one is free: the copy runs while it is
    /// held.
    fn try_slot(&self, group: GroupId) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            let counts = &self.counts;
            let turned_away = counts.turned_away.fetch_add(1, Ordering::Relaxed) + 1;
            if counts.turned_away_logged.open() {
                tracing::info!(
                    group = format!("{group:x}"),
                    copies_at_once = self.slot_count,
                    turned_away,
                    "a new replica's copy was turned away: no copy slot is free (recovery_max_copies); its leader asks again"
                );
            }
            return None;
        };
        Some(permit)
    }

    /// Waits until `bytes` more may be received.
    async fn admit(&self, bytes: u64) {
        self.bandwidth
            .admit(crate::volume::qos::IoKind::Write, bytes)
            .await;
        self.counts
            .received_bytes
            .fetch_add(bytes, Ordering::Relaxed);
    }

    /// The node's re-replication in Prometheus text format.
    pub fn render_metrics(&self, out: &mut String) {
        let counts = &self.counts;
        let _ = writeln!(
            out,
            "# HELP hpchain_recovery_copies New replicas this node is copying.\n\
             # TYPE hpchain_recovery_copies gauge\n\
             hpchain_recovery_copies {}\n\
             # HELP hpchain_recovery_copies_turned_away_total Snapshot copies this node turned away for lack of a slot (recovery_max_copies); each is asked for again.\n\
             # TYPE hpchain_recovery_copies_turned_away_total counter\n\
             hpchain_recovery_copies_turned_away_total {}\n\
             # HELP hpchain_recovery_received_bytes_total Object data this node's copies of new replicas received.\n\
             # TYPE hpchain_recovery_received_bytes_total counter\n\
             hpchain_recovery_received_bytes_total {}\n\
             # HELP hpchain_recovery_throttled_seconds_total Time this node's copies waited for recovery_max_bytes_per_sec.\n\
             # TYPE hpchain_recovery_throttled_seconds_total counter\n\
             hpchain_recovery_throttled_seconds_total {:.3}",
            self.slot_count - self.slots.available_permits(),
            counts.turned_away.load(Ordering::Relaxed),
            counts.received_bytes.load(Ordering::Relaxed),
            self.bandwidth.throttled_nanos() as f64 / 1e9,
        );
    }
}

/// What a copy moved.
#[derive(Debug, Default)]
struct Copied {
    objects: u64,
    bytes: u64,
    removed: u64,
}

/// Progress is logged this often during a long copy.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// A copy whose source says nothing for this long is given up (the
/// source waits up to `APPLIED_WAIT` before its first object). Until a copy
/// ends its replica hears nothing and cannot be dropped, so a source that
/// went silent (a frozen host, packets dropped) must not hold it forever.
const COPY_SILENCE_MAX: Duration = Duration::from_secs(60);

async fn copy_replica(
    request: &InstallRequest,
    backends: &HashMap<u32, Arc<dyn PgBackend>>,
    map: &RwLock<ClusterMapState>,
    maps: &MapClient,
    limits: &CopyLimits,
    silence_max: Duration,
) -> Result<Copied, String> {
    let silent = || {
        format!(
            "nothing came for {} s; the copy is given up and the leader sends the snapshot again",
            silence_max.as_secs_f64()
        )
    };
    let group = request.group;
    let local_disk = disk_of_peer(request.peer).ok_or("bad replica id")?;
    let source_disk = disk_of_peer(request.from).ok_or("bad sender id")?;
    let backend = backends
        .get(&local_disk)
        .cloned()
        .ok_or_else(|| format!("disk {local_disk} is not on this node"))?;
    let source_addr = {
        let map = map.read().map_err(|_| "cluster map lock poisoned")?;
        map.node_of_disk(source_disk)
            .map(|n| n.peer_addr.clone())
            .ok_or_else(|| format!("disk {source_disk} (the leader's) is not in the map"))?
    };
    let channel = Channel::from_shared(format!("http://{source_addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await
        .map_err(|e| format!("connect to {source_addr}: {e}"))?;
    let mut client =
        RecoveryClient::new(channel).max_decoding_message_size(4 * COPY_MESSAGE_MAX_BYTES);
    let call = client.copy_pg(CopyPgRequest {
        group,
        disk: source_disk,
        min_applied: request.index,
    });
    let mut stream = tokio::time::timeout(silence_max, call)
        .await
        .map_err(|_| format!("copy from {source_addr}: {}", silent()))?
        .map_err(|e| format!("copy from {source_addr}: {}", e.message()))?
        .into_inner();
    let mut copied = Copied::default();
    let mut seen = BTreeSet::new();
    let mut pending: Option<ObjectImage> = None;
    let mut last_report = Instant::now();
    loop {
        let message = tokio::time::timeout(silence_max, stream.message())
            .await
            .map_err(|_| format!("copy from {source_addr}: {}", silent()))?
            .map_err(|e| format!("copy from {source_addr}: {}", e.message()))?;
        let Some(message) = message else { break };
        limits.admit(message_bytes(&message)).await;
        let object = ObjectId {
            volume: message.volume,
            object_no: message.object,
        };
        let image = pending.get_or_insert_with(|| ObjectImage {
            object,
            record: message.has_record.then(|| message.record.clone()),
            versions: Vec::new(),
        });
        if image.object != object {
            return Err(format!(
                "copy from {source_addr}: object {:x}.{:x} interrupted by {:x}.{:x}",
                image.object.volume, image.object.object_no, object.volume, object.object_no
            ));
        }
        for version in message.versions {
            image.versions.push(VersionImage {
                clone_seq: (version.clone_seq != 0).then_some(version.clone_seq),
                blocks: version
                    .blocks
                    .into_iter()
                    .map(|b| {
                        copied.bytes += b.data.len() as u64;
                        (b.block, b.crc, b.data)
                    })
                    .collect(),
            });
        }
        if message.more {
            continue;
        }
        let image = pending.take().expect("an object in progress");
        seen.insert(image.object);
        let import = backend.clone();
        tokio::task::spawn_blocking(move || import.import_object(group, &image))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        copied.objects += 1;
        if last_report.elapsed() > PROGRESS_EVERY {
            last_report = Instant::now();
            tracing::info!(
                group = format!("{group:x}"),
                objects = copied.objects,
                bytes = copied.bytes,
                "copying a new replica"
            );
        }
    }
    if pending.is_some() {
        return Err(format!(
            "copy from {source_addr}: the stream ended inside an object"
        ));
    }
    // Objects this disk held of the group (a replica that was here
    // before) that the copy does not have: gone since.
    let fresh_map = maps.read().await.map_err(|e| format!("cluster map: {e}"))?;
    let finish = backend.clone();
    let index = request.index;
    copied.removed = tokio::task::spawn_blocking(move || -> Result<u64, String> {
        let mut removed = 0;
        for object in group_objects(&*finish, &fresh_map, group)? {
            if !seen.contains(&object) {
                finish.remove_object(&object).map_err(|e| e.to_string())?;
                removed += 1;
            }
        }
        finish
            .finish_import(group, index)
            .map_err(|e| e.to_string())?;
        Ok(removed)
    })
    .await
    .map_err(|e| e.to_string())??;
    Ok(copied)
}

/// The data bytes a copy message carries.
fn message_bytes(message: &CopiedObject) -> u64 {
    message
        .versions
        .iter()
        .flat_map(|v| &v.blocks)
        .map(|b| b.data.len() as u64)
        .sum()
}

#[cfg(test)]
mod copy_tests {
    use super::*;
    use crate::cluster::map::NodeInfo;
    use crate::pg::backend::MemoryBackend;
    use crate::pg::{group_id, peer_of_disk};

    /// A source that stalls partway: it sends the first part of an object,
    /// then nothing more.
    struct StallsAfterOnePart;

    #[tonic::async_trait]
    impl Recovery for StallsAfterOnePart {
        type CopyPgStream = CopyStream;

        async fn copy_pg(
            &self,
            _request: Request<CopyPgRequest>,
        ) -> Result<Response<CopyStream>, Status> {
            use tokio_stream::StreamExt as _;
            let first = CopiedObject {
                volume: 5,
                object: 0,
                more: true,
                ..Default::default()
            };
            let parts = tokio_stream::once(Ok(first)).chain(tokio_stream::pending());
            Ok(Response::new(Box::pin(parts)))
        }
    }

    /// A source that sends `objects` objects of volume 5, each in one
    /// message of `blocks` 4 KiB blocks.
    struct SendsObjects {
        objects: u64,
        blocks: u64,
    }

    #[tonic::async_trait]
    impl Recovery for SendsObjects {
        type CopyPgStream = CopyStream;

        async fn copy_pg(
            &self,
            _request: Request<CopyPgRequest>,
        ) -> Result<Response<CopyStream>, Status> {
            let messages: Vec<CopiedObject> = (0..self.objects)
                .map(|object| {
                    let blocks = (0..self.blocks)
                        .map(|block| {
                            let data = vec![object as u8 + 1; 4096];
                            CopiedBlock {
                                block,
                                crc: crc32c::crc32c(&data),
                                data,
                            }
                        })
                        .collect();
                    CopiedObject {
                        volume: 5,
                        object,
                        versions: vec![CopiedVersion {
                            clone_seq: 0,
                            blocks,
                        }],
                        ..Default::default()
                    }
                })
                .collect();
            Ok(Response::new(Box::pin(tokio_stream::iter(
                messages.into_iter().map(Ok),
            ))))
        }
    }

    /// Serves `source` on a loopback port; returns its address.
    async fn serve<S: Recovery>(source: S) -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(crate::net::proto::recovery_server::RecoveryServer::new(
                    source,
                ))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await;
        });
        (addr, server)
    }

    /// Copies from a source at `addr` (the node holding disk 1) with a
    /// silence limit of 500 ms, bounded by 20 s.
    async fn copy_from(addr: &str) -> Result<Result<Copied, String>, tokio::time::error::Elapsed> {
        let backend: Arc<dyn PgBackend> = Arc::new(MemoryBackend::default());
        copy_into(addr, backend, CopyLimits::new(1, 0)).await
    }

    /// A map where node 2, at `addr`, holds disk 1 (the copies' source).
    fn source_map(addr: &str) -> ClusterMapState {
        let mut map = ClusterMapState::default();
        map.nodes.insert(
            2,
            NodeInfo {
                peer_addr: addr.to_string(),
                ..NodeInfo::for_test(2, &[1])
            },
        );
        map
    }

    /// One monitor, unreachable (an empty list is not a client's to have):
    /// a copy that gets as far as reading the map waits there until the
    /// test ends it.
    fn unreachable_maps() -> MapClient {
        MapClient::new(1, None, vec![99], Arc::new(|_: u64| None::<String>))
    }

    async fn copy_into(
        addr: &str,
        backend: Arc<dyn PgBackend>,
        limits: CopyLimits,
    ) -> Result<Result<Copied, String>, tokio::time::error::Elapsed> {
        let map = source_map(addr);
        let backends = HashMap::from([(0u32, backend)]);
        let request = InstallRequest {
            group: group_id(1, 0),
            peer: peer_of_disk(0),
            from: peer_of_disk(1),
            index: 10,
        };
        let maps = unreachable_maps();
        tokio::time::timeout(
            Duration::from_secs(20),
            copy_replica(
                &request,
                &backends,
                &RwLock::new(map),
                &maps,
                &limits,
                Duration::from_millis(500),
            ),
        )
        .await
    }

    /// A source that goes silent, before its first word or partway
    /// through: the copy gives up after the silence limit, naming the
    /// source, instead of holding its replica (which hears nothing
    /// meanwhile, and cannot be dropped) forever.
    #[tokio::test]
    async fn a_copy_from_a_source_gone_silent_gives_up() {
        // Accepts the connection, never answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap().to_string();
        let error = copy_from(&addr)
            .await
            .expect("the copy hung past the silence limit")
            .expect_err("a silent source copied something");
        assert!(
            error.contains(&addr) && error.contains("nothing came"),
            "{error}"
        );

        let (addr, server) = serve(StallsAfterOnePart).await;
        let started = Instant::now();
        let error = copy_from(&addr)
            .await
            .expect("the copy hung past the silence limit")
            .expect_err("a stalled source copied something");
        assert!(
            error.contains(&addr) && error.contains("nothing came"),
            "{error}"
        );
        assert!(started.elapsed() >= Duration::from_millis(500));
        server.abort();
        drop(silent);
    }

    /// A node's copies together receive no faster than the limit. Two
    /// copies of 512 KiB each, in 128 KiB messages, at 512 KiB/s shared:
    /// the limiter lets a message through while it is not in debt, so the
    /// last one passes once 896 KiB less a tenth of a second's worth have
    /// drained, about 1.65 s (a limit per copy would let both through in
    /// about 0.7 s).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn copies_together_receive_no_faster_than_the_nodes_recovery_rate() {
        let (addr, server) = serve(SendsObjects {
            objects: 4,
            blocks: 32,
        })
        .await;
        let limits = CopyLimits::new(2, 512 << 10);
        let started = Instant::now();
        let mut stores = Vec::new();
        let mut copies = Vec::new();
        for _ in 0..2 {
            let dir = tempfile::tempdir().unwrap();
            let store = Arc::new(crate::store::DiskStore::open(dir.path()).unwrap());
            let backend: Arc<dyn PgBackend> = store.clone();
            copies.push(tokio::spawn({
                let (addr, limits) = (addr.clone(), limits.clone());
                async move { copy_into(&addr, backend, limits).await }
            }));
            stores.push((dir, store));
        }
        // Every object imported: the copies then only have the map left
        // to read, which this test has none of.
        while !stores
            .iter()
            .all(|(_, store)| store.object_numbers(5).unwrap().len() == 4)
        {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the copies stalled"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let took = started.elapsed();
        for copy in copies {
            copy.abort();
        }
        assert!(
            took >= Duration::from_millis(1_400),
            "the copies took {took:?}"
        );
        let mut metrics = String::new();
        limits.render_metrics(&mut metrics);
        assert!(
            metrics.contains(&format!(
                "hpchain_recovery_received_bytes_total {}",
                2 * 4 * 32 * 4096
            )),
            "{metrics}"
        );
        server.abort();
    }

    /// Copies beyond the node's limit are turned away (their leaders ask
    /// again) until a slot is given back.
    #[test]
    fn copies_beyond_the_limit_are_turned_away_until_a_slot_is_free() {
        let limits = CopyLimits::new(2, 0);
        let metric = |name: &str| {
            let mut out = String::new();
            limits.render_metrics(&mut out);
            out.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")).map(str::to_string))
                .unwrap_or_else(|| panic!("no {name} in {out}"))
        };
        let first = limits.try_slot(1).expect("a first slot");
        let second = limits.try_slot(2).expect("a second slot");
        assert!(limits.try_slot(3).is_none(), "a third copy ran beside two");
        assert_eq!(metric("hpchain_recovery_copies"), "2");
        assert_eq!(metric("hpchain_recovery_copies_turned_away_total"), "1");
        drop(first);
        let third = limits.try_slot(3).expect("the freed slot");
        assert_eq!(metric("hpchain_recovery_copies"), "2");
        drop((second, third));
        assert_eq!(metric("hpchain_recovery_copies"), "0");
    }

    /// The installer takes a slot for each copy it starts and turns a copy
    /// away, never calling its `done`, while none is free; the slot comes
    /// back when the copy ends.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_installer_turns_copies_away_while_its_slots_are_taken() {
        use std::sync::atomic::AtomicBool;
        let (addr, server) = serve(StallsAfterOnePart).await;
        let backend: Arc<dyn PgBackend> = Arc::new(MemoryBackend::default());
        let installer = PgInstaller::new(
            tokio::runtime::Handle::current(),
            HashMap::from([(0u32, backend)]),
            Arc::new(RwLock::new(source_map(&addr))),
            unreachable_maps(),
            CopyLimits::new(1, 0),
        );
        let request = |index| InstallRequest {
            group: group_id(1, 0),
            peer: peer_of_disk(0),
            from: peer_of_disk(1),
            index,
        };
        let (first_done, first_ended) = tokio::sync::oneshot::channel();
        assert!(installer.install(
            request(10),
            Box::new(move |result| {
                let _ = first_done.send(result);
            })
        ));
        let second_done = Arc::new(AtomicBool::new(false));
        let flag = second_done.clone();
        assert!(
            !installer.install(
                request(11),
                Box::new(move |_| flag.store(true, Ordering::SeqCst))
            ),
            "a second copy started beside the first"
        );
        // The source goes away: the first copy ends and gives its slot back.
        server.abort();
        let ended = tokio::time::timeout(Duration::from_secs(20), first_ended)
            .await
            .expect("the first copy never ended")
            .unwrap();
        assert!(ended.is_err(), "{ended:?}");
        assert!(
            !second_done.load(Ordering::SeqCst),
            "a copy turned away was answered"
        );
        let (third_done, third_ended) = tokio::sync::oneshot::channel();
        assert!(installer.install(
            request(12),
            Box::new(move |result| {
                let _ = third_done.send(result);
            })
        ));
        let _ = tokio::time::timeout(Duration::from_secs(20), third_ended).await;
    }
}
