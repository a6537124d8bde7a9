//! Broker configuration: embedded defaults, overridden by a TOML file (`--config`), overridden
//! by flags; validated once at start. Runs on: the main thread before any shard starts.
//! Invariant: a `Config` that exists is valid (every relation between settings was checked), and
//! every refusal names the setting it refuses.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::constants::*;

pub mod quorum;
pub use quorum::ClusterConfig;

/// Settings as given by flags or the TOML file; `None` means "not given here".
#[derive(Debug, Default, Clone, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Directory for logs and metadata [default: ./data]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on, HOST:PORT; every shard accepts on it [default: 127.0.0.1:9092]
    #[arg(long)]
    pub listen: Option<String>,
    /// Address advertised to clients in Metadata, HOST:PORT [default: the listen address]
    #[arg(long)]
    pub advertise: Option<String>,
    /// Number of shards (executors, one per core) [default: one per online CPU]
    #[arg(long)]
    pub shards: Option<usize>,
    /// Create unknown topics on Metadata and Produce requests [default: true]
    #[arg(long)]
    pub auto_create_topics: Option<bool>,
    /// Partitions of auto-created topics [default: 1]
    #[arg(long)]
    pub default_partitions: Option<u32>,
    /// Durability: always (fdatasync before ack), interval:<ms>, never [default: always]
    #[arg(long)]
    pub flush: Option<String>,
    /// Size at which a segment rolls, a multiple of 4096 [default: 1073741824]
    #[arg(long)]
    pub segment_bytes: Option<u64>,
    /// Age at which a segment rolls [default: 604800000]
    #[arg(long)]
    pub segment_ms: Option<u64>,
    /// Delete closed segments older than this; -1 keeps forever [default: 604800000]
    #[arg(long, allow_negative_numbers = true)]
    pub retention_ms: Option<i64>,
    /// Delete closed segments beyond this many bytes per partition; -1 unlimited [default: -1]
    #[arg(long, allow_negative_numbers = true)]
    pub retention_bytes: Option<i64>,
    /// Largest record batch accepted [default: 8388608]
    #[arg(long)]
    pub message_max_bytes: Option<u32>,
    /// Largest request frame; bigger frames close the connection [default: 104857600]
    #[arg(long)]
    pub socket_request_max_bytes: Option<u32>,
    /// Largest fetch response [default: 57671680]
    #[arg(long)]
    pub fetch_max_bytes: Option<u32>,
    /// How fetches send segment bytes: copy (O_DIRECT read into memory, then send) or splice
    /// (zero-copy through the page cache; faster when the bytes are already cached, slower for
    /// large cold catch-ups, see BENCHMARKS.md) [default: copy]
    #[arg(long)]
    pub fetch_path: Option<String>,
    /// Let one write and one fdatasync acknowledge every produce waiting for it; false writes
    /// and syncs each produce request on its own (for comparison only) [default: true]
    #[arg(long)]
    pub group_commit: Option<bool>,
    /// Prometheus metrics address (`GET /metrics`), or `off` [default: 127.0.0.1:9644]
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// Log filter: error, warn, info, debug, trace, or tracing directives such as
    /// `info,tusk::storage=debug`; the TUSK_LOG environment variable is used when this is unset
    /// [default: info]
    #[arg(long)]
    pub log_level: Option<String>,
    /// Log format: text or json (one JSON object per line) [default: text]
    #[arg(long)]
    pub log_format: Option<String>,
    /// Bytes of recent batches each partition keeps in memory for tail reads [default: 8388608]
    #[arg(long)]
    pub tail_cache_bytes: Option<u64>,
    /// Microseconds an idle shard spins before parking (lower cross-shard latency) [default: 0]
    #[arg(long)]
    pub spin_before_park_us: Option<u64>,
    /// How often retention runs [default: 30000]
    #[arg(long)]
    pub retention_check_interval_ms: Option<u64>,
    /// Messages each shard-to-shard channel holds before senders wait [default: 1024]
    #[arg(long)]
    pub mesh_channel_depth: Option<usize>,
    /// Smallest session timeout a group member may ask for [default: 1000]
    #[arg(long)]
    pub group_session_timeout_ms_min: Option<i32>,
    /// Largest session timeout a group member may ask for [default: 1800000]
    #[arg(long)]
    pub group_session_timeout_ms_max: Option<i32>,
    /// Most members in one group [default: 1000]
    #[arg(long)]
    pub group_members_max: Option<usize>,
    /// This broker's id in a cluster, one of the ids in --controller-quorum-voters [default: 0]
    #[arg(long, allow_negative_numbers = true)]
    pub node_id: Option<i32>,
    /// Where this broker answers the metadata quorum, HOST:PORT [default: its address in
    /// --controller-quorum-voters]
    #[arg(long)]
    pub controller_listen: Option<String>,
    /// The metadata quorum, ID@HOST:PORT,... (every voter is a broker); without it the broker is
    /// a one-node cluster
    #[arg(long)]
    pub controller_quorum_voters: Option<String>,
    /// How long a broker of a cluster may go without a heartbeat before the controller fences
    /// it (a dead process is fenced within ~1.5 s regardless) [default: 9000]
    #[arg(long)]
    pub broker_session_timeout_ms: Option<u64>,
    /// Replicas of a topic created with replication factor -1 (the client's "broker default")
    /// or auto-created; -1 means min(3, live brokers) [default: -1]
    #[arg(long, allow_negative_numbers = true)]
    pub default_replication_factor: Option<i16>,
    /// In-sync replicas an acks=all produce needs, for topics without their own
    /// `min.insync.replicas` (clamped to the topic's replication factor) [default: 2]
    #[arg(long)]
    pub min_insync_replicas: Option<u16>,
    /// A follower that has not caught up with its leader for this long leaves the in-sync
    /// replicas [default: 10000]
    #[arg(long)]
    pub replica_lag_time_max_ms: Option<u64>,
    /// Bytes per second this broker sends, as leader, to followers outside the ISR (a cold
    /// catch-up must not take the disk from produces); 0: unlimited [default: 0]
    #[arg(long)]
    pub replication_throttle_bytes_per_sec: Option<u64>,
}

