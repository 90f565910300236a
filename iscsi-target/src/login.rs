//! The login phase (RFC 7143 section 6.3, 11.12, 11.13): security
//! negotiation with CHAP (RFC 1994, MD5) and mutual CHAP, then the
//! operational parameters, then the move to full feature phase.

use crate::text::{self, NegotiationError, Params};
use md5::{Digest, Md5};
use rand::RngCore;

/// CHAP credentials: a user name and its secret (12 to 16 bytes is what
/// initiators expect; longer is accepted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chap {
    pub user: String,
    pub secret: String,
}

/// Login stages (CSG/NSG values).
pub const SECURITY: u8 = 0;
pub const OPERATIONAL: u8 = 1;
pub const FULL_FEATURE: u8 = 3;

/// Login response status (class, detail).
pub mod status {
    pub const SUCCESS: (u8, u8) = (0, 0);
    pub const INITIATOR_ERROR: (u8, u8) = (2, 0);
    pub const AUTHENTICATION_FAILED: (u8, u8) = (2, 1);
    pub const AUTHORIZATION_FAILED: (u8, u8) = (2, 2);
    pub const NOT_FOUND: (u8, u8) = (2, 3);
    pub const UNSUPPORTED_VERSION: (u8, u8) = (2, 5);
    pub const TOO_MANY_CONNECTIONS: (u8, u8) = (2, 6);
    pub const MISSING_PARAMETER: (u8, u8) = (2, 7);
    pub const SESSION_TYPE_NOT_SUPPORTED: (u8, u8) = (2, 9);
    pub const SESSION_DOES_NOT_EXIST: (u8, u8) = (2, 10);
    pub const INVALID_DURING_LOGIN: (u8, u8) = (2, 11);
    pub const TARGET_ERROR: (u8, u8) = (3, 0);
}

/// A login failure: the status to send and why, for the log.
#[derive(Debug)]
pub struct LoginFailure {
    pub status: (u8, u8),
    pub reason: String,
}

impl LoginFailure {
    pub fn new(status: (u8, u8), reason: impl Into<String>) -> LoginFailure {
        LoginFailure {
            status,
            reason: reason.into(),
        }
    }
}

impl From<NegotiationError> for LoginFailure {
    fn from(e: NegotiationError) -> LoginFailure {
        LoginFailure::new(status::INITIATOR_ERROR, e.0)
    }
}

/// CHAP state of one login.
#[derive(Debug, Default)]
pub struct ChapExchange {
    id: u8,
    challenge: Vec<u8>,
    sent_challenge: bool,
    pub done: bool,
}

fn chap_response(id: u8, secret: &[u8], challenge: &[u8]) -> Vec<u8> {
    let mut md5 = Md5::new();
    md5.update([id]);
    md5.update(secret);
    md5.update(challenge);
    md5.finalize().to_vec()
}

/// CHAP values are hex (`0x...`) or base64 (`0b...`); hex is what every
/// initiator sends.
fn decode_chap_value(value: &str) -> Option<Vec<u8>> {
    let hex = value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))?;
    hex::decode(hex).ok()
}

