//! One replica of one group: the raft-rs `RawNode`, the state machine it
//! applies to, and the proposals and reads waiting on it.
//!
//! Everything here runs on the node loop's thread; nothing blocks or does
//! I/O except through the log store (reads) and the state machine.

use prost011::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeSingle, ConfChangeType, ConfChangeV2, Entry, EntryType};
use raft::{ProgressState, RawNode, StateRole};
use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use super::log_store::{is_conf_change, LogStore, BOOTSTRAP_INDEX};
use super::{ApplyResult, GroupId, PeerId, ReplicationError, StateMachine};

/// The Raft entry context that marks a log compaction (data: index u64le).
pub const COMPACT_CONTEXT: &[u8] = b"hpchain.compact.v1";

/// What applying entries asks the node loop to do next.
#[derive(Debug, Default)]
pub struct ApplyEffects {
    /// The configuration after the last conf change applied, and its index.
    pub conf_state: Option<(u64, raft::eraftpb::ConfState)>,
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
    /// When `read_index` was called: a confirmation proves leadership
    /// from then on (see [`Peer::lease`]).
    issued_at: Instant,
    context: u64,
    query: Vec<u8>,
    callback: Callback,
}

/// The leader's lease: while it holds, a read is served at the commit
/// index without asking the followers (no heartbeat round per read).
///
/// A ReadIndex confirmation means a quorum received this leader's
/// heartbeat after the request was issued at `t`. With `check_quorum`, each
/// of those followers refuses to vote (raft-rs's `in_lease`) until
/// `election_ticks` of its own ticks have passed without a heartbeat, and
/// ticks never come faster than the tick interval, so no other leader can
/// be elected before `t + (election_ticks - 1) * tick`. The lease ends two
/// ticks short of that, is dropped by a leadership transfer (the target
/// campaigns by force, ignoring leases) and by every configuration change
/// (the quorum changes), and each confirmation extends it.
#[derive(Debug, Default)]
struct Lease {
    /// How long a confirmation issued at `t` proves leadership after `t`.
    span: Duration,
    until: Option<Instant>,
    /// A read_index issued only to extend the lease: context, issue time.
    renewal: Option<(u64, Instant)>,
    /// No lease before this: a leadership transfer was under way, and its
    /// target may win a forced election (past the followers' leases) for
    /// as long as the message telling it to could still arrive.
    blocked_until: Option<Instant>,
    /// This leader has committed an entry of its term (raft-rs answers no
    /// ReadIndex before that, and the commit index may lag until then).
    committed_in_term: bool,
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
    lease: Lease,
    /// How many times this replica saw a new leader (for metrics).
    pub leader_changes: u64,
    pub leader: Option<PeerId>,
    /// Commit index learned after the last persisted hard state.
    pub commit_dirty: bool,
    /// A compaction proposed by this leader has not been applied yet.
    compact_pending: bool,
    /// The log index an applied compaction truncates to, once the state
    /// machine's effects up to it are durable (see `compact_durable`).
    compact_wanted: Option<u64>,
    /// Compaction checks that found the machine not yet durable that far.
    compact_waits: u32,
    /// The index of a snapshot whose state is being copied here.
    pub installing: Option<u64>,
    /// The state was copied from another replica and nothing applied
    /// since (see `Peer::apply`).
    restored: bool,
}

/// Compaction checks a truncation waits for the state machine's own sync
/// before it syncs the machine itself.
const COMPACT_WAITS_MAX: u32 = 3;

/// Entries a learner may trail the commit index by and be promoted (writes
/// keep arriving while it catches up).
pub const PROMOTE_LAG_MAX: u64 = 64;

/// One membership change a leader proposes to move its group toward the
/// replicas placement wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipStep {
    /// Add a replica as a learner: it receives a snapshot, then the log.
    AddLearner(PeerId),
    /// Drop a learner placement no longer wants.
    RemoveLearner(PeerId),
    /// Promote a caught-up learner, replacing an unwanted voter in the same
    /// (joint) change when there is one.
    Promote {
        learner: PeerId,
        replaces: Option<PeerId>,
    },
    /// Drop a voter placement no longer wants (no replacement pending).
    RemoveVoter(PeerId),
    /// This leader is the unwanted voter: hand leadership to a wanted one.
    TransferLeader(PeerId),
}

