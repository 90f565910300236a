//! In-process DPoS clusters: production, missed slots, partitions, an
//! equivocating producer, confirmations, and byzantine blocks.

mod common;

use common::{Rng, Sim};
use hpchain_chain::error::BlockError;
use hpchain_chain::tx::Payload;
use hpchain_chain::{Block, Error, Keypair, Transaction};

fn reason(e: Error) -> BlockError {
    match e {
        Error::Block { reason, .. } => *reason,
        other => panic!("expected a block error, got {other}"),
    }
}

#[test]
fn three_delegates_finalize_with_missed_slots_and_never_revert() {
    let mut sim = Sim::new(3, "three");
    let mut rng = Rng(7);
    let mut finals = vec![];
    for s in 1..=300 {
        let skip = if rng.chance(15) {
            vec![(s % 3) as usize]
        } else {
            vec![]
        };
        sim.slot(s, &skip);
        finals.push(sim.nodes[0].final_height());
    }
    let f = sim.finals();
    assert!(f.iter().all(|&x| x >= 150), "finality stalled: {f:?}");
    let heads: Vec<_> = sim.nodes.iter().map(|n| n.head()).collect();
    assert!(
        heads.windows(2).all(|w| w[0] == w[1]),
        "nodes disagree on head: {heads:?}"
    );
    // with N = 3 finality needs all three: the final block trails the head by
    // about two blocks
    let (_, head_h) = sim.nodes[0].head();
    assert!(head_h - f[0] <= 6, "head {head_h}, final {}", f[0]);
    assert!(finals.windows(2).all(|w| w[0] <= w[1]));
    sim.check_all_final_history();
}

#[test]
fn twenty_one_delegates_finalize_with_missed_slots() {
    let mut sim = Sim::new(21, "twentyone");
    let mut rng = Rng(99);
    sim.run(1..=420, |s| {
        if rng.chance(10) {
            vec![(s % 21) as usize]
        } else {
            vec![]
        }
    });
    let f = sim.finals();
    assert!(f.iter().all(|&x| x >= 300), "finality stalled: {f:?}");
    let st = sim.nodes[5].status();
    assert_eq!(st.delegates.len(), 21);
    assert_eq!(st.finality_threshold, 15);
    assert_eq!(st.final_height, f[5]);
    assert!(st.head_height >= st.final_height);
    sim.check_all_final_history();
}

#[test]
fn with_four_delegates_one_down_finality_continues_two_down_it_pauses_and_resumes() {
    let mut sim = Sim::new(4, "four");
    sim.run(1..=40, |_| vec![]);
    let f0 = sim.nodes[0].final_height();
    assert!(f0 >= 30);
    sim.up[3] = false;
    sim.run(41..=80, |_| vec![]);
    let f1 = sim.nodes[0].final_height();
    assert!(f1 >= f0 + 20, "3 of 4 must keep finalizing: {f0} -> {f1}");
    sim.up[2] = false;
    sim.run(81..=120, |_| vec![]);
    let f2 = sim.nodes[0].final_height();
    let (_, head2) = sim.nodes[0].head();
    assert!(f2 <= f1 + 3, "2 of 4 must not finalize much: {f1} -> {f2}");
    assert!(head2 > f2 + 10, "production goes on without finality");
    // node 2 returns and catches up
    sim.up[2] = true;
    sim.sync(0, 2);
    sim.run(121..=160, |_| vec![]);
    let f3 = sim.nodes[0].final_height();
    assert!(
        f3 > head2,
        "finality resumes past the blocks made while paused: {f3} vs {head2}"
    );
    assert_eq!(sim.nodes[2].final_block(), sim.nodes[0].final_block());
    // node 3 restarts late, catches up from a peer
    sim.up[3] = true;
    sim.sync(0, 3);
    assert_eq!(sim.nodes[3].head(), sim.nodes[0].head());
    sim.check_all_final_history();
}

