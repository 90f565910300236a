//! Raft log, hard state and conf state of every group of one RocksDB
//! instance, as raft-rs's [`Storage`].
//!
//! Key layout (all integers big-endian, so a group's keys sort together and
//! entries sort by index):
//!
//! | key | value |
//! |---|---|
//! | `'r' group:u64 0x01` | version `1`, `HardState` (protobuf) |
//! | `'r' group:u64 0x02` | version `1`, `ConfState` (protobuf) |
//! | `'r' group:u64 0x03` | version `1`, truncated index:u64, truncated term:u64 |
//! | `'r' group:u64 0x04` | version `1`, index:u64 of the conf change that made the `0x02` configuration |
//! | `'r' group:u64 0x10 index:u64` | version `1`, `Entry` (protobuf) |
//!
//! A group is bootstrapped with its log starting after index
//! [`BOOTSTRAP_INDEX`] (term [`BOOTSTRAP_TERM`]), as if entries up to it
//! had been compacted. A replica created later, empty, therefore always
//! needs a snapshot, which carries the group's configuration; it can never
//! be fed the log from index 1, which would not (the first configuration
//! is not a log entry).
//!
//! Writes are never made here directly: [`LogStore::stage`] puts them in the
//! node loop's shared write batch, and [`LogStore::commit_staged`] updates
//! the in-memory view once that batch is synced. This module never decides
//! what to write; raft-rs's `Ready` does.

use prost011::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};
use rocksdb::{WriteBatch, DB};
use std::sync::Arc;

use super::GroupId;

const FORMAT_VERSION: u8 = 1;
const KIND_HARD_STATE: u8 = 0x01;
const KIND_CONF_STATE: u8 = 0x02;
const KIND_TRUNCATED: u8 = 0x03;
const KIND_CONF_INDEX: u8 = 0x04;
const KIND_ENTRY: u8 = 0x10;

/// Where a bootstrapped group's log starts (exclusive), and its term.
pub const BOOTSTRAP_INDEX: u64 = 5;
pub const BOOTSTRAP_TERM: u64 = 5;
/// The data of every snapshot this store makes: the state itself is not
/// in the message; the receiver copies it from the sender's replica.
pub const SNAPSHOT_MARKER: &[u8] = b"hpchain.pg-copy.v1";

fn key(group: GroupId, kind: u8) -> Vec<u8> {
    let mut k = Vec::with_capacity(18);
    k.push(b'r');
    k.extend_from_slice(&group.to_be_bytes());
    k.push(kind);
    k
}

fn entry_key(group: GroupId, index: u64) -> Vec<u8> {
    let mut k = key(group, KIND_ENTRY);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

fn versioned(body: Vec<u8>) -> Vec<u8> {
    let mut v = Vec::with_capacity(body.len() + 1);
    v.push(FORMAT_VERSION);
    v.extend_from_slice(&body);
    v
}

fn unversioned<'a>(what: &str, value: &'a [u8]) -> raft::Result<&'a [u8]> {
    match value.split_first() {
        Some((&FORMAT_VERSION, body)) => Ok(body),
        Some((v, _)) => Err(storage_error(format!("{what}: unknown format version {v}"))),
        None => Err(storage_error(format!("{what}: empty value"))),
    }
}

fn storage_error(message: String) -> raft::Error {
    raft::Error::Store(StorageError::Other(message.into()))
}

fn decode<M: prost011::Message + Default>(what: &str, value: &[u8]) -> raft::Result<M> {
    M::decode(unversioned(what, value)?).map_err(|e| storage_error(format!("{what}: {e}")))
}

/// The Raft storage of one group.
pub struct LogStore {
    db: Arc<DB>,
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
    /// Terms of the entries written since open, so that `term` (which
    /// raft-rs calls all the time) does not read and decode an entry that
    /// may hold megabytes of data.
    terms: TermRuns,
    /// The state machine's applied index (set by the node loop): where a
    /// snapshot made now stands.
    applied: u64,
    /// Bytes of entry data appended since the log was last truncated (an
    /// estimate: what remains after a truncation is not counted).
    appended_bytes: u64,
    /// The latest entries, as synced: applying them (raft-rs asks for
    /// committed entries once they left its unstable log) reads them here,
    /// not back from RocksDB.
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
    /// (first index, runs of (start index, term)) of the staged entries.
    terms: Option<(u64, Vec<(u64, u64)>)>,
}

/// Terms of log indexes `floor..=last_index` as runs: each key is the first
/// index of a run of entries with the same term. Empty when `floor` is 0.
#[derive(Default)]
struct TermRuns {
    floor: u64,
    runs: std::collections::BTreeMap<u64, u64>,
}

