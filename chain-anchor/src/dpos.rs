//! DPoS rules: slots, rounds, the production schedule, finality threshold,
//! and the validation of a block against its parent. Pure functions shared by
//! block import and `verify_chain`.
//!
//! - slot `s` starts at `genesis_time_ms + s * slot_time_ms`; block 1 is in
//!   slot 1 or later; each block's slot is greater than its parent's, and a
//!   slot with no block is simply skipped.
//! - a round is N consecutive slots: round(s) = s / N. The delegates of a round
//!   are the top N candidates by stake-weighted votes in the state after the
//!   last block of an earlier round on the same branch, sorted by key; slot `s`
//!   belongs to `active[s % active.len()]`.
//! - a block is final when the distinct members of its round's delegate set
//!   that produced it or a descendant on the chain, or signed a confirmation of
//!   it or a descendant, number more than two thirds of that set
//!   (`3 * count > 2 * N`). For N = 3 that is all three, for N = 4 three,
//!   for N = 21 fifteen.

use std::sync::Arc;

use crate::block::Block;
use crate::crypto::{Hash32, PublicKey};
use crate::error::BlockError;
use crate::genesis::Genesis;
use crate::state::State;

/// The round a slot belongs to.
pub fn round_of(slot: u64, n: u32) -> u64 {
    slot / n.max(1) as u64
}

/// The delegate scheduled for `slot` in a round whose (sorted) set is `active`.
pub fn producer_for(active: &[PublicKey], slot: u64) -> Option<PublicKey> {
    if active.is_empty() {
        return None;
    }
    Some(active[(slot % active.len() as u64) as usize])
}

/// True if `count` confirmations out of a set of `n` make a block final.
pub fn is_final_count(count: usize, n: usize) -> bool {
    n > 0 && 3 * count > 2 * n
}

/// Number of distinct confirmers needed for finality in a set of `n`.
pub fn finality_threshold(n: usize) -> usize {
    2 * n / 3 + 1
}

/// What validation needs to know about the parent block.
pub struct ParentView<'a> {
    pub hash: Hash32,
    pub height: u64,
    pub slot: u64,
    pub state: &'a State,
    pub active: &'a Arc<Vec<PublicKey>>,
}

/// The outcome of a valid block: the state after it, its round's delegates,
/// and its transaction hashes.
pub struct Validated {
    pub state: State,
    pub active: Arc<Vec<PublicKey>>,
    pub tx_hashes: Vec<Hash32>,
}

/// The delegate set for a block in `slot` whose parent is `parent`.
pub fn active_for(g: &Genesis, parent: &ParentView<'_>, slot: u64) -> Arc<Vec<PublicKey>> {
    if round_of(slot, g.delegate_count) == round_of(parent.slot, g.delegate_count) {
        parent.active.clone()
    } else {
        Arc::new(parent.state.elect(g.delegate_count as usize))
    }
}

