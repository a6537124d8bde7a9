//! Shared harness for the integration tests: runs the real `tusk` binary on a
//! free loopback port with a temporary data directory, and talks to it with
//! rdkafka (synchronous producer and consumer, admin client driven by a tiny
//! `block_on`) or with raw protocol bytes.
// Each test crate uses a different subset of these helpers.
#![allow(dead_code)]

pub mod cluster;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::pin::pin;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, ToBytes};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};
use tempfile::TempDir;

/// How long a broker may take to accept TCP connections after being spawned.
pub const BROKER_START_TIMEOUT: Duration = Duration::from_secs(30);
/// rdkafka only allows `assign()` on a consumer that has a group.id; no group
/// protocol is used by the tests (no subscribe, no commits).
pub const GROUP_ID: &str = "tusk-integration-tests";
/// Bytes of each broker log printed when a test fails.
const LOG_TAIL_BYTES: usize = 64 * 1024;

/// Returns a port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    // Ports from the kernel's ephemeral range (what binding port 0 hands out) can be taken as
    // the source port of some client connection while a broker restarts, and the restart then
    // fails with EADDRINUSE. So pick below that range (32768+ on Linux), pseudo-randomly per
    // process and call, and check that the port is free now.
    use std::sync::atomic::{AtomicU64, Ordering};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    // A cluster picks all its ports before any broker binds one: never hand a port out twice
    // in this process.
    static ISSUED: std::sync::Mutex<BTreeSet<u16>> = std::sync::Mutex::new(BTreeSet::new());
    let seed =
        u64::from(std::process::id()) * 7919 + CALLS.fetch_add(1, Ordering::Relaxed) * 104_729;
    let mut lcg = Lcg::new(seed ^ now_ms() as u64);
    for _ in 0..1000 {
        let port = 20_000 + (lcg.next_u32() % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && ISSUED
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(port)
        {
            return port;
        }
    }
    panic!("no free port found below the ephemeral range");
}

pub fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(since.as_millis()).expect("milliseconds fit i64")
}

/// A running `tusk serve` child process with its own data directory and port.
/// Killed (SIGKILL) on drop; its logs are printed if the test is panicking.
pub struct Broker {
    child: Option<Child>,
    port: u16,
    root: TempDir,
    extra_args: Vec<String>,
    starts: usize,
    /// Where the data directory and the logs live when not under `root` (a small filesystem).
    placed_in: Option<PathBuf>,
    /// An open-files limit (soft and hard) for the broker process.
    pub open_files_max: Option<u64>,
    /// The IPv4 address it listens on (127.0.0.1 unless it runs in a network namespace).
    host: [u8; 4],
    /// The network namespace (a name under /var/run/netns) it runs in, if any.
    netns: Option<String>,
}

impl Broker {
    /// Starts a broker with `--shards 2` plus `extra_args`, and waits until it
    /// accepts TCP connections.
    pub fn start(extra_args: &[&str]) -> Broker {
        Broker::start_in(None, extra_args)
    }

    /// Like `start`, with the data directory and the logs under `dir` (which the caller
    /// removes), e.g. on a small filesystem that the test fills.
    pub fn start_in(dir: Option<PathBuf>, extra_args: &[&str]) -> Broker {
        Broker::start_with(dir, None, extra_args)
    }

    /// Like `start`, with the broker's open-files limit (soft and hard) set to `max`.
    pub fn start_with_open_files(max: u64, extra_args: &[&str]) -> Broker {
        Broker::start_with(None, Some(max), extra_args)
    }

    /// Spawns a broker without waiting for it to serve (a cluster member serves only once a
    /// majority of its quorum runs): call `wait_ready` once all are spawned.
    pub fn launch(extra_args: &[&str]) -> Broker {
        let mut broker = Broker::unstarted(None, None, extra_args);
        broker.spawn_process();
        broker
    }

