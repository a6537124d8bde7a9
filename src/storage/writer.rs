//! The group-commit writer of one partition, plus the interval flusher and retention. Runs on:
//! the owning shard, as one task per partition while appends are pending. Invariants: per
//! partition at most one write and one fdatasync in flight (a job's sync overlaps the next
//! job's write), and jobs complete in order; a write covers whole aligned blocks from the
//! aligned start of the unflushed tail, so the last partial block is rewritten with identical
//! leading bytes (a torn rewrite leaves each sector either old or new, both holding the same
//! acknowledged bytes); the high watermark moves only after the write (and fdatasync under
//! `flush = always`) succeeded; a failed write or sync fails the partition and is never
//! retried.

use std::rc::Rc;

use super::partition::{Partition, PartitionHandle};
use super::segment::{self, now_ms};
use super::FlushPolicy;
use crate::constants::DIRECT_IO_ALIGNMENT_BYTES;
use crate::metrics::ProduceStage;
use crate::protocol::types::Offset;
use crate::runtime::io::LogFile;

/// A produce waiting for a write, and when it was appended (for the ack-stage metric).
type Done = (
    futures_channel::oneshot::Sender<Result<(), String>>,
    std::time::Instant,
);

struct WriteJob {
    file: Rc<LogFile>,
    pos: u64,
    /// Taken by the write.
    data: Option<crate::runtime::io::AlignedWrite>,
    new_size_bytes: u64,
    new_high_watermark: Offset,
    dones: Vec<Done>,
    sync: bool,
    /// Allocate the file up to this size before writing.
    extend_to: Option<u64>,
    /// The `written` stage once this write succeeds.
    mark_after: Option<super::partition::WrittenMark>,
}

enum Step {
    Idle,
    /// Nothing to write, but a sync is running: wait for it, complete its job.
    Wait,
    Roll,
    Write(Box<WriteJob>),
}

/// Milliseconds since the epoch as i64.
pub fn now_ms_i64() -> i64 {
    now_ms() as i64
}

/// Drains the partition's pending appends until none are left. A job's fdatasync runs while
/// the next job's write goes out (the two overlap on the device); jobs still complete strictly
/// in order, each only after its own sync, so the high watermark never passes an unsynced byte.
/// The next write may rewrite the last partial block under the running sync: its leading bytes
/// are identical, so either version the sync persists holds the acknowledged bytes.
pub(super) async fn run(part: PartitionHandle) {
    let mut syncing: Option<Syncing> = None;
    loop {
        let step = part.borrow_mut().next_step(syncing.is_some());
        match step {
            Step::Idle => return,
            Step::Wait => {
                let (task, job) = syncing.take().expect("Wait only while a sync runs");
                finish_sync(&part, task, job).await;
            }
            Step::Roll => {
                if let Some((task, job)) = syncing.take() {
                    finish_sync(&part, task, job).await;
                    // A failed sync fails the partition; next_step then ends the writer.
                    continue;
                }
                if let Err(e) = roll(&part).await {
                    if part.borrow().failed.is_some() {
                        // Closed (its topic deleted) while rolling: stop; nothing to fail.
                        part.borrow_mut().writer_active = false;
                        return;
                    }
                    if e.is_exhaustion() {
                        // No space or descriptors for the new segment: the appends waiting for
                        // it are taken back; the next produce tries the roll again.
                        part.borrow_mut().rewind_to_written(e.to_string());
                        continue;
                    }
                    part.borrow_mut().fail(e.to_string());
                    part.borrow_mut().writer_active = false;
                    return;
                }
            }
            Step::Write(job) => {
                let mut job = *job;
                let result = write_job(&mut job).await;
                if result.is_ok() {
                    let mark = job.mark_after.take().expect("a write job carries its mark");
                    part.borrow_mut().on_written(mark);
                }
                if let Some((task, previous)) = syncing.take() {
                    finish_sync(&part, task, previous).await;
                }
                let failed = part.borrow().failed.clone();
                match (result, failed) {
                    (_, Some(why)) => part.borrow_mut().complete(job, Err(why)),
                    // A full disk (or no descriptors) is transient: nothing of this write or
                    // after it is acknowledged, the log returns to what was written, and the
                    // partition keeps serving. Only an IO error fails it.
                    (Err(e), None) if e.is_exhaustion() => {
                        for (done, _) in job.dones {
                            let _ = done.send(Err(e.to_string()));
                        }
                        part.borrow_mut().rewind_to_written(e.to_string());
                    }
                    (Err(e), None) => part.borrow_mut().complete(job, Err(e.to_string())),
                    (Ok(()), None) if job.sync => {
                        let file = job.file.clone();
                        let task = crate::runtime::io::spawn_joinable(async move {
                            let started = std::time::Instant::now();
                            let result = file.sync().await;
                            let took = started.elapsed();
                            crate::metrics::with(|m| {
                                m.produce_stage(ProduceStage::Fdatasync, took)
                            });
                            result.map_err(|e| e.to_string())
                        });
                        syncing = Some((task, job));
                    }
                    (Ok(()), None) => part.borrow_mut().complete(job, Ok(())),
                }
            }
        }
    }
}

