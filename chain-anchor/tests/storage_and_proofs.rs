//! RocksDB storage (restart, tamper evidence, trace indexes) and inclusion
//! proofs verified with nothing but the delegates' keys.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use hpchain_chain::tx::{AuditRecord, Payload, Reading, Stage, TraceEvent};
use hpchain_chain::{
    verify_chain, verify_inclusion, Error, Genesis, Hash32, InclusionProof, Keypair, Ledger,
    MemoryStore, ProofVerifier, PublicKey, RecordIndex, RocksStore, Transaction,
};

/// Produces blocks for `slots` on one ledger, signing each with whichever
/// delegate key the schedule names (all delegates live in this process).
fn drive(l: &mut Ledger, keys: &[Keypair], slots: std::ops::RangeInclusive<u64>) {
    for s in slots {
        let p = l.scheduled_producer(s).unwrap();
        let k = keys
            .iter()
            .find(|k| k.public() == p)
            .expect("scheduled key is known");
        l.produce_block(s, k, 5000).unwrap();
    }
}

fn trace(batch: &str, stage: Stage, inputs: &[String]) -> Payload {
    Payload::Trace(TraceEvent {
        batch_id: batch.into(),
        stage,
        actor: "acme".into(),
        place: "Shenzhen".into(),
        at_ms: 1_800_000_000_000,
        readings: vec![Reading {
            name: "temperature".into(),
            value_milli: 4_000,
            unit: "C".into(),
        }],
        documents: vec![hpchain_chain::crypto::hash(b"doc")],
        inputs: inputs.to_vec(),
    })
}

fn audit(i: u64) -> Payload {
    Payload::Audit(AuditRecord {
        actor: "node-1".into(),
        action: "volume.create".into(),
        target: format!("volume/v{i}"),
        at_ms: 1_800_000_000_000 + i,
        result: "ok".into(),
        details: vec![("size_bytes".into(), "1073741824".into())],
    })
}

fn open_rocks(g: &Genesis, dir: &Path) -> Ledger {
    Ledger::open(g.clone(), Box::new(RocksStore::open(dir).unwrap())).unwrap()
}

struct Fixture {
    genesis: Genesis,
    keys: Vec<Keypair>,
    holders: Vec<Keypair>,
    txs: Vec<Hash32>,
}

/// A 3-delegate ledger in `dir` with 30 blocks: audits, traces and a transfer.
fn build(dir: &Path) -> Fixture {
    build_diverging(dir, None)
}

/// [`build`], or, with `Some(slot)`, the same ledger up to that slot and a
/// different one from the next block on (one more audit record in it): the
/// history an equivocating delegate could offer.
fn build_diverging(dir: &Path, diverge_after: Option<u64>) -> Fixture {
    let (genesis, keys, holders) = Genesis::deterministic("store", 3, 1000, "store");
    let mut l = open_rocks(&genesis, dir);
    let chain = l.chain_hash();
    let op = &holders[0];
    let mut txs = vec![];
    let mut nonce = 0;
    let mut next = |p| {
        let t = Transaction::signed(chain, op, nonce, p);
        nonce += 1;
        t
    };
    for i in 0..20 {
        txs.push(l.submit_tx(next(audit(i))).unwrap());
    }
    txs.push(
        l.submit_tx(next(trace("farm-1", Stage::Farm, &[])))
            .unwrap(),
    );
    drive(&mut l, &keys, 1..=3);
    txs.push(
        l.submit_tx(next(trace("mill-1", Stage::Processing, &["farm-1".into()])))
            .unwrap(),
    );
    txs.push(
        l.submit_tx(next(Payload::Transfer {
            to: holders[1].public(),
            amount: 12_345,
        }))
        .unwrap(),
    );
    match diverge_after {
        None => drive(&mut l, &keys, 4..=30),
        Some(slot) => {
            drive(&mut l, &keys, 4..=slot);
            l.submit_tx(next(audit(99))).unwrap();
            drive(&mut l, &keys, slot + 1..=30);
        }
    }
    Fixture {
        genesis,
        keys,
        holders,
        txs,
    }
}

