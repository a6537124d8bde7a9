//! The group-commit writer of one partition, plus the interval flusher. Runs on: the owning
//! shard, as one task per partition while appends are pending. Invariants: per partition at
//! most one write and one fdatasync in flight (a job's sync overlaps the next job's write), and
//! jobs complete in order; a write covers whole aligned blocks from the aligned start of the
//! unflushed tail, so the last partial block is rewritten with identical leading bytes (a torn
//! rewrite leaves each sector either old or new, both holding the same acknowledged bytes);
//! `flushed` (and with it the high watermark) moves only after the write, and the fdatasync
//! under `flush = always`, succeeded; a failed write or sync fails the partition and is never
//! retried; a write that fails for lack of space rewinds the log to `written` instead.

use std::rc::Rc;
use std::time::Duration;

use super::epochs::EPOCH_CHECKPOINT;
use super::partition::{Done, Partition, PartitionHandle, WrittenMark};
use super::segment;
use super::{Error, FlushPolicy};
use crate::constants::DIRECT_IO_ALIGNMENT_BYTES;
use crate::metrics::ProduceStage;
use crate::protocol::types::Offset;
use crate::runtime::fs::{write_atomic, write_synced, AlignedBuf, File, IoError};

/// A produce waiting for a write, and when it was appended (for the ack-stage metric).
type Waiting = (Done, Duration);

struct WriteJob {
    file: Rc<dyn File>,
    pos: u64,
    /// Taken by the write.
    data: Option<AlignedBuf>,
    new_size_bytes: u64,
    /// Offset after the job's last batch.
    end: Offset,
    dones: Vec<Waiting>,
    sync: bool,
    /// Allocate the file up to this size before writing.
    extend_to: Option<u64>,
    /// Where this write ends in the file (what the allocation must at least reach).
    write_end: u64,
    /// What the file had allocated before this job's step.
    allocated_before: u64,
    /// The `written` stage once this write succeeds.
    mark_after: Option<WrittenMark>,
}

enum Step {
    Idle,
    /// Nothing to write, but a sync is running: wait for it, complete its job.
    Wait,
    Roll,
    Write(Box<WriteJob>),
}

/// A job whose data is written, and its running fdatasync.
type Syncing = (crate::runtime::io::Task<Result<(), Error>>, WriteJob);

/// Drains the partition's pending appends until none are left. A job's fdatasync runs while
/// the next job's write goes out (the two overlap on the device); jobs still complete strictly
/// in order, each only after its own sync, so `flushed` never passes an unsynced byte. The
/// next write may rewrite the last partial block under the running sync: its leading bytes are
/// identical, so either version the sync persists holds the acknowledged bytes.
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
                if !roll_or_stop(&part).await {
                    return;
                }
            }
            Step::Write(job) => {
                let job = *job;
                syncing = write_step(&part, job, syncing).await;
            }
        }
    }
}

/// Rolls the active segment; `false` if the writer must stop (the partition failed or was
/// closed meanwhile).
async fn roll_or_stop(part: &PartitionHandle) -> bool {
    let Err(e) = roll(part).await else {
        return true;
    };
    if part.borrow().failed.is_some() {
        // Closed (its topic deleted) while rolling: stop; nothing to fail.
        part.borrow_mut().writer_active = false;
        return false;
    }
    if e.is_exhaustion() {
        // No space or descriptors for the new segment: the appends waiting for it are taken
        // back; the next produce tries the roll again.
        part.borrow_mut().rewind_to_written(e);
        return true;
    }
    let mut p = part.borrow_mut();
    p.fail(e.to_string());
    p.writer_active = false;
    false
}

