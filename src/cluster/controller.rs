//! The controller: decides metadata changes and proposes them as records. It validates a
//! request against the image of committed records (its own view), proposes the record, and
//! returns its index once committed; applying committed records (opening partitions,
//! publishing images) is the shard layer's work. Runs on: the controller shard only. Invariant:
//! one proposal at a time (the shard layer holds its lock across a whole change), so each
//! validation sees every earlier change.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use super::image::MetadataImage;
use super::log::{MetadataError, MetadataLog};
use super::records::MetadataRecord;
use crate::config::{validate_topic_config, Config};
use crate::constants::{
    ASSIGNMENTS_PER_RECORD_MAX, OFFSETS_TOPIC, PARTITIONS_PER_TOPIC_MAX, TOPICS_MAX,
    TOPIC_CONFIGS_MAX, TOPIC_NAME_BYTES_MAX,
};
use crate::runtime::env::Env;

/// A topic to create, as CreateTopics (or auto-creation) asks.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
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

/// A change asked of the active controller: by a shard of its own broker, or forwarded by
/// another broker over the controller listener (so it is plain data).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum ControllerOp {
    CreateTopics {
        topics: Vec<NewTopic>,
        validate_only: bool,
    },
    DeleteTopics {
        names: Vec<String>,
    },
    CreatePartitions {
        topics: Vec<(String, u32)>,
        validate_only: bool,
    },
    /// Per topic: configs to set (`Some`) or remove (`None`).
    AlterTopicConfigs {
        topics: Vec<(String, ConfigChanges)>,
        validate_only: bool,
    },
    /// A broker's heartbeat; the first of an incarnation registers it.
    BrokerHeartbeat {
        node_id: i32,
        epoch: i64,
        host: String,
        port: u16,
    },
    /// A block of producer ids for one broker: the answer is its first id.
    AllocateProducerIds {
        node_id: i32,
    },
    /// Places the offsets partitions (the group coordinators) if they are not yet.
    PlaceOffsets,
    /// A partition leader's new ISR (Kafka's AlterPartition).
    AlterIsr(super::elect::AlterIsr),
    /// A leader whose log failed hands the partition over (`AlterIsr` names it).
    Resign(super::elect::AlterIsr),
    /// Preferred-leader elections (ElectLeaders) for these partitions, one answer each.
    ElectPreferred {
        partitions: Vec<(String, u32)>,
    },
    /// A broker about to stop cleanly: its partitions get other leaders first (Kafka's
    /// controlled shutdown).
    ShutDownBroker {
        node_id: i32,
        epoch: i64,
    },
    /// Several ISR changes from one leader's shard at once, one answer each: the valid ones
    /// are written together, one record per topic and `ASSIGNMENTS_PER_RECORD_MAX` changes
    /// (a restarted broker rejoining thousands of ISRs asks in one request, not thousands).
    AlterIsrs(Vec<super::elect::AlterIsr>),
}

impl ControllerOp {
    /// How many answers the change gets.
    pub fn len(&self) -> usize {
        match self {
            ControllerOp::CreateTopics { topics, .. } => topics.len(),
            ControllerOp::DeleteTopics { names } => names.len(),
            ControllerOp::CreatePartitions { topics, .. } => topics.len(),
            ControllerOp::AlterTopicConfigs { topics, .. } => topics.len(),
            ControllerOp::ElectPreferred { partitions } => partitions.len(),
            ControllerOp::AlterIsrs(changes) => changes.len(),
            ControllerOp::BrokerHeartbeat { .. }
            | ControllerOp::AllocateProducerIds { .. }
            | ControllerOp::PlaceOffsets
            | ControllerOp::AlterIsr(_)
            | ControllerOp::Resign(_)
            | ControllerOp::ShutDownBroker { .. } => 1,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the answers are record indexes (a broker that forwarded the change waits until
    /// it has applied them); an allocation answers with ids instead.
    pub fn answers_are_indexes(&self) -> bool {
        !matches!(self, ControllerOp::AllocateProducerIds { .. })
    }
}

/// One answer per item of a `ControllerOp`: the index of the item's last committed record
/// (`-1` if nothing was written), or the first producer id of an allocated block.
pub type ControllerAnswer = Vec<Result<i64, ControllerError>>;

/// Why the controller refused a change (the server layer picks the Kafka error code).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// Too few live brokers for the placement asked (the offsets partitions wait for them).
    NotEnoughBrokers(String),
    /// A heartbeat from an incarnation a newer one replaced.
    StaleBrokerEpoch(String),
    /// No active controller could be reached.
    NotController(String),
    /// An ISR change from a broker that no longer leads the partition at that epoch.
    StaleLeader(String),
    /// A preferred-leader election for a partition its preferred replica already leads.
    ElectionNotNeeded(String),
    /// A preferred-leader election whose preferred replica is not live or not in sync.
    PreferredLeaderNotAvailable(String),
    /// The quorum did not commit in time (a minority of voters runs); the outcome is unknown.
    NoQuorum(String),
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
            | ControllerError::Apply(m)
            | ControllerError::NotEnoughBrokers(m)
            | ControllerError::StaleBrokerEpoch(m)
            | ControllerError::NotController(m)
            | ControllerError::StaleLeader(m)
            | ControllerError::ElectionNotNeeded(m)
            | ControllerError::PreferredLeaderNotAvailable(m)
            | ControllerError::NoQuorum(m) => m,
        }
    }
}

