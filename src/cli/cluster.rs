//! `tusk cluster info`: the cluster id, controller and brokers, from Metadata. Runs on: the CLI
//! thread.

use clap::Subcommand;
use serde_json::json;

use super::output::{emit, Table};
use super::topic::{metadata, ClientArgs};

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Cluster id, controller, brokers and topic count
    Info,
}

pub fn run(command: ClusterCommand, client: &ClientArgs) -> anyhow::Result<()> {
    let ClusterCommand::Info = command;
    let mut conn = client.connect()?;
    let r = metadata(&mut conn, None)?;
    let cluster_id = r
        .cluster_id
        .as_ref()
        .map(|c| c.to_string())
        .unwrap_or_default();
    let brokers: Vec<(i32, String, i32)> = r
        .brokers
        .iter()
        .map(|b| (b.node_id.0, b.host.to_string(), b.port))
        .collect();
    let value = json!({
        "cluster_id": cluster_id,
        "controller_id": r.controller_id.0,
        "brokers": brokers.iter().map(|(id, h, p)| json!({"node_id": id, "host": h, "port": p})).collect::<Vec<_>>(),
        "topics": r.topics.len(),
    });
    emit(client.json, value, || {
        let mut t = Table::new(&["NODE", "HOST", "PORT", "CONTROLLER"]);
        for (id, h, p) in &brokers {
            let c = if *id == r.controller_id.0 { "yes" } else { "" };
            t.row(vec![id.to_string(), h.clone(), p.to_string(), c.into()]);
        }
        format!(
            "cluster {cluster_id}, {} topic(s)\n\n{}",
            r.topics.len(),
            t.render()
        )
    });
    Ok(())
}
