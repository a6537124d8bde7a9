//! The controller's decisions on one partition's leadership that its leader asks for: ISR
//! changes (Kafka's AlterPartition), one at a time or many in one request, and a failed
//! log's resignation. Split from `controller.rs` (same type, same invariants: one proposal at
//! a time under the shard layer's lock, each validated against every earlier change). Runs
//! on: the controller shard of the active controller.

use std::collections::BTreeMap;

use super::controller::{Controller, ControllerError};
use super::records::{MetadataRecord, PartitionChange};
use crate::constants::ASSIGNMENTS_PER_RECORD_MAX;

impl Controller {
    /// A leader with a failed log resigns (`req.isr` is ignored): the index of the record
    /// that moved its partition, `None` if no other replica may lead.
    pub async fn resign(
        &self,
        req: &super::elect::AlterIsr,
    ) -> Result<Option<u64>, ControllerError> {
        let change = super::elect::resign(
            &self.image(),
            &req.topic,
            req.partition,
            req.leader,
            req.leader_epoch,
        );
        let change = match change {
            Ok(Some(c)) => c,
            Ok(None) => return Ok(None),
            Err(_) => return Err(stale_leader(req)),
        };
        let Some(topic_id) = self.image().topic_id_of(&req.topic) else {
            return Ok(None);
        };
        let record = one_change(req, topic_id, change);
        tracing::warn!(%record, "a leader's log failed; leadership moves");
        Ok(Some(self.propose(record).await?))
    }

    /// A leader's ISR change (AlterPartition): the record's index, `None` if nothing changes.
    pub async fn alter_isr(
        &self,
        req: &super::elect::AlterIsr,
    ) -> Result<Option<u64>, ControllerError> {
        let Some((topic_id, change)) = self.decide_isr(req)? else {
            return Ok(None);
        };
        let record = one_change(req, topic_id, change);
        tracing::info!(%record, "ISR change");
        Ok(Some(self.propose(record).await?))
    }

    /// ISR changes (AlterPartition) of many partitions: one answer per request (the index of
    /// the record that holds it, `None` if nothing changes), the valid changes proposed
    /// together, one record per topic and `ASSIGNMENTS_PER_RECORD_MAX` changes, each chunk
    /// validated just before it is proposed (against the view with every earlier record
    /// applied). A partition asked twice gets the answer of its first request; after a
    /// failed proposal (no quorum) the rest get the same error without waiting for theirs.
    pub async fn alter_isrs(
        &self,
        reqs: &[super::elect::AlterIsr],
    ) -> Vec<Result<Option<u64>, ControllerError>> {
        let mut answers: Vec<Result<Option<u64>, ControllerError>> = vec![Ok(None); reqs.len()];
        let mut first: BTreeMap<(&str, u32), usize> = BTreeMap::new();
        let mut duplicates = Vec::new();
        let mut by_topic: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, req) in reqs.iter().enumerate() {
            match first.entry((req.topic.as_str(), req.partition)) {
                std::collections::btree_map::Entry::Occupied(e) => duplicates.push((i, *e.get())),
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(i);
                    by_topic.entry(req.topic.as_str()).or_default().push(i);
                }
            }
        }
        let mut failed: Option<ControllerError> = None;
        for (topic, asked) in by_topic {
            for chunk in asked.chunks(ASSIGNMENTS_PER_RECORD_MAX) {
                if let Some(e) = &failed {
                    for i in chunk {
                        answers[*i] = Err(e.clone());
                    }
                    continue;
                }
                let mut topic_id = None;
                let mut changes = Vec::new();
                let mut holders = Vec::new();
                for &i in chunk {
                    match self.decide_isr(&reqs[i]) {
                        Ok(Some((id, change))) => {
                            topic_id = Some(id);
                            changes.push(change);
                            holders.push(i);
                        }
                        other => answers[i] = other.map(|_| None),
                    }
                }
                let Some(topic_id) = topic_id else { continue };
                let record = MetadataRecord::PartitionsChanged {
                    name: topic.to_string(),
                    topic_id,
                    changes,
                };
                tracing::info!(topic, partitions = holders.len(), "ISR changes");
                let result = self.propose(record).await;
                if let Err(e) = &result {
                    failed = Some(e.clone());
                }
                for i in holders {
                    answers[i] = result.clone().map(Some);
                }
            }
        }
        for (i, first) in duplicates {
            answers[i] = answers[first].clone();
        }
        answers
    }

    /// One ISR change checked against the view: the topic id and the change to write, `None`
    /// if the ISR already is the one asked.
    fn decide_isr(
        &self,
        req: &super::elect::AlterIsr,
    ) -> Result<Option<([u8; 16], PartitionChange)>, ControllerError> {
        use super::elect::AlterRefused;
        match super::elect::alter_isr(&self.image(), req) {
            Ok(Some(MetadataRecord::PartitionsChanged {
                topic_id, changes, ..
            })) => Ok(changes.into_iter().next().map(|c| (topic_id, c))),
            Ok(_) => Ok(None),
            Err(AlterRefused::Unknown) => Err(ControllerError::UnknownTopic(format!(
                "no partition {}-{}",
                req.topic, req.partition
            ))),
            Err(AlterRefused::StaleLeader) => Err(stale_leader(req)),
            Err(AlterRefused::Invalid(why)) => Err(ControllerError::InvalidConfig(why)),
        }
    }
}

