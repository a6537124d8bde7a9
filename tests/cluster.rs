//! Multi-broker clusters of real `tusk serve` processes on loopback, driven by real clients:
//! three brokers that every client can bootstrap from any one of, leaders spread over all of
//! them; the active controller killed again and again while metadata keeps changing; a broker
//! killed (fenced) and restarted (live again); five brokers that tolerate two losses and refuse
//! changes with three. Failover times are printed (the closing note's figures come from
//! `examples/cluster_failover.rs`, which runs more kills).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::records::Compression;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::BaseRecord;
use rdkafka::Message;
use tusk::client::{topic_name, ClientError, Connection};
use tusk::protocol::batch_builder::BatchBuilder;

/// The leaders of `topic`'s partitions, as broker `bootstrap` reports them (-1: none).
fn leaders(bootstrap: &str, topic: &str) -> Vec<i32> {
    let consumer = common::consumer(bootstrap);
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("metadata of {topic} from {bootstrap}: {e}"));
    let mut out: Vec<(i32, i32)> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| (p.id(), p.leader())))
        .collect();
    out.sort();
    out.into_iter().map(|(_, l)| l).collect()
}

fn broker_ids(bootstrap: &str) -> Vec<i32> {
    let consumer = common::consumer(bootstrap);
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("metadata from {bootstrap}: {e}"));
    let mut ids: Vec<i32> = metadata.brokers().iter().map(|b| b.id()).collect();
    ids.sort();
    ids
}

/// Produces `count` keyed records through `bootstrap` alone and returns how many were acked.
fn produce_through(bootstrap: &str, topic: &str, count: usize, extra: &[(&str, &str)]) -> usize {
    let producer = common::producer(bootstrap, extra);
    for i in 0..count {
        let key = format!("{bootstrap}-{i}");
        let value = format!("value-{i}");
        common::send(
            &producer,
            BaseRecord::with_opaque_to(topic, i)
                .key(&key)
                .payload(&value),
        );
    }
    let acks = common::flush(&producer, count, Duration::from_secs(60));
    acks.len()
}

/// Three brokers: Metadata from each lists all three; a 6-partition topic gets leaders on
/// every broker; Produce, Fetch and ListOffsets at a broker that does not lead a partition
/// answer NOT_LEADER_OR_FOLLOWER; librdkafka produces (plainly and idempotently) and consumes through any one
/// broker as its only bootstrap; a consumer group commits through one broker; confluent-kafka
/// and kafka-python (scripts/test.sh's venv) and KafkaJS do their round trips, admin requests
/// included, each through a single broker address.
#[test]
fn three_brokers_serve_every_client_through_any_bootstrap() {
    let cluster = Cluster::start(3, 2);
    for id in 1..=3 {
        cluster.wait_for(id, &[1, 2, 3], Duration::from_secs(30));
        assert_eq!(broker_ids(&cluster.bootstrap_of(id)), vec![1, 2, 3]);
    }
    eprintln!("stage: create");
    common::create_topic(&cluster.bootstrap_of(2), "six", 6);
    for id in 1..=3 {
        let l = leaders(&cluster.bootstrap_of(id), "six");
        assert_eq!(l.len(), 6, "{l:?}");
        let distinct: BTreeSet<i32> = l.iter().copied().collect();
        assert_eq!(
            distinct,
            BTreeSet::from([1, 2, 3]),
            "leaders {l:?} as broker {id} sees them"
        );
    }
    eprintln!("stage: not the leader");
    let led = leaders(&cluster.bootstrap_of(1), "six");
    for (partition, leader) in led.iter().enumerate() {
        let elsewhere = (1..=3).find(|b| b != leader).expect("another broker");
        answers_not_leader(&cluster.bootstrap_of(elsewhere), "six", partition as i32);
    }
    let mut produced = 0;
    eprintln!("stage: produce");
    for id in 1..=3 {
        produced += produce_through(&cluster.bootstrap_of(id), "six", 40, &[]);
        let idempotent = [("enable.idempotence", "true")];
        produced += produce_through(&cluster.bootstrap_of(id), "six", 40, &idempotent);
    }
    assert_eq!(produced, 240);
    eprintln!("stage: consume");
    for id in 1..=3 {
        let consumer = common::consumer(&cluster.bootstrap_of(id));
        let records = common::consume_all(&consumer, "six", 6, 240, Duration::from_secs(60));
        assert_eq!(records.len(), 240, "consumed through broker {id}");
        for (p, recs) in common::by_partition(&records) {
            common::assert_offsets_contiguous(p, &recs, 0);
        }
    }
    eprintln!("stage: group");
    group_round_trip(&cluster.bootstrap_of(3), 240);
    eprintln!("stage: python");
    common::python_clients(&cluster.bootstrap_of(1));
    eprintln!("stage: kafkajs");
    common::kafkajs_clients(&cluster.bootstrap_of(2));
}

