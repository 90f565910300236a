//! The ledger: the fork tree of non-final blocks above the last final block,
//! fork choice, finality, the pending-transaction pool, block production and
//! import, and the queries a transport or an API needs. It owns a
//! [`ChainStore`] and never does network I/O: a transport carries
//! [`Block`]s, [`Transaction`]s and [`Confirmation`]s (all with canonical
//! encodings) between ledgers. Queries live in `query.rs`.

mod query;
mod repair;

pub use repair::Repair;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use crate::block::{Block, Confirmation, SignedHeader, MAX_BLOCK_TXS};
use crate::crypto::{Hash32, Keypair, PublicKey};
use crate::dpos::{self, ParentView};
use crate::error::{BlockError, Error, Result, TxError};
use crate::genesis::Genesis;
use crate::state::State;
use crate::store::{ChainStore, FinalCommit, FinalTip};
use crate::tx::{CheckedTx, Payload, Transaction};
use crate::verify::BadBlock;

/// Most transactions held in the pending pool.
pub const MAX_POOL_TXS: usize = 200_000;
/// How far ahead of an account's next nonce a pending transaction may be.
pub const MAX_NONCE_AHEAD: u64 = 10_000;
/// Most non-final blocks kept; beyond it imports are refused until finality
/// advances (a bound on memory during a long partition).
pub const MAX_UNFINAL_BLOCKS: usize = 100_000;

/// What `import_block` did with a valid block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImportOutcome {
    /// Already known (in the tree, or final).
    AlreadyKnown,
    /// The block extends the best chain and is the new head.
    Extended { head: Hash32, height: u64 },
    /// The block is valid but on a branch that is not (yet) the best.
    SideBranch { height: u64 },
    /// The block made another branch the best one.
    Reorganized {
        old_head: Hash32,
        new_head: Hash32,
        height: u64,
    },
}

/// Two blocks signed by the same producer for the same slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Equivocation {
    pub producer: PublicKey,
    pub slot: u64,
    pub first: SignedHeader,
    pub second: SignedHeader,
}

/// A summary for `hpchain chain status` and the management API.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ChainStatus {
    pub chain_id: String,
    pub chain_hash: Hash32,
    pub head_height: u64,
    pub head_hash: Hash32,
    pub head_slot: u64,
    pub final_height: u64,
    pub final_hash: Hash32,
    /// The round these delegates serve: the head's round from
    /// [`Ledger::status`], the clock's from [`Ledger::status_at`].
    pub round: u64,
    /// Seats in a delegate set (the genesis's `delegate_count`).
    pub delegate_seats: u32,
    /// Delegates of `round`, in production order.
    pub delegates: Vec<PublicKey>,
    /// Distinct confirmers a block needs to become final.
    pub finality_threshold: usize,
    /// Every candidate, in election order (votes, then registration), with
    /// the votes of the head state: the top `delegate_seats` of this list
    /// are the delegates of the next round.
    pub candidates: Vec<CandidateStatus>,
    pub pending_txs: usize,
    pub equivocations: usize,
    /// The first stored block that failed verification, until repaired.
    pub damaged: Option<BadBlock>,
}

/// One delegate candidate as [`ChainStatus`] shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CandidateStatus {
    pub key: PublicKey,
    pub name: String,
    /// Stake-weighted votes, in units.
    pub votes: u64,
    /// `votes` in HP, exact (`format_hp`).
    pub votes_hp: String,
    /// Whether it is in the delegate set of the status's `round`.
    pub delegate: bool,
}

struct Node {
    block: Option<Arc<Block>>, // None only for the genesis root
    height: u64,
    slot: u64,
    parent: Hash32,
    state: Arc<State>,
    active: Arc<Vec<PublicKey>>,
    tx_hashes: Vec<Hash32>,
}