impl TermRuns {
    fn get(&self, index: u64) -> Option<u64> {
        if self.floor == 0 || index < self.floor {
            return None;
        }
        self.runs.range(..=index).next_back().map(|(_, term)| *term)
    }

    /// Entries from `first` on were replaced by `runs`.
    fn replace_from(&mut self, first: u64, runs: &[(u64, u64)]) {
        if self.floor == 0 || first < self.floor {
            self.runs.clear();
            self.floor = first;
        } else {
            self.runs.split_off(&first);
        }
        for &(start, term) in runs {
            if self.runs.values().next_back() != Some(&term) {
                self.runs.insert(start, term);
            }
        }
    }

    /// Indexes up to `index` are gone.
    fn truncate_to(&mut self, index: u64, last_index: u64) {
        if self.floor == 0 || index < self.floor {
            return;
        }
        let floor = index + 1;
        if floor > last_index {
            *self = TermRuns::default();
            return;
        }
        let term = self.get(floor).expect("floor is inside the cache");
        self.runs = self.runs.split_off(&floor);
        self.runs.insert(floor, term);
        self.floor = floor;
    }
}

impl LogStore {
    /// Opens group `group`'s log from `db`, or an empty one.
    pub fn open(db: Arc<DB>, group: GroupId) -> raft::Result<LogStore> {
        let get = |kind| {
            db.get(key(group, kind))
                .map_err(|e| storage_error(format!("group {group}: read: {e}")))
        };
        let hard_state = match get(KIND_HARD_STATE)? {
            Some(v) => decode("hard state", &v)?,
            None => HardState::default(),
        };
        let conf_state = match get(KIND_CONF_STATE)? {
            Some(v) => decode("conf state", &v)?,
            None => ConfState::default(),
        };
        let conf_index = match get(KIND_CONF_INDEX)? {
            Some(v) => {
                let body = unversioned("conf index", &v)?;
                u64::from_be_bytes(
                    body.try_into()
                        .map_err(|_| storage_error("conf index: bad length".into()))?,
                )
            }
            None => 0,
        };
        let (truncated_index, truncated_term) = match get(KIND_TRUNCATED)? {
            Some(v) => {
                let body = unversioned("truncated state", &v)?;
                if body.len() != 16 {
                    return Err(storage_error("truncated state: bad length".into()));
                }
                (
                    u64::from_be_bytes(body[..8].try_into().expect("8 bytes")),
                    u64::from_be_bytes(body[8..].try_into().expect("8 bytes")),
                )
            }
            None => (0, 0),
        };
        // The last entry: seek to the end of this group's entry range.
        let last_index = {
            let mut last_index = truncated_index;
            let upper = key(group, KIND_ENTRY + 1);
            let mut it = db.raw_iterator();
            it.seek_for_prev(&upper);
            if let Some(k) = it.key() {
                let prefix = key(group, KIND_ENTRY);
                if k.len() == prefix.len() + 8 && k.starts_with(&prefix) {
                    last_index = u64::from_be_bytes(k[prefix.len()..].try_into().expect("8 bytes"));
                }
            }
            it.status()
                .map_err(|e| storage_error(format!("group {group}: scan: {e}")))?;
            last_index
        };
        Ok(LogStore {
            db,
            group,
            hard_state,
            conf_state,
            conf_index,
            truncated_index,
            truncated_term,
            last_index,
            staged: None,
            terms: TermRuns::default(),
            applied: 0,
            appended_bytes: 0,
            recent: RecentEntries::default(),
        })
    }

    /// Every group with Raft state in `db`, with its configuration.
    pub fn initialized_groups(db: &DB) -> raft::Result<Vec<(GroupId, ConfState)>> {
        let mut out = Vec::new();
        let mut it = db.raw_iterator();
        it.seek([b'r']);
        while let Some(k) = it.key() {
            if k.len() < 10 || k[0] != b'r' {
                break;
            }
            let group = u64::from_be_bytes(k[1..9].try_into().expect("8 bytes"));
            if let Some(v) = db
                .get(key(group, KIND_CONF_STATE))
                .map_err(|e| storage_error(format!("group {group}: read: {e}")))?
            {
                let conf: ConfState = decode("conf state", &v)?;
                if !conf.voters.is_empty() || !conf.learners.is_empty() {
                    out.push((group, conf));
                }
            }
            // Skip the rest of this group's keys.
            match group.checked_add(1) {
                Some(next) => it.seek(key(next, 0)),
                None => break,
            }
        }
        it.status()
            .map_err(|e| storage_error(format!("scan groups: {e}")))?;
        Ok(out)
    }

