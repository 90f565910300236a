//! The cluster map: nodes, disks, pools and volumes, with an epoch that
//! every committed change bumps.
//!
//! The map is the state machine of one Raft group (group 0) run by the
//! monitor nodes. This module owns the map's data, the commands that change
//! it and their validation ([`map`]), and its persistence as a Raft state
//! machine ([`machine`]). It never does I/O on volumes and never decides
//! placement itself: [`map::ClusterMapState::placement_map`] hands the
//! placement crate a map to compute with.

pub mod client;
pub mod health;
pub mod machine;
pub mod map;

pub use client::{MapClient, MapClientError};
pub use health::{HealthPolicy, Liveness};
pub use machine::{MapMachine, Outcome};
pub use map::{ClusterMapState, Command, MapError, NodeInfo, Pool, Volume};

/// The Raft group id of the cluster map.
pub const MAP_GROUP: u64 = 0;
