//! The Raft log in segment files of its own
//! ([decision 0013](../../../docs/decisions/0013-raft-log-in-segment-files.md)):
//! every group's entries, hard states and truncations, appended by the node
//! loop as one write and one fdatasync per round.
//!
//! This is the file layer: rounds of records, replay, the in-memory index
//! of where each entry is, and deleting segments nothing points into. It
//! knows nothing of raft-rs: an entry is an index, a term and opaque bytes,
//! a hard state is opaque bytes. Not wired into the node loop yet; the
//! Raft log is still in RocksDB (`log_store`).
//!
//! A segment is `raft-log/{seq:016x}.log`, zero-filled ahead of the writes
//! so that an fdatasync changes no file size. It holds rounds, each on a
//! [`ROUND_ALIGN`] boundary:
//!
//! `magic u32 | len u32 | crc32c u32 | 0 u32 | records (len bytes) | zero padding`
//!
//! and each record is `len u32 | kind u8 | group u64 | payload (len bytes)`.
//! The crc covers the segment's sequence number, `len` and the records, so
//! a round is taken whole or not at all, and a round left from an older use
//! of the file never passes. Replay reads segments in order. In the last
//! one, the first round that is missing or fails its check ends the log (a
//! round torn by a crash) unless a valid round of the same segment follows
//! on a later boundary: that is corruption, and so is any bad round in an
//! earlier segment. Either stops the open with the file and offset named.
//! An open ends the last segment (an end round where the bad or missing
//! round began) and goes on in a new segment, so a torn round's leftovers
//! are never read again. Any failed write poisons the log: the node must
//! reopen it, since a later write could not tell what the failed one left.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::GroupId;

/// Rounds start on this boundary: after a bad round, replay looks for
/// later valid rounds only here.
pub const ROUND_ALIGN: u64 = 4096;
/// Segment size by default; a round longer than this gets a segment alone.
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// With more segments than this on disk, the groups whose entries keep the
/// oldest one are written again at the log's end (`rewrite_oldest`).
pub const SEGMENTS_BEFORE_REWRITE: usize = 4;
/// Entries of one group that `rewrite_oldest` always moves (see there).
const REWRITE_GROUP_MAX: u64 = 4 << 20;
/// Entries of one group that `rewrite_oldest` never moves: one record (and
/// one round in memory) holds them all.
const REWRITE_GROUP_CAP: u64 = 256 << 20;
/// Emptied segments kept to become new ones: a reused file needs neither
/// the zero fill nor, on its first fdatasync, a metadata write.
const SPARES_MAX: usize = 2;

const ROUND_MAGIC: u32 = u32::from_le_bytes(*b"HPRL");
const ROUND_HEADER: usize = 16;
const RECORD_HEADER: usize = 13; // len, kind, group
const ENTRY_HEADER: usize = 20; // index, term, len
/// Most bytes one `pread` of [`SegmentLog::read_entries`] takes.
const READ_RUN_MAX: u64 = 1 << 20;

const KIND_ENTRIES: u8 = 1;
const KIND_HARD_STATE: u8 = 2;
const KIND_TRUNCATE: u8 = 3;
const KIND_DESTROY: u8 = 4;
const KIND_SEGMENT_END: u8 = 5;
const KIND_SEGMENT_START: u8 = 6;

/// What went wrong, naming the file and the way out.
#[derive(Debug, thiserror::Error)]
pub enum SegmentLogError {
    #[error("raft log {path}: {op}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("raft log {dir}: group {group}'s entries resume at {first} after {after}, and the segments between are gone; the log lost records. Move the node's data away and let the cluster re-replicate its groups")]
    Gap {
        dir: PathBuf,
        group: GroupId,
        after: u64,
        first: u64,
    },
    #[error("raft log {path}: corrupt round at offset {offset} ({reason}); it is not a crash's torn last write. Move the node's data away and let the cluster re-replicate its groups")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("raft log {dir}: round refused, nothing written: {reason}")]
    Refused { dir: PathBuf, reason: String },
    #[error(
        "raft log {dir}: an earlier write failed ({reason}); restart the node to reopen the log"
    )]
    Poisoned { dir: PathBuf, reason: String },
}

fn io_error<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> SegmentLogError + 'a {
    move |source| SegmentLogError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Where one entry's bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct EntryAt {
    index: u64,
    term: u64,
    seq: u64,
    offset: u64,
    len: u32,
}

/// One group's log as the files hold it.
#[derive(Clone, Debug, Default)]
pub struct GroupLog {
    /// The last hard state written, as given.
    pub hard_state: Option<Vec<u8>>,
    /// Entries up to this index (of this term) are gone.
    pub truncated: (u64, u64),
    entries: VecDeque<EntryAt>,
}

impl GroupLog {
    /// The index of the last entry, or the truncation point.
    pub fn last_index(&self) -> u64 {
        self.entries.back().map_or(self.truncated.0, |e| e.index)
    }

    /// The first entry held (`truncated + 1` when there is none).
    pub fn first_index(&self) -> u64 {
        self.truncated.0.saturating_add(1)
    }

