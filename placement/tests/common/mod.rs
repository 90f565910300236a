//! Map shapes shared by the placement tests.
#![allow(dead_code)]

use hpchain_placement::{place, ClusterMap, DiskId, MapSpec, PgId, Rule};
use std::collections::HashSet;

/// Inputs every statistical test sweeps.
pub const INPUTS: u32 = 1_000_000;

pub fn pg(i: u32) -> PgId {
    PgId { pool: 1, index: i }
}

/// One root holding disks directly, weights as given; rule "flat" spreads
/// over disks.
pub fn flat(weights: &[f64]) -> MapSpec {
    let mut spec = MapSpec::new(&["disk", "root"]);
    spec.bucket("default", "root", None);
    for (i, &w) in weights.iter().enumerate() {
        spec.disk(i as u32, &format!("d{i}"), "default", w);
    }
    spec.rule(Rule::replicated("flat", "default", "disk"));
    spec
}

/// root > host > disk; `hosts[h]` lists the weights of host h's disks.
/// Rules: "rep" (firstn over hosts) and "ec" (indep over hosts).
pub fn hosts(hosts: &[&[f64]]) -> MapSpec {
    let mut spec = MapSpec::new(&["disk", "host", "root"]);
    spec.bucket("default", "root", None);
    let mut id = 0;
    for (h, disks) in hosts.iter().enumerate() {
        let host = format!("host{h}");
        spec.bucket(&host, "host", Some("default"));
        for &w in disks.iter() {
            spec.disk(id, &format!("{host}-d{id}"), &host, w);
            id += 1;
        }
    }
    spec.rule(Rule::replicated("rep", "default", "host"));
    spec.rule(Rule::indep("ec", "default", "host"));
    spec
}

/// root > rack > host > disk: `racks` racks of `hosts_per_rack` hosts of
/// `disks_per_host` disks, weights varying by disk so the map is uneven.
/// Rules: "rep" over hosts, "rack" over racks.
pub fn three_level(racks: u32, hosts_per_rack: u32, disks_per_host: u32) -> MapSpec {
    let mut spec = MapSpec::new(&["disk", "host", "rack", "root"]);
    spec.bucket("default", "root", None);
    let mut id = 0;
    for r in 0..racks {
        let rack = format!("rack{r}");
        spec.bucket(&rack, "rack", Some("default"));
        for h in 0..hosts_per_rack {
            let host = format!("{rack}-host{h}");
            spec.bucket(&host, "host", Some(&rack));
            for _ in 0..disks_per_host {
                let weight = 1.0 + f64::from(id % 3) * 0.5;
                spec.disk(id, &format!("{host}-d{id}"), &host, weight);
                id += 1;
            }
        }
    }
    spec.rule(Rule::replicated("rep", "default", "host"));
    spec.rule(Rule::replicated("rack", "default", "rack"));
    spec
}

pub fn build(spec: &MapSpec) -> ClusterMap {
    ClusterMap::from_spec(spec.clone()).expect("test map is valid")
}

/// Places `INPUTS` PGs of `size` with `rule`.
pub fn place_all(map: &ClusterMap, rule: &str, size: usize) -> Vec<Vec<DiskId>> {
    (0..INPUTS)
        .map(|i| place(map, rule, pg(i), size).expect("placement succeeds"))
        .collect()
}

/// Slots whose disk set lost a member, over all inputs; and every
/// (lost, gained) disk pair seen, for locality checks.
pub struct Movement {
    pub moved_slots: u64,
    pub total_slots: u64,
    pub lost: HashSet<DiskId>,
    pub gained: HashSet<DiskId>,
    /// Inputs where a disk other than `changed` was both lost and another
    /// one other than `changed` gained.
    pub unchanged_to_unchanged: u64,
}

pub fn movement(before: &[Vec<DiskId>], after: &[Vec<DiskId>], changed: DiskId) -> Movement {
    let mut m = Movement {
        moved_slots: 0,
        total_slots: 0,
        lost: HashSet::new(),
        gained: HashSet::new(),
        unchanged_to_unchanged: 0,
    };
    for (old, new) in before.iter().zip(after) {
        m.total_slots += old.len() as u64;
        let lost: Vec<DiskId> = old.iter().filter(|d| !new.contains(d)).copied().collect();
        let gained: Vec<DiskId> = new.iter().filter(|d| !old.contains(d)).copied().collect();
        m.moved_slots += lost.len() as u64;
        let lost_unchanged = lost.iter().any(|&d| d != changed);
        let gained_unchanged = gained.iter().any(|&d| d != changed);
        if lost_unchanged && gained_unchanged {
            m.unchanged_to_unchanged += 1;
        }
        m.lost.extend(lost);
        m.gained.extend(gained);
    }
    m
}

pub fn total_weight(spec: &MapSpec) -> f64 {
    spec.disks
        .iter()
        .filter(|d| d.is_in)
        .map(|d| d.weight)
        .sum()
}
