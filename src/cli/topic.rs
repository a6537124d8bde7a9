//! `tusk topic create|list|describe|delete|alter-config`: topic administration over the Kafka
//! protocol (CreateTopics, Metadata, ListOffsets, DescribeConfigs, DeleteTopics,
//! IncrementalAlterConfigs). Runs on: the CLI thread.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest,
    DescribeLogDirsRequest, IncrementalAlterConfigsRequest, MetadataRequest, MetadataResponse,
};
use kafka_protocol::protocol::StrBytes;
use serde_json::json;

use super::output::{emit, Table};
use crate::client::{topic_name, ClientError, Connection};

/// Where the broker is and how to print.
#[derive(Debug, Args, Clone)]
pub struct ClientArgs {
    /// A broker to talk to
    #[arg(long, default_value = "127.0.0.1:9092", global = true)]
    pub bootstrap: String,
    /// Print JSON instead of a table
    #[arg(long, global = true)]
    pub json: bool,
}

impl ClientArgs {
    pub fn connect(&self) -> anyhow::Result<Connection> {
        Ok(Connection::connect(&self.bootstrap, "tusk-cli")?)
    }
}

#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic
    Create {
        name: String,
        #[arg(long, default_value_t = 1)]
        partitions: i32,
        /// Replicas of each partition (-1: the broker default, min(3, live brokers))
        #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
        replication_factor: i16,
        /// A topic config, e.g. retention.ms=86400000 (repeatable)
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
    },
    /// List topics
    List,
    /// Partitions, leaders, watermarks and configs of a topic
    Describe { name: String },
    /// Delete a topic and its data
    Delete { name: String },
    /// Set or remove topic configs
    AlterConfig {
        name: String,
        /// KEY=VALUE to set (repeatable)
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// KEY to remove, back to the broker default (repeatable)
        #[arg(long = "delete", value_name = "KEY")]
        delete: Vec<String>,
    },
}

pub fn run(command: TopicCommand, client: &ClientArgs) -> anyhow::Result<()> {
    let mut conn = client.connect()?;
    match command {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
        } => create(
            &mut conn,
            client,
            &name,
            (partitions, replication_factor),
            &configs,
        ),
        TopicCommand::List => list(&mut conn, client),
        TopicCommand::Describe { name } => describe(&mut conn, client, &name),
        TopicCommand::Delete { name } => delete(&mut conn, client, &name),
        TopicCommand::AlterConfig { name, set, delete } => {
            alter(&mut conn, client, &name, &set, &delete)
        }
    }
}

pub fn split_pair(text: &str) -> anyhow::Result<(String, String)> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => bail!("`{text}` is not KEY=VALUE"),
    }
}

fn kafka(what: String, code: i16, message: Option<&StrBytes>) -> anyhow::Error {
    let e = ClientError::Kafka { what, code };
    match message {
        Some(m) if !m.is_empty() => anyhow::anyhow!("{e}: {m}"),
        _ => anyhow::anyhow!("{e}"),
    }
}

fn create(
    conn: &mut Connection,
    client: &ClientArgs,
    name: &str,
    (partitions, replication_factor): (i32, i16),
    configs: &[String],
) -> anyhow::Result<()> {
    let mut creatable = CreatableTopic::default()
        .with_name(topic_name(name))
        .with_num_partitions(partitions)
        .with_replication_factor(replication_factor);
    for c in configs {
        let (k, v) = split_pair(c).context("--config")?;
        creatable.configs.push(
            CreatableTopicConfig::default()
                .with_name(StrBytes::from_string(k))
                .with_value(Some(StrBytes::from_string(v))),
        );
    }
    let request = CreateTopicsRequest::default()
        .with_topics(vec![creatable])
        .with_timeout_ms(30_000);
    let v = conn.version(ApiKey::CreateTopics, 7)?;
    let r = conn.call(request, v)?;
    for t in &r.topics {
        if t.error_code != 0 {
            return Err(kafka(
                format!("create topic {name}"),
                t.error_code,
                t.error_message.as_ref(),
            ));
        }
    }
    emit(
        client.json,
        json!({"topic": name, "partitions": partitions, "created": true}),
        || format!("created topic {name} with {partitions} partition(s)\n"),
    );
    Ok(())
}

/// Metadata of `topics` (all when `None`).
pub fn metadata(
    conn: &mut Connection,
    topics: Option<&[&str]>,
) -> anyhow::Result<MetadataResponse> {
    let request = MetadataRequest::default()
        .with_topics(topics.map(|names| {
            names
                .iter()
                .map(|n| MetadataRequestTopic::default().with_name(Some(topic_name(n))))
                .collect()
        }))
        .with_allow_auto_topic_creation(false);
    let v = conn.version(ApiKey::Metadata, 12)?;
    Ok(conn.call(request, v)?)
}

