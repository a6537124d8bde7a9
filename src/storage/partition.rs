//! One partition's log on its owning shard: offsets, segments, the in-memory tail, idempotent
//! producer state, the leader-epoch cache, and the appender's contract. Runs on: the owning
//! shard only (the handle is an `Rc`, so it cannot leave the shard).
//!
//! The appender contract (after Redpanda's segment appender): `append` *logically* appends (the
//! batch has its offset and is placed in order) and returns a completion that resolves once the
//! bytes are durable under the flush policy. One writer task per partition drains everything
//! appended while the previous write was in flight into one write + one fdatasync (group
//! commit).
//!
//! Stages, each asserted whenever it moves, with the partition's state in the message:
//! `log_start <= high_watermark <= flushed <= written <= log_end`.
//! - `log_end`: after the last appended batch (offsets assigned, maybe not yet written);
//! - `written`: after the last batch whose write succeeded;
//! - `flushed`: after the last batch durable under the flush policy (fdatasynced under
//!   `flush = always`; written, under the policies that acknowledge after the write);
//! - `high_watermark`: what consumers may read, moved by the replication layer (on one node it
//!   follows `flushed`; in a cluster, the minimum over the in-sync replicas).
//!
//! No `RefCell` borrow is held across an `.await`.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_channel::oneshot;

use super::epochs::EpochCache;
use super::producer::{ProducerStates, ProducerUndo, SequenceCheck};
use super::segment::Segment;
use super::{Error, LogConfig};
use crate::protocol::record_batch::{self, BatchHeader};
use crate::protocol::types::{LeaderEpoch, Offset, TopicPartition};
use crate::runtime::env::Env;

pub type PartitionHandle = Rc<RefCell<Partition>>;

/// A long-poll waiting on one or more partitions: whichever moves first takes the sender.
pub type Waiter = Rc<RefCell<Option<oneshot::Sender<()>>>>;

/// Resolves once an append is durable under the flush policy (or failed).
pub type Completion = oneshot::Receiver<Result<(), Error>>;

pub(super) type Done = oneshot::Sender<Result<(), Error>>;

/// A batch placed in the log and waiting for the writer.
pub(super) struct PendingAppend {
    pub bytes: Bytes,
    pub header: BatchHeader,
    pub done: Option<Done>,
    /// When `append` took the batch (monotonic): the start of its queue-wait and ack stages.
    pub appended_at: Duration,
}

/// A recently appended batch kept in memory for tail reads.
pub(super) struct CachedBatch {
    pub base: Offset,
    pub last: Offset,
    pub bytes: Bytes,
}

/// The active segment as of the end of the last successful write (the `written` stage): what
/// a write that fails for lack of space returns the partition to.
#[derive(Debug, Clone)]
pub(super) struct WrittenMark {
    /// Offset after the last written batch.
    pub offset: Offset,
    pub size_bytes: u64,
    pub allocated_bytes: u64,
    pub index: super::index::IndexMark,
    /// The unflushed tail block as of that write: its aligned file position and bytes.
    pub tail_file_pos: u64,
    pub tail: Vec<u8>,
}

/// What an append did.
pub enum AppendOutcome {
    /// Appended at `base_offset`; `durable` resolves when the flush policy is satisfied.
    Appended {
        base_offset: Offset,
        durable: Completion,
    },
    /// A retried idempotent batch that is already in the log.
    Duplicate { base_offset: Offset },
}

