//! The classic group membership state machine: Empty → PreparingRebalance →
//! CompletingRebalance → Stable (and Dead), generations, member ids (including the
//! MEMBER_ID_REQUIRED first join), protocol selection, session and rebalance timeouts. Runs on:
//! the group's owning shard. Invariants: the generation only grows; a member id belongs to one
//! member; in Stable every member has been sent the assignment of the current generation; time
//! only enters through `now_ms` arguments (no clock reads), so tests drive it with a virtual
//! clock.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::protocol::ErrorCode;

/// Limits of a group, from the broker configuration.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub session_timeout_ms_min: i32,
    pub session_timeout_ms_max: i32,
    pub members_max: usize,
    /// Largest member metadata (subscription) or assignment accepted.
    pub metadata_bytes_max: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

/// A JoinGroup as the state machine needs it.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// Empty on a first join.
    pub member_id: String,
    pub client_id: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    /// (protocol name, member metadata), in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a first join without a member id is answered MEMBER_ID_REQUIRED.
    pub require_known_member_id: bool,
}

/// What a joined member is told when the join phase completes.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinResult {
    pub member_id: String,
    pub generation_id: i32,
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
        error: ErrorCode,
    },
    SyncCompleted {
        member_id: String,
        assignment: Bytes,
    },
    SyncFailed {
        member_id: String,
        error: ErrorCode,
    },
}

/// The immediate answer to a join.
#[derive(Debug, Clone, PartialEq)]
pub enum JoinOutcome {
    /// Rejoin with this member id.
    MemberIdRequired(String),
    /// Answered later by an `Event::JoinCompleted` for this member id.
    Waiting(String),
    Error(ErrorCode),
}

/// The immediate answer to a sync.
#[derive(Debug, Clone, PartialEq)]
pub enum SyncOutcome {
    Assignment(Bytes),
    /// Answered later by an `Event::SyncCompleted`.
    Waiting,
    Error(ErrorCode),
}

#[derive(Debug, Clone)]
struct Member {
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
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Member ids handed out by MEMBER_ID_REQUIRED, with when they expire.
    pending_members: BTreeMap<String, u64>,
    /// When the current join phase ends even if not every member has rejoined.
    join_deadline_ms: Option<u64>,
    next_member_number: u64,
    config: GroupConfig,
}

impl Group {
    pub fn new(id: impl Into<String>, config: GroupConfig) -> Group {
        Group {
            id: id.into(),
            state: GroupState::Empty,
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: BTreeMap::new(),
            pending_members: BTreeMap::new(),
            join_deadline_ms: None,
            next_member_number: 0,
            config,
        }
    }

    pub fn member_ids(&self) -> Vec<String> {
        self.members.keys().cloned().collect()
    }

