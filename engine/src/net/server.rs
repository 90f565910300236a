//! The node's gRPC service: receives Raft batches and hands them to the
//! node loop.

use prost011::Message as _;
use tonic::{Request, Response, Status, Streaming};

use super::proto::cluster_map_server::ClusterMap;
use super::proto::health_server::Health;
use super::proto::integrity_server::Integrity;
use super::proto::node_server::Node;
use super::proto::placement_group_server::PlacementGroup;
use super::proto::space_server::Space;
use super::proto::{AllocatedReply, AllocatedRequest};
use super::proto::{
    HeartbeatReply, HeartbeatRequest, MapReply, MapRequest, PgReply, RaftAck, RaftBatch,
};
use crate::cluster::Liveness;
use crate::cluster::MAP_GROUP;
use crate::integrity::Repairer;
use crate::replication::ReplicationError;
use crate::replication::{RaftEnvelope, RaftNodeHandle};
use std::time::Duration;

/// Largest Raft batch a node accepts from a peer.
pub const RAFT_BATCH_MAX_BYTES: usize = 512 << 20;

/// The `hpchain.node.v1.Node` service of one node.
pub struct NodeService {
    raft: RaftNodeHandle,
}

impl NodeService {
    pub fn new(raft: RaftNodeHandle) -> NodeService {
        NodeService { raft }
    }

    /// The tonic server wrapper, ready to add to a `Server`. A batch may
    /// carry several whole objects' writes, far above tonic's 4 MiB default.
    pub fn into_server(self) -> super::proto::node_server::NodeServer<NodeService> {
        super::proto::node_server::NodeServer::new(self)
            .max_decoding_message_size(RAFT_BATCH_MAX_BYTES)
    }
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn raft(
        &self,
        request: Request<Streaming<RaftBatch>>,
    ) -> Result<Response<RaftAck>, Status> {
        let mut stream = request.into_inner();
        let mut batches = 0;
        while let Some(batch) = stream.message().await? {
            batches += 1;
            let mut envelopes = Vec::with_capacity(batch.messages.len());
            for wire in batch.messages {
                let message =
                    raft::eraftpb::Message::decode(wire.message.as_slice()).map_err(|e| {
                        Status::invalid_argument(format!(
                            "node {}: group {}: undecodable Raft message: {e}",
                            batch.from_node, wire.group
                        ))
                    })?;
                envelopes.push(RaftEnvelope {
                    group: wire.group,
                    message,
                });
            }
            if !self.raft.deliver(envelopes) {
                return Err(Status::unavailable(
                    "this node's replication loop has stopped",
                ));
            }
        }
        Ok(Response::new(RaftAck { batches }))
    }
}

/// How long the leader waits for a map proposal or read to complete.
const MAP_APPLY_TIMEOUT: Duration = Duration::from_secs(3);

/// The `hpchain.node.v1.ClusterMap` service: answers when this node leads
/// the map group, or says who does.
pub struct ClusterMapService {
    raft: RaftNodeHandle,
}

impl ClusterMapService {
    pub fn new(raft: RaftNodeHandle) -> ClusterMapService {
        ClusterMapService { raft }
    }

    pub fn into_server(
        self,
    ) -> super::proto::cluster_map_server::ClusterMapServer<ClusterMapService> {
        super::proto::cluster_map_server::ClusterMapServer::new(self)
    }

    // tonic's handlers return `Status` by value; boxing it here buys nothing.
    #[allow(clippy::result_large_err)]
    fn reply(result: Result<Vec<u8>, ReplicationError>) -> Result<Response<MapReply>, Status> {
        match result {
            Ok(result) => Ok(Response::new(MapReply {
                result,
                not_leader: false,
                leader_hint: 0,
            })),
            Err(ReplicationError::NotLeader { leader, .. }) => Ok(Response::new(MapReply {
                result: Vec::new(),
                not_leader: true,
                leader_hint: leader.unwrap_or(0),
            })),
            Err(ReplicationError::GroupNotFound(_)) => Ok(Response::new(MapReply {
                result: Vec::new(),
                not_leader: true,
                leader_hint: 0,
            })),
            Err(e) => Err(Status::unavailable(e.to_string())),
        }
    }
}

#[tonic::async_trait]
impl ClusterMap for ClusterMapService {
    async fn propose(&self, request: Request<MapRequest>) -> Result<Response<MapReply>, Status> {
        let command = request.into_inner().command;
        Self::reply(
            self.raft
                .propose_async(MAP_GROUP, command, MAP_APPLY_TIMEOUT)
                .await,
        )
    }

    async fn read(&self, _request: Request<MapRequest>) -> Result<Response<MapReply>, Status> {
        Self::reply(
            self.raft
                .read_async(MAP_GROUP, Vec::new(), MAP_APPLY_TIMEOUT)
                .await,
        )
    }
}

