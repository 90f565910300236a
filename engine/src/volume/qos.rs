//! Per-volume quality of service: limits on read, write and total IOPS and
//! bytes per second, each with an optional burst, enforced where I/O enters
//! a volume.
//!
//! Why: volumes share disks, so one busy volume must not starve the others,
//! and operators (through the API, Cinder QoS specs or a CSI StorageClass)
//! promise tenants a rate. An I/O over its limit *waits* until it may
//! proceed; it never fails because of QoS, so a guest sees latency, not
//! errors. Limits change live, without reopening the volume.
//!
//! The algorithm is QEMU's block throttling (`util/throttle.c`), onto which
//! Cinder's front-end QoS specs map one for one: `{total,read,write}_iops_sec`
//! and `..._bytes_sec` are the `rate` of `*_iops` and `*_bps`, `..._max` their
//! `burst`, `..._max_length` their `burst_seconds` (`size_iops_sec` has no
//! counterpart here). In short:
//! - one leaky bucket per limit; its level drains at `rate` per second;
//! - an operation may start when, in every bucket that applies to it, the
//!   level is at most the bucket's capacity; it then adds its cost (1 in an
//!   IOPS bucket, its bytes in a bytes/s bucket). An operation larger than a
//!   capacity therefore still passes once the bucket has drained, and the
//!   operations after it repay the excess;
//! - capacity: `burst * burst_seconds` with a burst; without one, `rate / 10`
//!   (at least one operation or byte), so that a volume without a burst
//!   exceeds its rate by at most a tenth over any second;
//! - with a burst, a second bucket draining at `burst`, of capacity
//!   `burst / 10`, holds the peak to `burst` per second.
//!
//! Where this differs from QEMU, and why:
//! - QEMU checks the peak bucket only for bursts longer than one second; we
//!   always do, so that `burst` is always the peak rate, as documented.
//! - QEMU refuses total and read/write limits together; we charge an
//!   operation to every bucket that applies, which is well defined.
//! - QEMU empties every bucket on a change of limits; we keep the level of
//!   each limit that did not change and clamp the others to their new
//!   capacity: re-applying the same limits (a reconcile loop) must not hand
//!   out a fresh burst, and lowering a limit must not stall on what was
//!   admitted under the old one.
//!
//! Waiting operations are admitted in arrival order: they queue on a FIFO
//! (tokio) mutex and only the head of the queue sleeps on the buckets, so
//! many concurrent submitters share the limit instead of each getting it.
//! As in QEMU, reads and writes queue apart, so that reads held by a read
//! limit do not hold up writes behind them (and vice versa); the two heads
//! share the total buckets.
//! Bucket levels are exact integers (unit-nanoseconds), so nothing drifts
//! with rounding. Time is `tokio::time`, so tests run with paused time.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Largest rate, burst, or burst times its seconds that
/// [`QosLimits::validate`] accepts: QEMU's `THROTTLE_VALUE_MAX`. It is far
/// above any real device and keeps every product of the arithmetic exact.
pub const MAX_RATE: u64 = 1_000_000_000_000_000;

/// Bucket levels are kept in units × 10⁹ (unit-nanoseconds), so that draining
/// `rate` units per second for `n` nanoseconds is exactly `rate * n`.
const NANOS_PER_UNIT: u128 = 1_000_000_000;

/// Longest one sleep of a waiting operation before it looks at the buckets
/// again. Updates wake waiters at once anyway; this bounds the deadline so
/// that instants never overflow, whatever the limits.
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// One limit: a sustained rate per second, with an optional burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Limit {
    /// Sustained rate per second (IOPS or bytes/s); 0 = unlimited.
    pub rate: u64,
    /// Peak rate per second allowed while the burst lasts; 0 = no burst beyond the default allowance.
    #[serde(default)]
    pub burst: u64,
    /// How long the peak rate can be held, in seconds; 0 = 1 second.
    #[serde(default)]
    pub burst_seconds: u64,
}

impl Limit {
    /// A sustained rate without a burst.
    pub const fn per_second(rate: u64) -> Limit {
        Limit {
            rate,
            burst: 0,
            burst_seconds: 0,
        }
    }

    /// A sustained rate that may peak at `burst` per second for
    /// `burst_seconds` seconds.
    pub const fn with_burst(rate: u64, burst: u64, burst_seconds: u64) -> Limit {
        Limit {
            rate,
            burst,
            burst_seconds,
        }
    }

    /// Whether this limit limits nothing (rate 0).
    pub const fn is_unlimited(&self) -> bool {
        self.rate == 0
    }

    fn validate(&self, field: &'static str) -> Result<(), QosError> {
        let invalid = |problem: String, fix: String| QosError::InvalidLimit {
            field,
            problem,
            fix,
        };
        let Limit {
            rate,
            burst,
            burst_seconds,
        } = *self;
        if rate > MAX_RATE {
            return Err(invalid(
                format!("rate {rate} is above the maximum {MAX_RATE}"),
                format!("set a rate of at most {MAX_RATE}, or 0 for unlimited"),
            ));
        }
        if burst > 0 && rate == 0 {
            return Err(invalid(
                format!("burst {burst} is set without a rate"),
                "set a rate of at most the burst, or a burst of 0".to_string(),
            ));
        }
        if burst > 0 && burst < rate {
            return Err(invalid(
                format!("burst {burst} is below the rate {rate}"),
                "set a burst of at least the rate or 0".to_string(),
            ));
        }
        if burst > MAX_RATE {
            return Err(invalid(
                format!("burst {burst} is above the maximum {MAX_RATE}"),
                format!("set a burst of at most {MAX_RATE}"),
            ));
        }
        if burst == 0 && burst_seconds > 1 {
            return Err(invalid(
                format!("burst_seconds {burst_seconds} is set without a burst"),
                "set a burst of at least the rate, or burst_seconds 0".to_string(),
            ));
        }
        let burst_size = u128::from(burst) * u128::from(burst_seconds.max(1));
        if burst_size > u128::from(MAX_RATE) {
            return Err(invalid(
                format!(
                    "a burst of {burst} for {burst_seconds} seconds ({burst_size} in all) \
                     is above the maximum {MAX_RATE}"
                ),
                "lower the burst or burst_seconds".to_string(),
            ));
        }
        Ok(())
    }
}

