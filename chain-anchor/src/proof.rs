//! Inclusion proofs and their standalone verifier. A proof carries the
//! transaction, its Merkle path, its block's signed header, the signed headers
//! built on top of it and delegates' confirmations; [`verify_inclusion`]
//! checks it with nothing but a set of trusted delegate keys.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::block::{Confirmation, SignedHeader};
use crate::crypto::{Hash32, PublicKey};
use crate::dpos;
use crate::error::{Error, Result};
use crate::merkle::MerkleProof;
use crate::tx::Transaction;

/// Everything needed to check that a transaction is in the ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProof {
    pub tx: Transaction,
    pub merkle: MerkleProof,
    pub header: SignedHeader,
    /// Headers of the blocks built on `header`, in height order.
    pub descendants: Vec<SignedHeader>,
    /// Signed confirmations of `header`'s block or of a descendant.
    pub confirmations: Vec<Confirmation>,
}

impl InclusionProof {
    /// Pretty JSON (keys and hashes as hex), for files and APIs.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("proof serializes")
    }
    /// Parses [`InclusionProof::to_json`].
    pub fn from_json(s: &str) -> Result<Self> {
        serde_json::from_str(s).map_err(|e| Error::Proof(format!("not a proof file: {e}")))
    }
}

/// What a valid proof establishes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedInclusion {
    pub tx_hash: Hash32,
    pub height: u64,
    pub block: Hash32,
    /// Distinct trusted delegates that produced the block, built on it or
    /// confirmed it.
    pub confirmed_by: usize,
    /// True if `confirmed_by` is more than 2/3 of the trusted set: the block
    /// is irreversible.
    pub is_final: bool,
}

/// Checks `proof` against `trusted` delegate keys only: the header is signed by
/// a trusted delegate, the transaction is signed by its sender and hashes to a
/// Merkle leaf under the header's root, each descendant header links to the
/// previous one and is signed by a trusted delegate, and each confirmation is
/// a trusted delegate's signature over one of these blocks. Returns how many
/// distinct trusted delegates stand behind the block and whether that makes it
/// final. Fails on any inconsistency. To check many proofs, use a
/// [`ProofVerifier`], which checks each header's signature once.
pub fn verify_inclusion(
    proof: &InclusionProof,
    trusted: &[PublicKey],
) -> Result<VerifiedInclusion> {
    ProofVerifier::new(trusted).verify(proof)
}

/// Most signed objects remembered by a [`ProofVerifier`] before it forgets
/// them all (a bound on memory).
pub const MAX_CACHED_SIGNATURES: usize = 1_000_000;

/// Verifies many proofs against one set of trusted delegate keys, checking
/// the signature of each header and confirmation only the first time it is
/// seen (proofs of records in the same block share their headers).
pub struct ProofVerifier {
    trusted: HashSet<PublicKey>,
    n_trusted: usize,
    verified: HashSet<Hash32>,
    check_sender: bool,
}

impl ProofVerifier {
    /// A verifier trusting `trusted` (duplicates count once).
    pub fn new(trusted: &[PublicKey]) -> Self {
        let trusted: HashSet<PublicKey> = trusted.iter().copied().collect();
        ProofVerifier {
            n_trusted: trusted.len(),
            trusted,
            verified: HashSet::new(),
            check_sender: true,
        }
    }

    /// Skips re-checking the sender's signature of the record. Safe under the
    /// proof's own assumption (the confirming delegates are honest): the
    /// Merkle root commits to the transaction id, which covers the signature,
    /// and every delegate checked it on import. Saves one ed25519
    /// verification per proof.
    pub fn skip_sender_signatures(mut self) -> Self {
        self.check_sender = false;
        self
    }

    fn remember(&mut self, id: Hash32) {
        if self.verified.len() >= MAX_CACHED_SIGNATURES {
            self.verified.clear();
        }
        self.verified.insert(id);
    }

