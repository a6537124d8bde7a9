//! `tusk bench` against a live broker: produce, consume and e2e runs report the records they
//! moved, the JSON has the documented keys, plots are drawn, and bad flags or an unreachable
//! broker exit non-zero with one clear line. The records produced are read back with rdkafka,
//! so the bench's batches are checked by an independent client.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::Broker;

const BENCH_TIMEOUT: Duration = Duration::from_secs(120);

fn bench(args: &[&str]) -> common::CmdOutput {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tusk"));
    command.arg("bench").args(args);
    common::run_with_timeout(&mut command, None, BENCH_TIMEOUT)
}

fn ok(args: &[&str]) -> String {
    let out = bench(args);
    assert!(
        out.status.success(),
        "tusk bench {args:?} failed: {}\n{}\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    out.stdout
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn produce_consume_e2e_and_plot() {
    let broker = Broker::start(&[]);
    let b = broker.bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let (pj, cj, ej) = (p("produce.json"), p("consume.json"), p("e2e.json"));
    let common = ["--bootstrap", b.as_str(), "--topic", "bench", "--quiet"];
    let mut args = vec!["produce", "--records", "20000", "--record-bytes", "100"];
    args.extend(common);
    args.extend(["--keys", "7", "--producers", "2", "--compression", "lz4"]);
    args.extend(["--json", &pj, "--label", "small"]);
    let table = ok(&args);
    assert!(
        table.contains("records/s") && table.contains("p99.99 ms"),
        "{table}"
    );
    let produced = json(Path::new(&pj));
    assert_eq!(produced["records"], 20000);
    assert_eq!(produced["errors"], 0);
    assert_eq!(produced["label"], "small");
    for key in ["p50", "p90", "p99", "p999", "p9999", "max"] {
        assert!(produced["latency_ms"][key].as_f64().unwrap() > 0.0, "{key}");
    }
    assert!(produced["records_per_sec"].as_f64().unwrap() > 0.0);
    assert!(produced["bytes_per_sec"].as_f64().unwrap() > 0.0);

    // An independent client sees every record, keyed as `key-<n>`.
    let consumer = common::consumer(&b);
    let records = common::consume_all(&consumer, "bench", 4, 20000, Duration::from_secs(60));
    assert_eq!(records.len(), 20000);
    assert!(records.iter().all(|r| r.key_str().starts_with("key-")));
    assert!(records
        .iter()
        .all(|r| r.value.as_ref().unwrap().len() == 100));

    let mut args = vec!["consume", "--json", &cj];
    args.extend(common);
    ok(&args);
    assert_eq!(json(Path::new(&cj))["records"], 20000);

    let mut args = vec!["e2e", "--rate", "5000", "--duration", "1s", "--json", &ej];
    args.extend(common);
    ok(&args);
    let e2e = json(Path::new(&ej));
    assert_eq!(e2e["records"], 5000, "{e2e}");
    assert_eq!(e2e["mode"], "e2e");

    let svg = p("overlay.svg");
    ok(&["plot", &svg, &pj, &ej]);
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("small (produce)") && text.contains("e2e (e2e)"));
}

#[test]
fn bad_flags_and_unreachable_brokers_fail_with_one_line() {
    let port = common::free_port().to_string();
    let gone = format!("127.0.0.1:{port}");
    let out = bench(&["produce", "--bootstrap", &gone, "--records", "1", "--quiet"]);
    assert!(!out.status.success());
    assert!(out.stderr.contains("refused"), "{}", out.stderr);
    let out = bench(&["produce", "--acks", "2", "--bootstrap", &gone]);
    assert!(!out.status.success());
    assert!(out.stderr.contains("--acks"), "{}", out.stderr);
    let out = bench(&["produce", "--duration", "soon"]);
    assert!(!out.status.success());
    assert!(out.stderr.contains("duration"), "{}", out.stderr);
}

#[test]
fn idle_connections_are_held() {
    let broker = Broker::start(&[]);
    let out = ok(&[
        "idle",
        "--bootstrap",
        &broker.bootstrap(),
        "--connections",
        "200",
        "--hold-secs",
        "1",
    ]);
    assert!(out.contains("holding 200 idle connections"), "{out}");
}
