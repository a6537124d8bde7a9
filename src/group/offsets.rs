//! Committed offsets of the groups a shard coordinates, kept in an internal log (Kafka's
//! `__consumer_offsets`) on the same partition code as user data, so commits get the same
//! durability policy and recovery. In a cluster the offsets partitions are replicated like any
//! other: the shard appends through the partition's replication (`OffsetsAppend`, acks=all),
//! and a broker serves a partition's groups only while it leads that partition, from a view
//! rebuilt from its log when leadership arrives (`lead`) and dropped when it goes (`unlead`).
//! Runs on: the shard that owns each offsets partition.
//! Invariants: a commit is answered only once every in-sync replica has its record durably, so
//! a new leader's log holds every acknowledged commit; the in-memory view only moves forward in
//! log order (a record never overwrites a newer one) and covers only partitions led here; a
//! group always maps to the same offsets partition, whatever the shard count. Compaction
//! re-appends the live entries through the same replicated path and only then drops the
//! segments below them, so followers and a later leader hold them too.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::rc::Rc;

use crate::placement::{fnv1a_32, partition_owner};
use crate::protocol::record_batch::{self, BATCH_HEADER_BYTES};
use crate::protocol::types::{LeaderEpoch, Offset, PartitionId, ShardId, TopicId, TopicPartition};
use crate::runtime::env::Env;
use crate::runtime::fs::read_whole;
use crate::storage::{LogConfig, Partition, PartitionHandle};

pub use crate::constants::{OFFSETS_PARTITIONS, OFFSETS_TOPIC, OFFSETS_TOPIC_ID};
/// Bytes read per step when replaying an offsets partition.
const REPLAY_READ_BYTES: usize = 1 << 20;
/// Loads of an offsets partition tried before it is declared offline, and the pause between.
const LOAD_ATTEMPTS: u32 = 5;
const LOAD_RETRY_MS: u64 = 1_000;
/// Record bytes per batch when compaction re-appends the live entries.
const COMPACT_BATCH_BYTES: usize = 256 * 1024;

/// Resolves once an appended offsets batch is acknowledged (durable on every in-sync replica).
pub type Acked = Pin<Box<dyn Future<Output = Result<(), WriteError>>>>;

/// How the store's batches reach an offsets partition: the shard routes them through the
/// partition's replication, which this layer does not see.
pub trait OffsetsAppend {
    /// Appends `batch` to offsets partition `partition` (never awaits): its base offset, and
    /// what resolves once it is acknowledged.
    fn append(&self, partition: u32, batch: &[u8]) -> Result<(Offset, Acked), WriteError>;
}

/// Why a write to the offsets log failed (the coordinator picks the group code).
#[derive(Debug, Clone, PartialEq)]
pub enum WriteError {
    /// This broker does not (or no longer) lead the group's offsets partition.
    NotCoordinator,
    /// The in-sync replicas did not take it (too few of them, or not in time): retriable.
    Unavailable(String),
    /// The log failed.
    Storage(String),
    /// The group id is longer than the offsets log keys hold.
    InvalidGroup,
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::NotCoordinator => write!(f, "not the coordinator (any more)"),
            WriteError::Unavailable(why) => write!(f, "replicas unavailable: {why}"),
            WriteError::Storage(why) => write!(f, "{why}"),
            WriteError::InvalidGroup => write!(f, "group id too long"),
        }
    }
}

/// Whether this broker serves an offsets partition's groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lead {
    /// Another broker leads it (or nobody does): NOT_COORDINATOR.
    NotLed,
    /// Led here; its view is being rebuilt from the log: COORDINATOR_LOAD_IN_PROGRESS.
    Loading,
    /// Led here, its view complete.
    Led,
}

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

/// An offsets record's key and value (`None`: a delete), encoded.
type KeyValue = (Vec<u8>, Option<Vec<u8>>);

/// One offsets partition: its log, its leadership here and the commits in flight on it.
struct OffsetLog {
    part: PartitionHandle,
    /// Commits appended but not yet applied. At 0, every acknowledged record is in the view,
    /// so re-appending the view covers the whole log.
    inflight: Cell<usize>,
    /// A compaction is re-appending the live entries (one at a time).
    compacting: Cell<bool>,
    lead: Cell<Lead>,
    /// The leader epoch the view was (or is being) loaded for.
    led_epoch: Cell<i32>,
    /// Bumped on every change of leadership: work begun under an older term applies nothing.
    term: Cell<u64>,
    /// Compaction is not considered again until the log holds this many bytes.
    next_compact_bytes: Cell<u64>,
}

