//! End to end on a real `hpchain dev` cluster: bytes flipped in object
//! files behind the engine's back. A read still returns the right data and
//! repairs the PG leader's copy on disk; `volume scrub` repairs a
//! follower's head and snapshot-clone blocks and a second scrub is clean;
//! /metrics counts the repairs. A block corrupt on every replica fails the
//! read with an error naming it, scrub reports it unrepairable, and
//! rewriting the bytes recovers. A replica given a write the others never
//! had (every block matching its own records) is named by the comparison
//! of the replicas' digests; nothing panics.

mod support;

use serde_json::Value;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::*;

const MIB: usize = 1 << 20;
const OBJECT: usize = 4 * MIB;
const BLOCK: usize = 4096;

/// `volume export` through node 1; the bytes, or the CLI's error.
fn export(cluster: &DevCluster, spec: &str) -> Result<Vec<u8>, String> {
    let file = cluster
        .dir
        .path()
        .join(format!("{}.img", spec.replace('@', "-")));
    let out = cli(cluster, &["volume", "export", spec, file.to_str().unwrap()]);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(std::fs::read(&file).unwrap())
}

/// The node (1-based) whose replica leads `group`, from the nodes' metrics.
fn leader_of(cluster: &DevCluster, group: u64) -> u16 {
    wait_for("the PG to have one leader", Duration::from_secs(30), || {
        let leaders: Vec<u16> = (1..=3)
            .filter(|&n| {
                let metrics = http_get(&format!("{}/metrics", cluster.api(n)));
                metrics.contains(&format!(
                    "hpchain_raft_is_leader{{node=\"{n}\",group=\"{group}\"}} 1"
                ))
            })
            .collect();
        (leaders.len() == 1).then(|| leaders[0])
    })
}

/// One sample of node `n`'s metrics (`name{labels}`), 0 when absent.
fn metric(cluster: &DevCluster, n: u16, sample: &str) -> u64 {
    let metrics = http_get(&format!("{}/metrics", cluster.api(n)));
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or(0)
}

/// Object `object`'s head file (or, with `clone`, its only clone version)
/// on node `n`'s disk.
fn object_file(cluster: &DevCluster, n: u16, volume_id: u64, object: u64, clone: bool) -> PathBuf {
    let dir = cluster
        .data
        .join(format!("node{n}/disk0/objects/{volume_id:016x}"));
    let head = format!("{object:016x}");
    if !clone {
        return dir.join(head);
    }
    let mut clones: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.starts_with(&format!("{head}@"))
        })
        .collect();
    assert_eq!(
        clones.len(),
        1,
        "clone versions of object {object}: {clones:?}"
    );
    clones.pop().unwrap()
}

fn byte_at(path: &PathBuf, offset: usize) -> u8 {
    let mut b = [0u8; 1];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut b, offset as u64)
        .unwrap();
    b[0]
}

/// Flips one bit of one byte in place (no truncation, the file stays sparse).
fn flip(path: &PathBuf, offset: usize) {
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let old = byte_at(path, offset);
    file.write_all_at(&[old ^ 0x20], offset as u64).unwrap();
    assert_ne!(byte_at(path, offset), old);
}

