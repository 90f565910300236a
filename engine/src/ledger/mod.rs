//! The HP chain inside a node: runs the `hpchain-chain` ledger, produces
//! blocks in this node's delegate slots, gossips transactions, blocks and
//! confirmations to the other nodes over gRPC, catches up from peers, and
//! records an `audit` transaction for every cluster map change this node
//! commits.
//!
//! This module owns the ledger's I/O and timing; what is valid is decided
//! by `hpchain-chain` alone.

use hpchain_chain::tx::AuditRecord;
use hpchain_chain::{
    Genesis, Hash32, Keypair, Ledger, LedgerMessage, Payload, RocksStore, Transaction,
};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::net::proto::ledger_gossip_client::LedgerGossipClient;
use crate::net::proto::ledger_gossip_server::{LedgerGossip, LedgerGossipServer};
use crate::net::proto::{LedgerEnvelope, LedgerReply};
use crate::replication::NodeId;

/// Most transactions one block carries.
const BLOCK_TXS_MAX: usize = 1000;
/// Blocks asked for in one catch-up request.
const CATCH_UP_BLOCKS_MAX: u32 = 500;
/// A block may be signed for a slot this far ahead of our clock.
const DRIFT_SLOTS_MAX: u64 = 2;
const GOSSIP_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Why the ledger could not start.
#[derive(Debug, thiserror::Error)]
#[error("ledger: {0}")]
pub struct LedgerNodeError(pub String);

/// One node's ledger and its links to the other nodes.
#[derive(Clone)]
pub struct LedgerNode {
    me: NodeId,
    ledger: Arc<Mutex<Ledger>>,
    key: Option<Arc<Keypair>>,
    peers: Arc<Vec<(NodeId, LedgerGossipClient<Channel>)>>,
    next_nonce: Arc<Mutex<u64>>,
}

impl LedgerNode {
    /// Opens the ledger in `dir` from `genesis`; `key` makes this node a
    /// delegate candidate that produces blocks and signs audit records.
    pub fn open(
        me: NodeId,
        genesis: &Path,
        key: Option<&Path>,
        dir: &Path,
        peers: Vec<(NodeId, String)>,
    ) -> Result<LedgerNode, LedgerNodeError> {
        let genesis = Genesis::load(genesis).map_err(|e| LedgerNodeError(e.to_string()))?;
        let store = RocksStore::open(dir).map_err(|e| LedgerNodeError(e.to_string()))?;
        let ledger =
            Ledger::open(genesis, Box::new(store)).map_err(|e| LedgerNodeError(e.to_string()))?;
        let key = match key {
            Some(path) => Some(Arc::new(
                Keypair::load(path).map_err(|e| LedgerNodeError(e.to_string()))?,
            )),
            None => None,
        };
        let next_nonce = key
            .as_ref()
            .map(|k| ledger.head_state().next_nonce(&k.public()))
            .unwrap_or(0);
        let peers = peers
            .into_iter()
            .filter(|(id, _)| *id != me)
            .filter_map(|(id, addr)| {
                let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                    .ok()?
                    .connect_timeout(Duration::from_secs(1))
                    .timeout(GOSSIP_TIMEOUT)
                    .connect_lazy();
                Some((
                    id,
                    LedgerGossipClient::new(channel).max_decoding_message_size(64 << 20),
                ))
            })
            .collect();
        Ok(LedgerNode {
            me,
            ledger: Arc::new(Mutex::new(ledger)),
            key,
            peers: Arc::new(peers),
            next_nonce: Arc::new(Mutex::new(next_nonce)),
        })
    }

    /// The ledger, for queries.
    pub fn ledger(&self) -> Arc<Mutex<Ledger>> {
        self.ledger.clone()
    }

    /// The gRPC service that receives gossip.
    pub fn service(&self) -> LedgerGossipServer<LedgerGossipService> {
        LedgerGossipServer::new(LedgerGossipService { node: self.clone() })
            .max_decoding_message_size(64 << 20)
    }

    async fn broadcast(&self, message: LedgerMessage) {
        let bytes = message.encode();
        for (_, client) in self.peers.iter() {
            let mut client = client.clone();
            let envelope = LedgerEnvelope {
                from_node: self.me,
                message: bytes.clone(),
            };
            // Fire and forget: catch-up repairs what a dead peer missed.
            tokio::spawn(async move {
                let _ = client.gossip(envelope).await;
            });
        }
    }

    /// Signs and submits a transaction from this node's key, and gossips it.
    pub async fn submit(&self, payload: Payload) -> Result<Hash32, LedgerNodeError> {
        let Some(key) = &self.key else {
            return Err(LedgerNodeError(
                "this node has no ledger key; set [chain] key in its config".into(),
            ));
        };
        let tx = {
            let mut ledger = self.ledger.lock().expect("ledger lock");
            let mut next = self.next_nonce.lock().expect("nonce lock");
            // Past any transaction a client signed with this key itself.
            let on_chain = ledger.pending_nonce(&key.public());
            *next = (*next).max(on_chain);
            let tx = Transaction::signed(ledger.chain_hash(), key, *next, payload);
            ledger
                .submit_tx(tx.clone())
                .map_err(|e| LedgerNodeError(e.to_string()))?;
            *next += 1;
            tx
        };
        let hash = tx.hash();
        self.broadcast(LedgerMessage::Tx(tx)).await;
        Ok(hash)
    }

    /// Submits a transaction a client signed with its own key (keys never
    /// reach the node), and gossips it. Besides what the pool checks, the
    /// transaction must fit the state it will meet (nonce, balance,
    /// candidates; `Ledger::check_new_tx`), so that the client hears a
    /// refusal now instead of seeing the transaction dropped at block time.
    pub async fn submit_signed(&self, tx: Transaction) -> Result<Hash32, hpchain_chain::Error> {
        let hash = {
            let mut ledger = self.ledger.lock().expect("ledger lock");
            ledger.check_new_tx(&tx)?;
            ledger.submit_tx(tx.clone())?
        };
        self.broadcast(LedgerMessage::Tx(tx)).await;
        Ok(hash)
    }

