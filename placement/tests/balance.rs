//! Data lands on disks in proportion to their weight.
//!
//! Each check counts where 10^6 placements land and compares every disk's
//! count with its expected count under a binomial model: within three
//! standard deviations, and a chi-square goodness-of-fit test at the 0.1%
//! level over all disks must not reject.

mod common;
use common::*;
use hpchain_placement::{place, DiskId};
use std::collections::HashMap;

/// Upper 0.1% point of chi-square with `df` degrees of freedom
/// (Wilson-Hilferty approximation, good to about 1% for df >= 3).
fn chi_square_critical_001(df: f64) -> f64 {
    let z = 3.090_232; // upper 0.1% of the standard normal
    let a = 2.0 / (9.0 * df);
    df * (1.0 - a + z * a.sqrt()).powi(3)
}

/// Asserts counts fit `expected_share` (per disk, summing to 1) over `n` draws.
fn assert_fits(label: &str, counts: &HashMap<DiskId, u64>, shares: &[(DiskId, f64)], n: u64) {
    let mut chi_square = 0.0;
    for &(disk, share) in shares {
        let observed = *counts.get(&disk).unwrap_or(&0) as f64;
        let expected = n as f64 * share;
        let sigma = (n as f64 * share * (1.0 - share)).sqrt();
        assert!(
            (observed - expected).abs() <= 3.0 * sigma,
            "{label}: {disk} got {observed}, expected {expected:.0} +- {:.0} (3 sigma)",
            3.0 * sigma
        );
        chi_square += (observed - expected).powi(2) / expected;
    }
    let critical = chi_square_critical_001((shares.len() - 1) as f64);
    assert!(
        chi_square < critical,
        "{label}: chi-square {chi_square:.1} rejects at 0.1% (critical {critical:.1})"
    );
}

fn weight_shares(spec: &hpchain_placement::MapSpec) -> Vec<(DiskId, f64)> {
    let total = total_weight(spec);
    spec.disks
        .iter()
        .filter(|d| d.is_in && d.weight > 0.0)
        .map(|d| (DiskId(d.id), d.weight / total))
        .collect()
}

#[test]
fn flat_weighted_disks_receive_their_weight_share() {
    let spec = flat(&[1.0, 1.0, 2.0, 0.5, 3.0, 1.5, 1.0, 4.0, 0.25, 2.0]);
    let map = build(&spec);
    let mut counts = HashMap::new();
    for i in 0..INPUTS {
        let disks = place(&map, "flat", pg(i), 1).unwrap();
        *counts.entry(disks[0]).or_insert(0) += 1;
    }
    assert_fits(
        "flat size 1",
        &counts,
        &weight_shares(&spec),
        u64::from(INPUTS),
    );
}

#[test]
fn primaries_over_uneven_hosts_follow_disk_weight() {
    let spec = hosts(&[&[1.0, 1.0, 1.0, 1.0], &[2.0, 2.0], &[0.5], &[1.0, 3.0, 1.5]]);
    let map = build(&spec);
    let mut counts = HashMap::new();
    for placement in place_all(&map, "rep", 3) {
        *counts.entry(placement[0]).or_insert(0) += 1;
    }
    assert_fits(
        "primary of rep",
        &counts,
        &weight_shares(&spec),
        u64::from(INPUTS),
    );
}

#[test]
fn three_replicas_over_symmetric_hosts_fill_every_disk_equally() {
    // With equal host weights the second and third picks are symmetric too,
    // so each disk holds exactly its weight share of all replicas.
    let spec = hosts(&[
        &[1.0, 1.0, 2.0],
        &[2.0, 1.0, 1.0],
        &[1.0, 3.0],
        &[4.0],
        &[2.0, 2.0],
    ]);
    let map = build(&spec);
    let mut counts = HashMap::new();
    for placement in place_all(&map, "rep", 3) {
        for disk in placement {
            *counts.entry(disk).or_insert(0) += 1;
        }
    }
    // Each replica set holds 3 of 5 hosts; within a host, the disk share
    // follows weight. So disk share of all slots = weight / total.
    assert_fits(
        "3 replicas",
        &counts,
        &weight_shares(&spec),
        3 * u64::from(INPUTS),
    );
}

#[test]
fn flat_three_replicas_over_equal_disks_are_uniform() {
    let spec = flat(&[1.0; 16]);
    let map = build(&spec);
    let mut counts = HashMap::new();
    for placement in place_all(&map, "flat", 3) {
        for disk in placement {
            *counts.entry(disk).or_insert(0) += 1;
        }
    }
    assert_fits(
        "flat 3 replicas",
        &counts,
        &weight_shares(&spec),
        3 * u64::from(INPUTS),
    );
}
