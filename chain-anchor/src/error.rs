//! The crate's error type. Every variant names the object, the reason and, where
//! there is one, the fix; `code()` gives a stable identifier for the wire.

use crate::crypto::{Hash32, PublicKey};

/// Convenient alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the ledger.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    /// Bytes do not decode as the named type (truncated, trailing bytes,
    /// unknown version or tag, over a limit). The data is corrupt or was
    /// produced by an incompatible version.
    #[error("cannot decode {what}: {reason}")]
    Decode { what: &'static str, reason: String },

    /// A genesis file is unreadable or inconsistent. Fix the file.
    #[error("invalid genesis: {0}")]
    Genesis(String),

    /// A key file cannot be read or written, or does not hold a key.
    #[error("key file {path}: {reason}")]
    KeyFile { path: String, reason: String },

    /// A transaction was rejected; the inner error says why.
    #[error("transaction {tx}: {reason}")]
    Tx { tx: Hash32, reason: Box<TxError> },

    /// A block was rejected; the inner error says why.
    #[error("block {hash} at height {height}: {reason}")]
    Block {
        height: u64,
        hash: Hash32,
        reason: Box<BlockError>,
    },

    /// A confirmation message was rejected.
    #[error("confirmation of block {block} by {delegate}: {reason}")]
    Confirmation {
        block: Hash32,
        delegate: PublicKey,
        reason: String,
    },

    /// An inclusion proof does not verify.
    #[error("inclusion proof does not verify: {0}")]
    Proof(String),

    /// The asked-for object is not in the ledger.
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },

    /// The given key is not the producer scheduled for the slot.
    #[error("slot {slot}: {key} is not the scheduled producer (expected {expected})")]
    NotMyTurn {
        slot: u64,
        key: PublicKey,
        expected: PublicKey,
    },

    /// The slot is not after the head's slot, so no block can be produced in it.
    #[error("slot {slot} is not after the head block's slot {head_slot}; wait for a later slot")]
    StaleSlot { slot: u64, head_slot: u64 },

    /// The storage backend failed. Check the disk and the data directory.
    #[error("storage: {0}")]
    Storage(String),

    /// This node's stored ledger failed verification at `height`: it serves
    /// and builds on nothing from there until repaired from peers.
    #[error("this node's ledger store is damaged at block {height} ({reason}); it serves and builds on nothing from there until repaired from peers: run `hpchain chain repair` against this node, and ask another node meanwhile")]
    Damaged { height: u64, reason: String },
}

impl Error {
    /// A stable, machine-readable code for this error, for APIs and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Decode { .. } => "CHAIN_DECODE",
            Error::Genesis(_) => "CHAIN_GENESIS",
            Error::KeyFile { .. } => "CHAIN_KEY_FILE",
            Error::Tx { reason, .. } => reason.code(),
            Error::Block { reason, .. } => reason.code(),
            Error::Confirmation { .. } => "CHAIN_BAD_CONFIRMATION",
            Error::Proof(_) => "CHAIN_BAD_PROOF",
            Error::NotFound { .. } => "CHAIN_NOT_FOUND",
            Error::NotMyTurn { .. } => "CHAIN_NOT_MY_TURN",
            Error::StaleSlot { .. } => "CHAIN_STALE_SLOT",
            Error::Storage(_) => "CHAIN_STORAGE",
            Error::Damaged { .. } => "CHAIN_DAMAGED",
        }
    }

    pub(crate) fn decode(what: &'static str, reason: impl Into<String>) -> Self {
        Error::Decode {
            what,
            reason: reason.into(),
        }
    }
}

/// Why a transaction is invalid.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TxError {
    /// The signature does not verify against the sender's key: the transaction
    /// was altered or signed with another key.
    #[error("bad signature for sender {0}")]
    BadSignature(PublicKey),
    /// The transaction was made for another chain (replay from another chain).
    #[error("made for chain {got}, this chain is {expected}")]
    WrongChain { expected: Hash32, got: Hash32 },
    /// The nonce is not the sender's next nonce (a replay, or a gap).
    #[error("nonce {got} for {account}, expected {expected}")]
    WrongNonce {
        account: PublicKey,
        expected: u64,
        got: u64,
    },
    /// The sender does not hold enough HP.
    #[error("{account} holds {balance} units, needs {needed}")]
    InsufficientBalance {
        account: PublicKey,
        balance: u64,
        needed: u64,
    },
    /// A vote names a key that is not a delegate candidate.
    #[error("{0} is not a delegate candidate")]
    UnknownCandidate(PublicKey),
    /// The payload breaks a rule (empty field, over a limit, zero amount...).
    #[error("invalid payload: {0}")]
    InvalidPayload(String),
    /// The same transaction is already pending or included.
    #[error("already known")]
    Duplicate,
    /// The pending pool is full; retry later.
    #[error("pending pool full ({0} transactions); retry later")]
    PoolFull(usize),
}

