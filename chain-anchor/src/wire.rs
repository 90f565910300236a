//! Messages a transport carries between ledgers (gossip and catch-up), with a
//! canonical, versioned encoding to put in a gRPC `bytes` field. The ledger
//! does no I/O; the node daemon maps each message to a `Ledger` call:
//!
//! | message | receiver calls |
//! |---|---|
//! | `Tx` | `Ledger::submit_tx`, then gossip it on if accepted |
//! | `Txs` | `Ledger::submit_tx` each (a batch from one submitter, in nonce order) |
//! | `Block` | `Ledger::import_block`; on `UnknownParent`, send `GetBlocks` |
//! | `Confirmation` | `Ledger::import_confirmation` |
//! | `GetBlocks` | reply `Blocks(Ledger::blocks_since(from_height, limit))` |
//! | `Blocks` | `import_block` each, in order |

use crate::block::{Block, Confirmation, MAX_BLOCK_BYTES};
use crate::codec::{Reader, Writer};
use crate::error::{Error, Result};
use crate::tx::{Transaction, MAX_TX_BYTES};

/// Version of the message envelope.
pub const WIRE_VERSION: u16 = 1;
/// Most blocks in one `Blocks` reply.
pub const MAX_BLOCKS_PER_MESSAGE: usize = 64;
/// Most transactions in one `Txs` message.
pub const MAX_TXS_PER_MESSAGE: usize = 20_000;

/// One message between ledgers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LedgerMessage {
    Tx(Transaction),
    /// Many transactions at once: what a batch submission gossips.
    Txs(Vec<Transaction>),
    Block(Block),
    Confirmation(Confirmation),
    /// Ask for best-chain blocks above `from_height`.
    GetBlocks {
        from_height: u64,
        limit: u32,
    },
    /// Reply to `GetBlocks`, ascending heights.
    Blocks(Vec<Block>),
}

impl LedgerMessage {
    /// Encoding: `u16` version = 1, `u8` tag (1 tx, 2 block, 3 confirmation,
    /// 4 get-blocks, 5 blocks, 6 txs), then the body: a length-prefixed
    /// object encoding, `from_height: u64` + `limit: u32`, or a list of
    /// length-prefixed blocks or transactions.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u16(WIRE_VERSION);
        match self {
            LedgerMessage::Tx(t) => {
                w.u8(1);
                w.bytes(&t.encode());
            }
            LedgerMessage::Block(b) => {
                w.u8(2);
                w.bytes(&b.encode());
            }
            LedgerMessage::Confirmation(c) => {
                w.u8(3);
                w.bytes(&c.encode());
            }
            LedgerMessage::GetBlocks { from_height, limit } => {
                w.u8(4);
                w.u64(*from_height);
                w.u32(*limit);
            }
            LedgerMessage::Blocks(bs) => {
                w.u8(5);
                w.list(bs, |w, b| w.bytes(&b.encode()));
            }
            LedgerMessage::Txs(ts) => {
                w.u8(6);
                w.list(ts, |w, t| w.bytes(&t.encode()));
            }
        }
        w.into_bytes()
    }

    /// Decodes [`LedgerMessage::encode`]; checks limits, not signatures.
    pub fn decode(b: &[u8]) -> Result<Self> {
        let mut r = Reader::new(b, "LedgerMessage");
        let v = r.u16()?;
        if v != WIRE_VERSION {
            return Err(Error::decode(
                "LedgerMessage",
                format!("unknown version {v}"),
            ));
        }
        let m = match r.u8()? {
            1 => LedgerMessage::Tx(Transaction::decode(r.bytes_max(MAX_TX_BYTES)?)?),
            2 => LedgerMessage::Block(Block::decode(r.bytes_max(MAX_BLOCK_BYTES)?)?),
            3 => LedgerMessage::Confirmation(Confirmation::decode(r.bytes()?)?),
            4 => LedgerMessage::GetBlocks {
                from_height: r.u64()?,
                limit: r.u32()?,
            },
            5 => LedgerMessage::Blocks(r.list_max(MAX_BLOCKS_PER_MESSAGE, |r| {
                Block::decode(r.bytes_max(MAX_BLOCK_BYTES)?)
            })?),
            6 => LedgerMessage::Txs(r.list_max(MAX_TXS_PER_MESSAGE, |r| {
                Transaction::decode(r.bytes_max(MAX_TX_BYTES)?)
            })?),
            t => return Err(Error::decode("LedgerMessage", format!("unknown tag {t}"))),
        };
        r.finish()?;
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{hash, Keypair};
    use crate::tx::Payload;

    #[test]
    fn every_message_round_trips_and_garbage_is_rejected() {
        let k = Keypair::from_seed(b"w");
        let chain = hash(b"c");
        let tx = Transaction::signed(
            chain,
            &k,
            0,
            Payload::RegisterCandidate { name: "n".into() },
        );
        let block = Block::build(chain, 1, 1, 1000, chain, vec![tx.clone()], &k);
        let msgs = vec![
            LedgerMessage::Tx(tx.clone()),
            LedgerMessage::Txs(vec![tx.clone(), tx]),
            LedgerMessage::Block(block.clone()),
            LedgerMessage::Confirmation(Confirmation::sign(chain, 1, block.hash(), &k)),
            LedgerMessage::GetBlocks {
                from_height: 7,
                limit: 64,
            },
            LedgerMessage::Blocks(vec![block.clone(), block]),
        ];
        for m in msgs {
            let b = m.encode();
            assert_eq!(LedgerMessage::decode(&b).unwrap(), m);
            assert!(LedgerMessage::decode(&b[..b.len() - 1]).is_err());
        }
        assert!(LedgerMessage::decode(&[1, 0, 9]).is_err());
        assert!(LedgerMessage::decode(&[2, 0, 1]).is_err());
    }
}
