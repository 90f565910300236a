//! In-process clusters of node loops over a simulated network that can cut
//! links: elections, replication, partitions, restarts. Real RocksDB, real
//! raft-rs; only the network is simulated (the gRPC transport has its own
//! tests with real processes).

use super::log_store::{lock, open_node_log, LogStore, SharedLog};
use super::segment_log::Round;
use rocksdb::DB;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::node_loop::{NodeConfig, RaftNode, RaftNodeHandle};
use super::test_kv::{Durability, RocksKv};
use super::transport::{RaftEnvelope, Transport};
use super::{GroupId, NodeId, ReplicationError};

#[derive(Default)]
struct SimNetwork {
    nodes: Mutex<HashMap<NodeId, RaftNodeHandle>>,
    cut: Mutex<HashSet<(NodeId, NodeId)>>,
}

struct SimTransport {
    me: NodeId,
    net: Arc<SimNetwork>,
}

impl Transport for SimTransport {
    fn send(&self, to: NodeId, batch: Vec<RaftEnvelope>) {
        if self.net.cut.lock().unwrap().contains(&(self.me, to)) {
            return;
        }
        if let Some(node) = self.net.nodes.lock().unwrap().get(&to) {
            let _ = node.deliver(batch);
        }
    }
}

const TIMEOUT: Duration = Duration::from_secs(15);

struct Cluster {
    dir: tempfile::TempDir,
    net: Arc<SimNetwork>,
    nodes: HashMap<NodeId, (RaftNode, Arc<DB>)>,
    /// Each node's Raft log, to change it behind a stopped node's back.
    logs: HashMap<NodeId, SharedLog>,
    voters: Vec<NodeId>,
    groups: Vec<GroupId>,
    /// Set for machines that tell their durable index (one group).
    durability: HashMap<NodeId, Arc<Durability>>,
}

impl Cluster {
    fn new(voters: &[NodeId], groups: &[GroupId]) -> Cluster {
        Cluster::started(voters, groups, HashMap::new())
    }

    /// One group whose machines sync in batches of their own, as the test
    /// says (see `Durability`).
    fn with_durability(voters: &[NodeId]) -> (Cluster, Vec<Arc<Durability>>) {
        let all: Vec<Arc<Durability>> = voters.iter().map(|_| Arc::default()).collect();
        let by_node = voters.iter().copied().zip(all.iter().cloned()).collect();
        (Cluster::started(voters, &[1], by_node), all)
    }

    fn started(
        voters: &[NodeId],
        groups: &[GroupId],
        durability: HashMap<NodeId, Arc<Durability>>,
    ) -> Cluster {
        let mut cluster = Cluster {
            dir: tempfile::tempdir().unwrap(),
            net: Arc::new(SimNetwork::default()),
            nodes: HashMap::new(),
            logs: HashMap::new(),
            voters: voters.to_vec(),
            groups: groups.to_vec(),
            durability,
        };
        for &id in voters {
            cluster.start(id);
        }
        cluster
    }

    fn start(&mut self, id: NodeId) {
        let dir = self.dir.path().join(format!("node{id}"));
        let db = Arc::new(DB::open_default(&dir).unwrap());
        let mut config = NodeConfig::new(id);
        config.tick_interval = Duration::from_millis(20);
        config.compact_threshold_entries = 100;
        config.compact_check_ticks = 5;
        let transport = Arc::new(SimTransport {
            me: id,
            net: self.net.clone(),
        });
        // The stopped node's log is closed before it is opened again.
        self.logs.remove(&id);
        let log = open_node_log(&dir.join("raft-log"), &db).unwrap();
        self.logs.insert(id, log.clone());
        let node = RaftNode::spawn(
            config,
            log,
            transport,
            Arc::new(|_g: GroupId, peer: u64| Some(peer)),
        );
        for &group in &self.groups {
            let mut machine = RocksKv::open(db.clone(), group);
            if let Some(d) = self.durability.get(&id) {
                machine = machine.with_durability(d.clone());
            }
            let machine = Box::new(machine);
            node.handle()
                .create_group(group, id, self.voters.clone(), machine)
                .unwrap();
        }
        self.net.nodes.lock().unwrap().insert(id, node.handle());
        self.nodes.insert(id, (node, db));
    }

