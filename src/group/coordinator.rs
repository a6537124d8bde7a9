//! The group coordinator of one shard: the groups whose offsets partition this shard owns,
//! their waiting JoinGroup/SyncGroup requests, and their committed offsets. Runs on: the owning
//! shard only; requests from connections on other shards arrive over the mesh as `GroupCall`s.
//! Invariants: every waiting request is answered exactly once (by an event of the state
//! machine, by a newer request of the same member, or when the group goes away); no borrow of
//! the group table is held across an `.await`; time comes from one monotonic clock per shard.

use std::cell::RefCell;
use std::collections::HashMap;

use bytes::Bytes;
use futures_channel::oneshot;

use super::code::GroupCode;
use super::offsets::{Committed, OffsetStore};
use super::state::{Event, Group, GroupConfig, JoinOutcome, JoinRequest, JoinResult, SyncOutcome};
use crate::constants::GROUP_EMPTY_FORGET_MS;
use crate::protocol::types::{GenerationId, TopicPartition};

/// One offset to commit.
#[derive(Debug, Clone)]
pub struct OffsetToCommit {
    pub partition: TopicPartition,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    /// The topic's id when committed (offsets of a re-created topic are not served).
    pub topic_id: crate::protocol::types::TopicId,
}

/// A request for the coordinator of one group (or, for `List`, of every group on a shard).
#[derive(Debug)]
pub enum GroupCall {
    Join {
        group_id: String,
        request: JoinRequest,
    },
    Sync {
        group_id: String,
        member_id: String,
        generation_id: GenerationId,
        assignments: Vec<(String, Bytes)>,
    },
    Heartbeat {
        group_id: String,
        member_id: String,
        generation_id: GenerationId,
    },
    /// (member id, instance id) of each member leaving.
    Leave {
        group_id: String,
        members: Vec<(String, Option<String>)>,
    },
    Commit {
        group_id: String,
        member_id: String,
        generation_id: GenerationId,
        offsets: Vec<OffsetToCommit>,
    },
    Fetch {
        group_id: String,
        partitions: Option<Vec<TopicPartition>>,
    },
    Describe {
        group_id: String,
    },
    List,
    Delete {
        group_id: String,
    },
    DeleteOffsets {
        group_id: String,
        partitions: Vec<TopicPartition>,
    },
}

/// A group as DescribeGroups shows it.
#[derive(Debug, Clone, Default)]
pub struct GroupDescription {
    pub state: String,
    pub protocol_type: String,
    pub protocol_name: String,
    pub members: Vec<crate::group::state::MemberDescription>,
}

/// The coordinator's answer.
#[derive(Debug)]
pub enum GroupReply {
    Join {
        error: GroupCode,
        member_id: String,
        protocol_type: Option<String>,
        result: Option<JoinResult>,
    },
    Sync {
        error: GroupCode,
        assignment: Bytes,
        protocol_type: Option<String>,
        protocol_name: Option<String>,
    },
    Code(GroupCode),
    Codes(Vec<GroupCode>),
    Offsets {
        error: GroupCode,
        offsets: Vec<(TopicPartition, Committed)>,
    },
    Described(GroupDescription),
    /// (group id, protocol type, state).
    Listed(Vec<(String, String, String)>),
}

fn join_error(error: GroupCode, member_id: String) -> GroupReply {
    GroupReply::Join {
        error,
        member_id,
        protocol_type: None,
        result: None,
    }
}

fn sync_error(error: GroupCode) -> GroupReply {
    GroupReply::Sync {
        error,
        assignment: Bytes::new(),
        protocol_type: None,
        protocol_name: None,
    }
}

struct Entry {
    group: Group,
    join_waiters: HashMap<String, oneshot::Sender<GroupReply>>,
    sync_waiters: HashMap<String, oneshot::Sender<GroupReply>>,
    /// Since when the group has had no members (it is forgotten after a while).
    empty_since_ms: Option<u64>,
}

