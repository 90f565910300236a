//! The boundary between a PG's state machine and the object store of the
//! disk that holds the replica.
//!
//! A backend applies a PG's committed operations atomically together with
//! the PG's applied index (so a restart knows exactly what to replay), and
//! serves reads. Missing objects and never-written ranges read as zeroes
//! (thin provisioning). A backend that keeps checksums also checks and
//! repairs its own blocks ([`PgBackend::scrub_object`],
//! [`PgBackend::repair_block`]); which bytes are right is always decided
//! by the backend's own record, never by the caller.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use super::command::{CopyUp, Digest, ObjectId, ObjectOp, ObjectStat};
use super::versions::{ObjectMeta, Version};
use crate::replication::GroupId;

/// Bytes in a checksummed block.
pub const CHECKED_BLOCK_BYTES: usize = 4096;

/// The crc32c of an all-zero block: what a block without a record must
/// hash to.
pub fn zero_block_crc() -> u32 {
    crc32c::crc32c(&[0u8; CHECKED_BLOCK_BYTES])
}

/// Why a backend failed; the text names the object and the disk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// Anything but corruption (I/O, metadata); the text says what to do.
    #[error("{0}")]
    Failed(String),
    /// A block's bytes do not match their record: another replica may
    /// hold a good copy ([`PgBackend::repair_block`] takes it).
    #[error("{message}")]
    Corrupt { bad: BadBlock, message: String },
}

/// One 4 KiB block of one version of an object: the head (`clone_seq`
/// `None`) or the clone version kept for snapshots at `clone_seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BlockRef {
    pub object: ObjectId,
    pub clone_seq: Option<u64>,
    pub block: u64,
}

impl std::fmt::Display for BlockRef {
    /// `object 3 head block 5` or `object 3 clone@2 block 5`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "object {} ", self.object.object_no)?;
        match self.clone_seq {
            None => write!(f, "head")?,
            Some(seq) => write!(f, "clone@{seq}")?,
        }
        write!(f, " block {}", self.block)
    }
}

/// A block whose bytes on a disk do not match what its record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadBlock {
    pub at: BlockRef,
    /// The crc32c recorded for the block; `None`: no record, so the block
    /// must read as zeroes.
    pub recorded: Option<u32>,
    /// The crc32c of the bytes the disk holds.
    pub actual: u32,
}

impl BadBlock {
    /// The crc32c a good copy has.
    pub fn expected(&self) -> u32 {
        self.recorded.unwrap_or_else(zero_block_crc)
    }
}

/// What checking every block of one object on one disk found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectScrub {
    /// Versions (head and clones) the disk holds for the object.
    pub versions: u32,
    pub blocks_checked: u64,
    /// Blocks still bad when re-checked under the apply lock (a block
    /// being written while it was read is not reported).
    pub bad: Vec<BadBlock>,
}

/// A block as a disk holds it, unchecked, with its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockCopy {
    pub bytes: Vec<u8>,
    pub recorded: Option<u32>,
}

/// What [`PgBackend::repair_block`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockRepair {
    /// The block now holds the bytes offered (synced, read back, checked).
    Rewritten,
    /// The block matches its record already (rewritten since it was found
    /// bad, or repaired by someone else): nothing written.
    AlreadyGood,
    /// The bytes offered do not hash to the record: nothing written.
    Refused { expected: u32, offered: u32 },
    /// The version no longer exists (deleted or trimmed since).
    Gone,
}

