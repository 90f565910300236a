//! What a PG replicates: object operations, in a compact binary encoding
//! (object data rides in Raft entries, so no JSON here).
//!
//! Encoding (little-endian): version `2`, then the operation count (u32),
//! then per operation a tag byte and its fields (`seq` is the volume's
//! snapshot sequence when the change was sent; see [`super::versions`]):
//!
//! | tag | operation | fields |
//! |---|---|---|
//! | 1 | write | object (volume u64, object no u64), offset u64, length u32, data, seq u64, copy-up |
//! | 2 | discard | object, offset u64, length u64, seq u64, copy-up |
//! | 3 | delete (the head; snapshots keep their versions) | object, seq u64 |
//! | 4 | rollback the head to a snapshot | object, snapshot u64, seq u64 |
//! | 5 | trim versions after a snapshot's removal | object, removed u64, lower u64, upper u64 |
//! | 6 | purge every version | object |
//!
//! Copy-up (for clones, whose unwritten objects read through to a parent
//! snapshot) is a byte: `0` none, `1` required (refuse the whole entry if
//! the object has never existed), `2` followed by length u32 and the
//! parent's bytes (written first if the object has never existed).
//! Version `1` entries (tags 1-3 without seq or copy-up) still decode.
//!
//! A query is version `2` and a kind byte: `1` read (object, offset u64,
//! length u32, snapshot u64 with `0` for the head), `2` stat (object).
//!
//! A digest entry changes nothing: byte `0xd1`, the object count (u32),
//! then the objects. Each replica, as it applies it, takes a digest of
//! each object as it stands at that point of the log (see
//! [`super::backend::PgBackend::digest_object`]), so that a scrub compares
//! replicas at the same point while writes go on. Its answer is the entry's
//! index (u64) and a 32-byte digest per object. Older nodes cannot decode
//! it and skip it, as every replica skips a malformed entry.
//!
//! A read's answer ends with a status byte: `0` after the bytes, `1` alone
//! (the version does not exist), `2` after a corrupt block's description
//! (object, clone seq u64 with `0` for the head, block u64, has-record u8,
//! recorded crc u32, actual crc u32): the leader's node repairs that block
//! and reads again, so a client never sees status `2`.

use serde::{Deserialize, Serialize};

use super::backend::{BadBlock, BlockRef};

const VERSION_1: u8 = 1;
const VERSION: u8 = 2;
const TAG_WRITE: u8 = 1;
const TAG_DISCARD: u8 = 2;
const TAG_DELETE: u8 = 3;
const TAG_ROLLBACK: u8 = 4;
const TAG_TRIM: u8 = 5;
const TAG_PURGE: u8 = 6;
const COPY_UP_NONE: u8 = 0;
const COPY_UP_REQUIRED: u8 = 1;
const COPY_UP_DATA: u8 = 2;
const QUERY_READ: u8 = 1;
const QUERY_STAT: u8 = 2;
const DIGEST_ENTRY: u8 = 0xd1;
/// A blake3 digest of one object on one replica.
pub type Digest = [u8; 32];
/// Most objects one digest entry names.
pub const DIGEST_OBJECTS_MAX: usize = 1024;
/// Largest write one operation carries (one object's worth at most).
pub const WRITE_MAX_BYTES: usize = 64 << 20;
/// What a PG answers to an entry refused because an object needs its
/// parent's bytes first.
pub const ANSWER_COPY_UP_NEEDED: &[u8] = b"copy-up";

/// Object `object_no` of volume `volume`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectId {
    pub volume: u64,
    pub object_no: u64,
}

/// How a change treats an object that has never existed (clones only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CopyUp {
    /// Not a clone, or past the parent's extent.
    #[default]
    None,
    /// Refuse the entry if the object never existed: the sender must
    /// fetch the parent's bytes and send them.
    Required,
    /// The parent's bytes, written first if the object never existed.
    Data(Vec<u8>),
}

/// One change to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectOp {
    Write {
        object: ObjectId,
        offset: u64,
        data: Vec<u8>,
        seq: u64,
        copy_up: CopyUp,
    },
    Discard {
        object: ObjectId,
        offset: u64,
        len: u64,
        seq: u64,
        copy_up: CopyUp,
    },
    Delete {
        object: ObjectId,
        seq: u64,
    },
    Rollback {
        object: ObjectId,
        snapshot: u64,
        seq: u64,
    },
    Trim {
        object: ObjectId,
        removed: u64,
        lower: u64,
        upper: u64,
    },
    Purge {
        object: ObjectId,
    },
}

