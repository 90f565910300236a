//! Wallet commands: a key pair of one's own (`chain keygen`), an account's
//! balance, nonce, votes and candidacy (`chain account`), and transactions
//! signed here and submitted through the API (`chain transfer`, `chain
//! vote`, `chain register`). The secret key never leaves this process: the
//! node receives the signed transaction's bytes only.

use std::path::Path;
use std::time::{Duration, Instant};

use hpchain_chain::tx::{format_hp, parse_hp};
use hpchain_chain::{Hash32, Keypair, Payload, PublicKey, Transaction};
use serde_json::{json, Value};

use crate::client::{ApiClient, CallError};

/// How often `--wait` asks whether the transaction is final.
const WAIT_POLL: Duration = Duration::from_millis(500);

fn fail(code: &str, message: String) -> CallError {
    CallError {
        message,
        code: Some(code.into()),
        status: None,
    }
}

fn print_json(value: &Value) {
    println!("{}", serde_json::to_string_pretty(value).expect("json"));
}

/// Writes a fresh key pair to `file` (mode 0600), never over an existing file.
pub fn keygen(file: &Path, json_output: bool) -> Result<(), CallError> {
    if file.exists() {
        return Err(fail(
            "key.exists",
            format!(
                "{} exists; a key file may guard HP, so it is never overwritten: pick another path",
                file.display()
            ),
        ));
    }
    let key = Keypair::generate();
    key.save(file)
        .map_err(|e| fail("key.file", format!("{e}; pick a writable path")))?;
    if json_output {
        print_json(&json!({"file": file.display().to_string(), "public": key.public().to_hex()}));
    } else {
        println!(
            "wrote {} (mode 0600; keep it secret)\npublic key {}",
            file.display(),
            key.public().to_hex()
        );
    }
    Ok(())
}

/// An account key given as hex, or as a key file (only its public half is read).
pub fn public_key(arg: &str) -> Result<PublicKey, CallError> {
    let path = Path::new(arg);
    if path.is_file() {
        let text = std::fs::read_to_string(path)
            .map_err(|e| fail("file.read", format!("cannot read {arg}: {e}")))?;
        let file: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        return file["public"]
            .as_str()
            .and_then(|k| PublicKey::from_hex(k).ok())
            .ok_or_else(|| {
                fail(
                    "key.file",
                    format!("{arg} is not a key file (no \"public\" key in it); `hpchain chain keygen FILE` makes one"),
                )
            });
    }
    PublicKey::from_hex(arg).map_err(|_| {
        fail(
            "key.bad",
            format!("{arg:?} is neither a public key (64 hex digits) nor a key file"),
        )
    })
}

fn load_key(path: &Path) -> Result<Keypair, CallError> {
    Keypair::load(path).map_err(|e| {
        fail(
            "key.file",
            format!("{e}; make a key with `hpchain chain keygen FILE` (a dev cluster's holder keys are DATA/chain/alloc-*.key.json)"),
        )
    })
}

/// Shows an account: balance, next nonce, votes, candidacy.
pub fn account(api: &ApiClient, key: &str, json_output: bool) -> Result<(), CallError> {
    let key = public_key(key)?;
    let a = api.get(&format!("/v1/chain/accounts/{}", key.to_hex()))?;
    if json_output {
        print_json(&a);
        return Ok(());
    }
    println!("account {}", key.to_hex());
    println!(
        "  balance     {} HP ({} units)",
        a["balance_hp"].as_str().unwrap_or("?"),
        a["balance"]
    );
    println!("  next nonce  {}", a["next_nonce"]);
    let votes: Vec<&str> = a["votes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    println!(
        "  votes for   {}",
        if votes.is_empty() {
            "nobody".to_string()
        } else {
            votes.join(", ")
        }
    );
    match a["candidate"].as_object() {
        None => println!("  candidate   no"),
        Some(c) => println!(
            "  candidate   {:?} with {} HP of votes, {}",
            c["name"].as_str().unwrap_or(""),
            c["votes_hp"].as_str().unwrap_or("?"),
            if c["delegate"] == json!(true) {
                "a delegate of the current round"
            } else {
                "outside the current round's delegate set"
            }
        ),
    }
    println!(
        "  as of head height {} (final height {})",
        a["head_height"], a["final_height"]
    );
    Ok(())
}

/// How a wallet transaction is signed and followed.
pub struct Signing<'a> {
    /// Key file of the sending account.
    pub key: &'a Path,
    /// Wait until the transaction is final.
    pub wait: bool,
    pub wait_timeout: Duration,
}

/// `AMOUNT_HP` HP from the signer to `to`.
pub fn transfer(
    api: &ApiClient,
    signing: &Signing,
    to: &str,
    amount_hp: &str,
    json_output: bool,
) -> Result<(), CallError> {
    let to = public_key(to)?;
    let amount = parse_hp(amount_hp).map_err(|e| fail("tx.bad_amount", e))?;
    if amount == 0 {
        return Err(fail(
            "tx.bad_amount",
            "a transfer of 0 HP is refused by the ledger; give a positive amount".into(),
        ));
    }
    let what = format!("transfer of {} HP to {}", format_hp(amount), to.to_hex());
    submit(
        api,
        signing,
        Payload::Transfer { to, amount },
        &what,
        json_output,
    )
}

