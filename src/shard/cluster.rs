//! This broker's part in a multi-broker cluster, on the controller shard: its member of the
//! metadata quorum; where a change goes (this broker's controller when it is the active one,
//! the Raft leader, otherwise forwarded to that broker's controller listener, as KIP-590
//! forwards); the active controller's duties (the cluster id, broker sessions and fencing,
//! partitions a predecessor left unassigned); and this broker's own heartbeat. Runs on: the
//! controller shard (shard 0). Invariants: only the Raft leader proposes (a forwarded change
//! that reaches a broker which is no longer the leader is refused, and the sender retries at
//! the new one); heartbeats and session checks run in openraft's latency-sensitive queue; a
//! broker that forwarded a change answers its client only once it has applied the change
//! itself (bounded), so the client's next request here sees it.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;

use super::messages::{QuorumStatus, ShardMessage};
use super::metadata::ControllerService;
use super::Shard;
use crate::cluster::controller::{ControllerAnswer, ControllerError, ControllerOp};
use crate::cluster::raft::QuorumMember;
use crate::cluster::sessions::{SessionTimeouts, Sessions};

/// How often brokers heartbeat and the active controller checks sessions.
pub const HEARTBEAT_INTERVAL_MS: u64 = 250;
/// A broker whose process is gone (no heartbeat, no Raft answer) is fenced after this long.
pub const DEAD_BROKER_MS: u64 = 1500;
/// The active controller that heard no quorum for this long restarts every session (missed
/// heartbeats while the quorum was lost do not count).
const QUORUM_SILENCE_MS: u64 = 1000;
/// How long a broker that forwarded a change waits to apply it itself before answering.
const APPLY_AFTER_FORWARD_MS: u64 = 5000;
/// Voters stand in turn for a controller whose process is gone, this long apart, lowest node
/// id first (the first may not know the controller died: restarted a moment ago, it has not
/// heard of that controller; or it is down too).
const SUCCESSOR_WAIT_MS: u64 = 500;
/// A controller whose appends (heartbeats every 250 ms) reached this member more recently
/// than this is alive, whatever refused a connection to it (a wrong address, a firewall).
const LEADER_SILENCE_MS: u64 = 400;
/// The quorum's status goes to the other shards at once when the leader or this member's
/// role changes, and at most this often for its committed and applied indexes.
const PUBLISH_INTERVAL_MS: u64 = 1000;

/// The quorum member and the cluster state of this broker's controller shard.
pub struct QuorumRole {
    pub member: QuorumMember,
    pub node_id: i32,
    voters: BTreeMap<u64, SocketAddr>,
    pub cluster_id: String,
    /// This incarnation's broker epoch.
    pub epoch: i64,
    timeouts: SessionTimeouts,
    sessions: RefCell<Sessions>,
    /// Whether this broker was the active controller at the last check.
    leading: Cell<bool>,
    /// The active controller whose process this broker found gone, its term, and when this
    /// broker first found it gone.
    gone: Cell<Option<(i32, u64, Duration)>>,
    /// When the quorum's status was last sent to the other shards.
    published_at: Cell<Duration>,
}

impl QuorumRole {
    pub fn new(
        member: QuorumMember,
        cluster: &crate::config::ClusterConfig,
        epoch: i64,
        session_timeout_ms: u64,
    ) -> QuorumRole {
        QuorumRole {
            member,
            node_id: cluster.node_id as i32,
            voters: cluster.voters.clone(),
            cluster_id: cluster.cluster_id(),
            epoch,
            timeouts: SessionTimeouts {
                fast_ms: DEAD_BROKER_MS,
                session_ms: session_timeout_ms,
            },
            sessions: RefCell::new(Sessions::default()),
            leading: Cell::new(false),
            gone: Cell::new(None),
            published_at: Cell::new(Duration::ZERO),
        }
    }

    /// The active controller (the Raft leader) as this member knows it.
    pub fn leader(&self) -> Option<i32> {
        let metrics = self.member.raft.metrics();
        let leader = metrics.borrow_watched().current_leader;
        leader.map(|l| l as i32)
    }

    pub fn is_leader(&self) -> bool {
        self.leader() == Some(self.node_id)
    }

    pub fn heard(&self, node_id: i32, now: Duration) {
        self.sessions.borrow_mut().heard(node_id, now);
    }

