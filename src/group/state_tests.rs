//! Tests of the rebalance state machine, driven by a virtual clock.
use super::*;
use crate::protocol::types::GenerationId;

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
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 20_000,
        protocol_type: "consumer".into(),
        protocols: protocols
            .iter()
            .map(|p| (p.to_string(), Bytes::from(format!("meta-{p}"))))
            .collect(),
        require_known_member_id: true,
        group_instance_id: None,
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
        (GenerationId(1), a.as_str())
    );
    assert_eq!(
        done[0].members.len(),
        1,
        "the leader receives the members' metadata"
    );
    let (out, _) = g.sync(
        &a,
        GenerationId(1),
        vec![(a.clone(), Bytes::from_static(b"p0-3"))],
        0,
    );
    assert_eq!(out, SyncOutcome::Assignment(Bytes::from_static(b"p0-3")));
    assert_eq!(g.state, GroupState::Stable);
    (g, a)
}

#[test]
fn single_member_joins_syncs_and_settles() {
    let (mut g, a) = stable_one();
    assert_eq!(g.heartbeat(&a, GenerationId(1), 5_000), GroupCode::Ok);
    assert_eq!(
        g.heartbeat(&a, GenerationId(0), 5_000),
        GroupCode::IllegalGeneration
    );
    assert_eq!(
        g.heartbeat("nobody", GenerationId(1), 5_000),
        GroupCode::UnknownMemberId
    );
    assert!(g.tick(9_000).is_empty(), "a member that heartbeats stays");
}

#[test]
fn second_member_triggers_a_rebalance_and_gets_its_assignment() {
    let (mut g, a) = stable_one();
    let (b, events) = join_new(&mut g, &["range"], 1_000);
    assert!(completed(&events).is_empty(), "b waits for a to rejoin");
    assert_eq!(g.state, GroupState::PreparingRebalance);
    assert_eq!(
        g.heartbeat(&a, GenerationId(1), 1_100),
        GroupCode::RebalanceInProgress
    );
    let (_, events) = g.join(request(&a, &["range"]), 1_200);
    let done = completed(&events);
    assert_eq!(done.len(), 2, "both members complete the join");
    assert!(done.iter().all(|r| r.generation_id.0 == 2 && r.leader == a));
    let leader_view = done.iter().find(|r| r.member_id == a).unwrap();
    assert_eq!(leader_view.members.len(), 2);
    assert!(done
        .iter()
        .find(|r| r.member_id == b)
        .unwrap()
        .members
        .is_empty());
    let (out, _) = g.sync(&b, GenerationId(2), Vec::new(), 1_300);
    assert_eq!(out, SyncOutcome::Waiting);
    let assignments = vec![
        (a.clone(), Bytes::from_static(b"p0,p1")),
        (b.clone(), Bytes::from_static(b"p2,p3")),
    ];
    let (out, events) = g.sync(&a, GenerationId(2), assignments, 1_400);
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
        GenerationId(2),
        vec![(a.clone(), Bytes::new()), (b.clone(), Bytes::new())],
        0,
    );
    for now in (1_000..=10_000).step_by(1_000) {
        assert_eq!(g.heartbeat(&a, GenerationId(2), now), GroupCode::Ok);
        assert!(
            g.tick(now).is_empty(),
            "b's session (10 s) has not run out at {now}"
        );
    }
    g.heartbeat(&a, GenerationId(2), 10_001);
    g.tick(10_001);
    assert_eq!(
        g.member_ids(),
        vec![a.clone()],
        "b expired after 10 s of silence"
    );
    assert_eq!(
        g.heartbeat(&a, GenerationId(2), 10_002),
        GroupCode::RebalanceInProgress
    );
    let (_, events) = g.join(request(&a, &["range"]), 10_003);
    let done = completed(&events);
    assert_eq!((done.len(), done[0].generation_id.0), (1, 3));
}

