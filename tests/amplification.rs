//! Well-formed but hostile requests cannot make the broker do (or answer) more than the
//! deduplicated request asks: names repeated 50,000 times, a 30 KB name with 20,000 partitions,
//! one partition listed 100,000 times in a long-poll fetch. Each is checked by the broker's
//! peak RSS (VmHWM) and the size of its response.

mod common;

use std::time::{Duration, Instant};

use common::Broker;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{
    ApiVersionsRequest, DescribeGroupsRequest, FetchRequest, GroupId, ListOffsetsRequest,
    MetadataRequest, OffsetCommitRequest, OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use tusk::client::Connection;

/// The bar from the fault catalogue (F3).
const RSS_MAX_KIB: u64 = 256 * 1024;

/// Peak resident memory of a process, from /proc.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

fn assert_rss_bounded(broker: &mut Broker, what: &str) {
    broker.assert_alive();
    let kib = peak_rss_kib(broker.pid());
    assert!(
        kib < RSS_MAX_KIB,
        "{what}: broker peak RSS {} MiB, bound {} MiB",
        kib / 1024,
        RSS_MAX_KIB / 1024
    );
}

fn topic(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn connect(broker: &Broker) -> Connection {
    Connection::connect(&broker.bootstrap(), "amplification").unwrap()
}

fn metadata(names: &[&str]) -> MetadataRequest {
    MetadataRequest::default().with_topics(Some(
        names
            .iter()
            .map(|n| MetadataRequestTopic::default().with_name(Some(topic(n))))
            .collect(),
    ))
}

/// Metadata v1 naming a 100-partition topic 50,000 times (0.3 MB) once answered 131 MB.
#[test]
fn repeated_topic_names_in_metadata_are_described_once() {
    let mut broker = Broker::start(&[]);
    common::create_topic(&broker.bootstrap(), "wide", 100);
    let mut conn = connect(&broker);
    let once = conn.call(metadata(&["wide"]), 1).unwrap();
    let repeated = conn.call(metadata(&["wide"; 50_000]), 1).unwrap();
    assert_eq!(repeated.topics.len(), 1, "one entry per distinct topic");
    let size = |r: &kafka_protocol::messages::MetadataResponse| r.compute_size(1).unwrap();
    assert!(
        size(&repeated) <= 2 * size(&once),
        "response {} bytes, deduplicated {} bytes",
        size(&repeated),
        size(&once)
    );
    assert_rss_bounded(&mut broker, "Metadata with 50,000 repeats");
}

/// OffsetFetch v1 with a 30,000-byte topic name and 20,000 partitions (0.1 MB) once took the
/// broker to 1.2 GB.
#[test]
fn long_names_with_many_partitions_in_offset_fetch_stay_small() {
    let mut broker = Broker::start(&[]);
    let mut conn = connect(&broker);
    let long = "n".repeat(30_000);
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("g")))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(topic(&long))
            .with_partition_indexes((0..20_000).collect())]));
    let response = conn.call(request, 1).unwrap();
    assert_eq!(response.topics.len(), 1);
    assert_eq!(response.topics[0].partitions.len(), 20_000);
    assert!(response.topics[0]
        .partitions
        .iter()
        .all(|p| p.committed_offset == -1));
    // The same partition 20,000 times is answered once.
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("g")))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(topic(&long))
            .with_partition_indexes(vec![0; 20_000])]));
    let response = conn.call(request, 1).unwrap();
    assert_eq!(response.topics[0].partitions.len(), 1);
    assert_rss_bounded(&mut broker, "OffsetFetch with a 30 KB name");
}

/// OffsetCommit naming one partition 20,000 times writes one record, not 20,000 copies of the
/// group id; DescribeGroups and ListOffsets collapse their repeats too.
#[test]
fn repeated_partitions_and_groups_collapse() {
    let mut broker = Broker::start(&[]);
    common::create_topic(&broker.bootstrap(), "t", 1);
    let mut conn = connect(&broker);
    let group = "g".repeat(4000);
    let commit = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.clone())))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(topic("t"))
            .with_partitions(
                (0..20_000)
                    .map(|i| {
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(i)
                    })
                    .collect(),
            )]);
    let response = conn.call(commit, 2).unwrap();
    assert_eq!(response.topics[0].partitions.len(), 1);
    assert_eq!(response.topics[0].partitions[0].error_code, 0);
    // 20,000 copies of a 1000-byte id: a 20 MB request, within the frame limit.
    let describe = DescribeGroupsRequest::default().with_groups(vec![
        GroupId(
            StrBytes::from_string(group[..1000].to_string())
        );
        20_000
    ]);
    let response = conn.call(describe, 0).unwrap();
    assert_eq!(response.groups.len(), 1);
    let list = ListOffsetsRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic("t"))
            .with_partitions(vec![
                ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(-1);
                100_000
            ])]);
    let response = conn.call(list, 1).unwrap();
    assert_eq!(response.topics[0].partitions.len(), 1);
    assert_rss_bounded(&mut broker, "repeated commits, groups and list offsets");
}

/// A long-poll fetch listing one partition 100,000 times is one read and one waiter: the shard
/// keeps serving others while it waits, and the answer has the partition once. (Registering a
/// waiter used to scan every earlier waiter, so this request cost 10^10 steps.)
#[test]
fn long_poll_fetch_with_one_partition_repeated_does_not_stall() {
    let mut broker = Broker::start(&[]);
    common::create_topic(&broker.bootstrap(), "idle", 1);
    let mut conn = connect(&broker);
    let fetch = FetchRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_max_wait_ms(2000)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic("idle"))
            .with_partitions(vec![
                FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(0)
                    .with_partition_max_bytes(1 << 20);
                100_000
            ])]);
    let started = Instant::now();
    conn.send(&fetch, 4).unwrap();
    // While the fetch waits, the (only) shard answers another connection.
    let mut other = connect(&broker);
    other.call(ApiVersionsRequest::default(), 0).unwrap();
    let (_, response) = tusk::client::read_response::<kafka_protocol::messages::FetchResponse>(
        &mut conn.try_clone_stream().unwrap(),
        4,
    )
    .unwrap();
    // A liveness bound, not a speed claim: the quadratic registration took minutes.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "fetch took {:?}",
        started.elapsed()
    );
    assert_eq!(response.responses.len(), 1);
    assert_eq!(response.responses[0].partitions.len(), 1);
    assert_rss_bounded(&mut broker, "long-poll fetch with 100,000 repeats");
}
