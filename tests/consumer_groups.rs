//! Consumer groups through rdkafka: the classic rebalance protocol (range and
//! cooperative-sticky assignors), members leaving cleanly and dying, committed
//! offsets (resume after close, durability across a broker SIGKILL) and the
//! group admin APIs (list, describe, delete).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::Broker;
use rdkafka::admin::AdminOptions;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::BaseRecord;
use rdkafka::{Message, Offset, TopicPartitionList};

/// Session timeout the consumers ask for; a dead member is evicted after it.
const SESSION_TIMEOUT: Duration = Duration::from_millis(6000);
/// Set in the environment of the child consumer process of
/// `killed_consumer_process_is_replaced_within_session_timeout`:
/// "bootstrap,topic,group".
const CHILD_ENV: &str = "TUSK_GROUP_CHILD";
/// What the child consumer prints (followed by its partition count) on stdout
/// whenever its assignment size changes.
const CHILD_MARK: &str = "TUSK_CHILD_ASSIGNED ";

/// A consumer in `group` subscribed to `topic` (manual commits only, short
/// session timeout, range assignor unless `extra` says otherwise).
fn group_consumer(
    bootstrap: &str,
    group: &str,
    topic: &str,
    extra: &[(&str, &str)],
) -> BaseConsumer {
    let mut settings = vec![
        ("group.id", group),
        ("session.timeout.ms", "6000"),
        ("heartbeat.interval.ms", "500"),
        ("partition.assignment.strategy", "range"),
    ];
    settings.extend_from_slice(extra);
    let consumer = common::consumer_with(bootstrap, &settings);
    consumer
        .subscribe(&[topic])
        .unwrap_or_else(|e| panic!("subscribe to {topic}: {e}"));
    consumer
}

/// The partitions of `topic` currently assigned to `consumer`.
fn assigned(consumer: &BaseConsumer, topic: &str) -> BTreeSet<i32> {
    let assignment = consumer
        .assignment()
        .unwrap_or_else(|e| panic!("assignment(): {e}"));
    assignment
        .elements_for_topic(topic)
        .iter()
        .map(|e| e.partition())
        .collect()
}

/// One consumed record: (partition, offset, value).
type Got = (i32, i64, String);

/// Polls once (which also serves rebalance callbacks); keeps the first few
/// errors.
fn poll_one(consumer: &BaseConsumer, wait: Duration, errors: &mut Vec<String>) -> Option<Got> {
    match consumer.poll(wait)? {
        Ok(m) => Some((
            m.partition(),
            m.offset(),
            String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
        )),
        Err(e) => {
            if errors.len() < 20 {
                errors.push(e.to_string());
            }
            None
        }
    }
}

/// Polls every consumer in turn (100 ms each, records discarded) until `check`
/// returns Ok; panics after `secs` seconds with the last status `check`
/// reported and the consumer errors. Returns the time it took.
fn poll_until(
    consumers: &[&BaseConsumer],
    secs: u64,
    mut check: impl FnMut() -> Result<(), String>,
) -> Duration {
    let (start, timeout) = (Instant::now(), Duration::from_secs(secs));
    let mut errors = Vec::new();
    loop {
        for consumer in consumers {
            poll_one(consumer, Duration::from_millis(100), &mut errors);
        }
        match check() {
            Ok(()) => return start.elapsed(),
            Err(status) => assert!(
                start.elapsed() < timeout,
                "not reached within {timeout:?}: {status}; consumer errors: {errors:?}"
            ),
        }
    }
}

/// Polls the consumers in turn until `want` records arrived from all of them
/// together (panics after `secs` seconds), then for `linger` longer so that
/// extra records (duplicates) show up. Returns (consumer index, record) pairs.
fn consume(
    consumers: &[&BaseConsumer],
    want: usize,
    secs: u64,
    linger: Duration,
) -> Vec<(usize, Got)> {
    let (start, mut errors, mut got) = (Instant::now(), Vec::new(), Vec::new());
    let mut done_at: Option<Instant> = None;
    while done_at.is_none_or(|t| t.elapsed() < linger) {
        for (who, consumer) in consumers.iter().enumerate() {
            if let Some(record) = poll_one(consumer, Duration::from_millis(100), &mut errors) {
                got.push((who, record));
            }
            if done_at.is_none() && got.len() >= want {
                done_at = Some(Instant::now());
                break;
            }
        }
        assert!(
            done_at.is_some() || start.elapsed() < Duration::from_secs(secs),
            "got {} of {want} records within {secs} s; consumer errors: {errors:?}",
            got.len()
        );
    }
    got
}

