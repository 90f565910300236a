//! The HP chain's routes: status, accounts, verification, blocks, inclusion
//! proofs, audit records and traceability. Everything here reads the node's
//! own copy of the ledger; only `POST /v1/trace` (signed by the node) and
//! `POST /v1/chain/transactions` (signed by the client, whose key never
//! reaches the node) submit transactions.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hpchain_chain::tx::{format_hp, ReadingLimit, TraceEvent};
use hpchain_chain::{
    Block, Hash32, Ledger, Payload, PublicKey, RecordIndex, Transaction, TxLocation,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::tx_refused;
use super::{body, ApiError, ApiState};
use crate::ledger::now_ms;

/// Most blocks `GET /v1/chain/blocks` returns at once.
pub const BLOCKS_LIMIT_MAX: u64 = 500;
const BLOCKS_LIMIT_DEFAULT: u64 = 20;

pub(super) fn ledger(state: &ApiState) -> Result<&crate::ledger::LedgerNode, ApiError> {
    state.ledger.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "chain.disabled",
            "this node runs no ledger; add a [chain] section (genesis, key) to its config",
        )
    })
}

fn store_error(e: hpchain_chain::Error) -> ApiError {
    if let hpchain_chain::Error::Damaged { .. } = e {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "chain.damaged",
            e.to_string(),
        );
    }
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "chain.store",
        format!("this node's ledger store failed: {e}; run `hpchain chain verify` against this node and ask another node meanwhile"),
    )
}

/// `ms` since the Unix epoch as UTC ISO 8601 (`2026-11-30T18:52:04.123Z`).
pub fn utc_time(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        ms % 1000
    )
}

/// The chain as this node sees it; `delegates` are those of the round the
/// clock is in (the set the next block is checked against), `candidates`
/// rank every candidate by the votes of the head state.
pub(super) async fn chain_status(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let node = ledger(&state)?;
    let (status, slot_time_ms) = {
        let ledger = node.ledger();
        let guard = ledger.lock().expect("ledger lock");
        (guard.status_at(now_ms()), guard.genesis().slot_time_ms)
    };
    let mut out = json!(status);
    out["slot_time_ms"] = json!(slot_time_ms);
    out["auto_repair"] = json!(node.auto_repair());
    out["repairs"] = json!(node.repairs());
    Ok(Json(out))
}

