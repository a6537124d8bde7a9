//! Starting and stopping the broker: one pinned executor per shard, the shard mesh, the
//! metadata log replayed on the controller shard and its image handed to every shard, each
//! shard's partitions recovered, connections accepted on every shard, and a clean stop on
//! SIGTERM/SIGINT. Runs on: the main thread (start, signals, join) and every shard.
//! Invariants: nothing is served before every shard has recovered its partitions; a stop lets
//! in-flight writes finish and syncs before the process exits.

use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use crate::cluster::controller::Controller;
use crate::cluster::raft::{QuorumConfig, QuorumMember, RaftMetadataLog};
use crate::cluster::{LocalMetadataLog, MetadataImage, MetadataLog};
use crate::config::Config;
use crate::placement::CONTROLLER_SHARD;
use crate::protocol::types::{ShardId, TopicPartition};
use crate::runtime::env::Env;
use crate::runtime::io;
use crate::runtime::mesh::{self, Mesh, MeshEnds, Receiver};
use crate::shard::cluster::QuorumRole;
use crate::shard::messages::ShardMessage;
use crate::shard::metadata::ControllerService;
use crate::shard::Shard;

/// Why the broker could not start (or stopped abnormally).
#[derive(Debug)]
pub enum StartError {
    DataDir {
        path: PathBuf,
        reason: String,
    },
    Metadata(crate::cluster::MetadataError),
    Shard {
        shard: usize,
        reason: String,
    },
    Listen {
        addr: std::net::SocketAddr,
        reason: String,
    },
    /// The metrics address cannot be bound.
    MetricsListen {
        addr: std::net::SocketAddr,
        reason: String,
    },
    /// A valid configuration this build cannot serve yet.
    Unsupported {
        setting: &'static str,
        reason: String,
    },
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::DataDir { path, reason } => {
                write!(f, "data_dir {}: {reason}", path.display())
            }
            StartError::Metadata(e) => write!(f, "{e}"),
            StartError::Shard { shard, reason } => write!(f, "shard {shard}: {reason}"),
            StartError::Listen { addr, reason } => write!(f, "listen {addr}: {reason}"),
            StartError::MetricsListen { addr, reason } => {
                write!(f, "metrics_listen {addr}: {reason} (or set it to off)")
            }
            StartError::Unsupported { setting, reason } => write!(f, "{setting}: {reason}"),
        }
    }
}

impl std::error::Error for StartError {}

/// Every connection holds a descriptor: lift the soft open-files limit to the hard one, as
/// brokers do (systemd units set the hard limit; see tuning/).
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit fill and read a plain struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    if limit.rlim_cur < limit.rlim_max {
        let soft = limit.rlim_cur;
        limit.rlim_cur = limit.rlim_max;
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } == 0 {
            tracing::info!(
                from = soft,
                to = limit.rlim_max,
                "raised the open-files limit"
            );
        }
    }
    if limit.rlim_cur < 65_536 {
        tracing::warn!(
            open_files_max = limit.rlim_cur,
            "the open-files limit caps connections; raise LimitNOFILE (tuning/tusk.service)"
        );
    }
}

/// Runs the broker until SIGTERM or SIGINT.
pub fn run(config: Config) -> Result<(), StartError> {
    let _lock = prepare_data_dir(&config.data_dir)?;
    refuse_live_listener(config.listen)?;
    raise_open_files_limit();
    let config = Arc::new(config);
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        crate::runtime::install_panic_hook(move || {
            tracing::error!("a shard panicked; stopping the broker");
            stop.store(true, Ordering::SeqCst);
        });
    }
    watch_signals(stop.clone())?;
    let registry = crate::metrics::Registry::new(config.shards);
    let metrics_listener = match config.metrics_listen {
        Some(addr) => {
            Some(
                std::net::TcpListener::bind(addr).map_err(|e| StartError::MetricsListen {
                    addr,
                    reason: e.to_string(),
                })?,
            )
        }
        None => None,
    };
    let (ready_tx, ready_rx) = mpsc::channel::<Result<Started, String>>();
    // This incarnation's broker epoch: the start time, so a restart's is always newer.
    let epoch = Env::real().wall_ms();
    let handles = spawn_shards(&config, &stop, &registry, ready_tx, epoch)?;
    let mut failure = match wait_started(&config, &stop, ready_rx) {
        Ok(topics) => {
            if let Some(listener) = metrics_listener {
                serve_metrics(&config, listener, &registry, &stop)?;
            }
            tracing::info!(
                listen = %config.listen,
                shards = config.shards,
                data_dir = %config.data_dir.display(),
                topics,
                "tusk is serving"
            );
            None
        }
        Err(e) => e,
    };
    for (i, h) in handles.into_iter().enumerate() {
        if h.join().is_err() {
            stop.store(true, Ordering::SeqCst);
            failure.get_or_insert(format!("shard {i} panicked"));
        }
    }
    match failure {
        Some(reason) => Err(StartError::Shard { shard: 0, reason }),
        None => Ok(()),
    }
}

