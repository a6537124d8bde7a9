//! The shard's replicas in a cluster: each partition's role from the metadata image (leader,
//! follower, offline), the fetchers that follow leaders, the leader's side of a follower's
//! fetch, and the ISR changes leaders ask the controller for. Runs on: every shard, for the
//! partitions it owns. Invariants: roles change only when an image is installed (the image is
//! the only source of leadership); a fetcher carries exactly the partitions this shard follows
//! from live leaders.

use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::Duration;

use super::messages::{PartitionError, PartitionResponse};
use super::Shard;
use crate::cluster::controller::{ControllerError, ControllerOp};
use crate::cluster::elect::AlterIsr;
use crate::cluster::MetadataImage;
use crate::constants::ISR_CHANGES_PER_REQUEST_MAX;
use crate::protocol::types::{LeaderEpoch, Offset, TopicPartition};
use crate::replication::fetcher::Followed;
use crate::replication::{Error as ReplicaError, RoleView};
use crate::storage::{FetchRecords, Partition};

/// How often leaders check their followers' lag.
const ISR_CHECK_INTERVAL_MS: u64 = 250;

impl Shard {
    /// The role the image gives this broker for `tp` (`None`: not a cluster, or `tp` is not
    /// assigned).
    pub fn role_view(&self, image: &MetadataImage, tp: &TopicPartition) -> Option<RoleView> {
        self.config.cluster.as_ref()?;
        let p = u32::try_from(tp.partition.0).ok()?;
        let (a, isr) = image.partition(&tp.topic, p)?;
        let min_isr = image
            .topics
            .get(&tp.topic)
            .and_then(|t| t.configs.get("min.insync.replicas"))
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(self.config.min_insync_replicas as usize);
        Some(RoleView {
            me: self.config.node_id.0,
            leader: a.leader,
            epoch: LeaderEpoch(a.leader_epoch),
            replicas: a.replicas.clone(),
            isr: isr.to_vec(),
            min_insync: min_isr.clamp(1, a.replicas.len().max(1)),
        })
    }

    /// Whether `image` holds this broker's current incarnation. Until it does, every replica
    /// here is offline: an image replayed at start may still name this broker leader at an
    /// epoch its previous incarnation held (with a log that lost its unsynced tail since);
    /// registering fences that incarnation and elects anew first. (Found by the simulation.)
    pub fn registered(&self, image: &MetadataImage) -> bool {
        let me = self.config.node_id.0;
        let epoch = self.fetchers.broker_epoch();
        image.brokers.get(&me).is_some_and(|b| b.epoch == epoch)
    }

    /// Gives every replica its role from the current image and the fetchers the partitions
    /// this shard follows.
    pub fn refresh_replication(&self) {
        if self.config.cluster.is_none() {
            return;
        }
        let image = self.image();
        let me = self.config.node_id.0;
        let registered = self.registered(&image);
        let mut wanted = Vec::new();
        for (tp, replica) in self.all_replicas() {
            // An offsets partition is open on its owner shard of every broker; only the
            // brokers among its replicas take part (a user partition is open only there).
            let view = self
                .role_view(&image, &tp)
                .filter(|v| registered && v.replicas.contains(&me))
                .unwrap_or_else(|| self.offline_view());
            let leader = view.leader;
            replica.set_role(view);
            if leader < 0 || leader == me {
                continue;
            }
            let Some(addr) = broker_addr(&image, leader) else {
                continue;
            };
            let Some(topic_id) = image.topic_id_of(&tp.topic) else {
                continue;
            };
            wanted.push(Followed {
                tp,
                topic_id,
                replica,
                leader,
                addr,
            });
        }
        self.fetchers.assign(wanted);
        self.refresh_coordination();
    }

