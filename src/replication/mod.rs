//! Replication: one `Replica` per partition between the shard layer and storage. It knows the
//! partition's role on this broker (leader, follower, offline, or the only copy of a one-node
//! cluster), takes a leader's produce (`produce(batch, acks) → completion`), checks and
//! records its followers' fetches, and decides when the high watermark moves. Runs on: the
//! partition's owner shard.
//!
//! Invariants:
//! - The high watermark is min(leader's `flushed`, each in-sync follower's durable log end):
//!   the ISR committed in the metadata, plus members the leader asked to add (Kafka's maximal
//!   ISR: a follower counts from the moment the leader proposes it, so a record is never
//!   acknowledged without a replica that may be elected). A follower's position is the offset
//!   it fetches from, which it sends only once everything below is fdatasynced.
//! - acks=all completes once the high watermark passes the batch, while this broker still
//!   leads at the epoch it appended in; a change of role fails every waiting produce first
//!   (NOT_LEADER_OR_FOLLOWER), so a batch a new leader truncated is never acknowledged.
//! - A follower's high watermark is its leader's, capped by what it has durably.

pub mod fetcher;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use futures_channel::oneshot;

use crate::protocol::types::{LeaderEpoch, Offset};
use crate::runtime::env::Env;
use crate::storage::{AppendOutcome, Partition, PartitionHandle};

/// Kafka's `acks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// 0: no answer is sent, nothing is awaited.
    None,
    /// 1: answered once the leader has the batch durably.
    Leader,
    /// -1: answered once every in-sync replica has it durably.
    All,
}

impl Acks {
    /// The wire value's meaning; `None` for values Kafka refuses (INVALID_REQUIRED_ACKS).
    pub fn from_wire(acks: i16) -> Option<Acks> {
        match acks {
            0 => Some(Acks::None),
            1 => Some(Acks::Leader),
            -1 => Some(Acks::All),
            _ => None,
        }
    }
}

/// Why a replica refused or failed work (the server layer picks the Kafka error code).
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    Storage(crate::storage::Error),
    /// This broker does not lead the partition (now, or any more).
    NotLeader,
    /// acks=all while the ISR is smaller than `min.insync.replicas`.
    NotEnoughReplicas,
    /// The ISR shrank below `min.insync.replicas` while an acks=all batch waited.
    NotEnoughReplicasAfterAppend,
    /// acks=all did not complete within the request's timeout (nothing is acknowledged).
    TimedOut,
    /// A request that names an older leader epoch than this leader's.
    FencedLeaderEpoch,
    /// A request that names a newer leader epoch than this broker knows.
    UnknownLeaderEpoch,
    /// A replica fetch from a broker that holds no replica of the partition.
    NotAReplica,
}

impl From<crate::storage::Error> for Error {
    fn from(e: crate::storage::Error) -> Self {
        Error::Storage(e)
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Storage(e) => write!(f, "{e}"),
            other => write!(f, "{other:?}"),
        }
    }
}

/// What a produce waits for before it is answered: the leader's own write (one node, or
/// acks=1: the storage's completion, nothing allocated), or the in-sync replicas.
pub enum Done {
    Durable(crate::storage::Completion),
    Replicated(Pin<Box<dyn Future<Output = Result<(), Error>>>>),
}

impl Done {
    pub async fn wait(self) -> Result<(), Error> {
        match self {
            Done::Durable(rx) => match rx.await {
                Ok(result) => result.map_err(Error::Storage),
                Err(_) => Err(Error::Storage(crate::storage::Error::Failed(
                    "the writer went away".into(),
                ))),
            },
            Done::Replicated(wait) => wait.await,
        }
    }
}

/// What a produce did.
pub enum Produced {
    /// Appended at `base_offset`; `done` resolves when `acks` is satisfied (absent for acks=0).
    Appended {
        base_offset: Offset,
        done: Option<Done>,
    },
    /// A retried idempotent batch already in the log, at `base_offset`: answer once it is
    /// durable (`Replica::wait_durable`).
    Duplicate { base_offset: Offset },
}

