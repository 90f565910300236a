//! The management API: HTTP/JSON under `/v1/`, bearer-token
//! authentication, the OpenAPI document at `/v1/openapi.json`, Prometheus
//! metrics at `/metrics`.
//!
//! Handlers translate HTTP to cluster map commands and back; they never
//! change state except through the map's Raft group, so every node serves
//! the same API with the same answers.

mod chain;
mod error;
mod integrity;
mod iscsi;
mod openapi;
mod snapshots;

use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

pub use error::ApiError;

use crate::cluster::map::{FailureDomain, Pool, Volume};
use crate::cluster::{ClusterMapState, Command, MapClient, Outcome};
use crate::replication::RaftNodeHandle;
use crate::volume::{VolumeClient, IO_MAX_BYTES};

/// What every handler shares.
#[derive(Clone)]
pub struct ApiState {
    map: MapClient,
    token: Arc<String>,
    raft: RaftNodeHandle,
    node_id: u64,
    local_map: Arc<RwLock<ClusterMapState>>,
    volumes: VolumeClient,
    ledger: Option<crate::ledger::LedgerNode>,
    requests: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    extra_metrics: MetricsRegistry,
    integrity: Option<crate::integrity::Repairer>,
}

/// Renders Prometheus families of a service the binary added (the iSCSI
/// portal) into `/metrics`.
pub type MetricsSource = Arc<dyn Fn(&mut String) + Send + Sync>;

/// Where added services register their metrics.
#[derive(Clone, Default)]
pub struct MetricsRegistry(Arc<RwLock<Vec<MetricsSource>>>);

impl MetricsRegistry {
    pub fn register(&self, source: MetricsSource) {
        self.0.write().expect("metrics registry lock").push(source);
    }

    fn render(&self, out: &mut String) {
        for source in self.0.read().expect("metrics registry lock").iter() {
            source(out);
        }
    }
}

