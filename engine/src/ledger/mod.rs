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

/// Most transactions one block carries: with one-second slots, the
/// ledger's sustained rate (5,000 a second is the goal, docs/benchmarks.md)
/// with room for bursts.
const BLOCK_TXS_MAX: usize = 10_000;
/// Blocks asked for in one catch-up request (what one reply may carry).
const CATCH_UP_BLOCKS_MAX: u32 = hpchain_chain::wire::MAX_BLOCKS_PER_MESSAGE as u32;
/// Bytes of blocks in one catch-up reply, under the 64 MiB gRPC limit.
const CATCH_UP_BYTES_MAX: usize = 32 << 20;
/// Most transactions one `submit_many` takes (and one `Txs` message carries).
pub const SUBMIT_BATCH_MAX: usize = 10_000;
/// Repair steps one call takes at most (each replaces at least one block).
const REPAIR_STEPS_MAX: usize = 64;
/// Repairs remembered for `hpchain chain status`.
const REPAIRS_KEPT: usize = 16;
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

/// Why records were not (all) taken by [`LedgerNode::submit_many`].
#[derive(Debug, thiserror::Error)]
#[error("ledger: {message}")]
pub struct SubmitError {
    pub message: String,
    /// Back-pressure, not a bad record: the pool is full, or this node's
    /// records run too far ahead of the blocks; retry after a slot.
    pub busy: bool,
    /// Records taken before the refusal (they stand).
    pub accepted: usize,
}

impl SubmitError {
    fn bad(message: String) -> SubmitError {
        SubmitError {
            message,
            busy: false,
            accepted: 0,
        }
    }
}

/// One node's ledger and its links to the other nodes.
#[derive(Clone)]
pub struct LedgerNode {
    me: NodeId,
    ledger: Arc<Mutex<Ledger>>,
    key: Option<Arc<Keypair>>,
    peers: Arc<Vec<(NodeId, LedgerGossipClient<Channel>)>>,
    /// The next nonce of this node's key; held while a batch is signed so
    /// that nonces stay gap-free.
    next_nonce: Arc<tokio::sync::Mutex<u64>>,
    auto_repair: bool,
    repairs: Arc<Mutex<Vec<RepairDone>>>,
}

/// One repair step this node made, for status and logs.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RepairDone {
    pub at_ms: u64,
    /// `blocks`, `index` or `state`.
    pub what: &'static str,
    /// Heights rewritten, inclusive.
    pub heights: Option<(u64, u64)>,
    /// The peer whose blocks were used.
    pub from_node: Option<NodeId>,
}

