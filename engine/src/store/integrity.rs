//! Checking and repairing the blocks of one disk: the store's side of
//! scrub and read repair.
//!
//! Which bytes are right is never decided here. A block is rewritten only
//! with bytes whose crc32c is the one this disk's own RocksDB recorded for
//! it (zeroes for a block without a record), and under the same lock as
//! applying entries, so a repair can neither bring back an older version
//! of the block nor undo a write that landed since the block was found
//! bad. The crc record itself is never changed by a repair.

use std::collections::BTreeMap;
use std::fs::File;

use super::{DiskStore, Loc, StoreError, BLOCK_BYTES};
use crate::pg::backend::{zero_block_crc, BadBlock, BlockCopy, BlockRef, BlockRepair, ObjectScrub};
use crate::pg::command::{Digest, ObjectId};

impl DiskStore {
    /// blake3 over the object's record and, per version, each recorded
    /// block's number and crc32c: what two replicas that applied the same
    /// entries agree on. The data itself is not read (the scrub checks it
    /// against these crcs on each replica), so a digest costs database
    /// reads only and can be taken on the Raft loop while applying.
    pub fn digest(&self, object: &ObjectId) -> Result<Digest, StoreError> {
        let _applying = self.lock_apply();
        let working = self.load_meta(object)?;
        let mut hasher = blake3::Hasher::new();
        let record = working.meta.encode();
        hasher.update(&(record.len() as u64).to_le_bytes());
        hasher.update(&record);
        for loc in Loc::all_of(&working.meta) {
            hasher.update(&loc.clone_seq().map_or(u64::MAX, |seq| seq).to_le_bytes());
            let recorded = self.recorded_blocks(object, loc)?;
            hasher.update(&(recorded.len() as u64).to_le_bytes());
            for (block, value) in recorded {
                hasher.update(&block.to_le_bytes());
                hasher.update(&self.parse_crc(object, block, &value)?.to_le_bytes());
            }
        }
        Ok(*hasher.finalize().as_bytes())
    }

    /// The version's file, `None` if it does not exist.
    fn open_version(&self, object: &ObjectId, loc: Loc) -> Result<Option<File>, StoreError> {
        Self::open_to_read(&self.version_path(object, loc))
    }

    /// Block `block` of a version as stored (zeroes for a missing file).
    fn stored_block(
        &self,
        file: Option<&File>,
        object: &ObjectId,
        loc: Loc,
        block: u64,
    ) -> Result<[u8; BLOCK_BYTES as usize], StoreError> {
        match file {
            Some(f) => self.read_block(f, &self.version_path(object, loc), block),
            None => Ok([0u8; BLOCK_BYTES as usize]),
        }
    }

    /// `Some(bad)` when `bytes` do not match `recorded` (no record: the
    /// block must be zero).
    fn judge(at: BlockRef, recorded: Option<u32>, bytes: &[u8]) -> Option<BadBlock> {
        let actual = crc32c::crc32c(bytes);
        let good = match recorded {
            Some(crc) => actual == crc,
            None => bytes.iter().all(|&b| b == 0),
        };
        (!good).then_some(BadBlock {
            at,
            recorded,
            actual,
        })
    }

    /// Checks every block of every version of `object`: the blocks with a
    /// record and every block inside the version's file (one without a
    /// record must be zero). A version whose file is lost but whose
    /// records remain has all its recorded blocks bad.
    ///
    /// The pass runs without the apply lock (it must not stall the PG's
    /// writes for a whole object); each block found bad is checked again
    /// under the lock, so one written while it was read is not reported.
    pub fn check_object(&self, object: &ObjectId) -> Result<ObjectScrub, StoreError> {
        let meta = self.load_meta(object)?.meta;
        let mut out = ObjectScrub::default();
        let mut suspects = Vec::new();
        for loc in Loc::all_of(&meta) {
            let recorded = self.recorded_blocks(object, loc)?;
            let file = self.open_version(object, loc)?;
            if file.is_none() && recorded.is_empty() {
                continue;
            }
            out.versions += 1;
            let extent_blocks = match &file {
                Some(f) => f
                    .metadata()
                    .map_err(Self::io("stat", &self.version_path(object, loc)))?
                    .len()
                    .div_ceil(BLOCK_BYTES),
                None => 0,
            };
            let mut blocks: BTreeMap<u64, Option<u32>> =
                (0..extent_blocks).map(|b| (b, None)).collect();
            for (block, value) in recorded {
                blocks.insert(block, Some(self.parse_crc(object, block, &value)?));
            }
            for (block, recorded) in blocks {
                let bytes = self.stored_block(file.as_ref(), object, loc, block)?;
                out.blocks_checked += 1;
                let at = BlockRef {
                    object: *object,
                    clone_seq: loc.clone_seq(),
                    block,
                };
                if let Some(bad) = Self::judge(at, recorded, &bytes) {
                    suspects.push(bad);
                }
            }
        }
        if !suspects.is_empty() {
            let _applying = self.lock_apply();
            for suspect in suspects {
                if let Some(bad) = self.recheck(&suspect.at)? {
                    out.bad.push(bad);
                }
            }
        }
        Ok(out)
    }

