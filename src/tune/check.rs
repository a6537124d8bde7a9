//! Judging each profile item against the host: read the current value, compare, and say how
//! it could be fixed. Invariant: every item yields exactly one `Finding`; a value that cannot
//! be read or does not apply is `Unknown` with the reason in `current`, never an error.

use std::fs;
use std::path::{Path, PathBuf};

use super::host::Host;
use super::irq::observe_irq;
use super::profile::{sysctl_path, Item, Kind, Profile};
use super::rlimit::observe_rlimit;
use super::values::{decide, parse_setting, wanted_text};

/// The verdict on one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Differs,
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Differs => "differs",
            Status::Unknown => "unknown",
        }
    }
}

/// One row of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub item: String,
    pub status: Status,
    /// The value read; for `Unknown`, the reason. For `Fix::Write` items it is the raw value,
    /// which `apply` persists when the item is already ok.
    pub current: String,
    pub wanted: String,
    pub why: String,
    pub fix: Fix,
}

/// How a differing item is brought in line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fix {
    /// Nothing to do, or nothing known (unknown items).
    Nothing,
    /// `apply` writes `value` to each file.
    Write {
        paths: Vec<PathBuf>,
        value: String,
        persist: Persist,
    },
    /// Steps for the operator: tune cannot change these for the broker.
    Manual(Vec<String>),
}

/// Where a written setting is made to survive a reboot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Persist {
    /// A line of /etc/sysctl.d/90-tusk.conf.
    Sysctl { key: String },
    /// An attribute in a udev rule for the disk (queue settings return with the device).
    Udev { disk: String, attribute: String },
    /// A `w` line of /etc/tmpfiles.d/tusk.conf (may be a glob).
    Tmpfiles { path: String },
}

/// The host side of one item before it is judged.
pub struct Observed {
    /// Shown in the report (raw value for `Fix::Write`).
    pub current: String,
    pub matches: bool,
    pub fix: Fix,
    /// Replaces the profile's wanted value in the report when the host makes it concrete.
    pub wanted: Option<String>,
}

/// Judges every item of the profile, in profile order.
pub fn evaluate_all(profile: &Profile, host: &Host) -> Vec<Finding> {
    profile
        .items
        .iter()
        .map(|item| evaluate(item, host))
        .collect()
}

pub fn evaluate(item: &Item, host: &Host) -> Finding {
    let observed = match item.kind {
        Kind::SysfsBlock => observe_block(item, host),
        Kind::Sysctl => observe_sysctl(item),
        Kind::Sysfs => observe_file(
            item,
            PathBuf::from(&item.key),
            Persist::Tmpfiles {
                path: item.key.clone(),
            },
        ),
        Kind::Cpufreq => observe_cpufreq(item),
        Kind::Rlimit => observe_rlimit(item),
        Kind::Mount => observe_mount(item, host),
        Kind::Irq => observe_irq(item, host),
    };
    finding(item, observed)
}

/// Turns an observation into a report row; the status decision itself.
fn finding(item: &Item, observed: Result<Observed, String>) -> Finding {
    let profile_wanted = match item.kind {
        // A bare core count would read as a setting; say what it counts.
        Kind::Irq if item.want == "1" => "IRQs on the last core".to_string(),
        Kind::Irq => format!("IRQs on the last {} cores", item.want),
        _ => wanted_text(&item.want, item.compare),
    };
    let (status, current, wanted, fix) = match observed {
        Ok(seen) => (
            if seen.matches {
                Status::Ok
            } else {
                Status::Differs
            },
            seen.current,
            seen.wanted.unwrap_or(profile_wanted),
            seen.fix,
        ),
        Err(reason) => (Status::Unknown, reason, profile_wanted, Fix::Nothing),
    };
    Finding {
        item: item.name.clone(),
        status,
        current,
        wanted,
        why: item.why.clone(),
        fix,
    }
}

/// Reads a kernel setting file and compares it; the fix writes the wanted value back.
fn observe_file(item: &Item, path: PathBuf, persist: Persist) -> Result<Observed, String> {
    let setting = parse_setting(&read_text(&path)?);
    // A choice file that does not offer the wanted value would refuse the write.
    if !setting.choices.is_empty() && !setting.choices.contains(&item.want) {
        return Err(format!(
            "{} is not offered by {} ({})",
            item.want,
            path.display(),
            setting.choices.join(" ")
        ));
    }
    let matches = decide(&setting.value, &item.want, item.compare)?;
    Ok(Observed {
        current: setting.value,
        matches,
        fix: Fix::Write {
            paths: vec![path],
            value: item.want.clone(),
            persist,
        },
        wanted: None,
    })
}

fn observe_block(item: &Item, host: &Host) -> Result<Observed, String> {
    let disk = host.data_dir.disk.as_ref().map_err(Clone::clone)?;
    if disk.rotational == Some(false) {
        return Err(format!(
            "{} reports rotational=0 (SSD/NVMe): HDD queue settings do not apply",
            disk.name
        ));
    }
    let persist = Persist::Udev {
        disk: disk.name.clone(),
        attribute: item.key.clone(),
    };
    observe_file(item, disk.sysfs_path(&item.key), persist)
}

fn observe_sysctl(item: &Item) -> Result<Observed, String> {
    if let Some(twin) = &item.replaced_by {
        // Unreadable twin: older kernels lack it, so nothing overrides the ratio.
        if let Ok(text) = read_text(&sysctl_path(twin)) {
            let value = parse_setting(&text).value;
            if value != "0" {
                return Err(format!(
                    "{twin} = {value} overrides {}; compare it by hand",
                    item.key
                ));
            }
        }
    }
    let persist = Persist::Sysctl {
        key: item.key.clone(),
    };
    observe_file(item, sysctl_path(&item.key), persist)
}

