//! The admin commands: cluster, pool and volume, over the management API.
//! Tables for people, `--json` for scripts.

use serde_json::{json, Value};

use crate::client::{ApiClient, CallError};
use crate::table;
use crate::units::{format_size, parse_size};

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn emit(json_output: bool, value: &Value, human: impl FnOnce(&Value)) {
    if json_output {
        println!("{}", serde_json::to_string_pretty(value).expect("json"));
    } else {
        human(value);
    }
}

pub fn cluster_status(api: &ApiClient, json_output: bool) -> Result<(), CallError> {
    let status = api.get("/v1/cluster")?;
    emit(json_output, &status, |s| {
        println!(
            "epoch {}  map leader: node {}  pools: {}  volumes: {}",
            s["epoch"],
            text(&s["map_leader"]),
            s["pools"],
            s["volumes"]
        );
        let rows: Vec<Vec<String>> = s["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|n| {
                vec![
                    text(&n["id"]),
                    text(&n["name"]),
                    if n["up"].as_bool() == Some(true) {
                        "up".into()
                    } else {
                        "down".into()
                    },
                    text(&n["api_addr"]),
                    text(&n["iscsi_addr"]),
                    n["disks"]
                        .as_array()
                        .map(|d| d.len())
                        .unwrap_or(0)
                        .to_string(),
                ]
            })
            .collect();
        table::print(&["ID", "NAME", "STATE", "API", "ISCSI", "DISKS"], &rows);
        println!("placement groups: {}", pg_summary(&s["pgs"]));
    });
    Ok(())
}

/// `{"active+clean": 30, "active+degraded": 2}` -> "30 active+clean, 2 active+degraded".
fn pg_summary(counts: &Value) -> String {
    let parts: Vec<String> = counts
        .as_object()
        .into_iter()
        .flatten()
        .map(|(state, n)| format!("{n} {state}"))
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

pub fn pg_ls(api: &ApiClient, pool: Option<&str>, json_output: bool) -> Result<(), CallError> {
    let path = match pool {
        Some(p) => format!("/v1/pgs?pool={p}"),
        None => "/v1/pgs".to_string(),
    };
    let answer = api.get(&path)?;
    emit(json_output, &answer, |a| {
        let rows: Vec<Vec<String>> = a["pgs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|pg| {
                let replicas: Vec<String> = pg["replicas"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| {
                        format!(
                            "disk{}@node{}{}{}{}",
                            r["disk"],
                            text(&r["node"]),
                            if r["up"] == true { "" } else { " DOWN" },
                            if r["learner"] == true { " learner" } else { "" },
                            match r["behind"].as_u64() {
                                Some(0) | None => String::new(),
                                Some(n) => format!(" -{n}"),
                            }
                        )
                    })
                    .collect();
                vec![
                    format!("{}.{}", text(&pg["pool"]), pg["pg"]),
                    text(&pg["state"]),
                    text(&pg["leader_node"]),
                    text(&pg["term"]),
                    text(&pg["commit"]),
                    replicas.join(", "),
                ]
            })
            .collect();
        table::print(
            &["PG", "STATE", "LEADER", "TERM", "COMMIT", "REPLICAS"],
            &rows,
        );
        println!("{}", pg_summary(&a["summary"]));
    });
    Ok(())
}

pub struct PoolSpec {
    pub name: String,
    pub size: u32,
    pub min_size: u32,
    pub pg_num: u32,
    pub failure_domain: String,
    pub object_size: String,
}

fn size_arg(text: &str) -> Result<u64, CallError> {
    parse_size(text).map_err(|message| CallError {
        message,
        code: Some("request.bad_size".into()),
        status: None,
    })
}

