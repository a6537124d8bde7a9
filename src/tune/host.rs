//! Where the data dir lives on this host: its mount (from /proc/self/mountinfo), the whole
//! disk under it (from /sys/class/block), the online CPUs, and the interrupts of that disk and
//! of the NICs. Every lookup that fails becomes a reason (`Err(String)`) the report shows;
//! nothing here panics on a missing file. Parsing is split from reading so it is unit-tested.

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
                parse_cpu_list(&text).ok_or_else(|| format!("cannot parse the CPU list `{}`", text.trim()))
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
                let value = digits.iter().fold(0u32, |value, digit| value * 8 + u32::from(digit - b'0'));
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
    let stacked_on = dir_entry_names(&Path::new("/sys/class/block").join(&disk_name).join("slaves"));
    refuse_unlike_disk(&disk_name, &stacked_on)?;
    let rotational = fs::read_to_string(Disk { name: disk_name.clone(), rotational: None }.sysfs_path("queue/rotational"))
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
        if let Some(name) = fs::canonicalize(link).ok().and_then(|real| file_name(&real)) {
            return Ok(name);
        }
    }
    if mount.source.starts_with("/dev/") {
        let name = fs::canonicalize(&mount.source).ok().and_then(|real| file_name(&real));
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
    for (prefix, what) in [("zram", "compressed RAM"), ("ram", "RAM"), ("loop", "loop"), ("nbd", "network")] {
        if name.starts_with(prefix) {
            return Err(format!("the data dir is on {name}, a {what} device, not a disk"));
        }
    }
    Ok(())
}

fn file_name(path: &Path) -> Option<String> {
    path.file_name().map(|name| name.to_string_lossy().into_owned())
}

/// Names in a directory, sorted; empty if it cannot be read.
fn dir_entry_names(dir: &Path) -> Vec<String> {
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

/// One numbered line of /proc/interrupts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interrupt {
    pub irq: u32,
    /// Everything after the per-CPU counts: chip, hardware IRQ, handler names.
    pub description: String,
}

/// Parses /proc/interrupts; the header's CPU columns say how many counts each line has.
pub fn parse_interrupts(text: &str) -> Vec<Interrupt> {
    let mut lines = text.lines();
    let cpu_columns = lines.next().map_or(0, |header| header.split_whitespace().count());
    lines
        .filter_map(|line| {
            let (number, rest) = line.split_once(':')?;
            let irq = number.trim().parse().ok()?;
            let description: Vec<&str> = rest.split_whitespace().skip(cpu_columns).collect();
            Some(Interrupt {
                irq,
                description: description.join(" "),
            })
        })
        .collect()
}

/// Names that identify a device's interrupts: the last PCI address on its sysfs path (the
/// device function itself, not a bridge above it), `virtioN` and `nvmeN` parts, and its own
/// name. `/sys/devices/pci0000:00/0000:00:02.0/virtio1/block/vda` → `0000:00:02.0`,
/// `virtio1`, `vda`.
pub fn device_tokens(device_path: &Path, own_name: &str) -> Vec<String> {
    let parts: Vec<String> = device_path
        .components()
        .map(|part| part.as_os_str().to_string_lossy().into_owned())
        .collect();
    let mut tokens: Vec<String> = parts.iter().rev().find(|part| is_pci_address(part)).cloned().into_iter().collect();
    for part in &parts {
        let numbered = ["virtio", "nvme"].iter().any(|prefix| {
            part.strip_prefix(prefix)
                .is_some_and(|number| !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()))
        });
        if numbered && !tokens.contains(part) {
            tokens.push(part.clone());
        }
    }
    if !tokens.iter().any(|token| token == own_name) {
        tokens.push(own_name.to_string());
    }
    tokens
}

/// `dddd:bb:dd.f`, as in `0000:00:1f.2`.
fn is_pci_address(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 12
        && bytes.iter().enumerate().all(|(at, &byte)| match at {
            4 | 7 => byte == b':',
            10 => byte == b'.',
            _ => byte.is_ascii_hexdigit(),
        })
}

/// Whether an interrupt's description names one of the tokens as a whole name: `virtio1`
/// matches `virtio1-req.0` and `PCI-MSIX-0000:00:02.0` matches its address, but `virtio1`
/// does not match `virtio10-input.0`.
pub fn interrupt_matches(description: &str, tokens: &[String]) -> bool {
    description.split_whitespace().any(|word| {
        tokens.iter().any(|token| {
            word.match_indices(token.as_str()).any(|(at, _)| {
                let before = word[..at].chars().next_back();
                let after = word[at + token.len()..].chars().next();
                before.is_none_or(|c| !c.is_ascii_alphanumeric()) && after.is_none_or(|c| !c.is_ascii_digit())
            })
        })
    })
}

/// An interrupt of the data disk or a NIC, and the CPUs it may run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IrqAffinity {
    pub irq: u32,
    /// The handler name (last word of the description), e.g. `virtio1-req.0`.
    pub name: String,
    pub cpus: Vec<usize>,
}

