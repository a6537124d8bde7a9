//! `tusk cluster info`: the cluster id, the controller and every broker (id, address, alive,
//! controller, Raft role, committed metadata offset), from Metadata and each broker's own
//! DescribeConfigs (its `tusk.raft.*` and `tusk.metadata.*` entries), and the partitions that
//! are under-replicated or offline. `tusk cluster elect-leaders`: preferred-leader elections
//! (ElectLeaders). Runs on: the CLI thread.

use clap::Subcommand;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::{ApiKey, DescribeConfigsRequest};
use kafka_protocol::protocol::StrBytes;
use serde_json::json;

use super::output::{emit, Table};
use super::topic::{metadata, ClientArgs};
use crate::client::Connection;

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Cluster id, controller, brokers (alive, Raft role, committed metadata), topic count,
    /// under-replicated and offline partitions
    Info,
    /// Moves leadership back to each partition's preferred replica where it is live and in
    /// sync (after failovers left it elsewhere)
    ElectLeaders {
        /// Only this topic's partitions (repeatable) [default: every partition]
        #[arg(long)]
        topic: Vec<String>,
    },
}

/// One broker as the table shows it.
struct BrokerRow {
    node_id: i32,
    address: String,
    alive: bool,
    role: String,
    committed: String,
}

/// The `tusk.*` broker entries `node_id` reports about itself (empty if it cannot answer).
fn broker_entries(conn: &mut Connection, node_id: i32) -> Vec<(String, String)> {
    let request =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(4)
            .with_resource_name(StrBytes::from_string(node_id.to_string()))
            .with_configuration_keys(None)]);
    let Ok(v) = conn.version(ApiKey::DescribeConfigs, 4) else {
        return Vec::new();
    };
    let Ok(r) = conn.call(request, v) else {
        return Vec::new();
    };
    r.results
        .into_iter()
        .flat_map(|res| res.configs)
        .filter(|c| c.name.starts_with("tusk."))
        .map(|c| {
            (
                c.name.to_string(),
                c.value.map(|v| v.to_string()).unwrap_or_default(),
            )
        })
        .collect()
}

fn entry(entries: &[(String, String)], key: &str) -> String {
    entries
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| "-".into())
}

pub fn run(command: ClusterCommand, client: &ClientArgs) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Info => info(client),
        ClusterCommand::ElectLeaders { topic } => elect_leaders(client, &topic),
    }
}

/// ElectLeaders (preferred) for `topics`' partitions, or every partition.
fn elect_leaders(client: &ClientArgs, topics: &[String]) -> anyhow::Result<()> {
    use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
    use kafka_protocol::messages::ElectLeadersRequest;
    let mut conn = client.connect()?;
    let asked = if topics.is_empty() {
        None
    } else {
        let r = metadata(
            &mut conn,
            Some(&topics.iter().map(|t| t.as_str()).collect::<Vec<_>>()),
        )?;
        Some(
            r.topics
                .iter()
                .map(|t| {
                    TopicPartitions::default()
                        .with_topic(t.name.clone().unwrap_or_default())
                        .with_partitions(t.partitions.iter().map(|p| p.partition_index).collect())
                })
                .collect(),
        )
    };
    let request = ElectLeadersRequest::default()
        .with_topic_partitions(asked)
        .with_timeout_ms(30_000);
    let version = conn.version(ApiKey::ElectLeaders, 2)?;
    let response = conn.call(request, version)?;
    let mut rows = Vec::new();
    for t in &response.replica_election_results {
        for p in &t.partition_result {
            let code = crate::protocol::ErrorCode::from_code(p.error_code);
            rows.push(json!({
                "topic": t.topic.to_string(),
                "partition": p.partition_id,
                "result": match code {
                    Some(crate::protocol::ErrorCode::None) => "elected".to_string(),
                    Some(c) => c.name(),
                    None => format!("error {}", p.error_code),
                },
                "message": p.error_message.as_ref().map(|m| m.to_string()),
            }));
        }
    }
    let elected = rows.iter().filter(|r| r["result"] == "elected").count();
    let value = json!({"elected": elected, "partitions": rows});
    emit(client.json, value, || {
        let mut t = Table::new(&["TOPIC", "PARTITION", "RESULT"]);
        for r in &rows {
            t.row(vec![
                r["topic"].as_str().unwrap_or_default().to_string(),
                r["partition"].to_string(),
                r["result"].as_str().unwrap_or_default().to_string(),
            ]);
        }
        format!(
            "{elected} partition(s) moved to their preferred leader\n\n{}",
            t.render()
        )
    });
    Ok(())
}

fn info(client: &ClientArgs) -> anyhow::Result<()> {
    let mut conn = client.connect()?;
    let r = metadata(&mut conn, None)?;
    let cluster_id = r
        .cluster_id
        .as_ref()
        .map(|c| c.to_string())
        .unwrap_or_default();
    let mut rows = Vec::new();
    for b in &r.brokers {
        let address = format!("{}:{}", b.host, b.port);
        let entries = match Connection::connect(&address, "tusk-cli") {
            Ok(mut c) => broker_entries(&mut c, b.node_id.0),
            Err(_) => Vec::new(),
        };
        rows.push(BrokerRow {
            node_id: b.node_id.0,
            address,
            alive: true,
            role: entry(&entries, "tusk.raft.role"),
            committed: entry(&entries, "tusk.metadata.committed.offset"),
        });
    }
    let own = broker_entries(&mut conn, -1);
    let fenced = entry(&own, "tusk.cluster.fenced.brokers");
    for item in fenced.split(',').filter(|s| !s.is_empty() && *s != "-") {
        if let Some((id, address)) = item.split_once('@') {
            rows.push(BrokerRow {
                node_id: id.parse().unwrap_or(-1),
                address: address.to_string(),
                alive: false,
                role: "-".into(),
                committed: "-".into(),
            });
        }
    }
    rows.sort_by_key(|b| b.node_id);
    let controller = r.controller_id.0;
    let partitions = r.topics.iter().flat_map(|t| t.partitions.iter());
    let under_replicated = partitions
        .clone()
        .filter(|p| p.isr_nodes.len() < p.replica_nodes.len())
        .count();
    let offline = partitions.filter(|p| p.leader_id.0 < 0).count();
    let value = json!({
        "cluster_id": cluster_id,
        "controller_id": controller,
        "brokers": rows.iter().map(|b| json!({
            "node_id": b.node_id,
            "address": b.address,
            "alive": b.alive,
            "controller": b.node_id == controller,
            "raft_role": b.role,
            "committed_metadata_offset": b.committed,
        })).collect::<Vec<_>>(),
        "topics": r.topics.len(),
        "under_replicated_partitions": under_replicated,
        "offline_partitions": offline,
    });
    emit(client.json, value, || {
        let mut t = Table::new(&[
            "NODE",
            "ADDRESS",
            "ALIVE",
            "CONTROLLER",
            "RAFT ROLE",
            "COMMITTED",
        ]);
        for b in &rows {
            let c = if b.node_id == controller { "yes" } else { "" };
            let alive = if b.alive { "yes" } else { "no (fenced)" };
            t.row(vec![
                b.node_id.to_string(),
                b.address.clone(),
                alive.into(),
                c.into(),
                b.role.clone(),
                b.committed.clone(),
            ]);
        }
        format!(
            "cluster {cluster_id}, {} topic(s), {under_replicated} under-replicated and \
             {offline} offline partition(s)\n\n{}",
            r.topics.len(),
            t.render()
        )
    });
    Ok(())
}
