//! `tusk bench`: a load generator that speaks the Kafka protocol, so it measures any
//! Kafka-compatible broker. `produce` and `e2e` drive producers (one connection and two pinned
//! threads each: a sender that builds batches on schedule, a receiver that matches responses);
//! `consume` reads a topic from its start; `idle` holds many idle connections (RSS checks);
//! `plot` overlays results. Runs on: ordinary threads of the bench process, pinned with
//! core_affinity, never inside a broker. Invariants: at a fixed `--rate` every latency is
//! measured from the record's intended send time, so a stalled broker cannot hide its stall
//! (coordinated omission); at full speed it is measured from when the batch began filling.

mod consume;
mod produce;
pub mod report;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};

use crate::client::{ClientError, Connection};

/// What went wrong in a benchmark run.
#[derive(Debug)]
pub enum BenchError {
    Client(ClientError),
    Usage(String),
    Io(std::io::Error),
}

impl std::fmt::Display for BenchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BenchError::Client(e) => write!(f, "{e}"),
            BenchError::Usage(why) => f.write_str(why),
            BenchError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for BenchError {}

impl From<ClientError> for BenchError {
    fn from(e: ClientError) -> Self {
        BenchError::Client(e)
    }
}

impl From<std::io::Error> for BenchError {
    fn from(e: std::io::Error) -> Self {
        BenchError::Io(e)
    }
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Produce as fast as possible (or at --rate) and report throughput and ack latency
    Produce(LoadArgs),
    /// Read a topic from its start (catch-up) and report throughput and fetch latency
    Consume(ConsumeArgs),
    /// Produce and consume at once; latency is from intended send to consumption
    E2e(LoadArgs),
    /// Overlay the latency-by-percentile curves of several --json results in one SVG
    Plot {
        /// The SVG to write
        out: PathBuf,
        /// Results written by --json
        #[arg(required = true)]
        results: Vec<PathBuf>,
    },
    /// Open many idle connections and hold them (to measure a broker's memory per connection)
    Idle {
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap: String,
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        #[arg(long, default_value_t = 10)]
        hold_secs: u64,
    },
}

/// Flags shared by `produce` and `e2e`.
#[derive(Debug, Args, Clone)]
pub struct LoadArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Partitions of the topic if it has to be created
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Bytes of each record's value
    #[arg(long, default_value_t = 1024)]
    pub record_bytes: usize,
    /// Distinct keys, spread over partitions by hash (0: no keys, batches go round robin)
    #[arg(long, default_value_t = 0)]
    pub keys: u64,
    /// Producer connections (each with a sender and a receiver thread)
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Records per second over all producers (default: as fast as possible)
    #[arg(long)]
    pub rate: Option<f64>,
    /// 0, 1 or all
    #[arg(long, default_value = "all")]
    pub acks: String,
    /// none, gzip, snappy, lz4 or zstd
    #[arg(long, default_value = "none")]
    pub compression: String,
    /// Bytes of records per produce request (split over the partitions it names)
    #[arg(long, default_value_t = 1024 * 1024)]
    pub batch_bytes: usize,
    /// Records per produce request, replacing --batch-bytes: 1 sends every record in a request
    /// of its own, as librdkafka does with linger.ms=0 (pipelined up to --in-flight)
    #[arg(long)]
    pub records_per_request: Option<usize>,
    /// At a fixed rate, how long a batch may wait for more records (fractions allowed)
    #[arg(long, default_value_t = 0.0)]
    pub linger_ms: f64,
    /// Produce requests in flight per connection
    #[arg(long, default_value_t = 5)]
    pub in_flight: usize,
}

/// Flags of every load mode.
#[derive(Debug, Args, Clone)]
pub struct CommonArgs {
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    #[arg(long, default_value = "tusk-bench")]
    pub topic: String,
    /// How long to run, e.g. 10s, 500ms, 2m (produce and e2e: default 10s unless --records is
    /// given; consume: default until the topic's end)
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many records instead of after --duration
    #[arg(long)]
    pub records: Option<u64>,
    /// Name of this run in the table, the JSON and plots
    #[arg(long)]
    pub label: Option<String>,
    /// Write the result as JSON here
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draw the latency-by-percentile curve here (SVG)
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// No progress bar (for logs)
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Args, Clone)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Consumer connections; partitions are dealt out among them (default: one per partition)
    #[arg(long)]
    pub consumers: Option<usize>,
    /// Bytes per partition per fetch
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    pub fetch_bytes: i32,
}