/// Asserts that the records' values are 0..count, each exactly once.
fn assert_each_once(records: &[(usize, Got)], count: usize, context: &str) {
    let mut seen = vec![0u32; count];
    for (_, (_, _, value)) in records {
        let i: usize = value
            .parse()
            .unwrap_or_else(|e| panic!("value {value:?}: {e}"));
        assert!(i < count, "{context}: unexpected value {i}");
        seen[i] += 1;
    }
    let missing: Vec<usize> = (0..count).filter(|&i| seen[i] == 0).collect();
    let repeated: Vec<usize> = (0..count).filter(|&i| seen[i] > 1).collect();
    assert!(
        missing.is_empty() && repeated.is_empty(),
        "{context}: {} values never seen (first {:?}), {} seen more than once (first {:?})",
        missing.len(),
        &missing[..missing.len().min(10)],
        repeated.len(),
        &repeated[..repeated.len().min(10)]
    );
}

/// Ok once `consumer` owns exactly `want` partitions of `topic`.
fn owns_count(consumer: &BaseConsumer, topic: &str, want: usize) -> Result<(), String> {
    let have = assigned(consumer, topic);
    if have.len() == want {
        Ok(())
    } else {
        Err(format!("assigned {have:?}, want {want} partitions"))
    }
}

/// Ok once both consumers own something, nothing twice, and together all of
/// `0..partitions`.
fn split_between(
    a: &BaseConsumer,
    b: &BaseConsumer,
    topic: &str,
    partitions: i32,
) -> Result<(), String> {
    let (pa, pb) = (assigned(a, topic), assigned(b, topic));
    let union: BTreeSet<i32> = pa.union(&pb).copied().collect();
    let all: BTreeSet<i32> = (0..partitions).collect();
    if !pa.is_empty() && !pb.is_empty() && pa.is_disjoint(&pb) && union == all {
        Ok(())
    } else {
        Err(format!("A owns {pa:?}, B owns {pb:?}"))
    }
}

/// Produces `count` records (key "k{i}", value "{i}") to partition
/// `i % partitions` of `topic` and waits for all acknowledgements.
fn produce_values(bootstrap: &str, topic: &str, count: usize, partitions: usize) {
    let producer = common::producer(bootstrap, &[]);
    for i in 0..count {
        let key = format!("k{i}");
        let value = i.to_string();
        let partition = i32::try_from(i % partitions).expect("partition fits i32");
        common::send(
            &producer,
            BaseRecord::with_opaque_to(topic, i)
                .key(&key)
                .payload(&value)
                .partition(partition),
        );
    }
    common::flush(&producer, count, Duration::from_secs(60));
}

fn offsets_list(topic: &str, offsets: &[(i32, i64)]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for &(partition, offset) in offsets {
        tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
            .unwrap_or_else(|e| panic!("add {topic}/{partition} at {offset}: {e}"));
    }
    tpl
}

/// The committed offsets of `partitions` of `topic` as the broker reports
/// them, or a description of what went wrong (request or partition error).
fn committed(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
) -> Result<Vec<(i32, Offset)>, String> {
    let mut query = TopicPartitionList::new();
    for &p in partitions {
        query.add_partition(topic, p);
    }
    let answer = consumer
        .committed_offsets(query, Duration::from_secs(10))
        .map_err(|e| format!("committed_offsets: {e}"))?;
    let mut out = Vec::new();
    for &p in partitions {
        let elem = answer
            .find_partition(topic, p)
            .ok_or_else(|| format!("partition {p} missing from the answer"))?;
        elem.error()
            .map_err(|e| format!("partition {p} error: {e}"))?;
        out.push((p, elem.offset()));
    }
    Ok(out)
}

/// Ok once ListGroups + DescribeGroups show `group` Stable with one member
/// that has a non-empty assignment (range assignor, consumer protocol) and
/// the host it connects from.
fn stable_with_one_member(consumer: &BaseConsumer, group: &str) -> Result<(), String> {
    let list = consumer
        .fetch_group_list(Some(group), Duration::from_secs(10))
        .map_err(|e| format!("fetch_group_list: {e}"))?;
    let Some(info) = list.groups().iter().find(|g| g.name() == group) else {
        return Err(format!("{group} not listed"));
    };
    let members = info.members();
    let has_assignment = members
        .first()
        .and_then(|m| m.assignment())
        .is_some_and(|a| !a.is_empty());
    let state = (
        info.state(),
        info.protocol_type(),
        info.protocol(),
        members.len(),
    );
    let host = members.first().map(|m| m.client_host().to_string());
    if state == ("Stable", "consumer", "range", 1)
        && !members[0].id().is_empty()
        && has_assignment
        && host.as_deref() == Some("/127.0.0.1")
    {
        return Ok(());
    }
    Err(format!(
        "(state, protocol type, protocol, members) = {state:?}; assignment: {has_assignment}; \
         host: {host:?}"
    ))
}

