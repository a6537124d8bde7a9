//! Produce: validate acks, auto-create unknown topics, route each partition's batches to its
//! owner, answer in request order. Runs on: the connection's shard; appends run on the owners.

use kafka_protocol::messages::produce_response::{
    LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse, ProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{BrokerId, ProduceRequest, ResponseKind};
use kafka_protocol::protocol::StrBytes;

use crate::protocol::types::TopicPartition;
use crate::protocol::ErrorCode;
use crate::replication::Acks;
use crate::shard::messages::{PartitionRequest, PartitionResponse};
use crate::shard::{ShardRef, Turn};

fn error_partition(index: i32, code: ErrorCode) -> PartitionProduceResponse {
    PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(code.code())
        .with_base_offset(-1)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(-1)
}

/// `turn`: the request's place in its connection's order; it is held through auto-creation
/// and until every partition's batches are handed to their owners.
pub async fn handle(
    shard: &ShardRef,
    request: ProduceRequest,
    mut turn: Turn,
    version: i16,
) -> ResponseKind {
    turn.wait().await;
    let acks = Acks::from_wire(request.acks);
    let acks_valid = acks.is_some();
    // acks=all waits for the in-sync replicas at most this long (REQUEST_TIMED_OUT after).
    let timeout_ms =
        (request.timeout_ms.max(0) as u64).min(crate::constants::PRODUCE_TIMEOUT_MAX_MS);
    let mut image = shard.image();
    let missing: Vec<String> = request
        .topic_data
        .iter()
        .map(|t| t.name.to_string())
        .filter(|n| !image.topics.contains_key(n))
        .collect();
    let missing = super::first_of_each(missing, |n: &String| n.clone());
    if acks_valid && !missing.is_empty() {
        super::create_topics::auto_create(shard, missing).await;
        image = shard.image();
    }
    // Partition work for every (topic, partition) that exists, with its place in the response.
    let mut items = Vec::new();
    let mut places = Vec::new();
    let mut responses: Vec<TopicProduceResponse> = Vec::with_capacity(request.topic_data.len());
    for (ti, topic) in request.topic_data.into_iter().enumerate() {
        let name = topic.name.to_string();
        let partitions = image.topics.get(&name).map(|t| t.partitions as i32);
        let mut partition_responses = Vec::with_capacity(topic.partition_data.len());
        for (pi, data) in topic.partition_data.into_iter().enumerate() {
            let code = match (partitions, &data.records) {
                _ if !acks_valid => Some(ErrorCode::InvalidRequiredAcks),
                (None, _) => Some(ErrorCode::UnknownTopicOrPartition),
                (Some(n), _) if data.index < 0 || data.index >= n => {
                    Some(ErrorCode::UnknownTopicOrPartition)
                }
                (_, None) => Some(ErrorCode::CorruptMessage),
                _ => None,
            };
            partition_responses.push(error_partition(data.index, code.unwrap_or(ErrorCode::None)));
            if code.is_none() {
                let payload = data.records.expect("checked above");
                items.push((
                    TopicPartition::new(name.as_str(), data.index),
                    PartitionRequest::Produce {
                        payload,
                        acks: acks.expect("checked above"),
                        timeout_ms,
                    },
                ));
                places.push((ti, pi));
            }
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic.name)
                .with_partition_responses(partition_responses),
        );
    }
    let answers = shard.execute_in_turn(items, turn).await;
    for ((ti, pi), answer) in places.into_iter().zip(answers) {
        if let PartitionResponse::Produce {
            error,
            base_offset,
            log_start,
        } = answer
        {
            let r = &mut responses[ti].partition_responses[pi];
            r.error_code = crate::server::errors::partition_code(&error).code();
            r.base_offset = base_offset.0;
            r.log_start_offset = log_start.0;
        }
    }
    let mut response = ProduceResponse::default().with_responses(responses);
    if version >= 10 {
        add_leader_hints(shard, &mut response);
    }
    ResponseKind::Produce(response)
}

/// KIP-951: a partition answered NOT_LEADER_OR_FOLLOWER carries its current leader and
/// epoch, and the response that leader's address, so the client goes there without first
/// asking for metadata.
fn add_leader_hints(shard: &ShardRef, response: &mut ProduceResponse) {
    let image = shard.image();
    let mut leaders = std::collections::BTreeSet::new();
    for topic in &mut response.responses {
        for p in &mut topic.partition_responses {
            if p.error_code != ErrorCode::NotLeaderOrFollower.code() || p.index < 0 {
                continue;
            }
            let Some((a, _)) = image.partition(topic.name.as_str(), p.index as u32) else {
                continue;
            };
            if !image.is_live(a.leader) {
                continue;
            }
            p.current_leader = LeaderIdAndEpoch::default()
                .with_leader_id(BrokerId(a.leader))
                .with_leader_epoch(a.leader_epoch);
            leaders.insert(a.leader);
        }
    }
    response.node_endpoints = leaders
        .into_iter()
        .filter_map(|id| image.brokers.get(&id))
        .map(|b| {
            NodeEndpoint::default()
                .with_node_id(BrokerId(b.node_id))
                .with_host(StrBytes::from_string(b.host.clone()))
                .with_port(b.port as i32)
        })
        .collect();
}
