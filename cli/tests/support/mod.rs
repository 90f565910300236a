//! The harness the end-to-end tests share: a `hpchain dev` cluster that
//! is stopped (with every node process) when it goes out of scope, and the
//! CLI run against it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const HPCHAIN: &str = env!("CARGO_BIN_EXE_hpchain");
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// Kills the dev cluster (and so its nodes) even when an assertion fails.
pub struct DevCluster {
    pub child: Child,
    pub node_pids: Vec<i32>,
    pub api: String,
    pub token_file: std::path::PathBuf,
    pub dir: tempfile::TempDir,
    pub base_port: u16,
}

impl Drop for DevCluster {
    fn drop(&mut self) {
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
        for &pid in &self.node_pids {
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// Ports distinct per test process and per test (`slot`); a dev cluster
/// uses base..base+25.
pub fn free_base_port(slot: u16) -> u16 {
    20_000 + (std::process::id() % 700) as u16 * 60 + slot * 30
}

pub fn start(slot: u16) -> DevCluster {
    let dir = tempfile::tempdir().unwrap();
    let base = free_base_port(slot);
    let mut child = Command::new(HPCHAIN)
        .args(["dev", "--data-dir"])
        .arg(dir.path().join("data"))
        .args([
            "--base-port",
            &base.to_string(),
            "--iscsi-base-port",
            &(base + 5).to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Keep draining after start-up so the dev process never writes
        // into a closed pipe.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut node_pids = Vec::new();
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("hpchain dev printed `ready` in time");
        if let Some(rest) = line.split(" pid ").nth(1) {
            node_pids.push(rest.split_whitespace().next().unwrap().parse().unwrap());
        }
        if line.contains("hpchain dev: ready") {
            break;
        }
    }
    assert_eq!(node_pids.len(), 3, "three node processes reported");
    DevCluster {
        child,
        node_pids,
        api: format!("http://127.0.0.1:{base}"),
        token_file: dir.path().join("data/api-token"),
        dir,
        base_port: base,
    }
}

pub fn cli(cluster: &DevCluster, args: &[&str]) -> Output {
    cli_at(&cluster.api, &cluster.token_file, args)
}

pub fn cli_at(api: &str, token_file: &Path, args: &[&str]) -> Output {
    Command::new(HPCHAIN)
        .args(["--api", api, "--token-file"])
        .arg(token_file)
        .args(args)
        .env_remove("HPCHAIN_TOKEN")
        .output()
        .unwrap()
}

pub fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "command failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

pub fn json(output: Output) -> serde_json::Value {
    serde_json::from_str(&ok(output)).unwrap()
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

pub fn alive(pid: i32) -> bool {
    unsafe { libc::kill(pid, 0) == 0 }
}
