//! straw2 selection and the two placement modes.
//!
//! straw2 is an exponential race: item `i` draws `ln(u_i) / w_i`, with `u_i`
//! uniform in (0, 1] from a hash of (input, item, rank), and the largest
//! draw wins, so `i` wins with probability `w_i / sum(w)`. Changing one
//! item's weight changes only that item's draw, which is why data moves only
//! to or from the changed item.
//!
//! Replicated rules race every leaf under the root once and take, in draw
//! order, the best leaf of each failure domain until `size` domains are
//! taken (see docs/decisions/0003-placement-ranked-straw2.md for why this
//! rather than CRUSH's descent with retries). Indep rules race once per slot
//! and round, so each slot keeps its disk unless that disk fails.

use crate::error::PlacementError;
use crate::hash::hash3;
use crate::ln::ln_unit;
use crate::map::{ClusterMap, CompiledRule, Leaf, Mode};
use crate::{DiskId, PgId};

/// Rounds an indep placement tries before it falls back to an exhaustive
/// pick for the slots still empty.
const INDEP_ROUNDS_MAX: u32 = 50;

/// Salt that separates the placement input of a PG from other uses of hash3.
const PG_INPUT_SALT: u32 = 0x5047_4944; // "PGID"

/// The straw2 draw of a leaf for input `x` and rank `r`.
#[inline(always)]
fn draw(x: u32, leaf: &Leaf, r: u32) -> f64 {
    ln_unit(hash3(x, leaf.id, r)) / leaf.weight
}

/// `(draw, id)` ordering: the higher draw wins, the lower id breaks ties.
#[inline(always)]
fn beats(a: (f64, u32), b: (f64, u32)) -> bool {
    a.0 > b.0 || (a.0 == b.0 && a.1 < b.1)
}

/// The placement input of a PG: mixes the pool in, so that PG 7 of two
/// pools lands on different disks.
pub fn pg_input(pg: PgId) -> u32 {
    hash3(pg.pool, pg.index, PG_INPUT_SALT)
}

/// Where the replicas (or shards) of `pg` live under `rule`: `size` disks in
/// distinct failure domains, primary first.
///
/// Deterministic and pure: the same map, rule, PG and size give the same
/// disks on every node. For an indep rule, position `i` is shard `i`.
pub fn place(
    map: &ClusterMap,
    rule: &str,
    pg: PgId,
    size: usize,
) -> Result<Vec<DiskId>, PlacementError> {
    place_input(map, rule, pg_input(pg), size)
}

/// [`place`] for a raw 32-bit input instead of a PG id.
pub fn place_input(
    map: &ClusterMap,
    rule: &str,
    x: u32,
    size: usize,
) -> Result<Vec<DiskId>, PlacementError> {
    let compiled = map
        .compiled_rule(rule)
        .ok_or_else(|| PlacementError::UnknownRule(rule.to_string()))?;
    check_feasible(map, compiled)?;
    let slots = match compiled.rule.mode {
        Mode::Firstn => firstn(compiled, x, size),
        Mode::Indep => indep(compiled, x, size),
    };
    if compiled.usable_domains < size {
        return Err(PlacementError::Shortfall {
            rule: compiled.rule.name.clone(),
            domain_type: map.type_name(compiled.domain_type).to_string(),
            wanted: size,
            available: compiled.usable_domains,
            partial: slots.into_iter().map(|s| s.map(DiskId)).collect(),
        });
    }
    Ok(slots
        .into_iter()
        .map(|s| DiskId(s.expect("enough usable domains fill every slot")))
        .collect())
}

fn check_feasible(map: &ClusterMap, compiled: &CompiledRule) -> Result<(), PlacementError> {
    let root = || map.buckets[compiled.root].name.clone();
    if compiled.disks_under_root == 0 {
        return Err(PlacementError::EmptyBucket {
            rule: compiled.rule.name.clone(),
            root: root(),
        });
    }
    if compiled.leaves.is_empty() {
        return Err(PlacementError::ZeroWeight {
            rule: compiled.rule.name.clone(),
            root: root(),
        });
    }
    Ok(())
}

