//! The controller: decides metadata changes and proposes them as records. It validates a
//! request against the image of committed records (its own view), proposes the record, and
//! returns its index once committed; applying committed records (opening partitions,
//! publishing images) is the shard layer's work. Runs on: the controller shard only. Invariant:
//! one proposal at a time (the shard layer holds its lock across a whole change), so each
//! validation sees every earlier change.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use super::image::MetadataImage;
use super::log::{MetadataError, MetadataLog};
use super::records::MetadataRecord;
use crate::config::{validate_topic_config, Config};
use crate::constants::{
    OFFSETS_TOPIC, PARTITIONS_PER_TOPIC_MAX, TOPICS_MAX, TOPIC_CONFIGS_MAX, TOPIC_NAME_BYTES_MAX,
};
use crate::runtime::env::Env;

/// A topic to create, as CreateTopics (or auto-creation) asks.
#[derive(Debug, Clone)]
pub struct NewTopic {
    pub name: String,
    /// -1 means the broker default.
    pub partitions: i32,
    /// -1 means the broker default (1 on one node).
    pub replication_factor: i16,
    pub configs: Vec<(String, String)>,
}

/// Config keys to set (`Some`) or remove (`None`).
pub type ConfigChanges = Vec<(String, Option<String>)>;

/// Why the controller refused a change (the server layer picks the Kafka error code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControllerError {
    InvalidTopic(String),
    TopicExists(String),
    UnknownTopic(String),
    InvalidPartitions(String),
    InvalidReplicationFactor(String),
    InvalidConfig(String),
    PolicyViolation(String),
    /// The metadata log could not commit the record.
    Log(String),
    /// The record committed, but applying it failed (a partition could not be opened).
    Apply(String),
}

impl ControllerError {
    pub fn message(&self) -> &str {
        match self {
            ControllerError::InvalidTopic(m)
            | ControllerError::TopicExists(m)
            | ControllerError::UnknownTopic(m)
            | ControllerError::InvalidPartitions(m)
            | ControllerError::InvalidReplicationFactor(m)
            | ControllerError::InvalidConfig(m)
            | ControllerError::PolicyViolation(m)
            | ControllerError::Log(m)
            | ControllerError::Apply(m) => m,
        }
    }
}

impl From<MetadataError> for ControllerError {
    fn from(e: MetadataError) -> Self {
        ControllerError::Log(e.to_string())
    }
}

/// Kafka's topic name rules: 1..=249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(format!("topic name `{name}` is not allowed"));
    }
    if name == OFFSETS_TOPIC {
        return Err(format!(
            "topic name `{name}` is reserved for committed offsets"
        ));
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return Err(format!(
            "topic name is longer than {TOPIC_NAME_BYTES_MAX} characters"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '.' || *c == '_' || *c == '-'))
    {
        return Err(format!(
            "topic name `{name}` contains `{c}`; allowed: [a-zA-Z0-9._-]"
        ));
    }
    Ok(())
}

pub struct Controller {
    log: Rc<dyn MetadataLog>,
    /// The committed records applied, as the controller validates against them.
    image: RefCell<MetadataImage>,
    config: Arc<Config>,
    env: Env,
}

impl Controller {
    /// A controller over `log`, whose committed records `image` already reflects.
    pub fn new(
        log: Rc<dyn MetadataLog>,
        image: MetadataImage,
        config: Arc<Config>,
        env: Env,
    ) -> Controller {
        Controller {
            log,
            image: RefCell::new(image),
            config,
            env,
        }
    }

    pub fn log(&self) -> &Rc<dyn MetadataLog> {
        &self.log
    }

    /// Proposes `record` and applies it to the controller's view once committed.
    async fn propose(&self, record: MetadataRecord) -> Result<u64, ControllerError> {
        let index = self.log.propose(record.clone()).await?;
        self.image.borrow_mut().apply(&record);
        Ok(index)
    }

