//! Cost of one cross-shard hop (request + reply over the shard mesh), the hop a JoinGroup,
//! Heartbeat or OffsetCommit takes when its connection lands on a shard that does not own the
//! group. `cargo run --release --example mesh_hop -- [SAMPLES]`; prints percentiles with
//! `spin_before_park` off and at 50 µs.

use std::time::Duration;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    let samples: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    for spin_us in [0u64, 50] {
        let mut times = tusk::runtime::mesh::measure_round_trips(samples, spin_us);
        times.sort();
        println!(
            "spin_before_park_us={spin_us:<3} samples={} p50={:?} p90={:?} p99={:?} p99.9={:?} max={:?}",
            times.len(),
            percentile(&times, 0.50),
            percentile(&times, 0.90),
            percentile(&times, 0.99),
            percentile(&times, 0.999),
            times.last().copied().unwrap_or_default()
        );
    }
}
