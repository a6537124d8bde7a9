//! Failover of what lives in partitions, across three real `tusk serve` processes driven by
//! librdkafka and raw Kafka requests: a consumer group whose coordinator's broker is killed
//! resumes from its committed offsets at the new coordinator (the leader of its replicated
//! offsets partition), twice, and committed offsets never go backwards; a leader paused with
//! SIGSTOP past its session is fenced, a produce it took while paused is never acknowledged,
//! and once resumed it keeps nothing the new leader's history lacks.
//!
//! Brokers run with `--replica-lag-time-max-ms 2000` so that a dead follower leaves the ISR
//! quickly. Times are printed, never asserted (three brokers and the clients share 2 cores).

mod common;

use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use common::cluster::{
    assert_holds, create_replicated, elect_preferred, produce_acked, produce_one_request,
    read_partition, wait_placement, Cluster,
};
use kafka_protocol::messages::{FindCoordinatorRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tusk::client::Connection;

const BROKER_FLAGS: &[&str] = &["--replica-lag-time-max-ms", "2000"];
const ALL: [i32; 3] = [1, 2, 3];

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn start_cluster() -> Cluster {
    let cluster = Cluster::start_with(3, 1, BROKER_FLAGS);
    cluster.wait_for(1, &ALL, Duration::from_secs(30));
    cluster
}

/// The coordinator of `group` as broker `bootstrap` answers FindCoordinator (-1: none yet).
fn coordinator(bootstrap: &str, group: &str) -> i32 {
    let Ok(mut conn) = Connection::connect(bootstrap, "find-coordinator") else {
        return -1;
    };
    let request = FindCoordinatorRequest::default()
        .with_key(StrBytes::from_string(group.to_string()))
        .with_key_type(0);
    match conn.call(request, 3) {
        Ok(r) if r.error_code == 0 => r.node_id.0,
        _ => -1,
    }
}

/// The committed offset of partition 0 of `topic` for `group`, as a fresh client reads it
/// through `bootstrap` (retried until it answers, at most 60 s): (offset, how long it took).
fn committed(bootstrap: &str, group: &str, topic: &str) -> (i64, Duration) {
    let started = Instant::now();
    let consumer = common::consumer_with(bootstrap, &[("group.id", group)]);
    let mut want = TopicPartitionList::new();
    want.add_partition(topic, 0);
    loop {
        match consumer.committed_offsets(want.clone(), Duration::from_secs(5)) {
            Ok(got) => match got.find_partition(topic, 0).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => return (o, started.elapsed()),
                other => panic!("committed offset of {group}: {other:?}"),
            },
            Err(e) => assert!(
                started.elapsed() < Duration::from_secs(60),
                "committed offsets of {group} within 60 s: {e}"
            ),
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Commits `offset` for partition 0 of `topic` as group `group` (a simple-consumer commit,
/// retried while the coordinator moves).
fn commit(bootstrap: &str, group: &str, topic: &str, offset: i64) {
    let consumer = common::consumer_with(bootstrap, &[("group.id", group)]);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(offset))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
        assert!(
            Instant::now() < deadline,
            "commit {offset} within 60 s: {e}"
        );
        thread::sleep(Duration::from_millis(200));
    }
}

/// A member of `group` subscribed to `topic`: the offset of the first record it is given.
fn first_offset_consumed(bootstrap: &str, group: &str, topic: &str) -> i64 {
    let consumer = common::consumer_with(bootstrap, &[("group.id", group)]);
    consumer.subscribe(&[topic]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            return m.offset();
        }
        assert!(
            Instant::now() < deadline,
            "{group} got no record within 60 s"
        );
    }
}

/// Waits until `asked` names a live coordinator of `group` other than `not`.
fn wait_coordinator(cluster: &Cluster, asked: i32, group: &str, not: i32) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let c = coordinator(&cluster.bootstrap_of(asked), group);
        if c > 0 && c != not {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "no coordinator of {group} other than {not} within 60 s"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_group_resumes_from_its_committed_offsets_after_its_coordinator_is_killed() {
    let _serial = serial();
    const TOPIC: &str = "group-failover";
    const GROUP: &str = "failover-group";
    let mut cluster = start_cluster();
    create_replicated(&cluster, 1, TOPIC, 1, 3);
    produce_acked(&cluster.bootstrap_of(1), TOPIC, 1, "r", 300);
    let first = wait_coordinator(&cluster, 1, GROUP, -1);
    commit(&cluster.bootstrap_of(first), GROUP, TOPIC, 100);
    let mut commits = 1;

    // Kill the coordinator: the group's offsets partition fails over with its replicas.
    cluster.broker(first).kill9();
    let killed_at = Instant::now();
    let survivor = ALL.into_iter().find(|b| *b != first).unwrap();
    let second = wait_coordinator(&cluster, survivor, GROUP, first);
    let found = killed_at.elapsed();
    let (offset, read_in) = committed(&cluster.bootstrap_of(second), GROUP, TOPIC);
    assert_eq!(
        offset, 100,
        "the committed offset after the coordinator's kill"
    );
    let resumed = first_offset_consumed(&cluster.bootstrap_of(second), GROUP, TOPIC);
    assert_eq!(resumed, 100, "a member resumes where the group committed");
    let read = killed_at.elapsed();
    commit(&cluster.bootstrap_of(second), GROUP, TOPIC, 200);
    commits += 1;

    // The killed broker returns and catches up; then the second coordinator goes too.
    cluster.broker(first).restart();
    cluster.wait_for(survivor, &ALL, Duration::from_secs(60));
    // Its user partition back in the ISR says it caught up; the offsets partition's ISR is
    // not needed for safety: only an in-sync replica may take over below.
    wait_placement(
        &cluster,
        second,
        TOPIC,
        Duration::from_secs(60),
        "rejoined",
        |p| p[0].isr == ALL,
    );
    cluster.broker(second).kill9();
    let killed_again = Instant::now();
    let asked = ALL.into_iter().find(|b| *b != second).unwrap();
    let third = wait_coordinator(&cluster, asked, GROUP, second);
    let (offset, _) = committed(&cluster.bootstrap_of(third), GROUP, TOPIC);
    assert_eq!(offset, 200, "the committed offset after the second kill");
    let second_read = killed_again.elapsed();
    println!(
        "group failover: {commits} commits acknowledged, 0 lost; coordinators {first} -> \
         {second} -> {third}; kill -> new coordinator named {} ms, -> committed offset read \
         {} ms (that read {} ms), -> first record consumed {} ms; second kill -> committed \
         offset read {} ms",
        found.as_millis(),
        (found + read_in).as_millis(),
        read_in.as_millis(),
        read.as_millis(),
        second_read.as_millis()
    );
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{name} {pid}");
}

#[test]
fn a_leader_paused_past_its_session_is_fenced_and_keeps_nothing_the_new_leader_lacks() {
    let _serial = serial();
    const TOPIC: &str = "paused-leader";
    let mut cluster = start_cluster();
    create_replicated(&cluster, 1, TOPIC, 1, 3);
    let mut written = produce_acked(&cluster.bootstrap_of(1), TOPIC, 1, "before", 200);
    let (p, _) = wait_placement(
        &cluster,
        1,
        TOPIC,
        Duration::from_secs(30),
        "in sync",
        |p| p[0].isr == ALL,
    );
    let old = p[0].leader;
    // Connected (and the version handshake done) before the pause: the request below is
    // read by the paused leader only once it runs again, with its old view of the cluster.
    let mut stale = Connection::connect(&cluster.bootstrap_of(old), "stale-producer").unwrap();
    let pid = cluster.broker(old).pid();
    signal(pid, "STOP");
    let paused_at = Instant::now();
    let correlation = stale
        .send(&produce_one_request(TOPIC, "stale-write", 10_000), 9)
        .expect("the request is buffered by the kernel");
    let survivor = ALL.into_iter().find(|b| *b != old).unwrap();
    let what = format!("a leader other than the paused broker {old}");
    let (p, _) = wait_placement(
        &cluster,
        survivor,
        TOPIC,
        Duration::from_secs(60),
        &what,
        |p| p[0].leader > 0 && p[0].leader != old,
    );
    let fenced_in = paused_at.elapsed();
    let new = p[0].leader;
    written.extend(produce_acked(
        &cluster.bootstrap_of(new),
        TOPIC,
        1,
        "after",
        200,
    ));
    signal(pid, "CONT");
    let (answered, response): (i32, ProduceResponse) =
        tusk::client::read_response(&mut stale.try_clone_stream().unwrap(), 9)
            .expect("the paused leader answers once resumed");
    assert_eq!(answered, correlation);
    let code = response.responses[0].partition_responses[0].error_code;
    assert_ne!(
        code, 0,
        "a leader whose epoch was superseded acknowledged a write"
    );
    // Back in the ISR means it truncated to the new leader's history and caught up.
    wait_placement(
        &cluster,
        new,
        TOPIC,
        Duration::from_secs(60),
        "rejoined",
        |p| p[0].isr == ALL,
    );
    let from_new = read_partition(&cluster.bootstrap_of(new), TOPIC, written.len());
    assert_holds(&from_new, &written, "read from the new leader");
    // Leadership back on the resumed broker (its preferred replica): what it serves is the
    // new leader's history, without the stale write.
    elect_preferred(&cluster, new, TOPIC);
    wait_placement(
        &cluster,
        new,
        TOPIC,
        Duration::from_secs(60),
        "led by the resumed broker",
        |p| p[0].leader == old,
    );
    let from_old = read_partition(&cluster.bootstrap_of(old), TOPIC, written.len());
    assert_holds(&from_old, &written, "read from the resumed broker");
    assert!(
        from_old.iter().all(|r| r.value_str() != "stale-write"),
        "the paused leader's unacknowledged write survived"
    );
    assert_eq!(
        from_old.len(),
        from_new.len(),
        "both histories have the same length"
    );
    println!(
        "paused leader: {} acknowledged, 0 lost, 0 duplicated; fenced and replaced {} ms after \
         SIGSTOP; its stale produce answered with error {code}",
        written.len(),
        fenced_in.as_millis()
    );
}

/// Produces `count` acknowledged records of `bytes` bytes each to partition 0 of `topic`.
fn produce_large(bootstrap: &str, topic: &str, count: usize, bytes: usize) {
    let producer = common::producer(bootstrap, &[("acks", "all")]);
    let payload = "x".repeat(bytes);
    for i in 0..count {
        common::send(
            &producer,
            rdkafka::producer::BaseRecord::<(), String, usize>::with_opaque_to(topic, i)
                .partition(0)
                .payload(&payload),
        );
    }
    common::flush(&producer, count, Duration::from_secs(120));
}

/// The base offsets of the segment files in a partition directory, sorted.
fn segment_bases(dir: &std::path::Path) -> Vec<i64> {
    let mut bases: Vec<i64> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| {
                let name = e.ok()?.file_name().to_string_lossy().into_owned();
                name.strip_suffix(".log")?.parse().ok()
            })
            .collect()
        })
        .unwrap_or_default();
    bases.sort_unstable();
    bases
}