    /// The term of entry `index`, if the log holds it (or it is the
    /// truncation point).
    pub fn term(&self, index: u64) -> Option<u64> {
        if index == self.truncated.0 {
            return Some(self.truncated.1);
        }
        self.at(index).map(|e| e.term)
    }

    fn at(&self, index: u64) -> Option<&EntryAt> {
        let first = self.entries.front()?.index;
        self.entries
            .get(usize::try_from(index.checked_sub(first)?).ok()?)
    }
}

/// The records of one round, built before it is written.
#[derive(Default)]
pub struct Round {
    /// The round header's room, then the records.
    buf: Vec<u8>,
}

impl Round {
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn record(&mut self, kind: u8, group: GroupId, payload: impl FnOnce(&mut Vec<u8>)) {
        if self.buf.is_empty() {
            self.buf.resize(ROUND_HEADER, 0);
        }
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        self.buf.push(kind);
        self.buf.extend_from_slice(&group.to_le_bytes());
        payload(&mut self.buf);
        let len =
            u32::try_from(self.buf.len() - start - RECORD_HEADER).expect("a record under 4 GiB");
        self.buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    }

    /// Entries `(index, term, bytes)` in order; they replace any the group
    /// holds from the first one on.
    pub fn entries(&mut self, group: GroupId, entries: &[(u64, u64, &[u8])]) {
        self.entries_with(
            group,
            entries,
            |&(index, term, _)| (index, term),
            |(_, _, bytes), buf| buf.extend_from_slice(bytes),
        );
    }

    /// [`Round::entries`] for items that write their own bytes into the
    /// round (an encoder), so no copy of them is made first: `head` gives
    /// an item's index and term, `write` appends its bytes.
    pub fn entries_with<T>(
        &mut self,
        group: GroupId,
        items: &[T],
        head: impl Fn(&T) -> (u64, u64),
        write: impl Fn(&T, &mut Vec<u8>),
    ) {
        if items.is_empty() {
            return;
        }
        self.record(KIND_ENTRIES, group, |buf| {
            buf.extend_from_slice(&(items.len() as u32).to_le_bytes());
            for item in items {
                let (index, term) = head(item);
                buf.extend_from_slice(&index.to_le_bytes());
                buf.extend_from_slice(&term.to_le_bytes());
                let len_at = buf.len();
                buf.extend_from_slice(&[0; 4]);
                write(item, buf);
                let len = u32::try_from(buf.len() - len_at - 4).expect("an entry under 4 GiB");
                buf[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
            }
        });
    }

    pub fn hard_state(&mut self, group: GroupId, hard_state: &[u8]) {
        self.record(KIND_HARD_STATE, group, |buf| {
            buf.extend_from_slice(hard_state)
        });
    }

    /// Drops the group's entries up to `index` (whose term is `term`).
    pub fn truncate(&mut self, group: GroupId, index: u64, term: u64) {
        self.record(KIND_TRUNCATE, group, |buf| {
            buf.extend_from_slice(&index.to_le_bytes());
            buf.extend_from_slice(&term.to_le_bytes());
        });
    }

    /// Drops the group altogether.
    pub fn destroy(&mut self, group: GroupId) {
        self.record(KIND_DESTROY, group, |_| {});
    }

    fn records(&self) -> &[u8] {
        self.buf.get(ROUND_HEADER..).unwrap_or(&[])
    }

    /// The bytes to write in segment `seq`: header filled in, padded to
    /// the round boundary.
    fn sealed(&mut self, seq: u64, salt: u64) -> &[u8] {
        let len = u32::try_from(self.buf.len() - ROUND_HEADER).expect("a round under 4 GiB");
        let crc = round_crc(seq, salt, len, self.records());
        self.buf[0..4].copy_from_slice(&ROUND_MAGIC.to_le_bytes());
        self.buf[4..8].copy_from_slice(&len.to_le_bytes());
        self.buf[8..12].copy_from_slice(&crc.to_le_bytes());
        let padded = (self.buf.len() as u64).next_multiple_of(ROUND_ALIGN);
        self.buf.resize(padded as usize, 0);
        &self.buf
    }
}

/// The crc of a round of segment `seq` whose start round drew `salt` (0
/// for the start round itself). The salt is what keeps a reused file's old
/// bytes from replaying: entries carry client data, which could hold a
/// well-formed round for any segment number, but not for a salt drawn
/// after it was written.
fn round_crc(seq: u64, salt: u64, len: u32, records: &[u8]) -> u32 {
    let mut head = crc32c::crc32c(&seq.to_le_bytes());
    head = crc32c::crc32c_append(head, &salt.to_le_bytes());
    head = crc32c::crc32c_append(head, &len.to_le_bytes());
    crc32c::crc32c_append(head, records)
}

/// The salt of a segment's start round: its first record.
fn start_salt(records: &[u8]) -> Option<u64> {
    let header = records.get(..RECORD_HEADER)?;
    if header[4] != KIND_SEGMENT_START || header[0..4] != 8u32.to_le_bytes() {
        return None;
    }
    read_u64(records, RECORD_HEADER)
}

/// A round read back, or why none could be.
enum Parsed<'a> {
    Round {
        records: &'a [u8],
        /// File offset of `records`.
        records_at: u64,
        /// Where the next round starts.
        next: u64,
    },
    /// Zeroes where a round would start: the end of what was written.
    End,
    Bad(String),
}

