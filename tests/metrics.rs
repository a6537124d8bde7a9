//! The Prometheus endpoint and the log flags, against the real binary: counters move when
//! records are produced, gauges show the partitions, bad settings are refused by name, and
//! `--log-format json` writes one JSON object per line.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Broker;
use rdkafka::producer::BaseRecord;

fn scrape(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect to the metrics endpoint");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    out
}

/// Sum of every sample of `family` whose labels contain `filter`.
fn sum(text: &str, family: &str, filter: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(family) && l[family.len()..].starts_with('{'))
        .filter(|l| l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn counters_move_when_records_are_produced() {
    let addr = format!("127.0.0.1:{}", common::free_port());
    let broker = Broker::start(&["--metrics-listen", &addr]);
    let before = scrape(&addr);
    assert!(before.contains("tusk_build_info{version="), "{before}");
    let produce_before = sum(&before, "tusk_requests_total", "api=\"Produce\"");

    let bootstrap = broker.bootstrap();
    common::create_topic(&bootstrap, "m", 2);
    let producer = common::producer(&bootstrap, &[]);
    for i in 0..200usize {
        let v = format!("value-{i}");
        common::send(
            &producer,
            BaseRecord::<(), String, usize>::with_opaque_to("m", i).payload(&v),
        );
    }
    common::flush(&producer, 200, Duration::from_secs(60));

    // Gauges refresh every second.
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let text = scrape(&addr);
        if sum(&text, "tusk_partitions", "") >= 2.0 || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        sum(&after, "tusk_requests_total", "api=\"Produce\"") > produce_before,
        "{after}"
    );
    assert!(sum(&after, "tusk_request_bytes_total", "api=\"Produce\"") > 2000.0);
    assert!(sum(&after, "tusk_response_bytes_total", "api=\"Metadata\"") > 0.0);
    assert!(sum(&after, "tusk_produce_stage_seconds_count", "stage=\"ack\"") >= 1.0);
    assert!(
        sum(
            &after,
            "tusk_produce_stage_seconds_count",
            "stage=\"fdatasync\""
        ) >= 1.0
    );
    assert!(sum(&after, "tusk_partitions", "") >= 2.0, "{after}");
    assert!(sum(&after, "tusk_log_bytes", "") > 0.0, "{after}");
    assert!(sum(&after, "tusk_connections_active", "") >= 1.0, "{after}");
}

fn serve(extra: &[&str]) -> common::CmdOutput {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", common::free_port());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tusk"));
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", &listen])
        .args(extra);
    common::run_with_timeout(&mut cmd, None, Duration::from_secs(30))
}

#[test]
fn bad_metrics_and_log_settings_are_refused_by_name() {
    for (args, setting) in [
        (vec!["--metrics-listen", "nowhere"], "metrics_listen"),
        (vec!["--log-format", "xml"], "log_format"),
        (vec!["--log-level", "loud"], "log_level"),
    ] {
        let out = serve(&args);
        assert!(!out.status.success(), "{args:?} started");
        assert!(out.stderr.contains(setting), "{args:?}: {}", out.stderr);
    }
}

#[test]
fn json_logs_are_one_object_per_line() {
    let broker = Broker::start(&["--log-format", "json", "--log-level", "info"]);
    let logs = broker.logs();
    let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        lines.iter().any(|l| l.contains("effective configuration")),
        "{logs}"
    );
    for line in lines.iter().filter(|l| l.starts_with('{')) {
        let v: serde_json::Value = serde_json::from_str(line).expect(line);
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }
    assert!(
        lines.iter().filter(|l| l.starts_with('{')).count() >= 3,
        "{logs}"
    );
}

/// The small-request pattern of `tusk bench` (librdkafka's with linger.ms=0) sends one produce
/// request per record, and every stage of the produce path is observed, the disk write too.
#[test]
fn one_record_per_request_is_one_request_and_every_stage_is_seen() {
    let addr = format!("127.0.0.1:{}", common::free_port());
    let broker = Broker::start(&["--metrics-listen", &addr]);
    let b = broker.bootstrap();
    let mut bench = Command::new(env!("CARGO_BIN_EXE_tusk"));
    bench.args([
        "bench",
        "produce",
        "--bootstrap",
        &b,
        "--topic",
        "small",
        "--quiet",
    ]);
    bench.args([
        "--records",
        "400",
        "--records-per-request",
        "1",
        "--in-flight",
        "8",
    ]);
    let out = common::run_with_timeout(&mut bench, None, Duration::from_secs(120));
    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
    let text = scrape(&addr);
    let produces = sum(&text, "tusk_requests_total", "api=\"Produce\"");
    assert_eq!(produces, 400.0, "one produce request per record");
    for stage in ["queue_wait", "disk_write", "ack"] {
        let filter = format!("stage=\"{stage}\"");
        let count = sum(&text, "tusk_produce_stage_seconds_count", &filter);
        assert!(count > 0.0, "stage {stage} observed: {count}");
    }
    // Buckets resolve tens of microseconds, so a fast disk's figures are visible.
    assert!(text.contains(
        "tusk_produce_stage_seconds_bucket{shard=\"0\",stage=\"disk_write\",le=\"0.00005\"}"
    ));
}
