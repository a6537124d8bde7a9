//! IncrementalAlterConfigs: change a topic's config overrides (SET and DELETE). Runs on: the
//! connection's shard; the change is a metadata record written by the controller shard, and
//! every shard applies it to its partitions of the topic. Broker resources are refused: broker
//! settings come from flags and the config file, read at start.

use kafka_protocol::messages::incremental_alter_configs_response::{
    AlterConfigsResourceResponse, IncrementalAlterConfigsResponse,
};
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, ResponseKind};

use super::str_bytes;
use crate::cluster::controller::ControllerOp;
use crate::protocol::ErrorCode;
use crate::shard::ShardRef;

/// Kafka's ConfigResource.Type for topics.
const RESOURCE_TOPIC: i8 = 2;
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;

use crate::cluster::controller::ConfigChanges as Changes;

pub async fn handle(shard: &ShardRef, request: IncrementalAlterConfigsRequest) -> ResponseKind {
    // Per resource: the changes to send to the controller, or the answer already known.
    let mut plans: Vec<Result<(String, Changes), (ErrorCode, String)>> = Vec::new();
    for r in &request.resources {
        plans.push(plan(r.resource_type, &r.resource_name, &r.configs));
    }
    let topics: Vec<(String, Changes)> = plans
        .iter()
        .filter_map(|p| p.as_ref().ok().cloned())
        .collect();
    let mut answers = Vec::new().into_iter();
    if !topics.is_empty() {
        let count = topics.len();
        let validate_only = request.validate_only;
        answers = super::ask_controller(
            shard,
            count,
            ControllerOp::AlterTopicConfigs {
                topics,
                validate_only,
            },
        )
        .await
        .into_iter();
    }
    let responses = request
        .resources
        .iter()
        .zip(plans)
        .map(|(r, p)| {
            let (code, message) = match p {
                Ok(_) => answers
                    .next()
                    .unwrap_or((ErrorCode::UnknownServerError, None)),
                Err((code, message)) => (code, Some(message)),
            };
            AlterConfigsResourceResponse::default()
                .with_error_code(code.code())
                .with_error_message(message.as_deref().map(str_bytes))
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone())
        })
        .collect();
    ResponseKind::IncrementalAlterConfigs(
        IncrementalAlterConfigsResponse::default().with_responses(responses),
    )
}

fn plan(
    resource_type: i8,
    name: &str,
    configs: &[kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig],
) -> Result<(String, Changes), (ErrorCode, String)> {
    if resource_type != RESOURCE_TOPIC {
        return Err((
            ErrorCode::InvalidRequest,
            "only topic configs can be altered; broker settings are read at start".into(),
        ));
    }
    let mut changes = Vec::with_capacity(configs.len());
    for c in configs {
        let key = c.name.to_string();
        match (c.config_operation, &c.value) {
            (OP_SET, Some(v)) => changes.push((key, Some(v.to_string()))),
            (OP_SET, None) => {
                return Err((ErrorCode::InvalidConfig, format!("SET {key} needs a value")))
            }
            (OP_DELETE, _) => changes.push((key, None)),
            (op, _) => {
                return Err((
                    ErrorCode::InvalidConfig,
                    format!(
                        "operation {op} on {key}: no topic config is a list (use SET or DELETE)"
                    ),
                ))
            }
        }
    }
    Ok((name.to_string(), changes))
}