    fn new_member_id(&mut self, client_id: &str) -> String {
        self.next_member_number += 1;
        format!(
            "{client_id}-{}-{}",
            self.generation_id, self.next_member_number
        )
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
        let error = |e| (JoinOutcome::Error(e), Vec::new());
        if self.state == GroupState::Dead {
            return error(ErrorCode::CoordinatorNotAvailable);
        }
        if request.session_timeout_ms < self.config.session_timeout_ms_min
            || request.session_timeout_ms > self.config.session_timeout_ms_max
        {
            return error(ErrorCode::InvalidSessionTimeout);
        }
        if request.protocols.is_empty()
            || request.protocol_type.is_empty()
            || request
                .protocols
                .iter()
                .any(|(_, m)| m.len() > self.config.metadata_bytes_max)
        {
            return error(ErrorCode::InconsistentGroupProtocol);
        }
        if !self.supports_common_protocol(&request) {
            return error(ErrorCode::InconsistentGroupProtocol);
        }
        let mut member_id = request.member_id.clone();
        if member_id.is_empty() {
            if self.members.len() + self.pending_members.len() >= self.config.members_max {
                return error(ErrorCode::GroupMaxSizeReached);
            }
            member_id = self.new_member_id(&request.client_id);
            if request.require_known_member_id {
                let expires = now_ms + request.session_timeout_ms as u64;
                self.pending_members.insert(member_id.clone(), expires);
                return (JoinOutcome::MemberIdRequired(member_id), Vec::new());
            }
        } else if !self.members.contains_key(&member_id)
            && self.pending_members.remove(&member_id).is_none()
        {
            return error(ErrorCode::UnknownMemberId);
        }
        let known = self.members.contains_key(&member_id);
        let changed = match self.members.get(&member_id) {
            Some(m) => m.protocols != request.protocols,
            None => true,
        };
        let member = Member {
            session_timeout_ms: request.session_timeout_ms,
            rebalance_timeout_ms: request.rebalance_timeout_ms.max(request.session_timeout_ms),
            protocols: request.protocols,
            assignment: self
                .members
                .get(&member_id)
                .map(|m| m.assignment.clone())
                .unwrap_or_default(),
            last_seen_ms: now_ms,
            awaiting_join: true,
            awaiting_sync: false,
        };
        self.members.insert(member_id.clone(), member);
        self.protocol_type = Some(request.protocol_type);
        let mut events = Vec::new();
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
                    error: ErrorCode::RebalanceInProgress,
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
    fn complete_join(&mut self) -> Vec<Event> {
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
        self.generation_id += 1;
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
        for (id, m) in self.members.iter_mut() {
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
            self.complete_join()
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

    fn check_member(&self, member_id: &str, generation_id: i32) -> Result<(), ErrorCode> {
        if !self.members.contains_key(member_id) {
            return Err(ErrorCode::UnknownMemberId);
        }
        if generation_id != self.generation_id {
            return Err(ErrorCode::IllegalGeneration);
        }
        Ok(())
    }

    /// Handles a SyncGroup; `assignments` is the leader's (member id, assignment) list.
    pub fn sync(
        &mut self,
        member_id: &str,
        generation_id: i32,
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
            return (SyncOutcome::Error(ErrorCode::InvalidRequest), Vec::new());
        }
        self.members
            .get_mut(member_id)
            .expect("checked")
            .last_seen_ms = now_ms;
        match self.state {
            GroupState::PreparingRebalance => (
                SyncOutcome::Error(ErrorCode::RebalanceInProgress),
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
                (SyncOutcome::Error(ErrorCode::UnknownMemberId), Vec::new())
            }
        }
    }

    /// Handles a Heartbeat.
    pub fn heartbeat(&mut self, member_id: &str, generation_id: i32, now_ms: u64) -> ErrorCode {
        if let Err(e) = self.check_member(member_id, generation_id) {
            return e;
        }
        self.members
            .get_mut(member_id)
            .expect("checked")
            .last_seen_ms = now_ms;
        match self.state {
            GroupState::PreparingRebalance => ErrorCode::RebalanceInProgress,
            _ => ErrorCode::None,
        }
    }

    /// Handles a LeaveGroup for one member.
    pub fn leave(&mut self, member_id: &str, now_ms: u64) -> (ErrorCode, Vec<Event>) {
        if self.members.remove(member_id).is_none() {
            return (ErrorCode::UnknownMemberId, Vec::new());
        }
        (ErrorCode::None, self.after_removal(now_ms))
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
        let expired: Vec<String> = self
            .members
            .iter()
            // A member waiting in a join phase is governed by the rebalance deadline instead.
            .filter(|(_, m)| {
                !m.awaiting_join
                    && now_ms.saturating_sub(m.last_seen_ms) > m.session_timeout_ms as u64
            })
            .map(|(id, _)| id.clone())
            .collect();
        let mut events = Vec::new();
        for id in &expired {
            if let Some(m) = self.members.remove(id) {
                if m.awaiting_sync {
                    events.push(Event::SyncFailed {
                        member_id: id.clone(),
                        error: ErrorCode::UnknownMemberId,
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
mod tests {
    use super::*;

    fn config() -> GroupConfig {
        GroupConfig {
            session_timeout_ms_min: 1000,
            session_timeout_ms_max: 60_000,
            members_max: 10,
            metadata_bytes_max: 1024,
        }
    }

    fn request(member_id: &str, protocols: &[&str]) -> JoinRequest {
        JoinRequest {
            member_id: member_id.to_string(),
            client_id: "c".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 20_000,
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|p| (p.to_string(), Bytes::from(format!("meta-{p}"))))
                .collect(),
            require_known_member_id: true,
        }
    }

    /// First join of a new member: MEMBER_ID_REQUIRED, then a join that waits.
    fn join_new(g: &mut Group, protocols: &[&str], now: u64) -> (String, Vec<Event>) {
        let (outcome, events) = g.join(request("", protocols), now);
        let JoinOutcome::MemberIdRequired(id) = outcome else {
            panic!("first join without a member id must be MEMBER_ID_REQUIRED: {outcome:?}")
        };
        assert!(events.is_empty());
        let (outcome, events) = g.join(request(&id, protocols), now);
        assert_eq!(outcome, JoinOutcome::Waiting(id.clone()));
        (id, events)
    }

    fn completed(events: &[Event]) -> Vec<JoinResult> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::JoinCompleted(r) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    /// A stable group of one member `a`, generation 1.
    fn stable_one() -> (Group, String) {
        let mut g = Group::new("g", config());
        let (a, events) = join_new(&mut g, &["range"], 0);
        let done = completed(&events);
        assert_eq!(done.len(), 1);
        assert_eq!(
            (done[0].generation_id, done[0].leader.as_str()),
            (1, a.as_str())
        );
        assert_eq!(
            done[0].members.len(),
            1,
            "the leader receives the members' metadata"
        );
        let (out, _) = g.sync(&a, 1, vec![(a.clone(), Bytes::from_static(b"p0-3"))], 0);
        assert_eq!(out, SyncOutcome::Assignment(Bytes::from_static(b"p0-3")));
        assert_eq!(g.state, GroupState::Stable);
        (g, a)
    }

    #[test]
    fn single_member_joins_syncs_and_settles() {
        let (mut g, a) = stable_one();
        assert_eq!(g.heartbeat(&a, 1, 5_000), ErrorCode::None);
        assert_eq!(g.heartbeat(&a, 0, 5_000), ErrorCode::IllegalGeneration);
        assert_eq!(g.heartbeat("nobody", 1, 5_000), ErrorCode::UnknownMemberId);
        assert!(g.tick(9_000).is_empty(), "a member that heartbeats stays");
    }

    #[test]
    fn second_member_triggers_a_rebalance_and_gets_its_assignment() {
        let (mut g, a) = stable_one();
        let (b, events) = join_new(&mut g, &["range"], 1_000);
        assert!(completed(&events).is_empty(), "b waits for a to rejoin");
        assert_eq!(g.state, GroupState::PreparingRebalance);
        assert_eq!(g.heartbeat(&a, 1, 1_100), ErrorCode::RebalanceInProgress);
        let (_, events) = g.join(request(&a, &["range"]), 1_200);
        let done = completed(&events);
        assert_eq!(done.len(), 2, "both members complete the join");
        assert!(done.iter().all(|r| r.generation_id == 2 && r.leader == a));
        let leader_view = done.iter().find(|r| r.member_id == a).unwrap();
        assert_eq!(leader_view.members.len(), 2);
        assert!(done
            .iter()
            .find(|r| r.member_id == b)
            .unwrap()
            .members
            .is_empty());
        let (out, _) = g.sync(&b, 2, Vec::new(), 1_300);
        assert_eq!(out, SyncOutcome::Waiting);
        let assignments = vec![
            (a.clone(), Bytes::from_static(b"p0,p1")),
            (b.clone(), Bytes::from_static(b"p2,p3")),
        ];
        let (out, events) = g.sync(&a, 2, assignments, 1_400);
        assert_eq!(out, SyncOutcome::Assignment(Bytes::from_static(b"p0,p1")));
        assert_eq!(
            events,
            vec![Event::SyncCompleted {
                member_id: b.clone(),
                assignment: Bytes::from_static(b"p2,p3")
            }]
        );
        assert_eq!(g.state, GroupState::Stable);
    }

    /// G1 on the virtual clock: a member that stops heartbeating is removed once its session
    /// timeout passes, and the survivor owns everything after one rejoin.
    #[test]
    fn silent_member_expires_after_its_session_timeout() {
        let (mut g, a) = stable_one();
        let (b, _) = join_new(&mut g, &["range"], 0);
        g.join(request(&a, &["range"]), 0);
        g.sync(
            &a,
            2,
            vec![(a.clone(), Bytes::new()), (b.clone(), Bytes::new())],
            0,
        );
        for now in (1_000..=10_000).step_by(1_000) {
            assert_eq!(g.heartbeat(&a, 2, now), ErrorCode::None);
            assert!(
                g.tick(now).is_empty(),
                "b's session (10 s) has not run out at {now}"
            );
        }
        g.heartbeat(&a, 2, 10_001);
        g.tick(10_001);
        assert_eq!(
            g.member_ids(),
            vec![a.clone()],
            "b expired after 10 s of silence"
        );
        assert_eq!(g.heartbeat(&a, 2, 10_002), ErrorCode::RebalanceInProgress);
        let (_, events) = g.join(request(&a, &["range"]), 10_003);
        let done = completed(&events);
        assert_eq!((done.len(), done[0].generation_id), (1, 3));
    }

    #[test]
    fn members_that_miss_the_rebalance_deadline_are_removed() {
        let (mut g, a) = stable_one();
        let (b, _) = join_new(&mut g, &["range"], 0);
        g.join(request(&a, &["range"]), 0);
        g.sync(&a, 2, Vec::new(), 0);
        // c joins; a rejoins; b never does.
        let (c, _) = join_new(&mut g, &["range"], 1_000);
        g.join(request(&a, &["range"]), 1_100);
        // b keeps its session alive (and is told a rebalance is on) but never rejoins.
        for now in (2_000..21_000).step_by(1_000) {
            assert_eq!(g.heartbeat(&b, 2, now), ErrorCode::RebalanceInProgress);
            assert!(
                completed(&g.tick(now)).is_empty(),
                "deadline is 1000 + 20000, now {now}"
            );
        }
        assert!(completed(&g.tick(20_999)).is_empty());
        let done = completed(&g.tick(21_000));
        let mut ids: Vec<String> = done.iter().map(|r| r.member_id.clone()).collect();
        ids.sort();
        let mut want = vec![a.clone(), c.clone()];
        want.sort();
        assert_eq!(ids, want, "b missed the deadline");
        assert!(done.iter().all(|r| r.generation_id == 3));
    }

    #[test]
    fn protocol_choice_and_inconsistent_members() {
        let mut g = Group::new("g", config());
        let (a, _) = join_new(&mut g, &["cooperative-sticky", "range"], 0);
        let (_, events) = g.join(request(&a, &["cooperative-sticky", "range"]), 0);
        assert_eq!(completed(&events)[0].protocol_name, "cooperative-sticky");
        g.sync(&a, 1, Vec::new(), 0);
        let (b, _) = join_new(&mut g, &["range", "roundrobin"], 100);
        let (_, events) = g.join(request(&a, &["cooperative-sticky", "range"]), 200);
        let done = completed(&events);
        assert!(
            done.iter().all(|r| r.protocol_name == "range"),
            "the only common protocol"
        );
        assert!(done.iter().any(|r| r.member_id == b));
        let (out, _) = g.join(request("", &["roundrobin"]), 300);
        assert_eq!(
            out,
            JoinOutcome::Error(ErrorCode::InconsistentGroupProtocol)
        );
        let mut other_type = request("", &["range"]);
        other_type.protocol_type = "connect".into();
        assert_eq!(
            g.join(other_type, 300).0,
            JoinOutcome::Error(ErrorCode::InconsistentGroupProtocol)
        );
    }

    #[test]
    fn bad_joins_are_refused() {
        let mut g = Group::new("g", config());
        let mut short = request("", &["range"]);
        short.session_timeout_ms = 10;
        assert_eq!(
            g.join(short, 0).0,
            JoinOutcome::Error(ErrorCode::InvalidSessionTimeout)
        );
        assert_eq!(
            g.join(request("ghost", &["range"]), 0).0,
            JoinOutcome::Error(ErrorCode::UnknownMemberId)
        );
        let mut big = request("", &["range"]);
        big.protocols[0].1 = Bytes::from(vec![0u8; 2048]);
        assert_eq!(
            g.join(big, 0).0,
            JoinOutcome::Error(ErrorCode::InconsistentGroupProtocol)
        );
        for _ in 0..10 {
            assert!(matches!(
                g.join(request("", &["range"]), 0).0,
                JoinOutcome::MemberIdRequired(_)
            ));
        }
        assert_eq!(
            g.join(request("", &["range"]), 0).0,
            JoinOutcome::Error(ErrorCode::GroupMaxSizeReached)
        );
        // Pending member ids expire with their session timeout.
        g.tick(10_001);
        assert!(matches!(
            g.join(request("", &["range"]), 10_001).0,
            JoinOutcome::MemberIdRequired(_)
        ));
    }

    #[test]
    fn leave_rebalances_and_the_last_leave_empties_the_group() {
        let (mut g, a) = stable_one();
        let (b, _) = join_new(&mut g, &["range"], 0);
        g.join(request(&a, &["range"]), 0);
        g.sync(&a, 2, Vec::new(), 0);
        let (code, events) = g.leave(&b, 100);
        assert_eq!(code, ErrorCode::None);
        assert!(events.is_empty());
        assert_eq!(g.state, GroupState::PreparingRebalance);
        let (_, events) = g.join(request(&a, &["range"]), 200);
        assert_eq!(completed(&events)[0].generation_id, 3);
        let (code, _) = g.leave(&a, 300);
        assert_eq!(code, ErrorCode::None);
        g.tick(300);
        assert_eq!(g.state, GroupState::Empty);
        assert_eq!(g.leave(&a, 400).0, ErrorCode::UnknownMemberId);
    }

    #[test]
    fn settled_follower_rejoin_gets_the_current_generation() {
        let (mut g, a) = stable_one();
        let (b, _) = join_new(&mut g, &["range"], 0);
        g.join(request(&a, &["range"]), 0);
        g.sync(&a, 2, Vec::new(), 0);
        let (out, events) = g.join(request(&b, &["range"]), 500);
        assert_eq!(out, JoinOutcome::Waiting(b.clone()));
        let done = completed(&events);
        assert_eq!(
            (done.len(), done[0].generation_id),
            (1, 2),
            "no new generation"
        );
        assert_eq!(g.state, GroupState::Stable);
        // The leader rejoining does start a rebalance.
        g.join(request(&a, &["range"]), 600);
        assert_eq!(g.state, GroupState::PreparingRebalance);
    }
}
