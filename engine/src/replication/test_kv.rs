//! A small key-value state machine for tests of the replication layer.

use rocksdb::{WriteBatch, DB};
use std::sync::Arc;

use super::{GroupId, StateMachine};

/// A key-value state machine kept in the node's RocksDB, applied index in
/// the same batch as the effect.
pub(crate) struct RocksKv {
    db: Arc<DB>,
    group: GroupId,
    applied: u64,
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
        RocksKv { db, group, applied }
    }
}

impl StateMachine for RocksKv {
    fn applied_index(&self) -> u64 {
        self.applied
    }
    fn apply(&mut self, index: u64, data: &[u8]) -> Result<Vec<u8>, String> {
        let text = std::str::from_utf8(data).map_err(|e| e.to_string())?;
        let (key, value) = text.split_once('=').ok_or("command must be key=value")?;
        let mut batch = WriteBatch::default();
        batch.put(Self::data_key(self.group, key.as_bytes()), value.as_bytes());
        batch.put(Self::applied_key(self.group), index.to_be_bytes());
        self.db.write(batch).map_err(|e| e.to_string())?;
        self.applied = index;
        Ok(format!("ok {index}").into_bytes())
    }
    fn apply_noop(&mut self, index: u64) {
        self.db
            .put(Self::applied_key(self.group), index.to_be_bytes())
            .unwrap();
        self.applied = index;
    }
    fn sync(&mut self) -> Result<(), String> {
        self.db.flush_wal(true).map_err(|e| e.to_string())
    }

    fn read(&self, query: &[u8]) -> Result<Vec<u8>, String> {
        Ok(self
            .db
            .get(Self::data_key(self.group, query))
            .map_err(|e| e.to_string())?
            .unwrap_or_default())
    }
}
