//! The Raft log in segment files of its own
//! ([decision 0013](../../../docs/decisions/0013-raft-log-in-segment-files.md)):
//! every group's entries, hard states and truncations, appended by the node
//! loop as one write and one fdatasync per round.
//!
//! This is the file layer: records, rounds, replay, the in-memory index of
//! where each entry is, and deleting segments nothing points into. It knows
//! nothing of raft-rs: an entry is an index, a term and opaque bytes, a
//! hard state is opaque bytes. Not wired into the node loop yet; the Raft
//! log is still in RocksDB (`log_store`).
//!
//! A segment is `raft-log/{seq:016x}.log`, zero-filled ahead of the writes
//! so that an fdatasync changes no file size. It holds rounds; each round
//! starts on a [`ROUND_ALIGN`] boundary and is a run of records:
//!
//! `len u32 | crc32c u32 | kind u8 | group u64 | payload`
//!
//! `len` counts `kind`, `group` and `payload`; the crc covers the segment's
//! sequence number and those bytes, so a record left from an older use of
//! the file never passes. Replay reads segments in order. In the last one,
//! the first record that is short or fails its check ends the log (a round
//! torn by a crash) unless a valid record of the same segment follows on a
//! later round boundary: that is corruption, and so is any bad record in an
//! earlier segment. Either stops the open with the file and offset named.
//! An open ends the last segment (an end record after its last good one)
//! and goes on in a new segment, so a torn round's leftovers are never
//! read again.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::GroupId;

/// Rounds start on this boundary: after a bad record, replay looks for
/// later valid records only here.
pub const ROUND_ALIGN: u64 = 4096;
/// Segment size by default; a round longer than this gets a segment alone.
pub const SEGMENT_BYTES: u64 = 64 << 20;

const HEADER: usize = 8; // len, crc
const RECORD_MIN: usize = 9; // kind, group

const KIND_ENTRIES: u8 = 1;
const KIND_HARD_STATE: u8 = 2;
const KIND_TRUNCATE: u8 = 3;
const KIND_DESTROY: u8 = 4;
const KIND_SEGMENT_END: u8 = 5;

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
    #[error("raft log {path}: corrupt record at offset {offset} ({reason}); valid records follow it, so this is not a crash's torn write. Move the node's data away and let the cluster re-replicate its groups")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
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
        self.truncated.0 + 1
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
    buf: Vec<u8>,
}

