//! `hpchain snap ...`, `hpchain volume clone|flatten|children|qos` and
//! `hpchain pool qos`, over the management API.
//!
//! Rollback and flatten touch every object, so they go in steps of
//! [`STEP_OBJECTS`] objects with a progress line; an interrupted flatten
//! resumes where any later run finds work left (done objects are skipped).

use serde_json::{json, Map, Value};
use std::io::Write;
use std::time::Instant;

use crate::client::{ApiClient, CallError};
use crate::table;
use crate::units::format_size;

/// Objects per API request of a rollback or flatten.
const STEP_OBJECTS: u64 = 32;

fn usage_error(message: String) -> CallError {
    CallError {
        message,
        code: Some("request.invalid".into()),
        status: None,
    }
}

/// Splits `VOL@SNAP`.
pub fn split_snapshot(spec: &str) -> Result<(&str, &str), CallError> {
    match spec.split_once('@') {
        Some((volume, snapshot)) if !volume.is_empty() && !snapshot.is_empty() => {
            Ok((volume, snapshot))
        }
        _ => Err(usage_error(format!(
            "{spec:?} is not VOLUME@SNAPSHOT; name a snapshot like demo@before-upgrade"
        ))),
    }
}

fn bytes(v: &Value) -> String {
    v.as_u64().map(format_size).unwrap_or_else(|| "-".into())
}

pub fn create(api: &ApiClient, spec: &str, json_output: bool) -> Result<(), CallError> {
    let (volume, snapshot) = split_snapshot(spec)?;
    let created = api.post(
        &format!("/v1/volumes/{volume}/snapshots"),
        &json!({ "name": snapshot }),
    )?;
    if json_output {
        println!("{}", serde_json::to_string_pretty(&created).expect("json"));
    } else {
        println!(
            "snapshot {volume}@{snapshot} taken (id {}, {})",
            created["id"],
            bytes(&created["size_bytes"])
        );
    }
    Ok(())
}

pub fn ls(api: &ApiClient, volume: &str, usage: bool, json_output: bool) -> Result<(), CallError> {
    let path = if usage {
        format!("/v1/volumes/{volume}/snapshots?usage=true")
    } else {
        format!("/v1/volumes/{volume}/snapshots")
    };
    let snapshots = api.get(&path)?;
    if json_output {
        println!(
            "{}",
            serde_json::to_string_pretty(&snapshots).expect("json")
        );
        return Ok(());
    }
    let rows: Vec<Vec<String>> = snapshots
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let children: Vec<String> = s["children"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c.as_str().map(str::to_string))
                .collect();
            let mut row = vec![
                s["id"].to_string(),
                s["name"].as_str().unwrap_or("-").to_string(),
                bytes(&s["size_bytes"]),
                if s["protected"].as_bool() == Some(true) {
                    "yes".into()
                } else {
                    "no".into()
                },
                if children.is_empty() {
                    "-".into()
                } else {
                    children.join(",")
                },
            ];
            if usage {
                row.push(bytes(&s["exclusive_bytes"]));
                row.push(bytes(&s["shared_bytes"]));
            }
            row
        })
        .collect();
    if usage {
        table::print(
            &[
                "ID",
                "NAME",
                "SIZE",
                "PROTECTED",
                "CLONES",
                "EXCLUSIVE",
                "SHARED",
            ],
            &rows,
        );
    } else {
        table::print(&["ID", "NAME", "SIZE", "PROTECTED", "CLONES"], &rows);
    }
    Ok(())
}

pub fn rm(api: &ApiClient, spec: &str) -> Result<(), CallError> {
    let (volume, snapshot) = split_snapshot(spec)?;
    api.delete(&format!("/v1/volumes/{volume}/snapshots/{snapshot}"))?;
    println!("snapshot {volume}@{snapshot} removed");
    Ok(())
}

pub fn protect(api: &ApiClient, spec: &str, protected: bool) -> Result<(), CallError> {
    let (volume, snapshot) = split_snapshot(spec)?;
    let verb = if protected { "protect" } else { "unprotect" };
    api.post(
        &format!("/v1/volumes/{volume}/snapshots/{snapshot}/{verb}"),
        &json!({}),
    )?;
    println!("snapshot {volume}@{snapshot} {verb}ed");
    Ok(())
}

/// Drives an object walk endpoint in steps, drawing progress on stderr.
fn stepped(api: &ApiClient, path: &str, what: &str) -> Result<(), CallError> {
    let started = Instant::now();
    let mut from = 0u64;
    let mut err = std::io::stderr();
    loop {
        let answer = api.post(
            &format!("{path}?from_object={from}&objects={STEP_OBJECTS}"),
            &json!({}),
        )?;
        let next = answer["next_object"].as_u64().unwrap_or(from);
        let total = answer["total_objects"].as_u64().unwrap_or(0);
        let percent = if total == 0 {
            100.0
        } else {
            next as f64 * 100.0 / total as f64
        };
        let _ = write!(
            err,
            "\r{what}: {next} / {total} objects ({percent:.0}%) {:.1} s   ",
            started.elapsed().as_secs_f64()
        );
        if answer["done"].as_bool() == Some(true) {
            let _ = writeln!(err);
            return Ok(());
        }
        if next <= from {
            let _ = writeln!(err);
            return Err(usage_error(format!(
                "{what}: the cluster made no progress at object {from}; run the command again"
            )));
        }
        from = next;
    }
}

