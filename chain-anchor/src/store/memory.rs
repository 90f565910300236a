//! An in-memory [`ChainStore`] for tests and simulations.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{ChainStore, FinalCommit, FinalTip, RecordIndex, TxLocation};
use crate::block::Block;
use crate::crypto::Hash32;
use crate::error::{Error, Result};
use crate::genesis::Genesis;
use crate::state::State;
use crate::tx::Payload;

/// Keeps everything in maps; nothing survives the process.
#[derive(Default)]
pub struct MemoryStore {
    genesis: Option<Genesis>,
    tip: Option<FinalTip>,
    state: State,
    blocks: Vec<Block>,
    pending: HashMap<Hash32, Block>,
    txs: HashMap<Hash32, TxLocation>,
    trace: BTreeMap<String, Vec<TxLocation>>,
    outputs: BTreeMap<String, BTreeSet<String>>,
    records: BTreeMap<(RecordIndex, String), Vec<TxLocation>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Index entries of final blocks; a block indexed again (a repair)
    /// leaves the indexes as they were.
    fn index_final_blocks(&mut self, blocks: &[Block]) {
        for b in blocks {
            let bh = b.hash();
            for (i, t) in b.txs.iter().enumerate() {
                let loc = TxLocation {
                    height: b.header.height,
                    block: bh,
                    index: i as u32,
                };
                self.txs.insert(t.hash(), loc);
                if let Some((ix, key)) = RecordIndex::entries(&t.payload) {
                    let entries = self.records.entry((ix, key.to_string())).or_default();
                    if !entries.contains(&loc) {
                        entries.push(loc);
                    }
                }
                if let Payload::Trace(ev) = &t.payload {
                    let events = self.trace.entry(ev.batch_id.clone()).or_default();
                    if !events.contains(&loc) {
                        events.push(loc);
                    }
                    for input in &ev.inputs {
                        self.outputs
                            .entry(input.clone())
                            .or_default()
                            .insert(ev.batch_id.clone());
                    }
                }
            }
        }
    }
}

impl ChainStore for MemoryStore {
    fn genesis(&self) -> Result<Option<Genesis>> {
        Ok(self.genesis.clone())
    }
    fn init(&mut self, g: &Genesis, state: &State, tip: &FinalTip) -> Result<()> {
        self.genesis = Some(g.clone());
        self.state = state.clone();
        self.tip = Some(tip.clone());
        Ok(())
    }
    fn final_tip(&self) -> Result<FinalTip> {
        self.tip
            .clone()
            .ok_or_else(|| Error::Storage("store is not initialised".into()))
    }
    fn load_state(&self) -> Result<State> {
        Ok(self.state.clone())
    }
    fn put_pending(&mut self, b: &Block) -> Result<()> {
        self.pending.insert(b.hash(), b.clone());
        Ok(())
    }
    fn pending(&self) -> Result<Vec<Block>> {
        Ok(self.pending.values().cloned().collect())
    }
    fn commit_final(&mut self, c: &FinalCommit<'_>) -> Result<()> {
        self.index_final_blocks(c.blocks);
        self.blocks.extend(c.blocks.iter().cloned());
        self.state = c.state.clone();
        self.tip = Some(c.tip.clone());
        for h in c.drop_pending {
            self.pending.remove(h);
        }
        Ok(())
    }
    fn rewrite_final(&mut self, blocks: &[Block], state: Option<&State>) -> Result<()> {
        self.index_final_blocks(blocks);
        for b in blocks {
            let i = b.header.height as usize - 1;
            self.blocks[i] = b.clone();
        }
        if let Some(state) = state {
            self.state = state.clone();
        }
        Ok(())
    }
    fn block_at(&self, height: u64) -> Result<Option<Block>> {
        Ok(height
            .checked_sub(1)
            .and_then(|i| self.blocks.get(i as usize))
            .cloned())
    }
    fn tx_location(&self, tx: &Hash32) -> Result<Option<TxLocation>> {
        Ok(self.txs.get(tx).copied())
    }
    fn trace_events(&self, batch: &str) -> Result<Vec<TxLocation>> {
        Ok(self.trace.get(batch).cloned().unwrap_or_default())
    }
    fn trace_outputs(&self, batch: &str) -> Result<Vec<String>> {
        Ok(self
            .outputs
            .get(batch)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default())
    }
    fn records(&self, index: RecordIndex, key: &str) -> Result<Vec<TxLocation>> {
        Ok(self
            .records
            .get(&(index, key.to_string()))
            .cloned()
            .unwrap_or_default())
    }
    fn records_all(&self, index: RecordIndex) -> Result<Vec<TxLocation>> {
        let mut out: Vec<TxLocation> = self
            .records
            .iter()
            .filter(|((ix, _), _)| *ix == index)
            .flat_map(|(_, locs)| locs.iter().copied())
            .collect();
        out.sort_by_key(|l| (l.height, l.index));
        Ok(out)
    }
    fn block_by_hash(&self, hash: &Hash32) -> Result<Option<Block>> {
        Ok(self.blocks.iter().find(|b| b.hash() == *hash).cloned())
    }
}
