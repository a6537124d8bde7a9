//! `tusk group list|describe|reset-offsets`, and the committed-offset helpers `tusk consume
//! --group` uses. Runs on: the CLI thread. The broker routes group requests to the group's
//! coordinator shard itself, so every request goes to the bootstrap broker.

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use bytes::Buf;
use clap::{ArgGroup, Subcommand};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    ApiKey, ConsumerProtocolAssignment, DescribeGroupsRequest, GroupId, ListGroupsRequest,
    OffsetCommitRequest, OffsetFetchRequest,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use serde_json::json;

use super::output::{emit, Table};
use super::topic::ClientArgs;
use crate::client::{topic_name, ClientError, Connection};

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List consumer groups
    List,
    /// Members, assignments and lag of a group
    Describe { name: String },
    /// Move a group's committed offsets (the group must have no members)
    #[command(group(ArgGroup::new("to").required(true).args(["to_earliest", "to_latest", "to_offset"])))]
    ResetOffsets {
        name: String,
        /// The topic whose offsets move (default: every topic the group has offsets for)
        #[arg(long)]
        topic: Option<String>,
        #[arg(long)]
        to_earliest: bool,
        #[arg(long)]
        to_latest: bool,
        #[arg(long)]
        to_offset: Option<i64>,
        /// Show the new offsets without committing them
        #[arg(long)]
        dry_run: bool,
    },
}

pub fn run(command: GroupCommand, client: &ClientArgs) -> anyhow::Result<()> {
    let mut conn = client.connect()?;
    match command {
        GroupCommand::List => list(&mut conn, client),
        GroupCommand::Describe { name } => describe(&mut conn, client, &name),
        GroupCommand::ResetOffsets {
            name,
            topic,
            to_earliest,
            to_latest,
            to_offset,
            dry_run,
        } => {
            let to = match (to_earliest, to_latest, to_offset) {
                (true, _, _) => Target::Earliest,
                (_, true, _) => Target::Latest,
                (_, _, Some(o)) => Target::Offset(o),
                _ => bail!("reset-offsets: give --to-earliest, --to-latest or --to-offset"),
            };
            reset(&mut conn, client, &name, topic.as_deref(), to, dry_run)
        }
    }
}

fn list(conn: &mut Connection, client: &ClientArgs) -> anyhow::Result<()> {
    let v = conn.version(ApiKey::ListGroups, 4)?;
    let r = conn.call(ListGroupsRequest::default(), v)?;
    if r.error_code != 0 {
        return Err(ClientError::Kafka {
            what: "list groups".into(),
            code: r.error_code,
        }
        .into());
    }
    let mut groups: Vec<(String, String, String)> = r
        .groups
        .iter()
        .map(|g| {
            (
                g.group_id.to_string(),
                g.group_state.to_string(),
                g.protocol_type.to_string(),
            )
        })
        .collect();
    groups.sort();
    let value = json!(groups
        .iter()
        .map(|(g, s, p)| json!({"group": g, "state": s, "protocol_type": p}))
        .collect::<Vec<_>>());
    emit(client.json, value, || {
        let mut t = Table::new(&["GROUP", "STATE", "PROTOCOL TYPE"]);
        for (g, s, p) in &groups {
            t.row(vec![g.clone(), s.clone(), p.clone()]);
        }
        t.render()
    });
    Ok(())
}

/// The group's committed offsets: (topic, partition) → offset.
pub fn committed(
    conn: &mut Connection,
    group: &str,
) -> anyhow::Result<BTreeMap<(String, i32), i64>> {
    let v = conn.version(ApiKey::OffsetFetch, 7)?;
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_topics(None);
    let r = conn.call(request, v)?;
    if r.error_code != 0 {
        let what = format!("committed offsets of group {group}");
        return Err(ClientError::Kafka {
            what,
            code: r.error_code,
        }
        .into());
    }
    let mut out = BTreeMap::new();
    for t in r.topics {
        for p in t.partitions {
            if p.error_code == 0 && p.committed_offset >= 0 {
                out.insert((t.name.to_string(), p.partition_index), p.committed_offset);
            }
        }
    }
    Ok(out)
}

