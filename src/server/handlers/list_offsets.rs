//! ListOffsets: earliest, latest, or the first offset at or after a timestamp. Runs on: the
//! connection's shard; lookups run on the owners.

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ResponseKind};

use crate::protocol::types::TopicPartition;
use crate::protocol::ErrorCode;
use crate::shard::messages::{PartitionRequest, PartitionResponse};
use crate::shard::ShardRef;

pub async fn handle(shard: &ShardRef, request: ListOffsetsRequest) -> ResponseKind {
    let image = shard.image();
    let mut places = Vec::new();
    let mut items = Vec::new();
    let mut topics = Vec::new();
    let requested = super::collapse_topics(
        request.topics,
        |t| t.name.0.clone(),
        |t| &mut t.partitions,
        |p| p.partition_index,
    );
    for (ti, topic) in requested.into_iter().enumerate() {
        let name = topic.name.to_string();
        let count = image.topics.get(&name).map(|t| t.partitions as i32);
        let mut parts = Vec::new();
        for (pi, p) in topic.partitions.into_iter().enumerate() {
            let mut r = ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_timestamp(-1)
                .with_offset(-1);
            match count {
                Some(n) if p.partition_index >= 0 && p.partition_index < n => {
                    places.push((ti, pi));
                    items.push((
                        TopicPartition::new(name.as_str(), p.partition_index),
                        PartitionRequest::ListOffsets {
                            timestamp_ms: p.timestamp,
                        },
                    ));
                }
                _ => r.error_code = ErrorCode::UnknownTopicOrPartition.code(),
            }
            parts.push(r);
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(parts),
        );
    }
    for ((ti, pi), answer) in places.into_iter().zip(shard.execute(items).await) {
        if let PartitionResponse::ListOffsets {
            error,
            offset,
            timestamp_ms,
        } = answer
        {
            let r: &mut ListOffsetsPartitionResponse = &mut topics[ti].partitions[pi];
            r.error_code = crate::server::errors::partition_code(&error).code();
            r.offset = offset.0;
            r.timestamp = timestamp_ms;
        }
    }
    ResponseKind::ListOffsets(ListOffsetsResponse::default().with_topics(topics))
}