/// One Prometheus family in text format: HELP, TYPE and its samples
/// (`labels` without braces).
pub fn metric_family(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: &[(String, u64)],
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

impl ApiState {
    pub fn new(
        map: MapClient,
        token: Arc<String>,
        raft: RaftNodeHandle,
        node_id: u64,
        local_map: Arc<RwLock<ClusterMapState>>,
        volumes: VolumeClient,
    ) -> ApiState {
        ApiState {
            map,
            token,
            raft,
            node_id,
            local_map,
            volumes,
            ledger: None,
            requests: Arc::new(AtomicU64::new(0)),
            errors: Arc::new(AtomicU64::new(0)),
            extra_metrics: MetricsRegistry::default(),
            integrity: None,
        }
    }
}

impl ApiState {
    /// Renders `registry`'s sources into `/metrics` too.
    pub fn with_metrics(mut self, registry: MetricsRegistry) -> ApiState {
        self.extra_metrics = registry;
        self
    }

    /// Serves `POST /v1/volumes/{name}/scrub` with `repairer`.
    pub fn with_integrity(mut self, repairer: crate::integrity::Repairer) -> ApiState {
        self.integrity = Some(repairer);
        self
    }

    /// Serves the HP chain's routes from `ledger`.
    pub fn with_ledger(mut self, ledger: Option<crate::ledger::LedgerNode>) -> ApiState {
        self.ledger = ledger;
        self
    }
}

/// Every route of the API. `/v1/health`, `/v1/openapi.json` and `/metrics`
/// need no token; everything else does.
pub fn router(state: ApiState) -> Router {
    let protected = Router::new()
        .route("/v1/cluster", get(cluster_status))
        .route("/v1/nodes", get(list_nodes))
        .route("/v1/pools", get(list_pools).post(create_pool))
        .route("/v1/pools/:name", get(show_pool).delete(delete_pool))
        .route("/v1/pgs", get(list_pgs))
        .route("/v1/volumes", get(list_volumes).post(create_volume))
        .route(
            "/v1/volumes/:name",
            get(show_volume).patch(resize_volume).delete(delete_volume),
        )
        .route(
            "/v1/volumes/:name/data",
            get(read_data)
                .put(write_data)
                .layer(DefaultBodyLimit::max(IO_MAX_BYTES as usize + 4096)),
        )
        .route("/v1/volumes/:name/discard", post(discard_data))
        .route("/v1/volumes/:name/bench", post(bench_volume))
        .route(
            "/v1/volumes/:name/iscsi",
            get(iscsi::show_export)
                .put(iscsi::export_volume)
                .delete(iscsi::unexport_volume),
        )
        .route("/v1/iscsi", get(iscsi::list_exports))
        .route(
            "/v1/volumes/:name/snapshots",
            get(snapshots::list_snapshots).post(snapshots::create_snapshot),
        )
        .route(
            "/v1/volumes/:name/snapshots/:snap",
            get(snapshots::show_snapshot).delete(snapshots::delete_snapshot),
        )
        .route(
            "/v1/volumes/:name/snapshots/:snap/protect",
            post(snapshots::protect_snapshot),
        )
        .route(
            "/v1/volumes/:name/snapshots/:snap/unprotect",
            post(snapshots::unprotect_snapshot),
        )
        .route(
            "/v1/volumes/:name/snapshots/:snap/rollback",
            post(snapshots::rollback_snapshot),
        )
        .route(
            "/v1/volumes/:name/snapshots/:snap/clone",
            post(snapshots::clone_snapshot),
        )
        .route(
            "/v1/volumes/:name/snapshots/:snap/children",
            get(snapshots::snapshot_children),
        )
        .route(
            "/v1/volumes/:name/snapshots/:snap/data",
            get(snapshots::read_snapshot_data),
        )
        .route(
            "/v1/volumes/:name/snapshots/:snap/iscsi",
            get(iscsi::show_snapshot_export)
                .put(iscsi::export_snapshot)
                .delete(iscsi::unexport_snapshot),
        )
        .route(
            "/v1/volumes/:name/snapshots/:snap/anchor",
            post(snapshots::anchor_snapshot),
        )
        .route("/v1/volumes/:name/flatten", post(snapshots::flatten_volume))
        .route("/v1/volumes/:name/scrub", post(integrity::scrub_volume))
        .route(
            "/v1/volumes/:name/qos",
            get(snapshots::show_qos).put(snapshots::set_volume_qos),
        )
        .route("/v1/volumes/:name/usage", get(snapshots::volume_usage))
        .route(
            "/v1/pools/:name/qos",
            axum::routing::put(snapshots::set_pool_qos),
        )
        .route("/v1/chain", get(chain::chain_status))
        .route("/v1/chain/audit", get(chain::chain_audit))
        .route("/v1/chain/verify", get(chain::chain_verify))
        .route("/v1/chain/repair", post(chain::chain_repair))
        .route("/v1/chain/blocks", get(chain::chain_blocks))
        .route("/v1/chain/blocks/:id", get(chain::chain_block))
        .route("/v1/chain/proof/:tx", get(chain::chain_proof))
        .route("/v1/chain/accounts/:key", get(chain::chain_account))
        .route("/v1/chain/transactions", post(chain::chain_submit))
        .route("/v1/audit", get(chain::audit_list))
        .route(
            "/v1/trace",
            post(chain::trace_add).layer(DefaultBodyLimit::max(TRACE_BODY_MAX_BYTES)),
        )
        .route("/v1/trace/:batch", get(chain::trace_show))
        .route("/v1/trace/:batch/upstream", get(chain::trace_upstream))
        .route("/v1/trace/:batch/downstream", get(chain::trace_downstream))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/openapi.json", get(openapi_document))
        .route("/metrics", get(metrics))
        .merge(protected)
        .layer(middleware::from_fn_with_state(state.clone(), count))
        .with_state(state)
}

async fn authenticate(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(token) if constant_time_eq(token.as_bytes(), state.token.as_bytes()) => {
            next.run(request).await
        }
        Some(_) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "auth.bad_token",
            "the bearer token is wrong; use the token from the cluster's api-token file",
        )
        .into_response(),
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "auth.missing_token",
            "send `Authorization: Bearer <token>`; the token is in the cluster's api-token file",
        )
        .into_response(),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn count(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    state.requests.fetch_add(1, Ordering::Relaxed);
    let response = next.run(request).await;
    if response.status().is_client_error() || response.status().is_server_error() {
        state.errors.fetch_add(1, Ordering::Relaxed);
    }
    response
}