/// The QoS limits of one volume (or a pool's default for its volumes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct QosLimits {
    #[serde(default)]
    pub read_iops: Limit,
    #[serde(default)]
    pub write_iops: Limit,
    #[serde(default)]
    pub total_iops: Limit,
    #[serde(default)]
    pub read_bps: Limit,
    #[serde(default)]
    pub write_bps: Limit,
    #[serde(default)]
    pub total_bps: Limit,
}

/// Positions of the limits in [`QosLimits::fields`] and of their buckets.
const READ_IOPS: usize = 0;
const WRITE_IOPS: usize = 1;
const TOTAL_IOPS: usize = 2;
const READ_BPS: usize = 3;
const WRITE_BPS: usize = 4;
const TOTAL_BPS: usize = 5;
const LIMIT_COUNT: usize = 6;
const FIELD_NAMES: [&str; LIMIT_COUNT] = [
    "read_iops",
    "write_iops",
    "total_iops",
    "read_bps",
    "write_bps",
    "total_bps",
];

impl QosLimits {
    /// Whether no limit is set (every rate is 0).
    pub fn is_unlimited(&self) -> bool {
        self.fields().iter().all(Limit::is_unlimited)
    }

    /// Each field of `self` that is unlimited (rate 0) takes the pool default's field.
    pub fn or_default(&self, pool_default: &QosLimits) -> QosLimits {
        let own = self.fields();
        let default = pool_default.fields();
        QosLimits::from_fields(std::array::from_fn(|i| {
            if own[i].is_unlimited() {
                default[i]
            } else {
                own[i]
            }
        }))
    }

    /// Refuses inconsistent limits; the error names the field, the reason and the fix
    /// (e.g. "write_iops: burst 100 is below the rate 200; set a burst of at least the rate or 0").
    pub fn validate(&self) -> Result<(), QosError> {
        self.fields()
            .iter()
            .zip(FIELD_NAMES)
            .try_for_each(|(limit, field)| limit.validate(field))
    }

    fn fields(&self) -> [Limit; LIMIT_COUNT] {
        [
            self.read_iops,
            self.write_iops,
            self.total_iops,
            self.read_bps,
            self.write_bps,
            self.total_bps,
        ]
    }

    fn from_fields(fields: [Limit; LIMIT_COUNT]) -> QosLimits {
        let [read_iops, write_iops, total_iops, read_bps, write_bps, total_bps] = fields;
        QosLimits {
            read_iops,
            write_iops,
            total_iops,
            read_bps,
            write_bps,
            total_bps,
        }
    }
}

/// The direction of an I/O, which decides the buckets it is charged to.
/// (A discard or flush is the caller's choice: usually a write of 0 bytes,
/// which costs one operation and no bytes.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoKind {
    Read = 0,
    Write = 1,
}

/// Why limits or a rate were refused. Each names what, why, and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QosError {
    #[error("{field}: {problem}; {fix}")]
    InvalidLimit {
        field: &'static str,
        problem: String,
        fix: String,
    },
    #[error("rate {text:?}: {problem}; {fix}")]
    InvalidRate {
        text: String,
        problem: String,
        fix: String,
    },
}

/// The state of one limit: the leaky bucket of its rate and, with a burst,
/// the one of its peak. Levels are in unit-nanoseconds.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    limit: Limit,
    level: u128,
    peak_level: u128,
}

impl Bucket {
    fn new(limit: Limit) -> Bucket {
        Bucket {
            limit,
            level: 0,
            peak_level: 0,
        }
    }

    fn is_active(&self) -> bool {
        self.limit.rate > 0
    }

    fn has_peak(&self) -> bool {
        self.is_active() && self.limit.burst > 0
    }

    /// Level up to which an operation may still start.
    fn capacity(&self) -> u128 {
        let Limit {
            rate,
            burst,
            burst_seconds,
        } = self.limit;
        if burst > 0 {
            (u128::from(burst) * u128::from(burst_seconds.max(1))).saturating_mul(NANOS_PER_UNIT)
        } else {
            // A tenth of a second at the rate, but at least one unit.
            (u128::from(rate) * (NANOS_PER_UNIT / 10)).max(NANOS_PER_UNIT)
        }
    }

    fn peak_capacity(&self) -> u128 {
        (u128::from(self.limit.burst) * (NANOS_PER_UNIT / 10)).max(NANOS_PER_UNIT)
    }

    fn drain(&mut self, elapsed_nanos: u128) {
        let drained = u128::from(self.limit.rate).saturating_mul(elapsed_nanos);
        self.level = self.level.saturating_sub(drained);
        let peak_drained = u128::from(self.limit.burst).saturating_mul(elapsed_nanos);
        self.peak_level = self.peak_level.saturating_sub(peak_drained);
    }

    /// Nanoseconds until an operation may start in this bucket.
    fn wait_nanos(&self) -> u128 {
        if !self.is_active() {
            return 0;
        }
        let excess = self.level.saturating_sub(self.capacity());
        let wait = excess.div_ceil(u128::from(self.limit.rate));
        if !self.has_peak() {
            return wait;
        }
        let peak_excess = self.peak_level.saturating_sub(self.peak_capacity());
        wait.max(peak_excess.div_ceil(u128::from(self.limit.burst)))
    }

    fn charge(&mut self, units: u64) {
        if !self.is_active() {
            return;
        }
        let cost = u128::from(units) * NANOS_PER_UNIT;
        self.level = self.level.saturating_add(cost);
        if self.has_peak() {
            self.peak_level = self.peak_level.saturating_add(cost);
        }
    }

