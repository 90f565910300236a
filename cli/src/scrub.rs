//! `hpchain volume scrub VOL`: every replica of every object checks every
//! block (head and snapshot versions) against its recorded crc32c, and
//! bad blocks are rewritten from a replica whose copy matches; then the
//! replicas' blake3 digests of each object, taken at the same point of its
//! PG's log, are compared. In steps of [`STEP_OBJECTS`] objects with a
//! progress line, then one report. Exits non-zero when a block could not
//! be repaired (its data lost on every replica, or no good copy reachable
//! now), when replicas differ, or when a replica could not be checked.

use serde_json::{json, Value};
use std::io::Write;
use std::time::Instant;

use crate::client::{ApiClient, CallError};

/// Objects per API request.
const STEP_OBJECTS: u64 = 32;
/// Findings kept for the report.
const FINDINGS_MAX: usize = 1000;

const COUNTS: [&str; 9] = [
    "objects_checked",
    "versions_checked",
    "blocks_checked",
    "blocks_bad",
    "blocks_repaired",
    "blocks_unrepaired",
    "objects_failed",
    "objects_compared",
    "objects_differing",
];
const LISTS: [&str; 6] = [
    "repaired",
    "unrepaired",
    "failed",
    "skipped",
    "differing",
    "compare_skipped",
];

fn failure(message: String, code: &str) -> CallError {
    CallError {
        message,
        code: Some(code.into()),
        status: None,
    }
}

/// Adds one step's answer into the running report.
fn accumulate(report: &mut Value, step: &Value) {
    for key in COUNTS {
        let sum = report[key].as_u64().unwrap_or(0) + step[key].as_u64().unwrap_or(0);
        report[key] = json!(sum);
    }
    for key in LISTS {
        let list = report[key].as_array_mut().expect("list");
        for item in step[key].as_array().into_iter().flatten() {
            if list.len() < FINDINGS_MAX {
                list.push(item.clone());
            }
        }
    }
}

fn finding(f: &Value) -> String {
    format!(
        "object {} {} block {} on node {} disk {} (volume bytes {}..{})",
        f["object"],
        f["version"].as_str().unwrap_or("?"),
        f["block"],
        f["node"],
        f["disk"],
        f["volume_offset"],
        f["volume_offset"].as_u64().unwrap_or(0) + 4096
    )
}

