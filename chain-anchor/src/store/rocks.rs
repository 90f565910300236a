//! The RocksDB [`ChainStore`]. Layout (see docs/ledger-format.md, "Storage"):
//!
//! | column family | key | value |
//! |---|---|---|
//! | `meta` | `genesis` / `tip` / `format` | genesis JSON / encoded [`FinalTip`] / u16 format version |
//! | `blocks` | block hash | encoded final block |
//! | `heights` | height, u64 big-endian | block hash |
//! | `txs` | tx hash | height u64 BE, block hash, index u32 BE |
//! | `accounts` | public key | encoded `Account` |
//! | `candidates` | public key | encoded `Candidate` |
//! | `trace` | len u32 BE, batch id, height u64 BE, index u32 BE | tx hash |
//! | `trace_out` | len u32 BE, input batch id, batch id | empty |
//! | `pending` | block hash | encoded non-final block |
//! | `records` | index u8, len u32 BE, key, height u64 BE, index u32 BE | tx location (44 bytes) |
//!
//! Each `commit_final` is one synced write batch, so a crash leaves either
//! the old final tip with its state and indexes, or the new one.

use std::path::Path;

use rocksdb::{
    ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB,
};

use super::{ChainStore, FinalCommit, FinalTip, RecordIndex, TxLocation};
use crate::block::Block;
use crate::codec::{Reader, Writer};
use crate::crypto::{Hash32, PublicKey};
use crate::error::{Error, Result};
use crate::genesis::Genesis;
use crate::state::{Account, Candidate, State};
use crate::tx::Payload;

pub const CF_META: &str = "meta";
pub const CF_BLOCKS: &str = "blocks";
pub const CF_HEIGHTS: &str = "heights";
pub const CF_TXS: &str = "txs";
const CF_ACCOUNTS: &str = "accounts";
const CF_CANDIDATES: &str = "candidates";
const CF_TRACE: &str = "trace";
const CF_TRACE_OUT: &str = "trace_out";
const CF_PENDING: &str = "pending";
const CF_RECORDS: &str = "records";
/// Every column family of the ledger database (RocksDB must open them all).
pub const ALL_COLUMN_FAMILIES: [&str; 10] = [
    CF_META,
    CF_BLOCKS,
    CF_HEIGHTS,
    CF_TXS,
    CF_ACCOUNTS,
    CF_CANDIDATES,
    CF_TRACE,
    CF_TRACE_OUT,
    CF_PENDING,
    CF_RECORDS,
];
/// Version of the storage layout, kept under `meta/format`.
pub const STORE_FORMAT: u16 = 1;

/// A raw key and value read from RocksDB.
type KeyValue = (Box<[u8]>, Box<[u8]>);

fn st(e: impl std::fmt::Display) -> Error {
    Error::Storage(e.to_string())
}

/// RocksDB-backed storage for one node's ledger.
pub struct RocksStore {
    db: DB,
}

impl RocksStore {
    /// Opens (creating if needed) the ledger database in `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let cfs = ALL_COLUMN_FAMILIES
            .iter()
            .map(|n| ColumnFamilyDescriptor::new(*n, Options::default()));
        let db = DB::open_cf_descriptors(&opts, path, cfs).map_err(|e| {
            Error::Storage(format!(
                "cannot open ledger database {}: {e}",
                path.display()
            ))
        })?;
        let s = RocksStore { db };
        if let Some(v) = s.get(CF_META, b"format")? {
            if v != STORE_FORMAT.to_le_bytes() {
                return Err(Error::Storage(format!(
                    "ledger database {} has format {:?}, this build reads {STORE_FORMAT}",
                    path.display(),
                    v
                )));
            }
        }
        Ok(s)
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| Error::Storage(format!("column family {name} missing")))
    }

    fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db.get_cf(self.cf(cf)?, key).map_err(st)
    }

    fn prefix_scan(&self, cf: &str, prefix: &[u8]) -> Result<Vec<KeyValue>> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(cf)?, IteratorMode::From(prefix, Direction::Forward))
        {
            let (k, v) = item.map_err(st)?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k, v));
        }
        Ok(out)
    }

    fn write(&self, b: WriteBatch) -> Result<()> {
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(b, &wo).map_err(st)
    }

    fn put_state(
        &self,
        wb: &mut WriteBatch,
        state: &State,
        keys: &mut dyn Iterator<Item = &PublicKey>,
    ) -> Result<()> {
        let acc = self.cf(CF_ACCOUNTS)?;
        for k in keys {
            match state.accounts.get(k) {
                Some(a) => wb.put_cf(acc, k.0, a.encode()),
                None => wb.delete_cf(acc, k.0),
            }
        }
        let cands = self.cf(CF_CANDIDATES)?;
        for (k, c) in &state.candidates {
            wb.put_cf(cands, k.0, c.encode());
        }
        Ok(())
    }

    /// Stages final blocks with their height, transaction, record and trace
    /// index entries. Every key is a function of the block, so staging a
    /// block again (a repair) rewrites exactly what was there.
    fn stage_final_blocks(&self, wb: &mut WriteBatch, final_blocks: &[Block]) -> Result<()> {
        let (blocks, heights, txs) = (self.cf(CF_BLOCKS)?, self.cf(CF_HEIGHTS)?, self.cf(CF_TXS)?);
        let (trace, trace_out) = (self.cf(CF_TRACE)?, self.cf(CF_TRACE_OUT)?);
        let records = self.cf(CF_RECORDS)?;
        for b in final_blocks {
            let bh = b.hash();
            let h = b.header.height;
            wb.put_cf(blocks, bh.0, b.encode());
            wb.put_cf(heights, h.to_be_bytes(), bh.0);
            for (i, t) in b.txs.iter().enumerate() {
                let th = t.hash();
                let mut loc = h.to_be_bytes().to_vec();
                loc.extend_from_slice(&bh.0);
                loc.extend_from_slice(&(i as u32).to_be_bytes());
                wb.put_cf(txs, th.0, &loc);
                if let Some((ix, key)) = RecordIndex::entries(&t.payload) {
                    let mut k = vec![ix as u8];
                    k.extend_from_slice(&batch_prefix(key));
                    k.extend_from_slice(&h.to_be_bytes());
                    k.extend_from_slice(&(i as u32).to_be_bytes());
                    wb.put_cf(records, k, &loc);
                }
                if let Payload::Trace(ev) = &t.payload {
                    let mut k = batch_prefix(&ev.batch_id);
                    k.extend_from_slice(&h.to_be_bytes());
                    k.extend_from_slice(&(i as u32).to_be_bytes());
                    wb.put_cf(trace, k, th.0);
                    for input in &ev.inputs {
                        let mut k = batch_prefix(input);
                        k.extend_from_slice(ev.batch_id.as_bytes());
                        wb.put_cf(trace_out, k, []);
                    }
                }
            }
        }
        Ok(())
    }
}