    fn header_ok(&mut self, sh: &SignedHeader, id: &Hash32) -> bool {
        if !self.trusted.contains(&sh.header.producer) {
            return false;
        }
        // The cache key binds the signature too: the same header with another
        // signature is checked afresh.
        let key = crate::crypto::hash_domain(&sh.signature.0, &id.0);
        if self.verified.contains(&key) {
            return true;
        }
        let ok = sh.header.producer.verify(&id.0, &sh.signature);
        if ok {
            self.remember(key);
        }
        ok
    }

    fn confirmation_ok(&mut self, c: &Confirmation) -> bool {
        if !self.trusted.contains(&c.delegate) {
            return false;
        }
        let key = crate::crypto::hash(&c.encode());
        if self.verified.contains(&key) {
            return true;
        }
        let ok = c.verify_signature();
        if ok {
            self.remember(key);
        }
        ok
    }

    /// Verifies one proof; see [`verify_inclusion`].
    pub fn verify(&mut self, proof: &InclusionProof) -> Result<VerifiedInclusion> {
        let bad = |s: String| Err(Error::Proof(s));
        let h = &proof.header.header;
        let block = h.hash();
        if !self.trusted.contains(&h.producer) {
            return bad(format!(
                "block producer {} is not a trusted delegate",
                h.producer
            ));
        }
        if !self.header_ok(&proof.header, &block) {
            return bad(format!(
                "block header at height {} has a bad signature",
                h.height
            ));
        }
        if proof.tx.chain != h.chain {
            return bad("transaction was made for another chain than the block".into());
        }
        let tx_hash = proof.tx.hash();
        if self.check_sender {
            match proof.tx.check_stateless(&h.chain) {
                Ok(()) => {}
                Err(crate::error::TxError::BadSignature(from)) => {
                    return bad(format!(
                        "the record does not match its signature: transaction {tx_hash:#} (as the proof now holds it) is not signed by its sender {from:#}; the record was changed after it was signed"
                    ))
                }
                Err(e) => return bad(format!("the record (transaction {tx_hash:#}) does not verify: {e}")),
            }
        }
        if proof.merkle.leaf_count != h.tx_count {
            return bad(format!(
                "Merkle path is for {} transactions, the block has {}",
                proof.merkle.leaf_count, h.tx_count
            ));
        }
        if !proof.merkle.verify(&tx_hash, &h.tx_root) {
            return bad(format!(
                "the record does not match the block: transaction {tx_hash:#} with this Merkle path does not lead to the transaction root {:#} of block {}; the record or its path was changed",
                h.tx_root, h.height
            ));
        }
        let mut confirmers: HashSet<PublicKey> = HashSet::from([h.producer]);
        let mut chain_hashes: HashSet<(Hash32, u64)> = HashSet::from([(block, h.height)]);
        let (mut prev, mut prev_height, mut prev_slot) = (block, h.height, h.slot);
        for d in &proof.descendants {
            let dh = &d.header;
            if dh.prev_hash != prev
                || dh.height != prev_height + 1
                || dh.chain != h.chain
                || dh.slot <= prev_slot
            {
                return bad(format!(
                    "descendant header at height {} does not extend the previous one",
                    dh.height
                ));
            }
            let id = dh.hash();
            if !self.header_ok(d, &id) {
                return bad(format!(
                    "descendant header at height {} is not signed by a trusted delegate",
                    dh.height
                ));
            }
            confirmers.insert(dh.producer);
            prev = id;
            prev_height = dh.height;
            prev_slot = dh.slot;
            chain_hashes.insert((prev, prev_height));
        }
        for c in &proof.confirmations {
            if c.chain != h.chain || !chain_hashes.contains(&(c.block, c.height)) {
                return bad(format!(
                    "confirmation by {} is for a block outside this proof",
                    c.delegate
                ));
            }
            if !self.confirmation_ok(c) {
                return bad(format!(
                    "confirmation by {} is not a trusted delegate's valid signature",
                    c.delegate
                ));
            }
            confirmers.insert(c.delegate);
        }
        let confirmed_by = confirmers.len();
        Ok(VerifiedInclusion {
            tx_hash,
            height: h.height,
            block,
            confirmed_by,
            is_final: dpos::is_final_count(confirmed_by, self.n_trusted),
        })
    }
}
