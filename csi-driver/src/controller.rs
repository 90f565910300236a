//! The CSI Controller service: volumes, snapshots, clones, expansion, QoS
//! and publication (iSCSI exports with the node's initiator in the ACL),
//! all through the hpchain management API.
//!
//! Ids: a CSI volume id is the hpchain volume name; a snapshot id is
//! `volume@snapshot`. Every call is idempotent, as the spec requires.

use serde_json::{json, Value};
use std::collections::HashMap;
use tonic::{Request, Response, Status};

use crate::api::Api;
use crate::csi::controller_server::Controller;
use crate::csi::controller_service_capability::rpc::Type as Rpc;
use crate::csi::*;
use crate::names::{
    capability_problem, hpchain_name, is_qos_key, qos_from_parameters, required, snapshot_id,
    split_snapshot_id, status_of,
};

/// Size of a volume whose request names none.
const DEFAULT_BYTES: u64 = 1 << 30;
/// Sizes are rounded up to whole MiB (a multiple of both block sizes).
const ROUND_BYTES: u64 = 1 << 20;

pub struct ControllerService {
    pub api: Api,
    /// Pool of volumes whose StorageClass names none.
    pub default_pool: String,
    /// The topology segment every node and volume shares.
    pub topology: HashMap<String, String>,
    /// CHAP the exports require, if set.
    pub chap: Option<(String, String)>,
    /// Most volumes published to one node (0: no limit).
    pub max_volumes_per_node: usize,
}

/// The initiators an export (or a volume's `iscsi` field) allows; none
/// for `null`.
fn initiators(export: &Value) -> Vec<String> {
    export["allowed_initiators"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n.as_str().map(str::to_string))
        .collect()
}

fn round_up(bytes: u64) -> u64 {
    bytes.div_ceil(ROUND_BYTES) * ROUND_BYTES
}

/// The size for a capacity range, or why none fits.
fn size_for(range: Option<&CapacityRange>) -> Result<u64, Status> {
    let Some(r) = range else {
        return Ok(DEFAULT_BYTES);
    };
    let (required, limit) = (r.required_bytes.max(0) as u64, r.limit_bytes.max(0) as u64);
    if limit > 0 && required > limit {
        return Err(Status::out_of_range(format!(
            "required_bytes {required} is above limit_bytes {limit}"
        )));
    }
    let size = if required > 0 {
        round_up(required)
    } else if limit > 0 {
        DEFAULT_BYTES.min(limit / ROUND_BYTES * ROUND_BYTES)
    } else {
        DEFAULT_BYTES
    };
    if size == 0 || (limit > 0 && size > limit) {
        return Err(Status::out_of_range(format!(
            "no size of whole MiB fits {required}..={limit} bytes"
        )));
    }
    Ok(size)
}

fn fits(size: u64, range: Option<&CapacityRange>) -> bool {
    range.is_none_or(|r| {
        size >= r.required_bytes.max(0) as u64
            && (r.limit_bytes <= 0 || size <= r.limit_bytes as u64)
    })
}

