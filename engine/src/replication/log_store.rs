//! Raft log, hard state and conf state of every group of one node, as
//! raft-rs's [`Storage`], kept in the node's segment log
//! ([`super::segment_log`], decision 0013).
//!
//! Per group the segment log holds the entries (each a protobuf `Entry`),
//! the truncation point, and a state record: the hard state, the conf
//! state and the index of the entry that made it, together, so that one
//! record always says all three and a later record replaces it whole.
//!
//! A group is bootstrapped with its log starting after index
//! [`BOOTSTRAP_INDEX`] (term [`BOOTSTRAP_TERM`]), as if entries up to it
//! had been compacted. A replica created later, empty, therefore always
//! needs a snapshot, which carries the group's configuration; it can never
//! be fed the log from index 1, which would not (the first configuration
//! is not a log entry).
//!
//! Writes are staged, not made: [`LogStore::stage`] and the calls that
//! change state add to the node loop's [`Round`], [`LogStore::finish_round`]
//! adds the group's latest state record at its end, and
//! [`LogStore::commit_staged`] updates the view raft-rs reads once the
//! round is synced. This module never decides what to write; raft-rs's
//! `Ready` does.
//!
//! Before decision 0013 the log lived in RocksDB under `'r'` keys;
//! [`open_node_log`] moves such a log into the segment files once.

use prost011::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};
use rocksdb::{WriteBatch, DB};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use super::segment_log::{Round, SegmentLog, SegmentLogError, SEGMENT_BYTES};
use super::GroupId;

/// Where a bootstrapped group's log starts (exclusive), and its term.
pub const BOOTSTRAP_INDEX: u64 = 5;
pub const BOOTSTRAP_TERM: u64 = 5;
/// The conf index of a log moved from RocksDB that did not record one:
/// the node loop takes the index raft-rs resumes from (what the state
/// machine applied, at most the commit index) when it opens the group,
/// since the configuration then was saved with every change applied.
pub const CONF_INDEX_UNKNOWN: u64 = u64::MAX;
/// The data of every snapshot this store makes: the state itself is not
/// in the message; the receiver copies it from the sender's replica.
pub const SNAPSHOT_MARKER: &[u8] = b"hpchain.pg-copy.v1";

/// The segment log of a node, shared by the node loop (which writes its
/// rounds) and every group's [`LogStore`] (which reads entries back).
pub type SharedLog = Arc<Mutex<SegmentLog>>;

/// Locks the log. A panic elsewhere while it was held leaves nothing half
/// done that matters: the log poisons itself on a failed write.
pub fn lock(log: &SharedLog) -> MutexGuard<'_, SegmentLog> {
    log.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Opens the node's log in `dir` and moves into it any log the node's
/// RocksDB `db` still holds from before decision 0013.
pub fn open_node_log(dir: &Path, db: &DB) -> Result<SharedLog, String> {
    let mut log = SegmentLog::open(dir, SEGMENT_BYTES).map_err(|e| e.to_string())?;
    let moved = legacy::migrate(db, &mut log)?;
    if moved > 0 {
        tracing::info!(
            groups = moved,
            "moved the Raft logs of {moved} groups from RocksDB into {}",
            dir.display()
        );
    }
    Ok(Arc::new(Mutex::new(log)))
}

/// Whether `entry` changes the group's configuration.
pub fn is_conf_change(entry: &Entry) -> bool {
    matches!(
        entry.get_entry_type(),
        raft::eraftpb::EntryType::EntryConfChange | raft::eraftpb::EntryType::EntryConfChangeV2
    )
}

fn storage_error(message: String) -> raft::Error {
    raft::Error::Store(StorageError::Other(message.into()))
}

fn log_error(group: GroupId, e: SegmentLogError) -> raft::Error {
    storage_error(format!("group {group}: {e}"))
}

/// Adds `entries` to `round` as one record, each as its protobuf.
fn stage_entries(round: &mut Round, group: GroupId, entries: &[Entry]) {
    round.entries_with(
        group,
        entries,
        |e| (e.index, e.term),
        |e, buf| {
            buf.reserve(e.encoded_len());
            e.encode(buf).expect("a Vec grows to fit");
        },
    );
}

const STATE_VERSION: u8 = 1;

