//! iSCSI export routes: `/v1/volumes/{name}/iscsi` and `/v1/iscsi`.
//!
//! An export lives in the cluster map, so every node's portal serves it;
//! CHAP secrets go in but never come back out of the API.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{apply, body, ApiError, ApiState};
use crate::cluster::map::{iscsi_target_name, ChapCredentials, IscsiExport, Volume};
use crate::cluster::{ClusterMapState, Command, MapError};

/// What an export looks like to API clients: no secrets.
pub(super) fn export_json(volume: &Volume) -> Value {
    match &volume.iscsi {
        None => Value::Null,
        Some(export) => json!({
            "target": iscsi_target_name(&volume.name),
            "lun": 0,
            "chap_user": export.chap.as_ref().map(|c| c.user.clone()),
            "mutual_chap_user": export.mutual_chap.as_ref().map(|c| c.user.clone()),
            "allowed_initiators": export.allowed_initiators,
            "read_only": export.read_only,
        }),
    }
}

/// The export with the portals of every node that is up, and the URL an
/// initiator uses.
fn export_with_portals(volume: &Volume, map: &ClusterMapState) -> Value {
    let mut out = export_json(volume);
    if out.is_null() {
        return out;
    }
    let portals: Vec<String> = map
        .nodes
        .values()
        .filter(|n| n.up)
        .map(|n| n.iscsi_addr.clone())
        .collect();
    let target = iscsi_target_name(&volume.name);
    out["volume"] = json!(volume.name);
    out["urls"] = json!(portals
        .iter()
        .map(|p| format!("iscsi://{p}/{target}/0"))
        .collect::<Vec<_>>());
    out["portals"] = json!(portals);
    out
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ExportRequest {
    #[serde(default)]
    chap_user: Option<String>,
    #[serde(default)]
    chap_secret: Option<String>,
    #[serde(default)]
    mutual_chap_user: Option<String>,
    #[serde(default)]
    mutual_chap_secret: Option<String>,
    #[serde(default)]
    allowed_initiators: Vec<String>,
    #[serde(default)]
    read_only: bool,
}

fn credentials(
    what: &str,
    user: Option<String>,
    secret: Option<String>,
) -> Result<Option<ChapCredentials>, ApiError> {
    match (user, secret) {
        (None, None) => Ok(None),
        (Some(user), Some(secret)) => Ok(Some(ChapCredentials { user, secret })),
        _ => Err(ApiError::bad_request(
            "iscsi.chap_incomplete",
            format!("{what}: give both the user and the secret, or neither"),
        )),
    }
}

/// `PUT /v1/volumes/{name}/iscsi`: export, or replace the export's settings.
pub(super) async fn export_volume(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    bytes: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: ExportRequest = if bytes.is_empty() {
        body(b"{}")?
    } else {
        body(&bytes)?
    };
    let export = IscsiExport {
        chap: credentials("chap", request.chap_user, request.chap_secret)?,
        mutual_chap: credentials(
            "mutual chap",
            request.mutual_chap_user,
            request.mutual_chap_secret,
        )?,
        allowed_initiators: request.allowed_initiators,
        read_only: request.read_only,
    };
    apply(
        &state,
        Command::ExportVolume {
            name: name.clone(),
            export,
        },
    )
    .await?;
    show_export(State(state), Path(name)).await
}

/// `DELETE /v1/volumes/{name}/iscsi`.
pub(super) async fn unexport_volume(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    apply(&state, Command::UnexportVolume { name }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/volumes/{name}/iscsi`.
pub(super) async fn show_export(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let map = state.map.read().await?;
    let volume = map
        .volumes
        .get(&name)
        .ok_or_else(|| ApiError::from(MapError::VolumeNotFound(name.clone())))?;
    if volume.iscsi.is_none() {
        return Err(MapError::NotExported(name).into());
    }
    Ok(Json(export_with_portals(volume, &map)))
}

/// `GET /v1/iscsi`: every export.
pub(super) async fn list_exports(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let map = state.map.read().await?;
    Ok(Json(Value::Array(
        map.volumes
            .values()
            .filter(|v| v.iscsi.is_some())
            .map(|v| export_with_portals(v, &map))
            .collect(),
    )))
}