/// One pinned executor per shard, each running `shard_main` on its end of the mesh.
fn spawn_shards(
    config: &Arc<Config>,
    stop: &Arc<AtomicBool>,
    registry: &crate::metrics::Registry,
    ready: mpsc::Sender<Result<Started, String>>,
    epoch: i64,
) -> Result<Vec<crate::runtime::executor::ShardThread>, StartError> {
    let mut handles = Vec::new();
    let ends = mesh::build::<ShardMessage>(config.shards, config.mesh_channel_depth);
    for (i, ends) in ends.into_iter().enumerate() {
        let (config, stop, ready) = (config.clone(), stop.clone(), ready.clone());
        let metrics = registry.shards[i].clone();
        let spin = config.spin_before_park_us;
        let handle = crate::runtime::executor::spawn_shard(i, spin, move || async move {
            crate::metrics::install(metrics);
            let shard = ShardId(i);
            let started = shard_main(shard, ends, config, stop.clone(), ready.clone(), epoch);
            if let Err(e) = started.await {
                let _ = ready.send(Err(format!("shard {i}: {e}")));
                stop.store(true, Ordering::SeqCst);
            }
        })
        .map_err(|reason| StartError::Shard { shard: i, reason })?;
        handles.push(handle);
    }
    Ok(handles)
}

/// Waits until every shard serves: the number of topics, or (as `Err`) why the start failed
/// (`None` if a shard went away without a reason).
fn wait_started(
    config: &Config,
    stop: &AtomicBool,
    ready: mpsc::Receiver<Result<Started, String>>,
) -> Result<usize, Option<String>> {
    let mut started = 0;
    let mut topics = 0;
    while started < config.shards {
        match ready.recv() {
            Ok(Ok(s)) => {
                started += 1;
                topics = topics.max(s.topics);
            }
            Ok(Err(e)) => {
                stop.store(true, Ordering::SeqCst);
                return Err(Some(e));
            }
            Err(_) => return Err(None),
        }
    }
    Ok(topics)
}

/// The Prometheus endpoint on a thread of its own.
fn serve_metrics(
    config: &Config,
    listener: std::net::TcpListener,
    registry: &crate::metrics::Registry,
    stop: &Arc<AtomicBool>,
) -> Result<(), StartError> {
    let (registry, stop) = (registry.clone(), stop.clone());
    tracing::info!(metrics_listen = ?config.metrics_listen, "metrics at /metrics");
    std::thread::Builder::new()
        .name("tusk-metrics".into())
        .spawn(move || crate::metrics::serve(listener, registry, stop))
        .map(|_| ())
        .map_err(|e| StartError::Shard {
            shard: 0,
            reason: format!("metrics thread: {e}"),
        })
}

/// What a shard reports once it serves.
struct Started {
    topics: usize,
}

/// SIGTERM and SIGINT set `stop`.
fn watch_signals(stop: Arc<AtomicBool>) -> Result<(), StartError> {
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .map_err(|e| StartError::Shard {
        shard: 0,
        reason: format!("signal handler: {e}"),
    })?;
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            tracing::info!(signal = sig, "stopping");
            stop.store(true, Ordering::SeqCst);
        }
    });
    Ok(())
}