/// A state record's payload: `version u8 | len u32 | HardState | len u32 |
/// ConfState | conf index u64` (protobufs, little-endian integers).
fn encode_state(hard_state: &HardState, conf_state: &ConfState, conf_index: u64) -> Vec<u8> {
    let hs = hard_state.encode_to_vec();
    let cs = conf_state.encode_to_vec();
    let mut out = Vec::with_capacity(17 + hs.len() + cs.len());
    out.push(STATE_VERSION);
    out.extend_from_slice(&(hs.len() as u32).to_le_bytes());
    out.extend_from_slice(&hs);
    out.extend_from_slice(&(cs.len() as u32).to_le_bytes());
    out.extend_from_slice(&cs);
    out.extend_from_slice(&conf_index.to_le_bytes());
    out
}

fn decode_state(group: GroupId, bytes: &[u8]) -> raft::Result<(HardState, ConfState, u64)> {
    let bad = |what: &str| storage_error(format!("group {group}: state record: {what}"));
    let (&version, mut rest) = bytes.split_first().ok_or_else(|| bad("empty"))?;
    if version != STATE_VERSION {
        return Err(bad(&format!("unknown format version {version}")));
    }
    let mut take = |n: usize| -> raft::Result<&[u8]> {
        if rest.len() < n {
            return Err(bad("too short"));
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Ok(head)
    };
    let mut part = |what: &str| -> raft::Result<&[u8]> {
        let len = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes")) as usize;
        take(len).map_err(|_| bad(what))
    };
    let hs = HardState::decode(part("hard state")?).map_err(|e| bad(&e.to_string()))?;
    let cs = ConfState::decode(part("conf state")?).map_err(|e| bad(&e.to_string()))?;
    let conf_index = u64::from_le_bytes(take(8)?.try_into().expect("8 bytes"));
    Ok((hs, cs, conf_index))
}

/// The groups the log holds a configuration for (so a replica of them
/// lives on this node), with that configuration.
pub fn stored_groups(log: &SharedLog) -> raft::Result<Vec<(GroupId, ConfState)>> {
    let log = lock(log);
    let mut out = Vec::new();
    for (&group, g) in log.groups() {
        if let Some(bytes) = &g.hard_state {
            let (_, conf, _) = decode_state(group, bytes)?;
            if !conf.voters.is_empty() || !conf.learners.is_empty() {
                out.push((group, conf));
            }
        }
    }
    out.sort_by_key(|(group, _)| *group);
    Ok(out)
}

/// The Raft storage of one group.
pub struct LogStore {
    log: SharedLog,
    group: GroupId,
    hard_state: HardState,
    conf_state: ConfState,
    /// The index of the entry (or snapshot) that made `conf_state`.
    conf_index: u64,
    truncated_index: u64,
    truncated_term: u64,
    last_index: u64,
    /// Staged but not yet synced: applied to the view by `commit_staged`.
    staged: Option<Staged>,
    /// A truncation made by `compact` that no round carries yet.
    unsaved_truncation: Option<(u64, u64)>,
    /// The state (hard state, conf state) changed since the last state
    /// record was staged.
    state_changed: bool,
    /// The state machine's applied index (set by the node loop): where a
    /// snapshot made now stands.
    applied: u64,
    /// Bytes of entry data appended since the log was last truncated (an
    /// estimate: what remains after a truncation is not counted).
    appended_bytes: u64,
    /// The latest entries, as synced: applying them (raft-rs asks for
    /// committed entries once they left its unstable log) reads them here,
    /// not back from the files.
    recent: RecentEntries,
}
/// Entries ending at the log's last index, contiguous, at most
/// [`RECENT_ENTRIES_MAX_BYTES`] of data.
#[derive(Default)]
struct RecentEntries {
    entries: std::collections::VecDeque<Entry>,
    bytes: usize,
}

/// Per group; a node holds tens to hundreds of groups.
const RECENT_ENTRIES_MAX_BYTES: usize = 512 << 10;

impl RecentEntries {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|e| e.index)
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Adds entries just synced, which replace any from their first index.
    fn append(&mut self, new: Vec<Entry>) {
        let Some(first) = new.first().map(|e| e.index) else {
            return;
        };
        while self.entries.back().is_some_and(|e| e.index >= first) {
            let dropped = self.entries.pop_back().expect("back entry");
            self.bytes -= dropped.data.len();
        }
        if self.entries.back().is_some_and(|e| e.index + 1 != first) {
            self.clear();
        }
        for e in new {
            self.bytes += e.data.len();
            self.entries.push_back(e);
        }
        while self.bytes > RECENT_ENTRIES_MAX_BYTES {
            let Some(dropped) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= dropped.data.len();
        }
    }

    /// Drops entries up to and including `index`.
    fn truncate_to(&mut self, index: u64) {
        while self.entries.front().is_some_and(|e| e.index <= index) {
            let dropped = self.entries.pop_front().expect("front entry");
            self.bytes -= dropped.data.len();
        }
    }
}