impl Round {
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn record(&mut self, kind: u8, group: GroupId, payload: impl FnOnce(&mut Vec<u8>)) {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; HEADER]);
        self.buf.push(kind);
        self.buf.extend_from_slice(&group.to_le_bytes());
        payload(&mut self.buf);
        let len = (self.buf.len() - start - HEADER) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    }

    /// Entries `(index, term, bytes)` in order; they replace any the group
    /// holds from the first one on.
    pub fn entries(&mut self, group: GroupId, entries: &[(u64, u64, &[u8])]) {
        if entries.is_empty() {
            return;
        }
        self.record(KIND_ENTRIES, group, |buf| {
            buf.extend_from_slice(&(entries.len() as u32).to_le_bytes());
            for (index, term, bytes) in entries {
                buf.extend_from_slice(&index.to_le_bytes());
                buf.extend_from_slice(&term.to_le_bytes());
                buf.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                buf.extend_from_slice(bytes);
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

    /// The bytes to write in segment `seq`: crcs filled in, padded to the
    /// round boundary.
    fn sealed(&mut self, seq: u64) -> &[u8] {
        let mut at = 0;
        while at < self.buf.len() {
            let len =
                u32::from_le_bytes(self.buf[at..at + 4].try_into().expect("4 bytes")) as usize;
            let crc = record_crc(seq, &self.buf[at + HEADER..at + HEADER + len]);
            self.buf[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
            at += HEADER + len;
        }
        let padded = (self.buf.len() as u64).div_ceil(ROUND_ALIGN) * ROUND_ALIGN;
        self.buf.resize(padded as usize, 0);
        &self.buf
    }
}

fn record_crc(seq: u64, body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&seq.to_le_bytes()), body)
}

/// A record read back, or why none could be.
enum Parsed<'a> {
    Record {
        kind: u8,
        group: GroupId,
        payload: &'a [u8],
        payload_at: u64,
        next: u64,
    },
    /// Zeroes where a record would start: the end of what was written.
    End,
    Bad(String),
}

fn parse(data: &[u8], seq: u64, at: u64) -> Parsed<'_> {
    let start = at as usize;
    if data.len() < start + HEADER {
        return Parsed::End;
    }
    let len = u32::from_le_bytes(data[start..start + 4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(data[start + 4..start + 8].try_into().expect("4 bytes"));
    if len == 0 && crc == 0 {
        return Parsed::End;
    }
    if len < RECORD_MIN || data.len() < start + HEADER + len {
        return Parsed::Bad(format!(
            "record length {len} runs past the file or is too short"
        ));
    }
    let body = &data[start + HEADER..start + HEADER + len];
    if record_crc(seq, body) != crc {
        return Parsed::Bad("crc mismatch".into());
    }
    Parsed::Record {
        kind: body[0],
        group: u64::from_le_bytes(body[1..9].try_into().expect("8 bytes")),
        payload: &body[9..],
        payload_at: at + (HEADER + RECORD_MIN) as u64,
        next: at + (HEADER + len) as u64,
    }
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016x}.log"))
}

/// A node's Raft log: the segment files and the index of what they hold.
pub struct SegmentLog {
    dir: PathBuf,
    segment_bytes: u64,
    /// Every segment on disk: sequence number to entries pointing into it.
    live: BTreeMap<u64, u64>,
    seq: u64,
    file: File,
    write_at: u64,
    groups: HashMap<GroupId, GroupLog>,
}

impl SegmentLog {
    /// Opens (or creates) the log in `dir`, replaying every segment.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<SegmentLog, SegmentLogError> {
        std::fs::create_dir_all(dir).map_err(io_error("create", dir))?;
        let mut seqs = Vec::new();
        for item in std::fs::read_dir(dir).map_err(io_error("list", dir))? {
            let name = item.map_err(io_error("list", dir))?.file_name();
            let name = name.to_string_lossy();
            if let Some(seq) = name
                .strip_suffix(".log")
                .and_then(|s| u64::from_str_radix(s, 16).ok())
            {
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();
        let mut groups: HashMap<GroupId, GroupLog> = HashMap::new();
        let mut live: BTreeMap<u64, u64> = BTreeMap::new();
        let mut tail = None;
        for (i, &seq) in seqs.iter().enumerate() {
            let path = segment_path(dir, seq);
            let data = std::fs::read(&path).map_err(io_error("read", &path))?;
            live.insert(seq, 0);
            let last = i + 1 == seqs.len();
            let (end, ended) = replay_segment(&path, &data, seq, last, &mut groups, &mut live)?;
            if last {
                tail = Some((seq, end, ended));
            }
        }
        for (&group, log) in &groups {
            if let Some(first) = log.entries.front().map(|e| e.index) {
                if first != log.truncated.0 + 1 {
                    return Err(SegmentLogError::Gap {
                        dir: dir.to_path_buf(),
                        group,
                        after: log.truncated.0,
                        first,
                    });
                }
            }
        }
        let Some((seq, end, ended)) = tail else {
            let file = create_segment(dir, 1, segment_bytes)?;
            live.insert(1, 0);
            return Ok(SegmentLog {
                dir: dir.to_path_buf(),
                segment_bytes,
                live,
                seq: 1,
                file,
                write_at: 0,
                groups,
            });
        };
        let path = segment_path(dir, seq);
        let file = OpenOptions::new()
            .write(true)
            .read(true)
            .open(&path)
            .map_err(io_error("open", &path))?;
        let mut log = SegmentLog {
            dir: dir.to_path_buf(),
            segment_bytes,
            live,
            seq,
            file,
            write_at: end.next_multiple_of(ROUND_ALIGN),
            groups,
        };
        // Every open goes on in a new segment. Past the last good record
        // of the old one may lie the rest of a torn round, under the same
        // segment number: writing after it could let a later replay read
        // its records after newer ones. The end record fences them off.
        if !ended {
            log.end_segment()?;
        }
        log.start_segment(seq + 1)?;
        log.collect()?;
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

    /// The bytes of entry `index` of `group`, read from its segment.
    pub fn entry(&self, group: GroupId, index: u64) -> Result<Option<Vec<u8>>, SegmentLogError> {
        let Some(at) = self.groups.get(&group).and_then(|g| g.at(index)).copied() else {
            return Ok(None);
        };
        let path = segment_path(&self.dir, at.seq);
        let mut bytes = vec![0u8; at.len as usize];
        let read = if at.seq == self.seq {
            self.file.read_exact_at(&mut bytes, at.offset)
        } else {
            File::open(&path).and_then(|f| f.read_exact_at(&mut bytes, at.offset))
        };
        read.map_err(io_error("read", &path))?;
        Ok(Some(bytes))
    }

    /// Writes `round` (one write, one fdatasync), then applies it to the
    /// index and deletes the segments nothing points into any more.
    pub fn write(&mut self, mut round: Round) -> Result<(), SegmentLogError> {
        if round.is_empty() {
            return Ok(());
        }
        // Room for the round and, after it, the segment's end record.
        let size = (round.buf.len() as u64).next_multiple_of(ROUND_ALIGN) + ROUND_ALIGN;
        if self.write_at > 0 && self.write_at + size > self.segment_bytes {
            self.rotate()?;
        }
        let seq = self.seq;
        let at = self.write_at;
        let path = segment_path(&self.dir, seq);
        let bytes = round.sealed(seq);
        self.file
            .write_all_at(bytes, at)
            .and_then(|()| self.file.sync_data())
            .map_err(io_error("write", &path))?;
        self.write_at = at + bytes.len() as u64;
        let mut next = at;
        while let Parsed::Record {
            kind,
            group,
            payload,
            payload_at,
            next: after,
        } = parse(bytes, seq, next - at)
        {
            apply_record(
                kind,
                group,
                payload,
                payload_at + at,
                seq,
                false,
                &mut self.groups,
                &mut self.live,
            )
            .expect("a round this log built parses");
            next = after + at;
        }
        self.collect()
    }

    /// Ends the active segment and starts the next with a checkpoint of
    /// every group's hard state and truncation point, so that no older
    /// segment is needed for them.
    fn rotate(&mut self) -> Result<(), SegmentLogError> {
        self.end_segment()?;
        self.start_segment(self.seq + 1)
    }

    /// Writes the active segment's end record (synced).
    fn end_segment(&mut self) -> Result<(), SegmentLogError> {
        let mut end = Round::default();
        end.record(KIND_SEGMENT_END, 0, |_| {});
        let path = segment_path(&self.dir, self.seq);
        let bytes = end.sealed(self.seq);
        self.file
            .write_all_at(bytes, self.write_at)
            .and_then(|()| self.file.sync_data())
            .map_err(io_error("write", &path))?;
        Ok(())
    }

    /// Makes segment `seq` the active one, beginning with the checkpoint.
    fn start_segment(&mut self, seq: u64) -> Result<(), SegmentLogError> {
        let file = create_segment(&self.dir, seq, self.segment_bytes)?;
        let mut checkpoint = Round::default();
        let mut ids: Vec<_> = self.groups.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let group = &self.groups[&id];
            if let Some(hs) = &group.hard_state {
                checkpoint.hard_state(id, hs);
            }
            checkpoint.truncate(id, group.truncated.0, group.truncated.1);
        }
        let bytes = checkpoint.sealed(seq);
        file.write_all_at(bytes, 0)
            .and_then(|()| file.sync_data())
            .map_err(io_error("write", &segment_path(&self.dir, seq)))?;
        self.live.insert(seq, 0);
        self.seq = seq;
        self.file = file;
        self.write_at = bytes.len() as u64;
        Ok(())
    }

    /// Deletes the oldest segments while no entry points into them (never
    /// the active one). Called once the records that emptied them are
    /// synced.
    ///
    /// Only from the front: replay must see every record after the first
    /// segment kept. A gap could hide a group's destruction, and the
    /// group's older records would bring it back.
    fn collect(&mut self) -> Result<(), SegmentLogError> {
        let dead: Vec<u64> = self
            .live
            .iter()
            .take_while(|&(&seq, &count)| seq < self.seq && count == 0)
            .map(|(&seq, _)| seq)
            .collect();
        for seq in dead {
            let path = segment_path(&self.dir, seq);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error("remove", &path)(e)),
            }
            self.live.remove(&seq);
        }
        Ok(())
    }
}

