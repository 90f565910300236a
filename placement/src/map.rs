//! The cluster map: a typed hierarchy of buckets with weighted disks at the
//! leaves, and the rules that place data over it.
//!
//! A [`MapSpec`] is the human-editable description (TOML or JSON, or built
//! in code); [`ClusterMap::from_spec`] checks it and compiles every rule
//! into a flat table of the leaves under its root, grouped by failure
//! domain, which is all that placement reads on its hot path. This module
//! never does I/O beyond parsing a string it is given.

use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

use crate::error::MapError;
use crate::DiskId;

/// One weight unit (1.0) in 16.16 fixed point.
pub const WEIGHT_ONE: u32 = 0x1_0000;

/// How a rule fills the slots of a placement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Replicated pools: the replicas form a set, listed best first; when a
    /// disk is out the others close up.
    #[default]
    Firstn,
    /// Erasure-coded pools: slot `i` holds shard `i`; a failed slot is
    /// refilled in place and the other slots keep their disks.
    Indep,
}

/// A placement rule: take `root`, pick distinct buckets of type
/// `failure_domain` under it, and one disk in each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub name: String,
    pub root: String,
    pub failure_domain: String,
    #[serde(default)]
    pub mode: Mode,
}

impl Rule {
    /// A replicated (firstn) rule.
    pub fn replicated(name: &str, root: &str, failure_domain: &str) -> Rule {
        Rule {
            name: name.to_string(),
            root: root.to_string(),
            failure_domain: failure_domain.to_string(),
            mode: Mode::Firstn,
        }
    }

    /// A position-keeping (indep) rule, for erasure coding.
    pub fn indep(name: &str, root: &str, failure_domain: &str) -> Rule {
        Rule {
            mode: Mode::Indep,
            ..Rule::replicated(name, root, failure_domain)
        }
    }
}

/// A bucket as written in a map file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    /// `None` for a root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

fn yes() -> bool {
    true
}

/// A disk as written in a map file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskSpec {
    pub id: u32,
    pub name: String,
    pub parent: String,
    /// Relative capacity; 1.0 per TiB by convention. Zero keeps the disk in
    /// the map but gives it no data.
    pub weight: f64,
    /// Reachable now. Placement ignores it: a disk that is down keeps its
    /// data until it is marked out, so a restart moves nothing.
    #[serde(default = "yes")]
    pub up: bool,
    /// Takes data. An out disk is skipped and its slots go elsewhere.
    #[serde(default = "yes", rename = "in")]
    pub is_in: bool,
}

/// The editable description of a cluster map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MapSpec {
    /// Type names from the leaf up: `types[0]` is the disk type.
    pub types: Vec<String>,
    #[serde(default)]
    pub buckets: Vec<BucketSpec>,
    #[serde(default)]
    pub disks: Vec<DiskSpec>,
    #[serde(default)]
    pub rules: Vec<Rule>,
}

impl MapSpec {
    /// An empty map with these types, leaf type first.
    pub fn new(types: &[&str]) -> MapSpec {
        MapSpec {
            types: types.iter().map(|t| t.to_string()).collect(),
            buckets: Vec::new(),
            disks: Vec::new(),
            rules: Vec::new(),
        }
    }

    /// Adds a bucket; `parent` is `None` for a root.
    pub fn bucket(&mut self, name: &str, type_name: &str, parent: Option<&str>) -> &mut Self {
        self.buckets.push(BucketSpec {
            name: name.to_string(),
            type_name: type_name.to_string(),
            parent: parent.map(str::to_string),
        });
        self
    }

    /// Adds an in, up disk.
    pub fn disk(&mut self, id: u32, name: &str, parent: &str, weight: f64) -> &mut Self {
        self.disks.push(DiskSpec {
            id,
            name: name.to_string(),
            parent: parent.to_string(),
            weight,
            up: true,
            is_in: true,
        });
        self
    }

    /// Adds a rule.
    pub fn rule(&mut self, rule: Rule) -> &mut Self {
        self.rules.push(rule);
        self
    }

    /// The disk with this id, to change its weight or state.
    pub fn disk_mut(&mut self, id: u32) -> Option<&mut DiskSpec> {
        self.disks.iter_mut().find(|d| d.id == id)
    }