pub struct Partition {
    pub tp: TopicPartition,
    pub(super) dir: PathBuf,
    pub(super) config: LogConfig,
    pub(super) env: Env,
    /// The epoch stamped into batches this partition leads.
    pub(super) epoch: LeaderEpoch,
    pub(super) segments: BTreeMap<Offset, Segment>,
    /// Bytes of the active segment from `tail_file_pos` (aligned) to its `size_bytes`.
    pub(super) tail: Vec<u8>,
    pub(super) tail_file_pos: u64,
    pub(super) log_start: Offset,
    pub(super) log_end: Offset,
    /// The `written` stage and what returns the log to it.
    pub(super) written: WrittenMark,
    pub(super) flushed: Offset,
    pub(super) high_watermark: Offset,
    /// The high watermark is `flushed` capped by this (`None`: it follows `flushed`, as on
    /// one node). A leader caps it at what every in-sync follower has durably; a follower at
    /// its leader's high watermark.
    pub(super) hwm_cap: Option<Offset>,
    /// Followers' fetches waiting for the log to be written past their offset.
    pub(super) data_waiters: Vec<Waiter>,
    /// A truncation is under way: appends are refused until it ends.
    pub(super) truncating: bool,
    pub(super) pending: VecDeque<PendingAppend>,
    pub(super) writer_active: bool,
    pub(super) cache: VecDeque<CachedBatch>,
    pub(super) cache_bytes: u64,
    pub(super) producers: ProducerStates,
    /// How to undo the idempotence state of each batch appended after `written`, oldest first.
    pub(super) producer_undo: VecDeque<ProducerUndo>,
    pub(super) waiters: Vec<Waiter>,
    /// Waiters left after the last pruning pass.
    pub(super) waiters_live: usize,
    pub(super) failed: Option<String>,
    /// Written but not yet fdatasynced (interval flush policy).
    pub(super) unsynced: bool,
    /// A write failed for lack of space and none has succeeded since (logged once).
    pub(super) exhausted: bool,
    pub(super) epochs: EpochCache,
    /// The epoch cache changed since it was last persisted.
    pub(super) epochs_dirty: bool,
}

impl Partition {
    /// The partition's stages, for assertion messages and logs.
    pub fn state(&self) -> String {
        format!(
            "{}: log_start {} <= high_watermark {} <= flushed {} <= written {} <= log_end {}",
            self.tp,
            self.log_start.0,
            self.high_watermark.0,
            self.flushed.0,
            self.written.offset.0,
            self.log_end.0
        )
    }

    /// Asserts `log_start <= high_watermark <= flushed <= written <= log_end`.
    pub(super) fn assert_stages(&self, after: &str) {
        assert!(
            self.log_start <= self.high_watermark
                && self.high_watermark <= self.flushed
                && self.flushed <= self.written.offset
                && self.written.offset <= self.log_end,
            "stages out of order after {after}: {}",
            self.state()
        );
    }

    pub fn log_start(&self) -> Offset {
        self.log_start
    }

    pub fn log_end(&self) -> Offset {
        self.log_end
    }

    pub fn written(&self) -> Offset {
        self.written.offset
    }

    pub fn flushed(&self) -> Offset {
        self.flushed
    }

    pub fn high_watermark(&self) -> Offset {
        self.high_watermark
    }

    pub fn leader_epoch(&self) -> LeaderEpoch {
        self.epoch
    }

    pub fn epochs(&self) -> &EpochCache {
        &self.epochs
    }

    /// Caps the high watermark at `cap` (`None`: it follows `flushed`) and moves it as far as
    /// `flushed` and the cap allow; it never goes back.
    /// What caps the high watermark (a follower: its leader's high watermark as last seen).
    pub fn hwm_cap(&self) -> Option<Offset> {
        self.hwm_cap
    }

    pub fn set_hwm_cap(&mut self, cap: Option<Offset>) {
        self.hwm_cap = cap;
        self.advance_high_watermark(self.hwm_target());
    }

    /// Where the high watermark may be now: `flushed`, capped.
    pub(super) fn hwm_target(&self) -> Offset {
        match self.hwm_cap {
            Some(cap) => cap.min(self.flushed),
            None => self.flushed,
        }
    }

    /// Registers a waiter resolved when the log is next written further (a follower's fetch).
    pub fn add_data_waiter(&mut self, waiter: Waiter) {
        if self.data_waiters.len() >= 64 {
            self.data_waiters
                .retain(|w| w.borrow().as_ref().is_some_and(|tx| !tx.is_canceled()));
        }
        self.data_waiters.push(waiter);
    }

    fn notify_data_waiters(&mut self) {
        for w in self.data_waiters.drain(..) {
            if let Some(tx) = w.borrow_mut().take() {
                let _ = tx.send(());
            }
        }
    }

