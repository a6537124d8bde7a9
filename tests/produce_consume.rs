//! Produce and consume through rdkafka: ordering, compression codecs, large
//! records, watermarks, seeking and lookup by timestamp.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Broker, Lcg, Rec};
use rdkafka::consumer::Consumer;
use rdkafka::producer::BaseRecord;
use rdkafka::{Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(120);

/// Asserts that every acknowledged record was consumed at the partition and
/// offset the broker acknowledged, with the value `id.to_string()`.
fn assert_acks_match(acks: &[common::Ack], records: &[Rec]) {
    let stored: HashMap<(i32, i64), String> = records
        .iter()
        .map(|r| ((r.partition, r.offset), r.value_str()))
        .collect();
    for ack in acks {
        let found = stored.get(&(ack.partition, ack.offset));
        assert_eq!(
            found.map(String::as_str),
            Some(ack.id.to_string().as_str()),
            "record {} was acknowledged at partition {} offset {}",
            ack.id,
            ack.partition,
            ack.offset
        );
    }
}

#[test]
fn keyed_records_round_trip_in_order_across_partitions() {
    const TOPIC: &str = "keyed";
    const PARTITIONS: i32 = 4;
    const COUNT: usize = 100_000;
    let broker = Broker::start(&[]);
    let bootstrap = broker.bootstrap();
    common::create_topic(&bootstrap, TOPIC, PARTITIONS);

    let producer = common::producer(&bootstrap, &[]);
    for i in 0..COUNT {
        let key = format!("k{}", i % 1000);
        let value = i.to_string();
        common::send(
            &producer,
            BaseRecord::with_opaque_to(TOPIC, i)
                .key(&key)
                .payload(&value),
        );
    }
    let acks = common::flush(&producer, COUNT, TIMEOUT);

    let consumer = common::consumer(&bootstrap);
    let records = common::consume_all(&consumer, TOPIC, PARTITIONS, COUNT, TIMEOUT);
    assert_eq!(records.len(), COUNT, "records consumed from {TOPIC}");

    let partitions = common::by_partition(&records);
    assert_eq!(
        partitions.len(),
        4,
        "1000 distinct keys should spread over all 4 partitions"
    );
    for (&partition, recs) in &partitions {
        common::assert_offsets_contiguous(partition, recs, 0);
        let count = i64::try_from(recs.len()).unwrap();
        assert_eq!(
            common::watermarks(&consumer, TOPIC, partition),
            (0, count),
            "watermarks of partition {partition}"
        );
    }

    // Same key -> same partition -> values in send order.
    let mut seen = vec![false; COUNT];
    let mut last_by_key: HashMap<String, (i32, usize)> = HashMap::new();
    for record in &records {
        let key = record.key_str();
        let value: usize = record
            .value_str()
            .parse()
            .unwrap_or_else(|e| panic!("value {:?} is not a number: {e}", record.value_str()));
        assert!(value < COUNT, "unexpected value {value}");
        assert!(!seen[value], "value {value} consumed twice");
        seen[value] = true;
        assert_eq!(key, format!("k{}", value % 1000), "key of value {value}");
        if let Some(&(partition, previous)) = last_by_key.get(&key) {
            assert_eq!(
                partition, record.partition,
                "key {key} found in partitions {partition} and {}",
                record.partition
            );
            assert!(
                value > previous,
                "key {key}: value {value} (offset {}) came after {previous}",
                record.offset
            );
        }
        last_by_key.insert(key, (record.partition, value));
    }
    assert_acks_match(&acks, &records);
}

#[test]
fn compressed_batches_round_trip() {
    const COUNT: usize = 1000;
    let broker = Broker::start(&[]);
    let bootstrap = broker.bootstrap();
    let consumer = common::consumer(&bootstrap);
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let settings = [("compression.type", codec), ("linger.ms", "20")];
        let producer = match common::try_producer(&bootstrap, &settings) {
            Ok(producer) => producer,
            Err(e) if codec == "zstd" => {
                eprintln!(
                    "skipping zstd here: this rdkafka build has no zstd ({e}); \
                     enable rdkafka's `zstd` feature to test it; tests/kcat.rs covers it"
                );
                continue;
            }
            Err(e) => panic!("producer with compression.type={codec}: {e}"),
        };
        let topic = format!("compressed-{codec}");
        common::create_topic(&bootstrap, &topic, 1);

        // Repetitive values so that batches really shrink; every tenth record
        // has no key.
        let expected: Vec<(Option<String>, String)> = (0..COUNT)
            .map(|i| {
                let key = (i % 10 != 9).then(|| format!("{codec}-key-{}", i % 37));
                let value = format!("{codec} record {i:05} ").repeat(1 + i % 8);
                (key, value)
            })
            .collect();
        for (i, (key, value)) in expected.iter().enumerate() {
            let record = BaseRecord::with_opaque_to(&topic, i).payload(value.as_str());
            match key {
                Some(key) => common::send(&producer, record.key(key.as_str())),
                None => common::send(&producer, record),
            }
        }
        common::flush(&producer, COUNT, TIMEOUT);

        let records = common::consume_all(&consumer, &topic, 1, COUNT, TIMEOUT);
        assert_eq!(records.len(), COUNT, "{codec}: records consumed");
        common::assert_offsets_contiguous(0, &records, 0);
        for (record, (key, value)) in records.iter().zip(&expected) {
            assert_eq!(
                record.key.as_deref(),
                key.as_deref().map(str::as_bytes),
                "{codec}: key at offset {}",
                record.offset
            );
            assert_eq!(
                record.value.as_deref(),
                Some(value.as_bytes()),
                "{codec}: value at offset {}",
                record.offset
            );
        }
    }
}

