//! A small key-value state machine for tests of the replication layer.

use rocksdb::{WriteBatch, DB};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{GroupId, StateMachine};

/// A key-value state machine kept in the node's RocksDB, applied index in
/// the same batch as the effect.
pub(crate) struct RocksKv {
    db: Arc<DB>,
    group: GroupId,
    applied: u64,
    /// Set for a machine that tells its durable index: a test then plays
    /// the batches of syncs a real machine runs on its own.
    durability: Option<Arc<Durability>>,
}

/// What a machine that syncs in batches of its own has applied and made
/// durable, shared with the test driving it.
#[derive(Default)]
pub(crate) struct Durability {
    applied: AtomicU64,
    durable: AtomicU64,
    /// Syncs the node loop asked of the machine.
    pub(crate) loop_syncs: AtomicU64,
    /// Where the node loop said the replay over later state ends.
    pub(crate) replaying_through: AtomicU64,
    /// Held by a test, it stops the machine's next command in `apply`,
    /// and with it the node loop that applies it.
    pub(crate) apply_gate: Mutex<()>,
    /// Commands that reached the gate.
    pub(crate) at_gate: AtomicU64,
}

impl Durability {
    /// A sync of the machine's own: everything applied is durable.
    pub(crate) fn sync_now(&self) {
        let applied = self.applied.load(Ordering::SeqCst);
        self.durable.fetch_max(applied, Ordering::SeqCst);
    }

    pub(crate) fn durable(&self) -> u64 {
        self.durable.load(Ordering::SeqCst)
    }
}

impl RocksKv {
    fn applied_key(group: GroupId) -> Vec<u8> {
        [b"a".as_slice(), &group.to_be_bytes()].concat()
    }
    pub(crate) fn data_key(group: GroupId, key: &[u8]) -> Vec<u8> {
        [b"k".as_slice(), &group.to_be_bytes(), key].concat()
    }
    pub(crate) fn open(db: Arc<DB>, group: GroupId) -> RocksKv {
        let applied = db
            .get(Self::applied_key(group))
            .unwrap()
            .map(|v| u64::from_be_bytes(v.try_into().unwrap()))
            .unwrap_or(0);
        RocksKv {
            db,
            group,
            applied,
            durability: None,
        }
    }

    /// This machine tells its durable index, as `durability` has it.
    pub(crate) fn with_durability(mut self, durability: Arc<Durability>) -> RocksKv {
        durability.applied.store(self.applied, Ordering::SeqCst);
        durability.sync_now();
        self.durability = Some(durability);
        self
    }

    fn set_applied(&mut self, index: u64) {
        self.applied = index;
        if let Some(d) = &self.durability {
            d.applied.store(index, Ordering::SeqCst);
        }
    }
}

impl StateMachine for RocksKv {
    fn applied_index(&self) -> u64 {
        self.applied
    }
    fn apply(&mut self, index: u64, data: &[u8]) -> Result<Vec<u8>, String> {
        if let Some(d) = &self.durability {
            d.at_gate.fetch_add(1, Ordering::SeqCst);
            drop(d.apply_gate.lock().unwrap());
        }
        let text = std::str::from_utf8(data).map_err(|e| e.to_string())?;
        let (key, value) = text.split_once('=').ok_or("command must be key=value")?;
        let mut batch = WriteBatch::default();
        batch.put(Self::data_key(self.group, key.as_bytes()), value.as_bytes());
        batch.put(Self::applied_key(self.group), index.to_be_bytes());
        self.db.write(batch).map_err(|e| e.to_string())?;
        self.set_applied(index);
        Ok(format!("ok {index}").into_bytes())
    }
    fn apply_noop(&mut self, index: u64) {
        self.db
            .put(Self::applied_key(self.group), index.to_be_bytes())
            .unwrap();
        self.set_applied(index);
    }
    fn sync(&mut self) -> Result<(), String> {
        self.db.flush_wal(true).map_err(|e| e.to_string())?;
        if let Some(d) = &self.durability {
            d.loop_syncs.fetch_add(1, Ordering::SeqCst);
            d.sync_now();
        }
        Ok(())
    }
    fn durable_index(&self) -> Option<u64> {
        self.durability.as_ref().map(|d| d.durable())
    }

    fn replaying_through(&mut self, index: u64) {
        if let Some(d) = &self.durability {
            d.replaying_through.store(index, Ordering::SeqCst);
        }
    }

    fn read(&self, query: &[u8]) -> Result<Vec<u8>, String> {
        Ok(self
            .db
            .get(Self::data_key(self.group, query))
            .map_err(|e| e.to_string())?
            .unwrap_or_default())
    }
}
