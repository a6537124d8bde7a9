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

use super::messages::{ControllerRequest, OpenPartition, ShardMessage};
use super::Shard;
use crate::cluster::controller::{Controller, ControllerError};
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
}

impl ControllerService {
    /// Wraps a controller whose log's committed records are all in the starting image.
    pub fn new(controller: Controller) -> ControllerService {
        let applied = controller.log().committed_end();
        ControllerService {
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
            for (index, record) in committed.over(&shard.image()) {
                if let Err(why) = apply(&shard, &record).await {
                    tracing::error!(index, error = %why, "applying a metadata record failed");
                    service.apply_failures.borrow_mut().insert(index, why);
                }
                if stepwise {
                    service.set_applied(index + 1);
                }
            }
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
    ) -> Result<(), ControllerError> {
        match proposed? {
            Some(index) => self.wait_applied(index).await,
            None => Ok(()),
        }
    }

    pub async fn handle(&self, _shard: &Rc<Shard>, request: ControllerRequest) {
        let _guard = self.lock.acquire().await;
        let c = &self.controller;
        match request {
            ControllerRequest::CreateTopics {
                topics,
                validate_only,
                reply,
            } => {
                let mut answers = Vec::with_capacity(topics.len());
                for t in topics {
                    answers.push(self.settle(c.create_topic(t, validate_only).await).await);
                }
                let _ = reply.send(answers);
            }
            ControllerRequest::DeleteTopics { names, reply } => {
                let mut answers = Vec::with_capacity(names.len());
                for name in names {
                    let proposed = c.delete_topic(&name).await.map(Some);
                    answers.push(self.settle(proposed).await);
                }
                let _ = reply.send(answers);
            }
            ControllerRequest::CreatePartitions {
                topics,
                validate_only,
                reply,
            } => {
                let mut answers = Vec::with_capacity(topics.len());
                for (name, total) in topics {
                    let proposed = c.create_partitions(&name, total, validate_only).await;
                    answers.push(self.settle(proposed).await);
                }
                let _ = reply.send(answers);
            }
            ControllerRequest::AlterTopicConfigs {
                topics,
                validate_only,
                reply,
            } => {
                let mut answers = Vec::with_capacity(topics.len());
                for (name, changes) in topics {
                    let proposed = c.alter_configs(&name, changes, validate_only).await;
                    answers.push(self.settle(proposed).await);
                }
                let _ = reply.send(answers);
            }
        }
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
        MetadataRecord::TopicConfigsChanged { .. } | MetadataRecord::ClusterCreated { .. } => {
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

/// Sends a controller request from any shard. On the controller shard the work runs as its own
/// task: the caller awaits only the reply inside the request, so a caller that goes away (its
/// connection closed) cannot cancel a metadata change halfway.
pub async fn call(shard: &Rc<Shard>, request: ControllerRequest) {
    if shard.controller.is_some() {
        let shard = shard.clone();
        crate::runtime::io::spawn(async move {
            let service = shard.controller.as_ref().expect("checked above");
            service.handle(&shard, request).await;
        });
    } else {
        shard
            .send(CONTROLLER_SHARD, ShardMessage::Controller(request))
            .await;
    }
}