/// The partition's place in the cluster, as the metadata image says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleView {
    /// This broker's id.
    pub me: i32,
    /// The leader (-1: none).
    pub leader: i32,
    pub epoch: LeaderEpoch,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// `min.insync.replicas`, already clamped to the replication factor.
    pub min_insync: usize,
}

/// A follower's progress as its leader sees it.
#[derive(Debug, Clone, Copy)]
struct Progress {
    /// Its log end, durable (the offset it last fetched from; -1 until it fetches).
    end: Offset,
    /// When it was last caught up with this leader's log end (Kafka's lastCaughtUpTime).
    caught_up_at: Duration,
    /// When it last fetched and this leader's log end then.
    last_fetch: Option<(Duration, Offset)>,
}

#[derive(Debug)]
struct Leading {
    view: RoleView,
    /// This leader's log end when it began to lead: a follower joins the ISR only once it has
    /// everything below it (its high watermark may lag what the previous leader acknowledged).
    start: Offset,
    followers: BTreeMap<i32, Progress>,
    /// An ISR this leader asked the controller for, not yet in the metadata, and when.
    pending_isr: Option<(Vec<i32>, Duration)>,
}

#[derive(Debug)]
enum Role {
    /// The only copy (a one-node cluster): the high watermark follows `flushed`.
    SingleNode,
    Leader(Box<Leading>),
    /// Another broker leads (or nobody does: `leader` -1).
    Follower(RoleView),
}

/// A partition's replica on this broker.
pub struct Replica {
    log: PartitionHandle,
    env: Env,
    role: RefCell<Role>,
    /// Produces waiting for acks=all, failed when the role or epoch changes.
    epoch_watch: RefCell<Vec<oneshot::Sender<()>>>,
    /// The ISR's size in the metadata (for the check when acks=all completes).
    isr_size: Rc<Cell<usize>>,
    /// When (and at which leader epoch) this replica last asked to hand a failed log's
    /// leadership over.
    resigned: Cell<Option<(LeaderEpoch, Duration)>>,
}

/// How long an ISR change may wait for the metadata before the leader asks again.
const PENDING_ISR_MS: u64 = 5_000;
/// How often a leader with a failed log asks again to hand its leadership over.
const RESIGN_RETRY_MS: u64 = 2_000;

impl Replica {
    /// The replica of a one-node cluster: acks=1 and acks=all both mean "durable here".
    pub fn single_node(log: PartitionHandle, env: Env) -> Replica {
        log.borrow_mut().set_hwm_cap(None);
        Replica::with_role(log, env, Role::SingleNode)
    }

    /// A replica of a cluster, in the role `view` gives it.
    pub fn clustered(log: PartitionHandle, env: Env, view: RoleView) -> Replica {
        // Recovery puts the high watermark at the log's end, but nothing proves that tail
        // reached the rest of the ISR (without a checkpoint of the high watermark): it starts
        // at the log start and the leader's answers, or as leader its followers' positions,
        // raise it. (Found by the simulation, seed 2: a restarted follower served a tail that
        // its new leader's history replaced.)
        {
            let mut log = log.borrow_mut();
            let start = log.log_start();
            log.restart_high_watermark(start);
            log.set_hwm_cap(Some(start));
        }
        // Starts as a follower of nobody at no epoch, so that `set_role` always applies
        // `view` (a view naming this broker leader must make it lead at once).
        let nobody = RoleView {
            leader: -1,
            epoch: LeaderEpoch(-1),
            ..follower_view(&view)
        };
        let replica = Replica::with_role(log, env, Role::Follower(nobody));
        replica.set_role(view);
        replica
    }

    fn with_role(log: PartitionHandle, env: Env, role: Role) -> Replica {
        Replica {
            log,
            env,
            role: RefCell::new(role),
            epoch_watch: RefCell::new(Vec::new()),
            isr_size: Rc::new(Cell::new(1)),
            resigned: Cell::new(None),
        }
    }

    pub fn log(&self) -> &PartitionHandle {
        &self.log
    }

