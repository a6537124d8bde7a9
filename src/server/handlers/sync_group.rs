//! SyncGroup: the leader's assignment goes to the coordinator, every member gets its own back.
//! Runs on: the connection's shard (this file) and the coordinator's (the wait).

use kafka_protocol::messages::sync_group_response::SyncGroupResponse;
use kafka_protocol::messages::{ResponseKind, SyncGroupRequest};

use super::str_bytes;
use crate::group::calls::{Sync, SyncReply};
use crate::server::errors::WireCode;
use crate::shard::ShardRef;

pub async fn handle(shard: &ShardRef, request: SyncGroupRequest) -> ResponseKind {
    let group_id = request.group_id.to_string();
    let call = Sync {
        group_id,
        member_id: request.member_id.to_string(),
        generation_id: crate::protocol::types::GenerationId(request.generation_id),
        assignments: request
            .assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), a.assignment))
            .collect(),
    };
    let mut response = SyncGroupResponse::default();
    let SyncReply {
        error,
        assignment,
        protocol_type,
        protocol_name,
    } = shard.group_call(call).await;
    response.error_code = error.code();
    response.assignment = assignment;
    response.protocol_type = protocol_type.as_deref().map(str_bytes);
    response.protocol_name = protocol_name.as_deref().map(str_bytes);
    ResponseKind::SyncGroup(response)
}
