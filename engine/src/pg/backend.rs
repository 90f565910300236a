//! The boundary between a PG's state machine and the object store of the
//! disk that holds the replica.
//!
//! A backend applies a PG's committed operations atomically together with
//! the PG's applied index (so a restart knows exactly what to replay), and
//! serves reads. Missing objects and never-written ranges read as zeroes
//! (thin provisioning).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use super::command::{ObjectId, ObjectOp};
use crate::replication::GroupId;

/// Why a backend failed; the text names the object and the disk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BackendError(pub String);

/// The object store of one disk, as PGs see it.
pub trait PgBackend: Send + Sync {
    /// The last index applied for `pg` (0 for a new PG).
    fn applied_index(&self, pg: GroupId) -> Result<u64, BackendError>;
    /// Applies `ops` of entry `index` of `pg`, atomically with `index`.
    fn apply(&self, pg: GroupId, index: u64, ops: &[ObjectOp]) -> Result<(), BackendError>;
    /// Records `index` as applied with no effect.
    fn apply_noop(&self, pg: GroupId, index: u64) -> Result<(), BackendError>;
    /// `len` bytes of `object` from `offset`; unwritten bytes are zero.
    fn read(&self, object: &ObjectId, offset: u64, len: u64) -> Result<Vec<u8>, BackendError>;
    /// Bytes that hold data for `volume` (for thin provisioning reports).
    fn allocated_bytes(&self, volume: u64) -> Result<u64, BackendError>;
    /// Makes every applied operation and applied index durable (before the
    /// Raft log that could replay them is truncated).
    fn sync(&self) -> Result<(), BackendError> {
        Ok(())
    }
}

/// A backend in memory, for tests of the replication and volume layers
/// (the disk-backed object store has its own crash and fault tests).
#[derive(Default)]
pub struct MemoryBackend {
    objects: Mutex<BTreeMap<ObjectId, Vec<u8>>>,
    applied: Mutex<HashMap<GroupId, u64>>,
}

impl PgBackend for MemoryBackend {
    fn applied_index(&self, pg: GroupId) -> Result<u64, BackendError> {
        Ok(*self.applied.lock().expect("lock").get(&pg).unwrap_or(&0))
    }

    fn apply(&self, pg: GroupId, index: u64, ops: &[ObjectOp]) -> Result<(), BackendError> {
        let mut objects = self.objects.lock().expect("lock");
        for op in ops {
            match op {
                ObjectOp::Write {
                    object,
                    offset,
                    data,
                } => {
                    let bytes = objects.entry(*object).or_default();
                    let end = *offset as usize + data.len();
                    if bytes.len() < end {
                        bytes.resize(end, 0);
                    }
                    bytes[*offset as usize..end].copy_from_slice(data);
                }
                ObjectOp::Discard {
                    object,
                    offset,
                    len,
                } => {
                    if let Some(bytes) = objects.get_mut(object) {
                        let start = (*offset as usize).min(bytes.len());
                        let end = (*offset + *len).min(bytes.len() as u64) as usize;
                        bytes[start..end].fill(0);
                        if bytes.iter().all(|&b| b == 0) {
                            objects.remove(object);
                        }
                    }
                }
                ObjectOp::Delete { object } => {
                    objects.remove(object);
                }
            }
        }
        self.applied.lock().expect("lock").insert(pg, index);
        Ok(())
    }

    fn apply_noop(&self, pg: GroupId, index: u64) -> Result<(), BackendError> {
        self.applied.lock().expect("lock").insert(pg, index);
        Ok(())
    }

    fn read(&self, object: &ObjectId, offset: u64, len: u64) -> Result<Vec<u8>, BackendError> {
        let objects = self.objects.lock().expect("lock");
        let mut out = vec![0u8; len as usize];
        if let Some(bytes) = objects.get(object) {
            let start = (offset as usize).min(bytes.len());
            let end = ((offset + len) as usize).min(bytes.len());
            out[..end - start].copy_from_slice(&bytes[start..end]);
        }
        Ok(out)
    }

    fn allocated_bytes(&self, volume: u64) -> Result<u64, BackendError> {
        let objects = self.objects.lock().expect("lock");
        Ok(objects
            .iter()
            .filter(|(id, _)| id.volume == volume)
            .map(|(_, bytes)| bytes.len() as u64)
            .sum())
    }
}