#[test]
fn a_follower_down_past_the_leaders_retention_restarts_at_its_log_start() {
    let _serial = serial();
    const TOPIC: &str = "below-start";
    let mut flags = BROKER_FLAGS.to_vec();
    flags.extend(["--retention-check-interval-ms", "200"]);
    let mut cluster = Cluster::start_with(3, 1, &flags);
    cluster.wait_for(1, &ALL, Duration::from_secs(30));
    let out = common::run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_tusk")).args([
            "topic",
            "create",
            TOPIC,
            "--replication-factor",
            "3",
            "--config",
            "segment.bytes=1048576",
            "--config",
            "retention.bytes=2097152",
            "--bootstrap",
            &cluster.bootstrap_of(1),
        ]),
        None,
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "topic create: {}", out.stderr);
    let (p, _) = wait_placement(
        &cluster,
        1,
        TOPIC,
        Duration::from_secs(30),
        "in sync",
        |p| p[0].isr == ALL,
    );
    let leader = p[0].leader;
    let follower = ALL.into_iter().find(|b| *b != leader).unwrap();
    produce_large(&cluster.bootstrap_of(leader), TOPIC, 50, 8_000);
    cluster.broker(follower).kill9();
    // ~8 MiB in 1 MiB segments while the follower is down: retention keeps ~2 MiB.
    produce_large(&cluster.bootstrap_of(leader), TOPIC, 1_000, 8_000);
    let consumer = common::consumer(&cluster.bootstrap_of(leader));
    let deadline = Instant::now() + Duration::from_secs(60);
    let (low, high) = loop {
        let (low, high) = common::watermarks(&consumer, TOPIC, 0);
        if low > 50 {
            break (low, high);
        }
        assert!(
            Instant::now() < deadline,
            "retention did not move the leader's log start past 50 within 60 s (low {low})"
        );
        thread::sleep(Duration::from_millis(200));
    };
    cluster.broker(follower).restart();
    let (_, took) = wait_placement(
        &cluster,
        leader,
        TOPIC,
        Duration::from_secs(90),
        "rejoined",
        |p| p[0].isr == ALL,
    );
    let dir = cluster
        .broker(follower)
        .data_dir()
        .join(format!("{TOPIC}-0"));
    let bases = segment_bases(&dir);
    assert!(
        bases.first().is_some_and(|b| *b >= low),
        "the follower's log starts at or past the leader's log start {low}: segments {bases:?}"
    );
    println!(
        "below the log start: follower ended at 50, leader log {low}..{high}; back in the ISR \
         {} ms after it was serving again, its segments start at {:?}",
        took.as_millis(),
        bases.first()
    );
}