impl ObjectOp {
    /// The same change with `copy_up` (only writes and discards carry one).
    pub fn with_copy_up(mut self, copy_up: CopyUp) -> ObjectOp {
        if let ObjectOp::Write { copy_up: c, .. } | ObjectOp::Discard { copy_up: c, .. } = &mut self
        {
            *c = copy_up;
        }
        self
    }

    pub fn object(&self) -> &ObjectId {
        match self {
            ObjectOp::Write { object, .. }
            | ObjectOp::Discard { object, .. }
            | ObjectOp::Delete { object, .. }
            | ObjectOp::Rollback { object, .. }
            | ObjectOp::Trim { object, .. }
            | ObjectOp::Purge { object } => object,
        }
    }

    pub fn copy_up(&self) -> &CopyUp {
        match self {
            ObjectOp::Write { copy_up, .. } | ObjectOp::Discard { copy_up, .. } => copy_up,
            _ => &CopyUp::None,
        }
    }
}

/// Why bytes are not a valid command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed PG command: {0}")]
pub struct DecodeError(pub String);

fn put_object(out: &mut Vec<u8>, object: &ObjectId) {
    out.extend_from_slice(&object.volume.to_le_bytes());
    out.extend_from_slice(&object.object_no.to_le_bytes());
}

fn put_copy_up(out: &mut Vec<u8>, copy_up: &CopyUp) {
    match copy_up {
        CopyUp::None => out.push(COPY_UP_NONE),
        CopyUp::Required => out.push(COPY_UP_REQUIRED),
        CopyUp::Data(data) => {
            out.push(COPY_UP_DATA);
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(data);
        }
    }
}

/// Encodes a batch of operations as one Raft entry.
pub fn encode(ops: &[ObjectOp]) -> Vec<u8> {
    let data_len: usize = ops
        .iter()
        .map(|op| {
            let own = match op {
                ObjectOp::Write { data, .. } => data.len(),
                _ => 0,
            };
            own + match op.copy_up() {
                CopyUp::Data(d) => d.len(),
                _ => 0,
            }
        })
        .sum();
    let mut out = Vec::with_capacity(5 + ops.len() * 50 + data_len);
    out.push(VERSION);
    out.extend_from_slice(&(ops.len() as u32).to_le_bytes());
    for op in ops {
        match op {
            ObjectOp::Write {
                object,
                offset,
                data,
                seq,
                copy_up,
            } => {
                out.push(TAG_WRITE);
                put_object(&mut out, object);
                out.extend_from_slice(&offset.to_le_bytes());
                out.extend_from_slice(&(data.len() as u32).to_le_bytes());
                out.extend_from_slice(data);
                out.extend_from_slice(&seq.to_le_bytes());
                put_copy_up(&mut out, copy_up);
            }
            ObjectOp::Discard {
                object,
                offset,
                len,
                seq,
                copy_up,
            } => {
                out.push(TAG_DISCARD);
                put_object(&mut out, object);
                out.extend_from_slice(&offset.to_le_bytes());
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(&seq.to_le_bytes());
                put_copy_up(&mut out, copy_up);
            }
            ObjectOp::Delete { object, seq } => {
                out.push(TAG_DELETE);
                put_object(&mut out, object);
                out.extend_from_slice(&seq.to_le_bytes());
            }
            ObjectOp::Rollback {
                object,
                snapshot,
                seq,
            } => {
                out.push(TAG_ROLLBACK);
                put_object(&mut out, object);
                out.extend_from_slice(&snapshot.to_le_bytes());
                out.extend_from_slice(&seq.to_le_bytes());
            }
            ObjectOp::Trim {
                object,
                removed,
                lower,
                upper,
            } => {
                out.push(TAG_TRIM);
                put_object(&mut out, object);
                for v in [removed, lower, upper] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
            ObjectOp::Purge { object } => {
                out.push(TAG_PURGE);
                put_object(&mut out, object);
            }
        }
    }
    out
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < n {
            return Err(DecodeError(format!("truncated {what}")));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }
    fn u8(&mut self, what: &str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }
    fn u32(&mut self, what: &str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(
            self.take(4, what)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self, what: &str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(
            self.take(8, what)?.try_into().expect("8 bytes"),
        ))
    }
    fn object(&mut self) -> Result<ObjectId, DecodeError> {
        Ok(ObjectId {
            volume: self.u64("volume id")?,
            object_no: self.u64("object number")?,
        })
    }
    fn data(&mut self, what: &str) -> Result<Vec<u8>, DecodeError> {
        let len = self.u32("length")? as usize;
        if len > WRITE_MAX_BYTES {
            return Err(DecodeError(format!(
                "{what} of {len} bytes exceeds {WRITE_MAX_BYTES}"
            )));
        }
        Ok(self.take(len, what)?.to_vec())
    }
    fn copy_up(&mut self) -> Result<CopyUp, DecodeError> {
        match self.u8("copy-up")? {
            COPY_UP_NONE => Ok(CopyUp::None),
            COPY_UP_REQUIRED => Ok(CopyUp::Required),
            COPY_UP_DATA => Ok(CopyUp::Data(self.data("copy-up data")?)),
            other => Err(DecodeError(format!("unknown copy-up kind {other}"))),
        }
    }
    /// A change's snapshot sequence and copy-up (version 1 had neither).
    fn seq_and_copy_up(&mut self, v2: bool) -> Result<(u64, CopyUp), DecodeError> {
        if v2 {
            Ok((self.u64("seq")?, self.copy_up()?))
        } else {
            Ok((0, CopyUp::None))
        }
    }
    fn version(&mut self) -> Result<u8, DecodeError> {
        match self.u8("version")? {
            v @ (VERSION_1 | VERSION) => Ok(v),
            v => Err(DecodeError(format!("unknown version {v}"))),
        }
    }
    fn end(&self, what: &str) -> Result<(), DecodeError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(DecodeError(format!(
                "{} trailing bytes after {what}",
                self.bytes.len()
            )))
        }
    }
}