/// The metadata image every shard starts from. The controller shard replays the metadata log
/// and sends the image to every other shard as the first message on the mesh; the others wait
/// for it.
async fn starting_image(
    id: ShardId,
    env: &Env,
    config: &Arc<Config>,
    mesh: &Mesh<ShardMessage>,
    receivers: &[Receiver<ShardMessage>],
    start: &Start,
) -> Result<(Arc<MetadataImage>, Option<ControllerService>), String> {
    if id == CONTROLLER_SHARD {
        let (log, quorum) = open_metadata_log(env, config, start).await?;
        let mut image = MetadataImage::default();
        for (_, record) in log.committed_from(0).over(&MetadataImage::default()) {
            image.apply(&record);
        }
        let image = Arc::new(image);
        for other in 0..config.shards {
            if other != id.0 {
                let (reply, _) = futures_channel::oneshot::channel();
                let message = ShardMessage::MetadataUpdate {
                    image: image.clone(),
                    reply,
                };
                mesh.send(other, message).await;
            }
        }
        let controller = Controller::new(log, (*image).clone(), config.clone(), env.clone());
        return Ok((image, Some(ControllerService::new(controller, quorum))));
    }
    // The controller shard's channel is the first of this shard's receivers.
    match receivers[CONTROLLER_SHARD.0].recv().await {
        Some(ShardMessage::MetadataUpdate { image, reply }) => {
            let _ = reply.send(());
            Ok((image, None))
        }
        Some(other) => Err(format!("expected the metadata image first, got {other:?}")),
        None => Err("the controller shard did not start".into()),
    }
}

/// What every shard knows of this start.
struct Start {
    stop: Arc<AtomicBool>,
    /// This incarnation's broker epoch.
    epoch: i64,
}

/// The controller shard's metadata log: the local file on one node; in a cluster, this
/// broker's member of the quorum, once a leader is known and this member has applied what the
/// quorum had committed (so the starting image is current).
async fn open_metadata_log(
    env: &Env,
    config: &Arc<Config>,
    start: &Start,
) -> Result<(Rc<dyn MetadataLog>, Option<QuorumRole>), String> {
    let raft_dir = config.data_dir.join(crate::cluster::raft::RAFT_DIR);
    let local_file = config.data_dir.join(crate::cluster::log::METADATA_LOG_FILE);
    let Some(cluster) = &config.cluster else {
        if raft_dir.exists() {
            return Err(format!(
                "data_dir {} belongs to a member of a multi-broker cluster ({} exists): start \
                 it with its node_id and controller_quorum_voters",
                config.data_dir.display(),
                raft_dir.display()
            ));
        }
        let log = LocalMetadataLog::open(env, &config.data_dir)
            .await
            .map_err(|e| e.to_string())?;
        return Ok((log, None));
    };
    if local_file.exists() {
        return Err(format!(
            "controller_quorum_voters: data_dir {} holds a one-node cluster ({} exists); a \
             member of a multi-broker cluster starts from its own empty data directory",
            config.data_dir.display(),
            local_file.display()
        ));
    }
    let listener = io::TcpListener::bind(cluster.controller_listen)
        .map_err(|e| format!("controller_listen {}: {e}", cluster.controller_listen))?;
    let quorum = QuorumConfig::new(cluster.node_id, cluster.voters.clone());
    let member = QuorumMember::start(env, &config.data_dir, &quorum, listener).await?;
    wait_caught_up(env, &member, &start.stop).await?;
    let log = Rc::new(RaftMetadataLog::new(
        member.raft.clone(),
        member.state_machine.clone(),
        &config.data_dir,
    ));
    let role = QuorumRole::new(
        member,
        cluster,
        start.epoch,
        config.broker_session_timeout_ms,
    );
    Ok((log, Some(role)))
}