fn parse_round(data: &[u8], seq: u64, salt: u64, at: u64) -> Parsed<'_> {
    let Some(header) = usize::try_from(at)
        .ok()
        .and_then(|start| data.get(start..start.checked_add(ROUND_HEADER)?))
    else {
        return Parsed::End;
    };
    if header.iter().all(|&b| b == 0) {
        return Parsed::End;
    }
    let word = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().expect("4 bytes"));
    if word(0) != ROUND_MAGIC {
        return Parsed::Bad("no round header".into());
    }
    let len = word(4);
    let start = at as usize + ROUND_HEADER;
    let Some(records) = data.get(start..start + len as usize) else {
        return Parsed::Bad(format!("round length {len} runs past the file"));
    };
    if round_crc(seq, salt, len, records) != word(8) {
        return Parsed::Bad("crc mismatch".into());
    }
    Parsed::Round {
        records,
        records_at: start as u64,
        next: (start as u64 + u64::from(len)).next_multiple_of(ROUND_ALIGN),
    }
}

/// Calls `f(kind, group, payload, payload offset in records)` for each
/// record of a round.
fn each_record(
    records: &[u8],
    mut f: impl FnMut(u8, GroupId, &[u8], usize) -> Result<(), String>,
) -> Result<(), String> {
    let mut at = 0usize;
    while at < records.len() {
        let header = records
            .get(at..at + RECORD_HEADER)
            .ok_or("a record header runs past its round")?;
        let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
        let group = u64::from_le_bytes(header[5..13].try_into().expect("8 bytes"));
        let start = at + RECORD_HEADER;
        let payload = records
            .get(start..start + len)
            .ok_or("a record runs past its round")?;
        f(header[4], group, payload, start)?;
        at = start + len;
    }
    Ok(())
}

/// The entries of an entries record: `(index, term, offset of the bytes
/// in the payload, length)`.
fn parse_entries(group: GroupId, payload: &[u8]) -> Result<Vec<(u64, u64, usize, u32)>, String> {
    let short = || format!("group {group}: entries record too short");
    let count = read_u32(payload, 0).ok_or_else(short)?;
    let mut out = Vec::with_capacity(count.min(1 << 16) as usize);
    let mut at = 4usize;
    for _ in 0..count {
        let index = read_u64(payload, at).ok_or_else(short)?;
        let term = read_u64(payload, at + 8).ok_or_else(short)?;
        let len = read_u32(payload, at + 16).ok_or_else(short)?;
        at += 20;
        if payload.len() < at + len as usize {
            return Err(short());
        }
        out.push((index, term, at, len));
        at += len as usize;
    }
    Ok(out)
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016x}.log"))
}

/// The sequence number of a segment file's name: exactly what
/// `segment_path` makes, so no other name can alias a segment.
fn segment_seq(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".log")?;
    let exact = hex.len() == 16 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    exact.then(|| u64::from_str_radix(hex, 16).ok())?
}

fn sync_dir(dir: &Path) -> Result<(), SegmentLogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("sync", dir))
}

/// A node's Raft log: the segment files and the index of what they hold.
pub struct SegmentLog {
    dir: PathBuf,
    segment_bytes: u64,
    /// Every segment on disk: sequence number to entries pointing into it.
    live: BTreeMap<u64, u64>,
    seq: u64,
    /// The active segment's salt (see `round_crc`).
    salt: u64,
    file: File,
    /// A descriptor of every segment but the active one, for reads.
    readers: HashMap<u64, File>,
    write_at: u64,
    groups: HashMap<GroupId, GroupLog>,
    /// Set by a failed write: what the files hold is then unknown.
    failed: Option<String>,
    /// Emptied segment files (`{n:016x}.spare`), to become new segments.
    spares: Vec<PathBuf>,
    rewrite_after: usize,
    /// A new segment was started since the last `rewrite_oldest`.
    rotated: bool,
    /// A spare being zero-filled off the node loop's thread, so that a
    /// rotation without one does not stall every group for the fill.
    preparing: Option<std::thread::JoinHandle<Result<PathBuf, SegmentLogError>>>,
}