    /// The role as the metadata now says: leading (from a new epoch on, the log stamps it),
    /// following, or offline. A change of role or epoch fails the produces waiting for
    /// acks=all.
    pub fn set_role(&self, view: RoleView) {
        let now = self.env.monotonic();
        self.isr_size.set(view.isr.len());
        let mut role = self.role.borrow_mut();
        let (changed, leads) = match &mut *role {
            Role::SingleNode => return,
            Role::Leader(l) if view.leader == view.me && l.view.epoch == view.epoch => {
                // Same leadership: the ISR or replicas may have changed.
                if l.pending_isr.as_ref().is_some_and(|(p, _)| *p == view.isr) {
                    l.pending_isr = None;
                }
                // A follower that left the ISR proves its position again by fetching (it
                // may have restarted with less) before it may rejoin.
                for r in l.view.isr.iter().filter(|r| !view.isr.contains(r)) {
                    if let Some(p) = l.followers.get_mut(r) {
                        p.end = Offset(-1);
                        p.last_fetch = None;
                    }
                }
                for r in view.replicas.iter().filter(|r| **r != view.me) {
                    l.followers.entry(*r).or_insert(Progress {
                        end: Offset(-1),
                        caught_up_at: now,
                        last_fetch: None,
                    });
                }
                l.view = view.clone();
                (false, true)
            }
            Role::Follower(f) if *f == follower_view(&view) => (false, false),
            _ => (true, view.leader == view.me),
        };
        if !changed {
            if leads {
                drop(role);
                self.update_hwm();
            }
            return;
        }
        for tx in self.epoch_watch.borrow_mut().drain(..) {
            let _ = tx.send(());
        }
        if leads {
            let mut log = self.log.borrow_mut();
            if view.epoch > log.leader_epoch() {
                log.set_leader_epoch(view.epoch);
            }
            drop(log);
            let followers = view
                .replicas
                .iter()
                .filter(|r| **r != view.me)
                .map(|r| {
                    let p = Progress {
                        end: Offset(-1),
                        // A follower gets the full lag time to fetch from its new leader.
                        caught_up_at: now,
                        last_fetch: None,
                    };
                    (*r, p)
                })
                .collect();
            tracing::info!(partition = %self.log.borrow().tp, epoch = view.epoch.0,
                isr = ?view.isr, "leading");
            let start = self.log.borrow().log_end();
            *role = Role::Leader(Box::new(Leading {
                view,
                start,
                followers,
                pending_isr: None,
            }));
            drop(role);
            self.update_hwm();
        } else {
            // Until the new leader says otherwise, the high watermark stays where it is.
            let mut log = self.log.borrow_mut();
            let hwm = log.high_watermark();
            log.set_hwm_cap(Some(hwm));
            drop(log);
            *role = Role::Follower(follower_view(&view));
        }
    }

    /// Whom this replica follows and at which epoch (`None`: it leads, or is the only copy).
    pub fn following(&self) -> Option<(i32, LeaderEpoch)> {
        match &*self.role.borrow() {
            Role::Follower(v) => Some((v.leader, v.epoch)),
            _ => None,
        }
    }

    /// The leader epoch this replica leads at, if it leads.
    pub fn leading_epoch(&self) -> Option<LeaderEpoch> {
        match &*self.role.borrow() {
            Role::Leader(l) => Some(l.view.epoch),
            Role::SingleNode => Some(self.log.borrow().leader_epoch()),
            Role::Follower(_) => None,
        }
    }

