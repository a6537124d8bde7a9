//! CreatePartitions: grow a topic. Runs on: the connection's shard; the work happens on the
//! controller shard.

use futures_channel::oneshot;
use kafka_protocol::messages::create_partitions_response::{
    CreatePartitionsResponse, CreatePartitionsTopicResult,
};
use kafka_protocol::messages::{CreatePartitionsRequest, ResponseKind};

use super::str_bytes;
use crate::cluster::controller;
use crate::protocol::ErrorCode;
use crate::runtime::mesh::ControllerRequest;
use crate::runtime::shard::ShardRef;

pub async fn handle(shard: &ShardRef, request: CreatePartitionsRequest) -> ResponseKind {
    let topics: Vec<(String, u32)> = request
        .topics
        .iter()
        .map(|t| (t.name.to_string(), t.count.max(0) as u32))
        .collect();
    let count = topics.len();
    let (tx, rx) = oneshot::channel();
    let call = ControllerRequest::CreatePartitions {
        topics,
        validate_only: request.validate_only,
        reply: tx,
    };
    controller::call(shard, call).await;
    let answers = rx
        .await
        .unwrap_or_else(|_| vec![(ErrorCode::UnknownServerError, None); count]);
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
