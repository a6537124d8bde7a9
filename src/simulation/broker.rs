//! A simulated broker: one partition's log on its own faulty disk, its `Replica`, the image it
//! last installed, and the follower's fetch loop (the real fetcher's `to_ask` and `apply`,
//! with the in-memory network in place of TCP). Handlers mirror the shard layer's: the image
//! gives the role, the leader checks a replica fetch against the registered incarnation, and
//! produces go through `Replica::produce` with acks=all. Runs on: the simulation's thread.
//! Invariant: everything a crashed incarnation's tasks still send is dropped (`World::send`
//! checks the incarnation), so only the live one speaks.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use kafka_protocol::messages::fetch_response::{
    EpochEndOffset, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::FetchResponse;

use super::net::{Msg, Node};
use super::World;
use crate::cluster::elect::AlterIsr;
use crate::cluster::MetadataImage;
use crate::config::{FlushPolicy, LogConfig};
use crate::protocol::types::{LeaderEpoch, Offset, TopicPartition};
use crate::protocol::ErrorCode;
use crate::replication::fetcher::{self, Asked, Resting};
use crate::replication::{Acks, Done, Error as ReplicaError, Produced, Replica, RoleView};
use crate::runtime::env::Env;
use crate::storage::{Partition, PartitionHandle};
use crate::testing::FaultFs;

pub const TOPIC: &str = "t";
/// `min.insync.replicas` of the simulated topic.
pub const MIN_INSYNC: usize = 2;
const FETCH_BYTES: usize = 64 * 1024;
/// A fetch whose answer is lost is given up after this long.
const FETCH_TIMEOUT_MS: u64 = 1_000;
const HEARTBEAT_MS: u64 = 100;
const ISR_CHECK_MS: u64 = 250;
/// Kafka's replica.lag.time.max.ms, shortened so that runs of seconds see ISR changes.
pub const LAG_MAX_MS: u64 = 2_000;
/// acks=all waits at most this long (the request's timeout_ms).
const PRODUCE_TIMEOUT_MS: u64 = 1_500;

pub fn log_config() -> LogConfig {
    LogConfig {
        segment_bytes: 32 * 1024,
        segment_ms: u64::MAX / 2,
        retention_ms: -1,
        retention_bytes: -1,
        message_max_bytes: 1 << 20,
        flush: FlushPolicy::Always,
        tail_cache_bytes: 16 << 10,
        index_interval_bytes: 4096,
        group_commit: true,
    }
}

pub fn dir() -> std::path::PathBuf {
    std::path::PathBuf::from("/data/t-0")
}

/// The fetch loop's state.
#[derive(Default)]
struct Fetching {
    /// The request out: its id, when it left, to which leader, what it asked.
    out: Option<(u64, Duration, i32, Vec<Asked>)>,
    /// An answer is being applied (the next fetch waits for it, as the real fetcher's does).
    applying: bool,
    next_id: u64,
    next_at: Duration,
    resting: Resting,
}

pub struct SimBroker {
    pub id: i32,
    pub fs: RefCell<FaultFs>,
    pub env: RefCell<Env>,
    /// The incarnation (broker epoch): a new one at every restart.
    pub incarnation: Cell<i64>,
    pub up: Cell<bool>,
    /// When a crashed broker starts again.
    pub restart_at: Cell<Option<Duration>>,
    /// When the operator restarts a broker whose disk failed.
    pub crash_at: Cell<Option<Duration>>,
    pub log: RefCell<Option<PartitionHandle>>,
    pub replica: RefCell<Option<Rc<Replica>>>,
    pub image: RefCell<Option<Rc<MetadataImage>>>,
    fetching: RefCell<Fetching>,
    next_heartbeat: Cell<Duration>,
    next_isr_check: Cell<Duration>,
}

impl SimBroker {
    pub fn new(id: i32, fs: FaultFs, env: Env) -> SimBroker {
        SimBroker {
            id,
            fs: RefCell::new(fs),
            env: RefCell::new(env),
            incarnation: Cell::new(1),
            up: Cell::new(false),
            restart_at: Cell::new(None),
            crash_at: Cell::new(None),
            log: RefCell::new(None),
            replica: RefCell::new(None),
            image: RefCell::new(None),
            fetching: RefCell::new(Fetching::default()),
            next_heartbeat: Cell::new(Duration::ZERO),
            next_isr_check: Cell::new(Duration::ZERO),
        }
    }

    pub fn replica(&self) -> Option<Rc<Replica>> {
        self.replica.borrow().clone()
    }

