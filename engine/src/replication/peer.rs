//! One replica of one group: the raft-rs `RawNode`, the state machine it
//! applies to, and the proposals and reads waiting on it.
//!
//! Everything here runs on the node loop's thread; nothing blocks or does
//! I/O except through the log store (reads) and the state machine.

use prost011::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeV2, Entry, EntryType};
use raft::{RawNode, StateRole};
use std::collections::VecDeque;

use super::log_store::LogStore;
use super::{ApplyResult, GroupId, PeerId, ReplicationError, StateMachine};

/// The Raft entry context that marks a log compaction (data: index u64le).
pub const COMPACT_CONTEXT: &[u8] = b"hpchain.compact.v1";

/// What applying entries asks the node loop to do next.
#[derive(Debug, Default)]
pub struct ApplyEffects {
    pub conf_state: Option<raft::eraftpb::ConfState>,
    /// Truncate this replica's log up to this index.
    pub compact_to: Option<u64>,
}

/// Called once with the outcome of a proposal or read.
pub type Callback = Box<dyn FnOnce(Result<ApplyResult, ReplicationError>) + Send>;

struct Proposal {
    index: u64,
    term: u64,
    callback: Callback,
}

struct PendingRead {
    /// Set once the leader confirmed its lease: serve when applied >= it.
    index: Option<u64>,
    /// Whether `read_index` was called for it: raft-rs drops read requests
    /// on a leader that has not committed an entry of its term yet, so
    /// those wait here until it has.
    issued: bool,
    context: u64,
    query: Vec<u8>,
    callback: Callback,
}

/// A replica of a group hosted on this node.
pub struct Peer {
    pub group: GroupId,
    pub id: PeerId,
    pub raw: RawNode<LogStore>,
    machine: Box<dyn StateMachine>,
    proposals: VecDeque<Proposal>,
    reads: Vec<PendingRead>,
    next_read_context: u64,
    /// How many times this replica saw a new leader (for metrics).
    pub leader_changes: u64,
    pub leader: Option<PeerId>,
    /// Commit index learned after the last persisted hard state.
    pub commit_dirty: bool,
    /// A compaction proposed by this leader has not been applied yet.
    compact_pending: bool,
}

impl Peer {
    pub fn new(
        group: GroupId,
        id: PeerId,
        raw: RawNode<LogStore>,
        machine: Box<dyn StateMachine>,
    ) -> Peer {
        Peer {
            group,
            id,
            raw,
            machine,
            proposals: VecDeque::new(),
            reads: Vec::new(),
            next_read_context: 1,
            leader_changes: 0,
            leader: None,
            commit_dirty: false,
            compact_pending: false,
        }
    }