    /// Raft's metrics as this member sees them (for `cluster info` and `/metrics`).
    pub fn metrics(&self) -> crate::cluster::raft::Metrics {
        self.member.raft.metrics().borrow_watched().clone()
    }

    /// Runs `op` at the active controller, waiting up to `wait_ms` for one to be elected or
    /// reached.
    pub async fn run_anywhere(
        &self,
        shard: &Rc<Shard>,
        service: &ControllerService,
        op: ControllerOp,
        wait_ms: u64,
    ) -> ControllerAnswer {
        let env = &shard.env;
        let deadline = env.monotonic() + Duration::from_millis(wait_ms);
        let mut why = "no controller is elected".to_string();
        loop {
            match self.leader() {
                Some(l) if l == self.node_id => {
                    let answer = service.run_local(shard, op.clone()).await;
                    if !moved(&answer) || env.monotonic() >= deadline {
                        return answer;
                    }
                    why = "the controller moved during the change".into();
                }
                Some(l) => match self.forward_to(shard, l, &op, wait_ms).await {
                    Ok(answer) if moved(&answer) => {
                        why = format!("node {l} is no longer the controller");
                    }
                    Ok(answer) => {
                        let applied = answer.iter().filter_map(|a| a.as_ref().ok()).max();
                        if let Some(index) =
                            applied.filter(|i| op.answers_are_indexes() && **i >= 0)
                        {
                            let wait = APPLY_AFTER_FORWARD_MS;
                            service.wait_applied_for(env, *index as u64, wait).await;
                        }
                        return answer;
                    }
                    Err(e) => why = e,
                },
                None => {}
            }
            if env.monotonic() >= deadline {
                let e = ControllerError::NotController(format!(
                    "no active controller within {wait_ms} ms: {why}"
                ));
                return vec![Err(e); op.len()];
            }
            env.sleep(Duration::from_millis(100)).await;
        }
    }

    /// Forwards `op` to node `leader`'s controller listener. Given up if `leader` stops leading
    /// meanwhile (a stopped controller would hold the change until the forward's timeout), and,
    /// for a heartbeat, after `wait_ms`: the next heartbeat goes to whoever leads by then, or
    /// the new controller would fence this broker. A change may take long to commit and apply
    /// (a topic of 10,000 partitions), so it gets the forward's full timeout.
    async fn forward_to(
        &self,
        shard: &Rc<Shard>,
        leader: i32,
        op: &ControllerOp,
        wait_ms: u64,
    ) -> Result<ControllerAnswer, String> {
        use crate::cluster::raft::network::{forward, ForwardError, FORWARD_TIMEOUT_MS};
        let env = &shard.env;
        let Some(addr) = self.voters.get(&(leader as u64)) else {
            return Err(format!("node {leader} is not a voter this broker knows"));
        };
        let forward_ms = match op {
            ControllerOp::BrokerHeartbeat { .. } => wait_ms,
            _ => FORWARD_TIMEOUT_MS,
        };
        let deposed = async {
            while self.leader() == Some(leader) {
                env.sleep(Duration::from_millis(100)).await;
            }
            Err(ForwardError {
                why: format!("node {leader} stopped leading while the change was forwarded"),
                refused: false,
            })
        };
        let sent = forward(env, *addr, op.clone(), forward_ms);
        match futures_lite::future::or(sent, deposed).await {
            Ok(answer) => Ok(answer),
            Err(e) => {
                if e.refused {
                    self.leader_gone(shard, leader).await;
                }
                Err(format!("forwarding to node {leader}: {e}"))
            }
        }
    }