    /// Like `launch`, in network namespace `netns` (a name under /var/run/netns, made by the
    /// caller), listening on `host`.
    pub fn launch_in_netns(netns: &str, host: [u8; 4], extra_args: &[&str]) -> Broker {
        let mut broker = Broker::unstarted(None, None, extra_args);
        broker.host = host;
        broker.netns = Some(netns.to_string());
        broker.spawn_process();
        broker
    }

    /// Starts the broker again without waiting for it to serve (see `launch`).
    pub fn relaunch(&mut self) {
        assert!(self.child.is_none(), "relaunch: stop the broker first");
        self.spawn_process();
    }

    fn unstarted(
        placed_in: Option<PathBuf>,
        open_files_max: Option<u64>,
        extra_args: &[&str],
    ) -> Broker {
        let root = tempfile::Builder::new()
            .prefix("tusk-test-")
            .tempdir()
            .expect("create a temporary directory");
        Broker {
            child: None,
            port: free_port(),
            root,
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
            starts: 0,
            placed_in,
            open_files_max,
            host: [127, 0, 0, 1],
            netns: None,
        }
    }

    /// Whether the process is running (reaps it if it exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(_) => {
                self.child = None;
                false
            }
            None => false,
        }
    }

    fn start_with(
        placed_in: Option<PathBuf>,
        open_files_max: Option<u64>,
        extra_args: &[&str],
    ) -> Broker {
        let mut broker = Broker::unstarted(placed_in, open_files_max, extra_args);
        broker.spawn();
        broker
    }

    fn base_dir(&self) -> PathBuf {
        self.placed_in
            .clone()
            .unwrap_or_else(|| self.root.path().to_owned())
    }

    pub fn bootstrap(&self) -> String {
        let [a, b, c, d] = self.host;
        format!("{a}.{b}.{c}.{d}:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> PathBuf {
        self.base_dir().join("data")
    }

    fn log_path(&self, start: usize) -> PathBuf {
        self.base_dir().join(format!("broker-{start}.log"))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("broker is not running").id()
    }

    fn spawn(&mut self) {
        self.spawn_process();
        self.wait_ready();
    }

    /// Starts the broker again on the same data directory and expects it to refuse: waits for
    /// it to exit (at most 30 s), asserts a failure status and returns that start's log.
    pub fn start_expecting_failure(&mut self) -> String {
        assert!(self.child.is_none(), "stop the broker first");
        self.spawn_process();
        let mut child = self.child.take().expect("just spawned");
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            match child.try_wait().expect("try_wait on the broker") {
                Some(status) => break status,
                None if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                None => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("the broker was expected to refuse its start but kept running");
                }
            }
        };
        assert!(!status.success(), "the broker exited with {status}");
        fs::read_to_string(self.log_path(self.starts - 1)).unwrap_or_default()
    }

    fn spawn_process(&mut self) {
        let data_dir = self.data_dir();
        fs::create_dir_all(&data_dir)
            .unwrap_or_else(|e| panic!("create {}: {e}", data_dir.display()));
        let log_path = self.log_path(self.starts);
        self.starts += 1;
        let log = File::create(&log_path)
            .unwrap_or_else(|e| panic!("create {}: {e}", log_path.display()));
        let log_for_stderr = log.try_clone().expect("clone the log file handle");
        let mut command = Command::new(env!("CARGO_BIN_EXE_tusk"));
        if let Some(name) = &self.netns {
            use std::os::unix::process::CommandExt;
            let path = std::ffi::CString::new(format!("/var/run/netns/{name}")).unwrap();
            // SAFETY: open(2), setns(2) and close(2) are async-signal-safe; the path was
            // allocated before the fork.
            unsafe {
                command.pre_exec(move || {
                    let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
                    if fd < 0 || libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    libc::close(fd);
                    Ok(())
                });
            }
        }
        if let Some(max) = self.open_files_max {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe and touches only the child's limits.
            unsafe {
                command.pre_exec(move || {
                    let limit = libc::rlimit {
                        rlim_cur: max,
                        rlim_max: max,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = command
            .arg("serve")
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--listen")
            .arg(self.bootstrap())
            // Two shards unless the test picks its own count.
            .args(
                (!self.extra_args.iter().any(|a| a == "--shards"))
                    .then_some(["--shards", "2"])
                    .into_iter()
                    .flatten(),
            )
            // Tests run brokers in parallel: metrics only where a test asks for them.
            .args(
                (!self.extra_args.iter().any(|a| a == "--metrics-listen"))
                    .then_some(["--metrics-listen", "off"])
                    .into_iter()
                    .flatten(),
            )
            .args(&self.extra_args)
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_for_stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", env!("CARGO_BIN_EXE_tusk")));
        self.child = Some(child);
    }

    pub fn wait_ready(&mut self) {
        let addr = SocketAddr::from((self.host, self.port));
        let deadline = Instant::now() + BROKER_START_TIMEOUT;
        loop {
            let exited = self
                .child
                .as_mut()
                .expect("broker child")
                .try_wait()
                .expect("try_wait on the broker");
            if let Some(status) = exited {
                self.child = None;
                panic!("broker exited during startup with {status} (its log follows)");
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "broker did not accept connections on {addr} within \
                     {BROKER_START_TIMEOUT:?} (its log follows)"
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Panics (with the broker's logs) if the broker process has exited.
    pub fn assert_alive(&mut self) {
        let exited = self
            .child
            .as_mut()
            .expect("broker is not running")
            .try_wait()
            .expect("try_wait on the broker");
        if let Some(status) = exited {
            self.child = None;
            panic!("broker died: {status} (its log follows)");
        }
    }

    /// SIGKILL, then reap. No-op if not running.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait (at most 30 s) for the broker to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("terminate: broker is not running");
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) on our own child, which has not been reaped yet, so
        // the pid cannot have been reused.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(
            rc,
            0,
            "kill(SIGTERM) failed: {}",
            std::io::Error::last_os_error()
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("broker did not exit within 30 s of SIGTERM (its log follows)");
                }
                Err(e) => panic!("waiting for the broker to exit: {e}"),
            }
        }
    }

    /// Starts the broker again on the same data directory, port and flags.
    /// The previous process must have been stopped (kill9 or terminate).
    pub fn restart(&mut self) {
        assert!(
            self.child.is_none(),
            "restart: stop the broker first (kill9 or terminate)"
        );
        self.spawn();
    }

    /// The tail of every log this broker wrote (one file per start).
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for start in 0..self.starts {
            let path = self.log_path(start);
            let text = match fs::read(&path) {
                Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                Err(e) => format!("<cannot read: {e}>"),
            };
            out.push_str(&format!(
                "----- broker log #{start} ({}) -----\n{}\n",
                path.display(),
                tail(&text, LOG_TAIL_BYTES)
            ));
        }
        out
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("{}", self.logs());
        }
        self.kill9();
    }
}

fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

// ---------------------------------------------------------------------------
// A minimal executor for rdkafka's admin futures.

struct ThreadWaker(thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `future` on this thread until it completes; panics after `timeout`.
pub fn block_on<F: Future>(future: F, timeout: Duration, what: &str) -> F::Output {
    let mut future = pin!(future);
    let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let deadline = Instant::now() + timeout;
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        let now = Instant::now();
        assert!(now < deadline, "{what} did not complete within {timeout:?}");
        thread::park_timeout((deadline - now).min(Duration::from_millis(100)));
    }
}

// ---------------------------------------------------------------------------
// Producer side.

/// One acknowledged record: the opaque id given at send time and where the
/// broker said it stored it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    pub id: usize,
    pub partition: i32,
    pub offset: i64,
}