impl Entry {
    /// Answers the waiting requests the state machine's events concern.
    fn dispatch(&mut self, events: Vec<Event>) {
        let protocol_type = self.group.protocol_type.clone();
        let protocol_name = self.group.protocol_name.clone();
        for event in events {
            match event {
                Event::JoinCompleted(result) => {
                    if result.member_id == result.leader {
                        // One leader answer per completed rebalance.
                        crate::metrics::with(|m| {
                            m.rebalances
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        });
                    }
                    if let Some(tx) = self.join_waiters.remove(&result.member_id) {
                        let member_id = result.member_id.clone();
                        let reply = GroupReply::Join {
                            error: GroupCode::Ok,
                            member_id,
                            protocol_type: protocol_type.clone(),
                            result: Some(result),
                        };
                        let _ = tx.send(reply);
                    }
                }
                Event::JoinFailed { member_id, error } => {
                    if let Some(tx) = self.join_waiters.remove(&member_id) {
                        let _ = tx.send(join_error(error, member_id));
                    }
                }
                Event::SyncCompleted {
                    member_id,
                    assignment,
                } => {
                    if let Some(tx) = self.sync_waiters.remove(&member_id) {
                        let reply = GroupReply::Sync {
                            error: GroupCode::Ok,
                            assignment,
                            protocol_type: protocol_type.clone(),
                            protocol_name: protocol_name.clone(),
                        };
                        let _ = tx.send(reply);
                    }
                }
                Event::SyncFailed { member_id, error } => {
                    if let Some(tx) = self.sync_waiters.remove(&member_id) {
                        let _ = tx.send(sync_error(error));
                    }
                }
            }
        }
    }

    /// Fails the waiting requests of members that are no longer in the group.
    fn drop_gone_waiters(&mut self) {
        let members = self.group.member_ids();
        let gone = |id: &String| !members.contains(id);
        for id in self
            .join_waiters
            .keys()
            .filter(|id| gone(id))
            .cloned()
            .collect::<Vec<_>>()
        {
            let tx = self.join_waiters.remove(&id).expect("listed");
            let _ = tx.send(join_error(GroupCode::UnknownMemberId, id));
        }
        for id in self
            .sync_waiters
            .keys()
            .filter(|id| gone(id))
            .cloned()
            .collect::<Vec<_>>()
        {
            let tx = self.sync_waiters.remove(&id).expect("listed");
            let _ = tx.send(sync_error(GroupCode::UnknownMemberId));
        }
    }
}

/// Parks a member's waiting request; an older one of the same member is over and is answered
/// with `superseded` (the member sent a newer request).
fn park(
    waiters: &mut HashMap<String, oneshot::Sender<GroupReply>>,
    member_id: String,
    superseded: GroupReply,
) -> oneshot::Receiver<GroupReply> {
    let (tx, rx) = oneshot::channel();
    if let Some(old) = waiters.insert(member_id, tx) {
        let _ = old.send(superseded);
    }
    rx
}

impl GroupCall {
    /// The group the call is for (`None` for `List`, which is for every group of a shard).
    pub fn group_id(&self) -> Option<&str> {
        match self {
            GroupCall::Join { group_id, .. }
            | GroupCall::Sync { group_id, .. }
            | GroupCall::Heartbeat { group_id, .. }
            | GroupCall::Leave { group_id, .. }
            | GroupCall::Commit { group_id, .. }
            | GroupCall::Fetch { group_id, .. }
            | GroupCall::Describe { group_id }
            | GroupCall::Delete { group_id }
            | GroupCall::DeleteOffsets { group_id, .. } => Some(group_id),
            GroupCall::List => None,
        }
    }
}

/// `code` as the answer to `call`, in the call's own reply shape.
fn refusal(call: &GroupCall, code: GroupCode) -> GroupReply {
    match call {
        GroupCall::Join { .. } => join_error(code, String::new()),
        GroupCall::Sync { .. } => sync_error(code),
        GroupCall::Leave { members, .. } => GroupReply::Codes(vec![code; members.len()]),
        GroupCall::Commit { offsets, .. } => GroupReply::Codes(vec![code; offsets.len()]),
        GroupCall::DeleteOffsets { partitions, .. } => {
            GroupReply::Codes(vec![code; partitions.len()])
        }
        GroupCall::Fetch { .. } => GroupReply::Offsets {
            error: code,
            offsets: Vec::new(),
        },
        GroupCall::Heartbeat { .. }
        | GroupCall::Delete { .. }
        | GroupCall::Describe { .. }
        | GroupCall::List => GroupReply::Code(code),
    }
}

