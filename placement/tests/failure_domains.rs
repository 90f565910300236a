//! No two replicas of any input share the rule's failure domain, and
//! impossible requests are errors that name the rule and the shortfall.

mod common;
use common::*;
use hpchain_placement::{place, ClusterMap, DiskId, MapSpec, PlacementError, Rule};
use std::collections::HashSet;

fn assert_distinct_domains(spec: &MapSpec, rule: &str, domain_type: &str, size: usize) {
    let map = build(spec);
    let excluded: HashSet<DiskId> = spec
        .disks
        .iter()
        .filter(|d| !d.is_in || d.weight == 0.0)
        .map(|d| DiskId(d.id))
        .collect();
    for (i, placement) in place_all(&map, rule, size).iter().enumerate() {
        assert_eq!(placement.len(), size, "input {i}");
        let domains: HashSet<&str> = placement
            .iter()
            .map(|&d| map.ancestor_of(d, domain_type).unwrap())
            .collect();
        assert_eq!(
            domains.len(),
            size,
            "input {i}: {placement:?} share a {domain_type}"
        );
        assert!(
            placement.iter().all(|d| !excluded.contains(d)),
            "input {i}: {placement:?} uses an out or zero-weight disk"
        );
    }
}

#[test]
fn uneven_hosts_never_share_a_host() {
    let spec = hosts(&[
        &[1.0; 6],
        &[2.0, 0.5],
        &[1.0, 1.0, 1.0],
        &[8.0],
        &[0.25, 0.25],
    ]);
    assert_distinct_domains(&spec, "rep", "host", 3);
    assert_distinct_domains(&spec, "ec", "host", 4);
}

#[test]
fn a_host_with_one_disk_and_a_zero_weight_disk_and_an_out_disk() {
    let mut spec = hosts(&[&[1.0, 1.0, 1.0], &[1.0], &[1.0, 0.0, 1.0], &[2.0, 2.0]]);
    spec.disk_mut(8).unwrap().is_in = false; // host3's first disk
    assert_distinct_domains(&spec, "rep", "host", 3);
    assert_distinct_domains(&spec, "ec", "host", 3);
}

#[test]
fn racks_never_share_a_rack() {
    let spec = three_level(4, 3, 2);
    assert_distinct_domains(&spec, "rack", "rack", 3);
    assert_distinct_domains(&spec, "rep", "host", 3);
}

#[test]
fn more_replicas_than_hosts_is_a_shortfall_naming_rule_and_numbers() {
    let mut spec = hosts(&[&[1.0, 1.0], &[1.0], &[1.0]]);
    spec.disk_mut(3).unwrap().is_in = false; // host2's only disk: 2 usable hosts
    let map = build(&spec);
    let err = place(&map, "rep", pg(5), 3).unwrap_err();
    match &err {
        PlacementError::Shortfall {
            rule,
            domain_type,
            wanted,
            available,
            partial,
        } => {
            assert_eq!((rule.as_str(), domain_type.as_str()), ("rep", "host"));
            assert_eq!((*wanted, *available), (3, 2));
            assert_eq!(
                partial.iter().flatten().count(),
                2,
                "degraded placement offered"
            );
        }
        other => panic!("expected a shortfall, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("\"rep\"") && text.contains("short by 1"),
        "{text}"
    );
    assert_eq!(err.code(), "placement.shortfall");
}

#[test]
fn empty_root_and_zero_weight_and_unknown_rule_are_errors() {
    let mut spec = MapSpec::new(&["disk", "host", "root"]);
    spec.bucket("empty", "root", None);
    spec.bucket("light", "root", None);
    spec.bucket("h", "host", Some("light"));
    spec.disk(0, "d0", "h", 0.0);
    spec.rule(Rule::replicated("r-empty", "empty", "host"));
    spec.rule(Rule::replicated("r-light", "light", "host"));
    let map = ClusterMap::from_spec(spec).unwrap();
    assert!(matches!(
        place(&map, "r-empty", pg(0), 1),
        Err(PlacementError::EmptyBucket { .. })
    ));
    assert!(matches!(
        place(&map, "r-light", pg(0), 1),
        Err(PlacementError::ZeroWeight { .. })
    ));
    assert!(matches!(
        place(&map, "nope", pg(0), 1),
        Err(PlacementError::UnknownRule(_))
    ));
}

#[test]
fn indep_keeps_every_other_slot_when_a_disk_goes_out() {
    let spec = hosts(&[
        &[1.0, 1.0],
        &[1.0, 1.0],
        &[1.0, 1.0],
        &[1.0, 1.0],
        &[1.0, 1.0],
        &[1.0],
    ]);
    let mut out = spec.clone();
    out.disk_mut(2).unwrap().is_in = false;
    let before = place_all(&build(&spec), "ec", 4);
    let after = place_all(&build(&out), "ec", 4);
    let mut replaced = 0;
    for (old, new) in before.iter().zip(&after) {
        for slot in 0..4 {
            if old[slot] == DiskId(2) {
                assert_ne!(new[slot], DiskId(2));
                replaced += 1;
            } else {
                assert_eq!(
                    old[slot], new[slot],
                    "slot {slot} moved though its disk is fine"
                );
            }
        }
    }
    assert!(replaced > 0, "the out disk held some slots");
}

#[test]
fn firstn_closes_up_when_a_disk_goes_out() {
    let spec = hosts(&[&[1.0], &[1.0], &[1.0], &[1.0]]);
    let mut out = spec.clone();
    out.disk_mut(1).unwrap().is_in = false;
    let map = build(&out);
    for i in 0..10_000 {
        let p = place(&map, "rep", pg(i), 3).unwrap();
        assert!(!p.contains(&DiskId(1)));
    }
}