    fn not_leader(&self) -> ReplicationError {
        ReplicationError::NotLeader {
            group: self.group,
            leader: self.leader.filter(|&l| l != self.id),
        }
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// Proposes a command; `callback` gets the state machine's result once
    /// the entry is committed and applied here.
    pub fn propose(&mut self, data: Vec<u8>, callback: Callback) {
        if !self.is_leader() {
            return callback(Err(self.not_leader()));
        }
        let before = self.raw.raft.raft_log.last_index();
        if self.raw.propose(Vec::new(), data).is_err() {
            return callback(Err(ReplicationError::Dropped { group: self.group }));
        }
        let index = self.raw.raft.raft_log.last_index();
        debug_assert_eq!(index, before + 1);
        self.proposals.push_back(Proposal {
            index,
            term: self.raw.raft.term,
            callback,
        });
    }

    /// Starts a linearizable read (Raft ReadIndex) on the leader.
    pub fn read(&mut self, query: Vec<u8>, callback: Callback) {
        if !self.is_leader() {
            return callback(Err(self.not_leader()));
        }
        let context = self.next_read_context;
        self.next_read_context += 1;
        let issued = self.raw.raft.commit_to_current_term();
        if issued {
            self.raw.read_index(context.to_be_bytes().to_vec());
        }
        self.reads.push(PendingRead {
            index: None,
            issued,
            context,
            query,
            callback,
        });
    }

    /// Issues the reads that waited for this leader's first commit.
    fn issue_deferred_reads(&mut self) {
        // Checked first: `commit_to_current_term` looks up a term in the
        // log store (RocksDB), and this runs for every group on every round
        // of the loop.
        if !self.reads.iter().any(|r| !r.issued) {
            return;
        }
        if !self.is_leader() || !self.raw.raft.commit_to_current_term() {
            return;
        }
        for read in self.reads.iter_mut().filter(|r| !r.issued) {
            read.issued = true;
            self.raw.read_index(read.context.to_be_bytes().to_vec());
        }
    }

    /// Records the indexes the leader confirmed for pending reads.
    pub fn on_read_states(&mut self, states: Vec<raft::ReadState>) {
        for state in states {
            let Ok(bytes) = <[u8; 8]>::try_from(state.request_ctx.as_slice()) else {
                continue;
            };
            let context = u64::from_be_bytes(bytes);
            if let Some(read) = self.reads.iter_mut().find(|r| r.context == context) {
                read.index = Some(state.index);
            }
        }
    }

    /// Notes a role or leader change; a replica that stops leading fails its
    /// pending reads (they can no longer be proven current here).
    pub fn on_soft_state(&mut self, leader: u64, role: StateRole) {
        let leader = (leader != 0).then_some(leader);
        if leader != self.leader {
            self.leader_changes += 1;
            self.leader = leader;
        }
        if role != StateRole::Leader {
            self.compact_pending = false;
            let error = self.not_leader();
            for read in self.reads.drain(..) {
                (read.callback)(Err(error.clone()));
            }
        }
    }

    /// Applies committed entries in order, answering their proposers.
    pub fn apply(&mut self, entries: Vec<Entry>) -> Result<ApplyEffects, ReplicationError> {
        let mut effects = ApplyEffects::default();
        for entry in entries {
            if entry.index <= self.machine.applied_index() {
                continue; // already durable in the state machine (restart)
            }
            if entry.get_entry_type() == EntryType::EntryNormal
                && entry.context.as_slice() == COMPACT_CONTEXT
            {
                if let Ok(bytes) = <[u8; 8]>::try_from(entry.data.as_slice()) {
                    // Everything the log could replay must be durable first.
                    self.machine.sync().map_err(ReplicationError::Storage)?;
                    effects.compact_to = Some(u64::from_le_bytes(bytes).min(entry.index - 1));
                }
                self.machine.apply_noop(entry.index);
                self.compact_pending = false;
                self.answer(entry.index, entry.term, Ok(Vec::new()));
                continue;
            }
            let result = match entry.get_entry_type() {
                EntryType::EntryNormal if entry.data.is_empty() => {
                    self.machine.apply_noop(entry.index);
                    Ok(Vec::new())
                }
                EntryType::EntryNormal => {
                    self.machine
                        .apply(entry.index, &entry.data)
                        .map_err(|reason| ReplicationError::Apply {
                            group: self.group,
                            reason,
                        })
                }
                EntryType::EntryConfChange => {
                    let cc = ConfChange::decode(entry.data.as_slice())
                        .map_err(|e| ReplicationError::Storage(format!("conf change: {e}")))?;
                    effects.conf_state = Some(self.raw.apply_conf_change(&cc).map_err(|e| {
                        ReplicationError::Storage(format!("apply conf change: {e}"))
                    })?);
                    self.machine.apply_noop(entry.index);
                    Ok(Vec::new())
                }
                EntryType::EntryConfChangeV2 => {
                    let cc = ConfChangeV2::decode(entry.data.as_slice())
                        .map_err(|e| ReplicationError::Storage(format!("conf change: {e}")))?;
                    effects.conf_state = Some(self.raw.apply_conf_change(&cc).map_err(|e| {
                        ReplicationError::Storage(format!("apply conf change: {e}"))
                    })?);
                    self.machine.apply_noop(entry.index);
                    Ok(Vec::new())
                }
            };
            self.answer(entry.index, entry.term, result);
        }
        Ok(effects)
    }

    /// On the leader: proposes truncating the log up to what every replica
    /// has, once that is more than `threshold` entries. A replica that is
    /// down holds compaction back (it must catch up from the log).
    pub fn maybe_propose_compaction(&mut self, threshold: u64) {
        if !self.is_leader() || self.compact_pending {
            return;
        }
        let min_matched = self
            .raw
            .raft
            .prs()
            .iter()
            .map(|(_, p)| p.matched)
            .min()
            .unwrap_or(0);
        let target = min_matched.min(self.machine.applied_index());
        let first = self.raw.store().first_index_now();
        if target < first + threshold {
            return;
        }
        if self
            .raw
            .propose(COMPACT_CONTEXT.to_vec(), target.to_le_bytes().to_vec())
            .is_ok()
        {
            self.compact_pending = true;
        }
    }

    fn answer(&mut self, index: u64, term: u64, result: Result<ApplyResult, ReplicationError>) {
        while let Some(front) = self.proposals.front() {
            if front.index > index {
                break;
            }
            let proposal = self.proposals.pop_front().expect("front exists");
            if proposal.index == index && proposal.term == term {
                (proposal.callback)(result);
                return;
            }
            // Another leader's entry took this index: ours never committed.
            (proposal.callback)(Err(ReplicationError::Dropped { group: self.group }));
        }
    }

    /// Serves the reads whose index has been applied, and issues those
    /// that can now be.
    pub fn serve_reads(&mut self) {
        if self.reads.is_empty() {
            return;
        }
        self.issue_deferred_reads();
        let applied = self.machine.applied_index();
        let mut i = 0;
        while i < self.reads.len() {
            if self.reads[i].index.is_some_and(|index| index <= applied) {
                let read = self.reads.swap_remove(i);
                let result =
                    self.machine
                        .read(&read.query)
                        .map_err(|reason| ReplicationError::Apply {
                            group: self.group,
                            reason,
                        });
                (read.callback)(result);
            } else {
                i += 1;
            }
        }
    }

    /// Fails everything pending (the loop is stopping).
    pub fn fail_all(&mut self, error: ReplicationError) {
        for p in self.proposals.drain(..) {
            (p.callback)(Err(error.clone()));
        }
        for r in self.reads.drain(..) {
            (r.callback)(Err(error.clone()));
        }
    }

    pub fn applied_index(&self) -> u64 {
        self.machine.applied_index()
    }
}
