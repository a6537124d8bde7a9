//! The metadata log and partition directories never cost acknowledged data: a config value that
//! replay would refuse is refused when it is set; a corrupt record in the middle of the log
//! stops the start with its file and byte offset instead of silently shrinking the cluster's
//! history (torn tails are still cut); a partition directory that does not match its topic is
//! moved aside, never deleted; an unreadable marker leaves only that partition offline.

mod common;

use std::time::Duration;

use common::Broker;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{ApiKey, IncrementalAlterConfigsRequest};
use kafka_protocol::protocol::StrBytes;
use rdkafka::producer::BaseRecord;

const TIMEOUT: Duration = Duration::from_secs(60);
/// Kafka's INVALID_CONFIG.
const INVALID_CONFIG: i16 = 40;

/// Sets one config of `topic` with IncrementalAlterConfigs; returns the resource's error code.
fn alter_config(bootstrap: &str, topic: &str, key: &str, value: &str) -> i16 {
    let mut conn = tusk::client::Connection::connect(bootstrap, "metadata-safety").unwrap();
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_string(topic.to_string()))
            .with_configs(vec![AlterableConfig::default()
                .with_name(StrBytes::from_string(key.to_string()))
                .with_config_operation(0)
                .with_value(Some(StrBytes::from_string(value.to_string())))]),
    ]);
    let version = conn.version(ApiKey::IncrementalAlterConfigs, 1).unwrap();
    let response = conn.call(request, version).unwrap();
    assert_eq!(response.responses.len(), 1, "one answer per resource");
    response.responses[0].error_code
}

/// Produces `count` records to partition 0 of `topic` (acks=all) and asserts all are acked.
fn produce_acked(bootstrap: &str, topic: &str, count: usize) {
    let producer = common::producer(bootstrap, &[]);
    for i in 0..count {
        let value = i.to_string();
        common::send(
            &producer,
            BaseRecord::<(), String, usize>::with_opaque_to(topic, i)
                .partition(0)
                .payload(&value),
        );
    }
    common::flush(&producer, count, TIMEOUT);
}

fn assert_all_present(bootstrap: &str, topic: &str, count: usize) {
    let consumer = common::consumer(bootstrap);
    let records = common::consume_all(&consumer, topic, 1, count, TIMEOUT);
    assert_eq!(records.len(), count, "records of {topic} after the restart");
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.offset, i as i64);
        assert_eq!(r.value_str(), i.to_string());
    }
}

/// The reported loss: a 2,000,000-byte `compression.type` was accepted, the next start cut the
/// metadata log at that record, `victim` vanished, and its directory was wiped when the topic
/// was auto-created again. Now the value is refused and the records survive kill -9.
#[test]
fn huge_config_value_is_refused_and_acknowledged_records_survive_kill9() {
    let mut broker = Broker::start(&[]);
    let bootstrap = broker.bootstrap();
    common::create_topic(&bootstrap, "first", 1);
    let huge = "x".repeat(2_000_000);
    assert_eq!(
        alter_config(&bootstrap, "first", "compression.type", &huge),
        INVALID_CONFIG,
        "a 2 MB compression.type must be refused"
    );
    assert_eq!(
        alter_config(&bootstrap, "first", "compression.type", "lz5"),
        INVALID_CONFIG
    );
    assert_eq!(
        alter_config(&bootstrap, "first", "retention.ms", "86400000"),
        0,
        "a valid value is accepted"
    );
    common::create_topic(&bootstrap, "victim", 1);
    produce_acked(&bootstrap, "victim", 1000);
    broker.kill9();
    broker.restart();
    let logs = broker.logs();
    assert!(!logs.contains("cutting torn metadata log tail"), "{logs}");
    assert!(!logs.contains("wiping"), "{logs}");
    assert_all_present(&bootstrap, "victim", 1000);
}

fn metadata_log(broker: &Broker) -> std::path::PathBuf {
    broker.data_dir().join("__cluster_metadata.log")
}

