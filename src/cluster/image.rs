//! The metadata image: the state of the cluster after applying every committed record, in
//! order. Every broker builds it the same way from the same records. Runs on: any shard (an
//! immutable `Arc` is shared; the controller shard builds the next one).

use std::collections::BTreeMap;

use super::records::{Assignment, MetadataRecord, PartitionChange};
use crate::constants::{ASSIGNMENTS_PER_RECORD_MAX, OFFSETS_TOPIC, OFFSETS_TOPIC_ID};
use crate::protocol::types::TopicId;

/// A topic as the cluster knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicMeta {
    pub name: String,
    pub topic_id: TopicId,
    pub partitions: u32,
    pub configs: BTreeMap<String, String>,
    /// Where each partition lives, by partition index. Empty on a one-node cluster (every
    /// partition is this broker's); in a cluster a partition without one is not served yet.
    pub assignments: BTreeMap<u32, Assignment>,
    /// The in-sync replicas of each assigned partition (all its replicas when assigned).
    pub isr: BTreeMap<u32, Vec<i32>>,
}

/// A registered broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerMeta {
    pub node_id: i32,
    /// Its current incarnation (a new one at every start).
    pub epoch: i64,
    pub host: String,
    pub port: u16,
    pub fenced: bool,
    /// Stopping cleanly: not elected, not in any ISR.
    pub shutting_down: bool,
}

/// The state of the cluster metadata after applying every record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetadataImage {
    pub cluster_id: String,
    pub topics: BTreeMap<String, TopicMeta>,
    /// Registered brokers by node id (none on a one-node cluster).
    pub brokers: BTreeMap<i32, BrokerMeta>,
    /// Where the group coordinators live: the offsets partitions' assignments.
    pub offsets: BTreeMap<u32, Assignment>,
    /// The offsets partitions' in-sync replicas.
    pub offsets_isr: BTreeMap<u32, Vec<i32>>,
    /// The first producer id no broker has been given yet.
    pub next_producer_id: i64,
    /// Number of records applied: a version clients never see, used in logs.
    pub records_applied: u64,
}

impl MetadataImage {
    pub fn apply(&mut self, record: &MetadataRecord) {
        self.records_applied += 1;
        match record {
            MetadataRecord::ClusterCreated { cluster_id } => self.cluster_id = cluster_id.clone(),
            MetadataRecord::TopicCreated {
                name,
                topic_id,
                partitions,
                configs,
            } => {
                self.topics.insert(
                    name.clone(),
                    TopicMeta {
                        name: name.clone(),
                        topic_id: TopicId(*topic_id),
                        partitions: *partitions,
                        configs: configs.iter().cloned().collect(),
                        assignments: BTreeMap::new(),
                        isr: BTreeMap::new(),
                    },
                );
            }
            MetadataRecord::TopicDeleted { name } => {
                self.topics.remove(name);
            }
            MetadataRecord::TopicConfigsChanged { name, configs } => {
                if let Some(t) = self.topics.get_mut(name) {
                    t.configs = configs.iter().cloned().collect();
                }
            }
            MetadataRecord::PartitionsCreated { name, total } => {
                if let Some(t) = self.topics.get_mut(name) {
                    t.partitions = (*total).max(t.partitions);
                }
            }
            MetadataRecord::BrokerRegistered {
                node_id,
                epoch,
                host,
                port,
            } => {
                self.brokers.insert(
                    *node_id,
                    BrokerMeta {
                        node_id: *node_id,
                        epoch: *epoch,
                        host: host.clone(),
                        port: *port,
                        fenced: false,
                        shutting_down: false,
                    },
                );
            }
            MetadataRecord::BrokerFenced { node_id, epoch }
            | MetadataRecord::BrokerUnfenced { node_id, epoch } => {
                let fenced = matches!(record, MetadataRecord::BrokerFenced { .. });
                if let Some(b) = self.brokers.get_mut(node_id).filter(|b| b.epoch == *epoch) {
                    b.fenced = fenced;
                }
            }
            MetadataRecord::PartitionsAssigned {
                name,
                topic_id,
                first,
                assignments,
            } => {
                let Some((target, isr, partitions)) = self.partitions_mut(name, topic_id) else {
                    return;
                };
                for (i, a) in assignments.iter().enumerate() {
                    let p = first.saturating_add(i as u32);
                    if p < partitions {
                        target.insert(p, a.clone());
                        isr.insert(p, a.replicas.clone());
                    }
                }
            }
            MetadataRecord::PartitionsChanged {
                name,
                topic_id,
                changes,
            } => {
                let Some((target, isr, _)) = self.partitions_mut(name, topic_id) else {
                    return;
                };
                for c in changes {
                    if let Some(a) = target.get_mut(&c.partition) {
                        a.leader = c.leader;
                        a.leader_epoch = c.leader_epoch;
                        isr.insert(c.partition, c.isr.clone());
                    }
                }
            }
            MetadataRecord::ProducerIdsAllocated { next, .. } => {
                self.next_producer_id = self.next_producer_id.max(*next);
            }
            MetadataRecord::BrokerShuttingDown { node_id, epoch } => {
                if let Some(b) = self.brokers.get_mut(node_id).filter(|b| b.epoch == *epoch) {
                    b.shutting_down = true;
                }
            }
        }
    }