fn list(conn: &mut Connection, client: &ClientArgs) -> anyhow::Result<()> {
    let r = metadata(conn, None)?;
    let mut topics: Vec<(String, usize, bool)> = r
        .topics
        .iter()
        .map(|t| {
            let name = t.name.as_ref().map(|n| n.to_string()).unwrap_or_default();
            (name, t.partitions.len(), t.is_internal)
        })
        .collect();
    topics.sort();
    let value = json!(topics
        .iter()
        .map(|(n, p, i)| json!({"topic": n, "partitions": p, "internal": i}))
        .collect::<Vec<_>>());
    emit(client.json, value, || {
        let mut t = Table::new(&["TOPIC", "PARTITIONS", "INTERNAL"]);
        for (n, p, i) in &topics {
            t.row(vec![n.clone(), p.to_string(), i.to_string()]);
        }
        t.render()
    });
    Ok(())
}

fn describe(conn: &mut Connection, client: &ClientArgs, name: &str) -> anyhow::Result<()> {
    let r = metadata(conn, Some(&[name]))?;
    let Some(topic) = r.topics.first() else {
        bail!("describe topic {name}: the broker answered with no topic");
    };
    if topic.error_code != 0 {
        return Err(kafka(
            format!("describe topic {name}"),
            topic.error_code,
            None,
        ));
    }
    let count = topic.partitions.len();
    let (start, end) = offsets_at_leaders(conn, &r, name, count)?;
    let configs = topic_configs(conn, name)?;
    let held = replicas_held(conn, &r, name, count);
    let mut partitions: Vec<_> = topic.partitions.iter().collect();
    partitions.sort_by_key(|p| p.partition_index);
    let rows: Vec<serde_json::Value> = partitions
        .iter()
        .map(|p| {
            let i = p.partition_index as usize;
            json!({
                "partition": p.partition_index,
                "leader": p.leader_id.0,
                "leader_epoch": p.leader_epoch,
                "replicas": p.replica_nodes.iter().map(|b| b.0).collect::<Vec<_>>(),
                "isr": p.isr_nodes.iter().map(|b| b.0).collect::<Vec<_>>(),
                "log_start_offset": start.get(i),
                "high_watermark": end.get(i),
                // Per replica, in the order of `replicas`: records behind the leader's high
                // watermark and bytes on disk (null where that broker did not answer).
                "replica_lag": p.replica_nodes.iter()
                    .map(|b| held.get(&(p.partition_index, b.0)).map(|h| h.0))
                    .collect::<Vec<_>>(),
                "replica_bytes": p.replica_nodes.iter()
                    .map(|b| held.get(&(p.partition_index, b.0)).map(|h| h.1))
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    let config_values: Vec<serde_json::Value> = configs
        .iter()
        .map(|(k, v, s)| json!({"name": k, "value": v, "source": s}))
        .collect();
    let value = json!({"topic": name, "partitions": rows, "configs": config_values});
    emit(client.json, value.clone(), || {
        let mut t = Table::new(&[
            "PARTITION",
            "LEADER",
            "EPOCH",
            "REPLICAS",
            "ISR",
            "LOG START",
            "HIGH WATERMARK",
            "LAG",
        ]);
        for p in &rows {
            let list = |k: &str| p[k].to_string().trim_matches(['[', ']']).to_string();
            t.row(vec![
                p["partition"].to_string(),
                p["leader"].to_string(),
                p["leader_epoch"].to_string(),
                list("replicas"),
                list("isr"),
                p["log_start_offset"].to_string(),
                p["high_watermark"].to_string(),
                list("replica_lag"),
            ]);
        }
        let mut c = Table::new(&["CONFIG", "VALUE", "SOURCE"]);
        for (k, v, s) in &configs {
            c.row(vec![k.clone(), v.clone(), s.clone()]);
        }
        format!("topic {name}\n\n{}\n{}", t.render(), c.render())
    });
    Ok(())
}

/// One offset per partition (`None`: its leader could not answer).
type PartitionOffsets = Vec<Option<i64>>;

/// Log start and high watermark of every partition, asked of each partition's leader (in a
/// cluster the bootstrap broker leads only some); `null` where the leader cannot answer.
fn offsets_at_leaders(
    conn: &mut Connection,
    metadata: &kafka_protocol::messages::MetadataResponse,
    name: &str,
    count: usize,
) -> anyhow::Result<(PartitionOffsets, PartitionOffsets)> {
    let mut by_leader: std::collections::BTreeMap<i32, Vec<i32>> = Default::default();
    let topic = metadata
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.as_str() == name));
    for p in topic.into_iter().flat_map(|t| t.partitions.iter()) {
        by_leader
            .entry(p.leader_id.0)
            .or_default()
            .push(p.partition_index);
    }
    let (mut start, mut end) = (vec![None; count], vec![None; count]);
    let single = metadata.brokers.len() <= 1;
    for (leader, partitions) in by_leader {
        let broker = metadata.brokers.iter().find(|b| b.node_id.0 == leader);
        let mut other = match broker {
            _ if single => None,
            Some(b) => Connection::connect(&format!("{}:{}", b.host, b.port), "tusk-cli").ok(),
            None => continue,
        };
        let c = other.as_mut().unwrap_or(&mut *conn);
        for (ts, out) in [(-2, &mut start), (-1, &mut end)] {
            if let Ok(found) = c.list_offsets_of(name, &partitions, ts) {
                for (p, offset) in found {
                    if let Some(slot) = out.get_mut(p as usize) {
                        *slot = Some(offset);
                    }
                }
            }
        }
    }
    Ok((start, end))
}

/// (records behind, bytes) of every replica of `name`'s partitions, keyed by (partition,
/// broker), as each broker describes the replicas it holds (DescribeLogDirs); brokers that do
/// not answer are left out.
fn replicas_held(
    conn: &mut Connection,
    metadata: &kafka_protocol::messages::MetadataResponse,
    name: &str,
    count: usize,
) -> std::collections::HashMap<(i32, i32), (i64, i64)> {
    let mut held = std::collections::HashMap::new();
    let single = metadata.brokers.len() <= 1;
    let request =
        DescribeLogDirsRequest::default()
            .with_topics(Some(vec![DescribableLogDirTopic::default()
                .with_topic(topic_name(name))
                .with_partitions((0..count as i32).collect())]));
    for b in &metadata.brokers {
        let mut other = match single {
            true => None,
            false => match Connection::connect(&format!("{}:{}", b.host, b.port), "tusk-cli") {
                Ok(c) => Some(c),
                Err(_) => continue,
            },
        };
        let c = other.as_mut().unwrap_or(&mut *conn);
        let Ok(v) = c.version(ApiKey::DescribeLogDirs, 4) else {
            continue;
        };
        let Ok(r) = c.call(request.clone(), v) else {
            continue;
        };
        for dir in r.results {
            for t in dir.topics.iter().filter(|t| t.name.as_str() == name) {
                for p in &t.partitions {
                    let entry = (p.offset_lag, p.partition_size);
                    held.insert((p.partition_index, b.node_id.0), entry);
                }
            }
        }
    }
    held
}

/// Every config of a topic: (name, value, source).
fn topic_configs(
    conn: &mut Connection,
    name: &str,
) -> anyhow::Result<Vec<(String, String, String)>> {
    let request =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_string(name.to_string()))
            .with_configuration_keys(None)]);
    let v = conn.version(ApiKey::DescribeConfigs, 4)?;
    let r = conn.call(request, v)?;
    let mut out = Vec::new();
    for res in r.results {
        if res.error_code != 0 {
            return Err(kafka(
                format!("configs of {name}"),
                res.error_code,
                res.error_message.as_ref(),
            ));
        }
        for c in res.configs {
            let source = match c.config_source {
                1 => "topic",
                5 => "broker",
                _ => "default",
            };
            let value = c.value.map(|v| v.to_string()).unwrap_or_default();
            out.push((c.name.to_string(), value, source.to_string()));
        }
    }
    Ok(out)
}

