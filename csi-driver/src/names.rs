//! How CSI names, ids, parameters and errors map onto hpchain's.

use tonic::Status;

use crate::api::ApiError;
use crate::csi::volume_capability::access_mode::Mode;
use crate::csi::volume_capability::AccessType;
use crate::csi::VolumeCapability;

/// `value`, or INVALID_ARGUMENT naming the missing field.
pub fn required<'a>(value: &'a str, what: &str) -> Result<&'a str, Status> {
    if value.is_empty() {
        Err(Status::invalid_argument(format!("{what} is required")))
    } else {
        Ok(value)
    }
}

/// FNV-1a: a stable hash for names that need shortening (no dependency,
/// the same in every release).
fn fnv64(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        })
}

/// The hpchain name for a CSI name: itself when it is a valid hpchain name
/// (`pvc-<uuid>` is), otherwise a sanitized prefix and a hash of the whole,
/// so that the same CSI name always maps to the same volume.
pub fn hpchain_name(csi_name: &str) -> String {
    if valid(csi_name) {
        return csi_name.to_string();
    }
    let cleaned: String = csi_name
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    format!("{cleaned}-{:016x}", fnv64(csi_name))
}

/// `volume@snapshot`, the CSI snapshot id.
pub fn snapshot_id(volume: &str, snapshot: &str) -> String {
    format!("{volume}@{snapshot}")
}

pub fn split_snapshot_id(id: &str) -> Option<(&str, &str)> {
    let (v, s) = id.split_once('@')?;
    (valid(v) && valid(s)).then_some((v, s))
}

/// A gRPC status for an API failure, with the API's message (it names the
/// object, the reason and the fix).
pub fn status_of(e: ApiError) -> Status {
    let message = e.to_string();
    match e.status {
        404 => Status::not_found(message),
        409 => Status::failed_precondition(message),
        400 | 413 => Status::invalid_argument(message),
        0 | 502 | 503 | 504 => Status::unavailable(message),
        _ => Status::internal(message),
    }
}

/// Whether hpchain can serve a capability: block or mount, every access
/// mode except several writers over a file system (no cluster file system
/// sits on top).
pub fn capability_problem(capability: &VolumeCapability) -> Option<String> {
    let mode = capability
        .access_mode
        .as_ref()
        .and_then(|m| Mode::try_from(m.mode).ok())
        .unwrap_or(Mode::Unknown);
    if mode == Mode::Unknown {
        return Some("the access mode is missing or unknown".into());
    }
    match &capability.access_type {
        None => Some("the access type (block or mount) is missing".into()),
        Some(AccessType::Mount(mount)) => {
            if matches!(
                mode,
                Mode::MultiNodeMultiWriter | Mode::MultiNodeSingleWriter
            ) {
                return Some(format!(
                    "{mode:?} needs a cluster file system; use volumeMode: Block for shared writers"
                ));
            }
            match mount.fs_type.as_str() {
                "" | "ext4" | "xfs" => None,
                other => Some(format!(
                    "file system {other:?} is not supported; use ext4 or xfs"
                )),
            }
        }
        Some(AccessType::Block(_)) => None,
    }
}

/// A size or rate with an optional binary unit: `500`, `64Ki`, `50M`, `1Gi`.
pub fn parse_quantity(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.parse().map_err(|_| {
        format!("{text:?} is not a whole number with an optional unit (K, M, G, Ki, Mi, Gi)")
    })?;
    let factor: u64 = match unit {
        "" => 1,
        "K" | "Ki" | "k" => 1 << 10,
        "M" | "Mi" => 1 << 20,
        "G" | "Gi" => 1 << 30,
        "T" | "Ti" => 1 << 40,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?}; use K, M, G or T (binary: 1K = 1024)"
            ))
        }
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// StorageClass / VolumeAttributesClass keys that set QoS, and the hpchain
/// limit each sets: `iops`, `readIops`, `writeIops`, `bps`, `readBps`,
/// `writeBps`, each optionally with `Burst` appended (the peak rate) and
/// `BurstSeconds`.
pub const QOS_KEYS: [(&str, &str); 6] = [
    ("iops", "total_iops"),
    ("readIops", "read_iops"),
    ("writeIops", "write_iops"),
    ("bps", "total_bps"),
    ("readBps", "read_bps"),
    ("writeBps", "write_bps"),
];

/// The QoS limits named in `parameters` (into `limits`, a JSON object),
/// and whether any key was one of them.
pub fn qos_from_parameters(
    parameters: &std::collections::HashMap<String, String>,
    limits: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<bool, Status> {
    let mut any = false;
    for (key, field) in QOS_KEYS {
        for (suffix, part) in [
            ("", "rate"),
            ("Burst", "burst"),
            ("BurstSeconds", "burst_seconds"),
        ] {
            let Some(value) = parameters.get(&format!("{key}{suffix}")) else {
                continue;
            };
            let number = parse_quantity(value)
                .map_err(|e| Status::invalid_argument(format!("parameter {key}{suffix}: {e}")))?;
            let entry = limits
                .entry(field.to_string())
                .or_insert_with(|| serde_json::json!({"rate": 0, "burst": 0, "burst_seconds": 0}));
            entry[part] = serde_json::json!(number);
            any = true;
        }
    }
    Ok(any)
}

pub fn is_qos_key(key: &str) -> bool {
    QOS_KEYS
        .iter()
        .any(|(k, _)| key == *k || key == format!("{k}Burst") || key == format!("{k}BurstSeconds"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csi_names_map_to_stable_valid_hpchain_names() {
        assert_eq!(hpchain_name("pvc-1234-abcd"), "pvc-1234-abcd");
        let odd = hpchain_name("Sanity Node/Volume_X");
        assert!(valid(&odd), "{odd}");
        assert_eq!(odd, hpchain_name("Sanity Node/Volume_X"));
        assert_ne!(odd, hpchain_name("Sanity Node/Volume_Y"));
        let long = "a".repeat(200);
        assert!(valid(&hpchain_name(&long)));
        assert_eq!(split_snapshot_id("v@s"), Some(("v", "s")));
        assert_eq!(split_snapshot_id("no-at"), None);
        assert_eq!(split_snapshot_id("Bad@s"), None);
    }

    #[test]
    fn quantities_and_qos_parameters_parse_or_name_the_problem() {
        assert_eq!(parse_quantity("500").unwrap(), 500);
        assert_eq!(parse_quantity("50Mi").unwrap(), 50 << 20);
        assert_eq!(parse_quantity("2G").unwrap(), 2 << 30);
        assert!(parse_quantity("5X").unwrap_err().contains("unit"));
        assert!(parse_quantity("lots").unwrap_err().contains("lots"));
        let parameters = [("iops", "500"), ("iopsBurst", "2000"), ("writeBps", "20Mi")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut limits = serde_json::Map::new();
        assert!(qos_from_parameters(&parameters, &mut limits).unwrap());
        assert_eq!(limits["total_iops"]["rate"], 500);
        assert_eq!(limits["total_iops"]["burst"], 2000);
        assert_eq!(limits["write_bps"]["rate"], 20 << 20);
        assert!(is_qos_key("readIopsBurstSeconds") && !is_qos_key("pool"));
    }
}
