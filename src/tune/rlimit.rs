//! Resource limits: `tune` reads its own process's limits, which come from the operator's
//! shell; the broker's come from its unit (tuning/tusk.service), so the fix is always a line
//! there, never a setrlimit here.

use super::check::{Fix, Observed};
use super::profile::Item;
use super::values::{decide, format_bytes, parse_amount};

pub fn observe_rlimit(item: &Item) -> Result<Observed, String> {
    let (soft, hard) = rlimit_text(&item.key)?;
    // glommio checks the soft memlock limit; tusk lifts its soft open-files limit to the hard
    // one at start, so for nofile the hard limit is what the broker gets.
    let (value, which) = if item.key == "nofile" {
        (hard, "hard")
    } else {
        (soft, "soft")
    };
    let matches = decide(&value, &item.want, item.compare)?;
    let shown = match (item.key.as_str(), parse_amount(&value)) {
        ("memlock", Some(bytes)) => format_bytes(bytes),
        _ => value,
    };
    Ok(Observed {
        current: format!("{shown} ({which}, this shell)"),
        matches,
        fix: Fix::Manual(rlimit_steps(&item.key, &item.want)),
        wanted: None,
    })
}

/// This process's soft and hard limit as text (`unlimited` or a number).
fn rlimit_text(key: &str) -> Result<(String, String), String> {
    let resource = match key {
        "memlock" => libc::RLIMIT_MEMLOCK,
        "nofile" => libc::RLIMIT_NOFILE,
        other => return Err(format!("unknown limit {other}")),
    };
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills a plain struct we own.
    if unsafe { libc::getrlimit(resource, &mut limit) } != 0 {
        return Err(format!(
            "getrlimit({key}) failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    let text = |value: libc::rlim_t| {
        if value == libc::RLIM_INFINITY {
            "unlimited".to_string()
        } else {
            value.to_string()
        }
    };
    Ok((text(limit.rlim_cur), text(limit.rlim_max)))
}

/// The unit line and the PAM limits line that give the broker the limit.
pub fn rlimit_steps(key: &str, want: &str) -> Vec<String> {
    let (directive, systemd_value) = match (key, want) {
        ("memlock", "unlimited") => ("LimitMEMLOCK", "infinity"),
        ("memlock", _) => ("LimitMEMLOCK", want),
        (_, "unlimited") => ("LimitNOFILE", "infinity"),
        _ => ("LimitNOFILE", want),
    };
    vec![
        format!("systemd: {directive}={systemd_value} in the broker's unit (as in tuning/tusk.service)"),
        format!("other launchers: `tusk - {key} {want}` in /etc/security/limits.d/tusk.conf, then log in again"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_set_in_the_unit() {
        let steps = rlimit_steps("memlock", "unlimited");
        assert_eq!(
            steps[0],
            "systemd: LimitMEMLOCK=infinity in the broker's unit (as in tuning/tusk.service)"
        );
        assert!(rlimit_steps("nofile", "1048576")[0].contains("LimitNOFILE=1048576"));
    }
}
