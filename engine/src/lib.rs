//! hpchain-engine: the core of the `hpchain node` daemon.
//!
//! - [`replication`]: each placement group is a Raft group (raft-rs); one
//!   loop per node batches all groups' log writes and messages.
//! - [`cluster`]: the cluster map (nodes, pools, volumes, epoch) as the
//!   state machine of Raft group 0.
//! - [`net`]: node-to-node gRPC (tonic), carrying Raft between processes.
//! - [`store`]: the object store of one disk (files + crc32c metadata in RocksDB).
//! - [`pg`]: placement groups: replicated object operations over a disk backend.
//! - [`integrity`]: corrupt blocks found (reads, scrub) and repaired from a replica.
//! - [`volume`]: the volume client: byte-range I/O routed to PG leaders.
//! - [`ledger`]: the HP chain in the node: block production, gossip, audit records.
//! - [`log_gate`]: log lines that would repeat under load, at most once a period.
//! - [`api`]: the HTTP/JSON management API.
//! - [`daemon`]: start-up and shutdown of one `hpchain node` process.

// The OpenAPI document is one `json!` literal, deeper than the default 128.
#![recursion_limit = "256"]

pub mod api;
pub mod cluster;
pub mod daemon;
pub mod integrity;
pub mod ledger;
pub mod log_gate;
pub mod net;
pub mod pg;
pub mod recovery;
pub mod replication;
pub mod store;
#[cfg(test)]
mod test_rng;
pub mod volume;