    /// Deletes every key of group `group` (its replica left the group),
    /// synced.
    pub fn destroy(db: &DB, group: GroupId) -> raft::Result<()> {
        let mut batch = WriteBatch::default();
        batch.delete_range(key(group, 0), key(group, u8::MAX));
        batch.delete(key(group, u8::MAX));
        let mut options = rocksdb::WriteOptions::default();
        options.set_sync(true);
        db.write_opt(batch, &options)
            .map_err(|e| storage_error(format!("group {group}: destroy: {e}")))
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
    /// log restarting after its index, its configuration adopted. Written
    /// synced, with a hard state that covers the snapshot.
    pub fn apply_snapshot(&mut self, meta: &raft::eraftpb::SnapshotMetadata) -> raft::Result<()> {
        let mut batch = WriteBatch::default();
        batch.delete_range(entry_key(self.group, 0), entry_key(self.group, u64::MAX));
        batch.delete(entry_key(self.group, u64::MAX));
        let mut body = meta.index.to_be_bytes().to_vec();
        body.extend_from_slice(&meta.term.to_be_bytes());
        batch.put(key(self.group, KIND_TRUNCATED), versioned(body));
        let conf_state = meta.get_conf_state().clone();
        batch.put(
            key(self.group, KIND_CONF_STATE),
            versioned(conf_state.encode_to_vec()),
        );
        batch.put(
            key(self.group, KIND_CONF_INDEX),
            versioned(meta.index.to_be_bytes().to_vec()),
        );
        let mut hs = self.hard_state.clone();
        hs.term = hs.term.max(meta.term);
        hs.commit = hs.commit.max(meta.index);
        batch.put(
            key(self.group, KIND_HARD_STATE),
            versioned(hs.encode_to_vec()),
        );
        let mut options = rocksdb::WriteOptions::default();
        options.set_sync(true);
        self.db
            .write_opt(batch, &options)
            .map_err(|e| storage_error(format!("group {}: install snapshot: {e}", self.group)))?;
        self.hard_state = hs;
        self.conf_state = conf_state;
        self.conf_index = meta.index;
        self.truncated_index = meta.index;
        self.truncated_term = meta.term;
        self.last_index = meta.index;
        self.terms = TermRuns::default();
        self.applied = self.applied.max(meta.index);
        self.appended_bytes = 0;
        self.recent.clear();
        Ok(())
    }

    /// Whether this group has any Raft state on disk.
    pub fn is_initialized(&self) -> bool {
        !self.conf_state.voters.is_empty()
    }

    /// Stages a fresh group's first configuration (all initial replicas of
    /// a new PG start from the same one, so no snapshot is needed), with
    /// the log starting after [`BOOTSTRAP_INDEX`].
    pub fn stage_bootstrap(&mut self, batch: &mut WriteBatch, voters: &[u64]) {
        self.conf_state = ConfState {
            voters: voters.to_vec(),
            ..Default::default()
        };
        batch.put(
            key(self.group, KIND_CONF_STATE),
            versioned(self.conf_state.encode_to_vec()),
        );
        let mut body = BOOTSTRAP_INDEX.to_be_bytes().to_vec();
        body.extend_from_slice(&BOOTSTRAP_TERM.to_be_bytes());
        batch.put(key(self.group, KIND_TRUNCATED), versioned(body));
        self.hard_state = HardState {
            term: BOOTSTRAP_TERM,
            commit: BOOTSTRAP_INDEX,
            ..Default::default()
        };
        batch.put(
            key(self.group, KIND_HARD_STATE),
            versioned(self.hard_state.encode_to_vec()),
        );
        self.truncated_index = BOOTSTRAP_INDEX;
        self.truncated_term = BOOTSTRAP_TERM;
        self.last_index = BOOTSTRAP_INDEX;
        self.recent.clear();
        self.applied = BOOTSTRAP_INDEX;
    }

    /// Stages a conf state change made by entry `index` (after
    /// `apply_conf_change`).
    pub fn stage_conf_state(&mut self, batch: &mut WriteBatch, index: u64, conf_state: ConfState) {
        batch.put(
            key(self.group, KIND_CONF_STATE),
            versioned(conf_state.encode_to_vec()),
        );
        batch.put(
            key(self.group, KIND_CONF_INDEX),
            versioned(index.to_be_bytes().to_vec()),
        );
        self.conf_state = conf_state;
        self.conf_index = index;
    }

    /// The index of the entry (or snapshot) that made the configuration.
    pub fn conf_index(&self) -> u64 {
        self.conf_index
    }

    /// Stages new entries (replacing any conflicting suffix) and a new hard
    /// state into the node loop's batch.
    pub fn stage(
        &mut self,
        batch: &mut WriteBatch,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) {
        let mut staged = Staged {
            entries: entries.to_vec(),
            hard_state: None,
            last_index: None,
            terms: None,
        };
        if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
            let mut runs: Vec<(u64, u64)> = Vec::new();
            for e in entries {
                if runs.last().map(|r| r.1) != Some(e.term) {
                    runs.push((e.index, e.term));
                }
            }
            staged.terms = Some((first.index, runs));
            for e in entries {
                batch.put(entry_key(self.group, e.index), versioned(e.encode_to_vec()));
            }
            // A new leader may overwrite our tail: drop entries past it.
            if last.index < self.last_index {
                batch.delete_range(
                    entry_key(self.group, last.index + 1),
                    entry_key(self.group, self.last_index + 1),
                );
            }
            debug_assert!(first.index > self.truncated_index);
            staged.last_index = Some(last.index);
        }
        if let Some(hs) = hard_state {
            batch.put(
                key(self.group, KIND_HARD_STATE),
                versioned(hs.encode_to_vec()),
            );
            staged.hard_state = Some(hs.clone());
        }
        self.staged = Some(staged);
    }

