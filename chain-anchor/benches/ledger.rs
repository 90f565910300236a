//! Ledger throughput: transaction verification, block import and proof
//! verification, each compared with raw ed25519 verification measured in the
//! same run (the floor every signed record pays).
//!
//! Run: `cargo bench -p hpchain-chain --bench ledger`.

use std::time::{Duration, Instant};

use criterion::{black_box, BatchSize, Criterion, Throughput};
use hpchain_chain::tx::{Payload, Reading, Stage, TraceEvent};
use hpchain_chain::{
    verify_inclusion, Block, Genesis, Keypair, Ledger, MemoryStore, ProofVerifier, Transaction,
};

const BLOCK_TXS: usize = 1000;

fn trace(i: u64) -> Payload {
    Payload::Trace(TraceEvent {
        batch_id: format!("batch-{i}"),
        stage: Stage::ColdStorage,
        actor: "coldco".into(),
        place: "Rotterdam".into(),
        at_ms: 1_800_000_000_000 + i,
        readings: vec![Reading {
            name: "temperature".into(),
            value_milli: 3_500,
            unit: "C".into(),
        }],
        documents: vec![hpchain_chain::crypto::hash(&i.to_le_bytes())],
        inputs: if i == 0 {
            vec![]
        } else {
            vec![format!("batch-{}", i / 2)]
        },
    })
}

struct Setup {
    genesis: Genesis,
    keys: Vec<Keypair>,
    block: Block,
    txs: Vec<Transaction>,
}

fn setup() -> Setup {
    let (genesis, keys, holders) = Genesis::deterministic("bench", 3, 1000, "bench");
    let chain = genesis.chain_hash();
    let txs: Vec<Transaction> = (0..BLOCK_TXS as u64)
        .map(|i| Transaction::signed(chain, &holders[0], i, trace(i)))
        .collect();
    let mut l = Ledger::open(genesis.clone(), Box::new(MemoryStore::new())).unwrap();
    let p = l.scheduled_producer(1).unwrap();
    let k = keys.iter().find(|k| k.public() == p).unwrap();
    for t in &txs {
        l.submit_tx(t.clone()).unwrap();
    }
    let block = l.produce_block(1, k, BLOCK_TXS).unwrap();
    assert_eq!(block.txs.len(), BLOCK_TXS);
    Setup {
        genesis,
        keys,
        block,
        txs,
    }
}

fn fresh_ledger(g: &Genesis) -> Ledger {
    Ledger::open(g.clone(), Box::new(MemoryStore::new())).unwrap()
}

fn benches(c: &mut Criterion, s: &Setup) {
    let key = Keypair::from_seed(b"raw");
    let msg = s.txs[0].signing_bytes();
    let sig = key.sign(&msg);
    let pk = key.public();
    let chain = s.genesis.chain_hash();

    let mut g = c.benchmark_group("verify");
    g.throughput(Throughput::Elements(1));
    g.bench_function("baseline_raw_ed25519_verify", |b| {
        b.iter(|| assert!(pk.verify(black_box(&msg), &sig)))
    });
    g.bench_function("tx_check_stateless", |b| {
        b.iter(|| black_box(&s.txs[0]).check_stateless(&chain).unwrap())
    });
    g.bench_function("tx_decode_and_check", |b| {
        let bytes = s.txs[0].encode();
        b.iter(|| {
            Transaction::decode(black_box(&bytes))
                .unwrap()
                .check_stateless(&chain)
                .unwrap()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("block_import");
    g.throughput(Throughput::Elements(BLOCK_TXS as u64));
    g.sample_size(10);
    g.bench_function("import_1000_trace_txs", |b| {
        b.iter_batched(
            || fresh_ledger(&s.genesis),
            |mut l| l.import_block(s.block.clone()).unwrap(),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// Plain timing loops for the summary line: ops/s of `f` over ~`budget`.
fn rate(budget: Duration, ops_per_call: u64, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        f();
        n += ops_per_call;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn summary(s: &Setup) {
    let key = Keypair::from_seed(b"raw");
    let msg = s.txs[0].signing_bytes();
    let sig = key.sign(&msg);
    let pk = key.public();
    let chain = s.genesis.chain_hash();
    let budget = Duration::from_secs(2);
    let raw = rate(budget, 1, || assert!(pk.verify(black_box(&msg), &sig)));
    let tx = rate(budget, 1, || {
        black_box(&s.txs[0]).check_stateless(&chain).unwrap()
    });
    let import = rate(budget, BLOCK_TXS as u64, || {
        let mut l = fresh_ledger(&s.genesis);
        l.import_block(s.block.clone()).unwrap();
    });
    // proofs: a final block needs the two blocks built on it
    let mut l = fresh_ledger(&s.genesis);
    l.import_block(s.block.clone()).unwrap();
    for slot in 2..=3 {
        let p = l.scheduled_producer(slot).unwrap();
        let k = s.keys.iter().find(|k| k.public() == p).unwrap();
        l.produce_block(slot, k, 0).unwrap();
    }
    let proof = l.proof(&s.txs[500].hash()).unwrap();
    let trusted: Vec<_> = s.keys.iter().map(|k| k.public()).collect();
    assert!(verify_inclusion(&proof, &trusted).unwrap().is_final);
    let proofs = rate(budget, 1, || {
        verify_inclusion(black_box(&proof), &trusted).unwrap();
    });
    let all: Vec<_> = s.txs.iter().map(|t| l.proof(&t.hash()).unwrap()).collect();
    let mut verifier = ProofVerifier::new(&trusted).skip_sender_signatures();
    let mut i = 0;
    let cached = rate(budget, 1, || {
        verifier.verify(black_box(&all[i % all.len()])).unwrap();
        i += 1;
    });
    println!("\n=== hpchain-chain summary (same run; block import spreads signature checks over all cores, the rest is one core) ===");
    println!("baseline raw ed25519 verify_strict : {raw:>10.0} /s");
    println!(
        "tx verification (check_stateless)  : {tx:>10.0} /s  ({:.0}% of baseline)",
        100.0 * tx / raw
    );
    println!(
        "block import, 1000 trace txs/block : {import:>10.0} tx/s ({:.0}% of baseline)",
        100.0 * import / raw
    );
    println!(
        "inclusion proof verification (final, 3 headers): {proofs:>8.0} /s ({:.0}% of baseline)",
        100.0 * proofs / raw
    );
    println!(
        "cached ProofVerifier, 1000 proofs of one block, sender sig skipped: {cached:>8.0} /s"
    );
}

fn main() {
    let s = setup();
    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .configure_from_args();
    benches(&mut c, &s);
    c.final_summary();
    summary(&s);
}