    /// Opens (recovers) the partition's log: the broker's start.
    pub async fn open(&self) -> Result<(), String> {
        let env = self.env.borrow().clone();
        let log = Partition::open(
            &env,
            &dir(),
            TopicPartition::new(TOPIC, 0),
            log_config(),
            LeaderEpoch(0),
        )
        .await
        .map_err(|e| format!("broker {} cannot open its log: {e}", self.id))?;
        *self.log.borrow_mut() = Some(log);
        self.up.set(true);
        Ok(())
    }

    /// A power loss: unsynced writes are dropped or torn, and everything in memory is gone.
    pub fn crash(&self, seed: u64, world: &World) {
        let fs = self.fs.borrow().crash(seed);
        if std::env::var_os("TUSK_SIM_FILES").is_some() {
            if let Some(log) = self.log.borrow().as_ref() {
                eprintln!("broker {} crash: {}", self.id, log.borrow().state());
            }
            let old = self.fs.borrow();
            for f in old.files() {
                let before = old.contents(&f).map_or(0, |c| c.len());
                let after = fs.contents(&f).map_or(0, |c| c.len());
                eprintln!(
                    "broker {} crash: {} {before} -> {after}",
                    self.id,
                    f.display()
                );
            }
        }
        fs.clear_faults();
        self.crash_at.set(None);
        *self.env.borrow_mut() = crate::testing::env(&fs, &world.clock, seed);
        *self.fs.borrow_mut() = fs;
        self.up.set(false);
        self.incarnation.set(self.incarnation.get() + 1);
        *self.log.borrow_mut() = None;
        *self.replica.borrow_mut() = None;
        *self.image.borrow_mut() = None;
        *self.fetching.borrow_mut() = Fetching::default();
    }

    /// Installs a newer image: the replica's role from it (created at the first image that
    /// assigns the partition).
    fn install(&self, image: Rc<MetadataImage>) {
        let newer = self
            .image
            .borrow()
            .as_ref()
            .is_none_or(|i| image.records_applied > i.records_applied);
        if !newer {
            return;
        }
        *self.image.borrow_mut() = Some(image.clone());
        // As the shard layer (`Shard::registered`): no role before the image holds this
        // incarnation.
        let me = self.incarnation.get();
        if image.brokers.get(&self.id).is_none_or(|b| b.epoch != me) {
            return;
        }
        let Some((a, isr)) = image.partition(TOPIC, 0) else {
            return;
        };
        let view = RoleView {
            me: self.id,
            leader: a.leader,
            epoch: LeaderEpoch(a.leader_epoch),
            replicas: a.replicas.clone(),
            isr: isr.to_vec(),
            min_insync: MIN_INSYNC.clamp(1, a.replicas.len().max(1)),
        };
        let existing = self.replica();
        match existing {
            Some(r) => r.set_role(view),
            None => {
                let Some(log) = self.log.borrow().clone() else {
                    return;
                };
                let env = self.env.borrow().clone();
                *self.replica.borrow_mut() = Some(Rc::new(Replica::clustered(log, env, view)));
            }
        }
    }

    /// What this broker does on its own, at `now`: heartbeats, ISR checks, fetches.
    pub fn tick(self: &Rc<Self>, world: &Rc<World>, now: Duration) {
        let me = Node::Broker(self.id);
        if now >= self.next_heartbeat.get() {
            self.next_heartbeat
                .set(now + Duration::from_millis(HEARTBEAT_MS));
            let epoch = self.incarnation.get();
            world.send(me, epoch, Node::Controller, Msg::Heartbeat { epoch });
        }
        let Some(replica) = self.replica() else {
            return;
        };
        if now >= self.next_isr_check.get() {
            self.next_isr_check
                .set(now + Duration::from_millis(ISR_CHECK_MS));
            self.check_isr(world, &replica);
        }
        self.fetch(world, &replica, now);
    }

    fn check_isr(&self, world: &Rc<World>, replica: &Replica) {
        let me = Node::Broker(self.id);
        let epoch = self.incarnation.get();
        let request = |leader_epoch: LeaderEpoch, isr: Vec<i32>| AlterIsr {
            topic: TOPIC.into(),
            partition: 0,
            leader: self.id,
            leader_epoch: leader_epoch.0,
            isr,
        };
        if let Some(e) = replica.resignation() {
            world.send(me, epoch, Node::Controller, Msg::Resign(request(e, vec![])));
            return;
        }
        if let Some((isr, e)) = replica.isr_change(Duration::from_millis(LAG_MAX_MS)) {
            world.send(me, epoch, Node::Controller, Msg::AlterIsr(request(e, isr)));
        }
    }

