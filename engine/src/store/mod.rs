//! The object store of one disk: object data in files, metadata (a crc32c
//! per 4 KiB block, snapshot versions, each PG's applied index) in the
//! disk's RocksDB.
//!
//! Layout under the disk's directory:
//!
//! | path / key | content |
//! |---|---|
//! | `objects/<volume:016x>/<object:016x>` | the head version's bytes at their offsets; holes read as zero |
//! | `objects/<volume:016x>/<object:016x>@<seq:016x>` | a clone version kept for snapshots (see [`crate::pg::versions`]) |
//! | `meta/` | RocksDB |
//! | key `'a' pg:u64be` | version `1`, applied index u64le: written by a finished copy; before 2026-12-01 also by every entry (read only to set up `'d'` keys) |
//! | key `'d' pg:u64be` | version `1`, durable index u64le: entries up to it have their data synced |
//! | key `format-deferred-sync` | `1`: the `'d'` keys exist (set once, copying `'a'`, for a store written when every entry synced) |
//! | key `'c' volume:u64be object:u64be block:u64be` | version `1`, crc32c u32le of that 4 KiB block of the head |
//! | key `'s' volume:u64be object:u64be seq:u64be block:u64be` | the same for clone version `seq` |
//! | key `'o' volume:u64be object:u64be` | the object's record ([`ObjectMeta`]); absent while it has no versions and no snapshot has touched it |
//!
//! A block with no crc key is all zero (never written, or discarded). Every
//! read checks every block it touches: a mismatch is
//! [`StoreError::Corrupt`], never silent data; `integrity.rs` checks whole
//! objects (scrub) and rewrites a bad block with a copy that matches its
//! record (repair). An applied entry's data goes to the page cache; every
//! second the data of all entries applied since is synced in one batch
//! and each PG's durable index recorded after it ([`DiskStore::sync_applied`]).
//! The Raft log holds those entries durably meanwhile (it is compacted
//! only after a sync), and replaying an entry is harmless, so a crash at
//! any point is repaired by replaying the PG's log from the durable index.
//! Preserving a head for a
//! snapshot is the one step a replay must not repeat (it would copy a head
//! that later operations already changed), so the clone and the record
//! saying it exists are made durable (synced) before the head changes.
//!
//! This module owns files and metadata of one disk; it never decides what
//! to write (the PG state machine does, and a repair only restores what
//! the record already says) and never talks to other nodes.

use rocksdb::{WriteBatch, DB};
use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

pub mod file_io;

use self::file_io::{FileIo, FileIoKind};
use crate::pg::backend::{
    BackendError, BadBlock, BlockCopy, BlockRef, BlockRepair, ObjectImage, ObjectScrub, PgBackend,
};
use crate::pg::command::{CopyUp, ObjectId, ObjectOp, ObjectStat};
use crate::pg::versions::{ObjectMeta, Version};
use crate::replication::GroupId;

/// Checksum granularity.
pub const BLOCK_BYTES: u64 = 4096;
const VERSION: u8 = 1;

/// Why the disk store failed. Each names the object or file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed (disk full, I/O error, permissions).
    #[error("{op} {path}: {source}; check the disk (dmesg, df) and the directory's permissions")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// Stored bytes do not match their checksum: the block must be repaired
    /// from another replica (read repair and scrub do it).
    #[error("object {volume:x}.{object_no:x}{} block {block}: crc32c {actual:08x} does not match the {} {expected:08x}; the block is corrupt on this disk and must be repaired from another replica", .clone_seq.map(|s| format!(" (clone@{s})")).unwrap_or_default(), if *.recorded { "recorded" } else { "all-zero block's" })]
    Corrupt {
        volume: u64,
        object_no: u64,
        /// The clone version, `None` for the head.
        clone_seq: Option<u64>,
        block: u64,
        /// Whether the block has a crc record (without one it must be zero).
        recorded: bool,
        expected: u32,
        actual: u32,
    },
    /// The metadata database failed.
    #[error("metadata of disk {path}: {reason}")]
    Meta { path: PathBuf, reason: String },
}

impl StoreError {
    /// A stable code for the API and logs.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Io { .. } => "store.io",
            StoreError::Corrupt { .. } => "store.corrupt",
            StoreError::Meta { .. } => "store.meta",
        }
    }
}

impl From<StoreError> for BackendError {
    fn from(e: StoreError) -> BackendError {
        let message = format!("{} [{}]", e, e.code());
        match e {
            StoreError::Corrupt {
                volume,
                object_no,
                clone_seq,
                block,
                recorded,
                expected,
                actual,
            } => BackendError::Corrupt {
                bad: BadBlock {
                    at: BlockRef {
                        object: ObjectId { volume, object_no },
                        clone_seq,
                        block,
                    },
                    recorded: recorded.then_some(expected),
                    actual,
                },
                message,
            },
            _ => BackendError::Failed(message),
        }
    }
}

fn applied_key(pg: GroupId) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = b'a';
    k[1..].copy_from_slice(&pg.to_be_bytes());
    k
}

/// Up to where a PG's applied entries have their data synced: where a
/// restart replays the Raft log from.
fn durable_key(pg: GroupId) -> [u8; 9] {
    let mut k = applied_key(pg);
    k[0] = b'd';
    k
}

/// Present once the store keeps durable indexes (`'d'` keys).
const DEFERRED_SYNC_MARKER: &[u8] = b"format-deferred-sync";

/// What applied entries wrote and has not been synced yet.
#[derive(Default)]
struct Unsynced {
    /// Objects whose head file was written (their paths are built only
    /// for a sync that names files).
    objects: HashSet<ObjectId>,
    /// PG -> the highest index applied (its data is in `objects`).
    applied: HashMap<GroupId, u64>,
}

