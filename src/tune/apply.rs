//! `tune apply`: turns findings into a plan (file writes, steps for the operator, files that
//! make the writes survive a reboot), then prints it (`--dry-run`) or carries it out.
//! Invariant: only `Differs` items are written, in profile order, and a failed write does not
//! stop the others; planning reads nothing but the findings, so it is unit-tested.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::check::{Finding, Fix, Persist, Status};
use super::TuneError;

/// One file write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedWrite {
    pub item: String,
    pub path: PathBuf,
    pub value: String,
}

/// Steps for one item tune cannot change itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManualStep {
    pub item: String,
    pub steps: Vec<String>,
}

/// Lines of the files that re-apply the settings at boot.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Persistence {
    /// `/etc/sysctl.d/90-tusk.conf`: `vm.swappiness = 1`.
    pub sysctl: Vec<String>,
    /// One udev rule per disk: its name and `ATTR{queue/scheduler}="mq-deadline"` parts.
    pub udev: Vec<(String, Vec<String>)>,
    /// `/etc/tmpfiles.d/tusk.conf`: `w /sys/... - - - - madvise`.
    pub tmpfiles: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub writes: Vec<PlannedWrite>,
    pub manual: Vec<ManualStep>,
    pub persistence: Persistence,
}

/// What `apply` does for these findings.
pub fn plan(findings: &[Finding]) -> Plan {
    let mut plan = Plan::default();
    for finding in findings {
        match (&finding.status, &finding.fix) {
            (Status::Differs, Fix::Write { paths, value, .. }) => {
                plan.writes.extend(paths.iter().map(|path| PlannedWrite {
                    item: finding.item.clone(),
                    path: path.clone(),
                    value: value.clone(),
                }));
            }
            (Status::Differs, Fix::Manual(steps)) => plan.manual.push(ManualStep {
                item: finding.item.clone(),
                steps: steps.clone(),
            }),
            _ => {}
        }
        // Settings already in line are persisted at their current value, which may be
        // stricter than the profile (swappiness 0 under a wanted "<= 1").
        let persisted_value = match finding.status {
            Status::Differs => None,
            Status::Ok => Some(finding.current.as_str()),
            Status::Unknown => continue,
        };
        if let Fix::Write { value, persist, .. } = &finding.fix {
            plan.persistence
                .add(persist, persisted_value.unwrap_or(value.as_str()));
        }
    }
    plan
}

impl Persistence {
    fn add(&mut self, persist: &Persist, value: &str) {
        match persist {
            Persist::Sysctl { key } => self.sysctl.push(format!("{key} = {value}")),
            Persist::Udev { disk, attribute } => {
                let assignment = format!("ATTR{{{attribute}}}=\"{value}\"");
                match self.udev.iter_mut().find(|(name, _)| name == disk) {
                    Some((_, assignments)) => assignments.push(assignment),
                    None => self.udev.push((disk.clone(), vec![assignment])),
                }
            }
            Persist::Tmpfiles { path } => self.tmpfiles.push(format!("w {path} - - - - {value}")),
        }
    }

    fn is_empty(&self) -> bool {
        self.sysctl.is_empty() && self.udev.is_empty() && self.tmpfiles.is_empty()
    }
}

/// Prints the plan and, unless `dry_run`, writes the files. Every failed write is reported
/// as it happens; the error names the first.
pub fn carry_out(plan: &Plan, dry_run: bool, out: &mut impl Write) -> Result<(), TuneError> {
    let mut failures: Vec<(PathBuf, String)> = Vec::new();
    if plan.writes.is_empty() {
        writeln!(
            out,
            "nothing to write: every setting tune can change matches the profile"
        )?;
    }
    for write in &plan.writes {
        let (value, path) = (&write.value, write.path.display());
        if dry_run {
            writeln!(out, "would write {value} to {path}")?;
            continue;
        }
        match write_setting(&write.path, value) {
            Ok(()) => writeln!(out, "wrote {value} to {path}")?,
            Err(e) => {
                writeln!(
                    out,
                    "failed to write {value} to {path} ({}): {e}",
                    write.item
                )?;
                failures.push((write.path.clone(), e.to_string()));
            }
        }
    }
    write_manual(out, &plan.manual)?;
    write_persistence(out, &plan.persistence)?;
    match failures.first() {
        Some((path, reason)) => Err(TuneError::Apply {
            failed: failures.len(),
            first_path: path.clone(),
            reason: reason.clone(),
        }),
        None => Ok(()),
    }
}

/// Writes without creating or truncating: sysfs and /proc/sys files exist or the setting does
/// not, and creating a file there would hide the mistake.
fn write_setting(path: &Path, value: &str) -> io::Result<()> {
    let mut file = fs::OpenOptions::new().write(true).open(path)?;
    file.write_all(value.as_bytes())
}

fn write_manual(out: &mut impl Write, manual: &[ManualStep]) -> io::Result<()> {
    if manual.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "\nby hand (tune does not change these for the broker):"
    )?;
    for step in manual {
        writeln!(out, "  {}:", step.item)?;
        for line in &step.steps {
            writeln!(out, "    {line}")?;
        }
    }
    Ok(())
}

