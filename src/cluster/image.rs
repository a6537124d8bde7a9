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

    pub fn topic_by_id(&self, id: &TopicId) -> Option<&TopicMeta> {
        self.topics.values().find(|t| &t.topic_id == id)
    }
}