    /// The assignments, ISRs and partition count of topic `name` (the offsets partitions
    /// under their name and fixed id), if `topic_id` is its current id.
    #[allow(clippy::type_complexity)]
    fn partitions_mut(
        &mut self,
        name: &str,
        topic_id: &[u8; 16],
    ) -> Option<(
        &mut BTreeMap<u32, Assignment>,
        &mut BTreeMap<u32, Vec<i32>>,
        u32,
    )> {
        if name == OFFSETS_TOPIC && *topic_id == OFFSETS_TOPIC_ID {
            let n = crate::constants::OFFSETS_PARTITIONS;
            return Some((&mut self.offsets, &mut self.offsets_isr, n));
        }
        match self.topics.get_mut(name) {
            Some(t) if t.topic_id.0 == *topic_id => {
                Some((&mut t.assignments, &mut t.isr, t.partitions))
            }
            _ => None,
        }
    }

    /// A partition's assignment and in-sync replicas (the offsets partitions under their
    /// name).
    pub fn partition(&self, topic: &str, partition: u32) -> Option<(&Assignment, &[i32])> {
        let (assignments, isr) = if topic == OFFSETS_TOPIC {
            (&self.offsets, &self.offsets_isr)
        } else {
            let t = self.topics.get(topic)?;
            (&t.assignments, &t.isr)
        };
        let a = assignments.get(&partition)?;
        Some((a, isr.get(&partition).map_or(&[][..], |v| v.as_slice())))
    }

    /// The id of topic `name` (the offsets partitions' fixed id under their name).
    pub fn topic_id_of(&self, name: &str) -> Option<[u8; 16]> {
        if name == OFFSETS_TOPIC {
            return Some(OFFSETS_TOPIC_ID);
        }
        self.topics.get(name).map(|t| t.topic_id.0)
    }

    /// Whether broker `node_id` is registered and not fenced.
    pub fn is_live(&self, node_id: i32) -> bool {
        self.brokers.get(&node_id).is_some_and(|b| !b.fenced)
    }

    /// Whether broker `node_id` may lead and be in ISRs: live and not stopping.
    pub fn is_eligible(&self, node_id: i32) -> bool {
        self.brokers
            .get(&node_id)
            .is_some_and(|b| !b.fenced && !b.shutting_down)
    }

    /// The live (unfenced) brokers.
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerMeta> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    /// The live broker leading `topic`/`partition` in a cluster (`None`: unassigned, or its
    /// leader is fenced).
    pub fn live_leader(&self, topic: &str, partition: u32) -> Option<&BrokerMeta> {
        let a = self.topics.get(topic)?.assignments.get(&partition)?;
        self.brokers.get(&a.leader).filter(|b| !b.fenced)
    }

