//! The built-in load generator behind `hpchain volume bench`: runs a
//! workload through the volume client inside a node, so it measures the
//! replicated data path itself (no HTTP per I/O).

use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

use super::client::{VolumeClient, VolumeError};

/// What to run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchSpec {
    /// `randwrite`, `randread`, `write` (sequential) or `read` (sequential).
    pub pattern: String,
    pub block_size_bytes: u64,
    pub queue_depth: u32,
    pub seconds: u64,
    /// Sequential patterns: stop after one pass over the volume (within
    /// `seconds`), to fill a volume before reads.
    #[serde(default)]
    pub once: bool,
}

/// What it measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub pattern: String,
    pub block_size_bytes: u64,
    pub queue_depth: u32,
    pub ios: u64,
    pub seconds: f64,
    pub iops: f64,
    pub bytes_per_second: f64,
    pub latency_us_p50: u64,
    pub latency_us_p99: u64,
    pub latency_us_max: u64,
}

/// Limits on what a bench may ask, so a request cannot tie a node up.
const SECONDS_MAX: u64 = 120;
const QUEUE_DEPTH_MAX: u32 = 256;

/// Runs `spec` against `volume`, within its first `span_bytes`.
pub async fn run(
    client: &VolumeClient,
    volume: &str,
    size_bytes: u64,
    spec: BenchSpec,
) -> Result<BenchReport, VolumeError> {
    let invalid = |reason: String| VolumeError::Failed {
        volume: volume.to_string(),
        reason,
    };
    let random = match spec.pattern.as_str() {
        "randwrite" | "randread" => true,
        "write" | "read" => false,
        other => {
            return Err(invalid(format!(
                "bench pattern {other:?}: use randwrite, randread, write or read"
            )))
        }
    };
    let writes = spec.pattern.ends_with("write");
    if spec.once && random {
        return Err(invalid(format!(
            "bench --once makes one pass over the volume: use pattern write or read, not {}",
            spec.pattern
        )));
    }
    if spec.block_size_bytes == 0
        || !spec.block_size_bytes.is_multiple_of(512)
        || spec.block_size_bytes > 64 << 20
    {
        return Err(invalid(format!(
            "bench block size {} must be a multiple of 512 up to 64 MiB",
            spec.block_size_bytes
        )));
    }
    if spec.queue_depth == 0
        || spec.queue_depth > QUEUE_DEPTH_MAX
        || spec.seconds == 0
        || spec.seconds > SECONDS_MAX
    {
        return Err(invalid(format!(
            "bench needs queue depth 1..={QUEUE_DEPTH_MAX} and 1..={SECONDS_MAX} seconds"
        )));
    }
    // One pass covers the whole volume, its last block perhaps short;
    // other runs use whole blocks only.
    let blocks = if spec.once {
        size_bytes.div_ceil(spec.block_size_bytes)
    } else {
        size_bytes / spec.block_size_bytes
    };
    if blocks == 0 {
        return Err(invalid("the volume is smaller than one bench block".into()));
    }
    let deadline = Instant::now() + Duration::from_secs(spec.seconds);
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..spec.queue_depth {
        let client = client.clone();
        let volume = volume.to_string();
        let bs = spec.block_size_bytes;
        let qd = u64::from(spec.queue_depth);
        let once = spec.once;
        workers.spawn(async move {
            let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (u64::from(worker) << 32 | 1);
            // Incompressible, as fio's buffers are: a pattern would flatter
            // every layer that compresses (RocksDB's blocks do).
            let data: Vec<u8> = (0..bs.div_ceil(8))
                .flat_map(|_| xorshift(&mut x).to_le_bytes())
                .take(bs as usize)
                .collect();
            let mut latencies = Vec::new();
            let mut bytes = 0u64;
            let mut n = 0u64;
            while Instant::now() < deadline {
                let block = if random {
                    xorshift(&mut x) % blocks
                } else if once && u64::from(worker) + n * qd >= blocks {
                    break;
                } else {
                    (u64::from(worker) + n * qd) % blocks
                };
                let len = bs.min(size_bytes - block * bs);
                let begun = Instant::now();
                if writes {
                    client
                        .write(&volume, block * bs, &data[..len as usize])
                        .await?;
                } else {
                    client.read(&volume, block * bs, len).await?;
                }
                latencies.push(begun.elapsed().as_micros() as u64);
                bytes += len;
                n += 1;
            }
            Ok::<_, VolumeError>((latencies, bytes))
        });
    }
    let mut latencies = Vec::new();
    let mut bytes = 0u64;
    while let Some(done) = workers.join_next().await {
        let (done, done_bytes) = done.map_err(|e| invalid(e.to_string()))??;
        latencies.extend(done);
        bytes += done_bytes;
    }
    let seconds = started.elapsed().as_secs_f64();
    if spec.once && (latencies.len() as u64) < blocks {
        return Err(invalid(format!(
            "bench --once covered {} of {blocks} blocks in {} s and stopped; give it more --seconds (up to {SECONDS_MAX}) or a larger --block-size",
            latencies.len(),
            spec.seconds
        )));
    }
    latencies.sort_unstable();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(0)
    };
    let ios = latencies.len() as u64;
    Ok(BenchReport {
        pattern: spec.pattern,
        block_size_bytes: spec.block_size_bytes,
        queue_depth: spec.queue_depth,
        ios,
        seconds,
        iops: ios as f64 / seconds,
        bytes_per_second: bytes as f64 / seconds,
        latency_us_p50: at(0.50),
        latency_us_p99: at(0.99),
        latency_us_max: latencies.last().copied().unwrap_or(0),
    })
}

/// The next number of a xorshift64 sequence (for data and block choice:
/// fast, and the same on every run).
fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}
