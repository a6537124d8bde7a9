//! What operators see and do about partition leadership, on three real `tusk serve`
//! processes: after a leader is killed `tusk cluster info` counts its partitions as
//! under-replicated and `/metrics` agrees; once it is back and in sync, `tusk cluster
//! elect-leaders` (ElectLeaders) moves leadership back to the preferred replicas, a second
//! run finds nothing to do, and unclean elections are refused. A follower that was down
//! catches up at most at the replication throttle's rate, and far faster without one.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::Cluster;

const TOPIC: &str = "preferred";

fn tusk(args: &[&str], bootstrap: &str) -> serde_json::Value {
    let out = common::run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_tusk")).args(args).args([
            "--json",
            "--bootstrap",
            bootstrap,
        ]),
        None,
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "tusk {args:?}: {}", out.stderr);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", out.stdout))
}

/// (partition, leader, preferred replica, ISR size) of every partition.
fn leaders(bootstrap: &str) -> Vec<(i64, i64, i64, usize)> {
    let d = tusk(&["topic", "describe", TOPIC], bootstrap);
    d["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| {
            (
                p["partition"].as_i64().unwrap(),
                p["leader"].as_i64().unwrap(),
                p["replicas"][0].as_i64().unwrap(),
                p["isr"].as_array().map_or(0, |a| a.len()),
            )
        })
        .collect()
}

