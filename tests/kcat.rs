//! An old, independent client: Debian's kcat (librdkafka 2.0.2). Skipped when
//! kcat is not on PATH; scripts/test.sh installs it, so CI runs these.

mod common;

use std::process::Command;
use std::time::Duration;

use common::Broker;

const KCAT_TIMEOUT: Duration = Duration::from_secs(30);

fn kcat_installed() -> bool {
    Command::new("kcat").arg("-V").output().is_ok()
}

/// Runs kcat (killed after 30 s) and asserts it succeeded.
fn kcat(args: &[&str], stdin: Option<&[u8]>) -> common::CmdOutput {
    let out = common::run_with_timeout(Command::new("kcat").args(args), stdin, KCAT_TIMEOUT);
    assert!(
        out.status.success(),
        "kcat {args:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    out
}

/// Produces `key:value` lines with `kcat -P -K:`.
fn produce_lines(bootstrap: &str, topic: &str, lines: &[String], extra: &[&str]) {
    let input = lines.join("\n") + "\n";
    let mut args = vec!["-P", "-b", bootstrap, "-t", topic, "-K:"];
    args.extend_from_slice(extra);
    kcat(&args, Some(input.as_bytes()));
}

/// Reads the whole topic back as `key:value` lines.
fn consume_lines(bootstrap: &str, topic: &str) -> Vec<String> {
    let out = kcat(
        &[
            "-C",
            "-b",
            bootstrap,
            "-t",
            topic,
            "-q",
            "-e",
            "-o",
            "beginning",
            "-f",
            "%k:%s\\n",
        ],
        None,
    );
    out.stdout.lines().map(str::to_string).collect()
}

#[test]
fn kcat_produces_consumes_and_lists() {
    const TOPIC: &str = "kcat-lines";
    if !kcat_installed() {
        println!("kcat not installed, skipping");
        return;
    }
    let broker = Broker::start(&[]);
    let bootstrap = broker.bootstrap();
    common::create_topic(&bootstrap, TOPIC, 1);

    let lines: Vec<String> = (0..100)
        .map(|i| format!("key-{i}:line {i} written by kcat"))
        .collect();
    produce_lines(&bootstrap, TOPIC, &lines, &[]);
    assert_eq!(
        consume_lines(&bootstrap, TOPIC),
        lines,
        "kcat reads back what kcat wrote"
    );

    // The same records through the current librdkafka.
    let consumer = common::consumer(&bootstrap);
    let records = common::consume_all(&consumer, TOPIC, 1, lines.len(), Duration::from_secs(60));
    assert_eq!(records.len(), lines.len(), "records seen by rdkafka");
    common::assert_offsets_contiguous(0, &records, 0);
    for (record, line) in records.iter().zip(&lines) {
        assert_eq!(
            format!("{}:{}", record.key_str(), record.value_str()),
            *line,
            "record at offset {}",
            record.offset
        );
    }

    let listing = kcat(&["-L", "-b", bootstrap.as_str()], None).stdout;
    assert!(
        listing.contains(&format!("topic \"{TOPIC}\" with 1 partitions")),
        "kcat -L should list {TOPIC}:\n{listing}"
    );
}

#[test]
fn kcat_compressed_round_trip() {
    if !kcat_installed() {
        println!("kcat not installed, skipping");
        return;
    }
    let broker = Broker::start(&[]);
    let bootstrap = broker.bootstrap();
    // zstd matters most here: the rdkafka dev-dependency may be built without it.
    for codec in ["zstd", "gzip", "snappy", "lz4"] {
        let topic = format!("kcat-{codec}");
        common::create_topic(&bootstrap, &topic, 1);
        let lines: Vec<String> = (0..200)
            .map(|i| {
                let value = format!("{codec}-payload-{i};").repeat(1 + i % 5);
                format!("k{}:{value}", i % 13)
            })
            .collect();
        produce_lines(&bootstrap, &topic, &lines, &["-z", codec]);
        assert_eq!(
            consume_lines(&bootstrap, &topic),
            lines,
            "{codec}: kcat reads back what kcat wrote"
        );
    }
}
