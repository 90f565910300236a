//! Transactions: what they hold, their canonical encoding, their signature.
//!
//! A transaction is signed by its sender over
//! `"HPCHAIN/TX/V1\0" || encoding-without-signature`; it carries the chain
//! hash (against replay on another chain) and the sender's nonce (against
//! replay on this chain). Its hash is blake3 of its full encoding.

use serde::{Deserialize, Serialize};

use crate::codec::{Reader, Writer, MAX_LIST_ITEMS};
use crate::crypto::{hash_domain, Hash32, Keypair, PublicKey, Signature};
use crate::error::{Error, Result, TxError};

/// Version written in every transaction.
pub const TX_VERSION: u16 = 1;
/// Most candidates one account may vote for.
pub const MAX_VOTES: usize = 30;
/// Longest encoded transaction accepted, in bytes.
pub const MAX_TX_BYTES: usize = 256 * 1024;
/// Units of account per HP (8 decimals).
pub const UNITS_PER_HP: u64 = 100_000_000;

/// `units` as an exact decimal HP amount: `1250000000` is `"12.5"`,
/// `1` is `"0.00000001"` (no float rounding, no trailing zeros).
pub fn format_hp(units: u64) -> String {
    let whole = units / UNITS_PER_HP;
    let frac = units % UNITS_PER_HP;
    if frac == 0 {
        return whole.to_string();
    }
    let digits = format!("{frac:08}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// Parses an HP amount with at most 8 decimals (`"12.5"`, `"0.00000001"`,
/// `"100"`) into units, exactly. Refuses signs, exponents, more decimals
/// than a unit holds, and amounts over `u64::MAX` units.
pub fn parse_hp(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim();
    let bad = |why: &str| {
        Err(format!(
            "{text:?} is not an HP amount: {why}; write it like 12.5 (at most 8 decimals)"
        ))
    };
    let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
    if whole.is_empty() && frac.is_empty() {
        return bad("no digits");
    }
    if !whole
        .bytes()
        .chain(frac.bytes())
        .all(|b| b.is_ascii_digit())
    {
        return bad("only digits and one decimal point are allowed");
    }
    if frac.len() > 8 {
        return bad("more than 8 decimals (1 unit = 0.00000001 HP)");
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        match whole.parse() {
            Ok(w) => w,
            Err(_) => return bad("too large"),
        }
    };
    let frac_units: u64 = format!("{frac:0<8}").parse().unwrap_or(0);
    match whole
        .checked_mul(UNITS_PER_HP)
        .and_then(|u| u.checked_add(frac_units))
    {
        Some(units) => Ok(units),
        None => bad("too large"),
    }
}

const TX_SIGN_DOMAIN: &[u8] = b"HPCHAIN/TX/V1\0";
const TX_HASH_DOMAIN: &[u8] = b"HPCHAIN/TXID/V1\0";

/// A stage in a supply chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    Farm,
    Processing,
    ColdStorage,
    Logistics,
    Retail,
    /// Any other stage, by name.
    Other(String),
}

/// One measured value, in thousandths of its unit (fixed point keeps the
/// encoding canonical: no NaN, no two encodings of one number).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reading {
    /// What was measured, e.g. "temperature".
    pub name: String,
    /// Value × 1000, e.g. 4.5 °C is 4500.
    pub value_milli: i64,
    /// Unit, e.g. "C", "%RH".
    pub unit: String,
}

/// A supply-chain event for a product batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceEvent {
    pub batch_id: String,
    pub stage: Stage,
    pub actor: String,
    pub place: String,
    /// When the event happened, ms since the Unix epoch (as stated by the actor).
    pub at_ms: u64,
    pub readings: Vec<Reading>,
    /// blake3 digests of attached documents.
    pub documents: Vec<Hash32>,
    /// Batches this batch was made from.
    pub inputs: Vec<String>,
}

/// A declared acceptable range for one kind of reading (e.g. a cold chain's
/// 0 to 4 °C), in thousandths of the unit, bounds included.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadingLimit {
    pub name: String,
    pub unit: String,
    pub min_milli: i64,
    pub max_milli: i64,
}

/// A reading outside its declared range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Breach {
    pub reading: Reading,
    pub limit: ReadingLimit,
}

