//! `POST /v1/volumes/{name}/scrub`: every replica of every object checks
//! every block on its own disk and repairs the bad ones from another
//! replica, then the replicas' digests of each object, taken at the same
//! point of its PG's log, are compared (`crate::integrity`). In steps
//! like rollback and flatten (`?from_object=N&objects=M`), so a client
//! shows progress; without them one request scrubs the whole volume.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::snapshots::Steps;
use super::{ApiError, ApiState};

/// Objects whose digests are taken and compared at once: at most this
/// many digest entries per disk, well inside what a replica keeps.
const COMPARE_OBJECTS: u64 = 64;

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
    let mut step = repairer
        .scrub_volume(&volume, steps.from_object, count)
        .await?;
    // In pieces, each fetched before the next is taken: a replica keeps
    // only its latest digest entries.
    let mut from = step.next_object - step.objects_checked;
    while from < step.next_object {
        let to = step.next_object.min(from + COMPARE_OBJECTS);
        let taken = state.volumes.take_digests(&volume, from..to).await?;
        repairer.compare_replicas(taken, &mut step).await;
        from = to;
    }
    Ok(Json(json!(step)))
}
