//! One segment file of a partition: its base offset, sizes, index and O_DIRECT handle, plus
//! opening (with recovery) and closing (truncate, sync, write the index). Runs on: the owning
//! shard. Invariants: `durable_bytes <= size_bytes <= file length`; a closed segment never
//! changes; only the last segment of a partition is active.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::index::SegmentIndex;
use super::recovery::{scan_segment, ScanResult, ScanStop};
use super::{Error, FlushPolicy, LogConfig};
use crate::constants::{
    DIRECT_IO_ALIGNMENT_BYTES, PREALLOCATE_FIRST_BYTES, PREALLOCATE_STEP_BYTES,
};
use crate::protocol::types::{LeaderEpoch, Offset};
use crate::runtime::env::Env;
use crate::runtime::fs::{read_whole, File, OpenOptions};

pub struct Segment {
    pub base_offset: Offset,
    pub file: Rc<dyn File>,
    /// Bytes of whole batches placed in the segment (some may still be in flight).
    pub size_bytes: u64,
    /// Bytes written (and synced, per the flush policy): what reads may see.
    pub durable_bytes: u64,
    /// Offset after the segment's last placed batch.
    pub next_offset: Offset,
    /// Bytes of disk space allocated to the file (preallocated ahead of `size_bytes`).
    pub allocated_bytes: u64,
    pub index: SegmentIndex,
    pub created_ms: u64,
    pub closed: bool,
}

pub fn log_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(format!("{:020}.log", base.0))
}

pub fn index_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(format!("{:020}.index", base.0))
}

/// The idempotent-producer state as of `base`, written when the segment at `base` starts.
pub fn snapshot_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(format!("{:020}.snapshot", base.0))
}

/// Every file of the segment at `base`: its log, index and producer-state snapshot.
pub fn file_paths(dir: &Path, base: Offset) -> [PathBuf; 3] {
    [
        log_path(dir, base),
        index_path(dir, base),
        snapshot_path(dir, base),
    ]
}

/// Base offsets of the segments in `dir`, sorted.
pub async fn list_segments(env: &Env, dir: &Path) -> Result<Vec<Offset>, Error> {
    let mut bases: Vec<Offset> = env
        .fs
        .list_dir(dir)
        .await?
        .iter()
        .filter_map(|name| name.strip_suffix(".log")?.parse::<i64>().ok())
        .map(Offset)
        .collect();
    bases.sort();
    Ok(bases)
}

/// What recovering one segment yielded.
pub struct Recovered {
    pub segment: Segment,
    pub scan: Option<ScanResult>,
}

/// Opens an existing segment. A closed segment with a valid index is trusted up to its file
/// length; any other segment is scanned. The active (last) segment is cut at its first
/// invalid byte: a torn tail of writes that were never acknowledged. A closed segment was
/// synced whole when it closed, so an invalid byte there is damage, not a tear: it is never
/// cut (TigerBeetle's lesson), and the partition stays offline with the position named.
pub async fn open_segment(
    env: &Env,
    dir: &Path,
    base: Offset,
    is_last: bool,
    config: &LogConfig,
    last_epoch: LeaderEpoch,
) -> Result<Recovered, Error> {
    let path = log_path(dir, base);
    let file = env.fs.open(&path, segment_options(false, config)).await?;
    let file_bytes = file.size().await?;
    let created_ms = match file.modified_ms().await? {
        0 => env.wall_ms() as u64,
        ms => ms as u64,
    };
    if !is_last {
        let index = read_whole(env.fs.as_ref(), &index_path(dir, base))
            .await?
            .and_then(|b| SegmentIndex::decode(&b));
        if let Some(index) = index {
            return Ok(Recovered {
                segment: Segment {
                    base_offset: base,
                    file,
                    size_bytes: file_bytes,
                    durable_bytes: file_bytes,
                    allocated_bytes: file_bytes,
                    // Fixed up by the partition: the next segment's base offset.
                    next_offset: base,
                    index,
                    created_ms,
                    closed: true,
                },
                scan: None,
            });
        }
    }
    let scan = scan_segment(
        file.as_ref(),
        file_bytes,
        base,
        // A fixed bound, never the tunable limit: lowering `message_max_bytes` must not make
        // recovery cut batches that were valid when they were written.
        crate::constants::MESSAGE_MAX_BYTES_MAX as usize + 64,
        config.index_interval_bytes,
        last_epoch,
    )
    .await?;
    if scan.stop == ScanStop::Invalid {
        if !is_last {
            return Err(Error::Corrupt {
                path,
                position: scan.valid_bytes,
                reason: "a closed segment holds an invalid batch; it is not cut",
            });
        }
        tracing::warn!(
            segment = %path.display(),
            valid_bytes = scan.valid_bytes,
            file_bytes,
            "torn or corrupt tail: cutting the segment after its last valid batch"
        );
        // Zeroed, so stale bytes after the cut are never read again.
        file.zero_range(scan.valid_bytes, file_bytes - scan.valid_bytes)
            .await?;
        file.fdatasync().await?;
    }
    Ok(Recovered {
        segment: Segment {
            base_offset: base,
            file,
            size_bytes: scan.valid_bytes,
            durable_bytes: scan.valid_bytes,
            allocated_bytes: file_bytes,
            next_offset: scan.next_offset,
            index: scan.index.clone(),
            created_ms,
            closed: !is_last,
        },
        scan: Some(scan),
    })
}