    /// Block `at` judged against its record now (call under the lock).
    fn recheck(&self, at: &BlockRef) -> Result<Option<BadBlock>, StoreError> {
        let loc = Loc::of(at.clone_seq);
        let recorded = self.recorded_crc(&at.object, loc, at.block)?;
        let file = self.open_version(&at.object, loc)?;
        if file.is_none() && recorded.is_none() {
            return Ok(None);
        }
        let bytes = self.stored_block(file.as_ref(), &at.object, loc, at.block)?;
        Ok(Self::judge(*at, recorded, &bytes))
    }

    /// Block `at` as stored, unchecked, with its record; `None` when this
    /// disk does not hold that version (no file).
    pub fn copy_of_block(&self, at: &BlockRef) -> Result<Option<BlockCopy>, StoreError> {
        let loc = Loc::of(at.clone_seq);
        let Some(file) = self.open_version(&at.object, loc)? else {
            return Ok(None);
        };
        let bytes = self.stored_block(Some(&file), &at.object, loc, at.block)?;
        Ok(Some(BlockCopy {
            bytes: bytes.to_vec(),
            recorded: self.recorded_crc(&at.object, loc, at.block)?,
        }))
    }

    /// Rewrites block `at` with `bytes` if, and only if, their crc32c is
    /// the one recorded for the block (for a block without a record: if
    /// they are zeroes, and then the block becomes a hole again). The
    /// write is synced and read back before it counts as done.
    pub fn rewrite_block(&self, at: &BlockRef, bytes: &[u8]) -> Result<BlockRepair, StoreError> {
        let _applying = self.lock_apply();
        let loc = Loc::of(at.clone_seq);
        let recorded = self.recorded_crc(&at.object, loc, at.block)?;
        let file = self.open_version(&at.object, loc)?;
        if file.is_none() && recorded.is_none() {
            return Ok(BlockRepair::Gone);
        }
        let current = self.stored_block(file.as_ref(), &at.object, loc, at.block)?;
        if Self::judge(*at, recorded, &current).is_none() {
            return Ok(BlockRepair::AlreadyGood);
        }
        let expected = recorded.unwrap_or_else(zero_block_crc);
        let offered = crc32c::crc32c(bytes);
        if bytes.len() != BLOCK_BYTES as usize || offered != expected {
            return Ok(BlockRepair::Refused { expected, offered });
        }
        let path = self.version_path(&at.object, loc);
        let file = self.open_for_write(&at.object, loc)?;
        let offset = at.block * BLOCK_BYTES;
        if recorded.is_none() {
            self.punch_hole(&file, &path, offset, BLOCK_BYTES)?;
        } else {
            self.io
                .write_all_at(&file, bytes, offset)
                .map_err(Self::io("write", &path))?;
        }
        self.io
            .sync_data(&[&file])
            .map_err(Self::io("sync", &path))?;
        let back = self.read_block(&file, &path, at.block)?;
        if let Some(bad) = Self::judge(*at, recorded, &back) {
            return Err(StoreError::Io {
                op: "repair",
                path,
                source: std::io::Error::other(format!(
                    "block {} reads back with crc32c {:08x} right after a good copy was written; the disk does not keep what is written to it: replace it",
                    at.block, bad.actual
                )),
            });
        }
        Ok(BlockRepair::Rewritten)
    }
}
