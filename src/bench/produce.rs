//! `tusk bench produce` and `tusk bench e2e`: producer connections, each a sender thread that
//! builds batches on schedule and a receiver thread that matches responses and records latency;
//! for e2e, one consumer thread that records the latency from intended send to consumption.
//! Runs on: pinned bench threads. Invariants: at most `--in-flight` requests per connection are
//! unanswered; every record's intended send time travels in its first 8 value bytes (nanoseconds
//! since the run's epoch) so the e2e consumer measures the whole path.

use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::records::Compression;

use super::consume::{fetch_once, for_each_value};
use super::report::{new_histogram, Summary};
use super::{pin_thread, show_progress, BenchError, LoadArgs, Progress, DEFAULT_DURATION};
use crate::client::{read_response, topic_name, Connection};
use crate::placement::fnv1a_32;
use crate::protocol::batch_builder::{parse_compression, BatchBuilder};

/// What every producer thread is told.
struct Plan {
    bootstrap: String,
    topic: String,
    partitions: usize,
    record_bytes: usize,
    keys: u64,
    acks: i16,
    compression: Compression,
    batch_bytes: usize,
    linger_ns: u64,
    in_flight: usize,
    /// Nanoseconds between this producer's records at a fixed rate.
    interval_ns: Option<f64>,
    deadline: Option<Instant>,
    epoch: Instant,
    /// Records carry their send time for the e2e consumer, so none may be reused.
    e2e: bool,
}

/// Intended send times (ns since the epoch) as runs: (time, records).
type Runs = Vec<(u64, u32)>;

fn push_run(runs: &mut Runs, t: u64) {
    match runs.last_mut() {
        Some((last, n)) if *last == t => *n += 1,
        _ => runs.push((t, 1)),
    }
}

/// One produce request waiting for its answer: per partition, its records' intended times.
struct Pending {
    parts: Vec<(i32, Runs)>,
}

/// How long a full-speed producer reuses one encoded batch before building a fresh one.
const TEMPLATE_REFRESH: Duration = Duration::from_millis(100);