    /// Sends the next fetch to the leader this replica follows, once the previous one is
    /// answered (or lost) and applied.
    fn fetch(&self, world: &Rc<World>, replica: &Rc<Replica>, now: Duration) {
        let mut f = self.fetching.borrow_mut();
        if f.applying {
            return;
        }
        if let Some((_, sent, _, _)) = &f.out {
            if now.saturating_sub(*sent) < Duration::from_millis(FETCH_TIMEOUT_MS) {
                return;
            }
            f.out = None;
        }
        let Some((leader, _)) = replica.following() else {
            return;
        };
        if leader < 0 || now < f.next_at {
            return;
        }
        let mut carried = BTreeMap::new();
        carried.insert(
            TopicPartition::new(TOPIC, 0),
            (replica.clone(), world.topic_id()),
        );
        let env = self.env.borrow().clone();
        let asked = fetcher::to_ask(leader, &carried, &env, &mut f.resting);
        let Some(a) = asked.first() else {
            return;
        };
        let last_fetched_epoch = a
            .replica
            .log()
            .borrow()
            .epochs()
            .latest()
            .map_or(LeaderEpoch(-1), |(e, _)| e);
        f.next_id += 1;
        let msg = Msg::Fetch {
            id: f.next_id,
            epoch: self.incarnation.get(),
            offset: a.offset,
            current_epoch: a.epoch,
            last_fetched_epoch,
        };
        f.out = Some((f.next_id, now, leader, asked));
        drop(f);
        let epoch = self.incarnation.get();
        world.send(Node::Broker(self.id), epoch, Node::Broker(leader), msg);
    }

    /// A message for this broker.
    pub fn receive(self: &Rc<Self>, world: &Rc<World>, from: Node, msg: Msg) {
        let me = Node::Broker(self.id);
        let epoch = self.incarnation.get();
        match msg {
            Msg::Image(image) => self.install(image),
            Msg::AlterIsrAnswer { answer } => {
                if let Some(r) = self.replica() {
                    // As the shard layer: only a certain refusal acts (see
                    // `Shard::ask_isr_changes`).
                    if answer == Some(false) {
                        r.isr_change_refused();
                    }
                }
            }
            Msg::MetadataAsk => {
                let leader = self
                    .image
                    .borrow()
                    .as_ref()
                    .and_then(|i| i.partition(TOPIC, 0).map(|(a, _)| a.leader))
                    .unwrap_or(-1);
                world.send(me, epoch, from, Msg::MetadataAnswer { leader });
            }
            Msg::Fetch {
                id,
                epoch: follower_epoch,
                offset,
                current_epoch,
                last_fetched_epoch,
            } => {
                let Node::Broker(follower) = from else { return };
                let asked = (follower, follower_epoch, offset, current_epoch);
                self.serve_fetch(world, id, asked, last_fetched_epoch);
            }
            Msg::FetchAnswer { id, response } => self.fetched(world, id, response),
            Msg::Produce { attempt, payload } => self.produce(world, from, attempt, &payload),
            _ => {}
        }
    }