/// Decodes a Raft entry into its operations.
pub fn decode(bytes: &[u8]) -> Result<Vec<ObjectOp>, DecodeError> {
    let mut r = Reader { bytes };
    let v2 = r.version()? == VERSION;
    let count = r.u32("operation count")? as usize;
    let mut ops = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let tag = r.u8("operation tag")?;
        let op = match tag {
            TAG_WRITE => {
                let object = r.object()?;
                let offset = r.u64("offset")?;
                let data = r.data("write")?;
                let (seq, copy_up) = r.seq_and_copy_up(v2)?;
                ObjectOp::Write {
                    object,
                    offset,
                    data,
                    seq,
                    copy_up,
                }
            }
            TAG_DISCARD => {
                let object = r.object()?;
                let offset = r.u64("offset")?;
                let len = r.u64("length")?;
                let (seq, copy_up) = r.seq_and_copy_up(v2)?;
                ObjectOp::Discard {
                    object,
                    offset,
                    len,
                    seq,
                    copy_up,
                }
            }
            TAG_DELETE => ObjectOp::Delete {
                object: r.object()?,
                seq: if v2 { r.u64("seq")? } else { 0 },
            },
            TAG_ROLLBACK if v2 => ObjectOp::Rollback {
                object: r.object()?,
                snapshot: r.u64("snapshot")?,
                seq: r.u64("seq")?,
            },
            TAG_TRIM if v2 => ObjectOp::Trim {
                object: r.object()?,
                removed: r.u64("removed snapshot")?,
                lower: r.u64("lower snapshot")?,
                upper: r.u64("upper snapshot")?,
            },
            TAG_PURGE if v2 => ObjectOp::Purge {
                object: r.object()?,
            },
            tag => return Err(DecodeError(format!("unknown operation tag {tag}"))),
        };
        ops.push(op);
    }
    r.end("the operations")?;
    Ok(ops)
}

/// A read of `len` bytes of `object` from `offset`, of the head or of a
/// snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadQuery {
    pub object: ObjectId,
    pub offset: u64,
    pub len: u32,
    /// `None` reads the head.
    pub snapshot: Option<u64>,
}

/// What a PG is asked without changing anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Query {
    Read(ReadQuery),
    /// An object's versions and their allocated bytes.
    Stat(ObjectId),
}

