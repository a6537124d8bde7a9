//! ListGroups: every shard's coordinator is asked; the answers are merged, and a shard that
//! cannot answer (its offsets partition offline) sets the response's error code. Runs on:
//! the connection's shard.

use kafka_protocol::messages::list_groups_response::{ListGroupsResponse, ListedGroup};
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ResponseKind};

use super::str_bytes;
use crate::group::calls::List;
use crate::group::GroupCode;
use crate::protocol::types::ShardId;
use crate::server::errors::WireCode;
use crate::shard::ShardRef;

pub async fn handle(shard: &ShardRef, request: ListGroupsRequest) -> ResponseKind {
    let mut groups = Vec::new();
    let mut error = GroupCode::Ok;
    for s in 0..shard.shard_count {
        let reply = shard.group_call_on(ShardId(s), List).await;
        if reply.error != GroupCode::Ok {
            error = reply.error;
        }
        groups.extend(reply.groups);
    }
    let wanted = |state: &str| {
        request.states_filter.is_empty()
            || request
                .states_filter
                .iter()
                .any(|f| f.eq_ignore_ascii_case(state))
    };
    let listed = groups
        .into_iter()
        .filter(|g| wanted(&g.state))
        .map(|g| {
            ListedGroup::default()
                .with_group_id(GroupId(str_bytes(&g.group_id)))
                .with_protocol_type(str_bytes(&g.protocol_type))
                .with_group_state(str_bytes(&g.state))
                .with_group_type(str_bytes("classic"))
        })
        .collect();
    ResponseKind::ListGroups(
        ListGroupsResponse::default()
            .with_error_code(error.code())
            .with_groups(listed),
    )
}
