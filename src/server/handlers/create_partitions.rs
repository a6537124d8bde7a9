//! CreatePartitions: grow a topic. Runs on: the connection's shard; the work happens on the
//! controller shard.

use kafka_protocol::messages::create_partitions_response::{
    CreatePartitionsResponse, CreatePartitionsTopicResult,
};
use kafka_protocol::messages::{CreatePartitionsRequest, ResponseKind};

use super::str_bytes;
use crate::cluster::controller::ControllerOp;
use crate::shard::ShardRef;

pub async fn handle(shard: &ShardRef, request: CreatePartitionsRequest) -> ResponseKind {
    let topics: Vec<(String, u32)> = request
        .topics
        .iter()
        .map(|t| (t.name.to_string(), t.count.max(0) as u32))
        .collect();
    let count = topics.len();
    let validate_only = request.validate_only;
    let answers = super::ask_controller(
        shard,
        count,
        ControllerOp::CreatePartitions {
            topics,
            validate_only,
        },
    )
    .await;
    let results = request
        .topics
        .into_iter()
        .zip(answers)
        .map(|(t, (code, message))| {
            let mut r = CreatePartitionsTopicResult::default();
            r.name = t.name;
            r.error_code = code.code();
            r.error_message = message.as_deref().map(str_bytes);
            r
        })
        .collect();
    ResponseKind::CreatePartitions(CreatePartitionsResponse::default().with_results(results))
}