/// A compacting snapshot of an offsets partition, written by earlier versions (which deleted
/// the segments it covered); still read, so their committed offsets survive an upgrade.
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

#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct Snapshot {
    covered: i64,
    entries: Vec<SnapshotEntry>,
}

fn snapshot_path(dir: &Path) -> std::path::PathBuf {
    dir.join("offsets.snapshot")
}

#[cfg(test)]
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

/// The committed offsets of the groups whose offsets partitions this shard owns and leads.
pub struct OffsetStore {
    env: Env,
    logs: HashMap<u32, OffsetLog>,
    /// Partitions owned here whose recovery (or load) failed.
    offline: RefCell<HashSet<u32>>,
    committed: RefCell<HashMap<String, GroupOffsets>>,
    /// Where the latest applied delete of each (group, partition) is in the log, so that an
    /// older value acknowledged after it (or re-appended by a compaction that began before
    /// it) does not bring the entry back. Dropped with the segments a compaction removes.
    deleted: RefCell<HashMap<(String, TopicPartition), i64>>,
    appender: Rc<dyn OffsetsAppend>,
}

impl OffsetStore {
    /// Opens (recovering) the offsets partitions `shard` owns. With `lead_all` (one node) every
    /// one is led here and loaded now, before serving; in a cluster each waits for `lead`. One
    /// that cannot be recovered is logged and left offline (its groups get
    /// COORDINATOR_NOT_AVAILABLE); the rest of the broker serves.
    pub async fn open(
        env: &Env,
        data_dir: &Path,
        (shard, shard_count): (ShardId, usize),
        log: &LogConfig,
        appender: Rc<dyn OffsetsAppend>,
        lead_all: bool,
    ) -> OffsetStore {
        let mut store = OffsetStore {
            env: env.clone(),
            logs: HashMap::new(),
            committed: RefCell::new(HashMap::new()),
            deleted: RefCell::new(HashMap::new()),
            offline: RefCell::new(HashSet::new()),
            appender,
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
                            inflight: Cell::new(0),
                            compacting: Cell::new(false),
                            lead: Cell::new(Lead::NotLed),
                            led_epoch: Cell::new(-1),
                            term: Cell::new(0),
                            next_compact_bytes: Cell::new(0),
                        },
                    );
                }
                Err(e) => store.set_offline(p, &e),
            }
        }
        if lead_all {
            let owned: Vec<u32> = store.logs.keys().copied().collect();
            for p in owned {
                store.lead(p, 0).await;
            }
        }
        store
    }

    fn set_offline(&self, p: u32, why: &str) {
        tracing::error!(partition = p, error = %why,
            "an offsets partition could not be recovered; it stays offline and its groups get \
             COORDINATOR_NOT_AVAILABLE");
        self.offline.borrow_mut().insert(p);
    }

    /// Recovers one offsets partition's log.
    async fn open_one(
        &self,
        data_dir: &Path,
        tp: &TopicPartition,
        log: &LogConfig,
    ) -> Result<PartitionHandle, String> {
        let dir = data_dir.join(tp.to_string());
        let env = &self.env;
        crate::storage::dir::claim_partition_dir(env, &dir, TopicId(OFFSETS_TOPIC_ID)).await?;
        Partition::open(env, &dir, tp.clone(), log.clone(), LeaderEpoch(0))
            .await
            .map_err(|e| e.to_string())
    }

    /// The offsets partitions owned here, with their logs (the shard gives each its
    /// replication).
    pub fn owned(&self) -> Vec<(u32, PartitionHandle)> {
        self.logs
            .iter()
            .map(|(p, l)| (*p, l.part.clone()))
            .collect()
    }

    /// This broker now leads offsets partition `p` at `epoch`: its view is rebuilt from the
    /// log (an earlier version's snapshot first, then every record written), and its groups
    /// are served once that is done. A load under an older leadership is abandoned.
    pub async fn lead(&self, p: u32, epoch: i32) {
        let Some(log) = self.logs.get(&p) else { return };
        if log.lead.get() != Lead::NotLed && log.led_epoch.get() == epoch {
            return;
        }
        self.unlead(p);
        log.lead.set(Lead::Loading);
        log.led_epoch.set(epoch);
        let term = log.term.get();
        // A load that fails for a passing reason (the log start moved under the replay) is
        // tried again while the leadership lasts; a log that keeps failing goes offline.
        for attempt in 1..=LOAD_ATTEMPTS {
            let loaded = self.load(p, &log.part, term).await;
            if log.term.get() != term {
                return;
            }
            match loaded {
                Ok(()) => {
                    log.lead.set(Lead::Led);
                    tracing::info!(
                        partition = p,
                        epoch,
                        "coordinating the groups of an offsets partition"
                    );
                    return;
                }
                Err(e) if attempt < LOAD_ATTEMPTS => {
                    tracing::warn!(partition = p, error = %e, attempt, "loading an offsets partition failed; trying again");
                    self.forget(p);
                    self.env
                        .sleep(std::time::Duration::from_millis(LOAD_RETRY_MS))
                        .await;
                    if log.term.get() != term {
                        return;
                    }
                }
                Err(e) => {
                    log.lead.set(Lead::NotLed);
                    self.forget(p);
                    self.set_offline(p, &e);
                }
            }
        }
    }

    /// This broker no longer leads offsets partition `p`: its groups' view goes (a later
    /// leadership loads it anew from the log, which followed the leader meanwhile).
    pub fn unlead(&self, p: u32) {
        let Some(log) = self.logs.get(&p) else { return };
        log.term.set(log.term.get() + 1);
        if log.lead.replace(Lead::NotLed) != Lead::NotLed {
            self.forget(p);
        }
    }

    /// Whether the group's offsets partition is led (and loaded) here.
    pub fn lead_of(&self, group: &str) -> Lead {
        self.logs
            .get(&offsets_partition(group))
            .map_or(Lead::NotLed, |l| l.lead.get())
    }

    /// Whether offsets partition `p` is led (and loaded) here.
    pub fn lead_of_partition(&self, p: u32) -> Lead {
        self.logs.get(&p).map_or(Lead::NotLed, |l| l.lead.get())
    }

    /// Drops the view of partition `p`'s groups.
    fn forget(&self, p: u32) {
        self.committed
            .borrow_mut()
            .retain(|group, _| offsets_partition(group) != p);
        self.deleted
            .borrow_mut()
            .retain(|(group, _), _| offsets_partition(group) != p);
    }

    async fn load(&self, p: u32, part: &PartitionHandle, term: u64) -> Result<(), String> {
        let dir = part.borrow().dir().to_owned();
        let snapshot = read_whole(self.env.fs.as_ref(), &snapshot_path(&dir))
            .await
            .map_err(|e| e.to_string())?;
        if self.logs.get(&p).is_some_and(|l| l.term.get() != term) {
            return Ok(());
        }
        if let Some(bytes) = snapshot {
            let snapshot = decode_snapshot(&bytes)
                .ok_or_else(|| "the offsets snapshot is corrupt".to_string())?;
            self.load_snapshot(snapshot);
        }
        self.replay(p, part, term).await.map_err(|e| e.to_string())
    }

    /// True if the group's offsets partition is owned here but could not be recovered.
    pub fn is_offline(&self, group: &str) -> bool {
        self.offline.borrow().contains(&offsets_partition(group))
    }

    /// True if any offsets partition owned here could not be recovered (its groups cannot
    /// be listed).
    pub fn any_offline(&self) -> bool {
        !self.offline.borrow().is_empty()
    }

    /// Applies every record of the log, to its end (a new leader's unreplicated tail too:
    /// followers take it from this log from now on).
    async fn replay(
        &self,
        p: u32,
        part: &PartitionHandle,
        term: u64,
    ) -> Result<(), crate::storage::Error> {
        let mut next = part.borrow().log_start();
        loop {
            let read = Partition::read_for_follower(part, next, REPLAY_READ_BYTES).await?;
            if self.logs.get(&p).is_some_and(|l| l.term.get() != term) {
                return Ok(());
            }
            if read.records.is_empty() {
                // Batches placed but not yet written (a follower's last fetch) belong to the
                // log this leadership continues: wait for them.
                let pending = {
                    let log = part.borrow();
                    log.written() < log.log_end() && log.failure().is_none()
                };
                if !pending {
                    return Ok(());
                }
                self.env.sleep(std::time::Duration::from_millis(1)).await;
                continue;
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
        let mut deleted = self.deleted.borrow_mut();
        let key = (group, tp);
        if deleted.get(&key).is_some_and(|at| *at > record_offset) {
            return;
        }
        let (group, tp) = key;
        match value.and_then(|v| decode_value(v, record_offset)) {
            Some(c) => {
                let entries = committed.entry(group).or_default();
                if newer(entries.get(&tp)) {
                    entries.insert(tp, c);
                }
            }
            None => {
                deleted.insert((group.clone(), tp.clone()), record_offset);
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

    /// Appends `records` to partition `p` in one batch: its base offset and acknowledgement.
    fn append_records(&self, p: u32, records: &[KeyValue]) -> Result<(Offset, Acked), WriteError> {
        let refs: Vec<record_batch::RecordRef> = records
            .iter()
            .map(|(k, v)| (Some(k.as_slice()), v.as_deref()))
            .collect();
        let batch = record_batch::encode_records(&refs, self.env.wall_ms(), 0);
        self.appender.append(p, &batch)
    }

    /// Appends (group, partition) → value records (`None`: delete) and applies them once
    /// acknowledged.
    pub async fn write(
        &self,
        group: &str,
        entries: Vec<(TopicPartition, Option<Committed>)>,
    ) -> Result<(), WriteError> {
        if entries.is_empty() {
            return Ok(());
        }
        if group.len() > crate::constants::GROUP_ID_BYTES_MAX {
            return Err(WriteError::InvalidGroup);
        }
        let p = offsets_partition(group);
        let log = match self.logs.get(&p) {
            Some(log) if log.lead.get() == Lead::Led => log,
            _ => return Err(WriteError::NotCoordinator),
        };
        let records: Vec<KeyValue> = entries
            .iter()
            .map(|(tp, c)| (encode_key(group, tp), c.as_ref().map(encode_value)))
            .collect();
        let term = log.term.get();
        let (base, acked) = self.append_records(p, &records)?;
        log.inflight.set(log.inflight.get() + 1);
        let result = acked.await;
        log.inflight.set(log.inflight.get() - 1);
        result?;
        // Leadership moved while the batch waited: the new leader's view has it (it was
        // acknowledged), this one is gone.
        if log.term.get() != term {
            return Err(WriteError::NotCoordinator);
        }
        for (i, (key, value)) in records.iter().enumerate() {
            self.apply(base.0 + i as i64, Some(key), value.as_deref());
        }
        if let Err(e) = self.maybe_compact(p).await {
            // The log stays complete; compaction is tried again after a later commit.
            tracing::warn!(partition = p, error = %e, "offsets log compaction failed");
        }
        Ok(())
    }

    /// The live entries of partition `p`'s groups as records, with their total bytes.
    fn live_records(&self, p: u32) -> (Vec<KeyValue>, u64) {
        let committed = self.committed.borrow();
        let records: Vec<KeyValue> = committed
            .iter()
            .filter(|(group, _)| offsets_partition(group) == p)
            .flat_map(|(group, entries)| {
                entries
                    .iter()
                    .map(move |(tp, c)| (encode_key(group, tp), Some(encode_value(c))))
            })
            .collect();
        let bytes = records
            .iter()
            .map(|(k, v)| (k.len() + v.as_ref().map_or(0, |v| v.len()) + 24) as u64)
            .sum();
        (records, bytes)
    }

    /// Compacts partition `p` once it has a closed segment, no commit is in flight and the
    /// log is more than twice its live entries: they are appended again (acknowledged like
    /// commits, so every in-sync replica has them), then the segments below them go, here
    /// and (through the log start) on the followers.
    async fn maybe_compact(&self, p: u32) -> Result<(), WriteError> {
        let log = self.logs.get(&p).expect("owned offsets partition");
        let size = log.part.borrow().size_bytes();
        if log.lead.get() != Lead::Led
            || log.inflight.get() != 0
            || log.compacting.get()
            || log.part.borrow().closed_segments() == 0
            || size < log.next_compact_bytes.get()
        {
            return Ok(());
        }
        let (records, live_bytes) = self.live_records(p);
        if size < 2 * live_bytes {
            log.next_compact_bytes.set(size + live_bytes);
            return Ok(());
        }
        log.compacting.set(true);
        let result = self.reappend(p, log, records).await;
        log.compacting.set(false);
        result
    }

    async fn reappend(
        &self,
        p: u32,
        log: &OffsetLog,
        records: Vec<KeyValue>,
    ) -> Result<(), WriteError> {
        let term = log.term.get();
        let mut batches = Vec::new();
        let mut first_base = log.part.borrow().log_end();
        let mut chunk_start = 0;
        let mut chunk_bytes = 0;
        // All appended before anything is awaited: no commit lands between the batches.
        for (i, (k, v)) in records.iter().enumerate() {
            chunk_bytes += k.len() + v.as_ref().map_or(0, |v| v.len());
            if chunk_bytes >= COMPACT_BATCH_BYTES || i + 1 == records.len() {
                let chunk = &records[chunk_start..=i];
                let (base, acked) = self.append_records(p, chunk)?;
                if batches.is_empty() {
                    first_base = base;
                }
                batches.push((base, chunk, acked));
                chunk_start = i + 1;
                chunk_bytes = 0;
            }
        }
        let mut applied = Vec::new();
        for (base, chunk, acked) in batches {
            acked.await?;
            applied.push((base, chunk));
        }
        if log.term.get() != term {
            return Err(WriteError::NotCoordinator);
        }
        // Newer-wins: a commit acknowledged meanwhile (at a later offset) keeps its value.
        for (base, chunk) in applied {
            for (i, (key, value)) in chunk.iter().enumerate() {
                self.apply(base.0 + i as i64, Some(key), value.as_deref());
            }
        }
        // An earlier version's snapshot must go before the segments it does not cover: a
        // delete recorded only in them would otherwise come back from it.
        let dir = log.part.borrow().dir().to_owned();
        let path = snapshot_path(&dir);
        match self.env.fs.remove_file(&path).await {
            Ok(()) => self
                .env
                .fs
                .sync_dir(&dir)
                .await
                .map_err(|e| WriteError::Storage(e.to_string()))?,
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(WriteError::Storage(e.to_string())),
        }
        let deleted = crate::storage::delete_segments_before(&log.part, first_base).await;
        // Deletes in the removed segments have nothing left to hide.
        let start = log.part.borrow().log_start().0;
        self.deleted
            .borrow_mut()
            .retain(|(group, _), at| offsets_partition(group) != p || *at >= start);
        log.next_compact_bytes.set(0);
        tracing::info!(
            partition = p,
            live = records.len(),
            from = first_base.0,
            deleted,
            "compacted the offsets log"
        );
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

    /// Groups that have committed offsets (in partitions led here).
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
    fn an_earlier_versions_snapshot_still_decodes() {
        let snapshot = Snapshot {
            covered: 12,
            entries: vec![SnapshotEntry {
                group: "g".into(),
                topic: "t".into(),
                partition: 1,
                offset: 40,
                leader_epoch: 2,
                metadata: Some("m".into()),
                topic_id: [3; 16],
                record_offset: 11,
            }],
        };
        let bytes = encode_snapshot(&snapshot);
        assert_eq!(decode_snapshot(&bytes), Some(snapshot));
        assert_eq!(decode_snapshot(&bytes[..bytes.len() - 1]), None);
    }

    struct Nowhere;
    impl OffsetsAppend for Nowhere {
        fn append(&self, _: u32, _: &[u8]) -> Result<(Offset, Acked), WriteError> {
            Err(WriteError::NotCoordinator)
        }
    }

    /// A delete hides every older value of its key, whatever order acknowledgements (or a
    /// compaction's re-append that began before the delete) are applied in.
    #[test]
    fn an_older_value_applied_after_a_delete_stays_deleted() {
        let fs = crate::testing::FaultFs::new();
        let clock = crate::testing::ManualClock::new(0);
        let store = OffsetStore {
            env: crate::testing::env(&fs, &clock, 1),
            logs: HashMap::new(),
            offline: RefCell::new(HashSet::new()),
            committed: RefCell::new(HashMap::new()),
            deleted: RefCell::new(HashMap::new()),
            appender: Rc::new(Nowhere),
        };
        let tp = TopicPartition::new("t", 0);
        let key = encode_key("g", &tp);
        let value = |offset| {
            encode_value(&Committed {
                offset,
                leader_epoch: 0,
                metadata: None,
                topic_id: TopicId([1; 16]),
                record_offset: 0,
            })
        };
        let read = || store.fetch("g", None).first().map(|(_, c)| c.offset);
        store.apply(10, Some(&key), Some(&value(100)));
        assert_eq!(read(), Some(100));
        store.apply(20, Some(&key), None);
        assert_eq!(read(), None);
        store.apply(15, Some(&key), Some(&value(150)));
        assert_eq!(read(), None, "a value older than the delete came back");
        store.apply(25, Some(&key), Some(&value(250)));
        assert_eq!(read(), Some(250), "a newer value counts");
        store.apply(22, Some(&key), Some(&value(220)));
        assert_eq!(read(), Some(250), "newer wins among values");
    }

    #[test]
    fn group_placement_is_stable_and_in_range() {
        assert_eq!(offsets_partition("g"), offsets_partition("g"));
        for shards in 1..5 {
            assert!(group_owner("some-group", shards).0 < shards);
        }
    }
}
