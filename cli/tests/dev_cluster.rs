//! End to end: `hpchain dev` starts three real `hpchain node` processes on
//! loopback; the admin CLI manages pools and volumes through the API; the
//! cluster map survives kill -9 of a node; SIGTERM stops every process.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

#[test]
fn dev_cluster_manages_volumes_survives_a_killed_node_and_stops_cleanly() {
    let mut cluster = start(0, 3);

    // What `hpchain dev` promised exists.
    let pools = json(cli(&cluster, &["--json", "pool", "ls"]));
    assert_eq!(pools[0]["name"], "rbd");
    assert_eq!(pools[0]["size"], 3);
    assert_eq!(pools[0]["failure_domain"], "disk");
    let demo = json(cli(&cluster, &["--json", "volume", "info", "demo"]));
    assert_eq!(demo["size_bytes"], 1u64 << 30);
    let status = json(cli(&cluster, &["--json", "cluster", "status"]));
    assert_eq!(status["nodes"].as_array().unwrap().len(), 3);
    assert!(
        status["pgs"].get("inactive").is_none(),
        "ready means every placement group has a leader: {status}"
    );

    // Prometheus metrics, without a token.
    let metrics = http_get(&format!("{}/metrics", cluster.api(1)));
    assert!(
        metrics.contains("# TYPE hpchain_raft_is_leader gauge"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hpchain_raft_applied_index{node=\"1\",group=\"0\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hpchain_map_epoch{node=\"1\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hpchain_pg_led{node=\"1\",state=\"active+clean\"}"),
        "{metrics}"
    );

    // Bad input: clear errors, nothing created.
    let duplicate = cli(
        &cluster,
        &["volume", "create", "demo", "--pool", "rbd", "--size", "1G"],
    );
    assert!(!duplicate.status.success());
    let message = String::from_utf8_lossy(&duplicate.stderr);
    assert!(
        message.contains("\"demo\" already exists") && message.contains("volume.exists"),
        "{message}"
    );
    let unaligned = cli(
        &cluster,
        &["volume", "create", "odd", "--pool", "rbd", "--size", "1000"],
    );
    assert!(String::from_utf8_lossy(&unaligned.stderr).contains("multiple of 512"));
    let shrink = cli(&cluster, &["volume", "resize", "demo", "--size", "1M"]);
    assert!(String::from_utf8_lossy(&shrink.stderr).contains("volume.shrink"));
    let no_token = cli_with(
        &cluster.api(1),
        Path::new("/nonexistent"),
        &["volume", "ls"],
    );
    assert!(String::from_utf8_lossy(&no_token.stderr).contains("auth.missing_token"));
    let volumes = json(cli(&cluster, &["--json", "volume", "ls"]));
    assert_eq!(
        volumes.as_array().unwrap().len(),
        1,
        "refused commands created nothing"
    );

    // The HP chain holds a final audit record of `demo`'s creation, on
    // every node's copy, and the ledger verifies.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let records = json(cli_at(
            &cluster,
            2,
            &["--json", "chain", "audit", "volume/demo"],
        ));
        if let Some(record) = records.as_array().and_then(|r| r.first()) {
            assert_eq!(record["payload"]["action"], "volume.create");
            assert_eq!(record["payload"]["result"], "ok");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no final audit record of volume/demo"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    ok(cli(&cluster, &["chain", "verify"]));

    // Traceability: a farm batch, then a processed batch made from it.
    ok(cli(
        &cluster,
        &[
            "trace",
            "add",
            "--batch",
            "milk-1",
            "--stage",
            "farm",
            "--actor",
            "farm-a",
            "--place",
            "Parma",
            "--reading",
            "temperature=3.5C",
        ],
    ));
    ok(cli(
        &cluster,
        &[
            "trace",
            "add",
            "--batch",
            "cheese-1",
            "--stage",
            "processing",
            "--actor",
            "dairy-b",
            "--place",
            "Reggio",
            "--input",
            "milk-1",
        ],
    ));
    let bad_reading = cli(
        &cluster,
        &[
            "trace",
            "add",
            "--batch",
            "x",
            "--stage",
            "farm",
            "--actor",
            "a",
            "--place",
            "p",
            "--reading",
            "temperature",
        ],
    );
    assert!(String::from_utf8_lossy(&bad_reading.stderr).contains("request.bad_reading"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let history = json(cli(&cluster, &["--json", "trace", "show", "milk-1"]));
        if history["downstream"]
            .as_array()
            .is_some_and(|d| d.iter().any(|b| b == "cheese-1"))
        {
            assert_eq!(
                history["events"][0]["event"]["readings"][0]["value_milli"],
                3500
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "trace never became final: {history}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // kill -9 a node that is not the one we talk to: the map keeps working.
    let victim = cluster.node_pids[2];
    unsafe {
        libc::kill(victim, libc::SIGKILL);
    }
    let started = Instant::now();
    ok(cli(
        &cluster,
        &[
            "volume",
            "create",
            "after-kill",
            "--pool",
            "rbd",
            "--size",
            "10G",
        ],
    ));
    ok(cli(
        &cluster,
        &["volume", "resize", "after-kill", "--size", "20G"],
    ));
    let grown = json(cli(&cluster, &["--json", "volume", "info", "after-kill"]));
    assert_eq!(grown["size_bytes"], 20u64 << 30);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );

    // SIGTERM to `hpchain dev` stops every node it started.
    unsafe {
        libc::kill(cluster.child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while cluster.child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "hpchain dev did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for &pid in &cluster.node_pids {
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!alive(pid), "node pid {pid} outlived hpchain dev");
    }
}

/// A file of `len` pseudo-random bytes (xorshift: no dependency, not zero).
fn random_file(path: &Path, len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut data = Vec::with_capacity(len);
    while data.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(len);
    std::fs::write(path, &data).unwrap();
    data
}

#[test]
fn import_completes_through_a_node_killed_midway_and_exports_identical_bytes() {
    let mut cluster = start(1, 3);
    const SIZE: usize = 256 << 20;
    let input = cluster.dir.path().join("input.bin");
    let data = random_file(&input, SIZE, 0x5eed);

    // Import through node 1's API; kill -9 node 3 while it runs.
    let mut import = Command::new(HPCHAIN)
        .args(["--api", &cluster.api(1), "--token-file"])
        .arg(&cluster.token_file)
        .args(["volume", "import"])
        .arg(&input)
        .arg("demo")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        import.try_wait().unwrap().is_none(),
        "import finished before the kill; grow SIZE"
    );
    unsafe {
        libc::kill(cluster.node_pids[2], libc::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(240);
    let status = loop {
        if let Some(status) = import.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "import did not finish");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut progress = String::new();
    std::io::Read::read_to_string(&mut import.stderr.take().unwrap(), &mut progress).unwrap();
    assert!(
        status.success(),
        "import failed after a node was killed: {progress}"
    );
    assert!(
        progress.contains("(100%)"),
        "progress was shown: {progress}"
    );

    // With node 3 down, every placement group serves I/O, degraded; once
    // it restarts and catches up from the logs, every group is clean.
    let pg_count = |status: &serde_json::Value, state: &str| status["pgs"][state].as_u64();
    let status = wait_for("node 3 seen down", Duration::from_secs(30), || {
        let s = json(cli(&cluster, &["--json", "cluster", "status"]));
        (pg_count(&s, "active+degraded") == Some(32)).then_some(s)
    });
    assert_eq!(status["nodes"][2]["up"], false, "{status}");
    restart_node(&mut cluster, 3);
    wait_for(
        "every placement group clean",
        Duration::from_secs(60),
        || {
            let s = json(cli(&cluster, &["--json", "cluster", "status"]));
            (pg_count(&s, "active+clean") == Some(32)).then_some(())
        },
    );
    let pgs = json(cli(&cluster, &["--json", "pg", "ls", "--pool", "rbd"]));
    for pg in pgs["pgs"].as_array().unwrap() {
        let replicas = pg["replicas"].as_array().unwrap();
        assert_eq!(replicas.len(), 3, "{pg}");
        assert!(replicas.iter().all(|r| r["up"] == true), "{pg}");
        assert_eq!(
            replicas.iter().filter(|r| r["leader"] == true).count(),
            1,
            "{pg}"
        );
    }

    let output = cluster.dir.path().join("output.bin");
    ok(cli(
        &cluster,
        &["volume", "export", "demo", output.to_str().unwrap()],
    ));
    let exported = std::fs::read(&output).unwrap();
    assert_eq!(exported.len(), 1 << 30, "the whole volume was exported");
    assert!(
        exported[..SIZE] == data[..],
        "exported bytes differ from the imported file"
    );
    assert!(
        exported[SIZE..].iter().all(|&b| b == 0),
        "the unwritten tail reads as zeroes"
    );

    // Every replica holds the imported bytes, and no more.
    let info = json(cli(&cluster, &["--json", "volume", "info", "demo"]));
    let allocated = info["allocated_bytes"].as_u64().unwrap();
    assert!(
        (SIZE as u64..=SIZE as u64 + (8 << 20)).contains(&allocated),
        "demo allocates {allocated}"
    );

    // Thin provisioning: 1 MiB written into a 10 GiB volume allocates about
    // 1 MiB per replica; discarding it gives the space back.
    ok(cli(
        &cluster,
        &["volume", "create", "thin", "--pool", "rbd", "--size", "10G"],
    ));
    let small = cluster.dir.path().join("small.bin");
    random_file(&small, 1 << 20, 7);
    ok(cli(
        &cluster,
        &["volume", "import", small.to_str().unwrap(), "thin"],
    ));
    // A write is acknowledged once a majority has it: the third replica
    // may apply it a moment later (node 3 may still be catching up).
    let info = volume_info_when(&cluster, "every replica of thin applied the write", |i| {
        i["allocated_bytes_all_replicas"].as_u64() >= Some(3 << 20)
    });
    let allocated = info["allocated_bytes"].as_u64().unwrap();
    assert!(
        (1 << 20..=(1 << 20) + (256 << 10)).contains(&allocated),
        "thin allocates {allocated}: {info}"
    );
    assert_eq!(
        info["allocated_bytes_all_replicas"].as_u64().unwrap(),
        3 * allocated,
        "three replicas, node 3 back: {info}"
    );
    ok(cli(
        &cluster,
        &["volume", "discard", "thin", "--length", "1M"],
    ));
    let info = volume_info_when(&cluster, "every replica of thin applied the discard", |i| {
        i["allocated_bytes"].as_u64() <= Some(64 << 10)
    });
    assert!(
        info["allocated_bytes"].as_u64().unwrap() <= 64 << 10,
        "discard left {info}"
    );

    // Bad ranges are refused with the volume named; nothing is written.
    let past_end = Command::new(HPCHAIN)
        .args(["--api", &cluster.api(1), "--token-file"])
        .arg(&cluster.token_file)
        .args(["volume", "import"])
        .arg(&output)
        .arg("after")
        .output()
        .unwrap();
    assert!(!past_end.status.success());
}

/// `volume info` of the volume `thin` once `settled` holds for it.
fn volume_info_when(
    cluster: &DevCluster,
    what: &str,
    settled: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    wait_for(what, Duration::from_secs(20), || {
        Some(json(cli(cluster, &["--json", "volume", "info", "thin"]))).filter(|i| settled(i))
    })
}
