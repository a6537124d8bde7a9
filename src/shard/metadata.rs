//! Metadata changes on the shard layer: the controller service takes requests from any shard,
//! has the controller propose records, and waits until they are applied; the applier applies
//! every committed record in log order, opening and deleting partitions on their owners and
//! publishing each new image to every shard. Runs on: the controller shard. Invariants: one
//! change at a time (a lock held across the whole change); records are applied in commit
//! order; a topic appears in any shard's image only after its partitions are open on their
//! owners, so a client that sees it can produce to it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};

use futures_channel::oneshot;

use super::cluster::QuorumRole;
use super::messages::{ControllerRequest, OpenPartition, ShardMessage};
use super::Shard;
use crate::cluster::controller::{Controller, ControllerAnswer, ControllerError, ControllerOp};
use crate::cluster::{MetadataImage, MetadataRecord};
use crate::placement::CONTROLLER_SHARD;
use crate::protocol::types::{ShardId, TopicPartition};
use crate::runtime::io::LocalLock;

/// The controller on its shard: requests in, committed and applied changes out.
pub struct ControllerService {
    controller: Controller,
    lock: LocalLock,
    /// Records `0..applied` are applied to every shard's image.
    applied: Cell<u64>,
    /// Why applying a record failed (a partition could not be opened), by index.
    apply_failures: RefCell<HashMap<u64, String>>,
    waiters: RefCell<Vec<Waker>>,
    /// In a cluster: this broker's member of the metadata quorum and its duties.
    pub quorum: Option<QuorumRole>,
}

impl ControllerService {
    /// Wraps a controller whose log's committed records are all in the starting image.
    pub fn new(controller: Controller, quorum: Option<QuorumRole>) -> ControllerService {
        let applied = controller.log().committed_end();
        ControllerService {
            quorum,
            controller,
            lock: LocalLock::new(),
            applied: Cell::new(applied),
            apply_failures: RefCell::new(HashMap::new()),
            waiters: RefCell::new(Vec::new()),
        }
    }

    /// Applies committed records in order, for as long as the shard runs.
    pub async fn apply_committed(shard: Rc<Shard>) {
        let service = shard
            .controller
            .as_ref()
            .expect("the applier runs on the controller shard");
        let log = service.controller.log().clone();
        loop {
            let from = service.applied.get();
            log.wait_committed(from).await;
            let committed = log.committed_from(from);
            let end = committed.end();
            // A jump to a snapshot's image is one step: its changes all carry its last index,
            // which counts as applied only once every change is.
            let stepwise = matches!(committed, crate::cluster::Committed::Records { .. });
            // Records that only change the image are applied to one copy and published
            // together: at 10,000 partitions each copy and each refresh of every replica's
            // role costs most of a second, and a restart's ISR changes come in bursts.
            let mut folded: Option<(MetadataImage, u64)> = None;
            for (index, record) in committed.over(&shard.image()) {
                if image_only(&record) {
                    let (image, last) =
                        folded.get_or_insert_with(|| ((*shard.image()).clone(), index));
                    image.apply(&record);
                    *last = index;
                    continue;
                }
                publish_folded(&shard, service, folded.take(), stepwise).await;
                if let Err(why) = apply(&shard, &record).await {
                    tracing::error!(index, error = %why, "applying a metadata record failed");
                    service.apply_failures.borrow_mut().insert(index, why);
                }
                if stepwise {
                    service.set_applied(index + 1);
                }
            }
            publish_folded(&shard, service, folded.take(), stepwise).await;
            // Entries that are not records (Raft's) move the position too.
            service.set_applied(end.max(from));
        }
    }

    fn set_applied(&self, next: u64) {
        if next > self.applied.get() {
            self.applied.set(next);
            for w in self.waiters.borrow_mut().drain(..) {
                w.wake();
            }
        }
    }