/// The object store of one disk, as PGs see it. Snapshot versions follow
/// the rules of [`super::versions`].
pub trait PgBackend: Send + Sync {
    /// The last index applied for `pg` (0 for a new PG).
    fn applied_index(&self, pg: GroupId) -> Result<u64, BackendError>;
    /// Applies `ops` of entry `index` of `pg`, atomically with `index`.
    fn apply(&self, pg: GroupId, index: u64, ops: &[ObjectOp]) -> Result<(), BackendError>;
    /// Records `index` as applied with no effect.
    fn apply_noop(&self, pg: GroupId, index: u64) -> Result<(), BackendError>;
    /// Forgets what `pg` applied here (its applied index reads 0 again),
    /// durably. For a replica this disk no longer hosts: one placed here
    /// later has no Raft state and must start from nothing, where an index
    /// left behind would make it skip entries it never applied.
    fn forget_pg(&self, pg: GroupId) -> Result<(), BackendError>;
    /// `len` bytes of `object` from `offset`, of the head (`snapshot`
    /// `None`) or as snapshot `snapshot` saw it; unwritten bytes are zero.
    /// `None` when that version does not exist.
    fn read(
        &self,
        object: &ObjectId,
        snapshot: Option<u64>,
        offset: u64,
        len: u64,
    ) -> Result<Option<Vec<u8>>, BackendError>;
    /// The object has never existed (no head and no versions): a clone's
    /// object in that state still reads its parent.
    fn is_pristine(&self, object: &ObjectId) -> Result<bool, BackendError>;
    /// The object's versions and the bytes each holds.
    fn stat(&self, object: &ObjectId) -> Result<ObjectStat, BackendError>;
    /// Bytes that hold data for `volume` (for thin provisioning reports).
    fn allocated_bytes(&self, volume: u64) -> Result<u64, BackendError>;
    /// Where the backend keeps its data, its size and its free bytes
    /// (`None` for a backend without a disk).
    fn space(&self) -> Option<(String, u64, u64)> {
        None
    }
    /// Makes every applied operation and applied index durable (before the
    /// Raft log that could replay them is truncated).
    fn sync(&self) -> Result<(), BackendError> {
        Ok(())
    }
    /// Checks every block of every version of `object` against its
    /// record. A backend without checksums has nothing to check.
    fn scrub_object(&self, _object: &ObjectId) -> Result<ObjectScrub, BackendError> {
        Ok(ObjectScrub::default())
    }
    /// A digest of `object` as it stands between applied entries: two
    /// replicas' digests are equal when they hold the same versions with
    /// the same blocks (a disk store digests each block's recorded crc32c,
    /// which its scrub checks against the data).
    fn digest_object(&self, object: &ObjectId) -> Result<Digest, BackendError>;
    /// Where the digests taken by applied digest entries are kept.
    fn digests(&self) -> &DigestBoard;
    /// Block `at` as stored, unchecked, with its record; `None` when this
    /// backend does not hold that version (or keeps no checksums).
    fn block_copy(&self, _at: &BlockRef) -> Result<Option<BlockCopy>, BackendError> {
        Ok(None)
    }
    /// Rewrites block `at` with `bytes`, only if their crc32c is the one
    /// recorded for it (zeroes for a block without a record), atomically
    /// with respect to applying entries.
    fn repair_block(&self, _at: &BlockRef, _bytes: &[u8]) -> Result<BlockRepair, BackendError> {
        Ok(BlockRepair::Gone)
    }
    /// The numbers of `volume`'s objects this backend holds anything of.
    fn object_numbers(&self, _volume: u64) -> Result<Vec<u64>, BackendError> {
        Err(BackendError::Failed(NO_COPY.into()))
    }
    /// Every version of `object` with its record, as of one moment
    /// between applied entries (for a new replica's copy).
    fn export_object(&self, _object: &ObjectId) -> Result<ObjectImage, BackendError> {
        Err(BackendError::Failed(NO_COPY.into()))
    }
    /// Replaces everything held of `image.object` (of `pg`) with the
    /// image. Not durable until [`PgBackend::finish_import`].
    fn import_object(&self, _pg: GroupId, _image: &ObjectImage) -> Result<(), BackendError> {
        Err(BackendError::Failed(NO_COPY.into()))
    }
    /// Deletes everything held of `object` (a copy did not contain it).
    fn remove_object(&self, _object: &ObjectId) -> Result<(), BackendError> {
        Err(BackendError::Failed(NO_COPY.into()))
    }
    /// Makes the imported objects durable and records `pg` as applied up
    /// to `index`.
    fn finish_import(&self, _pg: GroupId, _index: u64) -> Result<(), BackendError> {
        Err(BackendError::Failed(NO_COPY.into()))
    }
}

const NO_COPY: &str = "this object backend cannot copy replicas";

/// (PG, entry index), and one digest per object of the entry.
type TakenDigests = ((GroupId, u64), Vec<Digest>);

/// Digest entries' results kept per backend.
const DIGESTS_KEPT: usize = 256;

/// The digests that applied digest entries took on one backend, by PG and
/// entry index, until a scrub fetches them (the latest
/// [`DIGESTS_KEPT`]).
#[derive(Default)]
pub struct DigestBoard {
    taken: Mutex<std::collections::VecDeque<TakenDigests>>,
}

