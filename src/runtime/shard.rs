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
    /// Partitions being opened now (an open awaits; a second one must not start meanwhile).
    opening: RefCell<std::collections::HashSet<TopicPartition>>,
    /// When an offline partition was last tried again (see `reopen_missing`).
    reopen_tried: RefCell<HashMap<TopicPartition, std::time::Instant>>,
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
            opening: RefCell::new(Default::default()),
            reopen_tried: RefCell::new(HashMap::new()),
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
        self.submit(items).await.answers().await
    }

    /// Like `execute`, in the request's `turn` of its connection: the work is handed to every
    /// owner (sent over the mesh, or queued here) before the connection's next request may hand
    /// over its own, so two produces of one connection reach each partition in request order.
    pub async fn execute_in_turn(
        self: &Rc<Self>,
        items: Vec<(TopicPartition, PartitionRequest)>,
        mut turn: Turn,
    ) -> Vec<PartitionResponse> {
        turn.wait().await;
        let submitted = self.submit(items).await;
        drop(turn);
        submitted.answers().await
    }

    /// Hands each owner its part of `items`: a mesh message per other shard (waiting for room
    /// in a full channel), and a task here for the local part. Owners run the messages of one
    /// channel, and tasks of one shard, in the order they were handed over.
    async fn submit(self: &Rc<Self>, items: Vec<(TopicPartition, PartitionRequest)>) -> Submitted {
        let count = items.len();
        let mut groups: Vec<Vec<(usize, TopicPartition, PartitionRequest)>> =
            (0..self.shard_count).map(|_| Vec::new()).collect();
        for (i, (tp, req)) in items.into_iter().enumerate() {
            groups[self.owner(&tp).0].push((i, tp, req));
        }
        let mut parts = Vec::new();
        for (shard, group) in groups.into_iter().enumerate() {
            if group.is_empty() {
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
            let handed = if shard == self.id.0 {
                let me = self.clone();
                super::io::spawn(async move {
                    let _ = tx.send(me.execute_local(items).await);
                });
                true
            } else {
                self.send(
                    ShardId(shard),
                    ShardMessage::Partitions { items, reply: tx },
                )
                .await
            };
            parts.push((fallbacks, handed.then_some(rx)));
        }
        Submitted { count, parts }
    }

    /// Runs partition work for partitions this shard owns.
    pub async fn execute_local(
        &self,
        items: Vec<(TopicPartition, PartitionRequest)>,
    ) -> Vec<PartitionResponse> {
        let mut answers: Vec<Option<PartitionResponse>> = vec![None; items.len()];
        let mut run = LocalRun::default();
        // Partitions that are open go first, and nothing is awaited before their appends: the
        // order in which messages reach this shard stays the order of their appends (a
        // connection's produces to a partition must land in request order). Offline partitions
        // are opened again afterwards and served then.
        self.run_items(&items, &mut answers, &mut run, false).await;
        if answers.iter().any(|a| a.is_none()) {
            self.reopen_missing(&items).await;
            self.run_items(&items, &mut answers, &mut run, true).await;
        }
        let mut answers: Vec<PartitionResponse> = answers
            .into_iter()
            .map(|a| a.expect("every local item is answered"))
            .collect();
        // Appends first, all of them, so that they share the next group commit; then wait.
        for (i, rx) in run.durable {
            if !matches!(rx.await, Ok(Ok(()))) {
                answers[i] =
                    PartitionResponse::error_for(&items[i].1, ErrorCode::KafkaStorageError);
            }
        }
        for (i, part, base_offset) in run.duplicates {
            if Partition::wait_durable(&part, base_offset).await.is_err() {
                answers[i] =
                    PartitionResponse::error_for(&items[i].1, ErrorCode::KafkaStorageError);
            }
        }
        answers
    }

    /// Answers the unanswered items whose partitions are open; on the `last` pass the others
    /// are answered as missing.
    async fn run_items(
        &self,
        items: &[(TopicPartition, PartitionRequest)],
        answers: &mut [Option<PartitionResponse>],
        run: &mut LocalRun,
        last: bool,
    ) {
        for (i, (tp, req)) in items.iter().enumerate() {
            if answers[i].is_some() {
                continue;
            }
            match self.partition(tp) {
                Some(part) => answers[i] = Some(self.run_one(i, &part, tp, req, run).await),
                None if last => {
                    answers[i] = Some(PartitionResponse::error_for(req, self.missing_code(tp)))
                }
                None => {}
            }
        }
    }

    /// One item on its open partition. A produce appends without awaiting and leaves what to
    /// wait for in `run`.
    async fn run_one(
        &self,
        i: usize,
        part: &PartitionHandle,
        tp: &TopicPartition,
        req: &PartitionRequest,
        run: &mut LocalRun,
    ) -> PartitionResponse {
        match req {
            PartitionRequest::Produce { payload, acks } => {
                let log_start = part.borrow().log_start;
                match Partition::append(part, payload) {
                    Ok(AppendOutcome::Appended {
                        base_offset,
                        durable: rx,
                    }) => {
                        if *acks != 0 {
                            run.durable.push((i, rx));
                        }
                        produce_ok(base_offset, log_start)
                    }
                    Ok(AppendOutcome::Duplicate { base_offset }) => {
                        if *acks != 0 {
                            run.duplicates.push((i, part.clone(), base_offset));
                        }
                        produce_ok(base_offset, log_start)
                    }
                    Err(e) => {
                        tracing::debug!(partition = %tp, error = %e, "produce refused");
                        PartitionResponse::error_for(req, e.error_code())
                    }
                }
            }
            PartitionRequest::Fetch {
                offset,
                max_bytes,
                request_bytes_max,
            } => {
                // The request-wide limit applies while reading: once it is spent, later
                // partitions are not read at all (the first non-empty one is always whole, so
                // a consumer can progress: KIP-74).
                let left = request_bytes_max.saturating_sub(run.fetched_bytes);
                let answer = if left == 0 && run.fetched_bytes > 0 {
                    let p = part.borrow();
                    PartitionResponse::Fetch {
                        error: ErrorCode::None,
                        high_watermark: p.high_watermark,
                        log_start: p.log_start,
                        records: FetchRecords::Memory(bytes::Bytes::new()),
                    }
                } else {
                    let max = (*max_bytes).min(left.max(1));
                    self.fetch_local(part, *offset, max).await
                };
                if let PartitionResponse::Fetch { records, .. } = &answer {
                    run.fetched_bytes += records.len();
                }
                answer
            }
            PartitionRequest::ListOffsets { timestamp_ms } => {
                list_offset(part, *timestamp_ms).await
            }
        }
    }

    /// The answer for a partition that is not open here: KAFKA_STORAGE_ERROR if the image
    /// names it (it is offline: its open failed), else UNKNOWN_TOPIC_OR_PARTITION.
    fn missing_code(&self, tp: &TopicPartition) -> ErrorCode {
        let image = self.image();
        match image.topics.get(&tp.topic) {
            Some(t) if tp.partition.0 >= 0 && (tp.partition.0 as u32) < t.partitions => {
                ErrorCode::KafkaStorageError
            }
            _ => ErrorCode::UnknownTopicOrPartition,
        }
    }

    /// Opens again the partitions of `items` that this shard owns and the image names but that
    /// are not open: their open failed (for lack of space or descriptors while the topic was
    /// created, say), and they must come back without a restart once the resource returns.
    /// Each is tried at most once per `REOPEN_INTERVAL_MS`.
    async fn reopen_missing(&self, items: &[(TopicPartition, PartitionRequest)]) {
        const REOPEN_INTERVAL_MS: u64 = 1000;
        if items.iter().all(|(tp, _)| self.partition(tp).is_some()) {
            return;
        }
        let image = self.image();
        let now = std::time::Instant::now();
        let mut list = Vec::new();
        for (tp, _) in items {
            let Some(topic) = image.topics.get(&tp.topic) else {
                continue;
            };
            let in_range = tp.partition.0 >= 0 && (tp.partition.0 as u32) < topic.partitions;
            if !in_range || self.owner(tp) != self.id || self.partition(tp).is_some() {
                continue;
            }
            let mut tried = self.reopen_tried.borrow_mut();
            let recent = tried.get(tp).is_some_and(|at| {
                now.duration_since(*at) < Duration::from_millis(REOPEN_INTERVAL_MS)
            });
            if recent {
                continue;
            }
            tried.insert(tp.clone(), now);
            list.push(OpenPartition {
                tp: tp.clone(),
                log: self.config.topic_log_config(&topic.configs),
                topic_id: topic.topic_id,
            });
        }
        let ids: Vec<(TopicPartition, [u8; 16])> =
            list.iter().map(|o| (o.tp.clone(), o.topic_id)).collect();
        for result in self.open_partitions(list).await {
            if let Err(e) = result {
                tracing::warn!(error = %e, "reopening an offline partition failed");
            }
        }
        // The topic may have been deleted (or re-created) while it opened.
        let image = self.image();
        let gone: Vec<TopicPartition> = ids
            .into_iter()
            .filter(|(tp, id)| image.topics.get(&tp.topic).map(|t| t.topic_id) != Some(*id))
            .map(|(tp, _)| tp)
            .collect();
        self.delete_partitions(&gone).await;
        for (tp, _) in items {
            if self.partition(tp).is_some() {
                self.reopen_tried.borrow_mut().remove(tp);
            }
        }
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
            // Another task is opening it (a reopen racing the controller's open).
            if !self.opening.borrow_mut().insert(tp.clone()) {
                results.push(Err(format!("{tp}: already being opened")));
                continue;
            }
            let result = self.open_one(tp.clone(), log, topic_id).await;
            self.opening.borrow_mut().remove(&tp);
            results.push(result);
        }
        results
    }

    async fn open_one(
        &self,
        tp: TopicPartition,
        log: crate::storage::LogConfig,
        topic_id: [u8; 16],
    ) -> Result<(), String> {
        let dir = self.config.data_dir.join(tp.to_string());
        crate::cluster::controller::claim_partition_dir(&dir, Some(topic_id))?;
        let handle = Partition::open(&dir, tp.clone(), log, Default::default())
            .await
            .map_err(|e| format!("{tp}: {e}"))?;
        self.partitions.borrow_mut().insert(tp, handle);
        Ok(())
    }

    /// Forgets partitions and removes their directories.
    /// The directory goes only once the partition's writer has stopped: a segment roll in
    /// flight creates files by path, and must not create them in the directory of a topic
    /// re-created under the same name.
    pub async fn delete_partitions(&self, list: &[TopicPartition]) {
        let mut closed = Vec::new();
        for tp in list {
            let removed = self.partitions.borrow_mut().remove(tp);
            if let Some(part) = removed {
                part.borrow_mut().close("topic deleted");
                closed.push(part);
            }
        }
        for part in closed {
            while part.borrow().is_writing() {
                super::io::sleep(Duration::from_millis(1)).await;
            }
            let dir = part.borrow().dir().to_owned();
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "removing a deleted partition");
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
                self.delete_partitions(&partitions).await;
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

/// Partition work handed to its owners, waiting for their answers.
struct Submitted {
    count: usize,
    parts: Vec<OwnerPart>,
}

/// One owner's share: (item index, answer if the owner goes away) per item, and the owner's
/// reply (`None` if the work could not be handed over).
type OwnerPart = (
    Vec<(usize, PartitionResponse)>,
    Option<oneshot::Receiver<Vec<PartitionResponse>>>,
);

impl Submitted {
    /// The answers, in the order of the items.
    async fn answers(self) -> Vec<PartitionResponse> {
        let mut results: Vec<Option<PartitionResponse>> = vec![None; self.count];
        for (fallbacks, rx) in self.parts {
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
}

/// The order of one connection's partition work: each produce request takes a `Turn` as the
/// connection reads it, and hands its work to the owners only once every earlier turn has
/// (Kafka handles a connection's requests one at a time; librdkafka and the Java client rely
/// on it for ordering and idempotent sequences). A full mesh channel once let a later produce
/// overtake an earlier one.
#[derive(Default)]
pub struct Sequencer {
    issued: Cell<u64>,
    serving: Cell<u64>,
    /// Turns released before they were served (a request that ended early).
    released_early: RefCell<std::collections::BTreeSet<u64>>,
    waiters: RefCell<Vec<std::task::Waker>>,
}

impl Sequencer {
    pub fn new() -> Rc<Sequencer> {
        Rc::new(Sequencer::default())
    }

    /// The next turn, after every turn taken before it.
    pub fn turn(self: &Rc<Self>) -> Turn {
        let ticket = self.issued.get();
        self.issued.set(ticket + 1);
        Turn {
            sequencer: self.clone(),
            ticket,
        }
    }

    fn release(&self, ticket: u64) {
        if self.serving.get() != ticket {
            assert!(
                ticket > self.serving.get(),
                "turn {ticket} released twice (serving {})",
                self.serving.get()
            );
            self.released_early.borrow_mut().insert(ticket);
            return;
        }
        let mut next = ticket + 1;
        while self.released_early.borrow_mut().remove(&next) {
            next += 1;
        }
        self.serving.set(next);
        for waker in self.waiters.borrow_mut().drain(..) {
            waker.wake();
        }
    }
}

/// A request's place in its connection's `Sequencer`; dropping it lets the next one go.
pub struct Turn {
    sequencer: Rc<Sequencer>,
    ticket: u64,
}

impl Turn {
    /// Waits until every earlier turn of the connection was released.
    pub async fn wait(&mut self) {
        std::future::poll_fn(|cx| {
            if self.sequencer.serving.get() == self.ticket {
                Poll::Ready(())
            } else {
                self.sequencer.waiters.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.sequencer.release(self.ticket);
    }
}

/// What the items of one local run leave to wait for once every append is placed.
#[derive(Default)]
struct LocalRun {
    /// (item, its append's completion).
    durable: Vec<(usize, oneshot::Receiver<Result<(), String>>)>,
    /// (item, partition, original offset) of retried batches already in the log.
    duplicates: Vec<(usize, PartitionHandle, Offset)>,
    /// Record bytes the fetch items read so far (the request-wide limit).
    fetched_bytes: usize,
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
