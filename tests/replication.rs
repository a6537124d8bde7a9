//! Partition replication across three real `tusk serve` processes on loopback, driven by
//! librdkafka: topics with replication factor 3 (explicit, or -1 for the broker default) list
//! three replicas, all in sync, on every broker; acks=all records are read back exactly once;
//! the partition leader killed again and again under an idempotent acks=all stream loses and
//! duplicates nothing, and no offset is read with two values; a follower that was down while
//! records were acknowledged catches up and serves them once it leads; with two of three
//! brokers down acks=all acknowledges nothing, and resumes once they return.
//!
//! Every broker runs with `--min-insync-replicas 2` (the default, spelled out because the
//! two-down test rests on it) and `--replica-lag-time-max-ms 2000`, so that a dead follower
//! leaves the ISR after 2 s rather than the default 10 s. Failover times are printed, never
//! asserted: three brokers and the clients share two cores, and the bar of "writable again
//! within 3 s of a leader's death" is a figure to report (benchmarks, not timed tests).
//! `TUSK_REPLICATION_KILLS` sets the kill loop's rounds for a soak run (5 by default, about a
//! minute).

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use common::cluster::{
    assert_holds, create_replicated, produce_acked, read_partition, try_create_replicated,
    wait_placement, Cluster, Placement,
};
use common::Rec;
use rdkafka::error::KafkaError;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Message};

/// Flags of every broker in this file (see the module comment).
const BROKER_FLAGS: &[&str] = &[
    "--min-insync-replicas",
    "2",
    "--replica-lag-time-max-ms",
    "2000",
];
/// The node ids of the cluster, sorted: what a fully replicated partition lists as its
/// replicas and its ISR.
const ALL: [i32; 3] = [1, 2, 3];
/// Until a survivor's Metadata names a new leader after a kill (fencing, and a controller
/// failover too when the leader was also the active controller), on a slow machine.
const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Until a restarted broker has caught up and is back in the ISR.
const IN_SYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// Reading a whole partition back.
const READ_TIMEOUT: Duration = Duration::from_secs(90);
/// Records the kill loop's producer keeps unacknowledged at most: enough that it keeps
/// sending through a failover of a few seconds, bounded so that a stalled cluster does not
/// pile up records without end.
const IN_FLIGHT_MAX: i32 = 2_000;