fn print_report(volume: &str, report: &Value) {
    let n = |key: &str| report[key].as_u64().unwrap_or(0);
    println!(
        "scrub of volume {volume}: {} objects, {} versions and {} blocks checked over all replicas in {:.1} s",
        n("objects_checked"),
        n("versions_checked"),
        n("blocks_checked"),
        report["seconds"].as_f64().unwrap_or(0.0)
    );
    println!(
        "bad blocks: {}, repaired: {}, not repairable: {}",
        n("blocks_bad"),
        n("blocks_repaired"),
        n("blocks_unrepaired")
    );
    for f in report["repaired"].as_array().into_iter().flatten() {
        let from = match f["from_node"].as_u64() {
            Some(node) => format!("copy from node {node} disk {}", f["from_disk"]),
            None => "zeroed (no data was recorded there)".into(),
        };
        println!("  repaired {}: {from}", finding(f));
    }
    for f in report["unrepaired"].as_array().into_iter().flatten() {
        let what = if f["lost"].as_bool() == Some(true) {
            "LOST"
        } else {
            "NOT REPAIRED"
        };
        println!(
            "  {what} {}: recorded crc32c {}, the disk holds {}; {}",
            finding(f),
            f["recorded_crc"].as_str().unwrap_or("?"),
            f["actual_crc"].as_str().unwrap_or("?"),
            f["reason"].as_str().unwrap_or("")
        );
    }
    for key in ["failed", "skipped"] {
        for r in report[key].as_array().into_iter().flatten() {
            println!(
                "  not checked: node {} disk {}, {} objects: {}",
                r["node"],
                r["disk"],
                r["objects"],
                r["reason"].as_str().unwrap_or("")
            );
        }
    }
    println!(
        "replicas compared: {} objects, differing: {}",
        n("objects_compared"),
        n("objects_differing")
    );
    for d in report["differing"].as_array().into_iter().flatten() {
        let agreeing: Vec<&str> = d["agreeing"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let against = if agreeing.is_empty() {
            String::new()
        } else {
            format!(" (agreeing: {})", agreeing.join(", "))
        };
        println!(
            "  DIFFERS object {} on node {} disk {}{against}: {}",
            d["object"],
            d["node"],
            d["disk"],
            d["reason"].as_str().unwrap_or("")
        );
    }
    for r in report["compare_skipped"].as_array().into_iter().flatten() {
        let reason = r["reason"].as_str().unwrap_or("");
        match r["node"].as_u64() {
            // Not one replica's: the PG's digest entry itself failed.
            Some(0) | None => println!("  not compared: {reason}"),
            Some(node) => println!(
                "  not compared: node {node} disk {}, {} objects: {reason}",
                r["disk"], r["objects"]
            ),
        }
    }
}

pub fn scrub(api: &ApiClient, volume: &str, json_output: bool) -> Result<(), CallError> {
    let started = Instant::now();
    let mut report = json!({"volume": volume, "total_objects": 0});
    for key in COUNTS {
        report[key] = json!(0);
    }
    for key in LISTS {
        report[key] = json!([]);
    }
    let mut err = std::io::stderr();
    let mut from = 0u64;
    loop {
        let step = api.post(
            &format!("/v1/volumes/{volume}/scrub?from_object={from}&objects={STEP_OBJECTS}"),
            &json!({}),
        )?;
        accumulate(&mut report, &step);
        let next = step["next_object"].as_u64().unwrap_or(from);
        let total = step["total_objects"].as_u64().unwrap_or(0);
        report["total_objects"] = json!(total);
        let percent = if total == 0 {
            100.0
        } else {
            next as f64 * 100.0 / total as f64
        };
        let _ = write!(
            err,
            "\rscrub {volume}: {next} / {total} objects ({percent:.0}%), {} bad, {} repaired {:.1} s   ",
            report["blocks_bad"],
            report["blocks_repaired"],
            started.elapsed().as_secs_f64()
        );
        if step["done"].as_bool() == Some(true) {
            let _ = writeln!(err);
            break;
        }
        if next <= from {
            let _ = writeln!(err);
            return Err(failure(
                format!("scrub {volume}: the cluster made no progress at object {from}; run the command again"),
                "scrub.stalled",
            ));
        }
        from = next;
    }
    report["seconds"] = json!(started.elapsed().as_secs_f64());
    if json_output {
        println!("{}", serde_json::to_string_pretty(&report).expect("json"));
    } else {
        print_report(volume, &report);
    }
    let unrepaired = report["blocks_unrepaired"].as_u64().unwrap_or(0);
    if unrepaired > 0 {
        let lost = report["unrepaired"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|f| f["lost"].as_bool() == Some(true))
            .count();
        let advice = if lost > 0 {
            "LOST blocks have no good copy on any replica: rewrite those volume bytes (from a backup), then scrub again"
        } else {
            "no good copy could be fetched now: scrub again once the PGs' replicas are up"
        };
        return Err(failure(
            format!("scrub {volume}: {unrepaired} blocks could not be repaired (listed above); {advice}"),
            "scrub.unrepaired",
        ));
    }
    let differing = report["objects_differing"].as_u64().unwrap_or(0);
    if differing > 0 {
        return Err(failure(
            format!(
                "scrub {volume}: on {differing} objects a replica holds other data than the others (listed above); the scrub repairs only blocks that fail their own crc32c, so keep the nodes' data directories as they are and report this as a bug"
            ),
            "scrub.replicas_differ",
        ));
    }
    let unchecked = report["skipped"].as_array().map_or(0, Vec::len)
        + report["failed"].as_array().map_or(0, Vec::len)
        + report["compare_skipped"].as_array().map_or(0, Vec::len);
    if unchecked > 0 {
        return Err(failure(
            format!(
                "scrub {volume}: some replicas could not be checked (listed above); bring their nodes back and scrub again"
            ),
            "scrub.incomplete",
        ));
    }
    Ok(())
}
