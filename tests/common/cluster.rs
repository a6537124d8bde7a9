//! A cluster of real `tusk serve` processes on loopback: every broker a voter of the metadata
//! quorum, each with its own data directory, Kafka port and controller port. Brokers are killed
//! on drop (their data directories go with their temporary roots).

use std::thread;
use std::time::{Duration, Instant};

use std::collections::HashMap;

use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::BaseRecord;

use super::{Broker, Rec};

pub struct Cluster {
    /// Broker `i` has node id `i + 1`.
    pub brokers: Vec<Broker>,
}

impl Cluster {
    /// Starts `n` brokers (node ids 1..=n) with `shards` shards each and waits until every
    /// one serves.
    pub fn start(n: usize, shards: usize) -> Cluster {
        Cluster::start_with(n, shards, &[])
    }

    /// Like `start`, with `extra` flags for every broker (kept across restarts), e.g. the
    /// replication settings.
    pub fn start_with(n: usize, shards: usize, extra: &[&str]) -> Cluster {
        let controller_ports: Vec<u16> = (0..n).map(|_| super::free_port()).collect();
        let voters = controller_ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}@127.0.0.1:{p}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let shards = shards.to_string();
        let brokers = (0..n)
            .map(|i| {
                let id = (i + 1).to_string();
                let mut args: Vec<&str> = vec![
                    "--node-id",
                    id.as_str(),
                    "--controller-quorum-voters",
                    voters.as_str(),
                    "--shards",
                    shards.as_str(),
                ];
                args.extend_from_slice(extra);
                Broker::launch(&args)
            })
            .collect();
        let mut cluster = Cluster { brokers };
        for b in &mut cluster.brokers {
            b.wait_ready();
        }
        cluster
    }

    /// Like `start_with`, broker `i` (node id `i + 1`) in network namespace `places[i].0`
    /// listening on `places[i].1` (Kafka and controller ports alike).
    pub fn start_in_netns(places: &[(String, [u8; 4])], shards: usize, extra: &[&str]) -> Cluster {
        let controller_ports: Vec<u16> = places.iter().map(|_| super::free_port()).collect();
        let voters = places
            .iter()
            .zip(&controller_ports)
            .enumerate()
            .map(|(i, ((_, [a, b, c, d]), p))| format!("{}@{a}.{b}.{c}.{d}:{p}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let shards = shards.to_string();
        let brokers = places
            .iter()
            .enumerate()
            .map(|(i, (netns, host))| {
                let id = (i + 1).to_string();
                let mut args: Vec<&str> = vec![
                    "--node-id",
                    id.as_str(),
                    "--controller-quorum-voters",
                    voters.as_str(),
                    "--shards",
                    shards.as_str(),
                ];
                args.extend_from_slice(extra);
                Broker::launch_in_netns(netns, *host, &args)
            })
            .collect();
        let mut cluster = Cluster { brokers };
        for b in &mut cluster.brokers {
            b.wait_ready();
        }
        cluster
    }

    pub fn broker(&mut self, node_id: i32) -> &mut Broker {
        &mut self.brokers[node_id as usize - 1]
    }

    pub fn bootstrap_of(&self, node_id: i32) -> String {
        self.brokers[node_id as usize - 1].bootstrap()
    }

    /// Every running broker's address, comma-separated.
    pub fn bootstrap(&mut self) -> String {
        let mut out = Vec::new();
        for b in &mut self.brokers {
            if b.is_running() {
                out.push(b.bootstrap());
            }
        }
        out.join(",")
    }

    /// `tusk cluster info --json` asked of broker `node_id`.
    pub fn info(&self, node_id: i32) -> Option<serde_json::Value> {
        let out = super::run_with_timeout(
            std::process::Command::new(env!("CARGO_BIN_EXE_tusk"))
                .args(["cluster", "info", "--json", "--bootstrap"])
                .arg(self.bootstrap_of(node_id)),
            None,
            Duration::from_secs(60),
        );
        if !out.status.success() {
            return None;
        }
        serde_json::from_str(&out.stdout).ok()
    }

    /// Waits until broker `asked` reports a controller among `among` and lists exactly the
    /// live brokers `live` (sorted node ids); the controller's id.
    pub fn wait_for(&self, asked: i32, live: &[i32], timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Some(info) = self.info(asked) {
                let alive: Vec<i32> = info["brokers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|b| b["alive"].as_bool() == Some(true))
                    .filter_map(|b| b["node_id"].as_i64().map(|i| i as i32))
                    .collect();
                let controller = info["controller_id"].as_i64().unwrap_or(-1) as i32;
                if alive == live && live.contains(&controller) {
                    return controller;
                }
                last = Some(info);
            }
            assert!(
                Instant::now() < deadline,
                "broker {asked} did not report live brokers {live:?} with a live controller \
                 within {timeout:?}; last answer: {last:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

// ---------------------------------------------------------------------------
// Metadata: replicas, ISR, leader.

/// One partition as a broker's Metadata describes it (replicas and ISR sorted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub partition: i32,
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

/// `topic`'s partitions as broker `bootstrap` answers Metadata (a fresh client knows only
/// that broker, so that broker answers).
pub fn placements(bootstrap: &str, topic: &str) -> Result<Vec<Placement>, String> {
    let admin = super::admin(bootstrap);
    let metadata = admin
        .inner()
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .map_err(|e| format!("metadata from {bootstrap}: {e}"))?;
    let t = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| format!("{topic} missing from the metadata of {bootstrap}"))?;
    if let Some(error) = t.error() {
        return Err(format!(
            "{topic} at {bootstrap}: {:?}",
            RDKafkaErrorCode::from(error)
        ));
    }
    let mut out: Vec<Placement> = t
        .partitions()
        .iter()
        .map(|p| {
            let mut replicas = p.replicas().to_vec();
            replicas.sort_unstable();
            let mut isr = p.isr().to_vec();
            isr.sort_unstable();
            Placement {
                partition: p.id(),
                leader: p.leader(),
                replicas,
                isr,
            }
        })
        .collect();
    out.sort_by_key(|p| p.partition);
    Ok(out)
}

/// Polls broker `asked` for `topic` every 200 ms until `done` holds for its (non-empty)
/// placement; panics with the last answer after `timeout`. The placement and how long it took.
pub fn wait_placement(
    cluster: &Cluster,
    asked: i32,
    topic: &str,
    timeout: Duration,
    what: &str,
    done: impl Fn(&[Placement]) -> bool,
) -> (Vec<Placement>, Duration) {
    let started = Instant::now();
    let bootstrap = cluster.bootstrap_of(asked);
    loop {
        let last = match placements(&bootstrap, topic) {
            Ok(p) if !p.is_empty() && done(&p) => return (p, started.elapsed()),
            Ok(p) => format!("{p:?}"),
            Err(e) => e,
        };
        assert!(
            started.elapsed() < timeout,
            "broker {asked}, topic {topic}: {what} not within {timeout:?}; last answer: {last}"
        );
        thread::sleep(Duration::from_millis(200));
    }
}

/// Creates `name` through `bootstrap` with `replication` replicas per partition (-1: the
/// broker default); the broker's error code if it refuses.
pub fn try_create_replicated(
    bootstrap: &str,
    name: &str,
    partitions: i32,
    replication: i32,
) -> Result<(), String> {
    let admin = super::admin(bootstrap);
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(replication));
    let options = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(15)));
    let results = super::block_on(
        admin.create_topics([&topic], &options),
        Duration::from_secs(30),
        "CreateTopics",
    )
    .map_err(|e| e.to_string())?;
    match results.into_iter().next() {
        Some(Ok(_)) => Ok(()),
        Some(Err((_, code))) => Err(format!("{code:?}")),
        None => Err("no result".into()),
    }
}

/// Creates `name` through broker `via` and waits until `via` lists every partition with a
/// leader.
pub fn create_replicated(
    cluster: &Cluster,
    via: i32,
    name: &str,
    partitions: i32,
    replication: i32,
) {
    try_create_replicated(&cluster.bootstrap_of(via), name, partitions, replication)
        .unwrap_or_else(|e| panic!("CreateTopics {name} (replication {replication}): {e}"));
    let want = usize::try_from(partitions).expect("a positive partition count");
    wait_placement(
        cluster,
        via,
        name,
        Duration::from_secs(30),
        "every partition led",
        |p| p.len() == want && p.iter().all(|p| p.leader >= 0),
    );
}

// ---------------------------------------------------------------------------
// Producing and reading back.

/// A record the brokers acknowledged: where, and what.
#[derive(Clone, Debug)]
pub struct Written {
    pub partition: i32,
    pub offset: i64,
    pub payload: String,
}

/// Produces `{prefix}-0`, `{prefix}-1`, ... (`count` records, record `i` to partition
/// `i % partitions`) with acks=all and idempotence, and asserts every one is acknowledged
/// (within 90 s).
pub fn produce_acked(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    prefix: &str,
    count: usize,
) -> Vec<Written> {
    let producer = super::producer(bootstrap, &[("enable.idempotence", "true")]);
    let spread = usize::try_from(partitions).expect("a positive partition count");
    for i in 0..count {
        let payload = format!("{prefix}-{i}");
        let partition = i32::try_from(i % spread).expect("a partition index fits i32");
        super::send(
            &producer,
            BaseRecord::<(), String, usize>::with_opaque_to(topic, i)
                .partition(partition)
                .payload(&payload),
        );
    }
    super::flush(&producer, count, Duration::from_secs(90))
        .into_iter()
        .map(|a| Written {
            partition: a.partition,
            offset: a.offset,
            payload: format!("{prefix}-{}", a.id),
        })
        .collect()
}

/// Asserts that `records` (each partition read from offset 0) carry offsets 0, 1, 2, ... in
/// every partition, hold each written record at its acknowledged offset, and none of them
/// twice.
pub fn assert_holds(records: &[Rec], written: &[Written], what: &str) {
    for (partition, recs) in super::by_partition(records) {
        super::assert_offsets_contiguous(partition, &recs, 0);
    }
    let mut copies: HashMap<String, usize> = HashMap::new();
    let mut at: HashMap<(i32, i64), String> = HashMap::new();
    for r in records {
        *copies.entry(r.value_str()).or_default() += 1;
        at.insert((r.partition, r.offset), r.value_str());
    }
    let missing: Vec<&Written> = written
        .iter()
        .filter(|w| at.get(&(w.partition, w.offset)) != Some(&w.payload))
        .collect();
    let twice: Vec<&Written> = written
        .iter()
        .filter(|w| copies.get(&w.payload).copied().unwrap_or(0) > 1)
        .collect();
    assert!(
        missing.is_empty() && twice.is_empty(),
        "{what}: of {} acknowledged records ({} read), {} are not at their acknowledged \
         offset (first: {:?}) and {} are stored more than once (first: {:?})",
        written.len(),
        records.len(),
        missing.len(),
        missing.first(),
        twice.len(),
        twice.first()
    );
}

/// The high watermark of partition 0 (the log starts at 0), retried while clients find a
/// new leader.
pub fn high_watermark(consumer: &BaseConsumer, topic: &str) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match consumer.fetch_watermarks(topic, 0, Duration::from_secs(5)) {
            Ok((low, high)) => {
                assert_eq!(low, 0, "log start offset of {topic}");
                return high;
            }
            Err(e) => assert!(
                Instant::now() < deadline,
                "watermarks of {topic} within 30 s: {e}"
            ),
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// Partition 0 of `topic` from offset 0 up to its high watermark (and at least `at_least`
/// records), as a fresh consumer bootstrapped from `bootstrap` reads it from the leader.
pub fn read_partition(bootstrap: &str, topic: &str, at_least: usize) -> Vec<Rec> {
    let consumer = super::consumer(bootstrap);
    let high = usize::try_from(high_watermark(&consumer, topic)).expect("a watermark >= 0");
    super::consume_all(
        &consumer,
        topic,
        1,
        high.max(at_least),
        Duration::from_secs(90),
    )
}

/// One record to partition 0 of `topic` with acks=all, waiting at most `timeout_ms` for the
/// in-sync replicas.
pub fn produce_one_request(
    topic: &str,
    payload: &str,
    timeout_ms: i32,
) -> kafka_protocol::messages::ProduceRequest {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    let batch = tusk::protocol::record_batch::encode_records(
        &[(None, Some(payload.as_bytes()))],
        tusk::client::wall_clock_ms(),
        0,
    );
    kafka_protocol::messages::ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(timeout_ms)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(tusk::client::topic_name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(bytes::Bytes::from(batch)))])])
}

/// `tusk cluster elect-leaders --topic TOPIC` through broker `via`; panics if it fails.
pub fn elect_preferred(cluster: &Cluster, via: i32, topic: &str) {
    let out = super::run_with_timeout(
        std::process::Command::new(env!("CARGO_BIN_EXE_tusk")).args([
            "cluster",
            "elect-leaders",
            "--topic",
            topic,
            "--bootstrap",
            &cluster.bootstrap_of(via),
        ]),
        None,
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "elect-leaders: {}", out.stderr);
}
