//! The metadata image: the state of the cluster after applying every committed record, in
//! order. Every broker builds it the same way from the same records. Runs on: any shard (an
//! immutable `Arc` is shared; the controller shard builds the next one).

use std::collections::BTreeMap;

use super::records::MetadataRecord;
use crate::protocol::types::TopicId;

/// A topic as the cluster knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicMeta {
    pub name: String,
    pub topic_id: TopicId,
    pub partitions: u32,
    pub configs: BTreeMap<String, String>,
}

/// The state of the cluster metadata after applying every record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetadataImage {
    pub cluster_id: String,
    pub topics: BTreeMap<String, TopicMeta>,
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
        }
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
        }
        out
    }

    pub fn topic_by_id(&self, id: &TopicId) -> Option<&TopicMeta> {
        self.topics.values().find(|t| &t.topic_id == id)
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
}