fn timestamp(ms: u64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

pub(crate) fn snapshot_of(value: &Value) -> Snapshot {
    let volume = value["volume"].as_str().unwrap_or_default();
    let name = value["name"].as_str().unwrap_or_default();
    Snapshot {
        size_bytes: value["size_bytes"].as_i64().unwrap_or(0),
        snapshot_id: snapshot_id(volume, name),
        source_volume_id: volume.to_string(),
        creation_time: Some(timestamp(value["created_ms"].as_u64().unwrap_or(0))),
        ready_to_use: true,
        group_snapshot_id: String::new(),
    }
}

/// Every snapshot of every volume, as the API lists them.
pub(crate) async fn every_snapshot(api: &Api) -> Result<Vec<Value>, Status> {
    let volumes = api.get("/v1/volumes".into()).await.map_err(status_of)?;
    let mut out = Vec::new();
    for v in volumes.as_array().into_iter().flatten() {
        if v["snapshots"].as_u64().unwrap_or(0) == 0 {
            continue;
        }
        let name = v["name"].as_str().unwrap_or_default();
        match api.get(format!("/v1/volumes/{name}/snapshots")).await {
            Ok(list) => out.extend(list.as_array().cloned().unwrap_or_default()),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(status_of(e)),
        }
    }
    Ok(out)
}

/// Removes snapshot `id` (`volume@snapshot`); gone already counts as done.
/// Volumes made from it are flattened first: in CSI they outlive it
/// (resumable, so a retried call finishes the job).
pub(crate) async fn delete_snapshot_id(api: &Api, id: &str) -> Result<(), Status> {
    let Some((volume, snap)) = split_snapshot_id(id) else {
        return Ok(());
    };
    let path = format!("/v1/volumes/{volume}/snapshots/{snap}");
    let children = match api.get(format!("{path}/children")).await {
        Ok(c) => c.as_array().cloned().unwrap_or_default(),
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(status_of(e)),
    };
    for child in children {
        let name = child["name"].as_str().unwrap_or_default();
        api.post(format!("/v1/volumes/{name}/flatten"), json!({}))
            .await
            .map_err(status_of)?;
    }
    match api.delete(path).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(status_of(e)),
    }
}

/// Paginates `items` (already in a stable order) by an index token.
fn page<T: Clone>(items: &[T], token: &str, max: i32) -> Result<(Vec<T>, String), Status> {
    let start: usize = if token.is_empty() {
        0
    } else {
        token.parse().map_err(|_| {
            Status::aborted(format!(
                "starting_token {token:?} was not given by this plugin"
            ))
        })?
    };
    if start > items.len() {
        return Err(Status::aborted(format!(
            "starting_token {start} is past the {} entries",
            items.len()
        )));
    }
    let end = if max > 0 {
        (start + max as usize).min(items.len())
    } else {
        items.len()
    };
    let next = if end < items.len() {
        end.to_string()
    } else {
        String::new()
    };
    Ok((items[start..end].to_vec(), next))
}

impl ControllerService {
    fn volume_of(&self, v: &Value, source: Option<VolumeContentSource>) -> Volume {
        let mut context = HashMap::new();
        context.insert(
            "pool".to_string(),
            v["pool"].as_str().unwrap_or_default().to_string(),
        );
        Volume {
            capacity_bytes: v["size_bytes"].as_i64().unwrap_or(0),
            volume_id: v["name"].as_str().unwrap_or_default().to_string(),
            volume_context: context,
            content_source: source,
            accessible_topology: vec![Topology {
                segments: self.topology.clone(),
            }],
        }
    }