impl Settings {
    /// `self` with every unset field taken from `lower`.
    fn over(self, lower: Settings) -> Settings {
        macro_rules! pick {
            ($($f:ident),*) => { Settings { $($f: self.$f.or(lower.$f)),* } };
        }
        pick!(
            data_dir,
            listen,
            advertise,
            shards,
            auto_create_topics,
            default_partitions,
            flush,
            segment_bytes,
            segment_ms,
            retention_ms,
            retention_bytes,
            message_max_bytes,
            socket_request_max_bytes,
            fetch_max_bytes,
            fetch_path,
            group_commit,
            metrics_listen,
            log_level,
            log_format,
            tail_cache_bytes,
            spin_before_park_us,
            retention_check_interval_ms,
            mesh_channel_depth,
            group_session_timeout_ms_min,
            group_session_timeout_ms_max,
            group_members_max,
            node_id,
            controller_listen,
            controller_quorum_voters,
            broker_session_timeout_ms,
            default_replication_factor,
            min_insync_replicas,
            replica_lag_time_max_ms,
            replication_throttle_bytes_per_sec
        )
    }
}

/// A refused configuration, naming the setting.
#[derive(Debug)]
pub struct ConfigError {
    pub setting: &'static str,
    pub reason: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid setting `{}`: {}", self.setting, self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// When appended bytes are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// fdatasync after every write, before any acknowledgement (the default).
    Always,
    /// Acknowledge after the write; fdatasync at most this many milliseconds later.
    IntervalMs(u64),
    /// Never fdatasync (the page cache and disk cache decide).
    Never,
}

/// Per-partition log settings (broker defaults, overridden per topic).
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub segment_bytes: u64,
    pub segment_ms: u64,
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub message_max_bytes: u32,
    pub flush: FlushPolicy,
    pub tail_cache_bytes: u64,
    pub index_interval_bytes: u64,
    /// false: each write carries one produce request's batch (a contrast for benchmarks).
    pub group_commit: bool,
}

/// Limits of a consumer group, from the broker configuration.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub session_timeout_ms_min: i32,
    pub session_timeout_ms_max: i32,
    pub members_max: usize,
    /// Largest member metadata (subscription) or assignment accepted.
    pub metadata_bytes_max: usize,
}

fn refuse<T>(setting: &'static str, reason: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError {
        setting,
        reason: reason.into(),
    })
}

