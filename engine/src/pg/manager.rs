//! Keeps this node's PG replicas in line with the cluster map.
//!
//! Each pass computes, for every pool and PG, the disks placement gives
//! it (the target), and:
//! - hosts a replica for each group this node has Raft state for (after a
//!   restart), and for each group placement puts on a local disk. Only
//!   the replicas of a PG's first placement (the map as its pool was
//!   created) bootstrap the group with that configuration; any replica
//!   placed later starts empty and joins through the leader (a learner,
//!   a snapshot with a copy of the objects, then a vote);
//! - asks the leaders among its replicas to take one membership step
//!   toward the target (`Peer::reconfigure`): add a learner, promote it in
//!   place of a replica placement no longer wants, remove one;
//! - drops replicas the group has removed, with their objects.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::backend::PgBackend;
use super::machine::PgMachine;
use super::{disk_of_peer, group_id, peer_of_disk, pg_disks};
use crate::cluster::ClusterMapState;
use crate::replication::{GroupId, PeerId, RaftNodeHandle, ReplicationError};

/// What one pass of the manager did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    pub created: usize,
    pub hosted: usize,
    /// Replicas created empty, to join their group through a snapshot.
    pub joining: usize,
    /// PGs that cannot get `size` disks (too few failure domains).
    pub degraded: Vec<GroupId>,
    /// Replicas dropped because their group removed them.
    pub destroyed: Vec<GroupId>,
}

/// Keeps this node's PG replicas in line with the map.
pub struct PgManager {
    raft: RaftNodeHandle,
    backends: HashMap<u32, Arc<dyn PgBackend>>,
    /// group -> this node's replica of it
    hosted: HashMap<GroupId, PeerId>,
    /// Groups with Raft state on this node when it started, and their
    /// configuration (read once).
    on_disk: Option<HashMap<GroupId, Vec<PeerId>>>,
    /// Placement as of one map epoch: computed again only when the map
    /// changes (every pass sends the targets to the leaders).
    placed: Option<Placed>,
}

struct Placed {
    epoch: u64,
    targets: Vec<(GroupId, Vec<PeerId>)>,
    degraded: Vec<GroupId>,
}

impl PgManager {
    /// `backends` maps each local disk id to its object backend; `raft`
    /// keeps this node's Raft state.
    pub fn new(raft: RaftNodeHandle, backends: HashMap<u32, Arc<dyn PgBackend>>) -> PgManager {
        PgManager {
            raft,
            backends,
            hosted: HashMap::new(),
            on_disk: None,
            placed: None,
        }
    }

    /// One pass (blocking; call off the async runtime).
    pub fn sync(&mut self, map: &ClusterMapState) -> Result<SyncReport, String> {
        if self.on_disk.is_none() {
            let groups = self.raft.stored_groups().map_err(|e| e.to_string())?;
            self.on_disk = Some(
                groups
                    .into_iter()
                    .map(|(group, conf)| {
                        let peers = conf
                            .voters
                            .iter()
                            .chain(&conf.learners)
                            .chain(&conf.voters_outgoing)
                            .copied()
                            .collect();
                        (group, peers)
                    })
                    .collect(),
            );
        }
        let mut report = SyncReport::default();
        let targets = match &self.placed {
            Some(placed) if placed.epoch == map.epoch => {
                report.degraded = placed.degraded.clone();
                placed.targets.clone()
            }
            _ => {
                let targets = self.place(map, &mut report)?;
                self.placed = Some(Placed {
                    epoch: map.epoch,
                    targets: targets.clone(),
                    degraded: report.degraded.clone(),
                });
                targets
            }
        };
        let wanted: HashMap<GroupId, Vec<PeerId>> = targets.iter().cloned().collect();
        self.raft.reconfigure(targets).map_err(|e| e.to_string())?;
        // Replicas whose group removed them (or that never joined it and
        // hold nothing), and that placement does not want here either:
        // their Raft state and objects go.
        for status in self.raft.status().map_err(|e| e.to_string())? {
            let unwanted = wanted
                .get(&status.group)
                .is_some_and(|target| !target.contains(&status.peer));
            let never_joined =
                status.voters.is_empty() && status.learners.is_empty() && !status.installing;
            if !(unwanted && (status.removed || never_joined)) {
                continue;
            }
            match self.raft.destroy_group(status.group) {
                Ok(()) => {}
                // A snapshot came after the status was read; the next
                // pass sees the copy (or what it made of the replica).
                Err(ReplicationError::Installing(_)) => {
                    tracing::info!(
                        group = format!("{:x}", status.group),
                        "an unwanted replica is copying a snapshot's state; it is dropped once the copy ends"
                    );
                    continue;
                }
                Err(e) => return Err(e.to_string()),
            }
            self.hosted.remove(&status.group);
            // Its Raft state is gone: if placement brings the group back
            // here, that replica is a new one, not a restarted one.
            if let Some(on_disk) = self.on_disk.as_mut() {
                on_disk.remove(&status.group);
            }
            if let Some(backend) = disk_of_peer(status.peer).and_then(|d| self.backends.get(&d)) {
                remove_replica_data(&**backend, map, status.group)?;
            }
            report.destroyed.push(status.group);
        }
        report.hosted = self.hosted.len();
        Ok(report)
    }