#[test]
fn large_record_round_trips_byte_exact() {
    const TOPIC: &str = "large";
    const SIZE: usize = 900_000;
    let broker = Broker::start(&[]);
    let bootstrap = broker.bootstrap();
    common::create_topic(&bootstrap, TOPIC, 1);

    let big = Lcg::new(0x5eed_1234).bytes(SIZE);
    let producer = common::producer(&bootstrap, &[("message.max.bytes", "2000000")]);
    common::send(
        &producer,
        BaseRecord::with_opaque_to(TOPIC, 0)
            .key("before")
            .payload("small"),
    );
    common::send(
        &producer,
        BaseRecord::with_opaque_to(TOPIC, 1)
            .key("big")
            .payload(&big),
    );
    common::send(
        &producer,
        BaseRecord::with_opaque_to(TOPIC, 2)
            .key("after")
            .payload("small"),
    );
    common::flush(&producer, 3, TIMEOUT);

    let consumer = common::consumer_with(
        &bootstrap,
        &[
            ("fetch.max.bytes", "4194304"),
            ("max.partition.fetch.bytes", "4194304"),
        ],
    );
    let records = common::consume_all(&consumer, TOPIC, 1, 3, TIMEOUT);
    assert_eq!(records.len(), 3, "records consumed");
    common::assert_offsets_contiguous(0, &records, 0);
    assert_eq!(records[0].value_str(), "small");
    assert_eq!(records[2].value_str(), "small");
    assert_eq!(records[1].key_str(), "big");
    let got = records[1].value.as_deref().unwrap_or_default();
    assert_eq!(got.len(), SIZE, "length of the large record");
    let first_difference = got.iter().zip(&big).position(|(a, b)| a != b);
    assert_eq!(
        first_difference, None,
        "large record differs from what was sent"
    );
}

#[test]
fn watermarks_seek_and_offsets_for_times() {
    // Not created explicitly: auto-creation gives it one partition.
    const TOPIC: &str = "timeline";
    const COUNT: usize = 50;
    let broker = Broker::start(&[]);
    let bootstrap = broker.bootstrap();
    let base = common::now_ms() - 120_000;
    let timestamp = |i: usize| base + i64::try_from(i).unwrap() * 1000;

    let producer = common::producer(&bootstrap, &[]);
    for i in 0..COUNT {
        let value = i.to_string();
        common::send(
            &producer,
            BaseRecord::with_opaque_to(TOPIC, i)
                .key("t")
                .payload(&value)
                .timestamp(timestamp(i)),
        );
    }
    let mut acks = common::flush(&producer, COUNT, TIMEOUT);
    acks.sort_by_key(|a| a.id);
    for ack in &acks {
        assert_eq!(
            (ack.partition, ack.offset),
            (0, i64::try_from(ack.id).unwrap()),
            "acknowledged position of record {}",
            ack.id
        );
    }
    common::wait_for_topic(&bootstrap, TOPIC, 1, Duration::from_secs(10));

    let consumer = common::consumer(&bootstrap);
    assert_eq!(
        common::watermarks(&consumer, TOPIC, 0),
        (0, 50),
        "(low, high) watermarks"
    );

    let records = common::consume_from(&consumer, TOPIC, &[(0, Offset::Offset(25))], 25, TIMEOUT);
    assert_eq!(records.len(), 25, "records from offset 25 to the end");
    common::assert_offsets_contiguous(0, &records, 25);
    for (record, i) in records.iter().zip(25..) {
        assert_eq!(record.value_str(), i.to_string(), "value at offset {i}");
        assert_eq!(
            record.timestamp,
            Some(timestamp(i)),
            "timestamp at offset {i}"
        );
    }

    let lookups = [
        (timestamp(10), Offset::Offset(10)),
        (timestamp(10) + 500, Offset::Offset(11)),
        (base - 5_000, Offset::Offset(0)),
        (timestamp(COUNT) + 1_000_000, Offset::End),
    ];
    for (at, want) in lookups {
        let mut query = TopicPartitionList::new();
        query
            .add_partition_offset(TOPIC, 0, Offset::Offset(at))
            .expect("build the offsets_for_times query");
        let answer = consumer
            .offsets_for_times(query, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("offsets_for_times({at}): {e}"));
        let element = answer
            .find_partition(TOPIC, 0)
            .expect("partition 0 in the offsets_for_times answer");
        assert!(
            element.error().is_ok(),
            "offsets_for_times({at}) error: {:?}",
            element.error()
        );
        assert_eq!(
            element.offset(),
            want,
            "offset for timestamp {at} (base {base})"
        );
    }
}
