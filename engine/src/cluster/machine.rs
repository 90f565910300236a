//! The cluster map as the Raft state machine of group 0: the whole map is
//! one JSON value in RocksDB, written with the applied index in one batch.
//!
//! The map is small (nodes, pools and volumes, not objects), so rewriting
//! it per change is cheaper than keeping it in pieces and keeps recovery
//! trivial.

use rocksdb::{WriteBatch, DB};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, RwLock};

use super::map::{ClusterMapState, Command, MapError};
use super::MAP_GROUP;
use crate::replication::StateMachine;

const MAP_KEY: &[u8] = b"m\x00map";
const FORMAT_VERSION: u8 = 1;

/// What applying a command answered, as carried back to the proposer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    Applied { epoch: u64 },
    Refused(MapError),
}

#[derive(Serialize, Deserialize)]
struct Persisted {
    version: u8,
    applied: u64,
    map: ClusterMapState,
}

/// Group 0's state machine; readers share the current map through
/// [`MapMachine::shared`].
pub struct MapMachine {
    db: Arc<DB>,
    applied: u64,
    map: Arc<RwLock<ClusterMapState>>,
}

impl MapMachine {
    /// Loads the persisted map, or an empty one.
    pub fn open(db: Arc<DB>) -> Result<MapMachine, String> {
        let (applied, map) = match db.get(MAP_KEY).map_err(|e| e.to_string())? {
            Some(bytes) => {
                let p: Persisted =
                    serde_json::from_slice(&bytes).map_err(|e| format!("cluster map: {e}"))?;
                if p.version != FORMAT_VERSION {
                    return Err(format!("cluster map: unknown format version {}", p.version));
                }
                (p.applied, p.map)
            }
            None => (0, ClusterMapState::default()),
        };
        Ok(MapMachine {
            db,
            applied,
            map: Arc::new(RwLock::new(map)),
        })
    }

    /// The live map, updated as entries apply.
    pub fn shared(&self) -> Arc<RwLock<ClusterMapState>> {
        self.map.clone()
    }

    fn persist(&self, applied: u64, map: &ClusterMapState) -> Result<(), String> {
        let value = serde_json::to_vec(&Persisted {
            version: FORMAT_VERSION,
            applied,
            map: map.clone(),
        })
        .map_err(|e| e.to_string())?;
        let mut batch = WriteBatch::default();
        batch.put(MAP_KEY, value);
        self.db.write(batch).map_err(|e| e.to_string())
    }
}

impl StateMachine for MapMachine {
    fn applied_index(&self) -> u64 {
        self.applied
    }

    fn apply(&mut self, index: u64, data: &[u8]) -> Result<Vec<u8>, String> {
        let command: Command = serde_json::from_slice(data)
            .map_err(|e| format!("group {MAP_GROUP}: bad command at {index}: {e}"))?;
        let mut map = self.map.write().expect("map lock");
        let outcome = match map.apply(&command) {
            Ok(()) => Outcome::Applied { epoch: map.epoch },
            Err(e) => Outcome::Refused(e),
        };
        self.persist(index, &map)?;
        self.applied = index;
        serde_json::to_vec(&outcome).map_err(|e| e.to_string())
    }

    fn apply_noop(&mut self, index: u64) {
        let map = self.map.read().expect("map lock").clone();
        if self.persist(index, &map).is_ok() {
            self.applied = index;
        }
    }

    fn sync(&mut self) -> Result<(), String> {
        self.db.flush_wal(true).map_err(|e| e.to_string())
    }

    fn read(&self, _query: &[u8]) -> Result<Vec<u8>, String> {
        serde_json::to_vec(&*self.map.read().expect("map lock")).map_err(|e| e.to_string())
    }
}