    /// Each group's placement target under `map`; creates the replicas
    /// this node must host (see the module docs). Short groups go to
    /// `report.degraded`.
    fn place(
        &mut self,
        map: &ClusterMapState,
        report: &mut SyncReport,
    ) -> Result<Vec<(GroupId, Vec<PeerId>)>, String> {
        let placement = map.placement_map().map_err(|e| e.to_string())?;
        let local: HashSet<u32> = self.backends.keys().copied().collect();
        let mut targets = Vec::new();
        for pool in map.pools.values() {
            let mut initial = None;
            for index in 0..pool.pg_num {
                let group = group_id(pool.id, index);
                let (disks, short) = pg_disks(&placement, pool, index)?;
                if short {
                    report.degraded.push(group);
                }
                let target: Vec<PeerId> = disks.iter().map(|d| peer_of_disk(*d)).collect();
                if !self.hosted.contains_key(&group) {
                    let restarted =
                        self.on_disk
                            .as_ref()
                            .and_then(|g| g.get(&group))
                            .and_then(|peers| {
                                peers
                                    .iter()
                                    .copied()
                                    .find(|p| disk_of_peer(*p).is_some_and(|d| local.contains(&d)))
                            });
                    let (peer, voters) = match restarted {
                        Some(peer) => (peer, Vec::new()),
                        None => match disks.iter().find(|d| local.contains(d)) {
                            Some(&disk) => {
                                if initial.is_none() {
                                    initial = Some(
                                        map.initial_placement(pool).map_err(|e| e.to_string())?,
                                    );
                                }
                                let first = initial.as_ref().expect("just set");
                                let (first_disks, _) = pg_disks(first, pool, index)?;
                                let voters: Vec<PeerId> = if first_disks.contains(&disk) {
                                    first_disks.iter().map(|d| peer_of_disk(*d)).collect()
                                } else {
                                    report.joining += 1;
                                    Vec::new()
                                };
                                (peer_of_disk(disk), voters)
                            }
                            None => {
                                targets.push((group, target));
                                continue;
                            }
                        },
                    };
                    let disk = disk_of_peer(peer).expect("a local disk's peer");
                    // Only where this node holds no Raft state for the
                    // group at all: state the log holds is the replica's.
                    let raft_state = self
                        .on_disk
                        .as_ref()
                        .is_some_and(|g| g.contains_key(&group));
                    if !raft_state {
                        let backend = &*self.backends[&disk];
                        if let Some(applied) = clear_leftovers(backend, map, group)? {
                            tracing::warn!(
                                group = format!("{group:x}"),
                                disk,
                                applied,
                                "a new replica found an earlier replica's objects and applied index on its disk; removed them, it starts from nothing"
                            );
                        }
                    }
                    let machine = PgMachine::open(group, self.backends[&disk].clone())?;
                    self.raft
                        .create_group(group, peer, voters, Box::new(machine))
                        .map_err(|e| e.to_string())?;
                    self.hosted.insert(group, peer);
                    report.created += 1;
                }
                targets.push((group, target));
            }
        }
        Ok(targets)
    }
}