/// Which version of an object a file and its crc keys belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loc {
    Head,
    Clone(u64),
}

impl Loc {
    fn of(clone_seq: Option<u64>) -> Loc {
        clone_seq.map_or(Loc::Head, Loc::Clone)
    }

    fn clone_seq(self) -> Option<u64> {
        match self {
            Loc::Head => None,
            Loc::Clone(seq) => Some(seq),
        }
    }

    /// Every version an object's record names: the head, then its clones.
    fn all_of(meta: &ObjectMeta) -> impl Iterator<Item = Loc> + '_ {
        std::iter::once(Loc::Head).chain(meta.clones.iter().map(|c| Loc::Clone(c.seq)))
    }
}

/// A crc key: 25 bytes for the head, 33 for a clone version.
struct BlockKey {
    bytes: [u8; 33],
    len: usize,
}

impl AsRef<[u8]> for BlockKey {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

fn crc_key_at(object: &ObjectId, loc: Loc, block: u64) -> BlockKey {
    let mut bytes = [0u8; 33];
    bytes[1..9].copy_from_slice(&object.volume.to_be_bytes());
    bytes[9..17].copy_from_slice(&object.object_no.to_be_bytes());
    let len = match loc {
        Loc::Head => {
            bytes[0] = b'c';
            bytes[17..25].copy_from_slice(&block.to_be_bytes());
            25
        }
        Loc::Clone(seq) => {
            bytes[0] = b's';
            bytes[17..25].copy_from_slice(&seq.to_be_bytes());
            bytes[25..33].copy_from_slice(&block.to_be_bytes());
            33
        }
    };
    BlockKey { bytes, len }
}

fn crc_key(object: &ObjectId, block: u64) -> BlockKey {
    crc_key_at(object, Loc::Head, block)
}

fn meta_key(object: &ObjectId) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = b'o';
    k[1..9].copy_from_slice(&object.volume.to_be_bytes());
    k[9..17].copy_from_slice(&object.object_no.to_be_bytes());
    k
}

/// A block number and its stored crc value.
type RecordedBlock = (u64, Box<[u8]>);

/// The record of an object as one entry's operations change it.
struct Working {
    meta: ObjectMeta,
    /// The record as stored (`None`: unrecorded). An unchanged record is
    /// not written again; a trivial one that is stored must be deleted.
    stored: Option<ObjectMeta>,
}

impl Working {
    fn unrecorded(head_exists: bool) -> Working {
        Working {
            meta: ObjectMeta::unrecorded(head_exists),
            stored: None,
        }
    }
}

fn versioned(body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(body.len() + 1);
    v.push(VERSION);
    v.extend_from_slice(body);
    v
}

/// The object store of one disk.
pub struct DiskStore {
    root: PathBuf,
    db: DB,
    /// Objects that have a record (a superset while a batch is in
    /// flight): every other object is unrecorded, so the common write and
    /// read pay no database lookup for snapshots they never had.
    recorded: Mutex<HashSet<ObjectId>>,
    /// io_uring, or positional I/O where it is unavailable.
    io: Box<dyn FileIo>,
    /// Held while an entry is applied and while a block is repaired, so
    /// that a repair never lands between a write and its crc record.
    apply_lock: Mutex<()>,
    /// Written since the last [`DiskStore::sync_applied`].
    unsynced: Mutex<Unsynced>,
    /// Held across a whole `sync_applied` (and `finish_copy`): two syncs
    /// at once could record a durable index past files the other is still
    /// syncing, and the log would be truncated on it.
    sync_lock: Mutex<()>,
    /// Files a replica copy wrote, per PG, until its copy is finished.
    copied: Mutex<HashMap<GroupId, Vec<PathBuf>>>,
    /// Head files kept open for writes (an open and a close per applied
    /// entry cost more than its pwrite). Every removal or replacement of
    /// a head file forgets its entry first ([`DiskStore::forget_head`]).
    open_heads: Mutex<HashMap<ObjectId, Arc<File>>>,
    digests: crate::pg::backend::DigestBoard,
}

/// Head files a store keeps open.
const OPEN_HEADS_MAX: usize = 256;

impl DiskStore {
    /// Opens (or creates) the store in directory `root`, with io_uring if
    /// it can be set up.
    pub fn open(root: &Path) -> Result<DiskStore, StoreError> {
        Self::open_with(root, FileIoKind::Auto)
    }

