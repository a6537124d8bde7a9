//! FindCoordinator: on one node this broker coordinates every group; in a cluster the broker
//! leading the group's offsets partition does (the offsets partitions are placed on the first
//! FindCoordinator, once enough brokers are live: COORDINATOR_NOT_AVAILABLE until then). v0-v3
//! carry one key, v4+ a batch. Transaction coordinators are not served. Runs on: the
//! connection's shard.

use kafka_protocol::messages::find_coordinator_response::{Coordinator, FindCoordinatorResponse};
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, ResponseKind};

use super::str_bytes;
use crate::protocol::ErrorCode;
use crate::shard::ShardRef;

const KEY_TYPE_GROUP: i8 = 0;

/// Where a group's coordinator is: (error, node id, host, port).
fn locate(shard: &ShardRef, key: &str) -> (ErrorCode, i32, String, i32) {
    let c = &shard.config;
    if c.cluster.is_none() {
        let port = c.advertise_port as i32;
        return (ErrorCode::None, c.node_id.0, c.advertise_host.clone(), port);
    }
    let image = shard.image();
    match shard
        .coordinator_of(&image, key)
        .and_then(|id| image.brokers.get(&id))
    {
        Some(b) => (ErrorCode::None, b.node_id, b.host.clone(), b.port as i32),
        None => (ErrorCode::CoordinatorNotAvailable, -1, String::new(), -1),
    }
}

pub async fn handle(
    shard: &ShardRef,
    request: FindCoordinatorRequest,
    version: i16,
) -> ResponseKind {
    let placed = shard.image().offsets.len() as u32 >= crate::constants::OFFSETS_PARTITIONS;
    if shard.config.cluster.is_some() && !placed && request.key_type == KEY_TYPE_GROUP {
        let op = crate::cluster::controller::ControllerOp::PlaceOffsets;
        if let Some(Err(e)) = crate::shard::metadata::ask(shard, op)
            .await
            .and_then(|a| a.into_iter().next())
        {
            tracing::debug!(reason = %e.message(), "group coordinators not placed yet");
        }
    }
    let answer = |key: &str| {
        if request.key_type == KEY_TYPE_GROUP {
            locate(shard, key)
        } else {
            (ErrorCode::CoordinatorNotAvailable, -1, String::new(), -1)
        }
    };
    let mut response = FindCoordinatorResponse::default();
    if version >= 4 {
        response.coordinators = request
            .coordinator_keys
            .into_iter()
            .map(|key| {
                let (error, node, host, port) = answer(&key);
                Coordinator::default()
                    .with_key(key)
                    .with_node_id(BrokerId(node))
                    .with_host(str_bytes(&host))
                    .with_port(port)
                    .with_error_code(error.code())
            })
            .collect();
    } else {
        let (error, node, host, port) = answer(&request.key);
        response.error_code = error.code();
        response.node_id = BrokerId(node);
        response.host = str_bytes(&host);
        response.port = port;
    }
    ResponseKind::FindCoordinator(response)
}