    /// Stops a node as a crash would: its loop ends, in-flight work is lost.
    fn stop(&mut self, id: NodeId) {
        self.net.nodes.lock().unwrap().remove(&id);
        let (node, _db) = self.nodes.remove(&id).unwrap();
        node.stop();
    }

    fn isolate(&self, id: NodeId) {
        let mut cut = self.net.cut.lock().unwrap();
        for &other in &self.voters {
            if other != id {
                cut.insert((id, other));
                cut.insert((other, id));
            }
        }
    }

    fn heal(&self) {
        self.net.cut.lock().unwrap().clear();
    }

    fn handle(&self, id: NodeId) -> RaftNodeHandle {
        self.nodes[&id].0.handle()
    }

    /// The node whose replica leads `group`, waiting for an election.
    fn leader(&self, group: GroupId) -> NodeId {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            for (&id, (node, _)) in &self.nodes {
                let status = node.handle().status().unwrap();
                if status.iter().any(|s| s.group == group && s.is_leader) {
                    return id;
                }
            }
            assert!(
                Instant::now() < deadline,
                "group {group}: no leader after {TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A leader of `group` other than `old`, waiting for its election.
    fn leader_other_than(&self, group: GroupId, old: NodeId) -> NodeId {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let l = self.leader(group);
            if l != old {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "group {group}: {old} still leads"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Writes through whichever node leads, retrying on leader changes, as
    /// the volume client does.
    fn put(&self, group: GroupId, key: &str, value: &str) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let leader = self.leader(group);
            match self.handle(leader).propose(
                group,
                format!("{key}={value}").into_bytes(),
                Duration::from_secs(2),
            ) {
                Ok(_) => return,
                Err(
                    ReplicationError::NotLeader { .. }
                    | ReplicationError::Dropped { .. }
                    | ReplicationError::Expired { .. },
                ) => {}
                Err(e) => panic!("put {key}: {e}"),
            }
            assert!(
                Instant::now() < deadline,
                "put {key}: no success after {TIMEOUT:?}"
            );
        }
    }

    fn get(&self, group: GroupId, key: &str) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let leader = self.leader(group);
            match self
                .handle(leader)
                .read(group, key.as_bytes().to_vec(), Duration::from_secs(2))
            {
                Ok(v) => return String::from_utf8(v).unwrap(),
                Err(
                    ReplicationError::NotLeader { .. }
                    | ReplicationError::Dropped { .. }
                    | ReplicationError::Expired { .. },
                ) => {}
                Err(e) => panic!("get {key}: {e}"),
            }
            assert!(
                Instant::now() < deadline,
                "get {key}: no answer after {TIMEOUT:?}"
            );
        }
    }

    /// What node `id` has applied for `key`, read locally (not linearizable).
    fn local(&self, id: NodeId, group: GroupId, key: &str) -> String {
        let db = &self.nodes[&id].1;
        String::from_utf8(
            db.get(RocksKv::data_key(group, key.as_bytes()))
                .unwrap()
                .unwrap_or_default(),
        )
        .unwrap()
    }