/// An account as of the head of the best chain: what a wallet needs to
/// sign its next transaction. An unknown key is an empty account (balance
/// 0, next nonce 0), which is what a fresh wallet key is.
pub(super) async fn chain_account(
    State(state): State<ApiState>,
    Path(key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let account_key = PublicKey::from_hex(&key).map_err(|_| {
        ApiError::bad_request(
            "chain.bad_key",
            format!("account key {key:?} is not 64 hex digits (an ed25519 public key); `hpchain chain keygen FILE` makes a key pair"),
        )
    })?;
    let ledger = ledger(&state)?.ledger();
    let guard = ledger.lock().expect("ledger lock");
    let head_state = guard.head_state();
    let account = head_state.accounts.get(&account_key);
    let balance = head_state.balance(&account_key);
    let slot = guard.slot_at(now_ms()).max(guard.head_slot());
    let delegates = guard.delegates_for_slot(slot);
    let candidate = head_state.candidates.get(&account_key).map(|c| {
        json!({
            "name": c.name,
            "votes": c.votes,
            "votes_hp": format_hp(c.votes),
            "delegate": delegates.contains(&account_key),
        })
    });
    let votes: Vec<String> = account
        .map(|a| a.votes.iter().map(|k| k.to_hex()).collect())
        .unwrap_or_default();
    Ok(Json(json!({
        "key": account_key.to_hex(),
        "exists": account.is_some(),
        "balance": balance,
        "balance_hp": format_hp(balance),
        "next_nonce": guard.pending_nonce(&account_key),
        "votes": votes,
        "candidate": candidate,
        "head_height": guard.head().1,
        "final_height": guard.final_height(),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SubmitTx {
    /// Hex of `Transaction::encode()`.
    tx: String,
}

fn bad_encoding(why: String) -> ApiError {
    ApiError::bad_request(
        "tx.bad_encoding",
        format!("{why}; send {{\"tx\": HEX}} with the hex of the signed transaction's canonical encoding (docs/ledger-format.md, Transactions)"),
    )
}

/// A transaction signed by the client: checked (signature, chain, nonce,
/// balance, candidates), pooled and gossiped; 202 with its id, final once
/// the delegates confirm it (`GET /v1/chain/proof/{tx}` shows when).
pub(super) async fn chain_submit(
    State(state): State<ApiState>,
    bytes: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let node = ledger(&state)?;
    let SubmitTx { tx } = body(&bytes)?;
    let raw = hex::decode(tx.trim()).map_err(|e| bad_encoding(format!("`tx` is not hex: {e}")))?;
    let tx = Transaction::decode(&raw).map_err(|e| bad_encoding(e.to_string()))?;
    let hash = node.submit_signed(tx).await.map_err(tx_refused)?;
    Ok((StatusCode::ACCEPTED, Json(json!({"tx": hash.to_hex()}))).into_response())
}

#[derive(Deserialize)]
pub(super) struct AuditQuery {
    target: String,
}

pub(super) async fn chain_audit(
    State(state): State<ApiState>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    let ledger = ledger(&state)?.ledger();
    let records = ledger
        .lock()
        .expect("ledger lock")
        .records(RecordIndex::AuditTarget, &q.target)
        .map_err(store_error)?;
    let out: Vec<Value> = records
        .into_iter()
        .map(|(location, tx)| {
            json!({
                "tx": tx.hash().to_hex(),
                "height": location.height,
                "index": location.index,
                "signer": tx.from.to_hex(),
                "payload": tx.payload,
            })
        })
        .collect();
    Ok(Json(Value::Array(out)))
}

/// Re-verifies the stored chain. Damage found is recorded (the node then
/// serves and builds nothing from it) and, with `auto_repair`, repaired
/// from peers by the ledger's own loop within about two seconds.
pub(super) async fn chain_verify(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let node = ledger(&state)?;
    let report = node
        .ledger()
        .lock()
        .expect("ledger lock")
        .check_store()
        .map_err(store_error)?;
    Ok(Json(json!({
        "ok": report.is_ok(),
        "final_height": report.final_height,
        "verified_height": report.verified_height,
        "first_bad": report.first_bad,
        "auto_repair": node.auto_repair(),
    })))
}

/// Verifies the stored chain and repairs what is damaged: index entries
/// and state from this node's own replay, blocks from peers.
pub(super) async fn chain_repair(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let node = ledger(&state)?;
    let report = node
        .ledger()
        .lock()
        .expect("ledger lock")
        .check_store()
        .map_err(store_error)?;
    let repairs = node.repair().await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "chain.repair_failed",
            format!("{e}; start the peers named, or check that they hold this chain"),
        )
    })?;
    Ok(Json(json!({
        "found": report.first_bad,
        "repairs": repairs,
        "ok": node.ledger().lock().expect("ledger lock").damage().is_none(),
    })))
}

fn block_summary(block: &Block, is_final: bool) -> Value {
    let h = &block.header;
    json!({
        "height": h.height,
        "hash": block.hash().to_hex(),
        "slot": h.slot,
        "timestamp_ms": h.timestamp_ms,
        "time": utc_time(h.timestamp_ms),
        "producer": h.producer.to_hex(),
        "prev_hash": h.prev_hash.to_hex(),
        "tx_root": h.tx_root.to_hex(),
        "tx_count": h.tx_count,
        "final": is_final,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BlocksQuery {
    from: Option<u64>,
    limit: Option<u64>,
}

/// Blocks of the best chain, ascending: from `from`, or the latest ones.
pub(super) async fn chain_blocks(
    State(state): State<ApiState>,
    Query(q): Query<BlocksQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(BLOCKS_LIMIT_DEFAULT);
    if limit == 0 || limit > BLOCKS_LIMIT_MAX {
        return Err(ApiError::bad_request(
            "chain.bad_limit",
            format!("limit={limit} is out of range; ask for 1 to {BLOCKS_LIMIT_MAX} blocks and page with from=HEIGHT"),
        ));
    }
    let ledger = ledger(&state)?.ledger();
    let guard = ledger.lock().expect("ledger lock");
    let (_, head) = guard.head();
    let final_height = guard.final_height();
    let from = q
        .from
        .unwrap_or_else(|| head.saturating_sub(limit - 1))
        .max(1);
    let mut blocks = Vec::new();
    let mut height = from;
    while height <= head && (blocks.len() as u64) < limit {
        match guard.block_at(height).map_err(store_error)? {
            Some(b) => blocks.push(block_summary(&b, height <= final_height)),
            None => break,
        }
        height += 1;
    }
    Ok(Json(json!({
        "head_height": head,
        "final_height": final_height,
        "blocks": blocks,
    })))
}

fn tx_json(location: Option<&TxLocation>, tx: &Transaction) -> Value {
    let mut out = json!({
        "tx": tx.hash().to_hex(),
        "kind": tx.payload.kind(),
        "from": tx.from.to_hex(),
        "nonce": tx.nonce,
        "payload": tx.payload,
    });
    if let Some(l) = location {
        out["index"] = json!(l.index);
    }
    out
}

/// One block by height or id, with its transactions.
pub(super) async fn chain_block(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let ledger = ledger(&state)?.ledger();
    let guard = ledger.lock().expect("ledger lock");
    let found = if !id.is_empty() && id.len() < 20 && id.bytes().all(|b| b.is_ascii_digit()) {
        let height: u64 = id.parse().map_err(|_| bad_block_id(&id))?;
        guard
            .block_at(height)
            .map_err(store_error)?
            .map(|b| (b, height <= guard.final_height()))
    } else if id.len() == 64 {
        let hash = Hash32::from_hex(&id).map_err(|_| bad_block_id(&id))?;
        guard.block_by_hash(&hash).map_err(store_error)?
    } else {
        return Err(bad_block_id(&id));
    };
    let Some((block, is_final)) = found else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "chain.block_not_found",
            format!(
                "no block {id} on this node's ledger (head height {}); list blocks with `hpchain chain blocks`",
                guard.head().1
            ),
        ));
    };
    let mut out = block_summary(&block, is_final);
    out["signature"] = json!(block.signature);
    let hash = block.hash();
    out["txs"] = Value::Array(
        block
            .txs
            .iter()
            .enumerate()
            .map(|(i, tx)| {
                let location = TxLocation {
                    height: block.header.height,
                    block: hash,
                    index: i as u32,
                };
                tx_json(Some(&location), tx)
            })
            .collect(),
    );
    Ok(Json(out))
}

fn bad_block_id(id: &str) -> ApiError {
    ApiError::bad_request(
        "chain.bad_block_id",
        format!("block id {id:?} is neither a height nor a 64-hex-digit block hash; list blocks with `hpchain chain blocks`"),
    )
}

/// The self-contained inclusion proof of a transaction: the crate's
/// `InclusionProof` JSON (docs/ledger-format.md) with the record's
/// canonical bytes and where it is, for people and tools.
pub(super) async fn chain_proof(
    State(state): State<ApiState>,
    Path(tx): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let hash = Hash32::from_hex(&tx).map_err(|_| {
        ApiError::bad_request(
            "chain.bad_tx_hash",
            format!("transaction id {tx:?} is not 64 hex digits; `hpchain audit ls` shows the ids"),
        )
    })?;
    let ledger = ledger(&state)?.ledger();
    let guard = ledger.lock().expect("ledger lock");
    let proof = match guard.proof(&hash) {
        Ok(p) => p,
        Err(hpchain_chain::Error::NotFound { .. }) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "chain.tx_not_found",
                format!(
                    "transaction {tx} is not on this node's chain; check the id (`hpchain audit ls` shows them), or wait a few slots: a just-submitted transaction is not in a block yet"
                ),
            ))
        }
        Err(e) => return Err(store_error(e)),
    };
    let height = proof.header.header.height;
    let mut out = serde_json::to_value(&proof).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "chain.proof",
            format!("cannot encode the proof of {tx}: {e}"),
        )
    })?;
    out["tx_hash"] = json!(hash.to_hex());
    out["tx_hex"] = json!(hex_encode(&proof.tx.encode()));
    out["height"] = json!(height);
    out["block"] = json!(proof.header.header.hash().to_hex());
    out["chain_id"] = json!(guard.genesis().chain_id);
    out["final"] = json!(height <= guard.final_height());
    Ok(Json(out))
}

