//! Volumes as byte ranges: the volume client splits reads, writes and
//! discards into per-object pieces, sends each to its PG's leader, and
//! retries through leader changes. The API, the iSCSI target and the
//! benchmarks all do volume I/O through [`client::VolumeClient`].

pub mod bench;
pub mod client;
pub mod qos;

pub use client::{DigestsNotTaken, DigestsTaken, VolumeClient, VolumeError, IO_MAX_BYTES};