#[test]
fn reopen_after_restart_restores_chain_state_indexes_and_pending_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let fx = build(dir.path());
    let l = open_rocks(&fx.genesis, dir.path());
    let (head, head_h) = l.head();
    let (fin, fin_h) = l.final_block();
    assert_eq!(head_h, 30, "pending (non-final) blocks were restored");
    assert!((27..30).contains(&fin_h), "final {fin_h}");
    let team = fx.holders[0].public();
    assert_eq!(l.head_state().next_nonce(&team), 23);
    assert_eq!(
        l.head_state().balance(&fx.holders[1].public()),
        10_000_000 * 100_000_000 + 12_345
    );
    for t in &fx.txs {
        assert!(
            l.store().tx_location(t).unwrap().is_some(),
            "tx index lost {t}"
        );
    }
    assert_eq!(
        l.trace_upstream("mill-1").unwrap(),
        BTreeSet::from(["farm-1".to_string()])
    );
    assert_eq!(
        l.trace_downstream("farm-1").unwrap(),
        BTreeSet::from(["mill-1".to_string()])
    );
    let report = verify_chain(l.store()).unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.verified_height, fin_h);
    // audit log by volume: exactly the one record for volume/v7, with a proof
    let recs = l
        .records(hpchain_chain::RecordIndex::AuditTarget, "volume/v7")
        .unwrap();
    assert_eq!(recs.len(), 1);
    match &recs[0].1.payload {
        Payload::Audit(a) => assert_eq!(a.target, "volume/v7"),
        p => panic!("wrong record {p:?}"),
    }
    assert!(
        verify_inclusion(&l.proof(&recs[0].1.hash()).unwrap(), &trusted(&fx))
            .unwrap()
            .is_final
    );
    assert!(l
        .records(hpchain_chain::RecordIndex::AuditTarget, "volume/v77")
        .unwrap()
        .is_empty());
    drop(l);
    // a second reopen continues producing on the same chain
    let mut l = open_rocks(&fx.genesis, dir.path());
    assert_eq!(l.head(), (head, head_h));
    // a block signed for a slot far ahead of the clock is refused
    let now = fx.genesis.genesis_time_ms + 31 * fx.genesis.slot_time_ms;
    let p = l.scheduled_producer(40).unwrap();
    let k = fx.keys.iter().find(|k| k.public() == p).unwrap();
    let ahead = hpchain_chain::Block::build(
        l.chain_hash(),
        head_h + 1,
        40,
        fx.genesis.genesis_time_ms + 40_000,
        head,
        vec![],
        k,
    );
    let e = l.import_block_at(ahead, now, 1).unwrap_err();
    assert!(e.to_string().contains("in the future"), "{e}");
    assert_eq!(l.final_block(), (fin, fin_h));
    drive(&mut l, &fx.keys, 31..=40);
    assert!(l.final_height() >= 37);
    assert!(verify_chain(l.store()).unwrap().is_ok());
}

#[test]
fn a_store_refuses_another_genesis() {
    let dir = tempfile::tempdir().unwrap();
    let fx = build(dir.path());
    let (other, _, _) = Genesis::deterministic("other", 3, 1000, "x");
    let e = Ledger::open(other, Box::new(RocksStore::open(dir.path()).unwrap()))
        .err()
        .unwrap();
    assert_eq!(e.code(), "CHAIN_GENESIS");
    drop(fx);
}

/// Flips one byte of the stored block at `height` (at `offset` from the end
/// if `from_end`, else from the start) by opening the database directly.
fn tamper(dir: &Path, height: u64, offset: usize, from_end: bool) {
    let names = hpchain_chain::store::ALL_COLUMN_FAMILIES;
    let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir, names).unwrap();
    let hash = db
        .get_cf(db.cf_handle("heights").unwrap(), height.to_be_bytes())
        .unwrap()
        .unwrap();
    let cf = db.cf_handle("blocks").unwrap();
    let mut v = db.get_cf(cf, &hash).unwrap().unwrap();
    let i = if from_end {
        v.len() - 1 - offset
    } else {
        offset
    };
    v[i] ^= 0x40;
    db.put_cf(cf, &hash, v).unwrap();
}

#[test]
fn verify_chain_names_a_block_whose_header_byte_was_flipped() {
    let dir = tempfile::tempdir().unwrap();
    let fx = build(dir.path());
    tamper(dir.path(), 7, 20, false); // inside the chain hash of the header
    let l = open_rocks(&fx.genesis, dir.path());
    let r = verify_chain(l.store()).unwrap();
    let bad = r.first_bad.expect("tampering must be found");
    assert_eq!(bad.height, 7, "{bad:?}");
    assert_eq!(r.verified_height, 6);
    // the node refuses to serve the altered block to a peer catching up
    assert!(l.blocks_since(5, 10).is_err());
    assert!(l.blocks_since(0, 6).is_ok());
}