/// `tusk topic create` of TOPIC with `partitions` partitions and three replicas each.
fn create_topic(bootstrap: &str, partitions: u32) {
    let partitions = partitions.to_string();
    let out = common::run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_tusk")).args([
            "topic",
            "create",
            TOPIC,
            "--partitions",
            &partitions,
            "--replication-factor",
            "3",
            "--bootstrap",
            bootstrap,
        ]),
        None,
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "topic create: {}", out.stderr);
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "not within 30 s: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The tests of this file run one at a time: each runs three brokers on a 2-core machine.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn elect_leaders_moves_leadership_back_to_the_preferred_replicas() {
    let _serial = serial();
    let mut cluster = Cluster::start(3, 1);
    let at1 = cluster.bootstrap_of(1);
    create_topic(&at1, 6);
    wait_until(
        "every partition led by its preferred replica, all in sync",
        || {
            leaders(&at1)
                .iter()
                .all(|(_, l, pref, isr)| l == pref && *isr == 3)
        },
    );
    let led_by_3: Vec<i64> = leaders(&at1)
        .iter()
        .filter(|(_, l, _, _)| *l == 3)
        .map(|(p, ..)| *p)
        .collect();
    assert!(!led_by_3.is_empty(), "broker 3 leads some partitions");
    cluster.broker(3).kill9();
    wait_until("broker 3's partitions led elsewhere", || {
        leaders(&at1).iter().all(|(_, l, _, _)| *l != 3 && *l > 0)
    });
    let info = tusk(&["cluster", "info"], &at1);
    eprintln!(
        "broker 3 down: under-replicated {}, offline {}",
        info["under_replicated_partitions"], info["offline_partitions"]
    );
    assert_eq!(info["under_replicated_partitions"].as_u64(), Some(6));
    assert_eq!(info["offline_partitions"].as_u64(), Some(0));
    cluster.broker(3).restart();
    wait_until("broker 3 back in every ISR", || {
        leaders(&at1).iter().all(|(_, _, _, isr)| *isr == 3)
    });
    let moved = tusk(&["cluster", "elect-leaders", "--topic", TOPIC], &at1);
    eprintln!("elect-leaders: {moved}");
    assert_eq!(moved["elected"].as_u64(), Some(led_by_3.len() as u64));
    wait_until("every partition led by its preferred replica again", || {
        leaders(&at1).iter().all(|(_, l, pref, _)| l == pref)
    });
    let again = tusk(&["cluster", "elect-leaders"], &at1);
    assert_eq!(again["elected"].as_u64(), Some(0), "{again}");
    assert!(again["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["result"] == "ELECTION_NOT_NEEDED"));
    let info = tusk(&["cluster", "info"], &at1);
    assert_eq!(info["under_replicated_partitions"].as_u64(), Some(0));
    // Unclean elections are never made.
    let mut conn = tusk::client::Connection::connect(&at1, "unclean").unwrap();
    let request = kafka_protocol::messages::ElectLeadersRequest::default()
        .with_election_type(1)
        .with_topic_partitions(Some(vec![
            kafka_protocol::messages::elect_leaders_request::TopicPartitions::default()
                .with_topic(tusk::client::topic_name(TOPIC))
                .with_partitions(vec![0, 0, 1]),
        ]));
    let response = conn.call(request, 1).unwrap();
    let results = &response.replica_election_results[0].partition_result;
    assert_eq!(results.len(), 2, "a partition named twice is answered once");
    assert!(results.iter().all(|r| r.error_code == POLICY_VIOLATION));
}

/// Kafka's POLICY_VIOLATION.
const POLICY_VIOLATION: i16 = 44;

/// Broker 3 is down while 8 MiB are produced (acks=1); once restarted it catches up through
/// the throttle (`throttled`: 1 MiB/s) or not. Returns how long until it is back in the ISR.
fn catch_up(throttled: bool) -> Duration {
    let extra: &[&str] = if throttled {
        &[
            "--replica-lag-time-max-ms",
            "1000",
            "--replication-throttle-bytes-per-sec",
            "1048576",
        ]
    } else {
        &["--replica-lag-time-max-ms", "1000"]
    };
    let mut cluster = Cluster::start_with(3, 1, extra);
    let at1 = cluster.bootstrap_of(1);
    create_topic(&at1, 1);
    wait_until("all in sync", || {
        leaders(&at1)
            .iter()
            .all(|(_, l, _, isr)| *l > 0 && *isr == 3)
    });
    let leader = leaders(&at1)[0].1 as i32;
    let down = [1, 2, 3].into_iter().find(|b| *b != leader).unwrap();
    cluster.broker(down).kill9();
    let at_leader = cluster.bootstrap_of(leader);
    let producer = common::producer(&at_leader, &[("acks", "1"), ("linger.ms", "20")]);
    let value = "x".repeat(1024);
    for i in 0..8192 {
        common::send(
            &producer,
            rdkafka::producer::BaseRecord::<(), String, usize>::with_opaque_to(TOPIC, i)
                .partition(0)
                .payload(&value),
        );
    }
    common::flush(&producer, 8192, Duration::from_secs(60));
    wait_until("the dead follower out of the ISR", || {
        leaders(&at_leader)[0].3 == 2
    });
    let restarted = Instant::now();
    cluster.broker(down).restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    // The catching-up replica's lag, as `tusk topic describe` shows it, while it catches up.
    let mut lag_seen = 0;
    while leaders(&at_leader)[0].3 != 3 {
        assert!(Instant::now() < deadline, "the follower never caught up");
        lag_seen = lag_seen.max(replica_lag(&at_leader, down).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = restarted.elapsed();
    eprintln!("largest lag describe showed for the catching-up replica: {lag_seen} records");
    if throttled {
        assert!(
            lag_seen > 0,
            "describe never showed the throttled follower behind"
        );
    }
    wait_until("every replica's lag back to 0", || {
        (1..=3).all(|b| replica_lag(&at_leader, b) == Some(0))
    });
    took
}

/// Partition 0's lag on broker `replica` as `tusk topic describe` shows it.
fn replica_lag(bootstrap: &str, replica: i32) -> Option<i64> {
    let d = tusk(&["topic", "describe", TOPIC], bootstrap);
    let p = &d["partitions"][0];
    let at = p["replicas"]
        .as_array()?
        .iter()
        .position(|r| r.as_i64() == Some(replica as i64))?;
    p["replica_lag"][at].as_i64()
}

#[test]
fn a_cold_follower_catches_up_no_faster_than_the_replication_throttle() {
    let _serial = serial();
    let free = catch_up(false);
    let throttled = catch_up(true);
    let mib = 8.0 * (1024.0 + 70.0) / 1024.0;
    eprintln!(
        "catch-up of ~{mib:.1} MiB after a restart: unthrottled {} ms ({:.1} MiB/s), throttled \
         to 1 MiB/s {} ms ({:.2} MiB/s)",
        free.as_millis(),
        mib / free.as_secs_f64(),
        throttled.as_millis(),
        mib / throttled.as_secs_f64()
    );
    // A lower bound only: a slow machine makes the throttled catch-up longer, never shorter.
    // 8 MiB at 1 MiB/s with one second banked takes at least ~7 s.
    assert!(
        throttled >= Duration::from_secs(5),
        "the throttled catch-up took only {throttled:?}"
    );
}