/// The next membership step from configuration `conf` toward `target`,
/// given which replicas are caught up and which peer leads. `None` when
/// the group matches `target` or must wait (a learner catching up).
pub fn next_membership_step(
    conf: &raft::eraftpb::ConfState,
    target: &BTreeSet<PeerId>,
    leader: PeerId,
    caught_up: impl Fn(PeerId) -> bool,
) -> Option<MembershipStep> {
    if target.is_empty() || !conf.voters_outgoing.is_empty() {
        return None; // nothing placed, or a joint change raft-rs is leaving
    }
    let voters: BTreeSet<PeerId> = conf.voters.iter().copied().collect();
    let learners: BTreeSet<PeerId> = conf.learners.iter().copied().collect();
    if let Some(&l) = learners.iter().find(|l| !target.contains(l)) {
        return Some(MembershipStep::RemoveLearner(l));
    }
    if let Some(&p) = target
        .iter()
        .find(|p| !voters.contains(p) && !learners.contains(p))
    {
        return Some(MembershipStep::AddLearner(p));
    }
    let unwanted: Vec<PeerId> = voters.difference(target).copied().collect();
    if let Some(&learner) = learners.iter().find(|l| caught_up(**l)) {
        return Some(MembershipStep::Promote {
            learner,
            replaces: unwanted.iter().copied().find(|&v| v != leader),
        });
    }
    if !learners.is_empty() {
        return None; // wait: removing a voter first would lower redundancy
    }
    if let Some(&old) = unwanted.iter().find(|&&v| v != leader) {
        return Some(MembershipStep::RemoveVoter(old));
    }
    if unwanted.contains(&leader) {
        return voters
            .iter()
            .copied()
            .find(|&v| v != leader && target.contains(&v) && caught_up(v))
            .map(MembershipStep::TransferLeader);
    }
    None
}

impl Peer {
    pub fn new(
        group: GroupId,
        id: PeerId,
        raw: RawNode<LogStore>,
        machine: Box<dyn StateMachine>,
        lease_span: Duration,
    ) -> Peer {
        Peer {
            group,
            id,
            raw,
            machine,
            proposals: VecDeque::new(),
            reads: Vec::new(),
            next_read_context: 1,
            lease: Lease {
                span: lease_span,
                ..Lease::default()
            },
            leader_changes: 0,
            leader: None,
            commit_dirty: false,
            compact_pending: false,
            compact_wanted: None,
            compact_waits: 0,
            installing: None,
            restored: false,
        }
    }

    /// On the leader: proposes the next change toward `target` (one at a
    /// time: nothing while a change is pending). Returns what it proposed.
    pub fn reconfigure(&mut self, target: &[PeerId]) -> Option<MembershipStep> {
        if !self.is_leader() || self.raw.raft.has_pending_conf() {
            return None;
        }
        let target: BTreeSet<PeerId> = target.iter().copied().collect();
        let committed = self.raw.raft.raft_log.committed;
        let prs = self.raw.raft.prs();
        let caught_up = |p: PeerId| {
            prs.get(p).is_some_and(|pr| {
                pr.state == ProgressState::Replicate && pr.matched + PROMOTE_LAG_MAX >= committed
            })
        };
        let step =
            next_membership_step(self.raw.store().conf_state(), &target, self.id, caught_up)?;
        let single = |id, ty| ConfChangeSingle {
            node_id: id,
            change_type: ty as i32,
        };
        let changes = match &step {
            MembershipStep::AddLearner(_)
                if self.raw.store().first_index_now() <= BOOTSTRAP_INDEX + 1 =>
            {
                // A joining replica must get a snapshot (which carries the
                // configuration), never the log from where it starts: an
                // empty replica (or one bootstrapped at BOOTSTRAP_INDEX by
                // mistake) could take entries without the first
                // configuration. Compact first; add it on a later pass.
                self.propose_compaction(self.machine.applied_index());
                return None;
            }
            MembershipStep::AddLearner(p) => vec![single(*p, ConfChangeType::AddLearnerNode)],
            MembershipStep::RemoveLearner(p) | MembershipStep::RemoveVoter(p) => {
                vec![single(*p, ConfChangeType::RemoveNode)]
            }
            MembershipStep::Promote { learner, replaces } => {
                let mut changes = vec![single(*learner, ConfChangeType::AddNode)];
                if let Some(old) = replaces {
                    changes.push(single(*old, ConfChangeType::RemoveNode));
                }
                changes
            }
            MembershipStep::TransferLeader(to) => {
                self.block_lease(Instant::now());
                self.raw.transfer_leader(*to);
                return Some(step);
            }
        };
        let cc = ConfChangeV2 {
            changes,
            ..Default::default()
        };
        self.raw.propose_conf_change(Vec::new(), cc).ok()?;
        Some(step)
    }