pub fn run(args: &LoadArgs, e2e: bool) -> Result<Summary, BenchError> {
    let acks = match args.acks.as_str() {
        "0" => 0,
        "1" => 1,
        "all" | "-1" => -1,
        other => return Err(usage(format!("--acks: `{other}` is not 0, 1 or all"))),
    };
    let compression = parse_compression(&args.compression).ok_or_else(|| {
        usage(format!(
            "--compression: `{}` is not none, gzip, snappy, lz4 or zstd",
            args.compression
        ))
    })?;
    if args.producers == 0
        || args.in_flight == 0
        || args.partitions < 1
        || args.records_per_request == Some(0)
    {
        return Err(usage(
            "--producers, --in-flight, --partitions and --records-per-request must be at least 1"
                .into(),
        ));
    }
    // A request closes once its bytes reach batch_bytes: n records of record_bytes each.
    let batch_bytes = match args.records_per_request {
        Some(n) => n.saturating_mul(args.record_bytes.max(1)),
        None => args.batch_bytes.max(args.record_bytes),
    };
    if e2e && (args.record_bytes < 8 || acks == 0) {
        return Err(usage(
            "e2e needs --record-bytes of at least 8 (the send time travels in the value) and acks 1 or all"
                .into(),
        ));
    }
    if let Some(rate) = args.rate {
        if !(rate > 0.0 && rate.is_finite()) {
            return Err(usage(format!("--rate: `{rate}` is not a positive number")));
        }
    }
    let common = &args.common;
    let mut admin = Connection::connect(&common.bootstrap, "tusk-bench")?;
    let partitions = admin.ensure_topic(&common.topic, args.partitions)?;
    let start_offsets = admin.list_offsets(&common.topic, partitions, -1)?;
    let epoch = Instant::now();
    let duration = common.duration.unwrap_or(DEFAULT_DURATION);
    let total = common.records.or_else(|| {
        args.rate
            .map(|r| (r * duration.as_secs_f64()).ceil() as u64)
    });
    let plan = Arc::new(Plan {
        bootstrap: common.bootstrap.clone(),
        topic: common.topic.clone(),
        partitions,
        record_bytes: args.record_bytes,
        keys: args.keys,
        acks,
        compression,
        batch_bytes,
        linger_ns: (args.linger_ms.max(0.0) * 1e6) as u64,
        in_flight: args.in_flight,
        interval_ns: args.rate.map(|r| 1e9 * args.producers as f64 / r),
        deadline: total.is_none().then(|| epoch + duration),
        epoch,
        e2e,
    });
    let progress = Arc::new(Progress::default());
    let producers_done = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for id in 0..args.producers {
        let quota = total.map(|n| {
            n / args.producers as u64 + u64::from((id as u64) < n % args.producers as u64)
        });
        let (plan, progress) = (plan.clone(), progress.clone());
        threads.push(std::thread::spawn(move || {
            producer(id, quota, &plan, &progress)
        }));
    }
    let consumer = e2e.then(|| {
        let (plan, progress, done) = (plan.clone(), progress.clone(), producers_done.clone());
        std::thread::spawn(move || e2e_consumer(&plan, start_offsets, &progress, &done))
    });
    show_progress(&progress, total, duration, common.quiet, || {
        threads.iter().all(|t| t.is_finished())
    });
    let mut latency = new_histogram();
    let mut first_error = None;
    for t in threads {
        match t.join().expect("a producer thread panicked") {
            Ok(h) => latency.add(&h).expect("histograms share their bounds"),
            Err(e) => first_error = first_error.or(Some(e)),
        }
    }
    let elapsed = epoch.elapsed();
    producers_done.store(true, Ordering::Release);
    if let Some(e) = first_error {
        return Err(e);
    }
    let produced = progress.records.load(Ordering::Relaxed);
    let errors = progress.errors.load(Ordering::Relaxed);
    let (records, latency, elapsed, mode) = match consumer {
        Some(c) => {
            let (hist, consumed, last) = c.join().expect("the e2e consumer panicked")?;
            (consumed, hist, last.max(elapsed), "e2e")
        }
        None => (produced, latency, elapsed, "produce"),
    };
    Ok(Summary::new(
        common.label.clone().unwrap_or_else(|| mode.to_string()),
        mode,
        records,
        records * args.record_bytes as u64,
        elapsed,
        &latency,
        errors,
    ))
}

fn usage(why: String) -> BenchError {
    BenchError::Usage(why)
}

/// One producer connection: this thread sends, a second one receives.
fn producer(
    id: usize,
    quota: Option<u64>,
    plan: &Plan,
    progress: &Arc<Progress>,
) -> Result<Histogram<u64>, BenchError> {
    pin_thread(id);
    let mut conn = Connection::connect(&plan.bootstrap, "tusk-bench")?;
    let version = conn.versions.produce;
    // Rendezvous at in_flight 1: the receiver holds one request, the channel the rest.
    let (tx, rx) = crossbeam::channel::bounded::<Pending>(plan.in_flight - 1);
    let receiver = (plan.acks != 0).then(|| {
        let stream = conn.try_clone_stream();
        let (progress, record_bytes, epoch) = (progress.clone(), plan.record_bytes, plan.epoch);
        std::thread::spawn(move || {
            pin_thread(id + 1);
            receive(stream?, rx, version, record_bytes, epoch, &progress)
        })
    });
    let sent = if plan.interval_ns.is_none() && plan.keys == 0 && !plan.e2e {
        send_loop_reusing(id, quota, plan, &mut conn, &tx, progress)
    } else {
        send_loop(id, quota, plan, &mut conn, &tx, progress)
    };
    drop(tx);
    let hist = match receiver {
        Some(r) => r.join().expect("a receiver thread panicked")?,
        None => new_histogram(),
    };
    sent?;
    Ok(hist)
}

