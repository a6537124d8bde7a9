//! `tusk`: parse the command line, run, map errors to an exit code.

use clap::Parser;

/// Huge single allocations become no-reserve mappings (see `tusk::alloc`).
#[global_allocator]
static ALLOCATOR: tusk::alloc::ReservingAllocator = tusk::alloc::ReservingAllocator;

fn main() {
    // Logging starts in `cli::run`, once the configuration (and its log settings) is known.
    let cli = tusk::cli::Cli::parse();
    if let Err(e) = tusk::cli::run(cli) {
        // Not eprintln!: it panics when stderr cannot be written (a full disk).
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "tusk: {e:#}");
        std::process::exit(1);
    }
}
