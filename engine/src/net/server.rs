//! The node's gRPC service: receives Raft batches and hands them to the
//! node loop.

use prost011::Message as _;
use tonic::{Request, Response, Status, Streaming};

use super::proto::node_server::Node;
use super::proto::{RaftAck, RaftBatch};
use crate::replication::{RaftEnvelope, RaftNodeHandle};

/// The `hpchain.node.v1.Node` service of one node.
pub struct NodeService {
    raft: RaftNodeHandle,
}

impl NodeService {
    pub fn new(raft: RaftNodeHandle) -> NodeService {
        NodeService { raft }
    }

    /// The tonic server wrapper, ready to add to a `Server`.
    pub fn into_server(self) -> super::proto::node_server::NodeServer<NodeService> {
        super::proto::node_server::NodeServer::new(self)
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
