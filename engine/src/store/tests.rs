//! The disk store against a model (a map of object -> bytes), with
//! reopening, corruption and thin provisioning.

use super::*;
use crate::pg::backend::MemoryBackend;
use std::os::unix::fs::FileExt;

use crate::test_rng::Rng;

fn object(n: u64) -> ObjectId {
    ObjectId {
        volume: 9,
        object_no: n,
    }
}

fn write(object: ObjectId, offset: u64, data: Vec<u8>, seq: u64) -> ObjectOp {
    ObjectOp::Write {
        object,
        offset,
        data,
        seq,
        copy_up: CopyUp::None,
    }
}

fn discard(object: ObjectId, offset: u64, len: u64, seq: u64) -> ObjectOp {
    ObjectOp::Discard {
        object,
        offset,
        len,
        seq,
        copy_up: CopyUp::None,
    }
}

/// Random writes, discards, deletes, snapshots, rollbacks, snapshot
/// removals (trims), clone copy-ups and purges, applied to the disk store
/// and to the in-memory model; after each, the head and every live
/// snapshot read the same from both, and so do the objects' versions.
#[test]
fn random_operations_with_snapshots_match_the_model_across_reopens() {
    random_operations_match_the_model(FileIoKind::Auto);
}

/// The same with positional I/O, the fallback where io_uring is unavailable.
#[test]
fn random_operations_match_the_model_with_positional_io() {
    random_operations_match_the_model(FileIoKind::Positional);
}

fn random_operations_match_the_model(io: FileIoKind) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = DiskStore::open_with(dir.path(), io).unwrap();
    eprintln!("object store I/O: {}", store.io_backend());
    // The in-memory backend is the model: simple enough to be obviously right.
    let model = MemoryBackend::default();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut seq = 0u64;
    let mut live: Vec<u64> = Vec::new();
    let mut index = 0u64;
    let mut apply = |store: &DiskStore, ops: &[ObjectOp]| {
        index += 1;
        store.apply(7, index, ops).unwrap();
        model.apply(7, index, ops).unwrap();
        index
    };
    for step in 1..=600u64 {
        let o = object(rng.below(4));
        let offset = rng.below(64 << 10);
        let ops = match rng.below(20) {
            0..=7 => {
                let len = 1 + rng.below(12_000) as usize;
                let byte = (rng.next() as u8) | 1;
                vec![write(o, offset, vec![byte; len], seq)]
            }
            8..=10 => vec![discard(o, offset, 1 + rng.below(20_000), seq)],
            11 => vec![ObjectOp::Delete { object: o, seq }],
            12 | 13 => {
                seq += 1;
                live.push(seq);
                continue;
            }
            14 if !live.is_empty() => {
                let snapshot = live[rng.below(live.len() as u64) as usize];
                (0..4)
                    .map(|n| ObjectOp::Rollback {
                        object: object(n),
                        snapshot,
                        seq,
                    })
                    .collect()
            }
            15 if !live.is_empty() => {
                let removed = live.remove(rng.below(live.len() as u64) as usize);
                let lower = live.iter().copied().filter(|&s| s < removed).max();
                let upper = live.iter().copied().filter(|&s| s > removed).min();
                (0..4)
                    .map(|n| ObjectOp::Trim {
                        object: object(n),
                        removed,
                        lower: lower.unwrap_or(0),
                        upper: upper.unwrap_or(u64::MAX),
                    })
                    .collect()
            }
            16 => {
                let base = vec![(rng.next() as u8) | 1; 1 + rng.below(9000) as usize];
                vec![ObjectOp::Write {
                    object: o,
                    offset,
                    data: vec![0xcc; 100],
                    seq,
                    copy_up: CopyUp::Data(base),
                }]
            }
            17 if rng.below(4) == 0 => vec![ObjectOp::Purge { object: o }],
            _ => vec![write(o, offset, vec![0x11; 4096], seq)],
        };
        let at = apply(&store, &ops);
        if step % 150 == 0 {
            drop(store);
            store = DiskStore::open_with(dir.path(), io).unwrap();
            assert_eq!(
                store.applied_index(7).unwrap(),
                at,
                "applied index survives a reopen"
            );
        }
        for n in 0..4 {
            let probe = object(n);
            assert_eq!(
                store.is_pristine(&probe).unwrap(),
                model.is_pristine(&probe).unwrap(),
                "step {step}: {probe:?} pristine"
            );
            assert_eq!(
                store.stat(&probe).unwrap(),
                model.stat(&probe).unwrap(),
                "step {step}: {probe:?} versions"
            );
            let (offset, len) = (rng.below(70 << 10), 1 + rng.below(16 << 10));
            for snapshot in std::iter::once(None).chain(live.iter().map(|&s| Some(s))) {
                assert_eq!(
                    store.read(&probe, snapshot, offset, len).unwrap(),
                    model.read(&probe, snapshot, offset, len).unwrap(),
                    "step {step}: {probe:?} at {snapshot:?} [{offset}, +{len})"
                );
            }
        }
    }
    assert!(seq > 20, "the run took {seq} snapshots");
}

