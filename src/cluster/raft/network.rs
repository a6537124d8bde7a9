//! Raft's messages between brokers, over TCP between their controller listeners. A message is
//! one frame, `[length u32 BE][JSON]`, of a `Request` one way and a `Response` back; a
//! connection carries one request at a time (openraft calls a peer's client sequentially).
//! Runs on: the controller shard of each broker (client connections and the listener's
//! connections alike). Invariants: a frame's length is checked against `RAFT_RPC_BYTES_MAX`
//! before anything is allocated; a request that fails or times out drops its connection (its
//! byte stream may be mid-frame), and the next request connects again; a peer that cannot be
//! reached is reported `Unreachable`, so openraft backs off instead of spinning.

use std::net::SocketAddr;
use std::time::Duration;

use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use openraft::errors::{
    Fatal, NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::v2::RaftNetworkV2;
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, OptionalSend};
use serde::{Deserialize, Serialize};

use super::{MetadataRaft, Snapshot, SnapshotData, SnapshotMeta, TypeConfig, Vote};
use crate::cluster::controller::{ControllerAnswer, ControllerOp};
use crate::constants::RAFT_RPC_BYTES_MAX;
use crate::runtime::env::Env;
use crate::runtime::io::{self, TcpListener, TcpStream};

/// Largest answer a peer sends (votes, append and snapshot acknowledgements are small).
const RESPONSE_BYTES_MAX: usize = 1024 * 1024;
/// A peer's connection with no message for this long is closed (heartbeats come every
/// 250 ms; a silent connection holds a task and a descriptor for nothing).
const IDLE_CONNECTION_MS: u64 = 60_000;
/// Connections one member answers at once: a few per voter (openraft opens a client per
/// peer, and one more for snapshots), so a stray client cannot hold unbounded memory.
const CONNECTIONS_PER_VOTER: usize = 4;

/// One Raft message to a peer.
#[derive(Serialize, Deserialize)]
enum Request {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<TypeConfig>),
    PreVote(VoteRequest<TypeConfig>),
    /// The snapshot's bytes are JSON text (`state_machine`), so they travel as a string: a
    /// byte array in JSON would take four times the space.
    Snapshot {
        vote: Vote,
        meta: SnapshotMeta,
        data: String,
    },
    /// A change for the active controller, forwarded by another broker (KIP-590's
    /// forwarding), or a broker's heartbeat.
    Controller(ControllerOp),
}

/// The peer's answer.
#[derive(Serialize, Deserialize)]
enum Response {
    Append(AppendEntriesResponse<TypeConfig>),
    Vote(VoteResponse<TypeConfig>),
    Snapshot(SnapshotResponse<TypeConfig>),
    Controller(ControllerAnswer),
    /// The peer's Raft refused or failed (stopped, or a fatal storage error).
    Error(String),
}

/// What answers forwarded controller changes on this broker (set once the broker's shards
/// run; until then a forwarded change is refused).
pub type ControllerHandler = std::rc::Rc<
    dyn Fn(ControllerOp) -> std::pin::Pin<Box<dyn std::future::Future<Output = ControllerAnswer>>>,
>;

/// The slot the listener looks the handler up in.
pub type HandlerSlot = std::rc::Rc<std::cell::RefCell<Option<ControllerHandler>>>;

/// Longest a forwarded change may take (a topic of 10,000 partitions is 157 records).
pub const FORWARD_TIMEOUT_MS: u64 = 30_000;
/// Largest answer to a forwarded change (one result per item of a bounded request).
const FORWARD_ANSWER_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Why a forwarded change got no answer.
#[derive(Debug)]
pub struct ForwardError {
    pub why: String,
    /// Nothing listens at the controller address (ECONNREFUSED): the broker's process is gone,
    /// which a silent one (hung, or its host unreachable) is not known to be.
    pub refused: bool,
}

impl std::fmt::Display for ForwardError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.why)
    }
}

