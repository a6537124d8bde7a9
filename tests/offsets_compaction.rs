//! The offsets log is compacted: with 1 MiB segments, commits carrying 4 KB of metadata (the
//! most a commit may carry) roll it quickly; the live offsets are appended again and the closed
//! segments below them deleted, and after kill -9 the last commit (with its metadata) is what
//! the group reads back.

mod common;

use std::time::{Duration, Instant};

use kafka_protocol::messages::{DescribeGroupsRequest, GroupId, ListGroupsRequest};
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

const TOPIC: &str = "compacted-commits";
const GROUP: &str = "compaction-group";

/// The directory of the test group's offsets partition.
fn group_dir(broker: &common::Broker) -> std::path::PathBuf {
    broker.data_dir().join(format!(
        "__consumer_offsets-{}",
        tusk::group::offsets::offsets_partition(GROUP)
    ))
}

/// The segment files of `dir`, sorted (by base offset).
fn log_files(dir: &std::path::Path) -> Vec<String> {
    let mut logs: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".log"))
        .collect();
    logs.sort();
    logs
}

#[test]
fn offsets_log_is_compacted_and_recovers_after_kill9() {
    let mut broker = common::Broker::start(&["--segment-bytes", "1048576"]);
    let bootstrap = broker.bootstrap();
    common::create_topic(&bootstrap, TOPIC, 2);
    let consumer = common::consumer_with(&bootstrap, &[("group.id", GROUP)]);
    let metadata = "m".repeat(4000);
    // 400 commits of ~8 KB of records each: the 1 MiB offsets segments roll several times.
    for i in 0..400i64 {
        let mut tpl = TopicPartitionList::new();
        for p in 0..2 {
            tpl.add_partition_offset(TOPIC, p, Offset::Offset(i * 10 + p as i64))
                .unwrap();
            tpl.find_partition(TOPIC, p)
                .unwrap()
                .set_metadata(&metadata);
        }
        consumer
            .commit(&tpl, CommitMode::Sync)
            .unwrap_or_else(|e| panic!("commit {i}: {e}"));
    }
    let dir = group_dir(&broker);
    let logs = log_files(&dir);
    assert!(
        logs.len() <= 2,
        "closed offsets segments were deleted ({} left)",
        logs.len()
    );
    assert!(
        logs.iter()
            .all(|l| !l.ends_with("00000000000000000000.log")),
        "the log start moved past the first segment: {logs:?}"
    );
    assert!(
        !dir.join("offsets.snapshot").exists(),
        "compaction re-appends; it writes no snapshot"
    );
    drop(consumer);

    broker.kill9();
    broker.restart();
    let reader = common::consumer_with(&bootstrap, &[("group.id", GROUP)]);
    let mut want = TopicPartitionList::new();
    want.add_partition(TOPIC, 0);
    want.add_partition(TOPIC, 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    let got = loop {
        match reader.committed_offsets(want.clone(), Duration::from_secs(5)) {
            Ok(got) => break got,
            Err(e) => assert!(
                Instant::now() < deadline,
                "committed offsets after restart: {e}"
            ),
        }
    };
    for p in 0..2 {
        let e = got.find_partition(TOPIC, p).unwrap();
        assert_eq!(
            e.offset(),
            Offset::Offset(3990 + p as i64),
            "last commit of partition {p}"
        );
        assert_eq!(
            e.metadata().len(),
            metadata.len(),
            "metadata of partition {p}"
        );
    }
}

/// An offsets partition that cannot be recovered (here: its active segment file was replaced
/// by a directory) stays offline: the broker starts, that partition's groups get
/// COORDINATOR_NOT_AVAILABLE instead of empty offsets, and other groups work. (It used to
/// stop the whole broker's start.)
#[test]
fn an_unrecoverable_offsets_partition_stays_offline_alone() {
    let mut broker = common::Broker::start(&["--segment-bytes", "1048576"]);
    let bootstrap = broker.bootstrap();
    common::create_topic(&bootstrap, TOPIC, 1);
    let consumer = common::consumer_with(&bootstrap, &[("group.id", GROUP)]);
    let metadata = "m".repeat(4000);
    for i in 0..300i64 {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(TOPIC, 0, Offset::Offset(i))
            .unwrap();
        tpl.find_partition(TOPIC, 0)
            .unwrap()
            .set_metadata(&metadata);
        consumer.commit(&tpl, CommitMode::Sync).unwrap();
    }
    drop(consumer);
    broker.terminate();
    let damaged = group_dir(&broker);
    let last = damaged.join(log_files(&damaged).pop().expect("a segment"));
    std::fs::remove_file(&last).unwrap();
    std::fs::create_dir(&last).unwrap();
    broker.restart();
    let other = (0..)
        .map(|i| format!("other-{i}"))
        .find(|g| {
            tusk::group::offsets::offsets_partition(g)
                != tusk::group::offsets::offsets_partition(GROUP)
        })
        .unwrap();
    let healthy = common::consumer_with(&bootstrap, &[("group.id", &other)]);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, 0, Offset::Offset(7))
        .unwrap();
    healthy
        .commit(&tpl, CommitMode::Sync)
        .expect("a group on a healthy offsets partition commits");
    let mut want = TopicPartitionList::new();
    want.add_partition(TOPIC, 0);
    let got = healthy
        .committed_offsets(want.clone(), Duration::from_secs(10))
        .unwrap();
    assert_eq!(
        got.find_partition(TOPIC, 0).unwrap().offset(),
        Offset::Offset(7)
    );
    let stranded = common::consumer_with(&bootstrap, &[("group.id", GROUP)]);
    let answer = stranded.committed_offsets(want, Duration::from_secs(3));
    assert!(
        answer.is_err(),
        "the offline partition's group must not read empty offsets: {answer:?}"
    );
    // DescribeGroups and ListGroups say so too, with COORDINATOR_NOT_AVAILABLE (15), instead
    // of describing the group as empty or leaving it out of the list silently.
    let mut conn = tusk::client::Connection::connect(&bootstrap, "offline-check").unwrap();
    let describe = DescribeGroupsRequest::default()
        .with_groups(vec![GroupId(StrBytes::from_static_str(GROUP))]);
    let described = conn.call(describe, 0).unwrap();
    assert_eq!(described.groups[0].error_code, 15, "{described:?}");
    let listed = conn.call(ListGroupsRequest::default(), 0).unwrap();
    assert_eq!(listed.error_code, 15, "{listed:?}");
    assert!(
        listed.groups.iter().any(|g| g.group_id.0.as_str() == other),
        "the healthy group is still listed: {listed:?}"
    );
    let logs = broker.logs();
    assert!(logs.contains("stays offline"), "{logs}");
}