#[test]
fn partition_majority_finalizes_minority_does_not_and_heals_without_reverting() {
    let mut sim = Sim::new(4, "part");
    sim.run(1..=20, |_| vec![]);
    sim.group = vec![0, 0, 0, 1];
    sim.run(21..=80, |_| vec![]);
    let minority_final = sim.nodes[3].final_height();
    let majority_final = sim.nodes[0].final_height();
    assert!(
        majority_final > minority_final + 30,
        "{majority_final} vs {minority_final}"
    );
    let (_, minority_head) = sim.nodes[3].head();
    assert!(
        minority_head > minority_final,
        "the minority keeps producing its own branch"
    );
    // heal: the minority adopts the majority chain (longer), never reverting
    // anything final
    sim.group = vec![0; 4];
    sim.sync(0, 3);
    sim.run(81..=100, |_| vec![]);
    assert_eq!(sim.nodes[3].head(), sim.nodes[0].head());
    assert_eq!(sim.nodes[3].final_block(), sim.nodes[0].final_block());
    sim.check_all_final_history();
}

#[test]
fn equivocating_producer_splits_the_network_but_finality_stays_safe() {
    let mut sim = Sim::new(4, "equiv");
    sim.run(1..=12, |_| vec![]);
    // Find a slot of delegate 0 and make it sign two different blocks.
    let mut slot = 13;
    while sim.nodes[0].scheduled_producer(slot) != Some(sim.keys[0].public()) {
        sim.slot(slot, &[]);
        slot += 1;
    }
    let chain = sim.nodes[0].chain_hash();
    let (head, height) = sim.nodes[0].head();
    let ts = sim.genesis.genesis_time_ms + slot * sim.genesis.slot_time_ms;
    let tx = Transaction::signed(
        chain,
        &sim.holders[0],
        0,
        Payload::RegisterCandidate { name: "x".into() },
    );
    let a = Block::build(chain, height + 1, slot, ts, head, vec![], &sim.keys[0]);
    let b = Block::build(chain, height + 1, slot, ts, head, vec![tx], &sim.keys[0]);
    assert_ne!(a.hash(), b.hash());
    sim.nodes[0].import_block(a.clone()).unwrap();
    sim.nodes[1].import_block(a.clone()).unwrap();
    sim.nodes[2].import_block(b.clone()).unwrap();
    sim.nodes[3].import_block(b.clone()).unwrap();
    // node 1 also sees b: it records the evidence
    sim.nodes[1].import_block(b.clone()).unwrap();
    assert_eq!(sim.nodes[1].equivocations().len(), 1);
    assert_eq!(
        sim.nodes[1].equivocations()[0].producer,
        sim.keys[0].public()
    );
    // everyone eventually converges
    for s in slot + 1..=slot + 40 {
        sim.slot(s, &[]);
        for i in 0..4 {
            sim.sync(0, i);
        }
    }
    let heads: Vec<_> = sim.nodes.iter().map(|n| n.head()).collect();
    assert!(heads.windows(2).all(|w| w[0] == w[1]), "{heads:?}");
    assert!(sim.nodes[0].final_height() > height + 20);
    sim.check_all_final_history();
}

#[test]
fn signed_confirmations_finalize_without_other_producers() {
    let mut sim = Sim::new(3, "confirm");
    // only delegate 0 produces; the others stay silent but confirm
    let mut produced = 0;
    for s in 1..=9 {
        if sim.nodes[0].scheduled_producer(s) == Some(sim.keys[0].public()) {
            let b = sim.nodes[0].produce_block(s, &sim.keys[0], 10).unwrap();
            sim.nodes[1].import_block(b.clone()).unwrap();
            sim.nodes[2].import_block(b).unwrap();
            produced += 1;
        }
    }
    assert!(produced >= 2);
    assert_eq!(
        sim.nodes[0].final_height(),
        0,
        "one producer alone cannot finalize"
    );
    let c1 = sim.nodes[1].confirm_head(&sim.keys[1]).unwrap();
    sim.nodes[0].import_confirmation(c1).unwrap();
    assert_eq!(
        sim.nodes[0].final_height(),
        0,
        "2 of 3 is not more than two thirds"
    );
    let c2 = sim.nodes[2].confirm_head(&sim.keys[2]).unwrap();
    sim.nodes[0].import_confirmation(c2.clone()).unwrap();
    assert_eq!(sim.nodes[0].final_height(), sim.nodes[0].head().1);
    // a confirmation by a non-delegate is refused
    let outsider = Keypair::from_seed(b"outsider");
    let mut forged = hpchain_chain::Confirmation::sign(c2.chain, c2.height, c2.block, &outsider);
    forged.height = c2.height;
    assert!(sim.nodes[1].import_confirmation(forged).is_err());
}

