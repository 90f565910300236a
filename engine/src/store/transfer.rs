//! Copying a PG replica's objects to a new replica (Raft snapshots carry
//! no data here: see `replication::log_store`).
//!
//! An export reads one object, every version and its record, under the
//! apply lock, so each object is copied as of one moment between entries.
//! Objects are copied one after another while the source keeps applying;
//! the new replica then replays the log from the snapshot's index over
//! them, which the store allows (module docs: replay is harmless, and a
//! preserved clone is never made twice because its record came along).

use rocksdb::WriteBatch;
use std::collections::BTreeSet;
use std::path::PathBuf;

use super::{crc_key_at, meta_key, versioned, DiskStore, Loc, StoreError, BLOCK_BYTES};
use crate::pg::backend::{ObjectImage, VersionImage};
use crate::pg::command::ObjectId;
use crate::replication::GroupId;

impl DiskStore {
    /// The files of `volume`'s directory (none if it does not exist), by
    /// name.
    fn volume_files(&self, volume: u64) -> Result<Vec<(String, PathBuf)>, StoreError> {
        let dir = self.root.join("objects").join(format!("{volume:016x}"));
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Self::io("list", &dir)(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(Self::io("list", &dir))?;
            out.push((
                entry.file_name().to_string_lossy().into_owned(),
                entry.path(),
            ));
        }
        Ok(out)
    }

    /// The numbers of `volume`'s objects with a file or a record here.
    pub fn object_numbers_of(&self, volume: u64) -> Result<Vec<u64>, StoreError> {
        let mut numbers = BTreeSet::new();
        for (name, _) in self.volume_files(volume)? {
            let number = name.split('@').next().unwrap_or_default();
            if let Ok(n) = u64::from_str_radix(number, 16) {
                numbers.insert(n);
            }
        }
        let mut prefix = vec![b'o'];
        prefix.extend_from_slice(&volume.to_be_bytes());
        for item in self.db.prefix_iterator(&prefix) {
            let (key, _) = item.map_err(|e| self.meta_error(e))?;
            if key.len() != 17 || !key.starts_with(&prefix) {
                break;
            }
            numbers.insert(u64::from_be_bytes(key[9..17].try_into().expect("8 bytes")));
        }
        Ok(numbers.into_iter().collect())
    }

    /// Every version of `object` with its record, as of one moment.
    pub fn export(&self, object: &ObjectId) -> Result<ObjectImage, StoreError> {
        let _applying = self.lock_apply();
        let working = self.load_meta(object)?;
        let mut versions = Vec::with_capacity(1 + working.meta.clones.len());
        for loc in Loc::all_of(&working.meta) {
            let path = self.version_path(object, loc);
            let Some(file) = Self::open_to_read(&path)? else {
                continue;
            };
            let recorded = self.recorded_blocks(object, loc)?;
            let mut blocks = Vec::with_capacity(recorded.len());
            if let Some(last) = recorded.last().map(|(b, _)| *b) {
                // One read of the whole span, then sliced per block.
                let mut span = vec![0u8; ((last + 1) * BLOCK_BYTES) as usize];
                self.io
                    .read_at(&file, &mut span, 0)
                    .map_err(Self::io("read", &path))?;
                for (block, value) in recorded {
                    let crc = self.parse_crc(object, block, &value)?;
                    let at = (block * BLOCK_BYTES) as usize;
                    blocks.push((block, crc, span[at..at + BLOCK_BYTES as usize].to_vec()));
                }
            }
            versions.push(VersionImage {
                clone_seq: loc.clone_seq(),
                blocks,
            });
        }
        Ok(ObjectImage {
            object: *object,
            record: working.stored.map(|m| m.encode()),
            versions,
        })
    }