    /// Records a cluster map change this node committed (or saw refused).
    pub async fn audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        result: &str,
        details: Vec<(String, String)>,
    ) {
        let record = AuditRecord {
            actor: actor.to_string(),
            action: action.to_string(),
            target: target.to_string(),
            at_ms: now_ms(),
            result: result.to_string(),
            details,
        };
        if let Err(e) = self.submit(Payload::Audit(record)).await {
            tracing::warn!("audit record for {action} {target} not submitted: {e}");
        }
    }

    /// Handles one gossiped message; returns the answer to send back.
    async fn receive(&self, from: NodeId, message: LedgerMessage) -> Option<LedgerMessage> {
        match message {
            LedgerMessage::Tx(tx) => {
                let _ = self.ledger.lock().expect("ledger lock").submit_tx(tx);
                None
            }
            LedgerMessage::Block(block) => {
                let result = self.ledger.lock().expect("ledger lock").import_block_at(
                    block,
                    now_ms(),
                    DRIFT_SLOTS_MAX,
                );
                if let Err(hpchain_chain::Error::Block { reason, .. }) = &result {
                    if matches!(**reason, hpchain_chain::BlockError::UnknownParent(_)) {
                        self.catch_up_from(from).await;
                    }
                }
                self.confirm().await;
                None
            }
            LedgerMessage::Confirmation(c) => {
                let _ = self
                    .ledger
                    .lock()
                    .expect("ledger lock")
                    .import_confirmation(c);
                None
            }
            LedgerMessage::GetBlocks { from_height, limit } => {
                let blocks = self
                    .ledger
                    .lock()
                    .expect("ledger lock")
                    .blocks_since(from_height, limit.min(CATCH_UP_BLOCKS_MAX) as usize)
                    .unwrap_or_default();
                Some(LedgerMessage::Blocks(blocks))
            }
            LedgerMessage::Blocks(blocks) => {
                self.import_all(blocks);
                None
            }
        }
    }

    fn import_all(&self, blocks: Vec<hpchain_chain::Block>) {
        let mut ledger = self.ledger.lock().expect("ledger lock");
        for block in blocks {
            let _ = ledger.import_block_at(block, now_ms(), DRIFT_SLOTS_MAX);
        }
    }

    /// Signs a confirmation of our head and gossips it (delegates only).
    async fn confirm(&self) {
        let Some(key) = &self.key else { return };
        let confirmation = self.ledger.lock().expect("ledger lock").confirm_head(key);
        if let Ok(c) = confirmation {
            self.broadcast(LedgerMessage::Confirmation(c)).await;
        }
    }

    async fn catch_up_from(&self, peer: NodeId) {
        let Some((_, client)) = self.peers.iter().find(|(id, _)| *id == peer) else {
            return;
        };
        let from_height = self.ledger.lock().expect("ledger lock").final_height();
        let request = LedgerEnvelope {
            from_node: self.me,
            message: LedgerMessage::GetBlocks {
                from_height,
                limit: CATCH_UP_BLOCKS_MAX,
            }
            .encode(),
        };
        let mut client = client.clone();
        if let Ok(reply) = client.gossip(request).await {
            if let Ok(LedgerMessage::Blocks(blocks)) =
                LedgerMessage::decode(&reply.into_inner().message)
            {
                self.import_all(blocks);
            }
        }
    }

    /// Produces blocks in this node's slots and catches up periodically;
    /// runs until the task is aborted.
    pub async fn run(self) {
        let slot_ms = self
            .ledger
            .lock()
            .expect("ledger lock")
            .genesis()
            .slot_time_ms
            .max(100);
        let mut tick = tokio::time::interval(Duration::from_millis(slot_ms / 4));
        let mut last_slot = 0;
        let mut rounds = 0u64;
        loop {
            tick.tick().await;
            rounds += 1;
            if let Some(key) = &self.key {
                let produced = {
                    let mut ledger = self.ledger.lock().expect("ledger lock");
                    let slot = ledger.slot_at(now_ms());
                    if slot > last_slot && ledger.scheduled_producer(slot) == Some(key.public()) {
                        last_slot = slot;
                        ledger.produce_block(slot, key, BLOCK_TXS_MAX).ok()
                    } else {
                        None
                    }
                };
                if let Some(block) = produced {
                    self.broadcast(LedgerMessage::Block(block)).await;
                }
            }
            // Every ~2 s ask one peer for what we may have missed.
            if rounds.is_multiple_of(8) && !self.peers.is_empty() {
                let peer = self.peers[(rounds / 8) as usize % self.peers.len()].0;
                self.catch_up_from(peer).await;
            }
        }
    }
}

/// The `hpchain.node.v1.LedgerGossip` service.
pub struct LedgerGossipService {
    node: LedgerNode,
}

#[tonic::async_trait]
impl LedgerGossip for LedgerGossipService {
    async fn gossip(
        &self,
        request: Request<LedgerEnvelope>,
    ) -> Result<Response<LedgerReply>, Status> {
        let envelope = request.into_inner();
        let message = LedgerMessage::decode(&envelope.message).map_err(|e| {
            Status::invalid_argument(format!(
                "node {}: bad ledger message: {e}",
                envelope.from_node
            ))
        })?;
        let answer = self.node.receive(envelope.from_node, message).await;
        Ok(Response::new(LedgerReply {
            message: answer.map(|m| m.encode()).unwrap_or_default(),
        }))
    }
}
