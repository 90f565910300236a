//! Node-to-node networking over gRPC (tonic): the Raft transport between
//! node processes and the service that receives it.
//!
//! This module owns connections, streams and encoding; it never interprets
//! a Raft message (the node loop does) and never blocks the node loop: a
//! full queue to a slow or dead peer drops, and Raft retransmits.

pub mod pg_stream;
pub mod raft_transport;
pub mod server;

#[cfg(test)]
mod tests;

/// Code generated from `proto/node.proto`.
pub mod proto {
    tonic::include_proto!("hpchain.node.v1");
}

pub use raft_transport::GrpcTransport;
pub use server::{
    ClusterMapService, HealthService, IntegrityService, NodeService, PlacementGroupService,
    SpaceService,
};
