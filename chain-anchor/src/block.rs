//! Blocks, block headers and confirmation messages, with their canonical
//! encodings and signatures.

use serde::{Deserialize, Serialize};

use crate::codec::{Reader, Writer};
use crate::crypto::{hash_domain, Hash32, Keypair, PublicKey, Signature};
use crate::error::{BlockError, Error, Result};
use crate::merkle;
use crate::tx::{Transaction, MAX_TX_BYTES};

/// Version written in every block header.
pub const BLOCK_VERSION: u16 = 1;
/// Version written in every confirmation.
pub const CONFIRMATION_VERSION: u16 = 1;
/// Most transactions in one block.
pub const MAX_BLOCK_TXS: usize = 20_000;
/// Largest encoded block, in bytes.
pub const MAX_BLOCK_BYTES: usize = 16 * 1024 * 1024;

const HEADER_HASH_DOMAIN: &[u8] = b"HPCHAIN/BLOCK/V1\0";
const CONFIRM_DOMAIN: &[u8] = b"HPCHAIN/CONFIRM/V1\0";

/// A block header: everything a light client needs to check a Merkle proof.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockHeader {
    /// Encoding version, [`BLOCK_VERSION`].
    pub version: u16,
    /// Hash of the chain's genesis.
    pub chain: Hash32,
    /// 1 for the first block after genesis.
    pub height: u64,
    /// Slot number: (timestamp - genesis time) / slot time.
    pub slot: u64,
    /// Start of the slot, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// Hash of the parent header (the genesis hash for height 1).
    pub prev_hash: Hash32,
    /// Merkle root of the transaction hashes (see `merkle`).
    pub tx_root: Hash32,
    /// Number of transactions.
    pub tx_count: u32,
    /// The delegate that produced and signed the block.
    pub producer: PublicKey,
}

impl BlockHeader {
    /// Canonical encoding (158 bytes, see docs/ledger-format.md).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.write(&mut w);
        w.into_bytes()
    }
    fn write(&self, w: &mut Writer) {
        w.u16(self.version);
        w.raw(&self.chain.0);
        w.u64(self.height);
        w.u64(self.slot);
        w.u64(self.timestamp_ms);
        w.raw(&self.prev_hash.0);
        w.raw(&self.tx_root.0);
        w.u32(self.tx_count);
        w.raw(&self.producer.0);
    }
    fn read(r: &mut Reader) -> Result<Self> {
        let version = r.u16()?;
        if version != BLOCK_VERSION {
            return Err(Error::decode(
                "BlockHeader",
                format!("unknown version {version}"),
            ));
        }
        Ok(BlockHeader {
            version,
            chain: Hash32(r.array()?),
            height: r.u64()?,
            slot: r.u64()?,
            timestamp_ms: r.u64()?,
            prev_hash: Hash32(r.array()?),
            tx_root: Hash32(r.array()?),
            tx_count: r.u32()?,
            producer: PublicKey(r.array()?),
        })
    }
    /// The block's id: blake3("HPCHAIN/BLOCK/V1\0" || header encoding). The
    /// signature is not part of it, so the id is fixed before signing.
    pub fn hash(&self) -> Hash32 {
        hash_domain(HEADER_HASH_DOMAIN, &self.encode())
    }
}

/// A header with the producer's signature over its hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedHeader {
    pub header: BlockHeader,
    pub signature: Signature,
}

impl SignedHeader {
    /// True if the producer named in the header signed this header's hash.
    pub fn verify_signature(&self) -> bool {
        self.header
            .producer
            .verify(&self.header.hash().0, &self.signature)
    }
    /// Canonical encoding: header then 64-byte signature.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.header.write(&mut w);
        w.raw(&self.signature.0);
        w.into_bytes()
    }
    /// Decodes [`SignedHeader::encode`].
    pub fn decode(b: &[u8]) -> Result<Self> {
        let mut r = Reader::new(b, "SignedHeader");
        let header = BlockHeader::read(&mut r)?;
        let signature = Signature(r.array()?);
        r.finish()?;
        Ok(SignedHeader { header, signature })
    }
}

