//! The classic group membership state machine: Empty → PreparingRebalance →
//! CompletingRebalance → Stable (and Dead), generations, member ids (including the
//! MEMBER_ID_REQUIRED first join), protocol selection, session and rebalance timeouts. Runs on:
//! the group's owning shard. Invariants: the generation only grows; a member id belongs to one
//! member; in Stable every member has been sent the assignment of the current generation; time
//! only enters through `now_ms` arguments (no clock reads), so tests drive it with a virtual
//! clock.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::code::GroupCode;
use crate::protocol::types::GenerationId;

pub use crate::config::GroupConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

/// A member as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// A JoinGroup as the state machine needs it.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// Empty on a first join.
    pub member_id: String,
    pub client_id: String,
    /// Where the member connects from, as Kafka shows it (`/127.0.0.1`).
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    /// (protocol name, member metadata), in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a first join without a member id is answered MEMBER_ID_REQUIRED.
    pub require_known_member_id: bool,
    /// Static membership (KIP-345): a restarting member with the same instance id takes over
    /// its previous member's place without a rebalance.
    pub group_instance_id: Option<String>,
}

/// What a joined member is told when the join phase completes.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinResult {
    pub member_id: String,
    pub generation_id: GenerationId,
    pub protocol_name: String,
    pub leader: String,
    /// (member id, metadata for the chosen protocol): sent to the leader only.
    pub members: Vec<(String, Bytes)>,
}

/// Something a waiting request learns, to be answered by the caller.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    JoinCompleted(JoinResult),
    /// A member's pending join failed (removed, or the group went away).
    JoinFailed {
        member_id: String,
        error: GroupCode,
    },
    SyncCompleted {
        member_id: String,
        assignment: Bytes,
    },
    SyncFailed {
        member_id: String,
        error: GroupCode,
    },
}

/// The immediate answer to a join.
#[derive(Debug, Clone, PartialEq)]
pub enum JoinOutcome {
    /// Rejoin with this member id.
    MemberIdRequired(String),
    /// Answered later by an `Event::JoinCompleted` for this member id.
    Waiting(String),
    Error(GroupCode),
}

/// The immediate answer to a sync.
#[derive(Debug, Clone, PartialEq)]
pub enum SyncOutcome {
    Assignment(Bytes),
    /// Answered later by an `Event::SyncCompleted`.
    Waiting,
    Error(GroupCode),
}

#[derive(Debug, Clone)]
struct Member {
    client_id: String,
    client_host: String,
    group_instance_id: Option<String>,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    last_seen_ms: u64,
    awaiting_join: bool,
    awaiting_sync: bool,
}

/// One consumer group.
#[derive(Debug)]
pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub generation_id: GenerationId,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Member ids handed out by MEMBER_ID_REQUIRED, with when they expire.
    pending_members: BTreeMap<String, u64>,
    /// When the current join phase ends even if not every member has rejoined.
    join_deadline_ms: Option<u64>,
    /// When CompletingRebalance gives up on members that have not sent SyncGroup.
    sync_deadline_ms: Option<u64>,
    next_member_number: u64,
    /// The random part of this group's member ids.
    member_id_seed: u64,
    config: GroupConfig,
}

/// Who a join is for, once admitted.
enum Admitted {
    Member(String),
    /// Answered without joining (an error, or MEMBER_ID_REQUIRED).
    Answered(JoinOutcome),
    /// A static member rejoining under a new member id: it replaces this one.
    StaticReplacement(String),
}

/// SplitMix64's finalizer: spreads a counter and a seed into a random-looking word.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Longest part of a member id taken from the client id.
pub const MEMBER_ID_CLIENT_PREFIX_BYTES_MAX: usize = 255;

impl Group {
    pub fn new(id: impl Into<String>, config: GroupConfig) -> Group {
        Group {
            id: id.into(),
            state: GroupState::Empty,
            generation_id: GenerationId(0),
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: BTreeMap::new(),
            pending_members: BTreeMap::new(),
            join_deadline_ms: None,
            sync_deadline_ms: None,
            next_member_number: 0,
            member_id_seed: 0,
            config,
        }
    }

