//! DescribeCluster: this node as broker and controller on one node; in a cluster the live
//! brokers and the active controller. Runs on: the connection's shard.

use kafka_protocol::messages::describe_cluster_response::{
    DescribeClusterBroker, DescribeClusterResponse,
};
use kafka_protocol::messages::{BrokerId, ResponseKind};

use super::str_bytes;
use crate::shard::ShardRef;

pub async fn handle(shard: &ShardRef) -> ResponseKind {
    let c = &shard.config;
    let image = shard.image();
    let brokers = if c.cluster.is_some() {
        image
            .live_brokers()
            .map(|b| {
                DescribeClusterBroker::default()
                    .with_broker_id(BrokerId(b.node_id))
                    .with_host(str_bytes(&b.host))
                    .with_port(b.port as i32)
            })
            .collect()
    } else {
        vec![DescribeClusterBroker::default()
            .with_broker_id(BrokerId(c.node_id.0))
            .with_host(str_bytes(&c.advertise_host))
            .with_port(c.advertise_port as i32)]
    };
    ResponseKind::DescribeCluster(
        DescribeClusterResponse::default()
            .with_cluster_id(str_bytes(&image.cluster_id))
            .with_controller_id(BrokerId(shard.controller_id()))
            .with_brokers(brokers),
    )
}
