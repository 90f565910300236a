//! The node-wide replication loop: one thread drives every group this node
//! hosts.
//!
//! Each round it takes what arrived (Raft messages, proposals, reads),
//! ticks the groups when a tick is due, collects the `Ready` of every group,
//! writes all their new log entries and hard states as ONE synced round of
//! the node's segment log, and sends ONE batch of messages per destination
//! node. So the cost
//! of an fsync and of a network round trip is shared by every I/O in
//! flight, whatever the number of groups.

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use raft::eraftpb::{Message, MessageType};
use raft::RawNode;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::log_store::{self, LogStore, SharedLog};
use super::peer::{ApplyEffects, Callback, Peer};
use super::segment_log::Round;
use super::transport::{PeerResolver, RaftEnvelope, Transport};
use super::{
    ApplyResult, GroupId, InstallRequest, NodeId, PeerId, ReplicationError, SnapshotInstaller,
    StateMachine,
};

/// Most inbox items taken in one round, so a flood of proposals cannot
/// starve ticks and persistence.
const INBOX_BATCH_MAX: usize = 4096;
/// Inbox capacity: senders wait (backpressure) beyond this.
const INBOX_CAPACITY: usize = 65_536;

/// Timing of the Raft groups of a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node_id: NodeId,
    /// One Raft tick.
    pub tick_interval: Duration,
    /// Ticks without a heartbeat before a follower campaigns (randomized up
    /// to twice this by raft-rs).
    pub election_ticks: usize,
    /// Ticks between leader heartbeats.
    pub heartbeat_ticks: usize,
    /// A leader truncates its group's log once every replica has this many
    /// entries beyond the log's start, or this many bytes of entry data
    /// were appended. Each replica truncates once its applied data is
    /// durable (`Peer::compact_durable`). Shorter logs were measured not
    /// to help: the extra truncations cost what the smaller flushes save.
    pub compact_threshold_entries: u64,
    pub compact_threshold_bytes: u64,
    /// Ticks between checks for log truncation.
    pub compact_check_ticks: u64,
}

impl NodeConfig {
    /// 100 ms ticks, elections after 1-2 s of silence, heartbeats every 200 ms.
    pub fn new(node_id: NodeId) -> NodeConfig {
        NodeConfig {
            node_id,
            tick_interval: Duration::from_millis(100),
            election_ticks: 10,
            heartbeat_ticks: 2,
            compact_threshold_entries: 4096,
            compact_threshold_bytes: 4 << 20,
            compact_check_ticks: 10,
        }
    }
}

/// A snapshot of one group's replica, for status and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStatus {
    pub group: GroupId,
    pub peer: PeerId,
    pub is_leader: bool,
    pub leader: Option<PeerId>,
    pub term: u64,
    pub commit: u64,
    pub applied: u64,
    pub leader_changes: u64,
    /// The first index still in this replica's log.
    pub first_index: u64,
    /// The last index in this replica's log.
    pub last_index: u64,
    /// How far each replica (this one included) has the log, as the
    /// leader knows it; empty on a follower.
    pub progress: Vec<ReplicaProgress>,
    /// The group's configuration as this replica last applied it.
    pub voters: Vec<PeerId>,
    pub learners: Vec<PeerId>,
    /// The applied configuration no longer holds this replica.
    pub removed: bool,
    /// A snapshot's state is being copied to this replica.
    pub installing: bool,
}

/// One voter of a group, as its leader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaProgress {
    pub peer: PeerId,
    /// Highest log index known to be on that replica.
    pub matched: u64,
    /// The leader streams entries to it (raft-rs `Replicate` state), as
    /// opposed to probing for where its log ends or sending a snapshot.
    pub replicating: bool,
    /// A learner: it receives the log but does not vote (yet).
    pub learner: bool,
}

