//! hpchain-placement: where every piece of data lives, computed, never
//! looked up.
//!
//! A [`ClusterMap`] describes disks in a typed hierarchy (the types are
//! data: `["disk", "host", "rack", "zone", "root"]` or anything else) and
//! the rules that spread data over it. [`place`] maps a placement group to
//! the disks that hold it, in distinct failure domains; [`pg_of`] maps an
//! object of a volume to its placement group. Both are pure functions: every
//! node with the same map computes the same answer, and nothing here does
//! I/O or keeps state.
//!
//! ```
//! use hpchain_placement::{place, pg_of, ClusterMap, MapSpec, PgId, Rule};
//!
//! let mut spec = MapSpec::new(&["disk", "host", "root"]);
//! spec.bucket("default", "root", None);
//! for host in 0..3 {
//!     let name = format!("host{host}");
//!     spec.bucket(&name, "host", Some("default"));
//!     for d in 0..2 {
//!         spec.disk(host * 2 + d, &format!("{name}-d{d}"), &name, 1.0);
//!     }
//! }
//! spec.rule(Rule::replicated("rbd", "default", "host"));
//! let map = ClusterMap::from_spec(spec).unwrap();
//!
//! let pg = PgId { pool: 1, index: pg_of(42, 7, 128) };
//! let disks = place(&map, "rbd", pg, 3).unwrap();
//! assert_eq!(disks.len(), 3);
//! ```

mod error;
pub mod hash;
mod ln;
mod map;
mod select;
mod tree;

pub use error::{MapError, PlacementError};
pub use map::{BucketSpec, ClusterMap, DiskSpec, MapSpec, Mode, Rule, WEIGHT_ONE};
pub use select::{pg_input, place, place_input};

use serde::{Deserialize, Serialize};

/// A disk's stable id (non-negative, unique in the map).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DiskId(pub u32);

impl std::fmt::Display for DiskId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "disk.{}", self.0)
    }
}

/// A placement group: `index` in `0..pg_num` of pool `pool`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PgId {
    pub pool: u32,
    pub index: u32,
}

impl std::fmt::Display for PgId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:x}", self.pool, self.index)
    }
}

/// The placement group of object `object_no` of volume `volume_id` in a
/// pool of `pg_num` groups.
///
/// Uses a stable modulo: when `pg_num` doubles, each group splits in two
/// and no object moves between groups that existed before. For a `pg_num`
/// that is not a power of two, growing it by one splits a single group.
pub fn pg_of(volume_id: u64, object_no: u64, pg_num: u32) -> u32 {
    assert!(pg_num > 0, "a pool has at least one placement group");
    hash::stable_mod(hash::hash_u64_pair(volume_id, object_no), pg_num)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubling_pg_num_splits_groups_without_crossing() {
        for object in 0..50_000u64 {
            let before = pg_of(9, object, 64);
            let after = pg_of(9, object, 128);
            assert!(after == before || after == before + 64, "object {object}");
        }
    }

    #[test]
    fn objects_spread_over_all_groups() {
        let mut counts = vec![0u32; 64];
        for object in 0..64_000u64 {
            counts[pg_of(3, object, 64) as usize] += 1;
        }
        // Expected 1000 each, sigma ~31.
        for (pg, &c) in counts.iter().enumerate() {
            assert!((850..=1150).contains(&c), "pg {pg} got {c}");
        }
    }
}
