//! hpchain-chain: the embedded DPoS ledger ("HP chain").
//!
//! Accounts with HP balances from a genesis file, signed transactions
//! (transfer, vote, audit, anchor, trace), delegates elected by stake-weighted
//! votes producing blocks in fixed slots, finality once more than two thirds of
//! the delegates have built on a block, RocksDB storage, and Merkle inclusion
//! proofs that verify with nothing but the delegates' keys.
//!
//! This crate knows records and blocks, never volumes: the engine depends on
//! it, not the other way round. The byte formats are in docs/ledger-format.md.

pub mod block;
pub mod codec;
pub mod crypto;
pub mod error;
pub mod genesis;
pub mod merkle;
pub mod state;
pub mod tx;

pub use crypto::{Hash32, Keypair, PublicKey, Signature};
pub use error::{BlockError, Error, Result, TxError};