impl ChapExchange {
    /// Handles the security-stage keys. `required` is the target's CHAP
    /// account; `mutual` the target's own credentials for mutual CHAP.
    pub fn step(
        &mut self,
        keys: &[(String, String)],
        required: Option<&Chap>,
        mutual: Option<&Chap>,
        answers: &mut Vec<(String, String)>,
    ) -> Result<(), LoginFailure> {
        let get = |k: &str| {
            keys.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        if let Some(methods) = get("AuthMethod") {
            let offered: Vec<&str> = methods.split(',').collect();
            let choice = match required {
                Some(_) if offered.contains(&"CHAP") => "CHAP",
                Some(_) => {
                    return Err(LoginFailure::new(
                        status::AUTHENTICATION_FAILED,
                        format!(
                            "the target requires CHAP; the initiator offered AuthMethod={methods}"
                        ),
                    ))
                }
                None if offered.contains(&"None") => "None",
                None => "Reject",
            };
            answers.push(("AuthMethod".into(), choice.into()));
            if choice == "None" {
                self.done = true;
            }
        }
        let Some(account) = required else {
            return Ok(());
        };
        if let Some(algorithms) = get("CHAP_A") {
            if !algorithms.split(',').any(|a| a == "5") {
                return Err(LoginFailure::new(
                    status::AUTHENTICATION_FAILED,
                    format!("CHAP_A={algorithms}: only MD5 (5) is supported"),
                ));
            }
            let mut challenge = vec![0u8; 16];
            rand::thread_rng().fill_bytes(&mut challenge);
            self.id = rand::random();
            self.challenge = challenge;
            self.sent_challenge = true;
            answers.push(("CHAP_A".into(), "5".into()));
            answers.push(("CHAP_I".into(), self.id.to_string()));
            answers.push((
                "CHAP_C".into(),
                format!("0x{}", hex::encode(&self.challenge)),
            ));
            return Ok(());
        }
        if let (Some(name), Some(response)) = (get("CHAP_N"), get("CHAP_R")) {
            if !self.sent_challenge {
                return Err(LoginFailure::new(
                    status::INITIATOR_ERROR,
                    "CHAP_R arrived before the target sent a challenge",
                ));
            }
            let expected = chap_response(self.id, account.secret.as_bytes(), &self.challenge);
            let received = decode_chap_value(response);
            if name != account.user || received.as_deref() != Some(&expected[..]) {
                return Err(LoginFailure::new(
                    status::AUTHENTICATION_FAILED,
                    format!("CHAP response for user {name:?} does not match the target's secret"),
                ));
            }
            // Mutual CHAP: the initiator challenges the target.
            if let (Some(id), Some(challenge)) = (get("CHAP_I"), get("CHAP_C")) {
                let Some(own) = mutual else {
                    return Err(LoginFailure::new(
                        status::AUTHENTICATION_FAILED,
                        "the initiator asked for mutual CHAP but the target has no mutual credentials",
                    ));
                };
                let id: u8 = id.parse().map_err(|_| {
                    LoginFailure::new(
                        status::INITIATOR_ERROR,
                        format!("CHAP_I={id} is not a byte"),
                    )
                })?;
                let challenge = decode_chap_value(challenge).ok_or_else(|| {
                    LoginFailure::new(status::INITIATOR_ERROR, "CHAP_C is not hex")
                })?;
                if challenge == self.challenge {
                    return Err(LoginFailure::new(
                        status::AUTHENTICATION_FAILED,
                        "the initiator reflected the target's own challenge",
                    ));
                }
                let response = chap_response(id, own.secret.as_bytes(), &challenge);
                answers.push(("CHAP_N".into(), own.user.clone()));
                answers.push(("CHAP_R".into(), format!("0x{}", hex::encode(response))));
            }
            self.done = true;
        }
        Ok(())
    }
}

/// Negotiates the operational keys among `keys`, answering into `answers`.
pub fn negotiate_operational(
    params: &mut Params,
    keys: &[(String, String)],
    discovery: bool,
    answers: &mut Vec<(String, String)>,
) -> Result<(), LoginFailure> {
    for (key, value) in keys {
        match key.as_str() {
            // Declarations that need no answer, and keys handled elsewhere.
            "InitiatorName"
            | "InitiatorAlias"
            | "TargetName"
            | "SessionType"
            | "AuthMethod"
            | "TargetAlias"
            | "TargetPortalGroupTag"
            | "TargetAddress" => {}
            k if k.starts_with("CHAP_") => {}
            "MaxConnections"
            | "InitialR2T"
            | "ImmediateData"
            | "MaxBurstLength"
            | "FirstBurstLength"
            | "MaxOutstandingR2T"
            | "DataPDUInOrder"
            | "DataSequenceInOrder"
                if discovery =>
            {
                // Session keys that mean nothing to a discovery session
                // are irrelevant (RFC 7143 13.7).
                answers.push((key.clone(), "Irrelevant".into()));
            }
            _ => {
                if let Some(answer) = params.negotiate(key, value)? {
                    answers.push(answer);
                }
            }
        }
    }
    Ok(())
}

/// Makes sure the target's limit on what it receives is known to the
/// initiator even if it did not offer the key.
pub fn declare_defaults(answers: &mut Vec<(String, String)>, params: &mut Params) {
    if !answers.iter().any(|(k, _)| k == "MaxRecvDataSegmentLength") {
        params.target_max_recv_data_segment_length = text::TARGET_MAX_RECV_DATA_SEGMENT_LENGTH;
        answers.push((
            "MaxRecvDataSegmentLength".into(),
            text::TARGET_MAX_RECV_DATA_SEGMENT_LENGTH.to_string(),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn answer<'a>(answers: &'a [(String, String)], key: &str) -> &'a str {
        &answers.iter().find(|(k, _)| k == key).unwrap().1
    }

    #[test]
    fn chap_and_mutual_chap() {
        let account = Chap {
            user: "alice".into(),
            secret: "alice-secret-16b".into(),
        };
        let own = Chap {
            user: "target".into(),
            secret: "target-secret-16".into(),
        };
        let mut chap = ChapExchange::default();
        let mut answers = Vec::new();
        chap.step(
            &keys(&[("AuthMethod", "CHAP,None")]),
            Some(&account),
            Some(&own),
            &mut answers,
        )
        .unwrap();
        assert_eq!(answer(&answers, "AuthMethod"), "CHAP");
        answers.clear();
        chap.step(
            &keys(&[("CHAP_A", "5")]),
            Some(&account),
            Some(&own),
            &mut answers,
        )
        .unwrap();
        let id: u8 = answer(&answers, "CHAP_I").parse().unwrap();
        let challenge = decode_chap_value(answer(&answers, "CHAP_C")).unwrap();
        let good = format!(
            "0x{}",
            hex::encode(chap_response(id, account.secret.as_bytes(), &challenge))
        );
        // A wrong secret fails.
        let bad = format!("0x{}", hex::encode(chap_response(id, b"wrong", &challenge)));
        let mut scratch = Vec::new();
        let failure = chap
            .step(
                &keys(&[("CHAP_N", "alice"), ("CHAP_R", &bad)]),
                Some(&account),
                None,
                &mut scratch,
            )
            .unwrap_err();
        assert_eq!(failure.status, status::AUTHENTICATION_FAILED);
        // The right one passes and the target answers the mutual challenge.
        answers.clear();
        chap.step(
            &keys(&[
                ("CHAP_N", "alice"),
                ("CHAP_R", &good),
                ("CHAP_I", "7"),
                ("CHAP_C", "0x0102030405"),
            ]),
            Some(&account),
            Some(&own),
            &mut answers,
        )
        .unwrap();
        assert!(chap.done);
        let expected = chap_response(7, own.secret.as_bytes(), &[1, 2, 3, 4, 5]);
        assert_eq!(
            answer(&answers, "CHAP_R"),
            format!("0x{}", hex::encode(expected))
        );
    }

    #[test]
    fn chap_required_but_not_offered_fails() {
        let account = Chap {
            user: "a".into(),
            secret: "s".into(),
        };
        let mut chap = ChapExchange::default();
        let failure = chap
            .step(
                &keys(&[("AuthMethod", "None")]),
                Some(&account),
                None,
                &mut Vec::new(),
            )
            .unwrap_err();
        assert_eq!(failure.status, status::AUTHENTICATION_FAILED);
    }
}
