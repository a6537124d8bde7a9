//! The seeded simulation of replication and the controller (issue 12, must-have 8): three
//! brokers, each with one replica of a partition (RF 3, `min.insync.replicas` 2) on its own
//! faulty in-memory disk (`testing::FaultFs`), the real controller (`cluster::Controller` over
//! a metadata log on its own disk, broker sessions, elections, ISR changes), the real
//! `replication::Replica` and the real fetcher logic, idempotent producers with acks=all and a
//! consumer, joined by an in-memory network, all on a virtual clock. One seeded generator
//! decides every message's delay and loss, the order of deliveries, and the faults: crashes
//! of one broker or all (unsynced writes dropped or torn, a new incarnation on restart), clean
//! stops (controlled shutdown first), fdatasync EIO, preferred-leader elections, network
//! partitions of one broker, and pauses (SIGSTOP). Then everything heals and the checkers run (`client::Checks`).
//! A run is a function of its seed: the same seed gives the same trace hash.
//!
//! What it does not cover: the controller's Raft quorum (the controller never fails; its
//! network to each broker does), more than one partition and shard, the TCP transport and the
//! Kafka codec of a replica fetch, clock skew, disk faults other than crashes (EIO, ENOSPC,
//! flipped bits are the storage fault tests' and the campaign's), and the interleaving of tasks
//! glommio runs at the same virtual instant (they run in spawn order). Runs on: one test
//! thread (`runtime::io::run_local`). Used by tests only.

pub mod broker;
pub mod client;
pub mod net;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::StreamExt;

use self::broker::SimBroker;
use self::client::{Checks, Producer};
use self::net::{Envelope, Msg, Net, NetFaults, Node};
use crate::cluster::controller::{Controller, ControllerError, NewTopic};
use crate::cluster::sessions::{SessionTimeouts, Sessions};
use crate::cluster::{LocalMetadataLog, MetadataImage};
use crate::testing::{FaultFs, ManualClock, SplitMix};

/// What a run does.
#[derive(Debug, Clone)]
pub struct Options {
    pub brokers: i32,
    pub producers: usize,
    /// Virtual milliseconds of load with faults; then everything heals.
    pub faulty_ms: u64,
    /// Virtual milliseconds allowed after healing for every replica to agree.
    pub settle_ms: u64,
    /// On average one fault per this many virtual milliseconds.
    pub fault_every_ms: u64,
    pub net: NetFaults,
    /// A deliberately broken broker that answers acks=all once its own copy is durable
    /// (acks=1): the checkers must catch it.
    pub acks_leader_only: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            brokers: 3,
            producers: 2,
            faulty_ms: 20_000,
            settle_ms: 30_000,
            fault_every_ms: 1_500,
            net: NetFaults {
                drop_per_mille: 5,
                delay_max_ms: 20,
            },
            acks_leader_only: false,
        }
    }
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Report {
    pub seed: u64,
    pub records_acknowledged: u64,
    pub batches_acknowledged: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub crashes: u64,
    pub whole_cluster_crashes: u64,
    pub clean_stops: u64,
    pub elections: u64,
    pub disk_errors: u64,
    pub partitions: u64,
    pub pauses: u64,
    pub messages_dropped: u64,
    pub leader_epochs: i32,
    pub longest_unacknowledged_ms: u64,
    pub violations: Vec<String>,
    /// A hash of every delivery, fault and acknowledgement in order.
    pub trace_hash: u64,
    /// The last events before the end (printed when a check fails).
    pub trace_tail: Vec<String>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seed {}: {} records ({} batches) acknowledged, {} lost, {} duplicated; faults: {} crashes \
             ({} of the whole cluster), {} clean stops, {} fdatasync EIO, {} partitions, {} pauses, \
             {} preferred elections, {} messages dropped; {} leader epochs; longest wait for an \
             acknowledgement {} ms; trace {:016x}",
            self.seed,
            self.records_acknowledged,
            self.batches_acknowledged,
            self.lost,
            self.duplicated,
            self.crashes,
            self.whole_cluster_crashes,
            self.clean_stops,
            self.disk_errors,
            self.partitions,
            self.pauses,
            self.elections,
            self.messages_dropped,
            self.leader_epochs,
            self.longest_unacknowledged_ms,
            self.trace_hash
        )
    }
}

