//! Snapshot, clone, flatten, rollback, QoS and space routes under
//! `/v1/volumes/{name}/...` and `/v1/pools/{name}/qos`.
//!
//! Taking a snapshot is one map commit. Operations that touch every object
//! (rollback, flatten) take `?from_object=N&objects=M` so that a client can
//! drive them in steps, show progress and resume after a crash; each
//! answers how far it got and commits the map change once the last object
//! is done. Without those parameters one request does everything.

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{apply, body, ApiError, ApiState};
use crate::cluster::map::{QosLimits, Snapshot, Volume};
use crate::cluster::{ClusterMapState, Command, MapError};
use crate::volume::client::{Walk, WalkProgress};

pub(super) fn snapshot_json(volume: &Volume, snapshot: &Snapshot, map: &ClusterMapState) -> Value {
    let children: Vec<&str> = map
        .children(&volume.name, &snapshot.name)
        .iter()
        .map(|v| v.name.as_str())
        .collect();
    json!({
        "id": snapshot.id,
        "name": snapshot.name,
        "volume": volume.name,
        "size_bytes": snapshot.size,
        "created_epoch": snapshot.created_epoch,
        "created_ms": snapshot.created_ms,
        "protected": snapshot.protected,
        "children": children,
    })
}

fn volume_of<'a>(map: &'a ClusterMapState, name: &str) -> Result<&'a Volume, ApiError> {
    map.volumes
        .get(name)
        .ok_or_else(|| MapError::VolumeNotFound(name.to_string()).into())
}

pub(super) fn snapshot_of<'a>(
    map: &'a ClusterMapState,
    volume: &str,
    snapshot: &str,
) -> Result<(&'a Volume, &'a Snapshot), ApiError> {
    let v = volume_of(map, volume)?;
    let s = v
        .snapshot(snapshot)
        .ok_or_else(|| MapError::SnapshotNotFound {
            volume: volume.to_string(),
            snapshot: snapshot.to_string(),
        })?;
    Ok((v, s))
}

#[derive(Deserialize)]
pub(super) struct ListQuery {
    /// Also count each snapshot's exclusive and shared bytes (reads every
    /// object's versions).
    #[serde(default)]
    usage: bool,
}