/// A record that fails its check in the middle of the log (valid records follow it) is not a
/// torn tail: the broker refuses to start and names the file and the byte offset, and the log
/// is left as it was for the operator.
#[test]
fn corrupt_record_mid_log_refuses_start() {
    let mut broker = Broker::start(&[]);
    let bootstrap = broker.bootstrap();
    common::create_topic(&bootstrap, "a", 1);
    common::create_topic(&bootstrap, "b", 1);
    broker.terminate();
    let path = metadata_log(&broker);
    let mut bytes = std::fs::read(&path).unwrap();
    // The first record is the cluster's creation; damage the second (topic `a`).
    let first_len = u32::from_be_bytes(bytes[0..4].try_into().unwrap()) as usize;
    let second = 8 + first_len;
    let flip = second + 8 + 4;
    bytes[flip] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();
    let out = broker.start_expecting_failure();
    assert!(
        out.contains("__cluster_metadata.log") && out.contains(&format!("byte {second}")),
        "the refusal names the file and the record's byte offset: {out}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        bytes,
        "a refused log is left untouched"
    );
}

/// A torn last record (a crash during its append) is still cut, and the broker starts.
#[test]
fn torn_metadata_tail_is_cut() {
    let mut broker = Broker::start(&[]);
    let bootstrap = broker.bootstrap();
    common::create_topic(&bootstrap, "kept", 1);
    broker.terminate();
    let path = metadata_log(&broker);
    let mut bytes = std::fs::read(&path).unwrap();
    let full = bytes.len();
    // A frame header claiming 100 bytes, then only 3 of them.
    bytes.extend(100u32.to_be_bytes());
    bytes.extend([1, 2, 3, 4, 9, 9, 9]);
    std::fs::write(&path, &bytes).unwrap();
    broker.restart();
    common::wait_for_topic(&bootstrap, "kept", 1, TIMEOUT);
    broker.terminate();
    assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, full);
}

/// A partition directory whose marker names another topic id is moved aside with its data,
/// never deleted; the topic gets a fresh directory.
#[test]
fn mismatched_partition_directory_is_moved_aside() {
    let mut broker = Broker::start(&[]);
    let bootstrap = broker.bootstrap();
    common::create_topic(&bootstrap, "moved", 1);
    produce_acked(&bootstrap, "moved", 10);
    broker.terminate();
    let dir = broker.data_dir().join("moved-0");
    std::fs::write(
        dir.join("partition.metadata"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    broker.restart();
    common::wait_for_topic(&bootstrap, "moved", 1, TIMEOUT);
    let aside: Vec<_> = std::fs::read_dir(broker.data_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("moved-0.orphaned-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "one directory moved aside: {aside:?}");
    assert_eq!(
        common::segment_files_in(&aside[0]),
        1,
        "its segment is kept for the operator"
    );
    let logs = broker.logs();
    assert!(logs.contains("moved aside"), "{logs}");
}

/// An empty or torn marker is not taken for another topic's: that partition stays offline
/// (its directory untouched), every other partition serves.
#[test]
fn unreadable_marker_leaves_only_that_partition_offline() {
    let mut broker = Broker::start(&[]);
    let bootstrap = broker.bootstrap();
    common::create_topic(&bootstrap, "damaged", 1);
    common::create_topic(&bootstrap, "healthy", 1);
    produce_acked(&bootstrap, "damaged", 10);
    broker.terminate();
    let dir = broker.data_dir().join("damaged-0");
    std::fs::write(dir.join("partition.metadata"), "").unwrap();
    broker.restart();
    produce_acked(&bootstrap, "healthy", 5);
    assert_eq!(
        common::segment_files_in(&dir),
        1,
        "the damaged partition's data is untouched"
    );
    let logs = broker.logs();
    assert!(
        logs.contains("damaged-0") && logs.contains("stays offline"),
        "{logs}"
    );
}
