//! Durability: acknowledged records survive `kill -9` and a clean SIGTERM
//! shutdown, and offsets continue after the recovered end.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{Ack, Broker, Rec};
use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::Offset;

const PARTITIONS: i32 = 2;
const TIMEOUT: Duration = Duration::from_secs(120);
/// Ids (and values) of the records produced after recovery.
const BASE_ID: usize = 1_000_000_000;

/// Asserts every acknowledged record is stored at its acknowledged position
/// with the value `id.to_string()`.
fn assert_acks_present(acks: &[Ack], records: &[Rec]) {
    let stored: HashMap<(i32, i64), String> = records
        .iter()
        .map(|r| ((r.partition, r.offset), r.value_str()))
        .collect();
    for ack in acks {
        assert_eq!(
            stored.get(&(ack.partition, ack.offset)),
            Some(&ack.id.to_string()),
            "acknowledged record {} at partition {} offset {}",
            ack.id,
            ack.partition,
            ack.offset
        );
    }
}

/// High watermark of each partition; asserts the log starts at 0.
fn log_ends(consumer: &BaseConsumer, topic: &str) -> BTreeMap<i32, i64> {
    (0..PARTITIONS)
        .map(|p| {
            let (low, high) = common::watermarks(consumer, topic, p);
            assert_eq!(low, 0, "log start offset of partition {p}");
            (p, high)
        })
        .collect()
}

/// Sets the flag when dropped, so the producer thread also stops when the
/// test fails before stopping it.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[test]
fn acknowledged_records_survive_kill_9() {
    const TOPIC: &str = "crashy";
    let mut broker = Broker::start(&["--flush", "always"]);
    let bootstrap = broker.bootstrap();
    common::create_topic(&bootstrap, TOPIC, PARTITIONS);

    // A producer thread sends value = sequence number to partition seq % 2
    // as fast as the (throttled) loop allows until told to stop.
    let producer = common::producer(
        &bootstrap,
        &[("linger.ms", "2"), ("message.timeout.ms", "15000")],
    );
    let recorder = Arc::clone(producer.context());
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_guard = StopOnDrop(Arc::clone(&stop));
    let sent = Arc::new(AtomicUsize::new(0));
    let worker = {
        let stop = Arc::clone(&stop);
        let sent = Arc::clone(&sent);
        thread::spawn(move || {
            let mut seq = 0usize;
            let mut since_pause = 0;
            while !stop.load(Ordering::Relaxed) {
                let value = seq.to_string();
                let partition = i32::try_from(seq % 2).unwrap();
                let record = BaseRecord::with_opaque_to(TOPIC, seq)
                    .partition(partition)
                    .key("seq")
                    .payload(&value);
                if producer.send(record).is_ok() {
                    seq += 1;
                    sent.store(seq, Ordering::Relaxed);
                    since_pause += 1;
                } else {
                    // Queue full (or broker gone): serve callbacks, retry.
                    producer.poll(Duration::from_millis(10));
                }
                if since_pause >= 100 {
                    since_pause = 0;
                    producer.poll(Duration::from_millis(1));
                } else {
                    producer.poll(Duration::ZERO);
                }
            }
            // Dropping the producer purges whatever is queued or in flight:
            // those records fail and are not counted as acknowledged.
        })
    };

    let deadline = Instant::now() + Duration::from_secs(30);
    while recorder.acked_count() < 2_000 {
        assert!(
            !worker.is_finished() && Instant::now() < deadline,
            "only {} records acknowledged within 30 s; failures: {:?}; client errors: {:?}",
            recorder.acked_count(),
            recorder.failed().first(),
            recorder.errors()
        );
        thread::sleep(Duration::from_millis(10));
    }
    thread::sleep(Duration::from_secs(1));
    broker.kill9();
    let sent_at_kill = sent.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    worker.join().expect("producer thread panicked");
    let acks = recorder.acked();
    eprintln!(
        "kill -9 after {sent_at_kill} records sent, {} acknowledged",
        acks.len()
    );
    assert!(
        acks.len() < sent_at_kill,
        "the kill should land mid-stream: all {sent_at_kill} sent records were acknowledged"
    );

    broker.restart();
    let consumer = common::consumer(&bootstrap);
    let ends = log_ends(&consumer, TOPIC);
    for ack in &acks {
        assert!(
            ack.offset < ends[&ack.partition],
            "record {} was acknowledged at partition {} offset {}, but the recovered \
             log ends at {}",
            ack.id,
            ack.partition,
            ack.offset,
            ends[&ack.partition]
        );
    }
    let total = usize::try_from(ends.values().sum::<i64>()).unwrap();
    let records = common::consume_all(&consumer, TOPIC, PARTITIONS, total, TIMEOUT);
    assert_eq!(
        records.len(),
        total,
        "records consumed vs high watermarks {ends:?}"
    );
    for (&partition, recs) in &common::by_partition(&records) {
        common::assert_offsets_contiguous(partition, recs, 0);
    }
    let mut values = HashSet::new();
    for record in &records {
        let value: usize = record
            .value_str()
            .parse()
            .unwrap_or_else(|e| panic!("value {:?}: {e}", record.value_str()));
        assert!(
            values.insert(value),
            "value {value} stored twice (again at partition {} offset {})",
            record.partition,
            record.offset
        );
        assert_eq!(
            usize::try_from(record.partition).unwrap(),
            value % 2,
            "value {value} in the wrong partition"
        );
    }
    assert_acks_present(&acks, &records);

    // New records continue right after the recovered end of each partition.
    let producer = common::producer(&bootstrap, &[]);
    for i in 0..100 {
        let value = (BASE_ID + i).to_string();
        common::send(
            &producer,
            BaseRecord::with_opaque_to(TOPIC, BASE_ID + i)
                .partition(i32::try_from(i % 2).unwrap())
                .key("after")
                .payload(&value),
        );
    }
    let mut new_acks = common::flush(&producer, 100, TIMEOUT);
    new_acks.sort_by_key(|a| a.id);
    for (&partition, &end) in &ends {
        let offsets: Vec<i64> = new_acks
            .iter()
            .filter(|a| a.partition == partition)
            .map(|a| a.offset)
            .collect();
        let want: Vec<i64> = (end..end + 50).collect();
        assert_eq!(
            offsets, want,
            "partition {partition}: offsets after recovery must continue at {end}"
        );
    }
    let starts: Vec<(i32, Offset)> = ends
        .iter()
        .map(|(&p, &end)| (p, Offset::Offset(end)))
        .collect();
    let tail = common::consume_from(&consumer, TOPIC, &starts, 100, TIMEOUT);
    assert_eq!(tail.len(), 100, "records produced after recovery");
    assert_acks_present(&new_acks, &tail);
}

