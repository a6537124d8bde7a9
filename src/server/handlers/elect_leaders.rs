//! ElectLeaders: preferred-leader elections, so leadership moves back to each partition's
//! preferred replica after failovers left it elsewhere. A null partition list means every
//! partition. Unclean elections (election type 1) are never made: they can lose acknowledged
//! records; each partition asked is answered with POLICY_VIOLATION. Runs on: the connection's
//! shard; the elections happen at the active controller.

use std::collections::BTreeMap;

use kafka_protocol::messages::elect_leaders_response::{
    ElectLeadersResponse, PartitionResult, ReplicaElectionResult,
};
use kafka_protocol::messages::{ElectLeadersRequest, ResponseKind};

use super::str_bytes;
use crate::cluster::controller::ControllerOp;
use crate::protocol::ErrorCode;
use crate::shard::ShardRef;

pub async fn handle(shard: &ShardRef, request: ElectLeadersRequest) -> ResponseKind {
    let image = shard.image();
    // Each partition once, however often it is named (duplicates never multiply work).
    let mut asked: BTreeMap<(String, i32), ()> = BTreeMap::new();
    match &request.topic_partitions {
        Some(topics) => {
            for t in topics {
                for p in &t.partitions {
                    asked.insert((t.topic.to_string(), *p), ());
                }
            }
        }
        None => {
            for t in image.topics.values() {
                for p in t.assignments.keys() {
                    asked.insert((t.name.clone(), *p as i32), ());
                }
            }
        }
    }
    let asked: Vec<(String, i32)> = asked.into_keys().collect();
    let answers: Vec<(ErrorCode, Option<String>)> = if request.election_type != 0 {
        let why = "unclean leader election is never done: it can lose acknowledged records";
        vec![(ErrorCode::PolicyViolation, Some(why.to_string())); asked.len()]
    } else if shard.config.cluster.is_none() {
        let why = "a one-broker cluster has one replica per partition";
        vec![(ErrorCode::ElectionNotNeeded, Some(why.to_string())); asked.len()]
    } else {
        let partitions: Vec<(String, u32)> = asked
            .iter()
            .map(|(t, p)| (t.clone(), u32::try_from(*p).unwrap_or(u32::MAX)))
            .collect();
        let count = partitions.len();
        let op = ControllerOp::ElectPreferred { partitions };
        super::ask_controller(shard, count, op).await
    };
    let mut by_topic: BTreeMap<String, Vec<PartitionResult>> = BTreeMap::new();
    for ((topic, p), (code, message)) in asked.into_iter().zip(answers) {
        by_topic.entry(topic).or_default().push(
            PartitionResult::default()
                .with_partition_id(p)
                .with_error_code(code.code())
                .with_error_message(message.as_deref().map(str_bytes)),
        );
    }
    let results = by_topic
        .into_iter()
        .map(|(topic, partitions)| {
            ReplicaElectionResult::default()
                .with_topic(kafka_protocol::messages::TopicName(str_bytes(&topic)))
                .with_partition_result(partitions)
        })
        .collect();
    ResponseKind::ElectLeaders(
        ElectLeadersResponse::default().with_replica_election_results(results),
    )
}