/// Sends `op` to the controller listener at `addr` and returns its answer within `timeout_ms`
/// (at most `FORWARD_TIMEOUT_MS`): one connection per call (changes and heartbeats are few),
/// closed after it.
pub async fn forward(
    env: &Env,
    addr: SocketAddr,
    op: ControllerOp,
    timeout_ms: u64,
) -> Result<ControllerAnswer, ForwardError> {
    let timeout_ms = timeout_ms.min(FORWARD_TIMEOUT_MS);
    let failed = |why: String| ForwardError {
        why: format!("{addr}: {why}"),
        refused: false,
    };
    let call = async {
        let mut stream = io::connect(addr).await.map_err(|e| ForwardError {
            why: format!("{addr}: {e}"),
            refused: e.kind() == std::io::ErrorKind::ConnectionRefused,
        })?;
        let _ = stream.set_nodelay(true);
        write_frame(&mut stream, &Request::Controller(op))
            .await
            .map_err(|e| failed(e.to_string()))?;
        match read_frame::<Response>(&mut stream, FORWARD_ANSWER_BYTES_MAX).await {
            Ok(Some(Response::Controller(answer))) => Ok(answer),
            Ok(Some(Response::Error(why))) => Err(failed(why)),
            Ok(_) => Err(failed("no answer".into())),
            Err(e) => Err(failed(e.to_string())),
        }
    };
    env.timeout(Duration::from_millis(timeout_ms), call)
        .await
        .unwrap_or_else(|| Err(failed(format!("no answer within {timeout_ms} ms"))))
}

/// Why a call failed, before openraft's error types are chosen.
enum CallError {
    /// No connection could be made: back off.
    Unreachable(String),
    /// The connection broke mid-call, or the peer answered garbage: retry.
    Network(String),
    Timeout,
}

async fn write_frame<T: Serialize>(stream: &mut TcpStream, value: &T) -> std::io::Result<()> {
    let body = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    if body.len() > RAFT_RPC_BYTES_MAX {
        return Err(std::io::Error::other(format!(
            "a Raft message of {} bytes is over the {RAFT_RPC_BYTES_MAX} a peer accepts",
            body.len()
        )));
    }
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend((body.len() as u32).to_be_bytes());
    frame.extend(body);
    stream.write_all(&frame).await
}

