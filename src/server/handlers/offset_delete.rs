//! OffsetDelete: removes committed offsets of some partitions of a group. Runs on: the
//! connection's shard, done by the coordinator's.

use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponse, OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, ResponseKind};

use crate::group::calls::DeleteOffsets;
use crate::group::GroupCode;
use crate::protocol::types::TopicPartition;
use crate::server::errors::WireCode;
use crate::shard::ShardRef;

pub async fn handle(shard: &ShardRef, request: OffsetDeleteRequest) -> ResponseKind {
    let group_id = request.group_id.to_string();
    let mut request = request;
    request.topics = super::collapse_topics(
        std::mem::take(&mut request.topics),
        |t| t.name.0.clone(),
        |t| &mut t.partitions,
        |p| p.partition_index,
    );
    // Names too long to be a topic's are not copied per partition (the coordinator answers
    // UNKNOWN_TOPIC_OR_PARTITION for them by their empty name).
    let partitions: Vec<TopicPartition> = request
        .topics
        .iter()
        .flat_map(|t| {
            let name = if super::topic_name_fits(t.name.as_str()) {
                t.name.as_str()
            } else {
                ""
            };
            t.partitions
                .iter()
                .map(move |p| TopicPartition::new(name, p.partition_index))
        })
        .collect();
    let call = DeleteOffsets {
        group_id: group_id.clone(),
        partitions,
    };
    let codes = shard.group_call(call).await;
    let mut codes = codes.into_iter();
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(codes.next().unwrap_or(GroupCode::Ok).code())
                })
                .collect();
            OffsetDeleteResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    ResponseKind::OffsetDelete(OffsetDeleteResponse::default().with_topics(topics))
}