    /// (partitions led here with an ISR smaller than their replicas, the largest follower lag
    /// in records) over `partitions`.
    pub(super) fn replication_gauges(&self) -> (u64, u64) {
        if self.config.cluster.is_none() {
            return (0, 0);
        }
        let image = self.image();
        let (mut under, mut lag_max) = (0u64, 0u64);
        for (tp, replica) in self.all_replicas() {
            if replica.leading_epoch().is_none() {
                continue;
            }
            if let Some(view) = self.role_view(&image, &tp) {
                if view.isr.len() < view.replicas.len() {
                    under += 1;
                }
            }
            let end = replica.log().borrow().log_end().0;
            for (_, at) in replica.follower_ends() {
                let lag = if at.0 < 0 { end } else { end - at.0 };
                lag_max = lag_max.max(lag.max(0) as u64);
            }
        }
        (under, lag_max)
    }

    /// The leader's side of a follower's fetch: checked and recorded, then read (up to what
    /// this leader has written, synced or not).
    pub async fn replica_fetch(
        &self,
        tp: &TopicPartition,
        follower: i32,
        offset: Offset,
        current_epoch: LeaderEpoch,
        last_fetched_epoch: LeaderEpoch,
        max_bytes: usize,
    ) -> PartitionResponse {
        let Some(replica) = self.any_replica(tp) else {
            return refused(PartitionError::NotLeader);
        };
        let part = replica.log().clone();
        let (hwm, log_start) = {
            let p = part.borrow();
            (p.high_watermark(), p.log_start())
        };
        match replica.follower_fetch(follower, offset, current_epoch, last_fetched_epoch) {
            Err(e) => refused(replica_error(e)),
            Ok(Some((epoch, end))) => PartitionResponse::ReplicaFetch {
                error: None,
                high_watermark: hwm,
                log_start,
                records: FetchRecords::Memory(bytes::Bytes::new()),
                diverging: Some((epoch, end)),
            },
            Ok(None) => match Partition::read_for_follower(&part, offset, max_bytes).await {
                Ok(r) => PartitionResponse::ReplicaFetch {
                    error: None,
                    high_watermark: r.high_watermark,
                    log_start: r.log_start,
                    records: FetchRecords::Memory(r.records),
                    diverging: None,
                },
                // The follower's log ends below this log's start: it is told where that is,
                // and starts over there.
                Err(crate::storage::Error::OffsetOutOfRange) => PartitionResponse::ReplicaFetch {
                    error: Some(PartitionError::OffsetOutOfRange),
                    high_watermark: hwm,
                    log_start: part.borrow().log_start(),
                    records: FetchRecords::Memory(bytes::Bytes::new()),
                    diverging: None,
                },
                Err(e) => refused(PartitionError::Storage(e)),
            },
        }
    }

    /// Leaders' ISR changes, asked of the controller, for as long as the shard runs: each
    /// check's changes go together (`ControllerOp::AlterIsrs`, at most
    /// `ISR_CHANGES_PER_REQUEST_MAX` per request).
    pub async fn maintain_isr(self: Rc<Self>) {
        let lag = Duration::from_millis(self.config.replica_lag_time_max_ms);
        loop {
            self.env
                .sleep(Duration::from_millis(ISR_CHECK_INTERVAL_MS))
                .await;
            let image = self.image();
            let mut asked: Vec<IsrAsk> = Vec::new();
            for (tp, replica) in self.all_replicas() {
                if let Some(epoch) = replica.resignation() {
                    self.resign(&tp, epoch);
                    continue;
                }
                let Some((isr, epoch)) = replica.isr_change(lag) else {
                    continue;
                };
                tracing::info!(partition = %tp, ?isr, "asking the controller for a new ISR");
                let before = self.role_view(&image, &tp).map_or(0, |v| v.isr.len());
                let req = AlterIsr {
                    topic: tp.topic.to_string(),
                    partition: tp.partition.0 as u32,
                    leader: self.config.node_id.0,
                    leader_epoch: epoch.0,
                    isr,
                };
                asked.push(IsrAsk {
                    tp,
                    replica,
                    req,
                    before,
                });
            }
            drop(image);
            // In partition order, so a check's requests are the same whatever the map's order.
            asked.sort_by(|a, b| a.tp.cmp(&b.tp));
            while !asked.is_empty() {
                let rest = asked.split_off(asked.len().min(ISR_CHANGES_PER_REQUEST_MAX));
                let batch = std::mem::replace(&mut asked, rest);
                let shard = self.clone();
                crate::runtime::io::spawn(async move { shard.ask_isr_changes(batch).await });
            }
        }
    }

