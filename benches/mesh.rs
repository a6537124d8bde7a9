//! Micro-benchmark of one cross-shard hop (request + reply between two pinned shards over the
//! mesh transport), with `spin_before_park` off and at 50 µs. Percentiles: see
//! `examples/mesh_hop.rs`.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

fn bench_mesh(c: &mut Criterion) {
    let mut group = c.benchmark_group("mesh_round_trip");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    for spin_us in [0u64, 50] {
        group.bench_function(BenchmarkId::new("spin_before_park_us", spin_us), |b| {
            b.iter_custom(|iters| {
                tusk::runtime::mesh::measure_round_trips(iters as usize, spin_us)
                    .into_iter()
                    .sum::<Duration>()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_mesh);
criterion_main!(benches);
