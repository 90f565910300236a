//! HP chain commands: blocks, inclusion proofs (fetched from the API,
//! verified offline with only the delegates' keys), audit records, and a
//! batch's history upstream and downstream.

use std::path::{Path, PathBuf};

use hpchain_chain::{Genesis, InclusionProof, ProofVerifier, PublicKey, Transaction};
use serde_json::{json, Value};

use crate::client::{ApiClient, CallError};
use crate::table;

fn fail(code: &str, message: String) -> CallError {
    CallError {
        message,
        code: Some(code.into()),
        status: None,
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn short(v: &Value) -> String {
    let s = text(v);
    s[..16.min(s.len())].to_string()
}

fn finality(v: &Value) -> &'static str {
    if v == &Value::Bool(true) {
        "final"
    } else {
        "pending"
    }
}

fn print_json(value: &Value) {
    println!("{}", serde_json::to_string_pretty(value).expect("json"));
}

/// Percent-encodes a query value (RFC 3986 unreserved characters kept).
fn query_value(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A path segment: the same encoding.
fn segment(s: &str) -> String {
    query_value(s)
}

pub fn blocks(
    api: &ApiClient,
    from: Option<u64>,
    limit: u64,
    json_output: bool,
) -> Result<(), CallError> {
    let mut path = format!("/v1/chain/blocks?limit={limit}");
    if let Some(from) = from {
        path.push_str(&format!("&from={from}"));
    }
    let answer = api.get(&path)?;
    if json_output {
        print_json(&answer);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = answer["blocks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| {
            vec![
                text(&b["height"]),
                text(&b["slot"]),
                text(&b["time"]),
                text(&b["tx_count"]),
                finality(&b["final"]).into(),
                short(&b["producer"]),
                text(&b["hash"]),
            ]
        })
        .collect();
    table::print(
        &[
            "HEIGHT", "SLOT", "TIME", "TXS", "FINALITY", "PRODUCER", "HASH",
        ],
        &rows,
    );
    println!(
        "head height {}, final height {}",
        answer["head_height"], answer["final_height"]
    );
    Ok(())
}

pub fn show(api: &ApiClient, id: &str, json_output: bool) -> Result<(), CallError> {
    let b = api.get(&format!("/v1/chain/blocks/{}", segment(id)))?;
    if json_output {
        print_json(&b);
        return Ok(());
    }
    println!("block {} ({})", b["height"], finality(&b["final"]));
    for key in [
        "hash",
        "prev_hash",
        "slot",
        "time",
        "producer",
        "tx_root",
        "tx_count",
    ] {
        println!("  {key:<10} {}", text(&b[key]));
    }
    let rows: Vec<Vec<String>> = b["txs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let p = &t["payload"];
            let what = match t["kind"].as_str() {
                Some("audit") => format!(
                    "{} {} {}",
                    text(&p["action"]),
                    text(&p["target"]),
                    text(&p["result"])
                ),
                Some("trace") => format!("batch {} at {}", text(&p["batch_id"]), text(&p["place"])),
                Some("anchor") => format!(
                    "volume {} snapshot {}",
                    text(&p["volume_id"]),
                    text(&p["snapshot"])
                ),
                Some("transfer") => format!("{} units to {}", text(&p["amount"]), short(&p["to"])),
                _ => String::new(),
            };
            vec![
                text(&t["index"]),
                text(&t["kind"]),
                short(&t["from"]),
                what,
                text(&t["tx"]),
            ]
        })
        .collect();
    table::print(&["INDEX", "KIND", "FROM", "WHAT", "TX"], &rows);
    Ok(())
}

pub fn proof(
    api: &ApiClient,
    tx: &str,
    output: Option<&Path>,
    json_output: bool,
) -> Result<(), CallError> {
    let proof = api.get(&format!("/v1/chain/proof/{}", segment(tx)))?;
    let text_out = serde_json::to_string_pretty(&proof).expect("json");
    match output {
        None => println!("{text_out}"),
        Some(path) => {
            std::fs::write(path, format!("{text_out}\n")).map_err(|e| {
                fail(
                    "file.write",
                    format!(
                        "cannot write the proof to {}: {e}; pick a writable path with -o",
                        path.display()
                    ),
                )
            })?;
            let summary = json!({
                "tx": proof["tx_hash"], "file": path.display().to_string(),
                "height": proof["height"], "final": proof["final"],
            });
            if json_output {
                print_json(&summary);
            } else {
                println!(
                    "proof of tx {} (block {}, {} on the answering node) written to {}",
                    text(&proof["tx_hash"]),
                    proof["height"],
                    finality(&proof["final"]),
                    path.display()
                );
            }
        }
    }
    Ok(())
}

/// Where the trusted delegate keys come from.
pub enum Trust {
    /// Hex keys separated by commas or whitespace, or a file holding them.
    Keys(String),
    /// A genesis file: its initial delegate set, and its chain hash.
    Genesis(PathBuf),
}

fn parse_keys(text: &str, source: &str) -> Result<Vec<PublicKey>, CallError> {
    let keys = text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|k| !k.is_empty())
        .map(|k| {
            PublicKey::from_hex(k).map_err(|e| {
                fail(
                    "proof.bad_key",
                    format!("delegate key {k:?} in {source} is not a 64-hex-digit ed25519 key ({e}); `hpchain chain status --json` lists the delegates"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if keys.is_empty() {
        return Err(fail(
            "proof.no_keys",
            format!("{source} names no delegate key; give the delegates' hex keys, comma separated, or --genesis FILE"),
        ));
    }
    Ok(keys)
}

fn load_genesis(path: &Path) -> Result<Genesis, CallError> {
    Genesis::load(path).map_err(|e| {
        fail(
            "proof.bad_genesis",
            format!(
                "cannot use {} as the genesis: {e}; give the chain's genesis.json (`hpchain dev` writes it to DATA/chain/genesis.json)",
                path.display()
            ),
        )
    })
}

/// The trusted delegate set and, from a genesis, the chain it belongs to.
fn trusted(trust: &Trust) -> Result<(Vec<PublicKey>, Option<Genesis>), CallError> {
    match trust {
        Trust::Genesis(path) => {
            let g = load_genesis(path)?;
            let keys =
                hpchain_chain::state::State::from_genesis(&g).elect(g.delegate_count as usize);
            Ok((keys, Some(g)))
        }
        Trust::Keys(keys) => {
            let path = Path::new(keys);
            if path.is_file() {
                let content = std::fs::read_to_string(path).map_err(|e| {
                    fail("file.read", format!("cannot read {}: {e}", path.display()))
                })?;
                if content.trim_start().starts_with('{') {
                    return trusted(&Trust::Genesis(path.to_path_buf()));
                }
                Ok((parse_keys(&content, &path.display().to_string())?, None))
            } else {
                Ok((parse_keys(keys, "--delegates")?, None))
            }
        }
    }
}

/// Paths (`payload.target`) where two JSON values differ, with both sides.
fn differences(prefix: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                differences(
                    &path,
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                differences(&format!("{prefix}[{i}]"), p, q, out);
            }
        }
        _ if a != b => out.push(format!("{prefix} is {a} in `tx` but {b} in `tx_hex`")),
        _ => {}
    }
}

/// Checks what the file says about the record besides the proof itself:
/// `tx_hex` (its canonical bytes) and `tx_hash` must both be the record's.
fn check_envelope(raw: &Value, proof: &InclusionProof) -> Result<(), String> {
    if let Some(hex) = raw["tx_hex"].as_str() {
        let bytes = hex_decode(hex).ok_or("`tx_hex` is not hex")?;
        let from_bytes = Transaction::decode(&bytes)
            .map_err(|e| format!("`tx_hex` is not a transaction encoding: {e}"))?;
        if from_bytes != proof.tx {
            let mut diffs = Vec::new();
            differences(
                "",
                &serde_json::to_value(&proof.tx).expect("json"),
                &serde_json::to_value(&from_bytes).expect("json"),
                &mut diffs,
            );
            return Err(format!(
                "the record does not match its canonical bytes: {}",
                diffs.join("; ")
            ));
        }
    }
    if let Some(claimed) = raw["tx_hash"].as_str() {
        let actual = proof.tx.hash().to_hex();
        if claimed != actual {
            return Err(format!(
                "the proof is for transaction {claimed}, but the record in it hashes to {actual}"
            ));
        }
    }
    Ok(())
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Verifies a proof file offline: no API call, only the file and the
/// trusted delegate keys.
/// The content digest of a local image file (as `ContentDigest` makes it
/// for a snapshot), read in 4 MiB pieces.
fn image_digest(image: &Path) -> Result<(hpchain_chain::Hash32, u64), CallError> {
    use std::io::Read;
    let mut file = std::fs::File::open(image).map_err(|e| {
        fail(
            "file.read",
            format!("cannot open the image {}: {e}", image.display()),
        )
    })?;
    let mut digest = hpchain_chain::merkle::ContentDigest::default();
    let mut buffer = vec![0u8; 4 << 20];
    loop {
        let n = file.read(&mut buffer).map_err(|e| {
            fail(
                "file.read",
                format!("reading the image {}: {e}", image.display()),
            )
        })?;
        if n == 0 {
            return Ok(digest.finish());
        }
        digest.update(&buffer[..n]);
    }
}

pub fn verify_proof(
    file: &Path,
    trust: &Trust,
    image: Option<&Path>,
    json_output: bool,
) -> Result<(), CallError> {
    let content = std::fs::read_to_string(file).map_err(|e| {
        fail(
            "file.read",
            format!(
                "cannot read the proof file {}: {e}; make one with `hpchain chain proof TX -o FILE`",
                file.display()
            ),
        )
    })?;
    let not_a_proof = |e: String| {
        fail(
            "proof.bad_file",
            format!(
                "{} is not a proof file: {e}; make one with `hpchain chain proof TX -o FILE`",
                file.display()
            ),
        )
    };
    let raw: Value = serde_json::from_str(&content).map_err(|e| not_a_proof(e.to_string()))?;
    let proof = InclusionProof::from_json(&content).map_err(|e| not_a_proof(e.to_string()))?;
    let (keys, genesis) = trusted(trust)?;
    let invalid = |reason: String| {
        fail(
            "proof.invalid",
            format!("proof {} does NOT verify: {reason}", file.display()),
        )
    };
    if let Some(g) = &genesis {
        if proof.header.header.chain != g.chain_hash() {
            return Err(invalid(format!(
                "it is for chain {:#}, the genesis file describes chain {:#} ({}); use that chain's genesis",
                proof.header.header.chain,
                g.chain_hash(),
                g.chain_id
            )));
        }
    }
    let envelope = check_envelope(&raw, &proof);
    let verified = ProofVerifier::new(&keys).verify(&proof);
    let verified = match (verified, envelope) {
        (Ok(v), Ok(())) => v,
        (Err(e), Ok(())) => {
            let mut reason = e.to_string();
            if reason.contains("not a trusted delegate") && genesis.is_some() {
                reason.push_str("; if votes changed the delegate set since genesis, pass the current set with --delegates (`hpchain chain status --json` lists it)");
            }
            return Err(invalid(reason));
        }
        (Err(e), Err(detail)) => return Err(invalid(format!("{e}; {detail}"))),
        (Ok(_), Err(detail)) => {
            return Err(invalid(format!(
                "{detail}; the file was changed after it was made"
            )))
        }
    };
    let report = json!({
        "ok": verified.is_final,
        "tx": verified.tx_hash.to_hex(),
        "height": verified.height,
        "block": verified.block.to_hex(),
        "confirmed_by": verified.confirmed_by,
        "trusted_delegates": keys.len(),
        "final": verified.is_final,
        "kind": proof.tx.payload.kind(),
    });
    if json_output {
        print_json(&report);
    } else {
        println!(
            "transaction {} ({}) is in block {} ({}), signed by its producer and backed by {} of {} trusted delegates",
            verified.tx_hash.to_hex(),
            proof.tx.payload.kind(),
            verified.height,
            verified.block.to_hex(),
            verified.confirmed_by,
            keys.len()
        );
    }
    if !verified.is_final {
        return Err(fail(
            "proof.not_final",
            format!(
                "the proof is valid but block {} is not final: {} of {} trusted delegates stand behind it, more than two thirds are needed; fetch the proof again once `hpchain chain status` shows final height {} or more",
                verified.height,
                verified.confirmed_by,
                keys.len(),
                verified.height
            ),
        ));
    }
    if !json_output {
        println!("proof OK: the block is final (more than two thirds of the delegates)");
    }
    if let Some(image) = image {
        let hpchain_chain::Payload::Anchor(anchor) = &proof.tx.payload else {
            return Err(fail(
                "proof.not_an_anchor",
                format!(
                    "the proof is for a {} transaction, not a snapshot anchor; make the proof of the tx `hpchain snap anchor` printed",
                    proof.tx.payload.kind()
                ),
            ));
        };
        let (digest, bytes) = image_digest(image)?;
        if digest != anchor.digest || bytes != anchor.size_bytes {
            return Err(fail(
                "image.differs",
                format!(
                    "{} is NOT the anchored snapshot {}@{}: its digest is {} over {bytes} bytes, the chain holds {} over {} bytes",
                    image.display(),
                    anchor.volume_id,
                    anchor.snapshot,
                    digest.to_hex(),
                    anchor.digest.to_hex(),
                    anchor.size_bytes
                ),
            ));
        }
        if !json_output {
            println!(
                "image OK: {} is byte for byte the snapshot {}@{} anchored in block {} (digest {})",
                image.display(),
                anchor.volume_id,
                anchor.snapshot,
                verified.height,
                digest.to_hex()
            );
        }
    }
    Ok(())
}

pub fn audit_ls(
    api: &ApiClient,
    volume: Option<&str>,
    target: Option<&str>,
    json_output: bool,
) -> Result<(), CallError> {
    let mut path = "/v1/audit".to_string();
    if let Some(v) = volume {
        path.push_str(&format!("?volume={}", query_value(v)));
    } else if let Some(t) = target {
        path.push_str(&format!("?target={}", query_value(t)));
    }
    let records = api.get(&path)?;
    if json_output {
        print_json(&records);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = records
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            vec![
                text(&r["time"]),
                text(&r["node"]),
                text(&r["action"]),
                text(&r["target"]),
                text(&r["result"]),
                text(&r["height"]),
                finality(&r["final"]).into(),
                text(&r["tx"]),
            ]
        })
        .collect();
    table::print(
        &[
            "TIME", "NODE", "ACTION", "TARGET", "RESULT", "HEIGHT", "FINALITY", "TX",
        ],
        &rows,
    );
    Ok(())
}

fn reading_text(r: &Value) -> String {
    format!(
        "{}={}{}",
        text(&r["name"]),
        r["value_milli"].as_i64().unwrap_or(0) as f64 / 1000.0,
        text(&r["unit"])
    )
}

pub fn trace_walk(
    api: &ApiClient,
    batch: &str,
    direction: &str,
    ranges: &[String],
    json_output: bool,
) -> Result<(), CallError> {
    let mut path = format!("/v1/trace/{}/{direction}", segment(batch));
    if !ranges.is_empty() {
        path.push_str(&format!("?ranges={}", query_value(&ranges.join(","))));
    }
    let walk = api.get(&path)?;
    if json_output {
        print_json(&walk);
        return Ok(());
    }
    let mut rows = Vec::new();
    for b in walk["batches"].as_array().into_iter().flatten() {
        for e in b["events"].as_array().into_iter().flatten() {
            let ev = &e["event"];
            let readings: Vec<String> = ev["readings"]
                .as_array()
                .into_iter()
                .flatten()
                .map(reading_text)
                .collect();
            let breaches: Vec<String> = e["breaches"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|br| {
                    format!(
                        "{} outside {}..{}",
                        reading_text(&br["reading"]),
                        br["limit"]["min_milli"].as_i64().unwrap_or(0) as f64 / 1000.0,
                        br["limit"]["max_milli"].as_i64().unwrap_or(0) as f64 / 1000.0
                    )
                })
                .collect();
            rows.push(vec![
                text(&b["batch_id"]),
                text(&ev["stage"]),
                text(&ev["actor"]),
                text(&ev["place"]),
                text(&e["time"]),
                readings.join(" "),
                if breaches.is_empty() {
                    "-".into()
                } else {
                    format!("BREACH {}", breaches.join(", "))
                },
                text(&e["height"]),
                text(&e["tx"]),
            ]);
        }
    }
    table::print(
        &[
            "BATCH", "STAGE", "ACTOR", "PLACE", "TIME", "READINGS", "RANGE", "HEIGHT", "TX",
        ],
        &rows,
    );
    let batches = walk["batches"].as_array().map(|b| b.len()).unwrap_or(1);
    println!(
        "{} batch(es) {direction} of {batch} (itself included); {} reading(s) out of range; prove an event with `hpchain chain proof TX`",
        batches, walk["breaches"]
    );
    Ok(())
}

/// `hpchain chain verify --data-dir DIR`: replays a stopped node's ledger
/// from its own files.
pub fn verify_offline(dir: &Path, json_output: bool) -> Result<(), CallError> {
    let chain_dir = if dir.join("chain").is_dir() {
        dir.join("chain")
    } else {
        dir.to_path_buf()
    };
    let store = hpchain_chain::RocksStore::open(&chain_dir).map_err(|e| {
        fail(
            "chain.store",
            format!("{e}; if its node is running, ask the node instead (`hpchain chain verify` without --data-dir)"),
        )
    })?;
    let report =
        hpchain_chain::verify_chain(&store).map_err(|e| fail("chain.store", e.to_string()))?;
    let value = json!({
        "ok": report.is_ok(),
        "final_height": report.final_height,
        "verified_height": report.verified_height,
        "first_bad": report.first_bad,
    });
    crate::admin::print_verify_report(json_output, &value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            query_value("humidity:30:90:%RH"),
            "humidity%3A30%3A90%3A%25RH"
        );
        assert_eq!(query_value("volume/a b"), "volume%2Fa%20b");
    }

    #[test]
    fn differences_name_the_changed_field() {
        let a = json!({"payload": {"target": "volume/a", "details": [["k", "v"]]}, "nonce": 1});
        let b = json!({"payload": {"target": "volume/b", "details": [["k", "v"]]}, "nonce": 1});
        let mut out = Vec::new();
        differences("", &a, &b, &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(
            out[0].starts_with("payload.target is \"volume/a\""),
            "{out:?}"
        );
    }

    #[test]
    fn keys_are_parsed_and_bad_ones_are_named() {
        let k = hpchain_chain::Keypair::from_seed(b"k").public().to_hex();
        let keys = parse_keys(&format!("{k}, {k}\n"), "x").unwrap();
        assert_eq!(keys.len(), 2);
        let e = parse_keys("abc", "--delegates").unwrap_err().to_string();
        assert!(e.contains("\"abc\"") && e.contains("--delegates"), "{e}");
        assert!(parse_keys(" ", "f").is_err());
        assert_eq!(hex_decode("00ff"), Some(vec![0, 255]));
        assert_eq!(hex_decode("0g"), None);
    }
}