/// `volume scrub --json`: whether it succeeded, and its report.
fn scrub(cluster: &DevCluster, volume: &str) -> (bool, Value, String) {
    let out = cli(cluster, &["--json", "volume", "scrub", volume]);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "scrub printed no report ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (
        out.status.success(),
        report,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn corrupt_blocks_are_served_from_a_replica_repaired_and_scrubbed() {
    let started = Instant::now();
    // No periodic sync of applied data during the test: the replicas serve
    // repairs from data they applied but have not synced, as a new replica
    // does for up to a sync period (their durable index is still 0).
    let mut cluster = start_with_args(3, 3, &["--applied-sync-ms", "600000"]);
    // Node n's first process, by n (the list shrinks as nodes are stopped).
    let first_pids = cluster.node_pids.clone();
    // One PG, so every object has the same leader and followers.
    ok(cli(
        &cluster,
        &[
            "pool",
            "create",
            "one",
            "--pg-num",
            "1",
            "--failure-domain",
            "disk",
        ],
    ));
    let pool = json(cli(&cluster, &["--json", "pool", "info", "one"]));
    let group = pool["id"].as_u64().unwrap() << 32;
    ok(cli(
        &cluster,
        &["volume", "create", "sv", "--pool", "one", "--size", "16M"],
    ));
    let volume_id = json(cli(&cluster, &["--json", "volume", "info", "sv"]))["id"]
        .as_u64()
        .unwrap();

    // Objects 0-2 written, a snapshot, then part of object 1 rewritten: its
    // old bytes live on as a clone version on every replica.
    let mut a = vec![0u8; 16 * MIB];
    a[..3 * OBJECT].copy_from_slice(&pattern(3 * OBJECT, 1));
    write_at(&cluster, "sv", 0, &a[..3 * OBJECT]);
    ok(cli(&cluster, &["snap", "create", "sv@s1"]));
    let mut b = a.clone();
    let rewrite = OBJECT + 2 * BLOCK;
    b[rewrite..rewrite + BLOCK].copy_from_slice(&pattern(BLOCK, 2));
    write_at(&cluster, "sv", rewrite, &b[rewrite..rewrite + BLOCK]);
    assert!(export(&cluster, "sv").unwrap() == b, "the volume reads B");

    let leader = leader_of(&cluster, group);
    let follower = if leader == 1 { 2 } else { 1 };
    // The leader's object 0 block 2; the follower's object 2 block 5 and
    // block 1 of object 1's clone version (what snapshot s1 reads).
    let leader_file = object_file(&cluster, leader, volume_id, 0, false);
    let leader_at = 2 * BLOCK + 100;
    let follower_file = object_file(&cluster, follower, volume_id, 2, false);
    let follower_at = 5 * BLOCK + 7;
    let clone_file = object_file(&cluster, follower, volume_id, 1, true);
    let clone_at = BLOCK + 3000;
    let originals = [
        byte_at(&leader_file, leader_at),
        byte_at(&follower_file, follower_at),
        byte_at(&clone_file, clone_at),
    ];
    flip(&leader_file, leader_at);
    flip(&follower_file, follower_at);
    flip(&clone_file, clone_at);

    // The read returns the right data, and the leader's copy is repaired.
    assert!(
        export(&cluster, "sv").unwrap() == b,
        "the volume still reads B with a corrupt block on the leader"
    );
    assert!(export(&cluster, "sv@s1").unwrap() == a, "s1 still reads A");
    assert_eq!(leader_of(&cluster, group), leader, "the leader stayed");
    assert_eq!(
        byte_at(&leader_file, leader_at),
        originals[0],
        "the leader's block was repaired on disk"
    );
    assert_ne!(
        byte_at(&follower_file, follower_at),
        originals[1],
        "reads are served by the leader: the follower's block is still bad"
    );
    assert_eq!(
        metric(
            &cluster,
            leader,
            &format!("hpchain_store_blocks_repaired_total{{node=\"{leader}\",found_by=\"read\"}}")
        ),
        1
    );

    // The follower stops cleanly, which syncs what it applied, and starts
    // again: its durable index is now past the others' (0: they synced
    // nothing). Its scrub asks them for copies at the index it applied,
    // which they applied too, synced or not.
    let pid = cluster.node_pids[follower as usize - 1];
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    wait_for("the follower stopped", Duration::from_secs(30), || {
        (!alive(pid)).then_some(())
    });
    // Its pid is no longer one of the cluster's (the Drop kills the rest).
    cluster.node_pids.retain(|&p| p != pid);
    restart_node(&mut cluster, follower as usize);
    // Back when its API answers and its Raft loop holds the PG again (a
    // stop this short may never show in the cluster's PG states).
    let applied = format!("hpchain_raft_applied_index{{node=\"{follower}\",group=\"{group}\"}}");
    let api = cluster.api(follower).replace("http://", "");
    wait_for(
        "the restarted follower hosting the PG",
        Duration::from_secs(60),
        || {
            std::net::TcpStream::connect(&api).ok()?;
            (metric(&cluster, follower, &applied) > 0).then_some(())
        },
    );
    wait_for(
        "every placement group clean",
        Duration::from_secs(60),
        || {
            let out = cli(&cluster, &["--json", "cluster", "status"]);
            let status: Value = serde_json::from_slice(&out.stdout).ok()?;
            let pgs = status["pgs"].as_object()?;
            let total: u64 = pgs.values().filter_map(Value::as_u64).sum();
            (out.status.success() && pgs.get("active+clean")?.as_u64() == Some(total)).then_some(())
        },
    );

    // Scrub finds and repairs the follower's two blocks, and says where.
    let (success, report, stderr) = scrub(&cluster, "sv");
    assert!(success, "scrub: {report} {stderr}");
    assert!(
        stderr.contains("4 / 4 objects (100%)"),
        "progress: {stderr}"
    );
    assert_eq!(report["objects_checked"], 4, "{report}");
    assert_eq!(report["blocks_bad"], 2, "{report}");
    assert_eq!(report["blocks_repaired"], 2, "{report}");
    assert_eq!(report["blocks_unrepaired"], 0, "{report}");
    // Three replicas of objects 0-2, and of object 1's clone version.
    assert_eq!(report["versions_checked"], 12, "{report}");
    let repaired = report["repaired"].as_array().unwrap();
    let found = |object: u64, version: &str, block: u64| {
        repaired.iter().any(|r| {
            r["object"] == object
                && r["version"].as_str().unwrap().starts_with(version)
                && r["block"] == block
                && r["node"] == u64::from(follower)
                && r["from_node"]
                    .as_u64()
                    .is_some_and(|n| n != u64::from(follower))
        })
    };
    assert!(found(2, "head", 5), "{report}");
    assert!(found(1, "clone@", 1), "{report}");
    assert_eq!(byte_at(&follower_file, follower_at), originals[1]);
    assert_eq!(byte_at(&clone_file, clone_at), originals[2]);
    assert_eq!(
        metric(
            &cluster,
            follower,
            &format!(
                "hpchain_store_blocks_repaired_total{{node=\"{follower}\",found_by=\"scrub\"}}"
            )
        ),
        2
    );

    // A second scrub finds nothing, and the replicas agree.
    let (success, report, _) = scrub(&cluster, "sv");
    assert!(success, "{report}");
    assert_eq!(report["blocks_bad"], 0, "{report}");
    assert_eq!(report["objects_compared"], 4, "{report}");
    assert_eq!(report["objects_differing"], 0, "{report}");
    assert!(report["blocks_checked"].as_u64().unwrap() >= 12 * 1024);

    // One block corrupt on every replica: the read fails naming it, and
    // scrub reports it on each replica as unrepairable.
    let lost = 9 * BLOCK + 11;
    for n in 1..=3 {
        flip(&object_file(&cluster, n, volume_id, 1, false), lost);
    }
    let error = export(&cluster, "sv").unwrap_err();
    assert!(
        error.contains("volume \"sv\"")
            && error.contains("object 1 head block 9")
            && error.contains("no other replica holds a good copy")
            && error.contains("volume.corrupt"),
        "{error}"
    );
    let (success, report, stderr) = scrub(&cluster, "sv");
    assert!(!success, "a scrub that leaves a block lost fails: {report}");
    assert!(
        stderr.contains("could not be repaired") && stderr.contains("scrub.unrepaired"),
        "{stderr}"
    );
    assert_eq!(report["blocks_unrepaired"], 3, "{report}");
    for r in report["unrepaired"].as_array().unwrap() {
        assert_eq!(
            (r["object"].as_u64(), r["block"].as_u64()),
            (Some(1), Some(9))
        );
        assert_eq!(r["volume_offset"], OBJECT + 9 * BLOCK);
        assert!(r["reason"].as_str().unwrap().contains("crc32c"), "{r}");
        assert_eq!(r["lost"], true, "{r}");
    }
    assert!(
        metric(
            &cluster,
            leader,
            &format!(
                "hpchain_store_blocks_unrepairable_total{{node=\"{leader}\",found_by=\"read\"}}"
            )
        ) >= 1
    );

    // What the error says to do works: rewrite the block, scrub is clean.
    let at = OBJECT + 9 * BLOCK;
    write_at(&cluster, "sv", at, &b[at..at + BLOCK]);
    let (success, report, _) = scrub(&cluster, "sv");
    assert!(success, "{report}");
    assert_eq!(report["blocks_bad"], 0, "{report}");
    assert!(export(&cluster, "sv").unwrap() == b);

    // The third node, stopped, takes a write into block 7 of object 2
    // straight into its store, as if it alone had applied an entry: the
    // block matches its new crc record there and the object's record does
    // not change (no snapshot is involved), so only the comparison of the
    // replicas' crc records can see it.
    let other = (1..=3u16).find(|&n| n != leader && n != follower).unwrap();
    let pid = first_pids[other as usize - 1];
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    wait_for("the third node stopped", Duration::from_secs(30), || {
        (!alive(pid)).then_some(())
    });
    cluster.node_pids.retain(|&p| p != pid);
    {
        use hpchain_engine::pg::backend::PgBackend;
        use hpchain_engine::pg::command::{CopyUp, ObjectId, ObjectOp};
        let disk = cluster.data.join(format!("node{other}/disk0"));
        let store = hpchain_engine::store::DiskStore::open(&disk).unwrap();
        let index = store.applied_index(group).unwrap();
        let object = ObjectId {
            volume: volume_id,
            object_no: 2,
        };
        let write = ObjectOp::Write {
            object,
            offset: 7 * BLOCK as u64,
            data: pattern(BLOCK, 9),
            seq: 0,
            copy_up: CopyUp::None,
        };
        store.apply(group, index, &[write]).unwrap();
    }
    restart_node(&mut cluster, other as usize);
    let applied = format!("hpchain_raft_applied_index{{node=\"{other}\",group=\"{group}\"}}");
    let api = cluster.api(other).replace("http://", "");
    wait_for("the third node back", Duration::from_secs(60), || {
        std::net::TcpStream::connect(&api).ok()?;
        (metric(&cluster, other, &applied) > 0).then_some(())
    });
    let (success, report, stderr) = wait_for(
        "a scrub that compares every replica",
        Duration::from_secs(90),
        || {
            let (success, report, stderr) = scrub(&cluster, "sv");
            report["compare_skipped"]
                .as_array()?
                .is_empty()
                .then_some((success, report, stderr))
        },
    );
    assert!(!success, "replicas that differ fail the scrub: {report}");
    assert!(
        stderr.contains("holds other data than the others")
            && stderr.contains("scrub.replicas_differ"),
        "{stderr}"
    );
    assert_eq!(
        report["blocks_bad"], 0,
        "its blocks match its records: {report}"
    );
    assert_eq!(report["objects_differing"], 1, "{report}");
    let differing = &report["differing"][0];
    assert_eq!(differing["object"], 2, "{report}");
    assert_eq!(differing["node"], u64::from(other), "{report}");
    // The other two agree ("node N disk D"; disk ids are cluster-wide).
    let mut agreeing: Vec<u64> = differing["agreeing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            a.as_str()
                .unwrap()
                .split(' ')
                .nth(1)
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    agreeing.sort();
    let mut others = vec![u64::from(leader), u64::from(follower)];
    others.sort();
    assert_eq!(agreeing, others, "{report}");

    for n in 1..=3 {
        let log = std::fs::read_to_string(cluster.data.join(format!("node{n}.log"))).unwrap();
        assert!(!log.contains("panicked"), "node {n} panicked:\n{log}");
    }
    for n in [follower, other] {
        let restart_log = cluster.dir.path().join(format!("node{n}-restart.log"));
        let log = std::fs::read_to_string(restart_log).unwrap();
        assert!(
            !log.contains("panicked"),
            "restarted node {n} panicked:\n{log}"
        );
    }
    assert!(cluster.node_pids.iter().all(|&p| alive(p)));
    for (i, child) in cluster.restarted.iter_mut().enumerate() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "restarted node {i} exited"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(300),
        "took {:?}",
        started.elapsed()
    );
}