impl From<MetadataError> for ControllerError {
    fn from(e: MetadataError) -> Self {
        // The quorum's log refuses proposals on a member that is not the leader (or stopped
        // being it): the change may be retried at the active controller.
        if e.detail
            .starts_with(crate::cluster::log::NOT_THE_CONTROLLER)
        {
            ControllerError::NotController(e.detail)
        } else if e.detail.starts_with(crate::cluster::log::NO_QUORUM) {
            // Not retried here: the record may still commit.
            ControllerError::NoQuorum(e.detail)
        } else {
            ControllerError::Log(e.to_string())
        }
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
    /// The log position `image` reflects (records below it are applied).
    image_end: std::cell::Cell<u64>,
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
            image_end: std::cell::Cell::new(log.committed_end()),
            log,
            image: RefCell::new(image),
            config,
            env,
        }
    }

    pub fn log(&self) -> &Rc<dyn MetadataLog> {
        &self.log
    }

    /// The controller's view: the committed records applied.
    pub fn image(&self) -> std::cell::Ref<'_, MetadataImage> {
        self.image.borrow()
    }

    /// Catches the view up with every committed record, those other brokers wrote as the
    /// active controller included: run before validating a change.
    pub async fn catch_up(&self) -> Result<(), ControllerError> {
        self.log.sync().await?;
        self.apply_committed();
        Ok(())
    }

    /// Applies to the view every record the log has committed past its end; the log's
    /// committed end.
    fn apply_committed(&self) -> u64 {
        let committed = self.log.committed_from(self.image_end.get());
        let end = committed.end();
        let records = committed.over(&self.image.borrow());
        let mut image = self.image.borrow_mut();
        for (_, record) in records {
            image.apply(&record);
        }
        self.image_end.set(end.max(self.image_end.get()));
        end
    }

    /// Proposes `record` and applies it to the controller's view once committed. Records
    /// between the view's end and `record` (a proposal that timed out and committed later, a
    /// new leader's blank entry) are read from the log and applied with it, so the view never
    /// skips a committed record.
    pub(super) async fn propose(&self, record: MetadataRecord) -> Result<u64, ControllerError> {
        let index = self.log.propose(record.clone()).await?;
        let end = self.image_end.get();
        if index == end {
            self.image.borrow_mut().apply(&record);
            self.image_end.set(index + 1);
            return Ok(index);
        }
        assert!(
            index > end,
            "the log committed record {index} below the controller's view end {end}"
        );
        if self.apply_committed() <= index {
            // The log has not handed this record to readers yet: apply it as committed.
            self.image.borrow_mut().apply(&record);
            self.image_end.set(index + 1);
        }
        Ok(index)
    }

    /// Checks a new topic against the image and the rules; its partition count and
    /// replication factor if valid.
    pub fn check_new_topic(&self, t: &NewTopic) -> Result<(u32, usize), ControllerError> {
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
        let rf = self.check_replication_factor(&image, t.replication_factor)?;
        if t.configs.len() > TOPIC_CONFIGS_MAX {
            return Err(InvalidConfig(format!(
                "more than {TOPIC_CONFIGS_MAX} configs"
            )));
        }
        for (k, v) in &t.configs {
            validate_topic_config(k, v, &self.config).map_err(InvalidConfig)?;
        }
        Ok((partitions, rf))
    }

    /// The replication factor a topic gets (-1: `default_replication_factor`, by default
    /// min(3, live brokers)), checked against the live brokers.
    fn check_replication_factor(
        &self,
        image: &MetadataImage,
        asked: i16,
    ) -> Result<usize, ControllerError> {
        use ControllerError::InvalidReplicationFactor;
        let live = image.live_brokers().count();
        let rf = match (asked, self.config.default_replication_factor) {
            (-1, Some(n)) => n as i16,
            (-1, None) if self.config.cluster.is_none() => 1,
            (-1, None) => live.clamp(1, 3) as i16,
            (n, _) => n,
        };
        if self.config.cluster.is_none() {
            return match rf {
                1 => Ok(1),
                _ => Err(InvalidReplicationFactor(format!(
                    "replication factor {rf} is not possible on a one-broker cluster"
                ))),
            };
        }
        if rf < 1 || rf as usize > live {
            return Err(InvalidReplicationFactor(format!(
                "replication factor {rf} with {live} live broker(s)"
            )));
        }
        Ok(rf as usize)
    }

    /// In a cluster, proposes the assignments of partitions `first..first + count` of `name`
    /// (in records of at most `ASSIGNMENTS_PER_RECORD_MAX`): the last record's index, or
    /// `None` on one node (every partition is this broker's) or if nothing is to assign.
    async fn assign(
        &self,
        name: &str,
        first: u32,
        count: u32,
        replication_factor: usize,
    ) -> Result<Option<u64>, ControllerError> {
        if self.config.cluster.is_none() || count == 0 {
            return Ok(None);
        }
        let (topic_id, is_offsets) = if name == OFFSETS_TOPIC {
            (crate::constants::OFFSETS_TOPIC_ID, true)
        } else {
            match self.image.borrow().topics.get(name) {
                Some(t) => (t.topic_id.0, false),
                None => return Ok(None),
            }
        };
        let placed = super::assign::place(&self.image.borrow(), count, replication_factor);
        let Some(placed) = placed else {
            return Err(ControllerError::NotEnoughBrokers(format!(
                "fewer than {replication_factor} live broker(s) to place {name} on{}",
                if is_offsets {
                    " (group coordinators)"
                } else {
                    ""
                }
            )));
        };
        let mut last = None;
        for (i, chunk) in placed.chunks(ASSIGNMENTS_PER_RECORD_MAX).enumerate() {
            let record = MetadataRecord::PartitionsAssigned {
                name: name.to_string(),
                topic_id,
                first: first + (i * ASSIGNMENTS_PER_RECORD_MAX) as u32,
                assignments: chunk.to_vec(),
            };
            last = Some(self.propose(record).await?);
        }
        Ok(last)
    }

    /// Assigns the partitions a controller that died between a topic's records left
    /// unassigned (run by each new active controller, and before each change).
    pub async fn repair_assignments(&self) -> Result<Option<u64>, ControllerError> {
        if self.config.cluster.is_none() {
            return Ok(None);
        }
        let live = self.image.borrow().live_brokers().count();
        let missing: Vec<(String, u32, u32, usize)> = self
            .image
            .borrow()
            .topics
            .values()
            .filter_map(|t| {
                let first = (0..t.partitions).find(|p| !t.assignments.contains_key(p))?;
                let rf = replication_factor_of(t, live);
                Some((t.name.clone(), first, t.partitions - first, rf))
            })
            .collect();
        let mut last = None;
        for (name, first, count, rf) in missing {
            tracing::info!(topic = %name, first, count, "assigning partitions left unassigned");
            last = self.assign(&name, first, count, rf).await?.or(last);
        }
        Ok(last)
    }

    /// Elects leaders for partitions whose leader is not live (or is shutting down) and takes
    /// fenced brokers out of the ISRs; the last record's index, if any.
    pub async fn elect_leaders(&self) -> Result<Option<u64>, ControllerError> {
        if self.config.cluster.is_none() {
            return Ok(None);
        }
        let records = super::elect::leadership_changes(&self.image.borrow());
        let mut last = None;
        for record in records {
            tracing::info!(%record, "partition leadership changes");
            last = Some(self.propose(record).await?);
        }
        Ok(last)
    }

    /// A broker's controlled shutdown: marked as stopping, then its leadership moves and it
    /// leaves the ISRs. The last record's index.
    pub async fn shut_down(
        &self,
        node_id: i32,
        epoch: i64,
    ) -> Result<Option<u64>, ControllerError> {
        let index = self
            .propose(MetadataRecord::BrokerShuttingDown { node_id, epoch })
            .await?;
        Ok(self.elect_leaders().await?.or(Some(index)))
    }

    /// Preferred-leader elections: one answer per partition (the index of the record that
    /// moved it, or why not), the changes of one topic proposed together.
    pub async fn elect_preferred(&self, partitions: &[(String, u32)]) -> ControllerAnswer {
        use super::elect::PreferredRefused;
        let mut answers: ControllerAnswer = Vec::with_capacity(partitions.len());
        let mut by_topic: BTreeMap<String, Vec<(usize, super::records::PartitionChange)>> =
            BTreeMap::new();
        for (i, (topic, p)) in partitions.iter().enumerate() {
            let what = format!("{topic}-{p}");
            answers.push(
                match super::elect::preferred_change(&self.image.borrow(), topic, *p) {
                    Ok(change) => {
                        by_topic.entry(topic.clone()).or_default().push((i, change));
                        Ok(-1)
                    }
                    Err(PreferredRefused::Unknown) => Err(ControllerError::UnknownTopic(format!(
                        "no partition {what}"
                    ))),
                    Err(PreferredRefused::NotNeeded) => Err(ControllerError::ElectionNotNeeded(
                        format!("the preferred replica of {what} leads it"),
                    )),
                    Err(PreferredRefused::NotAvailable) => {
                        Err(ControllerError::PreferredLeaderNotAvailable(format!(
                            "the preferred replica of {what} is not live and in sync"
                        )))
                    }
                },
            );
        }
        for (topic, changes) in by_topic {
            let Some(topic_id) = self.image.borrow().topic_id_of(&topic) else {
                continue;
            };
            for chunk in changes.chunks(ASSIGNMENTS_PER_RECORD_MAX) {
                let record = MetadataRecord::PartitionsChanged {
                    name: topic.clone(),
                    topic_id,
                    changes: chunk.iter().map(|(_, c)| c.clone()).collect(),
                };
                tracing::info!(%record, "preferred leader election");
                let result = self.propose(record).await.map(|i| i as i64);
                for (i, _) in chunk {
                    answers[*i] = result.clone();
                }
            }
        }
        answers
    }

    /// Records the cluster id if the log has none yet (the first active controller).
    pub async fn ensure_cluster_id(&self, id: &str) -> Result<Option<u64>, ControllerError> {
        if !self.image.borrow().cluster_id.is_empty() {
            return Ok(None);
        }
        let record = MetadataRecord::ClusterCreated {
            cluster_id: id.to_string(),
        };
        Ok(Some(self.propose(record).await?))
    }

    /// A broker's heartbeat: registers a new incarnation, unfences a fenced one that is back;
    /// the record's index if one was written.
    pub async fn broker_heartbeat(
        &self,
        node_id: i32,
        epoch: i64,
        host: &str,
        port: u16,
    ) -> Result<Option<u64>, ControllerError> {
        let known = self.image.borrow().brokers.get(&node_id).cloned();
        let record = match known {
            Some(b) if b.epoch > epoch => {
                return Err(ControllerError::StaleBrokerEpoch(format!(
                    "broker {node_id} epoch {epoch} was replaced by epoch {}",
                    b.epoch
                )))
            }
            Some(b) if b.epoch == epoch && b.host == host && b.port == port => {
                if !b.fenced {
                    return Ok(None);
                }
                tracing::info!(node_id, epoch, "broker is back; unfencing it");
                MetadataRecord::BrokerUnfenced { node_id, epoch }
            }
            Some(b) if !b.fenced => {
                // A new incarnation of a live broker (it restarted before its session
                // lapsed): the old one is fenced first, so its partitions get new leaders
                // and it leaves their ISRs as after a crash; it rejoins them once caught up.
                tracing::info!(
                    node_id,
                    old = b.epoch,
                    epoch,
                    "broker restarted; fencing its old incarnation"
                );
                self.propose(MetadataRecord::BrokerFenced {
                    node_id,
                    epoch: b.epoch,
                })
                .await?;
                self.elect_leaders().await?;
                tracing::info!(node_id, epoch, host, port, "registering broker");
                MetadataRecord::BrokerRegistered {
                    node_id,
                    epoch,
                    host: host.to_string(),
                    port,
                }
            }
            _ => {
                tracing::info!(node_id, epoch, host, port, "registering broker");
                MetadataRecord::BrokerRegistered {
                    node_id,
                    epoch,
                    host: host.to_string(),
                    port,
                }
            }
        };
        Ok(Some(self.propose(record).await?))
    }

    /// Fences a broker's incarnation (its session expired).
    pub async fn fence(&self, node_id: i32, epoch: i64) -> Result<u64, ControllerError> {
        tracing::warn!(node_id, epoch, "fencing broker: its session expired");
        self.propose(MetadataRecord::BrokerFenced { node_id, epoch })
            .await
    }

    /// Gives broker `node_id` the next block of producer ids: (record index, first id).
    pub async fn allocate_producer_ids(&self, node_id: i32) -> Result<(u64, i64), ControllerError> {
        let first = self.image.borrow().next_producer_id;
        let next = first + crate::constants::PRODUCER_ID_BLOCK;
        let index = self
            .propose(MetadataRecord::ProducerIdsAllocated { node_id, next })
            .await?;
        Ok((index, first))
    }

    /// Places the offsets partitions once `min(3, voters)` brokers are live, so the group
    /// coordinators spread over them and not over whoever started first.
    pub async fn place_offsets(&self) -> Result<Option<u64>, ControllerError> {
        let Some(cluster) = &self.config.cluster else {
            return Ok(None);
        };
        let (placed, live) = {
            let image = self.image.borrow();
            (image.offsets.len() as u32, image.live_brokers().count())
        };
        if placed >= crate::constants::OFFSETS_PARTITIONS {
            return Ok(None);
        }
        let wanted = cluster.voters.len().min(3);
        if live < wanted {
            return Err(ControllerError::NotEnoughBrokers(format!(
                "{live} of the {wanted} brokers the group coordinators spread over are live"
            )));
        }
        let count = crate::constants::OFFSETS_PARTITIONS - placed;
        self.assign(OFFSETS_TOPIC, placed, count, wanted).await
    }

    /// Creates a topic: the index of its committed record, or `None` if only validated.
    pub async fn create_topic(
        &self,
        t: NewTopic,
        validate_only: bool,
    ) -> Result<Option<u64>, ControllerError> {
        let (partitions, rf) = self.check_new_topic(&t)?;
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
        let assigned = self.assign(&t.name, 0, partitions, rf).await?;
        tracing::info!(topic = %t.name, partitions, "created topic");
        Ok(Some(assigned.unwrap_or(index)))
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
        let old = current.unwrap_or(0);
        if self.config.cluster.is_some() && self.image.borrow().live_brokers().next().is_none() {
            return Err(NotEnoughBrokers("no live broker".into()));
        }
        let record = MetadataRecord::PartitionsCreated {
            name: name.to_string(),
            total,
        };
        let index = self.propose(record).await?;
        let rf = {
            let image = self.image.borrow();
            let live = image.live_brokers().count();
            image
                .topics
                .get(name)
                .map_or(1, |t| replication_factor_of(t, live))
        };
        let assigned = self.assign(name, old, total - old, rf).await?;
        Ok(Some(assigned.unwrap_or(index)))
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

/// The replication factor of a topic's existing partitions (new ones get the same), at most
/// the live brokers.
fn replication_factor_of(t: &crate::cluster::TopicMeta, live: usize) -> usize {
    let rf = t
        .assignments
        .values()
        .next()
        .map_or(1, |a| a.replicas.len());
    rf.clamp(1, live.max(1))
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