impl SegmentLog {
    /// Opens (or creates) the log in `dir`, replaying every segment.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<SegmentLog, SegmentLogError> {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(io_error("create", dir))?;
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
            }
        }
        let mut seqs = Vec::new();
        let mut spares = Vec::new();
        for item in std::fs::read_dir(dir).map_err(io_error("list", dir))? {
            let name = item.map_err(io_error("list", dir))?.file_name();
            let name = name.to_string_lossy();
            if let Some(seq) = segment_seq(&name) {
                seqs.push(seq);
            } else if name.ends_with(".spare") {
                spares.push(dir.join(&*name));
            }
        }
        // A spare cut short by a crash while it was made is not one.
        spares.retain(|spare| {
            let whole = std::fs::metadata(spare).is_ok_and(|m| m.len() == segment_bytes);
            if !whole {
                let _ = std::fs::remove_file(spare);
            }
            whole
        });
        spares.sort();
        seqs.sort_unstable();
        let mut groups: HashMap<GroupId, GroupLog> = HashMap::new();
        let mut live: BTreeMap<u64, u64> = BTreeMap::new();
        let mut tail = None;
        let mut readers = HashMap::new();
        for (i, &seq) in seqs.iter().enumerate() {
            let path = segment_path(dir, seq);
            let mut file = File::open(&path).map_err(io_error("open", &path))?;
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut file, &mut data).map_err(io_error("read", &path))?;
            readers.insert(seq, file);
            live.insert(seq, 0);
            let last = i + 1 == seqs.len();
            let (end, ended, salt) =
                replay_segment(&path, &data, seq, last, &mut groups, &mut live)?;
            if last {
                tail = Some((seq, end, ended, salt));
            }
        }
        for (&group, log) in &groups {
            if let Some(first) = log.entries.front().map(|e| e.index) {
                if first != log.first_index() {
                    return Err(SegmentLogError::Gap {
                        dir: dir.to_path_buf(),
                        group,
                        after: log.truncated.0,
                        first,
                    });
                }
            }
        }
        // The active segment: a new one for a new log; otherwise the last,
        // to be ended before the open goes on in the next.
        let (seq, salt, file, write_at, ended) = match tail {
            None => {
                // Spares without segments are leftovers: one could carry
                // the number this log starts again at.
                for spare in spares.drain(..) {
                    std::fs::remove_file(&spare).map_err(io_error("remove", &spare))?;
                }
                let file = create_segment(dir, 1, segment_bytes)?;
                let (salt, written) = begin_segment(dir, &file, 1, &groups)?;
                live.insert(1, 0);
                (1, salt, file, written, None)
            }
            Some((seq, end, ended, salt)) => {
                let path = segment_path(dir, seq);
                let file = OpenOptions::new()
                    .write(true)
                    .read(true)
                    .open(&path)
                    .map_err(io_error("open", &path))?;
                // Unknown (0) only for a segment torn in its start round;
                // `end_segment` then writes a start round of its own.
                (seq, salt.unwrap_or(0), file, end, Some(ended))
            }
        };
        let mut log = SegmentLog {
            dir: dir.to_path_buf(),
            segment_bytes,
            live,
            seq,
            salt,
            file,
            readers,
            write_at,
            groups,
            failed: None,
            spares,
            rewrite_after: SEGMENTS_BEFORE_REWRITE,
            rotated: false,
            preparing: None,
        };
        let Some(ended) = ended else {
            return Ok(log);
        };
        let next = seq.checked_add(1).ok_or_else(|| SegmentLogError::Corrupt {
            path: segment_path(dir, seq),
            offset: 0,
            reason: "the last possible segment number".into(),
        })?;
        // Every open goes on in a new segment. Where the old one's rounds
        // end may begin the rest of a torn round, under the same segment
        // number: the end round written there fences it off.
        if !ended {
            log.end_segment()?;
        }
        log.start_segment(next)?;
        log.collect()?;
        // Each open adds a segment; the next write looks at moving what
        // keeps old ones, as after a rotation, or restarts of a node whose
        // groups are idle would pile segments up.
        log.rotated = true;
        Ok(log)
    }

    /// The groups the log holds.
    pub fn groups(&self) -> impl Iterator<Item = (&GroupId, &GroupLog)> {
        self.groups.iter()
    }

    pub fn group(&self, group: GroupId) -> Option<&GroupLog> {
        self.groups.get(&group)
    }

    /// Segment files on disk, by sequence number.
    pub fn segments(&self) -> Vec<u64> {
        self.live.keys().copied().collect()
    }

    /// The bytes of entry `index` of `group`, read from its segment (the
    /// node reads through [`SegmentLog::read_entries`]).
    #[cfg(test)]
    pub fn entry(&self, group: GroupId, index: u64) -> Result<Option<Vec<u8>>, SegmentLogError> {
        let mut out = None;
        self.read_entries(group, index, index.saturating_add(1), |_, bytes| {
            out = Some(bytes.to_vec());
            false
        })?;
        Ok(out)
    }

    /// Calls `f(index, bytes)` for the group's entries `low..high` that the
    /// log holds, in order, until it returns false. Entries that lie next
    /// to each other in a segment (one round's) are read with one `pread`.
    pub fn read_entries(
        &self,
        group: GroupId,
        low: u64,
        high: u64,
        mut f: impl FnMut(u64, &[u8]) -> bool,
    ) -> Result<(), SegmentLogError> {
        let Some(log) = self.groups.get(&group) else {
            return Ok(());
        };
        let mut index = low;
        let mut buf = Vec::new();
        while index < high {
            let Some(first) = log.at(index).copied() else {
                return Ok(());
            };
            // The run of entries stored back to back after `first`: each
            // entry's bytes are followed by the next one's 20-byte head.
            let mut run = vec![first];
            while let Some(next) = log.at(first.index + run.len() as u64) {
                let prev = run.last().expect("not empty");
                let contiguous = next.seq == prev.seq
                    && next.offset == prev.offset + u64::from(prev.len) + ENTRY_HEADER as u64;
                if !contiguous || next.index >= high || next.offset - first.offset > READ_RUN_MAX {
                    break;
                }
                run.push(*next);
            }
            let last = run.last().expect("not empty");
            let span = (last.offset + u64::from(last.len) - first.offset) as usize;
            buf.resize(span, 0);
            self.read_at(first.seq, &mut buf, first.offset)?;
            for e in &run {
                let start = (e.offset - first.offset) as usize;
                if !f(e.index, &buf[start..start + e.len as usize]) {
                    return Ok(());
                }
            }
            index += run.len() as u64;
        }
        Ok(())
    }

    fn read_at(&self, seq: u64, buf: &mut [u8], offset: u64) -> Result<(), SegmentLogError> {
        let path = segment_path(&self.dir, seq);
        let file = if seq == self.seq {
            Some(&self.file)
        } else {
            self.readers.get(&seq)
        };
        file.ok_or_else(|| std::io::Error::other("the segment is not open"))
            .and_then(|file| file.read_exact_at(buf, offset))
            .map_err(io_error("read", &path))
    }

    /// Writes `round` (one write, one fdatasync), then applies it to the
    /// index and deletes the segments nothing points into any more.
    ///
    /// A round that does not fit the log (entries that do not follow it) is
    /// refused before anything is written. Any other failure poisons the
    /// log: every later call fails until it is opened again.
    pub fn write(&mut self, mut round: Round) -> Result<(), SegmentLogError> {
        if let Some(reason) = &self.failed {
            return Err(SegmentLogError::Poisoned {
                dir: self.dir.clone(),
                reason: reason.clone(),
            });
        }
        if round.is_empty() {
            return Ok(());
        }
        self.check(round.records())
            .map_err(|reason| SegmentLogError::Refused {
                dir: self.dir.clone(),
                reason,
            })?;
        let result = self.write_checked(&mut round).and_then(|()| {
            if std::mem::take(&mut self.rotated) {
                self.rewrite_oldest()?;
                self.rotated = false;
            }
            Ok(())
        });
        if let Err(e) = &result {
            self.failed = Some(e.to_string());
        }
        result
    }

    fn write_checked(&mut self, round: &mut Round) -> Result<(), SegmentLogError> {
        // Room for the round and, after it, the segment's end round.
        let size = (round.buf.len() as u64).next_multiple_of(ROUND_ALIGN) + ROUND_ALIGN;
        if self.write_at > 0 && self.write_at + size > self.segment_bytes {
            self.rotate()?;
        }
        let seq = self.seq;
        let at = self.write_at;
        let path = segment_path(&self.dir, seq);
        let records_end = round.buf.len();
        let bytes = round.sealed(seq, self.salt);
        self.file
            .write_all_at(bytes, at)
            .and_then(|()| self.file.sync_data())
            .map_err(io_error("write", &path))?;
        self.write_at = at + bytes.len() as u64;
        let records_at = at + ROUND_HEADER as u64;
        apply_round(
            &round.buf[ROUND_HEADER..records_end],
            records_at,
            seq,
            false,
            &mut self.groups,
            &mut self.live,
        )
        .expect("a round checked against the index applies to it");
        self.collect()
    }

    /// Keeps the log's size bounded by what is live rather than by its
    /// oldest live entry; run after a rotation. While more than
    /// `rewrite_after` segments are on disk, the groups whose entries keep
    /// the oldest one get all their entries written again, unchanged, in
    /// one round at the log's end, so that the oldest segment holds
    /// nothing and goes:
    /// - a group with at most [`REWRITE_GROUP_MAX`] of entries (an idle
    ///   group below its truncation threshold) is always moved;
    /// - a larger one (a group that truncates soon by itself, or one a
    ///   replica that is down holds back) only once less than a quarter of
    ///   the segments' bytes are live, so that each byte moved frees at
    ///   least three;
    /// - one over [`REWRITE_GROUP_CAP`] never: it keeps its segments, as
    ///   its own entries would keep them anyway, until it truncates.
    ///
    /// A group's entries always move whole, in one record: replay takes an
    /// entries record as replacing the group's entries from its first on.
    fn rewrite_oldest(&mut self) -> Result<(), SegmentLogError> {
        // Each pass frees the oldest segment or stops, and may start one
        // (a rotation), so the passes are bounded.
        for _ in 0..self.rewrite_after.max(1) {
            if self.live.len() <= self.rewrite_after {
                return Ok(());
            }
            let oldest = *self.live.keys().next().expect("segments are kept");
            if oldest == self.seq {
                return Ok(());
            }
            let bytes_of = |g: &GroupLog| -> u64 {
                g.entries
                    .iter()
                    .map(|e| u64::from(e.len) + ENTRY_HEADER as u64)
                    .sum()
            };
            let live_bytes: u64 = self.groups.values().map(bytes_of).sum();
            let mostly_garbage =
                live_bytes.saturating_mul(4) <= self.live.len() as u64 * self.segment_bytes;
            let mut pinned = Vec::new();
            for (&id, group) in &self.groups {
                if group.entries.front().is_some_and(|e| e.seq == oldest) {
                    let bytes = bytes_of(group);
                    if bytes > REWRITE_GROUP_CAP || (!mostly_garbage && bytes > REWRITE_GROUP_MAX) {
                        // It keeps the oldest segment: moving the others
                        // would free nothing now.
                        return Ok(());
                    }
                    pinned.push(id);
                }
            }
            pinned.sort_unstable();
            let mut round = Round::default();
            for id in pinned {
                let group = &self.groups[&id];
                let mut entries = Vec::with_capacity(group.entries.len());
                self.read_entries(id, group.first_index(), group.last_index() + 1, |i, b| {
                    entries.push((i, group.term(i).expect("an indexed entry"), b.to_vec()));
                    true
                })?;
                round.entries_with(
                    id,
                    &entries,
                    |e| (e.0, e.1),
                    |e, buf| buf.extend_from_slice(&e.2),
                );
            }
            if round.is_empty() {
                return Ok(());
            }
            let moved = round.buf.len();
            self.write_checked(&mut round)?;
            tracing::debug!(
                dir = %self.dir.display(),
                segment = oldest,
                moved,
                live_bytes,
                "raft log: entries that kept the oldest segment written again at the end"
            );
        }
        Ok(())
    }

    /// Whether `records` fit the log as it stands: each group's entries
    /// must follow its truncation point and its last entry, as the
    /// round's own earlier records leave them.
    fn check(&self, records: &[u8]) -> Result<(), String> {
        let mut bounds: HashMap<GroupId, (u64, u64)> = HashMap::new();
        each_record(records, |kind, group, payload, _| {
            let b = bounds.entry(group).or_insert_with(|| {
                self.groups
                    .get(&group)
                    .map_or((0, 0), |g| (g.truncated.0, g.last_index()))
            });
            match kind {
                KIND_ENTRIES => {
                    let entries = parse_entries(group, payload)?;
                    let Some(&(first, ..)) = entries.first() else {
                        return Ok(());
                    };
                    if first <= b.0 || first > b.1.saturating_add(1) {
                        return Err(format!(
                            "group {group}: entry {first} does not follow the log (truncated at {}, last {})",
                            b.0, b.1
                        ));
                    }
                    for (k, e) in entries.iter().enumerate() {
                        if Some(e.0) != first.checked_add(k as u64) {
                            return Err(format!("group {group}: entries out of order at {}", e.0));
                        }
                    }
                    b.1 = entries.last().expect("not empty").0;
                }
                KIND_TRUNCATE => {
                    let index = read_u64(payload, 0).ok_or("truncate record too short")?;
                    if index > b.0 {
                        *b = (index, b.1.max(index));
                    }
                }
                KIND_DESTROY => *b = (0, 0),
                KIND_HARD_STATE => {}
                other => return Err(format!("unknown record kind {other}")),
            }
            Ok(())
        })
    }

    /// Ends the active segment and starts the next with a checkpoint of
    /// every group's hard state and truncation point, so that no older
    /// segment is needed for them.
    fn rotate(&mut self) -> Result<(), SegmentLogError> {
        self.end_segment()?;
        self.start_segment(self.seq + 1)?;
        self.rotated = true;
        Ok(())
    }

    /// Writes the active segment's end round (synced) at `write_at`.
    fn end_segment(&mut self) -> Result<(), SegmentLogError> {
        let mut end = Round::default();
        let salt = if self.write_at == 0 {
            // Torn in its start round: this round is the start too.
            end.record(KIND_SEGMENT_START, 0, |buf| {
                buf.extend_from_slice(&new_salt().to_le_bytes())
            });
            0
        } else {
            self.salt
        };
        end.record(KIND_SEGMENT_END, 0, |_| {});
        let path = segment_path(&self.dir, self.seq);
        let bytes = end.sealed(self.seq, salt);
        self.file
            .write_all_at(bytes, self.write_at)
            .and_then(|()| self.file.sync_data())
            .map_err(io_error("write", &path))?;
        Ok(())
    }

    /// Makes segment `seq` the active one, beginning with the checkpoint.
    fn start_segment(&mut self, seq: u64) -> Result<(), SegmentLogError> {
        // A spare being made is waited for rather than made twice.
        if let Some(preparing) = self.preparing.take() {
            if self.spares.is_empty() || preparing.is_finished() {
                let made = preparing.join().unwrap_or_else(|_| {
                    Err(SegmentLogError::Io {
                        op: "fill",
                        path: self.dir.clone(),
                        source: std::io::Error::other("the thread making a spare panicked"),
                    })
                });
                match made {
                    Ok(spare) => self.spares.push(spare),
                    // Needed only without another spare (which then is
                    // made here, and fails here too if the disk is full).
                    Err(e) => tracing::warn!("{e}; making the next segment in the Raft loop"),
                }
            } else {
                self.preparing = Some(preparing);
            }
        }
        let file = match self.spares.pop() {
            Some(spare) => reuse_segment(&self.dir, &spare, seq)?,
            None => create_segment(&self.dir, seq, self.segment_bytes)?,
        };
        if self.spares.is_empty() && self.preparing.is_none() {
            let (dir, bytes) = (self.dir.clone(), self.segment_bytes);
            let spare = dir.join(format!("new-{seq:016x}.spare"));
            self.preparing = Some(
                std::thread::Builder::new()
                    .name("raft-log-spare".into())
                    .spawn(move || zero_filled(&dir, &spare, bytes).map(|_| spare))
                    .map_err(io_error("spawn a thread for", &self.dir))?,
            );
        }
        let (salt, written) = begin_segment(&self.dir, &file, seq, &self.groups)?;
        self.live.insert(seq, 0);
        let old = std::mem::replace(&mut self.file, file);
        self.readers.insert(self.seq, old);
        self.seq = seq;
        self.salt = salt;
        self.write_at = written;
        Ok(())
    }

    /// Deletes the oldest segments while no entry points into them (never
    /// the active one). Called once the records that emptied them are
    /// synced.
    ///
    /// Only from the front: replay must see every record after the first
    /// segment kept. A gap could hide a group's destruction, and the
    /// group's older records would bring it back. Each removal (a delete,
    /// or a rename to a spare) is synced before the next.
    fn collect(&mut self) -> Result<(), SegmentLogError> {
        let dead: Vec<u64> = self
            .live
            .iter()
            .take_while(|&(&seq, &count)| seq < self.seq && count == 0)
            .map(|(&seq, _)| seq)
            .collect();
        if dead.is_empty() {
            return Ok(());
        }
        for seq in dead {
            let path = segment_path(&self.dir, seq);
            let size = self
                .readers
                .get(&seq)
                .and_then(|f| f.metadata().ok())
                .map(|m| m.len());
            if self.spares.len() < SPARES_MAX && size == Some(self.segment_bytes) {
                // Renamed, not deleted: its old rounds carry the old
                // sequence number in their crc, so they never replay.
                let spare = self.dir.join(format!("{seq:016x}.spare"));
                std::fs::rename(&path, &spare).map_err(io_error("rename", &path))?;
                self.spares.push(spare);
            } else {
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_error("remove", &path)(e)),
                }
            }
            self.live.remove(&seq);
            self.readers.remove(&seq);
            // One at a time, oldest first: a later segment's removal must
            // never be on disk while an older one's is not (replay would
            // then skip a segment's records).
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

