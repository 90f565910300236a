//! Damage in the stored chain and its repair. [`Ledger::check_store`]
//! re-verifies every final block; from the first damaged height on, the
//! ledger serves no final block and neither produces nor confirms, so a
//! node never hands an altered record to a peer or builds on one.
//! [`Ledger::repair_with`] mends what the store can mend alone (an index
//! entry, the account state) and replaces damaged blocks with copies from
//! a peer, accepted only if they validate on the good prefix *and* hash to
//! what this store itself had made final: a repair restores this node's
//! own history and can never switch it to another.

use super::Ledger;
use crate::block::Block;
use crate::dpos;
use crate::error::{Error, Result};
use crate::verify::{self, BadBlock, ChainReport, Replayed};

/// What one repair step did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Repair {
    /// What was rewritten: `blocks`, `index`, `state`, or `nothing`.
    pub what: &'static str,
    /// Heights rewritten, inclusive (none for `state` and `nothing`).
    pub heights: Option<(u64, u64)>,
    /// The damage left after the step; `None` once the store verifies.
    pub remaining: Option<BadBlock>,
}

impl Ledger {
    /// Re-verifies the whole stored chain ([`verify::verify_chain`]) and
    /// records the first damage found. Until it is repaired the ledger
    /// refuses to serve final blocks from that height on, and to produce or
    /// confirm blocks.
    pub fn check_store(&mut self) -> Result<ChainReport> {
        let report = verify::verify_chain(self.store.as_ref())?;
        self.damage = report.first_bad.clone();
        Ok(report)
    }

    /// The damage found by the last check or repair, if any.
    pub fn damage(&self) -> Option<&BadBlock> {
        self.damage.as_ref()
    }

    /// Fails with [`Error::Damaged`] if the store is damaged at or below
    /// `height` (0: at all).
    pub(crate) fn refuse_if_damaged(&self, height: u64) -> Result<()> {
        match &self.damage {
            Some(d) if height == 0 || height >= d.height => Err(Error::Damaged {
                height: d.height,
                reason: format!("{}: {}", d.code, d.reason),
            }),
            _ => Ok(()),
        }
    }

    /// One repair step on the first damage in the store. A bad index entry
    /// or account state is rewritten from the verified replay; a damaged
    /// block is replaced from `peer_blocks` (a peer's `blocks_since(h - 1)`,
    /// `h` being the damaged height). Call again while
    /// [`Repair::remaining`] is set and progress is made.
    pub fn repair_with(&mut self, peer_blocks: &[Block]) -> Result<Repair> {
        let (report, good) = verify::replay(self.store.as_ref())?;
        let Some(bad) = report.first_bad else {
            self.damage = None;
            return Ok(Repair {
                what: "nothing",
                heights: None,
                remaining: None,
            });
        };
        let (what, heights) = match bad.code.as_str() {
            "INDEX_MISMATCH" => {
                // The block itself verified; only its index entries are wrong.
                let b = self.store.block_at(bad.height)?.ok_or(Error::NotFound {
                    what: "final block at height",
                    id: bad.height.to_string(),
                })?;
                self.store.rewrite_final(std::slice::from_ref(&b), None)?;
                ("index", Some((bad.height, bad.height)))
            }
            "STATE_MISMATCH" => {
                self.store.rewrite_final(&[], Some(&good.state))?;
                ("state", None)
            }
            "TIP_MISMATCH" => {
                return Err(Error::Damaged {
                    height: bad.height,
                    reason: "the final tip record itself was altered, so this store cannot tell which chain it made final; stop the node, move its chain directory aside and start it again to resync from peers".into(),
                })
            }
            _ => {
                let accepted = self.reconnect(good, peer_blocks)?;
                self.store.rewrite_final(accepted, None)?;
                let last = accepted.last().expect("reconnect accepts at least one block");
                ("blocks", Some((bad.height, last.header.height)))
            }
        };
        let remaining = verify::verify_chain(self.store.as_ref())?.first_bad;
        self.damage = remaining.clone();
        Ok(Repair {
            what,
            heights,
            remaining,
        })
    }

    /// The longest run of `peer_blocks` from `good.height + 1` that
    /// validates on the verified prefix and ends on a block this store
    /// vouches for: the final tip's hash, or the parent hash of the stored
    /// block above it.
    fn reconnect<'b>(&self, good: Replayed, peer_blocks: &'b [Block]) -> Result<&'b [Block]> {
        let first = good.height + 1;
        let tip = self.store.final_tip()?;
        let start = peer_blocks
            .iter()
            .position(|b| b.header.height == first)
            .ok_or_else(|| Error::Damaged {
                height: first,
                reason: format!("the peer sent no block at height {first}; ask another peer"),
            })?;
        let mut at = good;
        let mut anchored = None;
        let mut refusal = None;
        for (i, b) in peer_blocks[start..].iter().enumerate() {
            let height = b.header.height;
            if height > tip.height {
                break;
            }
            let v =
                match dpos::validate_block(&self.genesis, &self.chain, &at.parent(), b, &|_| false)
                {
                    Ok(v) => v,
                    Err(e) => {
                        refusal = Some(format!("the peer's block {height} does not validate: {e}"));
                        break;
                    }
                };
            at.advance(b, v);
            let vouched = if height == tip.height {
                at.hash == tip.hash
            } else {
                matches!(self.store.block_at(height + 1), Ok(Some(next)) if next.header.prev_hash == at.hash)
            };
            if vouched {
                anchored = Some(start + i);
            }
        }
        match anchored {
            Some(end) => Ok(&peer_blocks[start..=end]),
            None => Err(Error::Damaged {
                height: first,
                reason: refusal.unwrap_or_else(|| {
                    format!(
                        "the peer's blocks from {first} do not lead back to the chain this node made final; ask another peer"
                    )
                }),
            }),
        }
    }
}
