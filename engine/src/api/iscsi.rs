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
use crate::cluster::map::{
    iscsi_snapshot_target_name, iscsi_target_name, ChapCredentials, IscsiExport, Volume,
};
use crate::cluster::{ClusterMapState, Command, MapError};

/// What an export looks like to API clients: no secrets.
pub(super) fn export_json(volume: &Volume) -> Value {
    settings_json(&iscsi_target_name(&volume.name), volume.iscsi.as_ref())
}

fn settings_json(target: &str, export: Option<&IscsiExport>) -> Value {
    match export {
        None => Value::Null,
        Some(export) => json!({
            "target": target,
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
    let target = iscsi_target_name(&volume.name);
    let out = settings_json(&target, volume.iscsi.as_ref());
    with_portals(out, &target, &volume.name, map)
}

/// A snapshot's export, as [`export_with_portals`].
fn snapshot_export_with_portals(volume: &Volume, snapshot: &str, map: &ClusterMapState) -> Value {
    let target = iscsi_snapshot_target_name(&volume.name, snapshot);
    let export = volume.snapshot(snapshot).and_then(|s| s.iscsi.as_ref());
    let mut out = with_portals(settings_json(&target, export), &target, &volume.name, map);
    if !out.is_null() {
        out["snapshot"] = json!(snapshot);
    }
    out
}

fn with_portals(mut out: Value, target: &str, volume: &str, map: &ClusterMapState) -> Value {
    if out.is_null() {
        return out;
    }
    let portals: Vec<String> = map
        .nodes
        .values()
        .filter(|n| n.up)
        .map(|n| n.iscsi_addr.clone())
        .collect();
    out["volume"] = json!(volume);
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

fn export_request(bytes: &[u8]) -> Result<IscsiExport, ApiError> {
    let request: ExportRequest = if bytes.is_empty() {
        body(b"{}")?
    } else {
        body(bytes)?
    };
    Ok(IscsiExport {
        chap: credentials("chap", request.chap_user, request.chap_secret)?,
        mutual_chap: credentials(
            "mutual chap",
            request.mutual_chap_user,
            request.mutual_chap_secret,
        )?,
        allowed_initiators: request.allowed_initiators,
        read_only: request.read_only,
    })
}

/// `PUT /v1/volumes/{name}/iscsi`: export, or replace the export's settings.
pub(super) async fn export_volume(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    bytes: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let export = export_request(&bytes)?;
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

/// `PUT /v1/volumes/{name}/snapshots/{snap}/iscsi`: export the snapshot
/// read-only (whatever `read_only` says), or replace its settings.
pub(super) async fn export_snapshot(
    State(state): State<ApiState>,
    Path((name, snap)): Path<(String, String)>,
    bytes: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let export = export_request(&bytes)?;
    apply(
        &state,
        Command::ExportSnapshot {
            volume: name.clone(),
            snapshot: snap.clone(),
            export,
        },
    )
    .await?;
    show_snapshot_export(State(state), Path((name, snap))).await
}

/// `DELETE /v1/volumes/{name}/snapshots/{snap}/iscsi`.
pub(super) async fn unexport_snapshot(
    State(state): State<ApiState>,
    Path((volume, snapshot)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    apply(&state, Command::UnexportSnapshot { volume, snapshot }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/volumes/{name}/snapshots/{snap}/iscsi`.
pub(super) async fn show_snapshot_export(
    State(state): State<ApiState>,
    Path((name, snap)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let map = state.map.read().await?;
    let (volume, snapshot) = super::snapshots::snapshot_of(&map, &name, &snap)?;
    if snapshot.iscsi.is_none() {
        return Err(MapError::SnapshotNotExported {
            volume: name,
            snapshot: snap,
        }
        .into());
    }
    Ok(Json(snapshot_export_with_portals(volume, &snap, &map)))
}

/// `GET /v1/iscsi`: every export, volumes' and snapshots'.
pub(super) async fn list_exports(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let map = state.map.read().await?;
    let mut out = Vec::new();
    for v in map.volumes.values() {
        if v.iscsi.is_some() {
            out.push(export_with_portals(v, &map));
        }
        for s in v.snapshots.iter().filter(|s| s.iscsi.is_some()) {
            out.push(snapshot_export_with_portals(v, &s.name, &map));
        }
    }
    Ok(Json(Value::Array(out)))
}