impl TxError {
    /// A stable code for this reason.
    pub fn code(&self) -> &'static str {
        match self {
            TxError::BadSignature(_) => "TX_BAD_SIGNATURE",
            TxError::WrongChain { .. } => "TX_WRONG_CHAIN",
            TxError::WrongNonce { .. } => "TX_WRONG_NONCE",
            TxError::InsufficientBalance { .. } => "TX_INSUFFICIENT_BALANCE",
            TxError::UnknownCandidate(_) => "TX_UNKNOWN_CANDIDATE",
            TxError::InvalidPayload(_) => "TX_INVALID_PAYLOAD",
            TxError::Duplicate => "TX_DUPLICATE",
            TxError::PoolFull(_) => "TX_POOL_FULL",
        }
    }
}

/// Why a block is invalid or cannot be imported.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum BlockError {
    /// The producer's signature does not verify.
    #[error("bad producer signature by {0}")]
    BadSignature(PublicKey),
    /// The producer is not the delegate scheduled for the block's slot.
    #[error("slot {slot} belongs to {expected}, block was produced by {got}")]
    WrongProducer {
        slot: u64,
        expected: PublicKey,
        got: PublicKey,
    },
    /// The header's Merkle root does not match its transactions.
    #[error("merkle root {got} in header, transactions give {computed}")]
    BadMerkleRoot { got: Hash32, computed: Hash32 },
    /// The header's transaction count does not match the body.
    #[error("header says {header} transactions, body has {body}")]
    TxCountMismatch { header: u32, body: usize },
    /// The parent block is unknown: fetch the blocks before it first.
    #[error("parent {0} is unknown; fetch earlier blocks (blocks_since) first")]
    UnknownParent(Hash32),
    /// The previous hash does not match the block at height - 1.
    #[error("previous hash {got} does not match {expected}")]
    BadPrevHash { expected: Hash32, got: Hash32 },
    /// The height is not the parent's height + 1.
    #[error("height {got}, expected {expected}")]
    BadHeight { expected: u64, got: u64 },
    /// The slot is not after the parent's slot, or the timestamp is not the slot's.
    #[error("bad slot/timestamp: {0}")]
    BadTime(String),
    /// The block was made for another chain.
    #[error("made for chain {got}, this chain is {expected}")]
    WrongChain { expected: Hash32, got: Hash32 },
    /// The block would fork off below the last irreversible block.
    #[error(
        "forks below the final block at height {final_height}; final blocks are never reverted"
    )]
    ConflictsWithFinal { final_height: u64 },
    /// A transaction in the block is invalid against the parent state.
    #[error("transaction #{index} ({tx}): {reason}")]
    InvalidTx {
        index: usize,
        tx: Hash32,
        reason: TxError,
    },
    /// The block is over a size limit.
    #[error("too large: {0}")]
    TooLarge(String),
    /// The stored bytes of the block do not decode.
    #[error("undecodable: {0}")]
    Undecodable(String),
}

impl BlockError {
    /// A stable code for this reason.
    pub fn code(&self) -> &'static str {
        match self {
            BlockError::BadSignature(_) => "BLOCK_BAD_SIGNATURE",
            BlockError::WrongProducer { .. } => "BLOCK_WRONG_PRODUCER",
            BlockError::BadMerkleRoot { .. } => "BLOCK_BAD_MERKLE_ROOT",
            BlockError::TxCountMismatch { .. } => "BLOCK_TX_COUNT",
            BlockError::UnknownParent(_) => "BLOCK_UNKNOWN_PARENT",
            BlockError::BadPrevHash { .. } => "BLOCK_BAD_PREV_HASH",
            BlockError::BadHeight { .. } => "BLOCK_BAD_HEIGHT",
            BlockError::BadTime(_) => "BLOCK_BAD_TIME",
            BlockError::WrongChain { .. } => "BLOCK_WRONG_CHAIN",
            BlockError::ConflictsWithFinal { .. } => "BLOCK_CONFLICTS_WITH_FINAL",
            BlockError::InvalidTx { .. } => "BLOCK_INVALID_TX",
            BlockError::TooLarge(_) => "BLOCK_TOO_LARGE",
            BlockError::Undecodable(_) => "BLOCK_UNDECODABLE",
        }
    }
}
