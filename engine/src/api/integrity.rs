//! `POST /v1/volumes/{name}/scrub`: every replica of every object checks
//! every block on its own disk and repairs the bad ones from another
//! replica (`crate::integrity`). In steps like rollback and flatten
//! (`?from_object=N&objects=M`), so a client shows progress; without them
//! one request scrubs the whole volume.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::snapshots::Steps;
use super::{ApiError, ApiState};

pub(super) async fn scrub_volume(
    State(state): State<ApiState>,
    Path(volume): Path<String>,
    Query(steps): Query<Steps>,
) -> Result<Json<Value>, ApiError> {
    let repairer = state.integrity.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "scrub.unavailable",
            "this API server has no access to the node's disks; send the request to a node's own API",
        )
    })?;
    let count = steps.objects.unwrap_or(u64::MAX);
    let step = repairer
        .scrub_volume(&volume, steps.from_object, count)
        .await?;
    Ok(Json(json!(step)))
}