fn send_loop(
    id: usize,
    quota: Option<u64>,
    plan: &Plan,
    conn: &mut Connection,
    tx: &crossbeam::channel::Sender<Pending>,
    progress: &Progress,
) -> Result<(), BenchError> {
    let version = conn.versions.produce;
    let per_partition = (plan.batch_bytes / plan.partitions).max(plan.record_bytes);
    let mut builders: Vec<BatchBuilder> = (0..plan.partitions)
        .map(|_| BatchBuilder::new(plan.compression, per_partition + 1024))
        .collect();
    let mut intended: Vec<Runs> = vec![Vec::new(); plan.partitions];
    let mut value = filler(plan.record_bytes, id as u64);
    let mut key = KeyBuf::default();
    let (mut seq, mut open_bytes, mut first_open_ns) = (0u64, 0usize, 0u64);
    let mut sticky = id % plan.partitions;
    // Fixed-rate producers start staggered so their records interleave evenly.
    let offset_ns = plan.interval_ns.map_or(0.0, |iv| iv * id as f64 / 8.0);
    loop {
        let now_ns = plan.epoch.elapsed().as_nanos() as u64;
        let exhausted = quota.is_some_and(|q| seq >= q)
            || plan.deadline.is_some_and(|d| Instant::now() >= d)
            || progress.stop.load(Ordering::Relaxed);
        let mut next_due_ns = now_ns;
        while !exhausted && open_bytes < plan.batch_bytes && quota.is_none_or(|q| seq < q) {
            let due_ns = match plan.interval_ns {
                Some(iv) => (offset_ns + seq as f64 * iv) as u64,
                None => now_ns,
            };
            if due_ns > now_ns {
                next_due_ns = due_ns;
                break;
            }
            let (p, k) = if plan.keys > 0 {
                let k = key.set(seq % plan.keys);
                ((fnv1a_32(k) as usize) % plan.partitions, Some(k))
            } else {
                (sticky, None)
            };
            if plan.record_bytes >= 8 {
                value[..8].copy_from_slice(&due_ns.to_be_bytes());
            }
            if open_bytes == 0 {
                first_open_ns = due_ns;
            }
            builders[p].push(wall_clock_ms(), k, Some(&value));
            push_run(&mut intended[p], due_ns);
            open_bytes += plan.record_bytes + k.map_or(0, |k| k.len());
            seq += 1;
        }
        let linger_over = first_open_ns + plan.linger_ns <= now_ns;
        if open_bytes > 0
            && (open_bytes >= plan.batch_bytes
                || plan.interval_ns.is_none()
                || linger_over
                || exhausted)
        {
            let parts = builders
                .iter_mut()
                .zip(intended.iter_mut())
                .enumerate()
                .filter(|(_, (b, _))| !b.is_empty())
                .map(|(p, (b, runs))| (p as i32, b.finish(), std::mem::take(runs)))
                .collect();
            send(plan, conn, version, parts, tx, progress)?;
            open_bytes = 0;
            sticky = (sticky + 1) % plan.partitions;
            continue;
        }
        if exhausted || quota.is_some_and(|q| seq >= q) {
            return Ok(());
        }
        let wake_ns = if open_bytes > 0 {
            next_due_ns.min(first_open_ns + plan.linger_ns)
        } else {
            next_due_ns
        };
        let now_ns = plan.epoch.elapsed().as_nanos() as u64;
        if wake_ns > now_ns {
            std::thread::sleep(Duration::from_nanos(wake_ns - now_ns));
        }
    }
}

