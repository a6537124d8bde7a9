//! What replication needs from a partition's log, in place before replication itself: a
//! follower append that keeps the leader's offsets and epochs, and `truncate_to`, which cuts
//! the log back to where a new leader's history agrees (KIP-101), reaching into closed segments
//! and rolling back the indexes, the idempotent-producer state and the epoch cache. Runs on:
//! the partition's owner shard.

use bytes::Bytes;

use super::epochs::EPOCH_CHECKPOINT;
use super::partition::{Completion, Partition, PartitionHandle, WrittenMark};
use super::producer::ProducerStates;
use super::recovery::scan_segment;
use super::segment;
use super::Error;
use crate::constants::{DIRECT_IO_ALIGNMENT_BYTES, MESSAGE_MAX_BYTES_MAX};
use crate::protocol::record_batch::{parse_header, BatchError, BatchHeader, BATCH_HEADER_BYTES};
use crate::protocol::types::Offset;
use crate::runtime::fs::{read_whole, write_atomic};

impl Partition {
    /// Appends batches fetched from the leader as they are: their offsets and leader epochs
    /// are the leader's (no assignment), and producer sequences are recorded, not checked (the
    /// leader checked them). The first batch must start at `log_end`, the rest continue it, and
    /// epochs never go back. Returns the completion of the last batch (durable under the flush
    /// policy: what a follower may report as its position).
    pub fn append_follower(this: &PartitionHandle, payload: Bytes) -> Result<Completion, Error> {
        let mut p = this.borrow_mut();
        if let Some(why) = &p.failed {
            return Err(Error::Failed(why.clone()));
        }
        if p.truncating {
            return Err(Error::Truncating);
        }
        let mut batches: Vec<(BatchHeader, Bytes)> = Vec::new();
        let mut expected = p.log_end;
        let mut epoch = p.epochs.latest().map(|(e, _)| e);
        let mut at = 0usize;
        while at < payload.len() {
            let header = parse_header(&payload[at..], MESSAGE_MAX_BYTES_MAX as usize + 64, true)
                .map_err(Error::InvalidBatch)?;
            if header.base_offset != expected {
                return Err(Error::NotContiguous {
                    expected,
                    got: header.base_offset,
                });
            }
            if epoch.is_some_and(|e| header.leader_epoch < e) {
                return Err(Error::InvalidBatch(BatchError::Invalid));
            }
            epoch = Some(header.leader_epoch);
            expected = header.last_offset().next();
            batches.push((header, payload.slice(at..at + header.total_bytes)));
            at += header.total_bytes;
        }
        if batches.is_empty() {
            return Err(Error::InvalidBatch(BatchError::Truncated));
        }
        p.log_end = expected;
        let durable = p.place(batches);
        drop(p);
        Partition::wake_writer(this);
        Ok(durable)
    }

    /// Cuts the log so that it ends before `offset`: every batch whose last offset is at or
    /// past it goes, in the active segment and in closed ones. The segment holding the cut
    /// becomes the active segment (its index rebuilt by a scan), later segments are removed,
    /// and the idempotence state is rebuilt from that segment's snapshot and its remaining
    /// batches. Waits for writes in flight to finish first. Returns the new log end (at most
    /// `offset`: a cut inside a batch keeps none of it).
    pub async fn truncate_to(this: &PartitionHandle, offset: Offset) -> Result<Offset, Error> {
        if this.borrow().truncating {
            return Err(Error::Truncating);
        }
        // No append may start while the files are cut (their offsets would be reused).
        this.borrow_mut().truncating = true;
        let result = Partition::truncate_now(this, offset).await;
        this.borrow_mut().truncating = false;
        result
    }

    async fn truncate_now(this: &PartitionHandle, offset: Offset) -> Result<Offset, Error> {
        let env = this.borrow().env.clone();
        while this.borrow().is_writing() {
            env.sleep(std::time::Duration::from_millis(1)).await;
        }
        let (log_start, log_end) = {
            let p = this.borrow();
            (p.log_start, p.log_end)
        };
        if offset >= log_end {
            return Ok(log_end);
        }
        if offset < log_start {
            return Err(Error::OffsetOutOfRange);
        }
        let base = *this
            .borrow()
            .segments
            .range(..=offset)
            .next_back()
            .expect("a segment holds it")
            .0;
        let cut = find_cut(this, base, offset).await?;
        let later = cut_files(this, base, cut).await?;
        let rebuilt = rescan(this, base, cut).await?;
        let new_end = rebuilt.end;
        let epochs = install_cut(this, base, cut, later, rebuilt);
        let dir = this.borrow().dir.clone();
        write_atomic(env.fs.as_ref(), &dir.join(EPOCH_CHECKPOINT), epochs).await?;
        Ok(new_end)
    }
}

