//! The gRPC Raft transport: one long-lived client stream per peer node,
//! fed through a bounded queue, reconnecting with backoff.

use prost011::Message as _;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::proto::node_client::NodeClient;
use super::proto::{RaftBatch, RaftEnvelope as WireEnvelope};
use crate::replication::{NodeId, RaftEnvelope, Transport};

/// Batches queued per peer before new ones are dropped.
const PEER_QUEUE_BATCHES: usize = 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const RECONNECT_BACKOFF: Duration = Duration::from_millis(200);

/// Where a node listens for node-to-node gRPC.
pub trait AddressBook: Send + Sync + 'static {
    fn peer_addr(&self, node: NodeId) -> Option<String>;
}

impl<F> AddressBook for F
where
    F: Fn(NodeId) -> Option<String> + Send + Sync + 'static,
{
    fn peer_addr(&self, node: NodeId) -> Option<String> {
        self(node)
    }
}

/// Sends Raft batches to other nodes over gRPC.
pub struct GrpcTransport {
    me: NodeId,
    runtime: tokio::runtime::Handle,
    addresses: Arc<dyn AddressBook>,
    queues: Mutex<HashMap<NodeId, mpsc::Sender<RaftBatch>>>,
}

impl GrpcTransport {
    /// A transport for node `me`; connections run on `runtime`.
    pub fn new(
        me: NodeId,
        runtime: tokio::runtime::Handle,
        addresses: Arc<dyn AddressBook>,
    ) -> GrpcTransport {
        GrpcTransport {
            me,
            runtime,
            addresses,
            queues: Mutex::new(HashMap::new()),
        }
    }

    fn queue(&self, to: NodeId) -> mpsc::Sender<RaftBatch> {
        let mut queues = self.queues.lock().expect("queues lock");
        if let Some(q) = queues.get(&to).filter(|q| !q.is_closed()) {
            return q.clone();
        }
        let (tx, rx) = mpsc::channel(PEER_QUEUE_BATCHES);
        self.runtime
            .spawn(peer_sender(to, self.addresses.clone(), rx));
        queues.insert(to, tx.clone());
        tx
    }
}

impl Transport for GrpcTransport {
    fn send(&self, to: NodeId, batch: Vec<RaftEnvelope>) {
        let wire = RaftBatch {
            from_node: self.me,
            messages: batch
                .into_iter()
                .map(|e| WireEnvelope {
                    group: e.group,
                    message: e.message.encode_to_vec(),
                })
                .collect(),
        };
        // Full queue: the peer is slow or gone. Dropping is safe, Raft
        // resends what matters.
        let _ = self.queue(to).try_send(wire);
    }
}

/// Keeps one client stream to `to` open and feeds it from `rx`.
async fn peer_sender(
    to: NodeId,
    addresses: Arc<dyn AddressBook>,
    mut rx: mpsc::Receiver<RaftBatch>,
) {
    loop {
        let Some(addr) = addresses.peer_addr(to) else {
            if drain_for(&mut rx, RECONNECT_BACKOFF).await {
                return;
            }
            continue;
        };
        let endpoint = match tonic::transport::Endpoint::from_shared(format!("http://{addr}")) {
            Ok(e) => e.connect_timeout(CONNECT_TIMEOUT).tcp_nodelay(true),
            Err(_) => return,
        };
        let channel = match endpoint.connect().await {
            Ok(c) => c,
            Err(_) => {
                // Peer down: what is queued now is stale; Raft resends.
                if drain_for(&mut rx, RECONNECT_BACKOFF).await {
                    return;
                }
                continue;
            }
        };
        let (stream_tx, stream_rx) = mpsc::channel(PEER_QUEUE_BATCHES);
        let mut client =
            NodeClient::new(channel).max_encoding_message_size(super::server::RAFT_BATCH_MAX_BYTES);
        let call = tokio::spawn(async move { client.raft(ReceiverStream::new(stream_rx)).await });
        loop {
            match rx.recv().await {
                Some(batch) => {
                    if stream_tx.send(batch).await.is_err() {
                        break; // the call ended: reconnect
                    }
                }
                None => {
                    drop(stream_tx);
                    let _ = call.await;
                    return;
                }
            }
        }
        call.abort();
        tokio::time::sleep(RECONNECT_BACKOFF).await;
    }
}

/// Discards queued batches for `period`; true if the queue closed.
async fn drain_for(rx: &mut mpsc::Receiver<RaftBatch>, period: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + period;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(_)) => continue,
            Ok(None) => return true,
            Err(_) => return false,
        }
    }
}
