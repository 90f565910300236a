//! `hpchain dev`: a cluster (three nodes unless `--nodes`) of real `hpchain node` processes on
//! loopback, with pool `rbd` and volume `demo`; Ctrl-C or SIGTERM stops
//! everything it started.

use hpchain_engine::daemon::config::ChainConfig;
use hpchain_engine::daemon::{DaemonConfig, DiskConfig, MonitorConfig};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::client::ApiClient;

/// Prints to stdout, ignoring a closed pipe: stopping the nodes matters
/// more than reporting it.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// How `hpchain dev` lays out its cluster.
pub struct DevOptions {
    pub data_dir: PathBuf,
    pub base_port: u16,
    pub iscsi_base_port: u16,
    pub nodes: u64,
    /// Delegate seats; `None`: the existing genesis's, else one per node.
    pub delegates: Option<u64>,
    /// How the nodes' object stores move data.
    pub object_io: hpchain_engine::store::file_io::FileIoKind,
    /// How long a node may be down before its placement groups get new
    /// replicas on the other nodes.
    pub out_after_secs: u64,
    /// How often the nodes sync applied object data.
    pub applied_sync_ms: u64,
}

const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The dev chain: a genesis with one candidate per node and `--delegates`
/// seats (all nodes by default), written once and reused by later runs on
/// the same data directory. With fewer seats than nodes, the last nodes
/// start outside the set: with no votes cast, `State::elect` breaks ties
/// by registration order, and node N registers as candidate N-1.
fn dev_chain(options: &DevOptions) -> Result<PathBuf, String> {
    let dir = options.data_dir.join("chain");
    let genesis = dir.join("genesis.json");
    if let Some(d) = options.delegates.filter(|d| *d > options.nodes) {
        return Err(format!(
            "--delegates {d} is more than --nodes {}: every delegate seat needs a node; give at most {} seats",
            options.nodes, options.nodes
        ));
    }
    if !genesis.exists() {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let seats = options.delegates.unwrap_or(options.nodes);
        hpchain_chain::Genesis::write_dev(
            &dir,
            "hpchain-dev",
            options.nodes as u32,
            seats as u32,
            now_ms,
        )
        .map_err(|e| format!("cannot write the dev chain's genesis: {e}"))?;
    }
    let existing = hpchain_chain::Genesis::load(&genesis)
        .map_err(|e| format!("cannot read the dev chain's genesis: {e}"))?;
    let candidates = existing.candidates.len() as u64;
    let seats = u64::from(existing.delegate_count);
    if candidates != options.nodes {
        return Err(format!(
            "{} has {candidates} candidates (one per node) but {} nodes were asked for; run with --nodes {candidates} or use a new --data-dir",
            genesis.display(),
            options.nodes,
        ));
    }
    if let Some(d) = options.delegates.filter(|d| *d != seats) {
        return Err(format!(
            "{} has {seats} delegate seats but --delegates {d} was asked for; run with --delegates {seats} (or without it) or use a new --data-dir",
            genesis.display(),
        ));
    }
    Ok(dir)
}

fn configs(options: &DevOptions, chain_dir: &Path) -> Vec<DaemonConfig> {
    let port = |i: u64, offset: u16| options.base_port + (i as u16 - 1) * 10 + offset;
    let monitors: Vec<MonitorConfig> = (1..=options.nodes)
        .map(|i| MonitorConfig {
            id: i,
            peer_addr: format!("127.0.0.1:{}", port(i, 1)),
        })
        .collect();
    (1..=options.nodes)
        .map(|i| {
            let dir = options.data_dir.join(format!("node{i}"));
            DaemonConfig {
                id: i,
                name: format!("node{i}"),
                data_dir: dir.clone(),
                peer_addr: format!("127.0.0.1:{}", port(i, 1)),
                api_addr: format!("127.0.0.1:{}", port(i, 0)),
                iscsi_addr: format!(
                    "127.0.0.1:{}",
                    options.iscsi_base_port + (i as u16 - 1) * 10
                ),
                host: None,
                rack: "rack1".into(),
                zone: "zone1".into(),
                disks: vec![DiskConfig {
                    id: (i - 1) as u32,
                    path: dir.join("disk0"),
                    weight: 1.0,
                    io: options.object_io,
                }],
                monitors: monitors.clone(),
                api_token_file: options.data_dir.join("api-token"),
                tick_ms: 100,
                down_after_secs: 5,
                out_after_secs: options.out_after_secs,
                applied_sync_ms: options.applied_sync_ms,
                recovery_max_copies: 2,
                recovery_max_bytes_per_sec: 0,
                chain: Some(ChainConfig {
                    genesis: chain_dir.join("genesis.json"),
                    key: Some(chain_dir.join(format!("delegate-{}.key.json", i - 1))),
                    auto_repair: true,
                }),
            }
        })
        .collect()
}