#[test]
fn verify_chain_names_a_block_whose_transaction_byte_was_flipped() {
    let dir = tempfile::tempdir().unwrap();
    let fx = build(dir.path());
    // block 1 carries the 21 first transactions; flip a byte in the last one's
    // payload (before its 64-byte signature)
    tamper(dir.path(), 1, 70, true);
    let l = open_rocks(&fx.genesis, dir.path());
    let r = verify_chain(l.store()).unwrap();
    let bad = r.first_bad.expect("tampering must be found");
    assert_eq!(bad.height, 1, "{bad:?}");
    assert!(
        ["BLOCK_BAD_MERKLE_ROOT", "CHAIN_DECODE", "BLOCK_INVALID_TX"].contains(&bad.code.as_str()),
        "{bad:?}"
    );
}

fn trusted(fx: &Fixture) -> Vec<PublicKey> {
    fx.keys.iter().map(|k| k.public()).collect()
}

#[test]
fn proof_of_a_final_record_verifies_with_only_the_delegate_keys() {
    let dir = tempfile::tempdir().unwrap();
    let fx = build(dir.path());
    let l = open_rocks(&fx.genesis, dir.path());
    for t in &fx.txs {
        let p = l.proof(t).unwrap();
        // through a file, as `hpchain chain proof` / `verify-proof` would
        let p = InclusionProof::from_json(&p.to_json()).unwrap();
        let v = verify_inclusion(&p, &trusted(&fx)).unwrap();
        assert_eq!(v.tx_hash, *t);
        assert!(v.is_final, "{v:?}");
        assert_eq!(v.confirmed_by, 3);
    }
}

#[test]
fn a_proof_for_a_modified_record_or_untrusted_keys_fails() {
    let dir = tempfile::tempdir().unwrap();
    let fx = build(dir.path());
    let l = open_rocks(&fx.genesis, dir.path());
    let p = l.proof(&fx.txs[3]).unwrap();
    let mut m = p.clone();
    if let Payload::Audit(a) = &mut m.tx.payload {
        a.result = "failed".into();
    }
    let e = verify_inclusion(&m, &trusted(&fx)).unwrap_err().to_string();
    assert!(
        e.contains("the record does not match its signature")
            && e.contains(&m.tx.hash().to_hex())
            && e.contains(&m.tx.from.to_hex()),
        "altered record: {e}"
    );
    // without the sender check, the Merkle root catches it
    let e = ProofVerifier::new(&trusted(&fx))
        .skip_sender_signatures()
        .verify(&m)
        .unwrap_err()
        .to_string();
    assert!(e.contains("the record does not match the block"), "{e}");
    // a re-signed altered record still does not match the Merkle root
    let mut m = p.clone();
    m.tx = Transaction::signed(p.tx.chain, &fx.holders[0], p.tx.nonce, audit(999));
    let e = verify_inclusion(&m, &trusted(&fx)).unwrap_err().to_string();
    assert!(
        e.contains("does not match the block") && e.contains(&p.header.header.tx_root.to_hex()),
        "{e}"
    );
    let mut m = p.clone();
    m.merkle.index = (m.merkle.index + 1) % m.merkle.leaf_count;
    assert!(verify_inclusion(&m, &trusted(&fx)).is_err());
    let mut m = p.clone();
    m.header.header.timestamp_ms += 1;
    assert!(verify_inclusion(&m, &trusted(&fx)).is_err());
    let strangers: Vec<PublicKey> = (0..3).map(|i| Keypair::from_seed(&[i]).public()).collect();
    assert!(verify_inclusion(&p, &strangers).is_err());
    // dropping descendants leaves a valid but not final proof
    let mut m = p.clone();
    m.descendants.clear();
    let v = verify_inclusion(&m, &trusted(&fx)).unwrap();
    assert!(!v.is_final);
    assert_eq!(v.confirmed_by, 1);
    // a descendant that does not link is refused
    let mut m = p;
    if m.descendants.len() > 1 {
        m.descendants.swap(0, 1);
        assert!(verify_inclusion(&m, &trusted(&fx)).is_err());
    }
}