/// The validated broker configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub advertise_host: String,
    pub advertise_port: u16,
    pub shards: usize,
    pub auto_create_topics: bool,
    pub default_partitions: u32,
    pub log: LogConfig,
    pub socket_request_max_bytes: u32,
    pub fetch_max_bytes: u32,
    pub fetch_path: FetchPath,
    /// None: metrics are off.
    pub metrics_listen: Option<SocketAddr>,
    pub log_level: String,
    pub log_format: LogFormat,
    pub spin_before_park_us: u64,
    /// Depth of each shard-to-shard channel.
    pub mesh_channel_depth: usize,
    pub retention_check_interval_ms: u64,
    pub node_id: crate::protocol::types::NodeId,
    /// A cluster broker without a heartbeat for this long is fenced.
    pub broker_session_timeout_ms: u64,
    /// Replicas of a topic created with replication factor -1 (`None`: min(3, live brokers)).
    pub default_replication_factor: Option<u16>,
    /// The broker default of `min.insync.replicas`.
    pub min_insync_replicas: u16,
    /// Kafka's `replica.lag.time.max.ms`.
    pub replica_lag_time_max_ms: u64,
    /// Leader-side throttle of catch-up replication (followers outside the ISR); 0: none.
    pub replication_throttle_bytes_per_sec: u64,
    /// `None`: a one-node cluster.
    pub cluster: Option<ClusterConfig>,
    pub group: GroupConfig,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

fn parse_metrics_listen(value: &str) -> Result<Option<SocketAddr>, ConfigError> {
    if value == "off" {
        return Ok(None);
    }
    value.parse().map(Some).or_else(|_| {
        refuse(
            "metrics_listen",
            format!("`{value}` is not an address like 127.0.0.1:9644, or off"),
        )
    })
}

fn parse_log(
    level: Option<&str>,
    format: Option<&str>,
) -> Result<(String, LogFormat), ConfigError> {
    let level = level
        .map(str::to_string)
        .or_else(|| std::env::var("TUSK_LOG").ok())
        .unwrap_or_else(|| "info".into());
    // A bare word must be a level (a bare word is also valid filter syntax: a target name,
    // which would silently log nothing); directives like `info,tusk::storage=debug` go to the
    // filter parser.
    let levels = ["error", "warn", "info", "debug", "trace", "off"];
    let plain_word = !level.contains(['=', ',', ':']);
    if (plain_word && !levels.contains(&level.to_ascii_lowercase().as_str()))
        || tracing_subscriber::EnvFilter::try_new(&level).is_err()
    {
        return refuse(
            "log_level",
            format!("`{level}` is not a level (error, warn, info, debug, trace) or a filter"),
        );
    }
    let format = match format.unwrap_or("text") {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => return refuse("log_format", format!("`{other}` is not one of text, json")),
    };
    Ok((level, format))
}

/// How fetches send bytes that are not in the tail cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchPath {
    /// splice from an ordinary read-only descriptor through a pipe into the socket.
    Splice,
    /// O_DIRECT read into memory, then a send.
    Copy,
}

pub fn parse_fetch_path(value: &str) -> Result<FetchPath, ConfigError> {
    match value {
        "splice" => Ok(FetchPath::Splice),
        "copy" => Ok(FetchPath::Copy),
        other => refuse(
            "fetch_path",
            format!("`{other}` is not one of splice, copy"),
        ),
    }
}

pub fn parse_flush(value: &str) -> Result<FlushPolicy, ConfigError> {
    match value {
        "always" => Ok(FlushPolicy::Always),
        "never" => Ok(FlushPolicy::Never),
        other => match other.strip_prefix("interval:").map(str::parse::<u64>) {
            Some(Ok(ms)) if ms >= FLUSH_INTERVAL_MS_MIN => Ok(FlushPolicy::IntervalMs(ms)),
            _ => refuse(
                "flush",
                format!("`{other}` is not one of always, never, interval:<ms>"),
            ),
        },
    }
}

fn split_host_port(setting: &'static str, value: &str) -> Result<(String, u16), ConfigError> {
    let Some((host, port)) = value.rsplit_once(':') else {
        return refuse(setting, format!("`{value}` is not HOST:PORT"));
    };
    let Ok(port) = port.parse::<u16>() else {
        return refuse(setting, format!("`{value}` has no valid port"));
    };
    if host.is_empty() {
        return refuse(setting, format!("`{value}` has no host"));
    }
    Ok((host.trim_matches(['[', ']']).to_string(), port))
}