    /// Removes the disk with this id; returns whether it was there.
    pub fn remove_disk(&mut self, id: u32) -> bool {
        let before = self.disks.len();
        self.disks.retain(|d| d.id != id);
        before != self.disks.len()
    }

    /// Parses a TOML map file.
    pub fn from_toml(text: &str) -> Result<MapSpec, MapError> {
        toml::from_str(text).map_err(|e| MapError::Parse(e.to_string()))
    }

    /// Parses a JSON map file.
    pub fn from_json(text: &str) -> Result<MapSpec, MapError> {
        serde_json::from_str(text).map_err(|e| MapError::Parse(e.to_string()))
    }

    /// Parses a map file, JSON if it starts with `{`, TOML otherwise.
    pub fn parse(text: &str) -> Result<MapSpec, MapError> {
        if text.trim_start().starts_with('{') {
            MapSpec::from_json(text)
        } else {
            MapSpec::from_toml(text)
        }
    }

    /// This map as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a MapSpec always serializes")
    }
}

/// A checked bucket.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    pub name: String,
    pub type_index: usize,
    pub parent: Option<usize>,
    pub child_buckets: Vec<usize>,
    pub child_disks: Vec<usize>,
    /// Sum of the weights of every disk below, 16.16.
    pub weight: u64,
}

/// A checked disk.
#[derive(Debug, Clone)]
pub(crate) struct Disk {
    pub id: DiskId,
    pub name: String,
    pub parent: usize,
    /// 16.16 fixed point.
    pub weight: u32,
    pub up: bool,
    pub is_in: bool,
}

/// A leaf as placement sees it: weight is never zero here.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Leaf {
    pub id: u32,
    pub weight: f64,
    pub domain: u32,
    pub is_in: bool,
}

/// A rule compiled against the map: the leaves under its root with non-zero
/// weight, contiguous by failure domain.
#[derive(Debug, Clone)]
pub(crate) struct CompiledRule {
    pub rule: Rule,
    pub root: usize,
    pub domain_type: usize,
    pub leaves: Vec<Leaf>,
    /// `leaves[domains[d].0..domains[d].1]` are the leaves of domain `d`.
    pub domains: Vec<(u32, u32)>,
    /// Domains with at least one in leaf.
    pub usable_domains: usize,
    pub disks_under_root: usize,
}

/// A checked, compiled cluster map. Cheap to share; immutable.
#[derive(Debug, Clone)]
pub struct ClusterMap {
    spec: MapSpec,
    pub(crate) buckets: Vec<Bucket>,
    pub(crate) disks: Vec<Disk>,
    pub(crate) rules: Vec<CompiledRule>,
}

fn weight_fixed(item: &str, weight: f64) -> Result<u32, MapError> {
    if !(0.0..=65535.0).contains(&weight) {
        return Err(MapError::BadWeight {
            item: item.to_string(),
            weight,
        });
    }
    Ok((weight * f64::from(WEIGHT_ONE)).round() as u32)
}