enum Command {
    Messages(Vec<RaftEnvelope>),
    Propose {
        group: GroupId,
        data: Vec<u8>,
        /// Past this, the caller has stopped waiting and may retry: the
        /// command is not proposed (see `RaftNodeHandle::propose_before`).
        deadline: Option<Instant>,
        callback: Callback,
    },
    Read {
        group: GroupId,
        query: Vec<u8>,
        callback: Callback,
    },
    CreateGroup {
        group: GroupId,
        peer: PeerId,
        voters: Vec<PeerId>,
        machine: Box<dyn StateMachine>,
        done: Sender<Result<(), ReplicationError>>,
    },
    Campaign(GroupId),
    Status(Sender<Vec<GroupStatus>>),
    /// This node's replica of a group and the index it applied.
    Applied(GroupId, Sender<Option<(PeerId, u64)>>),
    /// Leaders move their groups one step toward these replicas.
    Reconfigure(Vec<(GroupId, Vec<PeerId>)>),
    SetInstaller(Arc<dyn SnapshotInstaller>),
    /// A snapshot's state was copied (or not): step the snapshot.
    Installed {
        group: GroupId,
        message: Box<Message>,
        result: Result<(), String>,
    },
    /// Drops a replica that left its group, with its log.
    DestroyGroup {
        group: GroupId,
        done: Sender<Result<(), ReplicationError>>,
    },
    Stop,
}

/// The way into a running node loop; cheap to clone.
#[derive(Clone)]
pub struct RaftNodeHandle {
    node_id: NodeId,
    inbox: Sender<Command>,
    log: SharedLog,
}

/// A running node loop; stops (and joins its thread) when dropped.
pub struct RaftNode {
    handle: RaftNodeHandle,
    thread: Option<JoinHandle<()>>,
}

impl RaftNode {
    /// Starts the loop of node `config.node_id` on its own thread.
    /// `log` is the node's Raft log (see [`log_store::open_node_log`]).
    pub fn spawn(
        config: NodeConfig,
        log: SharedLog,
        transport: Arc<dyn Transport>,
        resolver: Arc<dyn PeerResolver>,
    ) -> RaftNode {
        let (tx, rx) = crossbeam_channel::bounded(INBOX_CAPACITY);
        let handle = RaftNodeHandle {
            node_id: config.node_id,
            inbox: tx.clone(),
            log: log.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("raft-node-{}", config.node_id))
            .spawn(move || {
                let mut node_loop = NodeLoop {
                    config,
                    log,
                    transport,
                    resolver,
                    peers: BTreeMap::new(),
                    logger: slog::Logger::root(slog::Discard, slog::o!()),
                    installer: None,
                    inbox: tx,
                    started: Instant::now(),
                };
                node_loop.run(rx);
            })
            .expect("spawning the raft loop thread");
        RaftNode {
            handle,
            thread: Some(thread),
        }
    }

    pub fn handle(&self) -> RaftNodeHandle {
        self.handle.clone()
    }

    /// Stops the loop and waits for it; pending requests fail with `Stopped`.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.handle.inbox.send(Command::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for RaftNode {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn reply_channel() -> (Callback, Receiver<Result<ApplyResult, ReplicationError>>) {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let callback: Callback = Box::new(move |result| {
        let _ = tx.send(result);
    });
    (callback, rx)
}

impl RaftNodeHandle {
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    fn send(&self, command: Command) -> Result<(), ReplicationError> {
        self.inbox
            .send(command)
            .map_err(|_| ReplicationError::Stopped)
    }

    /// Delivers messages that arrived from the network; false once the
    /// loop has stopped (a full inbox drops the batch and Raft resends).
    pub fn deliver(&self, batch: Vec<RaftEnvelope>) -> bool {
        !matches!(
            self.inbox.try_send(Command::Messages(batch)),
            Err(crossbeam_channel::TrySendError::Disconnected(_))
        )
    }

