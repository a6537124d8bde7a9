//! Pure text logic of `tusk tune`: reading kernel setting formats, comparing values, CPU lists,
//! wrapping report cells. Nothing here touches the host, so all of it is unit-tested.

use super::profile::Compare;

/// A setting's value as the kernel shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The selected word of a choice file (`none [mq-deadline] kyber` → `mq-deadline`), or the
    /// trimmed content of a plain file.
    pub value: String,
    /// Every word a choice file offers, brackets removed; empty for a plain file.
    pub choices: Vec<String>,
}

/// Parses the content of a sysfs or /proc/sys file.
pub fn parse_setting(text: &str) -> Setting {
    let trimmed = text.trim();
    match selected_choice(trimmed) {
        Some(selected) => Setting {
            value: selected.to_string(),
            choices: trimmed
                .split_whitespace()
                .map(|word| word.trim_matches(['[', ']']).to_string())
                .collect(),
        },
        None => Setting {
            value: trimmed.to_string(),
            choices: Vec::new(),
        },
    }
}

/// The bracketed word of a choice file: the kernel marks the active one of the offered
/// values that way (I/O schedulers, transparent huge pages).
pub fn selected_choice(text: &str) -> Option<&str> {
    let start = text.find('[')?;
    let length = text[start + 1..].find(']')?;
    let word = text[start + 1..start + 1 + length].trim();
    (!word.is_empty()).then_some(word)
}

/// A number, or `unlimited`/`infinity`, which count as larger than any number (rlimits).
pub fn parse_amount(text: &str) -> Option<u64> {
    match text.trim() {
        "unlimited" | "infinity" => Some(u64::MAX),
        number => number.parse().ok(),
    }
}

/// Whether `current` satisfies `want` under `compare`; `Err` says why they cannot be compared.
pub fn decide(current: &str, want: &str, compare: Compare) -> Result<bool, String> {
    let amount =
        |text: &str| parse_amount(text).ok_or_else(|| format!("`{}` is not a number", text.trim()));
    match compare {
        Compare::Equal => Ok(current.trim() == want.trim()),
        Compare::AtLeast => Ok(amount(current)? >= amount(want)?),
        Compare::AtMost => Ok(amount(current)? <= amount(want)?),
        Compare::Contains => Ok(current.split(',').any(|word| word.trim() == want.trim())),
    }
}

/// How the report shows the wanted value of an item.
pub fn wanted_text(want: &str, compare: Compare) -> String {
    match compare {
        Compare::Equal | Compare::Contains => want.to_string(),
        // Nothing is above unlimited: ">= unlimited" would only be noise.
        Compare::AtLeast if parse_amount(want) == Some(u64::MAX) => want.to_string(),
        Compare::AtLeast => format!(">= {want}"),
        Compare::AtMost => format!("<= {want}"),
    }
}

/// A byte count for people: `8 MiB`, `512 KiB`, `1000 bytes`, `unlimited`.
pub fn format_bytes(bytes: u64) -> String {
    const KIB: u64 = 1024;
    if bytes == u64::MAX {
        return "unlimited".to_string();
    }
    for (unit, size) in [("GiB", KIB * KIB * KIB), ("MiB", KIB * KIB), ("KiB", KIB)] {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{} {unit}", bytes / size);
        }
    }
    format!("{bytes} bytes")
}

/// The largest CPU number a list may name: bounds what a malformed list can allocate.
const CPU_NUMBER_MAX: usize = 1 << 16;

/// Parses a kernel CPU list (`0-3,8,10-11`); `None` if it is malformed.
pub fn parse_cpu_list(text: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|part| !part.is_empty()) {
        let (first, last) = match part.split_once('-') {
            Some((first, last)) => (first.parse().ok()?, last.parse().ok()?),
            None => {
                let cpu: usize = part.parse().ok()?;
                (cpu, cpu)
            }
        };
        if first > last || last > CPU_NUMBER_MAX {
            return None;
        }
        cpus.extend(first..=last);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Some(cpus)
}

/// Formats CPUs as a kernel CPU list, merging runs: `[0, 1, 2, 5]` → `0-2,5`.
pub fn format_cpu_list(cpus: &[usize]) -> String {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts = Vec::new();
    let mut index = 0;
    while index < sorted.len() {
        let first = sorted[index];
        let mut last = first;
        while index + 1 < sorted.len() && sorted[index + 1] == last + 1 {
            index += 1;
            last = sorted[index];
        }
        parts.push(if first == last {
            first.to_string()
        } else {
            format!("{first}-{last}")
        });
        index += 1;
    }
    parts.join(",")
}

