//! What a real client sees: librdkafka (the rdkafka crate) producing with `linger.ms=0`, so
//! about one small request per record, paced at `--rate` records/s (or unpaced), optionally
//! consumed at once for the end-to-end latency. Writes the same JSON as `tusk bench --json`,
//! so `scripts/bench-compare.sh` reads both alike.
//!
//! `cargo run --release --example rdkafka_latency -- --bootstrap B --topic T --rate 2000`
//!
//! Invariants: at a fixed rate a record's latency is measured from its intended send time
//! (start + i / rate), so a broker that stalls the client cannot hide the stall (coordinated
//! omission); unpaced, from the moment it was handed to librdkafka. The end-to-end latency runs
//! from that same time to the moment the consumer has the record; the time travels in the
//! record's first 8 value bytes.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tusk::bench::report::{new_histogram, Summary};

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    #[arg(long, default_value = "rdkafka-latency")]
    topic: String,
    /// Partitions the topic has (records go round robin over them); the topic must exist
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Records per second; 0 sends as fast as librdkafka takes them
    #[arg(long, default_value_t = 2000.0)]
    rate: f64,
    /// Seconds to produce
    #[arg(long, default_value_t = 10.0)]
    duration_s: f64,
    #[arg(long, default_value_t = 1024)]
    record_bytes: usize,
    /// enable.idempotence (librdkafka then keeps at most 5 requests in flight)
    #[arg(long)]
    idempotence: bool,
    /// Also consume, and report the latency from send to consumption
    #[arg(long)]
    e2e: bool,
    #[arg(long, default_value = "all")]
    acks: String,
    #[arg(long, default_value = "rdkafka")]
    label: String,
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The producer's delivery callbacks run on the ThreadedProducer's polling thread.
struct Deliveries {
    epoch: Instant,
    acked: Mutex<Histogram<u64>>,
    records: AtomicU64,
    errors: AtomicU64,
    /// When the last acknowledgement came, ns since the epoch.
    last_ack_ns: AtomicU64,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    /// The record's intended send time, ns since the epoch.
    type DeliveryOpaque = usize;
    fn delivery(&self, result: &DeliveryResult<'_>, intended_ns: usize) {
        if result.is_err() {
            self.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let now_ns = self.epoch.elapsed().as_nanos() as u64;
        let us = now_ns.saturating_sub(intended_ns as u64) / 1000;
        let mut hist = self.acked.lock().expect("histogram lock");
        let _ = hist.record(us.max(1));
        self.records.fetch_add(1, Ordering::Relaxed);
        self.last_ack_ns.fetch_max(now_ns, Ordering::Relaxed);
    }
}

fn main() {
    let args = Args::parse();
    if !(args.rate >= 0.0 && args.rate.is_finite()) || args.partitions < 1 || args.record_bytes < 8
    {
        eprintln!("--rate must be >= 0, --partitions >= 1 and --record-bytes >= 8");
        std::process::exit(2);
    }
    let epoch = Instant::now();
    let context = Deliveries {
        epoch,
        acked: Mutex::new(new_histogram()),
        records: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        last_ack_ns: AtomicU64::new(0),
    };
    let producer: ThreadedProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .set("acks", &args.acks)
        .set("linger.ms", "0")
        .set("enable.idempotence", args.idempotence.to_string())
        .set("compression.type", "none")
        .set("queue.buffering.max.messages", "1000000")
        .set("message.timeout.ms", "60000")
        .create_with_context(context)
        .unwrap_or_else(|e| fail(&format!("producer: {e}")));

    let stop = Arc::new(AtomicBool::new(false));
    let consumer = args.e2e.then(|| start_consumer(&args, epoch, stop.clone()));

    // Steady state is what is measured: metadata, connections and (idempotent) the producer
    // id are set up by one record per partition first, outside the clock and the counts.
    warm_up(&producer, &args);
    let start = epoch.elapsed();
    let sent = produce(&producer, &args, epoch, start.as_nanos() as u64);
    if producer.flush(Duration::from_secs(60)).is_err() {
        eprintln!("flush: records still unacknowledged after 60 s");
    }
    // Until the last ack: unpaced, librdkafka takes records far faster than the broker acks.
    let context = producer.context();
    let last_ack = Duration::from_nanos(context.last_ack_ns.load(Ordering::Relaxed));
    let produce_elapsed = last_ack.saturating_sub(start);
    let acked = context.records.load(Ordering::Relaxed);
    let errors = context.errors.load(Ordering::Relaxed) + sent.saturating_sub(acked);
    let hist = context.acked.lock().expect("histogram lock").clone();
    let mode = if args.idempotence {
        "rdkafka produce, idempotent"
    } else {
        "rdkafka produce"
    };
    let bytes = acked * args.record_bytes as u64;
    let mut summaries = vec![Summary::new(
        args.label.clone(),
        mode,
        acked,
        bytes,
        produce_elapsed,
        &hist,
        errors,
    )];
    if let Some(consumer) = consumer {
        // The consumer has until 10 s after the last ack to see every record.
        let deadline = Instant::now() + Duration::from_secs(10);
        while consumer.1.load(Ordering::Relaxed) < acked && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::Relaxed);
        let hist = consumer.0.join().expect("consumer thread");
        let seen = hist.len();
        summaries.push(Summary::new(
            format!("{} e2e", args.label),
            "rdkafka e2e",
            seen,
            seen * args.record_bytes as u64,
            produce_elapsed,
            &hist,
            acked.saturating_sub(seen),
        ));
    }
    for s in &summaries {
        print!("{}", s.table());
    }
    // On a small machine the client's own CPU bounds what the broker can be given.
    println!("client CPU: {:.2} s", process_cpu_s());
    if let Some(path) = &args.json {
        let last = summaries.last().expect("one summary at least");
        let text = serde_json::to_string_pretty(last).expect("summary serializes");
        std::fs::write(path, text).unwrap_or_else(|e| fail(&format!("{}: {e}", path.display())));
        if summaries.len() == 2 {
            let produce_path = path.with_extension("produce.json");
            let text = serde_json::to_string_pretty(&summaries[0]).expect("summary serializes");
            std::fs::write(&produce_path, text)
                .unwrap_or_else(|e| fail(&format!("{}: {e}", produce_path.display())));
        }
    }
    if errors > 0 {
        std::process::exit(1);
    }
}

