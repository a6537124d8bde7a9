//! A connection's produce requests reach each partition in request order, also when they are
//! pipelined and the shard mesh's channels are full: many connections pipeline produces to
//! partitions on both shards, and every connection's records must be stored in the order it
//! sent them (librdkafka and the Java client rely on this for ordering and idempotence).

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::records::Compression;
use tusk::client::{read_response, topic_name, Connection};
use tusk::protocol::batch_builder::BatchBuilder;

const TOPIC: &str = "ordered";
const PARTITIONS: i32 = 4;
const CONNECTIONS: usize = 16;
const REQUESTS: usize = 1500;

/// Pipelines `REQUESTS` produce requests on one connection, each with one record per
/// partition valued `conn:seq`, then reads every response.
fn pipeline(bootstrap: &str, conn_id: usize) {
    let mut conn = Connection::connect(bootstrap, "order").unwrap();
    let mut reader = conn.try_clone_stream().unwrap();
    reader
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let version = conn.versions.produce;
    let responses = std::thread::spawn(move || {
        for _ in 0..REQUESTS {
            let (_, r) = read_response::<ProduceResponse>(&mut reader, version).unwrap();
            for t in &r.responses {
                for p in &t.partition_responses {
                    assert_eq!(p.error_code, 0, "produce failed");
                }
            }
        }
    });
    let mut out = Vec::new();
    for seq in 0..REQUESTS {
        let data = (0..PARTITIONS)
            .map(|p| {
                let mut batch = BatchBuilder::new(Compression::None, 64);
                batch.push(0, None, Some(format!("{conn_id}:{seq}").as_bytes()));
                PartitionProduceData::default()
                    .with_index(p)
                    .with_records(Some(batch.finish()))
            })
            .collect();
        let request = ProduceRequest::default()
            .with_acks(1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(topic_name(TOPIC))
                .with_partition_data(data)]);
        out.extend_from_slice(&conn.encode(&request, version).unwrap());
        if out.len() > 64 * 1024 {
            conn.write_frame(&out).unwrap();
            out.clear();
        }
    }
    conn.write_frame(&out).unwrap();
    let _ = std::io::stdout().flush();
    responses.join().unwrap();
}

#[test]
fn pipelined_produces_keep_their_order_per_partition() {
    // Channels of two messages are full nearly all the time.
    let broker = common::Broker::start(&["--mesh-channel-depth", "2"]);
    let bootstrap = broker.bootstrap();
    common::create_topic(&bootstrap, TOPIC, PARTITIONS);
    let threads: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            let b = bootstrap.clone();
            std::thread::spawn(move || pipeline(&b, c))
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let consumer = common::consumer(&bootstrap);
    let total = CONNECTIONS * REQUESTS * PARTITIONS as usize;
    let records = common::consume_all(
        &consumer,
        TOPIC,
        PARTITIONS,
        total,
        Duration::from_secs(120),
    );
    assert_eq!(records.len(), total);
    for (partition, records) in common::by_partition(&records) {
        let mut last: HashMap<usize, usize> = HashMap::new();
        for r in records {
            let value = r.value_str();
            let (conn, seq) = value.split_once(':').unwrap();
            let (conn, seq): (usize, usize) = (conn.parse().unwrap(), seq.parse().unwrap());
            if let Some(prev) = last.insert(conn, seq) {
                assert!(
                    seq == prev + 1,
                    "partition {partition}: connection {conn} wrote {seq} after {prev}"
                );
            } else {
                assert_eq!(
                    seq, 0,
                    "partition {partition}: connection {conn} starts at 0"
                );
            }
        }
    }
}
