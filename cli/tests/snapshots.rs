//! End to end on a real `hpchain dev` cluster: snapshots, rollback, clones
//! at three levels, flatten, removal rules and QoS, through the CLI, with
//! a node killed -9 in the middle of the snapshot sequence.

mod support;

use hpchain_iscsi::initiator::Initiator;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{
    cli, export, failed, json, ok, pattern, start, wait_for, write_at, DevCluster, HPCHAIN,
};

const MIB: usize = 1 << 20;

fn restart_node(cluster: &mut DevCluster, n: usize) {
    let config = cluster.data.join(format!("node{n}.toml"));
    let log = std::fs::File::create(cluster.data.join(format!("node{n}-restarted.log"))).unwrap();
    let child = Command::new(HPCHAIN)
        .args(["node", "--config"])
        .arg(&config)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    cluster.restarted.push(child);
}

/// Volume `sv` (16 MiB over four 4 MiB objects): pattern A over three
/// objects, snapshot, pattern B over the same bytes; the snapshot reads A
/// and the volume B; rollback makes the volume A again. Node 3 is killed
/// after the snapshot and comes back before the rollback.
fn snapshot_sequence(cluster: &mut DevCluster) -> Vec<u8> {
    ok(cli(
        cluster,
        &["volume", "create", "sv", "--pool", "rbd", "--size", "16M"],
    ));
    let size = 16 * MIB;
    let mut a = vec![0u8; size];
    // Across objects 0-2, with partial objects at both ends.
    let (start, len) = (MIB + 512, 9 * MIB);
    a[start..start + len].copy_from_slice(&pattern(len, 1));
    write_at(cluster, "sv", start, &a[start..start + len]);
    ok(cli(cluster, &["snap", "create", "sv@s1"]));

    unsafe {
        libc::kill(cluster.node_pids[2], libc::SIGKILL);
    }
    let mut b = a.clone();
    let (b_start, b_len) = (2 * MIB, 6 * MIB + 4096);
    b[b_start..b_start + b_len].copy_from_slice(&pattern(b_len, 2));
    write_at(cluster, "sv", b_start, &b[b_start..b_start + b_len]);
    assert!(
        export(cluster, "sv@s1") == a,
        "the snapshot reads pattern A"
    );
    assert!(export(cluster, "sv") == b, "the volume reads pattern B");

    restart_node(cluster, 3);
    ok(cli(cluster, &["snap", "create", "sv@s2"]));
    let rollback = cli(cluster, &["snap", "rollback", "sv@s1"]);
    let progress = String::from_utf8_lossy(&rollback.stderr).to_string();
    ok(rollback);
    assert!(progress.contains("(100%)"), "rollback progress: {progress}");
    assert!(
        export(cluster, "sv") == a,
        "after rollback the volume reads A"
    );
    assert!(export(cluster, "sv@s2") == b, "s2 still reads B");
    assert!(export(cluster, "sv@s1") == a, "s1 still reads A");
    a
}

/// A snapshot exported over iSCSI reads its bytes on every portal and
/// refuses writes with DATA PROTECT; it cannot be removed while exported.
fn snapshot_over_iscsi(cluster: &DevCluster, a: &[u8]) {
    let out = ok(cli(cluster, &["volume", "export-iscsi", "sv@s1"]));
    let target = "iqn.2026-11.io.hpchain:sv:s1";
    assert!(out.contains(target) && out.contains("read-only"), "{out}");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let portal = cluster.portal(2);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut initiator = loop {
            match Initiator::login(&portal, target, "iqn.2026-11.test:snap", None).await {
                Ok(i) => break i,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("login to {target} via {portal}: {e}"),
            }
        };
        let lba = (MIB / 512) as u64;
        let back = initiator.read(lba, 2048, 512).await.unwrap();
        assert!(
            back == a[MIB..2 * MIB],
            "the snapshot reads pattern A over iSCSI"
        );
        let refused = initiator.write(lba, &[0u8; 512], 512).await.unwrap_err();
        assert!(refused.contains("(7,"), "DATA PROTECT: {refused}");
        initiator.logout().await.unwrap();
    });
    let e = failed(cli(cluster, &["snap", "rm", "sv@s1"]));
    assert!(
        e.contains("exported") && e.contains("unexport-iscsi"),
        "{e}"
    );
    ok(cli(cluster, &["volume", "unexport-iscsi", "sv@s1"]));
}

