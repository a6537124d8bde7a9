//! Heartbeat: keeps a member's session alive; tells it when to rejoin. Runs on: the
//! connection's shard, answered by the coordinator's.

use kafka_protocol::messages::heartbeat_response::HeartbeatResponse;
use kafka_protocol::messages::{HeartbeatRequest, ResponseKind};

use crate::group::coordinator::{GroupCall, GroupReply};
use crate::group::GroupCode;
use crate::server::errors::WireCode;
use crate::shard::ShardRef;

pub async fn handle(shard: &ShardRef, request: HeartbeatRequest) -> ResponseKind {
    let group_id = request.group_id.to_string();
    let call = GroupCall::Heartbeat {
        group_id: group_id.clone(),
        member_id: request.member_id.to_string(),
        generation_id: crate::protocol::types::GenerationId(request.generation_id),
    };
    let code = match shard.group_call(&group_id, call).await {
        GroupReply::Code(e) => e,
        _ => GroupCode::Unexpected,
    };
    ResponseKind::Heartbeat(HeartbeatResponse::default().with_error_code(code.code()))
}
