//! The object store of one disk: object data in files, metadata (a crc32c
//! per 4 KiB block, each PG's applied index) in the disk's RocksDB.
//!
//! Layout under the disk's directory:
//!
//! | path / key | content |
//! |---|---|
//! | `objects/<volume:016x>/<object:016x>` | the object's bytes at their offsets; holes read as zero |
//! | `meta/` | RocksDB |
//! | key `'a' pg:u64be` | version `1`, applied index u64le |
//! | key `'c' volume:u64be object:u64be block:u64be` | version `1`, crc32c u32le of that 4 KiB block |
//!
//! A block with no crc key is all zero (never written, or discarded). Every
//! read checks every block it touches: a mismatch is
//! [`StoreError::Corrupt`], never silent data. Writes make the data
//! durable (fdatasync) before the metadata that describes it, and replaying
//! an entry is harmless, so a crash at any point is repaired by replaying
//! the PG's Raft log from the applied index.
//!
//! This module owns files and metadata of one disk; it never decides what
//! to write (the PG state machine does) and never talks to other nodes.

use rocksdb::{WriteBatch, DB};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::pg::backend::{BackendError, PgBackend};
use crate::pg::command::{ObjectId, ObjectOp};
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
    /// from another replica.
    #[error("object {volume:x}.{object_no:x} block {block}: crc32c {actual:08x} does not match the recorded {expected:08x}; the block is corrupt on this disk and must be repaired from another replica")]
    Corrupt {
        volume: u64,
        object_no: u64,
        block: u64,
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
        BackendError(format!("{} [{}]", e, e.code()))
    }
}

fn applied_key(pg: GroupId) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = b'a';
    k[1..].copy_from_slice(&pg.to_be_bytes());
    k
}

fn crc_key(object: &ObjectId, block: u64) -> [u8; 25] {
    let mut k = [0u8; 25];
    k[0] = b'c';
    k[1..9].copy_from_slice(&object.volume.to_be_bytes());
    k[9..17].copy_from_slice(&object.object_no.to_be_bytes());
    k[17..].copy_from_slice(&block.to_be_bytes());
    k
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
}

impl DiskStore {
    /// Opens (or creates) the store in directory `root`.
    pub fn open(root: &Path) -> Result<DiskStore, StoreError> {
        let objects = root.join("objects");
        std::fs::create_dir_all(&objects).map_err(|source| StoreError::Io {
            op: "create",
            path: objects.clone(),
            source,
        })?;
        let mut options = rocksdb::Options::default();
        options.create_if_missing(true);
        let db = DB::open(&options, root.join("meta")).map_err(|e| StoreError::Meta {
            path: root.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(DiskStore {
            root: root.to_path_buf(),
            db,
        })
    }

    fn meta_error(&self, e: rocksdb::Error) -> StoreError {
        StoreError::Meta {
            path: self.root.clone(),
            reason: e.to_string(),
        }
    }

    /// Where an object's bytes live.
    pub fn object_path(&self, object: &ObjectId) -> PathBuf {
        self.root
            .join("objects")
            .join(format!("{:016x}", object.volume))
            .join(format!("{:016x}", object.object_no))
    }

    fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
        move |source| StoreError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    fn open_for_write(&self, object: &ObjectId) -> Result<File, StoreError> {
        let path = self.object_path(object);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(Self::io("create", dir))?;
        }
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(Self::io("open", &path))
    }

    /// The 4 KiB block `block` of `file`, zero past the end of the file.
    fn read_block(
        file: &File,
        path: &Path,
        block: u64,
    ) -> Result<[u8; BLOCK_BYTES as usize], StoreError> {
        let mut buffer = [0u8; BLOCK_BYTES as usize];
        let mut done = 0;
        while done < buffer.len() {
            let n = file
                .read_at(&mut buffer[done..], block * BLOCK_BYTES + done as u64)
                .map_err(Self::io("read", path))?;
            if n == 0 {
                break;
            }
            done += n;
        }
        Ok(buffer)
    }

    /// Records the crc of every block in `[start, end)` as the file now
    /// holds it; an all-zero block gets no crc (it reads as a hole).
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
            let bytes = Self::read_block(file, &path, block)?;
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

    fn punch_hole(file: &File, path: &Path, offset: u64, len: u64) -> Result<(), StoreError> {
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
                file.write_all_at(&zeroes[..take], at)
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

    fn apply_ops(&self, pg: GroupId, index: u64, ops: &[ObjectOp]) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        let mut touched: HashMap<ObjectId, File> = HashMap::new();
        for op in ops {
            match op {
                ObjectOp::Write {
                    object,
                    offset,
                    data,
                } => {
                    if !touched.contains_key(object) {
                        touched.insert(*object, self.open_for_write(object)?);
                    }
                    let file = &touched[object];
                    let path = self.object_path(object);
                    file.write_all_at(data, *offset)
                        .map_err(Self::io("write", &path))?;
                    self.stage_crcs(
                        &mut batch,
                        object,
                        file,
                        *offset,
                        *offset + data.len() as u64,
                    )?;
                }
                ObjectOp::Discard {
                    object,
                    offset,
                    len,
                } => {
                    let path = self.object_path(object);
                    if !path.exists() {
                        continue;
                    }
                    if !touched.contains_key(object) {
                        touched.insert(*object, self.open_for_write(object)?);
                    }
                    let file = &touched[object];
                    Self::punch_hole(file, &path, *offset, *len)?;
                    self.stage_crcs(&mut batch, object, file, *offset, *offset + *len)?;
                }
                ObjectOp::Delete { object } => {
                    touched.remove(object);
                    let path = self.object_path(object);
                    match std::fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(Self::io("remove", &path)(e)),
                    }
                    batch.delete_range(crc_key(object, 0), crc_key(object, u64::MAX));
                    batch.delete(crc_key(object, u64::MAX));
                }
            }
        }
        // Data first, then the metadata that vouches for it.
        for (object, file) in &touched {
            file.sync_data()
                .map_err(Self::io("sync", &self.object_path(object)))?;
        }
        batch.put(applied_key(pg), versioned(&index.to_le_bytes()));
        self.db.write(batch).map_err(|e| self.meta_error(e))
    }

