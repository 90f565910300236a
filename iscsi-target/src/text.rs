//! Text keys (RFC 7143 section 6): `key=value` pairs separated by NUL
//! bytes, and the negotiation of the operational parameters of a session
//! and a connection (section 13).

use std::fmt;

/// Pairs in the order they were sent.
pub fn parse(data: &[u8]) -> Result<Vec<(String, String)>, TextError> {
    let mut pairs = Vec::new();
    for item in data.split(|b| *b == 0) {
        if item.is_empty() {
            continue;
        }
        let text = std::str::from_utf8(item).map_err(|_| TextError::NotUtf8)?;
        let Some((key, value)) = text.split_once('=') else {
            return Err(TextError::NoEquals(text.to_string()));
        };
        if key.is_empty() || key.len() > 63 {
            return Err(TextError::BadKey(key.to_string()));
        }
        pairs.push((key.to_string(), value.to_string()));
    }
    Ok(pairs)
}

/// NUL-terminated `key=value` pairs.
pub fn encode(pairs: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in pairs {
        out.extend_from_slice(key.as_bytes());
        out.push(b'=');
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    }
    out
}

#[derive(Debug, PartialEq, Eq)]
pub enum TextError {
    NotUtf8,
    NoEquals(String),
    BadKey(String),
}

impl fmt::Display for TextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TextError::NotUtf8 => write!(f, "text key is not UTF-8"),
            TextError::NoEquals(item) => write!(f, "text item {item:?} has no '='"),
            TextError::BadKey(key) => write!(f, "text key {key:?} is empty or too long"),
        }
    }
}

/// The negotiated parameters of a session and its connection, with the
/// RFC's defaults until negotiation changes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pub header_digest: bool,
    pub data_digest: bool,
    pub max_connections: u32,
    pub initial_r2t: bool,
    pub immediate_data: bool,
    /// What the initiator accepts in one PDU from us.
    pub initiator_max_recv_data_segment_length: u32,
    /// What we accept in one PDU from the initiator (declared by us).
    pub target_max_recv_data_segment_length: u32,
    pub max_burst_length: u32,
    pub first_burst_length: u32,
    pub default_time2wait: u32,
    pub default_time2retain: u32,
    pub max_outstanding_r2t: u32,
    pub data_pdu_in_order: bool,
    pub data_sequence_in_order: bool,
    pub error_recovery_level: u32,
}

/// What this target declares it can receive in one data segment.
pub const TARGET_MAX_RECV_DATA_SEGMENT_LENGTH: u32 = 256 * 1024;
/// The largest burst this target offers.
pub const TARGET_MAX_BURST_LENGTH: u32 = 1024 * 1024;

impl Default for Params {
    fn default() -> Params {
        Params {
            header_digest: false,
            data_digest: false,
            max_connections: 1,
            initial_r2t: true,
            immediate_data: true,
            initiator_max_recv_data_segment_length: 8192,
            target_max_recv_data_segment_length: 8192,
            max_burst_length: 262_144,
            first_burst_length: 65_536,
            default_time2wait: 2,
            default_time2retain: 20,
            max_outstanding_r2t: 1,
            data_pdu_in_order: true,
            data_sequence_in_order: true,
            error_recovery_level: 0,
        }
    }
}

/// How one key is negotiated.
enum Rule {
    /// Result is the numeric minimum of both offers, bounded by ours.
    Min(u32),
    /// Result is the maximum of both offers, bounded by ours.
    Max(u32),
    /// Boolean OR: "Yes" if either side says Yes.
    Or(bool),
    /// Boolean AND: "Yes" only if both say Yes.
    And(bool),
    /// The first value of the initiator's list that we support.
    List(&'static [&'static str]),
    /// The initiator declares a value; we answer with our own.
    Declare(u32),
}

fn rule(key: &str) -> Option<Rule> {
    Some(match key {
        "HeaderDigest" | "DataDigest" => Rule::List(&["CRC32C", "None"]),
        "MaxConnections" => Rule::Min(8),
        "InitialR2T" => Rule::Or(false),
        "ImmediateData" => Rule::And(true),
        "MaxRecvDataSegmentLength" => Rule::Declare(TARGET_MAX_RECV_DATA_SEGMENT_LENGTH),
        "MaxBurstLength" => Rule::Min(TARGET_MAX_BURST_LENGTH),
        "FirstBurstLength" => Rule::Min(TARGET_MAX_BURST_LENGTH),
        "DefaultTime2Wait" => Rule::Max(3600),
        "DefaultTime2Retain" => Rule::Min(3600),
        "MaxOutstandingR2T" => Rule::Min(16),
        "DataPDUInOrder" => Rule::Or(true),
        "DataSequenceInOrder" => Rule::Or(true),
        // Only error recovery level 0: a failed connection ends its tasks.
        "ErrorRecoveryLevel" => Rule::Min(0),
        "IFMarker" | "OFMarker" => Rule::And(false),
        _ => return None,
    })
}

fn yes(value: &str) -> Option<bool> {
    match value {
        "Yes" => Some(true),
        "No" => Some(false),
        _ => None,
    }
}

fn yes_no(value: bool) -> String {
    if value { "Yes" } else { "No" }.to_string()
}

