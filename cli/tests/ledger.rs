//! End to end on the HP chain, with real processes: volume operations on a
//! `hpchain dev` cluster appear in `hpchain audit ls`; a proof fetched with
//! `hpchain chain proof` verifies offline with `chain verify-proof` and
//! fails once a byte of the record is changed; traceability walks flag
//! out-of-range readings. A four-delegate cluster keeps finalizing with one
//! node down, pauses finality with two down, and resumes when one returns.

mod support;

use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

/// Long enough for a record to become final on a loaded 2-core machine
/// (a few one-second slots are the norm).
const FINAL_TIMEOUT: Duration = Duration::from_secs(60);

/// The tests of this file run one at a time: seven node processes at once
/// on a two-core machine would make slot timing, not the ledger, the subject.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn audit_records(cluster: &DevCluster, volume: &str) -> Vec<Value> {
    json(cli(cluster, &["--json", "audit", "ls", "--volume", volume]))
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn volume_operations_are_audited_and_their_proofs_verify_offline_until_tampered() {
    let _serial = serial();
    let cluster = start(0, 3);
    let genesis = cluster.data.join("chain/genesis.json");

    ok(cli(
        &cluster,
        &[
            "volume",
            "create",
            "ledgervol",
            "--pool",
            "rbd",
            "--size",
            "1G",
        ],
    ));
    ok(cli(
        &cluster,
        &["volume", "resize", "ledgervol", "--size", "2G"],
    ));
    ok(cli(&cluster, &["volume", "rm", "ledgervol"]));
    // A refused change is audited too, with its error code.
    failed(cli(&cluster, &["volume", "rm", "ledgervol"]));

    // Each operation is on the chain, in order, and becomes final.
    let records = wait_for(
        "four final audit records of volume/ledgervol",
        FINAL_TIMEOUT,
        || {
            let r = audit_records(&cluster, "ledgervol");
            (r.len() == 4 && r.iter().all(|x| x["final"] == true)).then_some(r)
        },
    );
    let actions: Vec<(&str, &str)> = records
        .iter()
        .map(|r| (r["action"].as_str().unwrap(), r["result"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [
            ("volume.create", "ok"),
            ("volume.resize", "ok"),
            ("volume.delete", "ok"),
            ("volume.delete", "volume.not_found"),
        ]
    );
    for r in &records {
        assert_eq!(r["target"], "volume/ledgervol");
        assert_eq!(r["node"], "node/1", "node 1 committed it: {r}");
        assert!(r["height"].as_u64().unwrap() >= 1, "{r}");
        assert_eq!(r["tx"].as_str().unwrap().len(), 64, "{r}");
        assert!(r["time"].as_str().unwrap().ends_with('Z'), "{r}");
    }
    // Without a filter: the same records among every other target's.
    let all = json(cli(&cluster, &["--json", "audit", "ls"]));
    let all = all.as_array().unwrap();
    for r in &records {
        assert!(all.iter().any(|x| x["tx"] == r["tx"]), "{r} missing");
    }
    assert!(
        all.iter()
            .any(|x| x["target"] == "pool/rbd" && x["action"] == "pool.create"),
        "the dev pool's creation is audited"
    );
    // The table names the columns people need.
    let table = ok(cli(&cluster, &["audit", "ls", "--volume", "ledgervol"]));
    assert!(
        table.contains("volume.resize") && table.contains("final"),
        "{table}"
    );

    // The resize record: its block is listed and shown with it.
    let resize = &records[1];
    let tx = resize["tx"].as_str().unwrap();
    let height = resize["height"].as_u64().unwrap();
    let block = json(cli(
        &cluster,
        &["--json", "chain", "show", &height.to_string()],
    ));
    assert_eq!(block["final"], true);
    assert!(
        block["txs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["tx"] == tx),
        "block {height} holds {tx}: {block}"
    );
    let by_hash = json(cli(
        &cluster,
        &["--json", "chain", "show", block["hash"].as_str().unwrap()],
    ));
    assert_eq!(by_hash["height"], height);
    let listed = json(cli(
        &cluster,
        &[
            "--json",
            "chain",
            "blocks",
            "--from",
            "1",
            "--limit",
            &height.to_string(),
        ],
    ));
    let listed = listed["blocks"].as_array().unwrap();
    assert_eq!(listed.len() as u64, height, "blocks 1..={height}");
    assert_eq!(listed.last().unwrap()["hash"], block["hash"]);
    assert_eq!(listed[0]["height"], 1);
    assert!(listed.iter().all(|b| b["final"] == true));
    let bad = failed(cli(&cluster, &["chain", "show", "nonsense"]));
    assert!(bad.contains("chain.bad_block_id"), "{bad}");

    // The proof verifies offline, with the genesis or the delegate keys.
    let proof_path = cluster.dir.path().join("resize.proof.json");
    let proof_file = proof_path.to_str().unwrap();
    ok(cli(&cluster, &["chain", "proof", tx, "-o", proof_file]));
    let out = ok(offline(&[
        "chain",
        "verify-proof",
        proof_file,
        "--genesis",
        genesis.to_str().unwrap(),
    ]));
    assert!(out.contains("proof OK") && out.contains(tx), "{out}");
    let delegates: Vec<String> = json(cli(&cluster, &["--json", "chain", "status"]))["delegates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect();
    let report = json(offline(&[
        "--json",
        "chain",
        "verify-proof",
        proof_file,
        "--delegates",
        &delegates.join(","),
    ]));
    assert_eq!(report["final"], true);
    assert_eq!(report["confirmed_by"], 3);
    assert_eq!(report["tx"], tx);
    // Keys of another chain are not trusted.
    snapshot_anchor_proves_an_exported_image(&cluster, &genesis);

    let strangers = failed(offline(&[
        "chain",
        "verify-proof",
        proof_file,
        "--delegates",
        &"11".repeat(32),
    ]));
    assert!(strangers.contains("not a trusted delegate"), "{strangers}");

    // Every one of the volume's records has a proof that verifies offline.
    for r in &records {
        let path = cluster.dir.path().join("record.proof.json");
        let file = path.to_str().unwrap();
        let record_tx = r["tx"].as_str().unwrap();
        ok(cli(&cluster, &["chain", "proof", record_tx, "-o", file]));
        let report = json(offline(&[
            "--json",
            "chain",
            "verify-proof",
            file,
            "--genesis",
            genesis.to_str().unwrap(),
        ]));
        assert_eq!(report["tx"], record_tx);
        assert_eq!(report["height"], r["height"]);
        assert_eq!(report["kind"], "audit");
        assert_eq!(report["final"], true, "{r}: {report}");
    }

    // Flip one byte of the record: verification fails and names the field.
    let original = std::fs::read_to_string(&proof_path).unwrap();
    let tampered = original.replacen("\"volume/ledgervol\"", "\"volume/ledgervom\"", 1);
    assert_ne!(tampered, original, "the record's target is in the file");
    std::fs::write(&proof_path, &tampered).unwrap();
    let e = failed(offline(&[
        "chain",
        "verify-proof",
        proof_file,
        "--genesis",
        genesis.to_str().unwrap(),
    ]));
    assert!(
        e.contains("does NOT verify")
            && e.contains("the record does not match its signature")
            && e.contains("payload.target is \"volume/ledgervom\""),
        "{e}"
    );
    // Without the file's own copy of the bytes and id, the cryptographic
    // check alone still refuses it.
    let mut bare: Value = serde_json::from_str(&tampered).unwrap();
    let object = bare.as_object_mut().unwrap();
    object.remove("tx_hex");
    object.remove("tx_hash");
    std::fs::write(&proof_path, bare.to_string()).unwrap();
    let e = failed(offline(&[
        "chain",
        "verify-proof",
        proof_file,
        "--genesis",
        genesis.to_str().unwrap(),
    ]));
    assert!(e.contains("the record does not match its signature"), "{e}");
    // And restored, it verifies again: the failure was the byte.
    std::fs::write(&proof_path, &original).unwrap();
    ok(offline(&[
        "chain",
        "verify-proof",
        proof_file,
        "--genesis",
        genesis.to_str().unwrap(),
    ]));

    // Traceability: upstream and downstream walks, with a cold-chain breach.
    ok(cli(
        &cluster,
        &[
            "trace",
            "add",
            "--batch",
            "milk-9",
            "--stage",
            "farm",
            "--actor",
            "farm-a",
            "--place",
            "Parma",
            "--reading",
            "temperature=7.5C",
        ],
    ));
    ok(cli(
        &cluster,
        &[
            "trace",
            "add",
            "--batch",
            "cheese-9",
            "--stage",
            "processing",
            "--actor",
            "dairy-b",
            "--place",
            "Reggio",
            "--input",
            "milk-9",
            "--reading",
            "temperature=3C",
        ],
    ));
    let down = wait_for("cheese-9 final downstream of milk-9", FINAL_TIMEOUT, || {
        let d = json(cli(
            &cluster,
            &[
                "--json",
                "trace",
                "downstream",
                "milk-9",
                "--range",
                "temperature:0:4:C",
            ],
        ));
        (d["batches"].as_array().unwrap().len() == 2).then_some(d)
    });
    assert_eq!(down["batches"][0]["batch_id"], "milk-9");
    assert_eq!(down["batches"][1]["batch_id"], "cheese-9");
    assert_eq!(down["breaches"], 1, "only 7.5 C is outside 0..4 C: {down}");
    let milk = &down["batches"][0]["events"][0];
    assert_eq!(milk["breaches"][0]["reading"]["value_milli"], 7500);
    assert_eq!(
        down["batches"][1]["events"][0]["breaches"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let up = json(cli(&cluster, &["--json", "trace", "upstream", "cheese-9"]));
    let up_batches: Vec<&str> = up["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["batch_id"].as_str().unwrap())
        .collect();
    assert_eq!(up_batches, ["cheese-9", "milk-9"]);
    assert_eq!(up["breaches"], 0, "no ranges declared, nothing flagged");
    // Each event carries the reference to its proof, which verifies.
    let milk_tx = milk["tx"].as_str().unwrap();
    assert_eq!(milk["proof"], format!("/v1/chain/proof/{milk_tx}"));
    let milk_proof = cluster.dir.path().join("milk.proof.json");
    ok(cli(
        &cluster,
        &[
            "chain",
            "proof",
            milk_tx,
            "-o",
            milk_proof.to_str().unwrap(),
        ],
    ));
    ok(offline(&[
        "chain",
        "verify-proof",
        milk_proof.to_str().unwrap(),
        "--delegates",
        genesis.to_str().unwrap(),
    ]));
    let bad_range = failed(cli(
        &cluster,
        &[
            "trace",
            "downstream",
            "milk-9",
            "--range",
            "temperature:4:0:C",
        ],
    ));
    assert!(bad_range.contains("trace.bad_range"), "{bad_range}");
    let unknown = failed(cli(&cluster, &["chain", "proof", &"ab".repeat(32)]));
    assert!(unknown.contains("chain.tx_not_found"), "{unknown}");
}

fn status(cluster: &DevCluster, node: u16) -> Option<Value> {
    let out = cli_at(cluster, node, &["--json", "chain", "status"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

fn heights(cluster: &DevCluster, node: u16) -> (u64, u64) {
    let s = status(cluster, node).expect("node answers chain status");
    (
        s["head_height"].as_u64().unwrap(),
        s["final_height"].as_u64().unwrap(),
    )
}

fn kill9(pid: i32) {
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn block_hash(cluster: &DevCluster, node: u16, height: u64) -> Option<String> {
    let out = cli_at(
        cluster,
        node,
        &["--json", "chain", "show", &height.to_string()],
    );
    out.status
        .success()
        .then(|| serde_json::from_slice::<Value>(&out.stdout).ok())
        .flatten()
        .and_then(|b| b["hash"].as_str().map(str::to_string))
}

#[test]
fn four_delegates_finalize_with_one_down_pause_with_two_and_resume_when_one_returns() {
    let _serial = serial();
    let mut cluster = start(1, 4);
    let s = status(&cluster, 1).unwrap();
    assert_eq!(s["delegates"].as_array().unwrap().len(), 4);
    assert_eq!(s["finality_threshold"], 3, "3 of 4 is more than two thirds");

    // All four up: blocks become final.
    let (_, f0) = heights(&cluster, 1);
    wait_for("finality with four delegates", FINAL_TIMEOUT, || {
        (heights(&cluster, 1).1 >= f0 + 3).then_some(())
    });

    // One down: 3 of 4 still finalize.
    kill9(cluster.node_pids[3]);
    let (_, f1) = heights(&cluster, 1);
    wait_for("finality with node 4 down", FINAL_TIMEOUT, || {
        (heights(&cluster, 1).1 >= f1 + 4).then_some(())
    });

    // Two down: blocks are still produced (two of four slots), but no new
    // block gathers three delegates. Blocks the dead node confirmed before
    // it died may still finalize; let them settle first.
    kill9(cluster.node_pids[2]);
    std::thread::sleep(Duration::from_secs(5));
    let (h2, f2) = heights(&cluster, 1);
    std::thread::sleep(Duration::from_secs(8));
    let (h3, f3) = heights(&cluster, 1);
    assert!(h3 >= h2 + 2, "production went on: head {h2} -> {h3}");
    assert_eq!(f3, f2, "finality paused with two of four delegates down");
    assert!(h3 > f3 + 2, "head {h3} is ahead of final {f3}");

    // Node 3 returns: it catches up, and finality resumes past the blocks
    // produced while it was away.
    restart_node(&mut cluster, 3);
    let caught_up_to = h3;
    wait_for(
        "finality resumed after node 3 returned",
        FINAL_TIMEOUT,
        || (heights(&cluster, 1).1 > caught_up_to).then_some(()),
    );
    let (_, final_on_3) = wait_for("node 3 caught up", FINAL_TIMEOUT, || {
        status(&cluster, 3)
            .map(|s| {
                (
                    s["head_height"].as_u64().unwrap(),
                    s["final_height"].as_u64().unwrap(),
                )
            })
            .filter(|(_, f)| *f > caught_up_to)
    });
    // Same blocks on both nodes, including those made while node 3 was down.
    for h in [f2, caught_up_to, final_on_3] {
        let on_1 = block_hash(&cluster, 1, h).expect("node 1 has the block");
        let on_3 = block_hash(&cluster, 3, h).expect("node 3 has the block");
        assert_eq!(on_1, on_3, "block {h} differs between nodes 1 and 3");
    }
    ok(cli_at(&cluster, 3, &["chain", "verify"]));
}

/// Flips one byte inside the stored block at `height` of a stopped node's
/// ledger, by opening its RocksDB directly (what an intruder or a bad disk
/// would do behind the node's back).
fn tamper_block(chain_dir: &std::path::Path, height: u64) {
    let names = hpchain_chain::store::ALL_COLUMN_FAMILIES;
    let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), chain_dir, names).unwrap();
    let hash = db
        .get_cf(db.cf_handle("heights").unwrap(), height.to_be_bytes())
        .unwrap()
        .expect("the block is final on this node");
    let cf = db.cf_handle("blocks").unwrap();
    let mut block = db.get_cf(cf, &hash).unwrap().unwrap();
    block[20] ^= 0x40; // inside the header
    db.put_cf(cf, &hash, block).unwrap();
}

/// Blocks of node 1's best chain above `above` produced by `producer`.
fn produced_by(cluster: &DevCluster, producer: &str, above: u64) -> Vec<Value> {
    let answer = json(cli(
        cluster,
        &[
            "--json",
            "chain",
            "blocks",
            "--from",
            &(above + 1).to_string(),
            "--limit",
            "500",
        ],
    ));
    answer["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["producer"] == producer)
        .cloned()
        .collect()
}

#[test]
fn a_tampered_block_is_named_refused_and_repaired_from_peers() {
    let _serial = serial();
    let mut cluster = start(1, 3);
    wait_for("six final blocks", FINAL_TIMEOUT, || {
        (heights(&cluster, 1).1 >= 6).then_some(())
    });
    let key = cluster.data.join("chain").join("delegate-1.key.json");
    let node2 = hpchain_chain::Keypair::load(&key)
        .unwrap()
        .public()
        .to_hex();
    let original = block_hash(&cluster, 2, 3).unwrap();
    kill9(cluster.node_pids[1]);
    tamper_block(&cluster.data.join("node2").join("chain"), 3);

    // Offline, the stopped node's own files name the block.
    let out = Command::new(HPCHAIN)
        .args(["chain", "verify", "--data-dir"])
        .arg(cluster.data.join("node2"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("block 3 fails"), "{stdout}");

    // Restarted with automatic repair off, to see the damage before repair.
    let config = cluster.data.join("node2.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let patched = text.replacen("auto_repair = true", "auto_repair = false", 1);
    assert_ne!(patched, text, "node 2's [chain] section sets auto_repair");
    std::fs::write(&config, patched).unwrap();
    restart_node(&mut cluster, 2);
    let s = wait_for("node 2 reports the damage", FINAL_TIMEOUT, || {
        status(&cluster, 2).filter(|s| s["damaged"]["height"] == 3)
    });
    assert_eq!(s["auto_repair"], false);
    let out = cli_at(&cluster, 2, &["chain", "verify"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("block 3 fails"));
    // It serves nothing from the damaged block on, and still serves below.
    let out = cli_at(&cluster, 2, &["chain", "show", "3"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("damaged at block 3"), "{stderr}");
    ok(cli_at(&cluster, 2, &["chain", "show", "2"]));
    // It builds on nothing either: over two rounds of three slots, no block
    // of node 2's appears. With one of three delegates out, finality pauses.
    let (_, final_before) = heights(&cluster, 1);
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(
        produced_by(&cluster, &node2, final_before),
        vec![] as Vec<Value>
    );

    let out = ok(cli_at(&cluster, 2, &["chain", "repair"]));
    assert!(out.contains("repaired blocks 3-"), "{out}");
    assert!(out.contains("with blocks from node"), "{out}");
    assert!(out.contains("verifies again"), "{out}");
    ok(cli_at(&cluster, 2, &["chain", "verify"]));
    assert_eq!(block_hash(&cluster, 2, 3).unwrap(), original);
    assert!(status(&cluster, 2).unwrap()["damaged"].is_null());
    // It builds again, and its blocks become final.
    let (_, final_at_repair) = heights(&cluster, 1);
    wait_for(
        "a final block by node 2 after the repair",
        FINAL_TIMEOUT,
        || {
            produced_by(&cluster, &node2, final_at_repair)
                .into_iter()
                .find(|b| b["final"] == true)
        },
    );

    // The default: damage found at start is repaired without an operator.
    let restarted = cluster.restarted.last_mut().unwrap();
    restarted.kill().unwrap();
    restarted.wait().unwrap();
    tamper_block(&cluster.data.join("node2").join("chain"), 4);
    std::fs::write(&config, text).unwrap();
    restart_node(&mut cluster, 2);
    let s = wait_for("node 2 repaired itself", FINAL_TIMEOUT, || {
        status(&cluster, 2).filter(|s| {
            s["damaged"].is_null() && s["repairs"].as_array().is_some_and(|r| !r.is_empty())
        })
    });
    assert_eq!(s["repairs"][0]["what"], "blocks", "{s}");
    assert_eq!(s["repairs"][0]["heights"][0], 4, "{s}");
    ok(cli_at(&cluster, 2, &["chain", "verify"]));
}

#[test]
fn batches_of_trace_records_through_every_node_become_final_and_prove() {
    let _serial = serial();
    let cluster = start(1, 3);
    let targets = (1..=3)
        .map(|n| cluster.api(n))
        .collect::<Vec<_>>()
        .join(",");
    let report = json(cli(
        &cluster,
        &[
            "--json",
            "chain",
            "bench",
            "--seconds",
            "3",
            "--rate",
            "1500",
            "--batch",
            "500",
            "--targets",
            &targets,
        ],
    ));
    let submitted = report["records_submitted"].as_u64().unwrap();
    assert!(submitted >= 4000, "{report}");
    assert_eq!(report["records_final"], submitted, "{report}");
    assert!(report["proofs"].as_u64().unwrap() >= 6, "{report}");

    recall_over_a_ten_thousand_event_supply_chain(&cluster);

    // A bad record in a batch is named, and nothing of the batch is signed.
    let token = std::fs::read_to_string(&cluster.token_file).unwrap();
    let good = |batch: &str| {
        serde_json::json!({"batch_id": batch, "stage": "farm", "actor": "a", "place": "p",
            "at_ms": 1, "readings": [], "documents": [], "inputs": []})
    };
    let mut bad = good("bad-1");
    bad["inputs"] = serde_json::json!(["bad-1"]); // made from itself
    let answer = ureq::post(&format!("{}/v1/trace", cluster.api(2)))
        .set("Authorization", &format!("Bearer {}", token.trim()))
        .send_json(serde_json::json!({"events": [good("ok-1"), bad]}));
    let Err(ureq::Error::Status(400, response)) = answer else {
        panic!("a batch with a bad record must be refused: {answer:?}");
    };
    let text = response.into_string().unwrap();
    assert!(text.contains("record 1"), "{text}");
    // A record node 2 signs afterwards takes the next nonce: once it is
    // final, anything signed before it would be final too.
    ok(cli_at(
        &cluster,
        2,
        &[
            "trace", "add", "--batch", "ok-2", "--stage", "farm", "--actor", "a", "--place", "p",
        ],
    ));
    wait_for("ok-2 final", FINAL_TIMEOUT, || {
        let shown = json(cli_at(&cluster, 2, &["--json", "trace", "show", "ok-2"]));
        (shown["events"].as_array().unwrap().len() == 1).then_some(())
    });
    assert_eq!(
        json(cli_at(&cluster, 2, &["--json", "trace", "show", "ok-1"]))["events"],
        serde_json::json!([]),
        "the good record before the bad one was not submitted either"
    );
}

/// 10,000 events, one batch each, generated here: batch `r{i}` (i >= 50) is
/// made from one to three earlier batches. Submitted through the three
/// nodes in batches of 1,000; once all are final, the recall set of one
/// early batch (everything made from it, transitively) must be exact.
fn recall_over_a_ten_thousand_event_supply_chain(cluster: &DevCluster) {
    const EVENTS: usize = 10_000;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let stages = ["farm", "processing", "cold-storage", "logistics", "retail"];
    let mut inputs: Vec<Vec<usize>> = Vec::with_capacity(EVENTS);
    for i in 0..EVENTS {
        let mut from = Vec::new();
        if i >= 50 {
            for _ in 0..1 + next() % 3 {
                // Mostly recent batches: long chains, like a real flow.
                let back = 1 + (next() % 400) as usize;
                let j = i.saturating_sub(back);
                if !from.contains(&j) {
                    from.push(j);
                }
            }
        }
        inputs.push(from);
    }
    let root = 5000; // reaches 3,659 of the 10,000 batches
    let mut expected = std::collections::BTreeSet::from([format!("r{root}")]);
    let mut reached = vec![false; EVENTS];
    reached[root] = true;
    for i in root + 1..EVENTS {
        if inputs[i].iter().any(|&j| reached[j]) {
            reached[i] = true;
            expected.insert(format!("r{i}"));
        }
    }
    assert!(
        expected.len() > 100 && expected.len() < EVENTS - 100,
        "a recall set that tells right from wrong: {}",
        expected.len()
    );

    let token = std::fs::read_to_string(&cluster.token_file).unwrap();
    let token = format!("Bearer {}", token.trim());
    let mut last_txs = Vec::new();
    for (chunk, ids) in (0..EVENTS).collect::<Vec<_>>().chunks(1000).enumerate() {
        let events: Vec<Value> = ids
            .iter()
            .map(|&i| {
                serde_json::json!({
                    "batch_id": format!("r{i}"),
                    "stage": stages[i * stages.len() / EVENTS],
                    "actor": format!("actor-{}", i % 37),
                    "place": "Parma",
                    "at_ms": 1_800_000_000_000u64 + i as u64,
                    "readings": [],
                    "documents": [],
                    "inputs": inputs[i].iter().map(|j| format!("r{j}")).collect::<Vec<_>>(),
                })
            })
            .collect();
        let node = (chunk % 3) as u16 + 1;
        let answer: Value = ureq::post(&format!("{}/v1/trace", cluster.api(node)))
            .set("Authorization", &token)
            .send_json(serde_json::json!({ "events": events }))
            .unwrap()
            .into_json()
            .unwrap();
        let txs = answer["txs"].as_array().unwrap();
        assert_eq!(txs.len(), ids.len());
        last_txs.push((node, txs.last().unwrap().as_str().unwrap().to_string()));
    }
    for (node, tx) in &last_txs {
        wait_for("the supply chain's records final", FINAL_TIMEOUT, || {
            let proof: Value = ureq::get(&format!("{}/v1/chain/proof/{tx}", cluster.api(*node)))
                .set("Authorization", &token)
                .call()
                .ok()?
                .into_json()
                .ok()?;
            (proof["final"] == true).then_some(())
        });
    }
    let down = json(cli(
        cluster,
        &["--json", "trace", "downstream", &format!("r{root}")],
    ));
    let got: std::collections::BTreeSet<String> = down["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["batch_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got.len(), expected.len(), "recall set size");
    assert_eq!(got, expected, "the recall set is exact");
}

/// A snapshot's content digest, anchored on the chain, proves offline that
/// an image exported from it is the snapshot, and catches one flipped byte.
fn snapshot_anchor_proves_an_exported_image(cluster: &DevCluster, genesis: &std::path::Path) {
    let dir = cluster.dir.path();
    let source = dir.join("anchor-source.bin");
    let data: Vec<u8> = (0..(6u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    std::fs::write(&source, &data).unwrap();
    ok(cli(
        cluster,
        &["volume", "create", "anch", "--pool", "rbd", "--size", "8M"],
    ));
    ok(cli(
        cluster,
        &["volume", "import", source.to_str().unwrap(), "anch"],
    ));
    ok(cli(cluster, &["snap", "create", "anch@a1"]));
    // Changed after the snapshot: not part of what is anchored.
    ok(cli(
        cluster,
        &["volume", "discard", "anch", "--length", "1M"],
    ));
    let anchored = json(cli(cluster, &["--json", "snap", "anchor", "anch@a1"]));
    let tx = anchored["tx"].as_str().unwrap().to_string();
    assert_eq!(anchored["size_bytes"], 8u64 << 20, "{anchored}");
    let image = dir.join("anch-a1.img");
    ok(cli(
        cluster,
        &["volume", "export", "anch@a1", image.to_str().unwrap()],
    ));
    let exported = std::fs::read(&image).unwrap();
    assert!(
        exported[..data.len()] == data[..],
        "the snapshot holds the imported bytes"
    );

    let proof = dir.join("anchor.proof.json");
    let proof = proof.to_str().unwrap();
    let out = wait_for(
        "the anchor tx to be final and provable",
        FINAL_TIMEOUT,
        || {
            if !cli(cluster, &["chain", "proof", &tx, "-o", proof])
                .status
                .success()
            {
                return None;
            }
            let verified = offline(&[
                "chain",
                "verify-proof",
                proof,
                "--genesis",
                genesis.to_str().unwrap(),
                "--image",
                image.to_str().unwrap(),
            ]);
            verified
                .status
                .success()
                .then(|| String::from_utf8_lossy(&verified.stdout).to_string())
        },
    );
    assert!(out.contains("image OK") && out.contains("anch@a1"), "{out}");

    let mut tampered = exported;
    tampered[3 << 20] ^= 0x01;
    let tampered_path = dir.join("anch-a1-tampered.img");
    std::fs::write(&tampered_path, &tampered).unwrap();
    let e = failed(offline(&[
        "chain",
        "verify-proof",
        proof,
        "--genesis",
        genesis.to_str().unwrap(),
        "--image",
        tampered_path.to_str().unwrap(),
    ]));
    assert!(e.contains("is NOT the anchored snapshot anch@a1"), "{e}");
}