#[test]
fn all_records_blocks_by_hash_and_unfinal_transactions_are_queryable() {
    let dir = tempfile::tempdir().unwrap();
    let fx = build(dir.path());
    let mut l = open_rocks(&fx.genesis, dir.path());
    // Every audit record of every target, in chain order.
    let all = l.records_all(RecordIndex::AuditTarget).unwrap();
    assert_eq!(all.len(), 20);
    assert!(all
        .windows(2)
        .all(|w| (w[0].0.height, w[0].0.index) < (w[1].0.height, w[1].0.index)));
    let hashes: Vec<Hash32> = all.iter().map(|(_, t)| t.hash()).collect();
    assert_eq!(hashes, fx.txs[..20].to_vec());
    // A final block by its id, and an unknown id.
    let b3 = l.block_at(3).unwrap().unwrap();
    let (found, is_final) = l.block_by_hash(&b3.hash()).unwrap().unwrap();
    assert_eq!(found, b3);
    assert!(is_final);
    assert!(l.block_by_hash(&Hash32([7; 32])).unwrap().is_none());
    // Trace events carry their transaction ids.
    let farm = l.trace_event_txs("farm-1").unwrap();
    assert_eq!(farm.len(), 1);
    assert_eq!(farm[0].1, fx.txs[20]);
    // A new record is not final until the delegates confirm it.
    let chain = l.chain_hash();
    let nonce = l.head_state().next_nonce(&fx.holders[0].public());
    let t = l
        .submit_tx(Transaction::signed(chain, &fx.holders[0], nonce, audit(77)))
        .unwrap();
    let (_, head) = l.head();
    let slot = l.head_slot() + 1;
    let producer = l.scheduled_producer(slot).unwrap();
    let key = fx.keys.iter().find(|k| k.public() == producer).unwrap();
    let b = l.produce_block(slot, key, 100).unwrap();
    assert_eq!(b.header.height, head + 1);
    let unfinal = l.unfinal_txs();
    let (loc, tx) = unfinal.iter().find(|(_, tx)| tx.hash() == t).unwrap();
    assert_eq!(loc.height, head + 1);
    assert!(matches!(tx.payload, Payload::Audit(_)));
    let (_, is_final) = l.block_by_hash(&loc.block).unwrap().unwrap();
    assert!(!is_final);
}

#[test]
fn recall_over_a_ten_thousand_event_supply_chain_returns_the_exact_downstream_set() {
    let (genesis, keys, holders) = Genesis::deterministic("recall", 3, 1000, "recall");
    let mut l = Ledger::open(genesis, Box::new(MemoryStore::new())).unwrap();
    let chain = l.chain_hash();
    let mut rng = 0x9e3779b97f4a7c15u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let n = 10_000u64;
    let mut inputs_of: HashMap<String, Vec<String>> = HashMap::new();
    let mut slot = 1;
    for i in 0..n {
        let batch = format!("b{i}");
        // each batch is made from up to 2 earlier batches
        let ins: Vec<String> = if i < 50 {
            vec![]
        } else {
            let k = next() % 3;
            let mut v: Vec<String> = (0..k).map(|_| format!("b{}", next() % i)).collect();
            v.sort();
            v.dedup();
            v
        };
        inputs_of.insert(batch.clone(), ins.clone());
        let tx = Transaction::signed(
            chain,
            &holders[1],
            i,
            trace(&batch, Stage::Processing, &ins),
        );
        l.submit_tx(tx).unwrap();
        if l.pool_len() >= 2000 {
            drive(&mut l, &keys, slot..=slot);
            slot += 1;
        }
    }
    drive(&mut l, &keys, slot..=slot + 5);
    assert_eq!(l.pool_len(), 0);
    // naive recall: everything that (transitively) has the batch as an input
    let naive = |root: &str| {
        let mut set = BTreeSet::new();
        let mut changed = true;
        while changed {
            changed = false;
            for (b, ins) in &inputs_of {
                if !set.contains(b) && ins.iter().any(|x| x == root || set.contains(x)) {
                    set.insert(b.clone());
                    changed = true;
                }
            }
        }
        set
    };
    for root in ["b0", "b17", "b4000", "b9990"] {
        let got = l.trace_downstream(root).unwrap();
        assert_eq!(got, naive(root), "recall set of {root}");
    }
    assert!(!l.trace_downstream("b0").unwrap().is_empty());
    let up = l.trace_upstream("b9999").unwrap();
    for b in &up {
        assert!(l.trace_downstream(b).unwrap().contains("b9999"));
    }
}