fn admin_options() -> AdminOptions {
    AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(15)))
}

#[test]
fn two_consumers_split_four_partitions_then_one_leaves() {
    const TOPIC: &str = "cg-split";
    const GROUP: &str = "cg-split-group";
    let broker = Broker::start(&[]);
    let bootstrap = broker.bootstrap();
    common::create_topic(&bootstrap, TOPIC, 4);
    produce_values(&bootstrap, TOPIC, 400, 4);

    let a = group_consumer(&bootstrap, GROUP, TOPIC, &[]);
    let b = group_consumer(&bootstrap, GROUP, TOPIC, &[]);
    poll_until(&[&a, &b], 30, || split_between(&a, &b, TOPIC, 4));
    let (pa, pb) = (assigned(&a, TOPIC), assigned(&b, TOPIC));
    assert_eq!(
        (pa.len(), pb.len()),
        (2, 2),
        "range assignor over 4 partitions and 2 members: A owns {pa:?}, B owns {pb:?}"
    );

    // Dropping a BaseConsumer closes it cleanly, which sends LeaveGroup.
    drop(b);
    let took = poll_until(&[&a], 20, || owns_count(&a, TOPIC, 4));
    eprintln!("rebalance_after_leave_ms={}", took.as_millis());
}

/// Kills its child process (SIGKILL) and reaps it when dropped.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Not a test on its own: the consumer process that
/// `killed_consumer_process_is_replaced_within_session_timeout` starts (this
/// same binary, filtered to this test, with CHILD_ENV set). Without CHILD_ENV
/// it returns at once. It joins the group, polls for at most 120 s and prints
/// CHILD_MARK lines as its assignment changes.
#[test]
fn group_child_process() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let parts: Vec<&str> = spec.split(',').collect();
    let &[bootstrap, topic, group] = parts.as_slice() else {
        panic!("{CHILD_ENV} must be bootstrap,topic,group; got {spec:?}");
    };
    let consumer = group_consumer(bootstrap, group, topic, &[]);
    let mut stdout = std::io::stdout();
    let mut reported = None;
    let mut errors = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        poll_one(&consumer, Duration::from_millis(100), &mut errors);
        let count = assigned(&consumer, topic).len();
        if reported != Some(count) {
            // Written to the real stdout (not the test harness's capture).
            writeln!(stdout, "\n{CHILD_MARK}{count}").expect("write to stdout");
            stdout.flush().expect("flush stdout");
            reported = Some(count);
        }
    }
}

#[test]
fn killed_consumer_process_is_replaced_within_session_timeout() {
    const TOPIC: &str = "cg-takeover";
    const GROUP: &str = "cg-takeover-group";
    let broker = Broker::start(&[]);
    let bootstrap = broker.bootstrap();
    common::create_topic(&bootstrap, TOPIC, 4);

    let exe = std::env::current_exe().expect("path of this test binary");
    let child = Command::new(exe)
        .args([
            "group_child_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{bootstrap},{TOPIC},{GROUP}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn the child consumer process: {e}"));
    let mut child = ChildGuard(child);
    // Every assignment size the child reported, in order.
    let reports: Arc<Mutex<Vec<usize>>> = Arc::default();
    let out = child.0.stdout.take().expect("piped stdout");
    let sink = Arc::clone(&reports);
    thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(count) = line.split(CHILD_MARK).nth(1) {
                let count = count.trim().parse().expect("child reports a number");
                sink.lock().unwrap().push(count);
            }
        }
    });
    let child_state = |child: &mut ChildGuard| -> Option<usize> {
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!(
                "child consumer exited early with {status} (its stderr is above); \
                 reports {:?}",
                reports.lock().unwrap()
            );
        }
        reports.lock().unwrap().last().copied()
    };

    // The child joins alone first and owns everything.
    let start = Instant::now();
    while child_state(&mut child) != Some(4) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "child consumer did not own 4 partitions within 30 s; reports {:?}",
            reports.lock().unwrap()
        );
        thread::sleep(Duration::from_millis(50));
    }

    let a = group_consumer(&bootstrap, GROUP, TOPIC, &[]);
    poll_until(&[&a], 30, || {
        let (ours, theirs) = (assigned(&a, TOPIC), child_state(&mut child));
        match (ours.len(), theirs) {
            (2, Some(2)) => Ok(()),
            _ => Err(format!("A owns {ours:?}, the child reported {theirs:?}")),
        }
    });

    let pid = libc::pid_t::try_from(child.0.id()).expect("pid fits pid_t");
    // SAFETY: kill(2) on our own child, not reaped yet, so the pid is still ours.
    let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
    let killed_at = Instant::now();
    assert_eq!(rc, 0, "kill(SIGKILL): {}", std::io::Error::last_os_error());
    let _ = child.0.wait();

    poll_until(&[&a], 30, || owns_count(&a, TOPIC, 4));
    let takeover = killed_at.elapsed();
    eprintln!("takeover_ms={}", takeover.as_millis());
    // Session timeout, a couple of heartbeats and a rejoin, plus a CI margin.
    let bound = SESSION_TIMEOUT + Duration::from_secs(2) + Duration::from_secs(5);
    assert!(
        takeover <= bound,
        "A took over the dead member's partitions {takeover:?} after SIGKILL; bound {bound:?}"
    );
}