fn delete(conn: &mut Connection, client: &ClientArgs, name: &str) -> anyhow::Result<()> {
    let request = DeleteTopicsRequest::default()
        .with_topic_names(vec![topic_name(name)])
        .with_topics(vec![
            kafka_protocol::messages::delete_topics_request::DeleteTopicState::default()
                .with_name(Some(topic_name(name))),
        ])
        .with_timeout_ms(30_000);
    let v = conn.version(ApiKey::DeleteTopics, 6)?;
    let r = conn.call(request, v)?;
    for t in &r.responses {
        if t.error_code != 0 {
            return Err(kafka(
                format!("delete topic {name}"),
                t.error_code,
                t.error_message.as_ref(),
            ));
        }
    }
    emit(client.json, json!({"topic": name, "deleted": true}), || {
        format!("deleted topic {name}\n")
    });
    Ok(())
}

fn alter(
    conn: &mut Connection,
    client: &ClientArgs,
    name: &str,
    set: &[String],
    delete: &[String],
) -> anyhow::Result<()> {
    if set.is_empty() && delete.is_empty() {
        bail!("alter-config {name}: nothing to do (give --set KEY=VALUE or --delete KEY)");
    }
    let mut configs = Vec::new();
    for s in set {
        let (k, v) = split_pair(s).context("--set")?;
        configs.push(
            AlterableConfig::default()
                .with_name(StrBytes::from_string(k))
                .with_config_operation(0)
                .with_value(Some(StrBytes::from_string(v))),
        );
    }
    for k in delete {
        configs.push(
            AlterableConfig::default()
                .with_name(StrBytes::from_string(k.clone()))
                .with_config_operation(1),
        );
    }
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_string(name.to_string()))
            .with_configs(configs),
    ]);
    let v = conn.version(ApiKey::IncrementalAlterConfigs, 1)?;
    let r = conn.call(request, v)?;
    for res in &r.responses {
        if res.error_code != 0 {
            return Err(kafka(
                format!("alter configs of {name}"),
                res.error_code,
                res.error_message.as_ref(),
            ));
        }
    }
    emit(client.json, json!({"topic": name, "altered": true}), || {
        format!("altered configs of topic {name}\n")
    });
    Ok(())
}