/// Reads one frame; `Ok(None)` at a clean end of stream.
async fn read_frame<T: for<'a> Deserialize<'a>>(
    stream: &mut TcpStream,
    bytes_max: usize,
) -> std::io::Result<Option<T>> {
    let mut size = [0u8; 4];
    match stream.read_exact(&mut size).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(size) as usize;
    if len == 0 || len > bytes_max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a Raft frame of {len} bytes (at most {bytes_max})"),
        ));
    }
    // Grown as bytes arrive, not reserved from the length: a peer that announces a large
    // frame and sends nothing holds nothing.
    let mut body = Vec::new();
    (&mut *stream)
        .take(len as u64)
        .read_to_end(&mut body)
        .await?;
    if body.len() != len {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Makes a client per peer (openraft's network factory).
pub struct Network {
    env: Env,
    node_id: u64,
    refusals: PeerRefusals,
}

impl Network {
    pub fn new(env: Env, node_id: u64, refusals: PeerRefusals) -> Network {
        Network {
            env,
            node_id,
            refusals,
        }
    }
}

/// When each peer's controller listener last refused a connection from this member's Raft
/// (nothing listens: its process is gone). The active controller fences such a broker at
/// once instead of waiting out its session (`shard::cluster`).
#[derive(Clone, Default)]
pub struct PeerRefusals(std::rc::Rc<std::cell::RefCell<std::collections::HashMap<u64, Duration>>>);

impl PeerRefusals {
    fn note(&self, peer: u64, at: Duration) {
        self.0.borrow_mut().insert(peer, at);
    }

    /// The refusals noted since the last call: (peer, when).
    pub fn take(&self) -> Vec<(u64, Duration)> {
        self.0.borrow_mut().drain().collect()
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Peer {
        Peer {
            env: self.env.clone(),
            node_id: self.node_id,
            refusals: self.refusals.clone(),
            target,
            addr: node.addr.parse().ok(),
            raw_addr: node.addr.clone(),
            stream: None,
        }
    }
}

/// The client of one peer: at most one connection, one call at a time.
pub struct Peer {
    env: Env,
    node_id: u64,
    refusals: PeerRefusals,
    target: u64,
    addr: Option<SocketAddr>,
    raw_addr: String,
    stream: Option<TcpStream>,
}

impl Peer {
    async fn call(&mut self, request: &Request, ttl: Duration) -> Result<Response, CallError> {
        let env = self.env.clone();
        match env.timeout(ttl, self.call_once(request)).await {
            Some(Ok(r)) => Ok(r),
            Some(Err(e)) => {
                self.stream = None;
                Err(e)
            }
            None => {
                self.stream = None;
                Err(CallError::Timeout)
            }
        }
    }

    async fn call_once(&mut self, request: &Request) -> Result<Response, CallError> {
        if self.stream.is_none() {
            let addr = self.addr.ok_or_else(|| {
                CallError::Unreachable(format!(
                    "node {} has no usable address `{}`",
                    self.target, self.raw_addr
                ))
            })?;
            let stream = io::connect(addr).await.map_err(|e| {
                if e.kind() == std::io::ErrorKind::ConnectionRefused {
                    self.refusals.note(self.target, self.env.monotonic());
                }
                CallError::Unreachable(format!("node {} at {addr}: {e}", self.target))
            })?;
            let _ = stream.set_nodelay(true);
            self.stream = Some(stream);
        }
        let stream = self.stream.as_mut().expect("connected above");
        let network = |e: std::io::Error| CallError::Network(e.to_string());
        write_frame(stream, request).await.map_err(network)?;
        match read_frame::<Response>(stream, RESPONSE_BYTES_MAX)
            .await
            .map_err(network)?
        {
            Some(Response::Error(why)) => Err(CallError::Unreachable(why)),
            Some(r) => Ok(r),
            None => Err(CallError::Network("the peer closed the connection".into())),
        }
    }

    fn rpc_error(
        &self,
        e: CallError,
        option: &RPCOption,
        action: openraft::network::RPCTypes,
    ) -> RPCError<TypeConfig> {
        match e {
            CallError::Unreachable(why) => {
                RPCError::Unreachable(Unreachable::new(&std::io::Error::other(why)))
            }
            CallError::Network(why) => {
                RPCError::Network(NetworkError::new(&std::io::Error::other(why)))
            }
            CallError::Timeout => RPCError::Timeout(openraft::errors::Timeout {
                action,
                id: self.node_id,
                target: self.target,
                timeout: option.hard_ttl(),
            }),
        }
    }

    fn unexpected() -> CallError {
        CallError::Network("the peer answered another kind of message".into())
    }

    async fn vote_call(
        &mut self,
        request: Request,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(&request, option.hard_ttl()).await {
            Ok(Response::Vote(r)) => Ok(r),
            Ok(_) => Err(self.rpc_error(
                Self::unexpected(),
                &option,
                openraft::network::RPCTypes::Vote,
            )),
            Err(e) => Err(self.rpc_error(e, &option, openraft::network::RPCTypes::Vote)),
        }
    }
}

impl RaftNetworkV2<TypeConfig> for Peer {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let action = openraft::network::RPCTypes::AppendEntries;
        match self.call(&Request::Append(rpc), option.hard_ttl()).await {
            Ok(Response::Append(r)) => Ok(r),
            Ok(_) => Err(self.rpc_error(Self::unexpected(), &option, action)),
            Err(e) => Err(self.rpc_error(e, &option, action)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.vote_call(Request::Vote(rpc), option).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.vote_call(Request::PreVote(rpc), option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        _cancel: impl std::future::Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let action = openraft::network::RPCTypes::InstallSnapshot;
        let data = String::from_utf8(snapshot.snapshot.into_inner()).map_err(|_| {
            StreamingError::from(self.rpc_error(
                CallError::Network("a metadata snapshot that is not JSON text".into()),
                &option,
                action,
            ))
        })?;
        let request = Request::Snapshot {
            vote,
            meta: snapshot.meta,
            data,
        };
        match self.call(&request, option.hard_ttl()).await {
            Ok(Response::Snapshot(r)) => Ok(r),
            Ok(_) => Err(self.rpc_error(Self::unexpected(), &option, action).into()),
            Err(e) => Err(self.rpc_error(e, &option, action).into()),
        }
    }
}

/// When this member last received an append (entries or a heartbeat) from a leader: a
/// controller that still sends them is alive, whatever else refused a connection to it.
#[derive(Clone)]
pub struct LeaderContact {
    env: Env,
    last: std::rc::Rc<std::cell::Cell<Option<Duration>>>,
}

impl LeaderContact {
    pub fn new(env: &Env) -> LeaderContact {
        LeaderContact {
            env: env.clone(),
            last: Default::default(),
        }
    }

    fn touch(&self) {
        self.last.set(Some(self.env.monotonic()));
    }

    /// How long since the last append (`None`: none since the start).
    pub fn silence(&self) -> Option<Duration> {
        let last = self.last.get()?;
        Some(self.env.monotonic().saturating_sub(last))
    }
}

/// Answers Raft messages from peers on `listener` for as long as the returned task lives, on
/// at most `CONNECTIONS_PER_VOTER` connections per voter (more are closed at once).
pub fn serve(
    listener: TcpListener,
    raft: MetadataRaft,
    voters: usize,
    handler: HandlerSlot,
    contact: LeaderContact,
) -> io::Task<()> {
    let open = std::rc::Rc::new(std::cell::Cell::new(0usize));
    io::spawn_joinable(async move {
        // The first refusal is logged, then every 10,000th with the count: a peer retrying at
        // once must not fill the disk with the same line.
        let mut refused = 0u64;
        loop {
            match listener.accept().await {
                Ok(stream) if open.get() >= CONNECTIONS_PER_VOTER * voters => {
                    refused += 1;
                    if refused == 1 || refused.is_multiple_of(10_000) {
                        tracing::warn!(
                            refused,
                            "refusing Raft connections: {} are open",
                            open.get()
                        );
                    }
                    drop(stream);
                }
                Ok(stream) => {
                    let raft = raft.clone();
                    let open = open.clone();
                    let handler = handler.clone();
                    let contact = contact.clone();
                    open.set(open.get() + 1);
                    io::spawn(async move {
                        serve_connection(stream, raft, handler, contact).await;
                        open.set(open.get() - 1);
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "controller listener accept failed; retrying");
                    io::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
}

async fn serve_connection(
    mut stream: TcpStream,
    raft: MetadataRaft,
    handler: HandlerSlot,
    contact: LeaderContact,
) {
    let _ = stream.set_nodelay(true);
    loop {
        let idle = Duration::from_millis(IDLE_CONNECTION_MS);
        let read = io::timeout(idle, read_frame::<Request>(&mut stream, RAFT_RPC_BYTES_MAX));
        let request = match read.await {
            None => return,
            Some(Ok(Some(r))) => r,
            Some(Ok(None)) => return,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "dropping a Raft connection that sent a bad frame");
                return;
            }
        };
        let response = match request {
            Request::Controller(op) => {
                let handler = handler.borrow().clone();
                match handler {
                    Some(h) => Response::Controller(h(op).await),
                    None => Response::Error("this broker is still starting".into()),
                }
            }
            Request::Append(rpc) => {
                contact.touch();
                answer(&raft, Request::Append(rpc)).await
            }
            other => answer(&raft, other).await,
        };
        if write_frame(&mut stream, &response).await.is_err() {
            return;
        }
    }
}

fn refused<E: std::fmt::Display>(e: E) -> Response {
    Response::Error(e.to_string())
}

async fn answer(raft: &MetadataRaft, request: Request) -> Response {
    match request {
        Request::Append(rpc) => raft
            .append_entries(rpc)
            .await
            .map_or_else(|e: RaftError<TypeConfig>| refused(e), Response::Append),
        Request::Vote(rpc) => raft
            .vote(rpc)
            .await
            .map_or_else(|e: RaftError<TypeConfig>| refused(e), Response::Vote),
        Request::PreVote(rpc) => raft
            .pre_vote(rpc)
            .await
            .map_or_else(|e: RaftError<TypeConfig>| refused(e), Response::Vote),
        Request::Snapshot { vote, meta, data } => {
            if data.len() > crate::constants::RAFT_SNAPSHOT_BYTES_MAX {
                return refused("snapshot over RAFT_SNAPSHOT_BYTES_MAX");
            }
            let snapshot = Snapshot {
                meta,
                snapshot: std::io::Cursor::new(data.into_bytes()),
            };
            raft.install_full_snapshot(vote, snapshot)
                .await
                .map_or_else(|e: Fatal<TypeConfig>| refused(e), Response::Snapshot)
        }
        Request::Controller(_) => refused("a controller change reached Raft's handler"),
    }
}