struct Staged {
    /// Copies of the entries, for [`LogStore::recent`] once synced.
    entries: Vec<Entry>,
    hard_state: Option<HardState>,
    last_index: Option<u64>,
}

impl LogStore {
    /// Opens group `group`'s log from `log`, or an empty one.
    pub fn open(log: SharedLog, group: GroupId) -> raft::Result<LogStore> {
        let (hard_state, conf_state, conf_index, truncated, last_index) = {
            let files = lock(&log);
            match files.group(group) {
                Some(g) => {
                    let (hs, cs, conf_index) = match &g.hard_state {
                        Some(bytes) => decode_state(group, bytes)?,
                        None => Default::default(),
                    };
                    (hs, cs, conf_index, g.truncated, g.last_index())
                }
                None => Default::default(),
            }
        };
        Ok(LogStore {
            log,
            group,
            hard_state,
            conf_state,
            conf_index,
            truncated_index: truncated.0,
            truncated_term: truncated.1,
            last_index,
            staged: None,
            unsaved_truncation: None,
            state_changed: false,
            applied: 0,
            appended_bytes: 0,
            recent: RecentEntries::default(),
        })
    }

    /// Drops group `group`'s log and state (its replica left the group),
    /// synced.
    pub fn destroy(log: &SharedLog, group: GroupId) -> raft::Result<()> {
        let mut round = Round::default();
        round.destroy(group);
        lock(log).write(round).map_err(|e| log_error(group, e))
    }

    /// The configuration as last applied.
    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// Records how far the state machine has applied.
    pub fn set_applied(&mut self, applied: u64) {
        self.applied = applied;
    }

    /// Replaces this replica's log with snapshot `meta` (the state machine
    /// already holds the state at or after its index): entries dropped, the
    /// log restarting after its index, its configuration adopted, with a
    /// hard state that covers the snapshot. Staged into `round`, which the
    /// node loop syncs before raft-rs hears that the snapshot is applied.
    pub fn apply_snapshot(&mut self, round: &mut Round, meta: &raft::eraftpb::SnapshotMetadata) {
        round.destroy(self.group);
        round.truncate(self.group, meta.index, meta.term);
        self.hard_state.term = self.hard_state.term.max(meta.term);
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
        self.conf_state = meta.get_conf_state().clone();
        self.conf_index = meta.index;
        self.truncated_index = meta.index;
        self.truncated_term = meta.term;
        self.last_index = meta.index;
        self.applied = self.applied.max(meta.index);
        self.appended_bytes = 0;
        self.recent.clear();
        self.unsaved_truncation = None;
        self.state_changed = true;
    }

    /// Whether this group has any Raft state on disk.
    pub fn is_initialized(&self) -> bool {
        !self.conf_state.voters.is_empty()
    }

    /// Writes a fresh group's first configuration (all initial replicas of
    /// a new PG start from the same one, so no snapshot is needed), with
    /// the log starting after [`BOOTSTRAP_INDEX`]; synced.
    pub fn bootstrap(&mut self, voters: &[u64]) -> raft::Result<()> {
        self.conf_state = ConfState {
            voters: voters.to_vec(),
            ..Default::default()
        };
        self.hard_state = HardState {
            term: BOOTSTRAP_TERM,
            commit: BOOTSTRAP_INDEX,
            ..Default::default()
        };
        self.truncated_index = BOOTSTRAP_INDEX;
        self.truncated_term = BOOTSTRAP_TERM;
        self.last_index = BOOTSTRAP_INDEX;
        self.recent.clear();
        self.applied = BOOTSTRAP_INDEX;
        let mut round = Round::default();
        round.truncate(self.group, BOOTSTRAP_INDEX, BOOTSTRAP_TERM);
        self.state_changed = true;
        self.finish_round(&mut round);
        lock(&self.log)
            .write(round)
            .map_err(|e| log_error(self.group, e))
    }

    /// Takes the configuration made by entry `index` (after
    /// `apply_conf_change`); the next state record carries it.
    pub fn set_conf_state(&mut self, index: u64, conf_state: ConfState) {
        self.conf_state = conf_state;
        self.conf_index = index;
        self.state_changed = true;
    }

