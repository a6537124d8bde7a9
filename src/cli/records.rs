//! `tusk produce` (one record per input line) and `tusk consume` (records printed with a
//! format). Runs on: the CLI thread. Keys are partitioned with murmur2, like the Java client's
//! default partitioner, so `tusk produce` places a key where other Kafka producers would.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest};
use kafka_protocol::records::Compression;
use serde_json::json;

use super::topic::ClientArgs;
use crate::client::wall_clock_ms as now_ms_i64;
use crate::client::{topic_name, ClientError, Connection};
use crate::protocol::batch_builder::BatchBuilder;

/// Records per produce request (and bytes, whichever comes first).
const BATCH_RECORDS_MAX: usize = 1000;
const BATCH_BYTES_MAX: usize = 1 << 20;

#[derive(Debug, Args)]
pub struct ProduceArgs {
    pub topic: String,
    /// Split each line at the first SEP into key and value (default: no key)
    #[arg(long, value_name = "SEP")]
    pub key_separator: Option<String>,
    /// Read lines from this file instead of stdin
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Send every record to this partition
    #[arg(long)]
    pub partition: Option<i32>,
}

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    pub topic: String,
    /// Start at each partition's first offset (default: its end)
    #[arg(long)]
    pub from_beginning: bool,
    /// Start at this offset in every partition
    #[arg(long, conflicts_with_all = ["from_beginning", "timestamp"])]
    pub offset: Option<i64>,
    /// Start at the first record at or after this time (ms since the epoch)
    #[arg(long, conflicts_with = "from_beginning")]
    pub timestamp: Option<i64>,
    /// Start at the group's committed offsets and commit what was read (the group is used
    /// for offsets only: this consumer does not join it)
    #[arg(long)]
    pub group: Option<String>,
    /// Stop after this many records
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop at the end of every partition (as it was when consuming began)
    #[arg(long)]
    pub end: bool,
    /// Output of each record: {topic} {partition} {offset} {timestamp} {key} {value}
    #[arg(long, default_value = "{value}")]
    pub format: String,
    /// Only this partition
    #[arg(long)]
    pub partition: Option<i32>,
}

/// Kafka's murmur2 (the Java client's default partitioner hash).
pub fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    const SEED: u32 = 0x9747_b28c;
    let mut h: u32 = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= (rest[2] as u32) << 16;
    }
    if rest.len() >= 2 {
        h ^= (rest[1] as u32) << 8;
    }
    if !rest.is_empty() {
        h ^= rest[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

pub fn produce(args: ProduceArgs, client: &ClientArgs) -> anyhow::Result<()> {
    let mut conn = client.connect()?;
    let partitions = conn
        .partition_count(&args.topic)?
        .with_context(|| format!("topic {} does not exist", args.topic))?;
    if let Some(p) = args.partition {
        if p < 0 || p as usize >= partitions {
            bail!("--partition {p}: topic {} has {partitions}", args.topic);
        }
    }
    let input: Box<dyn BufRead> = match &args.file {
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("--file {}", path.display()))?,
        )),
        None => Box::new(std::io::stdin().lock()),
    };
    let mut builders: Vec<BatchBuilder> = (0..partitions)
        .map(|_| BatchBuilder::new(Compression::None, 64 * 1024))
        .collect();
    let (mut pending, mut pending_bytes, mut total, mut next) = (0usize, 0usize, 0u64, 0usize);
    for line in input.lines() {
        let line = line.context("reading input")?;
        let (key, value) = match &args.key_separator {
            Some(sep) => match line.split_once(sep.as_str()) {
                Some((k, v)) => (Some(k.as_bytes().to_vec()), v.to_string()),
                None => (None, line.clone()),
            },
            None => (None, line.clone()),
        };
        let p = match (args.partition, &key) {
            (Some(p), _) => p as usize,
            (None, Some(k)) => (murmur2(k) & 0x7fff_ffff) as usize % partitions,
            (None, None) => {
                next = (next + 1) % partitions;
                next
            }
        };
        builders[p].push(now_ms_i64(), key.as_deref(), Some(value.as_bytes()));
        pending += 1;
        pending_bytes += value.len() + key.map_or(0, |k| k.len());
        if pending >= BATCH_RECORDS_MAX || pending_bytes >= BATCH_BYTES_MAX {
            total += send(&mut conn, &args.topic, &mut builders)?;
            (pending, pending_bytes) = (0, 0);
        }
    }
    total += send(&mut conn, &args.topic, &mut builders)?;
    if client.json {
        println!("{}", json!({"topic": args.topic, "records": total}));
    } else {
        eprintln!("produced {total} record(s) to {}", args.topic);
    }
    Ok(())
}

