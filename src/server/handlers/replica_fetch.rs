//! Fetch from a follower (v15, with a replica state): each partition's fetch offset is the follower's
//! durable log end, recorded by the leader (it moves the high watermark), then answered with
//! what the leader has written past it, or with the epoch where the follower's log diverges
//! (KIP-320). A fetch that finds nothing waits until a log is written further or `max_wait_ms`
//! passes. Runs on: the connection's shard; the checks and reads run on the owners.
//! Only a live broker's current incarnation may fetch as a replica (the replica state's broker
//! epoch must be the one it registered with), and only partitions it holds a replica of.

use std::time::Duration;

use kafka_protocol::messages::FetchRequest;

use super::Reply;
use crate::constants::FETCH_WAIT_MAX_MS;
use crate::protocol::fetch_response::{self, PartitionOut, TopicOut};
use crate::protocol::types::{LeaderEpoch, Offset, TopicPartition};
use crate::protocol::ErrorCode;
use crate::shard::messages::{PartitionRequest, PartitionResponse};
use crate::shard::ShardRef;
use crate::storage::FetchRecords;

pub async fn handle(
    shard: &ShardRef,
    request: FetchRequest,
    correlation_id: i32,
    version: i16,
) -> Reply {
    let follower = request.replica_state.replica_id.0;
    let image = shard.image();
    let registered = shard.config.cluster.is_some()
        && image
            .brokers
            .get(&follower)
            .is_some_and(|b| !b.fenced && b.epoch == request.replica_state.replica_epoch);
    let wait = Duration::from_millis((request.max_wait_ms.max(0) as u64).min(FETCH_WAIT_MAX_MS));
    let deadline = shard.env.monotonic() + wait;
    let request_max = (request.max_bytes.max(1) as u32).min(shard.config.fetch_max_bytes) as usize;
    let mut topics: Vec<TopicOut<FetchRecords>> = Vec::new();
    let mut places = Vec::new();
    let mut items = Vec::new();
    for topic in request.topics {
        let topic_id = topic.topic_id.into_bytes();
        let name = image
            .topic_name_by_id(&crate::protocol::types::TopicId(topic_id))
            .unwrap_or_default()
            .to_string();
        let mut parts = Vec::new();
        for p in topic.partitions {
            let mut out = PartitionOut::empty(p.partition);
            let tp = TopicPartition::new(name.as_str(), p.partition);
            let holds = p.partition >= 0
                && !name.is_empty()
                && image
                    .partition(&name, p.partition as u32)
                    .is_some_and(|(a, _)| a.replicas.contains(&follower));
            if !registered || !holds || items.iter().any(|(t, _)| *t == tp) {
                out.error_code = match (registered, name.is_empty()) {
                    (false, _) => ErrorCode::StaleBrokerEpoch.code(),
                    (true, true) => ErrorCode::UnknownTopicId.code(),
                    (true, false) => ErrorCode::UnknownTopicOrPartition.code(),
                };
            } else {
                places.push((topics.len(), parts.len()));
                let max = (p.partition_max_bytes.max(1) as usize).min(request_max);
                items.push((
                    tp,
                    PartitionRequest::ReplicaFetch {
                        follower,
                        offset: Offset(p.fetch_offset),
                        current_epoch: LeaderEpoch(p.current_leader_epoch),
                        last_fetched_epoch: LeaderEpoch(p.last_fetched_epoch),
                        max_bytes: max,
                    },
                ));
            }
            parts.push(out);
        }
        topics.push(TopicOut {
            name: bytes::Bytes::copy_from_slice(name.as_bytes()),
            topic_id,
            partitions: parts,
        });
    }
    let in_sync: Vec<bool> = items
        .iter()
        .map(|(tp, _)| {
            image
                .partition(&tp.topic, tp.partition.0 as u32)
                .is_some_and(|(_, isr)| isr.contains(&follower))
        })
        .collect();
    let answers = fetch_until_ready(shard, &items, &in_sync, deadline).await;
    for ((ti, pi), answer) in places.into_iter().zip(answers) {
        if let PartitionResponse::ReplicaFetch {
            error,
            high_watermark,
            log_start,
            records,
            diverging,
        } = answer
        {
            let out = &mut topics[ti].partitions[pi];
            out.error_code = crate::server::errors::partition_code(&error).code();
            out.high_watermark = high_watermark.0;
            out.last_stable_offset = high_watermark.0;
            out.log_start_offset = log_start.0;
            out.records = Some((records.len(), records));
            out.diverging = diverging.map(|(e, o)| (e.0, o.0));
        }
    }
    Reply::Parts(fetch_response::encode(correlation_id, version, topics))
}

/// Fetches; while nothing came back, waits for a log to be written further (or the deadline)
/// and fetches again. Catch-up bytes (partitions whose ISR lacks this follower) go only while
/// the replication throttle allows: otherwise those partitions answer empty, and the wait
/// ends when the throttle refills or an in-sync partition is written further, so in-sync
/// partitions are never slowed by it.
async fn fetch_until_ready(
    shard: &ShardRef,
    items: &[(TopicPartition, PartitionRequest)],
    in_sync: &[bool],
    deadline: Duration,
) -> Vec<PartitionResponse> {
    loop {
        let request: Vec<(TopicPartition, PartitionRequest)> = items
            .iter()
            .map(|(tp, r)| (tp.clone(), r.clone()))
            .collect();
        let mut answers = shard.execute(request).await;
        let mut throttled = false;
        for (answer, in_sync) in answers.iter_mut().zip(in_sync) {
            if let PartitionResponse::ReplicaFetch { records, .. } = answer {
                if !*in_sync && !shard.take_replication_tokens(records.len()) {
                    *records = FetchRecords::Memory(bytes::Bytes::new());
                    throttled = true;
                }
            }
        }
        let ready = answers.iter().any(|a| match a {
            PartitionResponse::ReplicaFetch {
                error,
                records,
                diverging,
                ..
            } => error.is_some() || !records.is_empty() || diverging.is_some(),
            _ => true,
        });
        let now = shard.env.monotonic();
        if ready || now >= deadline || items.is_empty() {
            return answers;
        }
        let mut wait = deadline - now;
        if throttled {
            wait = wait.min(shard.replication_refill_wait());
        }
        let waits: Vec<(TopicPartition, Offset)> = items
            .iter()
            .zip(in_sync)
            .filter(|(_, s)| !throttled || **s)
            .filter_map(|((tp, r), _)| match r {
                PartitionRequest::ReplicaFetch { offset, .. } => Some((tp.clone(), *offset)),
                _ => None,
            })
            .collect();
        if waits.is_empty() {
            // Only throttled partitions: nothing to watch but the clock.
            shard.env.sleep(wait).await;
        } else {
            shard.wait_for_written(waits, wait).await;
        }
        crate::runtime::io::yield_now().await;
    }
}