async fn health(State(state): State<ApiState>) -> Json<Value> {
    Json(json!({"ok": true, "node_id": state.node_id}))
}

async fn openapi_document() -> Json<Value> {
    Json(openapi::document())
}

/// Applies a command through the map group; a refusal becomes its error.
/// Commits `command` and waits (briefly) until this node's own map has
/// it too, so that what the caller does next through this node (a write
/// right after a snapshot, a read of a new clone) sees the change.
async fn apply(state: &ApiState, command: Command) -> Result<u64, ApiError> {
    let epoch = match state.map.propose(&command).await? {
        Outcome::Applied { epoch } => epoch,
        Outcome::Refused(e) => return Err(e.into()),
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while state.local_map.read().map(|m| m.epoch).unwrap_or(0) < epoch
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    Ok(epoch)
}

async fn cluster_status(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let map = state.map.read().await?;
    let nodes: Vec<Value> = map.nodes.values().map(|n| json!(n)).collect();
    let pgs = pg_views(&state, &map, None).await;
    Ok(Json(json!({
        "epoch": map.epoch,
        "map_leader": state.map.leader(),
        "answered_by": state.node_id,
        "nodes": nodes,
        "pools": map.pools.len(),
        "volumes": map.volumes.len(),
        "pgs": crate::pg::state::summary(&pgs),
    })))
}

/// Every placement group's state, from the leaders' reports.
async fn pg_views(
    state: &ApiState,
    map: &crate::cluster::ClusterMapState,
    pool: Option<&str>,
) -> Vec<crate::pg::state::PgView> {
    let led = state
        .volumes
        .led_groups_by_node()
        .await
        .into_iter()
        .collect();
    crate::pg::state::pg_views(map, &led, pool)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PgsQuery {
    pool: Option<String>,
}

async fn list_pgs(
    State(state): State<ApiState>,
    Query(q): Query<PgsQuery>,
) -> Result<Json<Value>, ApiError> {
    let map = state.map.read().await?;
    if let Some(pool) = &q.pool {
        if !map.pools.contains_key(pool) {
            return Err(crate::cluster::MapError::PoolNotFound(pool.clone()).into());
        }
    }
    let pgs = pg_views(&state, &map, q.pool.as_deref()).await;
    Ok(Json(json!({
        "summary": crate::pg::state::summary(&pgs),
        "pgs": pgs,
    })))
}

async fn list_nodes(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let map = state.map.read().await?;
    Ok(Json(json!(map.nodes.values().collect::<Vec<_>>())))
}

fn pool_json(pool: &Pool, map: &ClusterMapState) -> Value {
    json!({
        "id": pool.id,
        "name": pool.name,
        "size": pool.size,
        "min_size": pool.min_size,
        "pg_num": pool.pg_num,
        "failure_domain": pool.failure_domain,
        "object_size_bytes": pool.object_size,
        "volumes": map.volumes.values().filter(|v| v.pool == pool.name).count(),
        "qos_default": pool.qos_default,
    })
}

fn volume_json(volume: &Volume) -> Value {
    json!({
        "id": volume.id,
        "name": volume.name,
        "pool": volume.pool,
        "size_bytes": volume.size,
        "block_size": volume.block_size,
        "created_epoch": volume.created_epoch,
        "iscsi": iscsi::export_json(volume),
        "snapshots": volume.snapshots.len(),
        "parent": volume.parent.as_ref().map(|p| json!({
            "volume": p.volume,
            "snapshot": p.snapshot,
            "overlap_bytes": p.overlap,
        })),
        "qos": volume.qos,
    })
}

async fn list_pools(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let map = state.map.read().await?;
    Ok(Json(Value::Array(
        map.pools.values().map(|p| pool_json(p, &map)).collect(),
    )))
}

async fn show_pool(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let map = state.map.read().await?;
    let pool = map
        .pools
        .get(&name)
        .ok_or_else(|| ApiError::from(crate::cluster::MapError::PoolNotFound(name)))?;
    let mut out = pool_json(pool, &map);
    // Asked of every node: only `pool` show pays for it, not `ls`.
    let (answers, missing) = state.volumes.disk_space_by_node().await;
    let raw: u64 = answers.values().map(|s| s.0).sum();
    let raw_available: u64 = answers.values().map(|s| s.1).sum();
    let replicas = u64::from(pool.size.max(1));
    let provisioned: u64 = map
        .volumes
        .values()
        .filter(|v| v.pool == pool.name)
        .map(|v| v.size)
        .sum();
    out["capacity"] = json!({
        "raw_bytes": raw,
        "raw_available_bytes": raw_available,
        "bytes": raw / replicas,
        "available_bytes": raw_available / replicas,
        "provisioned_bytes": provisioned,
        "nodes_missing": missing,
    });
    Ok(Json(out))
}

fn default_size() -> u32 {
    3
}
fn default_min_size() -> u32 {
    2
}
fn default_pg_num() -> u32 {
    64
}
fn default_failure_domain() -> FailureDomain {
    FailureDomain::Host
}
fn default_object_size() -> u64 {
    4 << 20
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreatePool {
    name: String,
    #[serde(default = "default_size")]
    size: u32,
    #[serde(default = "default_min_size")]
    min_size: u32,
    #[serde(default = "default_pg_num")]
    pg_num: u32,
    #[serde(default = "default_failure_domain")]
    failure_domain: FailureDomain,
    #[serde(default = "default_object_size")]
    object_size_bytes: u64,
}

/// Parses a JSON body, turning serde's message into an API error.
/// A batch of 10,000 trace events with readings and documents.
const TRACE_BODY_MAX_BYTES: usize = 32 << 20;

fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request("request.invalid_body", format!("request body: {e}")))
}

async fn create_pool(
    State(state): State<ApiState>,
    bytes: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let request: CreatePool = body(&bytes)?;
    let name = request.name.clone();
    apply(
        &state,
        Command::CreatePool {
            name: request.name,
            size: request.size,
            min_size: request.min_size,
            pg_num: request.pg_num,
            failure_domain: request.failure_domain,
            object_size: request.object_size_bytes,
        },
    )
    .await?;
    let map = state.map.read().await?;
    let pool = map
        .pools
        .get(&name)
        .map(|p| pool_json(p, &map))
        .unwrap_or(Value::Null);
    Ok((StatusCode::CREATED, Json(pool)).into_response())
}

async fn delete_pool(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    apply(&state, Command::DeletePool { name }).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_volumes(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let map = state.map.read().await?;
    Ok(Json(Value::Array(
        map.volumes.values().map(volume_json).collect(),
    )))
}

async fn show_volume(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let map = state.map.read().await?;
    let volume = map
        .volumes
        .get(&name)
        .ok_or_else(|| ApiError::from(crate::cluster::MapError::VolumeNotFound(name.clone())))?;
    let replicas = map
        .pools
        .get(&volume.pool)
        .map(|p| p.size)
        .unwrap_or(1)
        .max(1);
    let mut out = volume_json(volume);
    // Asked of every node: only `volume info` pays for it, not `ls`.
    let (nodes, answers) = state.volumes.allocated_bytes_by_node(&name).await?;
    let all_replicas: u64 = answers.values().sum();
    let missing: Vec<u64> = nodes
        .iter()
        .filter(|n| !answers.contains_key(n))
        .copied()
        .collect();
    // Replicas spread over nodes: the answering nodes hold about
    // answered/all of them. Exact when every node answers.
    let replicas_answered =
        (f64::from(replicas) * answers.len() as f64 / nodes.len().max(1) as f64).max(1.0);
    out["qos"] = snapshots::qos_json(volume, &map);
    out["allocated_bytes_all_replicas"] = json!(all_replicas);
    out["allocated_bytes"] = json!((all_replicas as f64 / replicas_answered).round() as u64);
    out["allocated_nodes_missing"] = json!(missing);
    Ok(Json(out))
}

fn default_block_size() -> u32 {
    512
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateVolume {
    name: String,
    pool: String,
    size_bytes: u64,
    #[serde(default = "default_block_size")]
    block_size: u32,
    #[serde(default)]
    qos: crate::cluster::map::QosLimits,
}

async fn create_volume(
    State(state): State<ApiState>,
    bytes: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let request: CreateVolume = body(&bytes)?;
    let name = request.name.clone();
    apply(
        &state,
        Command::CreateVolume {
            name: request.name,
            pool: request.pool,
            size: request.size_bytes,
            block_size: request.block_size,
            qos: request.qos,
        },
    )
    .await?;
    let map = state.map.read().await?;
    let volume = map
        .volumes
        .get(&name)
        .map(volume_json)
        .unwrap_or(Value::Null);
    Ok((StatusCode::CREATED, Json(volume)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResizeVolume {
    size_bytes: u64,
    /// Shrinking discards the tail; refused unless set.
    #[serde(default)]
    allow_shrink: bool,
}

async fn resize_volume(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    bytes: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: ResizeVolume = body(&bytes)?;
    let current = {
        let map = state.map.read().await?;
        map.volumes
            .get(&name)
            .map(|v| v.size)
            .ok_or_else(|| ApiError::from(crate::cluster::MapError::VolumeNotFound(name.clone())))?
    };
    if request.allow_shrink && request.size_bytes < current && request.size_bytes > 0 {
        // The tail goes first (snapshots keep their versions of it), so a
        // later grow reads zeroes there, never old data.
        state
            .volumes
            .discard(&name, request.size_bytes, current - request.size_bytes)
            .await?;
    }
    apply(
        &state,
        Command::ResizeVolume {
            name: name.clone(),
            size: request.size_bytes,
            allow_shrink: request.allow_shrink,
        },
    )
    .await?;
    let map = state.map.read().await?;
    Ok(Json(
        map.volumes
            .get(&name)
            .map(volume_json)
            .unwrap_or(Value::Null),
    ))
}

/// Frees every object of the volume, then removes it from the map. The
/// refusals the map would give come first, so a refused delete loses
/// nothing; a delete interrupted while freeing can simply be repeated.
async fn delete_volume(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let refused = {
        let mut probe = state.map.read().await?;
        probe
            .apply(&Command::DeleteVolume { name: name.clone() })
            .is_err()
    };
    if refused {
        // Through the map all the same, so that the refusal is audited.
        apply(&state, Command::DeleteVolume { name }).await?;
        return Ok(StatusCode::NO_CONTENT);
    }
    state
        .volumes
        .walk(&name, crate::volume::client::Walk::Purge, 0, u64::MAX)
        .await?;
    apply(&state, Command::DeleteVolume { name }).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct DataRange {
    offset: u64,
    length: Option<u64>,
}

async fn write_data(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(range): Query<DataRange>,
    bytes: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    if range.length.is_some_and(|l| l != bytes.len() as u64) {
        return Err(ApiError::bad_request(
            "request.length_mismatch",
            format!(
                "length={} but the body has {} bytes",
                range.length.unwrap_or(0),
                bytes.len()
            ),
        ));
    }
    state.volumes.write(&name, range.offset, &bytes).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn read_data(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(range): Query<DataRange>,
) -> Result<Response, ApiError> {
    let length = range.length.ok_or_else(|| {
        ApiError::bad_request("request.missing_length", "give ?offset=N&length=M")
    })?;
    let data = state.volumes.read(&name, range.offset, length).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], data).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DiscardRange {
    offset_bytes: u64,
    length_bytes: u64,
}

async fn discard_data(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    bytes: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    let range: DiscardRange = body(&bytes)?;
    state
        .volumes
        .discard(&name, range.offset_bytes, range.length_bytes)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn bench_volume(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    bytes: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let spec: crate::volume::bench::BenchSpec = body(&bytes)?;
    let size = {
        let map = state.map.read().await?;
        map.volumes
            .get(&name)
            .map(|v| v.size)
            .ok_or_else(|| ApiError::from(crate::cluster::MapError::VolumeNotFound(name.clone())))?
    };
    let report = crate::volume::bench::run(&state.volumes, &name, size, spec).await?;
    Ok(Json(json!(report)))
}

/// Prometheus text format.
async fn metrics(State(state): State<ApiState>) -> Response {
    let groups = state.raft.status_async().await.unwrap_or_default();
    let epoch = state.local_map.read().map(|m| m.epoch).unwrap_or(0);
    let node = format!("node=\"{}\"", state.node_id);
    let per_group =
        |value: &dyn Fn(&crate::replication::node_loop::GroupStatus) -> u64| -> Vec<(String, u64)> {
            groups
                .iter()
                .map(|g| (format!("{node},group=\"{}\"", g.group), value(g)))
                .collect()
        };
    let mut out = String::new();
    metric_family(
        &mut out,
        "hpchain_api_requests_total",
        "counter",
        "API requests served by this node.",
        &[(node.clone(), state.requests.load(Ordering::Relaxed))],
    );
    metric_family(
        &mut out,
        "hpchain_api_errors_total",
        "counter",
        "API requests answered with a 4xx or 5xx status.",
        &[(node.clone(), state.errors.load(Ordering::Relaxed))],
    );
    metric_family(
        &mut out,
        "hpchain_map_epoch",
        "gauge",
        "Epoch of the cluster map as this node knows it.",
        &[(node.clone(), epoch)],
    );
    metric_family(
        &mut out,
        "hpchain_raft_is_leader",
        "gauge",
        "1 if this node's replica leads the group.",
        &per_group(&|g| u64::from(g.is_leader)),
    );
    metric_family(
        &mut out,
        "hpchain_raft_leader_changes_total",
        "counter",
        "Leader changes seen by this node's replica.",
        &per_group(&|g| g.leader_changes),
    );
    let led = std::collections::BTreeMap::from([(
        state.node_id,
        groups
            .iter()
            .filter(|g| g.is_leader)
            .cloned()
            .map(crate::net::server::led_group)
            .collect::<Vec<_>>(),
    )]);
    // Read under the lock: a scrape must not copy the whole map.
    let led_views = match state.local_map.read() {
        Ok(map) => crate::pg::state::pg_views(&map, &led, None),
        Err(_) => Vec::new(),
    };
    let led_states = crate::pg::state::summary(
        &led_views
            .into_iter()
            .filter(|v| v.leader_node == Some(state.node_id))
            .collect::<Vec<_>>(),
    );
    metric_family(
        &mut out,
        "hpchain_pg_led",
        "gauge",
        "Placement groups this node leads, by state (sum over nodes for the cluster).",
        &[
            crate::pg::state::CLEAN,
            crate::pg::state::RECOVERING,
            crate::pg::state::DEGRADED,
        ]
        .iter()
        .map(|s| {
            (
                format!("{node},state=\"{s}\""),
                led_states.get(s).copied().unwrap_or(0) as u64,
            )
        })
        .collect::<Vec<_>>(),
    );
    metric_family(
        &mut out,
        "hpchain_raft_applied_index",
        "gauge",
        "Last log index applied by this node's replica.",
        &per_group(&|g| g.applied),
    );
    let qos = state.volumes.qos_stats();
    let _ = writeln!(
        out,
        "# HELP hpchain_volume_qos_throttled_seconds_total Time I/O to the volume waited for its QoS limits on this node.\n# TYPE hpchain_volume_qos_throttled_seconds_total counter"
    );
    for (volume, _, nanos, _) in &qos {
        let _ = writeln!(
            out,
            "hpchain_volume_qos_throttled_seconds_total{{volume=\"{volume}\",{node}}} {:.6}",
            *nanos as f64 / 1e9
        );
    }
    metric_family(
        &mut out,
        "hpchain_volume_qos_throttled_ops_total",
        "counter",
        "I/Os to the volume that waited for its QoS limits on this node.",
        &qos.iter()
            .map(|(volume, _, _, ops)| (format!("volume=\"{volume}\",{node}"), *ops))
            .collect::<Vec<_>>(),
    );
    metric_family(
        &mut out,
        "hpchain_volume_qos_iops_limit",
        "gauge",
        "The total IOPS limit in effect for the volume (0: none).",
        &qos.iter()
            .map(|(volume, limits, _, _)| {
                (
                    format!("volume=\"{volume}\",{node}"),
                    limits.total_iops.rate,
                )
            })
            .collect::<Vec<_>>(),
    );
    state.extra_metrics.render(&mut out);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
