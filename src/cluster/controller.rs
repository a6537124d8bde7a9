//! The controller: the one writer of cluster metadata. Creates, deletes and grows topics by
//! appending a record to the metadata log, then opening (or deleting) partitions on their owner
//! shards and publishing the new image to every shard. Runs on: the controller shard (shard 0)
//! only; other shards reach it through the mesh. Invariants: one metadata change at a time (a
//! lock held across the whole change); a topic appears in any shard's image only after all its
//! partitions are open on their owners, so a client that sees it can produce to it.

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use futures_channel::oneshot;

use super::metadata::{random_id, LocalMetadataLog, MetadataLog, MetadataRecord};
use crate::config::validate_topic_config;
use crate::constants::{
    PARTITIONS_PER_TOPIC_MAX, TOPICS_MAX, TOPIC_CONFIGS_MAX, TOPIC_NAME_BYTES_MAX,
};
use crate::protocol::types::{ShardId, TopicPartition};
use crate::protocol::ErrorCode;
use crate::runtime::io::LocalLock;
use crate::runtime::mesh::{ControllerRequest, OpenPartition, ShardMessage};
use crate::runtime::shard::Shard;

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

type Answer = (ErrorCode, Option<String>);

pub struct Controller {
    log: RefCell<LocalMetadataLog>,
    lock: LocalLock,
}

