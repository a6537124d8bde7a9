//! The tuning profile: its TOML shape (see the header of tuning/hdd-profile.toml), parsing and
//! validation. Invariant: a `Profile` that exists only names files under /sys/ and
//! /proc/sys/, so a crafted `--profile` cannot make `tune apply` (run as root) write elsewhere.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::values::parse_amount;
use super::TuneError;

/// The HDD profile shipped inside the binary.
pub const EMBEDDED_HDD_PROFILE: &str = include_str!("../../tuning/hdd-profile.toml");

/// What the report and error messages call the embedded profile.
const EMBEDDED_ORIGIN: &str = "embedded tuning/hdd-profile.toml";

/// A set of wanted host settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    #[serde(default, rename = "item")]
    pub items: Vec<Item>,
}

/// One wanted setting.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Item {
    pub name: String,
    pub kind: Kind,
    pub key: String,
    #[serde(deserialize_with = "want_text")]
    pub want: String,
    #[serde(default)]
    pub compare: Compare,
    /// A sysctl that overrides this one when it is not 0 (`vm.dirty_bytes` for
    /// `vm.dirty_ratio`): the kernel then reads the ratio as 0, which would look compliant.
    #[serde(default)]
    pub replaced_by: Option<String>,
    pub why: String,
}

/// Where a setting lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A file under /sys/block/<disk>/ of the data dir's whole disk.
    SysfsBlock,
    /// /proc/sys/<key with dots as slashes>.
    Sysctl,
    /// An absolute path under /sys/.
    Sysfs,
    /// /sys/devices/system/cpu/cpu*/cpufreq/<key>, on every CPU.
    Cpufreq,
    /// A resource limit of this process: `memlock` or `nofile`.
    Rlimit,
    /// The mount options of the data dir's filesystem (key `options`).
    Mount,
    /// Cores kept for disk and NIC interrupts (key `reserved_cores`, want: how many).
    Irq,
}

/// How the current value is held against the wanted one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Compare {
    #[default]
    Equal,
    AtLeast,
    AtMost,
    /// The wanted word is one of a comma-separated list (mount options).
    Contains,
}

/// Accepts `want = 4096` as well as `want = "4096"`: operators edit copies of the profile.
fn want_text<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Integer(i64),
    }
    Ok(match Raw::deserialize(deserializer)? {
        Raw::Text(text) => text,
        Raw::Integer(number) => number.to_string(),
    })
}

/// The profile from `file`, or the embedded HDD profile.
pub fn load(file: Option<&Path>) -> Result<Profile, TuneError> {
    let Some(path) = file else {
        return parse(EMBEDDED_HDD_PROFILE, EMBEDDED_ORIGIN);
    };
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| TuneError::Profile {
        origin: origin.clone(),
        reason: format!("cannot read it: {e}"),
    })?;
    parse(&text, &origin)
}

/// Parses and validates a profile; `origin` names it in errors.
pub fn parse(text: &str, origin: &str) -> Result<Profile, TuneError> {
    let refuse = |reason: String| TuneError::Profile {
        origin: origin.to_string(),
        reason,
    };
    let profile: Profile = toml::from_str(text).map_err(|e| refuse(toml_error_line(text, &e)))?;
    validate(&profile).map_err(refuse)?;
    Ok(profile)
}

/// toml's own message spans several lines with a source excerpt; errors here are one line.
fn toml_error_line(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim().replace('\n', "; ");
    let line = error
        .span()
        .and_then(|span| text.as_bytes().get(..span.start))
        .map(|before| before.iter().filter(|&&byte| byte == b'\n').count() + 1);
    match line {
        Some(line) => format!("line {line}: {message}"),
        None => message,
    }
}

fn validate(profile: &Profile) -> Result<(), String> {
    if profile.items.is_empty() {
        return Err("it has no [[item]]".to_string());
    }
    let mut names = HashSet::new();
    for item in &profile.items {
        if !names.insert(item.name.as_str()) {
            return Err(format!("item `{}` appears twice", item.name));
        }
        validate_item(item).map_err(|reason| format!("item `{}`: {reason}", item.name))?;
    }
    Ok(())
}

fn validate_item(item: &Item) -> Result<(), String> {
    if item.name.trim().is_empty() {
        return Err("the name is empty".to_string());
    }
    // `want` may be written into a kernel file: one clean token or phrase, no line breaks.
    if item.want.trim().is_empty() || item.want.contains(['\n', '\r', '\0']) {
        return Err("`want` must be one non-empty line".to_string());
    }
    if matches!(item.compare, Compare::AtLeast | Compare::AtMost)
        && parse_amount(&item.want).is_none()
    {
        return Err("at-least and at-most need a number or `unlimited` in `want`".to_string());
    }
    if let Some(twin) = &item.replaced_by {
        if !is_sysctl_key(twin) {
            return Err(format!("replaced_by `{twin}` is not a sysctl name"));
        }
    }
    validate_key(item)
}

