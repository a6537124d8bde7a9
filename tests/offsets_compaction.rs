//! The offsets log is compacted: with 1 MiB segments, commits carrying 4 KB of metadata (the
//! most a commit may carry) roll it quickly; a snapshot of the live offsets replaces the closed
//! segments, and after kill -9 the last commit (with its metadata) is what the group reads back.

mod common;

use std::time::{Duration, Instant};

use kafka_protocol::messages::{DescribeGroupsRequest, GroupId, ListGroupsRequest};
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

const TOPIC: &str = "compacted-commits";
const GROUP: &str = "compaction-group";

fn offsets_dirs(broker: &common::Broker) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(broker.data_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("__consumer_offsets-")
        })
        .collect()
}

#[test]
fn offsets_log_is_snapshotted_and_recovers_from_the_snapshot() {
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
    let dirs = offsets_dirs(&broker);
    let compacted: Vec<_> = dirs
        .iter()
        .filter(|d| d.join("offsets.snapshot").exists())
        .collect();
    assert_eq!(
        compacted.len(),
        1,
        "the group's offsets partition was snapshotted"
    );
    assert!(
        common::segment_files_in(compacted[0]) <= 2,
        "closed offsets segments were deleted ({} left)",
        common::segment_files_in(compacted[0])
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

/// An offsets partition that cannot be recovered (here: its snapshot is gone while the
/// segments it covered were deleted) stays offline: the broker starts, that partition's groups
/// get COORDINATOR_NOT_AVAILABLE instead of empty offsets, and other groups work. (It used to
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
    let damaged = broker.data_dir().join(format!(
        "__consumer_offsets-{}",
        tusk::group::offsets::offsets_partition(GROUP)
    ));
    std::fs::remove_file(damaged.join("offsets.snapshot")).expect("the partition was compacted");
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