/// At full speed without keys the client must not be what limits the run: one encoded batch
/// (`--batch-bytes` of records) is sent again and again, rebuilt with fresh timestamps every
/// `TEMPLATE_REFRESH`, each request to the next partition. The broker does all its work per
/// request as usual (CRC check, offsets, copy, write); latency is measured from the send.
fn send_loop_reusing(
    id: usize,
    quota: Option<u64>,
    plan: &Plan,
    conn: &mut Connection,
    tx: &crossbeam::channel::Sender<Pending>,
    progress: &Progress,
) -> Result<(), BenchError> {
    let version = conn.versions.produce;
    let per_batch = (plan.batch_bytes / plan.record_bytes.max(1)).max(1) as u64;
    let value = filler(plan.record_bytes, id as u64);
    let mut builder = BatchBuilder::new(plan.compression, plan.batch_bytes + 1024);
    let mut template: Option<(bytes::Bytes, u64, Instant)> = None;
    let (mut sent, mut partition) = (0u64, id % plan.partitions);
    loop {
        let left = quota.map_or(u64::MAX, |q| q - sent);
        if left == 0
            || plan.deadline.is_some_and(|d| Instant::now() >= d)
            || progress.stop.load(Ordering::Relaxed)
        {
            return Ok(());
        }
        let count = per_batch.min(left);
        let stale = template
            .as_ref()
            .is_none_or(|(_, n, built)| *n != count || built.elapsed() > TEMPLATE_REFRESH);
        if stale {
            let ms = wall_clock_ms();
            for _ in 0..count {
                builder.push(ms, None, Some(&value));
            }
            template = Some((builder.finish(), count, Instant::now()));
        }
        let (batch, count, _) = template.as_ref().expect("built above");
        let now_ns = plan.epoch.elapsed().as_nanos() as u64;
        let parts = vec![(
            partition as i32,
            batch.clone(),
            vec![(now_ns, *count as u32)],
        )];
        send(plan, conn, version, parts, tx, progress)?;
        sent += count;
        partition = (partition + 1) % plan.partitions;
    }
}

/// Sends the given batches as one produce request.
fn send(
    plan: &Plan,
    conn: &mut Connection,
    version: i16,
    batches: Vec<(i32, bytes::Bytes, Runs)>,
    tx: &crossbeam::channel::Sender<Pending>,
    progress: &Progress,
) -> Result<(), BenchError> {
    let mut data = Vec::with_capacity(batches.len());
    let mut parts = Vec::with_capacity(batches.len());
    for (p, batch, runs) in batches {
        data.push(
            PartitionProduceData::default()
                .with_index(p)
                .with_records(Some(batch)),
        );
        parts.push((p, runs));
    }
    let request = ProduceRequest::default()
        .with_acks(plan.acks)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name(&plan.topic))
            .with_partition_data(data)]);
    let frame = conn.encode(&request, version)?;
    if plan.acks == 0 {
        let records: usize = parts
            .iter()
            .flat_map(|(_, runs)| runs.iter().map(|(_, n)| *n as usize))
            .sum();
        conn.write_frame(&frame)?;
        progress.add(records as u64, (records * plan.record_bytes) as u64);
        return Ok(());
    }
    // Queued before it is written, so the receiver always finds the request it reads.
    if tx.send(Pending { parts }).is_err() {
        return Err(BenchError::Usage(
            "the receiver stopped (connection lost)".into(),
        ));
    }
    conn.write_frame(&frame)?;
    Ok(())
}

/// Matches responses to the pending requests in order and records the ack latency.
fn receive(
    mut stream: TcpStream,
    pending: crossbeam::channel::Receiver<Pending>,
    version: i16,
    record_bytes: usize,
    epoch: Instant,
    progress: &Progress,
) -> Result<Histogram<u64>, BenchError> {
    let mut hist = new_histogram();
    while let Ok(request) = pending.recv() {
        let (_, response): (i32, ProduceResponse) = read_response(&mut stream, version)?;
        let now_ns = epoch.elapsed().as_nanos() as u64;
        for (partition, runs) in request.parts {
            let records: u64 = runs.iter().map(|(_, n)| *n as u64).sum();
            let code = response
                .responses
                .iter()
                .flat_map(|t| t.partition_responses.iter())
                .find(|r| r.index == partition)
                .map_or(-1, |r| r.error_code);
            if code != 0 {
                progress.errors.fetch_add(records, Ordering::Relaxed);
                continue;
            }
            record_latencies(&mut hist, now_ns, &runs);
            progress.add(records, records * record_bytes as u64);
        }
    }
    Ok(hist)
}

