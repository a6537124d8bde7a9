//! Segment rolls, disk reads and retention through a real client: small segments and a tiny
//! in-memory tail force every fetch to read segment files (closed ones through their persisted
//! index after a restart), and retention by size moves the log start offset.

mod common;

use std::time::{Duration, Instant};

use rdkafka::producer::BaseRecord;
use rdkafka::Offset;

const TIMEOUT: Duration = Duration::from_secs(60);
const RECORD_BYTES: usize = 1000;

fn value(i: usize) -> Vec<u8> {
    let mut v = format!("{i:08}").into_bytes();
    v.resize(RECORD_BYTES, b'.');
    v
}

fn produce(bootstrap: &str, topic: &str, range: std::ops::Range<usize>) -> Vec<common::Ack> {
    let producer = common::producer(bootstrap, &[("linger.ms", "2"), ("batch.size", "65536")]);
    let count = range.len();
    for i in range {
        let payload = value(i);
        common::send(
            &producer,
            BaseRecord::with_opaque_to(topic, i)
                .payload(&payload)
                .key("k"),
        );
    }
    common::flush(&producer, count, TIMEOUT)
}

fn segment_files(broker: &common::Broker, dir: &str) -> usize {
    common::segment_files_in(&broker.data_dir().join(dir))
}

/// Watermarks of partition 0 once retention moved its log start (or after 20 s).
fn wait_for_log_start(consumer: &rdkafka::consumer::BaseConsumer, topic: &str) -> (i64, i64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (low, high) = common::watermarks(consumer, topic, 0);
        if low > 0 || Instant::now() > deadline {
            return (low, high);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn check_all(bootstrap: &str, topic: &str, count: usize) {
    let consumer = common::consumer(bootstrap);
    let records = common::consume_all(&consumer, topic, 1, count, TIMEOUT);
    assert_eq!(records.len(), count, "records read back from disk");
    common::assert_offsets_contiguous(0, &records, 0);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(
            r.value.as_deref(),
            Some(&value(i)[..]),
            "value at offset {i}"
        );
    }
}

#[test]
fn reads_span_rolled_segments_before_and_after_restart() {
    let mut broker =
        common::Broker::start(&["--segment-bytes", "1048576", "--tail-cache-bytes", "4096"]);
    let bootstrap = broker.bootstrap();
    common::create_topic(&bootstrap, "rolling", 1);
    let acks = produce(&bootstrap, "rolling", 0..3000);
    for a in &acks {
        assert_eq!(a.offset, a.id as i64, "offsets follow production order");
    }
    assert!(
        segment_files(&broker, "rolling-0") >= 3,
        "3 MB in 1 MiB segments rolls at least twice"
    );
    check_all(&bootstrap, "rolling", 3000);

    let status = broker.terminate();
    assert!(status.success(), "clean stop: {status:?}");
    broker.restart();
    check_all(&bootstrap, "rolling", 3000);
    let more = produce(&bootstrap, "rolling", 3000..3010);
    let offsets: Vec<i64> = more.iter().map(|a| a.offset).collect();
    assert_eq!(
        offsets,
        (3000..3010).collect::<Vec<i64>>(),
        "offsets continue after restart"
    );
}

#[test]
fn retention_by_size_moves_the_log_start() {
    let broker = common::Broker::start(&[
        "--segment-bytes",
        "1048576",
        "--retention-bytes",
        "1048576",
        "--retention-check-interval-ms",
        "200",
        "--tail-cache-bytes",
        "4096",
    ]);
    let bootstrap = broker.bootstrap();
    common::create_topic(&bootstrap, "trimmed", 1);
    produce(&bootstrap, "trimmed", 0..4000);
    let consumer = common::consumer(&bootstrap);
    let (low, high) = wait_for_log_start(&consumer, "trimmed");
    assert_eq!(high, 4000, "high watermark");
    assert!(
        low > 0,
        "retention deleted the oldest segments (low watermark {low})"
    );
    let expected = (high - low) as usize;
    let records = common::consume_from(
        &consumer,
        "trimmed",
        &[(0, Offset::Beginning)],
        expected,
        TIMEOUT,
    );
    common::assert_offsets_contiguous(0, &records, low);
    assert!(
        segment_files(&broker, "trimmed-0") <= 3,
        "old segment files are deleted from disk"
    );
}

/// Roll by age and retention by time: records stamped an hour ago land in a segment that rolls
/// by age when newer records arrive; time retention then deletes it and moves the log start to
/// the first new record.
#[test]
fn age_roll_and_time_retention() {
    let broker = common::Broker::start(&[
        "--segment-ms",
        "100",
        "--retention-ms",
        "60000",
        "--retention-check-interval-ms",
        "200",
    ]);
    let bootstrap = broker.bootstrap();
    common::create_topic(&bootstrap, "aged", 1);
    let producer = common::producer(&bootstrap, &[]);
    let hour_ago = common::now_ms() - 3_600_000;
    for i in 0..10usize {
        let payload = value(i);
        let record = BaseRecord::with_opaque_to("aged", i)
            .payload(&payload)
            .key("old")
            .timestamp(hour_ago);
        common::send(&producer, record);
    }
    common::flush(&producer, 10, TIMEOUT);
    std::thread::sleep(Duration::from_millis(300));
    let producer = common::producer(&bootstrap, &[]);
    for i in 10..20usize {
        let payload = value(i);
        common::send(
            &producer,
            BaseRecord::with_opaque_to("aged", i)
                .payload(&payload)
                .key("new"),
        );
    }
    common::flush(&producer, 10, TIMEOUT);
    // No count of segment files here: retention (every 200 ms) may already have deleted the
    // rolled segment. A log start of 10 proves the roll: only a segment that is no longer the
    // active one is ever deleted, and the hour-old records were the only ones in it.
    let consumer = common::consumer(&bootstrap);
    let (low, _) = wait_for_log_start(&consumer, "aged");
    assert_eq!(
        low, 10,
        "time retention deleted exactly the hour-old segment"
    );
    let records = common::consume_from(&consumer, "aged", &[(0, Offset::Beginning)], 10, TIMEOUT);
    common::assert_offsets_contiguous(0, &records, 10);
}

/// Bytes of disk a directory tree occupies (allocated blocks, not file lengths).
fn disk_bytes(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        total += meta.blocks() * 512;
        if meta.is_dir() {
            total += disk_bytes(&entry.path());
        }
    }
    total
}

/// A broker holding one topic with three records once occupied 1.1 GB: each of the 16
/// `__consumer_offsets` partitions preallocated a 64 MiB segment at start. Preallocation now
/// grows with the data written, so an empty broker fits in 64 MiB.
#[test]
fn an_almost_empty_broker_uses_little_disk() {
    let mut broker = common::Broker::start(&[]);
    let bootstrap = broker.bootstrap();
    common::create_topic(&bootstrap, "small", 1);
    produce(&bootstrap, "small", 0..3);
    broker.terminate();
    let used = disk_bytes(&broker.data_dir());
    assert!(
        used <= 64 * 1024 * 1024,
        "the data directory occupies {} MiB",
        used / (1024 * 1024)
    );
}