/// The files that keep the settings after a reboot; `#` lines are comments in all three.
fn write_persistence(out: &mut impl Write, persistence: &Persistence) -> io::Result<()> {
    if persistence.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "\nwrites to /sys and /proc/sys last until reboot; to keep them, install:"
    )?;
    if !persistence.sysctl.is_empty() {
        writeln!(
            out,
            "\n# /etc/sysctl.d/90-tusk.conf (load now: sysctl --system)"
        )?;
        for line in &persistence.sysctl {
            writeln!(out, "{line}")?;
        }
    }
    if !persistence.udev.is_empty() {
        writeln!(
            out,
            "\n# /etc/udev/rules.d/60-tusk-disk.rules (load now: udevadm control --reload && udevadm trigger)"
        )?;
        writeln!(
            out,
            "# Assignments apply in order: the scheduler before nr_requests."
        )?;
        for (disk, assignments) in &persistence.udev {
            writeln!(
                out,
                "ACTION==\"add|change\", SUBSYSTEM==\"block\", KERNEL==\"{disk}\", {}",
                assignments.join(", ")
            )?;
        }
    }
    if !persistence.tmpfiles.is_empty() {
        writeln!(
            out,
            "\n# /etc/tmpfiles.d/tusk.conf (applied at boot by systemd-tmpfiles)"
        )?;
        for line in &persistence.tmpfiles {
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(item: &str, status: Status, current: &str, fix: Fix) -> Finding {
        Finding {
            item: item.to_string(),
            status,
            current: current.to_string(),
            wanted: String::new(),
            why: String::new(),
            fix,
        }
    }

    fn block_write(attribute: &str, value: &str) -> Fix {
        Fix::Write {
            paths: vec![PathBuf::from(format!("/sys/block/vda/{attribute}"))],
            value: value.to_string(),
            persist: Persist::Udev {
                disk: "vda".to_string(),
                attribute: attribute.to_string(),
            },
        }
    }

    /// A host read by hand: scheduler wrong, read-ahead fine, swappiness high, memlock low,
    /// no cpufreq, mount options fine.
    fn fake_findings() -> Vec<Finding> {
        let swappiness = Fix::Write {
            paths: vec![PathBuf::from("/proc/sys/vm/swappiness")],
            value: "1".to_string(),
            persist: Persist::Sysctl {
                key: "vm.swappiness".to_string(),
            },
        };
        vec![
            finding(
                "io-scheduler",
                Status::Differs,
                "none",
                block_write("queue/scheduler", "mq-deadline"),
            ),
            finding(
                "read-ahead",
                Status::Ok,
                "8192",
                block_write("queue/read_ahead_kb", "4096"),
            ),
            finding("swappiness", Status::Differs, "60", swappiness),
            finding(
                "locked-memory",
                Status::Differs,
                "8 MiB",
                Fix::Manual(vec!["LimitMEMLOCK=infinity".to_string()]),
            ),
            finding(
                "cpu-governor",
                Status::Unknown,
                "no cpufreq on this machine",
                Fix::Nothing,
            ),
            finding(
                "data-dir-noatime",
                Status::Ok,
                "rw,noatime",
                Fix::Manual(vec!["mount".to_string()]),
            ),
        ]
    }

    #[test]
    fn only_differing_items_are_written_or_listed() {
        let plan = plan(&fake_findings());
        let writes: Vec<(&str, PathBuf, &str)> = plan
            .writes
            .iter()
            .map(|w| (w.item.as_str(), w.path.clone(), w.value.as_str()))
            .collect();
        assert_eq!(
            writes,
            [
                (
                    "io-scheduler",
                    PathBuf::from("/sys/block/vda/queue/scheduler"),
                    "mq-deadline"
                ),
                ("swappiness", PathBuf::from("/proc/sys/vm/swappiness"), "1"),
            ]
        );
        assert_eq!(
            plan.manual,
            [ManualStep {
                item: "locked-memory".to_string(),
                steps: vec!["LimitMEMLOCK=infinity".to_string()],
            }]
        );
    }

    #[test]
    fn persistence_keeps_ok_values_and_wanted_ones() {
        let plan = plan(&fake_findings());
        assert_eq!(plan.persistence.sysctl, ["vm.swappiness = 1"]);
        assert_eq!(
            plan.persistence.udev,
            [(
                "vda".to_string(),
                vec![
                    "ATTR{queue/scheduler}=\"mq-deadline\"".to_string(),
                    "ATTR{queue/read_ahead_kb}=\"8192\"".to_string(),
                ]
            )]
        );
        assert!(plan.persistence.tmpfiles.is_empty());
    }

    #[test]
    fn a_dry_run_says_what_it_would_write() {
        let plan = plan(&fake_findings());
        let mut out = Vec::new();
        let result = carry_out(&plan, true, &mut out).map_err(|e| e.to_string());
        assert_eq!(result, Ok(()));
        let text = String::from_utf8_lossy(&out);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "would write mq-deadline to /sys/block/vda/queue/scheduler"
        );
        assert_eq!(lines[1], "would write 1 to /proc/sys/vm/swappiness");
        assert!(lines.contains(&"  locked-memory:"), "{text}");
        assert!(lines.contains(&"vm.swappiness = 1"), "{text}");
        assert!(lines.contains(&"ACTION==\"add|change\", SUBSYSTEM==\"block\", KERNEL==\"vda\", ATTR{queue/scheduler}=\"mq-deadline\", ATTR{queue/read_ahead_kb}=\"8192\""), "{text}");
    }

    #[test]
    fn a_failed_write_is_reported_and_named() {
        let plan = Plan {
            writes: vec![PlannedWrite {
                item: "x".to_string(),
                path: PathBuf::from("/proc/sys/no/such/tusk/setting"),
                value: "1".to_string(),
            }],
            ..Plan::default()
        };
        let mut out = Vec::new();
        let error = carry_out(&plan, false, &mut out).map_err(|e| e.to_string());
        let Err(message) = error else {
            panic!("a write to a missing file succeeded")
        };
        assert!(
            message.starts_with("1 write failed; first: /proc/sys/no/such/tusk/setting: "),
            "{message}"
        );
        assert!(String::from_utf8_lossy(&out)
            .starts_with("failed to write 1 to /proc/sys/no/such/tusk/setting (x): "));
    }
}