    /// Appends a producer's batch as the leader. Never awaits (the connection's order of
    /// appends is kept by calling this in order). `timeout` bounds an acks=all wait.
    pub fn produce(
        &self,
        payload: &[u8],
        acks: Acks,
        timeout: Duration,
    ) -> Result<Produced, Error> {
        let min_insync = match &*self.role.borrow() {
            Role::SingleNode => None,
            Role::Follower(_) => return Err(Error::NotLeader),
            Role::Leader(l) => {
                if acks == Acks::All && l.view.isr.len() < l.view.min_insync {
                    return Err(Error::NotEnoughReplicas);
                }
                Some(l.view.min_insync)
            }
        };
        let outcome = Partition::append(&self.log, payload)?;
        Ok(match outcome {
            AppendOutcome::Appended {
                base_offset,
                durable,
            } => {
                let done: Option<Done> = match (acks, min_insync) {
                    (Acks::None, _) => None,
                    // On one node (or acks=1), durable here is what is asked.
                    (_, None) | (Acks::Leader, _) => Some(Done::Durable(durable)),
                    (Acks::All, Some(min_insync)) => {
                        let last = Offset(self.log.borrow().log_end().0 - 1);
                        let durable = Done::Durable(durable).wait();
                        Some(self.all_in_sync(durable, last, min_insync, timeout))
                    }
                };
                Produced::Appended { base_offset, done }
            }
            AppendOutcome::Duplicate { base_offset } => Produced::Duplicate { base_offset },
        })
    }

    /// acks=all: the leader's own durability, then the high watermark past `last`, unless the
    /// role changes or `timeout` passes first.
    fn all_in_sync(
        &self,
        durable: impl Future<Output = Result<(), Error>> + 'static,
        last: Offset,
        min_insync: usize,
        timeout: Duration,
    ) -> Done {
        let mut lost = self.watch_epoch();
        let log = self.log.clone();
        let env = self.env.clone();
        let isr_size = self.isr_size.clone();
        Done::Replicated(Box::pin(async move {
            let wait = async {
                durable.await?;
                hwm_past(&log, last, &mut lost).await
            };
            match env.timeout(timeout, wait).await {
                // Kafka's after-append check: the ISR shrank below the minimum meanwhile.
                Some(Ok(())) if isr_size.get() < min_insync => {
                    Err(Error::NotEnoughReplicasAfterAppend)
                }
                Some(result) => result,
                None => Err(Error::TimedOut),
            }
        }))
    }

    /// A receiver that resolves when the role or epoch changes. Finished waits are pruned
    /// as the list grows, so a steady leader keeps only the live ones.
    fn watch_epoch(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let mut watch = self.epoch_watch.borrow_mut();
        if watch.len() >= 64 && watch.len().is_power_of_two() {
            watch.retain(|t| !t.is_canceled());
        }
        watch.push(tx);
        rx
    }

    /// Resolves once `offset` is below the high watermark (a retried batch's original), while
    /// this replica leads at the epoch it started waiting in (else NOT_LEADER_OR_FOLLOWER: the
    /// original may have been truncated by a new leader) and within `timeout`.
    pub fn wait_durable(&self, offset: Offset, timeout: Duration) -> Done {
        let log = self.log.clone();
        match &*self.role.borrow() {
            Role::SingleNode => {
                return Done::Replicated(Box::pin(async move {
                    Partition::wait_durable(&log, offset)
                        .await
                        .map_err(Error::Storage)
                }))
            }
            Role::Follower(_) => {
                return Done::Replicated(Box::pin(async { Err(Error::NotLeader) }))
            }
            Role::Leader(_) => {}
        }
        let mut lost = self.watch_epoch();
        let env = self.env.clone();
        Done::Replicated(Box::pin(async move {
            let wait = hwm_past(&log, offset, &mut lost);
            env.timeout(timeout, wait)
                .await
                .unwrap_or(Err(Error::TimedOut))
        }))
    }

