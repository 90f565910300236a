//! The CSI Identity service: who the plugin is, what it offers, and a
//! Probe that really asks the cluster.

use std::collections::HashMap;
use tonic::{Request, Response, Status};

use crate::api::Api;
use crate::csi::identity_server::Identity;
use crate::csi::plugin_capability::{self, service, volume_expansion};
use crate::csi::*;

pub const DRIVER_NAME: &str = "csi.hpchain.io";

pub struct IdentityService {
    pub api: Api,
    /// Serves the Controller service (a node-only plugin does not).
    pub controller: bool,
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _request: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        Ok(Response::new(GetPluginInfoResponse {
            name: DRIVER_NAME.into(),
            vendor_version: env!("CARGO_PKG_VERSION").into(),
            manifest: HashMap::from([(
                "url".to_string(),
                "docs/csi.md in the hpchain repository".to_string(),
            )]),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _request: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        let mut capabilities = vec![
            PluginCapability {
                r#type: Some(plugin_capability::Type::Service(
                    plugin_capability::Service {
                        r#type: service::Type::VolumeAccessibilityConstraints as i32,
                    },
                )),
            },
            PluginCapability {
                r#type: Some(plugin_capability::Type::VolumeExpansion(
                    plugin_capability::VolumeExpansion {
                        r#type: volume_expansion::Type::Online as i32,
                    },
                )),
            },
        ];
        if self.controller {
            for kind in [
                service::Type::ControllerService,
                service::Type::GroupControllerService,
            ] {
                capabilities.push(PluginCapability {
                    r#type: Some(plugin_capability::Type::Service(
                        plugin_capability::Service {
                            r#type: kind as i32,
                        },
                    )),
                });
            }
        }
        Ok(Response::new(GetPluginCapabilitiesResponse {
            capabilities,
        }))
    }

    /// Ready only when the cluster answers: the API's health and the
    /// cluster status (which needs the map's Raft group).
    async fn probe(
        &self,
        _request: Request<ProbeRequest>,
    ) -> Result<Response<ProbeResponse>, Status> {
        match self.api.get("/v1/cluster".into()).await {
            Ok(_) => Ok(Response::new(ProbeResponse { ready: Some(true) })),
            Err(e) => Err(Status::failed_precondition(format!(
                "the hpchain cluster is not answering: {e}"
            ))),
        }
    }
}
