//! Interrupt affinity: which interrupts belong to the data disk and the NICs (matched by name
//! in /proc/interrupts), and whether any may run on a shard core. Shard i is pinned to cpu i,
//! so the cores kept for interrupts are the last online ones and the broker runs with that
//! many fewer shards. Nothing here writes: affinity is the operator's (and irqbalance's) call.

use std::fs;
use std::path::Path;

use super::check::{Fix, Observed};
use super::host::{dir_entry_names, Disk, Host};
use super::profile::Item;
use super::values::{format_cpu_list, parse_cpu_list};

pub fn observe_irq(item: &Item, host: &Host) -> Result<Observed, String> {
    let online = host.cpus_online.as_ref().map_err(Clone::clone)?;
    let reserved: usize = item
        .want
        .parse()
        .map_err(|_| format!("want `{}` is not a core count", item.want))?;
    // One shard per core is the default; keeping cores for interrupts only pays with many.
    if online.len() <= 2 || online.len() <= reserved {
        return Err(format!(
            "too few cores ({}) to keep shard cores free of IRQs",
            online.len()
        ));
    }
    let irqs = data_path_irqs(host.data_dir.disk.as_ref().ok())?;
    if irqs.is_empty() {
        return Err("found no disk or NIC interrupts in /proc/interrupts".to_string());
    }
    Ok(judge_irqs(online, reserved, &irqs))
}

