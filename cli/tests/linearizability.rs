//! Linearizability under faults, on real processes: concurrent clients
//! write and read 4 KiB registers of a volume through every node's API
//! while a nemesis kill -9s one node at a time and restarts it. A checker
//! then confirms, register by register, that every read returned the
//! latest acknowledged write or a concurrent one, that no acknowledged
//! write was lost, and that no read saw a torn block.
//!
//! Registers are independent objects (linearizability is local), each in
//! its own 4 MiB object so that they spread over placement groups and
//! their leaders. Every write stores a unique value.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

const REGISTERS: u64 = 8;
const CLIENTS: u64 = 4;
const OBJECT: u64 = 4 << 20;
const BLOCK: usize = 4096;
/// A request that has not answered by then is indeterminate.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One operation as a client saw it. `value` 0 is the volume's initial
/// zeroes; a write's value is unique.
#[derive(Clone, Debug)]
struct Op {
    register: u64,
    write: bool,
    value: u64,
    invoked: Duration,
    /// `None`: no answer (error or timeout); a write may or may not have
    /// taken effect, a read tells nothing.
    completed: Option<Duration>,
}

/// Every byte of a block encodes its value: a torn write cannot pass.
fn block_of(value: u64) -> Vec<u8> {
    value.to_le_bytes().repeat(BLOCK / 8)
}

fn value_of(block: &[u8]) -> Result<u64, String> {
    if block.len() != BLOCK {
        return Err(format!("read {} bytes, not {BLOCK}", block.len()));
    }
    let value = u64::from_le_bytes(block[..8].try_into().unwrap());
    if block.chunks(8).any(|c| c != value.to_le_bytes()) {
        return Err(format!(
            "torn block: starts as value {value} but differs later"
        ));
    }
    Ok(value)
}

/// Checks one register's history; returns every violation found.
///
/// With unique written values, a history of a register is linearizable
/// only if each read of value v (written by w, or the initial 0):
/// 1. did not complete before w was invoked (no read from the future);
/// 2. did not start after another write w2 that itself started after w
///    completed and completed before the read started (v was certainly
///    overwritten: a stale read, or a lost acknowledged write);
/// 3. is not older than what an earlier read (completed before this one
///    started) saw: if that one saw v1 and w (v) completed before w1 (v1)
///    was invoked, the register went back in time.
///
/// Indeterminate writes count as invoked and never completed.
fn check_register(ops: &[&Op]) -> Vec<String> {
    let mut problems = Vec::new();
    let writes: HashMap<u64, &Op> = ops
        .iter()
        .filter(|o| o.write)
        .map(|o| (o.value, *o))
        .collect();
    let done = |o: &Op| o.completed.unwrap_or(Duration::MAX);
    // The interval in which the value's write could have taken effect:
    // the initial value is there from the start.
    let span = |value: u64| -> Option<(Duration, Duration)> {
        if value == 0 {
            return Some((Duration::ZERO, Duration::ZERO));
        }
        writes.get(&value).map(|w| (w.invoked, done(w)))
    };
    let reads: Vec<&Op> = ops
        .iter()
        .filter(|o| !o.write && o.completed.is_some())
        .copied()
        .collect();
    for r in &reads {
        let r_done = done(r);
        let Some((w_start, w_done)) = span(r.value) else {
            problems.push(format!(
                "read at {:?} returned {}, which nobody wrote",
                r.invoked, r.value
            ));
            continue;
        };
        if r_done < w_start {
            problems.push(format!(
                "read [{:?}, {:?}] returned {} before its write began at {w_start:?}",
                r.invoked, r_done, r.value
            ));
        }
        for w2 in writes.values() {
            // The initial value is older than every write.
            let after = r.value == 0 || w2.invoked > w_done;
            if w2.value != r.value && after && done(w2) < r.invoked {
                problems.push(format!(
                    "stale read [{:?}, {:?}] of {}: write of {} completed at {:?}, after it and before the read",
                    r.invoked, r_done, r.value, w2.value, done(w2)
                ));
            }
        }
        for earlier in &reads {
            if done(earlier) >= r.invoked || earlier.value == r.value {
                continue;
            }
            if let Some((e_start, _)) = span(earlier.value) {
                if w_done < e_start {
                    problems.push(format!(
                        "read [{:?}, {:?}] returned {} after an earlier read saw the newer {}",
                        r.invoked, r_done, r.value, earlier.value
                    ));
                }
            }
        }
    }
    problems
}

