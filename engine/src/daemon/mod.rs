//! The node daemon: wires storage, replication, the cluster map, gRPC and
//! the management API of one `hpchain node` process, and stops them in
//! order on shutdown.
//!
//! This module owns start-up and shutdown only; each part's behaviour
//! lives in its own module.

pub mod config;

use rocksdb::{Options, DB};
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::api::{self, ApiState};
use crate::cluster::health::decide;
use crate::cluster::{
    ClusterMapState, Command, HealthPolicy, Liveness, MapClient, MapMachine, Outcome, MAP_GROUP,
};
use crate::integrity::Repairer;
use crate::net::proto::health_client::HealthClient;
use crate::net::proto::HeartbeatRequest;
use crate::net::{
    ClusterMapService, GrpcTransport, HealthService, IntegrityService, NodeService,
    PlacementGroupService, SpaceService,
};
use crate::pg::backend::PgBackend;
use crate::pg::manager::PgManager;
use crate::replication::RaftNodeHandle;
use crate::replication::{NodeConfig, NodeId, RaftNode};
use crate::volume::VolumeClient;
pub use config::{ConfigError, DaemonConfig, DiskConfig, MonitorConfig};
use std::collections::HashMap;

/// How often the PG manager brings replicas in line with the map (each
/// pass moves a group at most one membership step).
const PG_MANAGE_EVERY: Duration = Duration::from_millis(500);

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("data directory {path}: {source}; check the path and its permissions")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "metadata database {path}: {reason}; is another `hpchain node` using this data directory?"
    )]
    Database { path: String, reason: String },
    #[error("cannot listen on {addr} ({what}): {source}; is the port in use? pick another in the config")]
    Listen {
        addr: String,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("API token file {path}: {source}")]
    Token {
        path: String,
        source: std::io::Error,
    },
    #[error("replication: {0}")]
    Replication(String),
    #[error("{0}")]
    Extension(String),
}

/// What a running node offers to services the binary adds beside the
/// engine's own (the iSCSI portal): the engine does not depend on them.
#[derive(Clone)]
pub struct NodeContext {
    pub config: DaemonConfig,
    /// This node's copy of the cluster map, kept current.
    pub map: Arc<RwLock<ClusterMapState>>,
    pub volumes: VolumeClient,
    /// Families registered here appear in the node's `/metrics`.
    pub metrics: crate::api::MetricsRegistry,
}

/// Starts an added service; its tasks are stopped with the node.
pub type Extension =
    Box<dyn FnOnce(NodeContext) -> Result<Vec<tokio::task::JoinHandle<()>>, String> + Send>;