    /// Writes what [`LogStore::finish_round`] would stage, now, synced.
    pub fn save_now(&mut self) -> raft::Result<()> {
        let mut round = Round::default();
        self.finish_round(&mut round);
        lock(&self.log)
            .write(round)
            .map_err(|e| log_error(self.group, e))
    }

    /// The first configuration change among entries `(after, upto]`.
    pub fn first_conf_change(&self, after: u64, upto: u64) -> raft::Result<Option<u64>> {
        let upto = upto.min(self.last_index);
        let mut low = after + 1;
        while low <= upto {
            // In pieces: a log a down replica holds back can be large.
            let entries = self.entries(low, upto + 1, 4 << 20, GetEntriesContext::empty(false))?;
            if let Some(e) = entries.iter().find(|e| is_conf_change(e)) {
                return Ok(Some(e.index));
            }
            low += entries.len().max(1) as u64;
        }
        Ok(None)
    }

    /// The index of the entry (or snapshot) that made the configuration.
    pub fn conf_index(&self) -> u64 {
        self.conf_index
    }

    /// Stages new entries (replacing any conflicting suffix) and a new hard
    /// state into the node loop's round.
    pub fn stage(&mut self, round: &mut Round, entries: &[Entry], hard_state: Option<&HardState>) {
        let mut staged = Staged {
            entries: entries.to_vec(),
            hard_state: hard_state.cloned(),
            last_index: None,
        };
        if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
            debug_assert!(first.index > self.truncated_index);
            stage_entries(round, self.group, entries);
            staged.last_index = Some(last.index);
        }
        if hard_state.is_some() {
            self.state_changed = true;
        }
        self.staged = Some(staged);
    }

    /// Stages only a commit index change (from a `LightReady`).
    pub fn stage_commit(&mut self, commit: u64) {
        self.hard_state.commit = commit;
        self.state_changed = true;
    }

    /// Adds to `round` what changed and is not in a round yet: a truncation
    /// and the group's state record. The node loop calls it for every
    /// group after staging, so the state record comes last and holds the
    /// latest hard and conf state.
    pub fn finish_round(&mut self, round: &mut Round) {
        if let Some((index, term)) = self.unsaved_truncation.take() {
            round.truncate(self.group, index, term);
        }
        if std::mem::take(&mut self.state_changed) {
            let hard_state = self
                .staged
                .as_ref()
                .and_then(|s| s.hard_state.as_ref())
                .unwrap_or(&self.hard_state);
            round.hard_state(
                self.group,
                &encode_state(hard_state, &self.conf_state, self.conf_index),
            );
        }
    }

    /// Makes staged writes visible to raft-rs; call after the round synced.
    pub fn commit_staged(&mut self) {
        if let Some(staged) = self.staged.take() {
            self.appended_bytes += staged
                .entries
                .iter()
                .map(|e| e.data.len() as u64)
                .sum::<u64>();
            if let Some(hs) = staged.hard_state {
                self.hard_state = hs;
            }
            if let Some(last) = staged.last_index {
                self.last_index = last;
            }
            self.recent.append(staged.entries);
        }
    }

    /// Drops log entries up to and including `index` (which must be applied
    /// everywhere that needs it: the caller compacts only to what every
    /// replica has). Not synced: the node loop's next round carries it
    /// (see [`LogStore::finish_round`]), and until then a crash only brings
    /// back entries the state machine has durably applied.
    pub fn compact(&mut self, index: u64) -> raft::Result<()> {
        if index <= self.truncated_index {
            return Ok(());
        }
        let index = index.min(self.last_index);
        let term = self.term(index)?;
        self.unsaved_truncation = Some((index, term));
        self.truncated_index = index;
        self.truncated_term = term;
        self.recent.truncate_to(index);
        self.appended_bytes = 0;
        Ok(())
    }

    /// Bytes of entry data appended since the last truncation.
    pub fn appended_bytes(&self) -> u64 {
        self.appended_bytes
    }

    /// The last index in the log.
    pub fn last_index_now(&self) -> u64 {
        self.last_index
    }

    /// The first index still in the log.
    pub fn first_index_now(&self) -> u64 {
        self.truncated_index + 1
    }

    /// The hard state as last made durable.
    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    fn missing(&self, index: u64) -> raft::Error {
        storage_error(format!(
            "group {}: entry {index} missing in [{}, {}]",
            self.group,
            self.truncated_index + 1,
            self.last_index
        ))
    }
}

