//! The command line: `tusk serve`, `tusk bench`, the client subcommands (`topic`, `produce`,
//! `consume`, `group`, `cluster`) and `tusk tune`. Runs on: the main thread. `anyhow` is used
//! here and nowhere below.

mod cluster;
mod group;
mod output;
mod records;
mod topic;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{Config, LogFormat, Settings};

#[derive(Debug, Parser)]
#[command(
    name = "tusk",
    version,
    about = "A Kafka-compatible broker: thread-per-core, O_DIRECT log"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
// `Serve` carries every setting; the command is parsed once at start, so its size is moot.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Run the broker (a complete one-node cluster)
    Serve {
        /// TOML file with the same keys as the flags (snake_case); flags win over it
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: Settings,
    },
    /// Measure a Kafka-compatible broker: throughput and latency percentiles
    #[command(subcommand)]
    Bench(crate::bench::BenchCommand),
    /// Create, list, describe, delete topics and change their configs
    Topic {
        #[command(subcommand)]
        command: topic::TopicCommand,
        #[command(flatten)]
        client: topic::ClientArgs,
    },
    /// Produce one record per input line (stdin or --file)
    Produce {
        #[command(flatten)]
        args: records::ProduceArgs,
        #[command(flatten)]
        client: topic::ClientArgs,
    },
    /// Print a topic's records
    Consume {
        #[command(flatten)]
        args: records::ConsumeArgs,
        #[command(flatten)]
        client: topic::ClientArgs,
    },
    /// List and describe consumer groups, move their offsets
    Group {
        #[command(subcommand)]
        command: group::GroupCommand,
        #[command(flatten)]
        client: topic::ClientArgs,
    },
    /// The cluster's id, controller and brokers
    Cluster {
        #[command(subcommand)]
        command: cluster::ClusterCommand,
        #[command(flatten)]
        client: topic::ClientArgs,
    },
    /// Check this host against the HDD tuning profile, or apply it
    #[command(subcommand)]
    Tune(crate::tune::TuneCommand),
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config, settings } => {
            let config = Config::resolve(settings, config.as_deref())?;
            init_logging(&config.log_level, config.log_format);
            tracing::info!(config = ?config, "effective configuration");
            crate::broker::run(config)?;
            Ok(())
        }
        Command::Bench(command) => {
            init_logging("warn", LogFormat::Text);
            Ok(crate::bench::run(command)?)
        }
        Command::Topic { command, client } => topic::run(command, &client),
        Command::Produce { args, client } => records::produce(args, &client),
        Command::Consume { args, client } => records::consume(args, &client),
        Command::Group { command, client } => group::run(command, &client),
        Command::Cluster { command, client } => cluster::run(command, &client),
        Command::Tune(command) => Ok(crate::tune::run(command)?),
    }
}

/// stderr for logs, dropping what it cannot take. When stderr is a file on a full disk, a
/// failed write must cost that log line, nothing else: tracing-subscriber reports a failed
/// write with `eprintln!`, which panics when stderr fails too, and the panic hook's own log
/// line then panicked again and aborted the broker (SIGABRT under ordinary load on a full disk).
struct LossyStderr;

impl std::io::Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// Structured logs on stderr: `level` is a tracing filter (validated by `Config`).
fn init_logging(level: &str, format: LogFormat) {
    // openraft warns on every failed message to a peer that is down (several a second for as
    // long as it is down): its errors only, unless the filter names openraft itself.
    let level = if level.contains("openraft") {
        level.to_string()
    } else {
        format!("{level},openraft=error")
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LossyStderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
