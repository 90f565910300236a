//! Placement groups: the replicated unit of object data.
//!
//! A PG is a Raft group (group id `pool << 32 | pg index`) on the disks
//! placement gives it. This module owns the commands a PG replicates
//! ([`command`]), its state machine over an object backend ([`machine`]),
//! the backend boundary ([`backend`]) and the creation of the PG replicas
//! a node must host as the cluster map changes ([`manager`]). It never
//! touches files itself: the object store behind [`backend::PgBackend`]
//! does.

pub mod backend;
pub mod command;
pub mod machine;
pub mod manager;
pub mod state;
pub mod versions;

use crate::replication::GroupId;

/// The Raft group id of PG `index` of pool `pool`.
pub fn group_id(pool: u32, index: u32) -> GroupId {
    (u64::from(pool) << 32) | u64::from(index)
}

/// The (pool, index) of a PG's group id; `None` for the map group.
pub fn pg_of_group(group: GroupId) -> Option<(u32, u32)> {
    let pool = (group >> 32) as u32;
    (pool != 0).then_some((pool, group as u32))
}

/// The disks placement gives PG `index` of `pool`, in order, and whether
/// they are fewer than the pool's size: a map with too few disks runs
/// the group short rather than not at all.
pub fn pg_disks(
    placement: &hpchain_placement::ClusterMap,
    pool: &crate::cluster::map::Pool,
    index: u32,
) -> Result<(Vec<u32>, bool), String> {
    let pg = hpchain_placement::PgId {
        pool: pool.id,
        index,
    };
    match hpchain_placement::place(placement, &pool.name, pg, pool.size as usize) {
        Ok(disks) => Ok((disks.iter().map(|d| d.0).collect(), false)),
        Err(hpchain_placement::PlacementError::Shortfall { partial, .. }) => {
            Ok((partial.into_iter().flatten().map(|d| d.0).collect(), true))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// The Raft peer id of the replica on `disk`.
pub fn peer_of_disk(disk: u32) -> u64 {
    u64::from(disk) + 1
}

/// The disk of Raft peer `peer`.
pub fn disk_of_peer(peer: u64) -> Option<u32> {
    u32::try_from(peer.checked_sub(1)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_ids_round_trip_and_never_collide_with_the_map_group() {
        assert_eq!(group_id(1, 0), 1 << 32);
        assert_eq!(pg_of_group(group_id(7, 4095)), Some((7, 4095)));
        assert_eq!(pg_of_group(crate::cluster::MAP_GROUP), None);
        assert_eq!(disk_of_peer(peer_of_disk(41)), Some(41));
        assert_eq!(disk_of_peer(0), None);
    }
}