/// A job whose data is written, and its running fdatasync.
type Syncing = (crate::runtime::io::Task<Result<(), String>>, WriteJob);

/// Preallocates if the job asks, then writes its data.
async fn write_job(job: &mut WriteJob) -> Result<(), super::Error> {
    if let Some(len) = job.extend_to {
        job.file.preallocate(len).await?;
    }
    let data = job.data.take().expect("a write job carries its data once");
    let started = std::time::Instant::now();
    job.file.write_prepared(job.pos, data).await?;
    let took = started.elapsed();
    crate::metrics::with(|m| m.produce_stage(ProduceStage::DiskWrite, took));
    Ok(())
}

async fn finish_sync(
    part: &PartitionHandle,
    task: crate::runtime::io::Task<Result<(), String>>,
    job: WriteJob,
) {
    let result = task.join().await;
    part.borrow_mut().complete(job, result);
}

impl Partition {
    /// The writer's next step; `syncing`: a written job's sync is still running.
    fn next_step(&mut self, syncing: bool) -> Step {
        if self.failed.is_some() || self.pending.is_empty() {
            if syncing {
                return Step::Wait;
            }
            self.writer_active = false;
            return Step::Idle;
        }
        let segment_bytes = self.config.segment_bytes;
        let segment_ms = self.config.segment_ms;
        let interval = self.config.index_interval_bytes;
        let active = self
            .segments
            .values_mut()
            .next_back()
            .expect("active segment");
        let first = self.pending.front().expect("pending");
        let first_len = first.bytes.len() as u64;
        let first_offset = first.header.base_offset;
        let too_old = now_ms().saturating_sub(active.created_ms) > segment_ms;
        if active.size_bytes > 0
            && (active.size_bytes + first_len > segment_bytes
                || too_old
                || !fits_relative(first.header.last_offset(), active.base_offset))
        {
            return Step::Roll;
        }
        let mut dones = Vec::new();
        let mut placed_bytes: Vec<bytes::Bytes> = Vec::new();
        let placed_at = std::time::Instant::now();
        let mut last = active.next_offset;
        let mut placed = 0usize;
        while let Some(next) = self.pending.front() {
            if placed > 0 && !self.config.group_commit {
                break;
            }
            let len = next.bytes.len() as u64;
            // An empty segment always takes its first batch: `segment.bytes` may have been
            // lowered below a batch that was already pending (that once stopped the broker
            // on the assertion below).
            let full = active.size_bytes > 0 && active.size_bytes + len > segment_bytes;
            if full || !fits_relative(next.header.last_offset(), active.base_offset) {
                break;
            }
            let p = self.pending.pop_front().expect("pending");
            let relative = (p.header.base_offset.0 - active.base_offset.0) as u32;
            active.index.on_batch(
                relative,
                active.size_bytes as u32,
                len,
                p.header.max_timestamp_ms,
                interval,
            );
            placed_bytes.push(p.bytes);
            active.size_bytes += len;
            last = p.header.last_offset().next();
            active.next_offset = last;
            crate::metrics::with(|m| {
                m.produce_stage(ProduceStage::QueueWait, placed_at - p.appended_at)
            });
            if let Some(done) = p.done {
                dones.push((done, p.appended_at));
            }
            placed += 1;
        }
        assert!(
            placed > 0,
            "the writer places at least one batch: segment {} at {} bytes, segment_bytes {}, \
             first pending batch {} bytes at offset {}",
            active.base_offset.0,
            active.size_bytes,
            segment_bytes,
            first_len,
            first_offset.0
        );
        let placed_len: u64 = placed_bytes.iter().map(|b| b.len() as u64).sum();
        assert_eq!(
            self.tail_file_pos + self.tail.len() as u64 + placed_len,
            active.size_bytes,
            "tail buffer and placed batches must end at the segment's placed size"
        );
        // The tail and the new batches are copied once, straight into the DMA buffer; the
        // last partial block stays in `tail`, for the next write to start with.
        let mut parts: Vec<&[u8]> = Vec::with_capacity(placed_bytes.len() + 1);
        parts.push(&self.tail);
        parts.extend(placed_bytes.iter().map(|b| &b[..]));
        let data = active.file.prepare_write(&parts);
        let job_pos = self.tail_file_pos;
        let new_tail_pos =
            active.size_bytes / DIRECT_IO_ALIGNMENT_BYTES * DIRECT_IO_ALIGNMENT_BYTES;
        let carry = (new_tail_pos - job_pos) as usize..(active.size_bytes - job_pos) as usize;
        self.tail = data.as_bytes()[carry].to_vec();
        self.tail_file_pos = new_tail_pos;
        let written_end =
            active.size_bytes.div_ceil(DIRECT_IO_ALIGNMENT_BYTES) * DIRECT_IO_ALIGNMENT_BYTES;
        let extend_to = if written_end > active.allocated_bytes {
            let target =
                segment::preallocation_target(active.allocated_bytes, written_end, segment_bytes);
            active.allocated_bytes = target;
            Some(target)
        } else {
            None
        };
        let mark_after = super::partition::WrittenMark {
            offset: last,
            size_bytes: active.size_bytes,
            allocated_bytes: active.allocated_bytes,
            index: active.index.mark(),
            tail_file_pos: self.tail_file_pos,
            tail: self.tail.clone(),
        };
        Step::Write(Box::new(WriteJob {
            mark_after: Some(mark_after),
            extend_to,
            file: active.file.clone(),
            pos: job_pos,
            data: Some(data),
            new_size_bytes: active.size_bytes,
            new_high_watermark: last,
            dones,
            sync: self.config.flush == FlushPolicy::Always,
        }))
    }

