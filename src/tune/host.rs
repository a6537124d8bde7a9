//! Where the data dir lives on this host: its mount (from /proc/self/mountinfo), the whole
//! disk under it (from /sys/class/block), and the online CPUs. Every lookup that fails
//! becomes a reason (`Err(String)`) the report shows; nothing here panics on a missing file.
//! Parsing is split from reading so it is unit-tested.

use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use super::values::parse_cpu_list;

/// What `tune` reads about the host once, before judging any item.
#[derive(Debug)]
pub struct Host {
    pub data_dir: DataDirLocation,
    pub cpus_online: Result<Vec<usize>, String>,
}

impl Host {
    pub fn inspect(data_dir: &Path) -> Host {
        let cpus_online = fs::read_to_string("/sys/devices/system/cpu/online")
            .map_err(|e| format!("cannot read /sys/devices/system/cpu/online: {e}"))
            .and_then(|text| {
                parse_cpu_list(&text)
                    .ok_or_else(|| format!("cannot parse the CPU list `{}`", text.trim()))
            });
        Host {
            data_dir: DataDirLocation::resolve(data_dir),
            cpus_online,
        }
    }
}

/// The data dir, its filesystem and its disk.
#[derive(Debug)]
pub struct DataDirLocation {
    /// `--data-dir` as given.
    pub asked: PathBuf,
    pub asked_exists: bool,
    /// The canonical directory examined: `asked`, or its nearest existing parent.
    pub examined: Result<PathBuf, String>,
    pub mount: Result<MountEntry, String>,
    pub disk: Result<Disk, String>,
}

/// A whole disk (never a partition) with a request queue under /sys/block/.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    pub name: String,
    /// `queue/rotational`; `None` if unreadable.
    pub rotational: Option<bool>,
}

impl Disk {
    /// A file of the disk's sysfs directory (`queue/scheduler` → `/sys/block/vda/queue/scheduler`).
    pub fn sysfs_path(&self, key: &str) -> PathBuf {
        Path::new("/sys/block").join(&self.name).join(key)
    }
}

impl DataDirLocation {
    pub fn resolve(asked: &Path) -> DataDirLocation {
        let examined = fs::canonicalize(nearest_existing(asked))
            .map_err(|e| format!("cannot resolve {}: {e}", asked.display()));
        let mount = examined.clone().and_then(|dir| mount_of(&dir));
        let disk = mount.clone().and_then(|mount| disk_of(&mount));
        DataDirLocation {
            asked: asked.to_path_buf(),
            asked_exists: asked.exists(),
            examined,
            mount,
            disk,
        }
    }
}

/// `path`, or its nearest parent that exists: a broker that has not run yet has no data dir,
/// but the filesystem it will create it on is what matters (`./data` → `.`).
fn nearest_existing(path: &Path) -> PathBuf {
    let mut candidate = path;
    loop {
        if candidate.as_os_str().is_empty() {
            return PathBuf::from(".");
        }
        if candidate.exists() {
            return candidate.to_path_buf();
        }
        match candidate.parent() {
            Some(parent) => candidate = parent,
            None => return PathBuf::from("."),
        }
    }
}

/// The fields of a /proc/self/mountinfo line that tune needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// `major:minor` of the filesystem's device (major 0: no block device, e.g. overlay).
    pub major_minor: String,
    pub mount_point: PathBuf,
    /// Per-mount options (`rw,noatime`): where the atime options live.
    pub options: String,
    pub fs_type: String,
    pub source: String,
}

