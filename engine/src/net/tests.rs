//! Raft over real gRPC between node loops on loopback: the same guarantees
//! as over the simulated network, with tonic servers and clients.

use crate::replication::log_store::open_node_log;
use rocksdb::DB;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::pg_stream::PgStreams;
use super::{GrpcTransport, NodeService, PlacementGroupService};
use crate::replication::test_kv::RocksKv;
use crate::replication::{NodeConfig, NodeId, RaftNode, ReplicationError};

struct GrpcNode {
    raft: RaftNode,
    server: tokio::task::JoinHandle<()>,
    _db: Arc<DB>,
}

struct GrpcCluster {
    runtime: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
    addresses: Arc<Mutex<HashMap<NodeId, String>>>,
    nodes: HashMap<NodeId, GrpcNode>,
}

const TIMEOUT: Duration = Duration::from_secs(15);

impl GrpcCluster {
    fn new(ids: &[NodeId]) -> GrpcCluster {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut cluster = GrpcCluster {
            runtime,
            dir: tempfile::tempdir().unwrap(),
            addresses: Arc::new(Mutex::new(HashMap::new())),
            nodes: HashMap::new(),
        };
        for &id in ids {
            cluster.start(id, ids);
        }
        cluster
    }

    fn start(&mut self, id: NodeId, voters: &[NodeId]) {
        let listener = self
            .runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        self.addresses
            .lock()
            .unwrap()
            .insert(id, listener.local_addr().unwrap().to_string());
        let dir = self.dir.path().join(format!("node{id}"));
        let db = Arc::new(DB::open_default(&dir).unwrap());
        let book = self.addresses.clone();
        let transport = Arc::new(GrpcTransport::new(
            id,
            self.runtime.handle().clone(),
            Arc::new(move |node: NodeId| book.lock().unwrap().get(&node).cloned()),
        ));
        let mut config = NodeConfig::new(id);
        config.tick_interval = Duration::from_millis(20);
        let raft = RaftNode::spawn(
            config,
            open_node_log(&dir.join("raft-log"), &db).unwrap(),
            transport,
            Arc::new(|_g: u64, peer: u64| Some(peer)),
        );
        raft.handle()
            .create_group(
                1,
                id,
                voters.to_vec(),
                Box::new(RocksKv::open(db.clone(), 1)),
            )
            .unwrap();
        let service = NodeService::new(raft.handle()).into_server();
        let repairer = crate::integrity::Repairer::new(
            id,
            raft.handle(),
            Arc::new(std::sync::RwLock::new(Default::default())),
            HashMap::new(),
        );
        let pg_service = PlacementGroupService::new(raft.handle(), repairer).into_server();
        let server = self.runtime.spawn(async move {
            let incoming =
                tonic::transport::server::TcpIncoming::from_listener(listener, true, None).unwrap();
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .add_service(pg_service)
                .serve_with_incoming(incoming)
                .await;
        });
        self.nodes.insert(
            id,
            GrpcNode {
                raft,
                server,
                _db: db,
            },
        );
    }

    fn stop(&mut self, id: NodeId) {
        let node = self.nodes.remove(&id).unwrap();
        node.server.abort();
        node.raft.stop();
    }

    fn leader(&self) -> NodeId {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            for (&id, node) in &self.nodes {
                if node
                    .raft
                    .handle()
                    .status()
                    .unwrap()
                    .iter()
                    .any(|s| s.is_leader)
                {
                    return id;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no leader over gRPC after {TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn put(&self, key: &str, value: &str) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let leader = self.leader();
            let data = format!("{key}={value}").into_bytes();
            match self.nodes[&leader]
                .raft
                .handle()
                .propose(1, data, Duration::from_secs(2))
            {
                Ok(_) => return,
                Err(
                    ReplicationError::NotLeader { .. }
                    | ReplicationError::Dropped { .. }
                    | ReplicationError::Expired { .. },
                ) => {}
                Err(e) => panic!("put {key}: {e}"),
            }
            assert!(Instant::now() < deadline, "put {key} never succeeded");
        }
    }

    fn get(&self, key: &str) -> String {
        let leader = self.leader();
        let value = self.nodes[&leader]
            .raft
            .handle()
            .read(1, key.as_bytes().to_vec(), Duration::from_secs(5))
            .unwrap();
        String::from_utf8(value).unwrap()
    }
}

#[test]
fn raft_over_grpc_replicates_and_survives_the_leaders_death() {
    let mut cluster = GrpcCluster::new(&[1, 2, 3]);
    for i in 0..100 {
        cluster.put(&format!("k{i}"), &format!("v{i}"));
    }
    let old = cluster.leader();
    cluster.stop(old);
    let started = Instant::now();
    let new = cluster.leader();
    assert_ne!(new, old);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "failover took {:?}",
        started.elapsed()
    );
    for i in (0..100).step_by(7) {
        assert_eq!(cluster.get(&format!("k{i}")), format!("v{i}"));
    }
    cluster.put("after", "failover");
    // The old leader comes back on a new port and catches up.
    cluster.start(old, &[1, 2, 3]);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let status = cluster.nodes[&old].raft.handle().status().unwrap();
        let leader_commit = cluster.nodes[&cluster.leader()]
            .raft
            .handle()
            .status()
            .unwrap()[0]
            .commit;
        if status[0].applied >= leader_commit {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "restarted node {old} never caught up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A PG write whose proposal deadline has passed when the serving node
/// takes it is answered as a retry and never applied; one without a
/// deadline (an older client) is.
#[test]
fn a_pg_write_past_its_proposal_deadline_is_not_applied() {
    let cluster = GrpcCluster::new(&[1]);
    cluster.put("k", "before");
    let addr = cluster.addresses.lock().unwrap()[&1].clone();
    let now_ms = crate::ledger::now_ms();
    let (late, plain) = cluster.runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        let streams = PgStreams::default();
        let write = |payload: &str, deadline_unix_ms: u64| {
            streams.call(
                1,
                || Some(channel.clone()),
                true,
                1,
                payload.as_bytes().to_vec(),
                deadline_unix_ms,
                Duration::from_secs(5),
            )
        };
        let late = write("late=stale", now_ms - 1).await.unwrap();
        let in_time = write("soon=ok", now_ms + 2_000).await.unwrap();
        let plain = write("k=after", 0).await.unwrap();
        (late, (in_time, plain))
    });
    let (in_time, plain) = plain;
    assert!(late.expired && late.error.is_empty(), "{late:?}");
    for reply in [&in_time, &plain] {
        assert!(
            reply.error.is_empty() && !reply.not_leader && !reply.expired,
            "{reply:?}"
        );
    }
    assert_eq!(cluster.get("k"), "after");
    assert_eq!(cluster.get("soon"), "ok");
    assert_eq!(cluster.get("late"), "");
}