/// The `hpchain.node.v1.Health` service of a monitor: records heartbeats.
pub struct HealthService {
    liveness: Liveness,
    epoch: std::sync::Arc<dyn Fn() -> u64 + Send + Sync>,
}

impl HealthService {
    pub fn new(
        liveness: Liveness,
        epoch: std::sync::Arc<dyn Fn() -> u64 + Send + Sync>,
    ) -> HealthService {
        HealthService { liveness, epoch }
    }

    pub fn into_server(self) -> super::proto::health_server::HealthServer<HealthService> {
        super::proto::health_server::HealthServer::new(self)
    }
}

#[tonic::async_trait]
impl Health for HealthService {
    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatReply>, Status> {
        self.liveness
            .record(request.into_inner().node, std::time::Instant::now());
        Ok(Response::new(HeartbeatReply {
            epoch: (self.epoch)(),
        }))
    }
}

/// How long a PG leader waits for a write to commit or a read to be served.
const PG_IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The `hpchain.node.v1.PlacementGroup` service: object I/O on the PG
/// replicas this node leads. Reads repair the corrupt blocks they meet.
pub struct PlacementGroupService {
    raft: RaftNodeHandle,
    repairer: Repairer,
}

impl PlacementGroupService {
    pub fn new(raft: RaftNodeHandle, repairer: Repairer) -> PlacementGroupService {
        PlacementGroupService { raft, repairer }
    }

    pub fn into_server(
        self,
    ) -> super::proto::placement_group_server::PlacementGroupServer<PlacementGroupService> {
        super::proto::placement_group_server::PlacementGroupServer::new(self)
            .max_decoding_message_size(super::pg_stream::STREAM_MESSAGE_MAX_BYTES)
            .max_encoding_message_size(super::pg_stream::STREAM_MESSAGE_MAX_BYTES)
    }
}

/// Says (at most every 10 s) that writes arrive past their proposal
/// deadline: this node is overloaded, or its clock is ahead of the
/// sender's.
fn warn_expired(group: u64, deadline_unix_ms: u64) {
    static WARNED: crate::log_gate::LogGate =
        crate::log_gate::LogGate::new(Duration::from_secs(10));
    if !WARNED.open() {
        return;
    }
    let now_ms = crate::ledger::now_ms();
    let when = if deadline_unix_ms == 0 {
        "more than 10 s after it arrived".to_string()
    } else if now_ms > deadline_unix_ms {
        format!(
            "{} ms past its proposal deadline",
            now_ms - deadline_unix_ms
        )
    } else {
        "more than 1 s after this node started on it".to_string()
    };
    tracing::warn!(
        "group {group:x}: a write reached the replication loop {when} and was not proposed (the sender retries); this node is overloaded, or its clock is ahead of the sender's (keep node clocks within 500 ms with NTP)"
    );
}

/// How long from now until `deadline_unix_ms` on this node's clock; zero
/// once it has passed.
pub fn unix_deadline_in(deadline_unix_ms: u64) -> Duration {
    let deadline = std::time::UNIX_EPOCH + Duration::from_millis(deadline_unix_ms);
    deadline
        .duration_since(std::time::SystemTime::now())
        .unwrap_or(Duration::ZERO)
}

/// A PG I/O outcome as a reply: retryable conditions in fields, final
/// failures in `error`.
pub fn pg_reply(result: Result<Vec<u8>, ReplicationError>) -> PgReply {
    match result {
        Ok(data) => PgReply {
            data,
            ..PgReply::default()
        },
        Err(ReplicationError::NotLeader { leader, .. }) => PgReply {
            not_leader: true,
            leader_peer: leader.unwrap_or(0),
            ..PgReply::default()
        },
        Err(
            ReplicationError::GroupNotFound(_)
            | ReplicationError::Dropped { .. }
            | ReplicationError::Stopped,
        ) => PgReply {
            not_leader: true,
            ..PgReply::default()
        },
        // `not_leader` too: a client that does not know `expired` then
        // retries instead of taking the empty reply for success.
        Err(ReplicationError::Expired { .. }) => PgReply {
            expired: true,
            not_leader: true,
            ..PgReply::default()
        },
        Err(e) => PgReply {
            error: e.to_string(),
            ..PgReply::default()
        },
    }
}

#[tonic::async_trait]
impl PlacementGroup for PlacementGroupService {
    type StreamStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<super::proto::PgAnswers, Status>> + Send>,
    >;

