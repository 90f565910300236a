//! The boundary between the node loop and the network.
//!
//! The loop hands each destination node one batch of messages per round;
//! how it travels (gRPC between processes, channels in tests) is the
//! transport's business. A transport never blocks the loop: it queues or
//! drops, and Raft retransmits what was dropped.

use raft::eraftpb::Message;

use super::{GroupId, NodeId};

/// One Raft message for one group.
#[derive(Debug, Clone)]
pub struct RaftEnvelope {
    pub group: GroupId,
    pub message: Message,
}

/// Carries batches of Raft messages to other nodes.
pub trait Transport: Send + Sync + 'static {
    /// Sends `batch` to node `to`, without blocking. Delivery may fail
    /// silently; Raft retries.
    fn send(&self, to: NodeId, batch: Vec<RaftEnvelope>);
}

/// Maps a group's peer to the node that hosts it.
pub trait PeerResolver: Send + Sync + 'static {
    /// The node hosting `peer` of `group`, if the map knows it.
    fn node_of(&self, group: GroupId, peer: u64) -> Option<NodeId>;
}

impl<F> PeerResolver for F
where
    F: Fn(GroupId, u64) -> Option<NodeId> + Send + Sync + 'static,
{
    fn node_of(&self, group: GroupId, peer: u64) -> Option<NodeId> {
        self(group, peer)
    }
}