#[test]
fn snapshots_clones_flatten_and_qos_on_a_three_node_cluster() {
    let mut cluster = start(2, 3);
    let a = snapshot_sequence(&mut cluster);
    snapshot_over_iscsi(&cluster, &a);

    // Space: s1 holds pattern A's 9 MiB (4 KiB blocks), counted once.
    let snaps = json(cli(&cluster, &["--json", "snap", "ls", "sv", "--usage"]));
    let s1 = snaps
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "s1")
        .unwrap();
    let held = s1["allocated_bytes"].as_u64().unwrap();
    assert!(
        (9 * MIB as u64..=9 * MIB as u64 + 8192).contains(&held),
        "s1 holds {held} bytes: {s1}"
    );

    // Refusals name the object and the fix, and change nothing.
    let e = failed(cli(&cluster, &["snap", "create", "sv@s1"]));
    assert!(e.contains("sv@s1 already exists"), "{e}");
    let e = failed(cli(&cluster, &["volume", "rm", "sv"]));
    assert!(e.contains("snapshot") && e.contains("snap rm"), "{e}");
    let e = failed(cli(&cluster, &["snap", "rm", "sv@nope"]));
    assert!(e.contains("does not exist"), "{e}");
    ok(cli(&cluster, &["snap", "protect", "sv@s1"]));
    let e = failed(cli(&cluster, &["snap", "rm", "sv@s1"]));
    assert!(e.contains("protected") && e.contains("unprotect"), "{e}");
    let e = failed(cli(&cluster, &["volume", "resize", "sv", "--size", "8M"]));
    assert!(e.contains("--allow-shrink"), "{e}");

    // Clone of a clone of a clone; each level writes its own bytes.
    ok(cli(&cluster, &["volume", "clone", "sv@s1", "c1"]));
    let mut c1 = a.clone();
    let c1_part = pattern(MIB, 11);
    c1[5 * MIB..6 * MIB].copy_from_slice(&c1_part);
    write_at(&cluster, "c1", 5 * MIB, &c1_part);
    ok(cli(&cluster, &["snap", "create", "c1@t1"]));
    ok(cli(&cluster, &["volume", "clone", "c1@t1", "c2"]));
    let mut c2 = c1.clone();
    let c2_part = pattern(4096, 22);
    c2[8191..8191 + 4096].copy_from_slice(&c2_part);
    write_at(&cluster, "c2", 8191, &c2_part);
    ok(cli(&cluster, &["snap", "create", "c2@u1"]));
    ok(cli(&cluster, &["volume", "clone", "c2@u1", "c3"]));
    let mut c3 = c2.clone();
    let c3_part = pattern(3 * MIB, 33);
    c3[12 * MIB..15 * MIB].copy_from_slice(&c3_part);
    write_at(&cluster, "c3", 12 * MIB, &c3_part);
    // A write to c1 after its snapshot does not reach c2 or c3.
    write_at(&cluster, "c1", 0, &pattern(4096, 44));
    c1[..4096].copy_from_slice(&pattern(4096, 44));
    assert!(export(&cluster, "c1") == c1, "c1 reads its own bytes");
    assert!(
        export(&cluster, "c2") == c2,
        "c2 reads through c1@t1 and sv@s1"
    );
    assert!(
        export(&cluster, "c3") == c3,
        "c3 reads through three levels"
    );
    let children = ok(cli(&cluster, &["volume", "children", "c1@t1"]));
    assert_eq!(children.trim(), "c2");
    let e = failed(cli(&cluster, &["snap", "rm", "c2@u1"]));
    assert!(e.contains("clones (c3)") && e.contains("flatten"), "{e}");

    // Flatten the chain from the bottom, then delete every parent.
    let flatten = cli(&cluster, &["volume", "flatten", "c3"]);
    let progress = String::from_utf8_lossy(&flatten.stderr).to_string();
    ok(flatten);
    assert!(progress.contains("objects (100%)"), "{progress}");
    let info = json(cli(&cluster, &["--json", "volume", "info", "c3"]));
    assert!(info["parent"].is_null(), "c3 is no longer a clone: {info}");
    ok(cli(&cluster, &["snap", "rm", "c2@u1"]));
    ok(cli(&cluster, &["volume", "rm", "c2"]));
    ok(cli(&cluster, &["snap", "rm", "c1@t1"]));
    ok(cli(&cluster, &["volume", "rm", "c1"]));
    ok(cli(&cluster, &["snap", "unprotect", "sv@s1"]));
    ok(cli(&cluster, &["snap", "rm", "sv@s1"]));
    ok(cli(&cluster, &["snap", "rm", "sv@s2"]));
    ok(cli(&cluster, &["volume", "rm", "sv"]));
    assert!(
        export(&cluster, "c3") == c3,
        "c3 unchanged after its parents are gone"
    );

    // Flattening a clone of empty space copies nothing and allocates
    // nothing (the parent's holes are holes in the clone too).
    ok(cli(
        &cluster,
        &[
            "volume", "create", "hollow", "--pool", "rbd", "--size", "64M",
        ],
    ));
    ok(cli(&cluster, &["snap", "create", "hollow@h1"]));
    ok(cli(
        &cluster,
        &["volume", "clone", "hollow@h1", "hollow-copy"],
    ));
    ok(cli(&cluster, &["volume", "flatten", "hollow-copy"]));
    let flat = json(cli(&cluster, &["--json", "volume", "info", "hollow-copy"]));
    assert!(flat["parent"].is_null(), "{flat}");
    assert_eq!(flat["allocated_bytes_all_replicas"], 0, "{flat}");
    ok(cli(&cluster, &["volume", "rm", "hollow-copy"]));

    // Shrink discards the tail: grown back, it reads zeroes, while a
    // snapshot taken before still has it.
    ok(cli(&cluster, &["snap", "create", "c3@before-shrink"]));
    ok(cli(
        &cluster,
        &["volume", "resize", "c3", "--size", "13M", "--allow-shrink"],
    ));
    ok(cli(&cluster, &["volume", "resize", "c3", "--size", "16M"]));
    let mut shrunk = c3.clone();
    shrunk[13 * MIB..].fill(0);
    assert!(export(&cluster, "c3") == shrunk, "the tail reads zeroes");
    assert!(
        export(&cluster, "c3@before-shrink") == c3,
        "the snapshot kept it"
    );

    qos(&cluster);
    bench_once(&cluster);
}