/// The groups one shard coordinates.
pub struct Coordinator {
    groups: RefCell<HashMap<String, Entry>>,
    pub offsets: OffsetStore,
    config: GroupConfig,
    env: crate::runtime::env::Env,
}

impl Coordinator {
    /// Groups this shard coordinates (for metrics).
    pub fn group_count(&self) -> usize {
        self.groups.borrow().len()
    }

    pub fn new(
        env: crate::runtime::env::Env,
        offsets: OffsetStore,
        config: GroupConfig,
    ) -> Coordinator {
        Coordinator {
            groups: RefCell::new(HashMap::new()),
            offsets,
            config,
            env,
        }
    }

    /// Milliseconds on the shard's monotonic clock (the state machine's time).
    fn now_ms(&self) -> u64 {
        self.env.monotonic().as_millis() as u64
    }

    fn new_group(&self, group_id: &str) -> Group {
        Group::new(group_id, self.config.clone()).with_member_id_seed(self.env.random_u64())
    }

    /// Runs `f` on the group's entry (created if missing), then answers what its events say.
    fn with_group<T>(
        &self,
        group_id: &str,
        f: impl FnOnce(&mut Entry, u64) -> (T, Vec<Event>),
    ) -> T {
        let now = self.now_ms();
        let mut groups = self.groups.borrow_mut();
        let entry = groups.entry(group_id.to_string()).or_insert_with(|| Entry {
            group: self.new_group(group_id),
            join_waiters: HashMap::new(),
            sync_waiters: HashMap::new(),
            empty_since_ms: None,
        });
        let (value, events) = f(entry, now);
        entry.dispatch(events);
        entry.drop_gone_waiters();
        value
    }

    /// Advances every group's clock: expired sessions, ended join phases. A group that has
    /// been empty for `GROUP_EMPTY_FORGET_MS` is forgotten (its committed offsets stay in the
    /// offsets store), so the table stays bounded by the groups in use.
    pub fn tick(&self) {
        let now = self.now_ms();
        let mut groups = self.groups.borrow_mut();
        for entry in groups.values_mut() {
            let events = entry.group.tick(now);
            entry.dispatch(events);
            entry.drop_gone_waiters();
            let idle = entry.group.is_empty()
                && entry.join_waiters.is_empty()
                && entry.sync_waiters.is_empty();
            entry.empty_since_ms = if idle {
                Some(entry.empty_since_ms.unwrap_or(now))
            } else {
                None
            };
        }
        groups.retain(|_, e| {
            e.empty_since_ms
                .is_none_or(|since| now - since < GROUP_EMPTY_FORGET_MS)
        });
    }

