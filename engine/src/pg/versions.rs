//! Which version of an object a snapshot sees: the copy-on-write rules
//! shared by every object backend (the disk store and the in-memory model).
//!
//! A volume's snapshots are numbered by its `snap_seq`, which only grows.
//! Every change to an object carries the volume's current `snap_seq`. The
//! object remembers the largest it has seen (its `stamp`). A change with a
//! `snap_seq` above the stamp is the first since a newer snapshot was
//! taken, so the head is first preserved as a *clone version* tagged
//! `seq = snap_seq`. That clone holds what every snapshot in
//! `(from, seq]` sees, where `from` was the stamp before the change.
//! Clones therefore cover disjoint, ordered ranges, and a snapshot `x`
//! reads:
//! - the first clone with `seq >= x` if its `from < x`;
//! - otherwise the head, if the head exists and `stamp < x` (untouched
//!   since `x` was taken);
//! - otherwise nothing (the object did not exist at `x`).
//!
//! Writes to objects whose stamp is already current never copy anything,
//! however many snapshots the volume has.

/// What an object holds besides its head bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The largest `snap_seq` of any change applied to the object.
    pub stamp: u64,
    /// The head version exists (false: never written, or deleted while
    /// snapshots still need its clones).
    pub head: bool,
    /// Preserved versions, ordered by `seq`.
    pub clones: Vec<CloneVersion>,
}

/// A preserved version: what snapshots `(from, seq]` see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloneVersion {
    pub seq: u64,
    pub from: u64,
}

/// Where the bytes of an object at some point in time are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Head,
    Clone(u64),
    /// The object did not exist then.
    Absent,
}

const META_VERSION: u8 = 1;

impl ObjectMeta {
    /// The meta of an object that has no record (written only while its
    /// volume had no snapshots, or never).
    pub fn unrecorded(head_exists: bool) -> ObjectMeta {
        ObjectMeta {
            stamp: 0,
            head: head_exists,
            clones: Vec::new(),
        }
    }

    /// The version snapshot `snap` sees; `None` asks for the head.
    pub fn version_at(&self, snap: Option<u64>) -> Version {
        let Some(x) = snap else {
            return if self.head {
                Version::Head
            } else {
                Version::Absent
            };
        };
        let first = self.clones.partition_point(|c| c.seq < x);
        if let Some(c) = self.clones.get(first) {
            return if c.from < x {
                Version::Clone(c.seq)
            } else {
                Version::Absent
            };
        }
        if self.head && self.stamp < x {
            Version::Head
        } else {
            Version::Absent
        }
    }

    /// Whether a change with `snap_seq` must preserve the head first.
    pub fn must_preserve(&self, snap_seq: u64) -> bool {
        snap_seq > self.stamp && self.head
    }

    /// Records that the head was preserved as clone `snap_seq` (when
    /// `preserved`) and that a change with `snap_seq` is being applied.
    pub fn advance(&mut self, snap_seq: u64, preserved: bool) {
        if preserved {
            self.clones.push(CloneVersion {
                seq: snap_seq,
                from: self.stamp,
            });
        }
        self.stamp = self.stamp.max(snap_seq);
    }

    /// The clones no live snapshot needs once snapshot `removed` is gone,
    /// given the nearest live snapshots below (`lower`, 0 for none) and
    /// above it (`upper`, `u64::MAX` for none).
    pub fn unneeded_after_removal(&self, removed: u64, lower: u64, upper: u64) -> Vec<u64> {
        self.clones
            .iter()
            .filter(|c| c.from < removed && removed <= c.seq)
            .filter(|c| !(lower > c.from || upper <= c.seq))
            .map(|c| c.seq)
            .collect()
    }

    /// The object has never existed: no head and no versions (a clone's
    /// object in that state still reads its parent).
    pub fn is_pristine(&self) -> bool {
        !self.head && self.is_trivial()
    }