    /// This bucket under `limit`: unchanged if the limit is, else clamped to
    /// its new capacity (see the module documentation for why).
    fn relimited(&self, limit: Limit) -> Bucket {
        if limit == self.limit {
            return *self;
        }
        let mut next = Bucket::new(limit);
        if next.is_active() {
            next.level = self.level.min(next.capacity());
        }
        if next.has_peak() {
            next.peak_level = self.peak_level.min(next.peak_capacity());
        }
        next
    }
}

/// All buckets of a volume, drained together up to `drained_at`.
#[derive(Debug)]
struct Buckets {
    limits: QosLimits,
    buckets: [Bucket; LIMIT_COUNT],
    drained_at: Instant,
}

impl Buckets {
    fn new(limits: QosLimits, now: Instant) -> Buckets {
        Buckets {
            limits,
            buckets: limits.fields().map(Bucket::new),
            drained_at: now,
        }
    }

    fn drain_to(&mut self, now: Instant) {
        let elapsed_nanos = now.saturating_duration_since(self.drained_at).as_nanos();
        if elapsed_nanos == 0 {
            return;
        }
        for bucket in &mut self.buckets {
            bucket.drain(elapsed_nanos);
        }
        self.drained_at = now;
    }

    fn relimit(&mut self, limits: QosLimits, now: Instant) {
        // What was admitted so far drains at the old rates.
        self.drain_to(now);
        let fields = limits.fields();
        for (bucket, limit) in self.buckets.iter_mut().zip(fields) {
            *bucket = bucket.relimited(limit);
        }
        self.limits = limits;
    }

    /// Charges the operation and returns `Ok` if it may start now, else
    /// returns how long to wait before asking again.
    fn try_admit(&mut self, kind: IoKind, bytes: u64, now: Instant) -> Result<(), Duration> {
        self.drain_to(now);
        let charges = match kind {
            IoKind::Read => [
                (READ_IOPS, 1),
                (TOTAL_IOPS, 1),
                (READ_BPS, bytes),
                (TOTAL_BPS, bytes),
            ],
            IoKind::Write => [
                (WRITE_IOPS, 1),
                (TOTAL_IOPS, 1),
                (WRITE_BPS, bytes),
                (TOTAL_BPS, bytes),
            ],
        };
        // A bucket the operation costs nothing in (0 bytes) does not hold it.
        let wait_nanos = charges
            .iter()
            .filter(|(_, cost)| *cost > 0)
            .map(|&(index, _)| self.buckets[index].wait_nanos())
            .max()
            .unwrap_or(0);
        if wait_nanos > 0 {
            let wait = u64::try_from(wait_nanos).map_or(MAX_SLEEP, Duration::from_nanos);
            return Err(wait.min(MAX_SLEEP));
        }
        for (index, cost) in charges {
            self.buckets[index].charge(cost);
        }
        Ok(())
    }
}

struct Shared {
    /// Set when every rate is 0: the hot path checks only this.
    unlimited: AtomicBool,
    buckets: Mutex<Buckets>,
    /// Waiting reads, then writes, queue here in arrival order (tokio's
    /// mutex is FIFO).
    queues: [tokio::sync::Mutex<()>; 2],
    /// Wakes the waiting heads of the queues when the limits change.
    limits_changed: Notify,
    throttled_nanos: AtomicU64,
    throttled_ops: AtomicU64,
}

impl Shared {
    fn lock_buckets(&self) -> MutexGuard<'_, Buckets> {
        // Buckets are plain integers updated without panicking, so the state
        // behind a poisoned lock is still consistent: keep using it.
        self.buckets.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The limiter of one volume; cheap to clone (Arc inside), shared by all I/O paths of the volume on a node.
#[derive(Clone)]
pub struct QosLimiter {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for QosLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QosLimiter")
            .field("limits", &self.limits())
            .field("throttled_ops", &self.throttled_ops())
            .field("throttled_nanos", &self.throttled_nanos())
            .finish()
    }
}

impl Default for QosLimiter {
    /// An unlimited limiter.
    fn default() -> QosLimiter {
        QosLimiter::new(QosLimits::default())
    }
}

