//! FindCoordinator: on one node this broker coordinates every group (v0-v3 one key, v4+ a
//! batch of keys). Transaction coordinators are not served. Runs on: the connection's shard.

use kafka_protocol::messages::find_coordinator_response::{Coordinator, FindCoordinatorResponse};
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, ResponseKind};

use super::str_bytes;
use crate::protocol::ErrorCode;
use crate::shard::ShardRef;

const KEY_TYPE_GROUP: i8 = 0;

pub fn handle(shard: &ShardRef, request: FindCoordinatorRequest, version: i16) -> ResponseKind {
    let c = &shard.config;
    let error = if request.key_type == KEY_TYPE_GROUP {
        ErrorCode::None
    } else {
        ErrorCode::CoordinatorNotAvailable
    };
    let mut response = FindCoordinatorResponse::default();
    if version >= 4 {
        response.coordinators = request
            .coordinator_keys
            .into_iter()
            .map(|key| {
                Coordinator::default()
                    .with_key(key)
                    .with_node_id(BrokerId(c.node_id.0))
                    .with_host(str_bytes(&c.advertise_host))
                    .with_port(c.advertise_port as i32)
                    .with_error_code(error.code())
            })
            .collect();
    } else {
        response.error_code = error.code();
        response.node_id = BrokerId(if error == ErrorCode::None {
            c.node_id.0
        } else {
            -1
        });
        response.host = str_bytes(&c.advertise_host);
        response.port = c.advertise_port as i32;
    }
    ResponseKind::FindCoordinator(response)
}