    fn complete(&mut self, job: WriteJob, result: Result<(), String>) {
        if let Err(why) = result {
            for (done, _) in job.dones {
                let _ = done.send(Err(why.clone()));
            }
            self.fail(why);
            return;
        }
        let active = self
            .segments
            .values_mut()
            .next_back()
            .expect("active segment");
        assert!(
            job.new_size_bytes >= active.durable_bytes,
            "durable bytes never go backwards"
        );
        active.durable_bytes = job.new_size_bytes;
        assert!(
            job.new_high_watermark >= self.high_watermark,
            "high watermark never goes backwards"
        );
        self.high_watermark = job.new_high_watermark;
        if !job.sync && self.config.flush != FlushPolicy::Never {
            self.unsynced = true;
        }
        let now = std::time::Instant::now();
        for (done, appended_at) in job.dones {
            crate::metrics::with(|m| m.produce_stage(ProduceStage::Ack, now - appended_at));
            let _ = done.send(Ok(()));
        }
        self.notify_waiters();
    }
}

/// True if `offset` is addressable relative to a segment starting at `base` (the indexes
/// store relative offsets as u32).
fn fits_relative(offset: Offset, base: Offset) -> bool {
    offset.0 - base.0 < u32::MAX as i64
}

/// Closes the active segment and opens a new one at the next offset.
async fn roll(part: &PartitionHandle) -> Result<(), super::Error> {
    let (dir, base, file, size, index_bytes, next, config, snapshot) = {
        let p = part.borrow();
        let active = p.segments.values().next_back().expect("active segment");
        (
            p.dir.clone(),
            active.base_offset,
            active.file.clone(),
            active.size_bytes,
            active.index.encode(),
            active.next_offset,
            p.config.clone(),
            p.producers.snapshot(active.next_offset),
        )
    };
    // The partition may be closed (its topic deleted) during any await: stop before creating
    // a file by path, which could land in a re-created topic's directory.
    let closed = || -> Result<(), super::Error> {
        match &part.borrow().failed {
            Some(why) => Err(super::Error::Failed(why.clone())),
            None => Ok(()),
        }
    };
    segment::close_segment(file, size).await?;
    closed()?;
    segment::write_synced(&segment::index_path(&dir, base), &index_bytes)?;
    // Written before the new segment exists: recovery trusts a snapshot only for the segment
    // named like it, so a crash in between just means scanning, never a wrong state.
    segment::write_synced(&segment::snapshot_path(&dir, next), &snapshot)?;
    let new_segment = segment::create_segment(&dir, next, &config).await?;
    closed()?;
    let mut p = part.borrow_mut();
    if let Some(old) = p.segments.get_mut(&base) {
        old.closed = true;
    }
    p.written = super::partition::WrittenMark {
        offset: next,
        size_bytes: 0,
        allocated_bytes: new_segment.allocated_bytes,
        index: new_segment.index.mark(),
        tail_file_pos: 0,
        tail: Vec::new(),
    };
    p.segments.insert(next, new_segment);
    p.tail.clear();
    p.tail_file_pos = 0;
    p.unsynced = false;
    tracing::debug!(partition = %p.tp, base = next.0, "rolled segment");
    Ok(())
}