    /// A follower's fetch at `offset`, checked and recorded: `Ok(None)` to read on,
    /// `Ok(Some((epoch, end)))` when its log diverges from this leader's (KIP-320: it
    /// truncates to `end` and fetches again).
    pub fn follower_fetch(
        &self,
        follower: i32,
        offset: Offset,
        current_epoch: LeaderEpoch,
        last_fetched_epoch: LeaderEpoch,
    ) -> Result<Option<(LeaderEpoch, Offset)>, Error> {
        let now = self.env.monotonic();
        {
            let mut role = self.role.borrow_mut();
            let Role::Leader(l) = &mut *role else {
                return Err(Error::NotLeader);
            };
            if current_epoch.0 >= 0 && current_epoch < l.view.epoch {
                return Err(Error::FencedLeaderEpoch);
            }
            if current_epoch > l.view.epoch {
                return Err(Error::UnknownLeaderEpoch);
            }
            let log = self.log.borrow();
            let log_end = log.log_end();
            if let Some(diverging) = diverging(&log, offset, last_fetched_epoch) {
                return Ok(Some(diverging));
            }
            let Some(p) = l.followers.get_mut(&follower) else {
                return Err(Error::NotAReplica);
            };
            // Caught up: at this leader's end now, or at its end as of the previous fetch.
            if offset >= log_end {
                p.caught_up_at = now;
            } else if let Some((at, end_then)) = p.last_fetch {
                if offset >= end_then {
                    p.caught_up_at = p.caught_up_at.max(at);
                }
            }
            p.last_fetch = Some((now, log_end));
            p.end = offset;
        }
        self.update_hwm();
        Ok(None)
    }

    /// Moves the leader's high watermark cap to the least durable end over the ISR (and the
    /// members being added).
    fn update_hwm(&self) {
        let cap = match &*self.role.borrow() {
            Role::Leader(l) => {
                let mut members: Vec<i32> = l.view.isr.clone();
                if let Some((pending, _)) = &l.pending_isr {
                    members.extend(pending.iter().filter(|m| !l.view.isr.contains(m)));
                }
                members
                    .iter()
                    .filter(|m| **m != l.view.me)
                    .map(|m| l.followers.get(m).map_or(Offset(-1), |p| p.end))
                    .min()
            }
            _ => return,
        };
        let mut log = self.log.borrow_mut();
        let cap = cap.map(|c| c.max(log.high_watermark()));
        log.set_hwm_cap(cap);
    }

    /// A follower's high watermark from its leader's fetch answer.
    pub fn follow_high_watermark(&self, leader_hwm: Offset) {
        if matches!(&*self.role.borrow(), Role::Follower(_)) {
            let mut log = self.log.borrow_mut();
            let cap = leader_hwm.max(log.high_watermark());
            log.set_hwm_cap(Some(cap));
        }
    }

    /// The ISR this leader should ask the controller for, if it differs from the metadata's:
    /// followers not caught up for `lag_max` leave, followers at the high watermark join. It
    /// is remembered as pending (counted for the high watermark) until the metadata has it.
    pub fn isr_change(&self, lag_max: Duration) -> Option<(Vec<i32>, LeaderEpoch)> {
        let now = self.env.monotonic();
        let hwm = self.log.borrow().high_watermark();
        let mut role = self.role.borrow_mut();
        let Role::Leader(l) = &mut *role else {
            return None;
        };
        if let Some((_, at)) = &l.pending_isr {
            if now.saturating_sub(*at) < Duration::from_millis(PENDING_ISR_MS) {
                return None;
            }
        }
        let me = l.view.me;
        let mut isr: Vec<i32> = l
            .view
            .isr
            .iter()
            .copied()
            .filter(|m| {
                *m == me
                    || l.followers
                        .get(m)
                        .is_some_and(|p| now.saturating_sub(p.caught_up_at) <= lag_max)
            })
            .collect();
        for r in &l.view.replicas {
            let caught_up = l
                .followers
                .get(r)
                .is_some_and(|p| p.end >= hwm.max(l.start) && p.end.0 >= 0);
            if !isr.contains(r) && caught_up {
                isr.push(*r);
            }
        }
        if isr == l.view.isr {
            l.pending_isr = None;
            return None;
        }
        l.pending_isr = Some((isr.clone(), now));
        let epoch = l.view.epoch;
        drop(role);
        self.update_hwm();
        Some((isr, epoch))
    }

    /// The epoch to resign at if this replica leads with a failed log: asked again every
    /// `RESIGN_RETRY_MS` while it still leads (the controller may have had nobody else in
    /// sync, or no quorum).
    pub fn resignation(&self) -> Option<LeaderEpoch> {
        let role = self.role.borrow();
        let Role::Leader(l) = &*role else {
            return None;
        };
        self.log.borrow().failure()?;
        let now = self.env.monotonic();
        let recent = self.resigned.get().is_some_and(|(epoch, at)| {
            epoch == l.view.epoch && now.saturating_sub(at) < Duration::from_millis(RESIGN_RETRY_MS)
        });
        if recent {
            return None;
        }
        self.resigned.set(Some((l.view.epoch, now)));
        Some(l.view.epoch)
    }

