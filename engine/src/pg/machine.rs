//! A PG replica's state machine: committed object operations applied to
//! the disk's backend, and linearizable reads served from it.

use std::sync::Arc;

use super::backend::{BackendError, PgBackend};
use super::command::{
    decode, decode_digest_entry, encode_corrupt_answer, encode_digest_answer, encode_read_answer,
    CopyUp, ObjectId, Query, ANSWER_COPY_UP_NEEDED,
};
use crate::replication::{GroupId, StateMachine};

/// The state machine of one PG replica.
pub struct PgMachine {
    group: GroupId,
    backend: Arc<dyn PgBackend>,
    applied: u64,
    /// Digest entries up to here are applied over state that may hold
    /// later effects: they take no digest (see `replaying_through`).
    replaying_through: u64,
}

impl PgMachine {
    /// Opens the replica's state at the backend's applied index.
    pub fn open(group: GroupId, backend: Arc<dyn PgBackend>) -> Result<PgMachine, String> {
        let applied = backend.applied_index(group).map_err(|e| e.to_string())?;
        Ok(PgMachine {
            group,
            backend,
            applied,
            replaying_through: 0,
        })
    }

    /// Takes the digests of a digest entry, keeps them for the scrub
    /// that asked, and answers them with the entry's index.
    fn digest(&self, index: u64, objects: &[ObjectId]) -> Result<Vec<u8>, String> {
        if index <= self.replaying_through {
            return Err(format!(
                "replayed here over later state (a restart or a copy of another replica, up to entry {}): no digest taken",
                self.replaying_through
            ));
        }
        let digests = objects
            .iter()
            .map(|o| self.backend.digest_object(o).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let answer = encode_digest_answer(index, &digests);
        self.backend.digests().record(self.group, index, digests);
        Ok(answer)
    }
}

impl StateMachine for PgMachine {
    fn applied_index(&self) -> u64 {
        self.applied
    }

    fn apply(&mut self, index: u64, data: &[u8]) -> Result<Vec<u8>, String> {
        if let Some(objects) = decode_digest_entry(data) {
            let result = objects
                .map_err(|e| e.to_string())
                .and_then(|objects| self.digest(index, &objects));
            // Changes nothing: applied the same way whatever came of it.
            self.apply_noop(index);
            return result.map_err(|e| {
                // A follower's answer goes nowhere: say it here.
                let e = format!("PG {:x}: digest entry {index}: {e}", self.group);
                tracing::warn!("{e}");
                e
            });
        }
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

    fn replaying_through(&mut self, index: u64) {
        self.replaying_through = self.replaying_through.max(index);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::backend::MemoryBackend;
    use crate::pg::command::{decode_digest_answer, encode, encode_digest_entry, ObjectOp};

    /// A digest entry changes nothing, answers its index and the digests,
    /// and leaves them on the backend for the scrub to fetch; a malformed
    /// one is skipped like any malformed entry.
    #[test]
    fn a_digest_entry_answers_and_keeps_the_digests_at_its_index() {
        let backend = Arc::new(MemoryBackend::default());
        let mut machine = PgMachine::open(5, backend.clone()).unwrap();
        let object = ObjectId {
            volume: 1,
            object_no: 2,
        };
        let write = ObjectOp::Write {
            object,
            offset: 0,
            data: vec![3; 4096],
            seq: 0,
            copy_up: CopyUp::None,
        };
        machine.apply(1, &encode(&[write])).unwrap();
        let empty = ObjectId {
            volume: 1,
            object_no: 3,
        };
        let answer = machine
            .apply(2, &encode_digest_entry(&[object, empty]))
            .unwrap();
        let (index, digests) = decode_digest_answer(&answer).unwrap();
        assert_eq!(index, 2);
        assert_eq!(digests[0], backend.digest_object(&object).unwrap());
        assert_ne!(digests[0], digests[1]);
        assert_eq!(backend.digests().get(5, 2), Some(digests));
        assert_eq!(backend.digests().get(5, 1), None);
        assert_eq!(machine.applied_index(), 2);

        let mut truncated = encode_digest_entry(&[object]);
        truncated.pop();
        assert!(machine.apply(3, &truncated).is_err());
        assert_eq!(machine.applied_index(), 3);
        assert_eq!(backend.digests().get(5, 3), None);

        // Replayed over later state (a restart, a copy): no digest there,
        // and one again past it.
        machine.replaying_through(4);
        let error = machine
            .apply(4, &encode_digest_entry(&[object]))
            .unwrap_err();
        assert!(error.contains("replayed"), "{error}");
        assert_eq!(backend.digests().get(5, 4), None);
        assert_eq!(machine.applied_index(), 4);
        machine.apply(5, &encode_digest_entry(&[object])).unwrap();
        assert!(backend.digests().get(5, 5).is_some());
    }
}
