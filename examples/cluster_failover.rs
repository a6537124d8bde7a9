//! Controller failover and metadata commit latency of a cluster of real `tusk serve` processes
//! on loopback (they share this machine's cores).
//!
//! `cargo run --release --example cluster_failover -- --kills 20`
//!
//! Each round SIGKILLs the broker that is the active controller and measures, from the kill:
//! until a survivor's Metadata names a new live controller (`elected`), until a CreateTopics
//! sent to a survivor succeeds (`writable`: the new controller committed a change), and until the
//! killed broker has left Metadata (`fenced`). The killed broker is then restarted and the next
//! round waits until every broker is listed again. Afterwards, `--changes` CreateTopics are sent
//! one after another to the active controller and as many to another broker (which forwards them),
//! and their round trips are the metadata commit latency as a client sees it: validated, committed
//! by a majority (each voter fdatasyncs), applied by the broker that answers.
//!
//! Invariants: every process it starts is killed, and the data directory removed, when it ends,
//! whether it succeeds or fails.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::{
    CreateTopicsRequest, CreateTopicsResponse, MetadataRequest, MetadataResponse,
};
use tusk::client::{topic_name, Connection};

#[derive(Parser, Debug)]
struct Args {
    /// Brokers in the cluster (every one a voter)
    #[arg(long, default_value_t = 3)]
    brokers: usize,
    /// Controller kills
    #[arg(long, default_value_t = 20)]
    kills: usize,
    /// CreateTopics sent to the controller, and as many to a follower, for the commit latency
    #[arg(long, default_value_t = 200)]
    changes: usize,
    /// Shards per broker
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// The tusk binary [default: target/release/tusk beside this example]
    #[arg(long)]
    tusk: Option<PathBuf>,
    /// Keep the brokers' logs in this directory (they are removed with the data otherwise)
    #[arg(long)]
    logs: Option<PathBuf>,
}

struct Broker {
    node_id: usize,
    port: u16,
    args: Vec<String>,
    child: Option<Child>,
}

/// The brokers and their data; killed and removed on drop.
struct Cluster {
    root: tempfile::TempDir,
    logs: PathBuf,
    tusk: PathBuf,
    brokers: Vec<Broker>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for b in &mut self.brokers {
            if let Some(mut child) = b.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(self.root.path());
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Cluster {
    fn start(args: &Args, tusk: PathBuf) -> Cluster {
        let root = tempfile::Builder::new()
            .prefix("tusk-failover-")
            .tempdir()
            .expect("a temporary directory");
        let controller_ports: Vec<u16> = (0..args.brokers).map(|_| free_port()).collect();
        let voters = controller_ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}@127.0.0.1:{p}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let brokers = (1..=args.brokers)
            .map(|node_id| {
                let port = free_port();
                let data = root.path().join(format!("broker-{node_id}"));
                let args = vec![
                    "serve".to_string(),
                    format!("--node-id={node_id}"),
                    format!("--controller-quorum-voters={voters}"),
                    format!("--listen=127.0.0.1:{port}"),
                    format!("--data-dir={}", data.display()),
                    format!("--shards={}", args.shards),
                    "--metrics-listen=off".to_string(),
                ];
                Broker {
                    node_id,
                    port,
                    args,
                    child: None,
                }
            })
            .collect();
        let logs = args
            .logs
            .clone()
            .unwrap_or_else(|| root.path().to_path_buf());
        std::fs::create_dir_all(&logs).expect("the logs directory");
        let mut cluster = Cluster {
            root,
            logs,
            tusk,
            brokers,
        };
        for i in 0..cluster.brokers.len() {
            cluster.launch(i);
        }
        cluster
    }

    fn launch(&mut self, i: usize) {
        let log = self.logs.join(format!("broker-{}.log", i + 1));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("the broker's log file");
        let b = &mut self.brokers[i];
        let child = Command::new(&self.tusk)
            .args(&b.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.tusk.display()));
        b.child = Some(child);
    }

    fn kill(&mut self, node_id: usize) {
        if let Some(mut child) = self.brokers[node_id - 1].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn address(&self, node_id: usize) -> String {
        format!("127.0.0.1:{}", self.brokers[node_id - 1].port)
    }

    fn running(&self) -> Vec<usize> {
        self.brokers
            .iter()
            .filter(|b| b.child.is_some())
            .map(|b| b.node_id)
            .collect()
    }
}

/// (controller id, listed broker ids) as broker `address` answers Metadata.
fn metadata(address: &str) -> Option<(i32, Vec<i32>)> {
    let mut conn = Connection::connect(address, "failover").ok()?;
    let v = conn.versions.metadata;
    let r: MetadataResponse = conn
        .call(MetadataRequest::default().with_topics(Some(vec![])), v)
        .ok()?;
    let mut ids: Vec<i32> = r.brokers.iter().map(|b| b.node_id.0).collect();
    ids.sort();
    Some((r.controller_id.0, ids))
}

/// Creates `name` through `address`: whether it succeeded.
fn create(address: &str, name: &str) -> bool {
    let Ok(mut conn) = Connection::connect(address, "failover") else {
        return false;
    };
    let request = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic_name(name))
            .with_num_partitions(1)
            .with_replication_factor(-1)])
        .with_timeout_ms(30_000);
    let v = conn.versions.create_topics;
    match conn.call::<CreateTopicsRequest>(request, v) {
        Ok(CreateTopicsResponse { topics, .. }) => topics.iter().all(|t| t.error_code == 0),
        Err(_) => false,
    }
}