fn batch_prefix(batch: &str) -> Vec<u8> {
    let mut k = (batch.len() as u32).to_be_bytes().to_vec();
    k.extend_from_slice(batch.as_bytes());
    k
}

fn decode_location(v: &[u8]) -> Result<TxLocation> {
    if v.len() != 44 {
        return Err(Error::Storage(format!(
            "tx location entry is {} bytes, expected 44",
            v.len()
        )));
    }
    Ok(TxLocation {
        height: u64::from_be_bytes(v[0..8].try_into().expect("8 bytes")),
        block: Hash32(v[8..40].try_into().expect("32 bytes")),
        index: u32::from_be_bytes(v[40..44].try_into().expect("4 bytes")),
    })
}

fn encode_tip(t: &FinalTip) -> Vec<u8> {
    let mut w = Writer::new();
    w.u16(1);
    w.u64(t.height);
    w.raw(&t.hash.0);
    w.u64(t.slot);
    w.list(&t.active, |w, k| w.raw(&k.0));
    w.into_bytes()
}

fn decode_tip(b: &[u8]) -> Result<FinalTip> {
    let mut r = Reader::new(b, "FinalTip");
    let v = r.u16()?;
    if v != 1 {
        return Err(Error::decode("FinalTip", format!("unknown version {v}")));
    }
    let t = FinalTip {
        height: r.u64()?,
        hash: Hash32(r.array()?),
        slot: r.u64()?,
        active: r.list(|r| Ok(PublicKey(r.array()?)))?,
    };
    r.finish()?;
    Ok(t)
}

impl ChainStore for RocksStore {
    fn genesis(&self) -> Result<Option<Genesis>> {
        match self.get(CF_META, b"genesis")? {
            None => Ok(None),
            Some(b) => {
                let text = String::from_utf8(b)
                    .map_err(|_| Error::Storage("stored genesis is not UTF-8".into()))?;
                Genesis::from_json(&text).map(Some)
            }
        }
    }

    fn init(&mut self, g: &Genesis, state: &State, tip: &FinalTip) -> Result<()> {
        let mut wb = WriteBatch::default();
        let meta = self.cf(CF_META)?;
        wb.put_cf(meta, b"format", STORE_FORMAT.to_le_bytes());
        wb.put_cf(meta, b"genesis", g.to_json());
        wb.put_cf(meta, b"tip", encode_tip(tip));
        self.put_state(&mut wb, state, &mut state.accounts.keys())?;
        self.write(wb)
    }

    fn final_tip(&self) -> Result<FinalTip> {
        let b = self.get(CF_META, b"tip")?.ok_or_else(|| {
            Error::Storage("ledger database has no final tip: not initialised".into())
        })?;
        decode_tip(&b)
    }

    fn load_state(&self) -> Result<State> {
        let mut s = State::default();
        for (k, v) in self.prefix_scan(CF_ACCOUNTS, &[])? {
            let key: [u8; 32] = k
                .as_ref()
                .try_into()
                .map_err(|_| Error::Storage("bad account key".into()))?;
            s.accounts.insert(PublicKey(key), Account::decode(&v)?);
        }
        for (k, v) in self.prefix_scan(CF_CANDIDATES, &[])? {
            let key: [u8; 32] = k
                .as_ref()
                .try_into()
                .map_err(|_| Error::Storage("bad candidate key".into()))?;
            s.candidates.insert(PublicKey(key), Candidate::decode(&v)?);
        }
        Ok(s)
    }