    pub async fn handle(&self, call: GroupCall) -> GroupReply {
        if let Some(id) = call.group_id() {
            if id.len() > crate::constants::GROUP_ID_BYTES_MAX {
                return refusal(&call, GroupCode::InvalidGroupId);
            }
            // Its offsets partition could not be recovered: answering from an empty view
            // would let consumers reset their positions, so the coordinator is unavailable.
            if self.offsets.is_offline(id) {
                return refusal(&call, GroupCode::CoordinatorNotAvailable);
            }
        }
        match call {
            GroupCall::Join { group_id, request } => self.join(&group_id, request).await,
            GroupCall::Sync {
                group_id,
                member_id,
                generation_id,
                assignments,
            } => {
                self.sync(&group_id, member_id, generation_id, assignments)
                    .await
            }
            GroupCall::Heartbeat {
                group_id,
                member_id,
                generation_id,
            } => {
                let mut groups = self.groups.borrow_mut();
                let code = match groups.get_mut(&group_id) {
                    Some(e) => e.group.heartbeat(&member_id, generation_id, self.now_ms()),
                    None => GroupCode::UnknownMemberId,
                };
                GroupReply::Code(code)
            }
            GroupCall::Leave { group_id, members } => {
                if !self.groups.borrow().contains_key(&group_id) {
                    return GroupReply::Codes(vec![GroupCode::UnknownMemberId; members.len()]);
                }
                GroupReply::Codes(self.with_group(&group_id, |entry, now| {
                    let mut codes = Vec::new();
                    let mut events = Vec::new();
                    for (member_id, instance) in members {
                        let id = match (member_id.is_empty(), instance) {
                            (false, _) => member_id,
                            (true, Some(i)) => entry
                                .group
                                .describe()
                                .into_iter()
                                .find(|m| m.instance_id.as_deref() == Some(i.as_str()))
                                .map(|m| m.member_id)
                                .unwrap_or_default(),
                            (true, None) => String::new(),
                        };
                        let (code, more) = entry.group.leave(&id, now);
                        codes.push(code);
                        events.extend(more);
                    }
                    (codes, events)
                }))
            }
            GroupCall::Commit {
                group_id,
                member_id,
                generation_id,
                offsets,
            } => {
                self.commit(&group_id, &member_id, generation_id, offsets)
                    .await
            }
            GroupCall::Fetch {
                group_id,
                partitions,
            } => GroupReply::Offsets {
                error: GroupCode::Ok,
                offsets: self.offsets.fetch(&group_id, partitions.as_deref()),
            },
            GroupCall::Describe { group_id } => GroupReply::Described(self.describe(&group_id)),
            GroupCall::List => GroupReply::Listed(self.list()),
            GroupCall::Delete { group_id } => self.delete(&group_id).await,
            GroupCall::DeleteOffsets {
                group_id,
                partitions,
            } => {
                let count = partitions.len();
                let tombstones = partitions.into_iter().map(|tp| (tp, None)).collect();
                let code = match self.offsets.write(&group_id, tombstones).await {
                    Ok(()) => GroupCode::Ok,
                    Err(_) => GroupCode::StorageFailed,
                };
                GroupReply::Codes(vec![code; count])
            }
        }
    }

    async fn join(&self, group_id: &str, request: JoinRequest) -> GroupReply {
        let waiting = self.with_group(group_id, |entry, now| {
            if entry.group.state == super::state::GroupState::Dead {
                entry.group = self.new_group(group_id);
            }
            let (outcome, events) = entry.group.join(request, now);
            let answer = match outcome {
                JoinOutcome::MemberIdRequired(id) => {
                    Err(join_error(GroupCode::MemberIdRequired, id))
                }
                JoinOutcome::Error(e) => Err(join_error(e, String::new())),
                JoinOutcome::Waiting(id) => {
                    let superseded = join_error(GroupCode::RebalanceInProgress, id.clone());
                    Ok(park(&mut entry.join_waiters, id, superseded))
                }
            };
            (answer, events)
        });
        if waiting.is_err() {
            // A refused or MEMBER_ID_REQUIRED join must not leave an entry behind for a group
            // that has nobody in it (the table would grow with every stray group id).
            let mut groups = self.groups.borrow_mut();
            // (Not when a member id was just handed out: the member rejoins with it next.)
            let idle = groups.get(group_id).is_some_and(|e| {
                e.group.is_empty()
                    && e.group.generation_id == GenerationId(0)
                    && e.join_waiters.is_empty()
                    && !e.group.has_pending_members()
            });
            if idle {
                groups.remove(group_id);
            }
        }
        match waiting {
            Err(reply) => reply,
            Ok(rx) => rx
                .await
                .unwrap_or_else(|_| join_error(GroupCode::RebalanceInProgress, String::new())),
        }
    }

    async fn sync(
        &self,
        group_id: &str,
        member_id: String,
        generation_id: GenerationId,
        assignments: Vec<(String, Bytes)>,
    ) -> GroupReply {
        if !self.groups.borrow().contains_key(group_id) {
            return sync_error(GroupCode::UnknownMemberId);
        }
        let waiting = self.with_group(group_id, |entry, now| {
            let (outcome, events) = entry
                .group
                .sync(&member_id, generation_id, assignments, now);
            let answer = match outcome {
                SyncOutcome::Assignment(assignment) => Err(GroupReply::Sync {
                    error: GroupCode::Ok,
                    assignment,
                    protocol_type: entry.group.protocol_type.clone(),
                    protocol_name: entry.group.protocol_name.clone(),
                }),
                SyncOutcome::Error(e) => Err(sync_error(e)),
                SyncOutcome::Waiting => {
                    let superseded = sync_error(GroupCode::RebalanceInProgress);
                    Ok(park(&mut entry.sync_waiters, member_id.clone(), superseded))
                }
            };
            (answer, events)
        });
        match waiting {
            Err(reply) => reply,
            Ok(rx) => rx
                .await
                .unwrap_or_else(|_| sync_error(GroupCode::RebalanceInProgress)),
        }
    }