impl Partition {
    /// Empties the log and starts it again at `offset`, past its end: a follower whose log
    /// ends below its leader's log start can continue nothing (the records in between are
    /// gone from the leader), so it starts over where the leader's log starts (Kafka's
    /// "truncate fully and start at"). The empty epoch checkpoint goes first, then every
    /// segment's files (the directory synced), then an empty segment at `offset` is created;
    /// a crash in between leaves an empty log, which the next fetch restarts again.
    pub async fn restart_at(this: &PartitionHandle, offset: Offset) -> Result<(), Error> {
        if this.borrow().truncating {
            return Err(Error::Truncating);
        }
        this.borrow_mut().truncating = true;
        let result = Partition::restart_now(this, offset).await;
        this.borrow_mut().truncating = false;
        result
    }

    async fn restart_now(this: &PartitionHandle, offset: Offset) -> Result<(), Error> {
        let env = this.borrow().env.clone();
        while this.borrow().is_writing() {
            env.sleep(std::time::Duration::from_millis(1)).await;
        }
        let (dir, config, bases) = {
            let p = this.borrow();
            if offset <= p.log_end {
                return Err(Error::OffsetOutOfRange);
            }
            let bases: Vec<Offset> = p.segments.keys().copied().collect();
            (p.dir.clone(), p.config.clone(), bases)
        };
        let empty = super::epochs::EpochCache::default();
        write_atomic(env.fs.as_ref(), &dir.join(EPOCH_CHECKPOINT), empty.encode()).await?;
        let paths = bases.iter().flat_map(|b| segment::file_paths(&dir, *b));
        remove_synced(&env, &dir, paths).await?;
        let fresh = segment::create_segment(&env, &dir, offset, &config).await?;
        let mut p = this.borrow_mut();
        p.written = WrittenMark {
            offset,
            size_bytes: 0,
            allocated_bytes: fresh.allocated_bytes,
            index: fresh.index.mark(),
            tail_file_pos: 0,
            tail: Vec::new(),
        };
        p.segments.clear();
        p.segments.insert(offset, fresh);
        p.tail.clear();
        p.tail_file_pos = 0;
        p.log_start = offset;
        p.log_end = offset;
        p.flushed = offset;
        p.high_watermark = offset;
        p.hwm_cap = p.hwm_cap.map(|c| c.max(offset));
        p.cache.clear();
        p.cache_bytes = 0;
        p.producers = ProducerStates::default();
        p.producer_undo.clear();
        p.epochs = empty;
        p.epochs_dirty = false;
        p.unsynced = false;
        p.assert_stages("a restart at the leader's log start");
        tracing::info!(partition = %p.tp, at = offset.0, "follower log restarted at the leader's log start");
        Ok(())
    }
}

/// Cuts segment `base` at byte `cut` (synced), removes every later segment's files and the
/// cut segment's index (it becomes the active segment), and syncs the directory. Returns the
/// base offsets of the removed segments.
async fn cut_files(this: &PartitionHandle, base: Offset, cut: u64) -> Result<Vec<Offset>, Error> {
    let (env, dir, file, later) = {
        let p = this.borrow();
        let later: Vec<Offset> = p
            .segments
            .range(Offset(base.0 + 1)..)
            .map(|(b, _)| *b)
            .collect();
        (
            p.env.clone(),
            p.dir.clone(),
            p.segments[&base].file.clone(),
            later,
        )
    };
    file.truncate(cut).await?;
    file.fdatasync().await?;
    // The cut segment's index goes too, so a crash leaves it scanned, never trusted past its
    // new end.
    let paths = later
        .iter()
        .flat_map(|b| segment::file_paths(&dir, *b))
        .chain([segment::index_path(&dir, base)]);
    remove_synced(&env, &dir, paths).await?;
    Ok(later)
}

/// Removes `paths` (files already gone are fine), then syncs `dir` so the removals are durable.
async fn remove_synced(
    env: &crate::runtime::env::Env,
    dir: &std::path::Path,
    paths: impl Iterator<Item = std::path::PathBuf>,
) -> Result<(), Error> {
    for path in paths {
        if let Err(e) = env.fs.remove_file(&path).await {
            if !e.is_not_found() {
                return Err(e.into());
            }
        }
    }
    env.fs.sync_dir(dir).await?;
    Ok(())
}