    async fn stream(
        &self,
        request: Request<Streaming<super::proto::PgCalls>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let raft = self.raft.clone();
        let repairer = self.repairer.clone();
        let answers = super::pg_stream::serve_stream(request.into_inner(), move |call| {
            let raft = raft.clone();
            let repairer = repairer.clone();
            async move {
                if call.write {
                    // Within the caller's deadline and PROPOSE_WITHIN of
                    // starting on it here: safe while either the clocks or
                    // the time since the caller stamped it are within the
                    // tolerated skew.
                    let propose_by = match call.deadline_unix_ms {
                        0 => PG_IO_TIMEOUT,
                        ms => unix_deadline_in(ms).min(super::pg_stream::PROPOSE_WITHIN),
                    };
                    let result = raft
                        .propose_async_before(
                            call.group,
                            call.payload,
                            std::time::Instant::now() + propose_by,
                            PG_IO_TIMEOUT,
                        )
                        .await;
                    if matches!(result, Err(ReplicationError::Expired { .. })) {
                        warn_expired(call.group, call.deadline_unix_ms);
                    }
                    pg_reply(result)
                } else {
                    repairer.read(call.group, call.payload, PG_IO_TIMEOUT).await
                }
            }
        });
        Ok(Response::new(Box::pin(answers)))
    }
}

/// The `hpchain.node.v1.Integrity` service: raw block copies for the other
/// replicas' repairs, and the scrub of this node's replicas.
pub struct IntegrityService {
    repairer: Repairer,
}

impl IntegrityService {
    pub fn new(repairer: Repairer) -> IntegrityService {
        IntegrityService { repairer }
    }

    pub fn into_server(self) -> super::proto::integrity_server::IntegrityServer<IntegrityService> {
        super::proto::integrity_server::IntegrityServer::new(self)
    }
}

#[tonic::async_trait]
impl Integrity for IntegrityService {
    async fn read_block(
        &self,
        request: Request<super::proto::BlockRequest>,
    ) -> Result<Response<super::proto::BlockReply>, Status> {
        Ok(Response::new(
            self.repairer.serve_block(request.into_inner()).await,
        ))
    }

    async fn scrub(
        &self,
        request: Request<super::proto::ScrubRequest>,
    ) -> Result<Response<super::proto::ScrubReply>, Status> {
        Ok(Response::new(
            self.repairer.scrub_disk(request.into_inner()).await,
        ))
    }

    async fn digests(
        &self,
        request: Request<super::proto::DigestQuery>,
    ) -> Result<Response<super::proto::DigestReply>, Status> {
        Ok(Response::new(
            self.repairer.serve_digests(request.into_inner()).await,
        ))
    }
}

/// The `hpchain.node.v1.Space` service: what this node's disks hold.
pub struct SpaceService {
    backends: std::sync::Arc<Vec<std::sync::Arc<dyn crate::pg::backend::PgBackend>>>,
    raft: crate::replication::RaftNodeHandle,
}

impl SpaceService {
    pub fn new(
        backends: Vec<std::sync::Arc<dyn crate::pg::backend::PgBackend>>,
        raft: crate::replication::RaftNodeHandle,
    ) -> SpaceService {
        SpaceService {
            backends: std::sync::Arc::new(backends),
            raft,
        }
    }

    pub fn into_server(self) -> super::proto::space_server::SpaceServer<SpaceService> {
        super::proto::space_server::SpaceServer::new(self)
    }
}

#[tonic::async_trait]
impl Space for SpaceService {
    async fn allocated(
        &self,
        request: Request<AllocatedRequest>,
    ) -> Result<Response<AllocatedReply>, Status> {
        let volume = request.into_inner().volume;
        let backends = self.backends.clone();
        let bytes = tokio::task::spawn_blocking(move || {
            backends
                .iter()
                .map(|b| b.allocated_bytes(volume))
                .sum::<Result<u64, _>>()
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(AllocatedReply { bytes }))
    }

    async fn disks(
        &self,
        _request: Request<super::proto::DisksRequest>,
    ) -> Result<Response<super::proto::DisksReply>, Status> {
        let backends = self.backends.clone();
        let disks = tokio::task::spawn_blocking(move || {
            backends
                .iter()
                .filter_map(|b| b.space())
                .map(|(path, total, available)| super::proto::DiskSpace {
                    path,
                    total_bytes: total,
                    available_bytes: available,
                })
                .collect()
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(super::proto::DisksReply { disks }))
    }

    async fn led_groups(
        &self,
        _request: Request<super::proto::LedGroupsRequest>,
    ) -> Result<Response<super::proto::LedGroupsReply>, Status> {
        let groups = self
            .raft
            .status_async()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let groups = groups
            .into_iter()
            .filter(|g| g.is_leader)
            .map(led_group)
            .collect();
        Ok(Response::new(super::proto::LedGroupsReply { groups }))
    }
}

/// What a leader reports of one of its groups.
pub fn led_group(g: crate::replication::node_loop::GroupStatus) -> super::proto::LedGroup {
    super::proto::LedGroup {
        group: g.group,
        term: g.term,
        commit: g.commit,
        last_index: g.last_index,
        leader_peer: g.peer,
        replicas: g
            .progress
            .into_iter()
            .map(|r| super::proto::ReplicaProgress {
                peer: r.peer,
                matched: r.matched,
                replicating: r.replicating,
                learner: r.learner,
            })
            .collect(),
    }
}
