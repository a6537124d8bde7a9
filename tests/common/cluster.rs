//! A cluster of real `tusk serve` processes on loopback: every broker a voter of the metadata
//! quorum, each with its own data directory, Kafka port and controller port. Brokers are killed
//! on drop (their data directories go with their temporary roots).

use std::time::{Duration, Instant};

use super::Broker;

pub struct Cluster {
    /// Broker `i` has node id `i + 1`.
    pub brokers: Vec<Broker>,
}

impl Cluster {
    /// Starts `n` brokers (node ids 1..=n) with `shards` shards each and waits until every
    /// one serves.
    pub fn start(n: usize, shards: usize) -> Cluster {
        Cluster::start_with(n, shards, &[])
    }

    /// Like `start`, with `extra` flags for every broker (kept across restarts), e.g. the
    /// replication settings.
    pub fn start_with(n: usize, shards: usize, extra: &[&str]) -> Cluster {
        let controller_ports: Vec<u16> = (0..n).map(|_| super::free_port()).collect();
        let voters = controller_ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}@127.0.0.1:{p}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let shards = shards.to_string();
        let brokers = (0..n)
            .map(|i| {
                let id = (i + 1).to_string();
                let mut args: Vec<&str> = vec![
                    "--node-id",
                    id.as_str(),
                    "--controller-quorum-voters",
                    voters.as_str(),
                    "--shards",
                    shards.as_str(),
                ];
                args.extend_from_slice(extra);
                Broker::launch(&args)
            })
            .collect();
        let mut cluster = Cluster { brokers };
        for b in &mut cluster.brokers {
            b.wait_ready();
        }
        cluster
    }

    pub fn broker(&mut self, node_id: i32) -> &mut Broker {
        &mut self.brokers[node_id as usize - 1]
    }

    pub fn bootstrap_of(&self, node_id: i32) -> String {
        self.brokers[node_id as usize - 1].bootstrap()
    }

    /// Every running broker's address, comma-separated.
    pub fn bootstrap(&mut self) -> String {
        let mut out = Vec::new();
        for b in &mut self.brokers {
            if b.is_running() {
                out.push(b.bootstrap());
            }
        }
        out.join(",")
    }

    /// `tusk cluster info --json` asked of broker `node_id`.
    pub fn info(&self, node_id: i32) -> Option<serde_json::Value> {
        let out = super::run_with_timeout(
            std::process::Command::new(env!("CARGO_BIN_EXE_tusk"))
                .args(["cluster", "info", "--json", "--bootstrap"])
                .arg(self.bootstrap_of(node_id)),
            None,
            Duration::from_secs(60),
        );
        if !out.status.success() {
            return None;
        }
        serde_json::from_str(&out.stdout).ok()
    }

    /// Waits until broker `asked` reports a controller among `among` and lists exactly the
    /// live brokers `live` (sorted node ids); the controller's id.
    pub fn wait_for(&self, asked: i32, live: &[i32], timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Some(info) = self.info(asked) {
                let alive: Vec<i32> = info["brokers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|b| b["alive"].as_bool() == Some(true))
                    .filter_map(|b| b["node_id"].as_i64().map(|i| i as i32))
                    .collect();
                let controller = info["controller_id"].as_i64().unwrap_or(-1) as i32;
                if alive == live && live.contains(&controller) {
                    return controller;
                }
                last = Some(info);
            }
            assert!(
                Instant::now() < deadline,
                "broker {asked} did not report live brokers {live:?} with a live controller \
                 within {timeout:?}; last answer: {last:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
