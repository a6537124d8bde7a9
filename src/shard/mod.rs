//! The per-core broker: a shard's state (its partitions, its copy of the metadata image, its
//! end of the mesh, its group coordinator) and the routing of partition work to the owning
//! shard. Runs on: every shard; a `Shard` never leaves its thread (it is held in an `Rc`).
//! Invariants: a partition is opened, read and written only by `partition_owner(topic,
//! partition)`; answers to a request that was split across shards are merged back in request
//! order; no borrow is held across an `.await`.

pub mod cluster;
pub mod local;
pub mod messages;
pub mod metadata;
pub mod offsets;
pub mod order;
pub mod replicas;
pub mod waiters;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_channel::oneshot;

use crate::cluster::MetadataImage;
use crate::config::Config;
use crate::group::calls::Call;
use crate::group::coordinator::Coordinator;
use crate::group::offsets::group_owner;
use crate::placement::partition_owner;
use crate::protocol::types::{ShardId, TopicPartition};
use crate::replication::Replica;
use crate::runtime::env::Env;
use crate::runtime::mesh::Mesh;
use crate::storage::{Partition, PartitionHandle};
use messages::{OpenPartition, PartitionError, PartitionRequest, PartitionResponse, ShardMessage};
pub use order::{Sequencer, Turn};

pub struct Shard {
    pub id: ShardId,
    pub shard_count: usize,
    pub config: Arc<Config>,
    /// This shard's IO, clock and randomness.
    pub env: Env,
    mesh: Mesh<ShardMessage>,
    /// The partitions this shard owns and has open, each with its replication.
    partitions: RefCell<HashMap<TopicPartition, Rc<Replica>>>,
    image: RefCell<Arc<MetadataImage>>,
    /// Present on the controller shard only.
    pub controller: Option<metadata::ControllerService>,
    next_producer_id: Cell<i64>,
    /// In a cluster: this shard's block of producer ids from the controller, `next..end`.
    producer_block: Cell<(i64, i64)>,
    /// In a cluster: the metadata quorum as the controller shard last reported it.
    pub quorum: Cell<messages::QuorumStatus>,
    /// Partitions being opened now (an open awaits; a second one must not start meanwhile).
    opening: RefCell<std::collections::HashSet<TopicPartition>>,
    /// When an offline partition was last tried again (see `reopen_missing`), monotonic.
    reopen_tried: RefCell<HashMap<TopicPartition, Duration>>,
    /// The group coordinator, set once the offsets partitions are recovered.
    pub coordinator: std::cell::OnceCell<Rc<Coordinator>>,
    /// The offsets partitions this shard owns, with their replication (see `offsets`).
    offsets_replicas: RefCell<HashMap<u32, Rc<Replica>>>,
    /// In a cluster: the fetchers following other brokers' partitions this shard owns.
    pub fetchers: crate::replication::fetcher::Fetchers,
    /// The leader's throttle on catch-up replication.
    pub replication_throttle: replicas::ReplicationThrottle,
}

pub type ShardRef = Rc<Shard>;

/// The coordinator's answer when a group's coordinator cannot be reached.
const UNAVAILABLE: crate::group::GroupCode = crate::group::GroupCode::CoordinatorNotAvailable;

impl Shard {
    pub fn new(
        id: ShardId,
        config: Arc<Config>,
        env: Env,
        mesh: Mesh<ShardMessage>,
        image: Arc<MetadataImage>,
        controller: Option<metadata::ControllerService>,
    ) -> Shard {
        // Producer ids are `counter * shards + shard`, so shards never collide; the counter
        // starts at the clock in ms times 1024, so ids stay unique across restarts unless a
        // shard hands out more than 1024 per ms or the clock goes backwards.
        let counter_start = env.wall_ms() * 1024;
        let fetchers = crate::replication::fetcher::Fetchers::new(config.node_id.0, env.clone());
        Shard {
            id,
            shard_count: config.shards,
            config,
            env,
            mesh,
            partitions: RefCell::new(HashMap::new()),
            image: RefCell::new(image),
            controller,
            next_producer_id: Cell::new(counter_start),
            producer_block: Cell::new((0, 0)),
            quorum: Cell::new(Default::default()),
            opening: RefCell::new(Default::default()),
            reopen_tried: RefCell::new(HashMap::new()),
            coordinator: std::cell::OnceCell::new(),
            offsets_replicas: RefCell::new(HashMap::new()),
            fetchers,
            replication_throttle: Default::default(),
        }
    }

