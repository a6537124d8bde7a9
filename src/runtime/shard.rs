//! A shard: the state one executor owns (its partitions, its copy of the metadata image, its end
//! of the mesh) and the routing of partition work to the owning shard. Runs on: every shard; a
//! `Shard` never leaves its thread (it is held in an `Rc`). Invariants: a partition is opened,
//! read and written only by `partition_owner(topic, partition)`; answers to a request that was
//! split across shards are merged back in request order; no borrow is held across an `.await`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_channel::oneshot;

use super::mesh::{Mesh, OpenPartition, PartitionRequest, PartitionResponse, ShardMessage};
use super::placement::partition_owner;
use crate::cluster::controller::Controller;
use crate::cluster::MetadataImage;
use crate::config::{Config, FetchPath};
use crate::group::coordinator::{Coordinator, GroupCall, GroupReply};
use crate::group::offsets::group_owner;
use crate::protocol::types::{Offset, ShardId, TopicPartition};
use crate::protocol::ErrorCode;
use crate::storage::{AppendOutcome, FetchRecords, Partition, PartitionHandle, Waiter};

pub struct Shard {
    pub id: ShardId,
    pub shard_count: usize,
    pub config: Arc<Config>,
    mesh: Mesh,
    partitions: RefCell<HashMap<TopicPartition, PartitionHandle>>,
    image: RefCell<Arc<MetadataImage>>,
    /// Present on the controller shard only.
    pub controller: Option<Controller>,
    next_producer_id: Cell<i64>,
    /// The group coordinator, set once the offsets partitions are recovered.
    pub coordinator: std::cell::OnceCell<Rc<Coordinator>>,
}

pub type ShardRef = Rc<Shard>;

impl Shard {
    pub fn new(
        id: ShardId,
        config: Arc<Config>,
        mesh: Mesh,
        image: Arc<MetadataImage>,
        controller: Option<Controller>,
    ) -> Shard {
        // Producer ids are `counter * shards + shard`, so shards never collide; the counter
        // starts at the clock in ms times 1024, so ids stay unique across restarts unless a
        // shard hands out more than 1024 per ms or the clock goes backwards.
        let counter_start = crate::storage::writer::now_ms_i64() * 1024;
        Shard {
            id,
            shard_count: config.shards,
            config,
            mesh,
            partitions: RefCell::new(HashMap::new()),
            image: RefCell::new(image),
            controller,
            next_producer_id: Cell::new(counter_start),
            coordinator: std::cell::OnceCell::new(),
        }
    }

    /// Partitions this shard owns and has open.
    pub fn local_partition_count(&self) -> usize {
        self.partitions.borrow().len()
    }