/// One record per partition, acknowledged, then the counters start from zero.
fn warm_up(producer: &ThreadedProducer<Deliveries>, args: &Args) {
    // The consumer skips records stamped u64::MAX.
    let mut value = vec![0u8; args.record_bytes];
    value[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    for partition in 0..args.partitions {
        let record = BaseRecord::<(), [u8], usize>::with_opaque_to(&args.topic, 0)
            .partition(partition)
            .payload(&value[..]);
        if let Err((e, _)) = producer.send(record) {
            fail(&format!("warm-up send: {e}"));
        }
    }
    if producer.flush(Duration::from_secs(30)).is_err() {
        fail("warm-up records unacknowledged after 30 s");
    }
    let context = producer.context();
    if context.errors.load(Ordering::Relaxed) > 0 {
        fail("warm-up records failed");
    }
    context.records.store(0, Ordering::Relaxed);
    context.acked.lock().expect("histogram lock").reset();
}

/// Sends records on schedule until the duration is over; returns how many were handed over.
fn produce(
    producer: &ThreadedProducer<Deliveries>,
    args: &Args,
    epoch: Instant,
    start_ns: u64,
) -> u64 {
    let mut value = vec![b'x'; args.record_bytes];
    let interval_ns = (args.rate > 0.0).then(|| 1e9 / args.rate);
    let end_ns = start_ns + (args.duration_s * 1e9) as u64;
    let mut sent = 0u64;
    loop {
        let intended_ns = match interval_ns {
            Some(step) => start_ns + (sent as f64 * step) as u64,
            None => epoch.elapsed().as_nanos() as u64,
        };
        if intended_ns >= end_ns {
            return sent;
        }
        wait_until(epoch, intended_ns);
        value[..8].copy_from_slice(&intended_ns.to_le_bytes());
        let partition = (sent % args.partitions as u64) as i32;
        let mut record =
            BaseRecord::<(), [u8], usize>::with_opaque_to(&args.topic, intended_ns as usize)
                .partition(partition)
                .payload(&value[..]);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_micros(100));
                }
                Err((e, _)) => fail(&format!("send: {e}")),
            }
        }
        sent += 1;
    }
}

/// Sleeps until `ns` after the epoch. No spinning: on a small machine a spinning client
/// takes the CPU the broker needs; the sleep's overshoot counts against the broker, never
/// for it, since latency runs from the intended time.
fn wait_until(epoch: Instant, ns: u64) {
    let now = epoch.elapsed().as_nanos() as u64;
    if ns > now {
        std::thread::sleep(Duration::from_nanos(ns - now));
    }
}

type ConsumerHandle = (std::thread::JoinHandle<Histogram<u64>>, Arc<AtomicU64>);

/// A consumer assigned every partition at its end, recording send → consume latency.
fn start_consumer(args: &Args, epoch: Instant, stop: Arc<AtomicBool>) -> ConsumerHandle {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .set("group.id", "rdkafka-latency")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap_or_else(|e| fail(&format!("consumer: {e}")));
    // Start at each partition's current end, read from the broker, so the consumer neither
    // skips early records nor replays older ones.
    let mut assignment = TopicPartitionList::new();
    for p in 0..args.partitions {
        let (_, high) = consumer
            .fetch_watermarks(&args.topic, p, Duration::from_secs(10))
            .unwrap_or_else(|e| fail(&format!("watermarks of partition {p}: {e}")));
        assignment
            .add_partition_offset(&args.topic, p, Offset::Offset(high))
            .unwrap_or_else(|e| fail(&format!("assign: {e}")));
    }
    consumer
        .assign(&assignment)
        .unwrap_or_else(|e| fail(&format!("assign: {e}")));
    let seen = Arc::new(AtomicU64::new(0));
    let seen_in = seen.clone();
    let handle = std::thread::spawn(move || {
        let mut hist = new_histogram();
        while !stop.load(Ordering::Relaxed) {
            let Some(message) = consumer.poll(Duration::from_millis(50)) else {
                continue;
            };
            let Ok(message) = message else { continue };
            let now_ns = epoch.elapsed().as_nanos() as u64;
            if let Some(sent_ns) = message
                .payload()
                .and_then(|p| p.get(..8))
                .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
                .filter(|ns| *ns != u64::MAX)
            {
                let _ = hist.record((now_ns.saturating_sub(sent_ns) / 1000).max(1));
                seen_in.fetch_add(1, Ordering::Relaxed);
            }
        }
        hist
    });
    (handle, seen)
}

/// User + system CPU seconds of this process so far.
fn process_cpu_s() -> f64 {
    // SAFETY: getrusage fills a struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return f64::NAN;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

fn fail(why: &str) -> ! {
    eprintln!("rdkafka_latency: {why}");
    std::process::exit(2);
}