/// Every CPU must run the wanted governor; the report lists the distinct values.
fn observe_cpufreq(item: &Item) -> Result<Observed, String> {
    let paths = cpufreq_paths(&item.key);
    if paths.is_empty() {
        return Err("no cpufreq on this machine (usual in VMs)".to_string());
    }
    let mut values = Vec::with_capacity(paths.len());
    for path in &paths {
        values.push(parse_setting(&read_text(path)?).value);
    }
    let mut matches = true;
    for value in &values {
        matches &= decide(value, &item.want, item.compare)?;
    }
    Ok(Observed {
        current: summarize_per_cpu(&values),
        matches,
        fix: Fix::Write {
            paths,
            value: item.want.clone(),
            persist: Persist::Tmpfiles {
                path: format!("/sys/devices/system/cpu/cpu*/cpufreq/{}", item.key),
            },
        },
        wanted: None,
    })
}

/// `/sys/devices/system/cpu/cpuN/cpufreq/<key>` of every CPU that has it, by CPU number.
fn cpufreq_paths(key: &str) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir("/sys/devices/system/cpu") else {
        return Vec::new();
    };
    let mut numbered: Vec<(usize, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let number = name.strip_prefix("cpu")?.parse().ok()?;
            let path = entry.path().join("cpufreq").join(key);
            path.exists().then_some((number, path))
        })
        .collect();
    numbered.sort();
    numbered.into_iter().map(|(_, path)| path).collect()
}

/// `performance` when all agree, else `powersave on 6 cpus, performance on 2 cpus`.
pub fn summarize_per_cpu(values: &[String]) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for value in values {
        match counts.iter_mut().find(|(seen, _)| *seen == value.as_str()) {
            Some((_, count)) => *count += 1,
            None => counts.push((value.as_str(), 1)),
        }
    }
    if counts.len() == 1 {
        return counts[0].0.to_string();
    }
    let parts: Vec<String> = counts
        .iter()
        .map(|&(value, count)| format!("{value} on {count} {}", plural(count, "cpu")))
        .collect();
    parts.join(", ")
}

fn observe_mount(item: &Item, host: &Host) -> Result<Observed, String> {
    let mount = host.data_dir.mount.as_ref().map_err(Clone::clone)?;
    let matches = decide(&mount.options, &item.want, item.compare)?;
    let point = mount.mount_point.display();
    Ok(Observed {
        current: format!("{} ({} on {point})", mount.options, mount.fs_type),
        matches,
        fix: Fix::Manual(vec![
            format!("mount -o remount,{} {point}", item.want),
            format!(
                "and add {} to the options of {point} in /etc/fstab",
                item.want
            ),
        ]),
        wanted: None,
    })
}

fn plural(count: usize, noun: &str) -> String {
    if count == 1 {
        noun.to_string()
    } else {
        format!("{noun}s")
    }
}

/// File content, or a short reason naming the file.
fn read_text(path: &Path) -> Result<String, String> {
    fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("{} does not exist", path.display()),
        _ => format!("cannot read {}: {e}", path.display()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tune::profile::Compare;

    fn item(kind: Kind, key: &str, want: &str, compare: Compare) -> Item {
        Item {
            name: "test-item".to_string(),
            kind,
            key: key.to_string(),
            want: want.to_string(),
            compare,
            replaced_by: None,
            why: "because".to_string(),
        }
    }

    fn observed(current: &str, matches: bool) -> Observed {
        Observed {
            current: current.to_string(),
            matches,
            fix: Fix::Nothing,
            wanted: None,
        }
    }

    #[test]
    fn status_follows_the_observation() {
        let read_ahead = item(
            Kind::SysfsBlock,
            "queue/read_ahead_kb",
            "4096",
            Compare::AtLeast,
        );
        let ok = finding(&read_ahead, Ok(observed("8192", true)));
        assert_eq!(
            (ok.status, ok.current.as_str(), ok.wanted.as_str()),
            (Status::Ok, "8192", ">= 4096")
        );
        let differs = finding(&read_ahead, Ok(observed("128", false)));
        assert_eq!(differs.status, Status::Differs);
        let unknown = finding(&read_ahead, Err("vda reports rotational=0".to_string()));
        assert_eq!(
            (unknown.status, unknown.current.as_str()),
            (Status::Unknown, "vda reports rotational=0")
        );
        assert_eq!(unknown.fix, Fix::Nothing);
        assert_eq!(unknown.why, "because");
        let irq = item(Kind::Irq, "reserved_cores", "1", Compare::Equal);
        let few_cores = finding(&irq, Err("too few cores (2)".to_string()));
        assert_eq!(few_cores.wanted, "IRQs on the last core");
    }

    #[test]
    fn a_missing_file_is_unknown_not_a_panic() {
        let missing = item(
            Kind::Sysfs,
            "/sys/no/such/tusk/setting",
            "madvise",
            Compare::Equal,
        );
        let result = finding(
            &missing,
            observe_file(
                &missing,
                PathBuf::from(&missing.key),
                Persist::Tmpfiles {
                    path: missing.key.clone(),
                },
            ),
        );
        assert_eq!(result.status, Status::Unknown);
        assert_eq!(result.current, "/sys/no/such/tusk/setting does not exist");
    }

    #[test]
    fn governors_are_summarized_per_value() {
        let all = ["performance".to_string(), "performance".to_string()];
        assert_eq!(summarize_per_cpu(&all), "performance");
        let mixed = [
            "powersave".to_string(),
            "performance".to_string(),
            "powersave".to_string(),
        ];
        assert_eq!(
            summarize_per_cpu(&mixed),
            "powersave on 2 cpus, performance on 1 cpu"
        );
    }
}