#[test]
fn commit_close_resume_reads_every_record_exactly_once() {
    const TOPIC: &str = "cg-resume";
    const GROUP: &str = "cg-resume-group";
    const COUNT: usize = 1000;
    let broker = Broker::start(&[]);
    let bootstrap = broker.bootstrap();
    common::create_topic(&bootstrap, TOPIC, 2);
    produce_values(&bootstrap, TOPIC, COUNT, 2);

    // Session 1: half, then commit exactly what was consumed and close.
    let first = group_consumer(&bootstrap, GROUP, TOPIC, &[]);
    let mut records = consume(&[&first], COUNT / 2, 60, Duration::ZERO);
    let mut last: BTreeMap<i32, i64> = BTreeMap::new();
    for (_, (partition, offset, _)) in &records {
        last.insert(*partition, *offset);
    }
    let next: Vec<(i32, i64)> = last.iter().map(|(&p, &o)| (p, o + 1)).collect();
    first
        .commit(&offsets_list(TOPIC, &next), CommitMode::Sync)
        .unwrap_or_else(|e| panic!("commit {next:?}: {e}"));
    let partitions: Vec<i32> = last.keys().copied().collect();
    let want: Vec<(i32, Offset)> = next.iter().map(|&(p, o)| (p, Offset::Offset(o))).collect();
    assert_eq!(
        committed(&first, TOPIC, &partitions),
        Ok(want),
        "committed offsets read back right after the commit"
    );
    drop(first);

    // Session 2: same group, resumes from the committed offsets.
    let second = group_consumer(&bootstrap, GROUP, TOPIC, &[]);
    let rest = COUNT - records.len();
    records.extend(consume(&[&second], rest, 60, Duration::from_secs(1)));
    assert_each_once(&records, COUNT, &format!("session 1 committed {next:?}"));
}