impl Query {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(38);
        out.push(VERSION);
        match self {
            Query::Read(q) => {
                out.push(QUERY_READ);
                put_object(&mut out, &q.object);
                out.extend_from_slice(&q.offset.to_le_bytes());
                out.extend_from_slice(&q.len.to_le_bytes());
                out.extend_from_slice(&q.snapshot.unwrap_or(0).to_le_bytes());
            }
            Query::Stat(object) => {
                out.push(QUERY_STAT);
                put_object(&mut out, object);
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Query, DecodeError> {
        let mut r = Reader { bytes };
        if r.version()? == VERSION_1 {
            // Version 1 knew only head reads, with no kind byte.
            let query = ReadQuery {
                object: r.object()?,
                offset: r.u64("offset")?,
                len: r.u32("length")?,
                snapshot: None,
            };
            r.end("the read query")?;
            return Ok(Query::Read(query));
        }
        let query = match r.u8("query kind")? {
            QUERY_READ => Query::Read(ReadQuery {
                object: r.object()?,
                offset: r.u64("offset")?,
                len: r.u32("length")?,
                snapshot: Some(r.u64("snapshot")?).filter(|&s| s != 0),
            }),
            QUERY_STAT => Query::Stat(r.object()?),
            other => return Err(DecodeError(format!("unknown query kind {other}"))),
        };
        r.end("the query")?;
        Ok(query)
    }
}

/// A digest entry for `objects` (at most [`DIGEST_OBJECTS_MAX`]).
pub fn encode_digest_entry(objects: &[ObjectId]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + objects.len() * 16);
    out.push(DIGEST_ENTRY);
    out.extend_from_slice(&(objects.len() as u32).to_le_bytes());
    for object in objects {
        put_object(&mut out, object);
    }
    out
}

/// The objects of a digest entry; `None` when `bytes` is not one.
pub fn decode_digest_entry(bytes: &[u8]) -> Option<Result<Vec<ObjectId>, DecodeError>> {
    let (&DIGEST_ENTRY, rest) = bytes.split_first()? else {
        return None;
    };
    let mut r = Reader { bytes: rest };
    let objects = (|| {
        let count = r.u32("object count")? as usize;
        if count > DIGEST_OBJECTS_MAX {
            return Err(DecodeError(format!(
                "a digest of {count} objects exceeds {DIGEST_OBJECTS_MAX}"
            )));
        }
        let objects = (0..count)
            .map(|_| r.object())
            .collect::<Result<Vec<_>, _>>()?;
        r.end("the digest's objects")?;
        Ok(objects)
    })();
    Some(objects)
}

/// What applying a digest entry answers: its index and the digests.
pub fn encode_digest_answer(index: u64, digests: &[Digest]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + digests.len() * 32);
    out.extend_from_slice(&index.to_le_bytes());
    for d in digests {
        out.extend_from_slice(d);
    }
    out
}

pub fn decode_digest_answer(bytes: &[u8]) -> Result<(u64, Vec<Digest>), DecodeError> {
    let mut r = Reader { bytes };
    let index = r.u64("digest index")?;
    if !r.bytes.len().is_multiple_of(32) {
        return Err(DecodeError(format!(
            "a digest answer of {} bytes after its index is not whole digests",
            r.bytes.len()
        )));
    }
    let digests = r
        .bytes
        .chunks_exact(32)
        .map(|c| c.try_into().expect("32 bytes"))
        .collect();
    Ok((index, digests))
}

/// A read's answer: the bytes, or that the version does not exist (a
/// clone then reads its parent). The status byte goes last so that a
/// large read is not moved to make room for it.
pub fn encode_read_answer(data: Option<Vec<u8>>) -> Vec<u8> {
    match data {
        Some(mut data) => {
            data.push(0);
            data
        }
        None => vec![1],
    }
}

const ANSWER_CORRUPT: u8 = 2;
const CORRUPT_ANSWER_BYTES: usize = 8 * 4 + 1 + 4 + 4 + 1;

/// A read's answer when a block of the range is corrupt on the replica.
pub fn encode_corrupt_answer(bad: &BadBlock) -> Vec<u8> {
    let mut out = Vec::with_capacity(CORRUPT_ANSWER_BYTES);
    put_object(&mut out, &bad.at.object);
    out.extend_from_slice(&bad.at.clone_seq.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&bad.at.block.to_le_bytes());
    out.push(u8::from(bad.recorded.is_some()));
    out.extend_from_slice(&bad.recorded.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&bad.actual.to_le_bytes());
    out.push(ANSWER_CORRUPT);
    out
}

