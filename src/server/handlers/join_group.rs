//! JoinGroup: runs on the group's coordinator shard and waits there until the join phase ends.
//! Runs on: the connection's shard (this file) and the coordinator's (the wait).

use kafka_protocol::messages::join_group_response::{JoinGroupResponse, JoinGroupResponseMember};
use kafka_protocol::messages::{JoinGroupRequest, ResponseKind};

use super::str_bytes;
use crate::group::calls::{Join, JoinReply};
use crate::group::GroupCode;
use crate::group::JoinRequest;
use crate::server::errors::WireCode;
use crate::shard::ShardRef;

pub async fn handle(
    shard: &ShardRef,
    request: JoinGroupRequest,
    version: i16,
    client_id: String,
    client_host: String,
) -> ResponseKind {
    let group_id = request.group_id.to_string();
    let session = request.session_timeout_ms;
    let join = JoinRequest {
        member_id: request.member_id.to_string(),
        client_id,
        client_host,
        session_timeout_ms: session,
        // v0 has no rebalance timeout: it equals the session timeout.
        rebalance_timeout_ms: if version >= 1 {
            request.rebalance_timeout_ms
        } else {
            session
        },
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
        require_known_member_id: version >= 4,
        group_instance_id: request.group_instance_id.map(|i| i.to_string()),
    };
    let reply = if group_id.is_empty() {
        JoinReply::error(GroupCode::InvalidGroupId, String::new())
    } else {
        shard
            .group_call(Join {
                group_id,
                request: join,
            })
            .await
    };
    let mut response = JoinGroupResponse::default().with_generation_id(-1);
    let JoinReply {
        error,
        member_id,
        protocol_type,
        result,
    } = reply;
    response.error_code = error.code();
    response.member_id = str_bytes(&member_id);
    response.protocol_type = protocol_type.as_deref().map(str_bytes);
    if let Some(r) = result {
        response.generation_id = r.generation_id.0;
        response.protocol_name = Some(str_bytes(&r.protocol_name));
        response.leader = str_bytes(&r.leader);
        response.member_id = str_bytes(&r.member_id);
        response.members = r
            .members
            .into_iter()
            .map(|(id, metadata)| {
                JoinGroupResponseMember::default()
                    .with_member_id(str_bytes(&id))
                    .with_metadata(metadata)
            })
            .collect();
    }
    ResponseKind::JoinGroup(response)
}