    fn wait_local(&self, id: NodeId, group: GroupId, key: &str, value: &str) {
        let deadline = Instant::now() + TIMEOUT;
        while self.local(id, group, key) != value {
            assert!(
                Instant::now() < deadline,
                "node {id} never applied {key}={value}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn three_nodes_replicate_every_group_to_every_replica() {
    let groups: Vec<GroupId> = (1..=8).collect();
    let cluster = Cluster::new(&[1, 2, 3], &groups);
    for &g in &groups {
        for i in 0..20 {
            cluster.put(g, &format!("k{i}"), &format!("g{g}v{i}"));
        }
    }
    for &g in &groups {
        assert_eq!(cluster.get(g, "k19"), format!("g{g}v19"));
        for node in [1, 2, 3] {
            cluster.wait_local(node, g, "k7", &format!("g{g}v7"));
        }
    }
}

#[test]
fn acknowledged_writes_survive_the_leaders_death() {
    let mut cluster = Cluster::new(&[1, 2, 3], &[1]);
    for i in 0..50 {
        cluster.put(1, &format!("k{i}"), &format!("v{i}"));
    }
    let old = cluster.leader(1);
    let started = Instant::now();
    cluster.stop(old);
    let new = cluster.leader(1);
    assert_ne!(new, old);
    let failover = started.elapsed();
    assert!(
        failover < Duration::from_secs(5),
        "failover took {failover:?}"
    );
    for i in 0..50 {
        assert_eq!(
            cluster.get(1, &format!("k{i}")),
            format!("v{i}"),
            "acknowledged write k{i} lost"
        );
    }
    cluster.put(1, "after", "failover");
    assert_eq!(cluster.get(1, "after"), "failover");
}

#[test]
fn an_isolated_leader_cannot_commit_and_the_majority_moves_on() {
    let cluster = Cluster::new(&[1, 2, 3], &[1]);
    cluster.put(1, "x", "1");
    let old = cluster.leader(1);
    cluster.isolate(old);
    // The isolated leader accepts the proposal but can never commit it.
    let stranded =
        cluster
            .handle(old)
            .propose(1, b"x=stranded".to_vec(), Duration::from_millis(600));
    assert!(stranded.is_err(), "a minority committed: {stranded:?}");
    // The majority elects a new leader (check_quorum makes the old one step down).
    let new = cluster.leader_other_than(1, old);
    cluster
        .handle(new)
        .propose(1, b"x=2".to_vec(), TIMEOUT)
        .unwrap();
    cluster.heal();
    for node in [1, 2, 3] {
        cluster.wait_local(node, 1, "x", "2");
    }
    assert_eq!(cluster.get(1, "x"), "2");
}

/// Reads on a leader are served from its lease; once cut off, it must
/// stop before the majority can elect a new leader and commit, or a read
/// would return a value already overwritten.
#[test]
fn an_isolated_leader_stops_serving_reads_before_a_newer_write_commits() {
    let cluster = Cluster::new(&[1, 2, 3], &[1]);
    cluster.put(1, "x", "1");
    assert_eq!(cluster.get(1, "x"), "1");
    let old = cluster.leader(1);
    let reader = cluster.handle(old);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Reads on the old leader without pause: each (start, answer).
    let reads = std::thread::spawn({
        let stop = stop.clone();
        move || {
            let mut answers = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let started = Instant::now();
                let answer = reader.read(1, b"x".to_vec(), Duration::from_millis(300));
                answers.push((started, answer));
            }
            answers
        }
    });
    std::thread::sleep(Duration::from_millis(100));
    let isolated = Instant::now();
    cluster.isolate(old);
    let new = cluster.leader_other_than(1, old);
    cluster
        .handle(new)
        .propose(1, b"x=2".to_vec(), TIMEOUT)
        .unwrap();
    let overwritten = Instant::now();
    std::thread::sleep(Duration::from_millis(400));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let answers = reads.join().unwrap();
    let served_before = answers
        .iter()
        .filter(|(t, a)| *t < isolated && a.is_ok())
        .count();
    assert!(served_before > 0, "no read was served before the cut");
    for (started, answer) in &answers {
        if *started >= overwritten {
            assert!(
                answer.is_err(),
                "a read started {:?} after x=2 committed returned {:?}",
                started.duration_since(overwritten),
                answer
                    .as_ref()
                    .map(|v| String::from_utf8_lossy(v).to_string())
            );
        }
    }
    assert!(answers.iter().any(|(t, _)| *t >= overwritten));
}

#[test]
fn a_restarted_node_catches_up_from_the_log() {
    let mut cluster = Cluster::new(&[1, 2, 3], &[1, 2]);
    cluster.put(1, "a", "1");
    let follower = [1, 2, 3]
        .into_iter()
        .find(|&n| n != cluster.leader(1))
        .unwrap();
    cluster.stop(follower);
    for i in 0..30 {
        cluster.put(1, &format!("b{i}"), "while-down");
        cluster.put(2, &format!("c{i}"), "while-down");
    }
    cluster.start(follower);
    cluster.wait_local(follower, 1, "b29", "while-down");
    cluster.wait_local(follower, 2, "c29", "while-down");
    assert_eq!(cluster.local(follower, 1, "a"), "1");
}

#[test]
fn a_whole_cluster_restart_keeps_every_acknowledged_write() {
    let mut cluster = Cluster::new(&[1, 2, 3], &[1]);
    for i in 0..20 {
        cluster.put(1, &format!("k{i}"), &format!("v{i}"));
    }
    for id in [1, 2, 3] {
        cluster.stop(id);
    }
    for id in [1, 2, 3] {
        cluster.start(id);
    }
    for i in 0..20 {
        assert_eq!(cluster.get(1, &format!("k{i}")), format!("v{i}"));
    }
}

/// A restarted node tells each machine where the replay of its log ends:
/// entries up to there are applied again over state that may already
/// hold later effects (what a scrub's digest entry must not trust).
#[test]
fn a_restarted_node_tells_its_machines_where_the_replay_ends() {
    let (mut cluster, durability) = Cluster::with_durability(&[1, 2, 3]);
    for i in 0..10 {
        cluster.put(1, &format!("k{i}"), &format!("v{i}"));
    }
    cluster.wait_local(1, 1, "k9", "v9");
    let last = cluster.handle(1).status().unwrap()[0].last_index;
    assert!(last > 10, "the log holds the writes: {last}");
    cluster.stop(1);
    cluster.start(1);
    use std::sync::atomic::Ordering;
    assert_eq!(durability[0].replaying_through.load(Ordering::SeqCst), last);
}

/// A proposal the loop takes only after its caller stopped waiting is not
/// proposed: the caller may have retried it by then, and an old attempt
/// committed after the retry and after later writes would overwrite them.
#[test]
fn a_proposal_its_caller_gave_up_on_never_enters_the_log() {
    use std::sync::atomic::Ordering;
    let (cluster, durability) = Cluster::with_durability(&[1, 2, 3]);
    cluster.put(1, "k", "first");
    let leader = cluster.leader(1);
    let gate = &durability[leader as usize - 1];
    let held = gate.apply_gate.lock().unwrap();
    let reached = gate.at_gate.load(Ordering::SeqCst);
    // The leader's loop stops in applying this write...
    cluster
        .handle(leader)
        .propose_with(1, b"k=second".to_vec(), Box::new(|_| {}));
    let deadline = Instant::now() + TIMEOUT;
    while gate.at_gate.load(Ordering::SeqCst) == reached {
        assert!(Instant::now() < deadline, "the write never reached apply");
        std::thread::sleep(Duration::from_millis(5));
    }
    // ...so this one waits in its inbox past its caller's timeout.
    let late =
        cluster
            .handle(leader)
            .propose(1, b"late=stale".to_vec(), Duration::from_millis(200));
    assert_eq!(late, Err(ReplicationError::Dropped { group: 1 }));
    drop(held);
    cluster.put(1, "k", "third");
    for node in [1, 2, 3] {
        cluster.wait_local(node, 1, "k", "third");
    }
    // Had the late write been proposed, it would sit between "second" and
    // "third" in the log, applied everywhere by now.
    for node in [1, 2, 3] {
        assert_eq!(cluster.local(node, 1, "late"), "", "node {node}");
    }
}

fn first_index(cluster: &Cluster, node: NodeId, group: GroupId) -> u64 {
    cluster
        .handle(node)
        .status()
        .unwrap()
        .iter()
        .find(|s| s.group == group)
        .unwrap()
        .first_index
}

#[test]
fn logs_are_truncated_once_every_replica_has_the_entries_and_data_survives() {
    let mut cluster = Cluster::new(&[1, 2, 3], &[1]);
    for i in 0..400 {
        cluster.put(1, &format!("k{i}"), &format!("v{i}"));
    }
    let deadline = Instant::now() + TIMEOUT;
    while [1, 2, 3].iter().any(|&n| first_index(&cluster, n, 1) < 300) {
        assert!(Instant::now() < deadline, "logs were not truncated");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A whole-cluster restart starts from the truncated logs and the
    // state machines' durable state.
    for id in [1, 2, 3] {
        cluster.stop(id);
    }
    for id in [1, 2, 3] {
        cluster.start(id);
    }
    assert_eq!(cluster.get(1, "k0"), "v0");
    assert_eq!(cluster.get(1, "k399"), "v399");
    cluster.put(1, "after", "restart");
    assert_eq!(cluster.get(1, "after"), "restart");
}

#[test]
fn a_replica_that_is_down_holds_truncation_back_and_catches_up_from_the_log() {
    let mut cluster = Cluster::new(&[1, 2, 3], &[1]);
    cluster.put(1, "a", "1");
    let leader = cluster.leader(1);
    let down = [1, 2, 3].into_iter().find(|&n| n != leader).unwrap();
    cluster.stop(down);
    let before = first_index(&cluster, leader, 1);
    for i in 0..300 {
        cluster.put(1, &format!("k{i}"), "while-down");
    }
    std::thread::sleep(Duration::from_millis(500));
    let leader = cluster.leader(1);
    assert!(
        first_index(&cluster, leader, 1) <= before + 2,
        "the log was truncated past what the down replica has"
    );
    cluster.start(down);
    cluster.wait_local(down, 1, "k299", "while-down");
}

#[test]
fn truncation_follows_the_machines_own_syncs_and_syncs_only_a_machine_left_behind() {
    let (cluster, durability) = Cluster::with_durability(&[1, 2, 3]);
    let nodes = [1, 2, 3];
    // Waits until every log starts at `first` or later, checking all the
    // while that no log lost an entry its machine could not bring back
    // (everything before the first index is durable).
    let wait_truncated_to = |cluster: &Cluster, first: u64| {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            for (n, d) in nodes.iter().zip(&durability) {
                let at = first_index(cluster, *n, 1);
                assert!(
                    at <= d.durable() + 1,
                    "node {n}: log starts at {at}, machine durable only to {}",
                    d.durable()
                );
            }
            if nodes.iter().all(|&n| first_index(cluster, n, 1) >= first) {
                break;
            }
            assert!(Instant::now() < deadline, "logs were not truncated");
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    // The machines sync on their own, often: the log is truncated behind
    // them and the loop never syncs one itself.
    let syncing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let syncer = {
        let (syncing, durability) = (syncing.clone(), durability.clone());
        std::thread::spawn(move || {
            while syncing.load(std::sync::atomic::Ordering::SeqCst) {
                durability.iter().for_each(|d| d.sync_now());
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    for i in 0..400 {
        cluster.put(1, &format!("k{i}"), &format!("v{i}"));
    }
    wait_truncated_to(&cluster, 300);
    syncing.store(false, std::sync::atomic::Ordering::SeqCst);
    syncer.join().unwrap();
    for (n, d) in nodes.iter().zip(&durability) {
        let syncs = d.loop_syncs.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(syncs, 0, "node {n}: the loop synced a machine that kept up");
    }

    // Nothing syncs them now: truncation waits a few checks, then the loop
    // syncs the machine itself and truncates.
    for i in 400..800 {
        cluster.put(1, &format!("k{i}"), &format!("v{i}"));
    }
    wait_truncated_to(&cluster, 700);
    for (n, d) in nodes.iter().zip(&durability) {
        let syncs = d.loop_syncs.load(std::sync::atomic::Ordering::SeqCst);
        assert!(syncs > 0, "node {n}: truncated without a sync");
    }
    assert_eq!(cluster.get(1, "k799"), "v799");
}

fn voters(cluster: &Cluster, node: NodeId, group: GroupId) -> Vec<u64> {
    let status = cluster.handle(node).status().unwrap();
    let mut voters = status
        .iter()
        .find(|s| s.group == group)
        .map(|s| s.voters.clone())
        .unwrap_or_default();
    voters.sort_unstable();
    voters
}

fn wait_voters(cluster: &Cluster, node: NodeId, group: GroupId, want: &[u64]) {
    let deadline = Instant::now() + TIMEOUT;
    while voters(cluster, node, group) != want {
        assert!(
            Instant::now() < deadline,
            "node {node}: voters {:?}, never {want:?}",
            voters(cluster, node, group)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A crash can lose the round holding a configuration change's state
/// record after the machine made the change's index durable (its syncs
/// run off the loop). At restart the replica applies the change again
/// from the log, instead of coming back with the old voters.
#[test]
fn a_configuration_change_the_state_record_lost_is_applied_again_at_restart() {
    let mut cluster = Cluster::new(&[1, 2, 3], &[1]);
    cluster.put(1, "x", "1");
    let leader = cluster.leader(1);
    let others: Vec<NodeId> = [1, 2, 3].into_iter().filter(|&n| n != leader).collect();
    let victim = others[1]; // others[0] leaves the group
    let mut kept = vec![leader, victim];
    kept.sort_unstable();
    cluster
        .handle(leader)
        .reconfigure(vec![(1, kept.clone())])
        .unwrap();
    wait_voters(&cluster, victim, 1, &kept);
    cluster.put(1, "x", "2");
    cluster.wait_local(victim, 1, "x", "2");
    cluster.stop(victim);
    // The state record as it stood before the change: what the node
    // would find had the round carrying the new one been lost.
    {
        let log = cluster.logs[&victim].clone();
        let mut store = LogStore::open(log.clone(), 1).unwrap();
        assert!(store.conf_index() > 0, "the change was saved");
        store.set_conf_state(
            0,
            raft::eraftpb::ConfState {
                voters: vec![1, 2, 3],
                ..Default::default()
            },
        );
        let mut round = Round::default();
        store.finish_round(&mut round);
        lock(&log).write(round).unwrap();
    }
    cluster.start(victim);
    wait_voters(&cluster, victim, 1, &kept);
    cluster.put(1, "x", "3");
    cluster.wait_local(victim, 1, "x", "3");
}

/// A copy's completion, as the node loop hands it to an installer.
type CopyDone = Box<dyn FnOnce(Result<(), String>) + Send>;

/// Holds every copy it is asked for until the test lets it end.
#[derive(Default)]
struct HeldInstaller {
    held: Mutex<Vec<(super::InstallRequest, CopyDone)>>,
}

impl super::SnapshotInstaller for HeldInstaller {
    fn install(&self, request: super::InstallRequest, done: CopyDone) -> bool {
        self.held.lock().unwrap().push((request, done));
        true
    }
}

/// Turns copies away (a node at its limit of copies at once) until told
/// to take them, then holds them like [`HeldInstaller`].
#[derive(Default)]
struct BusyInstaller {
    taking: std::sync::atomic::AtomicBool,
    turned_away: std::sync::atomic::AtomicUsize,
    held: HeldInstaller,
}

impl super::SnapshotInstaller for BusyInstaller {
    fn install(&self, request: super::InstallRequest, done: CopyDone) -> bool {
        use std::sync::atomic::Ordering;
        if !self.taking.load(Ordering::SeqCst) {
            self.turned_away.fetch_add(1, Ordering::SeqCst);
            return false;
        }
        self.held.install(request, done)
    }
}

/// Three nodes whose group 1 has a few entries, for a fourth to join.
fn cluster_with_history() -> Cluster {
    let cluster = Cluster::new(&[1, 2, 3], &[1]);
    for i in 0..5 {
        cluster.put(1, "x", &i.to_string());
    }
    cluster
}

/// Stops node 4 and takes it off the simulated network.
fn stop_joiner(cluster: &Cluster, joiner: RaftNode) {
    cluster.net.nodes.lock().unwrap().remove(&4);
    joiner.stop();
}

/// Starts node 4 with `installer` and has group 1's leader add it, until
/// `asked()` says a snapshot's copy was asked for.
fn join_by_snapshot(
    cluster: &Cluster,
    installer: Arc<dyn super::SnapshotInstaller>,
    asked: impl Fn() -> bool,
) -> RaftNode {
    let dir = cluster.dir.path().join("node4");
    let db = Arc::new(DB::open_default(&dir).unwrap());
    let log = open_node_log(&dir.join("raft-log"), &db).unwrap();
    let mut config = NodeConfig::new(4);
    config.tick_interval = Duration::from_millis(20);
    let joiner = RaftNode::spawn(
        config,
        log,
        Arc::new(SimTransport {
            me: 4,
            net: cluster.net.clone(),
        }),
        Arc::new(|_g: GroupId, peer: u64| Some(peer)),
    );
    joiner.handle().set_snapshot_installer(installer).unwrap();
    joiner
        .handle()
        .create_group(1, 4, Vec::new(), Box::new(RocksKv::open(db.clone(), 1)))
        .unwrap();
    cluster.net.nodes.lock().unwrap().insert(4, joiner.handle());
    // The leader adds it as a learner (compacting its log first, so that
    // the joiner gets a snapshot) and sends the snapshot.
    let deadline = Instant::now() + TIMEOUT;
    while !asked() {
        assert!(Instant::now() < deadline, "no snapshot copy was asked for");
        let leader = cluster.leader(1);
        cluster
            .handle(leader)
            .reconfigure(vec![(1, vec![1, 2, 3, 4])])
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    joiner
}

/// A node at its limit of copies at once turns a snapshot's copy away:
/// the replica is not held copying (it can be dropped), and the leader's
/// next snapshot asks again, until a copy is taken.
#[test]
fn a_copy_turned_away_leaves_the_replica_free_and_is_asked_for_again() {
    use std::sync::atomic::Ordering;
    let cluster = cluster_with_history();
    let installer = Arc::new(BusyInstaller::default());
    let watched = installer.clone();
    let joiner = join_by_snapshot(&cluster, installer.clone(), move || {
        watched.turned_away.load(Ordering::SeqCst) > 0
    });
    let deadline = Instant::now() + TIMEOUT;
    while installer.turned_away.load(Ordering::SeqCst) < 3 {
        assert!(
            Instant::now() < deadline,
            "the copy was not asked for again"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    installer.taking.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + TIMEOUT;
    while installer.held.held.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "a copy was never taken");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Now it is copying, and held.
    assert_eq!(
        joiner.handle().destroy_group(1),
        Err(ReplicationError::Installing(1))
    );
    for (_, done) in std::mem::take(&mut *installer.held.held.lock().unwrap()) {
        done(Err("the test ends the copy".into()));
    }
    stop_joiner(&cluster, joiner);
}

/// While its copies are turned away, a replica is not held: it can be
/// dropped (as when placement moves the group elsewhere meanwhile).
#[test]
fn a_replica_whose_copy_was_turned_away_can_be_dropped() {
    use std::sync::atomic::Ordering;
    let cluster = cluster_with_history();
    let installer = Arc::new(BusyInstaller::default());
    let watched = installer.clone();
    let joiner = join_by_snapshot(&cluster, installer.clone(), move || {
        watched.turned_away.load(Ordering::SeqCst) > 0
    });
    assert_eq!(joiner.handle().destroy_group(1), Ok(()));
    stop_joiner(&cluster, joiner);
}

/// A replica copying a snapshot's state is not dropped: the copy runs off
/// the loop and would write its objects and applied index after the drop,
/// under whatever replica of the group the node creates next. Once the
/// copy ends, the drop goes through.
#[test]
fn a_replica_copying_a_snapshot_is_not_dropped_until_the_copy_ends() {
    let cluster = cluster_with_history();
    // Node 4 hosts a replica that joins through a snapshot.
    let installer = Arc::new(HeldInstaller::default());
    let watched = installer.clone();
    let joiner = join_by_snapshot(&cluster, installer.clone(), move || {
        !watched.held.lock().unwrap().is_empty()
    });

    assert_eq!(
        joiner.handle().destroy_group(1),
        Err(ReplicationError::Installing(1))
    );
    assert!(
        joiner
            .handle()
            .status()
            .unwrap()
            .iter()
            .any(|s| s.group == 1),
        "the refused drop removed the replica"
    );

    // The copy ends (failed here); the replica is no longer copying.
    let held = std::mem::take(&mut *installer.held.lock().unwrap());
    for (_, done) in held {
        done(Err("the test ends the copy".into()));
    }
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match joiner.handle().destroy_group(1) {
            Ok(()) => break,
            // The leader may have sent the snapshot again meanwhile.
            Err(ReplicationError::Installing(1)) => {
                for (_, done) in std::mem::take(&mut *installer.held.lock().unwrap()) {
                    done(Err("the test ends the copy".into()));
                }
            }
            Err(e) => panic!("drop after the copy: {e}"),
        }
        assert!(Instant::now() < deadline, "the replica stayed copying");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!joiner
        .handle()
        .status()
        .unwrap()
        .iter()
        .any(|s| s.group == 1));
    stop_joiner(&cluster, joiner);
}