#[test]
fn sigterm_exits_cleanly_and_keeps_data() {
    const TOPIC: &str = "durable";
    const COUNT: usize = 1_000;
    let mut broker = Broker::start(&[]);
    let bootstrap = broker.bootstrap();
    common::create_topic(&bootstrap, TOPIC, PARTITIONS);
    let acks = {
        let producer = common::producer(&bootstrap, &[]);
        for i in 0..COUNT {
            let value = i.to_string();
            common::send(
                &producer,
                BaseRecord::with_opaque_to(TOPIC, i)
                    .partition(i32::try_from(i % 2).unwrap())
                    .key("k")
                    .payload(&value),
            );
        }
        common::flush(&producer, COUNT, TIMEOUT)
    };

    let status = broker.terminate();
    assert!(
        status.success(),
        "exit status after SIGTERM should be 0, was {status}"
    );

    broker.restart();
    let consumer = common::consumer(&bootstrap);
    let ends = log_ends(&consumer, TOPIC);
    assert_eq!(
        ends.values().sum::<i64>(),
        i64::try_from(COUNT).unwrap(),
        "high watermarks after restart: {ends:?}"
    );
    let records = common::consume_all(&consumer, TOPIC, PARTITIONS, COUNT, TIMEOUT);
    assert_eq!(records.len(), COUNT, "records after a clean restart");
    for (&partition, recs) in &common::by_partition(&records) {
        common::assert_offsets_contiguous(partition, recs, 0);
    }
    assert_acks_present(&acks, &records);
}