/// Segment files are O_DIRECT; with fdatasync before every ack their writes are synchronous
/// too (O_DSYNC), which makes write + fdatasync one IO. A topic's policy changed later keeps
/// what the file was opened with until the next segment: more durable than asked, never less.
fn segment_options(create: bool, config: &LogConfig) -> OpenOptions {
    OpenOptions::direct(create).with_sync_writes(config.flush == FlushPolicy::Always)
}

/// Creates a new, empty active segment. Its space is allocated by its first write (at least
/// `PREALLOCATE_FIRST_BYTES`), not here: an idle partition holds no space, so 10,000
/// partitions times three replicas cost their files, not 30 GiB of preallocation.
pub async fn create_segment(
    env: &Env,
    dir: &Path,
    base: Offset,
    config: &LogConfig,
) -> Result<Segment, Error> {
    let path = log_path(dir, base);
    let file = env.fs.open(&path, segment_options(true, config)).await?;
    let allocated_bytes = 0;
    env.fs.sync_dir(dir).await?;
    Ok(Segment {
        base_offset: base,
        file,
        size_bytes: 0,
        durable_bytes: 0,
        allocated_bytes,
        next_offset: base,
        index: SegmentIndex::new(),
        created_ms: env.wall_ms() as u64,
        closed: false,
    })
}

/// How far to allocate a segment that holds `allocated_bytes` when a write must reach
/// `written_end`: four times what it has (growing by at least `PREALLOCATE_FIRST_BYTES`, at
/// most one `PREALLOCATE_STEP_BYTES`), never past `segment_bytes` unless the write itself does
/// (a batch larger than a lowered `segment.bytes` still fits the empty segment it starts).
pub fn preallocation_target(allocated_bytes: u64, written_end: u64, segment_bytes: u64) -> u64 {
    let base = allocated_bytes.max(written_end);
    let growth = (3 * base).clamp(PREALLOCATE_FIRST_BYTES, PREALLOCATE_STEP_BYTES);
    let target = (base + growth).min(segment_bytes).max(written_end);
    target.div_ceil(DIRECT_IO_ALIGNMENT_BYTES) * DIRECT_IO_ALIGNMENT_BYTES
}

/// Closes a segment's file: cut the preallocated space and sync. The caller then persists its
/// index (`index_path`). Takes what it needs by value so the caller holds no borrow of the
/// partition across the awaits.
pub async fn close_segment(file: Rc<dyn File>, size_bytes: u64) -> Result<(), Error> {
    file.truncate(size_bytes).await?;
    file.fdatasync().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preallocation_quadruples_up_to_the_step_and_stops_at_the_segment_size() {
        let mib = 1024 * 1024;
        let seg = 1024 * mib;
        assert_eq!(preallocation_target(mib, mib, seg), 4 * mib);
        assert_eq!(
            preallocation_target(4 * mib, 4 * mib + 4096, seg),
            16 * mib + 16384
        );
        assert_eq!(preallocation_target(16 * mib, 16 * mib, seg), 64 * mib);
        assert_eq!(
            preallocation_target(64 * mib, 64 * mib + 1, seg),
            128 * mib + 4096
        );
        assert_eq!(
            preallocation_target(512 * mib, 512 * mib + 1, seg),
            576 * mib + 4096
        );
        assert_eq!(preallocation_target(1000 * mib, 1000 * mib + 1, seg), seg);
        // A write past a lowered segment size still gets its space.
        assert_eq!(preallocation_target(0, 3 * mib, 2 * mib), 3 * mib);
    }
}
