//! DescribeCluster: this node, as broker and controller. Runs on: the connection's shard.

use kafka_protocol::messages::describe_cluster_response::{
    DescribeClusterBroker, DescribeClusterResponse,
};
use kafka_protocol::messages::{BrokerId, ResponseKind};

use super::str_bytes;
use crate::shard::ShardRef;

pub fn handle(shard: &ShardRef) -> ResponseKind {
    let c = &shard.config;
    let broker = DescribeClusterBroker::default()
        .with_broker_id(BrokerId(c.node_id.0))
        .with_host(str_bytes(&c.advertise_host))
        .with_port(c.advertise_port as i32);
    ResponseKind::DescribeCluster(
        DescribeClusterResponse::default()
            .with_cluster_id(str_bytes(&shard.image().cluster_id))
            .with_controller_id(BrokerId(c.node_id.0))
            .with_brokers(vec![broker]),
    )
}
