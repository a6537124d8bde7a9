//! The output of `tune check`: a context header, a table whose long cells wrap inside their
//! column (on terminals too narrow for a readable `why` column, each `why` goes under its
//! row), a summary line; or a JSON array for scripts. Writers take any `io::Write`, so the
//! layout is tested without a terminal.

use std::io::{self, Write};

use serde::Serialize;

use super::check::{Finding, Status};
use super::host::Host;
use super::values::wrap;

/// Counts of each status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    pub ok: usize,
    pub differ: usize,
    pub unknown: usize,
}

impl Summary {
    pub fn of(findings: &[Finding]) -> Summary {
        let mut summary = Summary::default();
        for finding in findings {
            match finding.status {
                Status::Ok => summary.ok += 1,
                Status::Differs => summary.differ += 1,
                Status::Unknown => summary.unknown += 1,
            }
        }
        summary
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ok, {} differ, {} unknown",
            self.ok, self.differ, self.unknown
        )
    }
}

/// What was examined: which directory, filesystem and disk the items refer to.
pub fn write_context(out: &mut impl Write, profile_name: &str, host: &Host) -> io::Result<()> {
    let location = &host.data_dir;
    let examined = match &location.examined {
        Ok(dir) if location.asked_exists => dir.display().to_string(),
        Ok(dir) => format!(
            "{} ({} does not exist yet)",
            dir.display(),
            location.asked.display()
        ),
        Err(reason) => reason.clone(),
    };
    writeln!(out, "profile {profile_name}; data dir {examined}")?;
    let filesystem = match &location.mount {
        Ok(mount) => format!(
            "{} from {} mounted at {}",
            mount.fs_type,
            mount.source,
            mount.mount_point.display()
        ),
        Err(reason) => reason.clone(),
    };
    let disk = match &location.disk {
        Ok(disk) => match disk.rotational {
            Some(true) => format!("disk {} (rotational)", disk.name),
            Some(false) => format!("disk {} (not rotational)", disk.name),
            None => format!("disk {}", disk.name),
        },
        Err(reason) => format!("disk unknown: {reason}"),
    };
    writeln!(out, "filesystem {filesystem}; {disk}")?;
    writeln!(out)
}

const HEADERS: [&str; 5] = ["item", "status", "current", "wanted", "why"];
const COLUMN_GAP: &str = "  ";
/// Caps that leave room for `why`; longer cells wrap inside their column.
const CURRENT_WIDTH_MAX: usize = 30;
const WANTED_WIDTH_MAX: usize = 24;
/// With `why` under each row, `current` may take more of the line.
const CURRENT_WIDTH_MAX_WHY_BELOW: usize = 44;
/// A narrower `why` column reads as a ragged strip: it goes under each row instead.
const WHY_COLUMN_WIDTH_MIN: usize = 50;
const WHY_BELOW_WIDTH_MIN: usize = 40;
const WHY_BELOW_INDENT: &str = "    ";

/// The findings as a table about `total_width` characters wide: five columns when `why`
/// gets a readable width, else four with each `why` wrapped under its row.
pub fn write_table(
    out: &mut impl Write,
    findings: &[Finding],
    total_width: usize,
) -> io::Result<()> {
    let rows: Vec<[&str; 5]> = findings
        .iter()
        .map(|f| {
            [
                f.item.as_str(),
                f.status.as_str(),
                f.current.as_str(),
                f.wanted.as_str(),
                f.why.as_str(),
            ]
        })
        .collect();
    let widths = column_widths(&rows, total_width, CURRENT_WIDTH_MAX);
    if widths[4] >= WHY_COLUMN_WIDTH_MIN {
        write_row(out, &HEADERS, &widths)?;
        for row in &rows {
            write_row(out, row, &widths)?;
        }
        return Ok(());
    }
    let widths = column_widths(&rows, total_width, CURRENT_WIDTH_MAX_WHY_BELOW);
    let why_width = total_width
        .saturating_sub(WHY_BELOW_INDENT.len())
        .max(WHY_BELOW_WIDTH_MIN);
    write_row(out, &HEADERS[..4], &widths[..4])?;
    writeln!(out, "{WHY_BELOW_INDENT}{}", HEADERS[4])?;
    for row in &rows {
        write_row(out, &row[..4], &widths[..4])?;
        for line in wrap(row[4], why_width) {
            writeln!(out, "{WHY_BELOW_INDENT}{line}")?;
        }
    }
    Ok(())
}

/// Widths of the five columns; `why` gets what is left of `total_width` (possibly 0).
fn column_widths(rows: &[[&str; 5]], total_width: usize, current_max: usize) -> [usize; 5] {
    let widest = |column: usize| {
        rows.iter()
            .map(|row| row[column].chars().count())
            .chain([HEADERS[column].len()])
            .max()
            .unwrap_or(0)
    };
    let item = widest(0);
    let status = widest(1);
    let current = widest(2).min(current_max);
    let wanted = widest(3).min(WANTED_WIDTH_MAX);
    let used = item + status + current + wanted + 4 * COLUMN_GAP.len();
    [
        item,
        status,
        current,
        wanted,
        total_width.saturating_sub(used),
    ]
}