    /// True when the record says nothing an unrecorded object would not.
    pub fn is_trivial(&self) -> bool {
        self.stamp == 0 && self.clones.is_empty()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(14 + self.clones.len() * 16);
        out.push(META_VERSION);
        out.extend_from_slice(&self.stamp.to_le_bytes());
        out.push(u8::from(self.head));
        out.extend_from_slice(&(self.clones.len() as u32).to_le_bytes());
        for c in &self.clones {
            out.extend_from_slice(&c.seq.to_le_bytes());
            out.extend_from_slice(&c.from.to_le_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<ObjectMeta, String> {
        let fixed = 1 + 8 + 1 + 4;
        if bytes.len() < fixed || bytes[0] != META_VERSION {
            return Err("object record is truncated or of an unknown version".into());
        }
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8"));
        let count = u32::from_le_bytes(bytes[10..14].try_into().expect("4")) as usize;
        if bytes.len() != fixed + count * 16 {
            return Err(format!(
                "object record of {} bytes does not hold its {count} clones",
                bytes.len()
            ));
        }
        let clones = (0..count)
            .map(|i| CloneVersion {
                seq: u64_at(fixed + i * 16),
                from: u64_at(fixed + i * 16 + 8),
            })
            .collect();
        Ok(ObjectMeta {
            stamp: u64_at(1),
            head: bytes[9] == 1,
            clones,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_snapshot_sees_the_version_current_when_it_was_taken() {
        // Written before snapshot 1; snapshot 1; rewritten; snapshots 2
        // and 3; rewritten; deleted after snapshot 4; recreated at 5.
        let mut m = ObjectMeta::unrecorded(true);
        assert!(m.must_preserve(1));
        m.advance(1, true);
        assert!(!m.must_preserve(1), "a second write after 1 copies nothing");
        assert!(m.must_preserve(3));
        m.advance(3, true);
        m.advance(4, m.must_preserve(4));
        m.head = false;
        assert!(!m.must_preserve(5), "nothing to preserve when absent");
        m.advance(5, false);
        m.head = true;
        assert_eq!(m.version_at(Some(1)), Version::Clone(1));
        assert_eq!(m.version_at(Some(2)), Version::Clone(3));
        assert_eq!(m.version_at(Some(3)), Version::Clone(3));
        assert_eq!(m.version_at(Some(4)), Version::Clone(4));
        assert_eq!(m.version_at(Some(5)), Version::Absent);
        assert_eq!(m.version_at(Some(6)), Version::Head);
        assert_eq!(m.version_at(None), Version::Head);
    }

    #[test]
    fn an_object_created_after_a_snapshot_is_absent_from_it() {
        let mut m = ObjectMeta::unrecorded(false);
        m.advance(3, m.must_preserve(3));
        m.head = true;
        assert_eq!(m.version_at(Some(2)), Version::Absent);
        assert_eq!(m.version_at(Some(3)), Version::Absent);
        assert_eq!(m.version_at(Some(4)), Version::Head);
    }

    #[test]
    fn removing_a_snapshot_frees_only_clones_no_live_snapshot_reads() {
        let mut m = ObjectMeta::unrecorded(true);
        m.advance(2, true); // clone 2 covers (0, 2]: snapshots 1, 2
        m.advance(4, true); // clone 4 covers (2, 4]: snapshots 3, 4
                            // Removing 2 while 1 lives keeps clone 2.
        assert!(m.unneeded_after_removal(2, 1, 3).is_empty());
        // Removing 4 while 3 lives keeps clone 4.
        assert!(m.unneeded_after_removal(4, 3, u64::MAX).is_empty());
        // Removing 3 with 2 and 5 live: clone 4 is needed by nobody.
        assert_eq!(m.unneeded_after_removal(3, 2, 5), vec![4]);
        // Removing 1 when it was the only reader of clone 2.
        assert_eq!(m.unneeded_after_removal(1, 0, 3), vec![2]);
    }

    #[test]
    fn records_round_trip_and_garbage_is_refused() {
        let mut m = ObjectMeta::unrecorded(true);
        m.advance(7, true);
        m.advance(9, true);
        assert_eq!(ObjectMeta::decode(&m.encode()).unwrap(), m);
        let bytes = m.encode();
        for cut in 0..bytes.len() {
            assert!(ObjectMeta::decode(&bytes[..cut]).is_err());
        }
    }
}