    /// Where snapshots' state is copied from (without one, a replica that
    /// needs a snapshot waits).
    pub fn set_snapshot_installer(
        &self,
        installer: Arc<dyn SnapshotInstaller>,
    ) -> Result<(), ReplicationError> {
        self.send(Command::SetInstaller(installer))
    }

    /// Asks the leaders of these groups to move one step toward the given
    /// replicas (a no-op for groups this node does not lead).
    pub fn reconfigure(
        &self,
        targets: Vec<(GroupId, Vec<PeerId>)>,
    ) -> Result<(), ReplicationError> {
        self.send(Command::Reconfigure(targets))
    }

    /// The groups this node's Raft log holds a replica of, with their
    /// configuration as last saved (whether or not the loop hosts them).
    pub fn stored_groups(
        &self,
    ) -> Result<Vec<(GroupId, raft::eraftpb::ConfState)>, ReplicationError> {
        log_store::stored_groups(&self.log).map_err(|e| ReplicationError::Storage(e.to_string()))
    }

    /// Drops this node's replica of `group` and its Raft state; refused
    /// with [`ReplicationError::Installing`] while it copies a snapshot's
    /// state.
    pub fn destroy_group(&self, group: GroupId) -> Result<(), ReplicationError> {
        let (done, wait) = crossbeam_channel::bounded(1);
        self.send(Command::DestroyGroup { group, done })?;
        wait.recv().map_err(|_| ReplicationError::Stopped)?
    }

    /// Hosts a replica of `group` with id `peer`; `voters` is the group's
    /// first configuration, the same on every initial replica. Empty
    /// `voters` makes a replica that waits for a snapshot from the group's
    /// leader (a replica added to a running group).
    pub fn create_group(
        &self,
        group: GroupId,
        peer: PeerId,
        voters: Vec<PeerId>,
        machine: Box<dyn StateMachine>,
    ) -> Result<(), ReplicationError> {
        let (done, wait) = crossbeam_channel::bounded(1);
        self.send(Command::CreateGroup {
            group,
            peer,
            voters,
            machine,
            done,
        })?;
        wait.recv().map_err(|_| ReplicationError::Stopped)?
    }

    /// Proposes `data` to `group`; `callback` gets the applied result.
    pub fn propose_with(&self, group: GroupId, data: Vec<u8>, callback: Callback) {
        self.send_proposal(group, data, None, callback);
    }

    /// Proposes `data` to `group` unless the loop takes the command at or
    /// after `deadline`: then `callback` gets [`ReplicationError::Expired`]
    /// and nothing enters the log. A caller that gives up at `deadline`
    /// and retries can so never have its first attempt committed after
    /// the retry was answered, and a later write to the same blocks with
    /// it (an acknowledged write overwritten by an old one). A proposal
    /// taken in time is ordered by the log before anything proposed after
    /// the deadline, here or under a new leader.
    pub fn propose_before(
        &self,
        group: GroupId,
        data: Vec<u8>,
        deadline: Instant,
        callback: Callback,
    ) {
        self.send_proposal(group, data, Some(deadline), callback);
    }

    fn send_proposal(
        &self,
        group: GroupId,
        data: Vec<u8>,
        deadline: Option<Instant>,
        callback: Callback,
    ) {
        if let Err(Command::Propose { callback, .. }) = self
            .inbox
            .send(Command::Propose {
                group,
                data,
                deadline,
                callback,
            })
            .map_err(|e| e.0)
        {
            callback(Err(ReplicationError::Stopped));
        }
    }

    /// Proposes and waits up to `timeout` for the result; not proposed at
    /// all once `timeout` has passed ([`RaftNodeHandle::propose_before`]).
    pub fn propose(
        &self,
        group: GroupId,
        data: Vec<u8>,
        timeout: Duration,
    ) -> Result<ApplyResult, ReplicationError> {
        let (callback, rx) = reply_channel();
        self.propose_before(group, data, Instant::now() + timeout, callback);
        rx.recv_timeout(timeout)
            .unwrap_or(Err(ReplicationError::Dropped { group }))
    }