    /// [`DiskStore::open`] with a chosen I/O backend.
    pub fn open_with(root: &Path, io: FileIoKind) -> Result<DiskStore, StoreError> {
        let io = file_io::file_io(io).map_err(|source| StoreError::Io {
            op: "set up io_uring for",
            path: root.to_path_buf(),
            source,
        })?;
        let objects = root.join("objects");
        std::fs::create_dir_all(&objects).map_err(|source| StoreError::Io {
            op: "create",
            path: objects.clone(),
            source,
        })?;
        let mut options = rocksdb::Options::default();
        options.create_if_missing(true);
        // Applying an entry writes its metadata without a sync: the log
        // replays it from the durable index after a crash. So the
        // write-ahead log is buffered in memory and written out by the
        // next synced write (sync_applied, preserve, finish_copy), not by
        // a write(2) per entry.
        options.set_manual_wal_flush(true);
        let meta = |e: rocksdb::Error| StoreError::Meta {
            path: root.to_path_buf(),
            reason: e.to_string(),
        };
        let db = DB::open(&options, root.join("meta")).map_err(meta)?;
        let mut recorded = HashSet::new();
        for item in db.prefix_iterator([b'o']) {
            let (key, _) = item.map_err(meta)?;
            if key.len() != 17 || key[0] != b'o' {
                break;
            }
            recorded.insert(ObjectId {
                volume: u64::from_be_bytes(key[1..9].try_into().expect("8 bytes")),
                object_no: u64::from_be_bytes(key[9..17].try_into().expect("8 bytes")),
            });
        }
        if db.get(DEFERRED_SYNC_MARKER).map_err(meta)?.is_none() {
            // Written when every entry synced its data: applied is durable.
            let mut batch = WriteBatch::default();
            for item in db.prefix_iterator([b'a']) {
                let (key, value) = item.map_err(meta)?;
                if key.len() != 9 || key[0] != b'a' {
                    break;
                }
                let mut durable = key.to_vec();
                durable[0] = b'd';
                batch.put(durable, value);
            }
            batch.put(DEFERRED_SYNC_MARKER, [1u8]);
            let mut options = rocksdb::WriteOptions::default();
            options.set_sync(true);
            db.write_opt(batch, &options).map_err(meta)?;
        }
        Ok(DiskStore {
            root: root.to_path_buf(),
            db,
            recorded: Mutex::new(recorded),
            io,
            apply_lock: Mutex::new(()),
            unsynced: Mutex::new(Unsynced::default()),
            sync_lock: Mutex::new(()),
            copied: Mutex::new(HashMap::new()),
            open_heads: Mutex::new(HashMap::new()),
            digests: Default::default(),
        })
    }

