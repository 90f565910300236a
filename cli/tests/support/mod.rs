//! The harness the end-to-end tests share: a `hpchain dev` cluster whose
//! processes (and any node a test restarted) are stopped on drop, even when
//! an assertion fails, and the CLI run against it.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const HPCHAIN: &str = env!("CARGO_BIN_EXE_hpchain");
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// A `hpchain dev` cluster, plus any node the test restarted itself; all
/// of them are stopped on drop, even when an assertion fails.
pub struct DevCluster {
    pub child: Child,
    pub node_pids: Vec<i32>,
    pub restarted: Vec<Child>,
    /// API port of node 1; node N uses base + 10*(N-1), iSCSI base + 5.
    pub base: u16,
    pub token_file: PathBuf,
    pub data: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        for child in &mut self.restarted {
            let _ = child.kill();
            let _ = child.wait();
        }
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for &pid in &self.node_pids {
            if alive(pid) {
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

impl DevCluster {
    /// The API of node `n` (1-based).
    pub fn api(&self, n: u16) -> String {
        format!("http://127.0.0.1:{}", self.base + 10 * (n - 1))
    }

    /// The iSCSI portal of node `n` (1-based).
    pub fn portal(&self, n: u16) -> String {
        format!("127.0.0.1:{}", self.base + 5 + 10 * (n - 1))
    }
}

/// Ports distinct per test process and per test (`slot`); a dev cluster of
/// four nodes uses base..base+36.
pub fn free_base_port(slot: u16) -> u16 {
    // Below the kernel's ephemeral range (32768-60999), where an outgoing
    // connection could take a port before a node binds it; 160 ports per
    // process: four slots of 40, each up to four nodes 10 apart.
    20_000 + (std::process::id() % 70) as u16 * 160 + slot * 40
}

pub fn start(slot: u16, nodes: usize) -> DevCluster {
    start_with_delegates(slot, nodes, None)
}

/// Like [`start`], with `hpchain dev --delegates` (fewer delegate seats
/// than nodes leaves the last nodes candidates outside the set).
pub fn start_with_delegates(slot: u16, nodes: usize, delegates: Option<usize>) -> DevCluster {
    let seats = delegates.map(|d| d.to_string());
    let args: Vec<&str> = match &seats {
        Some(d) => vec!["--delegates", d],
        None => Vec::new(),
    };
    start_with_args(slot, nodes, &args)
}

/// Like [`start`], with more `hpchain dev` arguments.
pub fn start_with_args(slot: u16, nodes: usize, args: &[&str]) -> DevCluster {
    let dir = tempfile::tempdir().unwrap();
    let base = free_base_port(slot);
    let data = dir.path().join("data");
    let mut command = Command::new(HPCHAIN);
    command.args(["dev", "--data-dir"]).arg(&data).args([
        "--base-port",
        &base.to_string(),
        "--iscsi-base-port",
        &(base + 5).to_string(),
    ]);
    if nodes != 3 {
        command.args(["--nodes", &nodes.to_string()]);
    }
    command.args(args);
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // Built before `ready` so that a cluster that never gets there is
    // stopped on the panic too.
    let mut cluster = DevCluster {
        child,
        node_pids: Vec::new(),
        restarted: Vec::new(),
        base,
        token_file: data.join("api-token"),
        data,
        dir,
    };
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let line = match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => line,
            Err(e) => panic!(
                "hpchain dev did not print `ready` ({e:?}: {}); the nodes' logs end:\n{}",
                if matches!(e, mpsc::RecvTimeoutError::Timeout) {
                    format!("not within {READY_TIMEOUT:?}")
                } else {
                    "it exited".to_string()
                },
                log_tails(&cluster.data)
            ),
        };
        if let Some(rest) = line.split(" pid ").nth(1) {
            let pid = rest.split_whitespace().next().unwrap().parse().unwrap();
            cluster.node_pids.push(pid);
        }
        if line.contains("hpchain dev: ready") {
            break;
        }
    }
    assert_eq!(cluster.node_pids.len(), nodes, "node processes reported");
    cluster
}

/// The last lines of every node's log in a dev data directory.
fn log_tails(data: &Path) -> String {
    let mut out = String::new();
    for n in 1..=9 {
        let path = data.join(format!("node{n}.log"));
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let lines: Vec<&str> = text.lines().collect();
        out.push_str(&format!("--- {}\n", path.display()));
        for line in &lines[lines.len().saturating_sub(15)..] {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

pub fn cli_at(cluster: &DevCluster, node: u16, args: &[&str]) -> Output {
    cli_with(&cluster.api(node), &cluster.token_file, args)
}

/// The CLI against any API address and token file.
pub fn cli_with(api: &str, token_file: &Path, args: &[&str]) -> Output {
    Command::new(HPCHAIN)
        .args(["--api", api, "--token-file"])
        .arg(token_file)
        .args(args)
        .env_remove("HPCHAIN_TOKEN")
        .env_remove("HPCHAIN_API")
        .output()
        .unwrap()
}

pub fn cli(cluster: &DevCluster, args: &[&str]) -> Output {
    cli_at(cluster, 1, args)
}

/// `hpchain` without any API: what an auditor runs on their own machine.
pub fn offline(args: &[&str]) -> Output {
    Command::new(HPCHAIN)
        .args([
            "--api",
            "http://127.0.0.1:9",
            "--token-file",
            "/nonexistent",
        ])
        .args(args)
        .output()
        .unwrap()
}

pub fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "command failed: {}{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stdout).unwrap()
}

pub fn failed(output: Output) -> String {
    assert!(
        !output.status.success(),
        "command succeeded but should have failed: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stderr).unwrap()
}

pub fn json(output: Output) -> Value {
    serde_json::from_str(&ok(output)).unwrap()
}

pub fn alive(pid: i32) -> bool {
    unsafe { libc::kill(pid, 0) == 0 }
}

/// Polls `probe` every 300 ms until it returns Some, or fails naming `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A plain HTTP/1.0 GET, body only.
pub fn http_get(url: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

/// A plain HTTP/1.0 PUT of `body` with the cluster's bearer token; the
/// status line and body of the answer.
pub fn http_put(cluster: &DevCluster, path: &str, body: &[u8]) -> (u16, String) {
    http_send(cluster, "PUT", path, body)
}

/// A plain HTTP/1.0 POST of a JSON `body` with the cluster's bearer token,
/// to node 1; the status and body of the answer.
pub fn http_post(cluster: &DevCluster, path: &str, body: &str) -> (u16, String) {
    http_send(cluster, "POST", path, body.as_bytes())
}

fn http_send(cluster: &DevCluster, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let token = std::fs::read_to_string(&cluster.token_file).unwrap();
    let api = cluster.api(1);
    let host = api.strip_prefix("http://").unwrap();
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {host}\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\n\r\n",
        token.trim(),
        body.len()
    )
    .unwrap();
    stream.write_all(body).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Starts node `n` (1-based) of the cluster again from its config, after
/// it was killed; the cluster's Drop stops it.
pub fn restart_node(cluster: &mut DevCluster, n: usize) {
    let config = cluster.data.join(format!("node{n}.toml"));
    let log =
        std::fs::File::create(cluster.dir.path().join(format!("node{n}-restart.log"))).unwrap();
    let child = Command::new(HPCHAIN)
        .args(["node", "--config"])
        .arg(&config)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    cluster.restarted.push(child);
}

/// `len` bytes that differ per `seed` and per offset, never zero.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
        .collect()
}

/// Writes `data` at `offset` of `volume` through the data API.
pub fn write_at(cluster: &DevCluster, volume: &str, offset: usize, data: &[u8]) {
    let path = format!("/v1/volumes/{volume}/data?offset={offset}");
    let (status, body) = http_put(cluster, &path, data);
    assert_eq!(
        status,
        204,
        "write of {} bytes to {path}: {body}",
        data.len()
    );
}

/// The whole volume or snapshot (`VOL@SNAP`), through `volume export`.
pub fn export(cluster: &DevCluster, spec: &str) -> Vec<u8> {
    let file = cluster
        .dir
        .path()
        .join(format!("{}.img", spec.replace('@', "-")));
    ok(cli(
        cluster,
        &["volume", "export", spec, file.to_str().unwrap()],
    ));
    std::fs::read(&file).unwrap()
}