#[test]
fn a_caching_verifier_still_rejects_a_forged_signature_on_a_known_header() {
    let dir = tempfile::tempdir().unwrap();
    let fx = build(dir.path());
    let l = open_rocks(&fx.genesis, dir.path());
    let mut v = hpchain_chain::ProofVerifier::new(&trusted(&fx)).skip_sender_signatures();
    let p = l.proof(&fx.txs[0]).unwrap();
    assert!(v.verify(&p).unwrap().is_final);
    assert!(v.verify(&l.proof(&fx.txs[1]).unwrap()).unwrap().is_final);
    let mut forged = p.clone();
    forged.header.signature.0[5] ^= 1;
    assert!(
        v.verify(&forged).is_err(),
        "cached header accepted with another signature"
    );
    let mut forged = p;
    forged.descendants[0].signature.0[5] ^= 1;
    assert!(v.verify(&forged).is_err());
}

#[test]
fn a_delegate_restarted_from_disk_catches_up_from_a_peer_and_verifies_everything() {
    let (genesis, keys, _) = Genesis::deterministic("catchup", 4, 1000, "catchup");
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes: Vec<Option<Ledger>> = dirs
        .iter()
        .map(|d| Some(open_rocks(&genesis, d.path())))
        .collect();
    let run = |nodes: &mut [Option<Ledger>], slots: std::ops::RangeInclusive<u64>| {
        for s in slots {
            let producer = (0..4).find(|&i| {
                nodes[i]
                    .as_ref()
                    .is_some_and(|l| l.scheduled_producer(s) == Some(keys[i].public()))
            });
            let Some(p) = producer else { continue }; // its node is down: slot missed
            let b = nodes[p]
                .as_mut()
                .unwrap()
                .produce_block(s, &keys[p], 100)
                .unwrap();
            for (j, n) in nodes.iter_mut().enumerate() {
                if j != p {
                    if let Some(l) = n {
                        l.import_block(b.clone()).unwrap();
                    }
                }
            }
        }
    };
    run(&mut nodes, 1..=20);
    let before = nodes[3].as_ref().unwrap().final_height();
    nodes[3] = None; // delegate 3 goes down
    run(&mut nodes, 21..=60);
    let peer_final = nodes[0].as_ref().unwrap().final_height();
    assert!(peer_final > before + 20, "3 of 4 keep finalizing");
    // it restarts from its own disk, behind, and catches up from node 0
    let mut l = open_rocks(&genesis, dirs[3].path());
    assert!(l.final_height() <= before + 1);
    let missing = nodes[0]
        .as_ref()
        .unwrap()
        .blocks_since(l.final_height(), 1000)
        .unwrap();
    for b in missing {
        l.import_block(b).unwrap();
    }
    nodes[3] = Some(l);
    run(&mut nodes, 61..=70);
    let heads: Vec<_> = nodes.iter().map(|n| n.as_ref().unwrap().head()).collect();
    assert!(heads.windows(2).all(|w| w[0] == w[1]), "{heads:?}");
    let l = nodes[3].as_ref().unwrap();
    assert_eq!(l.final_block(), nodes[0].as_ref().unwrap().final_block());
    assert!(verify_chain(l.store()).unwrap().is_ok());
}

/// Flips one byte of the transaction index entry of `tx`.
fn tamper_tx_index(dir: &Path, tx: &Hash32) {
    let names = hpchain_chain::store::ALL_COLUMN_FAMILIES;
    let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir, names).unwrap();
    let cf = db.cf_handle("txs").unwrap();
    let mut v = db.get_cf(cf, tx.0).unwrap().unwrap();
    v[7] ^= 0x01; // the height
    db.put_cf(cf, tx.0, v).unwrap();
}

fn damaged_height(r: &hpchain_chain::Result<impl std::fmt::Debug>) -> Option<u64> {
    match r {
        Err(Error::Damaged { height, .. }) => Some(*height),
        _ => None,
    }
}