    /// Sends one batch of ISR changes and acts on each answer.
    async fn ask_isr_changes(self: Rc<Self>, batch: Vec<IsrAsk>) {
        let op = ControllerOp::AlterIsrs(batch.iter().map(|a| a.req.clone()).collect());
        let answers = super::metadata::ask(&self, op).await.unwrap_or_default();
        for (i, a) in batch.into_iter().enumerate() {
            let tp = &a.tp;
            match answers.get(i) {
                // Committed: the pending ISR clears once the metadata shows it. (Clearing it
                // on the answer alone is unsafe where the answer can overtake the image: a
                // member being added would stop counting for the high watermark before the
                // leader sees it in the ISR. The simulation found that, seed 9.)
                Some(Ok(_)) => {}
                // Refused for certain: forget it (the next check asks anew).
                Some(Err(
                    e @ (ControllerError::StaleLeader(_)
                    | ControllerError::InvalidConfig(_)
                    | ControllerError::UnknownTopic(_)),
                )) => {
                    tracing::info!(partition = %tp, error = %e.message(), "ISR change refused");
                    a.replica.isr_change_refused();
                    continue;
                }
                // The outcome is unknown (no quorum in time, no controller): it may still
                // commit, so a member being added keeps counting for the high watermark until
                // the leader asks again.
                other => {
                    tracing::info!(partition = %tp, answer = ?other, "ISR change outcome unknown");
                    continue;
                }
            }
            let after = a.req.isr.len();
            crate::metrics::with(|m| {
                use std::sync::atomic::Ordering::Relaxed;
                if after < a.before {
                    m.isr_shrinks.fetch_add(1, Relaxed);
                } else if after > a.before {
                    m.isr_expands.fetch_add(1, Relaxed);
                }
            });
        }
    }
}

/// One partition's ISR change, as asked.
struct IsrAsk {
    tp: TopicPartition,
    replica: Rc<crate::replication::Replica>,
    req: AlterIsr,
    /// The ISR's size in the metadata when asked.
    before: usize,
}

impl Shard {
    /// Asks the controller to move a partition whose log failed to another in-sync replica.
    fn resign(self: &Rc<Self>, tp: &TopicPartition, epoch: LeaderEpoch) {
        tracing::warn!(partition = %tp, "its log failed; asking to hand leadership over");
        let op = ControllerOp::Resign(AlterIsr {
            topic: tp.topic.to_string(),
            partition: tp.partition.0 as u32,
            leader: self.config.node_id.0,
            leader_epoch: epoch.0,
            isr: Vec::new(),
        });
        let shard = self.clone();
        crate::runtime::io::spawn(async move {
            let _ = super::metadata::ask(&shard, op).await;
        });
    }
}

/// The leader's throttle on catch-up replication: a token bucket of this shard's share of
/// `replication_throttle_bytes_per_sec`, at most one second of it banked.
#[derive(Default)]
pub struct ReplicationThrottle {
    /// (bytes that may still go, when last refilled).
    state: std::cell::Cell<(f64, Duration)>,
}

impl Shard {
    /// Whether `bytes` may go to a follower outside the ISR now (charged if so; a response
    /// may overdraw the bucket, which the next ones then wait out). Always when unthrottled.
    pub fn take_replication_tokens(&self, bytes: usize) -> bool {
        let rate = self.replication_rate();
        if rate <= 0.0 || bytes == 0 {
            return true;
        }
        let now = self.env.monotonic();
        let (tokens, last) = self.replication_throttle.state.get();
        let refilled = (tokens + now.saturating_sub(last).as_secs_f64() * rate).min(rate);
        if refilled <= 0.0 {
            self.replication_throttle.state.set((refilled, now));
            crate::metrics::with(|m| {
                m.replication_throttled_bytes
                    .fetch_add(bytes as u64, std::sync::atomic::Ordering::Relaxed);
            });
            return false;
        }
        self.replication_throttle
            .state
            .set((refilled - bytes as f64, now));
        true
    }

