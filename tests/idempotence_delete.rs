//! Idempotent producer delivery, and topic deletion and re-creation.

mod common;

use std::collections::HashMap;
use std::thread;
use std::time::{Duration, Instant};

use common::Broker;
use rdkafka::producer::BaseRecord;

const TIMEOUT: Duration = Duration::from_secs(120);

#[test]
fn idempotent_producer_delivers_each_record_exactly_once() {
    const TOPIC: &str = "idempotent";
    const PARTITIONS: i32 = 3;
    const COUNT: usize = 10_000;
    let broker = Broker::start(&[]);
    let bootstrap = broker.bootstrap();
    common::create_topic(&bootstrap, TOPIC, PARTITIONS);

    let producer = common::producer(&bootstrap, &[("enable.idempotence", "true")]);
    for i in 0..COUNT {
        let key = format!("id-{i}");
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
    assert_eq!(records.len(), COUNT, "records consumed (duplicates?)");

    let mut seen = vec![false; COUNT];
    for record in &records {
        let value: usize = record
            .value_str()
            .parse()
            .unwrap_or_else(|e| panic!("value {:?}: {e}", record.value_str()));
        assert!(value < COUNT, "unexpected value {value}");
        assert!(
            !seen[value],
            "value {value} stored twice (second copy at partition {} offset {})",
            record.partition, record.offset
        );
        seen[value] = true;
        assert_eq!(
            record.key_str(),
            format!("id-{value}"),
            "key of value {value}"
        );
    }

    // Idempotence keeps send order within each partition.
    for (&partition, recs) in &common::by_partition(&records) {
        common::assert_offsets_contiguous(partition, recs, 0);
        let values: Vec<usize> = recs
            .iter()
            .map(|r| r.value_str().parse().unwrap())
            .collect();
        assert!(
            values.windows(2).all(|w| w[0] < w[1]),
            "partition {partition}: values out of send order"
        );
    }

    let stored: HashMap<(i32, i64), String> = records
        .iter()
        .map(|r| ((r.partition, r.offset), r.value_str()))
        .collect();
    for ack in &acks {
        assert_eq!(
            stored.get(&(ack.partition, ack.offset)),
            Some(&ack.id.to_string()),
            "record {} acknowledged at partition {} offset {}",
            ack.id,
            ack.partition,
            ack.offset
        );
    }
}

/// Polls metadata until `topic` is reported unknown (at most `timeout`).
fn wait_until_unknown(bootstrap: &str, topic: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        match common::topic_unknown(bootstrap, topic) {
            Ok(()) => return,
            Err(state) => assert!(
                Instant::now() < deadline,
                "topic {topic} still known after {timeout:?}: {state}"
            ),
        }
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn deleted_topic_disappears_and_can_be_recreated() {
    const TOPIC: &str = "doomed";
    // With auto-creation on, the metadata requests below could re-create it.
    let broker = Broker::start(&["--auto-create-topics", "false"]);
    let bootstrap = broker.bootstrap();

    // Auto-creation off: asking about an unknown name creates nothing.
    wait_until_unknown(&bootstrap, "never-created", Duration::from_secs(10));
    assert!(
        !common::topic_names(&bootstrap).contains(&"never-created".to_string()),
        "a metadata request created a topic although auto-creation is off"
    );

    common::create_topic(&bootstrap, TOPIC, 2);
    {
        let producer = common::producer(&bootstrap, &[]);
        for i in 0..20 {
            let value = format!("old-{i}");
            common::send(
                &producer,
                BaseRecord::with_opaque_to(TOPIC, i)
                    .partition(i32::try_from(i % 2).unwrap())
                    .key("k")
                    .payload(&value),
            );
        }
        common::flush(&producer, 20, TIMEOUT);
    }

    common::delete_topic(&bootstrap, TOPIC);
    wait_until_unknown(&bootstrap, TOPIC, Duration::from_secs(15));
    let names = common::topic_names(&bootstrap);
    assert!(
        !names.iter().any(|n| n.as_str() == TOPIC),
        "deleted topic still listed in full metadata: {names:?}"
    );

    // Same name again, now with one partition: a fresh log from offset 0.
    common::create_topic(&bootstrap, TOPIC, 1);
    let producer = common::producer(&bootstrap, &[]);
    for i in 0..5 {
        let value = format!("new-{i}");
        common::send(
            &producer,
            BaseRecord::with_opaque_to(TOPIC, i)
                .key("k")
                .payload(&value),
        );
    }
    let mut acks = common::flush(&producer, 5, TIMEOUT);
    acks.sort_by_key(|a| a.id);
    let positions: Vec<(i32, i64)> = acks.iter().map(|a| (a.partition, a.offset)).collect();
    assert_eq!(
        positions,
        vec![(0, 0), (0, 1), (0, 2), (0, 3), (0, 4)],
        "re-created topic must start at offset 0"
    );

    let consumer = common::consumer(&bootstrap);
    assert_eq!(
        common::watermarks(&consumer, TOPIC, 0),
        (0, 5),
        "watermarks of the re-created topic"
    );
    let records = common::consume_all(&consumer, TOPIC, 1, 5, TIMEOUT);
    let values: Vec<String> = records.iter().map(|r| r.value_str()).collect();
    assert_eq!(
        values,
        ["new-0", "new-1", "new-2", "new-3", "new-4"],
        "the re-created topic holds only the new records"
    );
}
