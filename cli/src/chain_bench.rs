//! `hpchain chain bench`: a load generator for the HP chain. It submits
//! trace events in batches through the management API of one or more
//! nodes at a fixed rate, follows every batch to finality, and reports the
//! sustained rate and the time from submission to finality in slots. In
//! the same run it measures, on one core of this machine, raw ed25519
//! verification (the floor every signed record pays) and the verification
//! of the inclusion proofs the cluster produced for the submitted records.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use hpchain_chain::{InclusionProof, ProofVerifier, PublicKey};
use serde_json::{json, Value};

use crate::client::{ApiClient, CallError};

pub struct BenchOptions {
    /// API base URLs; the load is spread over them evenly.
    pub targets: Vec<String>,
    pub token: Option<String>,
    pub seconds: u64,
    /// Records per second over all targets.
    pub rate: u64,
    /// Records per request.
    pub batch: usize,
}

/// One batch on its way to finality.
struct Sent {
    target: usize,
    at: Instant,
    count: usize,
    last_tx: String,
}

fn fail(message: String) -> CallError {
    CallError {
        message,
        code: Some("bench.failed".into()),
        status: None,
    }
}

fn event(run: &str, target: usize, n: u64) -> Value {
    json!({
        "batch_id": format!("bench-{run}-{target}-{n}"),
        "stage": "cold-storage",
        "actor": "bench",
        "place": "Rotterdam",
        "at_ms": 1_800_000_000_000u64 + n,
        "readings": [{"name": "temperature", "value_milli": 3500, "unit": "C"}],
        "documents": [],
        "inputs": if n > 0 { vec![format!("bench-{run}-{target}-{}", n / 2)] } else { vec![] },
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Raw ed25519 verifications per second on this thread, for ~1 s.
fn ed25519_per_second() -> f64 {
    let key = hpchain_chain::Keypair::from_seed(b"bench baseline");
    let message = [7u8; 200];
    let signature = key.sign(&message);
    let public = key.public();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(1) {
        for _ in 0..100 {
            assert!(public.verify(&message, &signature));
        }
        n += 100;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Proofs verified per second on this thread, for ~1 s, by one verifier
/// (which checks each block header's signatures once); `with_sender` also
/// checks each record's own signature.
fn proofs_per_second(
    proofs: &[InclusionProof],
    trusted: &[PublicKey],
    with_sender: bool,
) -> Result<f64, CallError> {
    let start = Instant::now();
    let mut n = 0u64;
    let mut verifier = ProofVerifier::new(trusted);
    if !with_sender {
        verifier = verifier.skip_sender_signatures();
    }
    while start.elapsed() < Duration::from_secs(1) {
        for p in proofs {
            verifier
                .verify(p)
                .map_err(|e| fail(format!("a proof the cluster produced does not verify: {e}")))?;
        }
        n += proofs.len() as u64;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

pub fn run(options: &BenchOptions, json_output: bool) -> Result<(), CallError> {
    let clients: Vec<ApiClient> = options
        .targets
        .iter()
        .map(|t| ApiClient::new(t, options.token.clone()))
        .collect();
    let status = clients[0].get("/v1/chain")?;
    let slot_ms = status["slot_time_ms"].as_u64().unwrap_or(1000) as f64;
    let delegates: Vec<PublicKey> = status["delegates"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k.as_str().and_then(|k| PublicKey::from_hex(k).ok()))
        .collect();
    let run = format!(
        "{:x}",
        std::process::id() ^ status["head_height"].as_u64().unwrap_or(0) as u32
    );
    let batch = options.batch.clamp(1, 10_000);
    let per_target = (options.rate as f64 / clients.len() as f64).max(1.0);
    let interval = Duration::from_secs_f64(batch as f64 / per_target);
    let duration = Duration::from_secs(options.seconds);
    eprintln!(
        "submitting {} records/s for {} s in batches of {batch} through {} node(s); following each batch to finality",
        options.rate,
        options.seconds,
        clients.len()
    );

    // One submitter thread per target, paced to its share of the rate.
    let start = Instant::now();
    let (sent_tx, sent_rx) = mpsc::channel::<Result<Sent, CallError>>();
    let mut submitters = Vec::new();
    for (target, base) in options.targets.iter().enumerate() {
        let client = ApiClient::new(base, options.token.clone());
        let sent_tx = sent_tx.clone();
        let run = run.clone();
        submitters.push(std::thread::spawn(move || {
            let mut n = 0u64;
            let mut next = start;
            while next < start + duration {
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let events: Vec<Value> = (0..batch)
                    .map(|i| event(&run, target, n + i as u64))
                    .collect();
                n += batch as u64;
                let at = Instant::now();
                let answer = client.post("/v1/trace", &json!({ "events": events }));
                let result = answer.and_then(|a| {
                    let last = a["txs"].as_array().and_then(|t| t.last()).cloned();
                    last.and_then(|t| t.as_str().map(str::to_string))
                        .map(|last_tx| Sent {
                            target,
                            at,
                            count: batch,
                            last_tx,
                        })
                        .ok_or_else(|| fail(format!("unexpected answer to a batch: {a}")))
                });
                let stop = result.is_err();
                let _ = sent_tx.send(result);
                if stop {
                    return;
                }
                next += interval;
            }
        }));
    }
    drop(sent_tx);

    // Follow every batch: its last record's block, then that block's
    // finality (a batch is in one block or consecutive ones, in order).
    let mut waiting: Vec<(Sent, Option<u64>)> = Vec::new();
    let mut latencies_ms: Vec<f64> = Vec::new();
    let mut final_records = 0usize;
    let mut last_final = start;
    let mut submitted = 0usize;
    let mut proof_txs: Vec<(usize, String)> = Vec::new();
    let mut submitting = true;
    let deadline_after_submit = Duration::from_secs(60);
    let mut submit_end = None;
    loop {
        loop {
            match sent_rx.try_recv() {
                Ok(Ok(sent)) => {
                    submitted += sent.count;
                    waiting.push((sent, None));
                }
                Ok(Err(e)) => return Err(e),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    if submitting {
                        submitting = false;
                        submit_end = Some(Instant::now());
                    }
                    break;
                }
            }
        }
        let final_height = clients[0].get("/v1/chain")?["final_height"]
            .as_u64()
            .unwrap_or(0);
        let now = Instant::now();
        let mut still = Vec::new();
        for (sent, height) in waiting.drain(..) {
            let height = match height {
                Some(h) => Some(h),
                None => {
                    match clients[sent.target].get(&format!("/v1/chain/proof/{}", sent.last_tx)) {
                        Ok(p) => p["height"].as_u64(),
                        Err(e) if e.status == Some(404) => None,
                        Err(e) => return Err(e),
                    }
                }
            };
            match height {
                Some(h) if h <= final_height => {
                    latencies_ms.push(now.duration_since(sent.at).as_secs_f64() * 1000.0);
                    final_records += sent.count;
                    last_final = now;
                    if proof_txs.len() < 1000 {
                        proof_txs.push((sent.target, sent.last_tx));
                    }
                }
                h => still.push((sent, h)),
            }
        }
        waiting = still;
        if !submitting && waiting.is_empty() {
            break;
        }
        if let Some(end) = submit_end {
            if end.elapsed() > deadline_after_submit {
                return Err(fail(format!(
                    "{} batches were not final {} s after the last submission; is a delegate down? (`hpchain chain status`)",
                    waiting.len(),
                    deadline_after_submit.as_secs()
                )));
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for s in submitters {
        let _ = s.join();
    }
    let submit_seconds = submit_end
        .unwrap_or(last_final)
        .duration_since(start)
        .as_secs_f64();
    let final_seconds = last_final.duration_since(start).as_secs_f64();
    latencies_ms.sort_by(f64::total_cmp);

    // Proofs of this run's records, verified on one core, against the raw
    // signature check measured just before.
    let baseline = ed25519_per_second();
    let mut proofs = Vec::new();
    for (target, tx) in &proof_txs {
        let p = clients[*target].get(&format!("/v1/chain/proof/{tx}"))?;
        let proof = InclusionProof::from_json(&p.to_string())
            .map_err(|e| fail(format!("the proof of {tx} does not parse: {e}")))?;
        proofs.push(proof);
    }
    let proof_rate = proofs_per_second(&proofs, &delegates, false)?;
    let proof_rate_with_sender = proofs_per_second(&proofs, &delegates, true)?;
    let blocks: std::collections::BTreeSet<u64> =
        proofs.iter().map(|p| p.header.header.height).collect();

    let report = json!({
        "targets": options.targets.len(),
        "offered_rate": options.rate,
        "batch": batch,
        "records_submitted": submitted,
        "records_final": final_records,
        "submit_rate": submitted as f64 / submit_seconds,
        "final_rate": final_records as f64 / final_seconds,
        "slot_ms": slot_ms,
        "finality_ms_p50": percentile(&latencies_ms, 0.5),
        "finality_ms_p90": percentile(&latencies_ms, 0.9),
        "finality_ms_max": percentile(&latencies_ms, 1.0),
        "finality_slots_p50": percentile(&latencies_ms, 0.5) / slot_ms,
        "baseline_ed25519_verify_per_s": baseline,
        "proofs_verified_per_s": proof_rate,
        "proofs_verified_with_sender_signature_per_s": proof_rate_with_sender,
        "proofs": proofs.len(),
        "proof_blocks": blocks.len(),
    });
    if json_output {
        println!("{}", serde_json::to_string_pretty(&report).expect("json"));
        return Ok(());
    }
    println!(
        "records: {submitted} submitted in {submit_seconds:.1} s ({:.0}/s), {final_records} final by {final_seconds:.1} s ({:.0}/s sustained)",
        report["submit_rate"].as_f64().unwrap_or(0.0),
        report["final_rate"].as_f64().unwrap_or(0.0)
    );
    println!(
        "submission to finality: p50 {:.0} ms ({:.2} slots), p90 {:.0} ms, max {:.0} ms",
        percentile(&latencies_ms, 0.5),
        percentile(&latencies_ms, 0.5) / slot_ms,
        percentile(&latencies_ms, 0.9),
        percentile(&latencies_ms, 1.0)
    );
    println!(
        "one core: raw ed25519 verify {baseline:.0}/s (baseline); {} inclusion proofs from {} blocks verified at {proof_rate:.0}/s ({:.1}x the baseline), {proof_rate_with_sender:.0}/s also checking each record's own signature ({:.2}x)",
        proofs.len(),
        blocks.len(),
        proof_rate / baseline,
        proof_rate_with_sender / baseline
    );
    Ok(())
}