pub fn pool_create(api: &ApiClient, spec: PoolSpec, json_output: bool) -> Result<(), CallError> {
    let body = json!({
        "name": spec.name,
        "size": spec.size,
        "min_size": spec.min_size,
        "pg_num": spec.pg_num,
        "failure_domain": spec.failure_domain,
        "object_size_bytes": size_arg(&spec.object_size)?,
    });
    let pool = api.post("/v1/pools", &body)?;
    emit(json_output, &pool, |p| {
        println!(
            "pool {} created: {} replicas (min {}), {} PGs, one replica per {}",
            text(&p["name"]),
            p["size"],
            p["min_size"],
            p["pg_num"],
            text(&p["failure_domain"])
        )
    });
    Ok(())
}

pub fn pool_ls(api: &ApiClient, json_output: bool) -> Result<(), CallError> {
    let pools = api.get("/v1/pools")?;
    emit(json_output, &pools, |ps| {
        let rows: Vec<Vec<String>> = ps
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                vec![
                    text(&p["name"]),
                    text(&p["size"]),
                    text(&p["min_size"]),
                    text(&p["pg_num"]),
                    text(&p["failure_domain"]),
                    format_size(p["object_size_bytes"].as_u64().unwrap_or(0)),
                    text(&p["volumes"]),
                ]
            })
            .collect();
        table::print(
            &["NAME", "SIZE", "MIN", "PGS", "DOMAIN", "OBJECT", "VOLUMES"],
            &rows,
        );
    });
    Ok(())
}

/// One pool with its capacity: usable bytes are the disks' bytes over the
/// replica count; provisioned is what its thin volumes promise.
pub fn pool_info(api: &ApiClient, name: &str, json_output: bool) -> Result<(), CallError> {
    let pool = api.get(&format!("/v1/pools/{name}"))?;
    emit(json_output, &pool, |p| {
        let c = &p["capacity"];
        let size = |v: &Value| format_size(v.as_u64().unwrap_or(0));
        println!(
            "pool {}: {} replicas (min {}), {} PGs, failure domain {}, objects of {}, {} volume(s)",
            text(&p["name"]),
            text(&p["size"]),
            text(&p["min_size"]),
            text(&p["pg_num"]),
            text(&p["failure_domain"]),
            size(&p["object_size_bytes"]),
            text(&p["volumes"]),
        );
        println!(
            "capacity: {} usable, {} available, {} provisioned (thin)",
            size(&c["bytes"]),
            size(&c["available_bytes"]),
            size(&c["provisioned_bytes"]),
        );
        if c["nodes_missing"].as_array().is_some_and(|m| !m.is_empty()) {
            println!(
                "  nodes {} did not answer: their disks are not counted",
                c["nodes_missing"]
            );
        }
    });
    Ok(())
}

pub fn pool_rm(api: &ApiClient, name: &str) -> Result<(), CallError> {
    api.delete(&format!("/v1/pools/{name}"))?;
    println!("pool {name} deleted");
    Ok(())
}

pub fn volume_create(
    api: &ApiClient,
    name: &str,
    pool: &str,
    size: &str,
    block_size: u32,
    qos: Value,
    json_output: bool,
) -> Result<(), CallError> {
    let body = json!({"name": name, "pool": pool, "size_bytes": size_arg(size)?, "block_size": block_size, "qos": qos});
    let volume = api.post("/v1/volumes", &body)?;
    emit(json_output, &volume, |v| {
        println!(
            "volume {} created in pool {}: {} (thin)",
            text(&v["name"]),
            text(&v["pool"]),
            format_size(v["size_bytes"].as_u64().unwrap_or(0))
        )
    });
    Ok(())
}

fn volume_row(v: &Value) -> Vec<String> {
    vec![
        text(&v["name"]),
        text(&v["pool"]),
        format_size(v["size_bytes"].as_u64().unwrap_or(0)),
        v["allocated_bytes"]
            .as_u64()
            .map(format_size)
            .unwrap_or_else(|| "-".into()),
        text(&v["block_size"]),
        text(&v["id"]),
    ]
}

const VOLUME_HEADER: [&str; 6] = ["NAME", "POOL", "SIZE", "ALLOCATED", "BLOCK", "ID"];