/// The tests of this file run one at a time: each starts three brokers, and two clusters at
/// once on two cores would stretch every election and catch-up (and the figures printed)
/// without covering anything more.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    // A test that failed poisons the lock; the next one still runs.
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Rounds of the kill loop: 5 in CI, `TUSK_REPLICATION_KILLS` for a soak run.
fn kill_rounds() -> usize {
    std::env::var("TUSK_REPLICATION_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

/// Three brokers with one shard each (they share two cores), every one a voter, all live.
fn start_cluster() -> Cluster {
    let cluster = Cluster::start_with(3, 1, BROKER_FLAGS);
    cluster.wait_for(1, &ALL, Duration::from_secs(30));
    cluster
}

fn ms(samples: &[Duration]) -> Vec<u128> {
    samples.iter().map(|d| d.as_millis()).collect()
}

// ---------------------------------------------------------------------------
// Metadata: replicas, ISR, leader.

/// Every partition has the three brokers as replicas, all three in sync, and one of them
/// leading.
fn all_in_sync(p: &[Placement]) -> bool {
    p.iter()
        .all(|p| p.replicas == ALL && p.isr == ALL && ALL.contains(&p.leader))
}

/// Waits until broker `asked` lists every partition of `topic` with all three replicas in
/// sync: the placement and how long that took.
fn wait_in_sync(cluster: &Cluster, asked: i32, topic: &str) -> (Vec<Placement>, Duration) {
    wait_placement(
        cluster,
        asked,
        topic,
        IN_SYNC_TIMEOUT,
        "all three replicas in sync",
        all_in_sync,
    )
}

/// Waits until broker `asked` names a live leader of partition 0 other than `dead`: the new
/// leader and how long that took.
fn wait_new_leader(cluster: &Cluster, asked: i32, topic: &str, dead: i32) -> (i32, Duration) {
    let what = format!("a leader other than broker {dead}");
    let (p, took) = wait_placement(cluster, asked, topic, ELECTION_TIMEOUT, &what, |p| {
        p[0].leader >= 0 && p[0].leader != dead
    });
    (p[0].leader, took)
}

/// A broker other than `not`, to ask while `not` is down.
fn other_than(not: i32) -> i32 {
    ALL.iter()
        .copied()
        .find(|id| *id != not)
        .expect("three brokers")
}

// ---------------------------------------------------------------------------
// Producing and reading back.

// ---------------------------------------------------------------------------
// The kill loop's producer: a thread that keeps sending and a log of when each
// acknowledgement arrived.

/// One acknowledged record of the kill loop: its id (payload `k-{id}`), its offset and
/// when the acknowledgement arrived.
#[derive(Clone, Copy, Debug)]
struct Acked {
    id: usize,
    offset: i64,
    at: Instant,
}

/// Producer context of the kill loop: acknowledgements in arrival order with their time,
/// failed deliveries, client and send errors.
#[derive(Default)]
struct AckLog {
    acked: Mutex<Vec<Acked>>,
    failed: Mutex<Vec<(usize, String)>>,
    errors: Mutex<Vec<String>>,
}

impl AckLog {
    fn acked(&self) -> Vec<Acked> {
        self.acked.lock().unwrap().clone()
    }

    fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    fn failed(&self) -> Vec<(usize, String)> {
        self.failed.lock().unwrap().clone()
    }

    fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }

    fn note(&self, error: String) {
        let mut errors = self.errors.lock().unwrap();
        if errors.len() < 50 {
            errors.push(error);
        }
    }

    /// When the first record with id `id` or higher was acknowledged. One partition and
    /// idempotence acknowledge in id order, so the scan from the newest stops at the first
    /// older id.
    fn first_ack_from(&self, id: usize) -> Option<Instant> {
        let acked = self.acked.lock().unwrap();
        acked
            .iter()
            .rev()
            .take_while(|a| a.id >= id)
            .map(|a| a.at)
            .min()
    }

    /// Panics with what the producer saw unless `at_least` records are acknowledged within
    /// 30 s.
    fn wait_for(&self, at_least: usize, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.acked_count() < at_least {
            assert!(
                Instant::now() < deadline,
                "{what}: {} of {at_least} records acknowledged within 30 s; failed deliveries \
                 (first 5): {:?}; client errors: {:?}",
                self.acked_count(),
                self.failed().iter().take(5).collect::<Vec<_>>(),
                self.errors()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl ClientContext for AckLog {
    fn error(&self, error: KafkaError, reason: &str) {
        self.note(format!("{error}: {reason}"));
    }
}

impl ProducerContext for AckLog {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, id: usize) {
        match result {
            Ok(message) => self.acked.lock().unwrap().push(Acked {
                id,
                offset: message.offset(),
                at: Instant::now(),
            }),
            Err((error, _)) => self.failed.lock().unwrap().push((id, error.to_string())),
        }
    }
}

/// A thread sending `k-0`, `k-1`, ... to partition 0 with acks=all and idempotence, about
/// one record a millisecond and at most `IN_FLIGHT_MAX` unacknowledged, until finished.
/// Every payload is sent once: a record stored twice is the brokers' doing.
struct Stream {
    log: Arc<AckLog>,
    stop: Arc<AtomicBool>,
    /// Records handed to the producer so far, which is also the next record's id.
    sent: Arc<AtomicUsize>,
    worker: Option<thread::JoinHandle<()>>,
}

impl Stream {
    fn start(bootstrap: &str, topic: &str) -> Stream {
        let producer: BaseProducer<AckLog> = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            // Longer than any failover: nothing is given up while a leader is replaced.
            .set("message.timeout.ms", "60000")
            .set("request.timeout.ms", "30000")
            // Look for the new leader soon and often once the old one's connection drops.
            .set("retry.backoff.ms", "50")
            .set("retry.backoff.max.ms", "250")
            .create_with_context(AckLog::default())
            .unwrap_or_else(|e| panic!("create the idempotent producer: {e}"));
        let log = Arc::clone(producer.context());
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let worker = {
            let stop = Arc::clone(&stop);
            let sent = Arc::clone(&sent);
            let topic = topic.to_string();
            thread::spawn(move || produce_until_stopped(&producer, &topic, &stop, &sent))
        };
        Stream {
            log,
            stop,
            sent,
            worker: Some(worker),
        }
    }

    /// An id such that every record with it or a higher one is handed to the producer after
    /// this call: the record being handed over right now may carry the current count.
    fn next_id_after_now(&self) -> usize {
        self.sent.load(Ordering::SeqCst) + 1
    }

    /// Stops sending, lets what is in flight be acknowledged (30 s at most), and returns how
    /// many records were sent.
    fn finish(&mut self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(worker) = self.worker.take() {
            worker.join().expect("the producer thread panicked");
        }
        self.sent.load(Ordering::SeqCst)
    }
}

impl Drop for Stream {
    /// A failing test stops the thread too (it is not joined: the panic goes on).
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn produce_until_stopped(
    producer: &BaseProducer<AckLog>,
    topic: &str,
    stop: &AtomicBool,
    sent: &AtomicUsize,
) {
    let mut next = 0usize;
    while !stop.load(Ordering::SeqCst) {
        if producer.in_flight_count() >= IN_FLIGHT_MAX {
            producer.poll(Duration::from_millis(5));
            continue;
        }
        let payload = format!("k-{next}");
        let record = BaseRecord::<(), String, usize>::with_opaque_to(topic, next)
            .partition(0)
            .payload(&payload);
        match producer.send(record) {
            Ok(()) => {
                next += 1;
                sent.store(next, Ordering::SeqCst);
            }
            Err((error, _)) => {
                producer
                    .context()
                    .note(format!("send of k-{next}: {error}"));
                producer.poll(Duration::from_millis(10));
            }
        }
        // Serves delivery reports and paces the loop (poll waits out its whole timeout).
        producer.poll(Duration::from_millis(1));
    }
    // Dropping the producer purges what is still queued or in flight (those count as failed,
    // not acknowledged), so let it finish first.
    let _ = producer.flush(Duration::from_secs(30));
}

/// What one read of the kill loop's partition says.
#[derive(Default)]
struct Tally {
    /// Acknowledged payloads not in the log.
    lost: usize,
    /// Acknowledged payloads in the log, but not at the offset their acknowledgement named.
    misplaced: usize,
    /// Payloads stored at more than one offset (each was sent once).
    duplicated: usize,
    /// Records whose offset was not above the one read before.
    out_of_order: usize,
    /// Offsets skipped between 0 and the last one read (printed: a compaction-free,
    /// transaction-free log has none).
    gaps: usize,
}

fn tally(records: &[Rec], acked: &[Acked]) -> Tally {
    let mut t = Tally::default();
    let mut offsets_of: HashMap<String, BTreeSet<i64>> = HashMap::new();
    let mut previous = -1i64;
    for r in records {
        if r.offset <= previous {
            t.out_of_order += 1;
        } else {
            t.gaps += usize::try_from(r.offset - previous - 1).expect("offsets ascend here");
            previous = r.offset;
        }
        offsets_of
            .entry(r.value_str())
            .or_default()
            .insert(r.offset);
    }
    t.duplicated = offsets_of.values().filter(|o| o.len() > 1).count();
    for a in acked {
        match offsets_of.get(&format!("k-{}", a.id)) {
            None => t.lost += 1,
            Some(offsets) if a.offset >= 0 && !offsets.contains(&a.offset) => t.misplaced += 1,
            Some(_) => {}
        }
    }
    t
}

/// Offsets of `first` that `second` holds with another payload, and offsets of `first` that
/// `second` lacks (committed records never leave the log).
fn compare_reads(first: &[Rec], second: &[Rec]) -> (usize, usize) {
    let second: HashMap<i64, String> = second.iter().map(|r| (r.offset, r.value_str())).collect();
    let mut differ = 0;
    let mut vanished = 0;
    for r in first {
        match second.get(&r.offset) {
            Some(v) if *v == r.value_str() => {}
            Some(_) => differ += 1,
            None => vanished += 1,
        }
    }
    (differ, vanished)
}

// ---------------------------------------------------------------------------
// The tests.

/// A 6-partition topic with replication factor 3 and a 3-partition one with -1 (the broker
/// default, min(3, live brokers)) list, on each of the three brokers, every broker as a
/// replica of every partition, all three in sync, and a leader among them. More replicas
/// than brokers is refused (INVALID_REPLICATION_FACTOR), not created short.
#[test]
fn replicated_topics_list_three_replicas_in_sync_on_every_broker() {
    let _serial = serial();
    let cluster = start_cluster();
    create_replicated(&cluster, 1, "rf-three", 6, 3);
    create_replicated(&cluster, 2, "rf-default", 3, -1);
    for topic in ["rf-three", "rf-default"] {
        for id in ALL {
            let (p, took) = wait_in_sync(&cluster, id, topic);
            let leaders: Vec<i32> = p.iter().map(|p| p.leader).collect();
            eprintln!(
                "{topic} as broker {id} lists it: {} partitions, replicas and ISR {ALL:?}, \
                 leaders {leaders:?} (in sync after {} ms)",
                p.len(),
                took.as_millis()
            );
        }
    }
    let refused = try_create_replicated(&cluster.bootstrap_of(3), "rf-four", 1, 4);
    assert!(
        matches!(&refused, Err(code) if code.contains("InvalidReplicationFactor")),
        "replication factor 4 on three brokers: {refused:?}"
    );
}

/// 3,000 idempotent acks=all records to a 3-partition topic with replication factor 3 are all
/// acknowledged, and a fresh consumer reads each one back once, at its acknowledged offset,
/// with offsets 0, 1, 2, ... in every partition.
#[test]
fn acks_all_to_three_replicas_reads_back_every_record_once() {
    const TOPIC: &str = "acked";
    const PARTITIONS: i32 = 3;
    const COUNT: usize = 3_000;
    let _serial = serial();
    let mut cluster = start_cluster();
    create_replicated(&cluster, 1, TOPIC, PARTITIONS, 3);
    wait_in_sync(&cluster, 1, TOPIC);
    let started = Instant::now();
    let written = produce_acked(&cluster.bootstrap(), TOPIC, PARTITIONS, "k", COUNT);
    let produced_in = started.elapsed();
    let consumer = common::consumer(&cluster.bootstrap_of(3));
    let records = common::consume_all(&consumer, TOPIC, PARTITIONS, COUNT, READ_TIMEOUT);
    eprintln!(
        "{COUNT} acks=all records to 3 partitions x 3 replicas acknowledged in {} ms; {} read back",
        produced_in.as_millis(),
        records.len()
    );
    assert_eq!(records.len(), COUNT, "records read back");
    assert_holds(&records, &written, "read back through broker 3");
}

/// A one-partition topic with three replicas under a continuous idempotent acks=all
/// stream; each round kills the partition's leader (SIGKILL), waits for a survivor's Metadata
/// to name a new leader, measures the failover to the acknowledgement of the first record
/// sent after the kill, restarts the killed broker (same node id and data directory) and
/// waits until all three are in sync again. Then the stream stops and the partition is read
/// twice, from its leader and, after killing that leader too, from its successor: no
/// acknowledged record is lost or away from its acknowledged offset, none is stored twice,
/// offsets only ascend, and the two reads agree on every offset.
#[test]
fn leader_kill_loop_loses_and_duplicates_nothing() {
    const TOPIC: &str = "kill-loop";
    let _serial = serial();
    let mut cluster = start_cluster();
    create_replicated(&cluster, 1, TOPIC, 1, 3);
    wait_in_sync(&cluster, 1, TOPIC);
    let rounds = kill_rounds();
    let mut stream = Stream::start(&cluster.bootstrap(), TOPIC);
    let log = Arc::clone(&stream.log);
    let mut elected = Vec::new();
    let mut failovers = Vec::new();
    let mut rejoined = Vec::new();
    // All three brokers are live at the start of every round: any one can be asked.
    let mut asked = 1;
    for round in 0..rounds {
        // The leader takes writes before it dies, and a broker restarted in the round before
        // has records to catch up on.
        log.wait_for(
            log.acked_count() + 300,
            &format!("round {round}: records before the kill"),
        );
        let (p, _) = wait_in_sync(&cluster, asked, TOPIC);
        let leader = p[0].leader;
        cluster.broker(leader).kill9();
        let killed_at = Instant::now();
        let first_after = stream.next_id_after_now();
        asked = other_than(leader);
        let (new_leader, took) = wait_new_leader(&cluster, asked, TOPIC, leader);
        elected.push(took);
        let acked_again = loop {
            if let Some(at) = log.first_ack_from(first_after) {
                break at;
            }
            assert!(
                killed_at.elapsed() < Duration::from_secs(30),
                "round {round}: nothing sent after killing leader {leader} was acknowledged \
                 within 30 s ({} acknowledged in all); failed deliveries (first 5): {:?}; \
                 client errors: {:?}",
                log.acked_count(),
                log.failed().iter().take(5).collect::<Vec<_>>(),
                log.errors()
            );
            thread::sleep(Duration::from_millis(5));
        };
        let failover = acked_again.saturating_duration_since(killed_at);
        failovers.push(failover);
        cluster.broker(leader).restart();
        let (_, back) = wait_in_sync(&cluster, asked, TOPIC);
        rejoined.push(back);
        eprintln!(
            "round {round}: killed leader {leader}; broker {new_leader} leads after {} ms; \
             acknowledged again after {} ms; broker {leader} in sync {} ms after its restart",
            took.as_millis(),
            failover.as_millis(),
            back.as_millis()
        );
    }
    let sent = stream.finish();
    let acked = log.acked();
    let failed = log.failed();
    let errors = log.errors();
    let longest_silence = acked
        .windows(2)
        .map(|w| w[1].at.saturating_duration_since(w[0].at))
        .max()
        .unwrap_or_default();

    // Two reads: from the leader with all three in sync, then, after killing it, from its
    // successor, which must hold the same committed records at the same offsets.
    let (p, _) = wait_in_sync(&cluster, asked, TOPIC);
    let first_reader = p[0].leader;
    let first = read_partition(&cluster.bootstrap(), TOPIC, 0);
    cluster.broker(first_reader).kill9();
    let (second_reader, _) =
        wait_new_leader(&cluster, other_than(first_reader), TOPIC, first_reader);
    let second = read_partition(&cluster.bootstrap(), TOPIC, first.len());
    let t1 = tally(&first, &acked);
    let t2 = tally(&second, &acked);
    let (differ, vanished) = compare_reads(&first, &second);

    let max_failover = failovers.iter().max().copied().unwrap_or_default();
    eprintln!(
        "kill loop: {rounds} leader kills; {sent} records sent, {} acknowledged, {} failed, \
         {} client errors (first: {:?})",
        acked.len(),
        failed.len(),
        errors.len(),
        errors.first()
    );
    eprintln!(
        "  kill -> Metadata names a new leader, ms: {:?}",
        ms(&elected)
    );
    eprintln!(
        "  failover (kill -> next acknowledgement), ms: {:?}; max {} ms (the bar: 3000)",
        ms(&failovers),
        max_failover.as_millis()
    );
    eprintln!("  restart -> back in the ISR, ms: {:?}", ms(&rejoined));
    eprintln!(
        "  longest time without an acknowledgement: {} ms",
        longest_silence.as_millis()
    );
    for (reader, records, t) in [(first_reader, &first, &t1), (second_reader, &second, &t2)] {
        eprintln!(
            "  read from broker {reader}: {} records; lost {}, duplicated {}, misplaced {}, \
             out of order {}, gaps {}",
            records.len(),
            t.lost,
            t.duplicated,
            t.misplaced,
            t.out_of_order,
            t.gaps
        );
    }
    eprintln!("  offsets read with two values: {differ}; read first, then missing: {vanished}");

    assert!(!acked.is_empty(), "nothing was acknowledged");
    for (reader, t) in [(first_reader, &t1), (second_reader, &t2)] {
        assert_eq!(
            t.lost, 0,
            "acknowledged records lost (read from broker {reader})"
        );
        assert_eq!(
            t.duplicated, 0,
            "records stored twice (read from broker {reader})"
        );
        assert_eq!(
            t.misplaced, 0,
            "records away from their acknowledged offset (read from broker {reader})"
        );
        assert_eq!(
            t.out_of_order, 0,
            "offsets not ascending (read from broker {reader})"
        );
    }
    assert_eq!(differ, 0, "offsets read with two different payloads");
    assert_eq!(
        vanished, 0,
        "records read from broker {first_reader} missing from broker {second_reader}"
    );
}

/// A follower killed before 2,000 acks=all records: they are all acknowledged (the ISR drops
/// it and two in-sync replicas meet min.insync.replicas), then it restarts and rejoins the
/// ISR. The leader is then killed, and each new leader serves all 2,000 records at their
/// acknowledged offsets; up to three kills are made so that the follower that was down leads
/// (printed when it never does: which survivor is elected is the controller's choice).
#[test]
fn a_follower_down_during_produce_catches_up_and_serves_as_leader() {
    const TOPIC: &str = "catch-up";
    const COUNT: usize = 2_000;
    let _serial = serial();
    let mut cluster = start_cluster();
    create_replicated(&cluster, 1, TOPIC, 1, 3);
    let (p, _) = wait_in_sync(&cluster, 1, TOPIC);
    let leader = p[0].leader;
    let follower = other_than(leader);
    cluster.broker(follower).kill9();
    let killed_at = Instant::now();
    let written = produce_acked(&cluster.bootstrap(), TOPIC, 1, "k", COUNT);
    let produced_ms = killed_at.elapsed().as_millis();
    let (p, shrunk) = wait_placement(
        &cluster,
        leader,
        TOPIC,
        IN_SYNC_TIMEOUT,
        "an ISR of two without the dead follower",
        |p| p[0].isr.len() == 2 && !p[0].isr.contains(&follower),
    );
    eprintln!(
        "follower {follower} killed: {COUNT} records acknowledged {produced_ms} ms after the \
         kill; ISR {:?} (seen {} ms after the produce)",
        p[0].isr,
        shrunk.as_millis()
    );

    cluster.broker(follower).restart();
    let (_, back) = wait_in_sync(&cluster, leader, TOPIC);
    eprintln!(
        "follower {follower} back in the ISR {} ms after its restart",
        back.as_millis()
    );

    let mut asked = leader;
    let mut served_by = Vec::new();
    for attempt in 0..3 {
        let (p, _) = wait_in_sync(&cluster, asked, TOPIC);
        let current = p[0].leader;
        cluster.broker(current).kill9();
        asked = other_than(current);
        let (new_leader, took) = wait_new_leader(&cluster, asked, TOPIC, current);
        let consumer = common::consumer(&cluster.bootstrap_of(new_leader));
        let records = common::consume_all(&consumer, TOPIC, 1, COUNT, READ_TIMEOUT);
        drop(consumer);
        eprintln!(
            "kill {attempt}: leader {current} killed, broker {new_leader} leads after {} ms and \
             serves {} records",
            took.as_millis(),
            records.len()
        );
        assert_eq!(
            records.len(),
            COUNT,
            "records served by broker {new_leader}"
        );
        assert_holds(
            &records,
            &written,
            &format!("served by broker {new_leader}"),
        );
        served_by.push(new_leader);
        if new_leader == follower {
            break;
        }
        cluster.broker(current).restart();
        asked = new_leader;
    }
    if !served_by.contains(&follower) {
        eprintln!(
            "follower {follower} was never elected (leaders after the kills: {served_by:?}); \
             its copy was checked only through the ISR"
        );
    }
}

/// The partition's two followers killed at once: acks=all records through the surviving
/// leader are not acknowledged (each fails within message.timeout.ms, 5 s; metadata cannot
/// change either, the quorum being down to one voter). Both restarted, acks=all is
/// acknowledged again, and the log holds the records acknowledged before and after, once
/// each (the refused ones may be stored too: a failed produce is not a promise of absence).
#[test]
fn acks_all_is_refused_with_two_of_three_down_and_resumes_after_restart() {
    const TOPIC: &str = "two-down";
    const REFUSED: usize = 50;
    let _serial = serial();
    let mut cluster = start_cluster();
    create_replicated(&cluster, 1, TOPIC, 1, 3);
    let (p, _) = wait_in_sync(&cluster, 1, TOPIC);
    let leader = p[0].leader;
    let mut written = produce_acked(&cluster.bootstrap(), TOPIC, 1, "before", 100);

    let followers: Vec<i32> = ALL.iter().copied().filter(|id| *id != leader).collect();
    for f in &followers {
        cluster.broker(*f).kill9();
    }
    // Not idempotent: an idempotent producer first asks for a producer id, which may take the
    // controller's quorum (gone too), so it could fail for that rather than for acks=all.
    let producer = common::producer(
        &cluster.bootstrap_of(leader),
        &[
            ("message.timeout.ms", "5000"),
            ("request.timeout.ms", "3000"),
        ],
    );
    let sending_at = Instant::now();
    for i in 0..REFUSED {
        let payload = format!("down-{i}");
        common::send(
            &producer,
            BaseRecord::<(), String, usize>::with_opaque_to(TOPIC, i)
                .partition(0)
                .payload(&payload),
        );
    }
    // Every record gets its report within message.timeout.ms and a request's timeout; the
    // bound is generous for a slow machine.
    let flushed = producer.flush(Duration::from_secs(30));
    producer.poll(Duration::ZERO);
    let reported_ms = sending_at.elapsed().as_millis();
    let recorder = Arc::clone(producer.context());
    drop(producer);
    let failed = recorder.failed();
    eprintln!(
        "followers {followers:?} down: of {REFUSED} acks=all records, {} acknowledged, {} \
         failed (first: {:?}) within {reported_ms} ms; flush: {flushed:?}",
        recorder.acked_count(),
        failed.len(),
        failed.first()
    );
    assert_eq!(
        recorder.acked_count(),
        0,
        "acks=all acknowledged with two of three replicas down: {:?}",
        recorder.acked()
    );

    let restarted_at = Instant::now();
    for f in &followers {
        cluster.broker(*f).relaunch();
    }
    for f in &followers {
        cluster.broker(*f).wait_ready();
    }
    cluster.wait_for(leader, &ALL, Duration::from_secs(60));
    let after = produce_acked(&cluster.bootstrap(), TOPIC, 1, "after", 100);
    let writable_ms = restarted_at.elapsed().as_millis();
    wait_in_sync(&cluster, leader, TOPIC);
    let in_sync_ms = restarted_at.elapsed().as_millis();
    eprintln!(
        "followers restarted: acks=all acknowledged again within {writable_ms} ms, all three \
         in sync after {in_sync_ms} ms"
    );
    written.extend(after);

    let records = read_partition(&cluster.bootstrap(), TOPIC, written.len());
    let refused_stored = records
        .iter()
        .filter(|r| r.value_str().starts_with("down-"))
        .count();
    eprintln!(
        "{} records in the log: {} acknowledged, {refused_stored} of the refused ones",
        records.len(),
        written.len()
    );
    assert_holds(&records, &written, "after the restart");
}

/// A clean stop (SIGTERM) of the leader while an idempotent acks=all producer runs: the
/// broker hands its leadership over before it exits (controlled shutdown), so no delivery
/// fails, nothing acknowledged is lost or stored twice, and the producer pauses only briefly.
/// Twice, the stopped broker restarting and rejoining the ISR in between.
#[test]
fn a_clean_stop_of_the_leader_moves_leadership_first_and_fails_no_delivery() {
    const TOPIC: &str = "clean-stop";
    let _serial = serial();
    let mut cluster = start_cluster();
    create_replicated(&cluster, 1, TOPIC, 1, 3);
    wait_in_sync(&cluster, 1, TOPIC);
    let mut stream = Stream::start(&cluster.bootstrap(), TOPIC);
    let log = Arc::clone(&stream.log);
    let mut pauses = Vec::new();
    let mut stops = Vec::new();
    let mut asked = 1;
    for round in 0..2 {
        log.wait_for(
            log.acked_count() + 300,
            &format!("round {round}: records before the stop"),
        );
        let (p, _) = wait_in_sync(&cluster, asked, TOPIC);
        let leader = p[0].leader;
        let stopped_at = Instant::now();
        let first_after = stream.next_id_after_now();
        let status = cluster.broker(leader).terminate();
        stops.push(stopped_at.elapsed());
        assert!(status.success(), "broker {leader} stopped with {status}");
        asked = other_than(leader);
        let acked_again = loop {
            if let Some(at) = log.first_ack_from(first_after) {
                break at;
            }
            assert!(
                stopped_at.elapsed() < Duration::from_secs(30),
                "round {round}: nothing sent after stopping leader {leader} was acknowledged \
                 within 30 s; failed deliveries (first 5): {:?}",
                log.failed().iter().take(5).collect::<Vec<_>>()
            );
            thread::sleep(Duration::from_millis(5));
        };
        pauses.push(acked_again.saturating_duration_since(stopped_at));
        cluster.broker(leader).restart();
        wait_in_sync(&cluster, asked, TOPIC);
    }
    let sent = stream.finish();
    let acked = log.acked();
    let failed = log.failed();
    let records = read_partition(&cluster.bootstrap(), TOPIC, acked.len());
    let t = tally(&records, &acked);
    eprintln!(
        "clean stops: {sent} records sent, {} acknowledged, {} failed deliveries; SIGTERM -> \
         exit, ms: {:?}; SIGTERM -> next acknowledgement, ms: {:?}; lost {}, duplicated {}",
        acked.len(),
        failed.len(),
        ms(&stops),
        ms(&pauses),
        t.lost,
        t.duplicated
    );
    assert!(
        failed.is_empty(),
        "deliveries failed during clean stops: {:?}",
        failed.iter().take(5).collect::<Vec<_>>()
    );
    assert_eq!(t.lost, 0, "acknowledged records lost");
    assert_eq!(t.duplicated, 0, "records stored twice");
    assert_eq!(
        t.misplaced, 0,
        "records away from their acknowledged offset"
    );
}