#[test]
fn byzantine_blocks_are_rejected_with_the_right_error() {
    let mut sim = Sim::new(3, "byz");
    sim.run(1..=5, |_| vec![]);
    let node = &mut sim.nodes[0];
    let chain = node.chain_hash();
    let (head, height) = node.head();
    let slot = node.head_slot() + 1;
    let ts = sim.genesis.genesis_time_ms + slot * sim.genesis.slot_time_ms;
    let right = sim
        .keys
        .iter()
        .position(|k| Some(k.public()) == node.scheduled_producer(slot))
        .unwrap();
    let wrong = (right + 1) % 3;
    let good = Block::build(chain, height + 1, slot, ts, head, vec![], &sim.keys[right]);

    let mut bad_sig = good.clone();
    bad_sig.signature.0[0] ^= 1;
    assert!(matches!(
        reason(node.import_block(bad_sig).unwrap_err()),
        BlockError::BadSignature(_)
    ));

    let wrong_producer = Block::build(chain, height + 1, slot, ts, head, vec![], &sim.keys[wrong]);
    assert!(matches!(
        reason(node.import_block(wrong_producer).unwrap_err()),
        BlockError::WrongProducer { .. }
    ));

    let tx = Transaction::signed(
        chain,
        &sim.holders[0],
        0,
        Payload::RegisterCandidate { name: "x".into() },
    );
    let mut bad_root = Block::build(
        chain,
        height + 1,
        slot,
        ts,
        head,
        vec![tx.clone()],
        &sim.keys[right],
    );
    bad_root.header.tx_root = hpchain_chain::crypto::hash(b"lie");
    bad_root.signature = sim.keys[right].sign(&bad_root.header.hash().0);
    assert!(matches!(
        reason(node.import_block(bad_root).unwrap_err()),
        BlockError::BadMerkleRoot { .. }
    ));

    let bad_time = Block::build(
        chain,
        height + 1,
        slot,
        ts + 1,
        head,
        vec![],
        &sim.keys[right],
    );
    assert!(matches!(
        reason(node.import_block(bad_time).unwrap_err()),
        BlockError::BadTime(_)
    ));

    let replay = Transaction::signed(
        chain,
        &sim.holders[0],
        5,
        Payload::RegisterCandidate { name: "x".into() },
    );
    let bad_tx = Block::build(
        chain,
        height + 1,
        slot,
        ts,
        head,
        vec![replay],
        &sim.keys[right],
    );
    assert!(matches!(
        reason(node.import_block(bad_tx).unwrap_err()),
        BlockError::InvalidTx {
            index: 0,
            reason: hpchain_chain::TxError::WrongNonce { .. },
            ..
        }
    ));

    let orphan = Block::build(
        chain,
        height + 2,
        slot,
        ts,
        hpchain_chain::crypto::hash(b"x"),
        vec![],
        &sim.keys[right],
    );
    assert!(matches!(
        reason(node.import_block(orphan).unwrap_err()),
        BlockError::UnknownParent(_)
    ));

    let other_chain = Block::build(
        hpchain_chain::crypto::hash(b"c"),
        height + 1,
        slot,
        ts,
        head,
        vec![],
        &sim.keys[right],
    );
    assert!(matches!(
        reason(node.import_block(other_chain).unwrap_err()),
        BlockError::WrongChain { .. }
    ));

    // none of that moved the head; the honest block still imports
    assert_eq!(node.head(), (head, height));
    node.import_block(good).unwrap();
    assert_eq!(node.head().1, height + 1);
}

#[test]
fn a_fork_below_the_final_block_is_refused() {
    let mut sim = Sim::new(3, "final");
    sim.run(1..=30, |_| vec![]);
    let node = &sim.nodes[0];
    let (_, fh) = node.final_block();
    assert!(fh > 5);
    // a validly signed block re-building height fh from its parent
    let parent = node.block_at(fh - 1).unwrap().unwrap();
    let slot = node.head_slot() + 3;
    let ts = sim.genesis.genesis_time_ms + slot * sim.genesis.slot_time_ms;
    let fork = Block::build(
        node.chain_hash(),
        fh,
        slot,
        ts,
        parent.hash(),
        vec![],
        &sim.keys[0],
    );
    assert!(matches!(
        reason(sim.nodes[0].import_block(fork).unwrap_err()),
        BlockError::ConflictsWithFinal { .. }
    ));
}