pub fn volume_ls(api: &ApiClient, json_output: bool) -> Result<(), CallError> {
    let volumes = api.get("/v1/volumes")?;
    emit(json_output, &volumes, |vs| {
        let rows: Vec<Vec<String>> = vs
            .as_array()
            .into_iter()
            .flatten()
            .map(volume_row)
            .collect();
        table::print(&VOLUME_HEADER, &rows);
    });
    Ok(())
}

pub fn volume_info(api: &ApiClient, name: &str, json_output: bool) -> Result<(), CallError> {
    let volume = api.get(&format!("/v1/volumes/{name}"))?;
    emit(json_output, &volume, |v| {
        table::print(&VOLUME_HEADER, &[volume_row(v)]);
        if let Some(parent) = v["parent"].as_object() {
            println!(
                "clone of {}@{} (reads through for the first {})",
                text(&parent["volume"]),
                text(&parent["snapshot"]),
                format_size(parent["overlap_bytes"].as_u64().unwrap_or(0))
            );
        }
        println!("snapshots: {}", text(&v["snapshots"]));
        let effective = &v["qos"]["effective"];
        let limited: Vec<String> = effective
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, l)| {
                let rate = l["rate"].as_u64().filter(|&r| r > 0)?;
                Some(if k.ends_with("bps") {
                    format!("{k} {}/s", format_size(rate))
                } else {
                    format!("{k} {rate}/s")
                })
            })
            .collect();
        if limited.is_empty() {
            println!("qos: unlimited");
        } else {
            println!("qos: {}", limited.join(", "));
        }
    });
    Ok(())
}

pub fn volume_resize(
    api: &ApiClient,
    name: &str,
    size: &str,
    allow_shrink: bool,
    json_output: bool,
) -> Result<(), CallError> {
    let volume = api.patch(
        &format!("/v1/volumes/{name}"),
        &json!({"size_bytes": size_arg(size)?, "allow_shrink": allow_shrink}),
    )?;
    emit(json_output, &volume, |v| {
        println!(
            "volume {name} is now {}",
            format_size(v["size_bytes"].as_u64().unwrap_or(0))
        )
    });
    Ok(())
}

pub fn volume_rm(api: &ApiClient, name: &str) -> Result<(), CallError> {
    api.delete(&format!("/v1/volumes/{name}"))?;
    println!("volume {name} deleted");
    Ok(())
}

pub fn chain_status(api: &ApiClient, json_output: bool) -> Result<(), CallError> {
    let status = api.get("/v1/chain")?;
    emit(json_output, &status, |s| {
        println!(
            "chain {} ({})",
            text(&s["chain_id"]),
            text(&s["chain_hash"])
        );
        println!(
            "head   height {} slot {}  {}",
            s["head_height"],
            s["head_slot"],
            text(&s["head_hash"])
        );
        println!(
            "final  height {}  {}",
            s["final_height"],
            text(&s["final_hash"])
        );
        println!(
            "round  {}: {} delegates (a block is final once {} of them built on or confirmed it); pending txs {}",
            s["round"],
            s["delegates"].as_array().map(|d| d.len()).unwrap_or(0),
            s["finality_threshold"],
            s["pending_txs"]
        );
        if let Some(bad) = s["damaged"].as_object() {
            println!(
                "DAMAGED at block {} ({}): serving and building nothing from it until repaired{}",
                bad["height"],
                text(&bad["code"]),
                if s["auto_repair"] == true {
                    " (repairing from peers)"
                } else {
                    "; run `hpchain chain repair`"
                }
            );
        }
        if let Some(last) = s["repairs"].as_array().and_then(|r| r.last()) {
            println!(
                "last repair: {} {} from node {}",
                text(&last["what"]),
                last["heights"],
                last["from_node"]
            );
        }
        let rows: Vec<Vec<String>> = s["candidates"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                vec![
                    text(&c["key"]),
                    text(&c["name"]),
                    text(&c["votes_hp"]),
                    if c["delegate"] == json!(true) {
                        "delegate".into()
                    } else {
                        "candidate".into()
                    },
                ]
            })
            .collect();
        table::print(&["KEY", "NAME", "VOTES (HP)", "ROLE"], &rows);
    });
    Ok(())
}

