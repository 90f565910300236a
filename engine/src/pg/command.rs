//! What a PG replicates: object operations, in a compact binary encoding
//! (object data rides in Raft entries, so no JSON here).
//!
//! Encoding (little-endian): version `1`, then the operation count (u32),
//! then per operation a tag byte and its fields:
//!
//! | tag | operation | fields |
//! |---|---|---|
//! | 1 | write | object (volume u64, object no u64), offset u64, length u32, data |
//! | 2 | discard | object, offset u64, length u64 |
//! | 3 | delete | object |
//!
//! A read query is version `1`, object, offset u64, length u32.

use serde::{Deserialize, Serialize};

const VERSION: u8 = 1;
const TAG_WRITE: u8 = 1;
const TAG_DISCARD: u8 = 2;
const TAG_DELETE: u8 = 3;
/// Largest write one operation carries (one object's worth at most).
pub const WRITE_MAX_BYTES: usize = 64 << 20;

/// Object `object_no` of volume `volume`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectId {
    pub volume: u64,
    pub object_no: u64,
}

/// One change to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectOp {
    Write {
        object: ObjectId,
        offset: u64,
        data: Vec<u8>,
    },
    Discard {
        object: ObjectId,
        offset: u64,
        len: u64,
    },
    Delete {
        object: ObjectId,
    },
}

/// Why bytes are not a valid command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed PG command: {0}")]
pub struct DecodeError(pub String);

fn put_object(out: &mut Vec<u8>, object: &ObjectId) {
    out.extend_from_slice(&object.volume.to_le_bytes());
    out.extend_from_slice(&object.object_no.to_le_bytes());
}

/// Encodes a batch of operations as one Raft entry.
pub fn encode(ops: &[ObjectOp]) -> Vec<u8> {
    let data_len: usize = ops
        .iter()
        .map(|op| match op {
            ObjectOp::Write { data, .. } => data.len(),
            _ => 0,
        })
        .sum();
    let mut out = Vec::with_capacity(5 + ops.len() * 33 + data_len);
    out.push(VERSION);
    out.extend_from_slice(&(ops.len() as u32).to_le_bytes());
    for op in ops {
        match op {
            ObjectOp::Write {
                object,
                offset,
                data,
            } => {
                out.push(TAG_WRITE);
                put_object(&mut out, object);
                out.extend_from_slice(&offset.to_le_bytes());
                out.extend_from_slice(&(data.len() as u32).to_le_bytes());
                out.extend_from_slice(data);
            }
            ObjectOp::Discard {
                object,
                offset,
                len,
            } => {
                out.push(TAG_DISCARD);
                put_object(&mut out, object);
                out.extend_from_slice(&offset.to_le_bytes());
                out.extend_from_slice(&len.to_le_bytes());
            }
            ObjectOp::Delete { object } => {
                out.push(TAG_DELETE);
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
    fn version(&mut self) -> Result<(), DecodeError> {
        match self.u8("version")? {
            VERSION => Ok(()),
            v => Err(DecodeError(format!("unknown version {v}"))),
        }
    }
}

/// Decodes a Raft entry into its operations.
pub fn decode(bytes: &[u8]) -> Result<Vec<ObjectOp>, DecodeError> {
    let mut r = Reader { bytes };
    r.version()?;
    let count = r.u32("operation count")? as usize;
    let mut ops = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let op = match r.u8("operation tag")? {
            TAG_WRITE => {
                let object = r.object()?;
                let offset = r.u64("offset")?;
                let len = r.u32("length")? as usize;
                if len > WRITE_MAX_BYTES {
                    return Err(DecodeError(format!(
                        "write of {len} bytes exceeds {WRITE_MAX_BYTES}"
                    )));
                }
                let data = r.take(len, "write data")?.to_vec();
                ObjectOp::Write {
                    object,
                    offset,
                    data,
                }
            }
            TAG_DISCARD => ObjectOp::Discard {
                object: r.object()?,
                offset: r.u64("offset")?,
                len: r.u64("length")?,
            },
            TAG_DELETE => ObjectOp::Delete {
                object: r.object()?,
            },
            tag => return Err(DecodeError(format!("unknown operation tag {tag}"))),
        };
        ops.push(op);
    }
    if !r.bytes.is_empty() {
        return Err(DecodeError(format!("{} trailing bytes", r.bytes.len())));
    }
    Ok(ops)
}

/// A read of `len` bytes of `object` from `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadQuery {
    pub object: ObjectId,
    pub offset: u64,
    pub len: u32,
}

impl ReadQuery {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(29);
        out.push(VERSION);
        put_object(&mut out, &self.object);
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<ReadQuery, DecodeError> {
        let mut r = Reader { bytes };
        r.version()?;
        let query = ReadQuery {
            object: r.object()?,
            offset: r.u64("offset")?,
            len: r.u32("length")?,
        };
        if !r.bytes.is_empty() {
            return Err(DecodeError("trailing bytes after read query".into()));
        }
        Ok(query)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<ObjectOp> {
        let object = ObjectId {
            volume: 7,
            object_no: 3,
        };
        vec![
            ObjectOp::Write {
                object,
                offset: 4096,
                data: vec![0xab; 5000],
            },
            ObjectOp::Discard {
                object,
                offset: 0,
                len: 4096,
            },
            ObjectOp::Delete {
                object: ObjectId {
                    volume: 7,
                    object_no: 9,
                },
            },
        ]
    }

    #[test]
    fn commands_round_trip() {
        assert_eq!(decode(&encode(&sample())).unwrap(), sample());
        let q = ReadQuery {
            object: ObjectId {
                volume: 1,
                object_no: 2,
            },
            offset: 3,
            len: 4,
        };
        assert_eq!(ReadQuery::decode(&q.encode()).unwrap(), q);
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
        bad_version[0] = 2;
        assert!(decode(&bad_version).is_err());
        let mut trailing = bytes;
        trailing.push(0);
        assert!(decode(&trailing).unwrap_err().0.contains("trailing"));
        // A huge declared length is refused before any allocation.
        let mut huge = encode(&[ObjectOp::Write {
            object: ObjectId {
                volume: 1,
                object_no: 1,
            },
            offset: 0,
            data: vec![],
        }]);
        let len_at = 1 + 4 + 1 + 16 + 8;
        huge[len_at..len_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&huge).unwrap_err().0.contains("exceeds"));
    }
}
