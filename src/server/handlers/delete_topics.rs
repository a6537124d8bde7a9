//! DeleteTopics (by name, or by id from v6). Runs on: the connection's shard; the work happens on
//! the controller shard.

use kafka_protocol::messages::delete_topics_response::{
    DeletableTopicResult, DeleteTopicsResponse,
};
use kafka_protocol::messages::{DeleteTopicsRequest, ResponseKind, TopicName};

use super::{str_bytes, uuid};
use crate::cluster::controller::ControllerOp;
use crate::protocol::ErrorCode;
use crate::shard::ShardRef;

pub async fn handle(shard: &ShardRef, request: DeleteTopicsRequest) -> ResponseKind {
    let image = shard.image();
    let mut names: Vec<String> = request.topic_names.iter().map(|n| n.to_string()).collect();
    for t in &request.topics {
        match &t.name {
            Some(n) => names.push(n.to_string()),
            None => names.push(
                image
                    .topic_by_id(&crate::protocol::types::TopicId(*t.topic_id.as_bytes()))
                    .map(|m| m.name.clone())
                    .unwrap_or_default(),
            ),
        }
    }
    let names = super::first_of_each(names, |n: &String| n.clone());
    let ids: Vec<_> = names
        .iter()
        .map(|n| image.topics.get(n).map(|m| m.topic_id))
        .collect();
    let asked = names.clone();
    let codes: Vec<ErrorCode> = super::ask_controller(
        shard,
        names.len(),
        ControllerOp::DeleteTopics { names: asked },
    )
    .await
    .into_iter()
    .map(|(code, _)| code)
    .collect();
    let responses = names
        .into_iter()
        .zip(ids)
        .zip(codes)
        .map(|((name, id), code)| {
            let mut r = DeletableTopicResult::default();
            r.name = Some(TopicName(str_bytes(&name)));
            if let Some(id) = id {
                r.topic_id = uuid(id);
            }
            r.error_code = code.code();
            r
        })
        .collect();
    ResponseKind::DeleteTopics(DeleteTopicsResponse::default().with_responses(responses))
}
