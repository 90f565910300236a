//! Errors of map building and of placement.
//!
//! Every variant names the thing at fault and says what would fix it; each
//! has a stable `code()` so the management API can report it unchanged.

use crate::DiskId;

/// A cluster map that cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MapError {
    /// The map declares no bucket types; the first type names the leaves.
    #[error("the map declares no types: list them from the leaf up, e.g. types = [\"disk\", \"host\", \"root\"]")]
    NoTypes,
    /// A type name appears twice in `types`.
    #[error("type {0:?} is declared twice in `types`; remove the duplicate")]
    DuplicateType(String),
    /// A bucket, disk or rule refers to a type that `types` does not list.
    #[error("{owner} uses type {type_name:?}, which is not in `types`; add it or fix the name")]
    UnknownType { owner: String, type_name: String },
    /// A bucket has the leaf type, which only disks may have.
    #[error("bucket {bucket:?} has the leaf type {type_name:?}; declare it as a disk or give it a bucket type")]
    BucketHasLeafType { bucket: String, type_name: String },
    /// Two buckets or disks share a name.
    #[error("the name {0:?} is used twice; bucket and disk names must be unique")]
    DuplicateName(String),
    /// Two disks share an id.
    #[error("disk id {0} is used twice; disk ids must be unique")]
    DuplicateDiskId(u32),
    /// A bucket or disk names a parent that does not exist.
    #[error("{child:?} names parent {parent:?}, which is not a bucket in this map")]
    UnknownParent { child: String, parent: String },
    /// A parent's type is not above its child's type.
    #[error("{child:?} ({child_type}) cannot sit under {parent:?} ({parent_type}): a parent's type must come later in `types`")]
    ParentTypeNotAbove {
        child: String,
        child_type: String,
        parent: String,
        parent_type: String,
    },
    /// A disk is not under any bucket.
    #[error("disk {0:?} has no parent bucket; every disk must sit in a bucket")]
    OrphanDisk(String),
    /// A weight is negative, not a number, or too large for 16.16 fixed point.
    #[error("{item:?} has weight {weight}, which is not in [0, 65535]; use a non-negative weight (1.0 per TiB is the convention)")]
    BadWeight { item: String, weight: f64 },
    /// A rule names a root that is not a bucket.
    #[error("rule {rule:?} takes root {root:?}, which is not a bucket in this map")]
    UnknownRoot { rule: String, root: String },
    /// A rule's failure domain type is not below its root's type.
    #[error("rule {rule:?} spreads over {domain_type:?}, which is not below its root {root:?} ({root_type}); choose a lower type")]
    DomainNotBelowRoot {
        rule: String,
        domain_type: String,
        root: String,
        root_type: String,
    },
    /// A disk under a rule's root has no ancestor of the rule's failure domain type.
    #[error("disk {disk:?} under root {root:?} has no {domain_type:?} ancestor, so rule {rule:?} cannot tell its failure domain; put it under a {domain_type:?} bucket")]
    NoDomainAncestor {
        rule: String,
        disk: String,
        root: String,
        domain_type: String,
    },
    /// Two rules share a name.
    #[error("rule {0:?} is declared twice")]
    DuplicateRule(String),
    /// The map file could not be parsed.
    #[error("cannot parse the map file: {0}")]
    Parse(String),
}

impl MapError {
    /// A stable, machine-readable code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            MapError::NoTypes => "map.no_types",
            MapError::DuplicateType(_) => "map.duplicate_type",
            MapError::UnknownType { .. } => "map.unknown_type",
            MapError::BucketHasLeafType { .. } => "map.bucket_has_leaf_type",
            MapError::DuplicateName(_) => "map.duplicate_name",
            MapError::DuplicateDiskId(_) => "map.duplicate_disk_id",
            MapError::UnknownParent { .. } => "map.unknown_parent",
            MapError::ParentTypeNotAbove { .. } => "map.parent_type_not_above",
            MapError::OrphanDisk(_) => "map.orphan_disk",
            MapError::BadWeight { .. } => "map.bad_weight",
            MapError::UnknownRoot { .. } => "map.unknown_root",
            MapError::DomainNotBelowRoot { .. } => "map.domain_not_below_root",
            MapError::NoDomainAncestor { .. } => "map.no_domain_ancestor",
            MapError::DuplicateRule(_) => "map.duplicate_rule",
            MapError::Parse(_) => "map.parse",
        }
    }
}

/// A placement request that cannot be met.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// The rule is not in the map.
    #[error("no rule named {0:?} in the cluster map; list rules with `hpchain-placement rules`")]
    UnknownRule(String),
    /// The rule's root holds no disks at all.
    #[error("rule {rule:?}: root {root:?} holds no disks; add disks under it")]
    EmptyBucket { rule: String, root: String },
    /// Every disk under the rule's root has weight zero.
    #[error("rule {rule:?}: root {root:?} has total weight zero; give its disks a weight")]
    ZeroWeight { rule: String, root: String },
    /// Fewer usable failure domains than replicas. `partial` holds what
    /// could be placed, slot by slot, so a caller may run degraded.
    #[error("rule {rule:?} needs {wanted} distinct {domain_type} domains but only {available} have an in disk of non-zero weight (short by {}); add {domain_type}s, mark disks in, or lower the pool size", wanted - available)]
    Shortfall {
        rule: String,
        domain_type: String,
        wanted: usize,
        available: usize,
        partial: Vec<Option<DiskId>>,
    },
}

impl PlacementError {
    /// A stable, machine-readable code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            PlacementError::UnknownRule(_) => "placement.unknown_rule",
            PlacementError::EmptyBucket { .. } => "placement.empty_bucket",
            PlacementError::ZeroWeight { .. } => "placement.zero_weight",
            PlacementError::Shortfall { .. } => "placement.shortfall",
        }
    }
}