fn new_salt() -> u64 {
    rand::random::<u64>() | 1
}

/// Writes segment `seq`'s start round (synced): a fresh salt, then the
/// checkpoint of every group's state and truncation point, so that no
/// older segment is needed for them. Returns the salt and the bytes
/// written.
fn begin_segment(
    dir: &Path,
    file: &File,
    seq: u64,
    groups: &HashMap<GroupId, GroupLog>,
) -> Result<(u64, u64), SegmentLogError> {
    let salt = new_salt();
    let mut start = Round::default();
    start.record(KIND_SEGMENT_START, 0, |buf| {
        buf.extend_from_slice(&salt.to_le_bytes())
    });
    let mut ids: Vec<_> = groups.keys().copied().collect();
    ids.sort_unstable();
    for id in ids {
        let group = &groups[&id];
        if let Some(hs) = &group.hard_state {
            start.hard_state(id, hs);
        }
        start.truncate(id, group.truncated.0, group.truncated.1);
    }
    let bytes = start.sealed(seq, 0);
    file.write_all_at(bytes, 0)
        .and_then(|()| file.sync_data())
        .map_err(io_error("write", &segment_path(dir, seq)))?;
    Ok((salt, bytes.len() as u64))
}

/// A spare segment file renamed to segment `seq`. Its old rounds stay
/// until overwritten; their crcs name another segment, so replay takes
/// them as the end of what was written.
fn reuse_segment(dir: &Path, spare: &Path, seq: u64) -> Result<File, SegmentLogError> {
    let path = segment_path(dir, seq);
    std::fs::rename(spare, &path).map_err(io_error("rename", spare))?;
    sync_dir(dir)?;
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io_error("open", &path))
}

