//! `tusk`: parse the command line, run, map errors to an exit code.

use clap::Parser;

/// Huge single allocations become no-reserve mappings (see `tusk::runtime::alloc`).
#[global_allocator]
static ALLOCATOR: tusk::runtime::alloc::ReservingAllocator =
    tusk::runtime::alloc::ReservingAllocator;

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TUSK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = tusk::cli::Cli::parse();
    if let Err(e) = tusk::cli::run(cli) {
        eprintln!("tusk: {e:#}");
        std::process::exit(1);
    }
}
