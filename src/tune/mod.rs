//! `tusk tune`: compares this host with a tuning profile for tusk nodes on spinning disks
//! (`check`) and writes the kernel settings that differ (`apply`). The profile ships inside
//! the binary (tuning/hdd-profile.toml); `--profile FILE` replaces it. Runs on: the CLI thread
//! of the `tusk` process, never on a shard; no broker runs in that process.
//!
//! Invariants:
//! - Every profile item yields one finding: `ok`, `differs` or `unknown`. What cannot be read
//!   or does not apply here (no cpufreq in a VM, a data dir on device-mapper or overlay, too
//!   few cores to keep interrupts off the shards) is `unknown` with the reason in `current`,
//!   never a panic.
//! - `check` only reads, and exits 0 even when items differ unless `--strict`.
//! - `apply` writes only files under /sys/ and /proc/sys/ (profile validation refuses any
//!   other path), only for items that differ, and only as root; `--dry-run` writes nothing.
//!   Limits, mount options and interrupt affinity belong to the broker's unit, fstab and
//!   irqbalance, so for those it prints the steps instead.
//!
//! Layout: `profile` (TOML shape, validation), `host` (data dir → mount → whole disk, CPUs),
//! `check` (one finding per item; `irq` and `rlimit` judge those kinds), `report` (table,
//! JSON), `apply` (plan, writes, files that persist them), `values` (pure text logic).

mod apply;
mod check;
mod host;
mod irq;
mod profile;
mod report;
mod rlimit;
mod values;

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use host::Host;
use report::Summary;

#[derive(Debug, clap::Subcommand)]
pub enum TuneCommand {
    /// Compare this host with the HDD profile
    Check {
        /// The broker's data directory (its nearest existing parent if it does not exist yet)
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
        /// Print a JSON array of {item, status, current, wanted, why} instead of a table
        #[arg(long)]
        json: bool,
        /// Fail when any setting differs (for provisioning checks)
        #[arg(long)]
        strict: bool,
        /// A profile TOML file instead of the embedded tuning/hdd-profile.toml
        #[arg(long)]
        profile: Option<PathBuf>,
    },
    /// Apply the profile's settings that differ (root)
    Apply {
        /// The broker's data directory (its nearest existing parent if it does not exist yet)
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
        /// Print what would be written, write nothing (no root needed)
        #[arg(long)]
        dry_run: bool,
        /// A profile TOML file instead of the embedded tuning/hdd-profile.toml
        #[arg(long)]
        profile: Option<PathBuf>,
    },
}

/// Why a `tune` command failed; each message is one line naming the file or setting.
#[derive(Debug)]
pub enum TuneError {
    /// The profile could not be read, parsed or validated.
    Profile { origin: String, reason: String },
    /// `apply` has files to write and this process is not root.
    NotRoot { first_path: PathBuf, writes: usize },
    /// Some writes of `apply` failed (each was printed as it happened).
    Apply {
        failed: usize,
        first_path: PathBuf,
        reason: String,
    },
    /// `check --strict` found settings that differ.
    Differs { count: usize, profile: String },
    /// The report could not be written to stdout (a closed pipe, a full disk).
    Output(io::Error),
}

impl std::fmt::Display for TuneError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TuneError::Profile { origin, reason } => write!(f, "profile {origin}: {reason}"),
            TuneError::NotRoot { first_path, writes } => {
                let more = match writes.saturating_sub(1) {
                    0 => String::new(),
                    1 => " and 1 more file".to_string(),
                    n => format!(" and {n} more files"),
                };
                write!(
                    f,
                    "tusk tune apply must run as root to write {}{more}; --dry-run shows the changes without root",
                    first_path.display()
                )
            }
            TuneError::Apply {
                failed,
                first_path,
                reason,
            } => {
                let writes = if *failed == 1 { "write" } else { "writes" };
                write!(
                    f,
                    "{failed} {writes} failed; first: {}: {reason}",
                    first_path.display()
                )
            }
            TuneError::Differs { count, profile } => {
                let settings = if *count == 1 {
                    "setting differs"
                } else {
                    "settings differ"
                };
                write!(
                    f,
                    "{count} {settings} from the {profile} profile (--strict)"
                )
            }
            TuneError::Output(e) => write!(f, "cannot write the report to stdout: {e}"),
        }
    }
}

impl std::error::Error for TuneError {}

impl From<io::Error> for TuneError {
    fn from(e: io::Error) -> Self {
        TuneError::Output(e)
    }
}

/// Runs a `tusk tune` subcommand.
pub fn run(command: TuneCommand) -> Result<(), TuneError> {
    match command {
        TuneCommand::Check {
            data_dir,
            json,
            strict,
            profile,
        } => run_check(&data_dir, json, strict, profile.as_deref()),
        TuneCommand::Apply {
            data_dir,
            dry_run,
            profile,
        } => run_apply(&data_dir, dry_run, profile.as_deref()),
    }
}

fn run_check(
    data_dir: &Path,
    json: bool,
    strict: bool,
    profile_file: Option<&Path>,
) -> Result<(), TuneError> {
    let profile = profile::load(profile_file)?;
    let host = Host::inspect(data_dir);
    let findings = check::evaluate_all(&profile, &host);
    let summary = Summary::of(&findings);
    let stdout = io::stdout();
    let mut out = stdout.lock();
    if json {
        report::write_json(&mut out, &findings)?;
    } else {
        report::write_context(&mut out, &profile.name, &host)?;
        report::write_table(&mut out, &findings, report::terminal_width())?;
        writeln!(out, "\n{summary}")?;
    }
    out.flush()?;
    if strict && summary.differ > 0 {
        return Err(TuneError::Differs {
            count: summary.differ,
            profile: profile.name,
        });
    }
    Ok(())
}

fn run_apply(data_dir: &Path, dry_run: bool, profile_file: Option<&Path>) -> Result<(), TuneError> {
    let profile = profile::load(profile_file)?;
    let host = Host::inspect(data_dir);
    let findings = check::evaluate_all(&profile, &host);
    let plan = apply::plan(&findings);
    // Refuse before printing anything, so a non-root run never looks half done.
    if let Some(first) = plan.writes.first() {
        if !dry_run && !is_root() {
            return Err(TuneError::NotRoot {
                first_path: first.path.clone(),
                writes: plan.writes.len(),
            });
        }
    }
    let stdout = io::stdout();
    let mut out = stdout.lock();
    report::write_context(&mut out, &profile.name, &host)?;
    apply::carry_out(&plan, dry_run, &mut out)?;
    let unknown = Summary::of(&findings).unknown;
    if unknown > 0 {
        writeln!(
            out,
            "\n{unknown} items could not be judged on this host; `tusk tune check` says why"
        )?;
    }
    out.flush()?;
    Ok(())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