/// The embedded DPoS ledger of one node.
pub struct Ledger {
    genesis: Genesis,
    chain: Hash32,
    store: Box<dyn ChainStore>,
    nodes: HashMap<Hash32, Node>,
    final_hash: Hash32,
    final_height: u64,
    head: Hash32,
    confirmations: HashMap<Hash32, BTreeMap<PublicKey, Confirmation>>,
    pool: BTreeMap<u64, Transaction>,
    pool_index: HashMap<Hash32, u64>,
    pool_seq: u64,
    produced: HashMap<(PublicKey, u64), SignedHeader>,
    equivocations: Vec<Equivocation>,
    /// Set by [`Ledger::check_store`] (or a tip block that fails to read at
    /// open); cleared by a repair.
    damage: Option<BadBlock>,
}

impl Ledger {
    /// Opens the ledger in `store`: initialises a new store from `genesis`,
    /// or resumes from the final tip and pending blocks of an existing one
    /// (which must hold the same genesis).
    pub fn open(genesis: Genesis, mut store: Box<dyn ChainStore>) -> Result<Self> {
        genesis.validate()?;
        let chain = genesis.chain_hash();
        match store.genesis()? {
            None => {
                let state = State::from_genesis(&genesis);
                let tip = FinalTip {
                    height: 0,
                    hash: chain,
                    slot: 0,
                    active: state.elect(genesis.delegate_count as usize),
                };
                store.init(&genesis, &state, &tip)?;
            }
            Some(g) if g.chain_hash() != chain => {
                return Err(Error::Genesis(format!(
                    "the store holds chain {:#} ({}), the genesis given is chain {:#} ({}); use the matching genesis file or a new data directory",
                    g.chain_hash(),
                    g.chain_id,
                    chain,
                    genesis.chain_id
                )))
            }
            Some(_) => {}
        }
        let tip = store.final_tip()?;
        let state = store.load_state()?;
        // A damaged tip block must not keep the node from starting: it is
        // repaired from peers like any other damaged block.
        let (tip_block, damage) = match tip.height {
            0 => (None, None),
            h => match store.block_at(h) {
                Ok(Some(b)) => (Some(Arc::new(b)), None),
                Ok(None) => (None, Some(("BLOCK_MISSING", "no block stored".to_string()))),
                Err(e) => (None, Some((e.code(), e.to_string()))),
            },
        };
        let damage = damage.map(|(code, reason)| BadBlock {
            height: tip.height,
            code: code.to_string(),
            reason,
        });
        let root = Node {
            block: tip_block,
            height: tip.height,
            slot: tip.slot,
            parent: Hash32::ZERO,
            state: Arc::new(state),
            active: Arc::new(tip.active.clone()),
            tx_hashes: vec![],
        };
        let mut l = Ledger {
            genesis,
            chain,
            store,
            nodes: HashMap::from([(tip.hash, root)]),
            final_hash: tip.hash,
            final_height: tip.height,
            head: tip.hash,
            confirmations: HashMap::new(),
            pool: BTreeMap::new(),
            pool_index: HashMap::new(),
            pool_seq: 0,
            produced: HashMap::new(),
            equivocations: vec![],
            damage,
        };
        let mut pending = l.store.pending()?;
        pending.sort_by_key(|b| b.header.height);
        for b in pending {
            // Stale or invalid pending blocks are dropped; they are not final.
            let _ = l.import_block(b);
        }
        Ok(l)
    }

    /// A summary of the chain as this node sees it, as of the head block:
    /// `round` and `delegates` are the head's.
    pub fn status(&self) -> ChainStatus {
        let head = &self.nodes[&self.head];
        let n = self.genesis.delegate_count;
        self.summary(dpos::round_of(head.slot, n), head.active.as_ref().clone())
    }

    /// Like [`Ledger::status`], but for the round the clock is in at
    /// `now_ms`: its delegates are those the next block on the head will be
    /// checked against (the head's set while the round lasts, then a new
    /// election from the head state). This is what an operator means by
    /// "the current delegates", even while no block of the round exists yet.
    pub fn status_at(&self, now_ms: u64) -> ChainStatus {
        let slot = self.slot_at(now_ms).max(self.head_slot());
        let round = dpos::round_of(slot, self.genesis.delegate_count);
        self.summary(round, self.delegates_for_slot(slot))
    }