/// Sends every non-empty batch with acks=all; returns the records acknowledged.
fn send(conn: &mut Connection, topic: &str, builders: &mut [BatchBuilder]) -> anyhow::Result<u64> {
    let mut data = Vec::new();
    let mut records = 0u64;
    for (p, b) in builders.iter_mut().enumerate() {
        if !b.is_empty() {
            records += b.len() as u64;
            data.push(
                PartitionProduceData::default()
                    .with_index(p as i32)
                    .with_records(Some(b.finish())),
            );
        }
    }
    if data.is_empty() {
        return Ok(0);
    }
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name(topic))
            .with_partition_data(data)]);
    let v = conn.version(ApiKey::Produce, 9)?;
    let r = conn.call(request, v)?;
    for t in &r.responses {
        for p in &t.partition_responses {
            if p.error_code != 0 {
                let what = format!("produce to {topic}-{}", p.index);
                return Err(ClientError::Kafka {
                    what,
                    code: p.error_code,
                }
                .into());
            }
        }
    }
    Ok(records)
}

/// Where each partition starts.
fn start_offsets(
    conn: &mut Connection,
    args: &ConsumeArgs,
    partitions: usize,
) -> anyhow::Result<Vec<i64>> {
    let latest = conn.list_offsets(&args.topic, partitions, -1)?;
    let earliest = conn.list_offsets(&args.topic, partitions, -2)?;
    let mut start = if let Some(o) = args.offset {
        (0..partitions)
            .map(|p| o.clamp(earliest[p], latest[p]))
            .collect()
    } else if let Some(ts) = args.timestamp {
        let at = conn.list_offsets(&args.topic, partitions, ts)?;
        // -1: nothing at or after the time: start at the end.
        at.iter()
            .zip(&latest)
            .map(|(a, l)| if *a < 0 { *l } else { *a })
            .collect()
    } else if args.from_beginning {
        earliest.clone()
    } else {
        latest.clone()
    };
    if let Some(group) = &args.group {
        let committed = super::group::committed(conn, group)?;
        for (p, s) in start.iter_mut().enumerate() {
            if let Some(c) = committed.get(&(args.topic.clone(), p as i32)) {
                if args.offset.is_none() && args.timestamp.is_none() {
                    *s = (*c).clamp(earliest[p], latest[p]);
                }
            }
        }
    }
    Ok(start)
}

pub fn consume(args: ConsumeArgs, client: &ClientArgs) -> anyhow::Result<()> {
    let mut conn = client.connect()?;
    let partitions = conn
        .partition_count(&args.topic)?
        .with_context(|| format!("topic {} does not exist", args.topic))?;
    let mut offsets = start_offsets(&mut conn, &args, partitions)?;
    let ends = conn.list_offsets(&args.topic, partitions, -1)?;
    let chosen: Vec<usize> = match args.partition {
        Some(p) if p >= 0 && (p as usize) < partitions => vec![p as usize],
        Some(p) => bail!("--partition {p}: topic {} has {partitions}", args.topic),
        None => (0..partitions).collect(),
    };
    let mut out = std::io::stdout().lock();
    let mut printed = 0u64;
    let mut last_commit = Instant::now();
    loop {
        let live: Vec<(usize, i64)> = chosen
            .iter()
            .filter(|p| !args.end || offsets[**p] < ends[**p])
            .map(|p| (*p, offsets[*p]))
            .collect();
        if live.is_empty() || args.count.is_some_and(|c| printed >= c) {
            break;
        }
        let fetched = conn.fetch_records(&args.topic, &live)?;
        for (p, records) in fetched {
            for r in records {
                if r.offset < offsets[p] || args.count.is_some_and(|c| printed >= c) {
                    continue;
                }
                let line = format_record(&args.format, &args.topic, p, &r);
                out.write_all(line.as_bytes())?;
                out.write_all(b"\n")?;
                printed += 1;
                offsets[p] = r.offset + 1;
            }
        }
        out.flush()?;
        if let Some(group) = &args.group {
            if last_commit.elapsed() > Duration::from_secs(1) {
                super::group::commit(&mut conn, group, &args.topic, &offsets)?;
                last_commit = Instant::now();
            }
        }
    }
    if let Some(group) = &args.group {
        super::group::commit(&mut conn, group, &args.topic, &offsets)?;
    }
    Ok(())
}

fn format_record(
    format: &str,
    topic: &str,
    partition: usize,
    r: &kafka_protocol::records::Record,
) -> String {
    let text = |b: &Option<bytes::Bytes>| {
        b.as_deref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    };
    format
        .replace("{topic}", topic)
        .replace("{partition}", &partition.to_string())
        .replace("{offset}", &r.offset.to_string())
        .replace("{timestamp}", &r.timestamp.to_string())
        .replace("{key}", &text(&r.key))
        .replace("{value}", &text(&r.value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka() {
        // Values from Kafka's UtilsTest.testMurmur2.
        assert_eq!(murmur2(b"21"), -973932308);
        assert_eq!(murmur2(b"foobar"), -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58897971
        );
        assert_eq!(murmur2(b"abc"), 479470107);
    }
}
