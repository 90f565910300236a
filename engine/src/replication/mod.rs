//! Replication: every placement group is a Raft group (raft-rs), and one
//! loop per node drives all the groups it hosts.
//!
//! This module owns Raft logs and hard state in RocksDB ([`log_store`]),
//! the per-group peer with its pending proposals and reads ([`peer`]), the
//! node-wide loop that batches the ready states of all groups into one
//! synced RocksDB write and one message batch per peer node
//! ([`node_loop`]), and the transport boundary ([`transport`]). It applies
//! committed entries through the [`StateMachine`] trait and never
//! interprets them: what an entry means belongs to the object store and
//! the cluster map.

pub mod log_store;
pub mod node_loop;
pub mod peer;
pub mod segment_log;
pub mod transport;

#[cfg(test)]
pub(crate) mod test_kv;
#[cfg(test)]
mod tests;

pub use node_loop::{NodeConfig, RaftNode, RaftNodeHandle};
pub use transport::{RaftEnvelope, Transport};

/// A Raft group: one placement group, or the cluster map (group 0).
pub type GroupId = u64;
/// A replica's id inside its group (never 0, a raft-rs rule): the disk's
/// global id plus one.
pub type PeerId = u64;
/// A node (one `hpchain node` process).
pub type NodeId = u64;

/// What applying one committed entry produced, handed back to its proposer.
pub type ApplyResult = Vec<u8>;

/// The deterministic state a group replicates.
///
/// Entries are applied in log order, exactly once from the state machine's
/// point of view: `apply` must make `index` durable together with the
/// effect (the same write batch), so that after a crash `applied_index`
/// tells where to resume.
pub trait StateMachine: Send {
    /// The index of the last entry whose effect is durable.
    fn applied_index(&self) -> u64;
    /// Applies entry `index`; the result goes back to the proposer.
    fn apply(&mut self, index: u64, data: &[u8]) -> Result<ApplyResult, String>;
    /// Records that `index` carried no command (leader no-op, conf change).
    fn apply_noop(&mut self, index: u64);
    /// Serves a linearizable read, after the group has applied past the
    /// read's index.
    fn read(&self, query: &[u8]) -> Result<Vec<u8>, String>;
    /// Makes everything applied so far durable; called before the log that
    /// could replay it is truncated, when `durable_index` does not tell or
    /// has stayed behind the truncation for a few checks.
    fn sync(&mut self) -> Result<(), String> {
        Ok(())
    }
    /// The index up to which applied effects are durable without a
    /// [`StateMachine::sync`] (a machine that syncs in batches of its own
    /// says so, and the log is truncated only that far); `None` when the
    /// machine does not track it, and must be synced before a truncation.
    fn durable_index(&self) -> Option<u64> {
        None
    }
    /// Takes `index` as applied: a [`SnapshotInstaller`] has put the
    /// state of another replica, at or after `index`, in place (durably).
    fn restore(&mut self, index: u64) -> Result<(), String> {
        let _ = index;
        Err("this state machine cannot install snapshots".into())
    }
    /// Entries up to `index` are applied over state that may already hold
    /// the effects of later ones (a restart replays what its log holds
    /// past the durable index; a copy of another replica was taken while
    /// that replica went on applying): an entry that observes the state
    /// rather than changing it must not trust what it sees up to there.
    fn replaying_through(&mut self, index: u64) {
        let _ = index;
    }
}

/// Copies a group's state from another replica for a snapshot.
///
/// Raft snapshots here carry no data (see `log_store`): when a replica
/// receives one, the node loop asks the installer to bring the replica's
/// state machine to the state of the sender's replica, which has applied
/// at least `index`, and steps the snapshot only once that is durable.
pub trait SnapshotInstaller: Send + Sync + 'static {
    /// Starts the copy and returns true at once; `done` is called exactly
    /// once, from any thread, and only after the copy's last write: until
    /// then the replica cannot be dropped (a write after the drop would
    /// land under the next replica of the group on that disk), and hears
    /// nothing.
    ///
    /// Returns false, and never calls `done`, when the node takes on no
    /// more copies now: the replica goes on as it was (it can be dropped,
    /// and it hears Raft), and the leader's next snapshot asks again.
    fn install(
        &self,
        request: InstallRequest,
        done: Box<dyn FnOnce(Result<(), String>) + Send>,
    ) -> bool;
}

/// What to copy, for [`SnapshotInstaller::install`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallRequest {
    pub group: GroupId,
    /// The replica receiving the state.
    pub peer: PeerId,
    /// The replica (the group's leader) that sent the snapshot.
    pub from: PeerId,
    /// The snapshot's index: the copy must be at least this recent.
    pub index: u64,
}

/// Errors a caller of the replication layer sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplicationError {
    /// This replica is not the group's leader; retry at `leader` if known.
    #[error(
        "group {group}: this replica is not the leader (leader: {leader:?}); retry on the leader"
    )]
    NotLeader {
        group: GroupId,
        leader: Option<PeerId>,
    },
    /// The group is not hosted on this node.
    #[error("group {0} has no replica on this node; refresh the cluster map and route again")]
    GroupNotFound(GroupId),
    /// The proposal was overwritten by a new leader's log and did not commit.
    #[error("group {group}: the proposal was dropped by a leader change; retry it")]
    Dropped { group: GroupId },
    /// The proposal reached the node loop after its caller's deadline and
    /// was not proposed: nothing of it will be applied.
    #[error("group {group}: the write reached the replication loop after its caller stopped waiting, and was not proposed; retry it")]
    Expired { group: GroupId },
    /// The state machine refused the command.
    #[error("group {group}: {reason}")]
    Apply { group: GroupId, reason: String },
    /// The replica is copying a snapshot's state; it cannot be dropped
    /// until the copy ends (the copy would write after the drop).
    #[error("group {0}: this replica is copying a snapshot's state; drop it once the copy ends")]
    Installing(GroupId),
    /// The node loop stopped (shutdown or a fatal storage error).
    #[error("the replication loop of this node has stopped")]
    Stopped,
    /// Raft log storage failed; the node cannot continue safely.
    #[error("raft log storage: {0}; check the disk and restart the node")]
    Storage(String),
}