    /// Seeds the random part of member ids (the coordinator draws it from the shard's
    /// generator, so ids never repeat across groups, restarts or forgotten groups; the state
    /// machine itself does no IO and reads no randomness).
    pub fn with_member_id_seed(mut self, seed: u64) -> Group {
        self.member_id_seed = seed;
        self
    }

    pub fn member_ids(&self) -> Vec<String> {
        self.members.keys().cloned().collect()
    }

    /// A member id as Kafka makes them: the client id and a random part, so ids never repeat
    /// (not after a broker restart, not after an empty group is forgotten).
    /// The client id is cut to `MEMBER_ID_CLIENT_PREFIX_BYTES_MAX`: a client id may be up to
    /// 32,767 bytes, and a member id longer than that cannot be encoded in JoinGroup v0-v5 (the
    /// group then never stabilised, as every leader answer failed to encode).
    fn new_member_id(&mut self, client_id: &str) -> String {
        self.next_member_number += 1;
        let n = self.next_member_number;
        let random = format!(
            "{:016x}{:016x}",
            mix64(self.member_id_seed ^ n),
            mix64(self.member_id_seed.rotate_left(32) ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        );
        let mut cut = client_id.len().min(MEMBER_ID_CLIENT_PREFIX_BYTES_MAX);
        while !client_id.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}-{random}", &client_id[..cut])
    }

    /// Protocols every member (and the joining one) supports, in the joining member's order.
    fn supports_common_protocol(&self, request: &JoinRequest) -> bool {
        if let Some(t) = &self.protocol_type {
            if !self.members.is_empty() && *t != request.protocol_type {
                return false;
            }
        }
        request.protocols.iter().any(|(name, _)| {
            self.members
                .values()
                .all(|m| m.protocols.iter().any(|(n, _)| n == name))
        })
    }

    /// Handles a JoinGroup.
    pub fn join(&mut self, request: JoinRequest, now_ms: u64) -> (JoinOutcome, Vec<Event>) {
        if let Err(e) = self.check_join(&request) {
            return (JoinOutcome::Error(e), Vec::new());
        }
        let member_id = match self.admit(&request, now_ms) {
            Admitted::Member(id) => id,
            Admitted::Answered(outcome) => return (outcome, Vec::new()),
            Admitted::StaticReplacement(old) => {
                return self.replace_static_member(old, request, now_ms)
            }
        };
        let known = self.members.contains_key(&member_id);
        let changed = match self.members.get(&member_id) {
            Some(m) => m.protocols != request.protocols,
            None => true,
        };
        let mut events = Vec::new();
        // A member that rejoins while its SyncGroup is parked: that sync is over.
        if self.put_joining_member(&member_id, request, now_ms) {
            events.push(Event::SyncFailed {
                member_id: member_id.clone(),
                error: GroupCode::RebalanceInProgress,
            });
        }
        let is_leader = self.leader.as_deref() == Some(member_id.as_str());
        // A known member rejoining with unchanged metadata (it lost its answer, or reconnected)
        // gets the current generation back without a new rebalance, as in Kafka; in Stable the
        // leader's rejoin does start one (it wants to reassign).
        let settled = match self.state {
            GroupState::CompletingRebalance => known && !changed,
            GroupState::Stable => known && !changed && !is_leader,
            _ => false,
        };
        if settled {
            self.members
                .get_mut(&member_id)
                .expect("inserted above")
                .awaiting_join = false;
            events.push(Event::JoinCompleted(self.current_join_result(&member_id)));
            return (JoinOutcome::Waiting(member_id), events);
        }
        if self.state != GroupState::PreparingRebalance {
            events.extend(self.prepare_rebalance(now_ms));
        }
        events.extend(self.maybe_complete_join(now_ms));
        (JoinOutcome::Waiting(member_id), events)
    }