/// Work for the controller, done one at a time in arrival order (as the controller shard
/// holds its lock across a change).
enum CtlOp {
    Message(Node, Msg),
    ExpireSessions,
    /// A clean stop (SIGTERM): leadership moves away first, then the broker stops.
    ShutDown(i32, i64),
    /// An operator's preferred-leader election (ElectLeaders).
    ElectPreferred,
}

pub struct World {
    pub options: Options,
    pub clock: Rc<ManualClock>,
    rng: RefCell<SplitMix>,
    net: RefCell<Net>,
    brokers: Vec<Rc<SimBroker>>,
    controller: Rc<Controller>,
    sessions: RefCell<Sessions>,
    ctl_tx: futures_channel::mpsc::UnboundedSender<CtlOp>,
    producers: Vec<RefCell<Producer>>,
    checks: RefCell<Checks>,
    topic_id: Cell<[u8; 16]>,
    trace_hash: Cell<u64>,
    trace_tail: RefCell<std::collections::VecDeque<String>>,
    next_attempt: Cell<u64>,
    producing: Cell<bool>,
    faults: RefCell<Report>,
}

const SESSIONS: SessionTimeouts = SessionTimeouts {
    fast_ms: 1_000,
    session_ms: 3_000,
};
const TRACE_TAIL: usize = 40;

impl World {
    pub fn now(&self) -> Duration {
        use crate::runtime::env::Clock;
        self.clock.monotonic()
    }

    pub fn topic_id(&self) -> [u8; 16] {
        self.topic_id.get()
    }

    fn broker(&self, id: i32) -> &Rc<SimBroker> {
        &self.brokers[(id - 1) as usize]
    }

