//! `tusk bench consume`: catch-up reads of a whole topic from its log start, the partitions
//! dealt out over consumer connections (one pinned thread each). Also the fetch helpers the e2e
//! consumer shares. Runs on: pinned bench threads. Invariants: only whole batches count; a
//! fetch that makes no progress on a partition below its end is retried, never counted.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;

use super::report::{new_histogram, Summary};
use super::{pin_thread, show_progress, BenchError, ConsumeArgs, Progress};
use crate::client::{ClientError, Connection};
use crate::protocol::record_batch::{self, BATCH_HEADER_BYTES};

pub fn run(args: &ConsumeArgs) -> Result<Summary, BenchError> {
    let common = &args.common;
    let mut admin = Connection::connect(&common.bootstrap, "tusk-bench")?;
    let partitions = admin
        .partition_count(&common.topic)?
        .ok_or_else(|| BenchError::Usage(format!("topic {} does not exist", common.topic)))?;
    let start = admin.list_offsets(&common.topic, partitions, -2)?;
    let end = admin.list_offsets(&common.topic, partitions, -1)?;
    let available: u64 = start
        .iter()
        .zip(&end)
        .map(|(s, e)| (e - s).max(0) as u64)
        .sum();
    let total = common.records.map_or(available, |n| n.min(available));
    let consumers = args.consumers.unwrap_or(partitions).clamp(1, partitions);
    let began = Instant::now();
    let deadline = common.duration.map(|d| began + d);
    let progress = Arc::new(Progress::default());
    let mut threads = Vec::new();
    for id in 0..consumers {
        let mine: Vec<(usize, i64, i64)> = (0..partitions)
            .filter(|p| p % consumers == id)
            .map(|p| (p, start[p], end[p]))
            .collect();
        let (progress, bootstrap, topic) = (
            progress.clone(),
            common.bootstrap.clone(),
            common.topic.clone(),
        );
        let fetch_bytes = args.fetch_bytes;
        threads.push(std::thread::spawn(move || {
            pin_thread(id);
            consumer(
                &bootstrap,
                &topic,
                mine,
                fetch_bytes,
                total,
                deadline,
                &progress,
            )
        }));
    }
    show_progress(
        &progress,
        Some(total),
        common.duration.unwrap_or_default(),
        common.quiet,
        || threads.iter().all(|t| t.is_finished()),
    );
    let mut latency = new_histogram();
    for t in threads {
        let h = t.join().expect("a consumer thread panicked")?;
        latency.add(&h).expect("histograms share their bounds");
    }
    let elapsed = began.elapsed();
    Ok(Summary::new(
        common.label.clone().unwrap_or_else(|| "consume".into()),
        "consume",
        progress.records.load(Ordering::Relaxed),
        progress.bytes.load(Ordering::Relaxed),
        elapsed,
        &latency,
        progress.errors.load(Ordering::Relaxed),
    ))
}

/// Reads `mine` (partition, from, end) until each reaches its end, the run has `total`
/// records, or the deadline passes. Records the latency of each fetch.
fn consumer(
    bootstrap: &str,
    topic: &str,
    mut mine: Vec<(usize, i64, i64)>,
    fetch_bytes: i32,
    total: u64,
    deadline: Option<Instant>,
    progress: &Progress,
) -> Result<Histogram<u64>, BenchError> {
    let mut conn = Connection::connect(bootstrap, "tusk-bench-consume")?;
    let mut hist = new_histogram();
    loop {
        mine.retain(|(_, from, end)| from < end);
        if mine.is_empty()
            || progress.records.load(Ordering::Relaxed) >= total
            || deadline.is_some_and(|d| Instant::now() >= d)
        {
            return Ok(hist);
        }
        let wanted: Vec<(usize, i64)> = mine.iter().map(|(p, from, _)| (*p, *from)).collect();
        let sent = Instant::now();
        let fetched = fetch_once(&mut conn, topic, &wanted, fetch_bytes, 500)?;
        hist.saturating_record((sent.elapsed().as_micros() as u64).max(1));
        for (partition, records) in fetched {
            let entry = mine
                .iter_mut()
                .find(|(p, _, _)| *p == partition)
                .expect("a fetched partition was asked for");
            if let Some(next) = batches_end(&records) {
                if next > entry.1 {
                    progress.add((next - entry.1) as u64, records.len() as u64);
                    entry.1 = next;
                }
            }
        }
    }
}