    /// Whether the group can take this join at all: alive, a session timeout in range, a
    /// protocol it shares with the members, metadata within the limit.
    fn check_join(&self, request: &JoinRequest) -> Result<(), GroupCode> {
        if self.state == GroupState::Dead {
            return Err(GroupCode::CoordinatorNotAvailable);
        }
        if request.session_timeout_ms < self.config.session_timeout_ms_min
            || request.session_timeout_ms > self.config.session_timeout_ms_max
        {
            return Err(GroupCode::InvalidSessionTimeout);
        }
        if request.protocols.is_empty()
            || request.protocol_type.is_empty()
            || request
                .protocols
                .iter()
                .any(|(_, m)| m.len() > self.config.metadata_bytes_max)
        {
            return Err(GroupCode::InconsistentGroupProtocol);
        }
        if !self.supports_common_protocol(request) {
            return Err(GroupCode::InconsistentGroupProtocol);
        }
        Ok(())
    }

    /// The joining member's id: its own if it is known (or was just handed one), a new one
    /// (answered with MEMBER_ID_REQUIRED first, unless static), or the static member it
    /// replaces.
    fn admit(&mut self, request: &JoinRequest, now_ms: u64) -> Admitted {
        let member_id = request.member_id.clone();
        if !member_id.is_empty() {
            if !self.members.contains_key(&member_id)
                && self.pending_members.remove(&member_id).is_none()
            {
                return Admitted::Answered(JoinOutcome::Error(GroupCode::UnknownMemberId));
            }
            return Admitted::Member(member_id);
        }
        if let Some(instance) = &request.group_instance_id {
            if let Some(old) = self.static_member(instance) {
                return Admitted::StaticReplacement(old);
            }
        }
        if self.members.len() + self.pending_members.len() >= self.config.members_max {
            return Admitted::Answered(JoinOutcome::Error(GroupCode::GroupMaxSizeReached));
        }
        let member_id = self.new_member_id(&request.client_id);
        // Static members are known by their instance id: no MEMBER_ID_REQUIRED round trip.
        if request.require_known_member_id && request.group_instance_id.is_none() {
            let expires = now_ms + request.session_timeout_ms as u64;
            self.pending_members.insert(member_id.clone(), expires);
            return Admitted::Answered(JoinOutcome::MemberIdRequired(member_id));
        }
        Admitted::Member(member_id)
    }

    /// Records the member as joining (keeping the assignment it holds); `true` if it had a
    /// SyncGroup parked, which its rejoin ends.
    fn put_joining_member(&mut self, member_id: &str, request: JoinRequest, now_ms: u64) -> bool {
        let previous = self.members.get(member_id);
        let was_syncing = previous.is_some_and(|m| m.awaiting_sync);
        let member = Member {
            client_id: request.client_id,
            client_host: request.client_host,
            group_instance_id: request.group_instance_id,
            session_timeout_ms: request.session_timeout_ms,
            rebalance_timeout_ms: request.rebalance_timeout_ms.max(request.session_timeout_ms),
            protocols: request.protocols,
            assignment: previous.map(|m| m.assignment.clone()).unwrap_or_default(),
            last_seen_ms: now_ms,
            awaiting_join: true,
            awaiting_sync: false,
        };
        self.members.insert(member_id.to_string(), member);
        self.protocol_type = Some(request.protocol_type);
        was_syncing
    }

    fn static_member(&self, instance: &str) -> Option<String> {
        self.members
            .iter()
            .find(|(_, m)| m.group_instance_id.as_deref() == Some(instance))
            .map(|(id, _)| id.clone())
    }

    /// A static member came back (new member id, same instance id): it takes the old member's
    /// place and assignment. In a settled group with unchanged metadata this costs no
    /// rebalance; the old member id is fenced.
    fn replace_static_member(
        &mut self,
        old_id: String,
        request: JoinRequest,
        now_ms: u64,
    ) -> (JoinOutcome, Vec<Event>) {
        let new_id = self.new_member_id(&request.client_id);
        let mut member = self.members.remove(&old_id).expect("static member listed");
        let changed = member.protocols != request.protocols;
        member.client_id = request.client_id;
        member.client_host = request.client_host;
        member.session_timeout_ms = request.session_timeout_ms;
        member.rebalance_timeout_ms = request.rebalance_timeout_ms.max(request.session_timeout_ms);
        member.protocols = request.protocols;
        member.last_seen_ms = now_ms;
        member.awaiting_sync = false;
        self.members.insert(new_id.clone(), member);
        if self.leader.as_deref() == Some(old_id.as_str()) {
            self.leader = Some(new_id.clone());
        }
        let mut events = vec![
            Event::JoinFailed {
                member_id: old_id.clone(),
                error: GroupCode::FencedInstanceId,
            },
            Event::SyncFailed {
                member_id: old_id,
                error: GroupCode::FencedInstanceId,
            },
        ];
        if self.state == GroupState::Stable && !changed {
            self.members
                .get_mut(&new_id)
                .expect("inserted")
                .awaiting_join = false;
            events.push(Event::JoinCompleted(self.current_join_result(&new_id)));
            return (JoinOutcome::Waiting(new_id), events);
        }
        self.members
            .get_mut(&new_id)
            .expect("inserted")
            .awaiting_join = true;
        if self.state != GroupState::PreparingRebalance {
            events.extend(self.prepare_rebalance(now_ms));
        }
        events.extend(self.maybe_complete_join(now_ms));
        (JoinOutcome::Waiting(new_id), events)
    }