impl LedgerNode {
    /// Opens the ledger in `dir` from `genesis` and re-verifies every
    /// stored block; `key` makes this node a delegate candidate that
    /// produces blocks and signs audit records.
    pub fn open(
        me: NodeId,
        genesis: &Path,
        key: Option<&Path>,
        dir: &Path,
        peers: Vec<(NodeId, String)>,
        auto_repair: bool,
    ) -> Result<LedgerNode, LedgerNodeError> {
        let genesis = Genesis::load(genesis).map_err(|e| LedgerNodeError(e.to_string()))?;
        let store = RocksStore::open(dir).map_err(|e| LedgerNodeError(e.to_string()))?;
        let mut ledger =
            Ledger::open(genesis, Box::new(store)).map_err(|e| LedgerNodeError(e.to_string()))?;
        // Replaying the chain costs a signature check per transaction
        // (about 20,000 a second per core): seconds for a year of audit
        // records, and it keeps an altered block from ever being served.
        let started = std::time::Instant::now();
        match ledger.check_store() {
            Ok(report) => match &report.first_bad {
                None => tracing::info!(
                    "ledger: {} final blocks verified in {:?}",
                    report.final_height,
                    started.elapsed()
                ),
                Some(bad) => tracing::warn!(
                    "ledger: stored block {} is damaged ({}: {}); this node serves and builds on nothing from it until it is repaired from peers{}",
                    bad.height,
                    bad.code,
                    bad.reason,
                    if auto_repair { " (automatic)" } else { " (auto_repair is off: run `hpchain chain repair`)" }
                ),
            },
            Err(e) => tracing::warn!("ledger: cannot verify the stored chain: {e}"),
        }
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
            next_nonce: Arc::new(tokio::sync::Mutex::new(next_nonce)),
            auto_repair,
            repairs: Arc::new(Mutex::new(Vec::new())),
        })
    }

    /// The ledger, for queries.
    pub fn ledger(&self) -> Arc<Mutex<Ledger>> {
        self.ledger.clone()
    }

    /// The latest repairs this node made (oldest first).
    pub fn repairs(&self) -> Vec<RepairDone> {
        self.repairs.lock().expect("repairs lock").clone()
    }

    /// Whether damage found is repaired without an operator.
    pub fn auto_repair(&self) -> bool {
        self.auto_repair
    }

    fn record_repair(
        &self,
        repair: &hpchain_chain::ledger::Repair,
        from_node: Option<NodeId>,
    ) -> RepairDone {
        tracing::warn!(
            "ledger: repaired {} {:?}{}; {}",
            repair.what,
            repair.heights,
            from_node
                .map(|n| format!(" with blocks from node {n}"))
                .unwrap_or_default(),
            match &repair.remaining {
                None => "the stored chain verifies again".to_string(),
                Some(b) => format!("still damaged at block {} ({})", b.height, b.code),
            }
        );
        let done = RepairDone {
            at_ms: now_ms(),
            what: repair.what,
            heights: repair.heights,
            from_node,
        };
        let mut repairs = self.repairs.lock().expect("repairs lock");
        repairs.push(done.clone());
        let excess = repairs.len().saturating_sub(REPAIRS_KEPT);
        repairs.drain(..excess);
        done
    }

    /// Repairs the damage the last verification found: index entries and
    /// state from this node's own verified replay, blocks from the first
    /// peer whose copies lead back to the chain this node made final.
    /// Returns the steps made; fails naming the damage if no peer could
    /// repair it.
    pub async fn repair(&self) -> Result<Vec<RepairDone>, LedgerNodeError> {
        let mut done = Vec::new();
        for _ in 0..REPAIR_STEPS_MAX {
            let damage = self.ledger.lock().expect("ledger lock").damage().cloned();
            let Some(damage) = damage else { break };
            if matches!(damage.code.as_str(), "INDEX_MISMATCH" | "STATE_MISMATCH") {
                let repair = self
                    .ledger
                    .lock()
                    .expect("ledger lock")
                    .repair_with(&[])
                    .map_err(|e| LedgerNodeError(e.to_string()))?;
                done.push(self.record_repair(&repair, None));
                continue;
            }
            let mut refusals = Vec::new();
            let mut repaired = false;
            for (peer, _) in self.peers.iter() {
                let blocks = match self.blocks_from(*peer, damage.height - 1).await {
                    Ok(blocks) => blocks,
                    Err(e) => {
                        refusals.push(format!("node {peer}: {e}"));
                        continue;
                    }
                };
                let result = self
                    .ledger
                    .lock()
                    .expect("ledger lock")
                    .repair_with(&blocks);
                match result {
                    Ok(repair) => {
                        done.push(self.record_repair(&repair, Some(*peer)));
                        repaired = true;
                        break;
                    }
                    Err(e) => refusals.push(format!("node {peer}: {e}")),
                }
            }
            if !repaired {
                return Err(LedgerNodeError(format!(
                    "stored block {} is damaged ({}: {}) and no peer could repair it: {}",
                    damage.height,
                    damage.code,
                    damage.reason,
                    if refusals.is_empty() {
                        "this node has no peers".to_string()
                    } else {
                        refusals.join("; ")
                    }
                )));
            }
        }
        Ok(done)
    }

    /// Asks `peer` for its blocks above `height`.
    async fn blocks_from(
        &self,
        peer: NodeId,
        height: u64,
    ) -> Result<Vec<hpchain_chain::Block>, String> {
        let Some((_, client)) = self.peers.iter().find(|(id, _)| *id == peer) else {
            return Err("not a peer".into());
        };
        let request = LedgerEnvelope {
            from_node: self.me,
            message: LedgerMessage::GetBlocks {
                from_height: height,
                limit: CATCH_UP_BLOCKS_MAX,
            }
            .encode(),
        };
        let reply = client
            .clone()
            .gossip(request)
            .await
            .map_err(|e| format!("unreachable: {}", e.message()))?;
        match LedgerMessage::decode(&reply.into_inner().message) {
            Ok(LedgerMessage::Blocks(blocks)) => Ok(blocks),
            Ok(_) => Err("answered with something other than blocks".into()),
            Err(e) => Err(format!("sent an undecodable answer: {e}")),
        }
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
    pub async fn submit(&self, payload: Payload) -> Result<hpchain_chain::Hash32, LedgerNodeError> {
        match self.submit_many(vec![payload]).await {
            Ok(mut hashes) => Ok(hashes.remove(0)),
            Err(e) => Err(LedgerNodeError(e.message)),
        }
    }

    /// Signs transactions from this node's key with consecutive nonces,
    /// submits them in that order and gossips them in one message. Payloads
    /// are checked before any is signed; if the pool refuses one, those
    /// before it stand and the error says how many.
    pub async fn submit_many(
        &self,
        payloads: Vec<Payload>,
    ) -> Result<Vec<hpchain_chain::Hash32>, SubmitError> {
        let Some(key) = self.key.clone() else {
            return Err(SubmitError::bad(
                "this node has no ledger key; set [chain] key in its config".into(),
            ));
        };
        if payloads.is_empty() || payloads.len() > SUBMIT_BATCH_MAX {
            return Err(SubmitError::bad(format!(
                "{} records given; submit 1 to {SUBMIT_BATCH_MAX} at once",
                payloads.len()
            )));
        }
        for (i, p) in payloads.iter().enumerate() {
            p.check_well_formed()
                .map_err(|e| SubmitError::bad(format!("record {i}: {e}")))?;
        }
        let mut next = self.next_nonce.lock().await;
        let (chain, on_chain) = {
            let ledger = self.ledger.lock().expect("ledger lock");
            (
                ledger.chain_hash(),
                // Past any transaction a client signed with this key itself.
                ledger.pending_nonce(&key.public()),
            )
        };
        *next = (*next).max(on_chain);
        let first = *next;
        // Signing costs ~25 us a record: off the async threads.
        let signed = tokio::task::spawn_blocking(move || {
            payloads
                .into_iter()
                .zip(first..)
                .map(|(p, nonce)| Transaction::signed_checked(chain, &key, nonce, p))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| SubmitError::bad(format!("signing task failed: {e}")))?
        .map_err(|e| SubmitError::bad(e.to_string()))?;
        let mut hashes = Vec::with_capacity(signed.len());
        let mut txs = Vec::with_capacity(signed.len());
        let mut refused = None;
        {
            let mut ledger = self.ledger.lock().expect("ledger lock");
            for checked in signed {
                let tx = checked.tx().clone();
                match ledger.submit_checked(checked) {
                    Ok(h) => {
                        hashes.push(h);
                        txs.push(tx);
                    }
                    Err(e) => {
                        refused = Some(e);
                        break;
                    }
                }
            }
        }
        *next = first + hashes.len() as u64;
        drop(next);
        match txs.len() {
            0 => {}
            1 => self.broadcast(LedgerMessage::Tx(txs.remove(0))).await,
            _ => self.broadcast(LedgerMessage::Txs(txs)).await,
        }
        let Some(e) = refused else {
            return Ok(hashes);
        };
        let busy = matches!(
            &e,
            hpchain_chain::Error::Tx { reason, .. }
                if matches!(**reason, hpchain_chain::TxError::PoolFull(_) | hpchain_chain::TxError::WrongNonce { .. })
        );
        let accepted = hashes.len();
        Err(SubmitError {
            message: if busy {
                format!(
                    "busy: {} records wait for blocks ({e}); {accepted} of this request were taken; send the rest again after a slot",
                    self.ledger.lock().expect("ledger lock").pool_len()
                )
            } else {
                format!("record {accepted} refused: {e}; the {accepted} before it were taken")
            },
            busy,
            accepted,
        })
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
            LedgerMessage::Txs(txs) => {
                // Signatures are checked off the async threads and outside
                // the ledger's lock; the pool takes them in order.
                let chain = self.ledger.lock().expect("ledger lock").chain_hash();
                let checked = tokio::task::spawn_blocking(move || {
                    txs.into_iter()
                        .filter_map(|t| t.checked(&chain).ok())
                        .collect::<Vec<_>>()
                })
                .await
                .unwrap_or_default();
                let mut ledger = self.ledger.lock().expect("ledger lock");
                for c in checked {
                    let _ = ledger.submit_checked(c);
                }
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
                let mut blocks = self
                    .ledger
                    .lock()
                    .expect("ledger lock")
                    .blocks_since(from_height, limit.min(CATCH_UP_BLOCKS_MAX) as usize)
                    .unwrap_or_default();
                // At least one block, then as many as fit the reply.
                let mut bytes = 0;
                let fit = blocks
                    .iter()
                    .take_while(|b| {
                        bytes += b.encode().len();
                        bytes <= CATCH_UP_BYTES_MAX
                    })
                    .count()
                    .max(1);
                blocks.truncate(fit);
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
        let from_height = self.ledger.lock().expect("ledger lock").final_height();
        if let Ok(blocks) = self.blocks_from(peer, from_height).await {
            self.import_all(blocks);
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
            // Every ~2 s ask one peer for what we may have missed, and
            // repair damage found meanwhile.
            if rounds.is_multiple_of(8) && self.auto_repair {
                let damaged = self.ledger.lock().expect("ledger lock").damage().is_some();
                if damaged {
                    if let Err(e) = self.repair().await {
                        tracing::warn!("ledger: {e}; retrying");
                    }
                }
            }
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