/// fdatasyncs the active segment if writes were acknowledged without a sync (interval policy).
pub async fn flush_unsynced(part: &PartitionHandle) {
    let file = {
        let mut p = part.borrow_mut();
        if !p.unsynced || p.failed.is_some() {
            return;
        }
        p.unsynced = false;
        p.segments
            .values()
            .next_back()
            .expect("active")
            .file
            .clone()
    };
    if let Err(e) = file.sync().await {
        part.borrow_mut().fail(e.to_string());
    }
}

/// Deletes closed segments past the retention time or beyond the retention size.
pub fn apply_retention(part: &PartitionHandle) {
    let now = now_ms() as i64;
    let (retention_ms, retention_bytes) = {
        let p = part.borrow();
        (p.config.retention_ms, p.config.retention_bytes)
    };
    let mut total: i64 = part.borrow().size_bytes() as i64;
    remove_leading_segments(part, "retention", |segment| {
        let newest_ms = if segment.index.max_timestamp_ms >= 0 {
            segment.index.max_timestamp_ms
        } else {
            segment.created_ms as i64
        };
        let expired = retention_ms >= 0 && newest_ms < now - retention_ms;
        let oversize = retention_bytes >= 0 && total - segment.size_bytes as i64 >= retention_bytes;
        if expired || oversize {
            total -= segment.size_bytes as i64;
        }
        expired || oversize
    });
}

/// Deletes the closed segments that hold only offsets below `offset` (a compacting snapshot
/// covers them). Returns how many went.
pub fn delete_segments_before(part: &PartitionHandle, offset: Offset) -> usize {
    remove_leading_segments(part, "snapshot", |segment| segment.next_offset <= offset)
}

/// Removes closed segments from the start of the log while `remove` says so; the active
/// segment always stays. Moves the log start and deletes the files.
fn remove_leading_segments(
    part: &PartitionHandle,
    why: &str,
    mut remove: impl FnMut(&segment::Segment) -> bool,
) -> usize {
    let mut p = part.borrow_mut();
    let mut removed = Vec::new();
    while p.segments.len() > 1 {
        let first = p.segments.values().next().expect("segment");
        if !first.closed || !remove(first) {
            break;
        }
        let base = first.base_offset;
        p.segments.remove(&base);
        removed.push(base);
    }
    if removed.is_empty() {
        return 0;
    }
    let new_start = *p.segments.keys().next().expect("segment");
    p.log_start = new_start;
    p.cache.retain(|c| c.base >= new_start);
    p.cache_bytes = p.cache.iter().map(|c| c.bytes.len() as u64).sum();
    for base in &removed {
        let _ = std::fs::remove_file(segment::log_path(&p.dir, *base));
        let _ = std::fs::remove_file(segment::index_path(&p.dir, *base));
        let _ = std::fs::remove_file(segment::snapshot_path(&p.dir, *base));
        tracing::info!(partition = %p.tp, base = base.0, why, "deleted segment");
    }
    removed.len()
}