pub fn anchor(api: &ApiClient, spec: &str, json_output: bool) -> Result<(), CallError> {
    let (volume, snapshot) = split_snapshot(spec)?;
    let answer = api.post(
        &format!("/v1/volumes/{volume}/snapshots/{snapshot}/anchor"),
        &json!({}),
    )?;
    if json_output {
        println!("{}", serde_json::to_string_pretty(&answer).expect("json"));
    } else {
        println!(
            "snapshot {volume}@{snapshot}: digest {} over {}, anchored by tx {} (final after a few slots; `hpchain chain proof {}` then proves it)",
            answer["digest"].as_str().unwrap_or("-"),
            bytes(&answer["size_bytes"]),
            answer["tx"].as_str().unwrap_or("-"),
            answer["tx"].as_str().unwrap_or("-"),
        );
    }
    Ok(())
}

pub fn rollback(api: &ApiClient, spec: &str) -> Result<(), CallError> {
    let (volume, snapshot) = split_snapshot(spec)?;
    stepped(
        api,
        &format!("/v1/volumes/{volume}/snapshots/{snapshot}/rollback"),
        &format!("rollback {volume} to {snapshot}"),
    )?;
    println!("volume {volume} rolled back to {snapshot}");
    Ok(())
}

pub fn clone(api: &ApiClient, spec: &str, name: &str, json_output: bool) -> Result<(), CallError> {
    let (volume, snapshot) = split_snapshot(spec)?;
    let created = api.post(
        &format!("/v1/volumes/{volume}/snapshots/{snapshot}/clone"),
        &json!({ "name": name }),
    )?;
    if json_output {
        println!("{}", serde_json::to_string_pretty(&created).expect("json"));
    } else {
        println!(
            "volume {name} cloned from {volume}@{snapshot} ({})",
            bytes(&created["size_bytes"])
        );
    }
    Ok(())
}

pub fn flatten(api: &ApiClient, volume: &str) -> Result<(), CallError> {
    stepped(
        api,
        &format!("/v1/volumes/{volume}/flatten"),
        &format!("flatten {volume}"),
    )?;
    println!("volume {volume} flattened: it no longer depends on its parent");
    Ok(())
}

pub fn children(api: &ApiClient, spec: &str, json_output: bool) -> Result<(), CallError> {
    let (volume, snapshot) = split_snapshot(spec)?;
    let children = api.get(&format!(
        "/v1/volumes/{volume}/snapshots/{snapshot}/children"
    ))?;
    if json_output {
        println!("{}", serde_json::to_string_pretty(&children).expect("json"));
        return Ok(());
    }
    for child in children.as_array().into_iter().flatten() {
        println!("{}", child["name"].as_str().unwrap_or("-"));
    }
    Ok(())
}

/// QoS flags as given: each `RATE[:BURST[:SECONDS]]`, `0` lifts a limit.
#[derive(Default)]
pub struct QosFlags {
    pub iops: Option<String>,
    pub read_iops: Option<String>,
    pub write_iops: Option<String>,
    pub bps: Option<String>,
    pub read_bps: Option<String>,
    pub write_bps: Option<String>,
    pub clear: bool,
}

impl QosFlags {
    fn is_empty(&self) -> bool {
        !self.clear
            && [
                &self.iops,
                &self.read_iops,
                &self.write_iops,
                &self.bps,
                &self.read_bps,
                &self.write_bps,
            ]
            .iter()
            .all(|f| f.is_none())
    }

    /// The limits after applying the flags to `current`.
    fn merged(&self, current: &Value) -> Result<Value, CallError> {
        let mut out = if self.clear {
            Map::new()
        } else {
            current.as_object().cloned().unwrap_or_default()
        };
        for (key, flag) in [
            ("total_iops", &self.iops),
            ("read_iops", &self.read_iops),
            ("write_iops", &self.write_iops),
            ("total_bps", &self.bps),
            ("read_bps", &self.read_bps),
            ("write_bps", &self.write_bps),
        ] {
            if let Some(text) = flag {
                out.insert(key.to_string(), parse_limit(key, text)?);
            }
        }
        Ok(Value::Object(out))
    }
}

/// The QoS limits the flags give a new volume (none given: unlimited).
pub fn qos_body(flags: QosFlags) -> Result<Value, CallError> {
    flags.merged(&json!({}))
}

