//! `verify_chain`: re-checks a whole stored ledger from genesis, block by
//! block, and names the first block that does not verify.

use std::sync::Arc;

use crate::dpos::{self, ParentView};
use crate::error::{Error, Result};
use crate::state::State;
use crate::store::{ChainStore, TxLocation};

/// The first block that does not verify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadBlock {
    pub height: u64,
    /// Stable code of the failure (e.g. `BLOCK_BAD_MERKLE_ROOT`).
    pub code: String,
    pub reason: String,
}

/// The result of [`verify_chain`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainReport {
    /// Height of the store's final tip.
    pub final_height: u64,
    /// Highest height up to which everything verified.
    pub verified_height: u64,
    /// `None` if the whole ledger verified.
    pub first_bad: Option<BadBlock>,
}

impl ChainReport {
    /// True if every block, index entry and the stored state verified.
    pub fn is_ok(&self) -> bool {
        self.first_bad.is_none()
    }
}

/// Replays every final block from genesis with the full import checks
/// (producer schedule, signature, prev hash, height, time, Merkle root, every
/// transaction against the state), checks the tx index entries of each block
/// and, at the end, the final tip hash and the stored account state. Returns
/// the first failure as data; `Err` only if the store cannot be read at all.
pub fn verify_chain(store: &dyn ChainStore) -> Result<ChainReport> {
    let g = store
        .genesis()?
        .ok_or_else(|| Error::Storage("the store holds no genesis: not a ledger".into()))?;
    let chain = g.chain_hash();
    let tip = store.final_tip()?;
    let mut state = State::from_genesis(&g);
    let mut active = Arc::new(state.elect(g.delegate_count as usize));
    let (mut hash, mut slot) = (chain, 0u64);
    let report = |verified: u64, bad: Option<BadBlock>| ChainReport {
        final_height: tip.height,
        verified_height: verified,
        first_bad: bad,
    };
    let bad = |height: u64, code: &str, reason: String| {
        Some(BadBlock {
            height,
            code: code.to_string(),
            reason,
        })
    };
    for height in 1..=tip.height {
        let b = match store.block_at(height) {
            Ok(Some(b)) => b,
            Ok(None) => {
                return Ok(report(
                    height - 1,
                    bad(height, "BLOCK_MISSING", "no block stored".into()),
                ))
            }
            Err(e) => return Ok(report(height - 1, bad(height, e.code(), e.to_string()))),
        };
        let parent = ParentView {
            hash,
            height: height - 1,
            slot,
            state: &state,
            active: &active,
        };
        let v = match dpos::validate_block(&g, &chain, &parent, &b, &|_| false) {
            Ok(v) => v,
            Err(e) => return Ok(report(height - 1, bad(height, e.code(), e.to_string()))),
        };
        hash = b.hash();
        for (i, th) in v.tx_hashes.iter().enumerate() {
            let want = TxLocation {
                height,
                block: hash,
                index: i as u32,
            };
            match store.tx_location(th) {
                Ok(Some(l)) if l == want => {}
                other => {
                    return Ok(report(
                        height - 1,
                        bad(
                            height,
                            "INDEX_MISMATCH",
                            format!("tx index entry for {th:#} is {other:?}, expected {want:?}"),
                        ),
                    ))
                }
            }
        }
        state = v.state;
        active = v.active;
        slot = b.header.slot;
    }
    if hash != tip.hash {
        return Ok(report(
            tip.height,
            bad(
                tip.height,
                "TIP_MISMATCH",
                format!("final tip records {:#}, blocks give {hash:#}", tip.hash),
            ),
        ));
    }
    match store.load_state() {
        Ok(s) if s == state => Ok(report(tip.height, None)),
        Ok(_) => Ok(report(
            tip.height,
            bad(
                tip.height,
                "STATE_MISMATCH",
                "stored account state differs from the replayed state".into(),
            ),
        )),
        Err(e) => Ok(report(tip.height, bad(tip.height, e.code(), e.to_string()))),
    }
}