/// Parses `10s`, `500ms`, `2m` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, unit_ms) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60_000.0)
    } else {
        (t, 1000.0)
    };
    match number.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(Duration::from_secs_f64(v * unit_ms / 1000.0)),
        _ => Err(format!("`{text}` is not a duration like 10s, 500ms or 2m")),
    }
}

/// How long produce and e2e run when neither --duration nor --records is given.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// Counters the load threads bump and the progress bar reads.
#[derive(Default)]
pub struct Progress {
    pub records: AtomicU64,
    pub bytes: AtomicU64,
    pub errors: AtomicU64,
    pub stop: AtomicBool,
}

impl Progress {
    pub fn add(&self, records: u64, bytes: u64) {
        self.records.fetch_add(records, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// Runs one bench subcommand.
pub fn run(command: BenchCommand) -> Result<(), BenchError> {
    match command {
        BenchCommand::Produce(args) => {
            let summary = produce::run(&args, false)?;
            report::finish(&summary, &args.common)
        }
        BenchCommand::E2e(args) => {
            let summary = produce::run(&args, true)?;
            report::finish(&summary, &args.common)
        }
        BenchCommand::Consume(args) => {
            let summary = consume::run(&args)?;
            report::finish(&summary, &args.common)
        }
        BenchCommand::Plot { out, results } => report::plot_files(&out, &results),
        BenchCommand::Idle {
            bootstrap,
            connections,
            hold_secs,
        } => idle(&bootstrap, connections, hold_secs),
    }
}

/// Pins the calling thread to a core, dealing threads out over the machine's cores.
pub fn pin_thread(index: usize) {
    if let Some(cores) = core_affinity::get_core_ids() {
        if !cores.is_empty() {
            core_affinity::set_for_current(cores[index % cores.len()]);
        }
    }
}

/// Shows progress until `done` says the run is over; `total` is records or, if unknown, the
/// run's duration.
pub fn show_progress(
    progress: &Progress,
    records_total: Option<u64>,
    duration: Duration,
    quiet: bool,
    done: impl Fn() -> bool,
) {
    let start = Instant::now();
    let bar = if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        let (len, template) = match records_total {
            Some(n) => (n, "{bar:40} {pos}/{len} records  {msg}"),
            None => (duration.as_millis() as u64, "{bar:40} {elapsed}  {msg}"),
        };
        let bar = indicatif::ProgressBar::new(len);
        if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        bar
    };
    while !done() {
        std::thread::sleep(Duration::from_millis(200));
        let records = progress.records.load(Ordering::Relaxed);
        let bytes = progress.bytes.load(Ordering::Relaxed);
        let secs = start.elapsed().as_secs_f64().max(1e-9);
        bar.set_position(match records_total {
            Some(_) => records,
            None => start.elapsed().as_millis() as u64,
        });
        bar.set_message(format!(
            "{:.0} records/s  {:.1} MB/s  errors {}",
            records as f64 / secs,
            bytes as f64 / secs / 1e6,
            progress.errors.load(Ordering::Relaxed)
        ));
    }
    bar.finish_and_clear();
}

/// Opens `count` connections (each negotiates versions, so the broker holds real state for it)
/// and keeps them open for `hold_secs`.
fn idle(bootstrap: &str, count: usize, hold_secs: u64) -> Result<(), BenchError> {
    let mut held = Vec::with_capacity(count);
    for i in 0..count {
        match Connection::connect(bootstrap, "tusk-bench-idle") {
            Ok(c) => held.push(c),
            Err(e) => {
                return Err(BenchError::Usage(format!(
                    "connection {} of {count} failed: {e} (raise `ulimit -n`?)",
                    i + 1
                )))
            }
        }
    }
    println!("holding {} idle connections for {hold_secs} s", held.len());
    std::thread::sleep(Duration::from_secs(hold_secs));
    Ok(())
}

/// Shared state of one run's threads.
pub type SharedProgress = Arc<Progress>;
