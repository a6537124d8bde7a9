//! A full disk is an error code, never an abort: the broker runs on a small ext4 filesystem
//! (a loop-mounted image this test creates and removes), with its log on the same filesystem,
//! and produce fills it. Every produce then gets an error, nothing acknowledged is lost, the
//! broker stays up, it accepts writes again once space is freed (without a restart), and a
//! restart finds every acknowledged record. Needs root (mount); CI runs as root.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::Broker;
use rdkafka::producer::{BaseRecord, Producer};

const FS_BYTES: u64 = 48 * 1024 * 1024;
const RECORD_BYTES: usize = 1024;

/// A loop-mounted ext4 filesystem, unmounted and deleted on drop (also when the test fails).
struct SmallFs {
    image: PathBuf,
    mount: PathBuf,
    _dir: tempfile::TempDir,
}

fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl SmallFs {
    fn create() -> Result<SmallFs, String> {
        let dir = tempfile::Builder::new()
            .prefix("tusk-disk-full-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let image = dir.path().join("fs.img");
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).map_err(|e| e.to_string())?;
        let file = std::fs::File::create(&image).map_err(|e| e.to_string())?;
        file.set_len(FS_BYTES).map_err(|e| e.to_string())?;
        drop(file);
        run("mkfs.ext4", &["-q", "-F", image.to_str().unwrap()])?;
        let fs = SmallFs {
            image,
            mount,
            _dir: dir,
        };
        run(
            "mount",
            &[
                "-o",
                "loop",
                fs.image.to_str().unwrap(),
                fs.mount.to_str().unwrap(),
            ],
        )?;
        Ok(fs)
    }

    fn path(&self) -> &Path {
        &self.mount
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        // Lazy unmount: a broker killed a moment ago may still hold a descriptor.
        let _ = run("umount", &["-l", self.mount.to_str().unwrap()]);
        let _ = std::fs::remove_file(&self.image);
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Fills the filesystem with a file of zeros until it is full (written, not sparse).
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 1 << 20];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
}

/// Produces `count` records, each with its own id as value; returns the acknowledgements and
/// how many deliveries failed.
fn produce(
    bootstrap: &str,
    topic: &str,
    first_id: usize,
    count: usize,
) -> (Vec<common::Ack>, usize) {
    let producer = common::producer(
        bootstrap,
        &[("message.timeout.ms", "5000"), ("linger.ms", "1")],
    );
    for id in first_id..first_id + count {
        let mut value = id.to_string().into_bytes();
        value.resize(RECORD_BYTES, b'.');
        common::send(
            &producer,
            BaseRecord::<(), Vec<u8>, usize>::with_opaque_to(topic, id)
                .partition(0)
                .payload(&value),
        );
    }
    let _ = producer.flush(Duration::from_secs(60));
    let context = producer.context();
    (context.acked(), context.failed().len())
}

fn assert_acked_present(bootstrap: &str, topic: &str, acked: &[common::Ack]) {
    let end = acked.iter().map(|a| a.offset).max().map_or(0, |o| o + 1) as usize;
    let consumer = common::consumer(bootstrap);
    let records = common::consume_all(&consumer, topic, 1, end, Duration::from_secs(60));
    let stored: std::collections::HashMap<i64, String> = records
        .iter()
        .map(|r| {
            let v = r.value_str();
            (r.offset, v.trim_end_matches('.').to_string())
        })
        .collect();
    for ack in acked {
        assert_eq!(
            stored.get(&ack.offset),
            Some(&ack.id.to_string()),
            "acknowledged record {} at offset {}",
            ack.id,
            ack.offset
        );
    }
}