impl Config {
    /// Resolves flags over the TOML file (if any) over the embedded defaults, and validates.
    pub fn resolve(flags: Settings, file: Option<&Path>) -> Result<Config, ConfigError> {
        let from_file = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).or_else(|e| {
                    refuse("config", format!("cannot read {}: {e}", path.display()))
                })?;
                toml::from_str::<Settings>(&text)
                    .or_else(|e| refuse("config", format!("{}: {e}", path.display())))?
            }
            None => Settings::default(),
        };
        Config::validate(flags.over(from_file))
    }

    fn validate(s: Settings) -> Result<Config, ConfigError> {
        let online = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let shards = s.shards.unwrap_or(online);
        if shards == 0 || shards > SHARDS_MAX {
            return refuse("shards", format!("must be 1..={SHARDS_MAX}, got {shards}"));
        }
        let listen_text = s.listen.unwrap_or_else(|| "127.0.0.1:9092".into());
        let listen = listen_text
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or(())
            .or_else(|_| {
                refuse(
                    "listen",
                    format!("`{listen_text}` is not a HOST:PORT address"),
                )
            })?;
        let (advertise_host, advertise_port) =
            split_host_port("advertise", s.advertise.as_deref().unwrap_or(&listen_text))?;
        let default_partitions = s.default_partitions.unwrap_or(DEFAULT_PARTITIONS_DEFAULT);
        if default_partitions == 0 || default_partitions > PARTITIONS_PER_TOPIC_MAX {
            return refuse(
                "default_partitions",
                format!("must be 1..={PARTITIONS_PER_TOPIC_MAX}"),
            );
        }
        let (log_level, log_format) = parse_log(s.log_level.as_deref(), s.log_format.as_deref())?;
        let flush = parse_flush(s.flush.as_deref().unwrap_or("always"))?;
        let segment_bytes = s.segment_bytes.unwrap_or(SEGMENT_BYTES_DEFAULT);
        if segment_bytes < SEGMENT_BYTES_MIN
            || segment_bytes > u32::MAX as u64
            || !segment_bytes.is_multiple_of(DIRECT_IO_ALIGNMENT_BYTES)
        {
            return refuse(
                "segment_bytes",
                format!("must be a multiple of {DIRECT_IO_ALIGNMENT_BYTES} in {SEGMENT_BYTES_MIN}..=4294963200, got {segment_bytes}"),
            );
        }
        // A small segment lowers the default batch limit with it: a batch must fit in a segment.
        let message_max_bytes = s
            .message_max_bytes
            .unwrap_or((MESSAGE_MAX_BYTES_DEFAULT as u64).min(segment_bytes) as u32);
        if !(1024..=MESSAGE_MAX_BYTES_MAX).contains(&message_max_bytes)
            || message_max_bytes as u64 > segment_bytes
        {
            return refuse(
                "message_max_bytes",
                "must be at least 1024 and at most segment_bytes",
            );
        }
        let socket_request_max_bytes = s
            .socket_request_max_bytes
            .unwrap_or(SOCKET_REQUEST_MAX_BYTES_DEFAULT);
        if socket_request_max_bytes < message_max_bytes {
            return refuse(
                "socket_request_max_bytes",
                "must be at least message_max_bytes",
            );
        }
        // A frame larger than a connection's in-flight budget could never be read: its reader
        // would wait forever for budget that cannot exist.
        if socket_request_max_bytes as u64 > SOCKET_REQUEST_MAX_BYTES_MAX as u64 {
            return refuse(
                "socket_request_max_bytes",
                format!(
                    "must be at most {SOCKET_REQUEST_MAX_BYTES_MAX} (the per-connection budget \
                     of frames in flight)"
                ),
            );
        }
        let mesh_channel_depth = s.mesh_channel_depth.unwrap_or(MESH_CHANNEL_DEPTH);
        if !(1..=MESH_CHANNEL_DEPTH_MAX).contains(&mesh_channel_depth) {
            return refuse(
                "mesh_channel_depth",
                format!("must be 1..={MESH_CHANNEL_DEPTH_MAX}"),
            );
        }
        let tail_cache_bytes = s.tail_cache_bytes.unwrap_or(TAIL_CACHE_BYTES_DEFAULT);
        let retention_ms = s.retention_ms.unwrap_or(RETENTION_MS_DEFAULT);
        if retention_ms < -1 {
            return refuse("retention_ms", "must be -1 or positive");
        }
        let retention_bytes = s.retention_bytes.unwrap_or(RETENTION_BYTES_DEFAULT);
        if retention_bytes < -1 {
            return refuse("retention_bytes", "must be -1 or positive");
        }
        let session_min = s.group_session_timeout_ms_min.unwrap_or(1000);
        let session_max = s.group_session_timeout_ms_max.unwrap_or(1_800_000);
        if session_min < 1 || session_max < session_min {
            return refuse(
                "group_session_timeout_ms_min",
                "must be positive and at most group_session_timeout_ms_max",
            );
        }
        let members_max = s.group_members_max.unwrap_or(1000);
        if members_max == 0 {
            return refuse("group_members_max", "must be at least 1");
        }
        let data_dir = s.data_dir.unwrap_or_else(|| PathBuf::from("./data"));
        let broker_session_timeout_ms = s.broker_session_timeout_ms.unwrap_or(9000);
        if !(2000..=600_000).contains(&broker_session_timeout_ms) {
            return refuse(
                "broker_session_timeout_ms",
                format!("must be 2000..=600000, got {broker_session_timeout_ms}"),
            );
        }
        let default_replication_factor = match s.default_replication_factor.unwrap_or(-1) {
            -1 => None,
            n if n >= 1 && (n == 1 || s.controller_quorum_voters.is_some()) => Some(n as u16),
            n => {
                return refuse(
                    "default_replication_factor",
                    format!(
                        "must be -1 (min(3, live brokers)) or at least 1, and 1 on a one-broker \
                         cluster; got {n}"
                    ),
                )
            }
        };
        let min_insync_replicas = s.min_insync_replicas.unwrap_or(2);
        if min_insync_replicas == 0 {
            return refuse("min_insync_replicas", "must be at least 1");
        }
        let replication_throttle_bytes_per_sec = s.replication_throttle_bytes_per_sec.unwrap_or(0);
        if (1..1024 * 1024).contains(&replication_throttle_bytes_per_sec) {
            return refuse(
                "replication_throttle_bytes_per_sec",
                format!(
                    "must be 0 (unlimited) or at least 1048576, got \
                     {replication_throttle_bytes_per_sec}"
                ),
            );
        }
        let replica_lag_time_max_ms = s.replica_lag_time_max_ms.unwrap_or(10_000);
        if !(500..=600_000).contains(&replica_lag_time_max_ms) {
            return refuse(
                "replica_lag_time_max_ms",
                format!("must be 500..=600000, got {replica_lag_time_max_ms}"),
            );
        }
        let cluster = quorum::cluster_config(
            s.node_id,
            s.controller_listen.as_deref(),
            s.controller_quorum_voters.as_deref(),
            listen,
        )?;
        Ok(Config {
            data_dir,
            listen,
            advertise_host,
            advertise_port,
            shards,
            auto_create_topics: s.auto_create_topics.unwrap_or(true),
            default_partitions,
            log: LogConfig {
                segment_bytes,
                segment_ms: s.segment_ms.unwrap_or(SEGMENT_MS_DEFAULT),
                retention_ms,
                retention_bytes,
                message_max_bytes,
                flush,
                tail_cache_bytes,
                index_interval_bytes: INDEX_INTERVAL_BYTES,
                group_commit: s.group_commit.unwrap_or(true),
            },
            socket_request_max_bytes,
            fetch_max_bytes: s.fetch_max_bytes.unwrap_or(FETCH_MAX_BYTES_DEFAULT),
            fetch_path: parse_fetch_path(s.fetch_path.as_deref().unwrap_or("copy"))?,
            metrics_listen: parse_metrics_listen(
                s.metrics_listen.as_deref().unwrap_or("127.0.0.1:9644"),
            )?,
            log_level,
            log_format,
            spin_before_park_us: s.spin_before_park_us.unwrap_or(0),
            mesh_channel_depth,
            retention_check_interval_ms: s.retention_check_interval_ms.unwrap_or(30_000).max(100),
            node_id: crate::protocol::types::NodeId(s.node_id.unwrap_or(NODE_ID_DEFAULT)),
            cluster,
            broker_session_timeout_ms,
            default_replication_factor,
            min_insync_replicas,
            replica_lag_time_max_ms,
            replication_throttle_bytes_per_sec,
            group: GroupConfig {
                session_timeout_ms_min: session_min,
                session_timeout_ms_max: session_max,
                members_max,
                metadata_bytes_max: GROUP_METADATA_BYTES_MAX,
            },
        })
    }

    /// The log settings of a topic: broker defaults with the topic's overrides applied.
    pub fn topic_log_config(
        &self,
        configs: &std::collections::BTreeMap<String, String>,
    ) -> LogConfig {
        let mut log = self.log.clone();
        for (k, v) in configs {
            match k.as_str() {
                "retention.ms" => log.retention_ms = v.parse().unwrap_or(log.retention_ms),
                "retention.bytes" => log.retention_bytes = v.parse().unwrap_or(log.retention_bytes),
                "segment.ms" => log.segment_ms = v.parse().unwrap_or(log.segment_ms),
                "segment.bytes" => log.segment_bytes = v.parse().unwrap_or(log.segment_bytes),
                "max.message.bytes" => {
                    log.message_max_bytes = v.parse().unwrap_or(log.message_max_bytes)
                }
                _ => {}
            }
        }
        // A batch must always fit in one segment of the topic.
        log.message_max_bytes = log
            .message_max_bytes
            .min(log.segment_bytes.min(u32::MAX as u64) as u32);
        log
    }
}