pub fn chain_audit(api: &ApiClient, target: &str, json_output: bool) -> Result<(), CallError> {
    let records = api.get(&format!("/v1/chain/audit?target={target}"))?;
    emit(json_output, &records, |rs| {
        let rows: Vec<Vec<String>> = rs
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let p = &r["payload"];
                vec![
                    text(&r["height"]),
                    text(&p["at_ms"]),
                    text(&p["actor"]),
                    text(&p["action"]),
                    text(&p["result"]),
                    text(&r["tx"])[..16.min(text(&r["tx"]).len())].to_string(),
                ]
            })
            .collect();
        table::print(
            &["HEIGHT", "AT_MS", "ACTOR", "ACTION", "RESULT", "TX"],
            &rows,
        );
    });
    Ok(())
}

pub fn chain_verify(api: &ApiClient, json_output: bool) -> Result<(), CallError> {
    let report = api.get("/v1/chain/verify")?;
    print_verify_report(json_output, &report)?;
    if report["ok"] != true && report["auto_repair"] == true {
        eprintln!("the node serves and builds nothing from that block, and repairs it from its peers now (`hpchain chain status` shows the repair)");
    }
    Ok(())
}

/// Prints a chain verification report; an error if it found damage.
pub fn print_verify_report(json_output: bool, report: &Value) -> Result<(), CallError> {
    emit(json_output, report, |r| {
        if r["ok"] == true {
            println!("ledger verified up to final height {}", r["final_height"]);
        } else {
            println!(
                "ledger does NOT verify: block {} fails with {}: {}",
                r["first_bad"]["height"],
                text(&r["first_bad"]["code"]),
                text(&r["first_bad"]["reason"])
            );
        }
    });
    if report["ok"] != true {
        return Err(CallError {
            message: "the ledger failed verification".into(),
            code: Some("chain.verify_failed".into()),
            status: None,
        });
    }
    Ok(())
}

pub fn chain_repair(api: &ApiClient, json_output: bool) -> Result<(), CallError> {
    let result = api.post("/v1/chain/repair", &Value::Null)?;
    emit(json_output, &result, |r| {
        match r["found"].as_object() {
            None => println!("the stored ledger verifies: nothing to repair"),
            Some(bad) => println!(
                "block {} was damaged ({}: {})",
                bad["height"],
                text(&bad["code"]),
                text(&bad["reason"])
            ),
        }
        for step in r["repairs"].as_array().into_iter().flatten() {
            let heights = &step["heights"];
            println!(
                "repaired {}{}{}",
                text(&step["what"]),
                match heights.as_array() {
                    Some(h) if h.len() == 2 => format!(" {}-{}", h[0], h[1]),
                    _ => String::new(),
                },
                match step["from_node"].as_u64() {
                    Some(n) => format!(" with blocks from node {n}"),
                    None => " from this node's own verified replay".to_string(),
                }
            );
        }
        if r["ok"] == true {
            println!("the stored ledger verifies again");
        }
    });
    Ok(())
}

pub struct TraceSpec {
    pub batch: String,
    pub stage: String,
    pub actor: String,
    pub place: String,
    pub readings: Vec<String>,
    pub inputs: Vec<String>,
    pub documents: Vec<String>,
}

/// `temperature=4.5C` -> {"name", "value_milli", "unit"}.
fn parse_reading(text: &str) -> Result<Value, CallError> {
    let bad = || CallError {
        message: format!("reading {text:?} must look like NAME=VALUEUNIT, e.g. temperature=4.5C"),
        code: Some("request.bad_reading".into()),
        status: None,
    };
    let (name, rest) = text.split_once('=').ok_or_else(bad)?;
    let split = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
        .unwrap_or(rest.len());
    let (number, unit) = rest.split_at(split);
    let value: f64 = number.parse().map_err(|_| bad())?;
    if name.is_empty() || !value.is_finite() {
        return Err(bad());
    }
    Ok(json!({"name": name, "value_milli": (value * 1000.0).round() as i64, "unit": unit}))
}