/// Kafka's topic name rules: 1..=249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(format!("topic name `{name}` is not allowed"));
    }
    if name == crate::group::offsets::OFFSETS_TOPIC {
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

/// Name of the file in each partition directory naming the topic id it belongs to.
pub const PARTITION_MARKER: &str = "partition.metadata";

/// Makes `dir` belong to the topic with `topic_id`. The broker never deletes a partition
/// directory on its own: one left by an earlier topic of the same name (deleted while the
/// broker was down) is moved aside to `<dir>.orphaned-<ms>` for an operator to remove. A
/// marker that cannot be read as a topic id (empty, torn, missing beside data) is an error for
/// this partition only, never taken for a mismatch.
pub fn claim_partition_dir(dir: &Path, topic_id: Option<[u8; 16]>) -> Result<(), String> {
    let Some(id) = topic_id else {
        return Ok(());
    };
    let marker = dir.join(PARTITION_MARKER);
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    match std::fs::read(&marker) {
        Ok(existing) => match parse_marker(&existing) {
            Some(found) if found == hex => return Ok(()),
            Some(found) => move_aside(dir, &found)?,
            None => {
                return Err(format!(
                    "{}: unreadable ({} bytes, not a topic id); this partition stays offline \
                     until an operator repairs or removes the directory",
                    marker.display(),
                    existing.len()
                ))
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if dir_has_entries(dir)? {
                return Err(format!(
                    "{}: missing beside existing files; this partition stays offline until an \
                     operator repairs or removes the directory",
                    marker.display()
                ));
            }
        }
        Err(e) => return Err(format!("read {}: {e}", marker.display())),
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    write_marker(dir, &hex)
}

/// The topic id a marker names: 32 hex digits and a newline.
fn parse_marker(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?.trim();
    (text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit())).then(|| text.to_string())
}

/// True if `dir` holds anything but a marker's temp file (a crash while claiming it).
fn dir_has_entries(dir: &Path) -> Result<bool, String> {
    let tmp = std::ffi::OsString::from(format!("{PARTITION_MARKER}.tmp"));
    match std::fs::read_dir(dir) {
        Ok(entries) => Ok(entries.filter_map(|e| e.ok()).any(|e| e.file_name() != tmp)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(format!("list {}: {e}", dir.display())),
    }
}

fn sync_dir(dir: &Path) -> Result<(), String> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("fsync {}: {e}", dir.display()))
}

/// Moves a directory that belongs to another topic out of the way, keeping its data.
fn move_aside(dir: &Path, found: &str) -> Result<(), String> {
    let mut aside = dir.as_os_str().to_owned();
    aside.push(format!(
        ".orphaned-{}",
        crate::storage::writer::now_ms_i64()
    ));
    let aside = std::path::PathBuf::from(aside);
    std::fs::rename(dir, &aside).map_err(|e| format!("move {} aside: {e}", dir.display()))?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    tracing::warn!(
        dir = %dir.display(),
        to = %aside.display(),
        topic_id = found,
        "partition directory belongs to an older topic; moved aside (delete it once you no longer need it)"
    );
    Ok(())
}

/// Writes the marker so that it is whole or absent after a crash: temp file, fsync, rename,
/// directory fsync.
fn write_marker(dir: &Path, hex: &str) -> Result<(), String> {
    use std::io::Write;
    let tmp = dir.join(format!("{PARTITION_MARKER}.tmp"));
    let marker = dir.join(PARTITION_MARKER);
    std::fs::File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(format!("{hex}\n").as_bytes())?;
            f.sync_all()
        })
        .map_err(|e| format!("write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &marker).map_err(|e| format!("rename {}: {e}", marker.display()))?;
    sync_dir(dir)
}

/// The controller's state before its shard starts: it crosses to the shard's thread once.
pub struct SendableController(LocalMetadataLog);

impl SendableController {
    pub fn into_controller(self) -> Controller {
        Controller::new(self.0)
    }
}

impl Controller {
    /// Wraps the replayed log for the move to the controller shard.
    pub fn new_sendable(log: LocalMetadataLog) -> SendableController {
        SendableController(log)
    }

    pub fn new(log: LocalMetadataLog) -> Controller {
        Controller {
            log: RefCell::new(log),
            lock: LocalLock::new(),
        }
    }

    pub async fn handle(&self, shard: &Rc<Shard>, request: ControllerRequest) {
        let _guard = self.lock.acquire().await;
        match request {
            ControllerRequest::CreateTopics {
                topics,
                validate_only,
                reply,
            } => {
                let _ = reply.send(self.create_topics(shard, topics, validate_only).await);
            }
            ControllerRequest::DeleteTopics { names, reply } => {
                let _ = reply.send(self.delete_topics(shard, names).await);
            }
            ControllerRequest::CreatePartitions {
                topics,
                validate_only,
                reply,
            } => {
                let _ = reply.send(self.create_partitions(shard, topics, validate_only).await);
            }
            ControllerRequest::AlterTopicConfigs {
                topics,
                validate_only,
                reply,
            } => {
                let _ = reply.send(self.alter_configs(shard, topics, validate_only).await);
            }
        }
    }

    fn check_new_topic(&self, shard: &Shard, t: &NewTopic) -> Result<u32, Answer> {
        let image = self.log.borrow();
        let image = image.image();
        let invalid = |code, msg: String| Err((code, Some(msg)));
        if let Err(msg) = validate_topic_name(&t.name) {
            return invalid(ErrorCode::InvalidTopicException, msg);
        }
        if image.topics.contains_key(&t.name) {
            return invalid(
                ErrorCode::TopicAlreadyExists,
                format!("topic `{}` already exists", t.name),
            );
        }
        let folded = t.name.replace('.', "_");
        if let Some(other) = image.topics.keys().find(|n| n.replace('.', "_") == folded) {
            return invalid(
                ErrorCode::InvalidTopicException,
                format!(
                    "topic `{}` collides with `{other}` ('.' and '_' collide)",
                    t.name
                ),
            );
        }
        if image.topics.len() >= TOPICS_MAX {
            return invalid(
                ErrorCode::PolicyViolation,
                format!("the cluster holds {TOPICS_MAX} topics"),
            );
        }
        let partitions = match t.partitions {
            -1 => shard.config.default_partitions,
            p if p >= 1 && p as u32 <= PARTITIONS_PER_TOPIC_MAX => p as u32,
            p => {
                return invalid(
                    ErrorCode::InvalidPartitions,
                    format!("partitions must be 1..={PARTITIONS_PER_TOPIC_MAX}, got {p}"),
                )
            }
        };
        if t.replication_factor != -1 && t.replication_factor != 1 {
            return invalid(
                ErrorCode::InvalidReplicationFactor,
                format!(
                    "replication factor {} is not possible on a one-broker cluster",
                    t.replication_factor
                ),
            );
        }
        if t.configs.len() > TOPIC_CONFIGS_MAX {
            return invalid(
                ErrorCode::InvalidConfig,
                format!("more than {TOPIC_CONFIGS_MAX} configs"),
            );
        }
        for (k, v) in &t.configs {
            if let Err(msg) = validate_topic_config(k, v, &shard.config) {
                return invalid(ErrorCode::InvalidConfig, msg);
            }
        }
        Ok(partitions)
    }

    async fn create_topics(
        &self,
        shard: &Rc<Shard>,
        topics: Vec<NewTopic>,
        validate_only: bool,
    ) -> Vec<Answer> {
        let mut answers = Vec::new();
        for t in topics {
            let partitions = match self.check_new_topic(shard, &t) {
                Ok(p) => p,
                Err(answer) => {
                    answers.push(answer);
                    continue;
                }
            };
            if validate_only {
                answers.push((ErrorCode::None, None));
                continue;
            }
            let record = MetadataRecord::TopicCreated {
                name: t.name.clone(),
                topic_id: random_id(),
                partitions,
                configs: t.configs.clone(),
            };
            answers.push(self.commit(shard, record, &t.name, 0..partitions).await);
            tracing::info!(topic = %t.name, partitions, "created topic");
        }
        answers
    }

    async fn create_partitions(
        &self,
        shard: &Rc<Shard>,
        topics: Vec<(String, u32)>,
        validate_only: bool,
    ) -> Vec<Answer> {
        let mut answers = Vec::new();
        for (name, total) in topics {
            let current = self
                .log
                .borrow()
                .image()
                .topics
                .get(&name)
                .map(|t| t.partitions);
            let answer = match current {
                None => (
                    ErrorCode::UnknownTopicOrPartition,
                    Some(format!("no topic `{name}`")),
                ),
                Some(c) if total <= c => (
                    ErrorCode::InvalidPartitions,
                    Some(format!("topic `{name}` already has {c} partitions")),
                ),
                Some(_) if total > PARTITIONS_PER_TOPIC_MAX => (
                    ErrorCode::InvalidPartitions,
                    Some(format!("at most {PARTITIONS_PER_TOPIC_MAX} partitions")),
                ),
                Some(_) if validate_only => (ErrorCode::None, None),
                Some(c) => {
                    let record = MetadataRecord::PartitionsCreated {
                        name: name.clone(),
                        total,
                    };
                    self.commit(shard, record, &name, c..total).await
                }
            };
            answers.push(answer);
        }
        answers
    }

    async fn alter_configs(
        &self,
        shard: &Rc<Shard>,
        topics: Vec<(String, crate::runtime::mesh::ConfigChanges)>,
        validate_only: bool,
    ) -> Vec<Answer> {
        let mut answers = Vec::new();
        for (name, changes) in topics {
            let current = self.log.borrow().image().topics.get(&name).cloned();
            let Some(meta) = current else {
                answers.push((
                    ErrorCode::UnknownTopicOrPartition,
                    Some(format!("no topic `{name}`")),
                ));
                continue;
            };
            let mut configs = meta.configs.clone();
            let mut refused = None;
            for (key, value) in changes {
                match value {
                    Some(v) => match validate_topic_config(&key, &v, &shard.config) {
                        Ok(()) => {
                            configs.insert(key, v);
                        }
                        Err(msg) => {
                            refused = Some(msg);
                            break;
                        }
                    },
                    None => {
                        configs.remove(&key);
                    }
                }
            }
            if let Some(msg) = refused {
                answers.push((ErrorCode::InvalidConfig, Some(msg)));
                continue;
            }
            if configs.len() > TOPIC_CONFIGS_MAX {
                let msg = format!("more than {TOPIC_CONFIGS_MAX} configs");
                answers.push((ErrorCode::InvalidConfig, Some(msg)));
                continue;
            }
            if validate_only || configs == meta.configs {
                answers.push((ErrorCode::None, None));
                continue;
            }
            let record = MetadataRecord::TopicConfigsChanged {
                name: name.clone(),
                configs: configs.into_iter().collect(),
            };
            let range = meta.partitions..meta.partitions;
            answers.push(self.commit(shard, record, &name, range).await);
            tracing::info!(topic = %name, "changed topic configs");
        }
        answers
    }

    /// Appends `record`, opens partitions `new_partitions` of `topic` on their owners, publishes.
    async fn commit(
        &self,
        shard: &Rc<Shard>,
        record: MetadataRecord,
        topic: &str,
        new_partitions: std::ops::Range<u32>,
    ) -> Answer {
        if let Err(e) = self.log.borrow_mut().append(record) {
            tracing::error!(error = %e, "metadata log append failed");
            return (ErrorCode::KafkaStorageError, Some(e.to_string()));
        }
        let image = Arc::new(self.log.borrow().image().clone());
        let meta = &image.topics[topic];
        let log = shard.config.topic_log_config(&meta.configs);
        let mut by_owner: Vec<Vec<OpenPartition>> =
            (0..shard.shard_count).map(|_| Vec::new()).collect();
        for p in new_partitions {
            let tp = TopicPartition::new(topic, p as i32);
            let open = OpenPartition {
                tp,
                log: log.clone(),
                topic_id: meta.topic_id,
            };
            by_owner[shard.owner(&open.tp).0].push(open);
        }
        // Open on the owners first, then publish: a client that sees the topic can use it.
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
        self.publish(shard, image.clone()).await;
        if let Some(e) = failure {
            return (ErrorCode::KafkaStorageError, Some(e));
        }
        (ErrorCode::None, None)
    }

    async fn delete_topics(&self, shard: &Rc<Shard>, names: Vec<String>) -> Vec<ErrorCode> {
        let mut answers = Vec::new();
        for name in names {
            let partitions = self
                .log
                .borrow()
                .image()
                .topics
                .get(&name)
                .map(|t| t.partitions);
            let Some(partitions) = partitions else {
                answers.push(ErrorCode::UnknownTopicOrPartition);
                continue;
            };
            if let Err(e) = self
                .log
                .borrow_mut()
                .append(MetadataRecord::TopicDeleted { name: name.clone() })
            {
                tracing::error!(error = %e, "metadata log append failed");
                answers.push(ErrorCode::KafkaStorageError);
                continue;
            }
            let image = Arc::new(self.log.borrow().image().clone());
            self.publish(shard, image).await;
            let mut by_owner: Vec<Vec<TopicPartition>> =
                (0..shard.shard_count).map(|_| Vec::new()).collect();
            for p in 0..partitions {
                let tp = TopicPartition::new(name.as_str(), p as i32);
                by_owner[shard.owner(&tp).0].push(tp);
            }
            for (owner, list) in by_owner.into_iter().enumerate() {
                if owner == shard.id.0 {
                    shard.delete_partitions(&list).await;
                } else if !list.is_empty() {
                    let (tx, rx) = oneshot::channel();
                    shard
                        .send(
                            ShardId(owner),
                            ShardMessage::DeletePartitions {
                                partitions: list,
                                reply: tx,
                            },
                        )
                        .await;
                    let _ = rx.await;
                }
            }
            tracing::info!(topic = %name, "deleted topic");
            answers.push(ErrorCode::None);
        }
        answers
    }

    /// Replaces the image on every shard and waits until all have it.
    async fn publish(&self, shard: &Rc<Shard>, image: Arc<crate::cluster::MetadataImage>) {
        shard.set_image(image.clone());
        for other in 0..shard.shard_count {
            if other == shard.id.0 {
                continue;
            }
            let (tx, rx) = oneshot::channel();
            if shard
                .send(
                    ShardId(other),
                    ShardMessage::MetadataUpdate {
                        image: image.clone(),
                        reply: tx,
                    },
                )
                .await
            {
                let _ = rx.await;
            }
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
            let controller = shard.controller.as_ref().expect("checked above");
            controller.handle(&shard, request).await;
        });
    } else {
        shard
            .send(
                crate::runtime::placement::CONTROLLER_SHARD,
                ShardMessage::Controller(request),
            )
            .await;
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
    }

    #[test]
    fn claim_moves_a_stale_directory_aside_and_refuses_unreadable_markers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t-0");
        claim_partition_dir(&p, Some([1; 16])).unwrap();
        std::fs::write(p.join("00000000000000000000.log"), b"old").unwrap();
        claim_partition_dir(&p, Some([1; 16])).unwrap();
        assert!(p.join("00000000000000000000.log").exists());
        claim_partition_dir(&p, Some([2; 16])).unwrap();
        assert!(!p.join("00000000000000000000.log").exists());
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|e| e.to_string_lossy().contains("t-0.orphaned-"))
            .collect();
        assert_eq!(aside.len(), 1);
        assert!(
            aside[0].join("00000000000000000000.log").exists(),
            "the old data is kept"
        );
        // A torn (empty) marker is an error, and nothing is moved or removed.
        std::fs::write(p.join(PARTITION_MARKER), b"").unwrap();
        std::fs::write(p.join("00000000000000000000.log"), b"new").unwrap();
        let e = claim_partition_dir(&p, Some([2; 16])).unwrap_err();
        assert!(e.contains("unreadable"), "{e}");
        assert!(p.join("00000000000000000000.log").exists());
        // A missing marker beside data is an error too.
        std::fs::remove_file(p.join(PARTITION_MARKER)).unwrap();
        assert!(claim_partition_dir(&p, Some([2; 16])).is_err());
        // A crash while claiming an empty directory leaves only the temp file: claimed again.
        let q = dir.path().join("u-0");
        std::fs::create_dir(&q).unwrap();
        std::fs::write(q.join(format!("{PARTITION_MARKER}.tmp")), b"0").unwrap();
        claim_partition_dir(&q, Some([3; 16])).unwrap();
        assert!(!q.join(format!("{PARTITION_MARKER}.tmp")).exists());
    }
}