#[test]
fn a_damaged_block_is_refused_and_repaired_only_from_the_same_history() {
    let (dir, peer_dir, other_dir) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let fx = build(dir.path());
    build(peer_dir.path());
    build_diverging(other_dir.path(), Some(6));
    tamper(dir.path(), 7, 20, false);
    let mut l = open_rocks(&fx.genesis, dir.path());
    let peer = open_rocks(&fx.genesis, peer_dir.path());
    let other = open_rocks(&fx.genesis, other_dir.path());
    assert_eq!(
        peer.final_block(),
        l.final_block(),
        "same build, same chain"
    );
    assert_ne!(other.final_block(), l.final_block());
    assert_eq!(
        other.block_at(6).unwrap().unwrap().hash(),
        peer.block_at(6).unwrap().unwrap().hash(),
        "the other history shares blocks 1-6"
    );

    let report = l.check_store().unwrap();
    assert_eq!(report.first_bad.as_ref().map(|b| b.height), Some(7));
    assert_eq!(l.status().damaged.map(|b| b.height), Some(7));
    // Nothing from the damaged height on is served, and nothing is built.
    assert_eq!(damaged_height(&l.blocks_since(5, 10)), Some(7));
    assert_eq!(damaged_height(&l.block_at(7)), Some(7));
    assert_eq!(
        damaged_height(&l.proof(&fx.txs[0])),
        None,
        "block 1 is fine"
    );
    assert!(l.block_at(6).unwrap().is_some());
    let slot = l.head_slot() + 1;
    let producer = l.scheduled_producer(slot).unwrap();
    let key = fx.keys.iter().find(|k| k.public() == producer).unwrap();
    assert_eq!(damaged_height(&l.produce_block(slot, key, 10)), Some(7));
    assert_eq!(damaged_height(&l.confirm_head(key)), Some(7));

    // A peer with another history from block 7 on (validly signed) is refused.
    let e = l
        .repair_with(&other.blocks_since(6, 500).unwrap())
        .unwrap_err();
    assert!(e.to_string().contains("do not lead back"), "{e}");
    // Blocks that start elsewhere are refused too.
    assert!(l.repair_with(&peer.blocks_since(8, 500).unwrap()).is_err());
    assert_eq!(l.damage().map(|b| b.height), Some(7), "still damaged");

    // The same history repairs it.
    let repair = l.repair_with(&peer.blocks_since(6, 500).unwrap()).unwrap();
    assert_eq!(repair.what, "blocks");
    assert_eq!(repair.heights.map(|h| h.0), Some(7));
    assert_eq!(repair.remaining, None);
    assert!(l.damage().is_none());
    assert!(verify_chain(l.store()).unwrap().is_ok());
    assert_eq!(
        l.block_at(7).unwrap().unwrap().hash(),
        peer.block_at(7).unwrap().unwrap().hash()
    );
    assert!(l.blocks_since(5, 10).is_ok());
    l.produce_block(slot, key, 10).unwrap();
    drop(l);
    // The repair is durable.
    let l = open_rocks(&fx.genesis, dir.path());
    assert!(verify_chain(l.store()).unwrap().is_ok());
}

#[test]
fn a_damaged_index_entry_or_state_is_repaired_without_a_peer() {
    let dir = tempfile::tempdir().unwrap();
    let fx = build(dir.path());
    let tx = fx.txs[21]; // in a block after the first
    let at = open_rocks(&fx.genesis, dir.path())
        .tx_location(&tx)
        .unwrap()
        .unwrap()
        .height;
    tamper_tx_index(dir.path(), &tx);
    let mut l = open_rocks(&fx.genesis, dir.path());
    let bad = l.check_store().unwrap().first_bad.unwrap();
    assert_eq!((bad.height, bad.code.as_str()), (at, "INDEX_MISMATCH"));
    let repair = l.repair_with(&[]).unwrap();
    assert_eq!(
        (repair.what, repair.heights, repair.remaining),
        ("index", Some((at, at)), None)
    );
    assert_eq!(l.tx_location(&tx).unwrap().unwrap().height, at);

    // An account balance altered behind the ledger's back.
    drop(l);
    {
        let names = hpchain_chain::store::ALL_COLUMN_FAMILIES;
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir.path(), names).unwrap();
        let cf = db.cf_handle("accounts").unwrap();
        let key = fx.holders[1].public();
        let mut v = db.get_cf(cf, key.0).unwrap().unwrap();
        v[3] ^= 0x10;
        db.put_cf(cf, key.0, v).unwrap();
    }
    let mut l = open_rocks(&fx.genesis, dir.path());
    let bad = l.check_store().unwrap().first_bad.unwrap();
    assert_eq!(bad.code, "STATE_MISMATCH");
    assert_eq!(l.repair_with(&[]).unwrap().what, "state");
    assert!(verify_chain(l.store()).unwrap().is_ok());
}
