//! DeleteGroups: an empty group and its committed offsets go away (NON_EMPTY_GROUP while it has
//! members, GROUP_ID_NOT_FOUND if unknown). Runs on: the connection's shard.

use kafka_protocol::messages::delete_groups_response::{
    DeletableGroupResult, DeleteGroupsResponse,
};
use kafka_protocol::messages::{DeleteGroupsRequest, ResponseKind};

use crate::group::calls::Delete;
use crate::server::errors::WireCode;
use crate::shard::ShardRef;

pub async fn handle(shard: &ShardRef, request: DeleteGroupsRequest) -> ResponseKind {
    let mut results = Vec::new();
    for id in request.groups_names {
        let group_id = id.to_string();
        let code = shard.group_call(Delete { group_id }).await;
        results.push(
            DeletableGroupResult::default()
                .with_group_id(id)
                .with_error_code(code.code()),
        );
    }
    ResponseKind::DeleteGroups(DeleteGroupsResponse::default().with_results(results))
}