/// Replaying an entry whose copy-on-write already happened (a crash after
/// the synced copy, before the applied index) must not copy the head again:
/// the snapshot keeps what it saw.
#[test]
fn a_replayed_entry_does_not_copy_the_head_a_second_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::open(dir.path()).unwrap();
    let o = object(1);
    store
        .apply(1, 1, &[write(o, 0, vec![0xaa; 8192], 0)])
        .unwrap();
    // Snapshot 1 taken; then one entry with two writes to the object.
    let entry = [
        write(o, 0, vec![0xbb; 4096], 1),
        write(o, 4096, vec![0xcc; 4096], 1),
    ];
    store.apply(1, 2, &entry).unwrap();
    store.apply(1, 2, &entry).unwrap();
    assert_eq!(
        store.read(&o, Some(1), 0, 8192).unwrap(),
        Some(vec![0xaa; 8192])
    );
    let stat = store.stat(&o).unwrap();
    assert_eq!(stat.clones, vec![(1, 0, 8192)]);
    let mut head = vec![0xbb; 4096];
    head.extend_from_slice(&[0xcc; 4096]);
    assert_eq!(store.read(&o, None, 0, 8192).unwrap(), Some(head));
}

/// A corrupt block stays detectable after a copy-on-write carries it into
/// a snapshot's version.
#[test]
fn corruption_copied_into_a_snapshot_version_is_still_detected() {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::open(dir.path()).unwrap();
    let o = object(3);
    store
        .apply(1, 1, &[write(o, 0, vec![0x5a; 8192], 0)])
        .unwrap();
    let path = store.object_path(&o);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[10] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    store
        .apply(1, 2, &[write(o, 4096, vec![1; 4096], 1)])
        .unwrap();
    let message = store.read(&o, Some(1), 0, 100).unwrap_err().to_string();
    assert!(message.contains("block 0"), "{message}");
    assert_eq!(
        store.read(&o, Some(1), 4096, 4096).unwrap(),
        Some(vec![0x5a; 4096])
    );
}

