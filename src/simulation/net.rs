//! The simulation's in-memory network: every message gets a delivery time from the seeded
//! generator (so messages overtake each other), some are dropped, and a broker can be cut off
//! from everyone (a network partition) or paused (SIGSTOP: what it sends and receives waits
//! until it resumes). Runs on: the simulation's one thread. Invariant: delivery order is a
//! function of the seed alone (a `BTreeMap` keyed by (time, sequence number)).

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use kafka_protocol::messages::FetchResponse;

use crate::cluster::elect::AlterIsr;
use crate::cluster::MetadataImage;
use crate::protocol::types::{LeaderEpoch, Offset};
use crate::testing::SplitMix;

/// An endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Node {
    Controller,
    Broker(i32),
    Client(usize),
}

/// What travels between endpoints.
pub enum Msg {
    Heartbeat {
        epoch: i64,
    },
    /// The controller's committed image.
    Image(Rc<MetadataImage>),
    AlterIsr(AlterIsr),
    /// The controller's answer to an ISR change: committed (`Some(true)`), refused for
    /// certain (`Some(false)`), or unknown.
    AlterIsrAnswer {
        answer: Option<bool>,
    },
    Resign(AlterIsr),
    /// A follower's fetch (one partition), from its incarnation `epoch`.
    Fetch {
        id: u64,
        epoch: i64,
        offset: Offset,
        current_epoch: LeaderEpoch,
        last_fetched_epoch: LeaderEpoch,
    },
    FetchAnswer {
        id: u64,
        response: FetchResponse,
    },
    Produce {
        attempt: u64,
        payload: Rc<Vec<u8>>,
    },
    /// The batch's base offset, and the leader epoch and incarnation of the broker that
    /// acknowledged it; or why not.
    ProduceAnswer {
        attempt: u64,
        result: Result<(Offset, (LeaderEpoch, i64)), String>,
    },
    MetadataAsk,
    MetadataAnswer {
        leader: i32,
    },
}

impl Msg {
    pub fn kind(&self) -> &'static str {
        match self {
            Msg::Heartbeat { .. } => "heartbeat",
            Msg::Image(_) => "image",
            Msg::AlterIsr(_) => "alter-isr",
            Msg::AlterIsrAnswer { .. } => "alter-isr-answer",
            Msg::Resign(_) => "resign",
            Msg::Fetch { .. } => "fetch",
            Msg::FetchAnswer { .. } => "fetch-answer",
            Msg::Produce { .. } => "produce",
            Msg::ProduceAnswer { .. } => "produce-answer",
            Msg::MetadataAsk => "metadata",
            Msg::MetadataAnswer { .. } => "metadata-answer",
        }
    }
}

pub struct Envelope {
    pub from: Node,
    pub to: Node,
    pub msg: Msg,
}

/// How the network misbehaves.
#[derive(Debug, Clone, Copy)]
pub struct NetFaults {
    /// Per thousand messages, how many are lost.
    pub drop_per_mille: u64,
    /// Each message takes 1..=this many milliseconds.
    pub delay_max_ms: u64,
}

pub struct Net {
    queue: BTreeMap<(Duration, u64), Envelope>,
    sequence: u64,
    /// Brokers cut off from every other endpoint until a time.
    isolated: BTreeMap<i32, Duration>,
    /// Brokers paused until a time.
    paused: BTreeMap<i32, Duration>,
    pub faults: NetFaults,
    pub dropped: u64,
}

impl Net {
    pub fn new(faults: NetFaults) -> Net {
        Net {
            queue: BTreeMap::new(),
            sequence: 0,
            isolated: BTreeMap::new(),
            paused: BTreeMap::new(),
            faults,
            dropped: 0,
        }
    }

    pub fn isolate(&mut self, broker: i32, until: Duration) {
        self.isolated.insert(broker, until);
    }

    pub fn pause(&mut self, broker: i32, until: Duration) {
        self.paused.insert(broker, until);
    }

    /// Ends every partition and pause.
    pub fn heal(&mut self) {
        self.isolated.clear();
        self.paused.clear();
    }

    /// When `broker`'s pause ends, if it is paused at `now`.
    pub fn paused_until(&self, broker: i32, now: Duration) -> Option<Duration> {
        self.paused.get(&broker).copied().filter(|t| *t > now)
    }

    pub fn is_isolated(&self, broker: i32, now: Duration) -> bool {
        self.isolated.get(&broker).is_some_and(|t| *t > now)
    }

    fn cut(&self, e: &Envelope, now: Duration) -> bool {
        [e.from, e.to]
            .iter()
            .any(|n| matches!(n, Node::Broker(b) if self.is_isolated(*b, now)))
    }

    /// Queues `e` for delivery after a random delay (after the sender's pause, if paused).
    pub fn send(&mut self, rng: &mut SplitMix, now: Duration, e: Envelope) {
        if self.cut(&e, now) || rng.below(1000) < self.faults.drop_per_mille {
            self.dropped += 1;
            return;
        }
        let mut at = now + Duration::from_millis(1 + rng.below(self.faults.delay_max_ms.max(1)));
        if let Node::Broker(b) = e.from {
            if let Some(until) = self.paused_until(b, now) {
                at = at.max(until);
            }
        }
        self.push(at, e);
    }

    fn push(&mut self, at: Duration, e: Envelope) {
        self.sequence += 1;
        self.queue.insert((at, self.sequence), e);
    }

    /// The messages due by `now`, in delivery order. A message to a paused broker waits for
    /// its resumption; one over a link cut meanwhile is lost.
    pub fn due(&mut self, now: Duration) -> Vec<Envelope> {
        let mut out = Vec::new();
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let e = entry.remove();
            if self.cut(&e, now) {
                self.dropped += 1;
                continue;
            }
            if let Node::Broker(b) = e.to {
                if let Some(until) = self.paused_until(b, now) {
                    self.push(until, e);
                    continue;
                }
            }
            out.push(e);
        }
        out
    }
}
