//! End to end on the HP chain's wallet path, with real processes: a
//! four-node `hpchain dev` cluster with three delegate seats leaves node 4
//! a candidate outside the set. A genesis holder's vote, signed by the CLI
//! with the holder's own key and submitted through the API, puts node 4 in
//! the set at the next round in place of exactly one former delegate; node
//! 4 then produces blocks that become final, and finality goes on with the
//! new set. A transfer to a fresh key moves exactly its amount; its replay,
//! a transfer above the balance, bytes that are not a transaction and a
//! forged signature are refused with errors that name the reason.

mod support;

use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;
use support::*;

/// Long enough for a transaction to become final, or a round to turn, on a
/// loaded 2-core machine (one-second slots, three-slot rounds).
const TIMEOUT: Duration = Duration::from_secs(60);

const UNITS_PER_HP: u64 = 100_000_000;

/// The public key (hex) in a key file.
fn key_of(file: &Path) -> String {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    v["public"].as_str().unwrap().to_string()
}

fn status(cluster: &DevCluster, node: u16) -> Value {
    json(cli_at(cluster, node, &["--json", "chain", "status"]))
}

fn delegates(status: &Value) -> Vec<String> {
    status["delegates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect()
}

fn account(cluster: &DevCluster, key: &str) -> Value {
    json(cli(cluster, &["--json", "chain", "account", key]))
}

fn balance(cluster: &DevCluster, key: &str) -> u64 {
    account(cluster, key)["balance"].as_u64().unwrap()
}

/// Blocks of node 1's best chain from `from`, ascending.
fn blocks_from(cluster: &DevCluster, from: u64) -> Vec<Value> {
    json(cli(
        cluster,
        &[
            "--json",
            "chain",
            "blocks",
            "--from",
            &from.to_string(),
            "--limit",
            "500",
        ],
    ))["blocks"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn a_vote_elects_a_candidate_node_that_then_produces_final_blocks_and_transfers_move_exact_amounts()
{
    let cluster = start_with_delegates(3, 4, Some(3));
    a_vote_changes_the_delegate_set_at_the_next_round(&cluster);
    transfers_move_exact_amounts_and_replays_and_overdrafts_are_refused(&cluster);
}

fn a_vote_changes_the_delegate_set_at_the_next_round(cluster: &DevCluster) {
    let chain = cluster.data.join("chain");
    let nodes: Vec<String> = (0..4)
        .map(|i| key_of(&chain.join(format!("delegate-{i}.key.json"))))
        .collect();

    // Three seats for four candidates: with no votes, ties go to the
    // earlier registered, so node 4 (the last) starts outside.
    let s = status(cluster, 1);
    assert_eq!(s["delegate_seats"], 3);
    let before = delegates(&s);
    assert_eq!(before.len(), 3);
    assert!(!before.contains(&nodes[3]), "node 4 starts outside the set");
    assert!(nodes[..3].iter().all(|k| before.contains(k)));
    let candidates = s["candidates"].as_array().unwrap();
    assert_eq!(candidates.len(), 4);
    let node4 = candidates.iter().find(|c| c["key"] == nodes[3]).unwrap();
    assert_eq!(node4["delegate"], false);
    assert_eq!(account(cluster, &nodes[3])["candidate"]["delegate"], false);

    // The 30% holder votes for node 4 with its whole balance.
    let holder = chain.join("alloc-ecological-development.key.json");
    let vote = json(cli(
        cluster,
        &[
            "--json",
            "chain",
            "vote",
            "--key",
            holder.to_str().unwrap(),
            &nodes[3],
            "--wait",
        ],
    ));
    assert_eq!(vote["final"], true, "{vote}");
    assert_eq!(vote["kind"], "vote");
    let vote_height = vote["height"].as_u64().unwrap();
    let voter = account(cluster, &key_of(&holder));
    assert_eq!(voter["votes"], json!([nodes[3]]));
    assert_eq!(
        account(cluster, &nodes[3])["candidate"]["votes_hp"],
        "30000000"
    );

    // From the next round on, node 4 holds a seat, and exactly one former
    // delegate lost its own: node 3, the last registered of the tied ones.
    let after = wait_for("node 4 in the delegate set", TIMEOUT, || {
        let d = delegates(&status(cluster, 1));
        d.contains(&nodes[3]).then_some(d)
    });
    assert_eq!(after.len(), 3);
    let dropped: Vec<&String> = before.iter().filter(|k| !after.contains(k)).collect();
    assert_eq!(dropped, vec![&nodes[2]], "exactly node 3 lost its seat");

    // Node 4 produces, and its block becomes final.
    let first = wait_for("a final block produced by node 4", TIMEOUT, || {
        blocks_from(cluster, vote_height)
            .into_iter()
            .find(|b| b["producer"] == nodes[3] && b["final"] == true)
    });
    let first_height = first["height"].as_u64().unwrap();

    // Finality goes on with the new set, which no longer includes node 3.
    let final_height = wait_for("finality past node 4's block", TIMEOUT, || {
        let f = status(cluster, 1)["final_height"].as_u64().unwrap();
        (f >= first_height + 3).then_some(f)
    });
    let since: Vec<Value> = blocks_from(cluster, first_height)
        .into_iter()
        .filter(|b| b["height"].as_u64().unwrap() <= final_height)
        .collect();
    assert!(since.iter().all(|b| b["final"] == true));
    assert!(
        since.iter().all(|b| b["producer"] != nodes[2]),
        "node 3 produced after it lost its seat: {since:?}"
    );
    assert!(
        since
            .iter()
            .all(|b| after.contains(&b["producer"].as_str().unwrap().to_string())),
        "every producer is in the new set: {since:?}"
    );
    // Node 4 sees the same set, and its ledger verifies.
    assert!(delegates(&status(cluster, 4)).contains(&nodes[3]));
    assert_eq!(account(cluster, &nodes[3])["candidate"]["delegate"], true);
    ok(cli_at(cluster, 4, &["chain", "verify"]));
}

fn transfers_move_exact_amounts_and_replays_and_overdrafts_are_refused(cluster: &DevCluster) {
    let chain = cluster.data.join("chain");
    let team = chain.join("alloc-team.key.json");
    let team_key = key_of(&team);
    let fresh = cluster.dir.path().join("fresh.key.json");
    let made = json(cli(
        cluster,
        &["--json", "chain", "keygen", fresh.to_str().unwrap()],
    ));
    let fresh_key = made["public"].as_str().unwrap().to_string();
    assert_eq!(fresh_key, key_of(&fresh));
    let empty = account(cluster, &fresh_key);
    assert_eq!(
        (&empty["exists"], &empty["balance"], &empty["next_nonce"]),
        (&json!(false), &json!(0), &json!(0))
    );

    // 12.5 HP from the team holder to the fresh key, exactly.
    let team_before = account(cluster, &team_key);
    let sent = json(cli(
        cluster,
        &[
            "--json",
            "chain",
            "transfer",
            "--key",
            team.to_str().unwrap(),
            &fresh_key,
            "12.5",
            "--wait",
        ],
    ));
    assert_eq!(sent["final"], true, "{sent}");
    let tx = sent["tx"].as_str().unwrap().to_string();
    let amount = 12 * UNITS_PER_HP + UNITS_PER_HP / 2;
    let team_after = account(cluster, &team_key);
    assert_eq!(
        team_after["balance"].as_u64().unwrap(),
        team_before["balance"].as_u64().unwrap() - amount
    );
    assert_eq!(
        team_after["next_nonce"].as_u64().unwrap(),
        team_before["next_nonce"].as_u64().unwrap() + 1
    );
    let received = account(cluster, &fresh_key);
    assert_eq!(received["balance"].as_u64().unwrap(), amount);
    assert_eq!(received["balance_hp"], "12.5");
    let shown = ok(cli(cluster, &["chain", "account", &fresh_key]));
    assert!(shown.contains("12.5 HP"), "{shown}");

    // The same signed bytes again: a replay, refused at the door.
    let proof = json(cli(cluster, &["chain", "proof", &tx]));
    let tx_hex = proof["tx_hex"].as_str().unwrap().to_string();
    let (code, body) = http_post(
        cluster,
        "/v1/chain/transactions",
        &json!({ "tx": tx_hex }).to_string(),
    );
    assert_eq!(code, 409, "{body}");
    assert!(
        body.contains("tx.wrong_nonce") && body.contains("already used"),
        "{body}"
    );

    // Bytes that are not a transaction, and a forged signature.
    let (code, body) = http_post(cluster, "/v1/chain/transactions", r#"{"tx": "zz"}"#);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("tx.bad_encoding"), "{body}");
    let mut forged = tx_hex.into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'0' { b'1' } else { b'0' };
    let forged = String::from_utf8(forged).unwrap();
    let (code, body) = http_post(
        cluster,
        "/v1/chain/transactions",
        &json!({ "tx": forged }).to_string(),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("tx.bad_signature"), "{body}");

    // More than the fresh key holds: refused, naming the balance.
    let over = failed(cli(
        cluster,
        &[
            "chain",
            "transfer",
            "--key",
            fresh.to_str().unwrap(),
            &team_key,
            "13",
        ],
    ));
    assert!(
        over.contains("tx.insufficient_balance") && over.contains("holds 12.5 HP"),
        "{over}"
    );

    // The fresh key spends what it holds: its first transaction, nonce 0.
    let back = json(cli(
        cluster,
        &[
            "--json",
            "chain",
            "transfer",
            "--key",
            fresh.to_str().unwrap(),
            &team_key,
            "2.5",
            "--wait",
        ],
    ));
    assert_eq!((&back["nonce"], &back["final"]), (&json!(0), &json!(true)));
    assert_eq!(balance(cluster, &fresh_key), 10 * UNITS_PER_HP);
    assert_eq!(
        balance(cluster, &team_key),
        team_before["balance"].as_u64().unwrap() - 10 * UNITS_PER_HP
    );
}