impl ClusterMap {
    /// Checks a spec and compiles its rules.
    pub fn from_spec(spec: MapSpec) -> Result<ClusterMap, MapError> {
        if spec.types.is_empty() {
            return Err(MapError::NoTypes);
        }
        let mut type_index = HashMap::new();
        for (i, t) in spec.types.iter().enumerate() {
            if type_index.insert(t.as_str(), i).is_some() {
                return Err(MapError::DuplicateType(t.clone()));
            }
        }
        let type_of = |owner: &str, name: &str| {
            type_index
                .get(name)
                .copied()
                .ok_or_else(|| MapError::UnknownType {
                    owner: owner.to_string(),
                    type_name: name.to_string(),
                })
        };

        let mut names = HashSet::new();
        let mut bucket_index = HashMap::new();
        let mut buckets = Vec::with_capacity(spec.buckets.len());
        for b in &spec.buckets {
            if !names.insert(b.name.as_str()) {
                return Err(MapError::DuplicateName(b.name.clone()));
            }
            let type_index = type_of(&format!("bucket {:?}", b.name), &b.type_name)?;
            if type_index == 0 {
                return Err(MapError::BucketHasLeafType {
                    bucket: b.name.clone(),
                    type_name: b.type_name.clone(),
                });
            }
            bucket_index.insert(b.name.as_str(), buckets.len());
            buckets.push(Bucket {
                name: b.name.clone(),
                type_index,
                parent: None,
                child_buckets: Vec::new(),
                child_disks: Vec::new(),
                weight: 0,
            });
        }
        let parent_of = |child: &str, parent: &str| {
            bucket_index
                .get(parent)
                .copied()
                .ok_or_else(|| MapError::UnknownParent {
                    child: child.to_string(),
                    parent: parent.to_string(),
                })
        };
        let check_above = |buckets: &[Bucket], child: &str, child_type: usize, parent: usize| {
            if buckets[parent].type_index <= child_type {
                return Err(MapError::ParentTypeNotAbove {
                    child: child.to_string(),
                    child_type: spec.types[child_type].clone(),
                    parent: buckets[parent].name.clone(),
                    parent_type: spec.types[buckets[parent].type_index].clone(),
                });
            }
            Ok(())
        };
        for (i, b) in spec.buckets.iter().enumerate() {
            if let Some(parent_name) = &b.parent {
                let parent = parent_of(&b.name, parent_name)?;
                check_above(&buckets, &b.name, buckets[i].type_index, parent)?;
                buckets[i].parent = Some(parent);
                buckets[parent].child_buckets.push(i);
            }
        }

        let mut ids = HashSet::new();
        let mut disks = Vec::with_capacity(spec.disks.len());
        for d in &spec.disks {
            if !names.insert(d.name.as_str()) {
                return Err(MapError::DuplicateName(d.name.clone()));
            }
            if !ids.insert(d.id) {
                return Err(MapError::DuplicateDiskId(d.id));
            }
            if d.parent.is_empty() {
                return Err(MapError::OrphanDisk(d.name.clone()));
            }
            let parent = parent_of(&d.name, &d.parent)?;
            check_above(&buckets, &d.name, 0, parent)?;
            let weight = weight_fixed(&d.name, d.weight)?;
            buckets[parent].child_disks.push(disks.len());
            let mut ancestor = Some(parent);
            while let Some(a) = ancestor {
                buckets[a].weight += u64::from(weight);
                ancestor = buckets[a].parent;
            }
            disks.push(Disk {
                id: DiskId(d.id),
                name: d.name.clone(),
                parent,
                weight,
                up: d.up,
                is_in: d.is_in,
            });
        }

        let mut map = ClusterMap {
            spec: MapSpec {
                rules: Vec::new(),
                ..spec.clone()
            },
            buckets,
            disks,
            rules: Vec::new(),
        };
        let mut rule_names = HashSet::new();
        for rule in &spec.rules {
            if !rule_names.insert(rule.name.as_str()) {
                return Err(MapError::DuplicateRule(rule.name.clone()));
            }
            let compiled = map.compile_rule(rule, &type_index)?;
            map.rules.push(compiled);
        }
        map.spec.rules = spec.rules;
        Ok(map)
    }

    /// Parses and checks a map file (TOML, or JSON if it starts with `{`).
    pub fn parse(text: &str) -> Result<ClusterMap, MapError> {
        ClusterMap::from_spec(MapSpec::parse(text)?)
    }

