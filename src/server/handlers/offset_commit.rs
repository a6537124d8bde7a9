//! OffsetCommit: validated against the group's generation, made durable in the offsets log on
//! the coordinator's shard, then answered. Runs on: the connection's shard and the
//! coordinator's.

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponse, OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, ResponseKind};

use crate::group::calls::{Commit, OffsetToCommit};
use crate::group::GroupCode;
use crate::protocol::types::TopicPartition;
use crate::protocol::ErrorCode;
use crate::shard::ShardRef;

pub async fn handle(shard: &ShardRef, mut request: OffsetCommitRequest) -> ResponseKind {
    let image = shard.image();
    // A partition committed twice in one request is committed once (the first entry), so a
    // request cannot multiply the records written (each repeats the group id).
    request.topics = super::collapse_topics(
        std::mem::take(&mut request.topics),
        |t| t.name.0.clone(),
        |t| &mut t.partitions,
        |p| p.partition_index,
    );
    let group_id = request.group_id.to_string();
    // Partitions of unknown topics are answered at once; the rest go to the coordinator.
    let mut offsets = Vec::new();
    let mut codes: Vec<Vec<ErrorCode>> = Vec::new();
    for topic in &request.topics {
        let meta = image.topics.get(topic.name.as_str());
        let mut topic_codes = Vec::new();
        for p in &topic.partitions {
            match meta {
                Some(m) if p.partition_index >= 0 && (p.partition_index as u32) < m.partitions => {
                    offsets.push(OffsetToCommit {
                        partition: TopicPartition::new(topic.name.as_str(), p.partition_index),
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p.committed_metadata.as_ref().map(|s| s.to_string()),
                        topic_id: m.topic_id,
                    });
                    topic_codes.push(ErrorCode::None);
                }
                _ => topic_codes.push(ErrorCode::UnknownTopicOrPartition),
            }
        }
        codes.push(topic_codes);
    }
    let call = Commit {
        group_id,
        member_id: request.member_id.to_string(),
        generation_id: crate::protocol::types::GenerationId(request.generation_id_or_member_epoch),
        offsets,
    };
    let results = shard.group_call(call).await;
    let mut results = results.into_iter();
    let topics = request
        .topics
        .into_iter()
        .zip(codes)
        .map(|(topic, topic_codes)| {
            let partitions = topic
                .partitions
                .iter()
                .zip(topic_codes)
                .map(|(p, code)| {
                    let code = if code == ErrorCode::None {
                        crate::server::errors::group_code(
                            results.next().unwrap_or(GroupCode::Unexpected),
                        )
                    } else {
                        code
                    };
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code.code())
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    ResponseKind::OffsetCommit(OffsetCommitResponse::default().with_topics(topics))
}
