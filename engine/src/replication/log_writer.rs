//! The node's log thread: writes the rounds the node loop builds, in the
//! order given, each with its own fdatasync made without holding the log.
//!
//! The loop hands a round over and goes on: it takes new messages and
//! proposals, sends leaders' appends, and builds the next round while the
//! disk syncs this one (raft-rs's asynchronous persistence). What needs
//! the round durable (raft-rs's `on_persist_ready`, and the messages a
//! follower may send only after its write) waits for [`Written`].

use crossbeam_channel::{Receiver, Sender};
use std::thread::JoinHandle;

use super::log_store::{lock, SharedLog};
use super::segment_log::{Round, SegmentLogError};
use super::NodeId;

/// A round is written and synced (or failed: the log is then poisoned).
#[derive(Debug)]
pub struct Written {
    pub number: u64,
    pub result: Result<(), String>,
}

/// The log thread of one node; dropping it waits for the rounds handed
/// over to be written.
pub struct LogWriter {
    jobs: Option<Sender<(u64, Round)>>,
    written: Receiver<Written>,
    thread: Option<JoinHandle<()>>,
}

impl LogWriter {
    pub fn spawn(node_id: NodeId, log: SharedLog) -> std::io::Result<LogWriter> {
        let (jobs, rounds) = crossbeam_channel::unbounded::<(u64, Round)>();
        let (done, written) = crossbeam_channel::unbounded();
        let thread = std::thread::Builder::new()
            .name(format!("raft-log-{node_id}"))
            .spawn(move || {
                for (number, round) in rounds {
                    let result = write(&log, round).map_err(|e| e.to_string());
                    if done.send(Written { number, result }).is_err() {
                        break;
                    }
                }
            })?;
        Ok(LogWriter {
            jobs: Some(jobs),
            written,
            thread: Some(thread),
        })
    }

    /// Hands round `number` over; [`LogWriter::written`] reports it.
    pub fn submit(&self, number: u64, round: Round) {
        if let Some(jobs) = &self.jobs {
            // Fails only once the thread is gone, which `written` shows.
            let _ = jobs.send((number, round));
        }
    }

    /// Where each round's outcome arrives, in the order handed over.
    pub fn written(&self) -> &Receiver<Written> {
        &self.written
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Writes `round` under the log's lock, syncs it without the lock (readers
/// of entries and terms are not held up by the disk), then finishes it.
fn write(log: &SharedLog, round: Round) -> Result<(), SegmentLogError> {
    let Some(unsynced) = lock(log).write_unsynced(round)? else {
        return Ok(());
    };
    let sync = unsynced.sync();
    lock(log).synced(sync)
}