/// Producer context recording every delivery report and client error.
#[derive(Default)]
pub struct Recorder {
    acked: Mutex<Vec<Ack>>,
    failed: Mutex<Vec<(usize, String)>>,
    errors: Mutex<Vec<String>>,
}

impl Recorder {
    pub fn acked(&self) -> Vec<Ack> {
        self.acked.lock().unwrap().clone()
    }

    pub fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    pub fn failed(&self) -> Vec<(usize, String)> {
        self.failed.lock().unwrap().clone()
    }

    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }
}

impl ClientContext for Recorder {
    fn error(&self, error: KafkaError, reason: &str) {
        let mut errors = self.errors.lock().unwrap();
        if errors.len() < 50 {
            errors.push(format!("{error}: {reason}"));
        }
    }
}

impl ProducerContext for Recorder {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, id: usize) {
        match result {
            Ok(message) => self.acked.lock().unwrap().push(Ack {
                id,
                partition: message.partition(),
                offset: message.offset(),
            }),
            Err((error, _)) => self.failed.lock().unwrap().push((id, error.to_string())),
        }
    }
}

pub type TestProducer = BaseProducer<Recorder>;

/// A producer with acks=all; `extra` overrides or adds settings.
pub fn try_producer(bootstrap: &str, extra: &[(&str, &str)]) -> KafkaResult<TestProducer> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000")
        .set("request.timeout.ms", "30000");
    for (key, value) in extra {
        config.set(*key, *value);
    }
    config.create_with_context(Recorder::default())
}

