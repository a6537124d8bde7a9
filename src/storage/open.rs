//! Opening a partition: recovering its segments (scanning those that need it, cutting a
//! torn active tail), rebuilding its idempotence state and epoch cache, and syncing what
//! recovery found before calling it flushed. Runs on: the owning shard, when the partition is
//! opened (at start, at topic creation, when an offline partition is tried again).

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::rc::Rc;

use super::epochs::{EpochCache, EPOCH_CHECKPOINT};
use super::partition::{Partition, PartitionHandle, WrittenMark};
use super::producer::ProducerStates;
use super::segment::{self, Segment};
use super::{Error, LogConfig};
use crate::constants::DIRECT_IO_ALIGNMENT_BYTES;
use crate::protocol::types::{LeaderEpoch, Offset, TopicPartition};
use crate::runtime::env::Env;
use crate::runtime::fs::read_whole;

impl Partition {
    /// Opens (recovering) or creates the partition's log in `dir`.
    pub async fn open(
        env: &Env,
        dir: &Path,
        tp: TopicPartition,
        config: LogConfig,
        epoch: LeaderEpoch,
    ) -> Result<PartitionHandle, Error> {
        env.fs.create_dir_all(dir).await?;
        if let Some(parent) = dir.parent() {
            env.fs.sync_dir(parent).await?;
        }
        let bases = segment::list_segments(env, dir).await?;
        let RecoveredLog {
            mut segments,
            producers,
            mut epochs,
        } = recover_segments(env, dir, &bases, &config).await?;
        if segments.is_empty() {
            let seg = segment::create_segment(env, dir, Offset(0), &config).await?;
            segments.insert(Offset(0), seg);
        }
        let (tail_file_pos, tail) = read_tail(&segments, &tp).await?;
        let active = segments.values().next_back().expect("at least one segment");
        let log_end = active.next_offset;
        // What recovery found may still sit in the page cache only (the process died, the
        // machine did not): sync it before calling it flushed.
        if active.size_bytes > 0 {
            active.file.fdatasync().await?;
        }
        let epochs_dirty = epochs.truncate_from(log_end);
        let log_start = *segments.keys().next().expect("at least one segment");
        let written = WrittenMark {
            offset: log_end,
            size_bytes: active.size_bytes,
            allocated_bytes: active.allocated_bytes,
            index: active.index.mark(),
            tail_file_pos,
            tail: tail.clone(),
        };
        let last_epoch = epochs.latest().map_or(LeaderEpoch(0), |(e, _)| e);
        let partition = Partition {
            tp,
            dir: dir.to_owned(),
            config,
            env: env.clone(),
            epoch: epoch.max(last_epoch),
            segments,
            tail,
            tail_file_pos,
            log_start,
            log_end,
            written,
            flushed: log_end,
            high_watermark: log_end,
            hwm_cap: None,
            data_waiters: Vec::new(),
            truncating: false,
            pending: VecDeque::new(),
            writer_active: false,
            cache: VecDeque::new(),
            cache_bytes: 0,
            producers,
            producer_undo: VecDeque::new(),
            waiters: Vec::new(),
            waiters_live: 0,
            failed: None,
            unsynced: false,
            exhausted: false,
            epochs,
            epochs_dirty,
        };
        partition.assert_stages("open");
        Ok(Rc::new(RefCell::new(partition)))
    }
}

/// The active segment's last partial block: its aligned position and bytes (the next write
/// starts with them).
async fn read_tail(
    segments: &BTreeMap<Offset, Segment>,
    tp: &TopicPartition,
) -> Result<(u64, Vec<u8>), Error> {
    let active = segments.values().next_back().expect("at least one segment");
    let pos = active.size_bytes / DIRECT_IO_ALIGNMENT_BYTES * DIRECT_IO_ALIGNMENT_BYTES;
    let tail = if active.size_bytes > pos {
        active
            .file
            .read_at(pos, (active.size_bytes - pos) as usize)
            .await?
            .to_vec()
    } else {
        Vec::new()
    };
    assert_eq!(
        tail.len() as u64,
        active.size_bytes - pos,
        "{tp}: the tail block must be read whole at recovery"
    );
    Ok((pos, tail))
}

/// What recovering a partition's segments yields.
struct RecoveredLog {
    segments: BTreeMap<Offset, Segment>,
    producers: ProducerStates,
    epochs: EpochCache,
}

/// Opens every segment (scanning those that need it), rebuilds the idempotence state from the
/// active segment's snapshot plus the batches scanned from there on, and the epoch cache from
/// its checkpoint plus the epochs scanned.
async fn recover_segments(
    env: &Env,
    dir: &Path,
    bases: &[Offset],
    config: &LogConfig,
) -> Result<RecoveredLog, Error> {
    let mut segments = BTreeMap::new();
    // Idempotence state: the snapshot taken when the active segment was started (state of
    // every earlier batch), then the batches of the segments scanned from there on.
    let snapshot_offset = bases.last().copied();
    let snapshot = match snapshot_offset {
        Some(base) => read_whole(env.fs.as_ref(), &segment::snapshot_path(dir, base))
            .await?
            .and_then(|bytes| ProducerStates::from_snapshot(&bytes)),
        None => None,
    };
    let replay_from = if snapshot.is_some() {
        snapshot_offset
    } else {
        None
    };
    let mut producers = snapshot.unwrap_or_default();
    let mut epochs = read_whole(env.fs.as_ref(), &dir.join(EPOCH_CHECKPOINT))
        .await?
        .and_then(|b| EpochCache::decode(&b))
        .unwrap_or_default();
    let mut last_epoch = LeaderEpoch(0);
    for (i, base) in bases.iter().enumerate() {
        let is_last = i + 1 == bases.len();
        let recovered = segment::open_segment(env, dir, *base, is_last, config, last_epoch).await?;
        if let Some(scan) = &recovered.scan {
            last_epoch = scan.last_epoch;
            for (epoch, start) in &scan.epoch_starts {
                epochs.assign(*epoch, *start);
            }
            if replay_from.is_none_or(|from| *base >= from) {
                producers.replay(&scan.producer_batches);
            }
        }
        segments.insert(*base, recovered.segment);
    }
    // A closed segment ends where the next one begins.
    let bases: Vec<Offset> = segments.keys().copied().collect();
    for pair in bases.windows(2) {
        let seg = segments.get_mut(&pair[0]).expect("segment listed");
        if seg.closed && seg.index.offsets.len() + seg.size_bytes as usize > 0 {
            seg.next_offset = pair[1];
        }
    }
    Ok(RecoveredLog {
        segments,
        producers,
        epochs,
    })
}
