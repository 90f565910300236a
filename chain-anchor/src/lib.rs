//! hpchain-chain: the embedded DPoS ledger ("HP chain").
//!
//! Accounts with HP balances from a genesis file, signed transactions
//! (transfer, vote, register candidate, audit, anchor, trace), delegates
//! elected by stake-weighted votes producing blocks in fixed slots, finality
//! once more than two thirds of the delegates have built on or confirmed a
//! block, RocksDB storage, and Merkle inclusion proofs that verify with
//! nothing but the delegates' keys.
//!
//! This crate knows records and blocks, never volumes: the engine depends on
//! it, not the other way round. It does no network I/O: a transport carries
//! [`Block`], [`Transaction`] and [`Confirmation`] values (canonical bytes via
//! their `encode`/`decode`) between [`Ledger`]s. Byte formats:
//! docs/ledger-format.md.

pub mod block;
pub mod codec;
pub mod crypto;
pub mod dpos;
pub mod error;
pub mod genesis;
pub mod ledger;
pub mod merkle;
pub mod proof;
pub mod state;
pub mod store;
pub mod tx;
pub mod verify;
pub mod wire;

pub use block::{Block, BlockHeader, Confirmation, SignedHeader};
pub use crypto::{Hash32, Keypair, PublicKey, Signature};
pub use error::{BlockError, Error, Result, TxError};
pub use genesis::Genesis;
pub use ledger::{CandidateStatus, ChainStatus, Equivocation, ImportOutcome, Ledger};
pub use proof::{verify_inclusion, InclusionProof, ProofVerifier, VerifiedInclusion};
pub use store::{ChainStore, MemoryStore, RecordIndex, RocksStore, TxLocation};
pub use tx::{Payload, Transaction};
pub use verify::{verify_chain, BadBlock, ChainReport};
pub use wire::LedgerMessage;