/// Polls `done` every 10 ms until it holds (or 60 s pass): the time it took.
fn until(started: Instant, what: &str, mut done: impl FnMut() -> bool) -> Duration {
    loop {
        if done() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{what}: not within 60 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn percentile(sorted_ms: &[f64], p: f64) -> f64 {
    if sorted_ms.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted_ms.len() as f64).ceil() as usize;
    sorted_ms[rank.clamp(1, sorted_ms.len()) - 1]
}

fn summary(name: &str, samples: &[Duration]) {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    println!(
        "{name:<34} n={:<4} p50 {:>8.1} ms  p99 {:>8.1} ms  max {:>8.1} ms",
        ms.len(),
        percentile(&ms, 50.0),
        percentile(&ms, 99.0),
        ms.last().copied().unwrap_or(f64::NAN)
    );
}

/// Waits until every broker in `live` serves, lists all of them and names the same one of
/// them controller.
fn wait_for_live(cluster: &Cluster, live: &[usize]) -> i32 {
    let ids: Vec<i32> = live.iter().map(|i| *i as i32).collect();
    let mut controller = -1;
    until(Instant::now(), "all brokers live", || {
        let answers: Vec<_> = live
            .iter()
            .map(|i| metadata(&cluster.address(*i)))
            .collect();
        match answers.first() {
            Some(Some((c, _))) if ids.contains(c) => {
                controller = *c;
                answers
                    .iter()
                    .all(|a| a.as_ref() == Some(&(*c, ids.clone())))
            }
            _ => false,
        }
    });
    controller
}

fn default_tusk() -> PathBuf {
    let exe = std::env::current_exe().expect("this example's path");
    // target/release/examples/cluster_failover -> target/release/tusk
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    dir.join("tusk")
}

fn main() {
    let args = Args::parse();
    assert!(args.brokers >= 3, "--brokers must be at least 3");
    let tusk = args.tusk.clone().unwrap_or_else(default_tusk);
    let mut cluster = Cluster::start(&args, tusk);
    let all: Vec<usize> = (1..=args.brokers).collect();
    let mut controller = wait_for_live(&cluster, &all) as usize;
    println!(
        "{} brokers ({} shard(s) each) on one machine; controller {controller}",
        args.brokers, args.shards
    );
    let (mut elected, mut writable, mut fenced) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..args.kills {
        let survivor = *all.iter().find(|i| **i != controller).expect("a survivor");
        cluster.kill(controller);
        let killed_at = Instant::now();
        let killed = controller as i32;
        let address = cluster.address(survivor);
        let mut seen = (false, false, false);
        let name = format!("failover-{round}");
        until(killed_at, "failover", || {
            if !seen.0 && metadata(&address).is_some_and(|(c, _)| c >= 0 && c != killed) {
                elected.push(killed_at.elapsed());
                seen.0 = true;
            }
            if !seen.1 && create(&address, &name) {
                writable.push(killed_at.elapsed());
                seen.1 = true;
            }
            if !seen.2 && metadata(&address).is_some_and(|(_, ids)| !ids.contains(&killed)) {
                fenced.push(killed_at.elapsed());
                seen.2 = true;
            }
            seen == (true, true, true)
        });
        cluster.launch(controller - 1);
        controller = wait_for_live(&cluster, &all) as usize;
        eprintln!(
            "round {round}: killed {killed}, elected {:?}, writable {:?}, fenced {:?}; now {controller}",
            elected.last().expect("measured"),
            writable.last().expect("measured"),
            fenced.last().expect("measured")
        );
    }
    let follower = *cluster
        .running()
        .iter()
        .find(|i| **i != controller)
        .expect("a follower");
    let (mut at_controller, mut forwarded) = (Vec::new(), Vec::new());
    for i in 0..args.changes {
        for (via, out) in [(controller, &mut at_controller), (follower, &mut forwarded)] {
            let name = format!("change-{via}-{i}");
            let address = cluster.address(via);
            let started = Instant::now();
            assert!(create(&address, &name), "CreateTopics {name} via {via}");
            out.push(started.elapsed());
        }
    }
    summary("controller elected after SIGKILL", &elected);
    summary("topic creatable after SIGKILL", &writable);
    summary("killed broker fenced after SIGKILL", &fenced);
    summary("CreateTopics at the controller", &at_controller);
    summary("CreateTopics at a follower", &forwarded);
}