/// Waits until a leader is known and this member has applied everything the quorum
/// committed (logging while it waits: without a quorum the cluster cannot serve).
async fn wait_caught_up(env: &Env, member: &QuorumMember, stop: &AtomicBool) -> Result<(), String> {
    use openraft::async_runtime::WatchReceiver;
    let began = env.monotonic();
    let mut logged = began;
    loop {
        let m = member.raft.metrics().borrow_watched().clone();
        let applied = m.last_applied.map(|l| l.index);
        let committed = m.cluster_committed.map(|l| l.index);
        if m.current_leader.is_some() && applied >= committed {
            tracing::info!(leader = ?m.current_leader, applied = ?applied, "metadata quorum ready");
            return Ok(());
        }
        if stop.load(Ordering::SeqCst) {
            return Err("stopped while waiting for the metadata quorum".into());
        }
        let now = env.monotonic();
        if now.saturating_sub(logged) >= Duration::from_secs(5) {
            logged = now;
            tracing::warn!(
                waited_ms = now.saturating_sub(began).as_millis() as u64,
                leader = ?m.current_leader,
                "waiting for the metadata quorum (a majority of controller_quorum_voters)"
            );
        }
        env.sleep(Duration::from_millis(50)).await;
    }
}

/// In a cluster, waits until the image lists this broker's incarnation (registered by its
/// first heartbeat) and the cluster id, so a client of this broker finds it in Metadata.
async fn wait_registered(shard: &Rc<Shard>, start: &Start) -> Result<(), String> {
    if shard.config.cluster.is_none() {
        return Ok(());
    }
    let me = shard.config.node_id.0;
    loop {
        let image = shard.image();
        let registered = image
            .brokers
            .get(&me)
            .is_some_and(|b| b.epoch == start.epoch && !b.fenced);
        if registered && !image.cluster_id.is_empty() {
            return Ok(());
        }
        if start.stop.load(Ordering::SeqCst) {
            return Err("stopped while registering with the controller".into());
        }
        shard.env.sleep(Duration::from_millis(20)).await;
    }
}

async fn shard_main(
    id: ShardId,
    ends: MeshEnds<ShardMessage>,
    config: Arc<Config>,
    stop: Arc<AtomicBool>,
    ready: mpsc::Sender<Result<Started, String>>,
    epoch: i64,
) -> Result<(), String> {
    let env = Env::real();
    io::prime_device_probe(&config.data_dir, id.0)
        .await
        .map_err(|e| e.to_string())?;
    let start = Start {
        stop: stop.clone(),
        epoch,
    };
    let (mesh, receivers) = Mesh::connect(ends).await;
    let (image, controller) = starting_image(id, &env, &config, &mesh, &receivers, &start).await?;
    let shard = Rc::new(Shard::new(
        id,
        config.clone(),
        env.clone(),
        mesh,
        image.clone(),
        controller,
    ));
    shard.fetchers.set_broker_epoch(epoch);
    recover_partitions(&shard, &image).await;
    start_coordinator(&shard).await;
    for receiver in receivers {
        let shard = shard.clone();
        io::spawn(async move {
            while let Some(message) = receiver.recv().await {
                io::spawn(shard.clone().handle_message(message));
            }
        });
    }
    if shard.controller.is_some() {
        io::spawn(ControllerService::apply_committed(shard.clone()));
        crate::shard::cluster::install_forward_handler(&shard);
        crate::shard::cluster::spawn_cluster_tasks(&shard);
    }
    wait_registered(&shard, &start).await?;
    let listener = io::TcpListener::bind(config.listen)
        .map_err(|e| format!("listen {}: {e}", config.listen))?;
    shard.update_metrics();
    tracing::info!(
        shard = id.0,
        partitions = shard.local_partition_count(),
        placement = "partition_owner(topic, p) = (fnv1a_32(topic) + p) mod shards",
        "shard ready"
    );
    spawn_background(&shard);
    let _ = ready.send(Ok(Started {
        topics: image.topics.len(),
    }));
    spawn_acceptor(&shard, listener);
    while !stop.load(Ordering::SeqCst) {
        env.sleep(Duration::from_millis(STOP_POLL_MS)).await;
    }
    shard.controlled_shutdown(epoch).await;
    drain(&shard).await;
    Ok(())
}

/// How often a shard looks at the stop flag (set by the signal thread or a failed shard). Every
/// look wakes an idle shard: at 20 ms this was 50 of an idle shard's ~60 wakeups a second, most
/// of an idle broker's CPU; a stop now waits at most this long before draining.
const STOP_POLL_MS: u64 = 200;