/// A new segment file, zero-filled to its full size.
fn create_segment(dir: &Path, seq: u64, segment_bytes: u64) -> Result<File, SegmentLogError> {
    zero_filled(dir, &segment_path(dir, seq), segment_bytes)
}

/// A file at `path` in `dir` of `bytes` zeroes, synced with its directory.
fn zero_filled(dir: &Path, path: &Path, bytes: u64) -> Result<File, SegmentLogError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(io_error("create", path))?;
    // Written, not just sized: a write into a hole allocates blocks, and
    // the fdatasync after it would then write file-system metadata too.
    let zeroes = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < bytes {
        let len = zeroes.len().min((bytes - at) as usize);
        file.write_all_at(&zeroes[..len], at)
            .map_err(io_error("fill", path))?;
        at += len as u64;
    }
    file.sync_all().map_err(io_error("sync", path))?;
    sync_dir(dir)?;
    Ok(file)
}

/// Replays one segment into `groups`; returns where its valid rounds end,
/// whether they end with the segment's end round, and the segment's salt
/// (`None` if its start round is torn).
fn replay_segment(
    path: &Path,
    data: &[u8],
    seq: u64,
    last: bool,
    groups: &mut HashMap<GroupId, GroupLog>,
    live: &mut BTreeMap<u64, u64>,
) -> Result<(u64, bool, Option<u64>), SegmentLogError> {
    let corrupt = |offset: u64, reason: String| SegmentLogError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason,
    };
    let mut at = 0u64;
    let mut salt = None;
    loop {
        let reason = match parse_round(data, seq, salt.unwrap_or(0), at) {
            Parsed::Round {
                records,
                records_at,
                next,
            } => {
                if salt.is_none() {
                    salt = Some(start_salt(records).ok_or_else(|| {
                        corrupt(at, "the segment does not begin with its start round".into())
                    })?);
                }
                let ended = apply_round(records, records_at, seq, true, groups, live)
                    .map_err(|reason| corrupt(at, reason))?;
                if ended {
                    return Ok((at, true, salt));
                }
                at = next;
                continue;
            }
            Parsed::End => "the segment's rounds stop before its end round".to_string(),
            Parsed::Bad(reason) => reason,
        };
        if !last {
            return Err(corrupt(at, reason));
        }
        // The last segment: a torn round ends the log, unless a valid
        // round of this segment comes after it. Without the start round
        // (torn too) no later round can be valid.
        let Some(salt) = salt else {
            return Ok((at, false, None));
        };
        let mut probe = at + ROUND_ALIGN;
        while probe < data.len() as u64 {
            if let Parsed::Round { .. } = parse_round(data, seq, salt, probe) {
                return Err(corrupt(at, reason));
            }
            probe += ROUND_ALIGN;
        }
        return Ok((at, false, Some(salt)));
    }
}