impl TraceEvent {
    /// The readings of this event that fall outside a limit with the same
    /// name and unit (a cold-chain breach). Readings with no matching limit
    /// are not judged.
    pub fn breaches(&self, limits: &[ReadingLimit]) -> Vec<Breach> {
        let mut out = Vec::new();
        for r in &self.readings {
            for l in limits
                .iter()
                .filter(|l| l.name == r.name && l.unit == r.unit)
            {
                if r.value_milli < l.min_milli || r.value_milli > l.max_milli {
                    out.push(Breach {
                        reading: r.clone(),
                        limit: l.clone(),
                    });
                }
            }
        }
        out
    }
}

/// A committed change of the cluster map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Who made the change (user, node, service).
    pub actor: String,
    /// What was done, e.g. "volume.create".
    pub action: String,
    /// What it was done to, e.g. "volume/demo".
    pub target: String,
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
    /// Outcome, e.g. "ok" or an error code.
    pub result: String,
    /// Free-form structured details, as key/value pairs in the caller's order.
    pub details: Vec<(String, String)>,
}

/// The content digest of a volume snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    pub volume_id: String,
    pub snapshot: String,
    /// blake3 content digest (e.g. a Merkle root over the snapshot's blocks).
    pub digest: Hash32,
    pub size_bytes: u64,
}

/// What a transaction does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Payload {
    /// Move `amount` units to `to`.
    Transfer {
        to: PublicKey,
        amount: u64,
    },
    /// Replace the sender's votes: each named candidate receives the sender's
    /// whole balance as weight (approval voting, as in EOS/Steem). An empty
    /// list withdraws all votes.
    Vote {
        candidates: Vec<PublicKey>,
    },
    /// Register the sender as a delegate candidate.
    RegisterCandidate {
        name: String,
    },
    Audit(AuditRecord),
    Anchor(Anchor),
    Trace(TraceEvent),
}

impl Payload {
    fn tag(&self) -> u8 {
        match self {
            Payload::Transfer { .. } => 1,
            Payload::Vote { .. } => 2,
            Payload::Audit(_) => 3,
            Payload::Anchor(_) => 4,
            Payload::Trace(_) => 5,
            Payload::RegisterCandidate { .. } => 6,
        }
    }

