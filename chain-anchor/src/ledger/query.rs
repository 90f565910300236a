//! Read-only queries over a [`Ledger`]: blocks for catch-up, transaction
//! locations, inclusion proofs, audit and anchor records, and traceability
//! (a batch's events, upstream and downstream). Nothing here changes state.

use std::collections::{BTreeSet, HashSet};

use super::Ledger;
use crate::block::Block;
use crate::crypto::{Hash32, PublicKey};
use crate::dpos;
use crate::error::{Error, Result};
use crate::merkle;
use crate::proof::InclusionProof;
use crate::store::{RecordIndex, TxLocation};
use crate::tx::{Payload, TraceEvent, Transaction};

impl Ledger {
    /// Blocks on the best chain with height > `height`, ascending, at most
    /// `limit`: what a lagging peer asks for to catch up.
    pub fn blocks_since(&self, height: u64, limit: usize) -> Result<Vec<Block>> {
        let mut out = Vec::new();
        let mut h = height + 1;
        while h <= self.final_height && out.len() < limit {
            self.refuse_if_damaged(h)?;
            out.push(self.store.block_at(h)?.ok_or_else(|| Error::NotFound {
                what: "final block at height",
                id: h.to_string(),
            })?);
            h += 1;
        }
        if out.len() < limit {
            let mut chain = Vec::new();
            let mut cur = self.head;
            while cur != self.final_hash {
                let n = &self.nodes[&cur];
                if n.height >= h {
                    chain.push(n.block.clone().expect("non-root has a block"));
                }
                cur = n.parent;
            }
            chain.reverse();
            out.extend(
                chain
                    .into_iter()
                    .take(limit - out.len())
                    .map(|b| (*b).clone()),
            );
        }
        Ok(out)
    }

    /// The block at `height` on the best chain (final or not).
    pub fn block_at(&self, height: u64) -> Result<Option<Block>> {
        if height <= self.final_height {
            self.refuse_if_damaged(height)?;
            return self.store.block_at(height);
        }
        let mut cur = self.head;
        while cur != self.final_hash {
            let n = &self.nodes[&cur];
            if n.height == height {
                return Ok(n.block.as_deref().cloned());
            }
            cur = n.parent;
        }
        Ok(None)
    }

    /// The block with id `hash`, final or not (a non-final one may be on a
    /// side branch), and whether it is final.
    pub fn block_by_hash(&self, hash: &Hash32) -> Result<Option<(Block, bool)>> {
        if let Some(n) = self.nodes.get(hash) {
            if let Some(b) = &n.block {
                return Ok(Some(((**b).clone(), *hash == self.final_hash)));
            }
        }
        match self.store.block_by_hash(hash)? {
            Some(b) => {
                self.refuse_if_damaged(b.header.height)?;
                Ok(Some((b, true)))
            }
            None => Ok(None),
        }
    }

    /// The transactions of the best chain's blocks above the last final
    /// block, in chain order, with their locations. Not final yet: a fork
    /// may still replace them.
    pub fn unfinal_txs(&self) -> Vec<(TxLocation, Transaction)> {
        let mut blocks = Vec::new();
        let mut cur = self.head;
        while cur != self.final_hash {
            let n = &self.nodes[&cur];
            if let Some(b) = &n.block {
                blocks.push((cur, b.clone()));
            }
            cur = n.parent;
        }
        blocks.reverse();
        let mut out = Vec::new();
        for (hash, b) in blocks {
            for (i, tx) in b.txs.iter().enumerate() {
                let location = TxLocation {
                    height: b.header.height,
                    block: hash,
                    index: i as u32,
                };
                out.push((location, tx.clone()));
            }
        }
        out
    }

    /// Final records of every key in a secondary index, in chain order, with
    /// their transactions (see [`Ledger::records`]).
    pub fn records_all(&self, index: RecordIndex) -> Result<Vec<(TxLocation, Transaction)>> {
        let locations = self.store.records_all(index)?;
        self.located_txs(locations)
    }

    fn located_txs(&self, locations: Vec<TxLocation>) -> Result<Vec<(TxLocation, Transaction)>> {
        let mut out = Vec::with_capacity(locations.len());
        let mut cached: Option<Block> = None;
        for loc in locations {
            if cached.as_ref().map(|b| b.header.height) != Some(loc.height) {
                self.refuse_if_damaged(loc.height)?;
                cached = Some(
                    self.store
                        .block_at(loc.height)?
                        .ok_or_else(|| Error::NotFound {
                            what: "block at height",
                            id: loc.height.to_string(),
                        })?,
                );
            }
            let b = cached.as_ref().expect("just loaded");
            let tx = b
                .txs
                .get(loc.index as usize)
                .cloned()
                .ok_or_else(|| Error::NotFound {
                    what: "transaction index",
                    id: loc.index.to_string(),
                })?;
            out.push((loc, tx));
        }
        Ok(out)
    }