/// The interrupts of the data disk (if known) and of every NIC backed by a device.
pub fn data_path_irqs(disk: Option<&Disk>) -> Result<Vec<IrqAffinity>, String> {
    let text = fs::read_to_string("/proc/interrupts").map_err(|e| format!("cannot read /proc/interrupts: {e}"))?;
    let mut tokens = Vec::new();
    if let Some(disk) = disk {
        if let Ok(path) = fs::canonicalize(Path::new("/sys/class/block").join(&disk.name)) {
            tokens.extend(device_tokens(&path, &disk.name));
        }
    }
    for nic in dir_entry_names(Path::new("/sys/class/net")) {
        // Virtual interfaces (lo, bridges, ifb) have no `device` link and no interrupts.
        if let Ok(path) = fs::canonicalize(Path::new("/sys/class/net").join(&nic).join("device")) {
            tokens.extend(device_tokens(&path, &nic));
        }
    }
    let mut found = Vec::new();
    for interrupt in parse_interrupts(&text) {
        if !interrupt_matches(&interrupt.description, &tokens) {
            continue;
        }
        // An interrupt can vanish between the two reads; skip it rather than fail.
        let Ok(list) = fs::read_to_string(format!("/proc/irq/{}/smp_affinity_list", interrupt.irq)) else {
            continue;
        };
        if let Some(cpus) = parse_cpu_list(&list) {
            let name = interrupt.description.split_whitespace().last().unwrap_or("").to_string();
            found.push(IrqAffinity { irq: interrupt.irq, name, cpus });
        }
    }
    Ok(found)
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
        let shared = "36 35 98:0 /mnt1 /srv/my\\040data rw,noatime master:1 shared:2 - xfs /dev/sdb1 rw";
        let entry = parse_mountinfo_line(shared).map(|entry| (entry.mount_point, entry.options, entry.fs_type));
        assert_eq!(entry, Some((PathBuf::from("/srv/my data"), "rw,noatime".to_string(), "xfs".to_string())));
        assert_eq!(parse_mountinfo_line("garbage"), None);
    }

    #[test]
    fn the_longest_and_latest_mount_point_holds_the_dir() {
        let entries = [mount("/", "254:0"), mount("/srv", "8:1"), mount("/srv/tusk", "8:17"), mount("/srv", "8:33")];
        let holder = |dir: &str| containing_mount(&entries, Path::new(dir)).map(|m| m.major_minor);
        assert_eq!(holder("/srv/tusk/data"), Some("8:17".to_string()));
        assert_eq!(holder("/srv/other"), Some("8:33".to_string()));
        // Prefixes are whole path components: /srv/tusk2 is not under /srv/tusk.
        assert_eq!(holder("/srv/tusk2"), Some("8:33".to_string()));
        assert_eq!(holder("/work/main"), Some("254:0".to_string()));
    }

    #[test]
    fn a_missing_data_dir_is_judged_by_its_parent() {
        assert_eq!(nearest_existing(Path::new("./no-such-dir-for-tune-tests")), PathBuf::from("."));
        assert_eq!(nearest_existing(Path::new("no-such-dir-for-tune-tests")), PathBuf::from("."));
        assert_eq!(nearest_existing(Path::new("/")), PathBuf::from("/"));
    }

    #[test]
    fn stacked_and_memory_devices_are_not_tuned() {
        assert!(refuse_unlike_disk("vda", &[]).is_ok());
        assert!(refuse_unlike_disk("sda", &[]).is_ok());
        let lvm = refuse_unlike_disk("dm-0", &["sda".to_string(), "sdb".to_string()]);
        assert_eq!(lvm, Err("the data dir is on dm-0, stacked on sda, sdb: check those disks' queue settings by hand".to_string()));
        assert!(refuse_unlike_disk("zram0", &[]).is_err_and(|why| why.contains("compressed RAM")));
        assert!(refuse_unlike_disk("loop3", &[]).is_err());
    }

    const INTERRUPTS: &str = "           CPU0       CPU1       \n \
        26:          0         14  IO-APIC   4-edge      ttyS0\n \
        35:          0          1 PCI-MSIX-0000:00:02.0   0-edge      virtio1-config\n \
        36:          0    3066962 PCI-MSIX-0000:00:02.0   1-edge      virtio1-req.0\n \
        38:          0       6618 PCI-MSIX-0000:00:03.0   1-edge      virtio2-input.0\n \
        44:          0          0 PCI-MSIX-0000:00:09.0   1-edge      virtio10-req.0\n\
        NMI:          0          0   Non-maskable interrupts\n";

    #[test]
    fn interrupts_parse_past_the_counts() {
        let parsed = parse_interrupts(INTERRUPTS);
        assert_eq!(parsed.len(), 5);
        assert_eq!(
            parsed[2],
            Interrupt { irq: 36, description: "PCI-MSIX-0000:00:02.0 1-edge virtio1-req.0".to_string() }
        );
    }

    #[test]
    fn disk_interrupts_are_found_by_whole_names() {
        let tokens = device_tokens(Path::new("/sys/devices/pci0000:00/0000:00:02.0/virtio1/block/vda"), "vda");
        assert_eq!(tokens, ["0000:00:02.0", "virtio1", "vda"]);
        let matching: Vec<u32> = parse_interrupts(INTERRUPTS)
            .into_iter()
            .filter(|interrupt| interrupt_matches(&interrupt.description, &tokens))
            .map(|interrupt| interrupt.irq)
            .collect();
        assert_eq!(matching, [35, 36]);
        let nvme = device_tokens(Path::new("/sys/devices/pci0000:00/0000:00:1d.0/0000:3b:00.0/nvme/nvme0/nvme0n1"), "nvme0n1");
        assert_eq!(nvme, ["0000:3b:00.0", "nvme0", "nvme0n1"]);
        assert!(interrupt_matches("PCI-MSIX-0000:3b:00.0 3-edge nvme0q3", &nvme));
        assert!(!interrupt_matches("PCI-MSIX-0000:3c:00.0 3-edge nvme1q3", &nvme));
        let sata = device_tokens(Path::new("/sys/devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sda"), "sda");
        assert!(interrupt_matches("PCI-MSI 512000-edge ahci[0000:00:1f.2]", &sata));
    }
}