fn read_u64(payload: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        payload.get(at..at + 8)?.try_into().ok()?,
    ))
}

fn read_u32(payload: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        payload.get(at..at + 4)?.try_into().ok()?,
    ))
}

/// Drops `removed` entries from their segments' live counts.
fn release(live: &mut BTreeMap<u64, u64>, removed: impl IntoIterator<Item = EntryAt>) {
    for e in removed {
        if let Some(count) = live.get_mut(&e.seq) {
            *count -= 1;
        }
    }
}

/// Applies a round's records (of segment `seq`, at file offset
/// `records_at`) to the index; true if it is the segment's end round.
fn apply_round(
    records: &[u8],
    records_at: u64,
    seq: u64,
    replaying: bool,
    groups: &mut HashMap<GroupId, GroupLog>,
    live: &mut BTreeMap<u64, u64>,
) -> Result<bool, String> {
    let mut ended = false;
    each_record(records, |kind, group, payload, offset| {
        if kind == KIND_SEGMENT_END {
            ended = true;
            return Ok(());
        }
        if kind == KIND_SEGMENT_START {
            return Ok(());
        }
        let at = records_at + offset as u64;
        apply_record(kind, group, payload, at, seq, replaying, groups, live)
    })?;
    Ok(ended)
}

/// Applies one record (of segment `seq`, payload at file offset
/// `payload_at`) to the index.
#[allow(clippy::too_many_arguments)] // one record's fields and the index it changes
fn apply_record(
    kind: u8,
    group: GroupId,
    payload: &[u8],
    payload_at: u64,
    seq: u64,
    replaying: bool,
    groups: &mut HashMap<GroupId, GroupLog>,
    live: &mut BTreeMap<u64, u64>,
) -> Result<(), String> {
    match kind {
        KIND_ENTRIES => {
            let entries = parse_entries(group, payload)?;
            let log = groups.entry(group).or_default();
            for (n, &(index, term, offset, len)) in entries.iter().enumerate() {
                if n == 0 {
                    if index <= log.truncated.0 {
                        return Err(format!(
                            "group {group}: entry {index} is at or below the truncation point {}",
                            log.truncated.0
                        ));
                    }
                    // Replaces the group's entries from `index` on.
                    while log.entries.back().is_some_and(|e| e.index >= index) {
                        let dropped = log.entries.pop_back();
                        release(live, dropped);
                    }
                    if Some(index) != log.last_index().checked_add(1) {
                        // Only a replay meets a gap: the entries before
                        // `index` were in segments deleted once a later
                        // truncation (still to come in the replay) passed
                        // them. `SegmentLog::open` checks that one came.
                        if !replaying {
                            return Err(format!(
                                "group {group}: entry {index} does not follow {}",
                                log.last_index()
                            ));
                        }
                        let dropped: Vec<EntryAt> = log.entries.drain(..).collect();
                        release(live, dropped);
                    }
                } else if log.entries.back().and_then(|e| e.index.checked_add(1)) != Some(index) {
                    return Err(format!("group {group}: entries out of order at {index}"));
                }
                log.entries.push_back(EntryAt {
                    index,
                    term,
                    seq,
                    offset: payload_at + offset as u64,
                    len,
                });
                *live.entry(seq).or_default() += 1;
            }
        }
        KIND_HARD_STATE => {
            groups.entry(group).or_default().hard_state = Some(payload.to_vec());
        }
        KIND_TRUNCATE => {
            let index = read_u64(payload, 0).ok_or("truncate record too short")?;
            let term = read_u64(payload, 8).ok_or("truncate record too short")?;
            let log = groups.entry(group).or_default();
            if index > log.truncated.0 {
                while log.entries.front().is_some_and(|e| e.index <= index) {
                    let dropped = log.entries.pop_front();
                    release(live, dropped);
                }
                log.truncated = (index, term);
            }
        }
        KIND_DESTROY => {
            if let Some(log) = groups.remove(&group) {
                release(live, log.entries);
            }
        }
        other => return Err(format!("unknown record kind {other}")),
    }
    Ok(())
}

#[cfg(test)]
mod tests;
