//! An in-process cluster of ledgers with a transport that can drop nodes and
//! partition them, and a safety checker: a height, once final anywhere, must
//! have the same hash everywhere and forever.
#![allow(dead_code)]

use std::collections::HashMap;

use hpchain_chain::error::BlockError;
use hpchain_chain::{Block, Error, Genesis, Hash32, Keypair, Ledger, MemoryStore};

pub struct Sim {
    pub genesis: Genesis,
    pub keys: Vec<Keypair>,
    pub holders: Vec<Keypair>,
    pub nodes: Vec<Ledger>,
    pub up: Vec<bool>,
    pub group: Vec<u32>,
    pub final_seen: HashMap<u64, Hash32>,
    pub last_final: Vec<u64>,
}

impl Sim {
    pub fn new(n: u32, seed: &str) -> Self {
        let (genesis, keys, holders) = Genesis::deterministic("sim", n, 1000, seed);
        let nodes = (0..n)
            .map(|_| Ledger::open(genesis.clone(), Box::new(MemoryStore::new())).unwrap())
            .collect();
        Sim {
            genesis,
            keys,
            holders,
            nodes,
            up: vec![true; n as usize],
            group: vec![0; n as usize],
            final_seen: HashMap::new(),
            last_final: vec![0; n as usize],
        }
    }

    pub fn connected(&self, a: usize, b: usize) -> bool {
        self.up[a] && self.up[b] && self.group[a] == self.group[b]
    }

    /// Imports `b` into node `to`, catching up from `from` if the parent is missing.
    pub fn deliver(&mut self, from: usize, to: usize, b: &Block) {
        match self.nodes[to].import_block(b.clone()) {
            Ok(_) => {}
            Err(Error::Block { reason, .. }) if matches!(*reason, BlockError::UnknownParent(_)) => {
                self.sync(from, to);
            }
            Err(e) => panic!("node {to} rejected an honest block from {from}: {e}"),
        }
    }

    /// Node `to` fetches everything above its final height from `from`.
    pub fn sync(&mut self, from: usize, to: usize) {
        let since = self.nodes[to].final_height();
        let blocks = self.nodes[from].blocks_since(since, usize::MAX).unwrap();
        for b in blocks {
            match self.nodes[to].import_block(b) {
                Ok(_) => {}
                // A block below `to`'s own final block from a branch it
                // already finalized past cannot happen among honest nodes.
                Err(e) => panic!("catch-up of node {to} from {from} failed: {e}"),
            }
        }
    }

    /// Runs one slot: the node scheduled on its own head produces (if up and
    /// not in `skip`) and broadcasts to the nodes it can reach.
    pub fn slot(&mut self, slot: u64, skip: &[usize]) -> Option<usize> {
        let mut producer = None;
        for i in 0..self.nodes.len() {
            if !self.up[i] || skip.contains(&i) {
                continue;
            }
            if self.nodes[i].scheduled_producer(slot) == Some(self.keys[i].public()) {
                let b = self.nodes[i]
                    .produce_block(slot, &self.keys[i], 1000)
                    .unwrap();
                for j in 0..self.nodes.len() {
                    if j != i && self.connected(i, j) {
                        self.deliver(i, j, &b);
                    }
                }
                producer = Some(i);
            }
        }
        self.check_safety();
        producer
    }

    pub fn run(
        &mut self,
        slots: std::ops::RangeInclusive<u64>,
        mut skip: impl FnMut(u64) -> Vec<usize>,
    ) {
        for s in slots {
            let sk = skip(s);
            self.slot(s, &sk);
        }
    }

    /// Finality never goes back on any node, and no two nodes ever finalize
    /// different blocks at the same height.
    pub fn check_safety(&mut self) {
        for (i, n) in self.nodes.iter().enumerate() {
            let (fhash, fh) = n.final_block();
            assert!(fh >= self.last_final[i], "node {i}: final height went back");
            self.last_final[i] = fh;
            if fh == 0 {
                continue;
            }
            match self.final_seen.get(&fh) {
                Some(h) => assert_eq!(*h, fhash, "node {i} finalized a conflicting block at {fh}"),
                None => {
                    self.final_seen.insert(fh, fhash);
                }
            }
            // all earlier final blocks this node holds agree too
            if let Some(b) = n.block_at(fh).unwrap() {
                assert_eq!(b.hash(), fhash);
            }
        }
    }

    /// Checks every final height on every node against the global record.
    pub fn check_all_final_history(&self) {
        for (i, n) in self.nodes.iter().enumerate() {
            for h in 1..=n.final_height() {
                let b = n.block_at(h).unwrap().unwrap();
                if let Some(seen) = self.final_seen.get(&h) {
                    assert_eq!(*seen, b.hash(), "node {i} height {h}");
                }
            }
        }
    }

    pub fn finals(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.final_height()).collect()
    }
}

/// A tiny deterministic generator (xorshift) so tests need no extra crates.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn chance(&mut self, pct: u64) -> bool {
        self.next() % 100 < pct
    }
}
