//! Metadata: brokers (this one on one node; the live ones in a cluster), topics and partitions
//! (all led by this node on one node; their assigned replicas and leaders in a cluster, a
//! partition whose leader is fenced or not yet assigned answered LEADER_NOT_AVAILABLE), with
//! auto-creation of unknown topics. Runs on: the connection's shard.

use kafka_protocol::messages::metadata_response::{
    MetadataResponse, MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, ResponseKind, TopicName};

use super::{str_bytes, uuid};
use crate::cluster::controller::validate_topic_name;
use crate::protocol::ErrorCode;
use crate::shard::ShardRef;

pub async fn handle(shard: &ShardRef, request: MetadataRequest, version: i16) -> ResponseKind {
    let image = shard.image();
    // In v0 an empty topic list means every topic; from v1 on that is a null list.
    let topics = match request.topics {
        Some(t) if t.is_empty() && version == 0 => None,
        other => other,
    };
    // Each topic is described once however often it is named (a 0.3 MB request naming one
    // 100-partition topic 50,000 times once built a 131 MB response).
    let requested: Option<Vec<String>> = topics.map(|topics| {
        let names = topics
            .into_iter()
            .filter_map(|t| match t.name {
                Some(name) => Some(name.to_string()),
                None => image
                    .topic_by_id(&crate::protocol::types::TopicId(*t.topic_id.as_bytes()))
                    .map(|m| m.name.clone()),
            })
            .collect();
        super::first_of_each(names, |n: &String| n.clone())
    });
    // Metadata v0-v3 always auto-creates; v4+ asks.
    let allow_create = version < 4 || request.allow_auto_topic_creation;
    let image = match &requested {
        Some(names) if allow_create => {
            let missing: Vec<String> = names
                .iter()
                .filter(|n| !image.topics.contains_key(*n))
                .cloned()
                .collect();
            if missing.is_empty() {
                image
            } else {
                super::create_topics::auto_create(shard, missing).await;
                shard.image()
            }
        }
        _ => image,
    };
    let node = shard.config.node_id.0;
    let cluster = shard.config.cluster.is_some();
    let names = requested.unwrap_or_else(|| image.topics.keys().cloned().collect());
    let topics = names
        .into_iter()
        .map(|name| {
            let mut t = MetadataResponseTopic::default();
            match image.topics.get(&name) {
                Some(meta) => {
                    t.topic_id = uuid(meta.topic_id);
                    t.partitions = (0..meta.partitions as i32)
                        .map(|p| {
                            let partition =
                                MetadataResponsePartition::default().with_partition_index(p);
                            if !cluster {
                                return partition
                                    .with_leader_id(BrokerId(node))
                                    .with_leader_epoch(0)
                                    .with_replica_nodes(vec![BrokerId(node)])
                                    .with_isr_nodes(vec![BrokerId(node)]);
                            }
                            cluster_partition(&image, meta, p, partition)
                        })
                        .collect();
                }
                None => {
                    t.error_code = if validate_topic_name(&name).is_err() {
                        ErrorCode::InvalidTopicException.code()
                    } else {
                        ErrorCode::UnknownTopicOrPartition.code()
                    };
                }
            }
            t.name = Some(TopicName(str_bytes(&name)));
            t
        })
        .collect();
    let brokers = if cluster {
        image
            .live_brokers()
            .map(|b| {
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(b.node_id))
                    .with_host(str_bytes(&b.host))
                    .with_port(b.port as i32)
            })
            .collect()
    } else {
        vec![MetadataResponseBroker::default()
            .with_node_id(BrokerId(node))
            .with_host(str_bytes(&shard.config.advertise_host))
            .with_port(shard.config.advertise_port as i32)]
    };
    ResponseKind::Metadata(
        MetadataResponse::default()
            .with_brokers(brokers)
            .with_cluster_id(Some(str_bytes(&image.cluster_id)))
            .with_controller_id(BrokerId(shard.controller_id()))
            .with_topics(topics),
    )
}

/// A partition as a cluster's image places it: its replicas, its leader if live (else -1 and
/// LEADER_NOT_AVAILABLE, so clients wait and ask again), its in-sync replicas.
fn cluster_partition(
    image: &crate::cluster::MetadataImage,
    meta: &crate::cluster::TopicMeta,
    p: i32,
    partition: MetadataResponsePartition,
) -> MetadataResponsePartition {
    let Some(a) = meta.assignments.get(&(p as u32)) else {
        return partition
            .with_error_code(ErrorCode::LeaderNotAvailable.code())
            .with_leader_id(BrokerId(-1));
    };
    let live = |id: &i32| image.brokers.get(id).is_some_and(|b| !b.fenced);
    let replicas = a.replicas.iter().map(|r| BrokerId(*r)).collect();
    let isr = meta
        .isr
        .get(&(p as u32))
        .unwrap_or(&a.replicas)
        .iter()
        .map(|r| BrokerId(*r))
        .collect();
    let partition = partition
        .with_leader_epoch(a.leader_epoch)
        .with_replica_nodes(replicas)
        .with_isr_nodes(isr);
    if live(&a.leader) {
        partition.with_leader_id(BrokerId(a.leader))
    } else {
        partition
            .with_error_code(ErrorCode::LeaderNotAvailable.code())
            .with_leader_id(BrokerId(-1))
    }
}