#[test]
fn a_flipped_byte_on_disk_is_reported_as_corrupt_with_its_block() {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::open(dir.path()).unwrap();
    let o = object(1);
    store
        .apply(1, 1, &[write(o, 0, vec![0x5a; 3 * 4096], 0)])
        .unwrap();
    let path = store.object_path(&o);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[4096 + 17] ^= 0x01; // block 1
    std::fs::write(&path, &bytes).unwrap();

    match store.read_object(&o, 0, 3 * 4096) {
        Err(StoreError::Corrupt {
            block, object_no, ..
        }) => assert_eq!((block, object_no), (1, 1)),
        other => panic!("corruption not detected: {other:?}"),
    }
    // Blocks 0 and 2 are intact and still readable on their own.
    assert_eq!(store.read_object(&o, 0, 4096).unwrap(), vec![0x5a; 4096]);
    assert_eq!(store.read_object(&o, 8192, 4096).unwrap(), vec![0x5a; 4096]);
    let message = store.read_object(&o, 4096, 10).unwrap_err().to_string();
    assert!(
        message.contains("block 1") && message.contains("repaired"),
        "{message}"
    );
    // Rewriting the block (a repair) makes it readable again.
    store
        .apply(1, 2, &[write(o, 4096, vec![0x5a; 4096], 0)])
        .unwrap();
    assert_eq!(
        store.read_object(&o, 0, 3 * 4096).unwrap(),
        vec![0x5a; 3 * 4096]
    );
}

#[test]
fn data_written_behind_the_stores_back_into_a_hole_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::open(dir.path()).unwrap();
    let o = object(2);
    store.apply(1, 1, &[write(o, 0, vec![1; 10], 0)]).unwrap();
    let path = store.object_path(&o);
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&[7; 4], 3 * 4096).unwrap(); // block 3 never written by the store
    assert!(matches!(
        store.read_object(&o, 3 * 4096, 4),
        Err(StoreError::Corrupt { block: 3, .. })
    ));
}

#[test]
fn one_mib_written_in_a_ten_gib_space_allocates_about_one_mib_and_discard_returns_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::open(dir.path()).unwrap();
    // 10 GiB of 4 MiB objects = 2560 objects; write 64 KiB into 16 of them.
    let mut index = 0;
    for i in 0..16u64 {
        index += 1;
        let o = object(i * 160);
        store
            .apply(
                3,
                index,
                &[write(o, (i % 4) * (1 << 20), vec![0xee; 64 << 10], 0)],
            )
            .unwrap();
    }
    let allocated = store.volume_allocated_bytes(9).unwrap();
    assert!(
        (1 << 20..=(1 << 20) + (256 << 10)).contains(&allocated),
        "1 MiB written, {allocated} bytes allocated"
    );
    for i in 0..16u64 {
        index += 1;
        let o = object(i * 160);
        store.apply(3, index, &[discard(o, 0, 4 << 20, 0)]).unwrap();
    }
    let after = store.volume_allocated_bytes(9).unwrap();
    assert!(after <= 64 << 10, "discard left {after} bytes allocated");
    assert_eq!(
        store.read_object(&object(160), 1 << 20, 100).unwrap(),
        vec![0; 100]
    );
}

fn flip(path: &std::path::Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x10;
    std::fs::write(path, &bytes).unwrap();
}

fn head_block(o: ObjectId, block: u64) -> BlockRef {
    BlockRef {
        object: o,
        clone_seq: None,
        block,
    }
}

#[test]
fn a_corrupt_block_is_rewritten_only_with_a_copy_matching_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::open(dir.path()).unwrap();
    let o = object(1);
    let good = vec![0x5a; 3 * 4096];
    store.apply(1, 1, &[write(o, 0, good.clone(), 0)]).unwrap();
    flip(&store.object_path(&o), 4096 + 100);

    // The read reports the block, structured, for the repair to act on.
    match store.read(&o, None, 0, 3 * 4096) {
        Err(BackendError::Corrupt { bad, .. }) => {
            assert_eq!(bad.at, head_block(o, 1));
            assert_eq!(bad.recorded, Some(crc32c::crc32c(&[0x5a; 4096])));
        }
        other => panic!("corruption not reported: {other:?}"),
    }
    let scrub = store.check_object(&o).unwrap();
    assert_eq!((scrub.versions, scrub.blocks_checked), (1, 3));
    assert_eq!(scrub.bad.len(), 1);
    assert_eq!(scrub.bad[0].at, head_block(o, 1));

    // A copy whose crc differs from the record is refused; nothing changes.
    let before = std::fs::read(store.object_path(&o)).unwrap();
    let wrong = vec![0x5b; 4096];
    assert!(matches!(
        store.rewrite_block(&head_block(o, 1), &wrong).unwrap(),
        BlockRepair::Refused { .. }
    ));
    assert!(matches!(
        store
            .rewrite_block(&head_block(o, 1), &[0x5a; 100])
            .unwrap(),
        BlockRepair::Refused { .. }
    ));
    assert_eq!(std::fs::read(store.object_path(&o)).unwrap(), before);

    // The right bytes repair it; the record is untouched and vouches for them.
    assert_eq!(
        store
            .rewrite_block(&head_block(o, 1), &[0x5a; 4096])
            .unwrap(),
        BlockRepair::Rewritten
    );
    assert_eq!(store.read_object(&o, 0, 3 * 4096).unwrap(), good);
    assert!(store.check_object(&o).unwrap().bad.is_empty());
    assert_eq!(
        store
            .rewrite_block(&head_block(o, 1), &[0x5a; 4096])
            .unwrap(),
        BlockRepair::AlreadyGood
    );
}

