//! Broker metrics in the Prometheus text format. Each shard owns one `ShardMetrics` of relaxed
//! atomics: only its own thread writes them (counters, gauges, fixed-bucket histograms), and the
//! scrape thread reads them. Runs on: every shard (updates, through the thread-local `current`)
//! and the metrics thread (`serve`, a blocking HTTP loop on `--metrics-listen`). Invariants: no
//! lock anywhere; an update is one relaxed atomic add, so metrics never slow the data path by
//! more than that; label sets are fixed at start (API names, stages), so a scrape's size does
//! not grow with traffic.

mod http;

pub use http::serve;

use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::ApiKey;

/// Upper bounds (seconds) of the latency histograms' buckets; `+Inf` is implicit.
const BUCKET_BOUNDS_S: [f64; 16] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 10.0,
];
/// API keys below this get their own counters (every key tusk serves is below 70).
const API_KEYS_MAX: usize = 80;

/// A Prometheus histogram of durations: cumulative buckets are computed at scrape time.
pub struct Histogram {
    buckets: [AtomicU64; BUCKET_BOUNDS_S.len() + 1],
    sum_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BUCKET_BOUNDS_S.partition_point(|b| *b < s);
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(d.as_nanos() as u64, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0u64;
        for (i, bound) in BUCKET_BOUNDS_S.iter().enumerate() {
            cumulative += self.buckets[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.buckets[BUCKET_BOUNDS_S.len()].load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
        let sum_s = self.sum_ns.load(Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum_s}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

/// Stages of a produce, each a histogram.
#[derive(Clone, Copy)]
pub enum ProduceStage {
    /// From append until the group-commit writer takes the batch into a write.
    QueueWait = 0,
    /// The O_DIRECT write of a group commit.
    DiskWrite = 1,
    /// The fdatasync of a group commit.
    Fdatasync = 2,
    /// From append until the batch is acknowledged (durable under the flush policy).
    Ack = 3,
}

const STAGE_NAMES: [&str; 4] = ["queue_wait", "disk_write", "fdatasync", "ack"];

/// One shard's metrics.
pub struct ShardMetrics {
    pub shard: usize,
    requests: [AtomicU64; API_KEYS_MAX],
    bytes_in: [AtomicU64; API_KEYS_MAX],
    bytes_out: [AtomicU64; API_KEYS_MAX],
    produce_stages: [Histogram; 4],
    pub fetch_latency: Histogram,
    pub connections_active: AtomicI64,
    pub partitions: AtomicU64,
    pub log_bytes: AtomicU64,
    pub groups: AtomicU64,
    pub rebalances: AtomicU64,
    pub mesh_messages: AtomicU64,
    /// Partitions this shard leads whose ISR lacks some of their replicas.
    pub under_replicated: AtomicU64,
    /// Partitions (of the whole cluster, counted on the controller shard) with no live leader.
    pub offline_partitions: AtomicU64,
    /// ISR changes this shard's leaders made: members dropped, members added.
    pub isr_shrinks: AtomicU64,
    pub isr_expands: AtomicU64,
    /// The largest lag (records) of a follower behind a partition this shard leads.
    pub replication_lag_max: AtomicU64,
    /// Bytes sent to followers outside the ISR while the throttle held answers back.
    pub replication_throttled_bytes: AtomicU64,
    /// The metadata quorum as this broker's member sees it (written by the controller shard).
    pub quorum: QuorumGauges,
}

/// The metadata quorum and broker sessions, as one broker's member sees them.
pub struct QuorumGauges {
    /// 0: not in a cluster, 1: follower, 2: candidate, 3: leader (the active controller).
    pub role: AtomicI64,
    pub leader: AtomicI64,
    pub term: AtomicI64,
    pub committed_index: AtomicI64,
    pub applied_index: AtomicI64,
    pub brokers_live: AtomicI64,
    pub brokers_fenced: AtomicI64,
    /// Brokers this member fenced as the active controller.
    pub fencings: AtomicI64,
    /// Metadata changes at the active controller that committed a record, from their arrival
    /// (the wait for the controller's lock included) to their records committed by the quorum
    /// and applied here.
    pub change_latency: Histogram,
}

impl Default for QuorumGauges {
    fn default() -> Self {
        QuorumGauges {
            role: AtomicI64::new(0),
            // Node ids start at 0: "none known" must not read as node 0.
            leader: AtomicI64::new(-1),
            term: AtomicI64::new(0),
            committed_index: AtomicI64::new(-1),
            applied_index: AtomicI64::new(-1),
            brokers_live: AtomicI64::new(0),
            brokers_fenced: AtomicI64::new(0),
            fencings: AtomicI64::new(0),
            change_latency: Histogram::default(),
        }
    }
}

impl ShardMetrics {
    pub fn new(shard: usize) -> ShardMetrics {
        ShardMetrics {
            shard,
            requests: std::array::from_fn(|_| AtomicU64::new(0)),
            bytes_in: std::array::from_fn(|_| AtomicU64::new(0)),
            bytes_out: std::array::from_fn(|_| AtomicU64::new(0)),
            produce_stages: Default::default(),
            fetch_latency: Histogram::default(),
            connections_active: AtomicI64::new(0),
            partitions: AtomicU64::new(0),
            log_bytes: AtomicU64::new(0),
            groups: AtomicU64::new(0),
            rebalances: AtomicU64::new(0),
            mesh_messages: AtomicU64::new(0),
            under_replicated: AtomicU64::new(0),
            offline_partitions: AtomicU64::new(0),
            isr_shrinks: AtomicU64::new(0),
            isr_expands: AtomicU64::new(0),
            replication_lag_max: AtomicU64::new(0),
            replication_throttled_bytes: AtomicU64::new(0),
            quorum: QuorumGauges::default(),
        }
    }

    /// A request frame of `bytes` (size prefix included) for API `key` arrived.
    pub fn request(&self, key: i16, bytes: usize) {
        if let Some(slot) = usize::try_from(key).ok().filter(|k| *k < API_KEYS_MAX) {
            self.requests[slot].fetch_add(1, Relaxed);
            self.bytes_in[slot].fetch_add(bytes as u64, Relaxed);
        }
    }

    /// A response of `bytes` for API `key` was written.
    pub fn response(&self, key: i16, bytes: usize) {
        if let Some(slot) = usize::try_from(key).ok().filter(|k| *k < API_KEYS_MAX) {
            self.bytes_out[slot].fetch_add(bytes as u64, Relaxed);
        }
    }

    pub fn produce_stage(&self, stage: ProduceStage, d: Duration) {
        self.produce_stages[stage as usize].observe(d);
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<ShardMetrics>>> = const { RefCell::new(None) };
}

/// Makes `metrics` the calling shard thread's metrics.
pub fn install(metrics: Arc<ShardMetrics>) {
    CURRENT.with(|c| *c.borrow_mut() = Some(metrics));
}

/// Runs `f` on this thread's shard metrics, if it is a shard thread.
pub fn with(f: impl FnOnce(&ShardMetrics)) {
    CURRENT.with(|c| {
        if let Some(m) = c.borrow().as_ref() {
            f(m)
        }
    })
}

/// All shards' metrics, for the scrape thread.
#[derive(Clone)]
pub struct Registry {
    pub shards: Vec<Arc<ShardMetrics>>,
}

impl Registry {
    pub fn new(shards: usize) -> Registry {
        Registry {
            shards: (0..shards)
                .map(|s| Arc::new(ShardMetrics::new(s)))
                .collect(),
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(64 * 1024);
        let _ = writeln!(out, "# HELP tusk_build_info The running tusk version.");
        let _ = writeln!(out, "# TYPE tusk_build_info gauge");
        let _ = writeln!(
            out,
            "tusk_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        self.render_api_counters(&mut out);
        self.render_histograms(&mut out);
        type Gauge = fn(&ShardMetrics) -> i64;
        let gauges: [(&str, &str, &str, Gauge); 12] = [
            (
                "tusk_connections_active",
                "gauge",
                "Open client connections.",
                |m| m.connections_active.load(Relaxed),
            ),
            (
                "tusk_partitions",
                "gauge",
                "Partitions the shard owns.",
                |m| m.partitions.load(Relaxed) as i64,
            ),
            (
                "tusk_log_bytes",
                "gauge",
                "Bytes of segments the shard owns.",
                |m| m.log_bytes.load(Relaxed) as i64,
            ),
            (
                "tusk_groups",
                "gauge",
                "Consumer groups the shard coordinates.",
                |m| m.groups.load(Relaxed) as i64,
            ),
            (
                "tusk_group_rebalances_total",
                "counter",
                "Rebalances completed.",
                |m| m.rebalances.load(Relaxed) as i64,
            ),
            (
                "tusk_mesh_messages_total",
                "counter",
                "Messages the shard sent to other shards.",
                |m| m.mesh_messages.load(Relaxed) as i64,
            ),
            (
                "tusk_under_replicated_partitions",
                "gauge",
                "Partitions the shard leads whose in-sync replicas lack some replica.",
                |m| m.under_replicated.load(Relaxed) as i64,
            ),
            (
                "tusk_offline_partitions",
                "gauge",
                "Partitions of the cluster without a live leader (counted on shard 0).",
                |m| m.offline_partitions.load(Relaxed) as i64,
            ),
            (
                "tusk_isr_shrinks_total",
                "counter",
                "ISR changes that dropped a member, asked by the shard's leaders.",
                |m| m.isr_shrinks.load(Relaxed) as i64,
            ),
            (
                "tusk_isr_expands_total",
                "counter",
                "ISR changes that added a member, asked by the shard's leaders.",
                |m| m.isr_expands.load(Relaxed) as i64,
            ),
            (
                "tusk_replication_throttled_bytes_total",
                "counter",
                "Bytes sent to followers outside the ISR in answers the throttle held back.",
                |m| m.replication_throttled_bytes.load(Relaxed) as i64,
            ),
            (
                "tusk_replication_lag_max_records",
                "gauge",
                "The largest lag, in records, of a follower behind a partition the shard leads.",
                |m| m.replication_lag_max.load(Relaxed) as i64,
            ),
        ];
        for (name, kind, help, get) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for m in &self.shards {
                let _ = writeln!(out, "{name}{{shard=\"{}\"}} {}", m.shard, get(m));
            }
        }
        self.render_quorum(&mut out);
        out
    }

    /// The broker's quorum series (the controller shard writes them; one per broker).
    fn render_quorum(&self, out: &mut String) {
        let Some(q) = self.shards.first().map(|m| &m.quorum) else {
            return;
        };
        let series: [(&str, &str, &str, &AtomicI64); 8] = [
            (
                "tusk_raft_role",
                "gauge",
                "0 not in a cluster, 1 follower, 2 candidate, 3 leader (the active controller).",
                &q.role,
            ),
            (
                "tusk_raft_leader",
                "gauge",
                "Node id of the metadata quorum's leader (-1: none known, or not in a cluster).",
                &q.leader,
            ),
            (
                "tusk_raft_term",
                "gauge",
                "The metadata quorum's current term.",
                &q.term,
            ),
            (
                "tusk_raft_committed_index",
                "gauge",
                "Last metadata log index known committed.",
                &q.committed_index,
            ),
            (
                "tusk_raft_applied_index",
                "gauge",
                "Last metadata log index applied to this broker's image.",
                &q.applied_index,
            ),
            (
                "tusk_brokers_live",
                "gauge",
                "Registered brokers not fenced, in this broker's image.",
                &q.brokers_live,
            ),
            (
                "tusk_brokers_fenced",
                "gauge",
                "Registered brokers fenced, in this broker's image.",
                &q.brokers_fenced,
            ),
            (
                "tusk_broker_fencings_total",
                "counter",
                "Brokers this broker fenced as the active controller.",
                &q.fencings,
            ),
        ];
        for (name, kind, help, value) in series {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {}", value.load(Relaxed));
        }
        let name = "tusk_metadata_change_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Metadata changes at the active controller that committed a record, \
             from their arrival (the wait for the controller's lock included) to their records \
             committed by the quorum and applied here."
        );
        let _ = writeln!(out, "# TYPE {name} histogram");
        q.change_latency.render(out, name, "role=\"controller\"");
    }

    fn render_api_counters(&self, out: &mut String) {
        let families = [
            ("tusk_requests_total", "Requests received, by API."),
            (
                "tusk_request_bytes_total",
                "Request bytes received, by API.",
            ),
            ("tusk_response_bytes_total", "Response bytes sent, by API."),
        ];
        for (f, (name, help)) in families.iter().enumerate() {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            for m in &self.shards {
                let series = match f {
                    0 => &m.requests,
                    1 => &m.bytes_in,
                    _ => &m.bytes_out,
                };
                for (key, value) in series.iter().enumerate() {
                    let Ok(api) = ApiKey::try_from(key as i16) else {
                        continue;
                    };
                    if crate::protocol::versions::supported(api).is_none() {
                        continue;
                    }
                    let v = value.load(Relaxed);
                    let _ = writeln!(out, "{name}{{shard=\"{}\",api=\"{api:?}\"}} {v}", m.shard);
                }
            }
        }
    }

    fn render_histograms(&self, out: &mut String) {
        let name = "tusk_produce_stage_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Produce latency by stage: queue_wait, disk_write, fdatasync, ack."
        );
        let _ = writeln!(out, "# TYPE {name} histogram");
        for m in &self.shards {
            for (i, stage) in STAGE_NAMES.iter().enumerate() {
                let labels = format!("shard=\"{}\",stage=\"{stage}\"", m.shard);
                m.produce_stages[i].render(out, name, &labels);
            }
        }
        let name = "tusk_fetch_latency_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Fetch handling time, long-poll wait included."
        );
        let _ = writeln!(out, "# TYPE {name} histogram");
        for m in &self.shards {
            let labels = format!("shard=\"{}\"", m.shard);
            m.fetch_latency.render(out, name, &labels);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(40));
        h.observe(Duration::from_micros(700));
        h.observe(Duration::from_secs(20));
        let mut out = String::new();
        h.render(&mut out, "x", "shard=\"0\"");
        assert!(
            out.contains("x_bucket{shard=\"0\",le=\"0.00005\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{shard=\"0\",le=\"0.001\"} 2\n"),
            "{out}"
        );
        assert!(out.contains("x_bucket{shard=\"0\",le=\"10\"} 2\n"), "{out}");
        assert!(
            out.contains("x_bucket{shard=\"0\",le=\"+Inf\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("x_count{shard=\"0\"} 3\n"), "{out}");
    }

    #[test]
    fn render_names_every_family_per_shard() {
        let r = Registry::new(2);
        r.shards[1].request(ApiKey::Produce as i16, 100);
        r.shards[1].response(ApiKey::Produce as i16, 40);
        r.shards[0].produce_stage(ProduceStage::Fdatasync, Duration::from_millis(2));
        r.shards[0].request(9999, 1);
        let text = r.render();
        assert!(text.contains("tusk_requests_total{shard=\"1\",api=\"Produce\"} 1\n"));
        assert!(text.contains("tusk_request_bytes_total{shard=\"1\",api=\"Produce\"} 100\n"));
        assert!(text.contains("tusk_response_bytes_total{shard=\"1\",api=\"Produce\"} 40\n"));
        assert!(
            text.contains("tusk_produce_stage_seconds_count{shard=\"0\",stage=\"fdatasync\"} 1\n")
        );
        for family in [
            "tusk_connections_active{shard=\"1\"}",
            "tusk_partitions{shard=\"0\"}",
            "tusk_log_bytes{shard=\"1\"}",
            "tusk_groups{shard=\"0\"}",
            "tusk_group_rebalances_total{shard=\"0\"}",
            "tusk_mesh_messages_total{shard=\"1\"}",
            "tusk_fetch_latency_seconds_bucket{shard=\"1\",le=\"+Inf\"} 0",
        ] {
            assert!(text.contains(family), "{family} in\n{text}");
        }
    }
}
