//! Mappings per second: `place` for 3 replicas over 3 hosts x 4 disks and
//! over 30 hosts x 12 disks, next to a baseline measured in the same run:
//! a plain `hash % n` pick of 3 distinct disks, the cheapest mapping that
//! ignores weights and failure domains (what placement costs over that).
//!
//! `cargo bench -p hpchain-placement --bench mapping`

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use hpchain_placement::hash::hash3;
use hpchain_placement::{place, ClusterMap, MapSpec, PgId, Rule};

fn map(hosts: u32, disks_per_host: u32) -> ClusterMap {
    let mut spec = MapSpec::new(&["disk", "host", "root"]);
    spec.bucket("default", "root", None);
    for h in 0..hosts {
        let host = format!("host{h}");
        spec.bucket(&host, "host", Some("default"));
        for d in 0..disks_per_host {
            let id = h * disks_per_host + d;
            spec.disk(
                id,
                &format!("{host}-d{d}"),
                &host,
                1.0 + f64::from(id % 4) * 0.25,
            );
        }
    }
    spec.rule(Rule::replicated("rep", "default", "host"));
    ClusterMap::from_spec(spec).unwrap()
}

/// Three distinct disks by `hash % n`: no weights, no failure domains.
fn modulo_baseline(x: u32, n: u32) -> [u32; 3] {
    let mut out = [u32::MAX; 3];
    let mut filled = 0;
    let mut r = 0;
    while filled < 3 {
        let d = hash3(x, 0, r) % n;
        if !out[..filled].contains(&d) {
            out[filled] = d;
            filled += 1;
        }
        r += 1;
    }
    out
}

fn bench(c: &mut Criterion) {
    const BATCH: u32 = 1000;
    for (hosts, disks) in [(3, 4), (30, 12)] {
        let map = map(hosts, disks);
        let mut group = c.benchmark_group(format!("{hosts}x{disks}"));
        group.throughput(Throughput::Elements(u64::from(BATCH)));
        group.bench_function("place_3_replicas", |b| {
            let mut base = 0u32;
            b.iter(|| {
                for i in 0..BATCH {
                    let pg = PgId {
                        pool: 1,
                        index: base.wrapping_add(i),
                    };
                    black_box(place(&map, "rep", black_box(pg), 3).unwrap());
                }
                base = base.wrapping_add(BATCH);
            })
        });
        group.bench_function("baseline_hash_mod_3", |b| {
            let mut base = 0u32;
            b.iter(|| {
                for i in 0..BATCH {
                    black_box(modulo_baseline(
                        black_box(base.wrapping_add(i)),
                        hosts * disks,
                    ));
                }
                base = base.wrapping_add(BATCH);
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