#[test]
fn a_copy_of_the_blocks_previous_contents_is_refused() {
    // A lagging replica still holds what the block held before the last
    // write: its copy must never bring that back.
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::open(dir.path()).unwrap();
    let o = object(2);
    store.apply(1, 1, &[write(o, 0, vec![1; 4096], 0)]).unwrap();
    let old = store.copy_of_block(&head_block(o, 0)).unwrap().unwrap();
    store.apply(1, 2, &[write(o, 0, vec![2; 4096], 0)]).unwrap();
    flip(&store.object_path(&o), 7);
    assert!(matches!(
        store.rewrite_block(&head_block(o, 0), &old.bytes).unwrap(),
        BlockRepair::Refused { .. }
    ));
    assert!(store.read_object(&o, 0, 4096).is_err());
    assert_eq!(
        store.rewrite_block(&head_block(o, 0), &[2; 4096]).unwrap(),
        BlockRepair::Rewritten
    );
    assert_eq!(store.read_object(&o, 0, 4096).unwrap(), vec![2; 4096]);
}

#[test]
fn scrub_covers_snapshot_versions_holes_and_lost_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::open(dir.path()).unwrap();
    let o = object(3);
    // Head written, snapshot 1 taken, head rewritten: clone@1 keeps the old.
    store.apply(1, 1, &[write(o, 0, vec![7; 8192], 0)]).unwrap();
    store.apply(1, 2, &[write(o, 0, vec![8; 4096], 1)]).unwrap();
    let clone = BlockRef {
        object: o,
        clone_seq: Some(1),
        block: 1,
    };
    flip(&store.version_path(&o, Loc::Clone(1)), 4096 + 5);
    // Garbage in a block the store never wrote (it must read as zero).
    let file = OpenOptions::new()
        .write(true)
        .open(store.object_path(&o))
        .unwrap();
    file.write_all_at(&[9; 3], 5 * 4096).unwrap();

    let scrub = store.check_object(&o).unwrap();
    assert_eq!(scrub.versions, 2);
    let bad: Vec<BlockRef> = scrub.bad.iter().map(|b| b.at).collect();
    assert_eq!(bad, vec![head_block(o, 5), clone]);
    assert_eq!(scrub.bad[0].recorded, None, "a hole has no record");
    match store.read(&o, Some(1), 4096, 10) {
        Err(BackendError::Corrupt { bad, .. }) => assert_eq!(bad.at, clone),
        other => panic!("clone corruption not reported: {other:?}"),
    }

    // The hole is repaired with zeroes, the clone with its own bytes.
    assert_eq!(
        store.rewrite_block(&head_block(o, 5), &[0; 4096]).unwrap(),
        BlockRepair::Rewritten
    );
    let copy = store.copy_of_block(&clone).unwrap().unwrap();
    assert_eq!(copy.recorded, Some(crc32c::crc32c(&[7; 4096])));
    assert!(matches!(
        store.rewrite_block(&clone, &copy.bytes).unwrap(),
        BlockRepair::Refused { .. }
    ));
    assert_eq!(
        store.rewrite_block(&clone, &[7; 4096]).unwrap(),
        BlockRepair::Rewritten
    );
    assert!(store.check_object(&o).unwrap().bad.is_empty());
    assert_eq!(
        store.read(&o, Some(1), 0, 8192).unwrap(),
        Some(vec![7; 8192])
    );

    // A head file lost behind the store's back: every recorded block is bad,
    // and repairing them brings the file back.
    std::fs::remove_file(store.object_path(&o)).unwrap();
    let scrub = store.check_object(&o).unwrap();
    assert_eq!(
        scrub.bad.iter().map(|b| b.at).collect::<Vec<_>>(),
        vec![head_block(o, 0), head_block(o, 1)]
    );
    for (block, byte) in [(0, 8), (1, 7)] {
        assert_eq!(
            store
                .rewrite_block(&head_block(o, block), &[byte; 4096])
                .unwrap(),
            BlockRepair::Rewritten
        );
    }
    let mut head = vec![8; 4096];
    head.extend_from_slice(&[7; 4096]);
    assert_eq!(store.read_object(&o, 0, 8192).unwrap(), head);

    // A version that no longer exists has nothing to repair.
    let gone = BlockRef {
        object: object(99),
        clone_seq: Some(4),
        block: 0,
    };
    assert_eq!(
        store.rewrite_block(&gone, &[0; 4096]).unwrap(),
        BlockRepair::Gone
    );
    assert_eq!(store.copy_of_block(&gone).unwrap(), None);
}

