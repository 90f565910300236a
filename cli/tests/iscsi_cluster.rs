//! End to end over iSCSI: real initiators (libiscsi's tools) against the
//! `demo` volume of a real `hpchain dev` cluster, through every node's
//! portal; exports with CHAP and ACLs managed by the CLI; a resize seen by
//! the initiator; I/O through one portal after another node is killed.

mod support;

use hpchain_iscsi::initiator::Initiator;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::{cli, http_get, json, ok, start};

const DEMO: &str = "iqn.2026-11.io.hpchain:demo";

/// Runs a libiscsi tool, killed after `limit`.
fn tool(args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e}; install libiscsi-bin (scripts/setup.sh does)",
                args[0]
            )
        });
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{} ran longer than {limit:?}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `check` until it holds or `limit` passes (portals follow the map
/// within a second).
fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + limit;
    loop {
        match check() {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!("{what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// A few of libiscsi's conformance tests, against the replicated volume.
fn conformance_tests(url: &str) {
    let out = tool(
        &[
            "iscsi-test-cu",
            "--dataloss",
            "--silent",
            "--test=SCSI.TestUnitReady.Simple,SCSI.ReadCapacity16.Simple,SCSI.Write16.Simple,SCSI.Read16.Simple,SCSI.CompareAndWrite.Simple,SCSI.Unmap.Simple,SCSI.GetLBAStatus.Simple",
            url,
        ],
        Duration::from_secs(300),
    );
    let report = text(&out);
    let tests = report
        .lines()
        .find(|l| l.trim_start().starts_with("tests"))
        .unwrap_or_else(|| panic!("no summary:\n{report}"));
    let numbers: Vec<u32> = tests
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(numbers[0], 7, "{tests}");
    assert_eq!(numbers[2], 7, "not all passed:\n{report}");
}

#[test]
fn initiators_use_exported_volumes_through_every_nodes_portal() {
    let cluster = start(0, 3);
    let portals: Vec<String> = (1..=3).map(|n| cluster.portal(n)).collect();
    let url = |portal: &str, credentials: &str, volume: &str| {
        format!("iscsi://{credentials}{portal}/iqn.2026-11.io.hpchain:{volume}/0")
    };

    // `hpchain dev` exported demo; the API lists a URL per node.
    let export = json(cli(&cluster, &["--json", "volume", "iscsi", "demo"]));
    assert_eq!(export[0]["target"], DEMO);
    assert_eq!(export[0]["urls"].as_array().unwrap().len(), 3, "{export}");

    // Discovery through one node lists every node's portal (multipath).
    eventually(Duration::from_secs(10), "discovery", || {
        let out = tool(
            &["iscsi-ls", "-s", &format!("iscsi://{}/", portals[1])],
            Duration::from_secs(20),
        );
        let listing = text(&out);
        for portal in &portals {
            if !listing.contains(&format!("Target:{DEMO} Portal:{portal},1")) {
                return Err(listing);
            }
        }
        Ok(())
    });

    // The same WWN from every node.
    let wwn = |portal: &str| {
        let out = tool(
            &[
                "iscsi-inq",
                "-e",
                "1",
                "-c",
                "131",
                &url(portal, "", "demo"),
            ],
            Duration::from_secs(20),
        );
        assert!(out.status.success(), "{}", text(&out));
        text(&out)
    };
    let first = wwn(&portals[0]);
    assert!(first.contains("NAA"), "{first}");
    assert_eq!(
        first,
        wwn(&portals[2]),
        "node 1 and node 3 disagree on the WWN"
    );

    // Data written through node 1's portal reads back identical through
    // node 3's: it went into the replicated volume, not a node's cache.
    let written = round_trip(&portals[0], &portals[2], 1000, 2 << 20, 1);
    conformance_tests(&url(&portals[0], "", "demo"));

    // A resize reaches the initiator.
    ok(cli(&cluster, &["volume", "resize", "demo", "--size", "2G"]));
    eventually(Duration::from_secs(10), "the new capacity", || {
        let out = tool(
            &["iscsi-readcapacity16", &url(&portals[2], "", "demo")],
            Duration::from_secs(20),
        );
        let capacity = text(&out);
        capacity
            .contains("Total size:2147483648")
            .then_some(())
            .ok_or(capacity)
    });

    // QEMU's iSCSI driver: an image converted into a volume through node
    // 1's portal compares identical through node 2's.
    qemu_round_trip(&cluster, &portals);

    // An export with CHAP and an allow list, managed by the CLI.
    ok(cli(
        &cluster,
        &[
            "volume", "create", "secure", "--pool", "rbd", "--size", "64M",
        ],
    ));
    let short = cli(
        &cluster,
        &[
            "volume",
            "export-iscsi",
            "secure",
            "--chap-user",
            "alice",
            "--chap-secret",
            "short",
        ],
    );
    assert!(!short.status.success());
    let message = String::from_utf8_lossy(&short.stderr);
    assert!(
        message.contains("12 to 255 characters") && message.contains("secure"),
        "{message}"
    );
    let shown = ok(cli(
        &cluster,
        &[
            "--json",
            "volume",
            "export-iscsi",
            "secure",
            "--chap-user",
            "alice",
            "--chap-secret",
            "alice-secret-16b",
            "--allow",
            "iqn.2026-11.test:host1",
        ],
    ));
    assert!(shown.contains("\"chap_user\": \"alice\""), "{shown}");
    assert!(
        !shown.contains("alice-secret-16b"),
        "the API returned the secret: {shown}"
    );
    let inq = |credentials: &str, initiator: &str| {
        tool(
            &[
                "iscsi-inq",
                "-i",
                initiator,
                &url(&portals[1], credentials, "secure"),
            ],
            Duration::from_secs(20),
        )
    };
    eventually(Duration::from_secs(10), "the CHAP login", || {
        let out = inq("alice%alice-secret-16b@", "iqn.2026-11.test:host1");
        out.status.success().then_some(()).ok_or(text(&out))
    });
    assert!(
        !inq("", "iqn.2026-11.test:host1").status.success(),
        "no CHAP, yet logged in"
    );
    assert!(
        !inq("alice%alice-secret-16b@", "iqn.2026-11.test:intruder")
            .status
            .success(),
        "an initiator outside the allow list logged in"
    );

    // An exported volume cannot be deleted; unexported, it can.
    let refused = cli(&cluster, &["volume", "rm", "secure"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("unexport it first"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    ok(cli(&cluster, &["volume", "unexport-iscsi", "secure"]));
    eventually(
        Duration::from_secs(10),
        "the target gone from discovery",
        || {
            let out = tool(
                &["iscsi-ls", &format!("iscsi://{}/", portals[2])],
                Duration::from_secs(20),
            );
            let listing = text(&out);
            (!listing.contains("secure")).then_some(()).ok_or(listing)
        },
    );
    ok(cli(&cluster, &["volume", "rm", "secure"]));

    // Export changes are audited on the HP chain like every map change.
    // (Records reach a block within a slot or two.)
    eventually(
        Duration::from_secs(30),
        "the export's audit records",
        || {
            let actions: Vec<String> = json(cli(
                &cluster,
                &["--json", "audit", "ls", "--volume", "secure"],
            ))
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["action"].as_str().unwrap_or("").to_string())
            .collect();
            for action in [
                "volume.create",
                "volume.export",
                "volume.unexport",
                "volume.delete",
            ] {
                if !actions.iter().any(|a| a == action) {
                    return Err(format!("{action} missing from {actions:?}"));
                }
            }
            Ok(())
        },
    );

    // The portal's counters are in the node's /metrics.
    let metrics = http_get(&format!("{}/metrics", cluster.api(1)));
    let logins = metrics
        .lines()
        .find(|l| l.starts_with("hpchain_iscsi_logins_total{node=\"1\"}"))
        .unwrap_or_else(|| panic!("no iSCSI login counter:\n{metrics}"));
    assert_ne!(logins.split_whitespace().last(), Some("0"), "{logins}");
    assert!(
        metrics.contains(&format!(
            "hpchain_iscsi_sessions{{node=\"1\",target=\"{DEMO}\"}}"
        )),
        "{metrics}"
    );

    // kill -9 of node 3: node 1's portal keeps serving reads and writes
    // once the placement groups node 3 led have elected new leaders.
    unsafe {
        libc::kill(cluster.node_pids[2], libc::SIGKILL);
    }
    let survivor = &portals[1];
    let runtime = runtime();
    let before = runtime.block_on(async {
        let mut initiator = Initiator::login(survivor, DEMO, "iqn.2026-11.test:after", None)
            .await
            .unwrap();
        initiator
            .read(1000, (written.len() / 512) as u32, 512)
            .await
            .unwrap()
    });
    assert!(
        before == written,
        "acknowledged data changed after kill -9 of node 3"
    );
    round_trip(&portals[0], survivor, 9000, 1 << 20, 2);
}

/// qemu-img with the iscsi:// driver: Debian 12's, unpacked by
/// scripts/setup.sh (the machine's newer qemu-img lacks the driver).
fn qemu_img() -> (String, String) {
    let home = std::env::var("HOME").unwrap_or_default();
    let dir = format!("{home}/.cache/hpchain-qemu");
    let img = std::env::var("HPCHAIN_QEMU_IMG").unwrap_or(format!("{dir}/usr/bin/qemu-img"));
    let modules =
        std::env::var("QEMU_MODULE_DIR").unwrap_or(format!("{dir}/usr/lib/x86_64-linux-gnu/qemu"));
    assert!(
        std::path::Path::new(&img).exists(),
        "{img} is missing: run scripts/setup.sh, which unpacks qemu-img with the iSCSI driver"
    );
    (img, modules)
}

fn qemu_round_trip(cluster: &support::DevCluster, portals: &[String]) {
    ok(cli(
        cluster,
        &["volume", "create", "qemu", "--pool", "rbd", "--size", "16M"],
    ));
    ok(cli(cluster, &["volume", "export-iscsi", "qemu"]));
    let image = cluster.dir.path().join("disk.raw");
    let mut state = 5u64;
    let bytes: Vec<u8> = (0..16 << 20)
        .map(|i: usize| {
            // Half of it zero, so that qemu-img skips and compares holes too.
            if (i >> 20) % 2 == 1 {
                return 0;
            }
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect();
    std::fs::write(&image, &bytes).unwrap();
    let (img, modules) = qemu_img();
    let qemu = |args: &[&str]| {
        let out = Command::new(&img)
            .args(args)
            .env("QEMU_MODULE_DIR", &modules)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "qemu-img {}: {}",
            args.join(" "),
            text(&out)
        );
        text(&out)
    };
    let target = |portal: &str| format!("iscsi://{portal}/iqn.2026-11.io.hpchain:qemu/0");
    eventually(Duration::from_secs(10), "qemu's target", || {
        let out = Command::new(&img)
            .args(["info", &target(&portals[0])])
            .env("QEMU_MODULE_DIR", &modules)
            .output()
            .unwrap();
        text(&out)
            .contains("16 MiB")
            .then_some(())
            .ok_or(text(&out))
    });
    qemu(&[
        "convert",
        "-n",
        "-f",
        "raw",
        "-O",
        "raw",
        image.to_str().unwrap(),
        &target(&portals[0]),
    ]);
    let compared = qemu(&[
        "compare",
        "-f",
        "raw",
        "-F",
        "raw",
        image.to_str().unwrap(),
        &target(&portals[1]),
    ]);
    assert!(compared.contains("Images are identical"), "{compared}");
    ok(cli(cluster, &["volume", "unexport-iscsi", "qemu"]));
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Writes `len` random bytes at `lba` of demo through `via`, reads them
/// back through `check`, and returns them.
fn round_trip(via: &str, check: &str, lba: u64, len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let data: Vec<u8> = (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect();
    runtime().block_on(async {
        let mut writer = Initiator::login(via, DEMO, "iqn.2026-11.test:writer", None)
            .await
            .unwrap_or_else(|e| panic!("login via {via}: {e}"));
        for (i, chunk) in data.chunks(256 << 10).enumerate() {
            writer
                .write(lba + (i as u64) * 512, chunk, 512)
                .await
                .unwrap_or_else(|e| panic!("write via {via}: {e}"));
        }
        writer.logout().await.unwrap();
        let mut reader = Initiator::login(check, DEMO, "iqn.2026-11.test:reader", None)
            .await
            .unwrap_or_else(|e| panic!("login via {check}: {e}"));
        let back = reader
            .read(lba, (len / 512) as u32, 512)
            .await
            .unwrap_or_else(|e| panic!("read via {check}: {e}"));
        assert!(
            back == data,
            "data written via {via} read back different via {check}"
        );
    });
    data
}