#[test]
fn members_that_miss_the_rebalance_deadline_are_removed() {
    let (mut g, a) = stable_one();
    let (b, _) = join_new(&mut g, &["range"], 0);
    g.join(request(&a, &["range"]), 0);
    g.sync(&a, GenerationId(2), Vec::new(), 0);
    // c joins; a rejoins; b never does.
    let (c, _) = join_new(&mut g, &["range"], 1_000);
    g.join(request(&a, &["range"]), 1_100);
    // b keeps its session alive (and is told a rebalance is on) but never rejoins.
    for now in (2_000..21_000).step_by(1_000) {
        assert_eq!(
            g.heartbeat(&b, GenerationId(2), now),
            GroupCode::RebalanceInProgress
        );
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
    assert!(done.iter().all(|r| r.generation_id.0 == 3));
    // The survivors joined 20 s ago with a 10 s session: completing the join restarted their
    // sessions, so the next tick keeps them.
    assert!(g.tick(21_100).is_empty());
    assert_eq!(
        g.member_ids().len(),
        2,
        "a long join phase does not expire its members"
    );
}

#[test]
fn protocol_choice_and_inconsistent_members() {
    let mut g = Group::new("g", config());
    let (a, _) = join_new(&mut g, &["cooperative-sticky", "range"], 0);
    let (_, events) = g.join(request(&a, &["cooperative-sticky", "range"]), 0);
    assert_eq!(completed(&events)[0].protocol_name, "cooperative-sticky");
    g.sync(&a, GenerationId(1), Vec::new(), 0);
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
        JoinOutcome::Error(GroupCode::InconsistentGroupProtocol)
    );
    let mut other_type = request("", &["range"]);
    other_type.protocol_type = "connect".into();
    assert_eq!(
        g.join(other_type, 300).0,
        JoinOutcome::Error(GroupCode::InconsistentGroupProtocol)
    );
}

