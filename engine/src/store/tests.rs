//! The disk store against a model (a map of object -> bytes), with
//! reopening, corruption and thin provisioning.

use super::*;
use crate::pg::backend::MemoryBackend;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn object(n: u64) -> ObjectId {
    ObjectId {
        volume: 9,
        object_no: n,
    }
}

#[test]
fn random_operations_match_the_model_across_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = DiskStore::open(dir.path()).unwrap();
    // The in-memory backend is the model: simple enough to be obviously right.
    let model = MemoryBackend::default();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for index in 1..=400u64 {
        let o = object(rng.below(4));
        let offset = rng.below(64 << 10);
        let op = match rng.below(10) {
            0..=5 => {
                let len = 1 + rng.below(12_000) as usize;
                let byte = (rng.next() as u8) | 1;
                ObjectOp::Write {
                    object: o,
                    offset,
                    data: vec![byte; len],
                }
            }
            6..=8 => ObjectOp::Discard {
                object: o,
                offset,
                len: 1 + rng.below(20_000),
            },
            _ => ObjectOp::Delete { object: o },
        };
        store.apply(7, index, std::slice::from_ref(&op)).unwrap();
        model.apply(7, index, std::slice::from_ref(&op)).unwrap();
        if index % 100 == 0 {
            drop(store);
            store = DiskStore::open(dir.path()).unwrap();
            assert_eq!(
                store.applied_index(7).unwrap(),
                index,
                "applied index survives a reopen"
            );
        }
        let probe = object(rng.below(4));
        let (offset, len) = (rng.below(70 << 10), 1 + rng.below(16 << 10));
        assert_eq!(
            store.read(&probe, offset, len).unwrap(),
            model.read(&probe, offset, len).unwrap(),
            "after op {index}: {probe:?} [{offset}, +{len})"
        );
    }
}

#[test]
fn a_flipped_byte_on_disk_is_reported_as_corrupt_with_its_block() {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::open(dir.path()).unwrap();
    let o = object(1);
    store
        .apply(
            1,
            1,
            &[ObjectOp::Write {
                object: o,
                offset: 0,
                data: vec![0x5a; 3 * 4096],
            }],
        )
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
        .apply(
            1,
            2,
            &[ObjectOp::Write {
                object: o,
                offset: 4096,
                data: vec![0x5a; 4096],
            }],
        )
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
    store
        .apply(
            1,
            1,
            &[ObjectOp::Write {
                object: o,
                offset: 0,
                data: vec![1; 10],
            }],
        )
        .unwrap();
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
                &[ObjectOp::Write {
                    object: o,
                    offset: (i % 4) * (1 << 20),
                    data: vec![0xee; 64 << 10],
                }],
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
        store
            .apply(
                3,
                index,
                &[ObjectOp::Discard {
                    object: o,
                    offset: 0,
                    len: 4 << 20,
                }],
            )
            .unwrap();
    }
    let after = store.volume_allocated_bytes(9).unwrap();
    assert!(after <= 64 << 10, "discard left {after} bytes allocated");
    assert_eq!(
        store.read_object(&object(160), 1 << 20, 100).unwrap(),
        vec![0; 100]
    );
}