    /// Moves the high watermark to `to` (never backwards, never past `flushed`) and wakes the
    /// long-polls.
    pub fn advance_high_watermark(&mut self, to: Offset) {
        if to <= self.high_watermark {
            return;
        }
        assert!(
            to <= self.flushed,
            "the high watermark cannot pass flushed: to {}, {}",
            to.0,
            self.state()
        );
        self.high_watermark = to;
        self.notify_waiters();
    }

    /// Lowers the high watermark to `to` before anything has read this partition: a replica
    /// of a cluster starts from what it can prove, not from the recovered log's end (that tail
    /// may never have reached the rest of the ISR; its leader raises it again).
    pub fn restart_high_watermark(&mut self, to: Offset) {
        assert!(
            to >= self.log_start && to <= self.high_watermark,
            "a restarted high watermark lies between the log start and the recovered one: to {}, {}",
            to.0,
            self.state()
        );
        self.high_watermark = to;
    }

    /// Starts leading at `epoch` (the controller's choice): batches appended from now on are
    /// stamped with it.
    pub fn set_leader_epoch(&mut self, epoch: LeaderEpoch) {
        assert!(
            epoch >= self.epoch,
            "leader epochs never go back: {} after {}, {}",
            epoch.0,
            self.epoch.0,
            self.state()
        );
        self.epoch = epoch;
    }

    /// New topic-level settings; they apply from the next write, roll and retention pass.
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// The largest timestamp in the log (-1 if none), from the segment indexes.
    pub fn max_timestamp_ms(&self) -> i64 {
        self.segments
            .values()
            .map(|s| s.index.max_timestamp_ms)
            .max()
            .unwrap_or(-1)
    }

    /// The active segment's index, encoded (for tests that compare a rebuilt index with a
    /// fresh build).
    pub fn active_index(&self) -> Vec<u8> {
        self.segments
            .values()
            .next_back()
            .expect("active segment")
            .index
            .encode()
    }

    /// Number of segments, closed and active.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Number of closed (immutable) segments.
    pub fn closed_segments(&self) -> usize {
        self.segments.values().filter(|s| s.closed).count()
    }