/// Replaces the signer's votes (none: `withdraw`).
pub fn vote(
    api: &ApiClient,
    signing: &Signing,
    candidates: &[String],
    json_output: bool,
) -> Result<(), CallError> {
    let candidates = candidates
        .iter()
        .map(|c| public_key(c))
        .collect::<Result<Vec<_>, _>>()?;
    let what = if candidates.is_empty() {
        "withdrawal of every vote".to_string()
    } else {
        let names: Vec<String> = candidates.iter().map(PublicKey::to_hex).collect();
        format!("vote for {}", names.join(", "))
    };
    submit(
        api,
        signing,
        Payload::Vote { candidates },
        &what,
        json_output,
    )
}

/// Registers the signer as a delegate candidate.
pub fn register(
    api: &ApiClient,
    signing: &Signing,
    name: &str,
    json_output: bool,
) -> Result<(), CallError> {
    let what = format!("registration of candidate {name:?}");
    submit(
        api,
        signing,
        Payload::RegisterCandidate {
            name: name.to_string(),
        },
        &what,
        json_output,
    )
}

/// Signs `payload` with the next nonce of the signer's account and the
/// chain's hash (both asked of the API), submits it, and with `--wait`
/// follows it to finality.
fn submit(
    api: &ApiClient,
    signing: &Signing,
    payload: Payload,
    what: &str,
    json_output: bool,
) -> Result<(), CallError> {
    let key = load_key(signing.key)?;
    let status = api.get("/v1/chain")?;
    let chain = status["chain_hash"]
        .as_str()
        .and_then(|h| Hash32::from_hex(h).ok())
        .ok_or_else(|| {
            fail(
                "chain.no_hash",
                "the node's GET /v1/chain names no chain_hash; is it an hpchain node of this version?".into(),
            )
        })?;
    let from = key.public();
    let account = api.get(&format!("/v1/chain/accounts/{}", from.to_hex()))?;
    let nonce = account["next_nonce"].as_u64().ok_or_else(|| {
        fail(
            "chain.no_nonce",
            format!(
                "the node's answer for account {} has no next_nonce",
                from.to_hex()
            ),
        )
    })?;
    let kind = payload.kind();
    let tx = Transaction::signed(chain, &key, nonce, payload);
    let id = tx.hash().to_hex();
    let answer = api.post(
        "/v1/chain/transactions",
        &json!({"tx": hex::encode(tx.encode())}),
    )?;
    if answer["tx"].as_str() != Some(id.as_str()) {
        return Err(fail(
            "tx.id_mismatch",
            format!(
                "the node accepted the {what} as tx {}, but it hashes to {id} here; the node runs an incompatible version",
                answer["tx"]
            ),
        ));
    }
    if !json_output {
        println!(
            "{what} from {} (nonce {nonce}) submitted: tx {id}",
            from.to_hex()
        );
    }
    let mut report = json!({
        "tx": id, "kind": kind, "from": from.to_hex(), "nonce": nonce, "final": false,
    });
    if signing.wait {
        let height = wait_final(api, &id, signing.wait_timeout)?;
        report["final"] = json!(true);
        report["height"] = json!(height);
        if !json_output {
            println!("tx {id} is final in block {height}");
        }
    } else if !json_output {
        println!("final after a few slots: `hpchain chain proof {id}` shows it");
    }
    if json_output {
        print_json(&report);
    }
    Ok(())
}

/// Polls the transaction's proof until the answering node holds its block
/// final; returns the block's height.
fn wait_final(api: &ApiClient, id: &str, timeout: Duration) -> Result<u64, CallError> {
    let deadline = Instant::now() + timeout;
    let mut last = "not in a block yet".to_string();
    while Instant::now() < deadline {
        match api.get(&format!("/v1/chain/proof/{id}")) {
            Ok(proof) => {
                let height = proof["height"].as_u64().unwrap_or(0);
                if proof["final"] == json!(true) {
                    return Ok(height);
                }
                last = format!("in block {height}, not final yet");
            }
            Err(e) if e.code.as_deref() == Some("chain.tx_not_found") => {
                last = "not in a block yet".into();
            }
            Err(e) => return Err(e),
        }
        std::thread::sleep(WAIT_POLL);
    }
    Err(fail(
        "tx.not_final",
        format!(
            "tx {id} is not final after {timeout:?} ({last}); check that the delegates are up (`hpchain chain status`) and ask again with `hpchain chain proof {id}`; if it never appears, another transaction with its nonce came first (`hpchain chain account KEY`)"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_keys_come_as_hex_or_key_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("k.json");
        keygen(&file, true).unwrap();
        let key = Keypair::load(&file).unwrap().public();
        assert_eq!(public_key(file.to_str().unwrap()).unwrap(), key);
        assert_eq!(public_key(&key.to_hex()).unwrap(), key);
        let e = public_key("abc").unwrap_err();
        assert!(e.message.contains("neither a public key"), "{e}");
        let again = keygen(&file, true).unwrap_err();
        assert_eq!(again.code.as_deref(), Some("key.exists"));
    }
}