/// The cut segment as a scan rebuilds it: index, idempotence state, tail block.
struct Rebuilt {
    end: Offset,
    index: super::index::SegmentIndex,
    producers: ProducerStates,
    tail_file_pos: u64,
    tail: Vec<u8>,
}

/// Rescans segment `base` up to `cut`: its index, and the idempotence state from its snapshot
/// (the state before it) plus its remaining batches.
async fn rescan(this: &PartitionHandle, base: Offset, cut: u64) -> Result<Rebuilt, Error> {
    let (env, dir, file, interval) = {
        let p = this.borrow();
        (
            p.env.clone(),
            p.dir.clone(),
            p.segments[&base].file.clone(),
            p.config.index_interval_bytes,
        )
    };
    let scan = scan_segment(
        file.as_ref(),
        cut,
        base,
        MESSAGE_MAX_BYTES_MAX as usize + 64,
        interval,
        crate::protocol::types::LeaderEpoch(0),
    )
    .await?;
    let mut producers = read_whole(env.fs.as_ref(), &segment::snapshot_path(&dir, base))
        .await?
        .and_then(|b| ProducerStates::from_snapshot(&b))
        .unwrap_or_default();
    producers.replay(&scan.producer_batches);
    let tail_file_pos = cut / DIRECT_IO_ALIGNMENT_BYTES * DIRECT_IO_ALIGNMENT_BYTES;
    let tail = file
        .read_at(tail_file_pos, (cut - tail_file_pos) as usize)
        .await?
        .to_vec();
    Ok(Rebuilt {
        end: scan.next_offset,
        index: scan.index,
        producers,
        tail_file_pos,
        tail,
    })
}

/// Makes the cut segment the active one and every stage end at the cut; returns the epoch
/// cache's new checkpoint bytes.
fn install_cut(
    this: &PartitionHandle,
    base: Offset,
    cut: u64,
    later: Vec<Offset>,
    rebuilt: Rebuilt,
) -> Vec<u8> {
    let mut p = this.borrow_mut();
    for b in &later {
        p.segments.remove(b);
    }
    let end = rebuilt.end;
    let seg = p.segments.get_mut(&base).expect("the cut segment");
    seg.size_bytes = cut;
    seg.durable_bytes = cut;
    seg.allocated_bytes = cut;
    seg.next_offset = end;
    seg.index = rebuilt.index.clone();
    seg.closed = false;
    p.written = WrittenMark {
        offset: end,
        size_bytes: cut,
        allocated_bytes: cut,
        index: rebuilt.index.mark(),
        tail_file_pos: rebuilt.tail_file_pos,
        tail: rebuilt.tail.clone(),
    };
    p.tail = rebuilt.tail;
    p.tail_file_pos = rebuilt.tail_file_pos;
    p.log_end = end;
    p.flushed = p.flushed.min(end);
    p.high_watermark = p.high_watermark.min(end);
    p.cache.retain(|c| c.last < end);
    p.cache_bytes = p.cache.iter().map(|c| c.bytes.len() as u64).sum();
    p.producers = rebuilt.producers;
    p.producer_undo.clear();
    p.epochs.truncate_from(end);
    p.epochs_dirty = false;
    p.unsynced = false;
    p.assert_stages("a truncation");
    tracing::info!(partition = %p.tp, to = end.0, "truncated the log");
    p.epochs.encode()
}

/// The byte position in segment `base` where the batches that end before `offset` stop.
async fn find_cut(this: &PartitionHandle, base: Offset, offset: Offset) -> Result<u64, Error> {
    let (file, mut pos, size) = {
        let p = this.borrow();
        let seg = &p.segments[&base];
        let relative = u32::try_from(offset.0 - base.0).unwrap_or(u32::MAX);
        (
            seg.file.clone(),
            seg.index.lookup_offset(relative) as u64,
            seg.size_bytes,
        )
    };
    while pos + BATCH_HEADER_BYTES as u64 <= size {
        let head = file.read_at(pos, BATCH_HEADER_BYTES).await?;
        let header =
            crate::protocol::record_batch::parse_header_only(&head).map_err(Error::InvalidBatch)?;
        if header.last_offset() >= offset {
            return Ok(pos);
        }
        pos += header.total_bytes as u64;
    }
    Ok(pos.min(size))
}