fn check(history: &[Op]) -> Vec<String> {
    let mut problems = Vec::new();
    for register in 0..REGISTERS {
        let ops: Vec<&Op> = history.iter().filter(|o| o.register == register).collect();
        for p in check_register(&ops) {
            problems.push(format!("register {register}: {p}"));
        }
    }
    problems
}

fn op(register: u64, write: bool, value: u64, invoked: u64, completed: Option<u64>) -> Op {
    Op {
        register,
        write,
        value,
        invoked: Duration::from_millis(invoked),
        completed: completed.map(Duration::from_millis),
    }
}

#[test]
fn the_checker_accepts_concurrency_and_flags_stale_lost_future_and_backward_reads() {
    let ok = [
        op(0, true, 1, 0, Some(10)),
        op(0, true, 2, 5, Some(30)),
        op(0, false, 1, 12, Some(20)), // concurrent with write 2
        op(0, false, 2, 25, Some(28)),
        op(0, true, 3, 40, None), // indeterminate
        op(0, false, 2, 50, Some(60)),
        op(0, false, 3, 70, Some(80)),
    ];
    assert_eq!(check(&ok), Vec::<String>::new());

    let stale = [
        op(0, true, 1, 0, Some(10)),
        op(0, true, 2, 20, Some(30)),
        op(0, false, 1, 40, Some(50)),
    ];
    assert_eq!(check(&stale).len(), 1, "{:?}", check(&stale));
    let lost = [op(0, true, 1, 0, Some(10)), op(0, false, 0, 20, Some(30))];
    assert_eq!(
        check(&lost).len(),
        1,
        "an acknowledged write read back as zeroes"
    );
    let future = [op(0, false, 1, 0, Some(5)), op(0, true, 1, 10, Some(20))];
    assert_eq!(check(&future).len(), 1);
    let backward = [
        op(0, true, 1, 0, Some(10)),
        op(0, true, 2, 20, None),
        op(0, false, 2, 30, Some(40)),
        op(0, false, 1, 50, Some(60)),
    ];
    assert!(!check(&backward).is_empty(), "a read went back in time");
    let unknown = [op(0, false, 9, 0, Some(5))];
    assert_eq!(check(&unknown).len(), 1);
    assert!(value_of(&block_of(7)).is_ok());
    let mut torn = block_of(7);
    torn[BLOCK - 1] ^= 1;
    assert!(value_of(&torn).is_err());
}