    /// A short name of the kind, for logs and indexes.
    pub fn kind(&self) -> &'static str {
        match self {
            Payload::Transfer { .. } => "transfer",
            Payload::Vote { .. } => "vote",
            Payload::Audit(_) => "audit",
            Payload::Anchor(_) => "anchor",
            Payload::Trace(_) => "trace",
            Payload::RegisterCandidate { .. } => "register_candidate",
        }
    }

    fn encode(&self, w: &mut Writer) {
        w.u8(self.tag());
        match self {
            Payload::Transfer { to, amount } => {
                w.raw(&to.0);
                w.u64(*amount);
            }
            Payload::Vote { candidates } => w.list(candidates, |w, c| w.raw(&c.0)),
            Payload::RegisterCandidate { name } => w.str(name),
            Payload::Audit(a) => {
                w.str(&a.actor);
                w.str(&a.action);
                w.str(&a.target);
                w.u64(a.at_ms);
                w.str(&a.result);
                w.list(&a.details, |w, (k, v)| {
                    w.str(k);
                    w.str(v);
                });
            }
            Payload::Anchor(a) => {
                w.str(&a.volume_id);
                w.str(&a.snapshot);
                w.raw(&a.digest.0);
                w.u64(a.size_bytes);
            }
            Payload::Trace(t) => {
                w.str(&t.batch_id);
                match &t.stage {
                    Stage::Farm => w.u8(1),
                    Stage::Processing => w.u8(2),
                    Stage::ColdStorage => w.u8(3),
                    Stage::Logistics => w.u8(4),
                    Stage::Retail => w.u8(5),
                    Stage::Other(s) => {
                        w.u8(0xFF);
                        w.str(s);
                    }
                }
                w.str(&t.actor);
                w.str(&t.place);
                w.u64(t.at_ms);
                w.list(&t.readings, |w, r| {
                    w.str(&r.name);
                    w.i64(r.value_milli);
                    w.str(&r.unit);
                });
                w.list(&t.documents, |w, d| w.raw(&d.0));
                w.list(&t.inputs, |w, s| w.str(s));
            }
        }
    }

    fn decode(r: &mut Reader) -> Result<Payload> {
        let tag = r.u8()?;
        Ok(match tag {
            1 => Payload::Transfer {
                to: PublicKey(r.array()?),
                amount: r.u64()?,
            },
            2 => Payload::Vote {
                candidates: r.list(|r| Ok(PublicKey(r.array()?)))?,
            },
            6 => Payload::RegisterCandidate { name: r.string()? },
            3 => Payload::Audit(AuditRecord {
                actor: r.string()?,
                action: r.string()?,
                target: r.string()?,
                at_ms: r.u64()?,
                result: r.string()?,
                details: r.list(|r| Ok((r.string()?, r.string()?)))?,
            }),
            4 => Payload::Anchor(Anchor {
                volume_id: r.string()?,
                snapshot: r.string()?,
                digest: Hash32(r.array()?),
                size_bytes: r.u64()?,
            }),
            5 => Payload::Trace(TraceEvent {
                batch_id: r.string()?,
                stage: match r.u8()? {
                    1 => Stage::Farm,
                    2 => Stage::Processing,
                    3 => Stage::ColdStorage,
                    4 => Stage::Logistics,
                    5 => Stage::Retail,
                    0xFF => Stage::Other(r.string()?),
                    t => {
                        return Err(Error::decode(
                            "Transaction",
                            format!("unknown stage tag {t}"),
                        ))
                    }
                },
                actor: r.string()?,
                place: r.string()?,
                at_ms: r.u64()?,
                readings: r.list(|r| {
                    Ok(Reading {
                        name: r.string()?,
                        value_milli: r.i64()?,
                        unit: r.string()?,
                    })
                })?,
                documents: r.list(|r| Ok(Hash32(r.array()?)))?,
                inputs: r.list(|r| r.string())?,
            }),
            t => {
                return Err(Error::decode(
                    "Transaction",
                    format!("unknown payload tag {t}"),
                ))
            }
        })
    }

    /// Checks rules that need no state: non-empty identifiers, limits, no
    /// duplicate votes, positive amounts.
    pub fn check_well_formed(&self) -> Result<(), TxError> {
        let bad = |s: &str| Err(TxError::InvalidPayload(s.to_string()));
        match self {
            Payload::Transfer { amount, .. } if *amount == 0 => bad("transfer of 0 units"),
            Payload::Vote { candidates } => {
                if candidates.len() > MAX_VOTES {
                    return bad(&format!(
                        "votes for {} candidates, at most {MAX_VOTES}",
                        candidates.len()
                    ));
                }
                let mut s = candidates.clone();
                s.sort();
                s.dedup();
                if s.len() != candidates.len() {
                    return bad("a candidate is named twice in one vote");
                }
                Ok(())
            }
            Payload::RegisterCandidate { name } if name.is_empty() || name.len() > 64 => {
                bad("candidate name must be 1 to 64 bytes")
            }
            Payload::Audit(a) if a.action.is_empty() || a.actor.is_empty() => {
                bad("audit record needs an actor and an action")
            }
            Payload::Anchor(a) if a.volume_id.is_empty() || a.snapshot.is_empty() => {
                bad("anchor needs a volume id and a snapshot name")
            }
            Payload::Trace(t) if t.batch_id.is_empty() => bad("trace event needs a batch id"),
            Payload::Trace(t) if t.inputs.iter().any(|i| i.is_empty() || *i == t.batch_id) => {
                bad("trace input batch ids must be non-empty and differ from the batch itself")
            }
            _ => Ok(()),
        }
    }
}

/// A signed transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    /// Encoding version, [`TX_VERSION`].
    pub version: u16,
    /// Hash of the chain's genesis (see `Genesis::chain_hash`).
    pub chain: Hash32,
    /// Sender; the signature is by this key.
    pub from: PublicKey,
    /// The sender's nonce: 0 for its first transaction, then +1 each.
    pub nonce: u64,
    pub payload: Payload,
    pub signature: Signature,
}

impl Transaction {
    /// Builds and signs a transaction.
    pub fn signed(chain: Hash32, key: &Keypair, nonce: u64, payload: Payload) -> Self {
        let mut tx = Transaction {
            version: TX_VERSION,
            chain,
            from: key.public(),
            nonce,
            payload,
            signature: Signature([0; 64]),
        };
        tx.signature = key.sign(&tx.signing_bytes());
        tx
    }

    fn encode_unsigned(&self, w: &mut Writer) {
        w.u16(self.version);
        w.raw(&self.chain.0);
        w.raw(&self.from.0);
        w.u64(self.nonce);
        self.payload.encode(w);
    }