    /// Bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.size_bytes).sum()
    }

    /// Validates `payload` (one or more v2 batches), assigns offsets, places it in the log and
    /// wakes the writer. Never awaits.
    pub fn append(this: &PartitionHandle, payload: &[u8]) -> Result<AppendOutcome, Error> {
        let mut p = this.borrow_mut();
        if let Some(why) = &p.failed {
            return Err(Error::Failed(why.clone()));
        }
        if p.truncating {
            return Err(Error::Truncating);
        }
        let max = p.config.message_max_bytes as usize;
        let batches = record_batch::split_produced(payload, max).map_err(Error::InvalidBatch)?;
        // Idempotence is checked on the first batch: producers send one batch per partition.
        let first = batches[0].1;
        if first.is_idempotent() {
            let last_seq = first.last_sequence();
            match p.producers.check(
                first.producer_id,
                first.producer_epoch,
                first.base_sequence,
                last_seq,
            ) {
                SequenceCheck::Append => {}
                SequenceCheck::Duplicate(base_offset) => {
                    return Ok(AppendOutcome::Duplicate { base_offset })
                }
                SequenceCheck::OutOfOrder => return Err(Error::OutOfOrderSequence),
                SequenceCheck::Fenced => return Err(Error::InvalidProducerEpoch),
            }
        }
        let mut owned = BytesMut::from(payload);
        let base_offset = p.log_end;
        let epoch = p.epoch;
        let mut placed = Vec::with_capacity(batches.len());
        for (pos, header) in batches {
            let offset = p.log_end;
            record_batch::assign_offset(&mut owned[pos..pos + header.total_bytes], offset, epoch);
            let mut header = header;
            header.base_offset = offset;
            header.leader_epoch = epoch;
            let bytes = owned.split_to(header.total_bytes).freeze();
            p.log_end = header.last_offset().next();
            placed.push((header, bytes));
        }
        let durable = p.place(placed);
        drop(p);
        Partition::wake_writer(this);
        Ok(AppendOutcome::Appended {
            base_offset,
            durable,
        })
    }

    /// Records placed batches (offsets already theirs, `log_end` already past them): producer
    /// state, the epoch cache, the tail cache, the writer's queue. Returns the completion of
    /// the last one.
    pub(super) fn place(&mut self, batches: Vec<(BatchHeader, Bytes)>) -> Completion {
        let appended_at = self.env.monotonic();
        let (tx, rx) = oneshot::channel();
        let mut tx = Some(tx);
        let count = batches.len();
        for (i, (header, bytes)) in batches.into_iter().enumerate() {
            if header.is_idempotent() {
                let undo = self.producers.record(
                    header.producer_id,
                    header.producer_epoch,
                    header.base_sequence,
                    header.last_sequence(),
                    header.base_offset,
                );
                self.producer_undo.push_back(undo);
            }
            if self.epochs.assign(header.leader_epoch, header.base_offset) {
                self.epochs_dirty = true;
            }
            self.push_cache(header.base_offset, header.last_offset(), bytes.clone());
            let done = if i + 1 == count { tx.take() } else { None };
            self.pending.push_back(PendingAppend {
                bytes,
                header,
                done,
                appended_at,
            });
        }
        rx
    }

    /// Starts the writer task if none runs.
    pub(super) fn wake_writer(this: &PartitionHandle) {
        let start = {
            let mut p = this.borrow_mut();
            let start = !p.writer_active;
            p.writer_active = true;
            start
        };
        if start {
            crate::runtime::io::spawn(super::writer::run(this.clone()));
        }
    }

    fn push_cache(&mut self, base: Offset, last: Offset, bytes: Bytes) {
        self.cache_bytes += bytes.len() as u64;
        self.cache.push_back(CachedBatch { base, last, bytes });
        while self.cache_bytes > self.config.tail_cache_bytes && self.cache.len() > 1 {
            let old = self.cache.pop_front().expect("cache not empty");
            self.cache_bytes -= old.bytes.len() as u64;
        }
    }

    /// Registers a waiter resolved when the high watermark next moves. Waiters whose request
    /// went away are dropped whenever the list has doubled since the last pass, so it stays
    /// within twice the live long-polls and a registration costs amortized O(1) (a pass per
    /// registration made many registrations quadratic).
    pub fn add_waiter(&mut self, waiter: Waiter) {
        if self.waiters.len() >= 2 * self.waiters_live.max(8) {
            self.waiters
                .retain(|w| w.borrow().as_ref().is_some_and(|tx| !tx.is_canceled()));
            self.waiters_live = self.waiters.len();
        }
        self.waiters.push(waiter);
    }

    pub(super) fn notify_waiters(&mut self) {
        self.waiters_live = 0;
        for w in self.waiters.drain(..) {
            if let Some(tx) = w.borrow_mut().take() {
                let _ = tx.send(());
            }
        }
    }

    /// True while appends are waiting for or in a write.
    pub fn is_writing(&self) -> bool {
        self.writer_active || !self.pending.is_empty()
    }

    /// Directory of the partition (deleted with the topic).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Resolves once everything up to and including `offset` is durable (the high watermark
    /// is past it); an error if the partition fails or is deleted first. A retried idempotent
    /// batch waits here for its original, so a duplicate is never acknowledged earlier.
    pub async fn wait_durable(this: &PartitionHandle, offset: Offset) -> Result<(), Error> {
        loop {
            let rx = {
                let mut p = this.borrow_mut();
                if let Some(why) = &p.failed {
                    return Err(Error::Failed(why.clone()));
                }
                if p.high_watermark > offset {
                    return Ok(());
                }
                let (tx, rx) = oneshot::channel();
                p.add_waiter(Rc::new(RefCell::new(Some(tx))));
                rx
            };
            let _ = rx.await;
        }
    }

    /// Takes back everything appended after the last successful write, because a write (or
    /// the allocation or segment roll before it) failed for lack of a resource that may come
    /// back (disk space, descriptors). Unlike `fail`, the partition stays writable: the next
    /// produce gets the offsets the failed batches had. Every waiting produce is answered with
    /// the error; nothing it carried was acknowledged.
    pub(super) fn rewind_to_written(&mut self, why: Error) {
        if !self.exhausted {
            tracing::warn!(partition = %self.tp, error = %why, log_end = self.log_end.0,
                written = self.written.offset.0,
                "a write failed for lack of space or descriptors; produces get \
                 KAFKA_STORAGE_ERROR until one succeeds (logged once)");
            self.exhausted = true;
        }
        for pending in self.pending.drain(..) {
            if let Some(done) = pending.done {
                let _ = done.send(Err(why.clone()));
            }
        }
        let mark = self.written.clone();
        // Epochs first seen in the batches taken back go with them.
        if self.epochs.truncate_from(mark.offset) {
            self.epochs_dirty = true;
        }
        let active = self
            .segments
            .values_mut()
            .next_back()
            .expect("active segment");
        assert!(
            mark.size_bytes <= active.size_bytes && mark.offset <= active.next_offset,
            "rewind only goes back: mark {mark:?}, active segment at {} bytes, offset {}",
            active.size_bytes,
            active.next_offset.0
        );
        active.size_bytes = mark.size_bytes;
        active.next_offset = mark.offset;
        active.allocated_bytes = mark.allocated_bytes;
        active.index.rewind(mark.index);
        self.tail = mark.tail;
        self.tail_file_pos = mark.tail_file_pos;
        self.log_end = mark.offset;
        self.cache.retain(|c| c.base < mark.offset);
        self.cache_bytes = self.cache.iter().map(|c| c.bytes.len() as u64).sum();
        while self
            .producer_undo
            .back()
            .is_some_and(|u| u.base >= mark.offset)
        {
            let undo = self.producer_undo.pop_back().expect("checked");
            self.producers.undo(undo);
        }
        self.assert_stages("a rewind to written");
    }

    /// A write succeeded: `mark` is the new `written` stage, and the undo entries of the
    /// batches it carried are no longer needed.
    pub(super) fn on_written(&mut self, mark: WrittenMark) {
        assert!(
            mark.offset >= self.written.offset && mark.offset <= self.log_end,
            "written moves forward within the log: from {} to {}, log_end {}",
            self.written.offset.0,
            mark.offset.0,
            self.log_end.0
        );
        while self
            .producer_undo
            .front()
            .is_some_and(|u| u.base < mark.offset)
        {
            self.producer_undo.pop_front();
        }
        if self.exhausted {
            tracing::info!(partition = %self.tp, "writes succeed again");
            self.exhausted = false;
        }
        self.notify_data_waiters();
        // The write may have allocated less than its step asked (a nearly full disk).
        let active = self
            .segments
            .values_mut()
            .next_back()
            .expect("active segment");
        active.allocated_bytes = mark.allocated_bytes;
        self.written = mark;
        self.assert_stages("a write");
    }

    /// Takes the partition out of service (topic deleted): writes and waits fail from now on.
    pub fn close(&mut self, why: &str) {
        self.fail(why.to_string());
    }

    /// Marks the log failed and fails everything waiting on the writer.
    pub(super) fn fail(&mut self, why: String) {
        tracing::error!(partition = %self.tp, error = %why, "log failed; refusing writes until restart");
        for pending in self.pending.drain(..) {
            if let Some(done) = pending.done {
                let _ = done.send(Err(Error::Failed(why.clone())));
            }
        }
        self.failed = Some(why);
        self.notify_waiters();
        self.notify_data_waiters();
    }

    /// Whether a truncation is under way (appends are refused meanwhile).
    pub fn is_truncating(&self) -> bool {
        self.truncating
    }

    /// Why the log refuses writes, if it does (a failed write or sync, or closed).
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::FlushPolicy;

    /// An idempotent batch of `count` ~100 KB records from producer 7, epoch 0.
    fn idempotent(first_sequence: i32, count: i32) -> Vec<u8> {
        let mut b = record_batch::encode_uncompressed(count, None, &[b'x'; 100_000], 0, 0);
        b[43..51].copy_from_slice(&7i64.to_be_bytes());
        b[51..53].copy_from_slice(&0i16.to_be_bytes());
        b[53..57].copy_from_slice(&first_sequence.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    fn config() -> LogConfig {
        LogConfig {
            segment_bytes: 1 << 20,
            segment_ms: u64::MAX / 2,
            retention_ms: -1,
            retention_bytes: -1,
            message_max_bytes: 1 << 20,
            flush: FlushPolicy::Always,
            tail_cache_bytes: 1 << 20,
            index_interval_bytes: 4096,
            group_commit: true,
        }
    }

    /// Appends a fresh batch and waits until it is durable.
    async fn append_durable(part: &PartitionHandle, batch: &[u8]) -> Result<(), Error> {
        match Partition::append(part, batch)? {
            AppendOutcome::Appended { durable, .. } => durable.await.expect("writer alive"),
            AppendOutcome::Duplicate { .. } => panic!("a fresh batch was taken for a duplicate"),
        }
    }

    /// `segment.bytes` lowered (IncrementalAlterConfigs applies at once) below a batch that is
    /// already pending: the empty segment takes it. This once hit the writer's assertion and
    /// stopped the broker.
    #[test]
    fn a_lowered_segment_size_never_strands_a_pending_batch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t-0");
        let d = dir.path().to_owned();
        crate::runtime::io::run_local(async move {
            crate::runtime::io::prime_device_probe(&d, 0).await.unwrap();
            let big = LogConfig {
                segment_bytes: 4 << 20,
                message_max_bytes: 4 << 20,
                ..config()
            };
            let part = Partition::open(
                &Env::real(),
                &path,
                TopicPartition::new("t", 0),
                big,
                LeaderEpoch(0),
            )
            .await
            .unwrap();
            // 1.5 MiB, then 3 MiB (one batch each): the second waits for the first's write.
            let first = record_batch::encode_uncompressed(15, None, &[b'x'; 100_000], 0, 0);
            let second = record_batch::encode_uncompressed(30, None, &[b'y'; 100_000], 0, 0);
            let AppendOutcome::Appended { durable: a, .. } =
                Partition::append(&part, &first).unwrap()
            else {
                panic!("appended")
            };
            let AppendOutcome::Appended { durable: b, .. } =
                Partition::append(&part, &second).unwrap()
            else {
                panic!("appended")
            };
            part.borrow_mut().set_config(config()); // 1 MiB segments from now on
            a.await.unwrap().unwrap();
            b.await.unwrap().unwrap();
            let p = part.borrow();
            assert_eq!(p.high_watermark(), Offset(45));
            assert_eq!(
                p.segments.len(),
                2,
                "the second batch rolled to its own segment"
            );
        });
    }

    /// A retry of a batch that lies in a closed segment is still recognised after a restart,
    /// thanks to the producer snapshot written when the segment rolled (the closed segment is
    /// not scanned at start: its index is trusted).
    #[test]
    fn producer_state_survives_restart_across_rolls() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t-0");
        let (p, d) = (path.clone(), dir.path().to_owned());
        crate::runtime::io::run_local(async move {
            crate::runtime::io::prime_device_probe(&d, 0).await.unwrap();
            let part = Partition::open(
                &Env::real(),
                &p,
                TopicPartition::new("t", 0),
                config(),
                LeaderEpoch(0),
            )
            .await
            .unwrap();
            // 27 batches of 2 records, 5 batches per 1 MiB segment: batch 23 ends up in a
            // closed segment and is among the producer's last 5.
            for i in 0..27 {
                append_durable(&part, &idempotent(i * 2, 2)).await.unwrap();
            }
            assert_eq!(part.borrow().segments.len(), 6, "segments rolled");
        });
        crate::runtime::io::run_local(async move {
            let part = Partition::open(
                &Env::real(),
                &path,
                TopicPartition::new("t", 0),
                config(),
                LeaderEpoch(0),
            )
            .await
            .unwrap();
            match Partition::append(&part, &idempotent(46, 2)) {
                Ok(AppendOutcome::Duplicate { base_offset }) => assert_eq!(base_offset, Offset(46)),
                Ok(_) => panic!("a retried batch was appended twice after restart"),
                Err(e) => panic!("a retried batch was refused after restart: {e}"),
            }
            append_durable(&part, &idempotent(54, 2))
                .await
                .expect("next sequence appends");
            assert!(matches!(
                Partition::append(&part, &idempotent(70, 2)),
                Err(Error::OutOfOrderSequence)
            ));
        });
    }
}