    /// Proposes and awaits the result for up to `timeout`, for async
    /// callers; not proposed at all once `timeout` has passed.
    pub async fn propose_async(
        &self,
        group: GroupId,
        data: Vec<u8>,
        timeout: Duration,
    ) -> Result<ApplyResult, ReplicationError> {
        self.propose_async_before(group, data, Instant::now() + timeout, timeout)
            .await
    }

    /// [`RaftNodeHandle::propose_before`] `deadline`, awaiting the result
    /// for up to `timeout` (at least until `deadline`).
    pub async fn propose_async_before(
        &self,
        group: GroupId,
        data: Vec<u8>,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<ApplyResult, ReplicationError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.propose_before(
            group,
            data,
            deadline,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        let timeout = timeout.max(deadline.saturating_duration_since(Instant::now()));
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ReplicationError::Stopped),
            Err(_) => Err(ReplicationError::Dropped { group }),
        }
    }

    /// A linearizable read, awaited, for async callers.
    pub async fn read_async(
        &self,
        group: GroupId,
        query: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, ReplicationError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let callback: Callback = Box::new(move |r| {
            let _ = tx.send(r);
        });
        self.send(Command::Read {
            group,
            query,
            callback,
        })?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ReplicationError::Stopped),
            Err(_) => Err(ReplicationError::Dropped { group }),
        }
    }

    /// A linearizable read, answered by the state machine once the leader
    /// confirmed it is current.
    pub fn read(
        &self,
        group: GroupId,
        query: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, ReplicationError> {
        let (callback, rx) = reply_channel();
        self.send(Command::Read {
            group,
            query,
            callback,
        })?;
        rx.recv_timeout(timeout)
            .unwrap_or(Err(ReplicationError::Dropped { group }))
    }

    /// Asks this replica to start an election now.
    pub fn campaign(&self, group: GroupId) {
        let _ = self.send(Command::Campaign(group));
    }

    /// The state of every group replica on this node.
    pub fn status(&self) -> Result<Vec<GroupStatus>, ReplicationError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.send(Command::Status(tx))?;
        rx.recv().map_err(|_| ReplicationError::Stopped)
    }

    /// This node's replica of `group` (its peer id) and the index it
    /// applied, `None` if it hosts none; one lookup, not a status of every
    /// group. From async code, off the runtime's threads.
    pub async fn applied_async(
        &self,
        group: GroupId,
    ) -> Result<Option<(PeerId, u64)>, ReplicationError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let (tx, rx) = crossbeam_channel::bounded(1);
            this.send(Command::Applied(group, tx))?;
            rx.recv().map_err(|_| ReplicationError::Stopped)
        })
        .await
        .map_err(|_| ReplicationError::Stopped)?
    }

    /// [`RaftNodeHandle::status`] from async code (off the runtime's
    /// threads while it waits for the loop).
    pub async fn status_async(&self) -> Result<Vec<GroupStatus>, ReplicationError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.status())
            .await
            .map_err(|_| ReplicationError::Stopped)?
    }
}

struct NodeLoop {
    config: NodeConfig,
    log: SharedLog,
    transport: Arc<dyn Transport>,
    resolver: Arc<dyn PeerResolver>,
    peers: BTreeMap<GroupId, Peer>,
    logger: slog::Logger,
    installer: Option<Arc<dyn SnapshotInstaller>>,
    /// This loop's own inbox, for installers' answers.
    inbox: Sender<Command>,
    started: Instant,
}

