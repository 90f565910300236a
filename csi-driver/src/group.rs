//! The CSI GroupController: volume group snapshots, as one hpchain snapshot
//! per source volume, all with the same name (`group-<name>`, sanitized),
//! which is also the group's id.
//!
//! The members are taken one after another, each crash consistent on its
//! own. Across volumes they are as consistent as the writes allow: quiesce
//! the application (fsfreeze) when it needs one point in time across them.

use serde_json::{json, Value};
use tonic::{Request, Response, Status};

use crate::api::Api;
use crate::controller::{delete_snapshot_id, every_snapshot, snapshot_of};
use crate::csi::group_controller_server::GroupController;
use crate::csi::group_controller_service_capability::rpc::Type as Rpc;
use crate::csi::*;
use crate::names::{hpchain_name, required, status_of};

pub struct GroupService {
    pub api: Api,
}

fn member_name(group: &str) -> String {
    hpchain_name(&format!("group-{group}"))
}

/// The group's members (snapshots named after it), sorted by volume.
async fn members(api: &Api, group_id: &str) -> Result<Vec<Value>, Status> {
    let mut found: Vec<Value> = every_snapshot(api)
        .await?
        .into_iter()
        .filter(|s| s["name"].as_str() == Some(group_id))
        .collect();
    found.sort_by(|a, b| a["volume"].as_str().cmp(&b["volume"].as_str()));
    Ok(found)
}

fn group_of(id: &str, members: &[Value]) -> VolumeGroupSnapshot {
    let snapshots: Vec<Snapshot> = members
        .iter()
        .map(|m| Snapshot {
            group_snapshot_id: id.to_string(),
            ..snapshot_of(m)
        })
        .collect();
    let created = snapshots
        .iter()
        .filter_map(|s| s.creation_time)
        .max_by_key(|t| (t.seconds, t.nanos));
    VolumeGroupSnapshot {
        group_snapshot_id: id.to_string(),
        snapshots,
        creation_time: created,
        ready_to_use: true,
    }
}

#[tonic::async_trait]
impl GroupController for GroupService {
    async fn group_controller_get_capabilities(
        &self,
        _request: Request<GroupControllerGetCapabilitiesRequest>,
    ) -> Result<Response<GroupControllerGetCapabilitiesResponse>, Status> {
        Ok(Response::new(GroupControllerGetCapabilitiesResponse {
            capabilities: vec![GroupControllerServiceCapability {
                r#type: Some(group_controller_service_capability::Type::Rpc(
                    group_controller_service_capability::Rpc {
                        r#type: Rpc::CreateDeleteGetVolumeGroupSnapshot as i32,
                    },
                )),
            }],
        }))
    }

    async fn create_volume_group_snapshot(
        &self,
        request: Request<CreateVolumeGroupSnapshotRequest>,
    ) -> Result<Response<CreateVolumeGroupSnapshotResponse>, Status> {
        let r = request.into_inner();
        required(&r.name, "name")?;
        if r.source_volume_ids.is_empty() {
            return Err(Status::invalid_argument("source_volume_ids are required"));
        }
        let id = member_name(&r.name);
        let mut wanted = r.source_volume_ids.clone();
        wanted.sort();
        wanted.dedup();
        let existing = members(&self.api, &id).await?;
        if !existing.is_empty() {
            let have: Vec<&str> = existing
                .iter()
                .filter_map(|m| m["volume"].as_str())
                .collect();
            if have == wanted.iter().map(String::as_str).collect::<Vec<_>>() {
                return Ok(Response::new(CreateVolumeGroupSnapshotResponse {
                    group_snapshot: Some(group_of(&id, &existing)),
                }));
            }
            return Err(Status::already_exists(format!(
                "group snapshot {:?} exists over other volumes ({})",
                r.name,
                have.join(", ")
            )));
        }
        let mut taken = Vec::new();
        for volume in &wanted {
            let made = self
                .api
                .post(
                    format!("/v1/volumes/{volume}/snapshots"),
                    json!({"name": id}),
                )
                .await;
            match made {
                Ok(snapshot) => taken.push(snapshot),
                Err(e) => {
                    // Nothing half-made stays behind.
                    for t in &taken {
                        let _ = delete_snapshot_id(&self.api, &snapshot_of(t).snapshot_id).await;
                    }
                    return Err(status_of(e));
                }
            }
        }
        Ok(Response::new(CreateVolumeGroupSnapshotResponse {
            group_snapshot: Some(group_of(&id, &taken)),
        }))
    }

    async fn delete_volume_group_snapshot(
        &self,
        request: Request<DeleteVolumeGroupSnapshotRequest>,
    ) -> Result<Response<DeleteVolumeGroupSnapshotResponse>, Status> {
        let r = request.into_inner();
        required(&r.group_snapshot_id, "group_snapshot_id")?;
        for member in members(&self.api, &r.group_snapshot_id).await? {
            delete_snapshot_id(&self.api, &snapshot_of(&member).snapshot_id).await?;
        }
        Ok(Response::new(DeleteVolumeGroupSnapshotResponse {}))
    }

    async fn get_volume_group_snapshot(
        &self,
        request: Request<GetVolumeGroupSnapshotRequest>,
    ) -> Result<Response<GetVolumeGroupSnapshotResponse>, Status> {
        let r = request.into_inner();
        required(&r.group_snapshot_id, "group_snapshot_id")?;
        let found = members(&self.api, &r.group_snapshot_id).await?;
        if found.is_empty() {
            return Err(Status::not_found(format!(
                "group snapshot {:?} does not exist",
                r.group_snapshot_id
            )));
        }
        Ok(Response::new(GetVolumeGroupSnapshotResponse {
            group_snapshot: Some(group_of(&r.group_snapshot_id, &found)),
        }))
    }
}
