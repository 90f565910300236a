//! Canonical byte encoding (see docs/ledger-format.md). Integers are
//! little-endian and fixed width; byte strings and lists carry a `u32` length
//! prefix; every length is bounded so a hostile input cannot make us allocate
//! without limit. There is exactly one encoding of each value, so hashes and
//! signatures over encodings are well defined.

use crate::error::{Error, Result};

/// Longest string or byte field accepted, in bytes.
pub const MAX_FIELD_BYTES: usize = 64 * 1024;
/// Most items accepted in one list field (readings, documents, inputs...).
pub const MAX_LIST_ITEMS: usize = 1024;

/// Appends canonical encodings to a byte vector.
#[derive(Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }
    /// The bytes written so far.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Fixed-size raw bytes, no length prefix.
    pub fn raw(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }
    /// `u32` length then the bytes.
    pub fn bytes(&mut self, v: &[u8]) {
        self.u32(v.len() as u32);
        self.raw(v);
    }
    /// A UTF-8 string, encoded like `bytes`.
    pub fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }
    /// `u32` count then each item.
    pub fn list<T>(&mut self, items: &[T], mut f: impl FnMut(&mut Self, &T)) {
        self.u32(items.len() as u32);
        for it in items {
            f(self, it);
        }
    }
}

/// Reads canonical encodings, checking bounds and limits.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`; `what` names the type being decoded in errors.
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, pos: 0, what }
    }
    fn err(&self, reason: impl Into<String>) -> Error {
        Error::decode(
            self.what,
            format!("at byte {}: {}", self.pos, reason.into()),
        )
    }
    /// Takes `n` raw bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() - self.pos < n {
            return Err(self.err(format!(
                "truncated: need {n} bytes, {} left",
                self.buf.len() - self.pos
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    /// A length-prefixed byte string of at most `max` bytes.
    pub fn bytes_max(&mut self, max: usize) -> Result<&'a [u8]> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(self.err(format!("field of {n} bytes is over the limit of {max}")));
        }
        self.take(n)
    }
    /// A length-prefixed byte string of at most `MAX_FIELD_BYTES`.
    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        self.bytes_max(MAX_FIELD_BYTES)
    }
    /// A length-prefixed UTF-8 string.
    pub fn string(&mut self) -> Result<String> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| self.err("string is not UTF-8"))
    }
    /// A list of at most `max` items.
    pub fn list_max<T>(
        &mut self,
        max: usize,
        mut f: impl FnMut(&mut Self) -> Result<T>,
    ) -> Result<Vec<T>> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(self.err(format!("list of {n} items is over the limit of {max}")));
        }
        let mut v = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            v.push(f(self)?);
        }
        Ok(v)
    }
    /// A list of at most `MAX_LIST_ITEMS` items.
    pub fn list<T>(&mut self, f: impl FnMut(&mut Self) -> Result<T>) -> Result<Vec<T>> {
        self.list_max(MAX_LIST_ITEMS, f)
    }
    /// Fails unless every byte was consumed (one encoding per value).
    pub fn finish(self) -> Result<()> {
        if self.pos != self.buf.len() {
            return Err(self.err(format!("{} trailing bytes", self.buf.len() - self.pos)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_and_trailing_input_is_rejected() {
        let mut w = Writer::new();
        w.u64(7);
        w.str("abc");
        let b = w.into_bytes();
        let mut r = Reader::new(&b, "t");
        assert_eq!(r.u64().unwrap(), 7);
        assert_eq!(r.string().unwrap(), "abc");
        r.finish().unwrap();
        let mut r = Reader::new(&b[..b.len() - 1], "t");
        r.u64().unwrap();
        assert!(matches!(r.string(), Err(Error::Decode { .. })));
        let mut long = b.clone();
        long.push(0);
        let mut r = Reader::new(&long, "t");
        r.u64().unwrap();
        r.string().unwrap();
        assert!(r.finish().is_err());
    }

    #[test]
    fn oversized_length_prefix_is_rejected_without_allocating() {
        let mut w = Writer::new();
        w.u32(u32::MAX);
        let b = w.into_bytes();
        assert!(Reader::new(&b, "t").bytes().is_err());
        assert!(Reader::new(&b, "t").list(|r| r.u8()).is_err());
    }
}