/// The best in leaf of each domain, then the best `size` domains: the same
/// as walking all leaves in draw order and taking each new domain's first.
fn firstn(rule: &CompiledRule, x: u32, size: usize) -> Vec<Option<u32>> {
    // Sorted best first; at most `size` long.
    let mut top: Vec<(f64, u32)> = Vec::with_capacity(size + 1);
    for &(start, end) in &rule.domains {
        let mut best: Option<(f64, u32)> = None;
        for leaf in &rule.leaves[start as usize..end as usize] {
            if !leaf.is_in {
                continue;
            }
            let candidate = (draw(x, leaf, 0), leaf.id);
            if best.is_none_or(|b| beats(candidate, b)) {
                best = Some(candidate);
            }
        }
        let Some(best) = best else { continue };
        if top.len() == size && !top.last().is_some_and(|&last| beats(best, last)) {
            continue;
        }
        let at = top
            .iter()
            .position(|&t| beats(best, t))
            .unwrap_or(top.len());
        top.insert(at, best);
        top.truncate(size);
    }
    let mut slots: Vec<Option<u32>> = top.into_iter().map(|(_, id)| Some(id)).collect();
    slots.resize(size, None);
    slots
}

/// The winning leaf of a race over every leaf (in or out) for rank `r`.
fn race_all(rule: &CompiledRule, x: u32, r: u32) -> &Leaf {
    let mut best = &rule.leaves[0];
    let mut best_key = (draw(x, best, r), best.id);
    for leaf in &rule.leaves[1..] {
        let key = (draw(x, leaf, r), leaf.id);
        if beats(key, best_key) {
            best = leaf;
            best_key = key;
        }
    }
    best
}

/// Indep placement in two passes. The first ignores in/out and fills
/// every slot as if all disks were in; the second refills only the slots
/// whose disk is out. So marking a disk out (or back in) changes exactly
/// the slots it held, whatever order slots collided in.
fn indep(rule: &CompiledRule, x: u32, size: usize) -> Vec<Option<u32>> {
    let mut slots: Vec<Option<&Leaf>> = vec![None; size];
    fill_slots(rule, x, &mut slots, false);
    for slot in slots.iter_mut() {
        if slot.is_some_and(|leaf| !leaf.is_in) {
            *slot = None;
        }
    }
    fill_slots(rule, x, &mut slots, true);
    slots.into_iter().map(|s| s.map(|leaf| leaf.id)).collect()
}

/// Fills the empty slots: slot `i` races with rank `i + size * round`; a
/// winner that is unusable or whose domain another slot holds leaves the
/// slot for the next round.
fn fill_slots<'a>(rule: &'a CompiledRule, x: u32, slots: &mut [Option<&'a Leaf>], in_only: bool) {
    let size = slots.len();
    let usable = |leaf: &Leaf| leaf.is_in || !in_only;
    for round in 0..INDEP_ROUNDS_MAX {
        let mut empty = 0;
        for i in 0..size {
            if slots[i].is_some() {
                continue;
            }
            let r = (i as u32).wrapping_add((size as u32).wrapping_mul(round));
            let winner = race_all(rule, x, r);
            let taken = slots.iter().flatten().any(|s| s.domain == winner.domain);
            if usable(winner) && !taken {
                slots[i] = Some(winner);
            } else {
                empty += 1;
            }
        }
        if empty == 0 {
            return;
        }
    }
    // Bounded retries ran out (very uneven weights, or few usable
    // domains): take the best free domain for each empty slot.
    for i in 0..size {
        if slots[i].is_some() {
            continue;
        }
        let mut best: Option<((f64, u32), &Leaf)> = None;
        for leaf in &rule.leaves {
            let taken = slots.iter().flatten().any(|s| s.domain == leaf.domain);
            if !usable(leaf) || taken {
                continue;
            }
            let key = (draw(x, leaf, i as u32), leaf.id);
            if best.is_none_or(|(b, _)| beats(key, b)) {
                best = Some((key, leaf));
            }
        }
        slots[i] = best.map(|(_, leaf)| leaf);
    }
}