/// The corrupt block a read's answer reports, if it reports one.
pub fn corrupt_in_answer(answer: &[u8]) -> Option<BadBlock> {
    if answer.len() != CORRUPT_ANSWER_BYTES || answer.last() != Some(&ANSWER_CORRUPT) {
        return None;
    }
    let mut r = Reader {
        bytes: &answer[..CORRUPT_ANSWER_BYTES - 1],
    };
    let object = r.object().ok()?;
    let clone_seq = Some(r.u64("clone").ok()?).filter(|&s| s != 0);
    let block = r.u64("block").ok()?;
    let has_record = r.u8("has record").ok()? == 1;
    let recorded = r.u32("recorded").ok()?;
    let actual = r.u32("actual").ok()?;
    Some(BadBlock {
        at: BlockRef {
            object,
            clone_seq,
            block,
        },
        recorded: has_record.then_some(recorded),
        actual,
    })
}

/// The inverse of [`encode_read_answer`].
pub fn decode_read_answer(mut answer: Vec<u8>) -> Result<Option<Vec<u8>>, DecodeError> {
    if let Some(bad) = corrupt_in_answer(&answer) {
        return Err(DecodeError(format!(
            "{} of volume {:x} is corrupt on the replica that answered and was not repaired",
            bad.at, bad.at.object.volume
        )));
    }
    match answer.pop() {
        Some(0) => Ok(Some(answer)),
        Some(1) if answer.is_empty() => Ok(None),
        _ => Err(DecodeError("malformed read answer".into())),
    }
}

/// An object's versions and the bytes each holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectStat {
    pub stamp: u64,
    /// Allocated bytes of the head; `None` when it does not exist.
    pub head_bytes: Option<u64>,
    /// (seq, from, allocated bytes) per clone version.
    pub clones: Vec<(u64, u64, u64)>,
}

