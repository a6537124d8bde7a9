//! The offsets partitions as replicas: the shard gives each offsets partition it owns a
//! `Replica` (replicated like a user partition, RF min(3, brokers) in a cluster), routes the
//! coordinator's appends through it with acks=all, and tells the coordinator when it starts or
//! stops leading one, so a group's coordinator moves with its offsets partition's leader.
//! Runs on: the shard owning each offsets partition (the same shard coordinates its groups).
//! Invariants: a commit is acknowledged only once every in-sync replica has it durably; the
//! coordinator serves a partition's groups only while this broker leads it; clients never
//! produce to or fetch from the offsets partitions (only replica fetches reach them).

use std::rc::{Rc, Weak};
use std::time::Duration;

use super::Shard;
use crate::constants::OFFSETS_TOPIC;
use crate::group::offsets::{Acked, OffsetsAppend, WriteError};
use crate::protocol::types::{Offset, TopicPartition};
use crate::replication::{Acks, Error as ReplicaError, Produced, Replica, RoleView};

/// How long a commit waits for the in-sync replicas (Kafka's `offsets.commit.timeout.ms`).
const OFFSETS_COMMIT_TIMEOUT_MS: u64 = 5_000;

/// The coordinator's way into the offsets partitions' replication.
pub struct OffsetsWriter(pub Weak<Shard>);

impl OffsetsAppend for OffsetsWriter {
    fn append(&self, partition: u32, batch: &[u8]) -> Result<(Offset, Acked), WriteError> {
        let shard = self.0.upgrade().ok_or(WriteError::NotCoordinator)?;
        let replica = shard
            .offsets_replicas
            .borrow()
            .get(&partition)
            .cloned()
            .ok_or(WriteError::NotCoordinator)?;
        let timeout = Duration::from_millis(OFFSETS_COMMIT_TIMEOUT_MS);
        match replica.produce(batch, Acks::All, timeout) {
            Ok(Produced::Appended {
                base_offset,
                done: Some(done),
            }) => Ok((
                base_offset,
                Box::pin(async move { done.wait().await.map_err(write_error) }),
            )),
            Ok(_) => Err(WriteError::Storage(
                "an offsets batch was taken as a duplicate or without acknowledgement".into(),
            )),
            Err(e) => Err(write_error(e)),
        }
    }
}

fn write_error(e: ReplicaError) -> WriteError {
    match e {
        ReplicaError::NotLeader
        | ReplicaError::NotAReplica
        | ReplicaError::FencedLeaderEpoch
        | ReplicaError::UnknownLeaderEpoch => WriteError::NotCoordinator,
        ReplicaError::NotEnoughReplicas
        | ReplicaError::NotEnoughReplicasAfterAppend
        | ReplicaError::TimedOut => WriteError::Unavailable(e.to_string()),
        ReplicaError::Storage(e) => WriteError::Storage(e.to_string()),
    }
}

impl Shard {
    /// Gives the coordinator's offsets partitions their replication (once, at start).
    pub fn install_offsets_replicas(&self) {
        let Some(coordinator) = self.coordinator.get() else {
            return;
        };
        let mut replicas = self.offsets_replicas.borrow_mut();
        for (p, log) in coordinator.offsets.owned() {
            let env = self.env.clone();
            let replica = match &self.config.cluster {
                None => Replica::single_node(log, env),
                Some(_) => Replica::clustered(log, env, self.offline_view()),
            };
            replicas.insert(p, Rc::new(replica));
        }
    }

    /// A role with no leader: what a replica holds until an image names its role.
    pub(super) fn offline_view(&self) -> RoleView {
        RoleView {
            me: self.config.node_id.0,
            leader: -1,
            epoch: crate::protocol::types::LeaderEpoch(-1),
            replicas: Vec::new(),
            isr: Vec::new(),
            min_insync: 1,
        }
    }

    /// The replica of `tp`, user partition or offsets partition (for replica fetches and the
    /// replication duties; client requests use `replica`, which never names the latter).
    pub fn any_replica(&self, tp: &TopicPartition) -> Option<Rc<Replica>> {
        if tp.topic.as_str() == OFFSETS_TOPIC {
            let p = u32::try_from(tp.partition.0).ok()?;
            return self.offsets_replicas.borrow().get(&p).cloned();
        }
        self.replica(tp)
    }

    /// Every replica this shard holds: user partitions and offsets partitions.
    pub fn all_replicas(&self) -> Vec<(TopicPartition, Rc<Replica>)> {
        let mut all: Vec<(TopicPartition, Rc<Replica>)> = self
            .partitions
            .borrow()
            .iter()
            .map(|(tp, r)| (tp.clone(), r.clone()))
            .collect();
        all.extend(
            self.offsets_replicas
                .borrow()
                .iter()
                .map(|(p, r)| (TopicPartition::new(OFFSETS_TOPIC, *p as i32), r.clone())),
        );
        all
    }

    /// Tells the coordinator which offsets partitions this broker leads now (after the roles
    /// were refreshed): a new leadership is loaded, a lost one dropped.
    pub(super) fn refresh_coordination(&self) {
        let Some(coordinator) = self.coordinator.get() else {
            return;
        };
        for (p, replica) in self.offsets_replicas.borrow().iter() {
            match replica.leading_epoch() {
                Some(epoch) => {
                    let coordinator = coordinator.clone();
                    let (p, replica) = (*p, replica.clone());
                    // Still leading at that epoch when the task runs: an image installed in
                    // between may have moved leadership away already (its unlead came first).
                    crate::runtime::io::spawn(async move {
                        if replica.leading_epoch() == Some(epoch) {
                            coordinator.lead(p, epoch.0).await;
                        }
                    });
                }
                None => coordinator.unlead(*p),
            }
        }
    }
}