#[test]
fn bad_joins_are_refused() {
    let mut g = Group::new("g", config());
    let mut short = request("", &["range"]);
    short.session_timeout_ms = 10;
    assert_eq!(
        g.join(short, 0).0,
        JoinOutcome::Error(GroupCode::InvalidSessionTimeout)
    );
    assert_eq!(
        g.join(request("ghost", &["range"]), 0).0,
        JoinOutcome::Error(GroupCode::UnknownMemberId)
    );
    let mut big = request("", &["range"]);
    big.protocols[0].1 = Bytes::from(vec![0u8; 2048]);
    assert_eq!(
        g.join(big, 0).0,
        JoinOutcome::Error(GroupCode::InconsistentGroupProtocol)
    );
    for _ in 0..10 {
        assert!(matches!(
            g.join(request("", &["range"]), 0).0,
            JoinOutcome::MemberIdRequired(_)
        ));
    }
    assert_eq!(
        g.join(request("", &["range"]), 0).0,
        JoinOutcome::Error(GroupCode::GroupMaxSizeReached)
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
    g.sync(&a, GenerationId(2), Vec::new(), 0);
    let (code, events) = g.leave(&b, 100);
    assert_eq!(code, GroupCode::Ok);
    assert!(events.is_empty());
    assert_eq!(g.state, GroupState::PreparingRebalance);
    let (_, events) = g.join(request(&a, &["range"]), 200);
    assert_eq!(completed(&events)[0].generation_id.0, 3);
    let (code, _) = g.leave(&a, 300);
    assert_eq!(code, GroupCode::Ok);
    g.tick(300);
    assert_eq!(g.state, GroupState::Empty);
    assert_eq!(g.leave(&a, 400).0, GroupCode::UnknownMemberId);
}

#[test]
fn settled_follower_rejoin_gets_the_current_generation() {
    let (mut g, a) = stable_one();
    let (b, _) = join_new(&mut g, &["range"], 0);
    g.join(request(&a, &["range"]), 0);
    g.sync(&a, GenerationId(2), Vec::new(), 0);
    let (out, events) = g.join(request(&b, &["range"]), 500);
    assert_eq!(out, JoinOutcome::Waiting(b.clone()));
    let done = completed(&events);
    assert_eq!(
        (done.len(), done[0].generation_id.0),
        (1, 2),
        "no new generation"
    );
    assert_eq!(g.state, GroupState::Stable);
    // The leader rejoining does start a rebalance.
    g.join(request(&a, &["range"]), 600);
    assert_eq!(g.state, GroupState::PreparingRebalance);
}

#[test]
fn static_member_restart_keeps_its_assignment_without_a_rebalance() {
    let mut g = Group::new("g", config());
    let static_request = |id: &str, instance: &str| JoinRequest {
        group_instance_id: Some(instance.to_string()),
        ..request(id, &["range"])
    };
    // Static members skip MEMBER_ID_REQUIRED.
    let (out, events) = g.join(static_request("", "i1"), 0);
    let JoinOutcome::Waiting(a) = out else {
        panic!("static first join waits: {out:?}")
    };
    assert_eq!(completed(&events)[0].generation_id.0, 1);
    g.sync(
        &a,
        GenerationId(1),
        vec![(a.clone(), Bytes::from_static(b"all"))],
        0,
    );
    assert_eq!(g.state, GroupState::Stable);
    // The process restarts: same instance id, no member id.
    let (out, events) = g.join(static_request("", "i1"), 5_000);
    let JoinOutcome::Waiting(a2) = out else {
        panic!("rejoin waits: {out:?}")
    };
    assert_ne!(a2, a, "a restarted static member gets a new member id");
    let done = completed(&events);
    assert_eq!(
        (done.len(), done[0].generation_id.0),
        (1, 1),
        "no new generation"
    );
    assert!(events.contains(&Event::JoinFailed {
        member_id: a.clone(),
        error: GroupCode::FencedInstanceId
    }));
    assert_eq!(g.state, GroupState::Stable);
    assert_eq!(
        g.assignment(&a2),
        Some(&Bytes::from_static(b"all")),
        "assignment kept"
    );
    assert_eq!(
        g.heartbeat(&a, GenerationId(1), 5_100),
        GroupCode::UnknownMemberId,
        "the old id is fenced"
    );
    assert_eq!(g.heartbeat(&a2, GenerationId(1), 5_100), GroupCode::Ok);
}

#[test]
fn a_leader_that_never_syncs_does_not_hold_the_group_forever() {
    let (mut g, a) = stable_one();
    let (b, _) = join_new(&mut g, &["range"], 0);
    g.join(request(&a, &["range"]), 0);
    assert_eq!(g.state, GroupState::CompletingRebalance);
    // b syncs and waits (parked members are not expired by their session); a never syncs.
    assert_eq!(
        g.sync(&b, GenerationId(2), Vec::new(), 100).0,
        SyncOutcome::Waiting
    );
    // a stays alive (heartbeats) but never sends SyncGroup.
    for now in (1_000..20_000).step_by(1_000) {
        assert_eq!(g.heartbeat(&a, GenerationId(2), now), GroupCode::Ok);
        assert!(g.tick(now).is_empty(), "b is parked in SyncGroup at {now}");
    }
    let events = g.tick(20_000);
    assert!(
        events.contains(&Event::SyncFailed {
            member_id: b.clone(),
            error: GroupCode::RebalanceInProgress
        }),
        "b is told to rejoin: {events:?}"
    );
    assert_eq!(
        g.member_ids(),
        vec![b.clone()],
        "the silent leader was removed at the sync deadline"
    );
    assert_eq!(g.state, GroupState::PreparingRebalance);
}

#[test]
fn rejoining_releases_a_parked_sync() {
    let (mut g, a) = stable_one();
    let (b, _) = join_new(&mut g, &["range"], 0);
    g.join(request(&a, &["range"]), 0);
    assert_eq!(
        g.sync(&b, GenerationId(2), Vec::new(), 100).0,
        SyncOutcome::Waiting
    );
    let (_, events) = g.join(request(&b, &["range", "roundrobin"]), 200);
    assert!(events.contains(&Event::SyncFailed {
        member_id: b.clone(),
        error: GroupCode::RebalanceInProgress
    }));
}

/// A client id of 32,767 bytes (the wire's limit) makes a member id JoinGroup v0-v5 can still
/// encode (their strings carry an i16 length).
#[test]
fn member_ids_stay_encodable_whatever_the_client_id() {
    let mut g = Group::new("g", config());
    let mut long = request("", &["range"]);
    long.client_id = "é".repeat(16_383) + "x";
    let (outcome, _) = g.join(long, 0);
    let JoinOutcome::MemberIdRequired(id) = outcome else {
        panic!("expected MEMBER_ID_REQUIRED: {outcome:?}")
    };
    assert!(
        id.len() <= MEMBER_ID_CLIENT_PREFIX_BYTES_MAX + 33,
        "{} bytes",
        id.len()
    );
    assert!(id.len() < i16::MAX as usize);
    assert!(id.starts_with('é'));
}