    /// Resolves once record `index` is applied; its apply failure, if any.
    async fn wait_applied(&self, index: u64) -> Result<(), ControllerError> {
        std::future::poll_fn(|cx| {
            if self.applied.get() > index {
                Poll::Ready(())
            } else {
                self.waiters.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        match self.apply_failures.borrow_mut().remove(&index) {
            Some(why) => Err(ControllerError::Apply(why)),
            None => Ok(()),
        }
    }

    /// A proposal's outcome once applied (`None`: nothing was proposed).
    async fn settle(
        &self,
        proposed: Result<Option<u64>, ControllerError>,
    ) -> Result<i64, ControllerError> {
        match proposed? {
            Some(index) => self.wait_applied(index).await.map(|_| index as i64),
            None => Ok(-1),
        }
    }

    /// Answers a change: here, or (in a cluster) at the active controller.
    pub async fn handle(&self, shard: &Rc<Shard>, request: ControllerRequest) {
        let ControllerRequest { op, reply } = request;
        let answer = match &self.quorum {
            Some(role) => role.run_anywhere(shard, self, op, CHANGE_WAIT_MS).await,
            None => self.run_local(shard, op).await,
        };
        let _ = reply.send(answer);
    }

    /// Runs a change on this broker's controller (the active one), under the lock, after
    /// catching its view up with every committed record.
    pub async fn run_local(&self, shard: &Rc<Shard>, op: ControllerOp) -> ControllerAnswer {
        if let (
            Some(role),
            ControllerOp::BrokerHeartbeat {
                node_id,
                epoch,
                host,
                port,
            },
        ) = (&self.quorum, &op)
        {
            // Most heartbeats change nothing: answer them without waiting for the lock.
            role.heard(*node_id, shard.env.monotonic());
            let image = self.controller.image();
            let same = image.brokers.get(node_id).is_some_and(|b| {
                (b.epoch, &b.host, b.port, b.fenced) == (*epoch, host, *port, false)
            });
            if same {
                return vec![Ok(-1)];
            }
        }
        let items = op.len();
        let started = shard.env.monotonic();
        let answers = self.run_locked(op, items).await;
        // Only changes that committed a record: a refused or validate-only one measures no
        // commit.
        let committed = answers.iter().any(|a| matches!(a, Ok(i) if *i >= 0));
        if self.quorum.is_some() && committed {
            let took = shard.env.monotonic().saturating_sub(started);
            crate::metrics::with(|m| m.quorum.change_latency.observe(took));
        }
        answers
    }

    /// `op` under the controller's lock, once caught up with the log.
    async fn run_locked(&self, op: ControllerOp, items: usize) -> ControllerAnswer {
        let _guard = self.lock.acquire().await;
        let c = &self.controller;
        if let Err(e) = c.catch_up().await {
            return vec![Err(e); items];
        }
        let mut answers = Vec::with_capacity(items);
        match op {
            ControllerOp::CreateTopics {
                topics,
                validate_only,
            } => {
                for t in topics {
                    answers.push(self.settle(c.create_topic(t, validate_only).await).await);
                }
            }
            ControllerOp::DeleteTopics { names } => {
                for name in names {
                    let proposed = c.delete_topic(&name).await.map(Some);
                    answers.push(self.settle(proposed).await);
                }
            }
            ControllerOp::CreatePartitions {
                topics,
                validate_only,
            } => {
                for (name, total) in topics {
                    let proposed = c.create_partitions(&name, total, validate_only).await;
                    answers.push(self.settle(proposed).await);
                }
            }
            ControllerOp::AlterTopicConfigs {
                topics,
                validate_only,
            } => {
                for (name, changes) in topics {
                    let proposed = c.alter_configs(&name, changes, validate_only).await;
                    answers.push(self.settle(proposed).await);
                }
            }
            ControllerOp::BrokerHeartbeat {
                node_id,
                epoch,
                host,
                port,
            } => {
                let proposed = c.broker_heartbeat(node_id, epoch, &host, port).await;
                answers.push(self.settle(proposed).await);
            }
            ControllerOp::AllocateProducerIds { node_id } => {
                answers.push(match c.allocate_producer_ids(node_id).await {
                    Ok((_, first)) => Ok(first),
                    Err(e) => Err(e),
                });
            }
            ControllerOp::PlaceOffsets => {
                answers.push(self.settle(c.place_offsets().await).await);
            }
            ControllerOp::ElectPreferred { partitions } => {
                for answer in c.elect_preferred(&partitions).await {
                    let proposed = answer.map(|i| (i >= 0).then_some(i as u64));
                    answers.push(self.settle(proposed).await);
                }
            }
            ControllerOp::Resign(req) => {
                answers.push(self.settle(c.resign(&req).await).await);
            }
            ControllerOp::AlterIsr(req) => {
                answers.push(self.settle(c.alter_isr(&req).await).await);
            }
            ControllerOp::AlterIsrs(reqs) => {
                for answer in c.alter_isrs(&reqs).await {
                    answers.push(self.settle(answer).await);
                }
            }
            ControllerOp::ShutDownBroker { node_id, epoch } => {
                let current = c
                    .image()
                    .brokers
                    .get(&node_id)
                    .is_some_and(|b| b.epoch == epoch);
                let moved = if current {
                    tracing::info!(node_id, "controlled shutdown: moving leadership away");
                    c.shut_down(node_id, epoch).await
                } else {
                    Ok(None)
                };
                answers.push(self.settle(moved).await);
            }
        }
        answers
    }

    /// The active controller's standing duties, under the lock: the cluster id, partitions a
    /// predecessor left unassigned, and fencing the brokers whose sessions expired.
    pub async fn lead(&self, cluster_id: &str, fence: &[(i32, i64)]) {
        let _guard = self.lock.acquire().await;
        let c = &self.controller;
        if let Err(e) = c.catch_up().await {
            tracing::debug!(error = %e.message(), "controller duties skipped");
            return;
        }
        let mut results = vec![c.ensure_cluster_id(cluster_id).await];
        results.push(c.repair_assignments().await);
        for (node_id, epoch) in fence {
            let still = c
                .image()
                .brokers
                .get(node_id)
                .is_some_and(|b| b.epoch == *epoch && !b.fenced);
            if still {
                let fenced = c.fence(*node_id, *epoch).await;
                if fenced.is_ok() {
                    crate::metrics::with(|m| {
                        m.quorum
                            .fencings
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    });
                }
                results.push(fenced.map(Some));
            }
        }
        // After the fencing: partitions led by a fenced broker get new leaders.
        results.push(c.elect_leaders().await);
        for r in results {
            if let Err(e) = self.settle(r).await {
                tracing::warn!(error = %e.message(), "a controller duty failed");
            }
        }
    }

    /// The controller's view of the metadata (what it validates against).
    pub fn controller_image(&self) -> MetadataImage {
        self.controller.image().clone()
    }

    /// Waits (at most `wait_ms`) until record `index` is applied here.
    pub async fn wait_applied_for(&self, env: &crate::runtime::env::Env, index: u64, wait_ms: u64) {
        let wait = std::time::Duration::from_millis(wait_ms);
        let _ = env.timeout(wait, self.wait_applied(index)).await;
    }
}

/// How long a change waits for an active controller to be elected or reached.
const CHANGE_WAIT_MS: u64 = 10_000;

/// Publishes the image that folded records up to index `last` (if any), and counts them as
/// applied when records are applied one by one.
async fn publish_folded(
    shard: &Rc<Shard>,
    service: &ControllerService,
    folded: Option<(MetadataImage, u64)>,
    stepwise: bool,
) {
    if let Some((image, last)) = folded {
        publish(shard, Arc::new(image)).await;
        if stepwise {
            service.set_applied(last + 1);
        }
    }
}

/// Whether applying `record` only changes the image (no partition opens or goes). Every
/// variant is named, so a new one must be classified here.
fn image_only(record: &MetadataRecord) -> bool {
    match record {
        MetadataRecord::TopicCreated { .. }
        | MetadataRecord::PartitionsCreated { .. }
        | MetadataRecord::TopicDeleted { .. }
        | MetadataRecord::PartitionsAssigned { .. } => false,
        MetadataRecord::TopicConfigsChanged { .. }
        | MetadataRecord::PartitionsChanged { .. }
        | MetadataRecord::BrokerShuttingDown { .. }
        | MetadataRecord::ClusterCreated { .. }
        | MetadataRecord::BrokerRegistered { .. }
        | MetadataRecord::BrokerFenced { .. }
        | MetadataRecord::BrokerUnfenced { .. }
        | MetadataRecord::ProducerIdsAllocated { .. } => true,
    }
}

/// Applies one committed record: the next image, the partitions it opens or deletes, and its
/// publication to every shard.
async fn apply(shard: &Rc<Shard>, record: &MetadataRecord) -> Result<(), String> {
    let before = shard.image();
    let mut next = (*before).clone();
    next.apply(record);
    let next = Arc::new(next);
    match record {
        MetadataRecord::TopicCreated {
            name, partitions, ..
        } => {
            let opened = open_on_owners(shard, &next, name, 0..*partitions).await;
            publish(shard, next).await;
            opened
        }
        MetadataRecord::PartitionsCreated { name, .. } => {
            let old = before.topics.get(name).map_or(0, |t| t.partitions);
            let new = next.topics.get(name).map_or(old, |t| t.partitions);
            let opened = open_on_owners(shard, &next, name, old..new).await;
            publish(shard, next).await;
            opened
        }
        MetadataRecord::TopicDeleted { name } => {
            // Unpublished first: no client is offered a partition that is being deleted.
            publish(shard, next).await;
            if let Some(t) = before.topics.get(name) {
                delete_on_owners(shard, name, t.partitions).await;
            }
            Ok(())
        }
        MetadataRecord::PartitionsAssigned {
            name,
            first,
            assignments,
            ..
        } => {
            let end = first.saturating_add(assignments.len() as u32);
            let opened = open_on_owners(shard, &next, name, *first..end).await;
            publish(shard, next).await;
            opened
        }
        _ => {
            assert!(image_only(record), "a record left unclassified: {record}");
            publish(shard, next).await;
            Ok(())
        }
    }
}

/// Opens partitions `range` of `topic` (as `image` describes it) on their owners.
async fn open_on_owners(
    shard: &Rc<Shard>,
    image: &MetadataImage,
    topic: &str,
    range: std::ops::Range<u32>,
) -> Result<(), String> {
    let Some(meta) = image.topics.get(topic) else {
        return Ok(());
    };
    let log = shard.config.topic_log_config(&meta.configs);
    let mut by_owner: Vec<Vec<OpenPartition>> =
        (0..shard.shard_count).map(|_| Vec::new()).collect();
    for p in range {
        let tp = TopicPartition::new(topic, p as i32);
        if !shard.hosts(image, &tp) {
            continue;
        }
        by_owner[shard.owner(&tp).0].push(OpenPartition {
            tp,
            log: log.clone(),
            topic_id: meta.topic_id,
        });
    }
    let mut failure = None;
    for (owner, list) in by_owner.into_iter().enumerate() {
        if list.is_empty() {
            continue;
        }
        let results = if owner == shard.id.0 {
            shard.open_partitions(list).await
        } else {
            let (tx, rx) = oneshot::channel();
            let message = ShardMessage::OpenPartitions {
                partitions: list,
                reply: tx,
            };
            shard.send(ShardId(owner), message).await;
            rx.await
                .unwrap_or_else(|_| vec![Err("owner shard gone".into())])
        };
        if let Some(Err(e)) = results.into_iter().find(|r| r.is_err()) {
            tracing::error!(error = %e, "opening a new partition failed");
            failure.get_or_insert(e);
        }
    }
    failure.map_or(Ok(()), Err)
}

async fn delete_on_owners(shard: &Rc<Shard>, topic: &str, partitions: u32) {
    let mut by_owner: Vec<Vec<TopicPartition>> =
        (0..shard.shard_count).map(|_| Vec::new()).collect();
    for p in 0..partitions {
        let tp = TopicPartition::new(topic, p as i32);
        by_owner[shard.owner(&tp).0].push(tp);
    }
    for (owner, list) in by_owner.into_iter().enumerate() {
        if owner == shard.id.0 {
            shard.delete_partitions(&list).await;
        } else if !list.is_empty() {
            let (tx, rx) = oneshot::channel();
            let message = ShardMessage::DeletePartitions {
                partitions: list,
                reply: tx,
            };
            if shard.send(ShardId(owner), message).await {
                let _ = rx.await;
            }
        }
    }
}

/// Replaces the image on every shard and waits until all have it.
async fn publish(shard: &Rc<Shard>, image: Arc<MetadataImage>) {
    shard.set_image(image.clone());
    for other in 0..shard.shard_count {
        if other == shard.id.0 {
            continue;
        }
        let (tx, rx) = oneshot::channel();
        let message = ShardMessage::MetadataUpdate {
            image: image.clone(),
            reply: tx,
        };
        if shard.send(ShardId(other), message).await {
            let _ = rx.await;
        }
    }
}

/// Asks the controller for a change from any shard: its answer, or `None` if the controller
/// shard is gone. On the controller shard the work runs as its own task: the caller awaits
/// only the answer, so a caller that goes away (its connection closed) cannot cancel a
/// metadata change halfway.
pub async fn ask(shard: &Rc<Shard>, op: ControllerOp) -> Option<ControllerAnswer> {
    let (reply, answer) = oneshot::channel();
    let request = ControllerRequest { op, reply };
    if shard.controller.is_some() {
        let shard = shard.clone();
        crate::runtime::io::spawn(async move {
            let service = shard.controller.as_ref().expect("checked above");
            service.handle(&shard, request).await;
        });
    } else if !shard
        .send(CONTROLLER_SHARD, ShardMessage::Controller(request))
        .await
    {
        return None;
    }
    answer.await.ok()
}
