//! `hpchain volume export-iscsi|unexport-iscsi|iscsi`: iSCSI exports of
//! volumes, and of snapshots (`VOLUME@SNAPSHOT`, always read-only), over the
//! management API.

use serde_json::{json, Value};

use crate::client::{ApiClient, CallError};

/// CHAP and ACL settings given on the command line.
pub struct ExportSpec {
    pub chap_user: Option<String>,
    pub chap_secret: Option<String>,
    pub mutual_chap_user: Option<String>,
    pub mutual_chap_secret: Option<String>,
    pub allowed_initiators: Vec<String>,
    pub read_only: bool,
}

/// The API path of the export of a volume or of `VOLUME@SNAPSHOT`.
fn export_path(spec: &str) -> Result<String, CallError> {
    if spec.contains('@') {
        let (volume, snapshot) = crate::snap::split_snapshot(spec)?;
        Ok(format!("/v1/volumes/{volume}/snapshots/{snapshot}/iscsi"))
    } else {
        Ok(format!("/v1/volumes/{spec}/iscsi"))
    }
}

fn print_export(export: &Value) {
    let target = export["target"].as_str().unwrap_or("-");
    let what = match export["snapshot"].as_str() {
        Some(s) => format!("snapshot {}@{s}", export["volume"].as_str().unwrap_or("-")),
        None => format!("volume {}", export["volume"].as_str().unwrap_or("-")),
    };
    println!("{what} exported as {target}, LUN 0");
    match export["chap_user"].as_str() {
        Some(user) => {
            let mutual = export["mutual_chap_user"]
                .as_str()
                .map(|m| format!(", mutual CHAP as {m}"))
                .unwrap_or_default();
            println!("  CHAP: initiators log in as {user}{mutual}");
        }
        None => println!("  CHAP: off (any initiator that may connect can log in)"),
    }
    let allowed: Vec<&str> = export["allowed_initiators"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if allowed.is_empty() {
        println!("  initiators: any");
    } else {
        println!("  initiators: {}", allowed.join(", "));
    }
    if export["read_only"].as_bool() == Some(true) {
        println!("  read-only");
    }
    for url in export["urls"].as_array().into_iter().flatten() {
        println!("  {}", url.as_str().unwrap_or("-"));
    }
}

pub fn export(
    api: &ApiClient,
    volume: &str,
    spec: ExportSpec,
    json_output: bool,
) -> Result<(), CallError> {
    let mut body = json!({
        "allowed_initiators": spec.allowed_initiators,
        "read_only": spec.read_only,
    });
    for (key, value) in [
        ("chap_user", spec.chap_user),
        ("chap_secret", spec.chap_secret),
        ("mutual_chap_user", spec.mutual_chap_user),
        ("mutual_chap_secret", spec.mutual_chap_secret),
    ] {
        if let Some(value) = value {
            body[key] = json!(value);
        }
    }
    let export = api.put(&export_path(volume)?, &body)?;
    if json_output {
        println!("{}", serde_json::to_string_pretty(&export).expect("json"));
    } else {
        print_export(&export);
    }
    Ok(())
}

pub fn unexport(api: &ApiClient, volume: &str) -> Result<(), CallError> {
    api.delete(&export_path(volume)?)?;
    println!("{volume} is no longer exported; its iSCSI sessions were dropped");
    Ok(())
}

pub fn show(api: &ApiClient, volume: Option<&str>, json_output: bool) -> Result<(), CallError> {
    let exports = match volume {
        Some(v) => Value::Array(vec![api.get(&export_path(v)?)?]),
        None => api.get("/v1/iscsi")?,
    };
    if json_output {
        println!("{}", serde_json::to_string_pretty(&exports).expect("json"));
        return Ok(());
    }
    let list = exports.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!(
            "no volume is exported over iSCSI; export one with `hpchain volume export-iscsi VOL`"
        );
    }
    for export in list {
        print_export(&export);
    }
    Ok(())
}