/// A tiny xorshift: the run is random but reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn reads_and_writes_stay_linearizable_while_nodes_are_killed_and_restarted() {
    let mut cluster = start(2, 3);
    ok(cli(
        &cluster,
        &["volume", "create", "lin", "--pool", "rbd", "--size", "64M"],
    ));
    let token = format!(
        "Bearer {}",
        std::fs::read_to_string(&cluster.token_file).unwrap().trim()
    );
    let apis: Vec<String> = (1..=3).map(|n| cluster.api(n)).collect();
    let start = Instant::now();
    let history = Arc::new(Mutex::new(Vec::<Op>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let seed = std::process::id() as u64 * 0x9e37_79b9 + 1;
    eprintln!("seed {seed}");

    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (apis, token, history, stop) =
            (apis.clone(), token.clone(), history.clone(), stop.clone());
        clients.push(std::thread::spawn(move || {
            let agent = ureq::AgentBuilder::new().timeout(REQUEST_TIMEOUT).build();
            let mut rng = Rng(seed ^ (c + 1).wrapping_mul(0x5851_f42d_4c95_7f2d));
            let mut seq = 0;
            while !stop.load(Ordering::Relaxed) {
                let register = rng.next() % REGISTERS;
                let api = &apis[(rng.next() % apis.len() as u64) as usize];
                let url = format!("{api}/v1/volumes/lin/data?offset={}", register * OBJECT);
                let write = rng.next().is_multiple_of(2);
                let invoked = start.elapsed();
                let (value, completed) = if write {
                    seq += 1;
                    let value = (c + 1) << 32 | seq;
                    let answer = agent
                        .put(&url)
                        .set("Authorization", &token)
                        .send_bytes(&block_of(value));
                    (value, answer.is_ok().then(|| start.elapsed()))
                } else {
                    let answer = agent
                        .get(&format!("{url}&length={BLOCK}"))
                        .set("Authorization", &token)
                        .call();
                    let mut bytes = Vec::new();
                    match answer
                        .map(|r| std::io::Read::read_to_end(&mut r.into_reader(), &mut bytes))
                    {
                        Ok(Ok(_)) => {
                            let value = value_of(&bytes)
                                .unwrap_or_else(|e| panic!("register {register} via {api}: {e}"));
                            (value, Some(start.elapsed()))
                        }
                        _ => (0, None),
                    }
                };
                history.lock().unwrap().push(Op {
                    register,
                    write,
                    value,
                    invoked,
                    completed,
                });
                if completed.is_none() {
                    // Its node is likely down: do not spin on it.
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }));
    }

    // The nemesis: kill -9 one node at a time, restart it a few seconds
    // later; a majority is always up.
    let mut rng = Rng(seed);
    let mut pids: Vec<i32> = cluster.node_pids.clone();
    let mut kills = 0;
    while start.elapsed() < Duration::from_secs(24) {
        std::thread::sleep(Duration::from_millis(1500 + rng.next() % 1500));
        let victim = (rng.next() % 3) as usize;
        unsafe {
            libc::kill(pids[victim], libc::SIGKILL);
        }
        kills += 1;
        std::thread::sleep(Duration::from_millis(2000 + rng.next() % 2000));
        restart_node(&mut cluster, victim + 1);
        pids[victim] = cluster.restarted.last().unwrap().id() as i32;
    }
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("a client saw a torn or unreadable block");
    }

    // Final reads, with every node up: what each register holds now.
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
    for register in 0..REGISTERS {
        let invoked = start.elapsed();
        let url = format!(
            "{}/v1/volumes/lin/data?offset={}&length={BLOCK}",
            apis[0],
            register * OBJECT
        );
        let response = wait_for("a final read", Duration::from_secs(60), || {
            agent.get(&url).set("Authorization", &token).call().ok()
        });
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut response.into_reader(), &mut bytes).unwrap();
        history.lock().unwrap().push(Op {
            register,
            write: false,
            value: value_of(&bytes).unwrap(),
            invoked,
            completed: Some(start.elapsed()),
        });
    }

    let history = history.lock().unwrap().clone();
    let acknowledged = |write: bool| {
        history
            .iter()
            .filter(|o| o.write == write && o.completed.is_some())
            .count()
    };
    eprintln!(
        "{kills} kills; {} operations: {} acknowledged writes, {} reads, {} without an answer",
        history.len(),
        acknowledged(true),
        acknowledged(false),
        history.iter().filter(|o| o.completed.is_none()).count()
    );
    assert!(kills >= 3, "the nemesis ran");
    assert!(
        acknowledged(true) >= 100 && acknowledged(false) >= 100,
        "enough operations completed to mean something"
    );
    let problems = check(&history);
    assert!(
        problems.is_empty(),
        "{} violations (seed {seed}):\n{}",
        problems.len(),
        problems.join("\n")
    );
}