    /// Final trace events of a batch with their transaction ids, in chain
    /// order: what an API shows next to a reference to each event's proof.
    pub fn trace_event_txs(&self, batch: &str) -> Result<Vec<(TxLocation, Hash32, TraceEvent)>> {
        let locations = self.store.trace_events(batch)?;
        Ok(self
            .located_txs(locations)?
            .into_iter()
            .filter_map(|(loc, tx)| match &tx.payload {
                Payload::Trace(ev) => Some((loc, tx.hash(), ev.clone())),
                _ => None,
            })
            .collect())
    }

    /// Where a transaction is on the best chain (final or not).
    pub fn tx_location(&self, tx: &Hash32) -> Result<Option<TxLocation>> {
        if let Some(l) = self.store.tx_location(tx)? {
            return Ok(Some(l));
        }
        let mut cur = self.head;
        while cur != self.final_hash {
            let n = &self.nodes[&cur];
            if let Some(i) = n.tx_hashes.iter().position(|h| h == tx) {
                return Ok(Some(TxLocation {
                    height: n.height,
                    block: cur,
                    index: i as u32,
                }));
            }
            cur = n.parent;
        }
        Ok(None)
    }

    /// The inclusion proof of a transaction on the best chain: its Merkle
    /// path, its block header, and the headers above it (and confirmations)
    /// up to the point where more than 2/3 of the delegates have confirmed it,
    /// or up to the head if that point is not reached yet.
    pub fn proof(&self, tx: &Hash32) -> Result<InclusionProof> {
        let loc = self.tx_location(tx)?.ok_or_else(|| Error::NotFound {
            what: "transaction",
            id: tx.to_hex(),
        })?;
        let block = self.block_at(loc.height)?.ok_or_else(|| Error::NotFound {
            what: "block at height",
            id: loc.height.to_string(),
        })?;
        let hashes = block.tx_hashes();
        let merkle = merkle::prove(&hashes, loc.index as usize).ok_or_else(|| Error::NotFound {
            what: "transaction index",
            id: loc.index.to_string(),
        })?;
        let n = self.genesis.delegate_count as usize;
        let mut confirmers: HashSet<PublicKey> = HashSet::from([block.header.producer]);
        let mut descendants = Vec::new();
        let mut confirmations = Vec::new();
        let mut h = loc.height;
        let head_height = self.head().1;
        let mut add_confs = |bh: &Hash32, confirmers: &mut HashSet<PublicKey>| {
            if let Some(cs) = self.confirmations.get(bh) {
                for c in cs.values() {
                    if confirmers.insert(c.delegate) {
                        confirmations.push(c.clone());
                    }
                }
            }
        };
        add_confs(&block.hash(), &mut confirmers);
        while confirmers.len() < dpos::finality_threshold(n) && h < head_height {
            h += 1;
            let Some(d) = self.block_at(h)? else { break };
            confirmers.insert(d.header.producer);
            add_confs(&d.hash(), &mut confirmers);
            descendants.push(d.signed_header());
        }
        Ok(InclusionProof {
            tx: block.txs[loc.index as usize].clone(),
            merkle,
            header: block.signed_header(),
            descendants,
            confirmations,
        })
    }

    /// Final records under `key` in a secondary index (audit records by
    /// target, anchors by volume), in chain order, with their transactions.
    /// Pair each with [`Ledger::proof`] to show it.
    pub fn records(&self, index: RecordIndex, key: &str) -> Result<Vec<(TxLocation, Transaction)>> {
        let locations = self.store.records(index, key)?;
        self.located_txs(locations)
    }

    /// Final trace events of a batch, in chain order, with their locations.
    pub fn trace_events(&self, batch: &str) -> Result<Vec<(TxLocation, TraceEvent)>> {
        let mut out = Vec::new();
        for loc in self.store.trace_events(batch)? {
            let b = self
                .store
                .block_at(loc.height)?
                .ok_or_else(|| Error::NotFound {
                    what: "block at height",
                    id: loc.height.to_string(),
                })?;
            if let Some(Payload::Trace(ev)) = b.txs.get(loc.index as usize).map(|t| &t.payload) {
                out.push((loc, ev.clone()));
            }
        }
        Ok(out)
    }

    /// Every batch `batch` was made from, transitively (final records only).
    pub fn trace_upstream(&self, batch: &str) -> Result<BTreeSet<String>> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![batch.to_string()];
        while let Some(b) = todo.pop() {
            for (_, ev) in self.trace_events(&b)? {
                for i in ev.inputs {
                    if seen.insert(i.clone()) {
                        todo.push(i);
                    }
                }
            }
        }
        seen.remove(batch);
        Ok(seen)
    }

    /// Every batch made from `batch`, transitively: the recall set (final
    /// records only).
    pub fn trace_downstream(&self, batch: &str) -> Result<BTreeSet<String>> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![batch.to_string()];
        while let Some(b) = todo.pop() {
            for o in self.store.trace_outputs(&b)? {
                if seen.insert(o.clone()) {
                    todo.push(o);
                }
            }
        }
        seen.remove(batch);
        Ok(seen)
    }
}
