//! OffsetFetch (one group, v1-v7): the committed offsets of given partitions, or all of the
//! group's (null topics, v2+). Offsets of a deleted or re-created topic are not served. Runs
//! on: the connection's shard, answered by the coordinator's.

use std::collections::BTreeMap;

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponse, OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::{OffsetFetchRequest, ResponseKind, TopicName};

use super::str_bytes;
use crate::group::calls::FetchOffsets;
use crate::group::GroupCode;
use crate::protocol::types::TopicPartition;
use crate::server::errors::WireCode;
use crate::shard::ShardRef;

pub async fn handle(shard: &ShardRef, request: OffsetFetchRequest) -> ResponseKind {
    let group_id = request.group_id.to_string();
    let image = shard.image();
    // Duplicates collapse, and only partitions of existing topics are copied and sent to the
    // coordinator (a 30 KB name with 20,000 partitions once took the broker to 1.2 GB): the
    // others cannot have live offsets and are answered -1 here.
    let requested = request.topics.map(|topics| {
        super::collapse_topics(
            topics,
            |t| t.name.0.clone(),
            |t| &mut t.partition_indexes,
            |p| *p,
        )
    });
    let asked: Option<Vec<TopicPartition>> = requested.as_ref().map(|topics| {
        topics
            .iter()
            .filter(|t| image.topics.contains_key(t.name.as_str()))
            .flat_map(|t| {
                t.partition_indexes
                    .iter()
                    .map(|p| TopicPartition::new(t.name.as_str(), *p))
            })
            .collect()
    });
    let call = FetchOffsets {
        group_id: group_id.clone(),
        partitions: asked,
    };
    let (error, found) = match shard.group_call(call).await {
        Ok(offsets) => (GroupCode::Ok, offsets),
        Err(e) => (e, Vec::new()),
    };
    let live: BTreeMap<TopicPartition, _> = found
        .into_iter()
        .filter(|(tp, c)| {
            image
                .topics
                .get(&tp.topic)
                .is_some_and(|t| t.topic_id == c.topic_id)
        })
        .collect();
    let answer = |tp: &TopicPartition| {
        let mut p = OffsetFetchResponsePartition::default()
            .with_partition_index(tp.partition.0)
            .with_committed_offset(-1)
            .with_committed_leader_epoch(-1)
            .with_metadata(Some(str_bytes("")));
        if let Some(c) = live.get(tp) {
            p.committed_offset = c.offset;
            p.committed_leader_epoch = c.leader_epoch;
            p.metadata = Some(str_bytes(c.metadata.as_deref().unwrap_or("")));
        }
        p
    };
    let topics = match requested {
        Some(topics) => topics
            .into_iter()
            .map(|t| {
                let known = image.topics.contains_key(t.name.as_str());
                let partitions = t
                    .partition_indexes
                    .iter()
                    .map(|p| match known {
                        true => answer(&TopicPartition::new(t.name.as_str(), *p)),
                        false => answer(&TopicPartition::new("", *p)),
                    })
                    .collect();
                OffsetFetchResponseTopic::default()
                    .with_name(t.name)
                    .with_partitions(partitions)
            })
            .collect(),
        None => {
            let mut by_topic: BTreeMap<&str, Vec<OffsetFetchResponsePartition>> = BTreeMap::new();
            for tp in live.keys() {
                by_topic.entry(&tp.topic).or_default().push(answer(tp));
            }
            by_topic
                .into_iter()
                .map(|(name, partitions)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(TopicName(str_bytes(name)))
                        .with_partitions(partitions)
                })
                .collect()
        }
    };
    ResponseKind::OffsetFetch(
        OffsetFetchResponse::default()
            .with_error_code(error.code())
            .with_topics(topics),
    )
}