/// A new segment file, zero-filled to its full size.
fn create_segment(dir: &Path, seq: u64, segment_bytes: u64) -> Result<File, SegmentLogError> {
    let path = segment_path(dir, seq);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(io_error("create", &path))?;
    // Written, not just sized: a write into a hole allocates blocks, and
    // the fdatasync after it would then write file-system metadata too.
    let zeroes = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < segment_bytes {
        let len = zeroes.len().min((segment_bytes - at) as usize);
        file.write_all_at(&zeroes[..len], at)
            .map_err(io_error("fill", &path))?;
        at += len as u64;
    }
    file.sync_all().map_err(io_error("sync", &path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("sync", dir))?;
    Ok(file)
}

/// Replays one segment into `groups`; returns where its valid records end,
/// and whether they end with the segment's end record.
fn replay_segment(
    path: &Path,
    data: &[u8],
    seq: u64,
    last: bool,
    groups: &mut HashMap<GroupId, GroupLog>,
    live: &mut BTreeMap<u64, u64>,
) -> Result<(u64, bool), SegmentLogError> {
    let mut at = 0u64;
    loop {
        match parse(data, seq, at) {
            Parsed::Record {
                kind: KIND_SEGMENT_END,
                ..
            } => return Ok((at, true)),
            Parsed::Record {
                kind,
                group,
                payload,
                payload_at,
                next,
            } => {
                apply_record(kind, group, payload, payload_at, seq, true, groups, live).map_err(
                    |reason| SegmentLogError::Corrupt {
                        path: path.to_path_buf(),
                        offset: at,
                        reason,
                    },
                )?;
                at = next;
                // Padding to the next round: zeroes up to the boundary.
                let boundary = at.div_ceil(ROUND_ALIGN) * ROUND_ALIGN;
                let pad_end = (boundary as usize).min(data.len());
                if data[at as usize..pad_end].iter().all(|&b| b == 0) {
                    at = boundary;
                }
            }
            Parsed::End | Parsed::Bad(_) if !last => {
                return Err(SegmentLogError::Corrupt {
                    path: path.to_path_buf(),
                    offset: at,
                    reason: "a segment before the last ends without its end record".into(),
                })
            }
            Parsed::End => return Ok((at, false)),
            Parsed::Bad(reason) => {
                // Torn, if nothing valid of this segment follows.
                let mut probe = (at / ROUND_ALIGN + 1) * ROUND_ALIGN;
                while (probe as usize) < data.len() {
                    if let Parsed::Record { .. } = parse(data, seq, probe) {
                        return Err(SegmentLogError::Corrupt {
                            path: path.to_path_buf(),
                            offset: at,
                            reason,
                        });
                    }
                    probe += ROUND_ALIGN;
                }
                return Ok((at, false));
            }
        }
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
    let short = || format!("kind {kind} record of group {group} is too short");
    match kind {
        KIND_ENTRIES => {
            let count = read_u32(payload, 0).ok_or_else(short)?;
            let log = groups.entry(group).or_default();
            let mut at = 4usize;
            for n in 0..count {
                let index = read_u64(payload, at).ok_or_else(short)?;
                let term = read_u64(payload, at + 8).ok_or_else(short)?;
                let len = read_u32(payload, at + 16).ok_or_else(short)?;
                at += 20;
                if payload.len() < at + len as usize {
                    return Err(short());
                }
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
                    if index != log.last_index() + 1 {
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
                } else if log.entries.back().map(|e| e.index + 1) != Some(index) {
                    return Err(format!("group {group}: entries out of order at {index}"));
                }
                log.entries.push_back(EntryAt {
                    index,
                    term,
                    seq,
                    offset: payload_at + at as u64,
                    len,
                });
                *live.entry(seq).or_default() += 1;
                at += len as usize;
            }
        }
        KIND_HARD_STATE => {
            groups.entry(group).or_default().hard_state = Some(payload.to_vec());
        }
        KIND_TRUNCATE => {
            let index = read_u64(payload, 0).ok_or_else(short)?;
            let term = read_u64(payload, 8).ok_or_else(short)?;
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