/// A block: signed header and transactions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub header: BlockHeader,
    pub signature: Signature,
    pub txs: Vec<Transaction>,
}

impl Block {
    /// Builds and signs a block over `txs` on top of `prev_hash`.
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        chain: Hash32,
        height: u64,
        slot: u64,
        timestamp_ms: u64,
        prev_hash: Hash32,
        txs: Vec<Transaction>,
        key: &Keypair,
    ) -> Self {
        let hashes: Vec<Hash32> = txs.iter().map(|t| t.hash()).collect();
        let header = BlockHeader {
            version: BLOCK_VERSION,
            chain,
            height,
            slot,
            timestamp_ms,
            prev_hash,
            tx_root: merkle::root(&hashes),
            tx_count: txs.len() as u32,
            producer: key.public(),
        };
        let signature = key.sign(&header.hash().0);
        Block {
            header,
            signature,
            txs,
        }
    }

    /// The block's id (its header hash).
    pub fn hash(&self) -> Hash32 {
        self.header.hash()
    }

    /// The signed header alone.
    pub fn signed_header(&self) -> SignedHeader {
        SignedHeader {
            header: self.header.clone(),
            signature: self.signature,
        }
    }

    /// Hashes of the transactions, in order.
    pub fn tx_hashes(&self) -> Vec<Hash32> {
        self.txs.iter().map(|t| t.hash()).collect()
    }

    /// Canonical encoding: header, signature, then each transaction as
    /// `u32` length + bytes (the count is the header's `tx_count`).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.header.write(&mut w);
        w.raw(&self.signature.0);
        for t in &self.txs {
            w.bytes(&t.encode());
        }
        w.into_bytes()
    }

    /// Decodes [`Block::encode`]; checks limits, not signatures.
    pub fn decode(b: &[u8]) -> Result<Self> {
        if b.len() > MAX_BLOCK_BYTES {
            return Err(Error::decode(
                "Block",
                format!("{} bytes, limit {MAX_BLOCK_BYTES}", b.len()),
            ));
        }
        let mut r = Reader::new(b, "Block");
        let header = BlockHeader::read(&mut r)?;
        let signature = Signature(r.array()?);
        if header.tx_count as usize > MAX_BLOCK_TXS {
            return Err(Error::decode(
                "Block",
                format!("{} transactions, limit {MAX_BLOCK_TXS}", header.tx_count),
            ));
        }
        let mut txs = Vec::with_capacity(header.tx_count as usize);
        for _ in 0..header.tx_count {
            txs.push(Transaction::decode(r.bytes_max(MAX_TX_BYTES)?)?);
        }
        r.finish()?;
        Ok(Block {
            header,
            signature,
            txs,
        })
    }

    /// Checks what needs no ledger state: signature by the named producer,
    /// transaction count, Merkle root. Returns the transaction hashes.
    pub fn check_intrinsic(&self) -> Result<Vec<Hash32>, BlockError> {
        if self.txs.len() > MAX_BLOCK_TXS {
            return Err(BlockError::TooLarge(format!(
                "{} transactions, limit {MAX_BLOCK_TXS}",
                self.txs.len()
            )));
        }
        if self.header.tx_count as usize != self.txs.len() {
            return Err(BlockError::TxCountMismatch {
                header: self.header.tx_count,
                body: self.txs.len(),
            });
        }
        if !self
            .header
            .producer
            .verify(&self.header.hash().0, &self.signature)
        {
            return Err(BlockError::BadSignature(self.header.producer));
        }
        let hashes = self.tx_hashes();
        let computed = merkle::root(&hashes);
        if computed != self.header.tx_root {
            return Err(BlockError::BadMerkleRoot {
                got: self.header.tx_root,
                computed,
            });
        }
        Ok(hashes)
    }
}

/// A delegate's signed statement that it accepts a block (and so all its
/// ancestors). Counts toward finality like building on the block does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// Encoding version, [`CONFIRMATION_VERSION`].
    pub version: u16,
    pub chain: Hash32,
    pub height: u64,
    pub block: Hash32,
    pub delegate: PublicKey,
    pub signature: Signature,
}