    /// Every member, for DescribeGroups (metadata: of the chosen protocol).
    pub fn describe(&self) -> Vec<MemberDescription> {
        self.members
            .iter()
            .map(|(id, m)| {
                let meta = self
                    .protocol_name
                    .as_ref()
                    .and_then(|p| m.protocols.iter().find(|(n, _)| n == p))
                    .map(|(_, b)| b.clone())
                    .unwrap_or_default();
                MemberDescription {
                    member_id: id.clone(),
                    instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: meta,
                    assignment: m.assignment.clone(),
                }
            })
            .collect()
    }

    /// Kafka's name of the state, for ListGroups and DescribeGroups.
    pub fn state_name(&self) -> &'static str {
        match self.state {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Member ids handed out by MEMBER_ID_REQUIRED and not yet used or expired.
    pub fn has_pending_members(&self) -> bool {
        !self.pending_members.is_empty()
    }

    /// Checks a member and generation for OffsetCommit: commits are refused while the group
    /// waits for its leader's assignment (CompletingRebalance), as in Kafka.
    pub fn check_commit(&self, member_id: &str, generation_id: GenerationId) -> GroupCode {
        if generation_id.0 < 0 && member_id.is_empty() {
            // A commit from outside the group protocol (manual assignment).
            return if self.members.is_empty() {
                GroupCode::Ok
            } else {
                GroupCode::UnknownMemberId
            };
        }
        if let Err(e) = self.check_member(member_id, generation_id) {
            return e;
        }
        if self.state == GroupState::CompletingRebalance {
            return GroupCode::RebalanceInProgress;
        }
        GroupCode::Ok
    }

    /// Marks the group deleted.
    pub fn mark_dead(&mut self) {
        self.state = GroupState::Dead;
    }

    /// The join answer of the current generation for `member_id` (leader: with the members).
    fn current_join_result(&self, member_id: &str) -> JoinResult {
        let protocol = self
            .protocol_name
            .clone()
            .expect("a settled group has a protocol");
        let leader = self.leader.clone().expect("a settled group has a leader");
        let members = if leader == member_id {
            self.members
                .iter()
                .filter_map(|(id, m)| {
                    let meta = m.protocols.iter().find(|(n, _)| *n == protocol)?;
                    Some((id.clone(), meta.1.clone()))
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinResult {
            member_id: member_id.to_string(),
            generation_id: self.generation_id,
            protocol_name: protocol,
            leader,
            members,
        }
    }

    /// Enters PreparingRebalance: every member must rejoin before the deadline.
    fn prepare_rebalance(&mut self, now_ms: u64) -> Vec<Event> {
        let mut events = Vec::new();
        if self.state == GroupState::CompletingRebalance {
            for (id, m) in self.members.iter_mut().filter(|(_, m)| m.awaiting_sync) {
                m.awaiting_sync = false;
                events.push(Event::SyncFailed {
                    member_id: id.clone(),
                    error: GroupCode::RebalanceInProgress,
                });
            }
        }
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0);
        self.join_deadline_ms = Some(now_ms + timeout as u64);
        self.state = GroupState::PreparingRebalance;
        events
    }

    /// Ends the join phase if every member rejoined (or `force`, at the deadline): members that
    /// did not rejoin are removed, the generation advances and a protocol is chosen.
    fn complete_join(&mut self, now_ms: u64) -> Vec<Event> {
        let mut events = Vec::new();
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| !m.awaiting_join)
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.members.remove(&id);
        }
        self.join_deadline_ms = None;
        self.generation_id.0 += 1;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.leader = None;
            self.protocol_name = None;
            return events;
        }
        let protocol = self.choose_protocol();
        if self
            .leader
            .as_ref()
            .is_none_or(|l| !self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        let leader = self
            .leader
            .clone()
            .expect("a group with members has a leader");
        let metadata: Vec<(String, Bytes)> = self
            .members
            .iter()
            .map(|(id, m)| {
                let meta = m
                    .protocols
                    .iter()
                    .find(|(n, _)| *n == protocol)
                    .map(|(_, b)| b.clone());
                (
                    id.clone(),
                    meta.expect("the chosen protocol is supported by every member"),
                )
            })
            .collect();
        // Members wait in the join phase without heartbeating: their sessions start anew now,
        // as in Kafka, or the early joiners of a long join phase would expire at once.
        let sync_timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0);
        self.sync_deadline_ms = Some(now_ms + sync_timeout as u64);
        for (id, m) in self.members.iter_mut() {
            m.last_seen_ms = now_ms;
            m.awaiting_join = false;
            m.awaiting_sync = false;
            events.push(Event::JoinCompleted(JoinResult {
                member_id: id.clone(),
                generation_id: self.generation_id,
                protocol_name: protocol.clone(),
                leader: leader.clone(),
                members: if *id == leader {
                    metadata.clone()
                } else {
                    Vec::new()
                },
            }));
        }
        self.protocol_name = Some(protocol);
        self.state = GroupState::CompletingRebalance;
        events
    }