/// Recovers the partitions this shard owns. One that cannot be opened is logged and left
/// offline (clients get KAFKA_STORAGE_ERROR for it); the rest of the broker serves.
async fn recover_partitions(shard: &Rc<Shard>, image: &MetadataImage) {
    let mut owned = Vec::new();
    for topic in image.topics.values() {
        let log = shard.config.topic_log_config(&topic.configs);
        for p in 0..topic.partitions {
            let tp = TopicPartition::new(topic.name.as_str(), p as i32);
            if shard.owner(&tp) == shard.id && shard.hosts(image, &tp) {
                owned.push(crate::shard::messages::OpenPartition {
                    tp,
                    log: log.clone(),
                    topic_id: topic.topic_id,
                });
            }
        }
    }
    for result in shard.open_partitions(owned).await {
        if let Err(e) = result {
            tracing::error!(error = %e, "a partition could not be opened; it stays offline");
        }
    }
}

/// Committed offsets of the groups this shard coordinates: replayed before serving, so a
/// client never sees COORDINATOR_NOT_AVAILABLE for "still loading".
async fn start_coordinator(shard: &Rc<Shard>) {
    let config = &shard.config;
    let offsets_log = crate::storage::LogConfig {
        segment_bytes: config
            .log
            .segment_bytes
            .min(crate::constants::OFFSETS_SEGMENT_BYTES),
        retention_ms: -1,
        retention_bytes: -1,
        message_max_bytes: config
            .log
            .message_max_bytes
            .min(crate::constants::OFFSETS_SEGMENT_BYTES as u32),
        ..config.log.clone()
    };
    let writer = crate::shard::offsets::OffsetsWriter(Rc::downgrade(shard));
    let offsets = crate::group::offsets::OffsetStore::open(
        &shard.env,
        &config.data_dir,
        (shard.id, config.shards),
        &offsets_log,
        Rc::new(writer),
        config.cluster.is_none(),
    )
    .await;
    let coordinator = Rc::new(crate::group::coordinator::Coordinator::new(
        shard.env.clone(),
        offsets,
        config.group.clone(),
    ));
    if shard.coordinator.set(coordinator.clone()).is_err() {
        unreachable!("the coordinator is set once, at start");
    }
    // In a cluster the offsets partitions follow their leaders from here on, and the groups
    // of those led here are loaded as their leadership is seen.
    shard.install_offsets_replicas();
    shard.refresh_replication();
    let env = shard.env.clone();
    io::spawn(async move {
        loop {
            // No groups, nothing to expire: sleep until one is created (an idle broker then
            // wakes only for its 1 s gauges, which matters when several share a host).
            let _ = coordinator.until_any_group().await;
            env.sleep(Duration::from_millis(crate::constants::GROUP_TICK_MS))
                .await;
            coordinator.tick();
        }
    });
}

/// Accepts connections on this shard's listener (SO_REUSEPORT spreads them over shards).
fn spawn_acceptor(shard: &Rc<Shard>, listener: io::TcpListener) {
    let shard = shard.clone();
    io::spawn(async move {
        // Out of descriptors (EMFILE) every accept fails until connections close: log the
        // first failure and then at most one summary a minute, and retry.
        let mut failures = 0u64;
        let mut logged_at: Option<Duration> = None;
        loop {
            match listener.accept().await {
                Ok(stream) => io::spawn(crate::server::connection::serve(shard.clone(), stream)),
                Err(e) => {
                    failures += 1;
                    let now = shard.env.monotonic();
                    if logged_at.is_none_or(|t| now.saturating_sub(t) >= Duration::from_secs(60)) {
                        tracing::warn!(error = %e, failures, "accept failed; retrying");
                        logged_at = Some(now);
                    }
                    shard.env.sleep(Duration::from_millis(10)).await;
                }
            }
        }
    });
}

