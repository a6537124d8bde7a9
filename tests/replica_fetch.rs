//! A client cannot pass itself off as a follower: with both followers of a partition frozen
//! (SIGSTOP), a record acknowledged by the leader alone stays above the high watermark even
//! when a raw client sends the leader Fetch requests claiming a follower's replica id: in Fetch
//! v12 (the id proves nothing; the fetch is served as a consumer's) and in Fetch v15 with a
//! broker epoch that is not the follower's (refused with STALE_BROKER_EPOCH). Once the
//! followers run again, the real fetchers move the high watermark past it.

mod common;

use std::time::{Duration, Instant};

use common::cluster::Cluster;
use kafka_protocol::messages::fetch_request::{
    FetchPartition, FetchRequest, FetchTopic, ReplicaState,
};
use kafka_protocol::messages::{BrokerId, FetchResponse, MetadataRequest};
use rdkafka::producer::BaseRecord;
use tusk::client::{topic_name, Connection};

const TOPIC: &str = "spoofed";
/// Kafka's STALE_BROKER_EPOCH.
const STALE_BROKER_EPOCH: i16 = 77;

fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) on a child process this test started and has not reaped.
    let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
}

/// (leader, topic id) of partition 0 as `bootstrap` answers Metadata.
fn leader_and_id(conn: &mut Connection) -> (i32, [u8; 16]) {
    let request = MetadataRequest::default().with_topics(Some(vec![
        kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
            .with_name(Some(topic_name(TOPIC))),
    ]));
    let response = conn.call(request, 12).expect("metadata");
    let t = &response.topics[0];
    (t.partitions[0].leader_id.0, t.topic_id.into_bytes())
}

/// Partition 0's high watermark (and error code) from a Fetch at `offset`, as `replica` at
/// `version` (`epoch`: the replica state's broker epoch, v15 only).
fn fetch_as(
    conn: &mut Connection,
    version: i16,
    replica: i32,
    epoch: i64,
    topic_id: [u8; 16],
    offset: i64,
) -> (i64, i16) {
    let partition = FetchPartition::default()
        .with_partition(0)
        .with_fetch_offset(offset)
        .with_partition_max_bytes(1 << 20);
    let mut request = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1);
    let topic = FetchTopic::default().with_partitions(vec![partition]);
    if version >= 13 {
        request = request
            .with_replica_state(
                ReplicaState::default()
                    .with_replica_id(BrokerId(replica))
                    .with_replica_epoch(epoch),
            )
            .with_topics(vec![topic.with_topic_id(uuid::Uuid::from_bytes(topic_id))]);
    } else {
        request = request
            .with_replica_id(BrokerId(replica))
            .with_topics(vec![topic.with_topic(topic_name(TOPIC))]);
    }
    let response: FetchResponse = conn.call(request, version).expect("fetch");
    let p = &response.responses[0].partitions[0];
    (p.high_watermark, p.error_code)
}

#[test]
fn a_client_claiming_a_replica_id_moves_no_high_watermark() {
    let mut cluster = Cluster::start(3, 1);
    let admin_at = cluster.bootstrap_of(1);
    common::block_on(
        common::admin(&admin_at).create_topics(
            &[rdkafka::admin::NewTopic::new(
                TOPIC,
                1,
                rdkafka::admin::TopicReplication::Fixed(3),
            )],
            &rdkafka::admin::AdminOptions::new(),
        ),
        Duration::from_secs(30),
        "create the topic",
    )
    .expect("create topic");
    let mut conn = Connection::connect(&admin_at, "spoof").expect("connect");
    let deadline = Instant::now() + Duration::from_secs(30);
    let (leader, topic_id) = loop {
        let (leader, id) = leader_and_id(&mut conn);
        if leader > 0 {
            break (leader, id);
        }
        assert!(Instant::now() < deadline, "no leader for {TOPIC}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let followers: Vec<i32> = [1, 2, 3].into_iter().filter(|b| *b != leader).collect();
    let at_leader = cluster.bootstrap_of(leader);
    // Ten records all three replicas hold: the high watermark is 10.
    let producer = common::producer(&at_leader, &[("acks", "all")]);
    for i in 0..10 {
        let v = format!("r-{i}");
        common::send(
            &producer,
            BaseRecord::<(), String, usize>::with_opaque_to(TOPIC, i)
                .partition(0)
                .payload(&v),
        );
    }
    common::flush(&producer, 10, Duration::from_secs(30));
    let mut leader_conn = Connection::connect(&at_leader, "spoof").expect("connect to leader");
    let (hwm, _) = fetch_as(&mut leader_conn, 12, -1, -1, topic_id, 0);
    assert_eq!(
        hwm, 10,
        "the high watermark once all three hold ten records"
    );

    for f in &followers {
        signal(cluster.broker(*f).pid(), libc::SIGSTOP);
    }
    let one = common::producer(&at_leader, &[("acks", "1")]);
    let payload = "leader only".to_string();
    common::send(
        &one,
        BaseRecord::<(), String, usize>::with_opaque_to(TOPIC, 10)
            .partition(0)
            .payload(&payload),
    );
    common::flush(&one, 1, Duration::from_secs(30));
    // Both followers claimed: the high watermark is the minimum over the ISR, so claiming one
    // would prove nothing.
    let mut answers = Vec::new();
    for spoofed in &followers {
        let v12 = fetch_as(&mut leader_conn, 12, *spoofed, -1, topic_id, 11);
        let v15 = fetch_as(&mut leader_conn, 15, *spoofed, 1, topic_id, 11);
        answers.push((v12, v15));
    }
    let ((after_v12, code_v12), (after_v15, code_v15)) = answers[1];
    let spoofed = followers[1];
    let (hwm_now, _) = fetch_as(&mut leader_conn, 12, -1, -1, topic_id, 0);
    for f in &followers {
        signal(cluster.broker(*f).pid(), libc::SIGCONT);
    }
    eprintln!(
        "followers {followers:?} stopped; fetch v12 as replica {spoofed}: hwm {after_v12} code \
         {code_v12}; v15 with a wrong broker epoch: code {code_v15}; hwm then {hwm_now}"
    );
    assert_eq!(
        hwm_now, 10,
        "a spoofed replica fetch moved the high watermark"
    );
    assert_eq!(
        after_v12, 10,
        "Fetch v12 with a replica id is a consumer's fetch"
    );
    assert_eq!(
        code_v15, STALE_BROKER_EPOCH,
        "v15 with another incarnation's epoch"
    );
    assert_eq!(after_v15, -1);
    // The real followers, running again, move it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (hwm, _) = fetch_as(&mut leader_conn, 12, -1, -1, topic_id, 0);
        if hwm == 11 {
            break;
        }
        assert!(Instant::now() < deadline, "high watermark stuck at {hwm}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