/// Produce, Fetch and ListOffsets for `partition` sent to `bootstrap`, a broker that does not
/// lead it, answer NOT_LEADER_OR_FOLLOWER (6), which makes clients refresh their metadata.
fn answers_not_leader(bootstrap: &str, topic: &str, partition: i32) {
    const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    let mut conn = Connection::connect(bootstrap, "not-leader").expect("connect");
    let mut batch = BatchBuilder::new(Compression::None, 64);
    batch.push(0, None, Some(b"misrouted"));
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(batch.finish()))])]);
    let v = conn.versions.produce;
    let r: ProduceResponse = conn.call(request, v).expect("a produce answer");
    let codes: Vec<i16> = r
        .responses
        .iter()
        .flat_map(|t| t.partition_responses.iter().map(|p| p.error_code))
        .collect();
    assert_eq!(
        codes,
        vec![NOT_LEADER_OR_FOLLOWER],
        "produce to {topic}-{partition} via {bootstrap}"
    );
    let fetched = conn.fetch(topic, &[(partition as usize, 0)], 1 << 16, 0);
    assert!(
        matches!(
            fetched,
            Err(ClientError::Kafka {
                code: NOT_LEADER_OR_FOLLOWER,
                ..
            })
        ),
        "fetch of {topic}-{partition} via {bootstrap}: {fetched:?}"
    );
    let listed = conn.list_offsets_of(topic, &[partition], -1);
    assert!(
        matches!(
            listed,
            Err(ClientError::Kafka {
                code: NOT_LEADER_OR_FOLLOWER,
                ..
            })
        ),
        "list offsets of {topic}-{partition} via {bootstrap}: {listed:?}"
    );
}

/// A consumer group bootstrapped from one broker reads everything and commits; a second
/// consumer of the group resumes after the commit (the coordinator may be any broker).
fn group_round_trip(bootstrap: &str, expected: usize) {
    let settings = [
        ("group.id", "cluster-group"),
        ("session.timeout.ms", "6000"),
        ("heartbeat.interval.ms", "500"),
    ];
    let consumer: BaseConsumer = common::consumer_with(bootstrap, &settings);
    consumer.subscribe(&["six"]).expect("subscribe");
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(90);
    while seen < expected {
        assert!(
            Instant::now() < deadline,
            "the group read {seen} of {expected}"
        );
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            let message = message.expect("a record for the group");
            assert_eq!(message.topic(), "six");
            seen += 1;
        }
    }
    let positions = consumer.position().expect("the group's positions");
    consumer
        .commit(&positions, CommitMode::Sync)
        .expect("commit through the group's coordinator");
    // The list holds references to the consumer's partitions: librdkafka's destroy waits for
    // them forever if the list outlives the consumer.
    drop(positions);
    drop(consumer);
    let again: BaseConsumer = common::consumer_with(bootstrap, &settings);
    again.subscribe(&["six"]).expect("subscribe again");
    let quiet_until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < quiet_until {
        if let Some(Ok(m)) = again.poll(Duration::from_millis(200)) {
            panic!(
                "a committed record came back: partition {} offset {}",
                m.partition(),
                m.offset()
            );
        }
    }
}

/// Creates `name` through broker `via` with the CLI (the broker forwards it to the active
/// controller): `Err` with the CLI's error line if it was not created. A topic that already
/// exists counts as created: a change whose controller failed after committing it is retried
/// by the forwarding broker, and then finds it done.
fn cli_create(cluster: &Cluster, via: i32, name: &str) -> Result<(), String> {
    let out = common::run_with_timeout(
        std::process::Command::new(env!("CARGO_BIN_EXE_tusk"))
            .args(["topic", "create", name, "--bootstrap"])
            .arg(cluster.bootstrap_of(via)),
        None,
        Duration::from_secs(60),
    );
    if out.status.success() || out.stderr.contains("TOPIC_ALREADY_EXISTS") {
        Ok(())
    } else {
        Err(out.stderr)
    }
}

/// Five kills of whichever broker is the active controller: each time another is elected,
/// the killed broker is fenced, a topic is created through a survivor, and the killed broker
/// restarts, catches up and is live again. Every topic created is on every broker at the end.
#[test]
fn controller_kill_loop_keeps_metadata_changing() {
    let mut cluster = Cluster::start(3, 1);
    let mut controller = cluster.wait_for(1, &[1, 2, 3], Duration::from_secs(30));
    let mut failovers_ms = Vec::new();
    for round in 0..5 {
        let survivor = if controller == 1 { 2 } else { 1 };
        cluster.broker(controller).kill9();
        let killed_at = Instant::now();
        let name = format!("after-kill-{round}");
        while cli_create(&cluster, survivor, &name).is_err() {
            assert!(
                killed_at.elapsed() < Duration::from_secs(30),
                "no topic could be created within 30 s of killing controller {controller}"
            );
        }
        failovers_ms.push(killed_at.elapsed().as_millis());
        let live: Vec<i32> = (1..=3).filter(|i| *i != controller).collect();
        cluster.wait_for(survivor, &live, Duration::from_secs(20));
        cluster.broker(controller).restart();
        controller = cluster.wait_for(survivor, &[1, 2, 3], Duration::from_secs(30));
    }
    eprintln!("controller failover to a created topic, ms: {failovers_ms:?}");
    for id in 1..=3 {
        let names = common::topic_names(&cluster.bootstrap_of(id));
        for round in 0..5 {
            let name = format!("after-kill-{round}");
            assert!(names.contains(&name), "broker {id} lacks {name}: {names:?}");
        }
    }
}