fn hex_encode(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditListQuery {
    volume: Option<String>,
    target: Option<String>,
}

fn audit_json(location: &TxLocation, tx: &Transaction, is_final: bool) -> Option<Value> {
    let Payload::Audit(a) = &tx.payload else {
        return None;
    };
    let details: serde_json::Map<String, Value> = a
        .details
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    Some(json!({
        "tx": tx.hash().to_hex(),
        "height": location.height,
        "index": location.index,
        "block": location.block.to_hex(),
        "final": is_final,
        "at_ms": a.at_ms,
        "time": utc_time(a.at_ms),
        "node": a.actor,
        "signer": tx.from.to_hex(),
        "action": a.action,
        "target": a.target,
        "result": a.result,
        "details": details,
    }))
}

/// Audit records, final ones first in chain order, then those in blocks
/// that are not final yet.
pub(super) async fn audit_list(
    State(state): State<ApiState>,
    Query(q): Query<AuditListQuery>,
) -> Result<Json<Value>, ApiError> {
    let target = match (q.volume, q.target) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "request.conflicting_filters",
                "give volume=NAME or target=KIND/NAME, not both",
            ))
        }
        (Some(v), None) => Some(format!("volume/{v}")),
        (None, t) => t,
    };
    let ledger = ledger(&state)?.ledger();
    let guard = ledger.lock().expect("ledger lock");
    let records = match &target {
        Some(t) => guard.records(RecordIndex::AuditTarget, t),
        None => guard.records_all(RecordIndex::AuditTarget),
    }
    .map_err(store_error)?;
    let mut out: Vec<Value> = records
        .iter()
        .filter_map(|(l, tx)| audit_json(l, tx, true))
        .collect();
    out.extend(unfinal_audits(&guard, target.as_deref()));
    Ok(Json(Value::Array(out)))
}