pub fn trace_add(api: &ApiClient, spec: TraceSpec, json_output: bool) -> Result<(), CallError> {
    let stage = match spec.stage.as_str() {
        "farm" | "processing" | "cold-storage" | "logistics" | "retail" => json!(spec.stage),
        other => json!({"other": other}),
    };
    let readings = spec
        .readings
        .iter()
        .map(|r| parse_reading(r))
        .collect::<Result<Vec<_>, _>>()?;
    let at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let event = json!({
        "batch_id": spec.batch, "stage": stage, "actor": spec.actor, "place": spec.place,
        "at_ms": at_ms, "readings": readings, "documents": spec.documents, "inputs": spec.inputs,
    });
    let answer = api.post("/v1/trace", &event)?;
    emit(json_output, &answer, |a| {
        println!(
            "trace event for batch {} submitted as tx {}; final in a few slots",
            spec.batch,
            text(&a["tx"])
        )
    });
    Ok(())
}

pub fn trace_show(api: &ApiClient, batch: &str, json_output: bool) -> Result<(), CallError> {
    let history = api.get(&format!("/v1/trace/{batch}"))?;
    emit(json_output, &history, |h| {
        let rows: Vec<Vec<String>> = h["events"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                let ev = &e["event"];
                let readings: Vec<String> = ev["readings"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| {
                        format!(
                            "{}={}{}",
                            text(&r["name"]),
                            r["value_milli"].as_i64().unwrap_or(0) as f64 / 1000.0,
                            text(&r["unit"])
                        )
                    })
                    .collect();
                vec![
                    text(&e["height"]),
                    text(&ev["stage"]),
                    text(&ev["actor"]),
                    text(&ev["place"]),
                    readings.join(" "),
                ]
            })
            .collect();
        table::print(&["HEIGHT", "STAGE", "ACTOR", "PLACE", "READINGS"], &rows);
        println!("upstream:   {}", h["upstream"]);
        println!("downstream: {}", h["downstream"]);
    });
    Ok(())
}

pub fn volume_discard(
    api: &ApiClient,
    name: &str,
    offset: &str,
    length: &str,
) -> Result<(), CallError> {
    let (offset, length) = (size_arg(offset)?, size_arg(length)?);
    api.post(
        &format!("/v1/volumes/{name}/discard"),
        &json!({"offset_bytes": offset, "length_bytes": length}),
    )?;
    println!(
        "volume {name}: discarded {} at {}",
        format_size(length),
        offset
    );
    Ok(())
}

/// What `hpchain volume bench` asks the node to run.
pub struct BenchArgs {
    pub pattern: String,
    pub block_size: String,
    pub queue_depth: u32,
    pub seconds: u64,
    pub once: bool,
}

pub fn volume_bench(
    api: &ApiClient,
    name: &str,
    args: &BenchArgs,
    json_output: bool,
) -> Result<(), CallError> {
    let body = json!({
        "pattern": args.pattern,
        "block_size_bytes": size_arg(&args.block_size)?,
        "queue_depth": args.queue_depth,
        "seconds": args.seconds,
        "once": args.once,
    });
    let report = api.post_waiting(
        &format!("/v1/volumes/{name}/bench"),
        &body,
        std::time::Duration::from_secs(args.seconds),
    )?;
    emit(json_output, &report, |r| {
        println!(
            "{} {} qd {}: {:.0} IOPS, {}/s, latency p50 {} us, p99 {} us, max {} us ({} I/Os in {:.1} s)",
            text(&r["pattern"]),
            format_size(r["block_size_bytes"].as_u64().unwrap_or(0)),
            r["queue_depth"],
            r["iops"].as_f64().unwrap_or(0.0),
            format_size(r["bytes_per_second"].as_f64().unwrap_or(0.0) as u64),
            r["latency_us_p50"],
            r["latency_us_p99"],
            r["latency_us_max"],
            r["ios"],
            r["seconds"].as_f64().unwrap_or(0.0)
        )
    });
    Ok(())
}
