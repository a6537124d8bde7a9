//! Heartbeat: keeps a member's session alive; tells it when to rejoin. Runs on: the
//! connection's shard, answered by the coordinator's.

use kafka_protocol::messages::heartbeat_response::HeartbeatResponse;
use kafka_protocol::messages::{HeartbeatRequest, ResponseKind};

use crate::group::calls::Heartbeat;
use crate::server::errors::WireCode;
use crate::shard::ShardRef;

pub async fn handle(shard: &ShardRef, request: HeartbeatRequest) -> ResponseKind {
    let group_id = request.group_id.to_string();
    let call = Heartbeat {
        group_id,
        member_id: request.member_id.to_string(),
        generation_id: crate::protocol::types::GenerationId(request.generation_id),
    };
    let code = shard.group_call(call).await;
    ResponseKind::Heartbeat(HeartbeatResponse::default().with_error_code(code.code()))
}