fn unfinal_audits(ledger: &Ledger, target: Option<&str>) -> Vec<Value> {
    ledger
        .unfinal_txs()
        .iter()
        .filter(|(_, tx)| match (&tx.payload, target) {
            (Payload::Audit(a), Some(t)) => a.target == t,
            (Payload::Audit(_), None) => true,
            _ => false,
        })
        .filter_map(|(l, tx)| audit_json(l, tx, false))
        .collect()
}

/// `POST /v1/trace`: one event, or `{"events": [...]}` (at most
/// [`SUBMIT_BATCH_MAX`](crate::ledger::SUBMIT_BATCH_MAX)) recorded in order
/// and gossiped in one message: what an ERP import or a bench sends.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TraceBatch {
    events: Vec<TraceEvent>,
}

pub(super) async fn trace_add(
    State(state): State<ApiState>,
    bytes: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let node = ledger(&state)?;
    // Parsed once; a batch of 10,000 events is megabytes of JSON.
    let value = body::<Value>(&bytes)?;
    let is_batch = value.get("events").is_some();
    let invalid = |e: serde_json::Error| {
        ApiError::bad_request("request.invalid_body", format!("request body: {e}"))
    };
    let events = if is_batch {
        serde_json::from_value::<TraceBatch>(value)
            .map_err(invalid)?
            .events
    } else {
        vec![serde_json::from_value::<TraceEvent>(value).map_err(invalid)?]
    };
    let payloads = events.into_iter().map(Payload::Trace).collect();
    let hashes = node.submit_many(payloads).await.map_err(|e| {
        if e.busy {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "chain.busy", e.to_string())
        } else {
            ApiError::bad_request(
                "trace.refused",
                format!("{e}; fix the record named and send it and those after it again"),
            )
        }
    })?;
    // Accepted: final once the delegates confirm it (a few slots).
    let answer = if is_batch {
        json!({"txs": hashes.iter().map(|h| h.to_hex()).collect::<Vec<_>>()})
    } else {
        json!({"tx": hashes[0].to_hex()})
    };
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}

