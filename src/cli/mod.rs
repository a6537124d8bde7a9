//! The command line: `tusk serve` (more subcommands come with the operator tools). Runs on: the
//! main thread. `anyhow` is used here and nowhere below.

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
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config, settings } => {
            let config = Config::resolve(settings, config.as_deref())?;
            init_logging(&config.log_level, config.log_format);
            tracing::info!(config = ?config, "effective configuration");
            crate::runtime::run(config)?;
            Ok(())
        }
        Command::Bench(command) => {
            init_logging("warn", LogFormat::Text);
            Ok(crate::bench::run(command)?)
        }
    }
}

/// Structured logs on stderr: `level` is a tracing filter (validated by `Config`).
fn init_logging(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