/// Applied data reaches the disk in batches: until a sync, the durable
/// index (where a restart replays the Raft log from) stays behind, and
/// replaying from it reproduces the same state.
#[test]
fn applied_data_is_synced_in_batches_and_a_restart_replays_from_the_durable_index() {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::open(dir.path()).unwrap();
    let o = object(1);
    let entries = [
        vec![write(o, 0, vec![1; 8192], 0)],
        vec![write(o, 4096, vec![2; 100], 0)],
        vec![discard(o, 0, 4096, 0)],
    ];
    store.apply(7, 1, &entries[0]).unwrap();
    store.apply(7, 2, &entries[1]).unwrap();
    assert_eq!(store.applied_index(7).unwrap(), 0, "nothing synced yet");
    let mut expected = vec![1u8; 8192];
    expected[4096..4196].fill(2);
    assert_eq!(
        store.read(&o, None, 0, 8192).unwrap(),
        Some(expected.clone())
    );
    store.sync_applied().unwrap();
    assert_eq!(store.applied_index(7).unwrap(), 2);
    store.apply(7, 3, &entries[2]).unwrap();
    assert_eq!(store.applied_index(7).unwrap(), 2, "entry 3 is not synced");
    // A crash now would replay entry 3 (and a replay of 2 is harmless too).
    store.apply(7, 2, &entries[1]).unwrap();
    store.apply(7, 3, &entries[2]).unwrap();
    expected[..4096].fill(0);
    assert_eq!(
        store.read(&o, None, 0, 8192).unwrap(),
        Some(expected.clone())
    );
    drop(store); // a clean stop syncs
    let store = DiskStore::open(dir.path()).unwrap();
    assert_eq!(store.applied_index(7).unwrap(), 3);
    assert_eq!(store.read(&o, None, 0, 8192).unwrap(), Some(expected));

    // A store written when every entry synced its data has no durable
    // index, and an applied index written by every entry: that is taken
    // as durable, once.
    store
        .db
        .put(applied_key(7), versioned(&3u64.to_le_bytes()))
        .unwrap();
    store.db.delete(durable_key(7)).unwrap();
    store.db.delete(DEFERRED_SYNC_MARKER).unwrap();
    drop(store);
    let store = DiskStore::open(dir.path()).unwrap();
    assert_eq!(store.applied_index(7).unwrap(), 3);
}