/// Parses one mountinfo line:
/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`.
/// Optional fields sit between the options and ` - `, so the fields after it are found by it.
pub fn parse_mountinfo_line(line: &str) -> Option<MountEntry> {
    let (mount_fields, fs_fields) = line.split_once(" - ")?;
    let fields: Vec<&str> = mount_fields.split(' ').collect();
    if fields.len() < 6 {
        return None;
    }
    let mut fs_fields = fs_fields.split(' ');
    let fs_type = fs_fields.next()?.to_string();
    let source = fs_fields.next()?;
    Some(MountEntry {
        major_minor: fields[2].to_string(),
        mount_point: PathBuf::from(OsString::from_vec(unescape_octal(fields[4]))),
        options: fields[5].to_string(),
        fs_type,
        source: String::from_utf8_lossy(&unescape_octal(source)).into_owned(),
    })
}

/// mountinfo writes space, tab, newline and backslash as `\ooo` octal escapes.
fn unescape_octal(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escape = bytes.get(index + 1..index + 4).filter(|digits| {
            bytes[index] == b'\\' && digits.iter().all(|digit| (b'0'..=b'7').contains(digit))
        });
        match escape {
            Some(digits) => {
                let value = digits
                    .iter()
                    .fold(0u32, |value, digit| value * 8 + u32::from(digit - b'0'));
                out.push(value as u8);
                index += 4;
            }
            None => {
                out.push(bytes[index]);
                index += 1;
            }
        }
    }
    out
}

/// The mount holding `dir`: the longest mount point that is a prefix of it. Of equal mount
/// points the last wins, because a later mount hides an earlier one.
pub fn containing_mount(entries: &[MountEntry], dir: &Path) -> Option<MountEntry> {
    entries
        .iter()
        .filter(|entry| dir.starts_with(&entry.mount_point))
        .max_by_key(|entry| entry.mount_point.components().count())
        .cloned()
}

fn mount_of(dir: &Path) -> Result<MountEntry, String> {
    let text = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    let entries: Vec<MountEntry> = text.lines().filter_map(parse_mountinfo_line).collect();
    containing_mount(&entries, dir)
        .ok_or_else(|| format!("no mount in /proc/self/mountinfo holds {}", dir.display()))
}

/// The whole disk under a mount, or why there is none to tune.
fn disk_of(mount: &MountEntry) -> Result<Disk, String> {
    let name = block_device_name(mount)?;
    let class = Path::new("/sys/class/block").join(&name);
    // A partition's queue settings belong to its disk: the sysfs parent directory.
    let disk_name = if class.join("partition").exists() {
        fs::canonicalize(class.join(".."))
            .ok()
            .and_then(|parent| file_name(&parent))
            .ok_or_else(|| format!("cannot find the disk holding partition {name}"))?
    } else {
        name
    };
    let stacked_on = dir_entry_names(
        &Path::new("/sys/class/block")
            .join(&disk_name)
            .join("slaves"),
    );
    refuse_unlike_disk(&disk_name, &stacked_on)?;
    let rotational_path = Path::new("/sys/block")
        .join(&disk_name)
        .join("queue/rotational");
    let rotational = fs::read_to_string(rotational_path)
        .ok()
        .map(|text| text.trim() == "1");
    Ok(Disk {
        name: disk_name,
        rotational,
    })
}

/// The /sys/class/block name of a mount's device: by `major:minor` (this also resolves
/// `/dev/root`), else by the source path (btrfs reports an anonymous `0:N`).
fn block_device_name(mount: &MountEntry) -> Result<String, String> {
    if !mount.major_minor.starts_with("0:") {
        let link = Path::new("/sys/dev/block").join(&mount.major_minor);
        if let Some(name) = fs::canonicalize(link)
            .ok()
            .and_then(|real| file_name(&real))
        {
            return Ok(name);
        }
    }
    if mount.source.starts_with("/dev/") {
        let name = fs::canonicalize(&mount.source)
            .ok()
            .and_then(|real| file_name(&real));
        if let Some(name) = name.filter(|name| Path::new("/sys/class/block").join(name).exists()) {
            return Ok(name);
        }
    }
    Err(format!(
        "the data dir is on {} from `{}`, not on a block device",
        mount.fs_type, mount.source
    ))
}

/// Refuses devices whose queue settings would not reach a disk: stacked devices (LVM,
/// dm-crypt, RAID), memory and loop devices.
pub fn refuse_unlike_disk(name: &str, stacked_on: &[String]) -> Result<(), String> {
    if !stacked_on.is_empty() {
        return Err(format!(
            "the data dir is on {name}, stacked on {}: check those disks' queue settings by hand",
            stacked_on.join(", ")
        ));
    }
    if name.starts_with("dm-") {
        return Err(format!("the data dir is on device-mapper device {name}"));
    }
    for (prefix, what) in [
        ("zram", "compressed RAM"),
        ("ram", "RAM"),
        ("loop", "loop"),
        ("nbd", "network"),
    ] {
        if name.starts_with(prefix) {
            return Err(format!(
                "the data dir is on {name}, a {what} device, not a disk"
            ));
        }
    }
    Ok(())
}

fn file_name(path: &Path) -> Option<String> {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
}

/// Names in a directory, sorted; empty if it cannot be read.
pub fn dir_entry_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT_LINE: &str = "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard";

    fn mount(point: &str, major_minor: &str) -> MountEntry {
        MountEntry {
            major_minor: major_minor.to_string(),
            mount_point: PathBuf::from(point),
            options: "rw".to_string(),
            fs_type: "ext4".to_string(),
            source: "/dev/x".to_string(),
        }
    }

    #[test]
    fn mountinfo_lines_parse_with_and_without_optional_fields() {
        let root = parse_mountinfo_line(ROOT_LINE);
        assert_eq!(
            root,
            Some(MountEntry {
                major_minor: "254:0".to_string(),
                mount_point: PathBuf::from("/"),
                options: "rw,relatime".to_string(),
                fs_type: "ext4".to_string(),
                source: "/dev/vda".to_string(),
            })
        );
        let shared =
            "36 35 98:0 /mnt1 /srv/my\\040data rw,noatime master:1 shared:2 - xfs /dev/sdb1 rw";
        let entry = parse_mountinfo_line(shared)
            .map(|entry| (entry.mount_point, entry.options, entry.fs_type));
        assert_eq!(
            entry,
            Some((
                PathBuf::from("/srv/my data"),
                "rw,noatime".to_string(),
                "xfs".to_string()
            ))
        );
        assert_eq!(parse_mountinfo_line("garbage"), None);
    }

    #[test]
    fn the_longest_and_latest_mount_point_holds_the_dir() {
        let entries = [
            mount("/", "254:0"),
            mount("/srv", "8:1"),
            mount("/srv/tusk", "8:17"),
            mount("/srv", "8:33"),
        ];
        let holder = |dir: &str| containing_mount(&entries, Path::new(dir)).map(|m| m.major_minor);
        assert_eq!(holder("/srv/tusk/data"), Some("8:17".to_string()));
        assert_eq!(holder("/srv/other"), Some("8:33".to_string()));
        // Prefixes are whole path components: /srv/tusk2 is not under /srv/tusk.
        assert_eq!(holder("/srv/tusk2"), Some("8:33".to_string()));
        assert_eq!(holder("/work/main"), Some("254:0".to_string()));
    }

    #[test]
    fn a_missing_data_dir_is_judged_by_its_parent() {
        assert_eq!(
            nearest_existing(Path::new("./no-such-dir-for-tune-tests")),
            PathBuf::from(".")
        );
        assert_eq!(
            nearest_existing(Path::new("no-such-dir-for-tune-tests")),
            PathBuf::from(".")
        );
        assert_eq!(nearest_existing(Path::new("/")), PathBuf::from("/"));
    }

    #[test]
    fn stacked_and_memory_devices_are_not_tuned() {
        assert!(refuse_unlike_disk("vda", &[]).is_ok());
        assert!(refuse_unlike_disk("sda", &[]).is_ok());
        let lvm = refuse_unlike_disk("dm-0", &["sda".to_string(), "sdb".to_string()]);
        let stacked = "the data dir is on dm-0, stacked on sda, sdb: check those disks' queue \
                       settings by hand";
        assert_eq!(lvm, Err(stacked.to_string()));
        let zram = refuse_unlike_disk("zram0", &[]);
        assert!(zram.is_err_and(|why| why.contains("compressed RAM")));
        assert!(refuse_unlike_disk("loop3", &[]).is_err());
    }
}