/// `volume bench --once` writes every block of the volume exactly once (the
/// last one short when the block size does not divide the volume), with
/// data that is not a pattern, then stops well before its time limit; a
/// pass that runs out of time is an error, not a short report.
fn bench_once(cluster: &DevCluster) {
    ok(cli(
        cluster,
        &[
            "volume", "create", "filled", "--pool", "rbd", "--size", "16M",
        ],
    ));
    let report = json(cli(
        cluster,
        &[
            "--json",
            "volume",
            "bench",
            "filled",
            "--pattern",
            "write",
            "--block-size",
            "3M",
            "--queue-depth",
            "3",
            "--seconds",
            "60",
            "--once",
        ],
    ));
    assert_eq!(
        report["ios"], 6,
        "five 3 MiB writes and a 1 MiB one: {report}"
    );
    let rate = report["bytes_per_second"].as_f64().unwrap() * report["seconds"].as_f64().unwrap();
    assert!(
        (rate - (16 * MIB) as f64).abs() < 1.0,
        "16 MiB counted: {report}"
    );
    assert!(report["seconds"].as_f64().unwrap() < 30.0, "{report}");
    let data = export(cluster, "filled");
    assert_eq!(data.len(), 16 * MIB);
    for (i, block) in data.chunks(4096).enumerate() {
        assert!(block.iter().any(|&b| b != 0), "block {i} was not written");
        // Random data: no 16-byte run repeats inside a block.
        let runs: std::collections::HashSet<&[u8]> = block.chunks(16).collect();
        assert_eq!(runs.len(), 256, "block {i} repeats itself");
    }
    let cut_short = cli(
        cluster,
        &[
            "volume",
            "bench",
            "filled",
            "--pattern",
            "write",
            "--block-size",
            "512",
            "--queue-depth",
            "1",
            "--seconds",
            "1",
            "--once",
        ],
    );
    let said = failed(cut_short);
    assert!(
        said.contains("of 32768 blocks") && said.contains("--seconds"),
        "{said}"
    );
    let refused = cli(
        cluster,
        &[
            "volume",
            "bench",
            "filled",
            "--pattern",
            "randwrite",
            "--seconds",
            "1",
            "--once",
        ],
    );
    let said = failed(refused);
    assert!(said.contains("use pattern write or read"), "{said}");
}

