//! DescribeLogDirs: the replicas this broker holds in its data directory, each with its size
//! and how far it trails its leader (`tusk topic describe` asks every broker, to show lag per
//! replica). A null topic list means every replica held here; partitions not held here are left
//! out, as Kafka does; each partition is described once however often it is named. Offset lag
//! is the records between the replica's log end and its leader's high watermark as last seen
//! (0 on the leader). Runs on: the connection's shard; the figures come from the owners.

use std::collections::BTreeSet;

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{
    DescribeLogDirsRequest, DescribeLogDirsResponse, ResponseKind, TopicName,
};

use super::str_bytes;
use crate::protocol::types::TopicPartition;
use crate::shard::messages::{PartitionRequest, PartitionResponse};
use crate::shard::ShardRef;

pub async fn handle(shard: &ShardRef, request: DescribeLogDirsRequest) -> ResponseKind {
    let image = shard.image();
    let mut wanted: BTreeSet<(String, i32)> = BTreeSet::new();
    match &request.topics {
        Some(topics) => {
            for t in topics {
                let Some(meta) = image.topics.get(t.topic.as_str()) else {
                    continue;
                };
                for p in &t.partitions {
                    if *p >= 0 && (*p as u32) < meta.partitions {
                        wanted.insert((t.topic.to_string(), *p));
                    }
                }
            }
        }
        None => {
            for t in image.topics.values() {
                for p in 0..t.partitions {
                    wanted.insert((t.name.clone(), p as i32));
                }
            }
        }
    }
    let items: Vec<(TopicPartition, PartitionRequest)> = wanted
        .into_iter()
        .map(|(t, p)| TopicPartition::new(t.as_str(), p))
        .filter(|tp| shard.hosts(&image, tp))
        .map(|tp| (tp, PartitionRequest::Describe))
        .collect();
    let names: Vec<TopicPartition> = items.iter().map(|(tp, _)| tp.clone()).collect();
    let mut topics: Vec<DescribeLogDirsTopic> = Vec::new();
    for (tp, answer) in names.into_iter().zip(shard.execute(items).await) {
        let PartitionResponse::Described {
            error: None,
            size_bytes,
            offset_lag,
        } = answer
        else {
            // Offline here (its open failed): not described, as a log dir Kafka cannot read.
            continue;
        };
        let partition = DescribeLogDirsPartition::default()
            .with_partition_index(tp.partition.0)
            .with_partition_size(i64::try_from(size_bytes).unwrap_or(i64::MAX))
            .with_offset_lag(offset_lag);
        match topics.last_mut() {
            Some(t) if t.name.as_str() == tp.topic.as_str() => t.partitions.push(partition),
            _ => topics.push(
                DescribeLogDirsTopic::default()
                    .with_name(TopicName(str_bytes(&tp.topic)))
                    .with_partitions(vec![partition]),
            ),
        }
    }
    let dir = shard.config.data_dir.display().to_string();
    let result = DescribeLogDirsResult::default()
        .with_log_dir(str_bytes(&dir))
        .with_topics(topics)
        .with_total_bytes(-1)
        .with_usable_bytes(-1);
    ResponseKind::DescribeLogDirs(DescribeLogDirsResponse::default().with_results(vec![result]))
}
