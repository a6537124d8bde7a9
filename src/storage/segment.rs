//! One segment file of a partition: its base offset, sizes, index and O_DIRECT handle, plus
//! opening (with recovery) and closing (truncate, sync, write the index). Runs on: the owning
//! shard. Invariants: `durable_bytes <= size_bytes <= file length`; a closed segment never
//! changes; only the last segment of a partition is active.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::index::SegmentIndex;
use super::recovery::{scan_segment, ScanResult, ScanStop};
use super::{Error, LogConfig};
use crate::constants::{
    DIRECT_IO_ALIGNMENT_BYTES, PREALLOCATE_FIRST_BYTES, PREALLOCATE_STEP_BYTES,
};
use crate::protocol::types::{LeaderEpoch, Offset};
use crate::runtime::io::LogFile;

pub struct Segment {
    pub base_offset: Offset,
    pub file: Rc<LogFile>,
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
    /// An ordinary (page-cache) read-only descriptor of the file, opened on the first
    /// zero-copy fetch; in-flight splices hold their own reference.
    pub read_fd: std::cell::OnceCell<std::sync::Arc<std::fs::File>>,
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

/// Writes and fsyncs a file (index, snapshot) beside the segments.
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let write = || -> std::io::Result<()> {
        let mut f = File::create(path)?;
        f.write_all(bytes)?;
        f.sync_all()
    };
    write().map_err(|e| Error::Fs {
        op: "write",
        path: path.to_owned(),
        source: e,
    })
}

/// Base offsets of the segments in `dir`, sorted.
pub fn list_segments(dir: &Path) -> Result<Vec<Offset>, Error> {
    let fs_err = |op, source| Error::Fs {
        op,
        path: dir.to_owned(),
        source,
    };
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| fs_err("read_dir", e))? {
        let name = entry.map_err(|e| fs_err("read_dir", e))?.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".log") {
            if let Ok(base) = stem.parse::<i64>() {
                bases.push(Offset(base));
            }
        }
    }
    bases.sort();
    Ok(bases)
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What recovering one segment yielded.
pub struct Recovered {
    pub segment: Segment,
    pub scan: Option<ScanResult>,
}

/// Opens an existing segment. A closed segment with a valid index is trusted up to its file
/// length; any other segment is scanned and cut at its first invalid byte.
pub async fn open_segment(
    dir: &Path,
    base: Offset,
    is_last: bool,
    config: &LogConfig,
    last_epoch: LeaderEpoch,
) -> Result<Recovered, Error> {
    let path = log_path(dir, base);
    let fs_err = |op, source| Error::Fs {
        op,
        path: path.clone(),
        source,
    };
    let std_file = File::open(&path).map_err(|e| fs_err("open", e))?;
    let meta = std_file.metadata().map_err(|e| fs_err("stat", e))?;
    let file_bytes = meta.len();
    let created_ms = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .unwrap_or_else(now_ms);
    if !is_last {
        if let Some(index) = fs::read(index_path(dir, base))
            .ok()
            .and_then(|b| SegmentIndex::decode(&b))
        {
            let file = Rc::new(LogFile::open(&path, false).await?);
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
                    read_fd: Default::default(),
                },
                scan: None,
            });
        }
    }
    let scan = scan_segment(
        &std_file,
        file_bytes,
        base,
        // A fixed bound, never the tunable limit: lowering `message_max_bytes` must not make
        // recovery cut batches that were valid when they were written.
        crate::constants::MESSAGE_MAX_BYTES_MAX as usize + 64,
        config.index_interval_bytes,
        last_epoch,
    )
    .map_err(|e| fs_err("scan", e))?;
    if scan.stop == ScanStop::Invalid {
        tracing::warn!(
            segment = %path.display(),
            valid_bytes = scan.valid_bytes,
            file_bytes,
            "torn or corrupt tail: cutting the segment after its last valid batch"
        );
        zero_after(&path, scan.valid_bytes, file_bytes)?;
    }
    drop(std_file);
    let file = Rc::new(LogFile::open(&path, false).await?);
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
            read_fd: Default::default(),
        },
        scan: Some(scan),
    })
}

