//! DescribeConfigs for topics (their effective log settings) and the broker (its main settings),
//! enough for admin clients and `kafka-configs`-style tools. Runs on: the connection's shard.

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResponse, DescribeConfigsResult,
};
use kafka_protocol::messages::{DescribeConfigsRequest, ResponseKind};

use super::str_bytes;
use crate::protocol::ErrorCode;
use crate::shard::ShardRef;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const SOURCE_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

fn entry(name: &str, value: String, source: i8, read_only: bool) -> DescribeConfigsResourceResult {
    DescribeConfigsResourceResult::default()
        .with_name(str_bytes(name))
        .with_value(Some(str_bytes(&value)))
        .with_read_only(read_only)
        .with_config_source(source)
}

pub fn handle(shard: &ShardRef, request: DescribeConfigsRequest) -> ResponseKind {
    let image = shard.image();
    let c = &shard.config;
    let resources = super::first_of_each(request.resources, |r| {
        (r.resource_type, r.resource_name.clone())
    });
    let results = resources
        .into_iter()
        .map(|res| {
            let mut out = DescribeConfigsResult::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name.clone());
            let entries: Vec<DescribeConfigsResourceResult> = match res.resource_type {
                RESOURCE_TOPIC => match image.topics.get(res.resource_name.as_str()) {
                    Some(topic) => {
                        let log = c.topic_log_config(&topic.configs);
                        let src = |k: &str| {
                            if topic.configs.contains_key(k) {
                                SOURCE_TOPIC
                            } else {
                                SOURCE_DEFAULT
                            }
                        };
                        vec![
                            entry(
                                "retention.ms",
                                log.retention_ms.to_string(),
                                src("retention.ms"),
                                false,
                            ),
                            entry(
                                "retention.bytes",
                                log.retention_bytes.to_string(),
                                src("retention.bytes"),
                                false,
                            ),
                            entry(
                                "segment.bytes",
                                log.segment_bytes.to_string(),
                                src("segment.bytes"),
                                false,
                            ),
                            entry(
                                "segment.ms",
                                log.segment_ms.to_string(),
                                src("segment.ms"),
                                false,
                            ),
                            entry(
                                "max.message.bytes",
                                log.message_max_bytes.to_string(),
                                src("max.message.bytes"),
                                false,
                            ),
                            entry(
                                "cleanup.policy",
                                "delete".into(),
                                src("cleanup.policy"),
                                true,
                            ),
                        ]
                    }
                    None => {
                        out.error_code = ErrorCode::UnknownTopicOrPartition.code();
                        Vec::new()
                    }
                },
                RESOURCE_BROKER => vec![
                    entry(
                        "log.dirs",
                        c.data_dir.display().to_string(),
                        SOURCE_STATIC_BROKER,
                        true,
                    ),
                    entry(
                        "num.partitions",
                        c.default_partitions.to_string(),
                        SOURCE_STATIC_BROKER,
                        true,
                    ),
                    entry(
                        "auto.create.topics.enable",
                        c.auto_create_topics.to_string(),
                        SOURCE_STATIC_BROKER,
                        true,
                    ),
                    entry(
                        "message.max.bytes",
                        c.log.message_max_bytes.to_string(),
                        SOURCE_STATIC_BROKER,
                        true,
                    ),
                    entry(
                        "socket.request.max.bytes",
                        c.socket_request_max_bytes.to_string(),
                        SOURCE_STATIC_BROKER,
                        true,
                    ),
                    entry(
                        "log.segment.bytes",
                        c.log.segment_bytes.to_string(),
                        SOURCE_STATIC_BROKER,
                        true,
                    ),
                    entry(
                        "log.retention.ms",
                        c.log.retention_ms.to_string(),
                        SOURCE_STATIC_BROKER,
                        true,
                    ),
                    // The metadata quorum as this broker sees it (for `tusk cluster info`).
                    entry(
                        "tusk.raft.role",
                        shard.quorum.get().role_name().into(),
                        SOURCE_STATIC_BROKER,
                        true,
                    ),
                    entry(
                        "tusk.metadata.committed.offset",
                        shard.quorum.get().committed.to_string(),
                        SOURCE_STATIC_BROKER,
                        true,
                    ),
                    entry(
                        "tusk.cluster.fenced.brokers",
                        image
                            .brokers
                            .values()
                            .filter(|b| b.fenced)
                            .map(|b| format!("{}@{}:{}", b.node_id, b.host, b.port))
                            .collect::<Vec<_>>()
                            .join(","),
                        SOURCE_STATIC_BROKER,
                        true,
                    ),
                ],
                _ => {
                    out.error_code = ErrorCode::InvalidRequest.code();
                    Vec::new()
                }
            };
            let wanted = res.configuration_keys;
            out.configs = entries
                .into_iter()
                .filter(|e| {
                    wanted
                        .as_ref()
                        .is_none_or(|keys| keys.iter().any(|k| k == &e.name))
                })
                .collect();
            out
        })
        .collect();
    ResponseKind::DescribeConfigs(DescribeConfigsResponse::default().with_results(results))
}
