//! Map files: parsing, checking, printing, and errors that say what to fix.

use hpchain_placement::{ClusterMap, MapError, MapSpec};

const EXAMPLE: &str = include_str!("../examples/cluster.toml");

#[test]
fn example_map_parses_and_prints_as_a_tree() {
    let map = ClusterMap::parse(EXAMPLE).unwrap();
    let tree = map.render_tree();
    let lines: Vec<&str> = tree.lines().collect();
    assert_eq!(
        lines.len(),
        1 + 8 + 7,
        "header, 8 buckets, 7 disks:\n{tree}"
    );
    assert!(
        lines[1].contains("default") && lines[1].contains("10.500"),
        "{tree}"
    );
    let node3 = lines.iter().position(|l| l.contains(" node-3 ")).unwrap();
    assert!(lines[node3 + 2].contains("node-3/nvme1") && lines[node3 + 2].contains("up out"));
    assert!(tree.contains("node-5/sda") && tree.contains("down in"));
    // Children are indented under their parents.
    let indent = |name: &str| {
        let line = lines.iter().find(|l| l.contains(name)).unwrap();
        line.find(name).unwrap()
    };
    assert!(indent("rack-a") < indent("node-1 ") && indent("node-1 ") < indent("node-1/nvme0"));
}

#[test]
fn toml_and_json_round_trip_to_the_same_map() {
    let spec = MapSpec::parse(EXAMPLE).unwrap();
    let again = MapSpec::parse(&spec.to_toml()).unwrap();
    assert_eq!(spec, again);
    let json = serde_json::to_string(&spec).unwrap();
    assert_eq!(MapSpec::parse(&json).unwrap(), spec);
}

#[test]
fn bad_maps_are_rejected_with_the_culprit_named() {
    let cases: &[(&str, &str, &str)] = &[
        ("types = []", "map.no_types", "no types"),
        (
            r#"types = ["disk", "root"]
               [[buckets]]
               name = "r"
               type = "rack""#,
            "map.unknown_type",
            "\"rack\"",
        ),
        (
            r#"types = ["disk", "host", "root"]
               [[buckets]]
               name = "h"
               type = "host"
               parent = "r""#,
            "map.unknown_parent",
            "\"r\"",
        ),
        (
            r#"types = ["disk", "host", "root"]
               [[buckets]]
               name = "r"
               type = "root"
               [[buckets]]
               name = "h"
               type = "host"
               [[buckets]]
               name = "x"
               type = "root"
               parent = "h""#,
            "map.parent_type_not_above",
            "\"x\"",
        ),
        (
            r#"types = ["disk", "root"]
               [[buckets]]
               name = "r"
               type = "root"
               [[disks]]
               id = 0
               name = "r"
               parent = "r"
               weight = 1.0"#,
            "map.duplicate_name",
            "\"r\"",
        ),
        (
            r#"types = ["disk", "root"]
               [[buckets]]
               name = "r"
               type = "root"
               [[disks]]
               id = 0
               name = "d"
               parent = "r"
               weight = -1.0"#,
            "map.bad_weight",
            "\"d\"",
        ),
        (
            r#"types = ["disk", "host", "root"]
               [[buckets]]
               name = "r"
               type = "root"
               [[disks]]
               id = 0
               name = "d"
               parent = "r"
               weight = 1.0
               [[rules]]
               name = "rep"
               root = "r"
               failure_domain = "host""#,
            "map.no_domain_ancestor",
            "\"d\"",
        ),
        (
            r#"types = ["disk", "host", "root"]
               [[buckets]]
               name = "r"
               type = "root"
               [[rules]]
               name = "rep"
               root = "nowhere"
               failure_domain = "host""#,
            "map.unknown_root",
            "\"nowhere\"",
        ),
        ("types = [", "map.parse", "parse"),
    ];
    for (text, code, mentions) in cases {
        let err: MapError = ClusterMap::parse(text).unwrap_err();
        assert_eq!(err.code(), *code, "{text}");
        assert!(
            err.to_string().contains(mentions),
            "{err} should mention {mentions}"
        );
    }
}