/// Zeroes the file from `from` to its end so stale bytes after a cut are never read again.
fn zero_after(path: &Path, from: u64, file_bytes: u64) -> Result<(), Error> {
    let f = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| Error::Fs {
            op: "open",
            path: path.to_owned(),
            source: e,
        })?;
    // FALLOC_FL_ZERO_RANGE turns the range into unwritten extents (a metadata change, fast on
    // any disk); filesystems without it get written zeros.
    // SAFETY: fallocate on a descriptor we own, with a range inside the file.
    let zeroed = from >= file_bytes
        || unsafe {
            libc::fallocate(
                std::os::unix::io::AsRawFd::as_raw_fd(&f),
                libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
                from as libc::off_t,
                (file_bytes - from) as libc::off_t,
            )
        } == 0;
    let mut pos = if zeroed { file_bytes } else { from };
    let zeros = vec![0u8; 1024 * 1024];
    while pos < file_bytes {
        let n = zeros.len().min((file_bytes - pos) as usize);
        f.write_all_at(&zeros[..n], pos).map_err(|e| Error::Fs {
            op: "zero tail",
            path: path.to_owned(),
            source: e,
        })?;
        pos += n as u64;
    }
    f.sync_data().map_err(|e| Error::Fs {
        op: "fdatasync",
        path: path.to_owned(),
        source: e,
    })
}

/// Creates a new, preallocated active segment.
pub async fn create_segment(
    dir: &Path,
    base: Offset,
    config: &LogConfig,
) -> Result<Segment, Error> {
    let path = log_path(dir, base);
    let file = Rc::new(LogFile::open(&path, true).await?);
    let allocated_bytes = PREALLOCATE_FIRST_BYTES.min(config.segment_bytes);
    file.preallocate(allocated_bytes).await?;
    sync_dir(dir)?;
    Ok(Segment {
        base_offset: base,
        file,
        size_bytes: 0,
        durable_bytes: 0,
        allocated_bytes,
        next_offset: base,
        index: SegmentIndex::new(),
        created_ms: now_ms(),
        closed: false,
        read_fd: Default::default(),
    })
}

/// How far to allocate a segment that holds `allocated_bytes` when a write must reach
/// `written_end`: double what it has (at least `PREALLOCATE_FIRST_BYTES`, at most one
/// `PREALLOCATE_STEP_BYTES` more), never past `segment_bytes` unless the write itself does (a
/// batch larger than a lowered `segment.bytes` still fits the empty segment it starts).
pub fn preallocation_target(allocated_bytes: u64, written_end: u64, segment_bytes: u64) -> u64 {
    let base = allocated_bytes.max(written_end);
    let growth = base.clamp(PREALLOCATE_FIRST_BYTES, PREALLOCATE_STEP_BYTES);
    let target = (base + growth).min(segment_bytes).max(written_end);
    target.div_ceil(DIRECT_IO_ALIGNMENT_BYTES) * DIRECT_IO_ALIGNMENT_BYTES
}

/// Closes a segment's file: cut the preallocated space and sync. The caller then persists its
/// index (`index_path`). Takes what it needs by value so the caller holds no borrow of the
/// partition across the awaits.
pub async fn close_segment(file: Rc<LogFile>, size_bytes: u64) -> Result<(), Error> {
    file.truncate(size_bytes).await?;
    file.sync().await?;
    Ok(())
}

pub fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::Fs {
            op: "fsync dir",
            path: dir.to_owned(),
            source: e,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preallocation_doubles_up_to_the_step_and_stops_at_the_segment_size() {
        let mib = 1024 * 1024;
        let seg = 1024 * mib;
        assert_eq!(
            preallocation_target(PREALLOCATE_FIRST_BYTES, PREALLOCATE_FIRST_BYTES + 1, seg),
            2 * PREALLOCATE_FIRST_BYTES + 4096
        );
        assert_eq!(preallocation_target(mib, mib + 4096, seg), 2 * mib + 8192);
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