pub(super) async fn list_snapshots(
    State(state): State<ApiState>,
    Path(volume): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let map = state.map.read().await?;
    let v = volume_of(&map, &volume)?;
    let mut out: Vec<Value> = v
        .snapshots
        .iter()
        .map(|s| snapshot_json(v, s, &map))
        .collect();
    if query.usage {
        let usage = state.volumes.usage(&volume).await?;
        for (item, u) in out.iter_mut().zip(&usage.snapshots) {
            item["allocated_bytes"] = json!(u.allocated_bytes);
            item["exclusive_bytes"] = json!(u.exclusive_bytes);
            item["shared_bytes"] = json!(u.shared_bytes);
        }
    }
    Ok(Json(Value::Array(out)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateSnapshot {
    name: String,
}

pub(super) async fn create_snapshot(
    State(state): State<ApiState>,
    Path(volume): Path<String>,
    bytes: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let request: CreateSnapshot = body(&bytes)?;
    apply(
        &state,
        Command::CreateSnapshot {
            volume: volume.clone(),
            name: request.name.clone(),
            created_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        },
    )
    .await?;
    let map = state.map.read().await?;
    let (v, s) = snapshot_of(&map, &volume, &request.name)?;
    Ok((StatusCode::CREATED, Json(snapshot_json(v, s, &map))).into_response())
}

pub(super) async fn show_snapshot(
    State(state): State<ApiState>,
    Path((volume, snapshot)): Path<(String, String)>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let map = state.map.read().await?;
    let (v, s) = snapshot_of(&map, &volume, &snapshot)?;
    let mut out = snapshot_json(v, s, &map);
    if !query.usage {
        return Ok(Json(out));
    }
    let usage = state.volumes.usage(&volume).await?;
    if let Some(u) = usage.snapshots.iter().find(|u| u.id == s.id) {
        out["allocated_bytes"] = json!(u.allocated_bytes);
        out["exclusive_bytes"] = json!(u.exclusive_bytes);
        out["shared_bytes"] = json!(u.shared_bytes);
    }
    Ok(Json(out))
}

/// Removes the snapshot from the map, then frees the versions no other
/// snapshot reads.
pub(super) async fn delete_snapshot(
    State(state): State<ApiState>,
    Path((volume, snapshot)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let id = {
        let map = state.map.read().await?;
        snapshot_of(&map, &volume, &snapshot)?.1.id
    };
    apply(
        &state,
        Command::DeleteSnapshot {
            volume: volume.clone(),
            name: snapshot,
        },
    )
    .await?;
    let (lower, upper) = {
        let map = state.map.read().await?;
        volume_of(&map, &volume)?.live_neighbours(id)
    };
    let walk = Walk::Trim {
        removed: id,
        lower,
        upper,
    };
    state.volumes.walk(&volume, walk, 0, u64::MAX).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn protect_snapshot(
    State(state): State<ApiState>,
    Path((volume, snapshot)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    set_protected(state, volume, snapshot, true).await
}

pub(super) async fn unprotect_snapshot(
    State(state): State<ApiState>,
    Path((volume, snapshot)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    set_protected(state, volume, snapshot, false).await
}

async fn set_protected(
    state: ApiState,
    volume: String,
    snapshot: String,
    protected: bool,
) -> Result<Json<Value>, ApiError> {
    apply(
        &state,
        Command::ProtectSnapshot {
            volume: volume.clone(),
            name: snapshot.clone(),
            protected,
        },
    )
    .await?;
    let map = state.map.read().await?;
    let (v, s) = snapshot_of(&map, &volume, &snapshot)?;
    Ok(Json(snapshot_json(v, s, &map)))
}

pub(super) async fn snapshot_children(
    State(state): State<ApiState>,
    Path((volume, snapshot)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let map = state.map.read().await?;
    snapshot_of(&map, &volume, &snapshot)?;
    let children: Vec<Value> = map
        .children(&volume, &snapshot)
        .iter()
        .map(|v| super::volume_json(v))
        .collect();
    Ok(Json(Value::Array(children)))
}

/// A part of an operation over every object: `objects` of them from
/// `from_object`; all of them when absent.
#[derive(Deserialize)]
pub(super) struct Steps {
    #[serde(default)]
    pub(super) from_object: u64,
    pub(super) objects: Option<u64>,
}

fn progress_json(progress: WalkProgress, done: bool) -> Value {
    json!({
        "next_object": progress.next_object,
        "total_objects": progress.total_objects,
        "done": done,
    })
}

/// Puts every object back as the snapshot saw it, then records the
/// rollback (and the snapshot's size) in the map.
pub(super) async fn rollback_snapshot(
    State(state): State<ApiState>,
    Path((volume, snapshot)): Path<(String, String)>,
    Query(steps): Query<Steps>,
) -> Result<Json<Value>, ApiError> {
    let id = {
        let map = state.map.read().await?;
        snapshot_of(&map, &volume, &snapshot)?.1.id
    };
    let count = steps.objects.unwrap_or(u64::MAX);
    let progress = state
        .volumes
        .walk(
            &volume,
            Walk::Rollback { snapshot: id },
            steps.from_object,
            count,
        )
        .await?;
    let done = progress.next_object >= progress.total_objects;
    if done {
        apply(&state, Command::RollbackVolume { volume, snapshot }).await?;
    }
    Ok(Json(progress_json(progress, done)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CloneRequest {
    name: String,
    #[serde(default)]
    qos: QosLimits,
}

pub(super) async fn clone_snapshot(
    State(state): State<ApiState>,
    Path((volume, snapshot)): Path<(String, String)>,
    bytes: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let request: CloneRequest = body(&bytes)?;
    apply(
        &state,
        Command::CloneVolume {
            name: request.name.clone(),
            parent: volume,
            snapshot,
            qos: request.qos,
        },
    )
    .await?;
    let map = state.map.read().await?;
    let clone = volume_of(&map, &request.name)?;
    Ok((StatusCode::CREATED, Json(super::volume_json(clone))).into_response())
}

/// Copies what a clone still reads from its parent, then cuts the link.
pub(super) async fn flatten_volume(
    State(state): State<ApiState>,
    Path(volume): Path<String>,
    Query(steps): Query<Steps>,
) -> Result<Json<Value>, ApiError> {
    {
        let map = state.map.read().await?;
        if volume_of(&map, &volume)?.parent.is_none() {
            return Err(MapError::NotAClone(volume).into());
        }
    }
    let count = steps.objects.unwrap_or(u64::MAX);
    let progress = state
        .volumes
        .walk(&volume, Walk::Flatten, steps.from_object, count)
        .await?;
    let done = progress.next_object >= progress.total_objects;
    if done {
        apply(&state, Command::FlattenVolume { name: volume }).await?;
    }
    Ok(Json(progress_json(progress, done)))
}

#[derive(Deserialize)]
pub(super) struct SnapshotRange {
    offset: u64,
    length: u64,
}

pub(super) async fn read_snapshot_data(
    State(state): State<ApiState>,
    Path((volume, snapshot)): Path<(String, String)>,
    Query(range): Query<SnapshotRange>,
) -> Result<Response, ApiError> {
    let data = state
        .volumes
        .read_at(&volume, Some(&snapshot), range.offset, range.length)
        .await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], data).into_response())
}

/// Reads the whole snapshot, computes its content digest (the Merkle root
/// over the blake3 of each 4 KiB block, `hpchain_chain::merkle::
/// ContentDigest`) and records it on the HP chain as an `anchor`
/// transaction, so that an image exported later can be proven identical.
pub(super) async fn anchor_snapshot(
    State(state): State<ApiState>,
    Path((volume, snapshot)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let ledger = super::chain::ledger(&state)?;
    let size = {
        let map = state.map.read().await?;
        snapshot_of(&map, &volume, &snapshot)?.1.size
    };
    let started = std::time::Instant::now();
    let mut digest = hpchain_chain::merkle::ContentDigest::default();
    let chunk = 4u64 << 20;
    let mut offset = 0;
    while offset < size {
        let len = chunk.min(size - offset);
        let data = state
            .volumes
            .read_at(&volume, Some(&snapshot), offset, len)
            .await?;
        digest.update(&data);
        offset += len;
    }
    let (root, bytes) = digest.finish();
    let tx = ledger
        .submit(hpchain_chain::Payload::Anchor(hpchain_chain::tx::Anchor {
            volume_id: volume.clone(),
            snapshot: snapshot.clone(),
            digest: root,
            size_bytes: bytes,
        }))
        .await
        .map_err(|e| ApiError::bad_request("anchor.refused", e.to_string()))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "tx": tx.to_hex(),
            "volume": volume,
            "snapshot": snapshot,
            "digest": root.to_hex(),
            "size_bytes": bytes,
            "seconds": started.elapsed().as_secs_f64(),
        })),
    )
        .into_response())
}

pub(super) async fn show_qos(
    State(state): State<ApiState>,
    Path(volume): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let map = state.map.read().await?;
    let v = volume_of(&map, &volume)?;
    Ok(Json(qos_json(v, &map)))
}

pub(super) fn qos_json(volume: &Volume, map: &ClusterMapState) -> Value {
    let pool_default = map
        .pools
        .get(&volume.pool)
        .map(|p| p.qos_default)
        .unwrap_or_default();
    json!({
        "volume": volume.qos,
        "pool_default": pool_default,
        "effective": volume.qos.or_default(&pool_default),
    })
}

pub(super) async fn set_volume_qos(
    State(state): State<ApiState>,
    Path(volume): Path<String>,
    bytes: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let qos: QosLimits = body(&bytes)?;
    apply(
        &state,
        Command::SetVolumeQos {
            name: volume.clone(),
            qos,
        },
    )
    .await?;
    let map = state.map.read().await?;
    Ok(Json(qos_json(volume_of(&map, &volume)?, &map)))
}

pub(super) async fn set_pool_qos(
    State(state): State<ApiState>,
    Path(pool): Path<String>,
    bytes: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let qos: QosLimits = body(&bytes)?;
    apply(
        &state,
        Command::SetPoolQos {
            name: pool.clone(),
            qos,
        },
    )
    .await?;
    let map = state.map.read().await?;
    let p = map
        .pools
        .get(&pool)
        .ok_or_else(|| ApiError::from(MapError::PoolNotFound(pool)))?;
    Ok(Json(
        json!({ "pool": p.name, "qos_default": p.qos_default }),
    ))
}

pub(super) async fn volume_usage(
    State(state): State<ApiState>,
    Path(volume): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(state.volumes.usage(&volume).await?)))
}
