//! hpchain-engine: the core of the `hpchain node` daemon.
//!
//! - [`replication`]: each placement group is a Raft group (raft-rs); one
//!   loop per node batches all groups' log writes and messages.
//! - [`cluster`]: the cluster map (nodes, pools, volumes, epoch) as the
//!   state machine of Raft group 0.
//! - [`net`]: node-to-node gRPC (tonic), carrying Raft between processes.

pub mod cluster;
pub mod net;
pub mod replication;
