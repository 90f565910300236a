//! Creates the PG replicas this node must host, as the cluster map says.
//!
//! On every new epoch the manager computes, for every pool and PG, the
//! disks placement gives it, and creates a Raft group replica for each of
//! this node's disks among them, with all of the PG's disks as the first
//! configuration. Changing the membership of an existing PG (a disk out,
//! a disk added) is not done yet: the manager reports it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::backend::PgBackend;
use super::machine::PgMachine;
use super::{group_id, peer_of_disk, pg_disks};
use crate::cluster::ClusterMapState;
use crate::replication::{GroupId, RaftNodeHandle};

/// What one pass of the manager did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    pub created: usize,
    pub hosted: usize,
    /// PGs whose placement now differs from their replicas' configuration.
    pub moved: Vec<GroupId>,
    /// PGs that cannot get `size` disks (too few failure domains).
    pub degraded: Vec<GroupId>,
}

/// Keeps this node's PG replicas in line with the map.
pub struct PgManager {
    raft: RaftNodeHandle,
    backends: HashMap<u32, Arc<dyn PgBackend>>,
    /// group -> the voters it was created with
    hosted: HashMap<GroupId, Vec<u64>>,
    last_epoch: Option<u64>,
}

impl PgManager {
    /// `backends` maps each local disk id to its object backend.
    pub fn new(raft: RaftNodeHandle, backends: HashMap<u32, Arc<dyn PgBackend>>) -> PgManager {
        PgManager {
            raft,
            backends,
            hosted: HashMap::new(),
            last_epoch: None,
        }
    }

    /// Brings the hosted replicas in line with `map` (blocking; call off the
    /// async runtime). Does nothing if the epoch did not change.
    pub fn sync(&mut self, map: &ClusterMapState) -> Result<SyncReport, String> {
        if self.last_epoch == Some(map.epoch) {
            return Ok(SyncReport {
                hosted: self.hosted.len(),
                ..SyncReport::default()
            });
        }
        let placement = map.placement_map().map_err(|e| e.to_string())?;
        let mut report = SyncReport::default();
        let local: HashSet<u32> = self.backends.keys().copied().collect();
        for pool in map.pools.values() {
            for index in 0..pool.pg_num {
                let group = group_id(pool.id, index);
                let (disks, short) = pg_disks(&placement, pool, index)?;
                if short {
                    report.degraded.push(group);
                }
                let voters: Vec<u64> = disks.iter().map(|d| peer_of_disk(*d)).collect();
                if let Some(existing) = self.hosted.get(&group) {
                    if *existing != voters {
                        report.moved.push(group);
                    }
                    continue;
                }
                for disk in disks.iter().filter(|d| local.contains(d)) {
                    let backend = self.backends[disk].clone();
                    let machine = PgMachine::open(group, backend)?;
                    self.raft
                        .create_group(
                            group,
                            peer_of_disk(*disk),
                            voters.clone(),
                            Box::new(machine),
                        )
                        .map_err(|e| e.to_string())?;
                    self.hosted.insert(group, voters.clone());
                    report.created += 1;
                }
            }
        }
        report.hosted = self.hosted.len();
        self.last_epoch = Some(map.epoch);
        Ok(report)
    }
}