/// Writes one job, completes the previous job once its sync is done, and starts this job's
/// sync; returns the sync now running.
async fn write_step(
    part: &PartitionHandle,
    mut job: WriteJob,
    syncing: Option<Syncing>,
) -> Option<Syncing> {
    let started = part.borrow().env.monotonic();
    let result = write_job(&mut job).await;
    let took = part.borrow().env.monotonic().saturating_sub(started);
    crate::metrics::with(|m| m.produce_stage(ProduceStage::DiskWrite, took));
    if result.is_ok() {
        let mark = job.mark_after.take().expect("a write job carries its mark");
        part.borrow_mut().on_written(mark);
    }
    if let Some((task, previous)) = syncing {
        finish_sync(part, task, previous).await;
    }
    let failed = part.borrow().failed.clone();
    match (result, failed) {
        (_, Some(why)) => part.borrow_mut().complete(job, Err(Error::Failed(why))),
        // A full disk (or no descriptors) is transient: nothing of this write or after it is
        // acknowledged, the log returns to what was written, and the partition keeps serving.
        // Only an IO error fails it.
        (Err(e), None) if e.is_exhaustion() => {
            for (done, _) in job.dones {
                let _ = done.send(Err(e.clone()));
            }
            part.borrow_mut().rewind_to_written(e);
        }
        (Err(e), None) => part.borrow_mut().complete(job, Err(e)),
        // A synchronous write (O_DSYNC) that needed no other change is already durable.
        (Ok(()), None) if job.sync && job.file.sync_needed() => {
            let task = spawn_sync(part, job.file.clone());
            return Some((task, job));
        }
        (Ok(()), None) => part.borrow_mut().complete(job, Ok(())),
    }
    None
}

/// The job's fdatasync as a task of its own (it overlaps the next write). The epoch cache is not
/// persisted here: the batches carry their epochs and recovery scans the active segment, so
/// the checkpoint is needed only for closed segments, and a roll writes it before closing one.
/// (Writing it on the first sync of each new epoch stalled that job's completion behind four
/// metadata IOs: 3-7 % of throughput on an emulated spinning disk.)
fn spawn_sync(
    part: &PartitionHandle,
    file: Rc<dyn File>,
) -> crate::runtime::io::Task<Result<(), Error>> {
    let part = part.clone();
    crate::runtime::io::spawn_joinable(async move {
        let env = part.borrow().env.clone();
        let started = env.monotonic();
        let result = file.fdatasync().await;
        let took = env.monotonic().saturating_sub(started);
        crate::metrics::with(|m| m.produce_stage(ProduceStage::Fdatasync, took));
        result.map_err(Error::from)
    })
}

/// Writes the epoch checkpoint if it changed; on failure it stays marked for the next try.
async fn persist_epochs(part: &PartitionHandle) -> Result<(), IoError> {
    let (env, path, bytes) = {
        let mut p = part.borrow_mut();
        if !p.epochs_dirty {
            return Ok(());
        }
        p.epochs_dirty = false;
        (
            p.env.clone(),
            p.dir.join(EPOCH_CHECKPOINT),
            p.epochs.encode(),
        )
    };
    let result = write_atomic(env.fs.as_ref(), &path, bytes).await;
    if result.is_err() {
        part.borrow_mut().epochs_dirty = true;
    }
    result
}

/// Preallocates if the job asks, then writes its data. An allocation never takes more than
/// half the space the file system has left beyond the write itself (on a nearly full disk the
/// next topic's directory, a snapshot or the metadata log must still fit), and if even that
/// fails, the write's own space is allocated: the next write tries the step again.
async fn write_job(job: &mut WriteJob) -> Result<(), Error> {
    if let Some(step) = job.extend_to {
        let have = job.allocated_before;
        let free = job.file.available_bytes().await?;
        let len = step
            .min(job.write_end.max(have) + free / 2)
            .max(job.write_end);
        if len < step {
            if let Some(mark) = &mut job.mark_after {
                mark.allocated_bytes = len;
            }
        }
        if let Err(e) = job.file.allocate(len).await {
            if !e.is_exhaustion() || job.write_end >= len {
                return Err(e.into());
            }
            job.file.allocate(job.write_end).await?;
            if let Some(mark) = &mut job.mark_after {
                mark.allocated_bytes = job.write_end;
            }
        }
    }
    let data = job.data.take().expect("a write job carries its data once");
    job.file.write_aligned(job.pos, data).await?;
    Ok(())
}

async fn finish_sync(
    part: &PartitionHandle,
    task: crate::runtime::io::Task<Result<(), Error>>,
    job: WriteJob,
) {
    let result = task.join().await;
    part.borrow_mut().complete(job, result);
}