    fn recorded_crc(&self, object: &ObjectId, block: u64) -> Result<Option<u32>, StoreError> {
        match self
            .db
            .get(crc_key(object, block))
            .map_err(|e| self.meta_error(e))?
        {
            None => Ok(None),
            Some(v) if v.len() == 5 && v[0] == VERSION => Ok(Some(u32::from_le_bytes(
                v[1..].try_into().expect("4 bytes"),
            ))),
            Some(_) => Err(StoreError::Meta {
                path: self.root.clone(),
                reason: format!(
                    "crc of object {:x}.{:x} block {block} is malformed",
                    object.volume, object.object_no
                ),
            }),
        }
    }

    /// Reads and checks `len` bytes of `object` at `offset`.
    pub fn read_object(
        &self,
        object: &ObjectId,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, StoreError> {
        let mut out = vec![0u8; len as usize];
        let path = self.object_path(object);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Self::io("open", &path)(e)),
        };
        for block in offset / BLOCK_BYTES..(offset + len).div_ceil(BLOCK_BYTES) {
            let bytes = Self::read_block(&file, &path, block)?;
            let actual = crc32c::crc32c(&bytes);
            let expected = match self.recorded_crc(object, block)? {
                Some(crc) => crc,
                // No crc: the block must read as zeroes.
                None if bytes.iter().all(|&b| b == 0) => continue,
                None => crc32c::crc32c(&[0u8; BLOCK_BYTES as usize]),
            };
            if actual != expected {
                return Err(StoreError::Corrupt {
                    volume: object.volume,
                    object_no: object.object_no,
                    block,
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
        Ok(out)
    }

    /// Bytes of disk space the volume's objects occupy on this disk.
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
        match self
            .db
            .get(applied_key(pg))
            .map_err(|e| self.meta_error(e))?
        {
            None => Ok(0),
            Some(v) if v.len() == 9 && v[0] == VERSION => {
                Ok(u64::from_le_bytes(v[1..].try_into().expect("8 bytes")))
            }
            Some(_) => Err(BackendError(format!(
                "applied index of PG {pg:x} is malformed"
            ))),
        }
    }

    fn apply(&self, pg: GroupId, index: u64, ops: &[ObjectOp]) -> Result<(), BackendError> {
        Ok(self.apply_ops(pg, index, ops)?)
    }

    fn apply_noop(&self, pg: GroupId, index: u64) -> Result<(), BackendError> {
        Ok(self.apply_ops(pg, index, &[])?)
    }

    fn read(&self, object: &ObjectId, offset: u64, len: u64) -> Result<Vec<u8>, BackendError> {
        Ok(self.read_object(object, offset, len)?)
    }

    fn allocated_bytes(&self, volume: u64) -> Result<u64, BackendError> {
        Ok(self.volume_allocated_bytes(volume)?)
    }

    fn sync(&self) -> Result<(), BackendError> {
        // Object data is already fdatasync'ed per entry; the metadata
        // batches were written without sync, so flush their WAL now.
        Ok(self.db.flush_wal(true).map_err(|e| self.meta_error(e))?)
    }
}

#[cfg(test)]
mod tests;