    /// How long until the throttle lets bytes go again.
    pub fn replication_refill_wait(&self) -> Duration {
        let rate = self.replication_rate();
        let (tokens, _) = self.replication_throttle.state.get();
        if rate <= 0.0 || tokens > 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(-tokens / rate + 0.001)
    }

    /// This shard's share of the throttle, bytes/s (0: none).
    fn replication_rate(&self) -> f64 {
        self.config.replication_throttle_bytes_per_sec as f64 / self.shard_count as f64
    }
}

/// How long a clean stop waits for its partitions' leadership to move (Kafka's controlled
/// shutdown); past it the broker stops anyway and its partitions fail over as after a crash.
const CONTROLLED_SHUTDOWN_MS: u64 = 10_000;

impl Shard {
    /// A clean stop in a cluster: the controller shard asks the active controller to move
    /// this broker's leadership away (`epoch`: this incarnation), and every shard waits until
    /// the image it installed leads nothing here, so clients are told NOT_LEADER_OR_FOLLOWER
    /// (and follow) before the broker goes, instead of finding it gone.
    pub async fn controlled_shutdown(self: &Rc<Self>, epoch: i64) {
        if self.config.cluster.is_none() {
            return;
        }
        let deadline = self.env.monotonic() + Duration::from_millis(CONTROLLED_SHUTDOWN_MS);
        if self.controller.is_some() {
            let op = ControllerOp::ShutDownBroker {
                node_id: self.config.node_id.0,
                epoch,
            };
            let wait = Duration::from_millis(CONTROLLED_SHUTDOWN_MS);
            let answer = self.env.timeout(wait, super::metadata::ask(self, op)).await;
            tracing::info!(?answer, "controlled shutdown asked of the controller");
        }
        loop {
            let leading = self
                .all_replicas()
                .iter()
                .filter(|(_, r)| r.leading_epoch().is_some())
                .count();
            if leading == 0 || self.env.monotonic() >= deadline {
                if leading > 0 {
                    tracing::warn!(leading, "stopping while still leading partitions");
                }
                return;
            }
            self.env.sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A replica fetch's answer when it cannot be served.
fn refused(error: PartitionError) -> PartitionResponse {
    PartitionResponse::ReplicaFetch {
        error: Some(error),
        high_watermark: Offset(-1),
        log_start: Offset(-1),
        records: FetchRecords::Memory(bytes::Bytes::new()),
        diverging: None,
    }
}

/// A replica's refusal as the shard layer says it.
pub fn replica_error(e: ReplicaError) -> PartitionError {
    match e {
        ReplicaError::Storage(e) => PartitionError::Storage(e),
        ReplicaError::NotLeader | ReplicaError::NotAReplica => PartitionError::NotLeader,
        ReplicaError::NotEnoughReplicas => PartitionError::NotEnoughReplicas,
        ReplicaError::NotEnoughReplicasAfterAppend => PartitionError::NotEnoughReplicasAfterAppend,
        ReplicaError::TimedOut => PartitionError::TimedOut,
        ReplicaError::FencedLeaderEpoch => PartitionError::FencedLeaderEpoch,
        ReplicaError::UnknownLeaderEpoch => PartitionError::UnknownLeaderEpoch,
    }
}

/// Where a live broker of the image listens for Kafka clients.
fn broker_addr(image: &MetadataImage, node_id: i32) -> Option<SocketAddr> {
    let b = image.brokers.get(&node_id).filter(|b| !b.fenced)?;
    if let Ok(ip) = b.host.parse::<std::net::IpAddr>() {
        return Some(SocketAddr::new(ip, b.port));
    }
    (b.host.as_str(), b.port).to_socket_addrs().ok()?.next()
}