/// One fetch of `wanted` (partition, offset); returns the record bytes per partition.
pub fn fetch_once(
    conn: &mut Connection,
    topic: &str,
    wanted: &[(usize, i64)],
    partition_max_bytes: i32,
    max_wait_ms: i32,
) -> Result<Vec<(usize, Bytes)>, BenchError> {
    Ok(conn.fetch(topic, wanted, partition_max_bytes, max_wait_ms)?)
}

/// The offset after the last whole batch in `records`, if there is one.
pub fn batches_end(records: &[u8]) -> Option<i64> {
    let mut at = 0usize;
    let mut next = None;
    while at + BATCH_HEADER_BYTES <= records.len() {
        let header = record_batch::parse_header(&records[at..], usize::MAX, false).ok()?;
        if at + header.total_bytes > records.len() {
            break;
        }
        next = Some(header.last_offset().0 + 1);
        at += header.total_bytes;
    }
    next
}

/// Calls `f(value)` for each record at or after `from` in the whole batches of `records`
/// (compressed ones decompressed); returns the offset after the last whole batch.
pub fn for_each_value(
    records: &Bytes,
    from: i64,
    mut f: impl FnMut(&[u8]),
) -> Result<i64, BenchError> {
    let bad = |why: String| BenchError::Client(ClientError::Protocol(why));
    let mut at = 0usize;
    let mut next = from;
    while at + BATCH_HEADER_BYTES <= records.len() {
        let header = record_batch::parse_header(&records[at..], usize::MAX, false)
            .map_err(|e| bad(format!("fetched batch: {e:?}")))?;
        let end = at + header.total_bytes;
        if end > records.len() {
            break;
        }
        let batch = records.slice(at..end);
        if header.attributes & 0x07 == 0 {
            record_batch::for_each_record(&batch, &header, |offset, _, value| {
                if offset.0 >= from {
                    f(value.unwrap_or_default());
                }
            });
        } else {
            let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut batch.clone())
                .map_err(|e| bad(format!("fetched batch: {e}")))?;
            for r in set.records.iter().filter(|r| r.offset >= from) {
                f(r.value.as_deref().unwrap_or_default());
            }
        }
        next = header.last_offset().0 + 1;
        at = end;
    }
    Ok(next)
}

/// How long a fetch waits at most when nothing is new (the broker answers earlier on data).
pub const FETCH_WAIT: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch_builder::BatchBuilder;
    use kafka_protocol::records::Compression;

    fn stored(base: i64, values: &[&[u8]], compression: Compression) -> Vec<u8> {
        let mut b = BatchBuilder::new(compression, 256);
        for v in values {
            b.push(0, None, Some(v));
        }
        let mut batch = b.finish().to_vec();
        batch[..8].copy_from_slice(&base.to_be_bytes());
        batch
    }

    #[test]
    fn values_at_or_after_the_offset_are_visited_and_torn_tails_ignored() {
        let mut records = stored(10, &[b"a", b"b"], Compression::None);
        records.extend(stored(12, &[b"c", b"d"], Compression::Lz4));
        let whole = records.len();
        records.extend(stored(14, &[b"e"], Compression::None));
        records.truncate(whole + 20);
        let records = Bytes::from(records);
        let mut seen = Vec::new();
        let next = for_each_value(&records, 11, |v| seen.push(v.to_vec())).unwrap();
        assert_eq!(seen, vec![b"b".to_vec(), b"c".to_vec(), b"d".to_vec()]);
        assert_eq!(next, 14, "the torn batch at 14 is not counted");
        assert_eq!(batches_end(&records), Some(14));
        assert_eq!(batches_end(&records[..30]), None);
    }
}
