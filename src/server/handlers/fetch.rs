//! Fetch: whole batches from each requested partition, with long-poll (`min_bytes`,
//! `max_wait_ms`): if too little data is there, wait until any partition's high watermark moves
//! (the owners wake us) or the wait ends, then read again. Runs on: the connection's shard; reads
//! run on the owners. Fetch sessions are not kept: every response carries session id 0, which
//! tells clients to send full fetch requests. The response is encoded here as pieces
//! (`protocol::fetch_response`), so record sets read as file ranges go out by splice.

use std::time::Duration;

use kafka_protocol::messages::FetchRequest;

use super::Reply;
use crate::constants::FETCH_WAIT_MAX_MS;
use crate::protocol::fetch_response::{self, PartitionOut, TopicOut};
use crate::protocol::types::{Offset, TopicPartition};
use crate::protocol::ErrorCode;
use crate::shard::messages::{PartitionRequest, PartitionResponse};
use crate::shard::ShardRef;
use crate::storage::FetchRecords;

/// The reads a fetch asks for and the response they fill.
struct Plan {
    /// The response, with an error already on the partitions that cannot be read.
    topics: Vec<TopicOut<FetchRecords>>,
    /// (topic index, partition index) in `topics` of each read.
    places: Vec<(usize, usize)>,
    /// (partition, fetch offset, partition max bytes) of each read.
    reads: Vec<(TopicPartition, Offset, usize)>,
    /// Some partition is unknown: Kafka answers at once then.
    unknown: bool,
}

pub async fn handle(
    shard: &ShardRef,
    request: FetchRequest,
    correlation_id: i32,
    version: i16,
) -> Reply {
    // Only followers send v15 (never advertised); a replica id in an older version proves
    // nothing, so such a fetch is served as a consumer's (it cannot move a high watermark).
    if version >= crate::protocol::versions::REPLICA_FETCH_VERSION {
        return super::replica_fetch::handle(shard, request, correlation_id, version).await;
    }
    let started = shard.env.monotonic();
    let request_max = (request.max_bytes.max(1) as u32).min(shard.config.fetch_max_bytes) as usize;
    let wait = Duration::from_millis((request.max_wait_ms.max(0) as u64).min(FETCH_WAIT_MAX_MS));
    let min_bytes = request.min_bytes.max(0) as usize;
    let mut plan = plan(shard, request, request_max);
    let answers = read_until_ready(shard, &plan, request_max, min_bytes, started + wait).await;
    fill(&mut plan, answers, request_max);
    let took = shard.env.monotonic().saturating_sub(started);
    crate::metrics::with(|m| m.fetch_latency.observe(took));
    Reply::Parts(fetch_response::encode(correlation_id, version, plan.topics))
}

/// The reads of a request: each partition once (Kafka keys fetch partitions by name and
/// index, so a partition named twice is read once), unknown ones answered with an error.
fn plan(shard: &ShardRef, request: FetchRequest, request_max: usize) -> Plan {
    let image = shard.image();
    let mut plan = Plan {
        topics: Vec::new(),
        places: Vec::new(),
        reads: Vec::new(),
        unknown: false,
    };
    let requested = super::collapse_topics(
        request.topics,
        |t| (t.topic.0.clone(), t.topic_id),
        |t| &mut t.partitions,
        |p| p.partition,
    );
    for (ti, topic) in requested.iter().enumerate() {
        let name = topic.topic.to_string();
        let partitions = image.topics.get(&name).map(|t| t.partitions as i32);
        let mut parts = Vec::new();
        for (pi, p) in topic.partitions.iter().enumerate() {
            let mut data = PartitionOut::empty(p.partition);
            match partitions {
                Some(n) if p.partition >= 0 && p.partition < n => {
                    let max = (p.partition_max_bytes.max(1) as usize).min(request_max);
                    plan.places.push((ti, pi));
                    plan.reads.push((
                        TopicPartition::new(name.as_str(), p.partition),
                        Offset(p.fetch_offset),
                        max,
                    ));
                }
                _ => {
                    data.error_code = ErrorCode::UnknownTopicOrPartition.code();
                    plan.unknown = true;
                }
            }
            parts.push(data);
        }
        plan.topics.push(TopicOut {
            name: bytes::Bytes::copy_from_slice(topic.topic.as_bytes()),
            topic_id: [0; 16],
            partitions: parts,
        });
    }
    plan
}

/// Reads; while too little came back and the wait has not ended, waits for any high
/// watermark to move past what the read saw, and reads again.
async fn read_until_ready(
    shard: &ShardRef,
    plan: &Plan,
    request_max: usize,
    min_bytes: usize,
    deadline: Duration,
) -> Vec<PartitionResponse> {
    loop {
        let items = plan
            .reads
            .iter()
            .map(|(tp, offset, max)| {
                (
                    tp.clone(),
                    PartitionRequest::Fetch {
                        offset: *offset,
                        max_bytes: *max,
                        request_bytes_max: request_max,
                    },
                )
            })
            .collect();
        let answers = shard.execute(items).await;
        let mut bytes = 0usize;
        let mut errors = plan.unknown;
        // What to wait for: the high watermark moving past what this read already saw.
        let mut waits = Vec::with_capacity(plan.reads.len());
        for (a, (tp, offset, _)) in answers.iter().zip(&plan.reads) {
            if let PartitionResponse::Fetch {
                error,
                records,
                high_watermark,
                ..
            } = a
            {
                bytes += records.len();
                errors |= error.is_some();
                waits.push((tp.clone(), (*offset).max(*high_watermark)));
            }
        }
        let now = shard.env.monotonic();
        if bytes >= min_bytes || errors || now >= deadline || plan.reads.is_empty() {
            return answers;
        }
        // Then read again: after new data, or one last time when the wait ends.
        shard.wait_for_data(waits, deadline - now).await;
        // Never run the loop without giving the shard's other tasks a turn.
        crate::runtime::io::yield_now().await;
    }
}

/// Puts the answers into the response. The request-wide limit: partitions are filled in
/// request order until `max_bytes`; the first non-empty partition is always sent whole so a
/// consumer can progress (KIP-74).
fn fill(plan: &mut Plan, answers: Vec<PartitionResponse>, request_max: usize) {
    let mut total = 0usize;
    for ((ti, pi), answer) in plan.places.iter().zip(answers) {
        if let PartitionResponse::Fetch {
            error,
            high_watermark,
            log_start,
            mut records,
        } = answer
        {
            if total > 0 && total + records.len() > request_max {
                records = FetchRecords::Memory(bytes::Bytes::new());
            }
            total += records.len();
            let d = &mut plan.topics[*ti].partitions[*pi];
            d.error_code = crate::server::errors::partition_code(&error).code();
            d.high_watermark = high_watermark.0;
            d.last_stable_offset = high_watermark.0;
            d.log_start_offset = log_start.0;
            d.records = Some((records.len(), records));
        }
    }
}
