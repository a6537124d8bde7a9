//! Followers fetch from leaders over the Kafka protocol: one fetcher per (leader broker,
//! shard) carries every partition this shard follows from that leader on one connection, as
//! Fetch v15 requests whose replica state names this broker and its incarnation (its broker
//! epoch), which the leader checks against the metadata. A fetched batch is appended with the
//! storage's follower append (the leader's offsets and epochs kept); the next fetch, which
//! tells the leader this follower's position, is sent only once those appends are durable, so
//! the position a leader counts is always fdatasynced. A diverging epoch in the answer
//! (KIP-320) truncates the log to where the histories agree. Runs on: each shard, for the
//! partitions it owns. Invariants: a partition is fetched only while its replica follows this
//! fetcher's leader; a response frame is bounded before anything is allocated.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use kafka_protocol::messages::fetch_request::{
    FetchPartition, FetchRequest, FetchTopic, ReplicaState,
};
use kafka_protocol::messages::{ApiKey, BrokerId, FetchResponse, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::Replica;
use crate::constants::RESPONSE_BYTES_MAX;
use crate::protocol::types::{LeaderEpoch, Offset, TopicPartition};
use crate::runtime::env::Env;
use crate::runtime::io::{self, TcpStream};
use crate::storage::Partition;

use crate::protocol::versions::REPLICA_FETCH_VERSION;
/// How long a leader may hold a fetch that finds nothing new.
const FETCH_WAIT_MS: i32 = 500;
/// Bytes per partition and per response.
const PARTITION_FETCH_BYTES: i32 = 1024 * 1024;
const RESPONSE_FETCH_BYTES: i32 = 16 * 1024 * 1024;
/// How long a partition rests after its leader refused it (metadata is catching up).
const REFUSED_BACKOFF_MS: u64 = 200;

/// A partition this shard follows, and from whom.
pub struct Followed {
    pub tp: TopicPartition,
    pub topic_id: [u8; 16],
    pub replica: Rc<Replica>,
    pub leader: i32,
    pub addr: SocketAddr,
}

/// The fetchers of one shard, one per leader broker.
pub struct Fetchers {
    me: i32,
    /// This broker's incarnation, which leaders check.
    broker_epoch: Cell<i64>,
    env: Env,
    by_leader: RefCell<HashMap<i32, Rc<Fetcher>>>,
}

/// A followed partition's replica and topic id.
pub type Carried = (Rc<Replica>, [u8; 16]);

struct Fetcher {
    leader: i32,
    addr: Cell<SocketAddr>,
    partitions: RefCell<BTreeMap<TopicPartition, Carried>>,
    stopped: Cell<bool>,
}

impl Fetchers {
    pub fn new(me: i32, env: Env) -> Fetchers {
        Fetchers {
            me,
            broker_epoch: Cell::new(-1),
            env,
            by_leader: RefCell::new(HashMap::new()),
        }
    }

    /// This broker's incarnation (set once at start, before any fetcher runs).
    pub fn set_broker_epoch(&self, epoch: i64) {
        self.broker_epoch.set(epoch);
    }

    /// This broker's incarnation (-1 before start).
    pub fn broker_epoch(&self) -> i64 {
        self.broker_epoch.get()
    }

    /// Makes the fetchers carry exactly `wanted`: new leaders get a fetcher, fetchers of
    /// leaders no longer followed stop.
    pub fn assign(&self, wanted: Vec<Followed>) {
        let mut grouped: HashMap<i32, (SocketAddr, BTreeMap<TopicPartition, Carried>)> =
            HashMap::new();
        for f in wanted {
            let entry = grouped
                .entry(f.leader)
                .or_insert_with(|| (f.addr, BTreeMap::new()));
            entry.0 = f.addr;
            entry.1.insert(f.tp, (f.replica, f.topic_id));
        }
        let mut by_leader = self.by_leader.borrow_mut();
        by_leader.retain(|leader, fetcher| {
            let keep = grouped.contains_key(leader);
            if !keep {
                fetcher.stopped.set(true);
            }
            keep
        });
        for (leader, (addr, partitions)) in grouped {
            match by_leader.get(&leader) {
                Some(fetcher) => {
                    fetcher.addr.set(addr);
                    *fetcher.partitions.borrow_mut() = partitions;
                }
                None => {
                    let fetcher = Rc::new(Fetcher {
                        leader,
                        addr: Cell::new(addr),
                        partitions: RefCell::new(partitions),
                        stopped: Cell::new(false),
                    });
                    by_leader.insert(leader, fetcher.clone());
                    let me = (self.me, self.broker_epoch.get());
                    let env = self.env.clone();
                    io::spawn(async move { fetcher.run(me, env).await });
                }
            }
        }
    }
}

/// One partition in a fetch request: the follower's log end when asked (its position), at
/// which leader epoch.
pub struct Asked {
    pub tp: TopicPartition,
    pub topic_id: [u8; 16],
    pub replica: Rc<Replica>,
    pub epoch: LeaderEpoch,
    pub offset: Offset,
}

/// Partitions resting until a time after their leader refused them.
pub type Resting = HashMap<TopicPartition, Duration>;

impl Fetcher {
    /// `me`: this broker's id and incarnation.
    async fn run(self: Rc<Self>, me: (i32, i64), env: Env) {
        let mut stream: Option<TcpStream> = None;
        let mut correlation_id = 0i32;
        let mut resting = Resting::new();
        while !self.stopped.get() {
            let asked = to_ask(self.leader, &self.partitions.borrow(), &env, &mut resting);
            if asked.is_empty() {
                env.sleep(Duration::from_millis(20)).await;
                continue;
            }
            if stream.is_none() {
                match io::connect(self.addr.get()).await {
                    Ok(s) => {
                        let _ = s.set_nodelay(true);
                        stream = Some(s);
                    }
                    Err(e) => {
                        tracing::debug!(leader = self.leader, error = %e, "replica fetcher cannot connect");
                        env.sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                }
            }
            correlation_id = correlation_id.wrapping_add(1);
            let request = fetch_request(me, &asked);
            let s = stream.as_mut().expect("connected above");
            let wait = Duration::from_millis(FETCH_WAIT_MS as u64 + 5_000);
            let answer = env.timeout(wait, call(s, &request, correlation_id)).await;
            let response = match answer {
                Some(Ok(r)) => r,
                Some(Err(e)) => {
                    tracing::debug!(leader = self.leader, error = %e, "replica fetch failed");
                    stream = None;
                    env.sleep(Duration::from_millis(50)).await;
                    continue;
                }
                None => {
                    stream = None;
                    continue;
                }
            };
            apply(self.leader, &env, asked, response, &mut resting).await;
        }
    }
}

/// The partitions to fetch from `leader` now, at their durable log ends (the shared part of
/// every fetcher, the simulation's included).
pub fn to_ask(
    leader: i32,
    partitions: &BTreeMap<TopicPartition, Carried>,
    env: &Env,
    resting: &mut Resting,
) -> Vec<Asked> {
    let now = env.monotonic();
    resting.retain(|_, until| *until > now);
    let mut asked = Vec::new();
    for (tp, (replica, topic_id)) in partitions.iter() {
        let Some((following, epoch)) = replica.following() else {
            continue;
        };
        if following != leader || resting.contains_key(tp) {
            continue;
        }
        let log = replica.log().borrow();
        // Only what is durable may be reported, and appends must continue the log.
        if log.failure().is_some() || log.is_truncating() || log.flushed() != log.log_end() {
            continue;
        }
        asked.push(Asked {
            tp: tp.clone(),
            topic_id: *topic_id,
            replica: replica.clone(),
            epoch,
            offset: log.log_end(),
        });
    }
    asked
}

/// Appends what `leader` sent for `asked` (waiting until it is durable) and truncates where
/// it says the logs diverge.
pub async fn apply(
    leader: i32,
    env: &Env,
    asked: Vec<Asked>,
    response: FetchResponse,
    resting: &mut Resting,
) {
    let by_id: HashMap<([u8; 16], i32), Asked> = asked
        .into_iter()
        .map(|a| ((a.topic_id, a.tp.partition.0), a))
        .collect();
    let rest_until = env.monotonic() + Duration::from_millis(REFUSED_BACKOFF_MS);
    let mut appended = Vec::new();
    let mut starts = Vec::new();
    let mut restarts = Vec::new();
    for topic in response.responses {
        for p in topic.partitions {
            let key = (topic.topic_id.into_bytes(), p.partition_index);
            let Some(a) = by_id.get(&key) else { continue };
            let tp = a.tp.clone();
            // The role may have changed while the fetch was out.
            if a.replica.following() != Some((leader, a.epoch)) {
                continue;
            }
            let leader_start = Offset(p.log_start_offset);
            if p.error_code == crate::protocol::ErrorCode::OffsetOutOfRange.code()
                && leader_start > a.offset
            {
                restarts.push((a, leader_start));
                continue;
            }
            if p.error_code != 0 {
                tracing::debug!(partition = %tp, code = p.error_code, "leader refused a replica fetch");
                resting.insert(tp, rest_until);
                continue;
            }
            let d = &p.diverging_epoch;
            if d.epoch >= 0 || d.end_offset >= 0 {
                truncate(a, LeaderEpoch(d.epoch), Offset(d.end_offset)).await;
                continue;
            }
            let hwm = Offset(p.high_watermark);
            if leader_start > a.replica.log().borrow().log_start() {
                starts.push((a, leader_start));
            }
            match p.records.filter(|r| !r.is_empty()) {
                Some(records) => {
                    let log = a.replica.log();
                    match Partition::append_follower(log, records) {
                        Ok(done) => appended.push((a, done, hwm)),
                        Err(e) => {
                            tracing::warn!(partition = %tp, error = %e, "follower append refused");
                            resting.insert(tp, env.monotonic() + Duration::from_secs(1));
                        }
                    }
                }
                None => a.replica.follow_high_watermark(hwm),
            }
        }
    }
    for (a, done, hwm) in appended {
        match done.await {
            Ok(Ok(())) => a.replica.follow_high_watermark(hwm),
            Ok(Err(e)) => {
                tracing::warn!(partition = %a.tp, error = %e, "follower write failed")
            }
            Err(_) => tracing::warn!(partition = %a.tp, "follower writer went away"),
        }
    }
    // The leader's log start (its retention) reaches the follower: whole segments below
    // it go here too (below this follower's high watermark only).
    for (a, start) in starts {
        // Only while still following that leader (the appends above awaited): a leader's
        // own log start is its own business.
        if a.replica.following() == Some((leader, a.epoch)) {
            crate::storage::delete_segments_before(a.replica.log(), start).await;
        }
    }
    // Below the leader's log start: nothing here continues its log.
    for (a, start) in restarts {
        if a.replica.following() != Some((leader, a.epoch)) {
            continue;
        }
        tracing::warn!(partition = %a.tp, end = a.offset.0, leader_start = start.0,
            "follower is below its leader's log start; starting over there");
        if let Err(e) = Partition::restart_at(a.replica.log(), start).await {
            tracing::warn!(partition = %a.tp, error = %e, "restarting the follower log failed");
            resting.insert(a.tp.clone(), rest_until);
        }
    }
}

/// Cuts the follower's log where it leaves the leader's history: at the leader's end of
/// `epoch`, or earlier where this log's own `epoch` (or the one before it) ends.
async fn truncate(a: &Asked, epoch: LeaderEpoch, leader_end: Offset) {
    let log = a.replica.log();
    let target = {
        let p = log.borrow();
        let own_end = if epoch.0 < 0 {
            p.log_start()
        } else {
            match p.epochs().end_offset_for(epoch, p.log_end()) {
                Some((_, end)) => end,
                None => p.log_start(),
            }
        };
        let leader_end = if leader_end.0 < 0 {
            p.log_start()
        } else {
            leader_end
        };
        own_end.min(leader_end).max(p.log_start())
    };
    tracing::info!(partition = %a.tp, to = target.0, epoch = epoch.0, "follower truncates to the leader's history");
    if let Err(e) = Partition::truncate_to(log, target).await {
        tracing::warn!(partition = %a.tp, error = %e, "follower truncation failed");
    }
}

fn fetch_request(me: (i32, i64), asked: &[Asked]) -> FetchRequest {
    let mut topics: BTreeMap<[u8; 16], Vec<FetchPartition>> = BTreeMap::new();
    for a in asked {
        let p = a.replica.log().borrow();
        let last_fetched_epoch = p.epochs().latest().map_or(-1, |(e, _)| e.0);
        topics.entry(a.topic_id).or_default().push(
            FetchPartition::default()
                .with_partition(a.tp.partition.0)
                .with_current_leader_epoch(a.epoch.0)
                .with_fetch_offset(a.offset.0)
                .with_last_fetched_epoch(last_fetched_epoch)
                .with_log_start_offset(p.log_start().0)
                .with_partition_max_bytes(PARTITION_FETCH_BYTES),
        );
    }
    FetchRequest::default()
        .with_replica_state(
            ReplicaState::default()
                .with_replica_id(BrokerId(me.0))
                .with_replica_epoch(me.1),
        )
        .with_max_wait_ms(FETCH_WAIT_MS)
        .with_min_bytes(1)
        .with_max_bytes(RESPONSE_FETCH_BYTES)
        .with_session_epoch(-1)
        .with_topics(
            topics
                .into_iter()
                .map(|(topic_id, partitions)| {
                    FetchTopic::default()
                        .with_topic_id(uuid::Uuid::from_bytes(topic_id))
                        .with_partitions(partitions)
                })
                .collect(),
        )
}

/// Sends one Fetch and reads its response.
async fn call(
    stream: &mut TcpStream,
    request: &FetchRequest,
    correlation_id: i32,
) -> std::io::Result<FetchResponse> {
    let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::Fetch as i16)
        .with_request_api_version(REPLICA_FETCH_VERSION)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("tusk-replica-fetcher")));
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    let header_version = ApiKey::Fetch.request_header_version(REPLICA_FETCH_VERSION);
    header
        .encode(&mut buf, header_version)
        .map_err(|e| invalid(e.to_string()))?;
    request
        .encode(&mut buf, REPLICA_FETCH_VERSION)
        .map_err(|e| invalid(e.to_string()))?;
    let size = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    stream.write_all(&buf).await?;
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).await?;
    let size = i32::from_be_bytes(size);
    if size < 4 || size as usize > RESPONSE_BYTES_MAX {
        return Err(invalid(format!("a fetch response of {size} bytes")));
    }
    let mut body = vec![0u8; size as usize];
    stream.read_exact(&mut body).await?;
    let mut body = Bytes::from(body);
    let header_version = ApiKey::Fetch.response_header_version(REPLICA_FETCH_VERSION);
    let header =
        ResponseHeader::decode(&mut body, header_version).map_err(|e| invalid(e.to_string()))?;
    if header.correlation_id != correlation_id {
        return Err(invalid(format!(
            "response {} to request {correlation_id}",
            header.correlation_id
        )));
    }
    FetchResponse::decode(&mut body, REPLICA_FETCH_VERSION).map_err(|e| invalid(e.to_string()))
}