    /// Stages only a commit index change (from a `LightReady`).
    pub fn stage_commit(&mut self, batch: &mut WriteBatch, commit: u64) {
        let mut hs = self.hard_state.clone();
        hs.commit = commit;
        batch.put(
            key(self.group, KIND_HARD_STATE),
            versioned(hs.encode_to_vec()),
        );
        self.hard_state = hs;
    }

    /// Makes staged writes visible to raft-rs; call after the batch synced.
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
            if let Some((first, runs)) = staged.terms {
                self.terms.replace_from(first, &runs);
            }
        }
    }

    /// Drops log entries up to and including `index` (which must be applied
    /// everywhere that needs it: the caller compacts only to what every
    /// replica has). Not synced: the next synced write of the node makes
    /// it durable, and until then a crash only brings back entries the
    /// state machine has durably applied.
    pub fn compact(&mut self, index: u64) -> raft::Result<()> {
        if index <= self.truncated_index {
            return Ok(());
        }
        let index = index.min(self.last_index);
        let term = self.term(index)?;
        let mut batch = WriteBatch::default();
        let mut body = index.to_be_bytes().to_vec();
        body.extend_from_slice(&term.to_be_bytes());
        batch.put(key(self.group, KIND_TRUNCATED), versioned(body));
        batch.delete_range(
            entry_key(self.group, self.truncated_index + 1),
            entry_key(self.group, index + 1),
        );
        self.db
            .write(batch)
            .map_err(|e| storage_error(format!("group {}: compact: {e}", self.group)))?;
        self.truncated_index = index;
        self.truncated_term = term;
        self.terms.truncate_to(index, self.last_index);
        self.recent.truncate_to(index);
        self.appended_bytes = 0;
        Ok(())
    }

    /// Bytes of entry data appended since the last truncation.
    pub fn appended_bytes(&self) -> u64 {
        self.appended_bytes
    }

    /// The first index still in the log.
    pub fn first_index_now(&self) -> u64 {
        self.truncated_index + 1
    }

    /// The hard state as last made durable.
    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    fn read_entry(&self, index: u64) -> raft::Result<Entry> {
        match self.db.get(entry_key(self.group, index)) {
            Ok(Some(v)) => decode("entry", &v),
            Ok(None) => Err(storage_error(format!(
                "group {}: entry {index} missing in [{}, {}]",
                self.group,
                self.truncated_index + 1,
                self.last_index
            ))),
            Err(e) => Err(storage_error(format!(
                "group {}: read entry {index}: {e}",
                self.group
            ))),
        }
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
        // Point lookups, not an iterator: the entries asked for are almost
        // always in the memtable, where a get ends, while a seek also
        // visits every SST file of the range and decompresses the blocks
        // of truncated (range-deleted) entries it must skip.
        const CHUNK: u64 = 64;
        let mut at = low;
        'chunks: while at < high {
            let end = high.min(at + CHUNK);
            let keys: Vec<Vec<u8>> = (at..end).map(|i| entry_key(self.group, i)).collect();
            for (index, value) in (at..end).zip(self.db.multi_get(keys)) {
                let value = match value {
                    Ok(Some(v)) => v,
                    Ok(None) => {
                        return Err(storage_error(format!(
                            "group {}: entry {index} missing",
                            self.group
                        )))
                    }
                    Err(e) => {
                        return Err(storage_error(format!(
                            "group {}: read entry {index}: {e}",
                            self.group
                        )))
                    }
                };
                let entry: Entry = decode("entry", &value)?;
                size += entry.encoded_len() as u64;
                if !out.is_empty() && size > max_size {
                    break 'chunks;
                }
                out.push(entry);
            }
            at = end;
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
        if let Some(term) = self.terms.get(index) {
            return Ok(term);
        }
        Ok(self.read_entry(index)?.term)
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

#[cfg(test)]
mod term_run_tests {
    use super::TermRuns;

    #[test]
    fn runs_follow_appends_overwrites_and_compaction() {
        let mut t = TermRuns::default();
        assert_eq!(t.get(1), None);
        t.replace_from(5, &[(5, 1), (8, 2)]); // 5..=7 term 1, 8.. term 2
        assert_eq!(
            (t.get(4), t.get(5), t.get(7), t.get(8)),
            (None, Some(1), Some(1), Some(2))
        );
        // A new leader overwrites from 7 with term 3.
        t.replace_from(7, &[(7, 3)]);
        assert_eq!((t.get(6), t.get(7), t.get(9)), (Some(1), Some(3), Some(3)));
        // Appending in the same term adds no run.
        t.replace_from(10, &[(10, 3)]);
        assert_eq!(t.runs.len(), 2);
        // Compaction to 7 keeps 8.. known.
        t.truncate_to(7, 10);
        assert_eq!((t.get(7), t.get(8), t.get(10)), (None, Some(3), Some(3)));
        // Entries before the floor rewritten: the cache starts over there.
        t.replace_from(2, &[(2, 4)]);
        assert_eq!((t.get(2), t.get(10)), (Some(4), Some(4)));
        t.truncate_to(20, 10);
        assert_eq!(t.get(10), None);
    }
}

#[cfg(test)]
mod recent_entries_tests {
    use super::*;

    fn entry(index: u64, term: u64, len: usize) -> Entry {
        Entry {
            index,
            term,
            data: vec![(index % 251) as u8; len],
            ..Default::default()
        }
    }

    fn append(db: &DB, store: &mut LogStore, entries: &[Entry]) {
        let mut batch = WriteBatch::default();
        store.stage(&mut batch, entries, None);
        db.write(batch).unwrap();
        store.commit_staged();
    }

    fn all(store: &LogStore, low: u64, high: u64) -> raft::Result<Vec<Entry>> {
        store.entries(low, high, None, GetEntriesContext::empty(false))
    }

    /// Entries served from memory equal those read back from RocksDB by a
    /// store opened afresh, through appends, a tail overwritten by a new
    /// leader, eviction past the byte limit and compaction.
    #[test]
    fn recent_entries_read_the_same_as_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(DB::open_default(dir.path()).unwrap());
        let mut store = LogStore::open(db.clone(), 3).unwrap();
        let first: Vec<Entry> = (1..=40).map(|i| entry(i, 5, 4096)).collect();
        append(&db, &mut store, &first);
        // A new leader's entries replace the tail from 31.
        let overwrite: Vec<Entry> = (31..=35).map(|i| entry(i, 6, 100)).collect();
        append(&db, &mut store, &overwrite);
        // More than the in-memory limit: the oldest fall back to RocksDB.
        let big: Vec<Entry> = (36..=200).map(|i| entry(i, 6, 8192)).collect();
        append(&db, &mut store, &big);
        assert!(store.recent.first_index().unwrap() > 36);
        assert!(store.recent.bytes <= RECENT_ENTRIES_MAX_BYTES);

        let fresh = LogStore::open(db.clone(), 3).unwrap();
        assert!(fresh.recent.first_index().is_none());
        for (low, high) in [(1, 201), (30, 37), (150, 201), (199, 200), (200, 201)] {
            let cached = all(&store, low, high).unwrap();
            assert_eq!(cached, all(&fresh, low, high).unwrap(), "{low}..{high}");
            assert_eq!(cached.len() as u64, high - low);
        }
        assert_eq!(all(&store, 33, 34).unwrap()[0].term, 6);
        assert!(all(&store, 150, 202).is_err());
        // A size limit stops at the first entry past it, as from RocksDB.
        let limited = store
            .entries(150, 201, 20_000, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(limited.len(), 2);

        store.compact(190).unwrap();
        assert!(matches!(
            all(&store, 150, 201),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        assert_eq!(
            all(&store, 191, 201).unwrap(),
            all(&fresh, 191, 201).unwrap()
        );
    }
}
