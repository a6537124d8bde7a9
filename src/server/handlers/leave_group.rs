//! LeaveGroup: one member (v0-v2) or a batch of members by id or instance id (v3+). Runs on:
//! the connection's shard, answered by the coordinator's.

use kafka_protocol::messages::leave_group_response::{LeaveGroupResponse, MemberResponse};
use kafka_protocol::messages::{LeaveGroupRequest, ResponseKind};

use crate::group::calls::Leave;
use crate::group::GroupCode;
use crate::server::errors::WireCode;
use crate::shard::ShardRef;

pub async fn handle(shard: &ShardRef, request: LeaveGroupRequest, version: i16) -> ResponseKind {
    let group_id = request.group_id.to_string();
    // A member named twice leaves once; the response lists it once.
    let mut request = request;
    request.members = super::first_of_each(std::mem::take(&mut request.members), |m| {
        (m.member_id.clone(), m.group_instance_id.clone())
    });
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        request
            .members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|i| i.to_string()),
                )
            })
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    let codes = shard.group_call(Leave { group_id, members }).await;
    let mut response = LeaveGroupResponse::default();
    if version >= 3 {
        response.members = request
            .members
            .into_iter()
            .zip(&codes)
            .map(|(m, code)| {
                MemberResponse::default()
                    .with_member_id(m.member_id)
                    .with_group_instance_id(m.group_instance_id)
                    .with_error_code(code.code())
            })
            .collect();
    } else {
        response.error_code = codes.first().copied().unwrap_or(GroupCode::Ok).code();
    }
    ResponseKind::LeaveGroup(response)
}