#[test]
fn a_full_disk_is_an_error_code_and_writes_resume_when_space_returns() {
    if !is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root: this test must run there"
        );
        eprintln!("skipped: needs root to mount a small filesystem");
        return;
    }
    let fs = SmallFs::create().expect("create and mount a small ext4 filesystem");
    let mut broker = Broker::start_in(Some(fs.path().to_owned()), &[]);
    let bootstrap = broker.bootstrap();
    common::create_topic(&bootstrap, "full", 1);
    let (mut acked, _) = produce(&bootstrap, "full", 0, 2000);
    assert_eq!(
        acked.len(),
        2000,
        "before the disk fills, every record is acknowledged"
    );
    let filler = fs.path().join("filler");
    fill(&filler);
    // The disk is full: produce until deliveries fail (the preallocated tail may take a few).
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut next_id = 2000;
    loop {
        let (more, failed) = produce(&bootstrap, "full", next_id, 2000);
        next_id += 2000;
        acked.extend(more);
        broker.assert_alive();
        if failed > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the disk never filled: {} acknowledged",
            acked.len()
        );
    }
    // The broker is alive, answers metadata, and everything acknowledged is readable.
    assert_acked_present(&bootstrap, "full", &acked);
    // A topic created now cannot get its directory: an error code, not a crash.
    let created = common::try_create_topic(&bootstrap, "late", 1);
    assert!(
        created.is_err(),
        "creating a topic on a full disk: {created:?}"
    );
    // Space returns: writes succeed again without a restart, also to the topic whose
    // partition could not be opened.
    std::fs::remove_file(&filler).unwrap();
    let (more, failed) = produce(&bootstrap, "full", next_id, 500);
    assert_eq!(failed, 0, "produce works again once space returns");
    assert_eq!(more.len(), 500);
    acked.extend(more);
    let (late, failed) = produce(&bootstrap, "late", 0, 100);
    assert_eq!(
        (late.len(), failed),
        (100, 0),
        "the offline partition came back"
    );
    broker.assert_alive();
    // A restart keeps every acknowledged record and finds no corruption.
    broker.terminate();
    broker.restart();
    assert_acked_present(&bootstrap, "full", &acked);
    let logs = broker.logs();
    assert!(!logs.contains("panicked"), "{logs}");
    drop(broker);
}

/// Out of descriptors: connections beyond the limit wait in the backlog (accept fails with
/// EMFILE, logged, retried), a segment roll that cannot open its new file answers produce with
/// an error code, and once connections close, produce and accept work again.
#[test]
fn running_out_of_descriptors_is_an_error_code_and_passes() {
    let mut broker =
        Broker::start_with_open_files(160, &["--segment-bytes", "1048576", "--shards", "1"]);
    let bootstrap = broker.bootstrap();
    common::create_topic(&bootstrap, "fds", 1);
    let producer = common::producer(
        &bootstrap,
        &[("message.timeout.ms", "5000"), ("linger.ms", "1")],
    );
    let mut acked = Vec::new();
    let mut next_id = 0;
    let mut produce_some = |count: usize| {
        for id in next_id..next_id + count {
            let mut value = id.to_string().into_bytes();
            value.resize(RECORD_BYTES, b'.');
            common::send(
                &producer,
                BaseRecord::<(), Vec<u8>, usize>::with_opaque_to("fds", id)
                    .partition(0)
                    .payload(&value),
            );
        }
        next_id += count;
        let _ = producer.flush(Duration::from_secs(30));
        let context = producer.context();
        (context.acked(), context.failed().len())
    };
    let (ok, failed) = produce_some(500);
    assert_eq!((ok.len(), failed), (500, 0));
    // Hold connections until the broker has no descriptor left.
    let mut held = Vec::new();
    for _ in 0..400 {
        if let Ok(s) = std::net::TcpStream::connect(&bootstrap) {
            held.push(s);
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    // Enough data to roll segments several times: the rolls need new files.
    let (_, failed) = produce_some(4000);
    broker.assert_alive();
    assert!(
        failed > 0,
        "with no descriptors left, some produces must fail"
    );
    drop(held);
    std::thread::sleep(Duration::from_millis(500));
    let before = producer.context().failed().len();
    let (ok, failed) = produce_some(500);
    assert_eq!(
        failed, before,
        "produce works again once descriptors are free"
    );
    acked.extend(ok);
    broker.assert_alive();
    let logs = broker.logs();
    assert!(logs.contains("accept failed"), "{logs}");
    broker.terminate();
    broker.restart();
    assert_acked_present(&bootstrap, "fds", &acked);
}