impl DigestBoard {
    pub fn record(&self, pg: GroupId, index: u64, digests: Vec<Digest>) {
        let mut taken = self.taken.lock().expect("digests lock");
        if taken.len() >= DIGESTS_KEPT {
            taken.pop_front();
        }
        taken.push_back(((pg, index), digests));
    }

    /// What entry `index` of `pg` took here, if it was applied lately.
    pub fn get(&self, pg: GroupId, index: u64) -> Option<Vec<Digest>> {
        let taken = self.taken.lock().expect("digests lock");
        taken
            .iter()
            .rev()
            .find(|(at, _)| *at == (pg, index))
            .map(|(_, d)| d.clone())
    }
}

/// One version of an object, in a replica copy: its recorded blocks with
/// their crc32c as recorded (a block corrupt in the source stays
/// detectable in the copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionImage {
    /// `None` for the head.
    pub clone_seq: Option<u64>,
    /// (block number, recorded crc32c, the 4 KiB as stored).
    pub blocks: Vec<(u64, u32, Vec<u8>)>,
}

/// An object in a replica copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectImage {
    pub object: ObjectId,
    /// The object's record ([`ObjectMeta::encode`]), if it has one.
    pub record: Option<Vec<u8>>,
    pub versions: Vec<VersionImage>,
}

/// One object of the in-memory backend.
#[derive(Default)]
struct MemoryObject {
    head: Option<Vec<u8>>,
    meta: ObjectMeta,
    clones: BTreeMap<u64, Vec<u8>>,
}

impl MemoryObject {
    fn pristine(&self) -> bool {
        self.meta.is_pristine()
    }

    fn copy_up(&mut self, copy_up: &CopyUp) {
        if let CopyUp::Data(base) = copy_up {
            if self.pristine() {
                self.head = Some(base.clone());
                self.meta.head = true;
            }
        }
    }

    /// Keeps the head for older snapshots before a change with `seq`.
    fn preserve(&mut self, seq: u64) {
        let preserve = self.meta.must_preserve(seq);
        if preserve {
            let head = self.head.clone().unwrap_or_default();
            self.clones.insert(seq, head);
        }
        self.meta.advance(seq, preserve);
    }

    fn set_head(&mut self, head: Option<Vec<u8>>) {
        self.meta.head = head.is_some();
        self.head = head;
    }
}

/// A backend in memory: the model the disk store is tested against, and
/// the backend of the replication and volume layers' tests.
#[derive(Default)]
pub struct MemoryBackend {
    objects: Mutex<BTreeMap<ObjectId, MemoryObject>>,
    applied: Mutex<HashMap<GroupId, u64>>,
    digests: DigestBoard,
}

fn nonzero_block_bytes(bytes: &[u8]) -> u64 {
    bytes
        .chunks(4096)
        .filter(|b| b.iter().any(|&x| x != 0))
        .count() as u64
        * 4096
}

impl PgBackend for MemoryBackend {
    fn digest_object(&self, object: &ObjectId) -> Result<Digest, BackendError> {
        let objects = self.objects.lock().expect("lock");
        let mut hasher = blake3::Hasher::new();
        if let Some(o) = objects.get(object) {
            let mut part = |tag: u64, bytes: &[u8]| {
                hasher.update(&tag.to_le_bytes());
                hasher.update(&(bytes.len() as u64).to_le_bytes());
                hasher.update(bytes);
            };
            part(0, &o.meta.encode());
            if let Some(head) = &o.head {
                part(1, head);
            }
            for (seq, bytes) in &o.clones {
                part(2 + seq, bytes);
            }
        }
        Ok(*hasher.finalize().as_bytes())
    }

    fn digests(&self) -> &DigestBoard {
        &self.digests
    }

    fn applied_index(&self, pg: GroupId) -> Result<u64, BackendError> {
        Ok(*self.applied.lock().expect("lock").get(&pg).unwrap_or(&0))
    }

    fn forget_pg(&self, pg: GroupId) -> Result<(), BackendError> {
        self.applied.lock().expect("lock").remove(&pg);
        Ok(())
    }