    fn trace(&self, event: String) {
        let mut h = self.trace_hash.get();
        for b in event.bytes().chain([b'\n']) {
            h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.trace_hash.set(h);
        if std::env::var_os("TUSK_SIM_TRACE").is_some() {
            eprintln!("{event}");
        }
        let mut tail = self.trace_tail.borrow_mut();
        if tail.len() == TRACE_TAIL {
            tail.pop_front();
        }
        tail.push_back(event);
    }

    /// Sends `msg`; from a broker, only while incarnation `epoch` is the live one.
    pub fn send(&self, from: Node, epoch: i64, to: Node, msg: Msg) {
        if let Node::Broker(b) = from {
            let broker = self.broker(b);
            if !broker.up.get() || broker.incarnation.get() != epoch {
                return;
            }
        }
        let now = self.now();
        let envelope = Envelope { from, to, msg };
        self.net
            .borrow_mut()
            .send(&mut self.rng.borrow_mut(), now, envelope);
    }

    fn below(&self, n: u64) -> u64 {
        self.rng.borrow_mut().below(n)
    }

    fn publish(&self) {
        let image = Rc::new(self.controller.image().clone());
        for b in &self.brokers {
            self.send(
                Node::Controller,
                0,
                Node::Broker(b.id),
                Msg::Image(image.clone()),
            );
        }
    }
}

/// Runs one seed.
pub fn run(seed: u64, options: &Options) -> Report {
    let options = options.clone();
    crate::runtime::io::run_local(async move { simulate(seed, options).await })
}

async fn simulate(seed: u64, options: Options) -> Report {
    let clock = ManualClock::new(1_700_000_000_000);
    let mut rng = SplitMix(seed);
    let ctl_fs = FaultFs::new();
    let ctl_env = crate::testing::env(&ctl_fs, &clock, rng.next_u64());
    let meta_dir = std::path::Path::new("/meta");
    ctl_env.fs.create_dir_all(meta_dir).await.expect("mkdir");
    let log = LocalMetadataLog::open(&ctl_env, meta_dir)
        .await
        .expect("the metadata log opens");
    let controller = Rc::new(Controller::new(
        log,
        MetadataImage::default(),
        Arc::new(config(options.brokers)),
        ctl_env,
    ));
    let mut brokers = Vec::new();
    for id in 1..=options.brokers {
        let fs = FaultFs::new();
        let env = crate::testing::env(&fs, &clock, rng.next_u64());
        let b = Rc::new(SimBroker::new(id, fs, env));
        b.open().await.expect("a fresh log opens");
        brokers.push(b);
    }
    let (ctl_tx, ctl_rx) = futures_channel::mpsc::unbounded();
    let world = Rc::new(World {
        options: options.clone(),
        clock,
        rng: RefCell::new(rng),
        net: RefCell::new(Net::new(options.net)),
        brokers,
        controller,
        sessions: RefCell::new(Sessions::default()),
        ctl_tx,
        producers: (0..options.producers)
            .map(|i| RefCell::new(Producer::new(1_000 + i as i64)))
            .collect(),
        checks: RefCell::new(Checks::default()),
        topic_id: Cell::new([0; 16]),
        trace_hash: Cell::new(0xcbf2_9ce4_8422_2325),
        trace_tail: RefCell::new(Default::default()),
        next_attempt: Cell::new(0),
        producing: Cell::new(true),
        faults: RefCell::new(Report {
            seed,
            ..Default::default()
        }),
    });
    bootstrap(&world, options.brokers).await;
    crate::runtime::io::spawn(run_controller(world.clone(), ctl_rx));

    let tick = Duration::from_millis(1);
    let faulty_until = world.now() + Duration::from_millis(options.faulty_ms);
    let give_up = faulty_until + Duration::from_millis(options.settle_ms);
    let mut settled = false;
    while world.now() < give_up {
        world.clock.advance(tick);
        let now = world.now();
        step(&world, now);
        if now < faulty_until {
            if world.below(options.fault_every_ms) == 0 {
                inject_fault(&world, now);
            }
        } else if world.producing.get() {
            heal(&world, now);
        } else if now.as_millis().is_multiple_of(100) && converged(&world) {
            settled = true;
            break;
        }
        for _ in 0..4 {
            crate::runtime::io::yield_now().await;
        }
    }
    finish(&world, settled).await
}

fn config(brokers: i32) -> crate::config::Config {
    let mut c = crate::config::Config::resolve(crate::config::Settings::default(), None)
        .expect("the default config is valid");
    let voters = (1..=brokers)
        .map(|b| {
            (
                b as u64,
                format!("127.0.0.1:{}", 19_000 + b).parse().unwrap(),
            )
        })
        .collect();
    c.cluster = Some(crate::config::quorum::ClusterConfig {
        node_id: 0,
        controller_listen: "127.0.0.1:19000".parse().unwrap(),
        voters,
    });
    c.min_insync_replicas = broker::MIN_INSYNC as u16;
    c
}

/// Registers the brokers and creates the topic (RF = every broker).
async fn bootstrap(world: &Rc<World>, brokers: i32) {
    let c = &world.controller;
    for b in world.brokers.iter() {
        c.broker_heartbeat(b.id, 1, "sim", 9_000 + b.id as u16)
            .await
            .expect("registration");
        world.sessions.borrow_mut().heard(b.id, world.now());
    }
    let topic = NewTopic {
        name: broker::TOPIC.into(),
        partitions: 1,
        replication_factor: brokers as i16,
        configs: vec![("min.insync.replicas".into(), broker::MIN_INSYNC.to_string())],
    };
    c.create_topic(topic, false).await.expect("the topic");
    let id = c.image().topic_id_of(broker::TOPIC).expect("created");
    world.topic_id.set(id);
    world.sessions.borrow_mut().restart(world.now());
    world.publish();
}

/// The controller's loop: one change at a time, each published to every broker.
async fn run_controller(world: Rc<World>, mut rx: futures_channel::mpsc::UnboundedReceiver<CtlOp>) {
    while let Some(op) = rx.next().await {
        let c = &world.controller;
        let changed = match op {
            CtlOp::ExpireSessions => {
                let now = world.now();
                let expired = world
                    .sessions
                    .borrow()
                    .expired(&c.image(), 0, now, SESSIONS, |_| None);
                let mut changed = false;
                for (node, epoch) in expired {
                    world.trace(format!("{now:?} controller fences broker {node}/{epoch}"));
                    changed |= c.fence(node, epoch).await.is_ok();
                }
                if changed {
                    let _ = c.elect_leaders().await;
                }
                changed
            }
            CtlOp::Message(Node::Broker(b), Msg::Heartbeat { epoch }) => {
                world.sessions.borrow_mut().heard(b, world.now());
                let r = c.broker_heartbeat(b, epoch, "sim", 9_000 + b as u16).await;
                let changed = matches!(r, Ok(Some(_)));
                if changed {
                    let _ = c.elect_leaders().await;
                }
                changed
            }
            CtlOp::Message(from @ Node::Broker(_), Msg::AlterIsr(req)) => {
                // The batched form the shards use (one request of one change here).
                let r = c.alter_isrs(std::slice::from_ref(&req)).await.remove(0);
                let answer = match &r {
                    Ok(_) => Some(true),
                    Err(
                        ControllerError::StaleLeader(_)
                        | ControllerError::InvalidConfig(_)
                        | ControllerError::UnknownTopic(_),
                    ) => Some(false),
                    Err(_) => None,
                };
                world.send(Node::Controller, 0, from, Msg::AlterIsrAnswer { answer });
                matches!(r, Ok(Some(_)))
            }
            CtlOp::ShutDown(node, epoch) => {
                let current = c
                    .image()
                    .brokers
                    .get(&node)
                    .is_some_and(|b| b.epoch == epoch);
                let moved = current && matches!(c.shut_down(node, epoch).await, Ok(Some(_)));
                // Then the process stops (as a crash: a clean stop loses nothing synced).
                let b = world.broker(node);
                if b.up.get() && b.incarnation.get() == epoch {
                    b.crash_at.set(Some(world.now()));
                }
                moved
            }
            CtlOp::ElectPreferred => {
                let answers = c.elect_preferred(&[(broker::TOPIC.to_string(), 0)]).await;
                answers.iter().any(|a| matches!(a, Ok(i) if *i >= 0))
            }
            CtlOp::Message(Node::Broker(_), Msg::Resign(req)) => {
                matches!(c.resign(&req).await, Ok(Some(_)))
            }
            CtlOp::Message(..) => false,
        };
        if changed {
            let image = c.image();
            if let Some((a, isr)) = image.partition(broker::TOPIC, 0) {
                world.trace(format!(
                    "{:?} metadata: leader {} epoch {} isr {isr:?}",
                    world.now(),
                    a.leader,
                    a.leader_epoch
                ));
            }
            drop(image);
            world.publish();
        }
    }
}

/// One virtual millisecond: deliveries, then each broker's and client's own work.
fn step(world: &Rc<World>, now: Duration) {
    let due = world.net.borrow_mut().due(now);
    for e in due {
        world.trace(format!(
            "{now:?} {:?} -> {:?} {}",
            e.from,
            e.to,
            e.msg.kind()
        ));
        deliver(world, e);
    }
    for b in &world.brokers {
        if b.crash_at.get().is_some_and(|at| at <= now) {
            world.trace(format!(
                "{now:?} broker {} stops (disk error or clean stop)",
                b.id
            ));
            crash(world, b, 100 + world.below(1_000), now);
        }
        if b.restart_at.get().is_some_and(|at| at <= now) {
            b.restart_at.set(None);
            restart(world, b.clone());
        }
        let paused = world.net.borrow().paused_until(b.id, now).is_some();
        if b.up.get() && !paused {
            b.tick(world, now);
        }
    }
    if now.as_millis().is_multiple_of(100) {
        let _ = world.ctl_tx.unbounded_send(CtlOp::ExpireSessions);
    }
    if now.as_millis().is_multiple_of(500) {
        world.publish();
    }
    for (i, p) in world.producers.iter().enumerate() {
        produce_step(world, i, &mut p.borrow_mut(), now);
    }
    if now.as_millis().is_multiple_of(50) {
        observe(world);
    }
}

fn deliver(world: &Rc<World>, e: Envelope) {
    match e.to {
        Node::Controller => {
            let _ = world.ctl_tx.unbounded_send(CtlOp::Message(e.from, e.msg));
        }
        Node::Broker(b) => {
            let broker = world.broker(b).clone();
            if broker.up.get() {
                broker.receive(world, e.from, e.msg);
            }
        }
        Node::Client(i) => answer_to_producer(world, i, e.from, e.msg),
    }
}

fn restart(world: &Rc<World>, b: Rc<SimBroker>) {
    world.trace(format!("{:?} broker {} restarts", world.now(), b.id));
    let world = world.clone();
    crate::runtime::io::spawn(async move {
        match b.open().await {
            Err(e) => world.checks.borrow_mut().violations.push(e),
            Ok(()) => {
                let log = b.log.borrow().clone().expect("opened");
                let (start, end) = (log.borrow().log_start().0, log.borrow().log_end().0);
                world.trace(format!(
                    "{:?} broker {} recovered its log: {start}..{end}",
                    world.now(),
                    b.id
                ));
            }
        }
    });
}

fn produce_step(world: &Rc<World>, i: usize, p: &mut Producer, now: Duration) {
    if now < p.next_action {
        return;
    }
    if p.overdue(now) {
        let attempt = p
            .in_flight
            .as_ref()
            .and_then(|f| f.attempt)
            .expect("overdue");
        p.failed(attempt, now);
        return;
    }
    if p.in_flight.is_none() {
        if !world.producing.get() {
            return;
        }
        let count = 1 + world.below(3) as i32;
        let seq = p.next_seq;
        p.next_seq += count;
        let payload = Rc::new(client::idempotent_batch(p.pid, seq, count));
        p.in_flight = Some(client::InFlight {
            seq,
            count,
            payload,
            attempt: None,
            sent_at: now,
        });
        p.first_sent = Some(now);
    }
    let f = p.in_flight.as_mut().expect("a batch");
    if f.attempt.is_some() {
        return;
    }
    let me = Node::Client(i);
    match p.leader {
        None => {
            let b = 1 + world.below(world.brokers.len() as u64) as i32;
            world.send(me, 0, Node::Broker(b), Msg::MetadataAsk);
            p.next_action = now + Duration::from_millis(30);
        }
        Some(leader) => {
            let attempt = world.next_attempt.get() + 1;
            world.next_attempt.set(attempt);
            f.attempt = Some(attempt);
            f.sent_at = now;
            p.attempts.insert(attempt, f.seq);
            let payload = f.payload.clone();
            world.send(
                me,
                0,
                Node::Broker(leader),
                Msg::Produce { attempt, payload },
            );
        }
    }
}

fn answer_to_producer(world: &Rc<World>, i: usize, from: Node, msg: Msg) {
    let now = world.now();
    let mut p = world.producers[i].borrow_mut();
    match msg {
        Msg::MetadataAnswer { leader } if leader > 0 => p.leader = Some(leader),
        Msg::ProduceAnswer { attempt, result } => {
            let Some(seq) = p.attempts.get(&attempt).copied() else {
                return;
            };
            match result {
                Ok((base, epoch)) => {
                    let Node::Broker(broker) = from else { return };
                    let count = match &p.in_flight {
                        Some(f) if f.seq == seq => f.count,
                        _ => {
                            // An older attempt of a batch already acknowledged.
                            let known = world.checks.borrow().acked.get(&(p.pid, seq)).copied();
                            known.map_or(1, |(_, c)| c)
                        }
                    };
                    world.trace(format!(
                        "{now:?} ack {}:{seq} at {} by {broker}/{} epoch {}",
                        p.pid, base.0, epoch.1, epoch.0 .0
                    ));
                    let id = (p.pid, seq, count);
                    let acker = (broker, epoch.1);
                    world.checks.borrow_mut().acked(id, base, acker, epoch.0);
                    if p.in_flight.as_ref().is_some_and(|f| f.seq == seq) {
                        p.in_flight = None;
                        let waited = now.saturating_sub(p.first_sent.unwrap_or(now));
                        p.longest_wait = p.longest_wait.max(waited);
                    }
                }
                Err(why) => {
                    world.trace(format!("{now:?} refused {}:{seq}: {why}", p.pid));
                    p.failed(attempt, now);
                }
            }
        }
        _ => {}
    }
}

/// The consumer and the high-watermark check: what each live replica serves below its high
/// watermark.
fn observe(world: &Rc<World>) {
    for b in &world.brokers {
        let Some(replica) = b.replica().filter(|_| b.up.get()) else {
            continue;
        };
        let key = (b.id, b.incarnation.get());
        if let Some(epoch) = replica.leading_epoch() {
            let hwm = replica.log().borrow().high_watermark();
            let k = (key.0, key.1, epoch.0);
            world.checks.borrow_mut().leader_hwm(k, hwm);
        }
        let log = replica.log().clone();
        let from = {
            let checks = world.checks.borrow();
            let upto = checks.read_upto.get(&key).copied().unwrap_or(Offset(0));
            upto.max(log.borrow().log_start())
        };
        let world = world.clone();
        crate::runtime::io::spawn(async move {
            match client::read_batches(&log, from, false).await {
                Ok(batches) => {
                    let mut checks = world.checks.borrow_mut();
                    checks.read(key.0, &batches);
                    if let Some(last) = batches.last() {
                        // Re-read from the last batch on (it may have grown past it).
                        checks.read_upto.insert(key, last.base);
                    }
                }
                // A read racing a truncation or restart: the next one starts over.
                Err(_) => {
                    world.checks.borrow_mut().read_upto.remove(&key);
                }
            }
        });
    }
}

use crate::protocol::types::Offset;

fn inject_fault(world: &Rc<World>, now: Duration) {
    let n = world.brokers.len() as u64;
    let b = world.broker(1 + world.below(n) as i32).clone();
    let kind = world.below(24);
    let ms = 300 + world.below(4_000);
    let mut report = world.faults.borrow_mut();
    match kind {
        0..=7 if b.up.get() => {
            report.crashes += 1;
            drop(report);
            crash(world, &b, 100 + world.below(3_000), now);
        }
        8..=12 => {
            world.trace(format!("{now:?} isolate broker {} for {ms} ms", b.id));
            let until = now + Duration::from_millis(ms);
            world.net.borrow_mut().isolate(b.id, until);
            report.partitions += 1;
        }
        13..=16 => {
            world.trace(format!("{now:?} pause broker {} for {ms} ms", b.id));
            let until = now + Duration::from_millis(ms);
            world.net.borrow_mut().pause(b.id, until);
            report.pauses += 1;
        }
        17 => {
            report.whole_cluster_crashes += 1;
            drop(report);
            world.trace(format!("{now:?} crash every broker"));
            for b in world.brokers.iter().filter(|b| b.up.get()) {
                crash(world, b, 100 + world.below(2_000), now);
            }
        }
        20 | 21 if b.up.get() && b.crash_at.get().is_none() => {
            world.trace(format!("{now:?} clean stop of broker {}", b.id));
            let op = CtlOp::ShutDown(b.id, b.incarnation.get());
            let _ = world.ctl_tx.unbounded_send(op);
            report.clean_stops += 1;
        }
        22 | 23 => {
            world.trace(format!("{now:?} preferred-leader election"));
            let _ = world.ctl_tx.unbounded_send(CtlOp::ElectPreferred);
            report.elections += 1;
        }
        18 | 19 if b.up.get() && b.crash_at.get().is_none() => {
            // EIO on the log's next fdatasync: the partition fails (its leadership moves
            // away); the operator restarts the broker a while later.
            world.trace(format!("{now:?} fdatasync EIO on broker {}", b.id));
            b.fs.borrow().inject(crate::testing::Fault {
                op: crate::testing::Op::Fdatasync,
                path: "t-0".into(),
                errno: 5,
                times: 1,
            });
            b.crash_at
                .set(Some(now + Duration::from_millis(500 + world.below(3_000))));
            report.disk_errors += 1;
        }
        _ => {}
    }
}

fn crash(world: &World, b: &SimBroker, down_ms: u64, now: Duration) {
    world.trace(format!("{now:?} crash broker {} for {down_ms} ms", b.id));
    let seed = world.rng.borrow_mut().next_u64();
    b.crash(seed, world);
    b.restart_at.set(Some(now + Duration::from_millis(down_ms)));
}

/// The end of the faults: links heal, paused brokers resume, crashed ones restart, producers
/// finish the batch they have in flight and start no other.
fn heal(world: &Rc<World>, now: Duration) {
    world.trace(format!("{now:?} heal"));
    world.producing.set(false);
    world.net.borrow_mut().heal();
    for b in &world.brokers {
        if b.restart_at.get().is_some() {
            b.restart_at.set(Some(now));
        }
        if b.crash_at.get().is_some() {
            b.crash_at.set(Some(now));
        }
    }
}

/// Every producer done, every replica in the ISR and at the leader's end, the high watermark
/// at the end.
fn converged(world: &World) -> bool {
    if world
        .producers
        .iter()
        .any(|p| p.borrow().in_flight.is_some())
    {
        return false;
    }
    let image = world.controller.image();
    let Some((a, isr)) = image.partition(broker::TOPIC, 0) else {
        return false;
    };
    if a.leader < 0 || isr.len() != world.brokers.len() {
        return false;
    }
    let Some(leader) = world.broker(a.leader).replica() else {
        return false;
    };
    let end = leader.log().borrow().log_end();
    if leader.log().borrow().high_watermark() != end {
        return false;
    }
    world.brokers.iter().all(|b| {
        b.up.get()
            && b.replica().is_some_and(|r| {
                let log = r.log().borrow();
                log.log_end() == end && log.high_watermark() == end
            })
    })
}

async fn finish(world: &Rc<World>, settled: bool) -> Report {
    let mut logs = Vec::new();
    for b in &world.brokers {
        let log = b.replica().map(|r| r.log().clone());
        let batches = match log {
            Some(log) => {
                let start = log.borrow().log_start();
                client::read_batches(&log, start, true).await
            }
            None => Err(format!("broker {} has no replica", b.id)),
        };
        logs.push((b.id, batches));
    }
    let mut report = std::mem::take(&mut *world.faults.borrow_mut());
    let mut checks = world.checks.borrow_mut();
    if !settled {
        checks
            .violations
            .push("the replicas did not agree within the settle time".into());
    }
    let mut first: Option<(i32, Vec<client::Batch>)> = None;
    for (id, batches) in logs {
        match batches {
            Ok(batches) => {
                checks.read(id, &batches);
                match &first {
                    None => {
                        let (lost, dup) = checks.final_log(&batches);
                        report.lost = lost;
                        report.duplicated = dup;
                        first = Some((id, batches));
                    }
                    Some((f, log)) if *log != batches => checks
                        .violations
                        .push(format!("broker {id}'s log differs from broker {f}'s")),
                    Some(_) => {}
                }
            }
            Err(e) => checks.violations.push(e),
        }
    }
    report.records_acknowledged = checks.records_acknowledged;
    report.batches_acknowledged = checks.acked.len() as u64;
    report.violations = std::mem::take(&mut checks.violations);
    report.leader_epochs = world
        .controller
        .image()
        .partition(broker::TOPIC, 0)
        .map_or(0, |(a, _)| a.leader_epoch);
    report.messages_dropped = world.net.borrow().dropped;
    report.longest_unacknowledged_ms = world
        .producers
        .iter()
        .map(|p| p.borrow().longest_wait.as_millis() as u64)
        .max()
        .unwrap_or(0);
    report.trace_hash = world.trace_hash.get();
    report.trace_tail = world.trace_tail.borrow().iter().cloned().collect();
    report
}