/// Shard i runs on cpu i, so the last `reserved` online CPUs are the interrupt cores.
fn judge_irqs(online: &[usize], reserved: usize, irqs: &[IrqAffinity]) -> Observed {
    let (shard_cores, irq_cores) = online.split_at(online.len() - reserved);
    let on_shards: Vec<&IrqAffinity> = irqs
        .iter()
        .filter(|irq| irq.cpus.iter().any(|cpu| shard_cores.contains(cpu)))
        .collect();
    let (shard_list, irq_list) = (format_cpu_list(shard_cores), format_cpu_list(irq_cores));
    let current = if on_shards.is_empty() {
        format!("{} checked, none on cpus {shard_list}", irqs.len())
    } else {
        let shown: Vec<String> = on_shards
            .iter()
            .take(4)
            .map(|irq| format!("{} {} on {}", irq.irq, irq.name, format_cpu_list(&irq.cpus)))
            .collect();
        let more = on_shards.len().saturating_sub(shown.len());
        let tail = if more > 0 {
            format!(", {more} more")
        } else {
            String::new()
        };
        format!(
            "{} of {} on shard cores: {}{tail}",
            on_shards.len(),
            irqs.len(),
            shown.join(", ")
        )
    };
    let mut steps = vec![format!(
        "start tusk with --shards {} (shard i runs on cpu i), or CPUAffinity={shard_list} in its unit",
        shard_cores.len()
    )];
    steps.extend(
        on_shards
            .iter()
            .map(|irq| format!("echo {irq_list} > /proc/irq/{}/smp_affinity_list", irq.irq)),
    );
    steps.push(format!(
        "keep irqbalance off the shards: IRQBALANCE_BANNED_CPULIST={shard_list} in /etc/default/irqbalance, then restart it"
    ));
    if on_shards.iter().any(|irq| irq.name.starts_with("nvme")) {
        steps.push("NVMe queue IRQs are kernel-managed and refuse the echo; each completes on the core that submitted, which is fine".to_string());
    }
    Observed {
        current,
        matches: on_shards.is_empty(),
        fix: Fix::Manual(steps),
        wanted: Some(format!("on cpu {irq_list}, shards on {shard_list}")),
    }
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
    let cpu_columns = lines
        .next()
        .map_or(0, |header| header.split_whitespace().count());
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
    let mut tokens: Vec<String> = parts
        .iter()
        .rev()
        .find(|part| is_pci_address(part))
        .cloned()
        .into_iter()
        .collect();
    for part in &parts {
        let numbered = ["virtio", "nvme"].iter().any(|prefix| {
            part.strip_prefix(prefix).is_some_and(|number| {
                !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit())
            })
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
                before.is_none_or(|c| !c.is_ascii_alphanumeric())
                    && after.is_none_or(|c| !c.is_ascii_digit())
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
    let text = fs::read_to_string("/proc/interrupts")
        .map_err(|e| format!("cannot read /proc/interrupts: {e}"))?;
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
        let Ok(list) = fs::read_to_string(format!("/proc/irq/{}/smp_affinity_list", interrupt.irq))
        else {
            continue;
        };
        if let Some(cpus) = parse_cpu_list(&list) {
            let name = interrupt
                .description
                .split_whitespace()
                .next_back()
                .unwrap_or("")
                .to_string();
            found.push(IrqAffinity {
                irq: interrupt.irq,
                name,
                cpus,
            });
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

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
            Interrupt {
                irq: 36,
                description: "PCI-MSIX-0000:00:02.0 1-edge virtio1-req.0".to_string()
            }
        );
    }

    #[test]
    fn disk_interrupts_are_found_by_whole_names() {
        let tokens = device_tokens(
            Path::new("/sys/devices/pci0000:00/0000:00:02.0/virtio1/block/vda"),
            "vda",
        );
        assert_eq!(tokens, ["0000:00:02.0", "virtio1", "vda"]);
        let matching: Vec<u32> = parse_interrupts(INTERRUPTS)
            .into_iter()
            .filter(|interrupt| interrupt_matches(&interrupt.description, &tokens))
            .map(|interrupt| interrupt.irq)
            .collect();
        assert_eq!(matching, [35, 36]);
        let nvme = device_tokens(
            Path::new("/sys/devices/pci0000:00/0000:00:1d.0/0000:3b:00.0/nvme/nvme0/nvme0n1"),
            "nvme0n1",
        );
        assert_eq!(nvme, ["0000:3b:00.0", "nvme0", "nvme0n1"]);
        assert!(interrupt_matches(
            "PCI-MSIX-0000:3b:00.0 3-edge nvme0q3",
            &nvme
        ));
        assert!(!interrupt_matches(
            "PCI-MSIX-0000:3c:00.0 3-edge nvme1q3",
            &nvme
        ));
        let sata = device_tokens(
            Path::new(
                "/sys/devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sda",
            ),
            "sda",
        );
        assert!(interrupt_matches(
            "PCI-MSI 512000-edge ahci[0000:00:1f.2]",
            &sata
        ));
    }

    fn irq(number: u32, cpus: &[usize]) -> IrqAffinity {
        IrqAffinity {
            irq: number,
            name: format!("virtio1-req.{number}"),
            cpus: cpus.to_vec(),
        }
    }

    #[test]
    fn interrupts_on_shard_cores_differ() {
        let online: Vec<usize> = (0..8).collect();
        let judged = judge_irqs(
            &online,
            1,
            &[irq(36, &[0, 1, 2, 3, 4, 5, 6, 7]), irq(37, &[7])],
        );
        assert!(!judged.matches);
        assert_eq!(
            judged.current,
            "1 of 2 on shard cores: 36 virtio1-req.36 on 0-7"
        );
        assert_eq!(judged.wanted.as_deref(), Some("on cpu 7, shards on 0-6"));
        let Fix::Manual(steps) = judged.fix else {
            panic!("IRQs are fixed by hand")
        };
        assert_eq!(
            steps[0],
            "start tusk with --shards 7 (shard i runs on cpu i), or CPUAffinity=0-6 in its unit"
        );
        assert_eq!(steps[1], "echo 7 > /proc/irq/36/smp_affinity_list");
        let kept = judge_irqs(&online, 1, &[irq(37, &[7])]);
        assert!(kept.matches);
        assert_eq!(kept.current, "1 checked, none on cpus 0-6");
    }
}
