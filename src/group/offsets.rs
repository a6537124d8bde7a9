//! Committed offsets of the groups a shard coordinates, kept in an internal log (Kafka's
//! `__consumer_offsets` idea) on the same partition code as user data, so commits get the same
//! durability policy and recovery. Runs on: the shard that owns each offsets partition.
//! Invariants: a commit is answered only after its record is durable; the in-memory view only
//! moves forward in log order (a record never overwrites a newer one); a group always maps to
//! the same offsets partition, whatever the shard count (so `--shards` changes move partitions,
//! not groups' offsets).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::placement::{fnv1a_32, partition_owner};
use crate::protocol::record_batch::{self, BATCH_HEADER_BYTES};
use crate::protocol::types::{LeaderEpoch, PartitionId, ShardId, TopicId, TopicPartition};
use crate::runtime::env::Env;
use crate::runtime::fs::{read_whole, write_atomic};
use crate::storage::{AppendOutcome, LogConfig, Partition, PartitionHandle};

pub use crate::constants::{OFFSETS_PARTITIONS, OFFSETS_TOPIC, OFFSETS_TOPIC_ID};
/// Bytes read per step when replaying an offsets partition at start.
const REPLAY_READ_BYTES: usize = 1 << 20;

/// The offsets partition of a group.
pub fn offsets_partition(group: &str) -> u32 {
    fnv1a_32(group.as_bytes()) % OFFSETS_PARTITIONS
}

/// The shard that coordinates a group: the owner of its offsets partition.
pub fn group_owner(group: &str, shard_count: usize) -> ShardId {
    partition_owner(
        OFFSETS_TOPIC,
        PartitionId(offsets_partition(group) as i32),
        shard_count,
    )
}