    /// The message the sender signs.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.raw(TX_SIGN_DOMAIN);
        self.encode_unsigned(&mut w);
        w.into_bytes()
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode_unsigned(&mut w);
        w.raw(&self.signature.0);
        w.into_bytes()
    }

    /// Decodes a canonical encoding; rejects unknown versions and trailing bytes.
    pub fn decode(b: &[u8]) -> Result<Self> {
        if b.len() > MAX_TX_BYTES {
            return Err(Error::decode(
                "Transaction",
                format!("{} bytes, limit {MAX_TX_BYTES}", b.len()),
            ));
        }
        let mut r = Reader::new(b, "Transaction");
        let version = r.u16()?;
        if version != TX_VERSION {
            return Err(Error::decode(
                "Transaction",
                format!("unknown version {version}"),
            ));
        }
        let tx = Transaction {
            version,
            chain: Hash32(r.array()?),
            from: PublicKey(r.array()?),
            nonce: r.u64()?,
            payload: Payload::decode(&mut r)?,
            signature: Signature(r.array()?),
        };
        r.finish()?;
        Ok(tx)
    }

    /// The transaction's id: blake3 over its full encoding (signature included).
    pub fn hash(&self) -> Hash32 {
        hash_domain(TX_HASH_DOMAIN, &self.encode())
    }

    /// Checks what needs no ledger state: version, chain, limits, payload
    /// rules and the signature.
    pub fn check_stateless(&self, chain: &Hash32) -> Result<(), TxError> {
        if self.chain != *chain {
            return Err(TxError::WrongChain {
                expected: *chain,
                got: self.chain,
            });
        }
        if self.version != TX_VERSION {
            return Err(TxError::InvalidPayload(format!(
                "unknown version {}",
                self.version
            )));
        }
        self.payload.check_well_formed()?;
        let _ = MAX_LIST_ITEMS;
        if !self.from.verify(&self.signing_bytes(), &self.signature) {
            return Err(TxError::BadSignature(self.from));
        }
        Ok(())
    }
}

/// A transaction whose stateless checks passed (or that was signed here):
/// what [`crate::Ledger::submit_checked`] takes, so that the signature
/// check, the costly part, can run outside the ledger's lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedTx(Transaction);

impl CheckedTx {
    pub fn tx(&self) -> &Transaction {
        &self.0
    }

    pub fn into_inner(self) -> Transaction {
        self.0
    }
}

impl Transaction {
    /// Runs [`Transaction::check_stateless`].
    pub fn checked(self, chain: &Hash32) -> Result<CheckedTx, TxError> {
        self.check_stateless(chain)?;
        Ok(CheckedTx(self))
    }