impl Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState {
            hard_state: self.hard_state.clone(),
            conf_state: self.conf_state.clone(),
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.truncated_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index + 1 {
            return Err(storage_error(format!(
                "group {}: entries up to {high} asked, last is {}",
                self.group, self.last_index
            )));
        }
        let max_size = max_size.into().unwrap_or(u64::MAX);
        let mut out = Vec::with_capacity((high - low) as usize);
        let mut size = 0u64;
        let held = |first: &u64| *first <= low && high - first <= self.recent.entries.len() as u64;
        if let Some(first) = self.recent.first_index().filter(held) {
            for entry in self
                .recent
                .entries
                .range((low - first) as usize..(high - first) as usize)
            {
                size += entry.encoded_len() as u64;
                if !out.is_empty() && size > max_size {
                    break;
                }
                out.push(entry.clone());
            }
            return Ok(out);
        }
        let mut failed = None;
        lock(&self.log)
            .read_entries(self.group, low, high, |index, bytes| {
                match Entry::decode(bytes) {
                    Ok(entry) if entry.index == index => {
                        size += entry.encoded_len() as u64;
                        if !out.is_empty() && size > max_size {
                            return false;
                        }
                        out.push(entry);
                        true
                    }
                    Ok(entry) => {
                        failed = Some(format!("entry {index} holds index {}", entry.index));
                        false
                    }
                    Err(e) => {
                        failed = Some(format!("entry {index}: {e}"));
                        false
                    }
                }
            })
            .map_err(|e| log_error(self.group, e))?;
        if let Some(reason) = failed {
            return Err(storage_error(format!("group {}: {reason}", self.group)));
        }
        let stopped_by_size = size > max_size;
        if !stopped_by_size && out.len() as u64 != high - low {
            return Err(self.missing(low + out.len() as u64));
        }
        Ok(out)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        if index == self.truncated_index {
            return Ok(self.truncated_term);
        }
        if index < self.truncated_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if index > self.last_index {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        lock(&self.log)
            .group(self.group)
            .and_then(|g| g.term(index))
            .ok_or_else(|| self.missing(index))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.truncated_index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index)
    }

    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        // Only metadata: the index the state machine has applied and the
        // configuration applied with it. The receiver copies the state
        // from this replica, which by then has applied at least as far;
        // replaying the log after the index over a newer copy is harmless
        // (see `crate::store`).
        let index = self.applied.max(self.truncated_index).min(self.last_index);
        if index == 0 {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        let mut snapshot = Snapshot {
            data: SNAPSHOT_MARKER.to_vec(),
            ..Default::default()
        };
        let meta = snapshot.mut_metadata();
        meta.index = index;
        meta.term = self.term(index)?;
        meta.set_conf_state(self.conf_state.clone());
        Ok(snapshot)
    }
}

/// The log as RocksDB held it before decision 0013, read once to move it.
///
/// | key | value |
/// |---|---|
/// | `'r' group:u64 0x01` | version `1`, `HardState` (protobuf) |
/// | `'r' group:u64 0x02` | version `1`, `ConfState` (protobuf) |
/// | `'r' group:u64 0x03` | version `1`, truncated index:u64, truncated term:u64 |
/// | `'r' group:u64 0x04` | version `1`, index:u64 of the conf change that made the `0x02` configuration |
/// | `'r' group:u64 0x10 index:u64` | version `1`, `Entry` (protobuf) |
///
/// Integers big-endian.
mod legacy {
    use super::*;

    const PREFIX: u8 = b'r';
    /// Entry bytes per round of a move (small in tests, to make several).
    pub(super) const MOVE_ROUND_BYTES: usize = if cfg!(test) { 1024 } else { 64 << 20 };
    const FORMAT_VERSION: u8 = 1;
    pub(super) const KIND_HARD_STATE: u8 = 0x01;
    pub(super) const KIND_CONF_STATE: u8 = 0x02;
    pub(super) const KIND_TRUNCATED: u8 = 0x03;
    pub(super) const KIND_CONF_INDEX: u8 = 0x04;
    pub(super) const KIND_ENTRY: u8 = 0x10;

    pub(super) fn key(group: GroupId, kind: u8) -> Vec<u8> {
        let mut k = Vec::with_capacity(18);
        k.push(PREFIX);
        k.extend_from_slice(&group.to_be_bytes());
        k.push(kind);
        k
    }

