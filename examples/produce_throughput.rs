//! Produce throughput of an rdkafka (bundled librdkafka) producer against a running broker:
//! `cargo run --release --example produce_throughput -- BOOTSTRAP TOPIC RECORDS RECORD_BYTES`.
//! Prints records/s and MB/s of acknowledged records (acks=all, no compression). The fuller
//! load generator is `tusk bench` (issue 4); this is the first number.

use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicU64, Ordering};

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;

/// Counts failed deliveries, so a throughput figure never hides lost records.
#[derive(Default)]
struct Failures(AtomicU64);

impl ClientContext for Failures {}

impl ProducerContext for Failures {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if result.is_err() {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bootstrap = args.get(1).map(String::as_str).unwrap_or("127.0.0.1:9092");
    let topic = args.get(2).map(String::as_str).unwrap_or("throughput");
    let records: usize = args
        .get(3)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let record_bytes: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(1024);
    let producer: BaseProducer<Failures> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("queue.buffering.max.messages", "1000000")
        .create_with_context(Failures::default())
        .expect("producer");
    let payload = vec![b'x'; record_bytes];
    // Warm up: metadata and topic creation.
    producer
        .send(BaseRecord::<(), _>::to(topic).payload(&payload))
        .expect("send");
    producer
        .flush(Duration::from_secs(30))
        .expect("warm-up flush");
    let start = Instant::now();
    for i in 0..records {
        let key = (i % 1024).to_string();
        let mut record = BaseRecord::to(topic).payload(&payload).key(&key);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(1));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
    let secs = start.elapsed().as_secs_f64();
    let bytes = (records * record_bytes) as f64;
    let failed = producer.context().0.load(Ordering::Relaxed);
    assert_eq!(failed, 0, "{failed} deliveries failed");
    println!(
        "records={records} record_bytes={record_bytes} seconds={secs:.2} records_per_sec={:.0} MB_per_sec={:.1}",
        records as f64 / secs,
        bytes / secs / 1e6
    );
}