    /// The active controller's process is gone: its controller listener refused a connection
    /// and its appends stopped reaching this member. Waiting for Raft to notice would take
    /// openraft's leader lease (`election_timeout_max`) and then an election timeout, 2.5-3 s.
    /// Instead the voters stand in turn, lowest node id first, `SUCCESSOR_WAIT_MS` apart, in
    /// the election a leader transfer starts, which voters grant despite their lease; until
    /// its turn, a voter drops its own lease. Safe: votes and logs decide as always (a
    /// candidate with a shorter log still loses), and the lease serves only lease-based reads,
    /// which tusk does not use (reads confirm leadership by ReadIndex). A live controller
    /// sends appends, so it is never deposed this way.
    async fn leader_gone(&self, shard: &Rc<Shard>, leader: i32) {
        let m = self.metrics();
        if m.current_leader != Some(leader as u64) || m.state == openraft::ServerState::Leader {
            return;
        }
        let silent_ms = Duration::from_millis(LEADER_SILENCE_MS);
        if self.member.contact.silence().is_some_and(|d| d < silent_ms) {
            return;
        }
        let now = shard.env.monotonic();
        if let Some(b) = shard.image().brokers.get(&leader) {
            self.sessions.borrow_mut().refused(leader, b.epoch, now);
        }
        let first_seen = match self.gone.get() {
            Some((l, term, at)) if l == leader && term == m.current_term => at,
            _ => {
                self.gone.set(Some((leader, m.current_term, now)));
                now
            }
        };
        let me = self.node_id as u64;
        let mut standing = self
            .voters
            .keys()
            .copied()
            .filter(|id| *id != leader as u64);
        let Some(successor) = standing.clone().next() else {
            return;
        };
        let rank = standing.position(|id| id == me).unwrap_or(0) as u64;
        let waited = now.saturating_sub(first_seen);
        let to = if waited >= Duration::from_millis(rank * SUCCESSOR_WAIT_MS) {
            me
        } else {
            successor
        };
        if first_seen == now || to == me {
            tracing::info!(
                leader,
                candidate = to,
                "the active controller's process is gone: electing without waiting out its lease"
            );
        }
        let request = openraft::raft::TransferLeaderRequest::new(m.vote, to, None);
        match self.member.raft.handle_transfer_leader(request).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "leader transfer not taken"),
            Err(e) => tracing::warn!(error = %e, "the metadata quorum member stopped"),
        }
    }

    /// How long since Raft last heard from voter `node_id` (this member leading).
    fn raft_silence(&self, node_id: i32) -> Option<Duration> {
        let metrics = self.member.raft.metrics();
        let m = metrics.borrow_watched();
        let acked = m.heartbeat.as_ref()?.get(&(node_id as u64))?.as_ref()?;
        Some(crate::runtime::raft::elapsed_since(**acked))
    }

    fn quorum_silence(&self) -> Option<Duration> {
        let metrics = self.member.raft.metrics();
        let m = metrics.borrow_watched();
        let acked = m.last_quorum_acked.as_ref()?;
        Some(crate::runtime::raft::elapsed_since(**acked))
    }
}

/// Whether an answer says the change reached a broker that no longer leads.
fn moved(answer: &ControllerAnswer) -> bool {
    answer
        .iter()
        .any(|a| matches!(a, Err(ControllerError::NotController(_))))
}

/// Answers changes forwarded by other brokers, for as long as the broker runs: only while
/// this broker is the active controller.
pub fn install_forward_handler(shard: &Rc<Shard>) {
    let Some(role) = shard.controller.as_ref().and_then(|c| c.quorum.as_ref()) else {
        return;
    };
    let me = shard.clone();
    let handler: crate::cluster::raft::network::ControllerHandler = Rc::new(move |op| {
        let shard = me.clone();
        Box::pin(async move {
            let service = shard.controller.as_ref().expect("the controller shard");
            let role = service.quorum.as_ref().expect("a cluster");
            if !role.is_leader() {
                let e = ControllerError::NotController(format!(
                    "node {} is not the active controller",
                    role.node_id
                ));
                return vec![Err(e); op.len()];
            }
            // Its own task: a forwarding broker that goes away cannot cancel the change.
            let (tx, rx) = futures_channel::oneshot::channel();
            let s = shard.clone();
            crate::runtime::io::spawn(async move {
                let service = s.controller.as_ref().expect("the controller shard");
                let _ = tx.send(service.run_local(&s, op).await);
            });
            rx.await.unwrap_or_default()
        })
    });
    *role.member.handler.borrow_mut() = Some(handler);
}

/// The active controller's duties and this broker's heartbeat, every
/// `HEARTBEAT_INTERVAL_MS`, in openraft's latency queue.
pub fn spawn_cluster_tasks(shard: &Rc<Shard>) {
    if shard
        .controller
        .as_ref()
        .and_then(|c| c.quorum.as_ref())
        .is_none()
    {
        return;
    }
    let s = shard.clone();
    crate::runtime::raft::spawn_urgent(async move {
        loop {
            s.env
                .sleep(Duration::from_millis(HEARTBEAT_INTERVAL_MS))
                .await;
            lead_once(&s).await;
        }
    });
    let s = shard.clone();
    crate::runtime::raft::spawn_urgent(async move {
        loop {
            heartbeat_once(&s).await;
            s.env
                .sleep(Duration::from_millis(HEARTBEAT_INTERVAL_MS))
                .await;
        }
    });
}