/// Word-wraps `text` into lines of at most `width` characters; a word longer than a line is
/// split. Always at least one (possibly empty) line, so every table cell has a first line.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let mut rest: Vec<char> = word.chars().collect();
        while !rest.is_empty() {
            let line_chars = line.chars().count();
            let needed = if line.is_empty() { 0 } else { line_chars + 1 };
            if needed + rest.len() <= width {
                if !line.is_empty() {
                    line.push(' ');
                }
                line.extend(std::mem::take(&mut rest));
            } else if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            } else {
                // The word alone is wider than a line.
                lines.push(rest.drain(..width).collect());
            }
        }
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bracketed_word_is_the_active_choice() {
        assert_eq!(
            selected_choice("none [mq-deadline] kyber bfq\n"),
            Some("mq-deadline")
        );
        assert_eq!(selected_choice("[none] mq-deadline"), Some("none"));
        assert_eq!(selected_choice("always [madvise] never"), Some("madvise"));
        assert_eq!(selected_choice("4096"), None);
        assert_eq!(selected_choice("broken [ never"), None);
    }

    #[test]
    fn settings_keep_the_offered_choices() {
        let scheduler = parse_setting("none [mq-deadline] kyber\n");
        assert_eq!(scheduler.value, "mq-deadline");
        assert_eq!(scheduler.choices, ["none", "mq-deadline", "kyber"]);
        let plain = parse_setting(" 8192\n");
        assert_eq!(plain.value, "8192");
        assert!(plain.choices.is_empty());
    }

    #[test]
    fn decisions_follow_the_compare_mode() {
        assert_eq!(
            decide("mq-deadline", "mq-deadline", Compare::Equal),
            Ok(true)
        );
        assert_eq!(decide("none", "mq-deadline", Compare::Equal), Ok(false));
        assert_eq!(decide("8192", "4096", Compare::AtLeast), Ok(true));
        assert_eq!(decide("128", "4096", Compare::AtLeast), Ok(false));
        assert_eq!(decide("60", "1", Compare::AtMost), Ok(false));
        assert_eq!(decide("0", "1", Compare::AtMost), Ok(true));
        assert_eq!(decide("unlimited", "unlimited", Compare::AtLeast), Ok(true));
        assert_eq!(decide("8388608", "unlimited", Compare::AtLeast), Ok(false));
        assert_eq!(
            decide("rw,relatime", "noatime", Compare::Contains),
            Ok(false)
        );
        assert_eq!(decide("rw,noatime", "noatime", Compare::Contains), Ok(true));
        assert!(decide("lots", "4096", Compare::AtLeast).is_err());
    }

    #[test]
    fn wanted_values_show_their_bound() {
        assert_eq!(wanted_text("4096", Compare::AtLeast), ">= 4096");
        assert_eq!(wanted_text("5", Compare::AtMost), "<= 5");
        assert_eq!(wanted_text("unlimited", Compare::AtLeast), "unlimited");
        assert_eq!(wanted_text("mq-deadline", Compare::Equal), "mq-deadline");
    }

    #[test]
    fn bytes_read_in_the_largest_exact_unit() {
        assert_eq!(format_bytes(8 << 20), "8 MiB");
        assert_eq!(format_bytes(512 << 10), "512 KiB");
        assert_eq!(format_bytes(1000), "1000 bytes");
        assert_eq!(format_bytes(u64::MAX), "unlimited");
    }

    #[test]
    fn cpu_lists_round_trip() {
        assert_eq!(parse_cpu_list("0-1\n"), Some(vec![0, 1]));
        assert_eq!(parse_cpu_list("0-2,5,7-8"), Some(vec![0, 1, 2, 5, 7, 8]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
        assert_eq!(format_cpu_list(&[5, 0, 1, 2, 7, 8]), "0-2,5,7-8");
        assert_eq!(format_cpu_list(&[3]), "3");
    }

    #[test]
    fn wrapping_breaks_at_words_and_splits_long_ones() {
        assert_eq!(wrap("aaa bbb ccc", 7), ["aaa bbb", "ccc"]);
        assert_eq!(wrap("abcdefghij", 4), ["abcd", "efgh", "ij"]);
        assert_eq!(wrap("", 10), [""]);
        assert_eq!(wrap("one two", 80), ["one two"]);
    }
}
