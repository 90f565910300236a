//! Golden vectors: the exact output of the hashes and of placement for
//! fixed inputs, checked in. Any change to the mapping moves data in every
//! existing cluster, so it must show up here as a failing test first.
//!
//! To accept a deliberate change: `HPCHAIN_BLESS=1 cargo test -p
//! hpchain-placement --test golden`, and say why in the commit.

mod common;
use common::*;
use hpchain_placement::hash::hash3;
use hpchain_placement::{pg_of, place, ClusterMap, PgId};
use std::fmt::Write;

const GOLDEN: &str = "tests/golden/vectors.txt";

fn vectors() -> String {
    let mut out = String::new();
    for (a, b, c) in [(0, 0, 0), (1, 2, 3), (u32::MAX, 7, 1), (123_456, 0, 99)] {
        writeln!(out, "hash3 {a} {b} {c} = {}", hash3(a, b, c)).unwrap();
    }
    for (volume, object, pg_num) in [
        (1, 0, 128),
        (1, 1, 128),
        (42, 1_000_000, 100),
        (u64::MAX, 5, 4096),
    ] {
        writeln!(
            out,
            "pg_of {volume} {object} {pg_num} = {}",
            pg_of(volume, object, pg_num)
        )
        .unwrap();
    }
    let example = ClusterMap::parse(include_str!("../examples/cluster.toml")).unwrap();
    let three = build(&three_level(2, 3, 2));
    let maps = [
        (
            "example",
            &example,
            ["replicated-host", "replicated-rack", "ec-host"],
        ),
        ("three_level", &three, ["rep", "rack", "rep"]),
    ];
    for (name, map, rules) in maps {
        for rule in rules {
            let size = if rule.contains("rack") { 2 } else { 3 };
            for index in [0, 1, 2, 3, 17, 255, 4095] {
                let pg = PgId { pool: 3, index };
                let disks = place(map, rule, pg, size).unwrap();
                let ids: Vec<String> = disks.iter().map(|d| d.0.to_string()).collect();
                writeln!(out, "place {name} {rule} {pg} {size} = {}", ids.join(",")).unwrap();
            }
        }
    }
    out
}

#[test]
fn mapping_matches_the_checked_in_golden_vectors() {
    let got = vectors();
    if std::env::var_os("HPCHAIN_BLESS").is_some() {
        std::fs::write(GOLDEN, &got).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(GOLDEN).expect("golden file present");
    for (line, (e, g)) in expected.lines().zip(got.lines()).enumerate() {
        assert_eq!(
            e,
            g,
            "golden vector {} changed: placement would move data",
            line + 1
        );
    }
    assert_eq!(expected.lines().count(), got.lines().count());
}