/// Removes what an earlier replica of `group` left on `backend` (one
/// destroyed here before its index was forgotten, or one whose Raft state a
/// crash lost): its objects and its applied index. A replica with no Raft
/// state joins through its leader from nothing; with an index left behind
/// it would take the entries up to it as applied and skip them. Returns
/// that index, if there was one.
fn clear_leftovers(
    backend: &dyn PgBackend,
    map: &ClusterMapState,
    group: GroupId,
) -> Result<Option<u64>, String> {
    let applied = backend.applied_index(group).map_err(|e| e.to_string())?;
    if applied == 0 {
        return Ok(None);
    }
    remove_replica_data(backend, map, group)?;
    Ok(Some(applied))
}

/// Deletes `group`'s objects on `backend`, then its applied index.
fn remove_replica_data(
    backend: &dyn PgBackend,
    map: &ClusterMapState,
    group: GroupId,
) -> Result<(), String> {
    for object in crate::recovery::group_objects(backend, map, group)? {
        backend.remove_object(&object).map_err(|e| e.to_string())?;
    }
    backend.forget_pg(group).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::map::{Pool, Volume};
    use crate::pg::command::{CopyUp, ObjectId, ObjectOp};
    use crate::store::DiskStore;

    fn map_with_volume(volume: u64) -> ClusterMapState {
        let mut map = ClusterMapState::default();
        map.pools.insert("rbd".into(), Pool::for_test(1, "rbd", 4));
        map.volumes.insert(
            "v".into(),
            Volume {
                id: volume,
                name: "v".into(),
                pool: "rbd".into(),
                size: 1 << 30,
                block_size: 512,
                created_epoch: 1,
                iscsi: None,
                snap_seq: 0,
                snapshots: Vec::new(),
                parent: None,
                qos: Default::default(),
            },
        );
        map
    }

    /// A replica destroyed on a disk leaves nothing a later replica of the
    /// same group there would take as its own: not its objects, and not
    /// its applied index, which would make the new one skip entries it
    /// never applied (a silent hole in its data). Another group's objects
    /// and index on that disk stay.
    #[test]
    fn a_new_replica_clears_what_an_earlier_one_left_on_its_disk() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::open(dir.path()).unwrap();
        let map = map_with_volume(5);
        let pg_of = |n: u64| hpchain_placement::pg_of(5, n, 4);
        let left = pg_of(0);
        let other = (1..64).find(|&n| pg_of(n) != left).unwrap();
        let (group, other_group) = (group_id(1, left), group_id(1, pg_of(other)));
        let object = |n: u64| ObjectId {
            volume: 5,
            object_no: n,
        };
        let write = |n: u64| ObjectOp::Write {
            object: object(n),
            offset: 0,
            data: vec![7; 4096],
            seq: 0,
            copy_up: CopyUp::None,
        };
        store.apply(group, 40, &[write(0)]).unwrap();
        store.apply(other_group, 9, &[write(other)]).unwrap();
        store.sync_applied().unwrap();

        assert_eq!(clear_leftovers(&store, &map, group).unwrap(), Some(40));
        assert_eq!(store.applied_index(group).unwrap(), 0);
        assert_eq!(store.read(&object(0), None, 0, 4096).unwrap(), None);
        assert_eq!(clear_leftovers(&store, &map, group).unwrap(), None);

        assert_eq!(store.applied_index(other_group).unwrap(), 9);
        assert_eq!(
            store.read(&object(other), None, 0, 4096).unwrap(),
            Some(vec![7; 4096])
        );
    }
}