/// Commits `offsets` (index: partition) of `topic` for `group` as a standalone consumer.
pub fn commit(
    conn: &mut Connection,
    group: &str,
    topic: &str,
    offsets: &[i64],
) -> anyhow::Result<()> {
    let pairs: Vec<(String, i32, i64)> = offsets
        .iter()
        .enumerate()
        .map(|(p, o)| (topic.to_string(), p as i32, *o))
        .collect();
    commit_pairs(conn, group, &pairs)
}

fn commit_pairs(
    conn: &mut Connection,
    group: &str,
    pairs: &[(String, i32, i64)],
) -> anyhow::Result<()> {
    let mut by_topic: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
    for (t, p, o) in pairs {
        by_topic.entry(t).or_default().push(
            OffsetCommitRequestPartition::default()
                .with_partition_index(*p)
                .with_committed_offset(*o)
                .with_committed_leader_epoch(-1),
        );
    }
    let topics = by_topic
        .into_iter()
        .map(|(t, parts)| {
            OffsetCommitRequestTopic::default()
                .with_name(topic_name(t))
                .with_partitions(parts)
        })
        .collect();
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_generation_id_or_member_epoch(-1)
        .with_member_id(StrBytes::from_static_str(""))
        .with_retention_time_ms(-1)
        .with_topics(topics);
    let v = conn.version(ApiKey::OffsetCommit, 8)?;
    let r = conn.call(request, v)?;
    for t in &r.topics {
        for p in &t.partitions {
            if p.error_code != 0 {
                let what = format!(
                    "commit offsets of group {group} for {}-{}",
                    t.name.as_str(),
                    p.partition_index
                );
                return Err(ClientError::Kafka {
                    what,
                    code: p.error_code,
                }
                .into());
            }
        }
    }
    Ok(())
}

struct Member {
    id: String,
    client_id: String,
    host: String,
    assigned: Vec<(String, i32)>,
}

/// The group's state, protocol and members (with decoded consumer assignments).
fn members(conn: &mut Connection, group: &str) -> anyhow::Result<(String, String, Vec<Member>)> {
    let v = conn.version(ApiKey::DescribeGroups, 5)?;
    let request = DescribeGroupsRequest::default()
        .with_groups(vec![GroupId(StrBytes::from_string(group.to_string()))]);
    let r = conn.call(request, v)?;
    let Some(g) = r.groups.into_iter().next() else {
        bail!("describe group {group}: the broker answered with no group");
    };
    if g.error_code != 0 {
        let what = format!("describe group {group}");
        return Err(ClientError::Kafka {
            what,
            code: g.error_code,
        }
        .into());
    }
    let members = g
        .members
        .into_iter()
        .map(|m| Member {
            id: m.member_id.to_string(),
            client_id: m.client_id.to_string(),
            host: m.client_host.to_string(),
            assigned: decode_assignment(m.member_assignment).unwrap_or_default(),
        })
        .collect();
    Ok((
        g.group_state.to_string(),
        g.protocol_data.to_string(),
        members,
    ))
}

/// A consumer-protocol assignment: version, then the partitions by topic.
fn decode_assignment(mut bytes: bytes::Bytes) -> Option<Vec<(String, i32)>> {
    if bytes.len() < 2 {
        return None;
    }
    let version = bytes.get_i16();
    let a = ConsumerProtocolAssignment::decode(&mut bytes, version.clamp(0, 3)).ok()?;
    Some(
        a.assigned_partitions
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.topic.to_string(), *p)))
            .collect(),
    )
}