pub fn producer(bootstrap: &str, extra: &[(&str, &str)]) -> TestProducer {
    try_producer(bootstrap, extra)
        .unwrap_or_else(|e| panic!("create a producer with {extra:?}: {e}"))
}

/// Enqueues `record`, polling while the local queue is full (at most 60 s).
pub fn send<K, P>(producer: &TestProducer, mut record: BaseRecord<'_, K, P, usize>)
where
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                assert!(
                    Instant::now() < deadline,
                    "producer queue stayed full for 60 s; acked {}, client errors: {:?}",
                    producer.context().acked_count(),
                    producer.context().errors()
                );
                record = back;
                producer.poll(Duration::from_millis(10));
            }
            Err((error, _)) => panic!("enqueueing a record failed: {error}"),
        }
    }
}

/// Flushes, then asserts that no delivery failed and exactly `expected`
/// records were acknowledged. Returns the acknowledgements.
pub fn flush(producer: &TestProducer, expected: usize, timeout: Duration) -> Vec<Ack> {
    let context = producer.context();
    if let Err(e) = producer.flush(timeout) {
        let failed = context.failed();
        panic!(
            "flush did not complete within {timeout:?}: {e}; {} still in flight, {} acked, \
             {} failed (first: {:?}); client errors: {:?}",
            producer.in_flight_count(),
            context.acked_count(),
            failed.len(),
            failed.first(),
            context.errors()
        );
    }
    producer.poll(Duration::ZERO);
    let failed = context.failed();
    assert!(
        failed.is_empty(),
        "{} deliveries failed; first few: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    let acked = context.acked();
    assert_eq!(acked.len(), expected, "number of acknowledged records");
    acked
}

// ---------------------------------------------------------------------------
// Consumer side.

/// An owned copy of one consumed record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rec {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub timestamp: Option<i64>,
}

impl Rec {
    fn from_message<M: Message>(message: &M) -> Rec {
        Rec {
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
            timestamp: message.timestamp().to_millis(),
        }
    }

    pub fn key_str(&self) -> String {
        String::from_utf8_lossy(self.key.as_deref().unwrap_or_default()).into_owned()
    }

    pub fn value_str(&self) -> String {
        String::from_utf8_lossy(self.value.as_deref().unwrap_or_default()).into_owned()
    }
}

pub fn consumer(bootstrap: &str) -> BaseConsumer {
    consumer_with(bootstrap, &[])
}

/// A consumer for `assign()` only: no auto commit, no offset store.
pub fn consumer_with(bootstrap: &str, extra: &[(&str, &str)]) -> BaseConsumer {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", GROUP_ID)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "100");
    for (key, value) in extra {
        config.set(*key, *value);
    }
    config
        .create()
        .unwrap_or_else(|e| panic!("create a consumer with {extra:?}: {e}"))
}