impl QosLimiter {
    /// A limiter enforcing `limits` (which should have passed
    /// [`QosLimits::validate`]; others are enforced as well as they can be,
    /// without panicking).
    pub fn new(limits: QosLimits) -> QosLimiter {
        QosLimiter {
            shared: Arc::new(Shared {
                unlimited: AtomicBool::new(limits.is_unlimited()),
                buckets: Mutex::new(Buckets::new(limits, Instant::now())),
                queues: [tokio::sync::Mutex::new(()), tokio::sync::Mutex::new(())],
                limits_changed: Notify::new(),
                throttled_nanos: AtomicU64::new(0),
                throttled_ops: AtomicU64::new(0),
            }),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> QosLimits {
        self.shared.lock_buckets().limits
    }

    /// Whether no limit is in force (then [`QosLimiter::admit`] never waits).
    pub fn is_unlimited(&self) -> bool {
        self.shared.unlimited.load(Ordering::Acquire)
    }

    /// Live change. Operations already waiting re-evaluate promptly (well within 100 ms), so a new limit takes effect within a second.
    pub fn update(&self, limits: QosLimits) {
        {
            let mut buckets = self.shared.lock_buckets();
            buckets.relimit(limits, Instant::now());
            self.shared
                .unlimited
                .store(limits.is_unlimited(), Ordering::Release);
        }
        // After the change, so that a waiter woken here sees the new limits;
        // a waiter registers before it reads them, so none misses this.
        self.shared.limits_changed.notify_waiters();
    }

    /// Waits until an I/O of `kind` and `bytes` may proceed, then charges it to every bucket that applies (read or write ones plus the total ones).
    ///
    /// Cancel-safe: dropping the future while it waits charges nothing and
    /// lets the next operation in line go ahead.
    pub async fn admit(&self, kind: IoKind, bytes: u64) {
        let shared = &*self.shared;
        if shared.unlimited.load(Ordering::Acquire) {
            return;
        }
        let arrived = Instant::now();
        let queue = &shared.queues[kind as usize];
        let turn = match queue.try_lock() {
            Ok(turn) => {
                if shared
                    .lock_buckets()
                    .try_admit(kind, bytes, arrived)
                    .is_ok()
                {
                    return;
                }
                turn
            }
            // Others are waiting already: queue behind them.
            Err(_) => queue.lock().await,
        };
        loop {
            // Registered before reading the buckets, so that an update made
            // after the read wakes this wait.
            let limits_changed = shared.limits_changed.notified();
            let verdict = shared.lock_buckets().try_admit(kind, bytes, Instant::now());
            match verdict {
                Ok(()) => break,
                // Either the wait elapses or the limits change; both mean
                // looking at the buckets again.
                Err(wait) => {
                    let _ = tokio::time::timeout(wait, limits_changed).await;
                }
            }
        }
        drop(turn);
        let waited = u64::try_from(arrived.elapsed().as_nanos()).unwrap_or(u64::MAX);
        shared.throttled_ops.fetch_add(1, Ordering::Relaxed);
        shared.throttled_nanos.fetch_add(waited, Ordering::Relaxed);
    }

    /// Total time operations have spent waiting, in nanoseconds (for a Prometheus counter).
    pub fn throttled_nanos(&self) -> u64 {
        self.shared.throttled_nanos.load(Ordering::Relaxed)
    }

    /// Number of operations that had to wait at all: their buckets were
    /// full, or other operations were already waiting when they arrived.
    pub fn throttled_ops(&self) -> u64 {
        self.shared.throttled_ops.load(Ordering::Relaxed)
    }
}

/// Most decimals [`parse_rate`] accepts (after dropping trailing zeros).
/// With at most 10¹⁸ as the divisor, a number whose digits, or their product
/// with the unit, overflow the u128 it computes in is above u64::MAX anyway:
/// overflow then simply means "too large".
const MAX_RATE_DECIMALS: usize = 18;

const RATE_FIX: &str = "write a whole number with an optional unit K, M, G or T \
     (powers of 1024, optionally followed by i and/or B), e.g. 500, 64K, 1.5G, 50MiB";

/// Parses a rate such as "500", "50M", "1.5G", "64K", "50MiB" into a u64;
/// errors name the text.
///
/// Units are powers of 1024, as block-storage tools (QEMU, Ceph, LVM) use
/// them: `K` (or `k`) = 1024, `M` = 1024², `G` = 1024³, `T` = 1024⁴,
/// optionally followed by `i` and/or `B` (`64K`, `64KB`, `64KiB` are all
/// 65,536); no unit or `B` alone = 1. A
/// fraction is allowed with a unit and rounded down to a whole number
/// (`1.5K` = 1,536, `1.1K` = 1,126); without a unit the number must be
/// whole. Lower-case `m`, `g`, `t` and `b` are refused: they read as milli
/// (Kubernetes) and bits.
pub fn parse_rate(text: &str) -> Result<u64, QosError> {
    let invalid = |problem: String| QosError::InvalidRate {
        text: text.to_string(),
        problem,
        fix: RATE_FIX.to_string(),
    };
    let trimmed = text.trim();
    let number_end = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(number_end);
    let unit = unit.trim_start();
    if number.is_empty() {
        return Err(invalid("it does not start with a number".to_string()));
    }
    let (whole_digits, fraction_digits) = number.split_once('.').unwrap_or((number, ""));
    if whole_digits.is_empty()
        || (number.contains('.') && fraction_digits.is_empty())
        || fraction_digits.contains('.')
    {
        return Err(invalid(format!("{number:?} is not a number")));
    }

    let without_bytes = unit.strip_suffix('B').unwrap_or(unit);
    let prefix = without_bytes.strip_suffix('i').unwrap_or(without_bytes);
    let power = match prefix {
        "" if without_bytes.is_empty() => 0,
        "K" | "k" => 1,
        "M" => 2,
        "G" => 3,
        "T" => 4,
        _ => return Err(invalid(format!("unknown unit {unit:?}"))),
    };
    let multiplier = 1024u128.pow(power);

    // Trailing zeros say nothing; beyond 18 decimals nothing a rate needs.
    let fraction_digits = fraction_digits.trim_end_matches('0');
    if fraction_digits.len() > MAX_RATE_DECIMALS {
        return Err(invalid(format!(
            "it has more than {MAX_RATE_DECIMALS} decimals"
        )));
    }
    let scale = 10u128.pow(fraction_digits.len() as u32);
    let too_large = || invalid(format!("it is above the largest rate, {}", u64::MAX));
    let mut mantissa: u128 = 0;
    for digit in whole_digits.bytes().chain(fraction_digits.bytes()) {
        mantissa = mantissa
            .checked_mul(10)
            .and_then(|m| m.checked_add(u128::from(digit - b'0')))
            .ok_or_else(too_large)?;
    }
    let scaled = mantissa.checked_mul(multiplier).ok_or_else(too_large)?;
    if power == 0 && scaled % scale != 0 {
        return Err(invalid("it is not a whole number".to_string()));
    }
    u64::try_from(scaled / scale).map_err(|_| too_large())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::sync::atomic::AtomicUsize;
    use std::task::{Context, Waker};

    const MIB: u64 = 1 << 20;

    fn limits_with(field: usize, limit: Limit) -> QosLimits {
        let mut fields = [Limit::default(); LIMIT_COUNT];
        fields[field] = limit;
        QosLimits::from_fields(fields)
    }

    fn total_iops(rate: u64) -> QosLimits {
        limits_with(TOTAL_IOPS, Limit::per_second(rate))
    }

    fn secs(duration: Duration) -> f64 {
        duration.as_secs_f64()
    }

    /// When each operation was admitted, relative to a common start.
    #[derive(Clone)]
    struct Admissions {
        start: Instant,
        times: Arc<Mutex<Vec<Duration>>>,
    }

    impl Admissions {
        fn new() -> Admissions {
            Admissions {
                start: Instant::now(),
                times: Arc::default(),
            }
        }

        fn record(&self) {
            self.times
                .lock()
                .expect("times lock")
                .push(self.start.elapsed());
        }

        fn sorted(&self) -> Vec<Duration> {
            let mut times = self.times.lock().expect("times lock").clone();
            times.sort();
            times
        }

        fn count(&self) -> usize {
            self.times.lock().expect("times lock").len()
        }
    }

    /// Spawns `tasks` submitters that together admit `ops` operations.
    fn spawn_load(
        limiter: &QosLimiter,
        admissions: &Admissions,
        tasks: usize,
        ops: usize,
        kind: IoKind,
        bytes: u64,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let next = Arc::new(AtomicUsize::new(0));
        (0..tasks)
            .map(|_| {
                let (limiter, admissions, next) =
                    (limiter.clone(), admissions.clone(), next.clone());
                tokio::spawn(async move {
                    while next.fetch_add(1, Ordering::Relaxed) < ops {
                        limiter.admit(kind, bytes).await;
                        admissions.record();
                    }
                })
            })
            .collect()
    }

    async fn run_load(
        limiter: &QosLimiter,
        tasks: usize,
        ops: usize,
        kind: IoKind,
        bytes: u64,
    ) -> Vec<Duration> {
        let admissions = Admissions::new();
        for task in spawn_load(limiter, &admissions, tasks, ops, kind, bytes) {
            task.await.expect("load task");
        }
        admissions.sorted()
    }

    fn count_between(times: &[Duration], from: f64, to: f64) -> usize {
        times
            .iter()
            .filter(|t| (from..to).contains(&secs(**t)))
            .count()
    }

    /// Most admissions in any window of one second.
    fn busiest_second(times: &[Duration]) -> usize {
        let mut end = 0;
        let mut most = 0;
        for (start, at) in times.iter().enumerate() {
            while end < times.len() && times[end] < *at + Duration::from_secs(1) {
                end += 1;
            }
            most = most.max(end - start);
        }
        most
    }

    /// Polls once: whether the future completes without waiting at all.
    fn ready_at_once(future: impl Future<Output = ()>) -> bool {
        let mut future = std::pin::pin!(future);
        let mut context = Context::from_waker(Waker::noop());
        future.as_mut().poll(&mut context).is_ready()
    }

    #[tokio::test(start_paused = true)]
    async fn limit_of_200_iops_serves_200_under_a_load_of_2000() {
        let limiter = QosLimiter::new(total_iops(200));
        let times = run_load(&limiter, 32, 2000, IoKind::Write, 4096).await;
        assert_eq!(times.len(), 2000);
        let elapsed = secs(times[times.len() - 1]);
        assert!((9.0..=11.0).contains(&elapsed), "took {elapsed} s");
        for second in 1..9 {
            let served = count_between(&times, f64::from(second), f64::from(second + 1));
            assert!((180..=220).contains(&served), "second {second}: {served}");
        }
        // At most the rate plus its allowance of a tenth over any second.
        let busiest = busiest_second(&times);
        assert!(busiest <= 221, "busiest second: {busiest}");
        assert!(
            limiter.throttled_ops() >= 1900,
            "{}",
            limiter.throttled_ops()
        );
        assert!(limiter.throttled_nanos() > 0);
    }

    #[tokio::test(start_paused = true)]
    async fn read_limits_do_not_slow_writes_and_write_limits_do_not_slow_reads() {
        let reads_limited = QosLimiter::new(QosLimits {
            read_iops: Limit::per_second(10),
            read_bps: Limit::per_second(MIB),
            ..QosLimits::default()
        });
        let writes = run_load(&reads_limited, 4, 1000, IoKind::Write, MIB).await;
        assert_eq!(writes[writes.len() - 1], Duration::ZERO);
        let reads = run_load(&reads_limited, 4, 20, IoKind::Read, 512).await;
        let elapsed = secs(reads[reads.len() - 1]);
        assert!(
            (1.7..=2.0).contains(&elapsed),
            "20 reads at 10/s took {elapsed} s"
        );

        let writes_limited = QosLimiter::new(QosLimits {
            write_iops: Limit::per_second(10),
            write_bps: Limit::per_second(MIB),
            ..QosLimits::default()
        });
        let reads = run_load(&writes_limited, 4, 1000, IoKind::Read, MIB).await;
        assert_eq!(reads[reads.len() - 1], Duration::ZERO);
        let writes = run_load(&writes_limited, 4, 20, IoKind::Write, 512).await;
        let elapsed = secs(writes[writes.len() - 1]);
        assert!(
            (1.7..=2.0).contains(&elapsed),
            "20 writes at 10/s took {elapsed} s"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn reads_waiting_on_a_read_limit_do_not_hold_up_writes() {
        let limiter = QosLimiter::new(QosLimits {
            read_iops: Limit::per_second(10),
            write_bps: Limit::per_second(100 * MIB),
            ..QosLimits::default()
        });
        let admissions = Admissions::new();
        let reads = spawn_load(&limiter, &admissions, 8, 30, IoKind::Read, 4096);
        tokio::task::yield_now().await;
        let start = Instant::now();
        let writes = run_load(&limiter, 8, 1000, IoKind::Write, 4096).await;
        // 4 MB at 100 MiB/s, within the allowance: no wait behind the reads.
        assert_eq!(writes[writes.len() - 1], Duration::ZERO);
        assert_eq!(start.elapsed(), Duration::ZERO);
        for task in reads {
            task.await.expect("read task");
        }
        let elapsed = secs(start.elapsed());
        assert!(
            (2.7..=3.0).contains(&elapsed),
            "30 reads at 10/s took {elapsed} s"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn total_limit_applies_to_reads_and_writes_together() {
        let limiter = QosLimiter::new(total_iops(100));
        let admissions = Admissions::new();
        let mut tasks = spawn_load(&limiter, &admissions, 8, 500, IoKind::Read, 4096);
        tasks.extend(spawn_load(
            &limiter,
            &admissions,
            8,
            500,
            IoKind::Write,
            4096,
        ));
        for task in tasks {
            task.await.expect("load task");
        }
        let times = admissions.sorted();
        assert_eq!(times.len(), 1000);
        let elapsed = secs(times[times.len() - 1]);
        assert!((9.0..=11.0).contains(&elapsed), "took {elapsed} s");
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_limit_holds_100_writes_of_1_mib_at_10_mib_per_second_to_10_seconds() {
        let limiter = QosLimiter::new(limits_with(WRITE_BPS, Limit::per_second(10 * MIB)));
        let times = run_load(&limiter, 8, 100, IoKind::Write, MIB).await;
        let elapsed = secs(times[times.len() - 1]);
        assert!((9.0..=11.0).contains(&elapsed), "took {elapsed} s");
        let reads = run_load(&limiter, 8, 100, IoKind::Read, MIB).await;
        assert_eq!(reads[reads.len() - 1], Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_operations_are_admitted_in_arrival_order() {
        let limiter = QosLimiter::new(total_iops(10));
        limiter.admit(IoKind::Read, 0).await;
        limiter.admit(IoKind::Read, 0).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for arrival in 0..20 {
            let (limiter, order) = (limiter.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                limiter.admit(IoKind::Write, 4096).await;
                order.lock().expect("order lock").push(arrival);
            }));
            // Let it arrive (queue) before the next one.
            tokio::task::yield_now().await;
        }
        for task in tasks {
            task.await.expect("task");
        }
        let order = order.lock().expect("order lock").clone();
        assert_eq!(order, (0..20).collect::<Vec<_>>());
    }

    #[tokio::test(start_paused = true)]
    async fn an_operation_of_no_bytes_is_not_held_by_a_bytes_limit() {
        let limiter = QosLimiter::new(limits_with(WRITE_BPS, Limit::per_second(MIB)));
        let start = Instant::now();
        limiter.admit(IoKind::Write, 10 * MIB).await;
        // A flush after a large write: costs one operation, no bytes.
        limiter.admit(IoKind::Write, 0).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn an_operation_larger_than_the_bucket_passes_and_the_next_ones_repay_it() {
        let limiter = QosLimiter::new(limits_with(TOTAL_BPS, Limit::per_second(MIB)));
        let start = Instant::now();
        // Ten times the rate, a hundred times the bucket's capacity.
        limiter.admit(IoKind::Write, 10 * MIB).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        limiter.admit(IoKind::Read, 1).await;
        let elapsed = secs(start.elapsed());
        assert!((9.8..=10.0).contains(&elapsed), "waited {elapsed} s");
    }

    #[tokio::test(start_paused = true)]
    async fn burst_passes_2000_operations_in_2_seconds_then_falls_to_the_rate() {
        let limiter = QosLimiter::new(limits_with(TOTAL_IOPS, Limit::with_burst(100, 1000, 2)));
        let times = run_load(&limiter, 32, 2800, IoKind::Write, 4096).await;
        let two_thousandth = secs(times[1999]);
        assert!(
            (1.8..=2.2).contains(&two_thousandth),
            "2,000th at {two_thousandth} s"
        );
        // The peak holds: about 1,000 a second plus a tenth while bursting.
        let first_second = count_between(&times, 0.0, 1.0);
        assert!((1000..=1110).contains(&first_second), "{first_second}");
        // Then the sustained rate.
        for second in 3..7 {
            let served = count_between(&times, f64::from(second), f64::from(second + 1));
            assert!((90..=110).contains(&served), "second {second}: {served}");
        }
        let elapsed = secs(times[times.len() - 1]);
        assert!((7.5..=8.5).contains(&elapsed), "took {elapsed} s");
    }

    #[tokio::test(start_paused = true)]
    async fn raising_a_limit_takes_effect_for_operations_already_waiting() {
        let limiter = QosLimiter::new(total_iops(10));
        let admissions = Admissions::new();
        let tasks = spawn_load(&limiter, &admissions, 8, 1000, IoKind::Write, 4096);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let done_before = admissions.count();
        assert!(
            (20..=23).contains(&done_before),
            "{done_before} done at 10/s"
        );

        limiter.update(total_iops(1000));
        assert_eq!(limiter.limits(), total_iops(1000));
        for task in tasks {
            task.await.expect("load task");
        }
        let times = admissions.sorted();
        let first_after = secs(times[done_before]);
        assert!(
            (2.0..=2.1).contains(&first_after),
            "first after the change at {first_after} s"
        );
        // ~980 left at 1,000/s (plus the allowance): done within a second,
        // but not at once, so the new limit is in force.
        let last = secs(times[times.len() - 1]);
        assert!((2.7..=3.0).contains(&last), "last at {last} s");
        let served = count_between(&times, 2.1, 2.7);
        assert!((540..=660).contains(&served), "{served} in 0.6 s");
    }

    #[tokio::test(start_paused = true)]
    async fn an_update_wakes_the_waiting_operation_at_once() {
        let limiter = QosLimiter::new(total_iops(1));
        limiter.admit(IoKind::Write, 0).await;
        limiter.admit(IoKind::Write, 0).await;
        let start = Instant::now();
        let waiting = tokio::spawn({
            let limiter = limiter.clone();
            async move { limiter.admit(IoKind::Write, 0).await }
        });
        // Due at 1 s under the old limit; the update comes at 0.3 s.
        tokio::time::sleep(Duration::from_millis(300)).await;
        limiter.update(total_iops(1000));
        waiting.await.expect("waiting task");
        assert_eq!(start.elapsed(), Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn lowering_a_limit_applies_at_once_without_stalling() {
        let limiter = QosLimiter::new(total_iops(1000));
        let start = Instant::now();
        for _ in 0..101 {
            limiter.admit(IoKind::Write, 0).await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        limiter.update(total_iops(10));
        // The bucket is clamped to the new allowance (one operation), not
        // left 100 operations (10 s at the new rate) over it.
        for _ in 0..11 {
            limiter.admit(IoKind::Write, 0).await;
        }
        let elapsed = secs(start.elapsed());
        assert!((0.9..=1.1).contains(&elapsed), "took {elapsed} s");
    }

    #[tokio::test(start_paused = true)]
    async fn reapplying_the_same_limits_hands_out_no_new_allowance() {
        let limiter = QosLimiter::new(total_iops(10));
        let start = Instant::now();
        for _ in 0..12 {
            limiter.admit(IoKind::Read, 0).await;
            limiter.update(total_iops(10));
        }
        let elapsed = secs(start.elapsed());
        assert!((0.9..=1.1).contains(&elapsed), "took {elapsed} s");
    }

    #[tokio::test(start_paused = true)]
    async fn lifting_all_limits_releases_waiting_operations_at_once() {
        let limiter = QosLimiter::new(total_iops(1));
        let admissions = Admissions::new();
        let tasks = spawn_load(&limiter, &admissions, 8, 100, IoKind::Read, 4096);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        limiter.update(QosLimits::default());
        assert!(limiter.is_unlimited());
        for task in tasks {
            task.await.expect("load task");
        }
        let times = admissions.sorted();
        assert_eq!(times[times.len() - 1], Duration::from_millis(1500));
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_admits_without_waiting_or_counting() {
        let limiter = QosLimiter::new(QosLimits::default());
        let start = Instant::now();
        for _ in 0..10_000 {
            assert!(ready_at_once(limiter.admit(IoKind::Write, 64 * MIB)));
            assert!(ready_at_once(limiter.admit(IoKind::Read, 64 * MIB)));
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(limiter.throttled_nanos(), 0);
        assert_eq!(limiter.throttled_ops(), 0);
        assert!(limiter.is_unlimited());
        assert!(QosLimiter::default().is_unlimited());
    }

    #[tokio::test(start_paused = true)]
    async fn within_the_allowance_admit_is_ready_at_once() {
        let limiter = QosLimiter::new(total_iops(100));
        for _ in 0..11 {
            assert!(ready_at_once(limiter.admit(IoKind::Write, 4096)));
        }
        assert!(!ready_at_once(limiter.admit(IoKind::Write, 4096)));
        assert_eq!(limiter.throttled_ops(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn counters_add_up_the_waits() {
        let limiter = QosLimiter::new(total_iops(10));
        for _ in 0..12 {
            limiter.admit(IoKind::Write, 4096).await;
        }
        // Two pass on the allowance; ten wait 100 ms each.
        assert_eq!(limiter.throttled_ops(), 10);
        assert_eq!(limiter.throttled_nanos(), 1_000_000_000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_wait_charges_nothing_and_blocks_no_one() {
        let limiter = QosLimiter::new(total_iops(10));
        limiter.admit(IoKind::Write, 0).await;
        limiter.admit(IoKind::Write, 0).await;
        let start = Instant::now();
        let gave_up =
            tokio::time::timeout(Duration::from_millis(50), limiter.admit(IoKind::Write, 0)).await;
        assert!(gave_up.is_err());
        // The queue is free again, and the cancelled one was not charged:
        // the next passes when the first 100 ms are up.
        limiter.admit(IoKind::Write, 0).await;
        assert_eq!(start.elapsed(), Duration::from_millis(100));
    }

    #[test]
    fn admit_can_be_spawned() {
        fn assert_send<T: Send>(_: &T) {}
        let limiter = QosLimiter::default();
        assert_send(&limiter.admit(IoKind::Read, 1));
    }

    #[test]
    fn validate_accepts_consistent_limits() {
        assert_eq!(QosLimits::default().validate(), Ok(()));
        let limits = QosLimits {
            read_iops: Limit::per_second(500),
            write_iops: Limit::with_burst(200, 200, 0),
            total_iops: Limit::with_burst(600, 3000, 60),
            read_bps: Limit::with_burst(100 * MIB, 200 * MIB, 1),
            write_bps: Limit::per_second(MAX_RATE),
            total_bps: Limit::with_burst(1, MAX_RATE, 1),
        };
        assert_eq!(limits.validate(), Ok(()));
        assert!(!limits.is_unlimited());
        assert!(QosLimits::default().is_unlimited());
    }

    #[test]
    fn validate_names_the_field_the_problem_and_the_fix() {
        let refused = |field: usize, limit: Limit| {
            limits_with(field, limit)
                .validate()
                .expect_err("refused")
                .to_string()
        };
        assert_eq!(
            refused(WRITE_IOPS, Limit::with_burst(200, 100, 0)),
            "write_iops: burst 100 is below the rate 200; set a burst of at least the rate or 0"
        );
        assert_eq!(
            refused(READ_BPS, Limit::with_burst(0, 100, 0)),
            "read_bps: burst 100 is set without a rate; set a rate of at most the burst, or a burst of 0"
        );
        assert_eq!(
            refused(TOTAL_IOPS, Limit::with_burst(100, 0, 5)),
            "total_iops: burst_seconds 5 is set without a burst; \
             set a burst of at least the rate, or burst_seconds 0"
        );
        assert_eq!(
            refused(TOTAL_BPS, Limit::per_second(MAX_RATE + 1)),
            format!(
                "total_bps: rate {} is above the maximum {MAX_RATE}; \
                 set a rate of at most {MAX_RATE}, or 0 for unlimited",
                MAX_RATE + 1
            )
        );
        assert!(refused(READ_IOPS, Limit::with_burst(1, MAX_RATE + 1, 1))
            .starts_with("read_iops: burst 1000000000000001 is above the maximum"));
        let too_long = refused(WRITE_BPS, Limit::with_burst(1, MAX_RATE, u64::MAX));
        assert!(
            too_long.starts_with(
                "write_bps: a burst of 1000000000000000 for 18446744073709551615 seconds"
            ),
            "{too_long}"
        );
        assert!(too_long.ends_with("; lower the burst or burst_seconds"));
    }

    #[tokio::test(start_paused = true)]
    async fn extreme_unvalidated_limits_neither_panic_nor_overflow() {
        let limiter = QosLimiter::new(QosLimits {
            read_iops: Limit::with_burst(u64::MAX, u64::MAX, u64::MAX),
            write_iops: Limit::with_burst(1, 0, u64::MAX),
            // A burst below the rate: the peak bucket holds it to 1 byte/s.
            total_bps: Limit::with_burst(u64::MAX, 1, 0),
            ..QosLimits::default()
        });
        assert!(limiter.limits().validate().is_err());
        let start = Instant::now();
        limiter.admit(IoKind::Read, u64::MAX).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        let soon = Duration::from_secs(5);
        for kind in [IoKind::Read, IoKind::Write] {
            // 2⁶⁴ bytes to drain at 1 byte/s: still waiting, without overflow.
            let waited = tokio::time::timeout(soon, limiter.admit(kind, u64::MAX)).await;
            assert!(waited.is_err());
        }
        limiter.update(limits_with(READ_BPS, Limit::per_second(u64::MAX)));
        limiter.admit(IoKind::Read, u64::MAX).await;
        limiter.admit(IoKind::Write, u64::MAX).await;
        limiter.update(limits_with(
            READ_BPS,
            Limit::with_burst(1, u64::MAX, u64::MAX),
        ));
        limiter.admit(IoKind::Read, u64::MAX).await;
    }

    #[test]
    fn or_default_takes_the_pool_default_for_unlimited_fields() {
        let pool = QosLimits {
            read_iops: Limit::per_second(1000),
            write_iops: Limit::per_second(500),
            total_bps: Limit::with_burst(100 * MIB, 200 * MIB, 10),
            ..QosLimits::default()
        };
        let volume = QosLimits {
            write_iops: Limit::with_burst(50, 100, 2),
            read_bps: Limit::per_second(MIB),
            ..QosLimits::default()
        };
        assert_eq!(
            volume.or_default(&pool),
            QosLimits {
                read_iops: Limit::per_second(1000),
                write_iops: Limit::with_burst(50, 100, 2),
                total_iops: Limit::default(),
                read_bps: Limit::per_second(MIB),
                write_bps: Limit::default(),
                total_bps: Limit::with_burst(100 * MIB, 200 * MIB, 10),
            }
        );
        assert_eq!(QosLimits::default().or_default(&pool), pool);
        assert_eq!(volume.or_default(&QosLimits::default()), volume);
    }

    #[test]
    fn limits_deserialize_with_missing_fields_as_unlimited() {
        let limits: QosLimits = serde_json::from_str(
            r#"{"write_iops": {"rate": 200}, "total_bps": {"rate": 1048576, "burst": 2097152, "burst_seconds": 5}}"#,
        )
        .expect("parse");
        assert_eq!(
            limits,
            QosLimits {
                write_iops: Limit::per_second(200),
                total_bps: Limit::with_burst(MIB, 2 * MIB, 5),
                ..QosLimits::default()
            }
        );
        let round_trip: QosLimits =
            serde_json::from_str(&serde_json::to_string(&limits).expect("write")).expect("read");
        assert_eq!(round_trip, limits);
    }

    #[test]
    fn parse_rate_reads_numbers_with_binary_units() {
        for (text, expected) in [
            ("500", 500),
            ("0", 0),
            ("64K", 64 * 1024),
            ("64k", 64 * 1024),
            ("64KB", 64 * 1024),
            ("64KiB", 64 * 1024),
            ("64Ki", 64 * 1024),
            ("50M", 50 * MIB),
            ("50MiB", 50 * MIB),
            (" 50 MiB ", 50 * MIB),
            ("1.5G", 3 << 29),
            ("0.5K", 512),
            ("1.1K", 1126),
            ("2T", 2 << 40),
            ("4096B", 4096),
            ("8.0", 8),
            ("18446744073709551615", u64::MAX),
            ("16777215.999999T", 18_446_744_073_708_452_104),
        ] {
            assert_eq!(parse_rate(text), Ok(expected), "{text:?}");
        }
    }

    #[test]
    fn parse_rate_refuses_bad_text_and_names_it() {
        for (text, problem) in [
            ("", "it does not start with a number"),
            ("abc", "it does not start with a number"),
            ("-5", "it does not start with a number"),
            ("M", "it does not start with a number"),
            ("5X", "unknown unit \"X\""),
            ("50Mb", "unknown unit \"Mb\""),
            ("500m", "unknown unit \"m\""),
            ("5i", "unknown unit \"i\""),
            ("5KK", "unknown unit \"KK\""),
            ("5 K B", "unknown unit \"K B\""),
            ("1.5", "it is not a whole number"),
            ("1..5K", "\"1..5\" is not a number"),
            ("1.K", "\"1.\" is not a number"),
            (".5K", "\".5\" is not a number"),
            (
                "18446744073709551616",
                "it is above the largest rate, 18446744073709551615",
            ),
            (
                "16777216T",
                "it is above the largest rate, 18446744073709551615",
            ),
            (
                "9999999999999999999999999999999999999999",
                "it is above the largest rate",
            ),
        ] {
            let error = parse_rate(text).expect_err(text);
            let message = error.to_string();
            assert!(
                message.starts_with(&format!("rate {text:?}: {problem}")),
                "{text:?}: {message}"
            );
            assert!(message.contains("e.g. 500, 64K, 1.5G, 50MiB"), "{message}");
        }
        assert_eq!(parse_rate(&format!("1.5{}K", "0".repeat(60))), Ok(1536));
        let too_precise = format!("1.{}1K", "0".repeat(18));
        assert!(parse_rate(&too_precise)
            .expect_err("too precise")
            .to_string()
            .starts_with(&format!(
                "rate {too_precise:?}: it has more than 18 decimals"
            )));
    }
}