/// Batches taken from the queue for one write.
struct Placed {
    bytes: Vec<bytes::Bytes>,
    dones: Vec<Waiting>,
    end: Offset,
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
        if self.roll_needed() {
            return Step::Roll;
        }
        let placed = self.place_pending();
        Step::Write(Box::new(self.build_job(placed)))
    }

    /// True if the first pending batch cannot go into the active segment: it is full, too
    /// old, or the batch's offsets would not fit its u32 relative index entries. An empty
    /// segment always takes its first batch.
    fn roll_needed(&self) -> bool {
        let active = self.segments.values().next_back().expect("active segment");
        let first = self.pending.front().expect("pending");
        let age_ms = (self.env.wall_ms() as u64).saturating_sub(active.created_ms);
        active.size_bytes > 0
            && (active.size_bytes + first.bytes.len() as u64 > self.config.segment_bytes
                || age_ms > self.config.segment_ms
                || !fits_relative(first.header.last_offset(), active.base_offset))
    }

    /// Moves pending batches into the active segment (index entries, sizes), as many as fit
    /// (one, without group commit).
    fn place_pending(&mut self) -> Placed {
        let segment_bytes = self.config.segment_bytes;
        let interval = self.config.index_interval_bytes;
        let placed_at = self.env.monotonic();
        let active = self
            .segments
            .values_mut()
            .next_back()
            .expect("active segment");
        let first_len = self.pending.front().expect("pending").bytes.len();
        let mut placed = Placed {
            bytes: Vec::new(),
            dones: Vec::new(),
            end: active.next_offset,
        };
        while let Some(next) = self.pending.front() {
            if !placed.bytes.is_empty() && !self.config.group_commit {
                break;
            }
            let len = next.bytes.len() as u64;
            // `segment.bytes` may have been lowered below a batch that was already pending:
            // an empty segment still takes it (that once stopped the broker).
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
            active.size_bytes += len;
            placed.end = p.header.last_offset().next();
            active.next_offset = placed.end;
            let waited = placed_at.saturating_sub(p.appended_at);
            crate::metrics::with(|m| m.produce_stage(ProduceStage::QueueWait, waited));
            if let Some(done) = p.done {
                placed.dones.push((done, p.appended_at));
            }
            placed.bytes.push(p.bytes);
        }
        if placed.bytes.is_empty() {
            let (base, size) = (active.base_offset.0, active.size_bytes);
            panic!(
                "the writer places at least one batch: segment {base} at {size} bytes, \
                 segment_bytes {segment_bytes}, first pending batch {first_len} bytes; {}",
                self.state()
            );
        }
        placed
    }

    /// The write of the placed batches: the unflushed tail block and the batches, copied once
    /// into an aligned buffer; the last partial block stays in `tail` for the next write.
    fn build_job(&mut self, placed: Placed) -> WriteJob {
        let segment_bytes = self.config.segment_bytes;
        let active = self
            .segments
            .values_mut()
            .next_back()
            .expect("active segment");
        let placed_len: u64 = placed.bytes.iter().map(|b| b.len() as u64).sum();
        assert_eq!(
            self.tail_file_pos + self.tail.len() as u64 + placed_len,
            active.size_bytes,
            "tail buffer and placed batches must end at the segment's placed size ({})",
            self.tp
        );
        let total = self.tail.len() + placed_len as usize;
        let padded = (total as u64).div_ceil(DIRECT_IO_ALIGNMENT_BYTES) * DIRECT_IO_ALIGNMENT_BYTES;
        let mut data = active.file.alloc_aligned(padded as usize);
        {
            let out = data.as_bytes_mut();
            let mut at = 0;
            for part in std::iter::once(&self.tail[..]).chain(placed.bytes.iter().map(|b| &b[..])) {
                out[at..at + part.len()].copy_from_slice(part);
                at += part.len();
            }
            out[total..].fill(0);
        }
        let job_pos = self.tail_file_pos;
        let new_tail_pos =
            active.size_bytes / DIRECT_IO_ALIGNMENT_BYTES * DIRECT_IO_ALIGNMENT_BYTES;
        let carry = (new_tail_pos - job_pos) as usize..(active.size_bytes - job_pos) as usize;
        self.tail = data.as_bytes()[carry].to_vec();
        self.tail_file_pos = new_tail_pos;
        let written_end = job_pos + padded;
        let allocated_before = active.allocated_bytes;
        let extend_to = if written_end > active.allocated_bytes {
            let target =
                segment::preallocation_target(active.allocated_bytes, written_end, segment_bytes);
            active.allocated_bytes = target;
            Some(target)
        } else {
            None
        };
        let mark_after = WrittenMark {
            offset: placed.end,
            size_bytes: active.size_bytes,
            allocated_bytes: active.allocated_bytes,
            index: active.index.mark(),
            tail_file_pos: self.tail_file_pos,
            tail: self.tail.clone(),
        };
        WriteJob {
            mark_after: Some(mark_after),
            extend_to,
            write_end: written_end,
            allocated_before,
            file: active.file.clone(),
            pos: job_pos,
            data: Some(data),
            new_size_bytes: active.size_bytes,
            end: placed.end,
            dones: placed.dones,
            sync: self.config.flush == FlushPolicy::Always,
        }
    }

    /// A job's write (and sync) finished: move `flushed` (and on one node the high
    /// watermark), answer its produces; or fail the partition.
    fn complete(&mut self, job: WriteJob, result: Result<(), Error>) {
        if let Err(e) = result {
            for (done, _) in job.dones {
                let _ = done.send(Err(e.clone()));
            }
            self.fail(e.to_string());
            return;
        }
        let active = self
            .segments
            .values_mut()
            .next_back()
            .expect("active segment");
        assert!(
            job.new_size_bytes >= active.durable_bytes,
            "durable bytes never go backwards ({})",
            self.tp
        );
        active.durable_bytes = job.new_size_bytes;
        assert!(
            job.end >= self.flushed && job.end <= self.written.offset,
            "flushed moves forward, within written: to {}, {}",
            job.end.0,
            self.state()
        );
        self.flushed = job.end;
        if !job.sync && self.config.flush != FlushPolicy::Never {
            self.unsynced = true;
        }
        self.advance_high_watermark(self.hwm_target());
        self.assert_stages("a completed write");
        let now = self.env.monotonic();
        for (done, appended_at) in job.dones {
            let took = now.saturating_sub(appended_at);
            crate::metrics::with(|m| m.produce_stage(ProduceStage::Ack, took));
            let _ = done.send(Ok(()));
        }
    }
}