    async fn commit(
        &self,
        group_id: &str,
        member_id: &str,
        generation_id: GenerationId,
        offsets: Vec<OffsetToCommit>,
    ) -> GroupReply {
        let count = offsets.len();
        let check = match self.groups.borrow().get(group_id) {
            Some(e) => e.group.check_commit(member_id, generation_id),
            None if generation_id.0 < 0 => GroupCode::Ok,
            None => GroupCode::IllegalGeneration,
        };
        if check != GroupCode::Ok {
            return GroupReply::Codes(vec![check; count]);
        }
        if offsets.iter().any(|o| {
            o.metadata
                .as_ref()
                .is_some_and(|m| m.len() > crate::constants::OFFSET_METADATA_BYTES_MAX)
        }) {
            return GroupReply::Codes(vec![GroupCode::OffsetMetadataTooLarge; count]);
        }
        let entries = offsets
            .into_iter()
            .map(|o| {
                (
                    o.partition,
                    Some(Committed {
                        offset: o.offset,
                        leader_epoch: o.leader_epoch,
                        metadata: o.metadata,
                        topic_id: o.topic_id,
                        record_offset: 0,
                    }),
                )
            })
            .collect();
        let code = match self.offsets.write(group_id, entries).await {
            Ok(()) => GroupCode::Ok,
            Err(e) => {
                tracing::error!(group = group_id, error = %e, "offset commit failed");
                GroupCode::StorageFailed
            }
        };
        GroupReply::Codes(vec![code; count])
    }

    fn describe(&self, group_id: &str) -> GroupDescription {
        match self.groups.borrow().get(group_id) {
            Some(e) => GroupDescription {
                state: e.group.state_name().to_string(),
                protocol_type: e.group.protocol_type.clone().unwrap_or_default(),
                protocol_name: e.group.protocol_name.clone().unwrap_or_default(),
                members: e.group.describe(),
            },
            None if self.offsets.has_group(group_id) => GroupDescription {
                state: "Empty".into(),
                protocol_type: "consumer".into(),
                ..Default::default()
            },
            None => GroupDescription {
                state: "Dead".into(),
                ..Default::default()
            },
        }
    }

    fn list(&self) -> Vec<(String, String, String)> {
        let groups = self.groups.borrow();
        let mut listed: Vec<(String, String, String)> = groups
            .iter()
            .map(|(id, e)| {
                (
                    id.clone(),
                    e.group.protocol_type.clone().unwrap_or_default(),
                    e.group.state_name().to_string(),
                )
            })
            .collect();
        for id in self.offsets.groups() {
            if !groups.contains_key(&id) {
                listed.push((id, "consumer".into(), "Empty".into()));
            }
        }
        listed
    }

    async fn delete(&self, group_id: &str) -> GroupReply {
        let members = self
            .groups
            .borrow()
            .get(group_id)
            .map(|e| !e.group.is_empty());
        if members == Some(true) {
            return GroupReply::Code(GroupCode::NonEmptyGroup);
        }
        if members.is_none() && !self.offsets.has_group(group_id) {
            return GroupReply::Code(GroupCode::GroupIdNotFound);
        }
        // Dead from now on: a join during the tombstone write starts a new group, which the
        // removal below then leaves alone.
        if let Some(e) = self.groups.borrow_mut().get_mut(group_id) {
            e.group.mark_dead();
        }
        let tombstones = self
            .offsets
            .fetch(group_id, None)
            .into_iter()
            .map(|(tp, _)| (tp, None))
            .collect();
        if self.offsets.write(group_id, tombstones).await.is_err() {
            return GroupReply::Code(GroupCode::StorageFailed);
        }
        let mut groups = self.groups.borrow_mut();
        if groups
            .get(group_id)
            .is_some_and(|e| e.group.state == super::state::GroupState::Dead)
        {
            let mut e = groups.remove(group_id).expect("checked");
            e.drop_gone_waiters();
        }
        GroupReply::Code(GroupCode::Ok)
    }
}