    fn compile_rule(
        &self,
        rule: &Rule,
        type_index: &HashMap<&str, usize>,
    ) -> Result<CompiledRule, MapError> {
        let root = self
            .buckets
            .iter()
            .position(|b| b.name == rule.root)
            .ok_or_else(|| MapError::UnknownRoot {
                rule: rule.name.clone(),
                root: rule.root.clone(),
            })?;
        let domain_type = *type_index
            .get(rule.failure_domain.as_str())
            .ok_or_else(|| MapError::UnknownType {
                owner: format!("rule {:?}", rule.name),
                type_name: rule.failure_domain.clone(),
            })?;
        let root_type = self.buckets[root].type_index;
        if domain_type >= root_type {
            return Err(MapError::DomainNotBelowRoot {
                rule: rule.name.clone(),
                domain_type: rule.failure_domain.clone(),
                root: rule.root.clone(),
                root_type: self.spec.types[root_type].clone(),
            });
        }

        // Depth-first from the root, so the leaves of a domain are adjacent.
        let mut under_root = Vec::new();
        self.collect_disks(root, &mut under_root);
        let mut domain_key_of = Vec::with_capacity(under_root.len());
        for &disk in &under_root {
            let key = if domain_type == 0 {
                usize::MAX - disk
            } else {
                let mut ancestor = Some(self.disks[disk].parent);
                loop {
                    match ancestor {
                        Some(a) if self.buckets[a].type_index == domain_type => break a,
                        Some(a) if a == root => ancestor = None,
                        Some(a) => ancestor = self.buckets[a].parent,
                        None => {
                            return Err(MapError::NoDomainAncestor {
                                rule: rule.name.clone(),
                                disk: self.disks[disk].name.clone(),
                                root: rule.root.clone(),
                                domain_type: rule.failure_domain.clone(),
                            })
                        }
                    }
                }
            };
            domain_key_of.push(key);
        }

        let mut leaves = Vec::new();
        let mut domains: Vec<(u32, u32)> = Vec::new();
        let mut usable_domains = 0;
        let mut current_key = None;
        let mut current_usable = false;
        for (&disk, &key) in under_root.iter().zip(&domain_key_of) {
            let d = &self.disks[disk];
            if d.weight == 0 {
                continue;
            }
            if current_key != Some(key) {
                if current_usable {
                    usable_domains += 1;
                }
                current_key = Some(key);
                current_usable = false;
                domains.push((leaves.len() as u32, leaves.len() as u32));
            }
            current_usable |= d.is_in;
            let domain = (domains.len() - 1) as u32;
            leaves.push(Leaf {
                id: d.id.0,
                weight: f64::from(d.weight) / f64::from(WEIGHT_ONE),
                domain,
                is_in: d.is_in,
            });
            domains.last_mut().expect("pushed above").1 = leaves.len() as u32;
        }
        if current_usable {
            usable_domains += 1;
        }
        Ok(CompiledRule {
            rule: rule.clone(),
            root,
            domain_type,
            leaves,
            domains,
            usable_domains,
            disks_under_root: under_root.len(),
        })
    }

    fn collect_disks(&self, bucket: usize, out: &mut Vec<usize>) {
        out.extend(&self.buckets[bucket].child_disks);
        for &child in &self.buckets[bucket].child_buckets {
            self.collect_disks(child, out);
        }
    }

    /// The spec this map was built from; clone and edit it to derive a new map.
    pub fn spec(&self) -> &MapSpec {
        &self.spec
    }

    /// The rules of this map.
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter().map(|r| &r.rule)
    }

    /// Ids of every disk, in declaration order.
    pub fn disk_ids(&self) -> impl Iterator<Item = DiskId> + '_ {
        self.disks.iter().map(|d| d.id)
    }

    /// A disk's weight as a float (16.16 fixed point underneath).
    pub fn disk_weight(&self, id: DiskId) -> Option<f64> {
        self.disks
            .iter()
            .find(|d| d.id == id)
            .map(|d| f64::from(d.weight) / f64::from(WEIGHT_ONE))
    }

    /// The name of the bucket of type `type_name` that holds disk `id`.
    pub fn ancestor_of(&self, id: DiskId, type_name: &str) -> Option<&str> {
        let type_index = self.spec.types.iter().position(|t| t == type_name)?;
        let disk = self.disks.iter().find(|d| d.id == id)?;
        if type_index == 0 {
            return Some(&disk.name);
        }
        let mut ancestor = Some(disk.parent);
        while let Some(a) = ancestor {
            if self.buckets[a].type_index == type_index {
                return Some(&self.buckets[a].name);
            }
            ancestor = self.buckets[a].parent;
        }
        None
    }

    pub(crate) fn compiled_rule(&self, name: &str) -> Option<&CompiledRule> {
        self.rules.iter().find(|r| r.rule.name == name)
    }

    pub(crate) fn type_name(&self, index: usize) -> &str {
        &self.spec.types[index]
    }
}