/// One committed offset.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    /// The topic's id when committed: offsets of a deleted (or re-created) topic are not served.
    pub topic_id: TopicId,
    /// Position of the record in the offsets log (newer wins).
    pub record_offset: i64,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    assert!(
        s.len() <= u16::MAX as usize,
        "group and topic names fit a u16 length (the wire limits them to i16)"
    );
    out.extend((s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn take_str(bytes: &[u8], pos: &mut usize) -> Option<String> {
    let len = u16::from_be_bytes(bytes.get(*pos..*pos + 2)?.try_into().ok()?) as usize;
    let s = std::str::from_utf8(bytes.get(*pos + 2..*pos + 2 + len)?)
        .ok()?
        .to_string();
    *pos += 2 + len;
    Some(s)
}

/// Record key: version, group, topic, partition (names are at most i16-long in Kafka's
/// protocol, so a u16 length holds them).
pub fn encode_key(group: &str, tp: &TopicPartition) -> Vec<u8> {
    let mut k = vec![1u8];
    put_str(&mut k, group);
    put_str(&mut k, &tp.topic);
    k.extend(tp.partition.0.to_be_bytes());
    k
}

pub fn decode_key(bytes: &[u8]) -> Option<(String, TopicPartition)> {
    if bytes.first() != Some(&1) {
        return None;
    }
    let mut pos = 1;
    let group = take_str(bytes, &mut pos)?;
    let topic = take_str(bytes, &mut pos)?;
    let partition = i32::from_be_bytes(bytes.get(pos..pos + 4)?.try_into().ok()?);
    Some((group, TopicPartition::new(topic, partition)))
}

/// Record value: version, offset, leader epoch, topic id, metadata (or absent).
pub fn encode_value(c: &Committed) -> Vec<u8> {
    let mut v = vec![1u8];
    v.extend(c.offset.to_be_bytes());
    v.extend(c.leader_epoch.to_be_bytes());
    v.extend(c.topic_id.0);
    match &c.metadata {
        // Metadata may be up to GROUP_METADATA_BYTES_MAX: a u32 length, not a u16.
        Some(m) => {
            v.push(1);
            v.extend((m.len() as u32).to_be_bytes());
            v.extend_from_slice(m.as_bytes());
        }
        None => v.push(0),
    }
    v
}

pub fn decode_value(bytes: &[u8], record_offset: i64) -> Option<Committed> {
    if bytes.first() != Some(&1) || bytes.len() < 30 {
        return None;
    }
    let offset = i64::from_be_bytes(bytes[1..9].try_into().ok()?);
    let leader_epoch = i32::from_be_bytes(bytes[9..13].try_into().ok()?);
    let topic_id = TopicId(bytes[13..29].try_into().ok()?);
    let metadata = match bytes[29] {
        0 => None,
        _ => {
            let len = u32::from_be_bytes(bytes.get(30..34)?.try_into().ok()?) as usize;
            let text = bytes.get(34..34usize.checked_add(len)?)?;
            Some(std::str::from_utf8(text).ok()?.to_string())
        }
    };
    Some(Committed {
        offset,
        leader_epoch,
        metadata,
        topic_id,
        record_offset,
    })
}

type GroupOffsets = BTreeMap<TopicPartition, Committed>;

/// One offsets partition: its log and the commits in flight on it.
struct OffsetLog {
    part: PartitionHandle,
    /// Commits appended but not yet applied. At 0, every durable record is in the map, so a
    /// snapshot of the map covers the whole log.
    inflight: std::cell::Cell<usize>,
    /// A compaction is writing its snapshot (one at a time: they share the temp file).
    compacting: std::cell::Cell<bool>,
}

/// One entry of a compacting snapshot.
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct SnapshotEntry {
    group: String,
    topic: String,
    partition: i32,
    offset: i64,
    leader_epoch: i32,
    metadata: Option<String>,
    topic_id: [u8; 16],
    record_offset: i64,
}

/// A compacting snapshot of one offsets partition: every live entry below `covered`.
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct Snapshot {
    covered: i64,
    entries: Vec<SnapshotEntry>,
}

fn snapshot_path(dir: &Path) -> std::path::PathBuf {
    dir.join("offsets.snapshot")
}

fn encode_snapshot(snapshot: &Snapshot) -> Vec<u8> {
    let payload =
        rkyv::to_bytes::<rkyv::rancor::Error>(snapshot).expect("offsets snapshot encodes");
    crate::storage::framing::frame(&payload)
}

fn decode_snapshot(bytes: &[u8]) -> Option<Snapshot> {
    let payload = crate::storage::framing::unframe(bytes)?;
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(payload.len());
    aligned.extend_from_slice(payload);
    rkyv::from_bytes::<Snapshot, rkyv::rancor::Error>(&aligned).ok()
}

/// The committed offsets of the groups this shard coordinates.
pub struct OffsetStore {
    env: Env,
    logs: HashMap<u32, OffsetLog>,
    /// Partitions owned here whose recovery failed.
    offline: std::collections::HashSet<u32>,
    committed: RefCell<HashMap<String, GroupOffsets>>,
}

impl OffsetStore {
    /// Opens (recovering) and replays the offsets partitions `shard` owns. One that cannot be
    /// recovered is logged and left offline (its groups get COORDINATOR_NOT_AVAILABLE); the
    /// rest of the broker serves.
    pub async fn open(
        env: &Env,
        data_dir: &Path,
        shard: ShardId,
        shard_count: usize,
        log: &LogConfig,
    ) -> OffsetStore {
        let mut store = OffsetStore {
            env: env.clone(),
            logs: HashMap::new(),
            committed: RefCell::new(HashMap::new()),
            offline: std::collections::HashSet::new(),
        };
        for p in 0..OFFSETS_PARTITIONS {
            let tp = TopicPartition::new(OFFSETS_TOPIC, p as i32);
            if partition_owner(OFFSETS_TOPIC, tp.partition, shard_count) != shard {
                continue;
            }
            match store.open_one(data_dir, &tp, log).await {
                Ok(part) => {
                    store.logs.insert(
                        p,
                        OffsetLog {
                            part,
                            inflight: std::cell::Cell::new(0),
                            compacting: std::cell::Cell::new(false),
                        },
                    );
                }
                Err(e) => {
                    tracing::error!(partition = %tp, error = %e,
                        "an offsets partition could not be recovered; it stays offline and its \
                         groups get COORDINATOR_NOT_AVAILABLE");
                    store.offline.insert(p);
                }
            }
        }
        store
    }

    /// Recovers one offsets partition and applies its snapshot and records.
    async fn open_one(
        &self,
        data_dir: &Path,
        tp: &TopicPartition,
        log: &LogConfig,
    ) -> Result<PartitionHandle, String> {
        let dir = data_dir.join(tp.to_string());
        let env = &self.env;
        crate::storage::dir::claim_partition_dir(env, &dir, TopicId(OFFSETS_TOPIC_ID)).await?;
        let part = Partition::open(env, &dir, tp.clone(), log.clone(), LeaderEpoch(0))
            .await
            .map_err(|e| e.to_string())?;
        // The snapshot first (the state of the deleted segments), then every record still in
        // the log; newer records win, so replaying some the snapshot covers is harmless.
        let snapshot = read_whole(env.fs.as_ref(), &snapshot_path(&dir))
            .await
            .map_err(|e| e.to_string())?
            .and_then(|b| decode_snapshot(&b));
        match snapshot {
            Some(snapshot) => self.load_snapshot(snapshot),
            // Segments were deleted because a snapshot covered them: without it, committed
            // offsets would silently be lost.
            None if part.borrow().log_start().0 > 0 => return Err(
                "the offsets snapshot is missing or corrupt and the segments it covered are gone"
                    .into(),
            ),
            None => {}
        }
        self.replay(&part).await.map_err(|e| e.to_string())?;
        Ok(part)
    }

    /// True if the group's offsets partition is owned here but could not be recovered.
    pub fn is_offline(&self, group: &str) -> bool {
        self.offline.contains(&offsets_partition(group))
    }

    /// True if any offsets partition owned here could not be recovered (its groups cannot
    /// be listed).
    pub fn any_offline(&self) -> bool {
        !self.offline.is_empty()
    }

    async fn replay(&self, part: &PartitionHandle) -> Result<(), crate::storage::Error> {
        let mut next = part.borrow().log_start();
        loop {
            let read = Partition::read(part, next, REPLAY_READ_BYTES).await?;
            if read.records.is_empty() {
                return Ok(());
            }
            let mut at = 0usize;
            while at + BATCH_HEADER_BYTES <= read.records.len() {
                let batch = &read.records[at..];
                // CRC checked: a closed segment trusted through its index is not scanned at
                // recovery, and a damaged record must not be applied as a committed offset.
                let header = record_batch::parse_header(batch, usize::MAX, true)
                    .map_err(crate::storage::Error::InvalidBatch)?;
                let whole = record_batch::for_each_record(batch, &header, |offset, key, value| {
                    if offset >= next {
                        self.apply(offset.0, key, value);
                    }
                });
                if !whole {
                    return Err(crate::storage::Error::InvalidBatch(
                        crate::protocol::record_batch::BatchError::Invalid,
                    ));
                }
                next = header.last_offset().next();
                at += header.total_bytes;
            }
        }
    }

    fn load_snapshot(&self, snapshot: Snapshot) {
        let mut committed = self.committed.borrow_mut();
        for e in snapshot.entries {
            committed.entry(e.group).or_default().insert(
                TopicPartition::new(e.topic, e.partition),
                Committed {
                    offset: e.offset,
                    leader_epoch: e.leader_epoch,
                    metadata: e.metadata,
                    topic_id: TopicId(e.topic_id),
                    record_offset: e.record_offset,
                },
            );
        }
    }

    /// Applies one record; an older record never overrides a newer one (so records replayed
    /// after a snapshot that already covers them change nothing).
    fn apply(&self, record_offset: i64, key: Option<&[u8]>, value: Option<&[u8]>) {
        let Some((group, tp)) = key.and_then(decode_key) else {
            return;
        };
        let mut committed = self.committed.borrow_mut();
        let newer = |old: Option<&Committed>| old.is_none_or(|o| o.record_offset < record_offset);
        match value.and_then(|v| decode_value(v, record_offset)) {
            Some(c) => {
                let entries = committed.entry(group).or_default();
                if newer(entries.get(&tp)) {
                    entries.insert(tp, c);
                }
            }
            None => {
                if let Some(entries) = committed.get_mut(&group) {
                    if newer(entries.get(&tp)) {
                        entries.remove(&tp);
                    }
                    if entries.is_empty() {
                        committed.remove(&group);
                    }
                }
            }
        }
    }

    /// Compacts partition `p` once it has a closed segment and no commit is in flight: the
    /// live entries of its groups go to a snapshot file (written, synced, renamed), then the
    /// closed segments below it are deleted.
    async fn maybe_compact(&self, p: u32) -> Result<(), String> {
        let log = self.logs.get(&p).expect("owned offsets partition");
        if log.inflight.get() != 0
            || log.compacting.get()
            || log.part.borrow().closed_segments() == 0
        {
            return Ok(());
        }
        let (covered, dir) = {
            let part = log.part.borrow();
            (part.high_watermark(), part.dir().to_owned())
        };
        let entries = self
            .committed
            .borrow()
            .iter()
            .filter(|(group, _)| offsets_partition(group) == p)
            .flat_map(|(group, entries)| {
                entries.iter().map(move |(tp, c)| SnapshotEntry {
                    group: group.clone(),
                    topic: tp.topic.clone(),
                    partition: tp.partition.0,
                    offset: c.offset,
                    leader_epoch: c.leader_epoch,
                    metadata: c.metadata.clone(),
                    topic_id: c.topic_id.0,
                    record_offset: c.record_offset,
                })
            })
            .collect();
        let bytes = encode_snapshot(&Snapshot {
            covered: covered.0,
            entries,
        });
        log.compacting.set(true);
        let written = write_atomic(self.env.fs.as_ref(), &snapshot_path(&dir), bytes).await;
        log.compacting.set(false);
        written.map_err(|e| e.to_string())?;
        let deleted = crate::storage::delete_segments_before(&log.part, covered).await;
        tracing::info!(
            partition = p,
            covered = covered.0,
            deleted,
            "compacted the offsets log"
        );
        Ok(())
    }

    /// Appends (group, partition) → value records (`None`: delete) and applies them once
    /// durable. `Err` carries the reason (a storage failure).
    pub async fn write(
        &self,
        group: &str,
        entries: Vec<(TopicPartition, Option<Committed>)>,
    ) -> Result<(), String> {
        if entries.is_empty() {
            return Ok(());
        }
        if group.len() > crate::constants::GROUP_ID_BYTES_MAX {
            return Err(format!(
                "group id longer than {} bytes",
                crate::constants::GROUP_ID_BYTES_MAX
            ));
        }
        let p = offsets_partition(group);
        let Some(log) = self.logs.get(&p) else {
            return Err("this shard does not own the group's offsets partition".into());
        };
        let keys: Vec<Vec<u8>> = entries
            .iter()
            .map(|(tp, _)| encode_key(group, tp))
            .collect();
        let values: Vec<Option<Vec<u8>>> = entries
            .iter()
            .map(|(_, c)| c.as_ref().map(encode_value))
            .collect();
        let records: Vec<record_batch::RecordRef> = keys
            .iter()
            .zip(&values)
            .map(|(k, v)| (Some(k.as_slice()), v.as_deref()))
            .collect();
        let batch = record_batch::encode_records(&records, self.env.wall_ms(), 0);
        let appended = Partition::append(&log.part, &batch).map_err(|e| e.to_string())?;
        let (base, durable) = match appended {
            AppendOutcome::Appended {
                base_offset,
                durable,
            } => (base_offset, durable),
            AppendOutcome::Duplicate { .. } => unreachable!("offset records carry no producer id"),
        };
        log.inflight.set(log.inflight.get() + 1);
        let result = durable
            .await
            .map_err(|_| "offsets log writer gone".to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        log.inflight.set(log.inflight.get() - 1);
        result?;
        for (i, (key, value)) in keys.iter().zip(&values).enumerate() {
            self.apply(base.0 + i as i64, Some(key), value.as_deref());
        }
        if let Err(e) = self.maybe_compact(p).await {
            // The log stays complete; compaction is retried after the next commit.
            tracing::warn!(partition = p, error = %e, "offsets log compaction failed");
        }
        Ok(())
    }

    /// The group's committed offsets: all of them, or those of `partitions`.
    pub fn fetch(
        &self,
        group: &str,
        partitions: Option<&[TopicPartition]>,
    ) -> Vec<(TopicPartition, Committed)> {
        let committed = self.committed.borrow();
        let Some(entries) = committed.get(group) else {
            return Vec::new();
        };
        match partitions {
            None => entries
                .iter()
                .map(|(tp, c)| (tp.clone(), c.clone()))
                .collect(),
            Some(tps) => tps
                .iter()
                .filter_map(|tp| entries.get(tp).map(|c| (tp.clone(), c.clone())))
                .collect(),
        }
    }

    /// The offsets partitions (for the interval flusher and the shutdown drain).
    pub fn partitions(&self) -> Vec<PartitionHandle> {
        self.logs.values().map(|l| l.part.clone()).collect()
    }

    /// Groups that have committed offsets.
    pub fn groups(&self) -> Vec<String> {
        self.committed.borrow().keys().cloned().collect()
    }

    pub fn has_group(&self, group: &str) -> bool {
        self.committed.borrow().contains_key(group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_round_trip() {
        let tp = TopicPartition::new("orders", 3);
        assert_eq!(
            decode_key(&encode_key("g1", &tp)),
            Some(("g1".to_string(), tp))
        );
        let c = Committed {
            offset: 42,
            leader_epoch: 7,
            metadata: Some("m".into()),
            topic_id: TopicId([9; 16]),
            record_offset: 5,
        };
        assert_eq!(decode_value(&encode_value(&c), 5), Some(c.clone()));
        let bare = Committed {
            metadata: None,
            ..c
        };
        assert_eq!(decode_value(&encode_value(&bare), 5), Some(bare));
        let long = Committed {
            metadata: Some("x".repeat(100_000)),
            ..c.clone()
        };
        assert_eq!(
            decode_value(&encode_value(&long), 5),
            Some(long),
            "metadata over 64 KiB"
        );
        assert_eq!(decode_key(&[1, 0, 9]), None);
        assert_eq!(decode_value(&[1, 2, 3], 0), None);
    }

    #[test]
    fn group_placement_is_stable_and_in_range() {
        assert_eq!(offsets_partition("g"), offsets_partition("g"));
        for shards in 1..5 {
            assert!(group_owner("some-group", shards).0 < shards);
        }
    }
}
