//! `hpchain-csi`: the hpchain CSI plugin (Identity, Controller, Node) on a
//! unix socket, a client of the hpchain management API (docs/csi.md).

// Every handler answers tonic's `Status` (the trait says so); helpers that
// return it too keep `?` working, whatever its size.
#![allow(clippy::result_large_err)]

mod api;
mod controller;
mod group;
mod identity;
mod names;
mod node;

/// Types and services generated from the CSI spec's csi.proto (v1.12.0).
#[allow(clippy::all, clippy::pedantic)]
pub mod csi {
    tonic::include_proto!("csi.v1");
}

use clap::Parser;
use std::collections::HashMap;
use std::path::PathBuf;
use tokio_stream::wrappers::UnixListenerStream;

#[derive(Parser)]
#[command(name = "hpchain-csi", version, about = "The hpchain CSI plugin")]
struct Args {
    /// Where to serve: unix:///path/to/csi.sock (or a bare path).
    #[arg(long, env = "CSI_ENDPOINT", default_value = "unix:///csi/csi.sock")]
    endpoint: String,
    /// The hpchain management API of any node.
    #[arg(long, env = "HPCHAIN_API", default_value = "http://127.0.0.1:9400")]
    api: String,
    /// File holding the API token (a Kubernetes Secret mounted as a file).
    #[arg(
        long,
        env = "HPCHAIN_TOKEN_FILE",
        default_value = "/etc/hpchain/api-token"
    )]
    token_file: PathBuf,
    /// Which services to serve: controller, node, or all.
    #[arg(long, default_value = "all")]
    mode: String,
    /// This node's id: its iSCSI initiator name (default: from
    /// /etc/iscsi/initiatorname.iscsi, else derived from the host name).
    #[arg(long, env = "CSI_NODE_ID")]
    node_id: Option<String>,
    /// Pool for StorageClasses that name none.
    #[arg(long, default_value = "rbd")]
    pool: String,
    /// Most volumes one node attaches (0: no limit).
    #[arg(long, default_value_t = 0)]
    max_volumes: i64,
    /// The topology value every node and volume shares (one hpchain
    /// cluster is reachable from every node).
    #[arg(long, default_value = "default")]
    zone: String,
    /// CHAP user that exports require (with HPCHAIN_CHAP_SECRET).
    #[arg(long, env = "HPCHAIN_CHAP_USER")]
    chap_user: Option<String>,
    #[arg(long, env = "HPCHAIN_CHAP_SECRET", hide_env_values = true)]
    chap_secret: Option<String>,
}

fn default_node_id() -> String {
    if let Ok(text) = std::fs::read_to_string("/etc/iscsi/initiatorname.iscsi") {
        if let Some(name) = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("InitiatorName="))
        {
            return name.trim().to_string();
        }
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_ascii_lowercase())
        .unwrap_or_else(|_| "node".into());
    format!("iqn.2026-11.io.hpchain.csi:{host}")
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hpchain-csi: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let token = std::fs::read_to_string(&args.token_file)
        .map_err(|e| {
            format!(
                "cannot read the API token from {}: {e}; mount the token Secret there or pass --token-file",
                args.token_file.display()
            )
        })?
        .trim()
        .to_string();
    let api = api::Api::new(&args.api, &token);
    let (controller_on, node_on) = match args.mode.as_str() {
        "all" => (true, true),
        "controller" => (true, false),
        "node" => (false, true),
        other => return Err(format!("--mode {other:?}: use controller, node or all")),
    };
    let topology = HashMap::from([("topology.hpchain.io/zone".to_string(), args.zone.clone())]);
    let chap = match (&args.chap_user, &args.chap_secret) {
        (Some(u), Some(s)) => Some((u.clone(), s.clone())),
        (None, None) => None,
        _ => return Err("give both --chap-user and HPCHAIN_CHAP_SECRET, or neither".into()),
    };
    let path = args
        .endpoint
        .strip_prefix("unix://")
        .unwrap_or(&args.endpoint)
        .to_string();
    if let Some(dir) = std::path::Path::new(&path).parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)
        .map_err(|e| format!("cannot listen on {path}: {e}"))?;

    let mut router = tonic::transport::Server::builder().add_service(
        csi::identity_server::IdentityServer::new(identity::IdentityService {
            api: api.clone(),
            controller: controller_on,
        }),
    );
    if controller_on {
        router = router.add_service(csi::controller_server::ControllerServer::new(
            controller::ControllerService {
                api: api.clone(),
                default_pool: args.pool.clone(),
                topology: topology.clone(),
                chap: chap.clone(),
                max_volumes_per_node: args.max_volumes.max(0) as usize,
            },
        ));
    }
    if controller_on {
        router = router.add_service(csi::group_controller_server::GroupControllerServer::new(
            group::GroupService { api: api.clone() },
        ));
    }
    if node_on {
        let node_id = args.node_id.clone().unwrap_or_else(default_node_id);
        if let Some(problem) = node::initiator_problem() {
            tracing::warn!("node service: volumes cannot be attached here: {problem}");
        }
        router = router.add_service(csi::node_server::NodeServer::new(node::NodeService {
            node_id,
            max_volumes: args.max_volumes,
            topology,
            chap_secret: chap.map(|(_, s)| s),
        }));
    }
    tracing::info!(endpoint = %path, api = %args.api, mode = %args.mode, "hpchain-csi serving");
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    router
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
        .map_err(|e| format!("gRPC server: {e}"))?;
    let _ = std::fs::remove_file(&path);
    Ok(())
}