    fn apply(&self, pg: GroupId, index: u64, ops: &[ObjectOp]) -> Result<(), BackendError> {
        let mut objects = self.objects.lock().expect("lock");
        for op in ops {
            let o = objects.entry(*op.object()).or_default();
            o.copy_up(op.copy_up());
            match op {
                ObjectOp::Write {
                    offset, data, seq, ..
                } => {
                    o.preserve(*seq);
                    let mut bytes = o.head.take().unwrap_or_default();
                    let end = *offset as usize + data.len();
                    if bytes.len() < end {
                        bytes.resize(end, 0);
                    }
                    bytes[*offset as usize..end].copy_from_slice(data);
                    o.set_head(Some(bytes));
                }
                ObjectOp::Discard {
                    offset, len, seq, ..
                } => {
                    if o.head.is_some() {
                        o.preserve(*seq);
                        let bytes = o.head.as_mut().expect("checked");
                        let start = (*offset as usize).min(bytes.len());
                        let end = (*offset + *len).min(bytes.len() as u64) as usize;
                        bytes[start..end].fill(0);
                    }
                }
                ObjectOp::Delete { seq, .. } => {
                    if o.head.is_some() {
                        o.preserve(*seq);
                        o.set_head(None);
                    }
                }
                ObjectOp::Rollback { snapshot, seq, .. } => {
                    match o.meta.version_at(Some(*snapshot)) {
                        Version::Head => {}
                        Version::Clone(c) => {
                            let bytes = o.clones.get(&c).cloned().unwrap_or_default();
                            o.preserve(*seq);
                            o.set_head(Some(bytes));
                        }
                        Version::Absent => {
                            if o.head.is_some() {
                                o.preserve(*seq);
                                o.set_head(None);
                            }
                        }
                    }
                }
                ObjectOp::Trim {
                    removed,
                    lower,
                    upper,
                    ..
                } => {
                    for seq in o.meta.unneeded_after_removal(*removed, *lower, *upper) {
                        o.clones.remove(&seq);
                        o.meta.clones.retain(|c| c.seq != seq);
                    }
                }
                ObjectOp::Purge { .. } => *o = MemoryObject::default(),
            }
            if o.pristine() {
                objects.remove(op.object());
            }
        }
        self.applied.lock().expect("lock").insert(pg, index);
        Ok(())
    }

    fn apply_noop(&self, pg: GroupId, index: u64) -> Result<(), BackendError> {
        self.applied.lock().expect("lock").insert(pg, index);
        Ok(())
    }

    fn read(
        &self,
        object: &ObjectId,
        snapshot: Option<u64>,
        offset: u64,
        len: u64,
    ) -> Result<Option<Vec<u8>>, BackendError> {
        let objects = self.objects.lock().expect("lock");
        let Some(o) = objects.get(object) else {
            return Ok(None);
        };
        let bytes = match o.meta.version_at(snapshot) {
            Version::Head => o.head.as_deref().unwrap_or_default(),
            Version::Clone(c) => o.clones.get(&c).map(Vec::as_slice).unwrap_or_default(),
            Version::Absent => return Ok(None),
        };
        let mut out = vec![0u8; len as usize];
        let start = (offset as usize).min(bytes.len());
        let end = ((offset + len) as usize).min(bytes.len());
        out[..end - start].copy_from_slice(&bytes[start..end]);
        Ok(Some(out))
    }

    fn is_pristine(&self, object: &ObjectId) -> Result<bool, BackendError> {
        let objects = self.objects.lock().expect("lock");
        Ok(objects.get(object).is_none_or(MemoryObject::pristine))
    }

    fn stat(&self, object: &ObjectId) -> Result<ObjectStat, BackendError> {
        let objects = self.objects.lock().expect("lock");
        let Some(o) = objects.get(object) else {
            return Ok(ObjectStat::default());
        };
        Ok(ObjectStat {
            stamp: o.meta.stamp,
            head_bytes: o.head.as_deref().map(nonzero_block_bytes),
            clones: o
                .meta
                .clones
                .iter()
                .map(|c| {
                    let bytes = o.clones.get(&c.seq).map(|b| nonzero_block_bytes(b));
                    (c.seq, c.from, bytes.unwrap_or(0))
                })
                .collect(),
        })
    }

    fn allocated_bytes(&self, volume: u64) -> Result<u64, BackendError> {
        let objects = self.objects.lock().expect("lock");
        Ok(objects
            .iter()
            .filter(|(id, _)| id.volume == volume)
            .map(|(_, o)| {
                o.head.as_ref().map_or(0, |h| h.len() as u64)
                    + o.clones.values().map(|c| c.len() as u64).sum::<u64>()
            })
            .sum())
    }
}
