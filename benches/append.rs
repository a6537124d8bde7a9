//! Micro-benchmarks of the produce path: batch validation (CRC-32C) and the partition append
//! with its durable completion, one append at a time and 64 in flight (group commit), under
//! `flush = always` and `flush = never`.

use std::rc::Rc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tusk::protocol::record_batch;
use tusk::protocol::types::{LeaderEpoch, TopicPartition};
use tusk::runtime::io;
use tusk::storage::{AppendOutcome, FlushPolicy, LogConfig, Partition};

/// A v2 batch of `count` uncompressed records with `value_bytes`-byte values.
fn batch(count: i32, value_bytes: usize) -> Vec<u8> {
    record_batch::encode_uncompressed(count, None, &vec![b'x'; value_bytes], 0, 0)
}

fn log_config(flush: FlushPolicy) -> LogConfig {
    LogConfig {
        segment_bytes: 256 << 20,
        segment_ms: u64::MAX / 2,
        retention_ms: -1,
        retention_bytes: -1,
        message_max_bytes: 8 << 20,
        flush,
        tail_cache_bytes: 8 << 20,
        index_interval_bytes: 4096,
        group_commit: true,
    }
}

/// Appends `iters` groups of `in_flight` batches and waits for all of them to be durable.
fn append_run(iters: u64, in_flight: usize, flush: FlushPolicy, payload: Rc<Vec<u8>>) -> Duration {
    let dir = tempfile::tempdir_in(".").expect("temp dir on the disk under test");
    let path = dir.path().join("bench-0");
    io::run_local(async move {
        let part = Partition::open(
            &tusk::runtime::env::Env::real(),
            &path,
            TopicPartition::new("bench", 0),
            log_config(flush),
            LeaderEpoch(0),
        )
        .await
        .expect("open the partition");
        let start = Instant::now();
        for _ in 0..iters {
            let mut waits = Vec::with_capacity(in_flight);
            for _ in 0..in_flight {
                match Partition::append(&part, &payload).expect("append") {
                    AppendOutcome::Appended { durable, .. } => waits.push(durable),
                    AppendOutcome::Duplicate { .. } => unreachable!("no producer id"),
                }
            }
            for w in waits {
                w.await.expect("writer alive").expect("durable");
            }
        }
        start.elapsed()
    })
}

fn bench_validate(c: &mut Criterion) {
    let b = batch(16, 1024);
    let mut group = c.benchmark_group("validate_batch");
    group.throughput(Throughput::Bytes(b.len() as u64));
    group.bench_function("16x1KiB_crc32c", |bench| {
        bench.iter(|| record_batch::validate_produced(std::hint::black_box(&b), 1 << 20).unwrap())
    });
    group.finish();
}

fn bench_append(c: &mut Criterion) {
    let payload = Rc::new(batch(16, 1024));
    let mut group = c.benchmark_group("append_16x1KiB");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    for (name, flush) in [
        ("always", FlushPolicy::Always),
        ("never", FlushPolicy::Never),
    ] {
        for in_flight in [1usize, 64] {
            group.throughput(Throughput::Bytes((payload.len() * in_flight) as u64));
            let id = BenchmarkId::new(format!("flush_{name}"), format!("{in_flight}_in_flight"));
            let p = payload.clone();
            group.bench_function(id, |bench| {
                bench.iter_custom(|iters| append_run(iters, in_flight, flush, p.clone()))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_validate, bench_append);
criterion_main!(benches);