    /// Checks a new topic against the image and the rules; its partition count if valid.
    pub fn check_new_topic(&self, t: &NewTopic) -> Result<u32, ControllerError> {
        use ControllerError::*;
        let image = self.image.borrow();
        validate_topic_name(&t.name).map_err(InvalidTopic)?;
        if image.topics.contains_key(&t.name) {
            return Err(TopicExists(format!("topic `{}` already exists", t.name)));
        }
        let folded = t.name.replace('.', "_");
        if let Some(other) = image.topics.keys().find(|n| n.replace('.', "_") == folded) {
            return Err(InvalidTopic(format!(
                "topic `{}` collides with `{other}` ('.' and '_' collide)",
                t.name
            )));
        }
        if image.topics.len() >= TOPICS_MAX {
            return Err(PolicyViolation(format!(
                "the cluster holds {TOPICS_MAX} topics"
            )));
        }
        let partitions = match t.partitions {
            -1 => self.config.default_partitions,
            p if p >= 1 && p as u32 <= PARTITIONS_PER_TOPIC_MAX => p as u32,
            p => {
                return Err(InvalidPartitions(format!(
                    "partitions must be 1..={PARTITIONS_PER_TOPIC_MAX}, got {p}"
                )))
            }
        };
        if t.replication_factor != -1 && t.replication_factor != 1 {
            return Err(InvalidReplicationFactor(format!(
                "replication factor {} is not possible on a one-broker cluster",
                t.replication_factor
            )));
        }
        if t.configs.len() > TOPIC_CONFIGS_MAX {
            return Err(InvalidConfig(format!(
                "more than {TOPIC_CONFIGS_MAX} configs"
            )));
        }
        for (k, v) in &t.configs {
            validate_topic_config(k, v, &self.config).map_err(InvalidConfig)?;
        }
        Ok(partitions)
    }

    /// Creates a topic: the index of its committed record, or `None` if only validated.
    pub async fn create_topic(
        &self,
        t: NewTopic,
        validate_only: bool,
    ) -> Result<Option<u64>, ControllerError> {
        let partitions = self.check_new_topic(&t)?;
        if validate_only {
            return Ok(None);
        }
        let record = MetadataRecord::TopicCreated {
            name: t.name.clone(),
            topic_id: self.env.random_id(),
            partitions,
            configs: t.configs,
        };
        let index = self.propose(record).await?;
        tracing::info!(topic = %t.name, partitions, "created topic");
        Ok(Some(index))
    }

    /// Grows a topic to `total` partitions.
    pub async fn create_partitions(
        &self,
        name: &str,
        total: u32,
        validate_only: bool,
    ) -> Result<Option<u64>, ControllerError> {
        use ControllerError::*;
        let current = self.image.borrow().topics.get(name).map(|t| t.partitions);
        match current {
            None => return Err(UnknownTopic(format!("no topic `{name}`"))),
            Some(c) if total <= c => {
                return Err(InvalidPartitions(format!(
                    "topic `{name}` already has {c} partitions"
                )))
            }
            Some(_) if total > PARTITIONS_PER_TOPIC_MAX => {
                return Err(InvalidPartitions(format!(
                    "at most {PARTITIONS_PER_TOPIC_MAX} partitions"
                )))
            }
            Some(_) if validate_only => return Ok(None),
            Some(_) => {}
        }
        let record = MetadataRecord::PartitionsCreated {
            name: name.to_string(),
            total,
        };
        Ok(Some(self.propose(record).await?))
    }

    /// Applies config changes to a topic; `None` if only validated or nothing changes.
    pub async fn alter_configs(
        &self,
        name: &str,
        changes: ConfigChanges,
        validate_only: bool,
    ) -> Result<Option<u64>, ControllerError> {
        use ControllerError::*;
        let Some(meta) = self.image.borrow().topics.get(name).cloned() else {
            return Err(UnknownTopic(format!("no topic `{name}`")));
        };
        let mut configs = meta.configs.clone();
        for (key, value) in changes {
            match value {
                Some(v) => {
                    validate_topic_config(&key, &v, &self.config).map_err(InvalidConfig)?;
                    configs.insert(key, v);
                }
                None => {
                    configs.remove(&key);
                }
            }
        }
        if configs.len() > TOPIC_CONFIGS_MAX {
            return Err(InvalidConfig(format!(
                "more than {TOPIC_CONFIGS_MAX} configs"
            )));
        }
        if validate_only || configs == meta.configs {
            return Ok(None);
        }
        let record = MetadataRecord::TopicConfigsChanged {
            name: name.to_string(),
            configs: configs.into_iter().collect(),
        };
        let index = self.propose(record).await?;
        tracing::info!(topic = %name, "changed topic configs");
        Ok(Some(index))
    }

    /// Deletes a topic.
    pub async fn delete_topic(&self, name: &str) -> Result<u64, ControllerError> {
        if !self.image.borrow().topics.contains_key(name) {
            return Err(ControllerError::UnknownTopic(format!("no topic `{name}`")));
        }
        let index = self
            .propose(MetadataRecord::TopicDeleted {
                name: name.to_string(),
            })
            .await?;
        tracing::info!(topic = %name, "deleted topic");
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_x-2").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("a b").is_err());
        assert!(validate_topic_name("ü").is_err());
        assert!(validate_topic_name(&"x".repeat(249)).is_ok());
        assert!(validate_topic_name(&"x".repeat(250)).is_err());
        assert!(validate_topic_name(OFFSETS_TOPIC).is_err());
    }
}