    /// The I/O backend in use (`io_uring` or `positional`).
    pub fn io_backend(&self) -> &'static str {
        self.io.name()
    }

    fn meta_error(&self, e: rocksdb::Error) -> StoreError {
        StoreError::Meta {
            path: self.root.clone(),
            reason: e.to_string(),
        }
    }

    /// Where an object's head bytes live.
    pub fn object_path(&self, object: &ObjectId) -> PathBuf {
        self.version_path(object, Loc::Head)
    }

    fn version_path(&self, object: &ObjectId, loc: Loc) -> PathBuf {
        let dir = self
            .root
            .join("objects")
            .join(format!("{:016x}", object.volume));
        match loc {
            Loc::Head => dir.join(format!("{:016x}", object.object_no)),
            Loc::Clone(seq) => dir.join(format!("{:016x}@{seq:016x}", object.object_no)),
        }
    }

    fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
        move |source| StoreError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    fn open_for_write(&self, object: &ObjectId, loc: Loc) -> Result<File, StoreError> {
        let path = self.version_path(object, loc);
        let open = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
        };
        let file = match open() {
            Ok(file) => file,
            // The volume's first object here: make its directory. Tried
            // second, so that the common write pays no mkdir.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(Self::io("create", dir))?;
                }
                open().map_err(Self::io("open", &path))?
            }
            Err(e) => return Err(Self::io("open", &path)(e)),
        };
        // Kept heads serve reads too.
        file_io::advise_random(&file);
        Ok(file)
    }

    /// An object file opened for reading, `None` if it does not exist.
    fn open_to_read(path: &Path) -> Result<Option<File>, StoreError> {
        let file = Self::open_existing(path)?;
        file.iter().for_each(file_io::advise_random);
        Ok(file)
    }

    /// `path` opened read-only, `None` if it does not exist.
    fn open_existing(path: &Path) -> Result<Option<File>, StoreError> {
        match File::open(path) {
            Ok(file) => Ok(Some(file)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::io("open", path)(e)),
        }
    }

    /// The head file of `object`, opened for writing (created if absent),
    /// from the open files kept.
    fn open_head(&self, object: &ObjectId) -> Result<Arc<File>, StoreError> {
        let mut open = self.open_heads.lock().expect("open heads lock");
        if let Some(file) = open.get(object) {
            return Ok(file.clone());
        }
        let file = Arc::new(self.open_for_write(object, Loc::Head)?);
        if open.len() >= OPEN_HEADS_MAX {
            if let Some(evicted) = open.keys().next().copied() {
                open.remove(&evicted);
            }
        }
        open.insert(*object, file.clone());
        Ok(file)
    }

    /// Closes the kept head file of `object`: call before its head file is
    /// removed or replaced, so that no write lands in an unlinked file.
    pub(crate) fn forget_head(&self, object: &ObjectId) {
        self.open_heads
            .lock()
            .expect("open heads lock")
            .remove(object);
    }

    fn remove_file(path: &Path) -> Result<(), StoreError> {
        match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Self::io("remove", path)(e)),
        }
    }

    /// The 4 KiB block `block` of `file`, zero past the end of the file.
    fn read_block(
        &self,
        file: &File,
        path: &Path,
        block: u64,
    ) -> Result<[u8; BLOCK_BYTES as usize], StoreError> {
        let mut buffer = [0u8; BLOCK_BYTES as usize];
        self.io
            .read_at(file, &mut buffer, block * BLOCK_BYTES)
            .map_err(Self::io("read", path))?;
        Ok(buffer)
    }

    /// Records the crc of every head block in `[start, end)` as the file
    /// now holds it; an all-zero block gets no crc (it reads as a hole).
    fn stage_crcs(
        &self,
        batch: &mut WriteBatch,
        object: &ObjectId,
        file: &File,
        start: u64,
        end: u64,
    ) -> Result<(), StoreError> {
        let path = self.object_path(object);
        for block in start / BLOCK_BYTES..end.div_ceil(BLOCK_BYTES) {
            let bytes = self.read_block(file, &path, block)?;
            if bytes.iter().all(|&b| b == 0) {
                batch.delete(crc_key(object, block));
            } else {
                batch.put(
                    crc_key(object, block),
                    versioned(&crc32c::crc32c(&bytes).to_le_bytes()),
                );
            }
        }
        Ok(())
    }

    /// [`DiskStore::stage_crcs`] after writing `data` at `offset`: the
    /// blocks `data` covers whole are hashed from it, only the partial
    /// ones at its ends are read back.
    fn stage_written_crcs(
        &self,
        batch: &mut WriteBatch,
        object: &ObjectId,
        file: &File,
        offset: u64,
        data: &[u8],
    ) -> Result<(), StoreError> {
        let end = offset + data.len() as u64;
        let first_whole = offset.div_ceil(BLOCK_BYTES);
        let end_whole = (end / BLOCK_BYTES).max(first_whole);
        if first_whole * BLOCK_BYTES > offset {
            self.stage_crcs(
                batch,
                object,
                file,
                offset,
                (first_whole * BLOCK_BYTES).min(end),
            )?;
        }
        for block in first_whole..end_whole {
            let at = (block * BLOCK_BYTES - offset) as usize;
            let bytes = &data[at..at + BLOCK_BYTES as usize];
            if bytes.iter().all(|&b| b == 0) {
                batch.delete(crc_key(object, block));
            } else {
                batch.put(
                    crc_key(object, block),
                    versioned(&crc32c::crc32c(bytes).to_le_bytes()),
                );
            }
        }
        if end_whole * BLOCK_BYTES < end && end_whole >= first_whole {
            self.stage_crcs(batch, object, file, end_whole * BLOCK_BYTES, end)?;
        }
        Ok(())
    }

    /// Every (block, stored crc value) of a version, in block order.
    fn recorded_blocks(
        &self,
        object: &ObjectId,
        loc: Loc,
    ) -> Result<Vec<RecordedBlock>, StoreError> {
        let first = crc_key_at(object, loc, 0);
        let prefix_len = first.len - 8;
        let mut out = Vec::new();
        let iter = self.db.iterator(rocksdb::IteratorMode::From(
            first.as_ref(),
            rocksdb::Direction::Forward,
        ));
        for item in iter {
            let (key, value) = item.map_err(|e| self.meta_error(e))?;
            if key.len() != first.len || key[..prefix_len] != first.as_ref()[..prefix_len] {
                break;
            }
            let block = u64::from_be_bytes(key[prefix_len..].try_into().expect("8 bytes"));
            out.push((block, value));
        }
        Ok(out)
    }

    fn delete_crcs(batch: &mut WriteBatch, object: &ObjectId, loc: Loc) {
        batch.delete_range(
            crc_key_at(object, loc, 0),
            crc_key_at(object, loc, u64::MAX),
        );
        batch.delete(crc_key_at(object, loc, u64::MAX));
    }

    /// Copies version `from` of `object` into `to` (a fresh file): its
    /// recorded blocks byte for byte with their recorded crcs, so that a
    /// block corrupt in the source stays detectable in the copy.
    fn copy_version(
        &self,
        batch: &mut WriteBatch,
        object: &ObjectId,
        from: Loc,
        to: Loc,
    ) -> Result<File, StoreError> {
        let source_path = self.version_path(object, from);
        let target_path = self.version_path(object, to);
        if to == Loc::Head {
            self.forget_head(object);
        }
        Self::remove_file(&target_path)?;
        Self::delete_crcs(batch, object, to);
        let target = self.open_for_write(object, to)?;
        if let Some(source) = Self::open_to_read(&source_path)? {
            for (block, crc) in self.recorded_blocks(object, from)? {
                let bytes = self.read_block(&source, &source_path, block)?;
                self.io
                    .write_all_at(&target, &bytes, block * BLOCK_BYTES)
                    .map_err(Self::io("write", &target_path))?;
                batch.put(crc_key_at(object, to, block), crc);
            }
        }
        Ok(target)
    }

    fn punch_hole(
        &self,
        file: &File,
        path: &Path,
        offset: u64,
        len: u64,
    ) -> Result<(), StoreError> {
        // SAFETY: fallocate on a file descriptor we own; no memory involved.
        let rc = unsafe {
            libc::fallocate(
                file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset as libc::off_t,
                len as libc::off_t,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::EOPNOTSUPP) {
            // No hole punching here: write zeroes instead (space stays used).
            let zeroes = vec![0u8; len.min(1 << 20) as usize];
            let mut at = offset;
            while at < offset + len {
                let take = (offset + len - at).min(zeroes.len() as u64) as usize;
                self.io
                    .write_all_at(file, &zeroes[..take], at)
                    .map_err(Self::io("write", path))?;
                at += take as u64;
            }
            return Ok(());
        }
        Err(StoreError::Io {
            op: "punch hole in",
            path: path.to_path_buf(),
            source: error,
        })
    }

    /// The object's record, or what an unrecorded object implies.
    fn load_meta(&self, object: &ObjectId) -> Result<Working, StoreError> {
        self.load_meta_with(object, true)
    }

    /// [`DiskStore::load_meta`]; without `check_head`, an unrecorded
    /// object's head is taken as absent without a stat (for a change that
    /// does not depend on it).
    fn load_meta_with(&self, object: &ObjectId, check_head: bool) -> Result<Working, StoreError> {
        if !self
            .recorded
            .lock()
            .expect("recorded lock")
            .contains(object)
        {
            let head = check_head && self.object_path(object).exists();
            return Ok(Working::unrecorded(head));
        }
        match self
            .db
            .get(meta_key(object))
            .map_err(|e| self.meta_error(e))?
        {
            Some(bytes) => {
                let meta = ObjectMeta::decode(&bytes).map_err(|reason| StoreError::Meta {
                    path: self.root.clone(),
                    reason: format!(
                        "record of object {:x}.{:x}: {reason}",
                        object.volume, object.object_no
                    ),
                })?;
                Ok(Working {
                    stored: Some(meta.clone()),
                    meta,
                })
            }
            None => Ok(Working::unrecorded(self.object_path(object).exists())),
        }
    }

    /// Stages the record; the in-memory set gains the object now and
    /// loses it only once the deletion is written (so it never misses a
    /// stored record).
    fn stage_meta(
        &self,
        batch: &mut WriteBatch,
        object: &ObjectId,
        working: &mut Working,
        unrecorded: &mut Vec<ObjectId>,
    ) {
        if working.meta.is_trivial() {
            if working.stored.take().is_some() {
                batch.delete(meta_key(object));
                unrecorded.push(*object);
            }
        } else if working.stored.as_ref() != Some(&working.meta) {
            self.recorded.lock().expect("recorded lock").insert(*object);
            batch.put(meta_key(object), working.meta.encode());
            working.stored = Some(working.meta.clone());
        }
    }

    /// Writes what the entry changed so far (data synced first), so that
    /// a copy taken next sees it in the database too.
    fn flush_pending(
        &self,
        batch: &mut WriteBatch,
        touched: &HashMap<ObjectId, Arc<File>>,
    ) -> Result<(), StoreError> {
        self.sync_touched(touched)?;
        let pending = std::mem::take(batch);
        self.db.write(pending).map_err(|e| self.meta_error(e))
    }

    /// Makes what applied entries wrote durable: syncs every file they
    /// touched (in one batch where the I/O backend can), then records each
    /// PG's durable index, synced. Called every applied_sync_ms by the node, by the
    /// Raft loop for a log truncation kept waiting, and on drop. When it
    /// returns Ok, everything applied before the call is durable; on an
    /// error, what it took is put back for the next call.
    pub fn sync_applied(&self) -> Result<(), StoreError> {
        let _syncing = self.lock_sync();
        let unsynced = std::mem::take(&mut *self.unsynced.lock().expect("unsynced lock"));
        if unsynced.applied.is_empty() {
            return Ok(());
        }
        let paths: Vec<PathBuf> = unsynced
            .objects
            .iter()
            .map(|o| self.object_path(o))
            .collect();
        let result = self.sync_paths(&paths).and_then(|()| {
            let mut batch = WriteBatch::default();
            for (pg, index) in &unsynced.applied {
                batch.put(durable_key(*pg), versioned(&index.to_le_bytes()));
            }
            let mut options = rocksdb::WriteOptions::default();
            options.set_sync(true);
            self.db
                .write_opt(batch, &options)
                .map_err(|e| self.meta_error(e))
        });
        if result.is_err() {
            let mut now = self.unsynced.lock().expect("unsynced lock");
            now.objects.extend(unsynced.objects);
            for (pg, index) in unsynced.applied {
                let at = now.applied.entry(pg).or_insert(index);
                *at = (*at).max(index);
            }
        }
        result
    }

    /// See [`PgBackend::forget_pg`]. Under the sync lock, so that a sync
    /// that took the PG's index before cannot write it back after.
    pub fn forget_pg(&self, pg: GroupId) -> Result<(), StoreError> {
        let _syncing = self.lock_sync();
        self.unsynced
            .lock()
            .expect("unsynced lock")
            .applied
            .remove(&pg);
        let mut options = rocksdb::WriteOptions::default();
        options.set_sync(true);
        self.db
            .delete_opt(durable_key(pg), &options)
            .map_err(|e| self.meta_error(e))
    }

    /// Syncs the data of the files at `paths`, all at once where the I/O
    /// backend can; a file deleted since has nothing left to keep.
    fn sync_paths<'a>(
        &self,
        paths: impl IntoIterator<Item = &'a PathBuf>,
    ) -> Result<(), StoreError> {
        let mut files = Vec::new();
        for path in paths {
            // Only to sync: no read advice.
            files.extend(Self::open_existing(path)?);
        }
        let refs: Vec<&File> = files.iter().collect();
        self.io.sync_data(&refs).map_err(|source| StoreError::Io {
            op: "sync",
            path: self.root.join("objects"),
            source,
        })
    }

    /// Syncs the data of every touched file, all at once where the I/O
    /// backend can.
    fn sync_touched(&self, touched: &HashMap<ObjectId, Arc<File>>) -> Result<(), StoreError> {
        let files: Vec<&File> = touched.values().map(|f| &**f).collect();
        self.io.sync_data(&files).map_err(|source| {
            // The batch names no single file; name the objects.
            let objects: Vec<String> = touched
                .keys()
                .map(|o| format!("{:x}.{:x}", o.volume, o.object_no))
                .collect();
            StoreError::Io {
                op: "sync",
                path: self.root.join("objects").join(objects.join(",")),
                source,
            }
        })
    }

    /// Before a change with `seq`: keeps the head as clone `seq` if an
    /// older snapshot still sees it, durably, then advances the stamp.
    fn preserve(
        &self,
        batch: &mut WriteBatch,
        touched: &HashMap<ObjectId, Arc<File>>,
        object: &ObjectId,
        working: &mut Working,
        seq: u64,
    ) -> Result<(), StoreError> {
        if !working.meta.must_preserve(seq) {
            working.meta.advance(seq, false);
            return Ok(());
        }
        self.flush_pending(batch, touched)?;
        let mut copy = WriteBatch::default();
        let clone = self.copy_version(&mut copy, object, Loc::Head, Loc::Clone(seq))?;
        self.io.sync_data(&[&clone]).map_err(Self::io(
            "sync",
            &self.version_path(object, Loc::Clone(seq)),
        ))?;
        working.meta.advance(seq, true);
        self.stage_meta(&mut copy, object, working, &mut Vec::new());
        let mut options = rocksdb::WriteOptions::default();
        options.set_sync(true);
        self.db
            .write_opt(copy, &options)
            .map_err(|e| self.meta_error(e))
    }

    fn remove_head(
        &self,
        batch: &mut WriteBatch,
        touched: &mut HashMap<ObjectId, Arc<File>>,
        object: &ObjectId,
        working: &mut Working,
    ) -> Result<(), StoreError> {
        touched.remove(object);
        self.forget_head(object);
        Self::remove_file(&self.object_path(object))?;
        Self::delete_crcs(batch, object, Loc::Head);
        working.meta.head = false;
        Ok(())
    }

    /// The head file of `object`, opened once per entry.
    fn head_file<'a>(
        &self,
        touched: &'a mut HashMap<ObjectId, Arc<File>>,
        object: &ObjectId,
    ) -> Result<&'a File, StoreError> {
        match touched.entry(*object) {
            std::collections::hash_map::Entry::Occupied(e) => Ok(e.into_mut()),
            std::collections::hash_map::Entry::Vacant(e) => Ok(e.insert(self.open_head(object)?)),
        }
    }

    fn apply_ops(&self, pg: GroupId, index: u64, ops: &[ObjectOp]) -> Result<(), StoreError> {
        let _applying = self.lock_apply();
        let mut batch = WriteBatch::default();
        let mut touched: HashMap<ObjectId, Arc<File>> = HashMap::new();
        let mut records: HashMap<ObjectId, Working> = HashMap::new();
        let mut unrecorded: Vec<ObjectId> = Vec::new();
        for op in ops {
            let object = *op.object();
            // A plain write outside any snapshot's view (seq 0) preserves
            // nothing and makes the head exist: whether it existed before
            // does not matter, so the common write pays no stat.
            let plain_write = matches!(
                op,
                ObjectOp::Write {
                    seq: 0,
                    copy_up: CopyUp::None,
                    ..
                }
            );
            let working = match records.entry(object) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(self.load_meta_with(&object, !plain_write)?)
                }
            };
            if let CopyUp::Data(base) = op.copy_up() {
                if working.meta.is_pristine() {
                    let file = self.open_head(&object)?;
                    let path = self.object_path(&object);
                    // Only the blocks that hold data: the copy stays thin.
                    for (i, block) in base.chunks(BLOCK_BYTES as usize).enumerate() {
                        if block.iter().any(|&b| b != 0) {
                            self.io
                                .write_all_at(&file, block, i as u64 * BLOCK_BYTES)
                                .map_err(Self::io("write", &path))?;
                        }
                    }
                    self.stage_crcs(&mut batch, &object, &file, 0, base.len() as u64)?;
                    // Synced now, not with the entry: a replay must never
                    // find the head recorded without the parent's bytes.
                    self.io
                        .sync_data(&[&file])
                        .map_err(Self::io("sync", &path))?;
                    touched.insert(object, file);
                    working.meta.head = true;
                }
            }
            match op {
                ObjectOp::Write {
                    offset, data, seq, ..
                } => {
                    self.preserve(&mut batch, &touched, &object, working, *seq)?;
                    let file = self.head_file(&mut touched, &object)?;
                    // The path only for an error: building it is three
                    // allocations, on every 4 KiB write.
                    self.io
                        .write_all_at(file, data, *offset)
                        .map_err(|e| Self::io("write", &self.object_path(&object))(e))?;
                    self.stage_written_crcs(&mut batch, &object, file, *offset, data)?;
                    working.meta.head = true;
                }
                ObjectOp::Discard {
                    offset, len, seq, ..
                } => {
                    if !working.meta.head {
                        continue;
                    }
                    self.preserve(&mut batch, &touched, &object, working, *seq)?;
                    let file = self.head_file(&mut touched, &object)?;
                    let path = self.object_path(&object);
                    self.punch_hole(file, &path, *offset, *len)?;
                    self.stage_crcs(&mut batch, &object, file, *offset, *offset + *len)?;
                }
                ObjectOp::Delete { seq, .. } => {
                    if working.meta.head {
                        self.preserve(&mut batch, &touched, &object, working, *seq)?;
                        self.remove_head(&mut batch, &mut touched, &object, working)?;
                    }
                }
                ObjectOp::Rollback { snapshot, seq, .. } => {
                    match working.meta.version_at(Some(*snapshot)) {
                        Version::Head => {}
                        Version::Clone(c) => {
                            self.preserve(&mut batch, &touched, &object, working, *seq)?;
                            touched.remove(&object);
                            let file =
                                self.copy_version(&mut batch, &object, Loc::Clone(c), Loc::Head)?;
                            touched.insert(object, Arc::new(file));
                            working.meta.head = true;
                        }
                        Version::Absent => {
                            if working.meta.head {
                                self.preserve(&mut batch, &touched, &object, working, *seq)?;
                                self.remove_head(&mut batch, &mut touched, &object, working)?;
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
                    for seq in working
                        .meta
                        .unneeded_after_removal(*removed, *lower, *upper)
                    {
                        Self::remove_file(&self.version_path(&object, Loc::Clone(seq)))?;
                        Self::delete_crcs(&mut batch, &object, Loc::Clone(seq));
                        working.meta.clones.retain(|c| c.seq != seq);
                    }
                }
                ObjectOp::Purge { .. } => {
                    for c in std::mem::take(&mut working.meta.clones) {
                        Self::remove_file(&self.version_path(&object, Loc::Clone(c.seq)))?;
                        Self::delete_crcs(&mut batch, &object, Loc::Clone(c.seq));
                    }
                    self.remove_head(&mut batch, &mut touched, &object, working)?;
                    working.meta = ObjectMeta::unrecorded(false);
                }
            }
            self.stage_meta(&mut batch, &object, working, &mut unrecorded);
        }
        // The entry is durable in the Raft log already: its data is synced
        // later, in one batch with other entries' (sync_applied), and until
        // then a restart replays it from the durable index, which every
        // operation here allows (they are idempotent in order).
        // No per-entry applied key: the durable index (sync_applied) is
        // what a restart reads, and one key less per entry is one memtable
        // insert less on the write path.
        self.db.write(batch).map_err(|e| self.meta_error(e))?;
        {
            let mut unsynced = self.unsynced.lock().expect("unsynced lock");
            unsynced.objects.extend(touched.keys().copied());
            unsynced.applied.insert(pg, index);
        }
        if !unrecorded.is_empty() {
            let mut recorded = self.recorded.lock().expect("recorded lock");
            for object in unrecorded.iter().filter(|o| records[*o].stored.is_none()) {
                recorded.remove(object);
            }
        }
        Ok(())
    }

    fn lock_apply(&self) -> std::sync::MutexGuard<'_, ()> {
        // A panic while applying leaves nothing half-locked to protect.
        self.apply_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// See [`DiskStore::sync_lock`]; it guards no data either.
    fn lock_sync(&self) -> std::sync::MutexGuard<'_, ()> {
        self.sync_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn recorded_crc(
        &self,
        object: &ObjectId,
        loc: Loc,
        block: u64,
    ) -> Result<Option<u32>, StoreError> {
        match self
            .db
            .get(crc_key_at(object, loc, block))
            .map_err(|e| self.meta_error(e))?
        {
            None => Ok(None),
            Some(v) => self.parse_crc(object, block, &v).map(Some),
        }
    }

    /// A crc key's value: version byte, crc32c u32le.
    fn parse_crc(&self, object: &ObjectId, block: u64, value: &[u8]) -> Result<u32, StoreError> {
        if value.len() == 5 && value[0] == VERSION {
            return Ok(u32::from_le_bytes(value[1..].try_into().expect("4 bytes")));
        }
        Err(StoreError::Meta {
            path: self.root.clone(),
            reason: format!(
                "crc of object {:x}.{:x} block {block} is malformed",
                object.volume, object.object_no
            ),
        })
    }

    /// Reads and checks `len` bytes of the head of `object` at `offset`
    /// (zeroes if it does not exist).
    pub fn read_object(
        &self,
        object: &ObjectId,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, StoreError> {
        Ok(self
            .read_version(object, Loc::Head, offset, len)?
            .unwrap_or_else(|| vec![0u8; len as usize]))
    }

    /// Reads and checks `len` bytes of a version; `None` if its file does
    /// not exist.
    fn read_version(
        &self,
        object: &ObjectId,
        loc: Loc,
        offset: u64,
        len: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.version_path(object, loc);
        // A head written lately is open already. A read never adds to the
        // kept files: it may run beside a removal on another thread, and a
        // kept descriptor of a removed file would swallow later writes.
        let kept = match loc {
            Loc::Head => self
                .open_heads
                .lock()
                .expect("open heads lock")
                .get(object)
                .cloned(),
            _ => None,
        };
        let file = match kept {
            Some(file) => file,
            None => match Self::open_to_read(&path)? {
                Some(f) => Arc::new(f),
                None => return Ok(None),
            },
        };
        let mut out = vec![0u8; len as usize];
        // The whole span of blocks in one read (zero past the end of the
        // file), then each block checked against its crc.
        let first = offset / BLOCK_BYTES;
        let end = (offset + len).div_ceil(BLOCK_BYTES);
        let mut span = vec![0u8; ((end - first) * BLOCK_BYTES) as usize];
        self.io
            .read_at(&file, &mut span, first * BLOCK_BYTES)
            .map_err(Self::io("read", &path))?;
        for block in first..end {
            let at = ((block - first) * BLOCK_BYTES) as usize;
            let bytes = &span[at..at + BLOCK_BYTES as usize];
            let actual = crc32c::crc32c(bytes);
            let recorded = self.recorded_crc(object, loc, block)?;
            let expected = match recorded {
                Some(crc) => crc,
                // No crc: the block must read as zeroes.
                None if bytes.iter().all(|&b| b == 0) => continue,
                None => crate::pg::backend::zero_block_crc(),
            };
            if actual != expected {
                return Err(StoreError::Corrupt {
                    volume: object.volume,
                    object_no: object.object_no,
                    clone_seq: loc.clone_seq(),
                    block,
                    recorded: recorded.is_some(),
                    expected,
                    actual,
                });
            }
            let block_start = block * BLOCK_BYTES;
            let from = offset.max(block_start);
            let to = (offset + len).min(block_start + BLOCK_BYTES);
            out[(from - offset) as usize..(to - offset) as usize].copy_from_slice(
                &bytes[(from - block_start) as usize..(to - block_start) as usize],
            );
        }
        Ok(Some(out))
    }

    /// Bytes of disk space the volume's objects (every version) occupy on
    /// this disk.
    pub fn volume_allocated_bytes(&self, volume: u64) -> Result<u64, StoreError> {
        let dir = self.root.join("objects").join(format!("{volume:016x}"));
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(Self::io("list", &dir)(e)),
        };
        let mut total = 0;
        for entry in entries {
            let entry = entry.map_err(Self::io("list", &dir))?;
            let meta = entry.metadata().map_err(Self::io("stat", &entry.path()))?;
            total += meta.blocks() * 512;
        }
        Ok(total)
    }
}