    fn put_pending(&mut self, b: &Block) -> Result<()> {
        // Not synced: a pending block lost in a crash is fetched again from peers.
        self.db
            .put_cf(self.cf(CF_PENDING)?, b.hash().0, b.encode())
            .map_err(st)
    }

    fn pending(&self) -> Result<Vec<Block>> {
        let mut out = Vec::new();
        for (_, v) in self.prefix_scan(CF_PENDING, &[])? {
            // An undecodable pending block is simply dropped: it is not final
            // and peers can send it again.
            if let Ok(b) = Block::decode(&v) {
                out.push(b);
            }
        }
        Ok(out)
    }

    fn commit_final(&mut self, c: &FinalCommit<'_>) -> Result<()> {
        let mut wb = WriteBatch::default();
        self.stage_final_blocks(&mut wb, c.blocks)?;
        self.put_state(&mut wb, c.state, &mut c.touched.iter())?;
        wb.put_cf(self.cf(CF_META)?, b"tip", encode_tip(c.tip));
        let pending = self.cf(CF_PENDING)?;
        for h in c.drop_pending {
            wb.delete_cf(pending, h.0);
        }
        self.write(wb)
    }

    fn rewrite_final(&mut self, blocks: &[Block], state: Option<&State>) -> Result<()> {
        let mut wb = WriteBatch::default();
        self.stage_final_blocks(&mut wb, blocks)?;
        if let Some(state) = state {
            self.put_state(&mut wb, state, &mut state.accounts.keys())?;
        }
        self.write(wb)
    }

    fn block_at(&self, height: u64) -> Result<Option<Block>> {
        let Some(hash) = self.get(CF_HEIGHTS, &height.to_be_bytes())? else {
            return Ok(None);
        };
        let Some(bytes) = self.get(CF_BLOCKS, &hash)? else {
            return Err(Error::Storage(format!(
                "block at height {height} is indexed but missing"
            )));
        };
        let b = Block::decode(&bytes)?;
        if b.hash().0.as_slice() != hash.as_slice() {
            return Err(Error::Storage(format!(
                "block at height {height} does not hash to its indexed hash: the stored bytes were altered"
            )));
        }
        Ok(Some(b))
    }

    fn tx_location(&self, tx: &Hash32) -> Result<Option<TxLocation>> {
        match self.get(CF_TXS, &tx.0)? {
            None => Ok(None),
            Some(v) => decode_location(&v).map(Some),
        }
    }

    fn records(&self, index: RecordIndex, key: &str) -> Result<Vec<TxLocation>> {
        let mut prefix = vec![index as u8];
        prefix.extend_from_slice(&batch_prefix(key));
        self.prefix_scan(CF_RECORDS, &prefix)?
            .into_iter()
            .map(|(_, v)| decode_location(&v))
            .collect()
    }

    fn records_all(&self, index: RecordIndex) -> Result<Vec<TxLocation>> {
        let mut out = self
            .prefix_scan(CF_RECORDS, &[index as u8])?
            .into_iter()
            .map(|(_, v)| decode_location(&v))
            .collect::<Result<Vec<_>>>()?;
        out.sort_by_key(|l| (l.height, l.index));
        Ok(out)
    }

    fn block_by_hash(&self, hash: &Hash32) -> Result<Option<Block>> {
        let Some(bytes) = self.get(CF_BLOCKS, &hash.0)? else {
            return Ok(None);
        };
        let b = Block::decode(&bytes)?;
        if b.hash() != *hash {
            return Err(Error::Storage(format!(
                "block {hash:#} does not hash to its id: the stored bytes were altered; run `hpchain chain verify`"
            )));
        }
        Ok(Some(b))
    }

    fn trace_events(&self, batch: &str) -> Result<Vec<TxLocation>> {
        let prefix = batch_prefix(batch);
        let mut out = Vec::new();
        for (k, v) in self.prefix_scan(CF_TRACE, &prefix)? {
            let rest = &k[prefix.len()..];
            if rest.len() != 12 {
                continue; // a longer batch id sharing this prefix cannot happen: the length is in the key
            }
            let tx = Hash32(
                v.as_ref()
                    .try_into()
                    .map_err(|_| Error::Storage("bad trace entry".into()))?,
            );
            match self.tx_location(&tx)? {
                Some(loc) => out.push(loc),
                None => {
                    return Err(Error::Storage(format!(
                        "trace entry for batch {batch} points at unknown tx {tx}"
                    )))
                }
            }
        }
        Ok(out)
    }

    fn trace_outputs(&self, batch: &str) -> Result<Vec<String>> {
        let prefix = batch_prefix(batch);
        self.prefix_scan(CF_TRACE_OUT, &prefix)?
            .into_iter()
            .map(|(k, _)| {
                String::from_utf8(k[prefix.len()..].to_vec())
                    .map_err(|_| Error::Storage("trace_out key is not UTF-8".into()))
            })
            .collect()
    }
}