    /// The controller refused the ISR change: forget it (the next check asks again).
    pub fn isr_change_refused(&self) {
        if let Role::Leader(l) = &mut *self.role.borrow_mut() {
            l.pending_isr = None;
        }
        self.update_hwm();
    }

    /// Each follower's durable log end as this leader last saw it (-1: not fetched yet).
    pub fn follower_ends(&self) -> Vec<(i32, Offset)> {
        match &*self.role.borrow() {
            Role::Leader(l) => l.followers.iter().map(|(r, p)| (*r, p.end)).collect(),
            _ => Vec::new(),
        }
    }
}

/// Resolves once the high watermark passes `offset`, or with NOT_LEADER_OR_FOLLOWER as soon as
/// `lost` says the role or epoch changed, which is checked first: a batch a new leader
/// truncated may later read as durable.
async fn hwm_past(
    log: &PartitionHandle,
    offset: Offset,
    lost: &mut oneshot::Receiver<()>,
) -> Result<(), Error> {
    let mut hwm = std::pin::pin!(Partition::wait_durable(log, offset));
    std::future::poll_fn(|cx| {
        if Pin::new(&mut *lost).poll(cx).is_ready() {
            return std::task::Poll::Ready(Err(Error::NotLeader));
        }
        hwm.as_mut().poll(cx).map(|r| r.map_err(Error::Storage))
    })
    .await
}

/// The parts of a view a follower acts on (the ISR may change under it without a new role).
fn follower_view(view: &RoleView) -> RoleView {
    RoleView {
        isr: Vec::new(),
        min_insync: 0,
        ..view.clone()
    }
}

/// Where a follower's log leaves this leader's history, if it does: its last fetched epoch
/// ends earlier here (or is unknown here), or it asks past this log's end.
fn diverging(
    log: &Partition,
    offset: Offset,
    last_fetched_epoch: LeaderEpoch,
) -> Option<(LeaderEpoch, Offset)> {
    let log_end = log.log_end();
    if last_fetched_epoch.0 >= 0 {
        match log.epochs().end_offset_for(last_fetched_epoch, log_end) {
            Some((epoch, end)) if epoch != last_fetched_epoch || end < offset => {
                return Some((epoch, end.min(offset)));
            }
            None => return Some((LeaderEpoch(-1), log.log_start())),
            Some(_) => {}
        }
    }
    if offset > log_end {
        let epoch = log.epochs().latest().map_or(LeaderEpoch(-1), |(e, _)| e);
        return Some((epoch, log_end));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::types::TopicPartition;
    use crate::testing::{FaultFs, ManualClock};

    /// Found by the simulation (seed 7): a replica created from an image that already names
    /// this broker leader stayed a follower until the epoch changed.
    #[test]
    fn a_replica_created_as_leader_leads() {
        let fs = FaultFs::new();
        let env = crate::testing::env(&fs, &ManualClock::new(0), 1);
        let led = crate::runtime::io::run_local(async move {
            let dir = std::path::Path::new("/d/t-0");
            env.fs.create_dir_all(dir).await.unwrap();
            let config = crate::simulation::broker::log_config();
            let tp = TopicPartition::new("t", 0);
            let log = Partition::open(&env, dir, tp, config, LeaderEpoch(0))
                .await
                .unwrap();
            let view = RoleView {
                me: 1,
                leader: 1,
                epoch: LeaderEpoch(6),
                replicas: vec![1, 2, 3],
                isr: vec![1],
                min_insync: 2,
            };
            let replica = Replica::clustered(log, env, view);
            (replica.leading_epoch(), replica.following())
        });
        assert_eq!(led, (Some(LeaderEpoch(6)), None));
    }
}