/// Records `now - t` for each record of each run.
pub fn record_latencies(hist: &mut Histogram<u64>, now_ns: u64, runs: &[(u64, u32)]) {
    for (t, n) in runs {
        let micros = (now_ns.saturating_sub(*t) / 1000).max(1);
        hist.saturating_record_n(micros, *n as u64);
    }
}

/// The e2e consumer: reads from the log end at the start; returns (latency, records, elapsed).
fn e2e_consumer(
    plan: &Plan,
    start_offsets: Vec<i64>,
    progress: &Progress,
    producers_done: &AtomicBool,
) -> Result<(Histogram<u64>, u64, Duration), BenchError> {
    pin_thread(plan.partitions + 1);
    let mut conn = Connection::connect(&plan.bootstrap, "tusk-bench-e2e")?;
    let mut offsets = start_offsets;
    let mut hist = new_histogram();
    let consumed = AtomicU64::new(0);
    let mut grace: Option<Instant> = None;
    loop {
        let wanted: Vec<(usize, i64)> = offsets.iter().copied().enumerate().collect();
        let wait_ms = super::consume::FETCH_WAIT.as_millis() as i32;
        let fetched = fetch_once(&mut conn, &plan.topic, &wanted, 4 << 20, wait_ms)?;
        let now_ns = plan.epoch.elapsed().as_nanos() as u64;
        for (partition, records) in fetched {
            let from = offsets[partition];
            let next = for_each_value(&records, from, |value| {
                if let Some(t) = value.get(..8) {
                    let t = u64::from_be_bytes(t.try_into().expect("8 bytes"));
                    hist.saturating_record((now_ns.saturating_sub(t) / 1000).max(1));
                    consumed.fetch_add(1, Ordering::Relaxed);
                }
            })?;
            offsets[partition] = next.max(from);
        }
        if producers_done.load(Ordering::Acquire) {
            let produced = progress.records.load(Ordering::Relaxed);
            if consumed.load(Ordering::Relaxed) >= produced {
                break;
            }
            // Records produced but never seen within 10 s count as errors.
            let g = *grace.get_or_insert_with(Instant::now);
            if g.elapsed() > Duration::from_secs(10) {
                let missing = produced - consumed.load(Ordering::Relaxed);
                progress.errors.fetch_add(missing, Ordering::Relaxed);
                break;
            }
        }
    }
    Ok((hist, consumed.into_inner(), plan.epoch.elapsed()))
}

use crate::client::wall_clock_ms;

/// A value of `len` pseudo-random bytes (xorshift), different per producer.
fn filler(len: usize, seed: u64) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (seed + 1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Formats `key-<n>` without allocating.
#[derive(Default)]
struct KeyBuf {
    bytes: [u8; 24],
    len: usize,
}

impl KeyBuf {
    fn set(&mut self, n: u64) -> &[u8] {
        let mut digits = [0u8; 20];
        let (mut n, mut d) = (n, 0);
        loop {
            digits[d] = b'0' + (n % 10) as u8;
            d += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.bytes[..4].copy_from_slice(b"key-");
        for i in 0..d {
            self.bytes[4 + i] = digits[d - 1 - i];
        }
        self.len = 4 + d;
        &self.bytes[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_format_like_key_n() {
        let mut k = KeyBuf::default();
        assert_eq!(k.set(0), b"key-0");
        assert_eq!(k.set(1234567), b"key-1234567");
    }

    #[test]
    fn latencies_are_recorded_per_record() {
        let mut h = new_histogram();
        let mut runs = Vec::new();
        for t in [1_000_000, 1_000_000, 5_000_000] {
            push_run(&mut runs, t);
        }
        assert_eq!(runs, vec![(1_000_000, 2), (5_000_000, 1)]);
        record_latencies(&mut h, 10_000_000, &runs);
        assert_eq!(h.len(), 3);
        assert!(
            h.equivalent(h.value_at_quantile(0.5), 9000),
            "two records waited 9 ms"
        );
        assert!(h.equivalent(h.min(), 5000), "one waited 5 ms");
        assert!(h.equivalent(h.max(), 9000));
    }
}
