//! `tusk tune check` on the machine running the tests: it reports every profile item as ok,
//! differs or unknown (printing the report, so CI logs show it), in a table and as JSON, and
//! `apply --dry-run` plans without writing.

use std::process::Command;

fn tune(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tusk"))
        .arg("tune")
        .args(args)
        .output()
        .expect("run tusk tune");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_reports_every_item() {
    let (ok, table, err) = tune(&["check", "--data-dir", "."]);
    println!("{table}");
    assert!(ok, "tune check failed: {err}");
    let (ok, json, err) = tune(&["check", "--data-dir", ".", "--json"]);
    assert!(ok, "tune check --json failed: {err}");
    let items: serde_json::Value = serde_json::from_str(&json).expect("JSON report");
    let items = items.as_array().expect("an array of items");
    assert!(
        items.len() >= 10,
        "the HDD profile has at least 10 items: {json}"
    );
    let mut counts = std::collections::HashMap::new();
    for item in items {
        let status = item["status"].as_str().expect("a status");
        assert!(["ok", "differs", "unknown"].contains(&status), "{item}");
        for key in ["item", "current", "wanted", "why"] {
            assert!(item[key].is_string(), "{key} in {item}");
        }
        assert!(
            table.contains(item["item"].as_str().unwrap()),
            "the table lists {item}"
        );
        *counts.entry(status).or_insert(0) += 1;
    }
    let summary = format!(
        "{} ok, {} differ, {} unknown",
        counts.get("ok").unwrap_or(&0),
        counts.get("differs").unwrap_or(&0),
        counts.get("unknown").unwrap_or(&0)
    );
    assert!(table.contains(&summary), "{summary} in\n{table}");
    for name in [
        "io-scheduler",
        "swappiness",
        "transparent-hugepages",
        "open-files",
    ] {
        assert!(items.iter().any(|i| i["item"] == name), "{name} is checked");
    }
}

#[test]
fn apply_dry_run_plans_without_writing() {
    let before = std::fs::read_to_string("/proc/sys/vm/swappiness").ok();
    let (ok, out, err) = tune(&["apply", "--dry-run", "--data-dir", "."]);
    assert!(ok, "apply --dry-run failed: {err}");
    assert!(
        !out.contains("\nwrote "),
        "a dry run writes nothing:\n{out}"
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/vm/swappiness").ok(),
        before
    );
}

#[test]
fn a_bad_profile_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(&path, "[[item]]\nname = 1\n").unwrap();
    let (ok, _, err) = tune(&["check", "--profile", path.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("p.toml"), "{err}");
}