    /// Deletes every file, crc and record of `object` into `batch`.
    fn stage_removal(&self, batch: &mut WriteBatch, object: &ObjectId) -> Result<(), StoreError> {
        self.forget_head(object);
        let head = format!("{:016x}", object.object_no);
        for (name, path) in self.volume_files(object.volume)? {
            if name == head || name.starts_with(&format!("{head}@")) {
                Self::remove_file(&path)?;
            }
        }
        Self::delete_crcs(batch, object, Loc::Head);
        // Every clone's crcs: 's' volume object, any seq.
        batch.delete_range(
            crc_key_at(object, Loc::Clone(0), 0),
            crc_key_at(object, Loc::Clone(u64::MAX), u64::MAX),
        );
        batch.delete(crc_key_at(object, Loc::Clone(u64::MAX), u64::MAX));
        batch.delete(meta_key(object));
        Ok(())
    }

    /// Deletes everything held of `object`.
    pub fn remove(&self, object: &ObjectId) -> Result<(), StoreError> {
        let _applying = self.lock_apply();
        let mut batch = WriteBatch::default();
        self.stage_removal(&mut batch, object)?;
        // Synced: the files are gone already, and no log replays this.
        let mut options = rocksdb::WriteOptions::default();
        options.set_sync(true);
        self.db
            .write_opt(batch, &options)
            .map_err(|e| self.meta_error(e))?;
        self.recorded.lock().expect("recorded lock").remove(object);
        Ok(())
    }

    /// Replaces everything held of the image's object (of PG `pg`) with
    /// the image; its files are synced by [`DiskStore::finish_copy`].
    pub fn import(&self, pg: GroupId, image: &ObjectImage) -> Result<(), StoreError> {
        let object = &image.object;
        let _applying = self.lock_apply();
        let mut batch = WriteBatch::default();
        self.stage_removal(&mut batch, object)?;
        let mut written = Vec::with_capacity(image.versions.len());
        for version in &image.versions {
            let loc = Loc::of(version.clone_seq);
            let file = self.open_for_write(object, loc)?;
            let path = self.version_path(object, loc);
            for (block, crc, data) in &version.blocks {
                if data.len() != BLOCK_BYTES as usize {
                    return Err(StoreError::Meta {
                        path,
                        reason: format!("copied block {block} holds {} bytes", data.len()),
                    });
                }
                self.io
                    .write_all_at(&file, data, block * BLOCK_BYTES)
                    .map_err(Self::io("write", &path))?;
                batch.put(
                    crc_key_at(object, loc, *block),
                    versioned(&crc.to_le_bytes()),
                );
            }
            written.push(path);
        }
        // The in-memory set gains an object before its record is written
        // and loses it after (it must never miss a stored record).
        if let Some(record) = &image.record {
            batch.put(meta_key(object), record);
            self.recorded.lock().expect("recorded lock").insert(*object);
        }
        self.db.write(batch).map_err(|e| self.meta_error(e))?;
        if image.record.is_none() {
            self.recorded.lock().expect("recorded lock").remove(object);
        }
        self.copied
            .lock()
            .expect("copied lock")
            .entry(pg)
            .or_default()
            .extend(written);
        Ok(())
    }

    /// Syncs what the copy of `pg` wrote and records `pg` applied (and
    /// durable) at `index`. Its own files, synced here: the periodic sync
    /// may run meanwhile, and must not be what the copy's durability
    /// depends on.
    pub fn finish_copy(&self, pg: GroupId, index: u64) -> Result<(), StoreError> {
        let paths = self
            .copied
            .lock()
            .expect("copied lock")
            .remove(&pg)
            .unwrap_or_default();
        // After any sync in flight, which may hold an older index of `pg`.
        let _syncing = self.lock_sync();
        self.sync_paths(&paths)?;
        let _applying = self.lock_apply();
        self.unsynced
            .lock()
            .expect("unsynced lock")
            .applied
            .remove(&pg);
        let mut batch = WriteBatch::default();
        batch.put(super::applied_key(pg), versioned(&index.to_le_bytes()));
        batch.put(super::durable_key(pg), versioned(&index.to_le_bytes()));
        let mut options = rocksdb::WriteOptions::default();
        options.set_sync(true);
        self.db
            .write_opt(batch, &options)
            .map_err(|e| self.meta_error(e))
    }
}