    /// Partitions this shard owns and has open.
    pub fn local_partition_count(&self) -> usize {
        self.partitions.borrow().len()
    }

    /// Refreshes the gauges only a walk over the shard's state can give.
    pub fn update_metrics(&self) {
        let partitions = self.partitions.borrow();
        let log_bytes: u64 = partitions
            .values()
            .map(|r| r.log().borrow().size_bytes())
            .sum();
        let groups = self.coordinator.get().map_or(0, |c| c.group_count());
        let (under_replicated, lag_max) = self.replication_gauges();
        let offline = (self.controller.is_some() && self.config.cluster.is_some())
            .then(|| crate::cluster::elect::offline_count(&self.image()));
        crate::metrics::with(|m| {
            use std::sync::atomic::Ordering::Relaxed;
            m.partitions.store(partitions.len() as u64, Relaxed);
            m.log_bytes.store(log_bytes, Relaxed);
            m.groups.store(groups as u64, Relaxed);
            m.under_replicated.store(under_replicated, Relaxed);
            m.replication_lag_max.store(lag_max, Relaxed);
            if let Some(n) = offline {
                m.offline_partitions.store(n, Relaxed);
            }
        });
    }

    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.borrow().clone()
    }

    /// Installs a new metadata image; partitions of topics whose configs changed take their
    /// new settings (retention, segment size) at once.
    pub fn set_image(&self, image: Arc<MetadataImage>) {
        let old = self.image.replace(image.clone());
        self.refresh_replication();
        for (tp, replica) in self.partitions.borrow().iter() {
            let part = replica.log();
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

    /// Whether this broker holds `tp` (in a cluster: among its assigned replicas; on one
    /// node: every partition of the image).
    pub fn hosts(&self, image: &MetadataImage, tp: &TopicPartition) -> bool {
        if self.config.cluster.is_none() {
            return true;
        }
        let me = self.config.node_id.0;
        image
            .topics
            .get(&tp.topic)
            .and_then(|t| t.assignments.get(&(tp.partition.0.max(0) as u32)))
            .is_some_and(|a| a.replicas.contains(&me))
    }

    /// Whether produce, fetch and offset requests for `tp` are this broker's to answer: on one
    /// node every partition; in a cluster those it leads, and unknown ones (answered as such
    /// by their owner shard).
    pub fn leads(&self, image: &MetadataImage, tp: &TopicPartition) -> bool {
        if self.config.cluster.is_none() {
            return true;
        }
        match image.topics.get(&tp.topic) {
            None => true,
            Some(t) if tp.partition.0 < 0 || tp.partition.0 as u32 >= t.partitions => true,
            Some(t) => t
                .assignments
                .get(&(tp.partition.0 as u32))
                .is_some_and(|a| a.leader == self.config.node_id.0),
        }
    }

    pub fn owner(&self, tp: &TopicPartition) -> ShardId {
        partition_owner(&tp.topic, tp.partition, self.shard_count)
    }

    pub fn partition(&self, tp: &TopicPartition) -> Option<PartitionHandle> {
        self.partitions.borrow().get(tp).map(|r| r.log().clone())
    }

    /// The replica of a partition this shard owns and has open.
    pub fn replica(&self, tp: &TopicPartition) -> Option<Rc<Replica>> {
        self.partitions.borrow().get(tp).cloned()
    }

    pub fn local_partitions(&self) -> Vec<PartitionHandle> {
        self.partitions
            .borrow()
            .values()
            .map(|r| r.log().clone())
            .collect()
    }

    /// Every log this shard writes: its partitions and its offsets partitions.
    pub fn local_logs(&self) -> Vec<PartitionHandle> {
        let mut logs = self.local_partitions();
        if let Some(c) = self.coordinator.get() {
            logs.extend(c.offsets.partitions());
        }
        logs
    }

    /// A new producer id (InitProducerId): from this shard's counter on one node; in a
    /// cluster from this shard's block, taking the next block from the controller when it runs
    /// out (`None`: no controller answered).
    pub async fn next_producer_id(self: &Rc<Self>) -> Option<crate::protocol::types::ProducerId> {
        if self.config.cluster.is_none() {
            return Some(self.allocate_producer_id());
        }
        let (next, end) = self.producer_block.get();
        if next < end {
            self.producer_block.set((next + 1, end));
            return Some(crate::protocol::types::ProducerId(next));
        }
        let op = crate::cluster::controller::ControllerOp::AllocateProducerIds {
            node_id: self.config.node_id.0,
        };
        let answer = metadata::ask(self, op).await?;
        let first = *answer.first()?.as_ref().ok()?;
        let end = first + crate::constants::PRODUCER_ID_BLOCK;
        self.producer_block.set((first + 1, end));
        Some(crate::protocol::types::ProducerId(first))
    }

    /// The active controller as the controller shard last reported it (-1: none known).
    pub fn controller_id(&self) -> i32 {
        match &self.config.cluster {
            None => self.config.node_id.0,
            Some(_) => self.quorum.get().leader,
        }
    }

    /// A one-node producer id from this shard's counter.
    fn allocate_producer_id(&self) -> crate::protocol::types::ProducerId {
        let counter = self.next_producer_id.get();
        self.next_producer_id.set(counter + 1);
        crate::protocol::types::ProducerId(counter * self.shard_count as i64 + self.id.0 as i64)
    }

    pub async fn send(&self, to: ShardId, message: ShardMessage) -> bool {
        crate::metrics::with(|m| {
            m.mesh_messages
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        });
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
        let image = self.image();
        let mut parts = Vec::new();
        let mut elsewhere = Vec::new();
        for (i, (tp, req)) in items.into_iter().enumerate() {
            // Describing a replica is for any replica, not only the leader's.
            if self.leads(&image, &tp) || matches!(req, PartitionRequest::Describe) {
                groups[self.owner(&tp).0].push((i, tp, req));
            } else {
                let answer = PartitionResponse::error_for(&req, PartitionError::NotLeader);
                elsewhere.push((i, answer));
            }
        }
        if !elsewhere.is_empty() {
            parts.push((elsewhere, None));
        }
        for (shard, group) in groups.into_iter().enumerate() {
            if group.is_empty() {
                continue;
            }
            let fallbacks: Vec<(usize, PartitionResponse)> = group
                .iter()
                .map(|(i, _, r)| {
                    (
                        *i,
                        PartitionResponse::error_for(r, PartitionError::OwnerGone),
                    )
                })
                .collect();
            let items: Vec<(TopicPartition, PartitionRequest)> =
                group.into_iter().map(|(_, tp, r)| (tp, r)).collect();
            let (tx, rx) = oneshot::channel();
            let handed = if shard == self.id.0 {
                // Local produces append here and now (as the connection's turn requires);
                // anything else runs as a task of its own, queued in submission order.
                let me = self.clone();
                match self.start_appends(&items) {
                    Some((answers, run)) => crate::runtime::io::spawn(async move {
                        let _ = tx.send(me.finish_local(&items, answers, run).await);
                    }),
                    None => crate::runtime::io::spawn(async move {
                        let _ = tx.send(me.execute_local(items).await);
                    }),
                }
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
        self.refresh_replication();
        results
    }

    async fn open_one(
        &self,
        tp: TopicPartition,
        log: crate::storage::LogConfig,
        topic_id: crate::protocol::types::TopicId,
    ) -> Result<(), String> {
        let dir = self.config.data_dir.join(tp.to_string());
        crate::storage::dir::claim_partition_dir(&self.env, &dir, topic_id).await?;
        let handle = Partition::open(&self.env, &dir, tp.clone(), log, Default::default())
            .await
            .map_err(|e| format!("{tp}: {e}"))?;
        let env = self.env.clone();
        let replica = match &self.config.cluster {
            None => Replica::single_node(handle, env),
            Some(_) => {
                // Offline until an image names its role (the image being applied may not be
                // installed yet; installing it gives the role and starts fetching).
                let image = self.image();
                let view = self
                    .role_view(&image, &tp)
                    .filter(|_| self.registered(&image))
                    .unwrap_or_else(|| self.offline_view());
                Replica::clustered(handle, env, view)
            }
        };
        self.partitions.borrow_mut().insert(tp, Rc::new(replica));
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
            if let Some(replica) = removed {
                let part = replica.log().clone();
                part.borrow_mut().close("topic deleted");
                closed.push(part);
            }
        }
        self.refresh_replication();
        for part in closed {
            while part.borrow().is_writing() {
                self.env.sleep(Duration::from_millis(1)).await;
            }
            let dir = part.borrow().dir().to_owned();
            if let Err(e) = self.env.fs.remove_dir_all(&dir).await {
                tracing::warn!(dir = %dir.display(), error = %e, "removing a deleted partition");
            }
        }
    }

    /// In a cluster, the broker coordinating `group` (the leader of its offsets partition),
    /// if the offsets partitions are placed and it is live; on one node, this broker.
    pub fn coordinator_of(&self, image: &MetadataImage, group: &str) -> Option<i32> {
        if self.config.cluster.is_none() {
            return Some(self.config.node_id.0);
        }
        let p = crate::group::offsets::offsets_partition(group);
        let leader = image.offsets.get(&p)?.leader;
        image
            .brokers
            .get(&leader)
            .filter(|b| !b.fenced)
            .map(|b| b.node_id)
    }

    /// Runs a group request on the shard that coordinates its group (here or over the mesh);
    /// in a cluster a group another broker coordinates is refused with NOT_COORDINATOR.
    pub async fn group_call<C: Call>(self: &Rc<Self>, call: C) -> C::Reply {
        let group = call.group_id().unwrap_or_default();
        if self.coordinator_of(&self.image(), group) != Some(self.config.node_id.0) {
            return call.refused(crate::group::GroupCode::NotCoordinator);
        }
        let owner = group_owner(group, self.shard_count);
        self.group_call_on(owner, call).await
    }

    /// Runs a group request on shard `owner`.
    pub async fn group_call_on<C: Call>(self: &Rc<Self>, owner: ShardId, call: C) -> C::Reply {
        let unavailable = call.refused(UNAVAILABLE);
        let (tx, rx) = oneshot::channel();
        let call = call.wrap(tx);
        if owner == self.id {
            let Some(coordinator) = self.coordinator.get().cloned() else {
                return unavailable;
            };
            // Its own task, as for calls from other shards: a connection that goes away must
            // not cancel a commit between its durable write and its apply.
            crate::runtime::io::spawn(async move { coordinator.handle(call).await });
        } else if !self.send(owner, ShardMessage::Group(call)).await {
            return unavailable;
        }
        rx.await.unwrap_or(unavailable)
    }

    /// Handles one message from another shard.
    pub async fn handle_message(self: Rc<Self>, message: ShardMessage) {
        match message {
            ShardMessage::Partitions { items, reply } => {
                let answers = self.execute_local(items).await;
                let _ = reply.send(answers);
            }
            ShardMessage::WaitForData {
                items,
                reply,
                written,
            } => self.register_waiter(&items, reply, written),
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
            ShardMessage::Quorum(status) => self.quorum.set(status),
            ShardMessage::Group(call) => match self.coordinator.get() {
                Some(c) => c.clone().handle(call).await,
                None => call.refuse(UNAVAILABLE),
            },
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