fn spawn_node(config_path: &Path, log_path: &Path) -> Result<Child, String> {
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the hpchain binary: {e}"))?;
    let log = std::fs::File::create(log_path)
        .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
    let err_log = log.try_clone().map_err(|e| e.to_string())?;
    Command::new(exe)
        .arg("node")
        .arg("--config")
        .arg(config_path)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err_log)
        .spawn()
        .map_err(|e| format!("cannot start hpchain node: {e}"))
}

fn wait_healthy(api: &ApiClient, name: &str) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if api.get("/v1/health").is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{name} did not answer within {READY_TIMEOUT:?}; see its log"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until every node has registered itself in the cluster map, so
/// `ready` means the whole cluster is there.
fn wait_registered(api: &ApiClient, nodes: usize) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let registered = api
            .get("/v1/cluster")
            .ok()
            .and_then(|s| s["nodes"].as_array().map(|n| n.len()))
            .unwrap_or(0);
        if registered >= nodes {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "only {registered} of {nodes} nodes registered within {READY_TIMEOUT:?}; see their logs"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until every placement group has a leader, so that `ready` means
/// I/O is served at once (elections take a second or two after start).
fn wait_active(api: &ApiClient) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let inactive = api
            .get("/v1/pgs")
            .ok()
            .map(|a| a["summary"]["inactive"].as_u64().unwrap_or(0));
        if inactive == Some(0) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} placement groups have no leader after {READY_TIMEOUT:?}; see the nodes' logs",
                inactive.map_or("some".to_string(), |n| n.to_string())
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Creates something unless it exists already (a restarted dev cluster).
fn ensure(api: &ApiClient, path: &str, body: serde_json::Value) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        match api.post(path, &body) {
            Ok(_) => return Ok(()),
            Err(e) if e.status == Some(409) => return Ok(()),
            Err(e)
                if Instant::now() < deadline && (e.status == Some(503) || e.status.is_none()) =>
            {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on a pid we spawned; no memory is touched.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

fn stop_all(children: &mut [(String, Child)]) {
    for (_, child) in children.iter() {
        signal(child, libc::SIGTERM);
    }
    let deadline = Instant::now() + STOP_GRACE;
    for (name, child) in children.iter_mut() {
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Ok(None) => {
                    say!("hpchain dev: {name} did not stop in {STOP_GRACE:?}; killing it");
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
            }
        }
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: i32) {
    STOP.store(true, Ordering::SeqCst);
}

/// Runs the dev cluster until Ctrl-C or SIGTERM.
pub fn run(options: DevOptions) -> Result<(), String> {
    std::fs::create_dir_all(&options.data_dir)
        .map_err(|e| format!("cannot create {}: {e}", options.data_dir.display()))?;
    // SAFETY: installs a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let chain_dir = dev_chain(&options)?;
    let configs = configs(&options, &chain_dir);
    let mut children: Vec<(String, Child)> = Vec::new();
    let started = (|| -> Result<(), String> {
        for config in &configs {
            let path = options.data_dir.join(format!("{}.toml", config.name));
            let text = toml::to_string_pretty(config).map_err(|e| e.to_string())?;
            std::fs::write(&path, text)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            let log = options.data_dir.join(format!("{}.log", config.name));
            children.push((config.name.clone(), spawn_node(&path, &log)?));
        }
        Ok(())
    })();
    let result = started.and_then(|_| setup_and_wait(&options, &configs, &mut children));
    stop_all(&mut children);
    say!("hpchain dev: stopped {} node(s)", children.len());
    result
}

fn setup_and_wait(
    options: &DevOptions,
    configs: &[DaemonConfig],
    children: &mut [(String, Child)],
) -> Result<(), String> {
    let token_path = options.data_dir.join("api-token");
    let first = &configs[0];
    let anonymous = ApiClient::new(&format!("http://{}", first.api_addr), None);
    for config in configs {
        wait_healthy(
            &ApiClient::new(&format!("http://{}", config.api_addr), None),
            &config.name,
        )?;
    }
    drop(anonymous);
    let token = std::fs::read_to_string(&token_path)
        .map_err(|e| format!("cannot read {}: {e}", token_path.display()))?
        .trim()
        .to_string();
    let api = ApiClient::new(&format!("http://{}", first.api_addr), Some(token));
    wait_registered(&api, configs.len())?;
    ensure(
        &api,
        "/v1/pools",
        json!({"name": "rbd", "size": 3, "min_size": 2, "pg_num": 32, "failure_domain": "disk"}),
    )?;
    ensure(
        &api,
        "/v1/volumes",
        json!({"name": "demo", "pool": "rbd", "size_bytes": 1u64 << 30, "block_size": 512}),
    )?;
    api.put("/v1/volumes/demo/iscsi", &json!({}))
        .map_err(|e| format!("exporting demo over iSCSI: {}", e.message))?;
    wait_active(&api)?;

    say!(
        "hpchain dev: a {}-node cluster on loopback\n",
        configs.len()
    );
    let chain_dir = options.data_dir.join("chain");
    if let Ok(g) = hpchain_chain::Genesis::load(&chain_dir.join("genesis.json")) {
        let seats = g.delegate_count as usize;
        let outside = match configs.len() - seats.min(configs.len()) {
            0 => String::new(),
            1 => format!(
                "; node{} is a candidate outside the set until votes elect it",
                configs.len()
            ),
            _ => format!(
                "; node{}..node{} are candidates outside the set until votes elect them",
                seats + 1,
                configs.len()
            ),
        };
        say!(
            "  HP chain: {seats} delegate seats, one candidate per node{outside}; holder keys {}/alloc-*.key.json\n",
            chain_dir.display()
        );
    }
    for ((name, child), config) in children.iter().zip(configs) {
        say!(
            "  {name}  pid {:<7} api http://{}  peer {}  iscsi {}  log {}",
            child.id(),
            config.api_addr,
            config.peer_addr,
            config.iscsi_addr,
            options.data_dir.join(format!("{name}.log")).display()
        );
    }
    say!("\n  pool rbd: 3 replicas, one per disk; volume demo: 1 GiB, thin");
    say!("  demo is exported over iSCSI on every node's portal (no CHAP, any initiator):");
    for config in configs {
        say!(
            "    iscsi://{}/iqn.2026-11.io.hpchain:demo/0",
            config.iscsi_addr
        );
    }
    say!("\nTry:");
    if let Ok(exe) = std::env::current_exe() {
        say!("  alias hpchain={}", exe.display());
    }
    say!(
        "  export HPCHAIN_API=http://{} HPCHAIN_TOKEN_FILE={}",
        first.api_addr,
        token_path.display()
    );
    say!("  hpchain cluster status");
    say!("  hpchain volume ls");
    say!("  hpchain volume create vol1 --pool rbd --size 10G");
    say!("  hpchain volume import ./some.img vol1 && hpchain volume info vol1");
    say!("  iscsi-ls -s iscsi://{}/", configs[0].iscsi_addr);
    say!(
        "  iscsi-inq iscsi://{}/iqn.2026-11.io.hpchain:demo/0",
        configs[0].iscsi_addr
    );
    say!("  hpchain volume export-iscsi vol1 --chap-user alice --chap-secret alice-secret-12 --allow iqn.2026-11.example:host1");
    say!("  hpchain chain audit volume/vol1        # the change, signed, on the HP chain");
    say!("  hpchain chain keygen me.key.json && hpchain chain transfer --key {}/alloc-team.key.json me.key.json 10 --wait", chain_dir.display());
    say!("  hpchain chain vote --key {}/alloc-ecological-development.key.json {}/delegate-0.key.json --wait", chain_dir.display(), chain_dir.display());
    say!("  hpchain trace add --batch milk-1 --stage farm --actor farm-a --place Parma --reading temperature=3.5C");
    say!("  curl -s http://{}/metrics | head", first.api_addr);
    say!("\nhpchain dev: ready (Ctrl-C stops every node)");
    wait_for_stop(children);
    Ok(())
}

fn wait_for_stop(children: &mut [(String, Child)]) {
    let mut reported = vec![false; children.len()];
    while !STOP.load(Ordering::SeqCst) {
        for (i, (name, child)) in children.iter_mut().enumerate() {
            if !reported[i] {
                if let Ok(Some(status)) = child.try_wait() {
                    say!("hpchain dev: {name} exited ({status}); the others keep serving");
                    reported[i] = true;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(dir: &Path, nodes: u64, delegates: Option<u64>) -> DevOptions {
        DevOptions {
            data_dir: dir.to_path_buf(),
            base_port: 9400,
            iscsi_base_port: 3260,
            nodes,
            delegates,
            object_io: Default::default(),
            out_after_secs: 60,
            applied_sync_ms: 1000,
        }
    }

    #[test]
    fn the_dev_genesis_keeps_its_seats_and_a_mismatch_names_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let e = dev_chain(&options(dir.path(), 4, Some(5))).unwrap_err();
        assert!(e.contains("--delegates 5 is more than --nodes 4"), "{e}");
        let chain = dev_chain(&options(dir.path(), 4, Some(3))).unwrap();
        let g = hpchain_chain::Genesis::load(&chain.join("genesis.json")).unwrap();
        assert_eq!((g.candidates.len(), g.delegate_count), (4, 3));
        // Without --delegates a reused directory keeps its seats.
        dev_chain(&options(dir.path(), 4, None)).unwrap();
        let e = dev_chain(&options(dir.path(), 4, Some(4))).unwrap_err();
        assert!(
            e.contains("has 3 delegate seats") && e.contains("--delegates 3"),
            "{e}"
        );
        let e = dev_chain(&options(dir.path(), 3, None)).unwrap_err();
        assert!(
            e.contains("has 4 candidates") && e.contains("--nodes 4"),
            "{e}"
        );
    }
}