    /// The records that take this image to `target` (for a reader that jumps to a snapshot
    /// instead of replaying the records in between): deletions first, then creations, growth
    /// and config changes. A topic recreated under the same name (another id) is deleted and
    /// created.
    pub fn changes_to(&self, target: &MetadataImage) -> Vec<MetadataRecord> {
        let mut out = Vec::new();
        if self.cluster_id != target.cluster_id {
            out.push(MetadataRecord::ClusterCreated {
                cluster_id: target.cluster_id.clone(),
            });
        }
        let same = |t: &TopicMeta| {
            target
                .topics
                .get(&t.name)
                .is_some_and(|n| n.topic_id == t.topic_id)
        };
        for t in self.topics.values().filter(|t| !same(t)) {
            out.push(MetadataRecord::TopicDeleted {
                name: t.name.clone(),
            });
        }
        for t in target.topics.values() {
            let configs = || {
                t.configs
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            };
            match self
                .topics
                .get(&t.name)
                .filter(|old| old.topic_id == t.topic_id)
            {
                None => out.push(MetadataRecord::TopicCreated {
                    name: t.name.clone(),
                    topic_id: t.topic_id.0,
                    partitions: t.partitions,
                    configs: configs(),
                }),
                Some(old) => {
                    if old.partitions < t.partitions {
                        out.push(MetadataRecord::PartitionsCreated {
                            name: t.name.clone(),
                            total: t.partitions,
                        });
                    }
                    if old.configs != t.configs {
                        out.push(MetadataRecord::TopicConfigsChanged {
                            name: t.name.clone(),
                            configs: configs(),
                        });
                    }
                }
            }
            let empty = BTreeMap::new();
            let old = self
                .topics
                .get(&t.name)
                .filter(|old| old.topic_id == t.topic_id)
                .map_or(&empty, |old| &old.assignments);
            assignment_changes(&t.name, t.topic_id.0, old, &t.assignments, &mut out);
            let old_isr = self
                .topics
                .get(&t.name)
                .filter(|old| old.topic_id == t.topic_id)
                .map(|old| &old.isr);
            isr_changes(
                &t.name,
                t.topic_id.0,
                (old, old_isr),
                (&t.assignments, &t.isr),
                &mut out,
            );
        }
        for b in target.brokers.values() {
            let old = self.brokers.get(&b.node_id);
            let (node_id, epoch) = (b.node_id, b.epoch);
            if old.is_none_or(|o| (o.epoch, &o.host, o.port) != (b.epoch, &b.host, b.port)) {
                out.push(MetadataRecord::BrokerRegistered {
                    node_id,
                    epoch,
                    host: b.host.clone(),
                    port: b.port,
                });
                if b.fenced {
                    out.push(MetadataRecord::BrokerFenced { node_id, epoch });
                }
            } else if old.is_some_and(|o| o.fenced != b.fenced) {
                out.push(if b.fenced {
                    MetadataRecord::BrokerFenced { node_id, epoch }
                } else {
                    MetadataRecord::BrokerUnfenced { node_id, epoch }
                });
            }
            let was = old.is_some_and(|o| o.epoch == b.epoch && o.shutting_down);
            if b.shutting_down && !was {
                out.push(MetadataRecord::BrokerShuttingDown { node_id, epoch });
            }
        }
        assignment_changes(
            OFFSETS_TOPIC,
            OFFSETS_TOPIC_ID,
            &self.offsets,
            &target.offsets,
            &mut out,
        );
        isr_changes(
            OFFSETS_TOPIC,
            OFFSETS_TOPIC_ID,
            (&self.offsets, Some(&self.offsets_isr)),
            (&target.offsets, &target.offsets_isr),
            &mut out,
        );
        if target.next_producer_id > self.next_producer_id {
            out.push(MetadataRecord::ProducerIdsAllocated {
                node_id: -1,
                next: target.next_producer_id,
            });
        }
        out
    }