pub(super) async fn trace_show(
    State(state): State<ApiState>,
    Path(batch): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let ledger = ledger(&state)?.ledger();
    let guard = ledger.lock().expect("ledger lock");
    let events: Vec<Value> = guard
        .trace_event_txs(&batch)
        .map_err(store_error)?
        .into_iter()
        .map(|(location, tx, event)| {
            json!({"tx": tx.to_hex(), "height": location.height, "index": location.index, "event": event})
        })
        .collect();
    let upstream = guard.trace_upstream(&batch).map_err(store_error)?;
    let downstream = guard.trace_downstream(&batch).map_err(store_error)?;
    Ok(Json(json!({
        "batch_id": batch,
        "events": events,
        "upstream": upstream,
        "downstream": downstream,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RangesQuery {
    ranges: Option<String>,
}

/// `temperature:0:4:C,humidity:30:90:%RH` -> limits in thousandths.
pub fn parse_ranges(text: &str) -> Result<Vec<ReadingLimit>, String> {
    let milli = |s: &str| -> Option<i64> {
        let v: f64 = s.trim().parse().ok()?;
        (v.is_finite() && v.abs() < 9e15).then(|| (v * 1000.0).round() as i64)
    };
    text.split(',')
        .filter(|r| !r.trim().is_empty())
        .map(|r| {
            let bad = || {
                format!("range {r:?} must look like NAME:MIN:MAX:UNIT with MIN <= MAX, e.g. temperature:0:4:C")
            };
            let parts: Vec<&str> = r.trim().split(':').collect();
            let [name, min, max, unit] = parts[..] else {
                return Err(bad());
            };
            let (Some(min_milli), Some(max_milli)) = (milli(min), milli(max)) else {
                return Err(bad());
            };
            if name.is_empty() || min_milli > max_milli {
                return Err(bad());
            }
            Ok(ReadingLimit {
                name: name.to_string(),
                unit: unit.to_string(),
                min_milli,
                max_milli,
            })
        })
        .collect()
}

#[derive(Clone, Copy)]
enum Direction {
    Upstream,
    Downstream,
}

fn trace_walk(
    state: &ApiState,
    batch: String,
    ranges: Option<String>,
    direction: Direction,
) -> Result<Json<Value>, ApiError> {
    let limits = parse_ranges(ranges.as_deref().unwrap_or(""))
        .map_err(|m| ApiError::bad_request("trace.bad_range", m))?;
    let ledger = ledger(state)?.ledger();
    let guard = ledger.lock().expect("ledger lock");
    let related = match direction {
        Direction::Upstream => guard.trace_upstream(&batch),
        Direction::Downstream => guard.trace_downstream(&batch),
    }
    .map_err(store_error)?;
    let mut breaches_total = 0usize;
    let mut batches = Vec::with_capacity(related.len() + 1);
    for b in std::iter::once(batch.clone()).chain(related) {
        let events: Vec<Value> = guard
            .trace_event_txs(&b)
            .map_err(store_error)?
            .into_iter()
            .map(|(location, tx, event)| {
                let breaches = event.breaches(&limits);
                breaches_total += breaches.len();
                json!({
                    "tx": tx.to_hex(),
                    "height": location.height,
                    "index": location.index,
                    "block": location.block.to_hex(),
                    "proof": format!("/v1/chain/proof/{}", tx.to_hex()),
                    "time": utc_time(event.at_ms),
                    "event": event,
                    "breaches": breaches,
                })
            })
            .collect();
        batches.push(json!({"batch_id": b, "events": events}));
    }
    Ok(Json(json!({
        "batch_id": batch,
        "direction": match direction {
            Direction::Upstream => "upstream",
            Direction::Downstream => "downstream",
        },
        "ranges": limits,
        "breaches": breaches_total,
        "batches": batches,
    })))
}

/// The batch and every batch it was made from, transitively, with each
/// final event, a reference to its proof and its out-of-range readings.
pub(super) async fn trace_upstream(
    State(state): State<ApiState>,
    Path(batch): Path<String>,
    Query(q): Query<RangesQuery>,
) -> Result<Json<Value>, ApiError> {
    trace_walk(&state, batch, q.ranges, Direction::Upstream)
}

/// The batch and every batch made from it, transitively: the recall set.
pub(super) async fn trace_downstream(
    State(state): State<ApiState>,
    Path(batch): Path<String>,
    Query(q): Query<RangesQuery>,
) -> Result<Json<Value>, ApiError> {
    trace_walk(&state, batch, q.ranges, Direction::Downstream)
}

#[cfg(test)]
mod tests {
    use super::{parse_ranges, utc_time};

    #[test]
    fn utc_time_formats_known_instants() {
        assert_eq!(utc_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc_time(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(utc_time(1_800_000_000_123), "2027-01-15T08:00:00.123Z");
    }

    #[test]
    fn ranges_parse_into_thousandths_and_bad_ones_are_named() {
        let r = parse_ranges("temperature:0:4.5:C,humidity:30:90:%RH").unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].min_milli, r[0].max_milli), (0, 4500));
        assert_eq!(r[1].unit, "%RH");
        assert!(parse_ranges("").unwrap().is_empty());
        let e = parse_ranges("temperature:4:0:C").unwrap_err();
        assert!(
            e.contains("temperature:4:0:C") && e.contains("NAME:MIN:MAX:UNIT"),
            "{e}"
        );
        assert!(parse_ranges("temperature:x:4:C").is_err());
        assert!(parse_ranges("temperature:0:4").is_err());
    }
}