/// Why a negotiation failed: the login fails with "initiator error".
#[derive(Debug, PartialEq, Eq)]
pub struct NegotiationError(pub String);

impl Params {
    /// Negotiates one operational key the initiator offered. Returns the
    /// answer to send, or `None` for keys that need no answer (answers the
    /// initiator gave to our offers). Unknown keys get `NotUnderstood`.
    pub fn negotiate(
        &mut self,
        key: &str,
        value: &str,
    ) -> Result<Option<(String, String)>, NegotiationError> {
        let answer = |v: String| Ok(Some((key.to_string(), v)));
        let Some(rule) = rule(key) else {
            return answer("NotUnderstood".into());
        };
        let bad = || NegotiationError(format!("{key}={value} is not a valid value"));
        match rule {
            Rule::List(supported) => {
                let chosen = value
                    .split(',')
                    .find(|offer| supported.contains(offer))
                    .map(str::to_string);
                let Some(chosen) = chosen else {
                    return answer("Reject".into());
                };
                let on = chosen == "CRC32C";
                if key == "HeaderDigest" {
                    self.header_digest = on;
                } else {
                    self.data_digest = on;
                }
                answer(chosen)
            }
            Rule::Declare(ours) => {
                let theirs: u32 = value.parse().map_err(|_| bad())?;
                if !(512..=16_777_215).contains(&theirs) {
                    return Err(bad());
                }
                self.initiator_max_recv_data_segment_length = theirs;
                self.target_max_recv_data_segment_length = ours;
                answer(ours.to_string())
            }
            Rule::Min(ours) | Rule::Max(ours) => {
                let theirs: u32 = value.parse().map_err(|_| bad())?;
                // We have no preference of our own inside our bound, so both
                // the minimum and the maximum function give the initiator's
                // offer, capped.
                let result = theirs.min(ours);
                match key {
                    "MaxConnections" => self.max_connections = result.max(1),
                    "MaxBurstLength" => {
                        if theirs < 512 {
                            return Err(bad());
                        }
                        self.max_burst_length = result
                    }
                    "FirstBurstLength" => {
                        if theirs < 512 {
                            return Err(bad());
                        }
                        self.first_burst_length = result
                    }
                    "DefaultTime2Wait" => self.default_time2wait = result,
                    "DefaultTime2Retain" => self.default_time2retain = result,
                    "MaxOutstandingR2T" => self.max_outstanding_r2t = result.max(1),
                    "ErrorRecoveryLevel" => self.error_recovery_level = result,
                    _ => {}
                }
                answer(result.to_string())
            }
            Rule::Or(ours) | Rule::And(ours) => {
                let theirs = yes(value).ok_or_else(bad)?;
                let result = if matches!(rule, Rule::Or(_)) {
                    theirs || ours
                } else {
                    theirs && ours
                };
                match key {
                    "InitialR2T" => self.initial_r2t = result,
                    "ImmediateData" => self.immediate_data = result,
                    "DataPDUInOrder" => self.data_pdu_in_order = result,
                    "DataSequenceInOrder" => self.data_sequence_in_order = result,
                    _ => {}
                }
                answer(yes_no(result))
            }
        }
    }

    /// FirstBurstLength cannot exceed MaxBurstLength (RFC 7143 13.14).
    pub fn finish(&mut self) {
        self.first_burst_length = self.first_burst_length.min(self.max_burst_length);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_encode_round_trip() {
        let data = b"InitiatorName=iqn.x\0SessionType=Normal\0";
        let pairs = parse(data).unwrap();
        assert_eq!(pairs[1], ("SessionType".into(), "Normal".into()));
        assert_eq!(encode(&pairs), data.to_vec());
        assert_eq!(
            parse(b"novalue\0"),
            Err(TextError::NoEquals("novalue".into()))
        );
    }

    #[test]
    fn negotiation_follows_each_keys_rule() {
        let mut p = Params::default();
        let ans = |p: &mut Params, k: &str, v: &str| p.negotiate(k, v).unwrap().unwrap().1;
        assert_eq!(ans(&mut p, "HeaderDigest", "CRC32C,None"), "CRC32C");
        assert!(p.header_digest);
        assert_eq!(ans(&mut p, "DataDigest", "None"), "None");
        assert_eq!(ans(&mut p, "InitialR2T", "No"), "No");
        assert_eq!(ans(&mut p, "ImmediateData", "Yes"), "Yes");
        assert_eq!(ans(&mut p, "MaxBurstLength", "16776192"), "1048576");
        assert_eq!(ans(&mut p, "FirstBurstLength", "262144"), "262144");
        assert_eq!(ans(&mut p, "ErrorRecoveryLevel", "2"), "0");
        assert_eq!(ans(&mut p, "MaxRecvDataSegmentLength", "65536"), "262144");
        assert_eq!(p.initiator_max_recv_data_segment_length, 65536);
        assert_eq!(ans(&mut p, "X-com.example.Key", "1"), "NotUnderstood");
        assert!(p.negotiate("MaxBurstLength", "lots").is_err());
        assert!(p.negotiate("MaxRecvDataSegmentLength", "12").is_err());
    }
}