    async fn get_volume(&self, name: &str) -> Result<Option<Value>, Status> {
        match self.api.get(format!("/v1/volumes/{name}")).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(status_of(e)),
        }
    }

    async fn every_snapshot(&self) -> Result<Vec<Value>, Status> {
        every_snapshot(&self.api).await
    }

    /// An export allowing `nodes`, with the CHAP account if configured.
    fn export_body(&self, nodes: &[String], read_only: bool) -> Value {
        let mut body = json!({"allowed_initiators": nodes, "read_only": read_only});
        if let Some((user, secret)) = &self.chap {
            body["chap_user"] = json!(user);
            body["chap_secret"] = json!(secret);
        }
        body
    }

    /// The initiators a volume is exported to (empty if not exported).
    async fn published_to(&self, name: &str) -> Result<Option<Value>, Status> {
        match self.api.get(format!("/v1/volumes/{name}/iscsi")).await {
            Ok(export) => Ok(Some(export)),
            Err(e) if e.status == 404 || e.status == 409 => Ok(None),
            Err(e) => Err(status_of(e)),
        }
    }

    /// Creates `name` from a snapshot or a volume, or empty.
    async fn create_from_source(
        &self,
        name: &str,
        size: u64,
        qos: &Value,
        source: &VolumeContentSource,
    ) -> Result<(), Status> {
        use volume_content_source::Type;
        match &source.r#type {
            Some(Type::Snapshot(s)) => {
                let (volume, snap) = split_snapshot_id(&s.snapshot_id).ok_or_else(|| {
                    Status::not_found(format!("snapshot {:?} does not exist", s.snapshot_id))
                })?;
                self.api
                    .post(
                        format!("/v1/volumes/{volume}/snapshots/{snap}/clone"),
                        json!({"name": name, "qos": qos}),
                    )
                    .await
                    .map_err(status_of)?;
            }
            Some(Type::Volume(v)) => {
                // An independent copy: clone a temporary snapshot, flatten
                // the clone, drop the snapshot; undo everything on failure.
                let source = &v.volume_id;
                if self.get_volume(source).await?.is_none() {
                    return Err(Status::not_found(format!(
                        "volume {source:?} does not exist"
                    )));
                }
                let temp = format!("csi-clone-{}", &hpchain_name(name));
                let temp: String = temp.chars().take(64).collect();
                let snapshots = format!("/v1/volumes/{source}/snapshots");
                let _ = self.api.delete(format!("{snapshots}/{temp}")).await;
                self.api
                    .post(snapshots.clone(), json!({"name": temp}))
                    .await
                    .map_err(status_of)?;
                let made = async {
                    self.api
                        .post(
                            format!("{snapshots}/{temp}/clone"),
                            json!({"name": name, "qos": qos}),
                        )
                        .await?;
                    self.api
                        .post(format!("/v1/volumes/{name}/flatten"), json!({}))
                        .await
                }
                .await;
                if let Err(e) = made {
                    let _ = self.api.delete(format!("/v1/volumes/{name}")).await;
                    let _ = self.api.delete(format!("{snapshots}/{temp}")).await;
                    return Err(status_of(e));
                }
                self.api
                    .delete(format!("{snapshots}/{temp}"))
                    .await
                    .map_err(status_of)?;
            }
            None => {
                return Err(Status::invalid_argument(
                    "volume_content_source names neither a snapshot nor a volume",
                ))
            }
        }
        let created = self.get_volume(name).await?.unwrap_or(Value::Null);
        if created["size_bytes"].as_u64().unwrap_or(0) < size {
            self.api
                .patch(format!("/v1/volumes/{name}"), json!({"size_bytes": size}))
                .await
                .map_err(status_of)?;
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn create_volume(
        &self,
        request: Request<CreateVolumeRequest>,
    ) -> Result<Response<CreateVolumeResponse>, Status> {
        let r = request.into_inner();
        required(&r.name, "name")?;
        if r.volume_capabilities.is_empty() {
            return Err(Status::invalid_argument("volume_capabilities are required"));
        }
        for c in &r.volume_capabilities {
            if let Some(problem) = capability_problem(c) {
                return Err(Status::invalid_argument(problem));
            }
        }
        let mut pool = self.default_pool.clone();
        let mut qos = serde_json::Map::new();
        qos_from_parameters(&r.parameters, &mut qos)?;
        // A VolumeAttributesClass at creation: QoS keys only.
        if let Some(bad) = r.mutable_parameters.keys().find(|k| !is_qos_key(k)) {
            return Err(Status::invalid_argument(format!(
                "mutable parameter {bad:?} is not known; only QoS keys (iops, readIops, writeIops, bps, readBps, writeBps, with Burst and BurstSeconds) can be set"
            )));
        }
        qos_from_parameters(&r.mutable_parameters, &mut qos)?;
        for (key, value) in &r.parameters {
            match key.as_str() {
                "pool" => pool = value.clone(),
                "fsType" | "csi.storage.k8s.io/fstype" => {}
                k if is_qos_key(k) || k.starts_with("csi.storage.k8s.io/") => {}
                other => {
                    return Err(Status::invalid_argument(format!(
                        "parameter {other:?} is not known; use pool, fsType, iops, readIops, writeIops, bps, readBps, writeBps (each with Burst and BurstSeconds)"
                    )))
                }
            }
        }
        let size = size_for(r.capacity_range.as_ref())?;
        let name = hpchain_name(&r.name);
        let qos = Value::Object(qos);
        if let Some(existing) = self.get_volume(&name).await? {
            let have = existing["size_bytes"].as_u64().unwrap_or(0);
            if !fits(have, r.capacity_range.as_ref()) {
                return Err(Status::already_exists(format!(
                    "volume {name:?} exists with {have} bytes, outside the requested range"
                )));
            }
            return Ok(Response::new(CreateVolumeResponse {
                volume: Some(self.volume_of(&existing, r.volume_content_source)),
            }));
        }
        match &r.volume_content_source {
            Some(source) => self.create_from_source(&name, size, &qos, source).await?,
            None => {
                self.api
                    .post(
                        "/v1/volumes".into(),
                        json!({"name": name, "pool": pool, "size_bytes": size, "qos": qos}),
                    )
                    .await
                    .map_err(|e| match e.code.as_str() {
                        "pool.not_found" => Status::invalid_argument(e.to_string()),
                        _ => status_of(e),
                    })?;
            }
        }
        let created = self
            .get_volume(&name)
            .await?
            .ok_or_else(|| Status::internal(format!("volume {name:?} vanished after creation")))?;
        Ok(Response::new(CreateVolumeResponse {
            volume: Some(self.volume_of(&created, r.volume_content_source)),
        }))
    }

    async fn delete_volume(
        &self,
        request: Request<DeleteVolumeRequest>,
    ) -> Result<Response<DeleteVolumeResponse>, Status> {
        let id = request.into_inner().volume_id;
        required(&id, "volume_id")?;
        if self.get_volume(&id).await?.is_none() {
            return Ok(Response::new(DeleteVolumeResponse {}));
        }
        if let Some(export) = self.published_to(&id).await? {
            let nodes = initiators(&export).len();
            if nodes > 0 {
                return Err(Status::failed_precondition(format!(
                    "volume {id:?} is still published to {nodes} node(s); unpublish it first"
                )));
            }
            self.api
                .delete(format!("/v1/volumes/{id}/iscsi"))
                .await
                .map_err(status_of)?;
        }
        match self.api.delete(format!("/v1/volumes/{id}")).await {
            Ok(_) => Ok(Response::new(DeleteVolumeResponse {})),
            Err(e) if e.is_not_found() => Ok(Response::new(DeleteVolumeResponse {})),
            Err(e) => Err(status_of(e)),
        }
    }

    async fn controller_publish_volume(
        &self,
        request: Request<ControllerPublishVolumeRequest>,
    ) -> Result<Response<ControllerPublishVolumeResponse>, Status> {
        let r = request.into_inner();
        required(&r.volume_id, "volume_id")?;
        required(&r.node_id, "node_id")?;
        let capability = r
            .volume_capability
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("volume_capability is required"))?;
        if let Some(problem) = capability_problem(capability) {
            return Err(Status::invalid_argument(problem));
        }
        if self.get_volume(&r.volume_id).await?.is_none() {
            return Err(Status::not_found(format!(
                "volume {:?} does not exist",
                r.volume_id
            )));
        }
        // Node ids are the nodes' initiator names (NodeGetInfo).
        if !r.node_id.starts_with("iqn.") {
            return Err(Status::not_found(format!(
                "node {:?} is not an hpchain CSI node (node ids are initiator IQNs)",
                r.node_id
            )));
        }
        let current = self.published_to(&r.volume_id).await?;
        let mut nodes = current.as_ref().map(initiators).unwrap_or_default();
        let single = capability
            .access_mode
            .as_ref()
            .and_then(|m| volume_capability::access_mode::Mode::try_from(m.mode).ok())
            .is_some_and(|m| {
                use volume_capability::access_mode::Mode::*;
                matches!(
                    m,
                    SingleNodeWriter
                        | SingleNodeReaderOnly
                        | SingleNodeSingleWriter
                        | SingleNodeMultiWriter
                )
            });
        let read_only = r.readonly;
        if let Some(export) = &current {
            let was_read_only = export["read_only"].as_bool() == Some(true);
            if nodes.contains(&r.node_id) && was_read_only != read_only {
                return Err(Status::already_exists(format!(
                    "volume {:?} is already published to {} with readonly={was_read_only}",
                    r.volume_id, r.node_id
                )));
            }
        }
        if single && nodes.iter().any(|n| n != &r.node_id) {
            return Err(Status::failed_precondition(format!(
                "volume {:?} is published to {} and its access mode allows one node",
                r.volume_id,
                nodes.join(", ")
            )));
        }
        if !nodes.contains(&r.node_id) {
            if self.max_volumes_per_node > 0 {
                let exports = self.api.get("/v1/iscsi".into()).await.map_err(status_of)?;
                let attached = exports
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|e| initiators(e).contains(&r.node_id))
                    .count();
                if attached >= self.max_volumes_per_node {
                    return Err(Status::resource_exhausted(format!(
                        "node {} already has {attached} volumes published, its limit (--max-volumes)",
                        r.node_id
                    )));
                }
            }
            nodes.push(r.node_id.clone());
        }
        let body = self.export_body(&nodes, read_only);
        let export = self
            .api
            .put(format!("/v1/volumes/{}/iscsi", r.volume_id), body)
            .await
            .map_err(status_of)?;
        let portals: Vec<String> = export["portals"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str().map(str::to_string))
            .collect();
        let mut context = HashMap::new();
        context.insert(
            "targetIqn".to_string(),
            export["target"].as_str().unwrap_or_default().to_string(),
        );
        context.insert("lun".to_string(), "0".to_string());
        context.insert("portals".to_string(), portals.join(","));
        if let Some((user, _)) = &self.chap {
            context.insert("chapUser".to_string(), user.clone());
        }
        Ok(Response::new(ControllerPublishVolumeResponse {
            publish_context: context,
        }))
    }

    async fn controller_unpublish_volume(
        &self,
        request: Request<ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<ControllerUnpublishVolumeResponse>, Status> {
        let r = request.into_inner();
        required(&r.volume_id, "volume_id")?;
        let Some(export) = self.published_to(&r.volume_id).await? else {
            return Ok(Response::new(ControllerUnpublishVolumeResponse {}));
        };
        let nodes: Vec<String> = initiators(&export)
            .into_iter()
            .filter(|n| !r.node_id.is_empty() && n != &r.node_id)
            .collect();
        let path = format!("/v1/volumes/{}/iscsi", r.volume_id);
        let result = if nodes.is_empty() {
            self.api.delete(path).await
        } else {
            let read_only = export["read_only"].as_bool().unwrap_or(false);
            self.api
                .put(path, self.export_body(&nodes, read_only))
                .await
        };
        match result {
            Ok(_) => Ok(Response::new(ControllerUnpublishVolumeResponse {})),
            Err(e) if e.status == 404 || e.status == 409 => {
                Ok(Response::new(ControllerUnpublishVolumeResponse {}))
            }
            Err(e) => Err(status_of(e)),
        }
    }

    async fn validate_volume_capabilities(
        &self,
        request: Request<ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<ValidateVolumeCapabilitiesResponse>, Status> {
        let r = request.into_inner();
        required(&r.volume_id, "volume_id")?;
        if r.volume_capabilities.is_empty() {
            return Err(Status::invalid_argument("volume_capabilities are required"));
        }
        if self.get_volume(&r.volume_id).await?.is_none() {
            return Err(Status::not_found(format!(
                "volume {:?} does not exist",
                r.volume_id
            )));
        }
        let problems: Vec<String> = r
            .volume_capabilities
            .iter()
            .filter_map(capability_problem)
            .collect();
        if !problems.is_empty() {
            return Ok(Response::new(ValidateVolumeCapabilitiesResponse {
                confirmed: None,
                message: problems.join("; "),
            }));
        }
        Ok(Response::new(ValidateVolumeCapabilitiesResponse {
            confirmed: Some(validate_volume_capabilities_response::Confirmed {
                volume_context: r.volume_context,
                volume_capabilities: r.volume_capabilities,
                parameters: r.parameters,
                mutable_parameters: r.mutable_parameters,
            }),
            message: String::new(),
        }))
    }

    async fn list_volumes(
        &self,
        request: Request<ListVolumesRequest>,
    ) -> Result<Response<ListVolumesResponse>, Status> {
        let r = request.into_inner();
        let volumes = self
            .api
            .get("/v1/volumes".into())
            .await
            .map_err(status_of)?;
        let mut all: Vec<Value> = volumes.as_array().cloned().unwrap_or_default();
        all.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        let (page, next) = page(&all, &r.starting_token, r.max_entries)?;
        let mut entries = Vec::with_capacity(page.len());
        for v in &page {
            let published = initiators(&v["iscsi"]);
            entries.push(list_volumes_response::Entry {
                volume: Some(self.volume_of(v, None)),
                status: Some(list_volumes_response::VolumeStatus {
                    published_node_ids: published,
                    volume_condition: None,
                }),
            });
        }
        Ok(Response::new(ListVolumesResponse {
            entries,
            next_token: next,
        }))
    }

    /// Free bytes of the pool: the free space of every node's disks over
    /// the replica count (thin volumes may promise more).
    async fn get_capacity(
        &self,
        request: Request<GetCapacityRequest>,
    ) -> Result<Response<GetCapacityResponse>, Status> {
        let r = request.into_inner();
        for c in &r.volume_capabilities {
            if capability_problem(c).is_some() {
                return Ok(Response::new(GetCapacityResponse::default()));
            }
        }
        let pool = r
            .parameters
            .get("pool")
            .cloned()
            .unwrap_or_else(|| self.default_pool.clone());
        let found = self
            .api
            .get(format!("/v1/pools/{pool}"))
            .await
            .map_err(status_of)?;
        let capacity = &found["capacity"];
        Ok(Response::new(GetCapacityResponse {
            available_capacity: capacity["available_bytes"].as_i64().unwrap_or(0),
            maximum_volume_size: None,
            minimum_volume_size: Some(ROUND_BYTES as i64),
        }))
    }

    async fn controller_get_capabilities(
        &self,
        _request: Request<ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<ControllerGetCapabilitiesResponse>, Status> {
        let rpcs = [
            Rpc::CreateDeleteVolume,
            Rpc::PublishUnpublishVolume,
            Rpc::ListVolumes,
            Rpc::CreateDeleteSnapshot,
            Rpc::ListSnapshots,
            Rpc::CloneVolume,
            Rpc::PublishReadonly,
            Rpc::ExpandVolume,
            Rpc::ListVolumesPublishedNodes,
            Rpc::GetVolume,
            Rpc::SingleNodeMultiWriter,
            Rpc::ModifyVolume,
            Rpc::GetSnapshot,
            Rpc::GetCapacity,
        ];
        Ok(Response::new(ControllerGetCapabilitiesResponse {
            capabilities: rpcs
                .iter()
                .map(|&t| ControllerServiceCapability {
                    r#type: Some(controller_service_capability::Type::Rpc(
                        controller_service_capability::Rpc { r#type: t as i32 },
                    )),
                })
                .collect(),
        }))
    }

    async fn create_snapshot(
        &self,
        request: Request<CreateSnapshotRequest>,
    ) -> Result<Response<CreateSnapshotResponse>, Status> {
        let r = request.into_inner();
        required(&r.name, "name")?;
        required(&r.source_volume_id, "source_volume_id")?;
        let name = hpchain_name(&r.name);
        for existing in self.every_snapshot().await? {
            if existing["name"].as_str() == Some(name.as_str()) {
                if existing["volume"].as_str() == Some(r.source_volume_id.as_str()) {
                    return Ok(Response::new(CreateSnapshotResponse {
                        snapshot: Some(snapshot_of(&existing)),
                    }));
                }
                return Err(Status::already_exists(format!(
                    "snapshot name {:?} is taken by a snapshot of volume {}",
                    r.name, existing["volume"]
                )));
            }
        }
        if self.get_volume(&r.source_volume_id).await?.is_none() {
            return Err(Status::not_found(format!(
                "volume {:?} does not exist",
                r.source_volume_id
            )));
        }
        let created = self
            .api
            .post(
                format!("/v1/volumes/{}/snapshots", r.source_volume_id),
                json!({"name": name}),
            )
            .await
            .map_err(status_of)?;
        Ok(Response::new(CreateSnapshotResponse {
            snapshot: Some(snapshot_of(&created)),
        }))
    }

    async fn delete_snapshot(
        &self,
        request: Request<DeleteSnapshotRequest>,
    ) -> Result<Response<DeleteSnapshotResponse>, Status> {
        let id = request.into_inner().snapshot_id;
        required(&id, "snapshot_id")?;
        delete_snapshot_id(&self.api, &id).await?;
        Ok(Response::new(DeleteSnapshotResponse {}))
    }

    async fn list_snapshots(
        &self,
        request: Request<ListSnapshotsRequest>,
    ) -> Result<Response<ListSnapshotsResponse>, Status> {
        let r = request.into_inner();
        let mut all: Vec<Value> = if !r.snapshot_id.is_empty() {
            match split_snapshot_id(&r.snapshot_id) {
                None => Vec::new(),
                Some((v, s)) => {
                    match self.api.get(format!("/v1/volumes/{v}/snapshots/{s}")).await {
                        Ok(snap) => vec![snap],
                        Err(e) if e.is_not_found() => Vec::new(),
                        Err(e) => return Err(status_of(e)),
                    }
                }
            }
        } else if !r.source_volume_id.is_empty() {
            match self
                .api
                .get(format!("/v1/volumes/{}/snapshots", r.source_volume_id))
                .await
            {
                Ok(list) => list.as_array().cloned().unwrap_or_default(),
                Err(e) if e.is_not_found() => Vec::new(),
                Err(e) => return Err(status_of(e)),
            }
        } else {
            self.every_snapshot().await?
        };
        if !r.source_volume_id.is_empty() {
            all.retain(|s| s["volume"].as_str() == Some(r.source_volume_id.as_str()));
        }
        all.sort_by_key(|s| snapshot_of(s).snapshot_id);
        let (page, next) = page(&all, &r.starting_token, r.max_entries)?;
        Ok(Response::new(ListSnapshotsResponse {
            entries: page
                .iter()
                .map(|s| list_snapshots_response::Entry {
                    snapshot: Some(snapshot_of(s)),
                })
                .collect(),
            next_token: next,
        }))
    }

    async fn get_snapshot(
        &self,
        request: Request<GetSnapshotRequest>,
    ) -> Result<Response<GetSnapshotResponse>, Status> {
        let id = request.into_inner().snapshot_id;
        required(&id, "snapshot_id")?;
        let (volume, snap) = split_snapshot_id(&id)
            .ok_or_else(|| Status::not_found(format!("snapshot {id:?} does not exist")))?;
        let found = self
            .api
            .get(format!("/v1/volumes/{volume}/snapshots/{snap}"))
            .await
            .map_err(status_of)?;
        Ok(Response::new(GetSnapshotResponse {
            snapshot: Some(snapshot_of(&found)),
        }))
    }

    async fn controller_expand_volume(
        &self,
        request: Request<ControllerExpandVolumeRequest>,
    ) -> Result<Response<ControllerExpandVolumeResponse>, Status> {
        let r = request.into_inner();
        required(&r.volume_id, "volume_id")?;
        let range = r
            .capacity_range
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("capacity_range is required"))?;
        let wanted = size_for(Some(range))?;
        let current = self
            .get_volume(&r.volume_id)
            .await?
            .ok_or_else(|| Status::not_found(format!("volume {:?} does not exist", r.volume_id)))?;
        let mut size = current["size_bytes"].as_u64().unwrap_or(0);
        if wanted > size {
            let grown = self
                .api
                .patch(
                    format!("/v1/volumes/{}", r.volume_id),
                    json!({"size_bytes": wanted}),
                )
                .await
                .map_err(status_of)?;
            size = grown["size_bytes"].as_u64().unwrap_or(wanted);
        }
        let block = r.volume_capability.as_ref().is_some_and(|c| {
            matches!(c.access_type, Some(volume_capability::AccessType::Block(_)))
        });
        Ok(Response::new(ControllerExpandVolumeResponse {
            capacity_bytes: size as i64,
            node_expansion_required: !block,
        }))
    }

    async fn controller_get_volume(
        &self,
        request: Request<ControllerGetVolumeRequest>,
    ) -> Result<Response<ControllerGetVolumeResponse>, Status> {
        let id = request.into_inner().volume_id;
        required(&id, "volume_id")?;
        let v = self
            .get_volume(&id)
            .await?
            .ok_or_else(|| Status::not_found(format!("volume {id:?} does not exist")))?;
        let published = self
            .published_to(&id)
            .await?
            .as_ref()
            .map(initiators)
            .unwrap_or_default();
        Ok(Response::new(ControllerGetVolumeResponse {
            volume: Some(self.volume_of(&v, None)),
            status: Some(controller_get_volume_response::VolumeStatus {
                published_node_ids: published,
                volume_condition: Some(VolumeCondition {
                    abnormal: false,
                    message: "replicated; see `hpchain volume info` for placement".into(),
                }),
            }),
        }))
    }

    async fn controller_modify_volume(
        &self,
        request: Request<ControllerModifyVolumeRequest>,
    ) -> Result<Response<ControllerModifyVolumeResponse>, Status> {
        let r = request.into_inner();
        required(&r.volume_id, "volume_id")?;
        if let Some(bad) = r.mutable_parameters.keys().find(|k| !is_qos_key(k)) {
            return Err(Status::invalid_argument(format!(
                "mutable parameter {bad:?} is not known; only QoS keys (iops, readIops, writeIops, bps, readBps, writeBps, with Burst and BurstSeconds) can change"
            )));
        }
        let path = format!("/v1/volumes/{}/qos", r.volume_id);
        let current = self.api.get(path.clone()).await.map_err(status_of)?;
        let mut limits = current["volume"].as_object().cloned().unwrap_or_default();
        qos_from_parameters(&r.mutable_parameters, &mut limits)?;
        self.api
            .put(path, Value::Object(limits))
            .await
            .map_err(status_of)?;
        Ok(Response::new(ControllerModifyVolumeResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(required: i64, limit: i64) -> CapacityRange {
        CapacityRange {
            required_bytes: required,
            limit_bytes: limit,
        }
    }

    #[test]
    fn sizes_round_up_to_whole_mib_within_the_range() {
        assert_eq!(size_for(None).unwrap(), DEFAULT_BYTES);
        assert_eq!(size_for(Some(&range(1, 0))).unwrap(), 1 << 20);
        assert_eq!(size_for(Some(&range(0, 5 << 20))).unwrap(), 5 << 20);
        assert_eq!(size_for(Some(&range(3 << 20, 3 << 20))).unwrap(), 3 << 20);
        assert_eq!(
            size_for(Some(&range(10, 5))).unwrap_err().code(),
            tonic::Code::OutOfRange
        );
        assert_eq!(
            size_for(Some(&range(1000, 2000))).unwrap_err().code(),
            tonic::Code::OutOfRange
        );
        assert!(fits(2 << 20, Some(&range(1 << 20, 0))));
        assert!(!fits(2 << 20, Some(&range(1 << 20, 1 << 20))));
    }

    #[test]
    fn pages_follow_their_tokens_and_refuse_foreign_ones() {
        let items: Vec<u32> = (0..5).collect();
        let (first, next) = page(&items, "", 2).unwrap();
        assert_eq!((first, next.as_str()), (vec![0, 1], "2"));
        let (rest, next) = page(&items, "2", 0).unwrap();
        assert_eq!((rest, next.as_str()), (vec![2, 3, 4], ""));
        assert_eq!(
            page(&items, "x", 1).unwrap_err().code(),
            tonic::Code::Aborted
        );
        assert_eq!(
            page(&items, "9", 1).unwrap_err().code(),
            tonic::Code::Aborted
        );
    }
}