    pub fn topic_by_id(&self, id: &TopicId) -> Option<&TopicMeta> {
        self.topics.values().find(|t| &t.topic_id == id)
    }

    /// The name of the topic with id `id` (the offsets partitions' under their fixed id).
    pub fn topic_name_by_id(&self, id: &TopicId) -> Option<&str> {
        if id.0 == OFFSETS_TOPIC_ID {
            return Some(OFFSETS_TOPIC);
        }
        self.topic_by_id(id).map(|t| t.name.as_str())
    }
}

/// `PartitionsAssigned` records (runs of consecutive partitions, at most
/// `ASSIGNMENTS_PER_RECORD_MAX` each) for the partitions whose assignment differs.
fn assignment_changes(
    name: &str,
    topic_id: [u8; 16],
    old: &BTreeMap<u32, Assignment>,
    new: &BTreeMap<u32, Assignment>,
    out: &mut Vec<MetadataRecord>,
) {
    let mut run: Option<(u32, Vec<Assignment>)> = None;
    let flush = |run: &mut Option<(u32, Vec<Assignment>)>, out: &mut Vec<MetadataRecord>| {
        if let Some((first, assignments)) = run.take() {
            out.push(MetadataRecord::PartitionsAssigned {
                name: name.to_string(),
                topic_id,
                first,
                assignments,
            });
        }
    };
    for (p, a) in new.iter().filter(|(p, a)| old.get(p) != Some(a)) {
        let extends = run.as_ref().is_some_and(|(first, list)| {
            *first as usize + list.len() == *p as usize && list.len() < ASSIGNMENTS_PER_RECORD_MAX
        });
        if !extends {
            flush(&mut run, out);
            run = Some((*p, Vec::new()));
        }
        run.as_mut().expect("started above").1.push(a.clone());
    }
    flush(&mut run, out);
}

/// In-sync replicas by partition.
type Isrs = BTreeMap<u32, Vec<i32>>;