    /// Signs a transaction for `chain` after checking its payload; the
    /// signature just made is not verified again.
    pub fn signed_checked(
        chain: Hash32,
        key: &Keypair,
        nonce: u64,
        payload: Payload,
    ) -> Result<CheckedTx, TxError> {
        payload.check_well_formed()?;
        Ok(CheckedTx(Transaction::signed(chain, key, nonce, payload)))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::crypto::hash;

    pub fn sample_trace(batch: &str, inputs: &[&str]) -> Payload {
        Payload::Trace(TraceEvent {
            batch_id: batch.into(),
            stage: Stage::ColdStorage,
            actor: "coldco".into(),
            place: "Rotterdam".into(),
            at_ms: 1_700_000_000_000,
            readings: vec![Reading {
                name: "temperature".into(),
                value_milli: 3_500,
                unit: "C".into(),
            }],
            documents: vec![hash(b"invoice.pdf")],
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
        })
    }

    fn all_payloads() -> Vec<Payload> {
        let k = Keypair::from_seed(b"c").public();
        vec![
            Payload::Transfer { to: k, amount: 5 },
            Payload::Vote {
                candidates: vec![k],
            },
            Payload::RegisterCandidate { name: "n".into() },
            Payload::Audit(AuditRecord {
                actor: "node-1".into(),
                action: "volume.create".into(),
                target: "volume/demo".into(),
                at_ms: 9,
                result: "ok".into(),
                details: vec![("size".into(), "1GiB".into())],
            }),
            Payload::Anchor(Anchor {
                volume_id: "v1".into(),
                snapshot: "s1".into(),
                digest: hash(b"d"),
                size_bytes: 1 << 30,
            }),
            sample_trace("b1", &["a", "b"]),
            Payload::Trace(TraceEvent {
                stage: Stage::Other("milling".into()),
                ..match sample_trace("b2", &[]) {
                    Payload::Trace(t) => t,
                    _ => unreachable!(),
                }
            }),
        ]
    }

    #[test]
    fn every_payload_round_trips_and_verifies() {
        let key = Keypair::from_seed(b"s");
        let chain = hash(b"chain");
        for p in all_payloads() {
            let tx = Transaction::signed(chain, &key, 3, p);
            let b = tx.encode();
            let back = Transaction::decode(&b).unwrap();
            assert_eq!(back, tx);
            assert_eq!(back.encode(), b);
            back.check_stateless(&chain).unwrap();
            let json = serde_json::to_string(&tx).unwrap();
            assert_eq!(serde_json::from_str::<Transaction>(&json).unwrap(), tx);
        }
    }

    #[test]
    fn any_flipped_byte_breaks_decoding_or_signature() {
        let key = Keypair::from_seed(b"s");
        let chain = hash(b"chain");
        let tx = Transaction::signed(chain, &key, 0, sample_trace("b", &["a"]));
        let b = tx.encode();
        for i in 0..b.len() {
            let mut m = b.clone();
            m[i] ^= 0x01;
            if let Ok(t) = Transaction::decode(&m) {
                assert!(t.check_stateless(&chain).is_err(), "byte {i} flip accepted");
            }
        }
    }

    #[test]
    fn wrong_chain_and_bad_payloads_are_named() {
        let key = Keypair::from_seed(b"s");
        let chain = hash(b"chain");
        let tx = Transaction::signed(
            chain,
            &key,
            0,
            Payload::Transfer {
                to: key.public(),
                amount: 1,
            },
        );
        assert!(matches!(
            tx.check_stateless(&hash(b"other")),
            Err(TxError::WrongChain { .. })
        ));
        let c = Keypair::from_seed(b"c").public();
        let dup = Transaction::signed(
            chain,
            &key,
            0,
            Payload::Vote {
                candidates: vec![c, c],
            },
        );
        assert!(matches!(
            dup.check_stateless(&chain),
            Err(TxError::InvalidPayload(_))
        ));
        let zero = Transaction::signed(chain, &key, 0, Payload::Transfer { to: c, amount: 0 });
        assert!(matches!(
            zero.check_stateless(&chain),
            Err(TxError::InvalidPayload(_))
        ));
        let self_input = Transaction::signed(chain, &key, 0, sample_trace("b", &["b"]));
        assert!(matches!(
            self_input.check_stateless(&chain),
            Err(TxError::InvalidPayload(_))
        ));
    }

    #[test]
    fn readings_outside_declared_limits_are_flagged() {
        let Payload::Trace(mut ev) = sample_trace("b", &[]) else {
            unreachable!()
        };
        let cold = ReadingLimit {
            name: "temperature".into(),
            unit: "C".into(),
            min_milli: 0,
            max_milli: 4_000,
        };
        assert!(
            ev.breaches(std::slice::from_ref(&cold)).is_empty(),
            "3.5 C is within 0..4 C"
        );
        ev.readings[0].value_milli = 4_001;
        assert_eq!(ev.breaches(std::slice::from_ref(&cold)).len(), 1);
        ev.readings[0].value_milli = -1;
        assert_eq!(
            ev.breaches(std::slice::from_ref(&cold))[0]
                .reading
                .value_milli,
            -1
        );
        let other_unit = ReadingLimit {
            unit: "F".into(),
            ..cold
        };
        assert!(ev.breaches(&[other_unit]).is_empty());
    }

    #[test]
    fn hp_amounts_format_and_parse_exactly() {
        assert_eq!(format_hp(0), "0");
        assert_eq!(format_hp(1_250_000_000), "12.5");
        assert_eq!(format_hp(1), "0.00000001");
        assert_eq!(format_hp(30_000_000 * UNITS_PER_HP), "30000000");
        for (text, units) in [
            ("12.5", 1_250_000_000),
            ("0.00000001", 1),
            ("100", 100 * UNITS_PER_HP),
            (".5", UNITS_PER_HP / 2),
            ("7.", 7 * UNITS_PER_HP),
        ] {
            assert_eq!(parse_hp(text), Ok(units), "{text}");
            assert_eq!(parse_hp(&format_hp(units)), Ok(units));
        }
        for bad in [
            "",
            ".",
            "-1",
            "1e3",
            "0.000000001",
            "1.2.3",
            "999999999999999",
        ] {
            let e = parse_hp(bad).unwrap_err();
            assert!(e.contains("not an HP amount"), "{bad}: {e}");
        }
    }

    #[test]
    fn unknown_version_is_rejected() {
        let key = Keypair::from_seed(b"s");
        let tx = Transaction::signed(
            hash(b"c"),
            &key,
            0,
            Payload::RegisterCandidate { name: "x".into() },
        );
        let mut b = tx.encode();
        b[0] = 2;
        let e = Transaction::decode(&b).unwrap_err();
        assert!(e.to_string().contains("unknown version 2"), "{e}");
    }
}