/// One table row; each cell wraps within its column and the row is as tall as its tallest cell.
fn write_row(out: &mut impl Write, cells: &[&str], widths: &[usize]) -> io::Result<()> {
    let wrapped: Vec<Vec<String>> = cells
        .iter()
        .zip(widths)
        .map(|(cell, &width)| wrap(cell, width))
        .collect();
    let height = wrapped.iter().map(Vec::len).max().unwrap_or(1);
    for line in 0..height {
        let mut text = String::new();
        for (column, (lines, &width)) in wrapped.iter().zip(widths).enumerate() {
            if column > 0 {
                text.push_str(COLUMN_GAP);
            }
            let cell = lines.get(line).map_or("", String::as_str);
            text.push_str(&format!("{cell:<width$}"));
        }
        writeln!(out, "{}", text.trim_end())?;
    }
    Ok(())
}

/// One element of the `--json` array.
#[derive(Serialize)]
struct FindingJson<'a> {
    item: &'a str,
    status: &'a str,
    current: &'a str,
    wanted: &'a str,
    why: &'a str,
}

pub fn write_json(out: &mut impl Write, findings: &[Finding]) -> io::Result<()> {
    let rows: Vec<FindingJson<'_>> = findings
        .iter()
        .map(|f| FindingJson {
            item: &f.item,
            status: f.status.as_str(),
            current: &f.current,
            wanted: &f.wanted,
            why: &f.why,
        })
        .collect();
    serde_json::to_writer_pretty(&mut *out, &rows)?;
    writeln!(out)
}

/// The terminal's width, or 120 columns when stdout is not a terminal (a file, a pipe).
pub fn terminal_width() -> usize {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills the winsize we pass; it fails harmlessly on a non-terminal.
    let rc = unsafe {
        libc::ioctl(
            libc::STDOUT_FILENO,
            libc::TIOCGWINSZ,
            &mut size as *mut libc::winsize,
        )
    };
    if rc == 0 && size.ws_col >= 40 {
        usize::from(size.ws_col)
    } else {
        120
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tune::check::Fix;

    fn finding(item: &str, status: Status, current: &str, why: &str) -> Finding {
        Finding {
            item: item.to_string(),
            status,
            current: current.to_string(),
            wanted: "mq-deadline".to_string(),
            why: why.to_string(),
            fix: Fix::Nothing,
        }
    }

    fn rendered(write: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) -> String {
        let mut out = Vec::new();
        if let Err(e) = write(&mut out) {
            panic!("writing to memory failed: {e}");
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn the_summary_counts_each_status() {
        let findings = [
            finding("a", Status::Ok, "x", "w"),
            finding("b", Status::Differs, "x", "w"),
            finding("c", Status::Differs, "x", "w"),
            finding("d", Status::Unknown, "x", "w"),
        ];
        assert_eq!(
            Summary::of(&findings).to_string(),
            "1 ok, 2 differ, 1 unknown"
        );
    }

    #[test]
    fn wide_terminals_get_a_why_column() {
        let findings = [finding(
            "io-scheduler",
            Status::Differs,
            "none",
            "one two three four five six",
        )];
        // item 12, status 7, current 7, wanted 11, four gaps: 45; why gets 50.
        let table = rendered(|out| write_table(out, &findings, 95));
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "item          status   current  wanted       why");
        assert_eq!(
            lines[1],
            "io-scheduler  differs  none     mq-deadline  one two three four five six"
        );
        assert_eq!(lines.len(), 2);
        let long_why = "word ".repeat(20);
        let wrapped =
            rendered(|out| write_table(out, &[finding("x", Status::Ok, "y", &long_why)], 95));
        let rows: Vec<&str> = wrapped.lines().collect();
        assert_eq!(rows.len(), 3, "{wrapped}");
        // A continuation line leaves the other columns blank.
        assert!(rows[2].starts_with("      "), "{wrapped}");
        assert!(rows[2].ends_with("word"), "{wrapped}");
    }

    #[test]
    fn narrow_terminals_get_why_under_each_row() {
        let findings = [finding(
            "io-scheduler",
            Status::Differs,
            "none",
            "one two three four five six",
        )];
        let table = rendered(|out| write_table(out, &findings, 60));
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines,
            [
                "item          status   current  wanted",
                "    why",
                "io-scheduler  differs  none     mq-deadline",
                "    one two three four five six",
            ]
        );
    }

    #[test]
    fn json_has_the_five_fields() {
        let findings = [finding("io-scheduler", Status::Ok, "mq-deadline", "w")];
        let text = rendered(|out| write_json(out, &findings));
        let parsed: serde_json::Value = match serde_json::from_str(&text) {
            Ok(value) => value,
            Err(e) => panic!("{e}: {text}"),
        };
        assert_eq!(
            parsed,
            serde_json::json!([{
                "item": "io-scheduler",
                "status": "ok",
                "current": "mq-deadline",
                "wanted": "mq-deadline",
                "why": "w"
            }])
        );
    }
}