/// Retention, metrics gauges and, under `flush = interval:<ms>`, the periodic fdatasync.
fn spawn_background(shard: &Rc<Shard>) {
    if shard.config.cluster.is_some() {
        io::spawn(shard.clone().maintain_isr());
    }
    let retention_every = Duration::from_millis(shard.config.retention_check_interval_ms);
    let s = shard.clone();
    io::spawn(async move {
        loop {
            s.env.sleep(retention_every).await;
            for p in s.local_partitions() {
                crate::storage::apply_retention(&p).await;
            }
        }
    });
    let s = shard.clone();
    io::spawn(async move {
        loop {
            s.env.sleep(Duration::from_secs(1)).await;
            s.update_metrics();
        }
    });
    if let crate::storage::FlushPolicy::IntervalMs(ms) = shard.config.log.flush {
        let s = shard.clone();
        io::spawn(async move {
            loop {
                s.env.sleep(Duration::from_millis(ms)).await;
                for p in s.local_logs() {
                    crate::storage::flush_unsynced(&p).await;
                }
            }
        });
    }
}

/// Lets pending writes finish (bounded) and syncs what was written without a sync.
async fn drain(shard: &Rc<Shard>) {
    for _ in 0..500 {
        if shard.local_logs().iter().all(|p| !p.borrow().is_writing()) {
            break;
        }
        shard.env.sleep(Duration::from_millis(10)).await;
    }
    for p in shard.local_logs() {
        crate::storage::flush_unsynced(&p).await;
    }
}

/// Shards bind with SO_REUSEPORT, which would let a second broker silently share the port with
/// a live one. A plain bind cannot tell: right after a kill -9 the dead broker's accepted
/// sockets linger (FIN_WAIT) and refuse a plain bind, though a restart must succeed. So ask
/// what matters: does anything keep accepting connections there? A killed broker's listening
/// socket can still accept for a moment (io_uring tears a dead process's rings down after it
/// exits, and a pending accept holds the socket), so only a listener that is still there after
/// `LIVE_LISTENER_WAIT_MS` refuses the start.
fn refuse_live_listener(addr: std::net::SocketAddr) -> Result<(), StartError> {
    const LIVE_LISTENER_WAIT_MS: u64 = 3000;
    let mut probe = addr;
    if probe.ip().is_unspecified() {
        probe.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let deadline = std::time::Instant::now() + Duration::from_millis(LIVE_LISTENER_WAIT_MS);
    loop {
        if std::net::TcpStream::connect_timeout(&probe, Duration::from_millis(500)).is_err() {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(StartError::Listen {
                addr,
                reason: "another process is accepting connections on this address".into(),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Creates the data dir, takes its lock and checks that it accepts O_DIRECT writes.
fn prepare_data_dir(dir: &Path) -> Result<std::fs::File, StartError> {
    let fail = |reason: String| StartError::DataDir {
        path: dir.to_owned(),
        reason,
    };
    std::fs::create_dir_all(dir).map_err(|e| fail(format!("cannot create: {e}")))?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(".lock"))
        .map_err(|e| fail(format!("cannot write: {e}")))?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(fail("another broker is using this data directory".into()));
    }
    probe_direct_io(dir).map_err(fail)?;
    Ok(lock)
}

/// Writes one aligned block with O_DIRECT: a filesystem that refuses it cannot hold the log.
fn probe_direct_io(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::FileExt;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(".direct-io-probe");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .map_err(|e| format!("the filesystem refuses O_DIRECT ({e}); tusk needs it for its log"))?;
    let layout = std::alloc::Layout::from_size_align(4096, 4096).expect("valid layout");
    // SAFETY: the layout is non-zero; the buffer is freed below with the same layout.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
    assert!(!ptr.is_null(), "allocating the O_DIRECT probe buffer");
    // SAFETY: ptr points to 4096 initialized (zeroed) bytes we own.
    let buf = unsafe { std::slice::from_raw_parts(ptr, 4096) };
    let result = file.write_at(buf, 0);
    // SAFETY: allocated above with this layout.
    unsafe { std::alloc::dealloc(ptr, layout) };
    let _ = std::fs::remove_file(&path);
    match result {
        Ok(4096) => Ok(()),
        Ok(n) => Err(format!("O_DIRECT probe wrote {n} of 4096 bytes")),
        Err(e) => Err(format!(
            "the filesystem refuses O_DIRECT writes ({e}); tusk needs them for its log"
        )),
    }
}