/// Reads the API token, or creates a random one (mode 0600) at bootstrap.
pub fn load_or_create_token(path: &Path) -> Result<String, DaemonError> {
    let err = |source| DaemonError::Token {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(token) if !token.trim().is_empty() => return Ok(token.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    use rand::Rng;
    let token: String = rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(40)
        .map(char::from)
        .collect();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match file {
        Ok(mut f) => f.write_all(token.as_bytes()).map_err(err)?,
        // Another node of a local cluster created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::thread::sleep(Duration::from_millis(50));
            return load_or_create_token(path);
        }
        Err(e) => return Err(err(e)),
    }
    Ok(token)
}

/// Runs a node until `shutdown` completes.
pub async fn run(
    config: DaemonConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    run_with(config, shutdown, Vec::new()).await
}

/// Runs a node with added services until `shutdown` completes.
pub async fn run_with(
    config: DaemonConfig,
    shutdown: impl Future<Output = ()>,
    extensions: Vec<Extension>,
) -> Result<(), DaemonError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| DaemonError::DataDir {
        path: config.data_dir.display().to_string(),
        source,
    })?;
    let db_path = config.data_dir.join("meta");
    let mut options = Options::default();
    options.create_if_missing(true);
    // Each Raft round ends in a synced write. A write-ahead log file that
    // is reused keeps its size, so its fdatasync needs no file-system
    // journal commit (RocksDB marks recycled records with the file's
    // number, so old records are never replayed).
    options.set_recycle_log_file_num(4);
    let db = Arc::new(
        DB::open(&options, &db_path).map_err(|e| DaemonError::Database {
            path: db_path.display().to_string(),
            reason: e.to_string(),
        })?,
    );
    let token = load_or_create_token(&config.api_token_file)?;

    let monitor = config.is_monitor();
    let machine = if monitor {
        Some(MapMachine::open(db.clone()).map_err(DaemonError::Replication)?)
    } else {
        None
    };
    let map: Arc<RwLock<ClusterMapState>> = match &machine {
        Some(m) => m.shared(),
        None => Arc::new(RwLock::new(ClusterMapState::default())),
    };

    let monitors = config.monitors.clone();
    let book_map = map.clone();
    let addresses = Arc::new(move |node: NodeId| {
        let from_map = book_map
            .read()
            .ok()?
            .nodes
            .get(&node)
            .map(|n| n.peer_addr.clone());
        from_map.or_else(|| {
            monitors
                .iter()
                .find(|m| m.id == node)
                .map(|m| m.peer_addr.clone())
        })
    });
    let transport = Arc::new(GrpcTransport::new(
        config.id,
        tokio::runtime::Handle::current(),
        addresses.clone(),
    ));
    let resolver_map = map.clone();
    let resolver = Arc::new(move |group: u64, peer: u64| {
        if group == MAP_GROUP {
            return Some(peer);
        }
        let disk = u32::try_from(peer.checked_sub(1)?).ok()?;
        resolver_map.read().ok()?.node_of_disk(disk).map(|n| n.id)
    });
    let mut raft_config = NodeConfig::new(config.id);
    raft_config.tick_interval = Duration::from_millis(config.tick_ms);
    let log_dir = config.data_dir.join("raft-log");
    let log = crate::replication::log_store::open_node_log(&log_dir, &db).map_err(|reason| {
        DaemonError::Replication(format!(
            "opening the Raft log {}: {reason}",
            log_dir.display()
        ))
    })?;
    let raft = RaftNode::spawn(raft_config, log, transport, resolver);

    if let Some(machine) = machine {
        let handle = raft.handle();
        let voters: Vec<u64> = config.monitors.iter().map(|m| m.id).collect();
        let id = config.id;
        tokio::task::spawn_blocking(move || {
            handle.create_group(MAP_GROUP, id, voters, Box::new(machine))
        })
        .await
        .map_err(|e| DaemonError::Replication(e.to_string()))?
        .map_err(|e| DaemonError::Replication(e.to_string()))?;
    }

    let listen = |addr: &str, what| {
        let addr = addr.to_string();
        async move {
            tokio::net::TcpListener::bind(&addr)
                .await
                .map_err(|source| DaemonError::Listen { addr, what, source })
        }
    };
    let peer_listener = listen(&config.peer_addr, "node-to-node gRPC").await?;
    let api_listener = listen(&config.api_addr, "management API").await?;

    let ledger = match &config.chain {
        Some(chain) => {
            let peers = config
                .monitors
                .iter()
                .map(|m| (m.id, m.peer_addr.clone()))
                .collect();
            let dir = config.data_dir.join("chain");
            Some(
                crate::ledger::LedgerNode::open(
                    config.id,
                    &chain.genesis,
                    chain.key.as_deref(),
                    &dir,
                    peers,
                    chain.auto_repair,
                )
                .map_err(|e| DaemonError::Replication(e.to_string()))?,
            )
        }
        None => None,
    };
    let mut backends: HashMap<u32, Arc<dyn PgBackend>> = HashMap::new();
    for disk in &config.disks {
        let store = crate::store::DiskStore::open_with(&disk.path, disk.io).map_err(|e| {
            DaemonError::DataDir {
                path: disk.path.display().to_string(),
                source: std::io::Error::other(e.to_string()),
            }
        })?;
        tracing::info!(
            "disk {} at {}: object data through {}",
            disk.id,
            disk.path.display(),
            store.io_backend()
        );
        backends.insert(disk.id, Arc::new(store));
    }
    // Applied entries' data is synced in batches (the Raft log already
    // holds it durably): every applied_sync_ms, one batch per disk.
    let syncing: Vec<Arc<dyn PgBackend>> = backends.values().cloned().collect();
    let sync_every = Duration::from_millis(config.applied_sync_ms);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(sync_every);
        loop {
            tick.tick().await;
            for backend in &syncing {
                let backend = backend.clone();
                let synced = tokio::task::spawn_blocking(move || backend.sync()).await;
                if let Ok(Err(e)) = synced {
                    tracing::warn!(
                        "object store sync failed (entries will be replayed from the log): {e}"
                    );
                }
            }
        }
    });
    let liveness = Liveness::default();
    let ledger_service = ledger.as_ref().map(|l| l.service());
    let local_map_replica = monitor.then(|| raft.handle());
    let mut client = MapClient::new(
        config.id,
        local_map_replica,
        config.monitors.iter().map(|m| m.id).collect(),
        addresses,
    );
    if let Some(ledger) = &ledger {
        client = client.with_auditor(ledger.clone());
    }
    let repairer = Repairer::new(config.id, raft.handle(), map.clone(), backends.clone());
    let grpc = {
        let recovery =
            crate::recovery::RecoveryService::new(backends.clone(), raft.handle(), client.clone())
                .into_server();
        let node = NodeService::new(raft.handle()).into_server();
        let map_service = ClusterMapService::new(raft.handle()).into_server();
        let pg_service = PlacementGroupService::new(raft.handle(), repairer.clone()).into_server();
        let integrity = IntegrityService::new(repairer.clone()).into_server();
        let space =
            SpaceService::new(backends.values().cloned().collect(), raft.handle()).into_server();
        let epoch_map = map.clone();
        let health = HealthService::new(
            liveness.clone(),
            Arc::new(move || epoch_map.read().map(|m| m.epoch).unwrap_or(0)),
        )
        .into_server();
        tokio::spawn(async move {
            // Small Raft and I/O replies must not wait for Nagle + delayed ACK.
            let incoming = match tonic::transport::server::TcpIncoming::from_listener(
                peer_listener,
                true,
                None,
            ) {
                Ok(incoming) => incoming,
                Err(e) => {
                    tracing::error!("node-to-node gRPC listener: {e}");
                    return;
                }
            };
            if let Err(e) = tonic::transport::Server::builder()
                .add_service(node)
                .add_service(map_service)
                .add_service(health)
                .add_service(pg_service)
                .add_service(space)
                .add_service(integrity)
                .add_service(recovery)
                .add_optional_service(ledger_service)
                .serve_with_incoming(incoming)
                .await
            {
                tracing::error!("node-to-node gRPC server stopped: {e}");
            }
        })
    };

    let chain_task = ledger.clone().map(|l| tokio::spawn(l.run()));
    let registration = tokio::spawn(register(client.clone(), config.clone()));
    let watcher = (!monitor).then(|| tokio::spawn(watch_map(client.clone(), map.clone())));
    let policy = config.health_policy();
    let heartbeats = tokio::spawn(send_heartbeats(config.clone(), map.clone(), policy));
    let checker = monitor.then(|| {
        tokio::spawn(check_health(
            raft.handle(),
            client.clone(),
            map.clone(),
            liveness.clone(),
            policy,
        ))
    });

    let copy_limits = crate::recovery::CopyLimits::new(
        config.recovery_max_copies,
        config.recovery_max_bytes_per_sec,
    );
    raft.handle()
        .set_snapshot_installer(Arc::new(crate::recovery::PgInstaller::new(
            tokio::runtime::Handle::current(),
            backends.clone(),
            map.clone(),
            client.clone(),
            copy_limits.clone(),
        )))
        .map_err(|e| DaemonError::Replication(e.to_string()))?;
    let pgs = tokio::spawn(manage_pgs(
        PgManager::new(raft.handle(), backends),
        map.clone(),
    ));
    let volumes =
        VolumeClient::new(config.id, raft.handle(), map.clone()).with_repairer(repairer.clone());
    let mut extension_tasks = Vec::new();
    let metrics = crate::api::MetricsRegistry::default();
    let metrics_repairer = repairer.clone();
    metrics.register(Arc::new(move |out: &mut String| {
        metrics_repairer.render_metrics(out)
    }));
    metrics.register(Arc::new(move |out: &mut String| {
        copy_limits.render_metrics(out)
    }));
    for extension in extensions {
        let context = NodeContext {
            config: config.clone(),
            map: map.clone(),
            volumes: volumes.clone(),
            metrics: metrics.clone(),
        };
        match extension(context) {
            Ok(tasks) => extension_tasks.extend(tasks),
            Err(e) => {
                for task in extension_tasks {
                    task.abort();
                }
                tokio::task::spawn_blocking(move || raft.stop())
                    .await
                    .map_err(|e| DaemonError::Replication(e.to_string()))?;
                return Err(DaemonError::Extension(e));
            }
        }
    }
    let state = ApiState::new(
        client,
        Arc::new(token),
        raft.handle(),
        config.id,
        map.clone(),
        volumes,
    )
    .with_ledger(ledger.clone())
    .with_metrics(metrics)
    .with_integrity(repairer);
    let api = tokio::spawn(async move {
        if let Err(e) = axum::serve(api_listener, api::router(state)).await {
            tracing::error!("management API server stopped: {e}");
        }
    });
    tracing::info!(
        node = config.id,
        api = %config.api_addr,
        peer = %config.peer_addr,
        monitor,
        "hpchain node started"
    );

    shutdown.await;
    tracing::info!(node = config.id, "hpchain node stopping");
    api.abort();
    grpc.abort();
    for task in extension_tasks {
        task.abort();
    }
    registration.abort();
    heartbeats.abort();
    pgs.abort();
    for task in [watcher, checker, chain_task].into_iter().flatten() {
        task.abort();
    }
    tokio::task::spawn_blocking(move || raft.stop())
        .await
        .map_err(|e| DaemonError::Replication(e.to_string()))?;
    Ok(())
}

