//! Data integrity: blocks whose bytes no longer match the crc32c recorded
//! for them (bit rot, a bad sector, a stray write behind the engine's
//! back) are found and rewritten from another replica of their PG.
//!
//! - [`repair`]: this node's side. Read repair (a linearizable read that
//!   meets a corrupt block on the leader repairs it and reads again), the
//!   repair of every bad block of an object on one of this node's disks,
//!   and the raw block copies this node serves to the other replicas.
//! - [`scrub`]: the volume-wide walk behind `POST /v1/volumes/{name}/scrub`:
//!   every replica of every object checks every block on its own disk and
//!   repairs what is bad.
//!
//! The safety rule, everywhere: a replica rewrites a block only with bytes
//! whose crc32c equals the one ITS OWN metadata recorded for that block,
//! under the disk store's apply lock (`store/integrity.rs`), and a copy
//! is asked for only from a replica that has applied at least the asker's
//! applied index. A lagging, newer or equally corrupt copy is refused, so
//! repair can restore a block but never change what it holds. This module
//! never decides what a block should hold and never changes a crc record.

pub mod repair;
pub mod scrub;

pub use repair::Repairer;
pub use scrub::ScrubStep;

/// A version's name in reports: `head` or `clone@SEQ`.
pub fn version_name(clone_seq: Option<u64>) -> String {
    match clone_seq {
        None => "head".into(),
        Some(seq) => format!("clone@{seq}"),
    }
}
