//! CreateTopics, and the auto-creation that Metadata and Produce trigger. Runs on: the
//! connection's shard; the work happens on the controller shard.

use kafka_protocol::messages::create_topics_response::{
    CreatableTopicResult, CreateTopicsResponse,
};
use kafka_protocol::messages::{CreateTopicsRequest, ResponseKind};

use super::{str_bytes, uuid};
use crate::cluster::controller::ControllerOp;
use crate::cluster::controller::{self, NewTopic};
use crate::protocol::ErrorCode;
use crate::shard::ShardRef;

/// Asks the controller to create `topics`; one answer per topic.
pub async fn create(
    shard: &ShardRef,
    topics: Vec<NewTopic>,
    validate_only: bool,
) -> Vec<(ErrorCode, Option<String>)> {
    let count = topics.len();
    super::ask_controller(
        shard,
        count,
        ControllerOp::CreateTopics {
            topics,
            validate_only,
        },
    )
    .await
}

/// Creates unknown topics with the broker defaults if auto-creation is on. Returns nothing: the
/// caller reads the image again.
pub async fn auto_create(shard: &ShardRef, names: Vec<String>) {
    if !shard.config.auto_create_topics || names.is_empty() {
        return;
    }
    let topics = names
        .into_iter()
        .filter(|n| controller::validate_topic_name(n).is_ok())
        .map(|name| NewTopic {
            name,
            partitions: -1,
            replication_factor: -1,
            configs: Vec::new(),
        })
        .collect::<Vec<_>>();
    if !topics.is_empty() {
        create(shard, topics, false).await;
    }
}

pub async fn handle(shard: &ShardRef, request: CreateTopicsRequest) -> ResponseKind {
    let mut topics = Vec::new();
    for t in &request.topics {
        let partitions = if t.assignments.is_empty() {
            t.num_partitions
        } else {
            t.assignments.len() as i32
        };
        topics.push(NewTopic {
            name: t.name.to_string(),
            partitions,
            replication_factor: t.replication_factor,
            configs: t
                .configs
                .iter()
                .filter_map(|c| {
                    c.value
                        .as_ref()
                        .map(|v| (c.name.to_string(), v.to_string()))
                })
                .collect(),
        });
    }
    let answers = create(shard, topics, request.validate_only).await;
    let image = shard.image();
    let results = request
        .topics
        .into_iter()
        .zip(answers)
        .map(|(t, (code, message))| {
            let mut r = CreatableTopicResult::default();
            if let Some(meta) = image.topics.get(t.name.as_str()) {
                if code == ErrorCode::None {
                    r.topic_id = uuid(meta.topic_id);
                    r.num_partitions = meta.partitions as i32;
                    r.replication_factor = 1;
                }
            }
            if code != ErrorCode::None || request.validate_only {
                r.num_partitions = if t.num_partitions > 0 {
                    t.num_partitions
                } else {
                    -1
                };
                r.replication_factor = -1;
            }
            r.name = t.name;
            r.error_code = code.code();
            r.error_message = message.as_deref().map(str_bytes);
            r
        })
        .collect();
    ResponseKind::CreateTopics(CreateTopicsResponse::default().with_topics(results))
}
