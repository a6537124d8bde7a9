//! ListGroups: every shard's coordinator is asked; the answers are merged. Runs on: the
//! connection's shard.

use kafka_protocol::messages::list_groups_response::{ListGroupsResponse, ListedGroup};
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ResponseKind};

use super::str_bytes;
use crate::group::coordinator::{GroupCall, GroupReply};
use crate::protocol::types::ShardId;
use crate::shard::ShardRef;

pub async fn handle(shard: &ShardRef, request: ListGroupsRequest) -> ResponseKind {
    let mut groups = Vec::new();
    for s in 0..shard.shard_count {
        if let GroupReply::Listed(listed) = shard.group_call_on(ShardId(s), GroupCall::List).await {
            groups.extend(listed);
        }
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
        .filter(|(_, _, state)| wanted(state))
        .map(|(id, protocol_type, state)| {
            ListedGroup::default()
                .with_group_id(GroupId(str_bytes(&id)))
                .with_protocol_type(str_bytes(&protocol_type))
                .with_group_state(str_bytes(&state))
                .with_group_type(str_bytes("classic"))
        })
        .collect();
    ResponseKind::ListGroups(ListGroupsResponse::default().with_groups(listed))
}