#[test]
fn committed_offsets_survive_broker_kill_9() {
    const TOPIC: &str = "cg-durable";
    const GROUP: &str = "cg-durable-group";
    let mut broker = Broker::start(&[]);
    let bootstrap = broker.bootstrap();
    common::create_topic(&bootstrap, TOPIC, 2);
    produce_values(&bootstrap, TOPIC, 400, 2);
    let offsets = [(0, 123), (1, 45)];
    let want: Vec<(i32, Offset)> = offsets
        .iter()
        .map(|&(p, o)| (p, Offset::Offset(o)))
        .collect();

    let consumer = group_consumer(&bootstrap, GROUP, TOPIC, &[]);
    poll_until(&[&consumer], 30, || owns_count(&consumer, TOPIC, 2));
    consumer
        .commit(&offsets_list(TOPIC, &offsets), CommitMode::Sync)
        .unwrap_or_else(|e| panic!("commit {offsets:?}: {e}"));
    assert_eq!(
        committed(&consumer, TOPIC, &[0, 1]),
        Ok(want.clone()),
        "committed offsets before the crash"
    );
    drop(consumer);

    broker.kill9();
    broker.restart();

    // Retries only while the broker answers with errors (e.g. the coordinator
    // still loading); the first clean answer must be the committed offsets.
    let reader = common::consumer_with(&bootstrap, &[("group.id", GROUP)]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let answer = loop {
        match committed(&reader, TOPIC, &[0, 1]) {
            Ok(answer) => break answer,
            Err(e) => assert!(
                Instant::now() < deadline,
                "no committed offsets 30 s after the restart: {e}"
            ),
        }
        thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(answer, want, "committed offsets after kill -9 and restart");
}

#[test]
fn cooperative_sticky_assignment_works() {
    const TOPIC: &str = "cg-cooperative";
    const GROUP: &str = "cg-cooperative-group";
    const COUNT: usize = 100;
    let broker = Broker::start(&[]);
    let bootstrap = broker.bootstrap();
    common::create_topic(&bootstrap, TOPIC, 4);

    let strategy = [("partition.assignment.strategy", "cooperative-sticky")];
    let a = group_consumer(&bootstrap, GROUP, TOPIC, &strategy);
    let b = group_consumer(&bootstrap, GROUP, TOPIC, &strategy);
    poll_until(&[&a, &b], 40, || {
        split_between(&a, &b, TOPIC, 4)?;
        owns_count(&a, TOPIC, 2)?;
        owns_count(&b, TOPIC, 2)
    });
    let owned = [assigned(&a, TOPIC), assigned(&b, TOPIC)];

    produce_values(&bootstrap, TOPIC, COUNT, 4);
    let records = consume(&[&a, &b], COUNT, 30, Duration::from_secs(1));
    assert_each_once(&records, COUNT, "A and B together");
    for (who, (partition, offset, _)) in &records {
        assert!(
            owned[*who].contains(partition),
            "consumer {who} got {partition}/{offset} but owns {:?}",
            owned[*who]
        );
    }
    for who in 0..2 {
        let count = records.iter().filter(|(w, _)| *w == who).count();
        assert_eq!(
            count,
            COUNT / 2,
            "records consumed by consumer {who} (2 of 4 partitions)"
        );
    }
    assert_eq!(
        [assigned(&a, TOPIC), assigned(&b, TOPIC)],
        owned,
        "assignments changed while consuming"
    );
}

#[test]
fn group_admin_apis() {
    const TOPIC: &str = "cg-admin";
    const GROUP: &str = "cg-admin-group";
    let broker = Broker::start(&[]);
    let bootstrap = broker.bootstrap();
    common::create_topic(&bootstrap, TOPIC, 2);
    let admin = common::admin(&bootstrap);

    let consumer = group_consumer(&bootstrap, GROUP, TOPIC, &[]);
    poll_until(&[&consumer], 30, || {
        owns_count(&consumer, TOPIC, 2)?;
        stable_with_one_member(&consumer, GROUP)
    });
    let all = admin
        .inner()
        .fetch_group_list(None, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("list all groups: {e}"));
    let names: Vec<&str> = all.groups().iter().map(|g| g.name()).collect();
    assert!(
        names.contains(&GROUP),
        "{GROUP} missing from all groups: {names:?}"
    );

    // Clean close (LeaveGroup) empties the group; the member must be gone well
    // before its session timeout would have expired it.
    drop(consumer);
    let start = Instant::now();
    loop {
        let results = common::block_on(
            admin.delete_groups(&[GROUP], &admin_options()),
            Duration::from_secs(30),
            "DeleteGroups",
        )
        .unwrap_or_else(|e| panic!("DeleteGroups {GROUP}: {e}"));
        assert_eq!(
            results.len(),
            1,
            "one result per deleted group: {results:?}"
        );
        match &results[0] {
            Ok(name) => {
                assert_eq!(name, GROUP, "DeleteGroups result names the group");
                break;
            }
            Err((_, RDKafkaErrorCode::NonEmptyGroup))
                if start.elapsed() < Duration::from_secs(5) =>
            {
                thread::sleep(Duration::from_millis(200));
            }
            Err((name, code)) => panic!(
                "DeleteGroups {name} failed {:?} after the only member closed: {code:?}",
                start.elapsed()
            ),
        }
    }

    let list = admin
        .inner()
        .fetch_group_list(Some(GROUP), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("fetch_group_list after DeleteGroups: {e}"));
    let left: Vec<(&str, &str, usize)> = list
        .groups()
        .iter()
        .filter(|g| g.name() == GROUP && !matches!(g.state(), "Dead" | "Empty"))
        .map(|g| (g.name(), g.state(), g.members().len()))
        .collect();
    assert!(
        left.is_empty(),
        "(group, state, members) still listed after DeleteGroups: {left:?}"
    );
}