/// A forgotten PG's applied index reads 0, across a reopen, and stays 0
/// when entries applied before the forget are synced after it: a replica
/// created here later must not take them as its own.
#[test]
fn a_forgotten_pg_reads_as_never_applied_even_after_a_later_sync() {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::open(dir.path()).unwrap();
    let o = object(1);
    store.apply(7, 1, &[write(o, 0, vec![1; 4096], 0)]).unwrap();
    store
        .apply(8, 1, &[write(object(2), 0, vec![2; 4096], 0)])
        .unwrap();
    store.sync_applied().unwrap();
    store.apply(7, 2, &[write(o, 0, vec![3; 4096], 0)]).unwrap();
    assert_eq!(store.applied_index(7).unwrap(), 1);

    store.forget_pg(7).unwrap();
    assert_eq!(store.applied_index(7).unwrap(), 0);
    // Entry 2 was waiting for this sync.
    store.sync_applied().unwrap();
    assert_eq!(
        store.applied_index(7).unwrap(),
        0,
        "a later sync brought it back"
    );
    assert_eq!(
        store.applied_index(8).unwrap(),
        1,
        "another PG's index went too"
    );
    drop(store);
    let store = DiskStore::open(dir.path()).unwrap();
    assert_eq!(store.applied_index(7).unwrap(), 0);
    assert_eq!(store.applied_index(8).unwrap(), 1);
}

/// A sync that fails records nothing durable and leaves its work to the
/// next one, which then covers it: the log is truncated only on what a
/// sync recorded, so a dropped batch would be lost data after a crash.
#[test]
fn a_failed_sync_records_nothing_and_the_next_sync_covers_its_work() {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::open(dir.path()).unwrap();
    let (a, b) = (object(1), object(2));
    store.apply(7, 1, &[write(a, 0, vec![1; 4096], 0)]).unwrap();
    store.apply(7, 2, &[write(b, 0, vec![2; 4096], 0)]).unwrap();
    // b's file cannot be opened for the sync: a symlink loop in its place.
    let path = store.object_path(&b);
    let aside = path.with_extension("aside");
    std::fs::rename(&path, &aside).unwrap();
    std::os::unix::fs::symlink(&path, &path).unwrap();
    assert!(store.sync_applied().is_err());
    assert_eq!(store.applied_index(7).unwrap(), 0, "nothing is durable yet");
    std::fs::remove_file(&path).unwrap();
    std::fs::rename(&aside, &path).unwrap();
    store.sync_applied().unwrap();
    assert_eq!(store.applied_index(7).unwrap(), 2);
}