/// Five brokers: with two killed, metadata still changes; with three killed the survivors
/// refuse (REQUEST_TIMED_OUT after their wait) and neither lists the refused topic.
#[test]
fn five_brokers_survive_two_losses_and_refuse_with_three() {
    let mut cluster = Cluster::start(5, 1);
    let controller = cluster.wait_for(1, &[1, 2, 3, 4, 5], Duration::from_secs(40));
    // The controller and one more.
    let other = if controller == 5 { 4 } else { 5 };
    let victims = [controller, other];
    for v in victims {
        cluster.broker(v).kill9();
    }
    let survivors: Vec<i32> = (1..=5).filter(|i| !victims.contains(i)).collect();
    assert_eq!(survivors.len(), 3, "victims {victims:?}");
    let via = survivors[0];
    let started = Instant::now();
    while cli_create(&cluster, via, "with-three-of-five").is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "three of five could not change metadata"
        );
    }
    let third = *survivors.last().expect("three survivors");
    cluster.broker(third).kill9();
    let minority: Vec<i32> = survivors.iter().copied().filter(|s| *s != third).collect();
    // Refused as timed out (REQUEST_TIMED_OUT), whether the minority holds a leader whose
    // proposal no majority commits or no leader at all: clients retry it, not give up.
    match cli_create(&cluster, minority[0], "with-two-of-five") {
        Ok(()) => panic!("two of five changed metadata"),
        Err(why) => assert!(why.contains("REQUEST_TIMED_OUT"), "{why}"),
    }
    for id in &minority {
        let names = common::topic_names(&cluster.bootstrap_of(*id));
        assert!(
            names.contains(&"with-three-of-five".to_string()),
            "{names:?}"
        );
        assert!(
            !names.contains(&"with-two-of-five".to_string()),
            "{names:?}"
        );
    }
}

/// A data directory of a one-node broker is refused by a cluster member, naming the
/// setting, instead of being taken over.
#[test]
fn a_one_node_data_directory_is_refused_by_a_cluster_member() {
    let mut broker = common::Broker::start(&[]);
    broker.terminate();
    let port = common::free_port();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tusk"))
        .args([
            "serve",
            "--node-id",
            "1",
            "--metrics-listen",
            "off",
            "--data-dir",
        ])
        .arg(broker.data_dir())
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", common::free_port()))
        .arg("--controller-quorum-voters")
        .arg(format!("1@127.0.0.1:{port}"))
        .output()
        .expect("run tusk serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("controller_quorum_voters") && stderr.contains("one-node"),
        "{stderr}"
    );
}

/// A broker that is not the controller, killed with SIGKILL: the controller fences it (it
/// leaves Metadata, its partitions have no leader), and once restarted it registers a new
/// incarnation, is live again, and serves the records it held before the kill.
#[test]
fn a_killed_broker_is_fenced_then_live_again_after_restart() {
    let mut cluster = Cluster::start(3, 1);
    let controller = cluster.wait_for(1, &[1, 2, 3], Duration::from_secs(30));
    let victim = (1..=3)
        .find(|i| *i != controller)
        .expect("a non-controller");
    let witness = (1..=3)
        .find(|i| *i != controller && *i != victim)
        .expect("a third broker");
    common::create_topic(&cluster.bootstrap_of(witness), "fence", 3);
    let led = leaders(&cluster.bootstrap_of(witness), "fence");
    assert!(
        led.contains(&victim),
        "leaders {led:?} leave out broker {victim}"
    );
    let acked = produce_through(&cluster.bootstrap_of(witness), "fence", 60, &[]);
    assert_eq!(acked, 60);

    cluster.broker(victim).kill9();
    let killed_at = Instant::now();
    let live: Vec<i32> = (1..=3).filter(|i| *i != victim).collect();
    cluster.wait_for(witness, &live, Duration::from_secs(20));
    let fenced_ms = killed_at.elapsed().as_millis();
    assert_eq!(broker_ids(&cluster.bootstrap_of(witness)), live);
    let led = leaders(&cluster.bootstrap_of(witness), "fence");
    assert!(
        led.contains(&-1) && !led.contains(&victim),
        "a fenced broker's partitions have no leader, not {led:?}"
    );

    let restarted_at = Instant::now();
    cluster.broker(victim).restart();
    cluster.wait_for(witness, &[1, 2, 3], Duration::from_secs(30));
    let live_ms = restarted_at.elapsed().as_millis();
    eprintln!(
        "broker {victim}: fenced {fenced_ms} ms after SIGKILL, live {live_ms} ms after its restart"
    );
    assert_eq!(broker_ids(&cluster.bootstrap_of(victim)), vec![1, 2, 3]);
    let consumer = common::consumer(&cluster.bootstrap_of(victim));
    let records = common::consume_all(&consumer, "fence", 3, 60, Duration::from_secs(60));
    assert_eq!(records.len(), 60, "records after the restart");
}