/// Checks one topic-level config key and value against Kafka's rules (CreateTopics,
/// IncrementalAlterConfigs); `Err` is the message for INVALID_CONFIG. Every accepted value is
/// short (an enumerated word or a number), so the metadata record that carries a topic's
/// configs is bounded (`constants::METADATA_RECORD_BYTES_BOUND`).
pub fn validate_topic_config(key: &str, value: &str, broker: &Config) -> Result<(), String> {
    if key.len() > TOPIC_CONFIG_KEY_BYTES_MAX {
        return Err(format!(
            "a topic config key is longer than {TOPIC_CONFIG_KEY_BYTES_MAX} bytes"
        ));
    }
    if value.len() > TOPIC_CONFIG_VALUE_BYTES_MAX {
        return Err(format!(
            "{key}: the value is {} bytes, longer than {TOPIC_CONFIG_VALUE_BYTES_MAX}",
            value.len()
        ));
    }
    let int = |min: i64, max: i64| match value.parse::<i64>() {
        Ok(v) if v >= min && v <= max => Ok(v),
        _ => Err(format!(
            "{key}={value}: must be an integer in {min}..={max}"
        )),
    };
    let one_of = |allowed: &[&str]| {
        if allowed.contains(&value) {
            Ok(())
        } else {
            Err(format!(
                "{key}={value}: must be one of {}",
                allowed.join(", ")
            ))
        }
    };
    match key {
        "retention.ms" | "retention.bytes" => int(-1, i64::MAX).map(|_| ()),
        "segment.ms" => int(1, i64::MAX).map(|_| ()),
        "segment.bytes" => {
            let v = int(SEGMENT_BYTES_MIN as i64, u32::MAX as i64)?;
            if v % DIRECT_IO_ALIGNMENT_BYTES as i64 != 0 {
                return Err(format!("{key}={value}: must be a multiple of 4096"));
            }
            Ok(())
        }
        "max.message.bytes" => int(
            1024,
            broker.log.segment_bytes.min(MESSAGE_MAX_BYTES_MAX as u64) as i64,
        )
        .map(|_| ()),
        // Kafka also knows `compact`; tusk does not compact logs, so it refuses it rather than
        // keeping data a compacting broker would drop.
        "cleanup.policy" => one_of(&["delete"]),
        // Kafka's values are uncompressed, zstd, lz4, snappy, gzip and producer. tusk stores
        // batches exactly as the producer compressed them and never recompresses, so only the
        // values that mean that are accepted; the others are refused, not silently ignored.
        "compression.type" => one_of(&["producer"])
            .map_err(|e| format!("{e} (tusk keeps batches as the producer compressed them)")),
        // Kafka's values are CreateTime and LogAppendTime; tusk keeps the producer's timestamps.
        "message.timestamp.type" => one_of(&["CreateTime"])
            .map_err(|e| format!("{e} (tusk keeps the producer's timestamps)")),
        "min.insync.replicas" => int(1, i32::MAX as i64).map(|_| ()),
        _ => Err(format!("unknown or unsupported topic config `{key}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = Config::resolve(Settings::default(), None).unwrap();
        assert_eq!(c.listen.port(), 9092);
        assert_eq!(c.log.flush, FlushPolicy::Always);
        assert_eq!(c.data_dir, PathBuf::from("./data"));
    }

    #[test]
    fn refusals_name_the_setting() {
        let bad = |s: Settings| Config::resolve(s, None).unwrap_err().setting;
        assert_eq!(
            bad(Settings {
                shards: Some(0),
                ..Default::default()
            }),
            "shards"
        );
        assert_eq!(
            bad(Settings {
                flush: Some("sometimes".into()),
                ..Default::default()
            }),
            "flush"
        );
        assert_eq!(
            bad(Settings {
                segment_bytes: Some(5000),
                ..Default::default()
            }),
            "segment_bytes"
        );
        assert_eq!(
            bad(Settings {
                listen: Some("nope".into()),
                ..Default::default()
            }),
            "listen"
        );
        assert_eq!(
            parse_flush("interval:50").unwrap(),
            FlushPolicy::IntervalMs(50)
        );
    }

    /// Kafka's rules for topic configs: enumerated values, numeric ranges, bounded lengths. A
    /// 2,000,000-byte `compression.type` was once accepted, and the metadata record carrying
    /// it was cut at the next start, taking a topic and its acknowledged records with it.
    #[test]
    fn topic_configs_follow_kafka_rules() {
        let c = Config::resolve(Settings::default(), None).unwrap();
        let ok = |k: &str, v: &str| validate_topic_config(k, v, &c).is_ok();
        assert!(ok("compression.type", "producer"));
        assert!(!ok("compression.type", &"x".repeat(2_000_000)));
        assert!(!ok("compression.type", "lz5"));
        assert!(!ok("compression.type", "zstd"), "tusk never recompresses");
        assert!(ok("cleanup.policy", "delete"));
        assert!(!ok("cleanup.policy", "compact"));
        assert!(!ok("cleanup.policy", "delete,x"));
        assert!(ok("message.timestamp.type", "CreateTime"));
        assert!(!ok("message.timestamp.type", "createtime"));
        assert!(ok("min.insync.replicas", "2"));
        assert!(!ok("min.insync.replicas", "0"));
        assert!(!ok("min.insync.replicas", "99999999999"));
        assert!(ok("retention.ms", "-1"));
        assert!(!ok("retention.ms", "-2"));
        assert!(!ok("retention.ms", "1e3"));
        assert!(ok("retention.bytes", "1073741824"));
        assert!(ok("segment.bytes", "1048576"));
        assert!(!ok("segment.bytes", "1048577"));
        assert!(!ok("segment.bytes", "8589934592"));
        assert!(!ok("segment.ms", "0"));
        assert!(ok("max.message.bytes", "1048576"));
        assert!(!ok("max.message.bytes", "1023"));
        assert!(!ok(&"k".repeat(100), "1"));
        assert!(!ok("unknown.key", "1"));
        // The longest accepted value fits the bound the metadata log's record limit rests on.
        assert!(i64::MIN.to_string().len() <= TOPIC_CONFIG_VALUE_BYTES_MAX);
    }

    /// A frame above the per-connection budget once waited forever for budget (the connection
    /// leaked); such a limit is refused at start.
    #[test]
    fn socket_request_max_bytes_fits_the_connection_budget() {
        let refused = Config::resolve(
            Settings {
                socket_request_max_bytes: Some(SOCKET_REQUEST_MAX_BYTES_MAX + 1),
                ..Default::default()
            },
            None,
        )
        .unwrap_err();
        assert_eq!(refused.setting, "socket_request_max_bytes");
        let big = Config::resolve(
            Settings {
                message_max_bytes: Some(200 * 1024 * 1024),
                socket_request_max_bytes: Some(200 * 1024 * 1024),
                ..Default::default()
            },
            None,
        );
        assert!(big.is_err());
    }

    #[test]
    fn file_settings_under_flags_and_unknown_keys_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tusk.toml");
        std::fs::write(&path, "shards = 1\nflush = \"never\"\n").unwrap();
        let flags = Settings {
            shards: Some(2),
            ..Default::default()
        };
        let c = Config::resolve(flags, Some(&path)).unwrap();
        assert_eq!(c.shards, 2);
        assert_eq!(c.log.flush, FlushPolicy::Never);
        std::fs::write(&path, "shard = 1\n").unwrap();
        let e = Config::resolve(Settings::default(), Some(&path)).unwrap_err();
        assert_eq!(e.setting, "config");
        assert!(e.reason.contains("shard"), "{}", e.reason);
    }
}