/// `RATE[:BURST[:SECONDS]]` with binary units (`50M` = 50 MiB).
fn parse_limit(key: &str, text: &str) -> Result<Value, CallError> {
    let mut parts = text.split(':');
    let rate = |t: Option<&str>| -> Result<u64, CallError> {
        match t {
            None | Some("") => Ok(0),
            Some(t) => hpchain_engine::volume::qos::parse_rate(t)
                .map_err(|e| usage_error(format!("--{}: {e}", key.replace('_', "-")))),
        }
    };
    let value = json!({
        "rate": rate(parts.next())?,
        "burst": rate(parts.next())?,
        "burst_seconds": rate(parts.next())?,
    });
    if parts.next().is_some() {
        return Err(usage_error(format!(
            "{text:?} has too many parts; write RATE, RATE:BURST or RATE:BURST:SECONDS"
        )));
    }
    Ok(value)
}

fn print_limits(title: &str, limits: &Value) {
    println!("{title}:");
    let mut any = false;
    for key in [
        "total_iops",
        "read_iops",
        "write_iops",
        "total_bps",
        "read_bps",
        "write_bps",
    ] {
        let l = &limits[key];
        let rate = l["rate"].as_u64().unwrap_or(0);
        if rate == 0 {
            continue;
        }
        any = true;
        let shown = |v: u64| {
            if key.ends_with("bps") {
                format!("{}/s", format_size(v))
            } else {
                format!("{v}/s")
            }
        };
        let burst = l["burst"].as_u64().unwrap_or(0);
        if burst > 0 {
            println!(
                "  {key:<10} {} (burst {} for {} s)",
                shown(rate),
                shown(burst),
                l["burst_seconds"].as_u64().unwrap_or(1).max(1)
            );
        } else {
            println!("  {key:<10} {}", shown(rate));
        }
    }
    if !any {
        println!("  unlimited");
    }
}

/// Shows a volume's QoS, or changes the limits the flags name (the others
/// stay as they are).
pub fn volume_qos(
    api: &ApiClient,
    volume: &str,
    flags: QosFlags,
    json_output: bool,
) -> Result<(), CallError> {
    let path = format!("/v1/volumes/{volume}/qos");
    let current = api.get(&path)?;
    let shown = if flags.is_empty() {
        current
    } else {
        api.put(&path, &flags.merged(&current["volume"])?)?
    };
    if json_output {
        println!("{}", serde_json::to_string_pretty(&shown).expect("json"));
    } else {
        print_limits(&format!("volume {volume}"), &shown["volume"]);
        print_limits("pool default", &shown["pool_default"]);
        print_limits("in effect", &shown["effective"]);
    }
    Ok(())
}

pub fn pool_qos(
    api: &ApiClient,
    pool: &str,
    flags: QosFlags,
    json_output: bool,
) -> Result<(), CallError> {
    let info = api.get(&format!("/v1/pools/{pool}"))?;
    let current = info["qos_default"].clone();
    let shown = if flags.is_empty() {
        json!({"pool": pool, "qos_default": current})
    } else {
        api.put(&format!("/v1/pools/{pool}/qos"), &flags.merged(&current)?)?
    };
    if json_output {
        println!("{}", serde_json::to_string_pretty(&shown).expect("json"));
    } else {
        print_limits(
            &format!("pool {pool} default for its volumes"),
            &shown["qos_default"],
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_specs_need_both_halves() {
        assert_eq!(split_snapshot("demo@s1").unwrap(), ("demo", "s1"));
        for bad in ["demo", "@s1", "demo@", ""] {
            let e = split_snapshot(bad).unwrap_err();
            assert!(e.message.contains("VOLUME@SNAPSHOT"), "{}", e.message);
        }
    }

    #[test]
    fn qos_flags_change_only_the_limits_they_name() {
        let flags = QosFlags {
            iops: Some("500:2000:10".into()),
            write_bps: Some("50M".into()),
            ..QosFlags::default()
        };
        let current = json!({"read_iops": {"rate": 7, "burst": 0, "burst_seconds": 0}});
        let merged = flags.merged(&current).unwrap();
        assert_eq!(merged["read_iops"]["rate"], 7);
        assert_eq!(merged["total_iops"]["rate"], 500);
        assert_eq!(merged["total_iops"]["burst"], 2000);
        assert_eq!(merged["total_iops"]["burst_seconds"], 10);
        assert_eq!(merged["write_bps"]["rate"], 50 << 20);
        let cleared = QosFlags {
            clear: true,
            ..QosFlags::default()
        }
        .merged(&current)
        .unwrap();
        assert_eq!(cleared, json!({}));
        assert!(parse_limit("total_iops", "1:2:3:4").is_err());
        let e = parse_limit("total_iops", "lots").unwrap_err();
        assert!(e.message.contains("lots"), "{}", e.message);
    }
}
