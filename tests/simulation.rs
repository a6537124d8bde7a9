//! The seeded simulation of replication and the controller (`tusk::simulation`): a fixed set
//! of seeds in CI, each checked by the reliability catalogue's checkers (no acknowledged record
//! lost or duplicated, no offset read as two values, one acknowledging leader per epoch, no
//! leader's high watermark moving back); a seed replays exactly (the same trace). More seeds:
//! `TUSK_SIM_SEEDS=200 cargo test --release --test simulation -- --nocapture`, one seed:
//! `TUSK_SIM_SEED=17` (with `TUSK_SIM_TRACE=1` to print every event); harsher:
//! `TUSK_SIM_FAULT_EVERY_MS=300 TUSK_SIM_FAULTY_MS=60000`. `TUSK_SIM_LOG=info` adds the
//! components' own logs; `TUSK_SIM_FILES=1` prints each crashed broker's log state and files.

use tusk::simulation::{run, Options, Report};

/// With `TUSK_SIM_LOG` (a filter such as `info`), the components' own logs too.
fn logs() {
    if let Ok(filter) = std::env::var("TUSK_SIM_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .without_time()
            .try_init();
    }
}

fn seeds() -> Vec<u64> {
    logs();
    if let Some(seed) = std::env::var("TUSK_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return vec![seed];
    }
    let n = std::env::var("TUSK_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12u64);
    (1..=n).collect()
}

fn check(report: &Report) {
    println!("{report}");
    if !report.violations.is_empty() {
        for line in &report.trace_tail {
            println!("  | {line}");
        }
        panic!(
            "seed {} broke the promise (replay: TUSK_SIM_SEED={} TUSK_SIM_TRACE=1):\n{}",
            report.seed,
            report.seed,
            report.violations.join("\n")
        );
    }
}

/// The default options, or `TUSK_SIM_FAULT_EVERY_MS` / `TUSK_SIM_FAULTY_MS` instead.
fn options() -> Options {
    let var = |name: &str| std::env::var(name).ok().and_then(|s| s.parse().ok());
    let d = Options::default();
    Options {
        fault_every_ms: var("TUSK_SIM_FAULT_EVERY_MS").unwrap_or(d.fault_every_ms),
        faulty_ms: var("TUSK_SIM_FAULTY_MS").unwrap_or(d.faulty_ms),
        ..d
    }
}

#[test]
fn seeded_runs_keep_every_acknowledged_record() {
    let options = options();
    let mut total = (0u64, 0u64, 0u64);
    for seed in seeds() {
        let report = run(seed, &options);
        total.0 += report.records_acknowledged;
        total.1 += report.crashes
            + report.clean_stops
            + report.disk_errors
            + report.partitions
            + report.pauses
            + report.elections;
        total.2 += report.lost + report.duplicated;
        check(&report);
        assert!(
            report.records_acknowledged > 0,
            "seed {seed}: nothing was acknowledged, so nothing was checked"
        );
    }
    println!(
        "all seeds: {} records acknowledged, {} faults, {} lost or duplicated",
        total.0, total.1, total.2
    );
}

#[test]
fn a_seed_replays_exactly() {
    let options = Options {
        faulty_ms: 8_000,
        ..Options::default()
    };
    let a = run(7, &options);
    let b = run(7, &options);
    assert_eq!(a.trace_hash, b.trace_hash, "{a}\n{b}");
    assert_eq!(a.records_acknowledged, b.records_acknowledged);
    let c = run(8, &options);
    assert_ne!(a.trace_hash, c.trace_hash, "two seeds ran the same trace");
}

/// The checkers can fail: a broker that answers acks=all as soon as its own copy is durable
/// (acks=1) loses acknowledged records when its leadership moves, and some seed shows it.
#[test]
fn the_checkers_catch_a_leader_that_acknowledges_alone() {
    let options = Options {
        acks_leader_only: true,
        ..Options::default()
    };
    // A safety violation, not the liveness one (replicas that never agreed).
    let safety = |v: &String| !v.contains("did not agree");
    let caught: Vec<(u64, u64, usize)> = (1..=30)
        .map(|seed| {
            let r = run(seed, &options);
            (
                seed,
                r.lost,
                r.violations.iter().filter(|v| safety(v)).count(),
            )
        })
        .filter(|(_, lost, v)| *lost > 0 || *v > 0)
        .collect();
    println!("acks=1 posing as acks=all: (seed, records lost, violations) {caught:?}");
    assert!(
        caught.iter().any(|(_, lost, _)| *lost > 0),
        "30 seeds of acks=1 lost nothing: {caught:?}"
    );
}