impl Confirmation {
    fn signing_bytes(chain: &Hash32, height: u64, block: &Hash32, delegate: &PublicKey) -> Vec<u8> {
        let mut w = Writer::new();
        w.raw(CONFIRM_DOMAIN);
        w.u16(CONFIRMATION_VERSION);
        w.raw(&chain.0);
        w.u64(height);
        w.raw(&block.0);
        w.raw(&delegate.0);
        w.into_bytes()
    }
    /// Signs a confirmation of `block` at `height`.
    pub fn sign(chain: Hash32, height: u64, block: Hash32, key: &Keypair) -> Self {
        let delegate = key.public();
        let signature = key.sign(&Self::signing_bytes(&chain, height, &block, &delegate));
        Confirmation {
            version: CONFIRMATION_VERSION,
            chain,
            height,
            block,
            delegate,
            signature,
        }
    }
    /// True if the delegate signed exactly this statement.
    pub fn verify_signature(&self) -> bool {
        self.version == CONFIRMATION_VERSION
            && self.delegate.verify(
                &Self::signing_bytes(&self.chain, self.height, &self.block, &self.delegate),
                &self.signature,
            )
    }
    /// Canonical encoding (version, chain, height, block, delegate, signature).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u16(self.version);
        w.raw(&self.chain.0);
        w.u64(self.height);
        w.raw(&self.block.0);
        w.raw(&self.delegate.0);
        w.raw(&self.signature.0);
        w.into_bytes()
    }
    /// Decodes [`Confirmation::encode`].
    pub fn decode(b: &[u8]) -> Result<Self> {
        let mut r = Reader::new(b, "Confirmation");
        let version = r.u16()?;
        if version != CONFIRMATION_VERSION {
            return Err(Error::decode(
                "Confirmation",
                format!("unknown version {version}"),
            ));
        }
        let c = Confirmation {
            version,
            chain: Hash32(r.array()?),
            height: r.u64()?,
            block: Hash32(r.array()?),
            delegate: PublicKey(r.array()?),
            signature: Signature(r.array()?),
        };
        r.finish()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::hash;
    use crate::tx::{tests::sample_trace, Transaction};

    fn block() -> Block {
        let k = Keypair::from_seed(b"p");
        let chain = hash(b"c");
        let txs = (0..5)
            .map(|i| Transaction::signed(chain, &k, i, sample_trace(&format!("b{i}"), &[])))
            .collect();
        Block::build(chain, 7, 9, 1000, hash(b"prev"), txs, &k)
    }

    #[test]
    fn block_round_trips_and_checks() {
        let b = block();
        let bytes = b.encode();
        let back = Block::decode(&bytes).unwrap();
        assert_eq!(back, b);
        assert_eq!(back.check_intrinsic().unwrap().len(), 5);
        assert_eq!(b.header.encode().len(), 158);
        let sh = SignedHeader::decode(&b.signed_header().encode()).unwrap();
        assert!(sh.verify_signature());
    }

    #[test]
    fn tampering_is_detected_with_the_right_reason() {
        let b = block();
        let mut m = b.clone();
        m.header.height += 1;
        assert!(matches!(
            m.check_intrinsic(),
            Err(BlockError::BadSignature(_))
        ));
        let mut m = b.clone();
        m.txs.swap(0, 1);
        assert!(matches!(
            m.check_intrinsic(),
            Err(BlockError::BadMerkleRoot { .. })
        ));
        let mut m = b.clone();
        m.txs.pop();
        assert!(matches!(
            m.check_intrinsic(),
            Err(BlockError::TxCountMismatch { .. })
        ));
    }

    #[test]
    fn confirmation_round_trips_and_binds_the_block() {
        let k = Keypair::from_seed(b"d");
        let c = Confirmation::sign(hash(b"c"), 3, hash(b"b"), &k);
        assert!(c.verify_signature());
        assert_eq!(Confirmation::decode(&c.encode()).unwrap(), c);
        let mut m = c.clone();
        m.height = 4;
        assert!(!m.verify_signature());
    }
}