    fn maybe_complete_join(&mut self, now_ms: u64) -> Vec<Event> {
        if self.state != GroupState::PreparingRebalance {
            return Vec::new();
        }
        let all_joined = self.members.values().all(|m| m.awaiting_join);
        let deadline_passed = self.join_deadline_ms.is_some_and(|d| now_ms >= d);
        if all_joined || deadline_passed {
            self.complete_join(now_ms)
        } else {
            Vec::new()
        }
    }

    /// The protocol every member supports with the most first-preference votes (ties: the
    /// leader-independent name order, so the choice is deterministic).
    fn choose_protocol(&self) -> String {
        let first = self.members.values().next().expect("members");
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(n, _)| n)
            .filter(|n| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(p, _)| p == *n))
            })
            .collect();
        let mut votes: BTreeMap<&String, usize> = candidates.iter().map(|c| (*c, 0)).collect();
        for m in self.members.values() {
            if let Some((name, _)) = m.protocols.iter().find(|(n, _)| votes.contains_key(n)) {
                *votes.get_mut(name).expect("candidate") += 1;
            }
        }
        let best = votes
            .values()
            .copied()
            .max()
            .expect("at least one common protocol");
        votes
            .into_iter()
            .find(|(_, v)| *v == best)
            .map(|(n, _)| n.clone())
            .expect("a protocol with the most votes")
    }

    fn check_member(&self, member_id: &str, generation_id: GenerationId) -> Result<(), GroupCode> {
        if !self.members.contains_key(member_id) {
            return Err(GroupCode::UnknownMemberId);
        }
        if generation_id != self.generation_id {
            return Err(GroupCode::IllegalGeneration);
        }
        Ok(())
    }

    /// Handles a SyncGroup; `assignments` is the leader's (member id, assignment) list.
    pub fn sync(
        &mut self,
        member_id: &str,
        generation_id: GenerationId,
        assignments: Vec<(String, Bytes)>,
        now_ms: u64,
    ) -> (SyncOutcome, Vec<Event>) {
        if let Err(e) = self.check_member(member_id, generation_id) {
            return (SyncOutcome::Error(e), Vec::new());
        }
        if assignments
            .iter()
            .any(|(_, a)| a.len() > self.config.metadata_bytes_max)
        {
            return (SyncOutcome::Error(GroupCode::InvalidRequest), Vec::new());
        }
        self.members
            .get_mut(member_id)
            .expect("checked")
            .last_seen_ms = now_ms;
        match self.state {
            GroupState::PreparingRebalance => (
                SyncOutcome::Error(GroupCode::RebalanceInProgress),
                Vec::new(),
            ),
            GroupState::Stable => {
                let a = self.members[member_id].assignment.clone();
                (SyncOutcome::Assignment(a), Vec::new())
            }
            GroupState::CompletingRebalance if self.leader.as_deref() == Some(member_id) => {
                let mut given: BTreeMap<String, Bytes> = assignments.into_iter().collect();
                let mut events = Vec::new();
                for (id, m) in self.members.iter_mut() {
                    m.assignment = given.remove(id).unwrap_or_default();
                    if m.awaiting_sync && id != member_id {
                        m.awaiting_sync = false;
                        events.push(Event::SyncCompleted {
                            member_id: id.clone(),
                            assignment: m.assignment.clone(),
                        });
                    }
                }
                self.state = GroupState::Stable;
                self.sync_deadline_ms = None;
                let own = self.members[member_id].assignment.clone();
                (SyncOutcome::Assignment(own), events)
            }
            GroupState::CompletingRebalance => {
                self.members
                    .get_mut(member_id)
                    .expect("checked")
                    .awaiting_sync = true;
                (SyncOutcome::Waiting, Vec::new())
            }
            GroupState::Empty | GroupState::Dead => {
                (SyncOutcome::Error(GroupCode::UnknownMemberId), Vec::new())
            }
        }
    }

    /// Handles a Heartbeat.
    pub fn heartbeat(
        &mut self,
        member_id: &str,
        generation_id: GenerationId,
        now_ms: u64,
    ) -> GroupCode {
        if let Err(e) = self.check_member(member_id, generation_id) {
            return e;
        }
        self.members
            .get_mut(member_id)
            .expect("checked")
            .last_seen_ms = now_ms;
        match self.state {
            GroupState::PreparingRebalance => GroupCode::RebalanceInProgress,
            _ => GroupCode::Ok,
        }
    }

    /// Handles a LeaveGroup for one member.
    pub fn leave(&mut self, member_id: &str, now_ms: u64) -> (GroupCode, Vec<Event>) {
        if self.members.remove(member_id).is_none() {
            return (GroupCode::UnknownMemberId, Vec::new());
        }
        (GroupCode::Ok, self.after_removal(now_ms))
    }

    fn after_removal(&mut self, now_ms: u64) -> Vec<Event> {
        let mut events = Vec::new();
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                events.extend(self.prepare_rebalance(now_ms));
            }
            _ => {}
        }
        events.extend(self.maybe_complete_join(now_ms));
        events
    }

    /// Advances time: expires members whose session ran out and ends a join phase whose
    /// deadline passed. Returns what waiting requests must be told.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Event> {
        self.pending_members.retain(|_, expires| *expires > now_ms);
        let sync_overdue = self.state == GroupState::CompletingRebalance
            && self.sync_deadline_ms.is_some_and(|d| now_ms >= d);
        let expired: Vec<String> = self
            .members
            .iter()
            // A member parked in JoinGroup or SyncGroup is governed by the phase's deadline,
            // not its session (clients do not heartbeat while parked). At the sync deadline,
            // the members that never sent SyncGroup (the leader among them) are removed.
            .filter(|(_, m)| {
                let session_over = !m.awaiting_join
                    && !m.awaiting_sync
                    && now_ms.saturating_sub(m.last_seen_ms) > m.session_timeout_ms as u64;
                session_over || (sync_overdue && !m.awaiting_sync)
            })
            .map(|(id, _)| id.clone())
            .collect();
        let mut events = Vec::new();
        for id in &expired {
            if let Some(m) = self.members.remove(id) {
                if m.awaiting_sync {
                    events.push(Event::SyncFailed {
                        member_id: id.clone(),
                        error: GroupCode::UnknownMemberId,
                    });
                }
            }
        }
        if !expired.is_empty() {
            events.extend(self.after_removal(now_ms));
        } else {
            events.extend(self.maybe_complete_join(now_ms));
        }
        events
    }

    /// The assignment a member holds in the current generation.
    pub fn assignment(&self, member_id: &str) -> Option<&Bytes> {
        self.members.get(member_id).map(|m| &m.assignment)
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