    fn summary(&self, round: u64, delegates: Vec<PublicKey>) -> ChainStatus {
        let head = &self.nodes[&self.head];
        let mut candidates: Vec<(&PublicKey, &crate::state::Candidate)> =
            head.state.candidates.iter().collect();
        // The order `State::elect` ranks them in.
        candidates.sort_by(|a, b| b.1.votes.cmp(&a.1.votes).then(a.1.order.cmp(&b.1.order)));
        let candidates = candidates
            .into_iter()
            .map(|(k, c)| CandidateStatus {
                key: *k,
                name: c.name.clone(),
                votes: c.votes,
                votes_hp: crate::tx::format_hp(c.votes),
                delegate: delegates.contains(k),
            })
            .collect();
        ChainStatus {
            chain_id: self.genesis.chain_id.clone(),
            chain_hash: self.chain,
            head_height: head.height,
            head_hash: self.head,
            head_slot: head.slot,
            final_height: self.final_height,
            final_hash: self.final_hash,
            round,
            delegate_seats: self.genesis.delegate_count,
            finality_threshold: dpos::finality_threshold(delegates.len()),
            delegates,
            candidates,
            pending_txs: self.pool.len(),
            equivocations: self.equivocations.len(),
            damaged: self.damage.clone(),
        }
    }

    /// The genesis.
    pub fn genesis(&self) -> &Genesis {
        &self.genesis
    }
    /// The chain hash every transaction and block must carry.
    pub fn chain_hash(&self) -> Hash32 {
        self.chain
    }
    /// Hash and height of the best block.
    pub fn head(&self) -> (Hash32, u64) {
        (self.head, self.nodes[&self.head].height)
    }
    /// Slot of the best block.
    pub fn head_slot(&self) -> u64 {
        self.nodes[&self.head].slot
    }
    /// Hash and height of the last final (irreversible) block; height 0 and
    /// the chain hash before any block is final.
    pub fn final_block(&self) -> (Hash32, u64) {
        (self.final_hash, self.final_height)
    }
    /// Height of the last final block.
    pub fn final_height(&self) -> u64 {
        self.final_height
    }
    /// The state after the best block.
    pub fn head_state(&self) -> &State {
        &self.nodes[&self.head].state
    }
    /// Equivocations seen (two blocks by one producer in one slot).
    pub fn equivocations(&self) -> &[Equivocation] {
        &self.equivocations
    }
    /// Number of pending transactions.
    pub fn pool_len(&self) -> usize {
        self.pool.len()
    }
    /// The underlying store (for `verify_chain` and queries).
    pub fn store(&self) -> &dyn ChainStore {
        self.store.as_ref()
    }

    /// The slot that contains `time_ms` (0 before genesis).
    pub fn slot_at(&self, time_ms: u64) -> u64 {
        time_ms.saturating_sub(self.genesis.genesis_time_ms) / self.genesis.slot_time_ms
    }

    /// The delegate set that a block in `slot` on top of the head would have.
    pub fn delegates_for_slot(&self, slot: u64) -> Vec<PublicKey> {
        let n = &self.nodes[&self.head];
        dpos::active_for(&self.genesis, &self.view(&self.head, n), slot)
            .as_ref()
            .clone()
    }

    /// The delegate scheduled to produce in `slot` on top of the head.
    pub fn scheduled_producer(&self, slot: u64) -> Option<PublicKey> {
        dpos::producer_for(&self.delegates_for_slot(slot), slot)
    }