impl PgBackend for DiskStore {
    fn applied_index(&self, pg: GroupId) -> Result<u64, BackendError> {
        // Where a restart replays from: the durable index.
        match self
            .db
            .get(durable_key(pg))
            .map_err(|e| self.meta_error(e))?
        {
            None => Ok(0),
            Some(v) if v.len() == 9 && v[0] == VERSION => {
                Ok(u64::from_le_bytes(v[1..].try_into().expect("8 bytes")))
            }
            Some(_) => Err(BackendError::Failed(format!(
                "applied index of PG {pg:x} is malformed"
            ))),
        }
    }

    fn forget_pg(&self, pg: GroupId) -> Result<(), BackendError> {
        Ok(DiskStore::forget_pg(self, pg)?)
    }

    fn apply(&self, pg: GroupId, index: u64, ops: &[ObjectOp]) -> Result<(), BackendError> {
        Ok(self.apply_ops(pg, index, ops)?)
    }

    fn apply_noop(&self, pg: GroupId, index: u64) -> Result<(), BackendError> {
        Ok(self.apply_ops(pg, index, &[])?)
    }

    fn read(
        &self,
        object: &ObjectId,
        snapshot: Option<u64>,
        offset: u64,
        len: u64,
    ) -> Result<Option<Vec<u8>>, BackendError> {
        // The head's file exists exactly when the head does, so a head
        // read needs no record: it costs what it did before snapshots.
        let loc = match snapshot {
            None => Loc::Head,
            Some(_) => match self.load_meta(object)?.meta.version_at(snapshot) {
                Version::Head => Loc::Head,
                Version::Clone(seq) => Loc::Clone(seq),
                Version::Absent => return Ok(None),
            },
        };
        Ok(self.read_version(object, loc, offset, len)?)
    }