/// Checks `b` fully against its parent: chain, height, prev hash, slot and
/// timestamp, producer schedule, signature, Merkle root, and every
/// transaction against the parent state. Cheap checks come first.
/// `known_valid(tx_hash)` may return true for transactions whose stateless
/// checks (signature, chain, payload) already passed, e.g. those in the pending
/// pool: the hash covers the signature, so they need not be checked again.
pub fn validate_block(
    g: &Genesis,
    chain: &Hash32,
    parent: &ParentView<'_>,
    b: &Block,
    known_valid: &(dyn Fn(&Hash32) -> bool + Sync),
) -> Result<Validated, BlockError> {
    let h = &b.header;
    if h.chain != *chain {
        return Err(BlockError::WrongChain {
            expected: *chain,
            got: h.chain,
        });
    }
    if h.height != parent.height + 1 {
        return Err(BlockError::BadHeight {
            expected: parent.height + 1,
            got: h.height,
        });
    }
    if h.prev_hash != parent.hash {
        return Err(BlockError::BadPrevHash {
            expected: parent.hash,
            got: h.prev_hash,
        });
    }
    if h.slot <= parent.slot {
        return Err(BlockError::BadTime(format!(
            "slot {} is not after the parent's slot {}",
            h.slot, parent.slot
        )));
    }
    let want_ts = h
        .slot
        .checked_mul(g.slot_time_ms)
        .and_then(|t| t.checked_add(g.genesis_time_ms));
    if want_ts != Some(h.timestamp_ms) {
        return Err(BlockError::BadTime(format!(
            "timestamp {} is not the start of slot {} ({:?})",
            h.timestamp_ms, h.slot, want_ts
        )));
    }
    let active = active_for(g, parent, h.slot);
    let expected = producer_for(&active, h.slot)
        .ok_or_else(|| BlockError::BadTime("no delegates elected".into()))?;
    if h.producer != expected {
        return Err(BlockError::WrongProducer {
            slot: h.slot,
            expected,
            got: h.producer,
        });
    }
    let tx_hashes = b.check_intrinsic()?;
    check_signatures(chain, b, &tx_hashes, known_valid)?;
    let mut state = parent.state.clone();
    for (index, (tx, th)) in b.txs.iter().zip(&tx_hashes).enumerate() {
        state.apply(tx).map_err(|reason| BlockError::InvalidTx {
            index,
            tx: *th,
            reason,
        })?;
    }
    Ok(Validated {
        state,
        active,
        tx_hashes,
    })
}

/// Transactions per thread below which signatures are checked on one thread.
const PARALLEL_MIN_TXS: usize = 256;

/// Stateless checks of every transaction not `known_valid`, spread over the
/// available cores for large blocks. Reports the lowest failing index.
fn check_signatures(
    chain: &Hash32,
    b: &Block,
    hashes: &[Hash32],
    known_valid: &(dyn Fn(&Hash32) -> bool + Sync),
) -> Result<(), BlockError> {
    let check = |start: usize, txs: &[crate::tx::Transaction]| -> Result<(), BlockError> {
        for (i, tx) in txs.iter().enumerate() {
            let th = &hashes[start + i];
            if !known_valid(th) {
                tx.check_stateless(chain)
                    .map_err(|reason| BlockError::InvalidTx {
                        index: start + i,
                        tx: *th,
                        reason,
                    })?;
            }
        }
        Ok(())
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    if threads < 2 || b.txs.len() < 2 * PARALLEL_MIN_TXS {
        return check(0, &b.txs);
    }
    let chunk = b.txs.len().div_ceil(threads);
    let results: Vec<Result<(), BlockError>> = std::thread::scope(|s| {
        let handles: Vec<_> = b
            .txs
            .chunks(chunk)
            .enumerate()
            .map(|(k, txs)| s.spawn(move || check(k * chunk, txs)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(BlockError::Undecodable("verifier thread panicked".into()))
                })
            })
            .collect()
    });
    // chunks are in order, so the first error is the lowest index
    results.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finality_thresholds_are_more_than_two_thirds() {
        assert_eq!(finality_threshold(3), 3);
        assert_eq!(finality_threshold(4), 3);
        assert_eq!(finality_threshold(21), 15);
        for n in 1..=30 {
            let t = finality_threshold(n);
            assert!(is_final_count(t, n));
            assert!(!is_final_count(t - 1, n));
        }
        assert!(!is_final_count(0, 0));
    }

    #[test]
    fn schedule_rotates_through_the_set() {
        let ks: Vec<PublicKey> = (0..3u8).map(|i| PublicKey([i; 32])).collect();
        let got: Vec<_> = (0..6).map(|s| producer_for(&ks, s).unwrap()).collect();
        assert_eq!(got, [ks[0], ks[1], ks[2], ks[0], ks[1], ks[2]]);
        assert_eq!(round_of(5, 3), 1);
        assert!(producer_for(&[], 1).is_none());
    }
}
