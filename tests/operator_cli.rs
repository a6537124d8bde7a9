//! The client subcommands against a live broker: topic create/list/describe/alter-config/
//! delete, produce from stdin and a file, consume with formats and a group, group
//! list/describe/reset-offsets, cluster info, JSON output, and one-line error exits. Records
//! `tusk produce` writes are read back by rdkafka, and keys land where the Java client's
//! murmur2 partitioner puts them.

mod common;

use std::process::Command;
use std::time::Duration;

use common::Broker;

fn tusk(args: &[&str], stdin: Option<&str>) -> common::CmdOutput {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tusk"));
    cmd.args(args);
    common::run_with_timeout(&mut cmd, stdin.map(str::as_bytes), Duration::from_secs(60))
}

fn ok(args: &[&str], stdin: Option<&str>) -> String {
    let out = tusk(args, stdin);
    assert!(
        out.status.success(),
        "tusk {args:?} failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    out.stdout
}

fn fails(args: &[&str]) -> String {
    let out = tusk(args, None);
    assert!(
        !out.status.success(),
        "tusk {args:?} should fail:\n{}",
        out.stdout
    );
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line for {args:?}: {}", out.stderr);
    out.stderr
}

/// The sum of a `group describe --json`'s per-partition lag.
fn total_lag(json: &serde_json::Value) -> i64 {
    json["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["lag"].as_i64().unwrap_or(0))
        .sum()
}

#[test]
fn topics_records_groups_and_cluster() {
    let broker = Broker::start(&[]);
    let b = broker.bootstrap();
    let bs = ["--bootstrap", b.as_str()];
    let with = |args: &[&str]| -> Vec<String> {
        args.iter()
            .chain(bs.iter())
            .map(|s| s.to_string())
            .collect()
    };
    let run = |args: &[&str], stdin: Option<&str>| -> String {
        let a = with(args);
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        ok(&refs, stdin)
    };
    let out = run(
        &[
            "topic",
            "create",
            "orders",
            "--partitions",
            "3",
            "--config",
            "retention.ms=3600000",
        ],
        None,
    );
    assert!(out.contains("created topic orders"), "{out}");
    assert!(run(&["topic", "list"], None).contains("orders  3"));

    let input = "k1:one\nk2:two\nk1:three\nk3:four\n";
    run(&["produce", "orders", "--key-separator", ":"], Some(input));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lines.txt");
    std::fs::write(&file, "five\nsix\n").unwrap();
    run(
        &[
            "produce",
            "orders",
            "--file",
            file.to_str().unwrap(),
            "--partition",
            "1",
        ],
        None,
    );

    // Every record, with its place; keys where murmur2 puts them (rdkafka agrees below).
    let all = run(
        &[
            "consume",
            "orders",
            "--from-beginning",
            "--end",
            "--format",
            "{partition}/{offset} {key}={value}",
        ],
        None,
    );
    let lines: Vec<&str> = all.lines().collect();
    assert_eq!(lines.len(), 6, "{all}");
    for v in ["k1=one", "k2=two", "k1=three", "k3=four", "=five", "=six"] {
        assert!(lines.iter().any(|l| l.ends_with(v)), "{v} in {all}");
    }
    let partition_of = |v: &str| {
        lines
            .iter()
            .find(|l| l.ends_with(v))
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        partition_of("k1=one"),
        partition_of("k1=three"),
        "one key, one partition"
    );
    assert_eq!(partition_of("=five"), "1");
    let consumer = common::consumer(&b);
    let records = common::consume_all(&consumer, "orders", 3, 6, Duration::from_secs(60));
    let k1 = records.iter().find(|r| r.key_str() == "k1").unwrap();
    assert_eq!(
        k1.partition.to_string(),
        partition_of("k1=one"),
        "rdkafka sees the same place"
    );

    // A group: consume two, then describe shows the lag; reset moves the offsets back.
    let two = run(
        &[
            "consume",
            "orders",
            "--from-beginning",
            "--count",
            "2",
            "--group",
            "ops",
        ],
        None,
    );
    assert_eq!(two.lines().count(), 2, "{two}");
    assert!(run(&["group", "list"], None).contains("ops"));
    let described = run(&["group", "describe", "ops"], None);
    assert!(
        described.contains("LAG") && described.contains("orders"),
        "{described}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&run(&["group", "describe", "ops", "--json"], None)).unwrap();
    let lag = total_lag(&json);
    assert_eq!(lag, 4, "6 records, 2 consumed: {json}");
    run(&["group", "reset-offsets", "ops", "--to-earliest"], None);
    let json: serde_json::Value =
        serde_json::from_str(&run(&["group", "describe", "ops", "--json"], None)).unwrap();
    let lag = total_lag(&json);
    assert_eq!(lag, 6, "after reset to earliest: {json}");

    // Describe: watermarks and configs; alter-config changes one.
    let d: serde_json::Value =
        serde_json::from_str(&run(&["topic", "describe", "orders", "--json"], None)).unwrap();
    let hw: i64 = d["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["high_watermark"].as_i64().unwrap())
        .sum();
    assert_eq!(hw, 6);
    // One replica per partition here: the leader's own, no lag, its bytes on disk.
    for p in d["partitions"].as_array().unwrap() {
        assert_eq!(p["replica_lag"], serde_json::json!([0]), "{p}");
        let bytes = p["replica_bytes"][0].as_i64().unwrap();
        let written = p["high_watermark"].as_i64().unwrap();
        assert_eq!(bytes > 0, written > 0, "bytes on disk of {p}");
    }
    let retention = |d: &serde_json::Value| {
        d["configs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "retention.ms")
            .unwrap()["value"]
            .clone()
    };
    assert_eq!(retention(&d), "3600000");
    run(
        &[
            "topic",
            "alter-config",
            "orders",
            "--set",
            "retention.ms=7200000",
        ],
        None,
    );
    let d: serde_json::Value =
        serde_json::from_str(&run(&["topic", "describe", "orders", "--json"], None)).unwrap();
    assert_eq!(retention(&d), "7200000");

    let info = run(&["cluster", "info"], None);
    assert!(
        info.contains("CONTROLLER") && info.contains(&broker.port().to_string()),
        "{info}"
    );

    run(&["topic", "delete", "orders"], None);
    let a = with(&["topic", "describe", "orders"]);
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    assert!(fails(&refs).contains("UNKNOWN_TOPIC_OR_PARTITION"));
}

#[test]
fn errors_exit_non_zero_with_one_line() {
    let broker = Broker::start(&[]);
    let b = broker.bootstrap();
    let gone = format!("127.0.0.1:{}", common::free_port());
    assert!(fails(&["topic", "list", "--bootstrap", &gone]).contains("cannot reach"));
    assert!(fails(&["consume", "nope", "--end", "--bootstrap", &b]).contains("does not exist"));
    assert!(fails(&["topic", "create", "bad/name", "--bootstrap", &b])
        .contains("INVALID_TOPIC_EXCEPTION"));
    assert!(fails(&[
        "topic",
        "create",
        "t",
        "--config",
        "retention.ms=soon",
        "--bootstrap",
        &b
    ])
    .contains("INVALID_CONFIG"));
    assert!(fails(&[
        "topic",
        "create",
        "t",
        "--config",
        "noequals",
        "--bootstrap",
        &b
    ])
    .contains("KEY=VALUE"));
    let out = tusk(&["group", "reset-offsets", "g", "--bootstrap", &b], None);
    assert!(!out.status.success(), "a reset needs a target");
}