/// True if `offset` is addressable relative to a segment starting at `base` (the indexes
/// store relative offsets as u32).
fn fits_relative(offset: Offset, base: Offset) -> bool {
    offset.0 - base.0 < u32::MAX as i64
}

/// Closes the active segment and opens a new one at the next offset.
async fn roll(part: &PartitionHandle) -> Result<(), Error> {
    let (env, dir, base, file, size, index_bytes, next, config, snapshot) = {
        let p = part.borrow();
        let active = p.segments.values().next_back().expect("active segment");
        (
            p.env.clone(),
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
    let closed = || -> Result<(), Error> {
        match &part.borrow().failed {
            Some(why) => Err(Error::Failed(why.clone())),
            None => Ok(()),
        }
    };
    segment::close_segment(file, size).await?;
    closed()?;
    write_synced(
        env.fs.as_ref(),
        &segment::index_path(&dir, base),
        index_bytes,
    )
    .await?;
    closed()?;
    // Written before the new segment exists: recovery trusts a snapshot only for the segment
    // named like it, so a crash in between just means scanning, never a wrong state.
    write_synced(
        env.fs.as_ref(),
        &segment::snapshot_path(&dir, next),
        snapshot,
    )
    .await?;
    closed()?;
    // The epochs of the closing segment must be in the checkpoint: a closed segment is not
    // scanned at recovery.
    persist_epochs(part).await?;
    let new_segment = segment::create_segment(&env, &dir, next, &config).await?;
    closed()?;
    let mut p = part.borrow_mut();
    if let Some(old) = p.segments.get_mut(&base) {
        old.closed = true;
    }
    p.written = WrittenMark {
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
    p.assert_stages("a segment roll");
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
    if let Err(e) = file.fdatasync().await {
        part.borrow_mut().fail(e.to_string());
        return;
    }
    if let Err(e) = persist_epochs(part).await {
        tracing::warn!(error = %e, "writing the leader-epoch checkpoint failed; retried later");
    }
}

pub use super::retention::{apply_retention, delete_segments_before};
