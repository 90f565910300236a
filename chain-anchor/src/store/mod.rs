//! Where final blocks, indexes and state live. The ledger talks to a
//! [`ChainStore`]; [`MemoryStore`] serves tests and simulations,
//! [`RocksStore`] serves nodes. A store only ever holds *final* blocks in its
//! height index (final blocks are never reverted, so that index never needs
//! undoing) and keeps non-final blocks in a separate pending set so that a
//! restart can rebuild the fork tree.

mod memory;
mod rocks;

pub use memory::MemoryStore;
pub use rocks::{RocksStore, ALL_COLUMN_FAMILIES, CF_BLOCKS, CF_HEIGHTS, CF_META, CF_TXS};

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::block::Block;
use crate::crypto::{Hash32, PublicKey};
use crate::error::Result;
use crate::genesis::Genesis;
use crate::state::State;

/// Where a transaction is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxLocation {
    pub height: u64,
    pub block: Hash32,
    pub index: u32,
}

/// Secondary indexes of final records, for `audit ls` and anchor look-ups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RecordIndex {
    /// Audit records by their exact `target` (e.g. "volume/demo").
    AuditTarget = 1,
    /// Anchors by `volume_id`.
    AnchorVolume = 2,
}

impl RecordIndex {
    /// The index entries a transaction creates: (index, key).
    pub fn entries(p: &crate::tx::Payload) -> Option<(RecordIndex, &str)> {
        match p {
            crate::tx::Payload::Audit(a) => Some((RecordIndex::AuditTarget, a.target.as_str())),
            crate::tx::Payload::Anchor(a) => {
                Some((RecordIndex::AnchorVolume, a.volume_id.as_str()))
            }
            _ => None,
        }
    }
}

/// The last final block and what is needed to resume from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinalTip {
    pub height: u64,
    pub hash: Hash32,
    pub slot: u64,
    /// The delegates of the final block's round, in production order.
    pub active: Vec<PublicKey>,
}

/// Everything that becomes final at once; a store writes it atomically.
pub struct FinalCommit<'a> {
    /// Newly final blocks, ascending, the first one's parent being the
    /// previous final tip.
    pub blocks: &'a [Block],
    /// State after the last of `blocks`.
    pub state: &'a State,
    /// Accounts whose entries may have changed in `blocks` (candidates are
    /// always rewritten: there are few).
    pub touched: &'a BTreeSet<PublicKey>,
    /// The new final tip.
    pub tip: &'a FinalTip,
    /// Pending blocks to forget (now final, or on a branch that lost).
    pub drop_pending: &'a [Hash32],
}

/// Persistent storage of the ledger.
pub trait ChainStore: Send {
    /// The genesis this store was initialised with, if any.
    fn genesis(&self) -> Result<Option<Genesis>>;
    /// Records the genesis and its state in a new store.
    fn init(&mut self, g: &Genesis, state: &State, tip: &FinalTip) -> Result<()>;
    /// The last final block.
    fn final_tip(&self) -> Result<FinalTip>;
    /// The state after the last final block.
    fn load_state(&self) -> Result<State>;
    /// Keeps a not-yet-final block, so it survives a restart.
    fn put_pending(&mut self, b: &Block) -> Result<()>;
    /// All pending blocks (any order).
    fn pending(&self) -> Result<Vec<Block>>;
    /// Makes blocks final, atomically with state and indexes.
    fn commit_final(&mut self, c: &FinalCommit<'_>) -> Result<()>;
    /// Writes final blocks again, with their indexes, over damaged copies
    /// (and the whole account state, if given). Only a repair calls this,
    /// with blocks that reproduce the hashes this store already made final.
    fn rewrite_final(&mut self, blocks: &[Block], state: Option<&State>) -> Result<()>;
    /// The final block at `height` (1-based). Fails if the stored bytes do not
    /// decode or do not hash to the indexed hash.
    fn block_at(&self, height: u64) -> Result<Option<Block>>;
    /// Where a final transaction is.
    fn tx_location(&self, tx: &Hash32) -> Result<Option<TxLocation>>;
    /// Final trace events of a batch, in chain order.
    fn trace_events(&self, batch: &str) -> Result<Vec<TxLocation>>;
    /// Batches that name `batch` among their inputs.
    fn trace_outputs(&self, batch: &str) -> Result<Vec<String>>;
    /// Final records under `key` in a secondary index, in chain order.
    fn records(&self, index: RecordIndex, key: &str) -> Result<Vec<TxLocation>>;
    /// Every final record in a secondary index, whatever its key, in chain
    /// order (for `hpchain audit ls` without a filter).
    fn records_all(&self, index: RecordIndex) -> Result<Vec<TxLocation>>;
    /// The final block with id `hash`, if any. Fails if the stored bytes do
    /// not decode or do not hash to `hash`.
    fn block_by_hash(&self, hash: &Hash32) -> Result<Option<Block>>;
}
