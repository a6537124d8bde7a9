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

use super::calls::{Commit, GroupCall, GroupDescription, JoinReply, ListReply, Listed, SyncReply};
use super::code::GroupCode;
use super::offsets::{offsets_partition, Committed, Lead, OffsetStore, WriteError};
use super::state::{Event, Group, GroupConfig, JoinOutcome, JoinRequest, SyncOutcome};
use crate::constants::GROUP_EMPTY_FORGET_MS;
use crate::protocol::types::GenerationId;

struct Entry {
    group: Group,
    join_waiters: HashMap<String, oneshot::Sender<JoinReply>>,
    sync_waiters: HashMap<String, oneshot::Sender<SyncReply>>,
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
                        let reply = JoinReply {
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
                        let _ = tx.send(JoinReply::error(error, member_id));
                    }
                }
                Event::SyncCompleted {
                    member_id,
                    assignment,
                } => {
                    if let Some(tx) = self.sync_waiters.remove(&member_id) {
                        let reply = SyncReply {
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
                        let _ = tx.send(SyncReply::error(error));
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
            let _ = tx.send(JoinReply::error(GroupCode::UnknownMemberId, id));
        }
        for id in self
            .sync_waiters
            .keys()
            .filter(|id| gone(id))
            .cloned()
            .collect::<Vec<_>>()
        {
            let tx = self.sync_waiters.remove(&id).expect("listed");
            let _ = tx.send(SyncReply::error(GroupCode::UnknownMemberId));
        }
    }
}

/// The group code of a failed offsets write: NOT_COORDINATOR when leadership moved (the
/// client finds the new coordinator), COORDINATOR_NOT_AVAILABLE when the in-sync replicas
/// did not take it (retriable, as Kafka answers NOT_ENOUGH_REPLICAS and timeouts of the
/// offsets log), KAFKA_STORAGE_ERROR for a failed log.
fn write_code(group_id: &str, e: &WriteError) -> GroupCode {
    match e {
        WriteError::NotCoordinator => GroupCode::NotCoordinator,
        WriteError::Unavailable(_) => GroupCode::CoordinatorNotAvailable,
        WriteError::InvalidGroup => GroupCode::InvalidGroupId,
        WriteError::Storage(_) => {
            tracing::error!(group = group_id, error = %e, "offsets write failed");
            GroupCode::StorageFailed
        }
    }
}

/// Parks a member's waiting request; an older one of the same member is over and is answered
/// with `superseded` (the member sent a newer request).
fn park<R>(
    waiters: &mut HashMap<String, oneshot::Sender<R>>,
    member_id: String,
    superseded: R,
) -> oneshot::Receiver<R> {
    let (tx, rx) = oneshot::channel();
    if let Some(old) = waiters.insert(member_id, tx) {
        let _ = old.send(superseded);
    }
    rx
}

