//! End to end on a real four-node `hpchain dev` cluster: a node down longer
//! than `--out-after` has its placement groups re-replicated on the other
//! nodes (Raft membership change, objects copied to the new replicas),
//! every byte and snapshot survives losing a second original replica
//! afterwards, and when the nodes come back the groups move back and the
//! temporary replicas are dropped.

mod support;

use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;
use support::{cli, export, json, ok, pattern, start_with_args, wait_for, write_at, DevCluster};

const MIB: usize = 1 << 20;
const SIZE: usize = 64 * MIB;

fn pgs(cluster: &DevCluster) -> Vec<Value> {
    json(cli(cluster, &["pg", "ls", "--json"]))["pgs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The nodes holding a PG's replicas.
fn replica_nodes(pg: &Value) -> BTreeSet<u64> {
    pg["replicas"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["node"].as_u64())
        .collect()
}

/// Waits until every PG is active+clean with three replicas, none on
/// `without`; returns the PGs.
fn wait_clean(cluster: &DevCluster, without: Option<u64>, what: &str) -> Vec<Value> {
    wait_for(what, Duration::from_secs(120), || {
        let pgs = pgs(cluster);
        let done = !pgs.is_empty()
            && pgs.iter().all(|pg| {
                let nodes = replica_nodes(pg);
                pg["state"] == "active+clean"
                    && pg["replicas"].as_array().map(Vec::len) == Some(3)
                    && nodes.len() == 3
                    && without.is_none_or(|n| !nodes.contains(&n))
            });
        done.then_some(pgs)
    })
}

fn check(cluster: &DevCluster, expected: &[u8], expected_snapshot: &[u8], when: &str) {
    assert!(export(cluster, "rv") == expected, "{when}: rv reads back");
    assert!(
        export(cluster, "rv@s1") == expected_snapshot,
        "{when}: snapshot rv@s1 reads back"
    );
}

/// Bytes the volume's objects occupy, summed over the replicas on the
/// nodes that answer.
/// Scrubs `rv` until every replica answered: the new replicas, copied
/// from others and then fed the log, hold what the others hold.
fn scrub_agrees(cluster: &DevCluster, when: &str) {
    let report = wait_for(
        "a scrub that compares every replica",
        Duration::from_secs(60),
        || {
            let out = cli(cluster, &["--json", "volume", "scrub", "rv"]);
            let report: Value = serde_json::from_slice(&out.stdout).ok()?;
            report["compare_skipped"]
                .as_array()?
                .is_empty()
                .then_some(report)
        },
    );
    assert_eq!(report["blocks_bad"], 0, "{when}: {report}");
    assert_eq!(report["objects_compared"], 16, "{when}: {report}");
    assert_eq!(report["objects_differing"], 0, "{when}: {report}");
}

fn allocated_all_replicas(cluster: &DevCluster) -> u64 {
    json(cli(cluster, &["volume", "info", "rv", "--json"]))["allocated_bytes_all_replicas"]
        .as_u64()
        .unwrap()
}

/// [`allocated_all_replicas`] once it holds still: a write is
/// acknowledged when a majority has it, and the last replica may still be
/// applying it (a snapshot's copy-on-write allocates there too).
fn settled_allocation(cluster: &DevCluster) -> u64 {
    let mut last = allocated_all_replicas(cluster);
    wait_for("allocation to settle", Duration::from_secs(30), || {
        std::thread::sleep(Duration::from_millis(500));
        let now = allocated_all_replicas(cluster);
        let settled = now == last;
        last = now;
        settled.then_some(now)
    })
}

fn assert_near(actual: u64, expected: u64, what: &str) {
    let (lo, hi) = (expected - expected / 50, expected + expected / 50);
    assert!(
        (lo..=hi).contains(&actual),
        "{what}: {actual} bytes, expected {expected} within 2%"
    );
}

#[test]
fn a_dead_nodes_groups_are_rebuilt_elsewhere_and_move_back() {
    let mut cluster = start_with_args(2, 4, &["--out-after", "6"]);
    let before = wait_clean(&cluster, None, "a clean cluster");
    let on_node2 = before
        .iter()
        .filter(|pg| replica_nodes(pg).contains(&2))
        .count();
    assert!(on_node2 > 0, "node 2 holds replicas to rebuild");

    ok(cli(
        &cluster,
        &["volume", "create", "rv", "--pool", "rbd", "--size", "64M"],
    ));
    // Pattern A over 40 MiB (ten objects, partial ends), a snapshot, then
    // pattern B over part of it: objects get clone versions to copy too.
    let mut data = vec![0u8; SIZE];
    let (start, len) = (MIB / 2, 40 * MIB);
    data[start..start + len].copy_from_slice(&pattern(len, 1));
    write_at(&cluster, "rv", start, &data[start..start + len]);
    ok(cli(&cluster, &["snap", "create", "rv@s1"]));
    let snapshot = data.clone();
    let (start, len) = (8 * MIB + 4096, 12 * MIB);
    data[start..start + len].copy_from_slice(&pattern(len, 2));
    write_at(&cluster, "rv", start, &data[start..start + len]);
    let three_copies = settled_allocation(&cluster);
    assert!(
        three_copies >= 3 * 52 * MIB as u64,
        "{three_copies} bytes allocated"
    );

    unsafe {
        libc::kill(cluster.node_pids[1], libc::SIGKILL);
    }
    // Written while node 2 is down, before its groups move, over bytes
    // already allocated in objects whose snapshot clone exists (so nothing
    // new is allocated): the new replicas must get it from the copy or the
    // log.
    let (start, len) = (9 * MIB, 14 * MIB);
    data[start..start + len].copy_from_slice(&pattern(len, 3));
    write_at(&cluster, "rv", start, &data[start..start + len]);

    let moved = wait_clean(&cluster, Some(2), "every PG rebuilt without node 2");
    let on_node4 = moved
        .iter()
        .filter(|pg| replica_nodes(pg).contains(&4))
        .count();
    assert!(
        on_node4 >= on_node2,
        "node 4 took node 2's replicas ({on_node4} PGs on node 4, {on_node2} were on node 2)"
    );
    // Three whole copies again on the three live nodes: the new replicas
    // hold every block and clone (empty ones would leave about two).
    assert_near(
        settled_allocation(&cluster),
        three_copies,
        "allocated on nodes 1, 3 and 4 after the rebuild",
    );
    check(&cluster, &data, &snapshot, "after the rebuild");
    scrub_agrees(&cluster, "after the rebuild");
    let (start, len) = (60 * MIB, 4 * MIB);
    data[start..start + len].copy_from_slice(&pattern(len, 4));
    write_at(&cluster, "rv", start, &data[start..start + len]);
    let three_copies = three_copies + 3 * len as u64;

    // Node 2 comes back: placement moves its groups home (its stale
    // replicas get a fresh copy), and node 4's temporary replicas leave
    // their groups and are dropped with their objects.
    support::restart_node(&mut cluster, 2);
    let first: Vec<BTreeSet<u64>> = before.iter().map(replica_nodes).collect();
    wait_for(
        "every PG clean on its first placement again",
        Duration::from_secs(120),
        || {
            let pgs = wait_clean(&cluster, None, "a clean cluster");
            let nodes: Vec<BTreeSet<u64>> = pgs.iter().map(replica_nodes).collect();
            (nodes == first).then_some(())
        },
    );
    let dropped = wait_for(
        "node 4's temporary replicas dropped",
        Duration::from_secs(30),
        || {
            let all = allocated_all_replicas(&cluster);
            let near = all.abs_diff(three_copies) <= three_copies / 50;
            near.then_some(all)
        },
    );
    assert_near(dropped, three_copies, "allocated on all four nodes");
    check(&cluster, &data, &snapshot, "after the groups moved back");
    scrub_agrees(&cluster, "after the groups moved back");
}