/// A new replica's copy: every version and record of an object, taken from
/// one store and imported into another that held a stale version of it,
/// reads the same; replaying an entry older than the copy over it changes
/// nothing in the end state; the copy is durable at the snapshot's index.
#[test]
fn an_object_copied_to_a_new_replica_reads_the_same_after_the_log_replays_over_it() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let source = DiskStore::open(a_dir.path()).unwrap();
    let target = DiskStore::open(b_dir.path()).unwrap();
    let (o, gone) = (object(1), object(2));
    let entries = [
        vec![write(o, 0, vec![0xaa; 16384], 0)],
        // Snapshot 1 taken: the head is preserved as a clone.
        vec![write(o, 4096, vec![0xbb; 4096], 1)],
        vec![discard(o, 12288, 4096, 1)],
    ];
    for (i, entry) in entries.iter().enumerate() {
        source.apply(3, i as u64 + 1, entry).unwrap();
    }
    // The target held an older version of `o` and an object since gone.
    target.apply(3, 1, &entries[0]).unwrap();
    target
        .apply(3, 2, &[write(gone, 0, vec![7; 4096], 0)])
        .unwrap();

    assert_eq!(source.object_numbers_of(9).unwrap(), vec![1]);
    let image = source.export(&o).unwrap();
    assert_eq!(image.versions.len(), 2, "head and clone 1");
    target.import(3, &image).unwrap();
    target.remove(&gone).unwrap();
    target.finish_copy(3, 2).unwrap(); // the snapshot was at index 2
                                       // Entry 3 replays from the log over a copy that already has it.
    target.apply(3, 3, &entries[2]).unwrap();

    for snapshot in [None, Some(1)] {
        assert_eq!(
            target.read(&o, snapshot, 0, 16384).unwrap(),
            source.read(&o, snapshot, 0, 16384).unwrap(),
            "version {snapshot:?}"
        );
    }
    assert_eq!(target.stat(&o).unwrap(), source.stat(&o).unwrap());
    assert_eq!(target.read(&gone, None, 0, 4096).unwrap(), None);
    assert_eq!(target.object_numbers_of(9).unwrap(), vec![1]);
    assert_eq!(
        target.volume_allocated_bytes(9).unwrap(),
        source.volume_allocated_bytes(9).unwrap(),
        "the copy is as thin as its source"
    );
    drop(target);
    let target = DiskStore::open(b_dir.path()).unwrap();
    assert!(target.applied_index(3).unwrap() >= 2);
    let scrub = target.scrub_object(&o).unwrap();
    assert_eq!((scrub.versions, scrub.bad.len()), (2, 0));
}

/// Two stores that applied the same entries digest every object alike,
/// snapshot versions and holes included, and across a reopen; a write one
/// store alone took (as in a clone version, a hole or the head) changes
/// that object's digest only, though its blocks match its own records.
#[test]
fn replicas_that_applied_the_same_entries_digest_alike_and_a_lone_write_shows() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let stores: Vec<DiskStore> = dirs
        .iter()
        .map(|d| DiskStore::open(d.path()).unwrap())
        .collect();
    let entries = [
        vec![write(object(1), 0, vec![7; 8192], 0)],
        vec![write(object(2), 4096 * 5, vec![8; 100], 0)],
        // Snapshot 1 taken: the next write keeps object 1's old bytes.
        vec![write(object(1), 4096, vec![9; 4096], 1)],
        vec![discard(object(2), 0, 4096 * 8, 1)],
    ];
    for store in &stores {
        for (i, ops) in entries.iter().enumerate() {
            store.apply_ops(3, i as u64 + 1, ops).unwrap();
        }
    }
    let digests = |store: &DiskStore| -> Vec<[u8; 32]> {
        (0..4).map(|n| store.digest(&object(n)).unwrap()).collect()
    };
    let alike = digests(&stores[0]);
    assert_eq!(alike, digests(&stores[1]));
    assert_ne!(alike[1], alike[0], "object 1 holds data, object 0 none");
    assert_eq!(alike[0], alike[3], "two objects never written");
    drop(stores);
    let stores: Vec<DiskStore> = dirs
        .iter()
        .map(|d| DiskStore::open(d.path()).unwrap())
        .collect();
    assert_eq!(digests(&stores[0]), alike, "the same after a reopen");

    // One store alone takes a write into object 1's hole: every block
    // still matches its record there, and only object 1's digest moves.
    stores[1]
        .apply_ops(3, 5, &[write(object(1), 4096 * 7, vec![1; 4096], 1)])
        .unwrap();
    assert!(stores[1].check_object(&object(1)).unwrap().bad.is_empty());
    let after = digests(&stores[1]);
    assert_ne!(after[1], alike[1]);
    assert_eq!(after[2], alike[2]);
    // So does a version kept for a snapshot that one store alone keeps.
    stores[0]
        .apply_ops(3, 5, &[write(object(2), 0, vec![4; 4096], 2)])
        .unwrap();
    assert_ne!(stores[0].digest(&object(2)).unwrap(), alike[2]);
}