/// Registers (or re-registers, after a restart) this node in the map.
async fn register(client: MapClient, config: DaemonConfig) {
    let command = Command::RegisterNode {
        node: config.node_info(),
    };
    loop {
        match client.propose(&command).await {
            Ok(Outcome::Applied { epoch }) => {
                tracing::info!(node = config.id, epoch, "registered in the cluster map");
                return;
            }
            Ok(Outcome::Refused(e)) => {
                tracing::error!(node = config.id, "the cluster map refused this node: {e}");
                return;
            }
            Err(e) => {
                tracing::warn!(node = config.id, "registration pending: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Keeps a non-monitor node's copy of the map fresh.
async fn watch_map(client: MapClient, map: Arc<RwLock<ClusterMapState>>) {
    loop {
        if let Ok(fresh) = client.read().await {
            if let Ok(mut current) = map.write() {
                if fresh.epoch >= current.epoch {
                    *current = fresh;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Tells every monitor, once per `heartbeat_every`, that this node lives.
async fn send_heartbeats(
    config: DaemonConfig,
    map: Arc<RwLock<ClusterMapState>>,
    policy: HealthPolicy,
) {
    let mut clients = Vec::new();
    for monitor in &config.monitors {
        if let Ok(endpoint) =
            tonic::transport::Endpoint::from_shared(format!("http://{}", monitor.peer_addr))
        {
            let channel = endpoint
                .connect_timeout(Duration::from_secs(1))
                .timeout(Duration::from_secs(1))
                .connect_lazy();
            clients.push(HealthClient::new(channel));
        }
    }
    let mut tick = tokio::time::interval(policy.heartbeat_every);
    loop {
        tick.tick().await;
        let epoch = map.read().map(|m| m.epoch).unwrap_or(0);
        for client in clients.iter_mut() {
            let request = HeartbeatRequest {
                node: config.id,
                epoch,
            };
            // A monitor that is down simply misses this beat.
            let _ = client.heartbeat(request).await;
        }
    }
}

/// On the map leader: turns silence into `down`/`out` and heartbeats back
/// into `up`/`in`.
async fn check_health(
    raft: RaftNodeHandle,
    client: MapClient,
    map: Arc<RwLock<ClusterMapState>>,
    liveness: Liveness,
    policy: HealthPolicy,
) {
    let mut was_leader = false;
    let mut tick = tokio::time::interval(policy.heartbeat_every);
    loop {
        tick.tick().await;
        let leads = raft
            .status_async()
            .await
            .ok()
            .is_some_and(|groups| groups.iter().any(|g| g.group == MAP_GROUP && g.is_leader));
        if !leads {
            was_leader = false;
            continue;
        }
        let snapshot = match map.read() {
            Ok(m) => m.clone(),
            Err(_) => continue,
        };
        if !was_leader {
            liveness.reset(snapshot.nodes.keys().copied(), std::time::Instant::now());
            was_leader = true;
            continue;
        }
        for change in decide(&snapshot, &liveness, &policy, std::time::Instant::now()) {
            match client.propose(&change).await {
                Ok(_) => tracing::warn!("cluster health: {change:?}"),
                Err(e) => tracing::warn!("cluster health: cannot apply {change:?}: {e}"),
            }
        }
    }
}

/// Keeps this node's PG replicas in line with the map: creates them,
/// moves groups it leads toward their placement, drops removed ones.
async fn manage_pgs(manager: PgManager, map: Arc<RwLock<ClusterMapState>>) {
    let manager = Arc::new(std::sync::Mutex::new(manager));
    let mut last_report = None;
    // The map is copied only when its epoch changes, not on every pass.
    let mut current: Option<Arc<ClusterMapState>> = None;
    loop {
        let epoch = map.read().map(|m| m.epoch).unwrap_or(0);
        if epoch > 0 && current.as_ref().map(|m| m.epoch) != Some(epoch) {
            current = map.read().ok().map(|m| Arc::new(m.clone()));
        }
        if let Some(snapshot) = current.clone() {
            let epoch = snapshot.epoch;
            let manager = manager.clone();
            let result = tokio::task::spawn_blocking(move || {
                manager.lock().expect("pg manager").sync(&snapshot)
            })
            .await;
            match result {
                Ok(Ok(report)) => {
                    let changed = report.created > 0 || !report.destroyed.is_empty();
                    let summary = (report.hosted, report.degraded.len());
                    if changed || last_report != Some(summary) {
                        tracing::info!(
                            epoch,
                            created = report.created,
                            joining = report.joining,
                            destroyed = report.destroyed.len(),
                            hosted = report.hosted,
                            degraded = report.degraded.len(),
                            "placement groups synced with the map"
                        );
                        last_report = Some(summary);
                    }
                }
                Ok(Err(e)) => tracing::error!(epoch, "placement groups: {e}"),
                Err(e) => tracing::error!(epoch, "placement groups: {e}"),
            }
        }
        tokio::time::sleep(PG_MANAGE_EVERY).await;
    }
}