#[test]
fn vote_transfer_changes_the_delegate_set_at_the_next_round() {
    let mut sim = Sim::new(3, "vote");
    let chain = sim.nodes[0].chain_hash();
    let newcomer = Keypair::from_seed(b"newcomer");
    let whale = sim.holders[5].clone(); // ecological development: 30M HP
    let txs = [
        Transaction::signed(
            chain,
            &whale,
            0,
            Payload::Transfer {
                to: newcomer.public(),
                amount: 1,
            },
        ),
        Transaction::signed(
            chain,
            &newcomer,
            0,
            Payload::RegisterCandidate { name: "new".into() },
        ),
        Transaction::signed(
            chain,
            &whale,
            1,
            Payload::Vote {
                candidates: vec![newcomer.public()],
            },
        ),
    ];
    for t in txs {
        sim.nodes[0].submit_tx(t).unwrap();
    }
    // produce in slot 1 (round 0) on node 0's schedule
    sim.run(1..=2, |_| vec![]);
    let state = sim.nodes[0].head_state();
    assert!(
        state.candidates[&newcomer.public()].votes > 0,
        "vote was included"
    );
    // still round 0: old set
    assert!(!sim.nodes[0]
        .delegates_for_slot(2)
        .contains(&newcomer.public()));
    // round 1 (slots 3..6): the newcomer is in, the last-registered genesis
    // candidate is out
    let next = sim.nodes[0].delegates_for_slot(3);
    assert!(next.contains(&newcomer.public()));
    assert!(!next.contains(&sim.keys[2].public()));
}

#[test]
fn a_bad_signature_deep_in_a_large_block_is_found_at_its_index() {
    let mut sim = Sim::new(3, "large");
    let chain = sim.nodes[0].chain_hash();
    let slot = 1;
    let producer = sim.nodes[0].scheduled_producer(slot).unwrap();
    let key = sim
        .keys
        .iter()
        .find(|k| k.public() == producer)
        .unwrap()
        .clone();
    let ts = sim.genesis.genesis_time_ms + slot * sim.genesis.slot_time_ms;
    let mut txs: Vec<Transaction> = (0..700)
        .map(|i| {
            Transaction::signed(
                chain,
                &sim.holders[3],
                i,
                Payload::Transfer {
                    to: sim.holders[0].public(),
                    amount: 1,
                },
            )
        })
        .collect();
    txs[650].signature.0[10] ^= 1;
    let holder = sim.holders[3].public();
    let bad = Block::build(chain, 1, slot, ts, chain, txs, &key);
    match reason(sim.nodes[1].import_block(bad).unwrap_err()) {
        BlockError::InvalidTx { index, reason, .. } => {
            assert_eq!(index, 650);
            assert_eq!(reason, hpchain_chain::TxError::BadSignature(holder));
        }
        other => panic!("wrong reason {other}"),
    }
}

#[test]
fn submission_to_finality_takes_at_most_three_slots_at_the_median_with_three_delegates() {
    let mut sim = Sim::new(3, "latency");
    let chain = sim.nodes[0].chain_hash();
    let sender = sim.holders[4].clone();
    let mut submitted = vec![];
    let mut latency = vec![];
    for s in 1..=60u64 {
        // a record is gossiped to every node just before slot s
        let to = sim.holders[0].public();
        let tx = Transaction::signed(chain, &sender, s - 1, Payload::Transfer { to, amount: 1 });
        for n in &mut sim.nodes {
            n.submit_tx(tx.clone()).unwrap();
        }
        submitted.push((tx.hash(), s));
        sim.slot(s, &[]);
        submitted.retain(|(h, at)| {
            if sim.nodes[0].store().tx_location(h).unwrap().is_some() {
                latency.push(s - at + 1);
                false
            } else {
                true
            }
        });
    }
    latency.sort();
    assert!(latency.len() >= 55, "{} of 60 records final", latency.len());
    let median = latency[latency.len() / 2];
    assert!(
        median <= 3,
        "median submission-to-finality {median} slots: {latency:?}"
    );
}
