//! OffsetFetch (one group, v1-v7): the committed offsets of given partitions, or all of the
//! group's (null topics, v2+). Offsets of a deleted or re-created topic are not served. Runs
//! on: the connection's shard, answered by the coordinator's.

use std::collections::BTreeMap;

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponse, OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::{OffsetFetchRequest, ResponseKind, TopicName};

use super::str_bytes;
use crate::group::coordinator::{GroupCall, GroupReply};
use crate::protocol::types::TopicPartition;
use crate::protocol::ErrorCode;
use crate::runtime::shard::ShardRef;

pub async fn handle(shard: &ShardRef, request: OffsetFetchRequest) -> ResponseKind {
    let group_id = request.group_id.to_string();
    let asked: Option<Vec<TopicPartition>> = request.topics.as_ref().map(|topics| {
        topics
            .iter()
            .flat_map(|t| {
                t.partition_indexes
                    .iter()
                    .map(|p| TopicPartition::new(t.name.as_str(), *p))
            })
            .collect()
    });
    let call = GroupCall::Fetch {
        group_id: group_id.clone(),
        partitions: asked.clone(),
    };
    let (error, found) = match shard.group_call(&group_id, call).await {
        GroupReply::Offsets { error, offsets } => (error, offsets),
        GroupReply::Code(e) => (e, Vec::new()),
        _ => (ErrorCode::UnknownServerError, Vec::new()),
    };
    let image = shard.image();
    let live: BTreeMap<TopicPartition, _> = found
        .into_iter()
        .filter(|(tp, c)| {
            image
                .topics
                .get(&tp.topic)
                .is_some_and(|t| t.topic_id == c.topic_id)
        })
        .collect();
    let partitions: Vec<TopicPartition> = asked.unwrap_or_else(|| live.keys().cloned().collect());
    let mut by_topic: BTreeMap<String, Vec<OffsetFetchResponsePartition>> = BTreeMap::new();
    for tp in partitions {
        let mut p = OffsetFetchResponsePartition::default()
            .with_partition_index(tp.partition.0)
            .with_committed_offset(-1)
            .with_committed_leader_epoch(-1);
        if let Some(c) = live.get(&tp) {
            p.committed_offset = c.offset;
            p.committed_leader_epoch = c.leader_epoch;
            p.metadata = Some(str_bytes(c.metadata.as_deref().unwrap_or("")));
        } else {
            p.metadata = Some(str_bytes(""));
        }
        by_topic.entry(tp.topic).or_default().push(p);
    }
    let topics = by_topic
        .into_iter()
        .map(|(name, partitions)| {
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(str_bytes(&name)))
                .with_partitions(partitions)
        })
        .collect();
    ResponseKind::OffsetFetch(
        OffsetFetchResponse::default()
            .with_error_code(error.code())
            .with_topics(topics),
    )
}