    fn is_pristine(&self, object: &ObjectId) -> Result<bool, BackendError> {
        Ok(self.load_meta(object)?.meta.is_pristine())
    }

    fn stat(&self, object: &ObjectId) -> Result<ObjectStat, BackendError> {
        let meta = self.load_meta(object)?.meta;
        let bytes = |loc| -> Result<u64, StoreError> {
            Ok(self.recorded_blocks(object, loc)?.len() as u64 * BLOCK_BYTES)
        };
        let head_bytes = if meta.head {
            Some(bytes(Loc::Head)?)
        } else {
            None
        };
        let mut clones = Vec::with_capacity(meta.clones.len());
        for c in &meta.clones {
            clones.push((c.seq, c.from, bytes(Loc::Clone(c.seq))?));
        }
        Ok(ObjectStat {
            stamp: meta.stamp,
            head_bytes,
            clones,
        })
    }

    fn allocated_bytes(&self, volume: u64) -> Result<u64, BackendError> {
        Ok(self.volume_allocated_bytes(volume)?)
    }

    fn space(&self) -> Option<(String, u64, u64)> {
        let path = std::ffi::CString::new(self.root.as_os_str().as_encoded_bytes()).ok()?;
        // SAFETY: statvfs fills a struct we own from a valid C string.
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
            return None;
        }
        let block = stat.f_frsize as u64;
        Some((
            self.root.display().to_string(),
            stat.f_blocks as u64 * block,
            stat.f_bavail as u64 * block,
        ))
    }

    fn sync(&self) -> Result<(), BackendError> {
        // Every unsynced metadata batch belongs to an applied entry, whose
        // durable index sync_applied writes synced, which syncs the WAL
        // too; with nothing applied since, there is nothing to flush (no
        // fsync every 100 ms on an idle disk).
        Ok(self.sync_applied()?)
    }

    fn scrub_object(&self, object: &ObjectId) -> Result<ObjectScrub, BackendError> {
        Ok(self.check_object(object)?)
    }

    fn digest_object(&self, object: &ObjectId) -> Result<crate::pg::command::Digest, BackendError> {
        Ok(self.digest(object)?)
    }

    fn digests(&self) -> &crate::pg::backend::DigestBoard {
        &self.digests
    }

    fn block_copy(&self, at: &BlockRef) -> Result<Option<BlockCopy>, BackendError> {
        Ok(self.copy_of_block(at)?)
    }

    fn repair_block(&self, at: &BlockRef, bytes: &[u8]) -> Result<BlockRepair, BackendError> {
        Ok(self.rewrite_block(at, bytes)?)
    }

    fn object_numbers(&self, volume: u64) -> Result<Vec<u64>, BackendError> {
        Ok(self.object_numbers_of(volume)?)
    }

    fn export_object(&self, object: &ObjectId) -> Result<ObjectImage, BackendError> {
        Ok(self.export(object)?)
    }

    fn import_object(&self, pg: GroupId, image: &ObjectImage) -> Result<(), BackendError> {
        Ok(self.import(pg, image)?)
    }

    fn remove_object(&self, object: &ObjectId) -> Result<(), BackendError> {
        Ok(self.remove(object)?)
    }

    fn finish_import(&self, pg: GroupId, index: u64) -> Result<(), BackendError> {
        Ok(self.finish_copy(pg, index)?)
    }
}

mod integrity;
mod transfer;
impl Drop for DiskStore {
    fn drop(&mut self) {
        // A restart would replay what is unsynced; a clean stop spares it.
        if let Err(e) = self.sync_applied() {
            tracing::warn!(
                "object store {}: final sync failed: {e}",
                self.root.display()
            );
        }
    }
}

#[cfg(test)]
mod tests;