    fn view<'a>(&self, hash: &Hash32, n: &'a Node) -> ParentView<'a> {
        ParentView {
            hash: *hash,
            height: n.height,
            slot: n.slot,
            state: &n.state,
            active: &n.active,
        }
    }

    /// Validates a transaction and adds it to the pending pool. Checks the
    /// signature, the chain, the payload and that the nonce is not already
    /// used; balance is checked when a block includes it.
    pub fn submit_tx(&mut self, tx: Transaction) -> Result<Hash32> {
        let h = tx.hash();
        if self.pool_index.contains_key(&h) {
            return Err(Error::Tx {
                tx: h,
                reason: Box::new(TxError::Duplicate),
            });
        }
        let checked = tx.checked(&self.chain).map_err(|reason| Error::Tx {
            tx: h,
            reason: Box::new(reason),
        })?;
        self.submit_checked(checked)
    }

    /// [`Ledger::submit_tx`] for a transaction whose stateless checks
    /// already passed (see [`CheckedTx`]).
    pub fn submit_checked(&mut self, checked: CheckedTx) -> Result<Hash32> {
        let tx = checked.into_inner();
        let h = tx.hash();
        let err = |reason| Error::Tx {
            tx: h,
            reason: Box::new(reason),
        };
        if self.pool_index.contains_key(&h) {
            return Err(err(TxError::Duplicate));
        }
        if self.pool.len() >= MAX_POOL_TXS {
            return Err(err(TxError::PoolFull(MAX_POOL_TXS)));
        }
        if tx.chain != self.chain {
            return Err(err(TxError::WrongChain {
                expected: self.chain,
                got: tx.chain,
            }));
        }
        let expected = self.head_state().next_nonce(&tx.from);
        if tx.nonce < expected || tx.nonce > expected + MAX_NONCE_AHEAD {
            return Err(err(TxError::WrongNonce {
                account: tx.from,
                expected,
                got: tx.nonce,
            }));
        }
        self.pool_seq += 1;
        self.pool.insert(self.pool_seq, tx);
        self.pool_index.insert(h, self.pool_seq);
        Ok(h)
    }

    /// The nonce a new transaction from `k` should carry: the head state's
    /// next nonce, past the run of `k`'s pending transactions that follow it.
    pub fn pending_nonce(&self, k: &PublicKey) -> u64 {
        let pending: HashSet<u64> = self
            .pool
            .values()
            .filter(|t| t.from == *k)
            .map(|t| t.nonce)
            .collect();
        let mut next = self.head_state().next_nonce(k);
        while pending.contains(&next) {
            next += 1;
        }
        next
    }

    /// Checks a transaction a client is about to submit against the state
    /// it will meet: the head state after the pending transactions that can
    /// change its outcome (the sender's own, transfers to the sender,
    /// candidate registrations). [`Ledger::submit_tx`] checks only what
    /// holds whatever the state, because a peer's gossip may run ahead of
    /// this node's head; a client, though, should hear "balance too low" or
    /// "nonce already used" now rather than see its transaction dropped at
    /// block time. Advisory: a transaction that passes can still be refused
    /// if the state changes first (another transaction with the same nonce
    /// is included before it).
    pub fn check_new_tx(&self, tx: &Transaction) -> Result<()> {
        let h = tx.hash();
        let err = |reason| Error::Tx {
            tx: h,
            reason: Box::new(reason),
        };
        if self.pool_index.contains_key(&h) {
            return Err(err(TxError::Duplicate));
        }
        tx.check_stateless(&self.chain).map_err(err)?;
        // Senders whose pending transactions matter, with all of theirs so
        // that their nonces line up.
        let mut senders: HashSet<PublicKey> = HashSet::from([tx.from]);
        for pending in self.pool.values() {
            match &pending.payload {
                Payload::Transfer { to, .. } if *to == tx.from => {}
                Payload::RegisterCandidate { .. } => {}
                _ => continue,
            }
            senders.insert(pending.from);
        }
        let mut state = self.head_state().clone();
        for pending in self.pool.values().filter(|p| senders.contains(&p.from)) {
            // One that fails here would be left out of a block too.
            let _ = state.apply(pending);
        }
        state.check(tx).map_err(err)
    }

    fn pool_remove(&mut self, h: &Hash32) {
        if let Some(seq) = self.pool_index.remove(h) {
            self.pool.remove(&seq);
        }
    }

    /// Produces, signs and imports a block in `slot` with `key`, if `key` is
    /// the delegate scheduled for that slot on top of the head. Takes up to
    /// `max_txs` pending transactions that are valid in order; invalid ones
    /// with a stale nonce are dropped from the pool.
    pub fn produce_block(&mut self, slot: u64, key: &Keypair, max_txs: usize) -> Result<Block> {
        self.refuse_if_damaged(0)?;
        let head = self.head;
        let n = &self.nodes[&head];
        if slot <= n.slot {
            return Err(Error::StaleSlot {
                slot,
                head_slot: n.slot,
            });
        }
        let active = dpos::active_for(&self.genesis, &self.view(&head, n), slot);
        let expected = dpos::producer_for(&active, slot)
            .ok_or_else(|| Error::Genesis("no delegate candidates elected".into()))?;
        if expected != key.public() {
            return Err(Error::NotMyTurn {
                slot,
                key: key.public(),
                expected,
            });
        }
        let mut state = (*n.state).clone();
        let parent_height = n.height;
        let mut txs = Vec::new();
        let mut stale = Vec::new();
        let max_txs = max_txs.min(MAX_BLOCK_TXS);
        for tx in self.pool.values() {
            if txs.len() >= max_txs {
                break;
            }
            match state.apply(tx) {
                Ok(()) => txs.push(tx.clone()),
                Err(TxError::WrongNonce { expected, got, .. }) if got > expected => {} // later
                Err(_) => stale.push(tx.hash()),
            }
        }
        for h in stale {
            self.pool_remove(&h);
        }
        let ts = self.genesis.genesis_time_ms + slot * self.genesis.slot_time_ms;
        let block = Block::build(self.chain, parent_height + 1, slot, ts, head, txs, key);
        self.import_block(block.clone())?;
        Ok(block)
    }

    /// Validates and imports a block received from a peer (or produced here).
    /// A block whose parent is unknown fails with `BlockError::UnknownParent`:
    /// fetch `blocks_since` from the sender first. A block that forks off
    /// below the final block fails with `ConflictsWithFinal`.
    pub fn import_block(&mut self, b: Block) -> Result<ImportOutcome> {
        let hash = b.hash();
        let height = b.header.height;
        let err = |reason: BlockError| Error::Block {
            height,
            hash,
            reason: Box::new(reason),
        };
        if self.nodes.contains_key(&hash) {
            return Ok(ImportOutcome::AlreadyKnown);
        }
        if height <= self.final_height {
            return match self.store.block_at(height)? {
                Some(fb) if fb.hash() == hash => Ok(ImportOutcome::AlreadyKnown),
                _ => Err(err(BlockError::ConflictsWithFinal {
                    final_height: self.final_height,
                })),
            };
        }
        let Some(parent) = self.nodes.get(&b.header.prev_hash) else {
            if height == self.final_height + 1 {
                return Err(err(BlockError::ConflictsWithFinal {
                    final_height: self.final_height,
                }));
            }
            return Err(err(BlockError::UnknownParent(b.header.prev_hash)));
        };
        if self.nodes.len() >= MAX_UNFINAL_BLOCKS {
            return Err(err(BlockError::TooLarge(format!(
                "{MAX_UNFINAL_BLOCKS} non-final blocks held; waiting for finality"
            ))));
        }
        // Pending-pool transactions passed their stateless checks on entry.
        let pool = &self.pool_index;
        let v = dpos::validate_block(
            &self.genesis,
            &self.chain,
            &self.view(&b.header.prev_hash, parent),
            &b,
            &|h| pool.contains_key(h),
        )
        .map_err(err)?;
        self.store.put_pending(&b)?;
        let key = (b.header.producer, b.header.slot);
        match self.produced.get(&key) {
            Some(first) if first.header.hash() != hash => self.equivocations.push(Equivocation {
                producer: key.0,
                slot: key.1,
                first: first.clone(),
                second: b.signed_header(),
            }),
            Some(_) => {}
            None => {
                self.produced.insert(key, b.signed_header());
            }
        }
        for h in &v.tx_hashes {
            self.pool_remove(h);
        }
        self.nodes.insert(
            hash,
            Node {
                height,
                slot: b.header.slot,
                parent: b.header.prev_hash,
                state: Arc::new(v.state),
                active: v.active,
                tx_hashes: v.tx_hashes,
                block: Some(Arc::new(b)),
            },
        );
        let old_head = self.head;
        let (_, head_height) = self.head();
        // Fork choice: the longest chain; equal heights go to the lower hash so
        // that every node picks the same branch.
        let better = height > head_height || (height == head_height && hash < old_head);
        let outcome = if !better {
            ImportOutcome::SideBranch { height }
        } else if self.nodes[&hash].parent == old_head {
            self.head = hash;
            ImportOutcome::Extended { head: hash, height }
        } else {
            self.head = hash;
            ImportOutcome::Reorganized {
                old_head,
                new_head: hash,
                height,
            }
        };
        self.advance_finality()?;
        Ok(outcome)
    }

    /// Like [`Ledger::import_block`], but first refuses a block whose slot
    /// starts after the slot containing `now_ms` plus `max_drift_slots` (a
    /// producer must not sign ahead of time). Transports should call this.
    pub fn import_block_at(
        &mut self,
        b: Block,
        now_ms: u64,
        max_drift_slots: u64,
    ) -> Result<ImportOutcome> {
        let now_slot = self.slot_at(now_ms);
        if b.header.slot > now_slot.saturating_add(max_drift_slots) {
            return Err(Error::Block {
                height: b.header.height,
                hash: b.hash(),
                reason: Box::new(BlockError::BadTime(format!(
                    "slot {} is in the future (now slot {now_slot}, drift allowance {max_drift_slots})",
                    b.header.slot
                ))),
            });
        }
        self.import_block(b)
    }

    /// Signs a confirmation of the head with a delegate key and records it.
    /// Broadcast the result to peers (`import_confirmation`).
    pub fn confirm_head(&mut self, key: &Keypair) -> Result<Confirmation> {
        self.refuse_if_damaged(0)?;
        let (h, height) = self.head();
        let c = Confirmation::sign(self.chain, height, h, key);
        self.import_confirmation(c.clone())?;
        Ok(c)
    }

    /// Records a delegate's confirmation of a non-final block; it counts toward
    /// the finality of that block and its ancestors. Confirmations of blocks
    /// already final are accepted and ignored.
    pub fn import_confirmation(&mut self, c: Confirmation) -> Result<()> {
        let err = |reason: String| Error::Confirmation {
            block: c.block,
            delegate: c.delegate,
            reason,
        };
        if c.chain != self.chain {
            return Err(err("made for another chain".into()));
        }
        if !c.verify_signature() {
            return Err(err("bad signature".into()));
        }
        if c.height <= self.final_height {
            return Ok(());
        }
        let Some(n) = self.nodes.get(&c.block) else {
            return Err(err("unknown block; import it first".into()));
        };
        if n.height != c.height {
            return Err(err(format!(
                "block is at height {}, not {}",
                n.height, c.height
            )));
        }
        if !n.active.contains(&c.delegate) {
            return Err(err("not a delegate of the block's round".into()));
        }
        self.confirmations
            .entry(c.block)
            .or_default()
            .insert(c.delegate, c);
        self.advance_finality()
    }

    /// Walks from the head down to the final block accumulating producers and
    /// confirmers; the highest block confirmed by more than 2/3 of its round's
    /// delegates becomes final, with all its ancestors.
    fn advance_finality(&mut self) -> Result<()> {
        let mut seen: HashSet<PublicKey> = HashSet::new();
        let mut cur = self.head;
        let mut new_final = None;
        while cur != self.final_hash {
            let n = &self.nodes[&cur];
            if let Some(b) = &n.block {
                seen.insert(b.header.producer);
            }
            if let Some(cs) = self.confirmations.get(&cur) {
                seen.extend(cs.keys().copied());
            }
            let count = n.active.iter().filter(|k| seen.contains(k)).count();
            if dpos::is_final_count(count, n.active.len()) {
                new_final = Some(cur);
                break;
            }
            cur = n.parent;
        }
        match new_final {
            Some(f) => self.finalize(f),
            None => Ok(()),
        }
    }

    fn finalize(&mut self, f: Hash32) -> Result<()> {
        let mut path = Vec::new();
        let mut cur = f;
        while cur != self.final_hash {
            path.push(cur);
            cur = self.nodes[&cur].parent;
        }
        path.reverse();
        let blocks: Vec<Block> = path
            .iter()
            .map(|h| (**self.nodes[h].block.as_ref().expect("non-root has a block")).clone())
            .collect();
        let mut touched = BTreeSet::new();
        for b in &blocks {
            for t in &b.txs {
                touched.insert(t.from);
                if let Payload::Transfer { to, .. } = &t.payload {
                    touched.insert(*to);
                }
            }
        }
        let fnode = &self.nodes[&f];
        // Keep only descendants of the new final block.
        let mut by_height: Vec<(u64, Hash32)> =
            self.nodes.iter().map(|(h, n)| (n.height, *h)).collect();
        by_height.sort();
        let mut keep: HashSet<Hash32> = HashSet::from([f]);
        let mut drop = Vec::new();
        for (height, h) in by_height {
            if height <= fnode.height {
                if h != f {
                    drop.push(h);
                }
            } else if keep.contains(&self.nodes[&h].parent) {
                keep.insert(h);
            } else {
                drop.push(h);
            }
        }
        let tip = FinalTip {
            height: fnode.height,
            hash: f,
            slot: fnode.slot,
            active: fnode.active.as_ref().clone(),
        };
        let mut drop_pending: Vec<Hash32> = drop.clone();
        drop_pending.push(f);
        self.store.commit_final(&FinalCommit {
            blocks: &blocks,
            state: &fnode.state,
            touched: &touched,
            tip: &tip,
            drop_pending: &drop_pending,
        })?;
        let final_txs: HashSet<Hash32> = blocks.iter().flat_map(|b| b.tx_hashes()).collect();
        for h in drop {
            if let Some(n) = self.nodes.remove(&h) {
                self.confirmations.remove(&h);
                // Give transactions of abandoned branches another chance.
                if let Some(b) = n.block {
                    if h != self.final_hash && !path.contains(&h) {
                        for t in &b.txs {
                            if !final_txs.contains(&t.hash()) {
                                let _ = self.submit_tx(t.clone());
                            }
                        }
                    }
                }
            }
        }
        self.final_hash = f;
        self.final_height = tip.height;
        let fh = self.final_height;
        self.produced.retain(|_, sh| sh.header.height > fh);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The daemon keeps the ledger behind a mutex shared by async tasks.
    #[test]
    fn ledger_can_move_between_threads() {
        fn assert_send<T: Send + 'static>() {}
        assert_send::<Ledger>();
        let (g, _, _) = Genesis::deterministic("send", 3, 1000, "send");
        let l = Ledger::open(g, Box::new(crate::store::MemoryStore::new())).unwrap();
        let h = std::thread::spawn(move || l.head().1).join().unwrap();
        assert_eq!(h, 0);
    }

    fn reason(e: Error) -> TxError {
        match e {
            Error::Tx { reason, .. } => *reason,
            other => panic!("not a transaction error: {other}"),
        }
    }

    #[test]
    fn new_transactions_meet_the_head_state_after_the_relevant_pending_ones() {
        let (g, d, h) = Genesis::deterministic("wallet", 1, 1000, "wallet");
        let chain = g.chain_hash();
        let mut l = Ledger::open(g, Box::new(crate::store::MemoryStore::new())).unwrap();
        let a = &h[0];
        let to = Keypair::from_seed(b"to").public();
        let transfer =
            |nonce, amount| Transaction::signed(chain, a, nonce, Payload::Transfer { to, amount });
        let balance = l.head_state().balance(&a.public());
        let first = transfer(0, balance - 5);
        l.check_new_tx(&first).unwrap();
        l.submit_tx(first.clone()).unwrap();
        assert_eq!(l.pending_nonce(&a.public()), 1);
        assert_eq!(
            reason(l.check_new_tx(&first).unwrap_err()),
            TxError::Duplicate
        );
        // What the pending transfer leaves is what the next one may spend.
        assert!(matches!(
            reason(l.check_new_tx(&transfer(1, 6)).unwrap_err()),
            TxError::InsufficientBalance {
                balance: 5,
                needed: 6,
                ..
            }
        ));
        assert!(matches!(
            reason(l.check_new_tx(&transfer(2, 1)).unwrap_err()),
            TxError::WrongNonce {
                expected: 1,
                got: 2,
                ..
            }
        ));
        l.produce_block(1, &d[0], 10).unwrap();
        assert_eq!(l.pool_len(), 0);
        assert_eq!(l.pending_nonce(&a.public()), 1);
        // A replay of the included transaction: its nonce is used.
        for e in [
            l.check_new_tx(&first).unwrap_err(),
            l.submit_tx(first.clone()).unwrap_err(),
        ] {
            assert!(matches!(
                reason(e),
                TxError::WrongNonce {
                    expected: 1,
                    got: 0,
                    ..
                }
            ));
        }
        // A vote may name a candidate whose registration is still pending.
        let newcomer = Keypair::from_seed(b"newcomer");
        let register = Transaction::signed(
            chain,
            &newcomer,
            0,
            Payload::RegisterCandidate { name: "new".into() },
        );
        let vote = Transaction::signed(
            chain,
            &h[1],
            0,
            Payload::Vote {
                candidates: vec![newcomer.public()],
            },
        );
        assert_eq!(
            reason(l.check_new_tx(&vote).unwrap_err()),
            TxError::UnknownCandidate(newcomer.public())
        );
        l.submit_tx(register).unwrap();
        l.check_new_tx(&vote).unwrap();
    }

    #[test]
    fn status_ranks_candidates_and_names_the_clock_rounds_delegates() {
        let (g, d, h) = Genesis::deterministic("status", 2, 1000, "status");
        let chain = g.chain_hash();
        let t0 = g.genesis_time_ms;
        let mut l = Ledger::open(g, Box::new(crate::store::MemoryStore::new())).unwrap();
        let s = l.status();
        assert_eq!((s.round, s.delegate_seats, s.delegates.len()), (0, 2, 2));
        assert!(s.candidates.iter().all(|c| c.delegate && c.votes == 0));
        // A third candidate, voted for in round 0, sits in round 1's set
        // as soon as the clock is in round 1, before any block of it exists.
        let newcomer = Keypair::from_seed(b"newcomer");
        for tx in [
            Transaction::signed(
                chain,
                &newcomer,
                0,
                Payload::RegisterCandidate { name: "new".into() },
            ),
            Transaction::signed(
                chain,
                &h[4],
                0,
                Payload::Vote {
                    candidates: vec![newcomer.public()],
                },
            ),
        ] {
            l.submit_tx(tx).unwrap();
        }
        let producer = d
            .iter()
            .find(|k| l.scheduled_producer(1) == Some(k.public()))
            .unwrap();
        l.produce_block(1, producer, 10).unwrap();
        let head_round = l.status();
        assert!(!head_round.delegates.contains(&newcomer.public()));
        assert_eq!(head_round.candidates[0].key, newcomer.public());
        assert_eq!(head_round.candidates[0].votes_hp, "30000000");
        let now = l.status_at(t0 + 2 * 1000);
        assert_eq!(now.round, 1);
        assert!(now.delegates.contains(&newcomer.public()));
        assert_eq!(now.delegates.len(), 2);
        assert!(now.candidates[0].delegate);
        assert_eq!(now.candidates.iter().filter(|c| c.delegate).count(), 2);
    }
}
