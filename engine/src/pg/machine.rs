//! A PG replica's state machine: committed object operations applied to
//! the disk's backend, and linearizable reads served from it.

use std::sync::Arc;

use super::backend::{BackendError, PgBackend};
use super::command::{
    decode, encode_corrupt_answer, encode_read_answer, CopyUp, Query, ANSWER_COPY_UP_NEEDED,
};
use crate::replication::{GroupId, StateMachine};

/// The state machine of one PG replica.
pub struct PgMachine {
    group: GroupId,
    backend: Arc<dyn PgBackend>,
    applied: u64,
}

impl PgMachine {
    /// Opens the replica's state at the backend's applied index.
    pub fn open(group: GroupId, backend: Arc<dyn PgBackend>) -> Result<PgMachine, String> {
        let applied = backend.applied_index(group).map_err(|e| e.to_string())?;
        Ok(PgMachine {
            group,
            backend,
            applied,
        })
    }
}

impl StateMachine for PgMachine {
    fn applied_index(&self) -> u64 {
        self.applied
    }

    fn apply(&mut self, index: u64, data: &[u8]) -> Result<Vec<u8>, String> {
        let ops = match decode(data) {
            Ok(ops) => ops,
            Err(e) => {
                // Deterministic on every replica: skip it everywhere.
                self.apply_noop(index);
                return Err(format!("PG {:x}: entry {index}: {e}", self.group));
            }
        };
        // A clone's first change to an object needs the parent's bytes,
        // which only the sender can fetch: refuse the whole entry (the same
        // way on every replica, since they all hold the same state).
        for op in &ops {
            if *op.copy_up() == CopyUp::Required {
                let pristine = self
                    .backend
                    .is_pristine(op.object())
                    .map_err(|e| format!("PG {:x}: entry {index}: {e}", self.group))?;
                if pristine {
                    self.apply_noop(index);
                    return Ok(ANSWER_COPY_UP_NEEDED.to_vec());
                }
            }
        }
        self.backend
            .apply(self.group, index, &ops)
            .map_err(|e| format!("PG {:x}: entry {index}: {e}", self.group))?;
        self.applied = index;
        Ok(Vec::new())
    }

    fn apply_noop(&mut self, index: u64) {
        if self.backend.apply_noop(self.group, index).is_ok() {
            self.applied = index;
        }
    }

    fn sync(&mut self) -> Result<(), String> {
        self.backend.sync().map_err(|e| e.to_string())
    }

    fn durable_index(&self) -> Option<u64> {
        // The node syncs applied data every applied_sync_ms; the log is truncated
        // behind that. An unreadable index reads as 0: nothing is truncated.
        Some(self.backend.applied_index(self.group).unwrap_or(0))
    }

    fn restore(&mut self, index: u64) -> Result<(), String> {
        // The installer recorded the copy as applied at `index`, synced.
        let durable = self
            .backend
            .applied_index(self.group)
            .map_err(|e| e.to_string())?;
        if durable != index {
            return Err(format!(
                "PG {:x}: the copied state is recorded at index {durable}, not at the snapshot's {index}",
                self.group
            ));
        }
        self.applied = index;
        Ok(())
    }

    fn read(&self, query: &[u8]) -> Result<Vec<u8>, String> {
        match Query::decode(query).map_err(|e| e.to_string())? {
            // A corrupt block is an answer, not a failure: the leader's
            // node repairs it from another replica (off this thread, which
            // drives every group) and reads again.
            Query::Read(q) => {
                match self
                    .backend
                    .read(&q.object, q.snapshot, q.offset, u64::from(q.len))
                {
                    Ok(data) => Ok(encode_read_answer(data)),
                    Err(BackendError::Corrupt { bad, .. }) => Ok(encode_corrupt_answer(&bad)),
                    Err(e) => Err(e.to_string()),
                }
            }
            Query::Stat(object) => {
                let stat = self.backend.stat(&object).map_err(|e| e.to_string())?;
                serde_json::to_vec(&stat).map_err(|e| e.to_string())
            }
        }
    }
}