    /// The leader's side of a follower's fetch: the incarnation check the server makes, then
    /// the replica's check and a read up to what this leader has written.
    fn serve_fetch(
        &self,
        world: &Rc<World>,
        id: u64,
        (follower, follower_epoch, offset, current_epoch): (i32, i64, Offset, LeaderEpoch),
        last_fetched_epoch: LeaderEpoch,
    ) {
        let registered = self.image.borrow().as_ref().is_some_and(|i| {
            i.brokers
                .get(&follower)
                .is_some_and(|b| !b.fenced && b.epoch == follower_epoch)
        });
        let me = (Node::Broker(self.id), self.incarnation.get());
        let to = Node::Broker(follower);
        let topic_id = world.topic_id();
        let answer = move |world: &World, data: PartitionData| {
            let response =
                FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
                    .with_topic_id(uuid::Uuid::from_bytes(topic_id))
                    .with_partitions(vec![data])]);
            world.send(me.0, me.1, to, Msg::FetchAnswer { id, response });
        };
        let refused = |code: ErrorCode| PartitionData::default().with_error_code(code.code());
        let Some(replica) = self.replica().filter(|_| registered) else {
            let code = if registered {
                ErrorCode::NotLeaderOrFollower
            } else {
                ErrorCode::StaleBrokerEpoch
            };
            answer(world, refused(code));
            return;
        };
        let log = replica.log().clone();
        let (hwm, start) = {
            let p = log.borrow();
            (p.high_watermark().0, p.log_start().0)
        };
        match replica.follower_fetch(follower, offset, current_epoch, last_fetched_epoch) {
            Err(e) => answer(world, refused(code_of(&e))),
            Ok(Some((epoch, end))) => answer(
                world,
                PartitionData::default()
                    .with_high_watermark(hwm)
                    .with_log_start_offset(start)
                    .with_diverging_epoch(
                        EpochEndOffset::default()
                            .with_epoch(epoch.0)
                            .with_end_offset(end.0),
                    ),
            ),
            Ok(None) => {
                let world = world.clone();
                crate::runtime::io::spawn(async move {
                    let data = match Partition::read_for_follower(&log, offset, FETCH_BYTES).await {
                        Ok(r) => PartitionData::default()
                            .with_high_watermark(r.high_watermark.0)
                            .with_log_start_offset(r.log_start.0)
                            .with_records(Some(r.records)),
                        Err(crate::storage::Error::OffsetOutOfRange) => {
                            refused(ErrorCode::OffsetOutOfRange)
                                .with_high_watermark(hwm)
                                .with_log_start_offset(log.borrow().log_start().0)
                        }
                        Err(_) => refused(ErrorCode::KafkaStorageError),
                    };
                    answer(&world, data);
                });
            }
        }
    }

    /// The follower's side: the real fetcher's `apply`, then the next fetch may go.
    fn fetched(self: &Rc<Self>, world: &Rc<World>, id: u64, response: FetchResponse) {
        let mut f = self.fetching.borrow_mut();
        let Some((out_id, _, _, _)) = &f.out else {
            return;
        };
        if *out_id != id {
            return;
        }
        let (_, _, leader, asked) = f.out.take().expect("checked above");
        f.applying = true;
        let mut resting = std::mem::take(&mut f.resting);
        drop(f);
        let broker = self.clone();
        let incarnation = self.incarnation.get();
        let env = self.env.borrow().clone();
        let world = world.clone();
        crate::runtime::io::spawn(async move {
            fetcher::apply(leader, &env, asked, response, &mut resting).await;
            if broker.incarnation.get() != incarnation {
                return;
            }
            let mut f = broker.fetching.borrow_mut();
            f.applying = false;
            f.resting = resting;
            f.next_at = world.now() + Duration::from_millis(5);
        });
    }

    /// A producer's batch, acks=all.
    fn produce(&self, world: &Rc<World>, client: Node, attempt: u64, payload: &[u8]) {
        let acks = if world.options.acks_leader_only {
            Acks::Leader
        } else {
            Acks::All
        };
        let me = (Node::Broker(self.id), self.incarnation.get());
        let timeout = Duration::from_millis(PRODUCE_TIMEOUT_MS);
        let Some(replica) = self.replica() else {
            let result = Err("no replica".to_string());
            world.send(me.0, me.1, client, Msg::ProduceAnswer { attempt, result });
            return;
        };
        let epoch = (
            replica.leading_epoch().unwrap_or(LeaderEpoch(-1)),
            self.incarnation.get(),
        );
        let (base, done) = match replica.produce(payload, acks, timeout) {
            Ok(Produced::Appended { base_offset, done }) => {
                (base_offset, done.expect("acks=1 and acks=all wait"))
            }
            Ok(Produced::Duplicate { base_offset }) => {
                (base_offset, replica.wait_durable(base_offset, timeout))
            }
            Err(e) => {
                let result = Err(format!("{e}"));
                world.send(me.0, me.1, client, Msg::ProduceAnswer { attempt, result });
                return;
            }
        };
        let world = world.clone();
        crate::runtime::io::spawn(async move {
            let result = Done::wait(done)
                .await
                .map(|()| (base, epoch))
                .map_err(|e| format!("{e}"));
            world.send(me.0, me.1, client, Msg::ProduceAnswer { attempt, result });
        });
    }
}

fn code_of(e: &ReplicaError) -> ErrorCode {
    match e {
        ReplicaError::NotLeader | ReplicaError::NotAReplica => ErrorCode::NotLeaderOrFollower,
        ReplicaError::FencedLeaderEpoch => ErrorCode::FencedLeaderEpoch,
        ReplicaError::UnknownLeaderEpoch => ErrorCode::UnknownLeaderEpoch,
        _ => ErrorCode::KafkaStorageError,
    }
}