    fn body<'a>(group: GroupId, what: &str, value: &'a [u8]) -> Result<&'a [u8], String> {
        match value.split_first() {
            Some((&FORMAT_VERSION, body)) => Ok(body),
            _ => Err(format!(
                "group {group}: the {what} kept in RocksDB has an unknown format"
            )),
        }
    }

    fn u64_at(group: GroupId, what: &str, body: &[u8], at: usize) -> Result<u64, String> {
        body.get(at..at + 8)
            .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
            .ok_or_else(|| format!("group {group}: the {what} kept in RocksDB is too short"))
    }

    /// Moves every group's log from `db` into `log`, one synced round per
    /// group, then deletes the `'r'` keys (synced). A round starts by
    /// destroying the group, so a move cut short by a crash is simply done
    /// again. Returns how many groups moved.
    pub(super) fn migrate(db: &DB, log: &mut SegmentLog) -> Result<usize, String> {
        let read_error = |e: rocksdb::Error| format!("reading the Raft log kept in RocksDB: {e}");
        let mut moved = 0;
        let mut it = db.raw_iterator();
        it.seek([PREFIX]);
        while let Some(k) = it.key() {
            if k.len() < 10 || k[0] != PREFIX {
                break;
            }
            let group = u64::from_be_bytes(k[1..9].try_into().expect("8 bytes"));
            let get = |kind| db.get(key(group, kind)).map_err(read_error);
            let decode_err = |what: &'static str| {
                move |e: prost011::DecodeError| {
                    format!("group {group}: the {what} kept in RocksDB: {e}")
                }
            };
            let hard_state = match get(KIND_HARD_STATE)? {
                Some(v) => HardState::decode(body(group, "hard state", &v)?)
                    .map_err(decode_err("hard state"))?,
                None => HardState::default(),
            };
            let conf_state = match get(KIND_CONF_STATE)? {
                Some(v) => ConfState::decode(body(group, "conf state", &v)?)
                    .map_err(decode_err("conf state"))?,
                None => ConfState::default(),
            };
            let conf_index = match get(KIND_CONF_INDEX)? {
                Some(v) => u64_at(group, "conf index", body(group, "conf index", &v)?, 0)?,
                // Kept before the index was: not known (see
                // `CONF_INDEX_UNKNOWN`).
                None => CONF_INDEX_UNKNOWN,
            };
            let truncated = match get(KIND_TRUNCATED)? {
                Some(v) => {
                    let b = body(group, "truncation point", &v)?;
                    (
                        u64_at(group, "truncation point", b, 0)?,
                        u64_at(group, "truncation point", b, 8)?,
                    )
                }
                None => (0, 0),
            };
            let mut entries = Vec::new();
            let prefix = key(group, KIND_ENTRY);
            let mut entry_it = db.raw_iterator();
            entry_it.seek(&prefix);
            while let Some(k) = entry_it.key() {
                if !k.starts_with(&prefix) {
                    break;
                }
                let value = entry_it.value().expect("a value with the key");
                let entry =
                    Entry::decode(body(group, "entry", value)?).map_err(decode_err("entry"))?;
                if entry.index > truncated.0 {
                    entries.push(entry);
                }
                entry_it.next();
            }
            entry_it.status().map_err(read_error)?;
            // In rounds of at most MOVE_ROUND_BYTES of entries (a round
            // must stay under 4 GiB); the first destroys what an earlier,
            // interrupted move left, the later ones append, the last
            // carries the state.
            let mut round = Round::default();
            round.destroy(group);
            round.truncate(group, truncated.0, truncated.1);
            let mut rest = entries.as_slice();
            loop {
                let mut take = 0;
                let mut bytes = 0;
                while take < rest.len() && (take == 0 || bytes < MOVE_ROUND_BYTES) {
                    bytes += rest[take].encoded_len();
                    take += 1;
                }
                let (chunk, after) = rest.split_at(take);
                stage_entries(&mut round, group, chunk);
                rest = after;
                if rest.is_empty() {
                    round.hard_state(group, &encode_state(&hard_state, &conf_state, conf_index));
                }
                log.write(std::mem::take(&mut round)).map_err(|e| {
                    format!("group {group}: moving its Raft log out of RocksDB: {e}")
                })?;
                if rest.is_empty() {
                    break;
                }
            }
            moved += 1;
            match group.checked_add(1) {
                Some(next) => it.seek(key(next, 0)),
                None => break,
            }
        }
        it.status().map_err(read_error)?;
        if moved > 0 {
            let mut batch = WriteBatch::default();
            batch.delete_range([PREFIX], [PREFIX + 1]);
            let mut options = rocksdb::WriteOptions::default();
            options.set_sync(true);
            db.write_opt(batch, &options)
                .map_err(|e| format!("deleting the Raft log moved out of RocksDB: {e}"))?;
        }
        Ok(moved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64, len: usize) -> Entry {
        Entry {
            index,
            term,
            data: vec![(index % 251) as u8; len],
            ..Default::default()
        }
    }

    fn shared_log(dir: &Path) -> SharedLog {
        Arc::new(Mutex::new(
            SegmentLog::open(&dir.join("raft-log"), 1 << 20).unwrap(),
        ))
    }

    /// Stages `entries` (and a hard state) and writes the round, as the
    /// node loop does.
    fn append(log: &SharedLog, store: &mut LogStore, entries: &[Entry]) {
        let mut round = Round::default();
        let hs = HardState {
            term: entries.last().map_or(1, |e| e.term),
            commit: entries.last().map_or(0, |e| e.index),
            ..Default::default()
        };
        store.stage(&mut round, entries, Some(&hs));
        store.finish_round(&mut round);
        lock(log).write(round).unwrap();
        store.commit_staged();
    }

    fn all(store: &LogStore, low: u64, high: u64) -> raft::Result<Vec<Entry>> {
        store.entries(low, high, None, GetEntriesContext::empty(false))
    }

    /// Entries served from memory equal those read back from the files by
    /// a store opened afresh, through appends, a tail overwritten by a new
    /// leader, eviction past the byte limit, compaction and segment
    /// rotation; the state record round-trips.
    #[test]
    fn recent_entries_read_the_same_as_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let log = shared_log(dir.path());
        let mut store = LogStore::open(log.clone(), 3).unwrap();
        store.bootstrap(&[1, 2, 3]).unwrap();
        let first: Vec<Entry> = (6..=40).map(|i| entry(i, 6, 4096)).collect();
        append(&log, &mut store, &first);
        // A new leader's entries replace the tail from 31.
        let overwrite: Vec<Entry> = (31..=35).map(|i| entry(i, 7, 100)).collect();
        append(&log, &mut store, &overwrite);
        // More than the in-memory limit: the oldest are read from files.
        let big: Vec<Entry> = (36..=200).map(|i| entry(i, 7, 8192)).collect();
        append(&log, &mut store, &big);
        assert!(store.recent.first_index().unwrap() > 36);
        assert!(store.recent.bytes <= RECENT_ENTRIES_MAX_BYTES);
        assert!(lock(&log).segments().len() > 1, "rounds crossed segments");

        let fresh = LogStore::open(log.clone(), 3).unwrap();
        assert!(fresh.recent.first_index().is_none());
        assert_eq!(fresh.hard_state(), store.hard_state());
        assert_eq!(fresh.conf_state().voters, vec![1, 2, 3]);
        for (low, high) in [(6, 201), (30, 37), (150, 201), (199, 200), (200, 201)] {
            let cached = all(&store, low, high).unwrap();
            assert_eq!(cached, all(&fresh, low, high).unwrap(), "{low}..{high}");
            assert_eq!(cached.len() as u64, high - low);
        }
        assert_eq!(all(&store, 33, 34).unwrap()[0].term, 7);
        assert_eq!(fresh.term(33).unwrap(), 7);
        assert_eq!(fresh.term(30).unwrap(), 6);
        assert!(all(&store, 150, 202).is_err());
        // A size limit stops at the first entry past it, from either.
        for s in [&store, &fresh] {
            let limited = s
                .entries(150, 201, 20_000, GetEntriesContext::empty(false))
                .unwrap();
            assert_eq!(limited.len(), 2);
        }

        store.compact(190).unwrap();
        append(&log, &mut store, &[]);
        assert!(matches!(
            all(&store, 150, 201),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        let reopened = LogStore::open(log.clone(), 3).unwrap();
        assert_eq!(reopened.first_index_now(), 191);
        assert_eq!(
            all(&store, 191, 201).unwrap(),
            all(&reopened, 191, 201).unwrap()
        );
    }

    /// A log kept in RocksDB by an older node moves into the segment
    /// files at open, whole, and the RocksDB keys go; a second open finds
    /// nothing left to move.
    #[test]
    fn a_log_kept_in_rocksdb_moves_into_the_segment_files() {
        let dir = tempfile::tempdir().unwrap();
        let db = DB::open_default(dir.path().join("meta")).unwrap();
        let versioned = |body: Vec<u8>| [vec![1u8], body].concat();
        let put = |group: GroupId, kind: u8, body: Vec<u8>| {
            db.put(legacy::key(group, kind), versioned(body)).unwrap()
        };
        let hs = HardState {
            term: 9,
            vote: 2,
            commit: 57,
        };
        let cs = ConfState {
            voters: vec![1, 2, 3],
            ..Default::default()
        };
        put(4, legacy::KIND_HARD_STATE, hs.encode_to_vec());
        put(4, legacy::KIND_CONF_STATE, cs.encode_to_vec());
        put(4, legacy::KIND_CONF_INDEX, 5u64.to_be_bytes().to_vec());
        let truncated = [50u64.to_be_bytes(), 8u64.to_be_bytes()].concat();
        put(4, legacy::KIND_TRUNCATED, truncated);
        let entries: Vec<Entry> = (51..=60).map(|i| entry(i, 9, 300)).collect();
        for e in &entries {
            let mut k = legacy::key(4, legacy::KIND_ENTRY);
            k.extend_from_slice(&e.index.to_be_bytes());
            db.put(k, versioned(e.encode_to_vec())).unwrap();
        }
        // An unrelated key of the store stays.
        db.put(b"o-object", b"kept").unwrap();
        // A group kept before the conf index was: the index is unknown.
        put(6, legacy::KIND_HARD_STATE, hs.encode_to_vec());
        put(6, legacy::KIND_CONF_STATE, cs.encode_to_vec());

        let log = open_node_log(&dir.path().join("raft-log"), &db).unwrap();
        let store = LogStore::open(log.clone(), 4).unwrap();
        assert_eq!(store.hard_state(), &hs);
        assert_eq!(store.conf_state(), &cs);
        assert_eq!(store.conf_index(), 5);
        assert_eq!(
            LogStore::open(log.clone(), 6).unwrap().conf_index(),
            CONF_INDEX_UNKNOWN
        );
        assert_eq!((store.first_index_now(), store.last_index), (51, 60));
        assert_eq!(store.term(50).unwrap(), 8);
        assert_eq!(all(&store, 51, 61).unwrap(), entries);
        assert_eq!(
            stored_groups(&log).unwrap(),
            vec![(4, cs.clone()), (6, cs.clone())]
        );
        let mut left = db.raw_iterator();
        left.seek([b'r']);
        assert!(
            left.key().is_none_or(|k| k[0] != b'r'),
            "the RocksDB log keys are gone"
        );
        assert_eq!(db.get(b"o-object").unwrap().as_deref(), Some(&b"kept"[..]));
        drop(store);
        drop(log);

        // Reopened: the moved log is still there, and nothing moves twice.
        let log = open_node_log(&dir.path().join("raft-log"), &db).unwrap();
        let store = LogStore::open(log, 4).unwrap();
        assert_eq!(all(&store, 51, 61).unwrap(), entries);
        assert_eq!(store.hard_state(), &hs);
    }

    /// A snapshot replaces the log whole: entries past its index go too,
    /// and the state record carries its configuration across a reopen.
    #[test]
    fn a_snapshot_replaces_the_log_and_its_configuration_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let log = shared_log(dir.path());
        let mut store = LogStore::open(log.clone(), 8).unwrap();
        store.bootstrap(&[1, 2, 3]).unwrap();
        append(
            &log,
            &mut store,
            &(6..=20).map(|i| entry(i, 6, 10)).collect::<Vec<_>>(),
        );
        let mut meta = raft::eraftpb::SnapshotMetadata {
            index: 15,
            term: 6,
            ..Default::default()
        };
        let cs = ConfState {
            voters: vec![1, 2, 4],
            learners: vec![5],
            ..Default::default()
        };
        meta.set_conf_state(cs.clone());
        let mut round = Round::default();
        store.apply_snapshot(&mut round, &meta);
        store.finish_round(&mut round);
        lock(&log).write(round).unwrap();
        let reopened = LogStore::open(log.clone(), 8).unwrap();
        assert_eq!(reopened.conf_state(), &cs);
        assert_eq!(reopened.conf_index(), 15);
        assert_eq!((reopened.first_index_now(), reopened.last_index), (16, 15));
        assert_eq!(reopened.term(15).unwrap(), 6);
        assert!(reopened.hard_state().commit >= 15);

        LogStore::destroy(&log, 8).unwrap();
        let gone = LogStore::open(log.clone(), 8).unwrap();
        assert!(!gone.is_initialized());
        assert!(stored_groups(&log).unwrap().is_empty());
    }
}
