//! DescribeGroups: state, protocol and members of each group, from its coordinator. An unknown
//! group is described as Dead with no error, as Kafka does. Runs on: the connection's shard.

use kafka_protocol::messages::describe_groups_response::{
    DescribeGroupsResponse, DescribedGroup, DescribedGroupMember,
};
use kafka_protocol::messages::{DescribeGroupsRequest, ResponseKind};

use super::str_bytes;
use crate::group::calls::Describe;
use crate::group::GroupCode;
use crate::server::errors::WireCode;
use crate::shard::ShardRef;

pub async fn handle(shard: &ShardRef, request: DescribeGroupsRequest) -> ResponseKind {
    let mut groups = Vec::new();
    // Each group is described once however often it is named; an id too long to be a group's
    // is answered without asking a coordinator.
    for id in super::first_of_each(request.groups, |g| g.0.clone()) {
        let group_id = id.to_string();
        if group_id.len() > crate::constants::GROUP_ID_BYTES_MAX {
            groups.push(
                DescribedGroup::default()
                    .with_group_id(id)
                    .with_error_code(GroupCode::InvalidGroupId.code()),
            );
            continue;
        }
        let mut described = DescribedGroup::default().with_group_id(id);
        match shard.group_call(Describe { group_id }).await {
            Err(e) => described.error_code = e.code(),
            Ok(d) => {
                described.group_state = str_bytes(&d.state);
                described.protocol_type = str_bytes(&d.protocol_type);
                described.protocol_data = str_bytes(&d.protocol_name);
                described.members = d
                    .members
                    .into_iter()
                    .map(|m| {
                        DescribedGroupMember::default()
                            .with_member_id(str_bytes(&m.member_id))
                            .with_group_instance_id(m.instance_id.as_deref().map(str_bytes))
                            .with_client_id(str_bytes(&m.client_id))
                            .with_client_host(str_bytes(&m.client_host))
                            .with_member_metadata(m.metadata)
                            .with_member_assignment(m.assignment)
                    })
                    .collect();
            }
        }
        groups.push(described);
    }
    ResponseKind::DescribeGroups(DescribeGroupsResponse::default().with_groups(groups))
}