/// Assigns partitions `0..partitions` of `topic` from the beginning and reads
/// until `expected` records arrived (panics after `timeout`), then keeps
/// reading for another 500 ms so that extra records (duplicates) show up.
pub fn consume_all(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: i32,
    expected: usize,
    timeout: Duration,
) -> Vec<Rec> {
    let starts: Vec<(i32, Offset)> = (0..partitions).map(|p| (p, Offset::Beginning)).collect();
    consume_from(consumer, topic, &starts, expected, timeout)
}

/// Like `consume_all`, from explicit (partition, offset) starting points.
pub fn consume_from(
    consumer: &BaseConsumer,
    topic: &str,
    starts: &[(i32, Offset)],
    expected: usize,
    timeout: Duration,
) -> Vec<Rec> {
    let mut assignment = TopicPartitionList::new();
    for &(partition, offset) in starts {
        assignment
            .add_partition_offset(topic, partition, offset)
            .unwrap_or_else(|e| panic!("add {topic}/{partition} at {offset:?}: {e}"));
    }
    consumer
        .assign(&assignment)
        .unwrap_or_else(|e| panic!("assign {starts:?} of {topic}: {e}"));

    let mut records = Vec::with_capacity(expected);
    let mut errors: Vec<String> = Vec::new();
    let deadline = Instant::now() + timeout;
    while records.len() < expected {
        let now = Instant::now();
        assert!(
            now < deadline,
            "consuming {topic}: got {} of {expected} records within {timeout:?}; \
             consumer errors: {errors:?}",
            records.len()
        );
        poll_into(
            consumer,
            topic,
            (deadline - now).min(Duration::from_millis(200)),
            &mut records,
            &mut errors,
        );
    }
    let linger_until = Instant::now() + Duration::from_millis(500);
    while let Some(left) = linger_until.checked_duration_since(Instant::now()) {
        poll_into(consumer, topic, left, &mut records, &mut errors);
    }
    records
}

fn poll_into(
    consumer: &BaseConsumer,
    topic: &str,
    wait: Duration,
    records: &mut Vec<Rec>,
    errors: &mut Vec<String>,
) {
    match consumer.poll(wait) {
        Some(Ok(message)) if message.topic() == topic => {
            records.push(Rec::from_message(&message));
        }
        Some(Err(error)) if errors.len() < 20 => errors.push(error.to_string()),
        _ => {}
    }
}

/// Groups records by partition, keeping each partition's consumption order.
pub fn by_partition(records: &[Rec]) -> BTreeMap<i32, Vec<Rec>> {
    let mut map: BTreeMap<i32, Vec<Rec>> = BTreeMap::new();
    for record in records {
        map.entry(record.partition)
            .or_default()
            .push(record.clone());
    }
    map
}

/// Asserts that `records` (one partition, in consumption order) carry the
/// offsets `first, first + 1, ...` without gap, duplicate or reordering.
pub fn assert_offsets_contiguous(partition: i32, records: &[Rec], first: i64) {
    for (want, record) in (first..).zip(records.iter()) {
        assert_eq!(
            record.offset, want,
            "partition {partition}: expected offset {want} next, got {} \
             (gap, duplicate or reordering)",
            record.offset
        );
    }
}

pub fn watermarks(consumer: &BaseConsumer, topic: &str, partition: i32) -> (i64, i64) {
    consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("watermarks of {topic}/{partition}: {e}"))
}

// ---------------------------------------------------------------------------
// Admin and metadata.

pub fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap_or_else(|e| panic!("create an admin client: {e}"))
}

fn admin_options() -> AdminOptions {
    AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(15)))
}

/// Creates `name` with `partitions` partitions (replication factor 1) and
/// waits until metadata shows every partition with a leader.
pub fn create_topic(bootstrap: &str, name: &str, partitions: i32) {
    let admin = admin(bootstrap);
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let results = block_on(
        admin.create_topics([&topic], &admin_options()),
        Duration::from_secs(30),
        "CreateTopics",
    )
    .unwrap_or_else(|e| panic!("CreateTopics {name}: {e}"));
    assert_eq!(results.len(), 1, "one result per created topic");
    for result in results {
        if let Err((topic, code)) = result {
            panic!("CreateTopics {topic} failed: {code:?}");
        }
    }
    wait_for_topic(bootstrap, name, partitions, Duration::from_secs(30));
}

