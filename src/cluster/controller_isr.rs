//! The controller's decisions on one partition's leadership that its leader asks for: ISR
//! changes (Kafka's AlterPartition), one at a time or many in one request, and a failed
//! log's resignation. Split from `controller.rs` (same type, same invariants: one proposal at
//! a time under the shard layer's lock, each validated against every earlier change). Runs
//! on: the controller shard of the active controller.

use std::collections::BTreeMap;

use super::controller::{Controller, ControllerError};
use super::records::MetadataRecord;
use crate::constants::ASSIGNMENTS_PER_RECORD_MAX;

/// A topic's valid changes, each with the index of the request that asked for it.
type Changes = Vec<(usize, super::records::PartitionChange)>;

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
            Err(_) => {
                return Err(ControllerError::StaleLeader(format!(
                    "broker {} does not lead {}-{} at epoch {}",
                    req.leader, req.topic, req.partition, req.leader_epoch
                )))
            }
        };
        let Some(topic_id) = self.image().topic_id_of(&req.topic) else {
            return Ok(None);
        };
        let record = MetadataRecord::PartitionsChanged {
            name: req.topic.clone(),
            topic_id,
            changes: vec![change],
        };
        tracing::warn!(%record, "a leader's log failed; leadership moves");
        Ok(Some(self.propose(record).await?))
    }

    /// A leader's ISR change (AlterPartition): the record's index, `None` if nothing changes.
    pub async fn alter_isr(
        &self,
        req: &super::elect::AlterIsr,
    ) -> Result<Option<u64>, ControllerError> {
        use super::elect::AlterRefused;
        let record = match super::elect::alter_isr(&self.image(), req) {
            Ok(Some(record)) => record,
            Ok(None) => return Ok(None),
            Err(AlterRefused::Unknown) => {
                return Err(ControllerError::UnknownTopic(format!(
                    "no partition {}-{}",
                    req.topic, req.partition
                )))
            }
            Err(AlterRefused::StaleLeader) => {
                return Err(ControllerError::StaleLeader(format!(
                    "broker {} does not lead {}-{} at epoch {}",
                    req.leader, req.topic, req.partition, req.leader_epoch
                )))
            }
            Err(AlterRefused::Invalid(why)) => return Err(ControllerError::InvalidConfig(why)),
        };
        tracing::info!(%record, "ISR change");
        Ok(Some(self.propose(record).await?))
    }

    /// ISR changes (AlterPartition) of many partitions: one answer per request (the index of
    /// the record that holds it, `None` if nothing changes), the valid changes proposed
    /// together per topic. A partition asked twice in one batch gets its first change only.
    pub async fn alter_isrs(
        &self,
        reqs: &[super::elect::AlterIsr],
    ) -> Vec<Result<Option<u64>, ControllerError>> {
        use super::elect::AlterRefused;
        let mut answers: Vec<Result<Option<u64>, ControllerError>> = Vec::new();
        let mut by_topic: BTreeMap<(String, [u8; 16]), Changes> = BTreeMap::new();
        let mut seen = std::collections::BTreeSet::new();
        for (i, req) in reqs.iter().enumerate() {
            if !seen.insert((req.topic.as_str(), req.partition)) {
                answers.push(Err(ControllerError::InvalidConfig(format!(
                    "{}-{} is asked twice in one request",
                    req.topic, req.partition
                ))));
                continue;
            }
            let decided = super::elect::alter_isr(&self.image(), req);
            answers.push(match decided {
                Ok(Some(MetadataRecord::PartitionsChanged {
                    name,
                    topic_id,
                    changes,
                })) => {
                    let entry = by_topic.entry((name, topic_id)).or_default();
                    entry.extend(changes.into_iter().map(|c| (i, c)));
                    Ok(None)
                }
                Ok(_) => Ok(None),
                Err(AlterRefused::Unknown) => Err(ControllerError::UnknownTopic(format!(
                    "no partition {}-{}",
                    req.topic, req.partition
                ))),
                Err(AlterRefused::StaleLeader) => Err(ControllerError::StaleLeader(format!(
                    "broker {} does not lead {}-{} at epoch {}",
                    req.leader, req.topic, req.partition, req.leader_epoch
                ))),
                Err(AlterRefused::Invalid(why)) => Err(ControllerError::InvalidConfig(why)),
            });
        }
        for ((name, topic_id), changes) in by_topic {
            for chunk in changes.chunks(ASSIGNMENTS_PER_RECORD_MAX) {
                let record = MetadataRecord::PartitionsChanged {
                    name: name.clone(),
                    topic_id,
                    changes: chunk.iter().map(|(_, c)| c.clone()).collect(),
                };
                tracing::info!(topic = %name, partitions = chunk.len(), "ISR changes");
                let result = self.propose(record).await.map(Some);
                for (i, _) in chunk {
                    answers[*i] = result.clone();
                }
            }
        }
        answers
    }
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

    /// A batch of ISR changes: valid ones share one record, a stale leader and a partition
    /// asked twice are refused one by one, and nothing is written twice.
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
        assert!(
            matches!(answers[3], Err(ControllerError::InvalidConfig(_))),
            "{answers:?}"
        );
        assert_eq!(isrs[0], vec![leaders[0]]);
        assert_eq!(isrs[1], vec![leaders[1]]);
        assert_eq!(isrs[2].len(), 3);
        assert_eq!(isrs[3].len(), 3);
    }
}