    /// Whether this replica's applied configuration no longer has it.
    pub fn removed(&self) -> bool {
        let conf = self.raw.store().conf_state();
        let has_conf = !conf.voters.is_empty() || !conf.learners.is_empty();
        has_conf
            && !conf
                .voters
                .iter()
                .chain(&conf.learners)
                .chain(&conf.voters_outgoing)
                .any(|&p| p == self.id)
    }

    /// Takes the state a snapshot installer copied as applied at `index`.
    pub fn restore(&mut self, index: u64) -> Result<(), ReplicationError> {
        self.machine
            .restore(index)
            .map_err(|reason| ReplicationError::Apply {
                group: self.group,
                reason,
            })?;
        self.raw.mut_store().set_applied(index);
        self.restored = true;
        Ok(())
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

    /// Starts a linearizable read on the leader: at the commit index while
    /// the lease holds, else through Raft ReadIndex.
    pub fn read(&mut self, query: Vec<u8>, callback: Callback) {
        if !self.is_leader() {
            return callback(Err(self.not_leader()));
        }
        let now = Instant::now();
        if let Some(index) = self.lease_read_index(now) {
            self.reads.push(PendingRead {
                index: Some(index),
                issued: true,
                issued_at: now,
                context: 0,
                query,
                callback,
            });
            self.renew_lease(now);
            return;
        }
        let context = self.next_read_context;
        self.next_read_context += 1;
        let issued = self.committed_in_term();
        if issued {
            self.raw.read_index(context.to_be_bytes().to_vec());
        }
        self.reads.push(PendingRead {
            index: None,
            issued,
            issued_at: now,
            context,
            query,
            callback,
        });
    }

    fn committed_in_term(&mut self) -> bool {
        if !self.lease.committed_in_term {
            self.lease.committed_in_term = self.raw.raft.commit_to_current_term();
        }
        self.lease.committed_in_term
    }

    /// The index a read may be served at without a ReadIndex round, if the
    /// lease holds.
    fn lease_read_index(&mut self, now: Instant) -> Option<u64> {
        if self.raw.raft.lead_transferee.is_some() {
            self.block_lease(now);
            return None;
        }
        let until = self.lease.until?;
        if now >= until
            || self.lease.blocked_until.is_some_and(|b| now < b)
            || !self.committed_in_term()
        {
            return None;
        }
        Some(self.raw.raft.raft_log.committed)
    }

    /// Drops the lease and refuses one until four lease spans (over three
    /// election timeouts) from `now`: raft-rs abandons a transfer after
    /// one election timeout, and the forced election it may have started
    /// must be over by then.
    fn block_lease(&mut self, now: Instant) {
        self.lease.until = None;
        self.lease.renewal = None;
        self.lease.blocked_until = Some(now + self.lease.span * 4);
    }

    /// Extends a lease past its half-life with a ReadIndex of its own, so
    /// that steady reads never wait for one.
    fn renew_lease(&mut self, now: Instant) {
        if let Some((_, issued)) = self.lease.renewal {
            if now.saturating_duration_since(issued) < self.lease.span {
                return; // still in flight
            }
        }
        let Some(until) = self.lease.until else {
            return;
        };
        if until.saturating_duration_since(now) > self.lease.span / 2 {
            return;
        }
        let context = self.next_read_context;
        self.next_read_context += 1;
        self.raw.read_index(context.to_be_bytes().to_vec());
        self.lease.renewal = Some((context, now));
    }

    fn extend_lease(&mut self, issued_at: Instant) {
        if self.raw.raft.lead_transferee.is_some()
            || self.lease.blocked_until.is_some_and(|b| issued_at < b)
        {
            return;
        }
        let until = issued_at + self.lease.span;
        if self.lease.until.is_none_or(|u| u < until) {
            self.lease.until = Some(until);
        }
    }

    /// Issues the reads that waited for this leader's first commit.
    fn issue_deferred_reads(&mut self) {
        // Checked first: `commit_to_current_term` looks up a term in the
        // log store (RocksDB), and this runs for every group on every round
        // of the loop.
        if !self.reads.iter().any(|r| !r.issued) {
            return;
        }
        if !self.is_leader() || !self.committed_in_term() {
            return;
        }
        let now = Instant::now();
        for read in self.reads.iter_mut().filter(|r| !r.issued) {
            read.issued = true;
            read.issued_at = now;
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
            if let Some((renewal, issued_at)) = self.lease.renewal {
                if renewal == context {
                    self.lease.renewal = None;
                    self.extend_lease(issued_at);
                    continue;
                }
            }
            if let Some(read) = self.reads.iter_mut().find(|r| r.context == context) {
                read.index = Some(state.index);
                let issued_at = read.issued_at;
                self.extend_lease(issued_at);
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
        // A new role or leader starts without a lease (and keeps a block).
        self.lease = Lease {
            span: self.lease.span,
            blocked_until: self.lease.blocked_until,
            ..Lease::default()
        };
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
        if self.restored && !entries.is_empty() {
            // The copy holds the source's state as of some index past the
            // snapshot's, at most the commit index the leader had once the
            // copy ended; the first commit index heard after it is at
            // least that.
            self.restored = false;
            self.machine
                .replaying_through(self.raw.raft.raft_log.committed);
        }
        for entry in entries {
            // Already durable in the state machine (a restart replays from
            // where the log's state record stands). A configuration change
            // the record does not hold yet is applied again all the same
            // (see `NodeLoop::create_group`): the machine records only
            // that its index passed.
            let replayed = entry.index <= self.machine.applied_index();
            if replayed && !(is_conf_change(&entry) && entry.index > self.raw.store().conf_index())
            {
                continue;
            }
            if entry.get_entry_type() == EntryType::EntryNormal
                && entry.context.as_slice() == COMPACT_CONTEXT
            {
                if let Ok(bytes) = <[u8; 8]>::try_from(entry.data.as_slice()) {
                    // Truncated later, once what the log could replay is
                    // durable (a sync here would stall every group).
                    let target = u64::from_le_bytes(bytes).min(entry.index - 1);
                    self.compact_wanted = self.compact_wanted.max(Some(target));
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
                // A conf change at or before the stored configuration's
                // index is in it already: the machine's durable index lags
                // (data is synced in batches), so a restart replays such
                // entries, and raft-rs refuses to apply one twice (leaving
                // a joint configuration that is no longer joint).
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2
                    if entry.index <= self.raw.store().conf_index() =>
                {
                    self.machine.apply_noop(entry.index);
                    Ok(Vec::new())
                }
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    let applied = if entry.get_entry_type() == EntryType::EntryConfChange {
                        ConfChange::decode(entry.data.as_slice())
                            .map(|cc| self.raw.apply_conf_change(&cc))
                    } else {
                        ConfChangeV2::decode(entry.data.as_slice())
                            .map(|cc| self.raw.apply_conf_change(&cc))
                    };
                    let applied = applied
                        .map_err(|e| ReplicationError::Storage(format!("conf change: {e}")))?;
                    match applied {
                        Ok(conf) => {
                            effects.conf_state = Some((entry.index, conf));
                            if !replayed {
                                self.machine.apply_noop(entry.index);
                            }
                            self.lease.until = None; // the quorum changed
                        }
                        // Applied again at a restart and refused by raft-rs
                        // (entering a joint configuration it is in): the
                        // state record held it after all. The record moves
                        // past it, so the next restart does not try again.
                        Err(e) if replayed => {
                            tracing::warn!(
                                group = format!("{:x}", self.group),
                                index = entry.index,
                                "a configuration change applied again is refused ({e}); the configuration has it"
                            );
                            let conf = self.raw.raft.prs().conf().to_conf_state();
                            effects.conf_state = Some((entry.index, conf));
                        }
                        Err(e) => {
                            return Err(ReplicationError::Storage(format!(
                                "apply conf change: {e}"
                            )))
                        }
                    }
                    Ok(Vec::new())
                }
            };
            self.answer(entry.index, entry.term, result);
        }
        Ok(effects)
    }

    /// On the leader: proposes truncating the log up to what every replica
    /// has, once that is more than `threshold` entries or `threshold_bytes`
    /// of data. A replica that is down holds compaction back (it catches
    /// up from the log, or gets a snapshot once placement replaces it).
    pub fn maybe_propose_compaction(&mut self, threshold: u64, threshold_bytes: u64) {
        if !self.is_leader() || self.compact_pending || self.compact_wanted.is_some() {
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
        let big = self.raw.store().appended_bytes() >= threshold_bytes;
        if target < first + threshold && !(big && target >= first) {
            return;
        }
        self.propose_compaction(target);
    }

    /// Truncates the log toward the applied compaction as far as the state
    /// machine's effects are durable: the log must still replay the rest
    /// after a crash. After `COMPACT_WAITS_MAX` checks short of it (a
    /// machine nothing syncs), or for a machine that does not track its
    /// durable index, it syncs the machine first.
    pub fn compact_durable(&mut self) -> Result<(), ReplicationError> {
        let Some(wanted) = self.compact_wanted else {
            return Ok(());
        };
        let to = match self.machine.durable_index() {
            Some(durable) if durable >= wanted || self.compact_waits < COMPACT_WAITS_MAX => {
                durable.min(wanted)
            }
            _ => {
                // Still behind, or untracked: sync it here. Where the
                // machine records its durable index, that is what counts.
                self.machine.sync().map_err(ReplicationError::Storage)?;
                self.machine
                    .durable_index()
                    .map_or(wanted, |d| d.min(wanted))
            }
        };
        // Compacting to where the log already starts does nothing.
        self.raw
            .mut_store()
            .compact(to)
            .map_err(|e| ReplicationError::Storage(e.to_string()))?;
        if to >= wanted {
            self.compact_wanted = None;
            self.compact_waits = 0;
        } else {
            self.compact_waits += 1;
        }
        Ok(())
    }

    /// Proposes truncating the log up to `target` (a replica that needs
    /// entries before it then gets a snapshot).
    fn propose_compaction(&mut self, target: u64) {
        if self.compact_pending || target < self.raw.store().first_index_now() {
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

#[cfg(test)]
mod membership_tests {
    use super::*;
    use raft::eraftpb::ConfState;

    fn conf(voters: &[u64], learners: &[u64]) -> ConfState {
        ConfState {
            voters: voters.to_vec(),
            learners: learners.to_vec(),
            ..Default::default()
        }
    }

    fn set(peers: &[u64]) -> BTreeSet<u64> {
        peers.iter().copied().collect()
    }

    #[test]
    fn a_replaced_replica_is_added_as_learner_promoted_in_its_place_then_nothing() {
        let target = set(&[1, 2, 4]);
        let none_caught_up = |_| false;
        let all_caught_up = |_| true;
        // 3 is dead and out; 4 is where placement moved its replica.
        assert_eq!(
            next_membership_step(&conf(&[1, 2, 3], &[]), &target, 1, none_caught_up),
            Some(MembershipStep::AddLearner(4))
        );
        // While 4 catches up, nothing else changes (3 keeps its vote).
        assert_eq!(
            next_membership_step(&conf(&[1, 2, 3], &[4]), &target, 1, none_caught_up),
            None
        );
        assert_eq!(
            next_membership_step(&conf(&[1, 2, 3], &[4]), &target, 1, all_caught_up),
            Some(MembershipStep::Promote {
                learner: 4,
                replaces: Some(3)
            })
        );
        // A joint configuration is raft-rs's to leave.
        let joint = ConfState {
            voters: vec![1, 2, 4],
            voters_outgoing: vec![1, 2, 3],
            ..Default::default()
        };
        assert_eq!(
            next_membership_step(&joint, &target, 1, all_caught_up),
            None
        );
        assert_eq!(
            next_membership_step(&conf(&[1, 2, 4], &[]), &target, 1, all_caught_up),
            None
        );
    }

    #[test]
    fn the_leader_never_removes_itself_and_hands_over_instead() {
        let target = set(&[2, 3, 4]);
        // Leader 1 is the unwanted one: 4 is promoted without a removal.
        assert_eq!(
            next_membership_step(&conf(&[1, 2, 3], &[4]), &target, 1, |_| true),
            Some(MembershipStep::Promote {
                learner: 4,
                replaces: None
            })
        );
        // Then leadership moves to a caught-up wanted voter.
        assert_eq!(
            next_membership_step(&conf(&[1, 2, 3, 4], &[]), &target, 1, |p| p == 3),
            Some(MembershipStep::TransferLeader(3))
        );
        // The new leader removes 1.
        assert_eq!(
            next_membership_step(&conf(&[1, 2, 3, 4], &[]), &target, 3, |_| true),
            Some(MembershipStep::RemoveVoter(1))
        );
    }

    #[test]
    fn unwanted_learners_go_first_and_an_empty_target_changes_nothing() {
        assert_eq!(
            next_membership_step(&conf(&[1, 2, 3], &[5]), &set(&[1, 2, 3]), 1, |_| true),
            Some(MembershipStep::RemoveLearner(5))
        );
        assert_eq!(
            next_membership_step(&conf(&[1, 2, 3], &[]), &set(&[]), 1, |_| true),
            None
        );
        // A shrunken target (too few failure domains): the extra voter goes.
        assert_eq!(
            next_membership_step(&conf(&[1, 2, 3], &[]), &set(&[1, 2]), 1, |_| true),
            Some(MembershipStep::RemoveVoter(3))
        );
    }
}
