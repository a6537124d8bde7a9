//! Fetches served from segment files: after a restart the tail cache is empty, so every read
//! comes from disk, by splice (`--fetch-path splice`) or by O_DIRECT read and copy
//! (`--fetch-path copy`, the default). rdkafka must read every record back, byte for byte,
//! from any offset, with both paths, including the active segment and rolled (closed) ones.

mod common;

use std::time::Duration;

use common::Broker;
use rdkafka::producer::BaseRecord;
use rdkafka::Offset;

const TIMEOUT: Duration = Duration::from_secs(120);
const COUNT: usize = 6000;

fn value(i: usize) -> String {
    // 1–3 KiB values so batches straddle 4 KiB blocks and index entries.
    format!("{i:08}-{}", "x".repeat(1000 + (i * 37) % 2000))
}

fn round_trip(fetch_path: &str) {
    // Small segments so the data spans closed segments and the active one.
    let mut broker = Broker::start(&["--fetch-path", fetch_path, "--segment-bytes", "4194304"]);
    let bootstrap = broker.bootstrap();
    common::create_topic(&bootstrap, "zc", 2);
    let producer = common::producer(&bootstrap, &[("linger.ms", "5")]);
    for i in 0..COUNT {
        let v = value(i);
        common::send(
            &producer,
            BaseRecord::<(), String, usize>::with_opaque_to("zc", i)
                .partition((i % 2) as i32)
                .payload(&v),
        );
    }
    let acks = common::flush(&producer, COUNT, TIMEOUT);
    drop(producer);
    assert_eq!(broker.terminate().code(), Some(0));
    broker.restart();

    let consumer = common::consumer(&bootstrap);
    let records = common::consume_all(&consumer, "zc", 2, COUNT, TIMEOUT);
    assert_eq!(records.len(), COUNT, "{fetch_path}: every record once");
    let by_place: std::collections::HashMap<(i32, i64), String> = records
        .iter()
        .map(|r| ((r.partition, r.offset), r.value_str()))
        .collect();
    for ack in &acks {
        assert_eq!(
            by_place.get(&(ack.partition, ack.offset)),
            Some(&value(ack.id)),
            "{fetch_path}: record {} at {}/{}",
            ack.id,
            ack.partition,
            ack.offset
        );
    }
    // From the middle of a partition: the first record is the one asked for.
    let consumer = common::consumer(&bootstrap);
    let middle = common::consume_from(&consumer, "zc", &[(1, Offset::Offset(1234))], 100, TIMEOUT);
    assert_eq!(middle[0].offset, 1234, "{fetch_path}");
    let expected = acks
        .iter()
        .find(|a| a.partition == 1 && a.offset == 1234)
        .unwrap();
    assert_eq!(middle[0].value_str(), value(expected.id), "{fetch_path}");
    let segments = std::fs::read_dir(broker.data_dir().join("zc-0"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "log")
        })
        .count();
    assert!(
        segments >= 2,
        "{fetch_path}: the data spans {segments} segments"
    );
}

#[test]
fn splice_serves_every_record_from_disk() {
    round_trip("splice");
}

#[test]
fn copy_serves_every_record_from_disk() {
    round_trip("copy");
}

#[test]
fn an_unknown_fetch_path_is_refused_by_name() {
    let out = common::run_with_timeout(
        std::process::Command::new(env!("CARGO_BIN_EXE_tusk")).args([
            "serve",
            "--fetch-path",
            "sendfile",
        ]),
        None,
        Duration::from_secs(30),
    );
    assert!(!out.status.success());
    assert!(out.stderr.contains("fetch_path"), "{}", out.stderr);
}