fn bench(cluster: &DevCluster, volume: &str, seconds: u64) -> std::process::Child {
    Command::new(HPCHAIN)
        .args(["--api", &cluster.api(1), "--token-file"])
        .arg(&cluster.token_file)
        .args([
            "--json",
            "volume",
            "bench",
            volume,
            "--pattern",
            "randread",
            "--queue-depth",
            "32",
            "--seconds",
            &seconds.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn iops(child: std::process::Child) -> f64 {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "bench: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    report["iops"].as_f64().unwrap()
}

/// A volume limited to 200 IOPS serves 200 +/- 10% under a load that could
/// do far more, while an unlimited volume beside it keeps most of its
/// rate; a live change of the limit takes effect within a second.
fn qos(cluster: &DevCluster) {
    for v in ["limited", "free"] {
        ok(cli(
            cluster,
            &["volume", "create", v, "--pool", "rbd", "--size", "64M"],
        ));
        write_at(cluster, v, 0, &pattern(8 * MIB, 7));
    }
    // The pool's capacity: every node's disks over the replica count.
    let pool = json(cli(cluster, &["--json", "pool", "info", "rbd"]));
    let capacity = &pool["capacity"];
    let usable = capacity["bytes"].as_u64().unwrap();
    let available = capacity["available_bytes"].as_u64().unwrap();
    assert!(
        usable > 0 && available > 0 && available <= usable,
        "{capacity}"
    );
    assert_eq!(capacity["raw_bytes"].as_u64().unwrap() / 3, usable);
    assert!(capacity["provisioned_bytes"].as_u64().unwrap() >= 128 << 20);
    assert_eq!(capacity["nodes_missing"], serde_json::json!([]));

    // Limits set at creation, and refused when inconsistent.
    ok(cli(
        cluster,
        &[
            "volume",
            "create",
            "born-limited",
            "--pool",
            "rbd",
            "--size",
            "1G",
            "--iops",
            "300:600:5",
            "--write-bps",
            "20M",
        ],
    ));
    let shown = json(cli(cluster, &["--json", "volume", "info", "born-limited"]));
    assert_eq!(
        shown["qos"]["effective"]["total_iops"]["burst"], 600,
        "{shown}"
    );
    assert_eq!(shown["qos"]["effective"]["write_bps"]["rate"], 20 << 20);
    let e = failed(cli(
        cluster,
        &["volume", "qos", "born-limited", "--iops", "300:100"],
    ));
    assert!(e.contains("total_iops") && e.contains("burst"), "{e}");
    let alone = iops(bench(cluster, "free", 4));
    assert!(alone > 1000.0, "the unlimited load reaches {alone} IOPS");
    ok(cli(cluster, &["volume", "qos", "limited", "--iops", "200"]));
    let shown = ok(cli(cluster, &["volume", "info", "limited"]));
    assert!(shown.contains("total_iops 200/s"), "{shown}");
    let limited = bench(cluster, "limited", 5);
    let beside = bench(cluster, "free", 5);
    let (limited, beside) = (iops(limited), iops(beside));
    eprintln!("qos: unlimited alone {alone:.0} IOPS; limited to 200: {limited:.0}, unlimited beside it {beside:.0}");
    assert!(
        (180.0..=220.0).contains(&limited),
        "limited to 200 IOPS, served {limited}"
    );
    assert!(
        beside > alone * 0.6,
        "the unlimited volume kept {beside} of {alone} IOPS"
    );

    // 100 IOPS for 1 s, then 2,000 for 2 s: ~4,100 I/Os if the change
    // applies at once, at most ~2,200 if it took a second or more.
    ok(cli(cluster, &["volume", "qos", "limited", "--iops", "100"]));
    let started = Instant::now();
    let run = bench(cluster, "limited", 3);
    std::thread::sleep(Duration::from_millis(1000));
    ok(cli(
        cluster,
        &["volume", "qos", "limited", "--iops", "2000"],
    ));
    let changed_after = started.elapsed();
    let done = iops(run) * 3.0;
    eprintln!("qos: {done:.0} I/Os in 3 s, limit raised from 100 to 2000 after {changed_after:?}");
    assert!(
        done > 2600.0,
        "{done:.0} I/Os in 3 s with the limit raised after {changed_after:?}"
    );
    let metrics = support::http_get(&format!("{}/metrics", cluster.api(1)));
    let throttled = wait_for("throttle metrics", Duration::from_secs(5), || {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("hpchain_volume_qos_throttled_seconds_total{volume=\"limited\"")
            })
            .map(str::to_string)
    });
    let seconds: f64 = throttled.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(seconds > 1.0, "{throttled}");
}