/// The groups one shard coordinates.
pub struct Coordinator {
    groups: RefCell<HashMap<String, Entry>>,
    pub offsets: OffsetStore,
    config: GroupConfig,
    env: crate::runtime::env::Env,
    /// The tick loop parked while no group exists (an idle broker then takes no timer
    /// wake-ups for groups); the first group created wakes it.
    idle_waiter: RefCell<Option<oneshot::Sender<()>>>,
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
            idle_waiter: RefCell::new(None),
        }
    }

    /// Resolves once a group exists (at once if one does). The tick loop awaits it so that a
    /// shard with no groups sleeps until a group request arrives instead of ticking.
    pub fn until_any_group(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        if self.groups.borrow().is_empty() {
            *self.idle_waiter.borrow_mut() = Some(tx);
        } else {
            let _ = tx.send(());
        }
        rx
    }

    /// This broker now leads offsets partition `p` at `epoch`: its groups are served once the
    /// partition's view is loaded from the log.
    pub async fn lead(&self, p: u32, epoch: i32) {
        self.offsets.lead(p, epoch).await;
    }

    /// This broker no longer leads offsets partition `p`: its groups' members, and requests
    /// waiting in a join or sync, are told NOT_COORDINATOR and go to the new coordinator.
    pub fn unlead(&self, p: u32) {
        if self.offsets.lead_of_partition(p) == Lead::NotLed {
            return;
        }
        self.offsets.unlead(p);
        let gone: Vec<Entry> = {
            let mut groups = self.groups.borrow_mut();
            let ids: Vec<String> = groups
                .keys()
                .filter(|g| offsets_partition(g) == p)
                .cloned()
                .collect();
            ids.iter().filter_map(|g| groups.remove(g)).collect()
        };
        for entry in gone {
            for (id, tx) in entry.join_waiters {
                let _ = tx.send(JoinReply::error(GroupCode::NotCoordinator, id));
            }
            for (_, tx) in entry.sync_waiters {
                let _ = tx.send(SyncReply::error(GroupCode::NotCoordinator));
            }
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
        if groups.is_empty() {
            if let Some(tx) = self.idle_waiter.borrow_mut().take() {
                let _ = tx.send(());
            }
        }
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

    /// Runs one call and answers it on its reply sender. (A caller that went away is not an
    /// error: the work is done all the same, and nobody is left to answer.)
    pub async fn handle(&self, call: GroupCall) {
        if let Some(id) = call.group_id() {
            if id.len() > crate::constants::GROUP_ID_BYTES_MAX {
                return call.refuse(GroupCode::InvalidGroupId);
            }
            // Its offsets partition could not be recovered: answering from an empty view
            // would let consumers reset their positions, so the coordinator is unavailable.
            if self.offsets.is_offline(id) {
                return call.refuse(GroupCode::CoordinatorNotAvailable);
            }
            match self.offsets.lead_of(id) {
                Lead::Led => {}
                Lead::Loading => return call.refuse(GroupCode::CoordinatorLoadInProgress),
                Lead::NotLed => return call.refuse(GroupCode::NotCoordinator),
            }
        }
        match call {
            GroupCall::Join(c, tx) => {
                let _ = tx.send(self.join(&c.group_id, c.request).await);
            }
            GroupCall::Sync(c, tx) => {
                let reply = self
                    .sync(&c.group_id, c.member_id, c.generation_id, c.assignments)
                    .await;
                let _ = tx.send(reply);
            }
            GroupCall::Heartbeat(c, tx) => {
                let mut groups = self.groups.borrow_mut();
                let code = match groups.get_mut(&c.group_id) {
                    Some(e) => e
                        .group
                        .heartbeat(&c.member_id, c.generation_id, self.now_ms()),
                    None => GroupCode::UnknownMemberId,
                };
                let _ = tx.send(code);
            }
            GroupCall::Leave(c, tx) => {
                let _ = tx.send(self.leave(&c.group_id, c.members));
            }
            GroupCall::Commit(c, tx) => {
                let _ = tx.send(self.commit(c).await);
            }
            GroupCall::FetchOffsets(c, tx) => {
                let _ = tx.send(Ok(self.offsets.fetch(&c.group_id, c.partitions.as_deref())));
            }
            GroupCall::Describe(c, tx) => {
                let _ = tx.send(Ok(self.describe(&c.group_id)));
            }
            GroupCall::List(_, tx) => {
                let error = match self.offsets.any_offline() {
                    true => GroupCode::CoordinatorNotAvailable,
                    false => GroupCode::Ok,
                };
                let groups = self.list();
                let _ = tx.send(ListReply { error, groups });
            }
            GroupCall::Delete(c, tx) => {
                let _ = tx.send(self.delete(&c.group_id).await);
            }
            GroupCall::DeleteOffsets(c, tx) => {
                let count = c.partitions.len();
                let tombstones = c.partitions.into_iter().map(|tp| (tp, None)).collect();
                let code = match self.offsets.write(&c.group_id, tombstones).await {
                    Ok(()) => GroupCode::Ok,
                    Err(e) => write_code(&c.group_id, &e),
                };
                let _ = tx.send(vec![code; count]);
            }
        }
    }

    /// LeaveGroup: one code per member (found by member id, or by instance id when the
    /// member id is empty).
    fn leave(&self, group_id: &str, members: Vec<(String, Option<String>)>) -> Vec<GroupCode> {
        if !self.groups.borrow().contains_key(group_id) {
            return vec![GroupCode::UnknownMemberId; members.len()];
        }
        self.with_group(group_id, |entry, now| {
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
        })
    }

    async fn join(&self, group_id: &str, request: JoinRequest) -> JoinReply {
        let waiting = self.with_group(group_id, |entry, now| {
            if entry.group.state == super::state::GroupState::Dead {
                entry.group = self.new_group(group_id);
            }
            let (outcome, events) = entry.group.join(request, now);
            let answer = match outcome {
                JoinOutcome::MemberIdRequired(id) => {
                    Err(JoinReply::error(GroupCode::MemberIdRequired, id))
                }
                JoinOutcome::Error(e) => Err(JoinReply::error(e, String::new())),
                JoinOutcome::Waiting(id) => {
                    let superseded = JoinReply::error(GroupCode::RebalanceInProgress, id.clone());
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
            Ok(rx) => rx.await.unwrap_or_else(|_| {
                JoinReply::error(GroupCode::RebalanceInProgress, String::new())
            }),
        }
    }

    async fn sync(
        &self,
        group_id: &str,
        member_id: String,
        generation_id: GenerationId,
        assignments: Vec<(String, Bytes)>,
    ) -> SyncReply {
        if !self.groups.borrow().contains_key(group_id) {
            return SyncReply::error(GroupCode::UnknownMemberId);
        }
        let waiting = self.with_group(group_id, |entry, now| {
            let (outcome, events) = entry
                .group
                .sync(&member_id, generation_id, assignments, now);
            let answer = match outcome {
                SyncOutcome::Assignment(assignment) => Err(SyncReply {
                    error: GroupCode::Ok,
                    assignment,
                    protocol_type: entry.group.protocol_type.clone(),
                    protocol_name: entry.group.protocol_name.clone(),
                }),
                SyncOutcome::Error(e) => Err(SyncReply::error(e)),
                SyncOutcome::Waiting => {
                    let superseded = SyncReply::error(GroupCode::RebalanceInProgress);
                    Ok(park(&mut entry.sync_waiters, member_id.clone(), superseded))
                }
            };
            (answer, events)
        });
        match waiting {
            Err(reply) => reply,
            Ok(rx) => rx
                .await
                .unwrap_or_else(|_| SyncReply::error(GroupCode::RebalanceInProgress)),
        }
    }

    /// OffsetCommit: one code per offset (all the same: the offsets are written as one).
    async fn commit(&self, call: Commit) -> Vec<GroupCode> {
        let Commit {
            group_id,
            member_id,
            generation_id,
            offsets,
        } = call;
        let (group_id, member_id) = (group_id.as_str(), member_id.as_str());
        let count = offsets.len();
        let check = match self.groups.borrow().get(group_id) {
            Some(e) => e.group.check_commit(member_id, generation_id),
            None if generation_id.0 < 0 => GroupCode::Ok,
            None => GroupCode::IllegalGeneration,
        };
        if check != GroupCode::Ok {
            return vec![check; count];
        }
        if offsets.iter().any(|o| {
            o.metadata
                .as_ref()
                .is_some_and(|m| m.len() > crate::constants::OFFSET_METADATA_BYTES_MAX)
        }) {
            return vec![GroupCode::OffsetMetadataTooLarge; count];
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
            Err(e) => write_code(group_id, &e),
        };
        vec![code; count]
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

    fn list(&self) -> Vec<Listed> {
        let groups = self.groups.borrow();
        let mut listed: Vec<Listed> = groups
            .iter()
            .map(|(id, e)| Listed {
                group_id: id.clone(),
                protocol_type: e.group.protocol_type.clone().unwrap_or_default(),
                state: e.group.state_name().to_string(),
            })
            .collect();
        for id in self.offsets.groups() {
            if !groups.contains_key(&id) {
                listed.push(Listed {
                    group_id: id,
                    protocol_type: "consumer".into(),
                    state: "Empty".into(),
                });
            }
        }
        listed
    }

    async fn delete(&self, group_id: &str) -> GroupCode {
        let members = self
            .groups
            .borrow()
            .get(group_id)
            .map(|e| !e.group.is_empty());
        if members == Some(true) {
            return GroupCode::NonEmptyGroup;
        }
        if members.is_none() && !self.offsets.has_group(group_id) {
            return GroupCode::GroupIdNotFound;
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
        if let Err(e) = self.offsets.write(group_id, tombstones).await {
            return write_code(group_id, &e);
        }
        let mut groups = self.groups.borrow_mut();
        if groups
            .get(group_id)
            .is_some_and(|e| e.group.state == super::state::GroupState::Dead)
        {
            let mut e = groups.remove(group_id).expect("checked");
            e.drop_gone_waiters();
        }
        GroupCode::Ok
    }
}