/// The record of one partition's change that `req` asked for.
fn one_change(
    req: &super::elect::AlterIsr,
    topic_id: [u8; 16],
    change: PartitionChange,
) -> MetadataRecord {
    MetadataRecord::PartitionsChanged {
        name: req.topic.clone(),
        topic_id,
        changes: vec![change],
    }
}

/// The refusal of a request from a broker that no longer leads at the epoch it names.
fn stale_leader(req: &super::elect::AlterIsr) -> ControllerError {
    ControllerError::StaleLeader(format!(
        "broker {} does not lead {}-{} at epoch {}",
        req.leader, req.topic, req.partition, req.leader_epoch
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::cluster::controller::NewTopic;
    use crate::cluster::elect::AlterIsr;
    use crate::cluster::{LocalMetadataLog, MetadataImage};
    use crate::testing::{FaultFs, ManualClock};

    async fn controller() -> Controller {
        let fs = FaultFs::new();
        let env = crate::testing::env(&fs, &ManualClock::new(0), 1);
        let dir = std::path::Path::new("/meta");
        env.fs.create_dir_all(dir).await.unwrap();
        let log = LocalMetadataLog::open(&env, dir).await.unwrap();
        let mut config =
            crate::config::Config::resolve(crate::config::Settings::default(), None).unwrap();
        config.cluster = Some(crate::config::ClusterConfig {
            node_id: 1,
            controller_listen: "127.0.0.1:19001".parse().unwrap(),
            voters: (1..=3)
                .map(|b| (b, format!("127.0.0.1:{}", 19_000 + b).parse().unwrap()))
                .collect(),
        });
        let c = Controller::new(log, MetadataImage::default(), Arc::new(config), env);
        for b in 1..=3 {
            c.broker_heartbeat(b, 1, "h", 9_000 + b as u16)
                .await
                .unwrap();
        }
        let topic = NewTopic {
            name: "t".into(),
            partitions: 4,
            replication_factor: 3,
            configs: vec![],
        };
        c.create_topic(topic, false).await.unwrap();
        c
    }

    /// A batch of ISR changes: valid ones share one record, a stale leader is refused alone,
    /// and a partition asked twice is written once (its second request gets the first answer).
    #[test]
    fn isr_changes_of_one_batch_share_a_record() {
        let (answers, isrs, end_before, end_after) = crate::runtime::io::run_local(async {
            let c = controller().await;
            let leader_of = |p: u32| c.image().partition("t", p).unwrap().0.leader;
            let shrink = |p: u32, leader_epoch: i32| {
                let leader = leader_of(p);
                AlterIsr {
                    topic: "t".into(),
                    partition: p,
                    leader,
                    leader_epoch,
                    isr: vec![leader],
                }
            };
            let reqs = vec![shrink(0, 0), shrink(1, 0), shrink(2, 7), shrink(0, 0)];
            let end_before = c.log().committed_end();
            let answers = c.alter_isrs(&reqs).await;
            let isrs: Vec<Vec<i32>> = (0..4)
                .map(|p| c.image().partition("t", p).unwrap().1.to_vec())
                .collect();
            let leaders: Vec<i32> = (0..4).map(leader_of).collect();
            (
                answers,
                (isrs, leaders),
                end_before,
                c.log().committed_end(),
            )
        });
        let (isrs, leaders) = isrs;
        assert_eq!(end_after, end_before + 1, "one record for the batch");
        let index = Some(end_before);
        assert_eq!(answers[0], Ok(index));
        assert_eq!(answers[1], Ok(index));
        assert!(
            matches!(answers[2], Err(ControllerError::StaleLeader(_))),
            "{answers:?}"
        );
        assert_eq!(
            answers[3], answers[0],
            "a partition asked twice gets its first answer"
        );
        assert_eq!(isrs[0], vec![leaders[0]]);
        assert_eq!(isrs[1], vec![leaders[1]]);
        assert_eq!(isrs[2].len(), 3);
        assert_eq!(isrs[3].len(), 3);
    }
}