    /// Refreshes the gauges only a walk over the shard's state can give.
    pub fn update_metrics(&self) {
        let partitions = self.partitions.borrow();
        let log_bytes: u64 = partitions.values().map(|p| p.borrow().size_bytes()).sum();
        let groups = self.coordinator.get().map_or(0, |c| c.group_count());
        crate::metrics::with(|m| {
            use std::sync::atomic::Ordering::Relaxed;
            m.partitions.store(partitions.len() as u64, Relaxed);
            m.log_bytes.store(log_bytes, Relaxed);
            m.groups.store(groups as u64, Relaxed);
        });
    }

    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.borrow().clone()
    }

    /// Installs a new metadata image; partitions of topics whose configs changed take their
    /// new settings (retention, segment size) at once.
    pub fn set_image(&self, image: Arc<MetadataImage>) {
        let old = self.image.replace(image.clone());
        for (tp, part) in self.partitions.borrow().iter() {
            let (Some(new), Some(prev)) = (image.topics.get(&tp.topic), old.topics.get(&tp.topic))
            else {
                continue;
            };
            if new.configs != prev.configs {
                part.borrow_mut()
                    .set_config(self.config.topic_log_config(&new.configs));
            }
        }
    }

    pub fn owner(&self, tp: &TopicPartition) -> ShardId {
        partition_owner(&tp.topic, tp.partition, self.shard_count)
    }

    pub fn partition(&self, tp: &TopicPartition) -> Option<PartitionHandle> {
        self.partitions.borrow().get(tp).cloned()
    }

    pub fn local_partitions(&self) -> Vec<PartitionHandle> {
        self.partitions.borrow().values().cloned().collect()
    }

    /// Every log this shard writes: its partitions and its offsets partitions.
    pub fn local_logs(&self) -> Vec<PartitionHandle> {
        let mut logs = self.local_partitions();
        if let Some(c) = self.coordinator.get() {
            logs.extend(c.offsets.partitions());
        }
        logs
    }

    /// A new producer id (InitProducerId).
    pub fn allocate_producer_id(&self) -> i64 {
        let counter = self.next_producer_id.get();
        self.next_producer_id.set(counter + 1);
        counter * self.shard_count as i64 + self.id.0 as i64
    }

    pub async fn send(&self, to: ShardId, message: ShardMessage) -> bool {
        self.mesh.send(to.0, message).await
    }

    /// Runs partition work wherever each partition lives and returns the answers in order.
    pub async fn execute(
        self: &Rc<Self>,
        items: Vec<(TopicPartition, PartitionRequest)>,
    ) -> Vec<PartitionResponse> {
        let count = items.len();
        let mut groups: Vec<Vec<(usize, TopicPartition, PartitionRequest)>> =
            (0..self.shard_count).map(|_| Vec::new()).collect();
        for (i, (tp, req)) in items.into_iter().enumerate() {
            groups[self.owner(&tp).0].push((i, tp, req));
        }
        let mut results: Vec<Option<PartitionResponse>> = vec![None; count];
        let mut remote = Vec::new();
        let mut local = Vec::new();
        for (shard, group) in groups.into_iter().enumerate() {
            if group.is_empty() {
                continue;
            }
            if shard == self.id.0 {
                local = group;
                continue;
            }
            let fallbacks: Vec<(usize, PartitionResponse)> = group
                .iter()
                .map(|(i, _, r)| {
                    (
                        *i,
                        PartitionResponse::error_for(r, ErrorCode::NotLeaderOrFollower),
                    )
                })
                .collect();
            let items = group.into_iter().map(|(_, tp, r)| (tp, r)).collect();
            let (tx, rx) = oneshot::channel();
            if self
                .send(
                    ShardId(shard),
                    ShardMessage::Partitions { items, reply: tx },
                )
                .await
            {
                remote.push((fallbacks, Some(rx)));
            } else {
                remote.push((fallbacks, None));
            }
        }
        if !local.is_empty() {
            let idx: Vec<usize> = local.iter().map(|(i, _, _)| *i).collect();
            let answers = self
                .execute_local(local.into_iter().map(|(_, tp, r)| (tp, r)).collect())
                .await;
            for (i, a) in idx.into_iter().zip(answers) {
                results[i] = Some(a);
            }
        }
        for (fallbacks, rx) in remote {
            let answers = match rx {
                Some(rx) => rx.await.ok(),
                None => None,
            };
            match answers {
                Some(answers) => {
                    for ((i, _), a) in fallbacks.into_iter().zip(answers) {
                        results[i] = Some(a);
                    }
                }
                None => {
                    for (i, a) in fallbacks {
                        results[i] = Some(a);
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.expect("every partition request gets an answer"))
            .collect()
    }

    /// Runs partition work for partitions this shard owns.
    pub async fn execute_local(
        &self,
        items: Vec<(TopicPartition, PartitionRequest)>,
    ) -> Vec<PartitionResponse> {
        let mut answers = Vec::with_capacity(items.len());
        // Appends first, all of them, so that they share the next group commit; then wait.
        let mut durable = Vec::new();
        let mut duplicates = Vec::new();
        let mut fetched_bytes = 0usize;
        for (i, (tp, req)) in items.iter().enumerate() {
            let Some(part) = self.partition(tp) else {
                answers.push(PartitionResponse::error_for(
                    req,
                    ErrorCode::UnknownTopicOrPartition,
                ));
                continue;
            };
            match req {
                PartitionRequest::Produce { payload, acks } => {
                    let log_start = part.borrow().log_start;
                    let answer = match Partition::append(&part, payload) {
                        Ok(AppendOutcome::Appended {
                            base_offset,
                            durable: rx,
                        }) => {
                            if *acks != 0 {
                                durable.push((i, rx));
                            }
                            produce_ok(base_offset, log_start)
                        }
                        Ok(AppendOutcome::Duplicate { base_offset }) => {
                            if *acks != 0 {
                                duplicates.push((i, part.clone(), base_offset));
                            }
                            produce_ok(base_offset, log_start)
                        }
                        Err(e) => {
                            tracing::debug!(partition = %tp, error = %e, "produce refused");
                            PartitionResponse::error_for(req, e.error_code())
                        }
                    };
                    answers.push(answer);
                }
                PartitionRequest::Fetch {
                    offset,
                    max_bytes,
                    request_bytes_max,
                } => {
                    // The request-wide limit applies while reading: once it is spent, later
                    // partitions are not read at all (the first non-empty one is always whole,
                    // so a consumer can progress: KIP-74).
                    let left = request_bytes_max.saturating_sub(fetched_bytes);
                    let answer = if left == 0 && fetched_bytes > 0 {
                        let p = part.borrow();
                        PartitionResponse::Fetch {
                            error: ErrorCode::None,
                            high_watermark: p.high_watermark,
                            log_start: p.log_start,
                            records: FetchRecords::Memory(bytes::Bytes::new()),
                        }
                    } else {
                        let max = (*max_bytes).min(left.max(1));
                        self.fetch_local(&part, *offset, max).await
                    };
                    if let PartitionResponse::Fetch { records, .. } = &answer {
                        fetched_bytes += records.len();
                    }
                    answers.push(answer);
                }
                PartitionRequest::ListOffsets { timestamp_ms } => {
                    answers.push(list_offset(&part, *timestamp_ms).await);
                }
            }
        }
        for (i, rx) in durable {
            if !matches!(rx.await, Ok(Ok(()))) {
                answers[i] =
                    PartitionResponse::error_for(&items[i].1, ErrorCode::KafkaStorageError);
            }
        }
        for (i, part, base_offset) in duplicates {
            if Partition::wait_durable(&part, base_offset).await.is_err() {
                answers[i] =
                    PartitionResponse::error_for(&items[i].1, ErrorCode::KafkaStorageError);
            }
        }
        answers
    }

    /// One partition's fetch read on its owner.
    async fn fetch_local(
        &self,
        part: &PartitionHandle,
        offset: Offset,
        max_bytes: usize,
    ) -> PartitionResponse {
        let zero_copy = self.config.fetch_path == FetchPath::Splice;
        match Partition::read_for_fetch(part, offset, max_bytes, zero_copy).await {
            Ok(r) => PartitionResponse::Fetch {
                error: ErrorCode::None,
                high_watermark: r.high_watermark,
                log_start: r.log_start,
                records: r.records,
            },
            Err(e) => {
                let p = part.borrow();
                PartitionResponse::Fetch {
                    error: e.error_code(),
                    high_watermark: p.high_watermark,
                    log_start: p.log_start,
                    records: FetchRecords::Memory(bytes::Bytes::new()),
                }
            }
        }
    }

    /// Waits until any of the partitions has data past its offset, or `timeout` passes.
    pub async fn wait_for_data(
        self: &Rc<Self>,
        items: Vec<(TopicPartition, Offset)>,
        timeout: Duration,
    ) {
        let mut groups: HashMap<usize, Vec<(TopicPartition, Offset)>> = HashMap::new();
        for (tp, offset) in items {
            groups
                .entry(self.owner(&tp).0)
                .or_default()
                .push((tp, offset));
        }
        let mut receivers = Vec::new();
        for (shard, group) in groups {
            let (tx, rx) = oneshot::channel();
            if shard == self.id.0 {
                self.register_waiter(&group, tx);
            } else if !self
                .send(
                    ShardId(shard),
                    ShardMessage::WaitForData {
                        items: group,
                        reply: tx,
                    },
                )
                .await
            {
                return;
            }
            receivers.push(rx);
        }
        super::io::timeout(timeout, FirstOf(receivers)).await;
    }

    /// Registers `reply` on each partition; resolves it at once if one already has data.
    pub fn register_waiter(&self, items: &[(TopicPartition, Offset)], reply: oneshot::Sender<()>) {
        let waiter: Waiter = Rc::new(RefCell::new(Some(reply)));
        for (tp, offset) in items {
            match self.partition(tp) {
                Some(part) => {
                    let mut p = part.borrow_mut();
                    if p.high_watermark > *offset {
                        drop(p);
                        if let Some(tx) = waiter.borrow_mut().take() {
                            let _ = tx.send(());
                        }
                        return;
                    }
                    p.add_waiter(waiter.clone());
                }
                None => {
                    if let Some(tx) = waiter.borrow_mut().take() {
                        let _ = tx.send(());
                    }
                    return;
                }
            }
        }
    }

    /// Opens (recovering) partitions this shard owns.
    pub async fn open_partitions(&self, list: Vec<OpenPartition>) -> Vec<Result<(), String>> {
        let mut results = Vec::new();
        for OpenPartition { tp, log, topic_id } in list {
            assert_eq!(
                self.owner(&tp),
                self.id,
                "a shard opens only partitions it owns"
            );
            if self.partition(&tp).is_some() {
                results.push(Ok(()));
                continue;
            }
            let dir = self.config.data_dir.join(tp.to_string());
            if let Err(e) = crate::cluster::controller::claim_partition_dir(&dir, Some(topic_id)) {
                results.push(Err(e));
                continue;
            }
            match Partition::open(&dir, tp.clone(), log, Default::default()).await {
                Ok(handle) => {
                    self.partitions.borrow_mut().insert(tp, handle);
                    results.push(Ok(()));
                }
                Err(e) => results.push(Err(format!("{tp}: {e}"))),
            }
        }
        results
    }

    /// Forgets partitions and removes their directories.
    pub fn delete_partitions(&self, list: &[TopicPartition]) {
        for tp in list {
            if let Some(part) = self.partitions.borrow_mut().remove(tp) {
                let dir = part.borrow().dir().to_owned();
                part.borrow_mut().close("topic deleted");
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    tracing::warn!(dir = %dir.display(), error = %e, "removing a deleted partition");
                }
            }
        }
    }

    /// Runs a group request on the shard that coordinates `group_id` (here or over the mesh).
    pub async fn group_call(self: &Rc<Self>, group_id: &str, call: GroupCall) -> GroupReply {
        let owner = group_owner(group_id, self.shard_count);
        self.group_call_on(owner, call).await
    }

    /// Runs a group request on shard `owner`.
    pub async fn group_call_on(self: &Rc<Self>, owner: ShardId, call: GroupCall) -> GroupReply {
        if owner == self.id {
            let Some(coordinator) = self.coordinator.get().cloned() else {
                return GroupReply::Code(ErrorCode::CoordinatorNotAvailable);
            };
            // Its own task, as for calls from other shards: a connection that goes away must
            // not cancel a commit between its durable write and its apply.
            let (tx, rx) = oneshot::channel();
            super::io::spawn(async move {
                let _ = tx.send(coordinator.handle(call).await);
            });
            return rx
                .await
                .unwrap_or(GroupReply::Code(ErrorCode::CoordinatorNotAvailable));
        }
        let (tx, rx) = oneshot::channel();
        if !self
            .send(owner, ShardMessage::Group { call, reply: tx })
            .await
        {
            return GroupReply::Code(ErrorCode::CoordinatorNotAvailable);
        }
        rx.await
            .unwrap_or(GroupReply::Code(ErrorCode::CoordinatorNotAvailable))
    }

    /// Handles one message from another shard.
    pub async fn handle_message(self: Rc<Self>, message: ShardMessage) {
        match message {
            ShardMessage::Partitions { items, reply } => {
                let answers = self.execute_local(items).await;
                let _ = reply.send(answers);
            }
            ShardMessage::WaitForData { items, reply } => self.register_waiter(&items, reply),
            ShardMessage::OpenPartitions { partitions, reply } => {
                let _ = reply.send(self.open_partitions(partitions).await);
            }
            ShardMessage::DeletePartitions { partitions, reply } => {
                self.delete_partitions(&partitions);
                let _ = reply.send(());
            }
            ShardMessage::MetadataUpdate { image, reply } => {
                self.set_image(image);
                let _ = reply.send(());
            }
            ShardMessage::Group { call, reply } => {
                let answer = match self.coordinator.get() {
                    Some(c) => c.clone().handle(call).await,
                    None => GroupReply::Code(ErrorCode::CoordinatorNotAvailable),
                };
                let _ = reply.send(answer);
            }
            ShardMessage::Controller(request) => match &self.controller {
                Some(controller) => controller.handle(&self, request).await,
                None => {
                    tracing::error!("controller request reached a shard without the controller")
                }
            },
        }
    }
}

fn produce_ok(base_offset: Offset, log_start: Offset) -> PartitionResponse {
    PartitionResponse::Produce {
        error: ErrorCode::None,
        base_offset,
        log_start,
    }
}

/// Kafka's ListOffsets: -2 earliest, -1 latest, -3 the last offset with the largest timestamp
/// in the log (-1/-1 when empty), anything else the first record at or after that
/// timestamp with its own timestamp (-1/-1 when there is none).
async fn list_offset(part: &PartitionHandle, timestamp_ms: i64) -> PartitionResponse {
    let (start, hwm, max_ts) = {
        let p = part.borrow();
        (p.log_start, p.high_watermark, p.max_timestamp_ms())
    };
    let answer = |error, offset, timestamp_ms| PartitionResponse::ListOffsets {
        error,
        offset,
        timestamp_ms,
    };
    match timestamp_ms {
        -2 => answer(ErrorCode::None, start, -1),
        -1 => answer(ErrorCode::None, hwm, -1),
        -3 if hwm > start => answer(ErrorCode::None, Offset(hwm.0 - 1), max_ts),
        -3 => answer(ErrorCode::None, Offset(-1), -1),
        t if t < 0 => answer(ErrorCode::InvalidRequest, Offset(-1), -1),
        t => match Partition::offset_for_timestamp(part, t).await {
            Ok(Some((offset, found_ms))) => answer(ErrorCode::None, offset, found_ms),
            Ok(None) => answer(ErrorCode::None, Offset(-1), -1),
            Err(e) => {
                tracing::warn!(error = %e, timestamp_ms = t, "offset lookup by timestamp failed");
                answer(e.error_code(), Offset(-1), -1)
            }
        },
    }
}

/// Resolves when the first of several receivers does (either value or cancellation).
struct FirstOf(Vec<oneshot::Receiver<()>>);

impl Future for FirstOf {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.is_empty() {
            return Poll::Ready(());
        }
        for rx in self.0.iter_mut() {
            if Pin::new(rx).poll(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    }
}