/// Creates `name`; the broker's error code if it refuses.
pub fn try_create_topic(bootstrap: &str, name: &str, partitions: i32) -> Result<(), String> {
    let admin = admin(bootstrap);
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let results = block_on(
        admin.create_topics([&topic], &admin_options()),
        Duration::from_secs(30),
        "CreateTopics",
    )
    .map_err(|e| e.to_string())?;
    match results.into_iter().next() {
        Some(Ok(_)) => Ok(()),
        Some(Err((_, code))) => Err(format!("{code:?}")),
        None => Err("no result".into()),
    }
}

/// Deletes `name` and asserts the broker reported success.
pub fn delete_topic(bootstrap: &str, name: &str) {
    let admin = admin(bootstrap);
    let results = block_on(
        admin.delete_topics(&[name], &admin_options()),
        Duration::from_secs(30),
        "DeleteTopics",
    )
    .unwrap_or_else(|e| panic!("DeleteTopics {name}: {e}"));
    assert_eq!(results.len(), 1, "one result per deleted topic");
    for result in results {
        if let Err((topic, code)) = result {
            panic!("DeleteTopics {topic} failed: {code:?}");
        }
    }
}

/// Waits until metadata shows `topic` without error, with `partitions`
/// partitions that all have a leader.
pub fn wait_for_topic(bootstrap: &str, topic: &str, partitions: i32, timeout: Duration) {
    let admin = admin(bootstrap);
    let want = usize::try_from(partitions).expect("partition count is positive");
    let deadline = Instant::now() + timeout;
    loop {
        let last = match admin
            .inner()
            .fetch_metadata(Some(topic), Duration::from_secs(5))
        {
            Ok(metadata) => match metadata.topics().iter().find(|t| t.name() == topic) {
                Some(t)
                    if t.error().is_none()
                        && t.partitions().len() == want
                        && t.partitions().iter().all(|p| p.leader() >= 0) =>
                {
                    return;
                }
                Some(t) => format!(
                    "error {:?}, {} partitions, leaders {:?}",
                    t.error().map(RDKafkaErrorCode::from),
                    t.partitions().len(),
                    t.partitions()
                        .iter()
                        .map(|p| p.leader())
                        .collect::<Vec<_>>()
                ),
                None => "topic missing from the metadata response".to_string(),
            },
            Err(e) => e.to_string(),
        };
        assert!(
            Instant::now() < deadline,
            "topic {topic} not ready with {partitions} partitions within {timeout:?}: {last}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// What metadata says about `topic`: `Ok(())` if it is reported unknown,
/// `Err(description)` if it exists or the answer was inconclusive.
pub fn topic_unknown(bootstrap: &str, topic: &str) -> Result<(), String> {
    let admin = admin(bootstrap);
    let unknown = |code: RDKafkaErrorCode| {
        matches!(
            code,
            RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic
        )
    };
    match admin
        .inner()
        .fetch_metadata(Some(topic), Duration::from_secs(5))
    {
        Ok(metadata) => match metadata.topics().iter().find(|t| t.name() == topic) {
            None => Ok(()),
            Some(t) => match t.error().map(RDKafkaErrorCode::from) {
                Some(code) if unknown(code) => Ok(()),
                other => Err(format!(
                    "metadata lists it with error {other:?} and {} partitions",
                    t.partitions().len()
                )),
            },
        },
        Err(e) => match e.rdkafka_error_code() {
            Some(code) if unknown(code) => Ok(()),
            _ => Err(format!("metadata request failed: {e}")),
        },
    }
}

/// Names of all topics in a full metadata response.
pub fn topic_names(bootstrap: &str) -> Vec<String> {
    let admin = admin(bootstrap);
    let metadata = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("metadata for all topics: {e}"));
    metadata
        .topics()
        .iter()
        .map(|t| t.name().to_string())
        .collect()
}

// ---------------------------------------------------------------------------
// Misc.

/// Deterministic pseudo-random bytes (64-bit LCG, high bits).
pub struct Lcg(u64);

impl Lcg {
    pub fn new(seed: u64) -> Lcg {
        Lcg(seed)
    }

    pub fn next_u32(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 32) as u32
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| (self.next_u32() >> 24) as u8).collect()
    }
}

