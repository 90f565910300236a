//! One mapping from every engine error to the HTTP API: a status code, a
//! stable code string and a message that names the object and the fix.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

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
            VolumeError::Failed { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}