async fn lead_once(shard: &Rc<Shard>) {
    let service = shard.controller.as_ref().expect("the controller shard");
    let role = service.quorum.as_ref().expect("a cluster");
    publish_status(shard, role).await;
    if !role.is_leader() {
        role.leading.set(false);
        return;
    }
    let now = shard.env.monotonic();
    let became = !role.leading.replace(true);
    let lost_quorum = role
        .quorum_silence()
        .is_some_and(|d| d > Duration::from_millis(QUORUM_SILENCE_MS));
    if became || lost_quorum {
        tracing::info!(
            node_id = role.node_id,
            became,
            "active controller: broker sessions start now"
        );
        role.sessions.borrow_mut().restart(now);
    }
    // A broker whose listener refused the Raft connection is gone: fenced now, not after
    // its session (its partitions fail over ~1 s sooner).
    let image = service.controller_image();
    for (peer, at) in role.member.refusals.take() {
        let node = peer as i32;
        if let Some(b) = image.brokers.get(&node).filter(|b| !b.fenced) {
            role.sessions.borrow_mut().refused(node, b.epoch, at);
        }
    }
    let expired = role
        .sessions
        .borrow()
        .expired(&image, role.node_id, now, role.timeouts, |n| {
            role.raft_silence(n)
        });
    service.lead(&role.cluster_id, &expired).await;
}

/// Reports the quorum's state to `/metrics`, and to every shard (Metadata names the controller
/// from it) when the leader or this member's role changed, or at most every
/// `PUBLISH_INTERVAL_MS` when only its indexes moved.
async fn publish_status(shard: &Rc<Shard>, role: &QuorumRole) {
    use std::sync::atomic::Ordering::Relaxed;
    let m = role.metrics();
    let status = QuorumStatus {
        leader: m.current_leader.map_or(-1, |l| l as i32),
        role: match m.state {
            openraft::ServerState::Leader => 3,
            openraft::ServerState::Candidate => 2,
            _ => 1,
        },
        term: m.current_term,
        committed: m.local_committed.map_or(-1, |l| l.index as i64),
        applied: m.last_applied.map_or(-1, |l| l.index as i64),
    };
    let image = shard.image();
    let live = image.live_brokers().count() as i64;
    crate::metrics::with(|g| {
        let q = &g.quorum;
        q.role.store(status.role, Relaxed);
        q.leader.store(status.leader as i64, Relaxed);
        q.term.store(status.term as i64, Relaxed);
        q.committed_index.store(status.committed, Relaxed);
        q.applied_index.store(status.applied, Relaxed);
        q.brokers_live.store(live, Relaxed);
        q.brokers_fenced
            .store(image.brokers.len() as i64 - live, Relaxed);
    });
    let last = shard.quorum.get();
    let now = shard.env.monotonic();
    let changed_hands = (last.leader, last.role) != (status.leader, status.role);
    let due =
        now.saturating_sub(role.published_at.get()) >= Duration::from_millis(PUBLISH_INTERVAL_MS);
    if last == status || !changed_hands && !due {
        return;
    }
    shard.quorum.set(status);
    role.published_at.set(now);
    for other in (0..shard.shard_count).filter(|s| *s != shard.id.0) {
        let message = ShardMessage::Quorum(status);
        shard
            .send(crate::protocol::types::ShardId(other), message)
            .await;
    }
}

async fn heartbeat_once(shard: &Rc<Shard>) {
    let service = shard.controller.as_ref().expect("the controller shard");
    let role = service.quorum.as_ref().expect("a cluster");
    let op = ControllerOp::BrokerHeartbeat {
        node_id: role.node_id,
        epoch: role.epoch,
        host: shard.config.advertise_host.clone(),
        port: shard.config.advertise_port,
    };
    let answer = role
        .run_anywhere(shard, service, op, 2 * HEARTBEAT_INTERVAL_MS)
        .await;
    match answer.first() {
        Some(Err(ControllerError::StaleBrokerEpoch(why))) => {
            tracing::error!(reason = %why, "this broker's incarnation was replaced by a newer one");
        }
        Some(Err(e)) => tracing::debug!(error = %e.message(), "heartbeat not answered"),
        _ => {}
    }
}