fn validate_key(item: &Item) -> Result<(), String> {
    let key = item.key.as_str();
    let valid = match item.kind {
        Kind::SysfsBlock => is_safe_path(key) && !key.starts_with('/'),
        Kind::Sysctl => is_sysctl_key(key),
        Kind::Sysfs => is_safe_path(key) && key.starts_with("/sys/"),
        Kind::Cpufreq => is_safe_path(key) && !key.contains('/'),
        Kind::Rlimit => matches!(key, "memlock" | "nofile"),
        Kind::Mount => key == "options",
        Kind::Irq => {
            key == "reserved_cores" && item.want.parse::<usize>().is_ok_and(|cores| cores >= 1)
        }
    };
    if valid {
        return Ok(());
    }
    Err(match item.kind {
        Kind::SysfsBlock => format!("key `{key}` must be a path inside /sys/block/<disk>/"),
        Kind::Sysctl => format!("key `{key}` is not a sysctl name (like vm.swappiness)"),
        Kind::Sysfs => format!("key `{key}` must be an absolute path under /sys/"),
        Kind::Cpufreq => format!("key `{key}` must be a file name in cpufreq/"),
        Kind::Rlimit => format!("key `{key}` is not one of memlock, nofile"),
        Kind::Mount => format!("key `{key}` must be `options`"),
        Kind::Irq => "key must be `reserved_cores` and want a whole number >= 1".to_string(),
    })
}

/// Plain path characters only and no `..`: keeps every write inside the tree it names.
fn is_safe_path(path: &str) -> bool {
    !path.is_empty()
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | ':'))
        && !path.split('/').any(|part| part == "..")
}

fn is_sysctl_key(key: &str) -> bool {
    key.contains('.')
        && key.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
}

/// The /proc/sys file of a sysctl name (`vm.swappiness` → `/proc/sys/vm/swappiness`).
pub fn sysctl_path(key: &str) -> PathBuf {
    Path::new("/proc/sys").join(key.replace('.', "/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item<'a>(profile: &'a Profile, name: &str) -> &'a Item {
        match profile.items.iter().find(|item| item.name == name) {
            Some(item) => item,
            None => panic!("the profile has no item {name}"),
        }
    }

    #[test]
    fn the_embedded_profile_parses_with_every_item() {
        let profile = match parse(EMBEDDED_HDD_PROFILE, "embedded") {
            Ok(profile) => profile,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(profile.name, "hdd");
        let scheduler = item(&profile, "io-scheduler");
        assert_eq!(scheduler.kind, Kind::SysfsBlock);
        assert_eq!(scheduler.key, "queue/scheduler");
        assert_eq!(scheduler.want, "mq-deadline");
        assert_eq!(scheduler.compare, Compare::Equal);
        let dirty = item(&profile, "dirty-limit");
        assert_eq!((dirty.kind, dirty.compare), (Kind::Sysctl, Compare::AtMost));
        assert_eq!(dirty.replaced_by.as_deref(), Some("vm.dirty_bytes"));
        assert_eq!(item(&profile, "locked-memory").want, "unlimited");
        assert_eq!(item(&profile, "open-files").want, "1048576");
        for kind in [
            Kind::Sysfs,
            Kind::Cpufreq,
            Kind::Rlimit,
            Kind::Mount,
            Kind::Irq,
        ] {
            assert!(
                profile.items.iter().any(|item| item.kind == kind),
                "{kind:?}"
            );
        }
        // The scheduler must come before nr_requests: switching schedulers resets it.
        let position = |name: &str| profile.items.iter().position(|item| item.name == name);
        assert!(position("io-scheduler") < position("queue-depth"));
    }

    #[test]
    fn integer_wants_are_accepted() {
        let text = "name = \"t\"\n[[item]]\nname = \"ra\"\nkind = \"sysfs-block\"\n\
                    key = \"queue/read_ahead_kb\"\nwant = 4096\ncompare = \"at-least\"\nwhy = \"w\"\n";
        let profile = parse(text, "test").map_err(|e| e.to_string());
        assert_eq!(
            profile.map(|p| p.items[0].want.clone()),
            Ok("4096".to_string())
        );
    }

    fn refusal(text: &str) -> String {
        match parse(text, "test.toml") {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn writes_outside_sys_are_refused() {
        let escape = "name = \"t\"\n[[item]]\nname = \"x\"\nkind = \"sysfs\"\n\
                      key = \"/etc/passwd\"\nwant = \"a\"\nwhy = \"w\"\n";
        assert!(
            refusal(escape).contains("under /sys/"),
            "{}",
            refusal(escape)
        );
        let climb = escape.replace("/etc/passwd", "/sys/../etc/passwd");
        assert!(refusal(&climb).contains("item `x`"));
        let block = escape
            .replace("\"sysfs\"", "\"sysfs-block\"")
            .replace("/etc/passwd", "../../etc/passwd");
        assert!(refusal(&block).contains("/sys/block/<disk>/"));
    }

    #[test]
    fn mistakes_are_named_with_their_line() {
        let typo =
            "name = \"t\"\n[[item]]\nname = \"x\"\nkind = \"sysctl\"\nkey = \"vm.swappiness\"\n\
                    want = \"1\"\nwhy = \"w\"\ncompre = \"at-most\"\n";
        let message = refusal(typo);
        assert!(message.starts_with("profile test.toml: line "), "{message}");
        assert!(message.contains("compre"), "{message}");
        assert!(!message.contains('\n'), "{message}");
        let not_number = typo
            .replace("compre = \"at-most\"", "compare = \"at-most\"")
            .replace("\"1\"", "\"low\"");
        assert!(refusal(&not_number).contains("need a number"));
    }

    #[test]
    fn sysctl_names_map_to_proc_sys() {
        assert_eq!(
            sysctl_path("vm.dirty_ratio"),
            Path::new("/proc/sys/vm/dirty_ratio")
        );
        assert!(is_sysctl_key("vm.swappiness"));
        assert!(!is_sysctl_key("vm..swappiness"));
        assert!(!is_sysctl_key("swappiness"));
        assert!(!is_sysctl_key("vm/../../etc"));
    }
}