impl NodeLoop {
    fn run(&mut self, inbox: Receiver<Command>) {
        let mut next_tick = Instant::now() + self.config.tick_interval;
        let mut ticks: u64 = 0;
        'rounds: loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            let first = match inbox.recv_timeout(wait) {
                Ok(command) => Some(command),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut taken = 0;
            let mut command = first;
            while let Some(c) = command {
                if matches!(c, Command::Stop) {
                    break 'rounds;
                }
                self.handle(c);
                taken += 1;
                command = if taken < INBOX_BATCH_MAX {
                    inbox.try_recv().ok()
                } else {
                    None
                };
            }
            if Instant::now() >= next_tick {
                ticks += 1;
                let check_compaction = ticks.is_multiple_of(self.config.compact_check_ticks.max(1));
                for peer in self.peers.values_mut() {
                    peer.raw.tick();
                    if check_compaction && peer.installing.is_none() {
                        if let Err(e) = peer.compact_durable() {
                            eprintln!(
                                "hpchain raft loop of node {}: group {:x}: {e}; stopping",
                                self.config.node_id, peer.group
                            );
                            break 'rounds;
                        }
                        peer.maybe_propose_compaction(
                            self.config.compact_threshold_entries,
                            self.config.compact_threshold_bytes,
                        );
                    }
                }
                // Never two ticks closer than the interval (no catching up
                // after a late one): a follower's election timeout then
                // lasts at least its ticks in real time, which leader
                // leases count on (peer::Lease).
                next_tick = Instant::now() + self.config.tick_interval;
            }
            if let Err(e) = self.process_ready() {
                eprintln!(
                    "hpchain raft loop of node {}: {e}; stopping",
                    self.config.node_id
                );
                break;
            }
        }
        for peer in self.peers.values_mut() {
            peer.fail_all(ReplicationError::Stopped);
        }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Messages(batch) => {
                for envelope in batch {
                    if envelope.message.get_msg_type() == MessageType::MsgSnapshot {
                        self.on_snapshot(envelope);
                        continue;
                    }
                    if self.votes_withheld(&envelope.message) {
                        continue;
                    }
                    if let Some(peer) = self.peers.get_mut(&envelope.group) {
                        // While a copy replaces its state, the replica hears
                        // nothing: the leader resends what matters.
                        if peer.installing.is_none() {
                            // Stale or misrouted messages are Raft's to ignore.
                            let _ = peer.raw.step(envelope.message);
                        }
                    }
                }
            }
            Command::Reconfigure(targets) => {
                for (group, target) in targets {
                    if let Some(peer) = self.peers.get_mut(&group) {
                        if let Some(step) = peer.reconfigure(&target) {
                            tracing::info!(
                                group = format!("{group:x}"),
                                ?step,
                                "membership change"
                            );
                        }
                    }
                }
            }
            Command::SetInstaller(installer) => self.installer = Some(installer),
            Command::Installed {
                group,
                message,
                result,
            } => {
                if let Some(peer) = self.peers.get_mut(&group) {
                    let index = peer.installing.take();
                    match (result, index) {
                        (Ok(()), Some(index)) => match peer.restore(index) {
                            Ok(()) => {
                                let _ = peer.raw.step(*message);
                            }
                            Err(e) => tracing::error!("group {group:x}: snapshot {index}: {e}"),
                        },
                        (Err(e), _) => tracing::warn!(
                            "group {group:x}: copying a snapshot's state failed: {e}; the leader sends it again"
                        ),
                        (Ok(()), None) => {}
                    }
                }
            }
            Command::DestroyGroup { group, done } => {
                let result = match self.peers.remove(&group) {
                    // The installer writes the replica's objects and
                    // applied index off this thread: dropped now, the copy
                    // would land after the drop, under a replica created
                    // here later.
                    Some(peer) if peer.installing.is_some() => {
                        self.peers.insert(group, peer);
                        Err(ReplicationError::Installing(group))
                    }
                    Some(mut peer) => {
                        peer.fail_all(ReplicationError::GroupNotFound(group));
                        LogStore::destroy(&self.log, group)
                            .map_err(|e| ReplicationError::Storage(e.to_string()))
                    }
                    None => Ok(()),
                };
                let _ = done.send(result);
            }
            Command::Propose {
                group,
                data,
                deadline,
                callback,
            } => match self.peers.get_mut(&group) {
                _ if deadline.is_some_and(|d| Instant::now() >= d) => {
                    callback(Err(ReplicationError::Expired { group }))
                }
                Some(peer) => peer.propose(data, callback),
                None => callback(Err(ReplicationError::GroupNotFound(group))),
            },
            Command::Read {
                group,
                query,
                callback,
            } => match self.peers.get_mut(&group) {
                Some(peer) => peer.read(query, callback),
                None => callback(Err(ReplicationError::GroupNotFound(group))),
            },
            Command::CreateGroup {
                group,
                peer,
                voters,
                machine,
                done,
            } => {
                let _ = done.send(self.create_group(group, peer, voters, machine));
            }
            Command::Campaign(group) => {
                if let Some(peer) = self.peers.get_mut(&group) {
                    let _ = peer.raw.campaign();
                }
            }
            Command::Applied(group, reply) => {
                let _ = reply.send(self.peers.get(&group).map(|p| (p.id, p.applied_index())));
            }
            Command::Status(reply) => {
                let status = self
                    .peers
                    .values()
                    .map(|p| GroupStatus {
                        group: p.group,
                        peer: p.id,
                        is_leader: p.is_leader(),
                        leader: p.leader,
                        term: p.raw.raft.term,
                        commit: p.raw.raft.raft_log.committed,
                        applied: p.applied_index(),
                        leader_changes: p.leader_changes,
                        first_index: p.raw.store().first_index_now(),
                        last_index: p.raw.raft.raft_log.last_index(),
                        progress: if p.is_leader() {
                            let learners = &p.raw.store().conf_state().learners;
                            p.raw
                                .raft
                                .prs()
                                .iter()
                                .map(|(id, pr)| ReplicaProgress {
                                    peer: *id,
                                    matched: pr.matched,
                                    replicating: pr.state == raft::ProgressState::Replicate,
                                    learner: learners.contains(id),
                                })
                                .collect()
                        } else {
                            Vec::new()
                        },
                        voters: p.raw.store().conf_state().voters.clone(),
                        learners: p.raw.store().conf_state().learners.clone(),
                        removed: p.removed(),
                        installing: p.installing.is_some(),
                    })
                    .collect();
                let _ = reply.send(status);
            }
            Command::Stop => unreachable!("handled by the loop"),
        }
    }

    /// A snapshot for one of this node's replicas: its state is copied
    /// first (by the installer, off this thread), and the snapshot stepped
    /// into Raft only once that is done. Snapshots the replica does not
    /// need, or that arrive while a copy runs, go to Raft (which ignores
    /// them) or nowhere.
    fn on_snapshot(&mut self, envelope: RaftEnvelope) {
        let group = envelope.group;
        let Some(peer) = self.peers.get_mut(&group) else {
            return;
        };
        let index = envelope.message.get_snapshot().get_metadata().index;
        if index <= peer.raw.raft.raft_log.committed {
            let _ = peer.raw.step(envelope.message);
            return;
        }
        if peer.installing.is_some() {
            return;
        }
        let Some(installer) = self.installer.clone() else {
            tracing::warn!(
                "group {group:x}: a snapshot arrived, but this node has no installer to copy state"
            );
            return;
        };
        let request = InstallRequest {
            group,
            peer: peer.id,
            from: envelope.message.from,
            index,
        };
        let inbox = self.inbox.clone();
        let message = Box::new(envelope.message);
        let started = installer.install(
            request,
            Box::new(move |result| {
                let _ = inbox.send(Command::Installed {
                    group,
                    message,
                    result,
                });
            }),
        );
        // Set before the loop reads its inbox again, so before it can
        // take the copy's `Installed`.
        if started {
            peer.installing = Some(index);
        }
    }

    fn create_group(
        &mut self,
        group: GroupId,
        peer_id: PeerId,
        voters: Vec<PeerId>,
        machine: Box<dyn StateMachine>,
    ) -> Result<(), ReplicationError> {
        if self.peers.contains_key(&group) {
            return Ok(());
        }
        let mut store = LogStore::open(self.log.clone(), group)
            .map_err(|e| ReplicationError::Storage(e.to_string()))?;
        if !store.is_initialized() && !voters.is_empty() {
            store
                .bootstrap(&voters)
                .map_err(|e| ReplicationError::Storage(e.to_string()))?;
        }
        let first_applied = store.first_index_now() - 1;
        let mut applied = machine
            .applied_index()
            .min(store.hard_state().commit)
            .max(first_applied);
        if store.conf_index() == log_store::CONF_INDEX_UNKNOWN {
            let conf = store.conf_state().clone();
            store.set_conf_state(applied, conf);
        }
        // The machine may have made a configuration change's index durable
        // (its data syncs run off this loop) before a crash lost the round
        // with the state record holding that configuration. The log still
        // has the entry (truncations come in later rounds): raft-rs hands
        // it over again from just before it, and `Peer::apply` applies it.
        if let Some(index) = store
            .first_conf_change(store.conf_index().max(first_applied), applied)
            .map_err(|e| ReplicationError::Storage(format!("group {group}: {e}")))?
        {
            tracing::warn!(
                group = format!("{group:x}"),
                index,
                "a configuration change the Raft log's state record lacks is applied again"
            );
            applied = index - 1;
        }
        store.set_applied(machine.applied_index().max(first_applied));
        let mut machine = machine;
        machine.replaying_through(store.last_index_now());
        let config = raft::Config {
            id: peer_id,
            election_tick: self.config.election_ticks,
            heartbeat_tick: self.config.heartbeat_ticks,
            applied,
            max_size_per_msg: 1 << 20,
            // A restart may hand over a whole kept log again (see above):
            // in pieces, not in one Ready.
            max_committed_size_per_ready: 16 << 20,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        let raw = RawNode::new(&config, store, &self.logger)
            .map_err(|e| ReplicationError::Storage(format!("group {group}: {e}")))?;
        self.peers.insert(
            group,
            Peer::new(group, peer_id, raw, machine, self.lease_span()),
        );
        Ok(())
    }

    /// Whether `message` asks for a vote this node does not give yet: for
    /// an election timeout after it starts. Before a crash it may have
    /// acknowledged a leader's heartbeat, and raft-rs forgets the leader on
    /// restart, so it would vote at once, inside that leader's lease.
    fn votes_withheld(&self, message: &raft::eraftpb::Message) -> bool {
        matches!(
            message.get_msg_type(),
            MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
        ) && self.started.elapsed() < self.config.tick_interval * self.config.election_ticks as u32
    }

    /// How long a leader's confirmed lease lasts (see `peer::Lease`): two
    /// ticks short of the election timeout its followers keep.
    fn lease_span(&self) -> Duration {
        self.config.tick_interval * (self.config.election_ticks.saturating_sub(2) as u32)
    }

    fn process_ready(&mut self) -> Result<(), ReplicationError> {
        let mut outbox: HashMap<NodeId, Vec<RaftEnvelope>> = HashMap::new();
        let mut round = Round::default();
        let mut readies = Vec::new();
        for (&group, peer) in self.peers.iter_mut() {
            if peer.installing.is_some() {
                // Its state machine is being replaced: nothing may apply
                // (an old entry landing between copied objects would
                // corrupt them) and nothing needs saying until it is done.
                continue;
            }
            if peer.commit_dirty {
                let commit = peer.raw.raft.raft_log.committed;
                peer.raw.mut_store().stage_commit(commit);
                peer.commit_dirty = false;
            }
            if !peer.raw.has_ready() {
                continue;
            }
            let mut ready = peer.raw.ready();
            if let Some(ss) = ready.ss() {
                peer.on_soft_state(ss.leader_id, ss.raft_state);
            }
            let messages = ready.take_messages();
            let snapshots_to: Vec<PeerId> = messages
                .iter()
                .filter(|m| m.get_msg_type() == MessageType::MsgSnapshot)
                .map(|m| m.to)
                .collect();
            route(&*self.resolver, &mut outbox, group, messages);
            // A snapshot message carries no state (see LogStore::snapshot),
            // so it is "sent" at once: the leader probes again, and resends
            // it until the replica has copied the state and stepped it.
            for to in snapshots_to {
                peer.raw.report_snapshot(to, raft::SnapshotStatus::Finish);
            }
            if !ready.snapshot().is_empty() {
                let meta = ready.snapshot().get_metadata().clone();
                peer.raw.mut_store().apply_snapshot(&mut round, &meta);
            }
            let effects = peer.apply(ready.take_committed_entries())?;
            apply_effects(peer, effects, false)?;
            if !ready.read_states().is_empty() {
                peer.on_read_states(ready.take_read_states());
            }
            let hs = ready.hs().cloned();
            peer.raw
                .mut_store()
                .stage(&mut round, ready.entries(), hs.as_ref());
            readies.push((group, ready));
        }
        // Every group's state record (and truncation) after its entries,
        // holding what this round changed last.
        for peer in self.peers.values_mut() {
            peer.raw.mut_store().finish_round(&mut round);
        }
        // Messages a leader sends before its own write are safe (Raft
        // paper, section 10.2.1): overlap the network with the fsync.
        self.flush(&mut outbox);
        if !round.is_empty() {
            log_store::lock(&self.log)
                .write(round)
                .map_err(|e| ReplicationError::Storage(e.to_string()))?;
        }
        for (group, ready) in readies {
            let peer = self.peers.get_mut(&group).expect("peer of a ready");
            peer.raw.mut_store().commit_staged();
            let mut ready = ready;
            route(
                &*self.resolver,
                &mut outbox,
                group,
                ready.take_persisted_messages(),
            );
            let mut light = peer.raw.advance(ready);
            if light.commit_index().is_some() {
                peer.commit_dirty = true;
            }
            route(&*self.resolver, &mut outbox, group, light.take_messages());
            let effects = peer.apply(light.take_committed_entries())?;
            apply_effects(peer, effects, true)?;
            peer.raw.advance_apply();
            peer.serve_reads();
        }
        for peer in self.peers.values_mut() {
            peer.serve_reads();
        }
        self.flush(&mut outbox);
        Ok(())
    }

    fn flush(&self, outbox: &mut HashMap<NodeId, Vec<RaftEnvelope>>) {
        for (node, batch) in outbox.drain() {
            if !batch.is_empty() {
                self.transport.send(node, batch);
            }
        }
    }
}

fn route(
    resolver: &dyn PeerResolver,
    outbox: &mut HashMap<NodeId, Vec<RaftEnvelope>>,
    group: GroupId,
    messages: Vec<Message>,
) {
    for message in messages {
        if let Some(node) = resolver.node_of(group, message.to) {
            outbox
                .entry(node)
                .or_default()
                .push(RaftEnvelope { group, message });
        }
    }
}

/// Records what applying entries asked for: a new configuration, saved
/// with the group's state record in the round being built, or at once
/// (synced) when that round is already written (`save_now`).
fn apply_effects(
    peer: &mut Peer,
    effects: ApplyEffects,
    save_now: bool,
) -> Result<(), ReplicationError> {
    let applied = peer.applied_index();
    let store = peer.raw.mut_store();
    store.set_applied(applied);
    if let Some((index, cs)) = effects.conf_state {
        store.set_conf_state(index, cs);
        if save_now {
            store
                .save_now()
                .map_err(|e| ReplicationError::Storage(e.to_string()))?;
        }
    }
    Ok(())
}