/// `PartitionsChanged` records for the partitions whose in-sync replicas differ from what
/// the assignment changes before them leave (an assignment sets the ISR to its replicas).
fn isr_changes(
    name: &str,
    topic_id: [u8; 16],
    old: (&BTreeMap<u32, Assignment>, Option<&Isrs>),
    new: (&BTreeMap<u32, Assignment>, &BTreeMap<u32, Vec<i32>>),
    out: &mut Vec<MetadataRecord>,
) {
    let mut changes = Vec::new();
    for (p, a) in new.0 {
        let reassigned = old.0.get(p) != Some(a);
        let before = if reassigned {
            Some(&a.replicas)
        } else {
            old.1.and_then(|isr| isr.get(p))
        };
        let after = new.1.get(p).unwrap_or(&a.replicas);
        if before != Some(after) {
            changes.push(PartitionChange {
                partition: *p,
                leader: a.leader,
                leader_epoch: a.leader_epoch,
                isr: after.clone(),
            });
        }
    }
    for chunk in changes.chunks(ASSIGNMENTS_PER_RECORD_MAX) {
        out.push(MetadataRecord::PartitionsChanged {
            name: name.to_string(),
            topic_id,
            changes: chunk.to_vec(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn created(name: &str, id: u8, partitions: u32, retention: &str) -> MetadataRecord {
        MetadataRecord::TopicCreated {
            name: name.into(),
            topic_id: [id; 16],
            partitions,
            configs: vec![("retention.ms".into(), retention.into())],
        }
    }

    fn image(records: &[MetadataRecord]) -> MetadataImage {
        let mut image = MetadataImage::default();
        for r in records {
            image.apply(r);
        }
        image
    }

    /// Applying `changes_to` takes an image to the target: kept, deleted, recreated (same
    /// name, new id), grown, reconfigured and new topics.
    #[test]
    fn changes_to_reaches_the_target() {
        let cluster = MetadataRecord::ClusterCreated {
            cluster_id: "c".into(),
        };
        let from = image(&[
            cluster.clone(),
            created("kept", 1, 2, "1"),
            created("gone", 2, 1, "1"),
            created("again", 3, 1, "1"),
            created("grown", 4, 1, "1"),
            created("tuned", 5, 1, "1"),
        ]);
        let to = image(&[
            cluster,
            created("kept", 1, 2, "1"),
            created("again", 9, 4, "1"),
            created("grown", 4, 3, "1"),
            created("tuned", 5, 1, "2"),
            created("new", 6, 2, "1"),
        ]);
        let mut reached = from.clone();
        for r in from.changes_to(&to) {
            reached.apply(&r);
        }
        assert_eq!(reached.topics, to.topics);
        assert_eq!(reached.cluster_id, to.cluster_id);
        assert!(to.changes_to(&to).is_empty());
    }

    fn assigned(name: &str, id: u8, first: u32, leaders: &[i32]) -> MetadataRecord {
        MetadataRecord::PartitionsAssigned {
            name: name.into(),
            topic_id: [id; 16],
            first,
            assignments: leaders
                .iter()
                .map(|l| Assignment {
                    replicas: vec![*l],
                    leader: *l,
                    leader_epoch: 0,
                })
                .collect(),
        }
    }

    fn registered(node_id: i32, epoch: i64) -> MetadataRecord {
        MetadataRecord::BrokerRegistered {
            node_id,
            epoch,
            host: "h".into(),
            port: 9092,
        }
    }

    /// Brokers (new, re-registered, fenced), assignments (topics and the offsets partitions,
    /// more than one record's worth) and producer id blocks reach the target too; an
    /// assignment for an older topic of the same name is ignored.
    #[test]
    fn changes_to_carries_brokers_assignments_and_producer_ids() {
        let offsets = |first, leaders: &[i32]| MetadataRecord::PartitionsAssigned {
            name: OFFSETS_TOPIC.into(),
            topic_id: OFFSETS_TOPIC_ID,
            first,
            assignments: match assigned("x", 0, 0, leaders) {
                MetadataRecord::PartitionsAssigned { assignments, .. } => assignments,
                _ => unreachable!(),
            },
        };
        let many: Vec<i32> = (0..200).map(|i| i % 3).collect();
        let from = image(&[
            registered(1, 10),
            registered(2, 20),
            created("t", 1, 200, "1"),
            assigned("t", 1, 0, &many[..100]),
            offsets(0, &[1, 2]),
        ]);
        let to = image(&[
            registered(1, 11),
            registered(2, 20),
            MetadataRecord::BrokerFenced {
                node_id: 2,
                epoch: 20,
            },
            registered(3, 30),
            created("t", 1, 200, "1"),
            assigned("t", 1, 0, &many),
            assigned("t", 9, 0, &[7]),
            offsets(0, &[1, 3]),
            MetadataRecord::ProducerIdsAllocated {
                node_id: 1,
                next: 1000,
            },
        ]);
        assert_eq!(to.topics["t"].assignments.len(), 200);
        assert_eq!(to.topics["t"].assignments[&0].leader, 0);
        assert!(to.brokers[&2].fenced);
        assert_eq!(to.live_brokers().count(), 2);
        let mut reached = from.clone();
        for r in from.changes_to(&to) {
            reached.apply(&r);
        }
        assert_eq!(reached.topics, to.topics);
        assert_eq!(reached.brokers, to.brokers);
        assert_eq!(reached.offsets, to.offsets);
        assert_eq!(reached.next_producer_id, 1000);
        assert!(to.changes_to(&to).is_empty());
        let mut fresh = MetadataImage::default();
        for r in MetadataImage::default().changes_to(&to) {
            fresh.apply(&r);
        }
        assert_eq!(fresh.topics, to.topics);
        assert_eq!(fresh.brokers, to.brokers);
    }
}
