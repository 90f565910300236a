//! `verify_chain`: re-checks a whole stored ledger from genesis, block by
//! block, and names the first block that does not verify.

use std::sync::Arc;

use crate::block::Block;
use crate::crypto::{Hash32, PublicKey};
use crate::dpos::{self, ParentView};
use crate::error::{Error, Result};
use crate::state::State;
use crate::store::{ChainStore, TxLocation};

/// The first block that does not verify.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
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

/// The chain as replayed up to the last height that verified: what a
/// repair validates the replacement blocks against.
pub struct Replayed {
    pub height: u64,
    pub hash: Hash32,
    pub slot: u64,
    pub state: State,
    pub active: Arc<Vec<PublicKey>>,
}

impl Replayed {
    /// The parent a block at `height + 1` is validated against.
    pub fn parent(&self) -> ParentView<'_> {
        ParentView {
            hash: self.hash,
            height: self.height,
            slot: self.slot,
            state: &self.state,
            active: &self.active,
        }
    }

    /// Moves past one block that validated on [`Replayed::parent`].
    pub fn advance(&mut self, b: &Block, v: dpos::Validated) {
        self.height = b.header.height;
        self.hash = b.hash();
        self.slot = b.header.slot;
        self.state = v.state;
        self.active = v.active;
    }
}

/// Replays every final block from genesis with the full import checks
/// (producer schedule, signature, prev hash, height, time, Merkle root, every
/// transaction against the state), checks the tx index entries of each block
/// and, at the end, the final tip hash and the stored account state. Returns
/// the first failure as data; `Err` only if the store cannot be read at all.
pub fn verify_chain(store: &dyn ChainStore) -> Result<ChainReport> {
    replay(store).map(|(report, _)| report)
}

/// [`verify_chain`], also returning the chain replayed up to the last
/// height that verified.
pub fn replay(store: &dyn ChainStore) -> Result<(ChainReport, Replayed)> {
    let g = store
        .genesis()?
        .ok_or_else(|| Error::Storage("the store holds no genesis: not a ledger".into()))?;
    let chain = g.chain_hash();
    let tip = store.final_tip()?;
    let state = State::from_genesis(&g);
    let mut at = Replayed {
        height: 0,
        hash: chain,
        slot: 0,
        active: Arc::new(state.elect(g.delegate_count as usize)),
        state,
    };
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
                return Ok((
                    report(
                        height - 1,
                        bad(height, "BLOCK_MISSING", "no block stored".into()),
                    ),
                    at,
                ))
            }
            Err(e) => return Ok((report(height - 1, bad(height, e.code(), e.to_string())), at)),
        };
        let v = match dpos::validate_block(&g, &chain, &at.parent(), &b, &|_| false) {
            Ok(v) => v,
            Err(e) => return Ok((report(height - 1, bad(height, e.code(), e.to_string())), at)),
        };
        let hash = b.hash();
        for (i, th) in v.tx_hashes.iter().enumerate() {
            let want = TxLocation {
                height,
                block: hash,
                index: i as u32,
            };
            match store.tx_location(th) {
                Ok(Some(l)) if l == want => {}
                other => {
                    let reason =
                        format!("tx index entry for {th:#} is {other:?}, expected {want:?}");
                    return Ok((
                        report(height - 1, bad(height, "INDEX_MISMATCH", reason)),
                        at,
                    ));
                }
            }
        }
        at.advance(&b, v);
    }
    if at.hash != tip.hash {
        let reason = format!(
            "final tip records {:#}, blocks give {:#}",
            tip.hash, at.hash
        );
        return Ok((
            report(tip.height, bad(tip.height, "TIP_MISMATCH", reason)),
            at,
        ));
    }
    let report = match store.load_state() {
        Ok(s) if s == at.state => report(tip.height, None),
        Ok(_) => report(
            tip.height,
            bad(
                tip.height,
                "STATE_MISMATCH",
                "stored account state differs from the replayed state".into(),
            ),
        ),
        Err(e) => report(tip.height, bad(tip.height, e.code(), e.to_string())),
    };
    Ok((report, at))
}
