//! One mapping from every engine error to the HTTP API: a status code, a
//! stable code string and a message that names the object and the fix.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use hpchain_chain::tx::format_hp;
use hpchain_chain::{Error as ChainError, TxError};

use crate::cluster::{MapClientError, MapError};
use crate::volume::VolumeError;

/// An API error as the client sees it: `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }
}

impl From<MapError> for ApiError {
    fn from(e: MapError) -> ApiError {
        let status = match &e {
            MapError::PoolNotFound(_)
            | MapError::VolumeNotFound(_)
            | MapError::NodeNotFound(_)
            | MapError::DiskNotFound(_)
            | MapError::SnapshotNotFound { .. } => StatusCode::NOT_FOUND,
            MapError::PoolExists(_)
            | MapError::VolumeExists(_)
            | MapError::PoolNotEmpty { .. }
            | MapError::VolumeExported(_)
            | MapError::NotExported(_)
            | MapError::DiskIdTaken { .. }
            | MapError::SnapshotExists { .. }
            | MapError::SnapshotProtected { .. }
            | MapError::SnapshotHasClones { .. }
            | MapError::TooManySnapshots { .. }
            | MapError::VolumeHasSnapshots { .. }
            | MapError::NotAClone(_)
            | MapError::SnapshotExported { .. }
            | MapError::SnapshotNotExported { .. } => StatusCode::CONFLICT,
            MapError::BadPool { .. }
            | MapError::BadSize { .. }
            | MapError::BadBlockSize { .. }
            | MapError::Shrink { .. }
            | MapError::BadName(_)
            | MapError::BadExport { .. }
            | MapError::BadQos { .. } => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl From<MapClientError> for ApiError {
    fn from(e: MapClientError) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "cluster.unavailable",
            e.to_string(),
        )
    }
}

impl From<VolumeError> for ApiError {
    fn from(e: VolumeError) -> ApiError {
        let status = match &e {
            VolumeError::NotFound(_) | VolumeError::SnapshotNotFound { .. } => {
                StatusCode::NOT_FOUND
            }
            VolumeError::OutOfRange { .. } => StatusCode::BAD_REQUEST,
            VolumeError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            VolumeError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            VolumeError::Failed { .. } | VolumeError::Corrupt { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

/// A transaction the ledger refused (`POST /v1/chain/transactions`): the
/// reason's stable code (`tx.` and the `TxError` variant), and a message
/// that names the transaction, the reason and what the client does next.
/// A refusal that is not the transaction's fault is a 500 `chain.store`.
pub fn tx_refused(e: ChainError) -> ApiError {
    let ChainError::Tx { tx, reason } = e else {
        return ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "chain.store",
            format!("this node's ledger failed: {e}; ask another node"),
        );
    };
    let status = match *reason {
        TxError::BadSignature(_) | TxError::WrongChain { .. } | TxError::InvalidPayload(_) => {
            StatusCode::BAD_REQUEST
        }
        TxError::WrongNonce { .. }
        | TxError::InsufficientBalance { .. }
        | TxError::UnknownCandidate(_)
        | TxError::Duplicate => StatusCode::CONFLICT,
        TxError::PoolFull(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    let code = match *reason {
        TxError::BadSignature(_) => "tx.bad_signature",
        TxError::WrongChain { .. } => "tx.wrong_chain",
        TxError::WrongNonce { .. } => "tx.wrong_nonce",
        TxError::InsufficientBalance { .. } => "tx.insufficient_balance",
        TxError::UnknownCandidate(_) => "tx.unknown_candidate",
        TxError::InvalidPayload(_) => "tx.invalid_payload",
        TxError::Duplicate => "tx.duplicate",
        TxError::PoolFull(_) => "tx.pool_full",
    };
    let message = match *reason {
        TxError::BadSignature(from) => format!(
            "transaction {tx:#}: the signature does not verify against its sender {from:#}; it was changed after signing or signed with another key: sign it again with the sender's key"
        ),
        TxError::WrongChain { expected, got } => format!(
            "transaction {tx:#} was signed for chain {got:#}, this node's chain is {expected:#}; sign it with `chain_hash` from GET /v1/chain"
        ),
        TxError::WrongNonce {
            account,
            expected,
            got,
        } if got < expected => format!(
            "transaction {tx:#} carries nonce {got} of account {account:#}, which is already used: it is a replay, or another transaction with that nonce came first; the account's next nonce is {expected}: sign a new transaction with it (GET /v1/chain/accounts/{account:#} shows it)"
        ),
        TxError::WrongNonce {
            account,
            expected,
            got,
        } => format!(
            "transaction {tx:#} carries nonce {got} of account {account:#}, but its next nonce (after its pending transactions) is {expected}; submit transactions in nonce order, or sign this one with nonce {expected}"
        ),
        TxError::InsufficientBalance {
            account,
            balance,
            needed,
        } => format!(
            "transaction {tx:#}: account {account:#} holds {} HP ({balance} units, after its pending transactions) and the transfer needs {} HP ({needed} units); transfer at most the balance",
            format_hp(balance),
            format_hp(needed)
        ),
        TxError::UnknownCandidate(key) => format!(
            "transaction {tx:#} votes for {key:#}, which is not a delegate candidate; GET /v1/chain lists the candidates, and a key becomes one by registering (`hpchain chain register`)"
        ),
        TxError::InvalidPayload(why) => {
            format!("transaction {tx:#} is invalid: {why}; fix it and sign it again")
        }
        TxError::Duplicate => format!(
            "transaction {tx:#} is already pending on this node; do not submit it again, wait for it (GET /v1/chain/proof/{tx:#} once it is in a block)"
        ),
        TxError::PoolFull(n) => format!(
            "transaction {tx:#} not taken: this node's pending pool is full ({n} transactions); retry in a few slots"
        ),
    };
    ApiError::new(status, code, message)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hpchain_chain::{Hash32, Keypair};

    fn refused(reason: TxError) -> ApiError {
        tx_refused(ChainError::Tx {
            tx: Hash32([7; 32]),
            reason: Box::new(reason),
        })
    }

    #[test]
    fn refused_transactions_name_the_reason_and_the_fix() {
        let account = Keypair::from_seed(b"a").public();
        let replay = refused(TxError::WrongNonce {
            account,
            expected: 3,
            got: 2,
        });
        assert_eq!(
            (replay.status, replay.code),
            (StatusCode::CONFLICT, "tx.wrong_nonce")
        );
        assert!(
            replay.message.contains("already used"),
            "{}",
            replay.message
        );
        assert!(
            replay.message.contains("next nonce is 3"),
            "{}",
            replay.message
        );
        let gap = refused(TxError::WrongNonce {
            account,
            expected: 3,
            got: 5,
        });
        assert!(gap.message.contains("nonce order"), "{}", gap.message);
        let poor = refused(TxError::InsufficientBalance {
            account,
            balance: 1_250_000_000,
            needed: 1_300_000_000,
        });
        assert_eq!(poor.code, "tx.insufficient_balance");
        assert!(
            poor.message.contains("holds 12.5 HP") && poor.message.contains("needs 13 HP"),
            "{}",
            poor.message
        );
        let forged = refused(TxError::BadSignature(account));
        assert_eq!(
            (forged.status, forged.code),
            (StatusCode::BAD_REQUEST, "tx.bad_signature")
        );
        let store = tx_refused(ChainError::Storage("disk".into()));
        assert_eq!(store.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
