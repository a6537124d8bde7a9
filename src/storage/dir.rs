//! Partition directory ownership: each partition directory names the topic id it belongs to
//! in a `partition.metadata` marker, so a directory left by an older topic of the same name is
//! never taken for the new one's. Runs on: the shard that opens the partition (and the start of
//! an offsets partition). Invariants: the broker never deletes a partition directory on its
//! own initiative: one that belongs to another topic id is moved aside for an operator; a
//! marker is written whole or not at all (temp file, fsync, rename, directory fsync); a marker
//! that cannot be read is an error for that partition only.

use std::path::{Path, PathBuf};

use crate::protocol::types::TopicId;
use crate::runtime::env::Env;
use crate::runtime::fs::{read_whole, write_atomic};

/// Name of the file in each partition directory naming the topic id it belongs to.
pub const PARTITION_MARKER: &str = "partition.metadata";

/// Makes `dir` belong to the topic with `topic_id`: a directory of another topic id is moved
/// aside to `<dir>.orphaned-<ms>`; an unreadable marker (empty, torn, missing beside data)
/// is an error for this partition, never taken for a mismatch.
pub async fn claim_partition_dir(env: &Env, dir: &Path, topic_id: TopicId) -> Result<(), String> {
    let marker = dir.join(PARTITION_MARKER);
    let hex = topic_id.hex();
    match read_whole(env.fs.as_ref(), &marker).await {
        Ok(Some(existing)) => match parse_marker(&existing) {
            Some(found) if found == hex => return Ok(()),
            Some(found) => move_aside(env, dir, &found).await?,
            None => {
                return Err(format!(
                    "{}: unreadable ({} bytes, not a topic id); this partition stays offline \
                     until an operator repairs or removes the directory",
                    marker.display(),
                    existing.len()
                ))
            }
        },
        Ok(None) => {
            if dir_has_entries(env, dir).await? {
                return Err(format!(
                    "{}: missing beside existing files; this partition stays offline until an \
                     operator repairs or removes the directory",
                    marker.display()
                ));
            }
        }
        Err(e) => return Err(e.to_string()),
    }
    env.fs
        .create_dir_all(dir)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(parent) = dir.parent() {
        env.fs.sync_dir(parent).await.map_err(|e| e.to_string())?;
    }
    write_atomic(env.fs.as_ref(), &marker, format!("{hex}\n").into_bytes())
        .await
        .map_err(|e| e.to_string())
}

/// The topic id a marker names: 32 hex digits and a newline.
fn parse_marker(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?.trim();
    (text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit())).then(|| text.to_string())
}

/// True if `dir` holds anything but a marker's temp file (a crash while claiming it).
async fn dir_has_entries(env: &Env, dir: &Path) -> Result<bool, String> {
    let tmp = format!("{PARTITION_MARKER}.tmp");
    match env.fs.list_dir(dir).await {
        Ok(names) => Ok(names.iter().any(|n| *n != tmp)),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e.to_string()),
    }
}

/// Moves a directory that belongs to another topic out of the way, keeping its data.
async fn move_aside(env: &Env, dir: &Path, found: &str) -> Result<(), String> {
    let mut aside = dir.as_os_str().to_owned();
    aside.push(format!(".orphaned-{}", env.wall_ms()));
    let aside = PathBuf::from(aside);
    env.fs
        .rename(dir, &aside)
        .await
        .map_err(|e| format!("move {} aside: {e}", dir.display()))?;
    if let Some(parent) = dir.parent() {
        env.fs.sync_dir(parent).await.map_err(|e| e.to_string())?;
    }
    tracing::warn!(
        dir = %dir.display(),
        to = %aside.display(),
        topic_id = found,
        "partition directory belongs to an older topic; moved aside (delete it once you no \
         longer need it)"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::fs::Fs;
    use crate::testing::{FaultFs, ManualClock};

    #[test]
    fn claim_moves_a_stale_directory_aside_and_refuses_unreadable_markers() {
        let fs = FaultFs::new();
        let env = crate::testing::env(&fs, &ManualClock::new(1000), 1);
        let root = Path::new("/data");
        let p = root.join("t-0");
        let log = p.join("00000000000000000000.log");
        futures_lite::future::block_on(async {
            fs.create_dir_all(root).await.unwrap();
            claim_partition_dir(&env, &p, TopicId([1; 16]))
                .await
                .unwrap();
            fs.put(&log, b"old");
            claim_partition_dir(&env, &p, TopicId([1; 16]))
                .await
                .unwrap();
            assert!(fs.contents(&log).is_some());
            claim_partition_dir(&env, &p, TopicId([2; 16]))
                .await
                .unwrap();
            assert!(fs.contents(&log).is_none());
            let aside = root.join("t-0.orphaned-1000");
            assert_eq!(
                fs.contents(&aside.join("00000000000000000000.log"))
                    .as_deref(),
                Some(&b"old"[..]),
                "the old data is kept"
            );
            // A torn (empty) marker is an error, and nothing is moved or removed.
            fs.put(&p.join(PARTITION_MARKER), b"");
            fs.put(&log, b"new");
            let e = claim_partition_dir(&env, &p, TopicId([2; 16]))
                .await
                .unwrap_err();
            assert!(e.contains("unreadable"), "{e}");
            assert!(fs.contents(&log).is_some());
            // A missing marker beside data is an error too.
            fs.remove_file(&p.join(PARTITION_MARKER)).await.unwrap();
            assert!(claim_partition_dir(&env, &p, TopicId([2; 16]))
                .await
                .is_err());
            // A crash while claiming an empty directory leaves only the temp file.
            let q = root.join("u-0");
            fs.create_dir_all(&q).await.unwrap();
            fs.put(&q.join(format!("{PARTITION_MARKER}.tmp")), b"0");
            claim_partition_dir(&env, &q, TopicId([3; 16]))
                .await
                .unwrap();
        });
    }

    /// A claim cut short at any step (its fsync, rename or directory fsync fails), followed
    /// by a crash, leaves a marker that is whole or absent: the next claim succeeds and never
    /// sees a torn marker (which would leave the partition offline).
    #[test]
    fn a_marker_is_whole_or_absent_after_any_crash() {
        use crate::testing::{Fault, Op};
        for op in [Op::Fdatasync, Op::Rename, Op::SyncDir] {
            for seed in 0..32 {
                let fs = FaultFs::new();
                let env = crate::testing::env(&fs, &ManualClock::new(0), seed);
                let p = Path::new("/data/t-0");
                futures_lite::future::block_on(async {
                    fs.create_dir_all(Path::new("/data")).await.unwrap();
                    fs.sync_dir(Path::new("/data")).await.unwrap();
                    fs.inject(Fault {
                        op,
                        path: "t-0".into(),
                        errno: libc::EIO,
                        times: 1,
                    });
                    let _ = claim_partition_dir(&env, p, TopicId([7; 16])).await;
                });
                let after = fs.crash(seed);
                let env = crate::testing::env(&after, &ManualClock::new(0), seed);
                futures_lite::future::block_on(async {
                    claim_partition_dir(&env, p, TopicId([7; 16]))
                        .await
                        .unwrap_or_else(|e| panic!("{op:?} seed {seed}: {e}"));
                });
            }
        }
    }
}