impl ObjectStat {
    /// As [`super::versions::ObjectMeta::is_pristine`].
    pub fn is_pristine(&self) -> bool {
        self.head_bytes.is_none() && self.clones.is_empty() && self.stamp == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_entries_round_trip_and_are_told_apart_from_changes() {
        let objects = vec![object(1), object(9)];
        let entry = encode_digest_entry(&objects);
        assert_eq!(decode_digest_entry(&entry), Some(Ok(objects.clone())));
        // Not a change: an older node skips it as malformed, everywhere.
        assert!(decode(&entry).is_err());
        let write = encode(&[ObjectOp::Delete {
            object: object(1),
            seq: 0,
        }]);
        assert_eq!(decode_digest_entry(&write), None);
        assert!(decode_digest_entry(&entry[..entry.len() - 1])
            .unwrap()
            .is_err());
        let mut huge = vec![DIGEST_ENTRY];
        huge.extend_from_slice(&(DIGEST_OBJECTS_MAX as u32 + 1).to_le_bytes());
        assert!(decode_digest_entry(&huge).unwrap().is_err());
        let answer = encode_digest_answer(42, &[[1; 32], [2; 32]]);
        assert_eq!(
            decode_digest_answer(&answer).unwrap(),
            (42, vec![[1; 32], [2; 32]])
        );
        assert!(decode_digest_answer(&answer[..39]).is_err());
    }

    fn object(n: u64) -> ObjectId {
        ObjectId {
            volume: 7,
            object_no: n,
        }
    }

    fn sample() -> Vec<ObjectOp> {
        vec![
            ObjectOp::Write {
                object: object(3),
                offset: 4096,
                data: vec![0xab; 5000],
                seq: 4,
                copy_up: CopyUp::Data(vec![1, 2, 3]),
            },
            ObjectOp::Discard {
                object: object(3),
                offset: 0,
                len: 4096,
                seq: 4,
                copy_up: CopyUp::Required,
            },
            ObjectOp::Delete {
                object: object(9),
                seq: 4,
            },
            ObjectOp::Rollback {
                object: object(1),
                snapshot: 2,
                seq: 4,
            },
            ObjectOp::Trim {
                object: object(1),
                removed: 3,
                lower: 2,
                upper: u64::MAX,
            },
            ObjectOp::Purge { object: object(2) },
        ]
    }

    #[test]
    fn commands_and_queries_round_trip() {
        assert_eq!(decode(&encode(&sample())).unwrap(), sample());
        for q in [
            Query::Read(ReadQuery {
                object: object(2),
                offset: 3,
                len: 4,
                snapshot: None,
            }),
            Query::Read(ReadQuery {
                object: object(2),
                offset: 3,
                len: 4,
                snapshot: Some(17),
            }),
            Query::Stat(object(5)),
        ] {
            assert_eq!(Query::decode(&q.encode()).unwrap(), q);
        }
        for answer in [Some(vec![]), Some(vec![0, 1, 0]), None] {
            let encoded = encode_read_answer(answer.clone());
            assert_eq!(decode_read_answer(encoded).unwrap(), answer);
        }
        assert!(decode_read_answer(vec![]).is_err());
        assert!(decode_read_answer(vec![5, 1]).is_err());
        for (clone_seq, recorded) in [(None, Some(0xdead_beef)), (Some(7), None)] {
            let bad = BadBlock {
                at: BlockRef {
                    object: object(4),
                    clone_seq,
                    block: 1023,
                },
                recorded,
                actual: 0x1234_5678,
            };
            let answer = encode_corrupt_answer(&bad);
            assert_eq!(corrupt_in_answer(&answer), Some(bad));
            assert!(decode_read_answer(answer).is_err());
        }
        // Data that happens to end like a corrupt answer is still data.
        let mut data = vec![2u8; CORRUPT_ANSWER_BYTES - 1];
        data.push(0);
        assert_eq!(corrupt_in_answer(&data), None);
    }

    #[test]
    fn version_1_entries_from_before_snapshots_still_decode() {
        // Tag 1 write of 2 bytes at 16, tag 3 delete, as version 1 wrote them.
        let mut v1 = vec![1u8];
        v1.extend_from_slice(&2u32.to_le_bytes());
        v1.push(1);
        v1.extend_from_slice(&7u64.to_le_bytes());
        v1.extend_from_slice(&3u64.to_le_bytes());
        v1.extend_from_slice(&16u64.to_le_bytes());
        v1.extend_from_slice(&2u32.to_le_bytes());
        v1.extend_from_slice(&[9, 9]);
        v1.push(3);
        v1.extend_from_slice(&7u64.to_le_bytes());
        v1.extend_from_slice(&4u64.to_le_bytes());
        assert_eq!(
            decode(&v1).unwrap(),
            vec![
                ObjectOp::Write {
                    object: object(3),
                    offset: 16,
                    data: vec![9, 9],
                    seq: 0,
                    copy_up: CopyUp::None,
                },
                ObjectOp::Delete {
                    object: object(4),
                    seq: 0
                },
            ]
        );
        // Version 1 had no rollback: tag 4 there is garbage.
        let mut bad = vec![1u8];
        bad.extend_from_slice(&1u32.to_le_bytes());
        bad.push(4);
        assert!(decode(&bad).unwrap_err().0.contains("tag 4"));
    }

    #[test]
    fn every_truncation_and_corruption_is_an_error_not_a_panic() {
        let bytes = encode(&sample());
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "truncated at {cut} decoded");
        }
        let mut bad_tag = bytes.clone();
        bad_tag[5] = 99;
        assert!(decode(&bad_tag).unwrap_err().0.contains("tag 99"));
        let mut bad_version = bytes.clone();
        bad_version[0] = 3;
        assert!(decode(&bad_version).is_err());
        let mut trailing = bytes;
        trailing.push(0);
        assert!(decode(&trailing).unwrap_err().0.contains("trailing"));
        // A huge declared length is refused before any allocation.
        let mut huge = encode(&[ObjectOp::Write {
            object: object(1),
            offset: 0,
            data: vec![],
            seq: 0,
            copy_up: CopyUp::None,
        }]);
        let len_at = 1 + 4 + 1 + 16 + 8;
        huge[len_at..len_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&huge).unwrap_err().0.contains("exceeds"));
        let query = Query::Stat(object(1)).encode();
        for cut in 0..query.len() {
            assert!(Query::decode(&query[..cut]).is_err());
        }
    }
}