fn describe(conn: &mut Connection, client: &ClientArgs, name: &str) -> anyhow::Result<()> {
    let (state, protocol, members) = members(conn, name)?;
    let committed = committed(conn, name)?;
    // Every partition the group has an offset for or a member owns.
    let mut places: BTreeMap<(String, i32), Option<String>> =
        committed.keys().map(|k| (k.clone(), None)).collect();
    for m in &members {
        for tp in &m.assigned {
            places.insert(tp.clone(), Some(m.id.clone()));
        }
    }
    let mut ends: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (topic, _) in places.keys() {
        if !ends.contains_key(topic) {
            let n = conn.partition_count(topic)?.unwrap_or(0);
            ends.insert(topic.clone(), conn.list_offsets(topic, n, -1)?);
        }
    }
    let rows: Vec<serde_json::Value> = places
        .iter()
        .map(|((t, p), owner)| {
            let end = ends.get(t).and_then(|e| e.get(*p as usize)).copied();
            let offset = committed.get(&(t.clone(), *p)).copied();
            let lag = match (end, offset) {
                (Some(e), Some(o)) => Some((e - o).max(0)),
                _ => None,
            };
            json!({"topic": t, "partition": p, "committed_offset": offset,
                   "log_end_offset": end, "lag": lag, "member": owner})
        })
        .collect();
    let value = json!({
        "group": name, "state": state, "protocol": protocol,
        "members": members.iter().map(|m| json!({
            "member_id": m.id, "client_id": m.client_id, "host": m.host,
            "assignment": m.assigned.iter().map(|(t, p)| format!("{t}-{p}")).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "partitions": rows,
    });
    emit(client.json, value, || {
        let mut m = Table::new(&["MEMBER", "CLIENT ID", "HOST", "ASSIGNMENT"]);
        for x in &members {
            let a: Vec<String> = x.assigned.iter().map(|(t, p)| format!("{t}-{p}")).collect();
            m.row(vec![
                x.id.clone(),
                x.client_id.clone(),
                x.host.clone(),
                a.join(","),
            ]);
        }
        let mut t = Table::new(&[
            "TOPIC",
            "PARTITION",
            "COMMITTED",
            "LOG END",
            "LAG",
            "MEMBER",
        ]);
        let show = |v: &serde_json::Value| match v {
            serde_json::Value::Null => "-".to_string(),
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        for r in &rows {
            t.row(
                [
                    "topic",
                    "partition",
                    "committed_offset",
                    "log_end_offset",
                    "lag",
                    "member",
                ]
                .iter()
                .map(|k| show(&r[*k]))
                .collect(),
            );
        }
        format!(
            "group {name}: state {state}, protocol {}, {} member(s)\n\n{}\n{}",
            if protocol.is_empty() { "-" } else { &protocol },
            members.len(),
            m.render(),
            t.render()
        )
    });
    Ok(())
}

enum Target {
    Earliest,
    Latest,
    Offset(i64),
}

fn reset(
    conn: &mut Connection,
    client: &ClientArgs,
    name: &str,
    topic: Option<&str>,
    to: Target,
    dry_run: bool,
) -> anyhow::Result<()> {
    let (state, _, members) = members(conn, name)?;
    if !members.is_empty() {
        bail!("reset-offsets {name}: the group has {} active member(s) (state {state}); stop its consumers first", members.len());
    }
    let topics: Vec<String> = match topic {
        Some(t) => vec![t.to_string()],
        None => {
            let mut t: Vec<String> = committed(conn, name)?
                .keys()
                .map(|(t, _)| t.clone())
                .collect();
            t.dedup();
            if t.is_empty() {
                bail!("reset-offsets {name}: the group has no committed offsets; name a --topic");
            }
            t
        }
    };
    let mut pairs = Vec::new();
    for t in &topics {
        let n = conn
            .partition_count(t)?
            .with_context(|| format!("topic {t} does not exist"))?;
        let earliest = conn.list_offsets(t, n, -2)?;
        let latest = conn.list_offsets(t, n, -1)?;
        for p in 0..n {
            let o = match to {
                Target::Earliest => earliest[p],
                Target::Latest => latest[p],
                Target::Offset(o) => o.clamp(earliest[p], latest[p]),
            };
            pairs.push((t.clone(), p as i32, o));
        }
    }
    if !dry_run {
        commit_pairs(conn, name, &pairs)?;
    }
    let value = json!({"group": name, "dry_run": dry_run, "offsets": pairs.iter()
        .map(|(t, p, o)| json!({"topic": t, "partition": p, "offset": o})).collect::<Vec<_>>()});
    emit(client.json, value, || {
        let mut t = Table::new(&["TOPIC", "PARTITION", "NEW OFFSET"]);
        for (topic, p, o) in &pairs {
            t.row(vec![topic.clone(), p.to_string(), o.to_string()]);
        }
        let verb = if dry_run { "would move" } else { "moved" };
        format!("{verb} the offsets of group {name}\n\n{}", t.render())
    });
    Ok(())
}