pub struct CmdOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

fn read_in_thread<R: Read + Send + 'static>(mut reader: R) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = reader.read_to_end(&mut buf);
        buf
    })
}

/// Runs `command` with `stdin` as its input, capturing its output; kills it
/// and panics if it runs longer than `timeout`.
pub fn run_with_timeout(
    command: &mut Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> CmdOutput {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
    let stdout = read_in_thread(child.stdout.take().expect("piped stdout"));
    let stderr = read_in_thread(child.stderr.take().expect("piped stderr"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        let input = input.to_vec();
        // A write error (the command exited early) shows in its exit status.
        thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                let out = stdout.join().unwrap_or_default();
                let err = stderr.join().unwrap_or_default();
                panic!(
                    "{command:?} did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(&err)
                );
            }
            Err(e) => panic!("waiting for {command:?}: {e}"),
        }
    };
    CmdOutput {
        status,
        stdout: String::from_utf8_lossy(&stdout.join().unwrap_or_default()).into_owned(),
        stderr: String::from_utf8_lossy(&stderr.join().unwrap_or_default()).into_owned(),
    }
}

/// Number of segment files (`*.log`) in a partition directory.
pub fn segment_files_in(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".log"))
        })
        .count()
}

/// Runs one of the client scripts under tests/ (`tests/python/clients.py`, `tests/js/clients.js`)
/// with `command` against `bootstrap` and asserts that it printed `expected` ("N passed, 0
/// failed") and exited 0.
fn run_client_script(mut command: Command, script: &str, bootstrap: &str, expected: &str) {
    let path = format!("{}/tests/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = run_with_timeout(
        command.arg(path).arg(bootstrap),
        None,
        Duration::from_secs(180),
    );
    assert!(
        out.status.success(),
        "{script} against {bootstrap}:\n{}\n{}",
        out.stdout,
        out.stderr
    );
    assert!(out.stdout.contains(expected), "{}", out.stdout);
}

/// The value of `var`, the client installation scripts/test.sh made; `None` (with a message)
/// when it is not set, which fails instead when `require` is set (CI sets it, so a missing
/// installation fails there rather than skipping).
fn client_install(var: &str, require: &str, what: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(value) => Some(value),
        Err(_) => {
            assert!(
                std::env::var(require).is_err(),
                "{require} is set but {var} is not"
            );
            eprintln!("{var} not set (run scripts/test.sh): skipping {what}");
            None
        }
    }
}

/// confluent-kafka and kafka-python (tests/python/clients.py) against `bootstrap`, with the
/// venv scripts/test.sh builds (TUSK_TEST_PYTHON is its interpreter).
pub fn python_clients(bootstrap: &str) {
    let what = "the Python clients";
    if let Some(python) = client_install("TUSK_TEST_PYTHON", "TUSK_REQUIRE_PYTHON", what) {
        let expected = "3 passed, 0 failed";
        run_client_script(
            Command::new(python),
            "python/clients.py",
            bootstrap,
            expected,
        );
    }
}

/// KafkaJS (tests/js/clients.js) against `bootstrap`, with the kafkajs scripts/test.sh
/// installs (TUSK_TEST_NODE_PATH is its node_modules).
pub fn kafkajs_clients(bootstrap: &str) {
    if let Some(node_path) = client_install("TUSK_TEST_NODE_PATH", "TUSK_REQUIRE_NODE", "KafkaJS") {
        let mut node = Command::new("node");
        node.env("NODE_PATH", node_path);
        run_client_script(node, "js/clients.js", bootstrap, "2 passed, 0 failed");
    }
}
