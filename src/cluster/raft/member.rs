//! One member of the metadata quorum: its Raft on openraft, with the log store, the state
//! machine and the network of this module, answering peers on the controller listener. Every
//! voter is started with the same voter list and initializes the quorum with it if its log is
//! empty (openraft allows identical initializations on every voter; only one leader is
//! elected). Runs on: the controller shard. Invariants: election timeouts are at least 1 s and
//! the heartbeat well below them, for a host shared with other brokers; the voter list is
//! validated (ids unique and non-negative, this node among them) before anything starts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use openraft::{BasicNode, SnapshotPolicy};

use super::network::{serve, HandlerSlot, LeaderContact, Network, PeerRefusals};
use super::{MetadataRaft, MetadataStateMachine, RaftLogStore};
use crate::runtime::env::Env;
use crate::runtime::io::{self, TcpListener};

/// What a member needs to know of the quorum.
#[derive(Debug, Clone)]
pub struct QuorumConfig {
    pub node_id: u64,
    /// Every voter's controller listener, by node id.
    pub voters: BTreeMap<u64, SocketAddr>,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// A snapshot is built after this many applied entries; the log keeps a tenth of them
    /// behind it (for followers slightly behind), and a follower further behind gets the
    /// snapshot.
    pub snapshot_every_entries: u64,
}

impl QuorumConfig {
    /// The defaults for a host shared with other brokers: an election after 1–1.5 s without a
    /// leader, heartbeats every 250 ms. (openraft's leader lease is the maximum, and a follower
    /// refuses votes while its lease runs: a dead leader is replaced after about 2.5 s.)
    pub fn new(node_id: u64, voters: BTreeMap<u64, SocketAddr>) -> QuorumConfig {
        QuorumConfig {
            node_id,
            voters,
            heartbeat_interval_ms: 250,
            election_timeout_min_ms: 1000,
            election_timeout_max_ms: 1500,
            snapshot_every_entries: 1000,
        }
    }

    fn raft_config(&self) -> Result<openraft::Config, String> {
        if !self.voters.contains_key(&self.node_id) {
            return Err(format!(
                "controller_quorum_voters: node {} is not among the voters {:?}",
                self.node_id,
                self.voters.keys().collect::<Vec<_>>()
            ));
        }
        openraft::Config {
            cluster_name: "tusk-metadata".into(),
            heartbeat_interval: self.heartbeat_interval_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            // Regular snapshots keep the log (and a restart's replay) short.
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every_entries),
            max_in_snapshot_log_to_keep: self.snapshot_every_entries / 10,
            purge_batch_size: 1,
            // A snapshot may be large (the whole image): give its transfer, and the follower's
            // sync and rename, far longer than openraft's 200 ms, which a timeout would retry
            // at once and forever.
            install_snapshot_timeout: 30_000,
            // A restarted broker is a new incarnation: it must not name itself the controller
            // again, without an election, while the others may have elected another.
            enable_leader_restore: Some(false),
            ..Default::default()
        }
        .validate()
        .map_err(|e| format!("metadata quorum timeouts: {e}"))
    }
}

/// Refuses a voter list that differs from the membership this member's storage holds: the
/// quorum's membership lives in its log, and a changed flag would otherwise be ignored
/// silently (membership changes are not offered yet).
async fn check_stored_voters(
    config: &QuorumConfig,
    log: &RaftLogStore,
    state_machine: &MetadataStateMachine,
) -> Result<(), String> {
    use openraft::storage::RaftStateMachine;
    use openraft::{EntryPayload, RaftLogReader};
    let io = |e: std::io::Error| format!("metadata quorum: {e}");
    let mut reader = log.clone();
    let entries = reader.try_get_log_entries(..).await.map_err(io)?;
    let from_log = entries.into_iter().rev().find_map(|e| match e.payload {
        EntryPayload::Membership(m) => Some(m),
        _ => None,
    });
    let stored = match from_log {
        Some(m) => m,
        None => {
            let (_, applied) = state_machine.clone().applied_state().await.map_err(io)?;
            applied.membership().clone()
        }
    };
    let stored: BTreeMap<u64, String> = stored
        .nodes()
        .map(|(id, n)| (*id, n.addr.clone()))
        .collect();
    if stored.is_empty() {
        return Ok(());
    }
    let given: BTreeMap<u64, String> = config
        .voters
        .iter()
        .map(|(id, a)| (*id, a.to_string()))
        .collect();
    if stored != given {
        return Err(format!(
            "controller_quorum_voters: {given:?} differs from the quorum this data directory \
             belongs to, {stored:?} (changing the voters is not supported yet)"
        ));
    }
    Ok(())
}

/// A running member of the quorum. Dropping it stops answering peers; `stop` also stops Raft.
pub struct QuorumMember {
    pub raft: MetadataRaft,
    pub state_machine: MetadataStateMachine,
    /// Where the listener finds the handler of forwarded controller changes.
    pub handler: HandlerSlot,
    /// When a leader's append last reached this member.
    pub contact: LeaderContact,
    /// Peers whose listener refused this member's Raft connections.
    pub refusals: PeerRefusals,
    _server: io::Task<()>,
}

impl QuorumMember {
    /// Opens the member's storage under `data_dir`, starts Raft and answers peers on
    /// `listener` (already bound, so a port in use fails the start before anything else).
    pub async fn start(
        env: &Env,
        data_dir: &Path,
        config: &QuorumConfig,
        listener: TcpListener,
    ) -> Result<QuorumMember, String> {
        let raft_config = Arc::new(config.raft_config()?);
        let log = RaftLogStore::open(env, data_dir)
            .await
            .map_err(|e| format!("metadata quorum log: {e}"))?;
        let state_machine = MetadataStateMachine::open(env, data_dir)
            .await
            .map_err(|e| format!("metadata quorum snapshot: {e}"))?;
        check_stored_voters(config, &log, &state_machine).await?;
        let refusals = PeerRefusals::default();
        let raft = MetadataRaft::new(
            config.node_id,
            raft_config,
            Network::new(env.clone(), config.node_id, refusals.clone()),
            log,
            state_machine.clone(),
        )
        .await
        .map_err(|e| format!("metadata quorum: {e}"))?;
        let handler = HandlerSlot::default();
        let contact = LeaderContact::new(env);
        let server = serve(
            listener,
            raft.clone(),
            config.voters.len(),
            handler.clone(),
            contact.clone(),
        );
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| format!("metadata quorum: {e}"))?;
        if !initialized {
            let members: BTreeMap<u64, BasicNode> = config
                .voters
                .iter()
                .map(|(id, addr)| (*id, BasicNode::new(addr)))
                .collect();
            // Another voter's identical initialization may have reached this one first; any
            // other failure stops the start.
            match raft.initialize(members).await {
                Ok(()) => {}
                Err(openraft::errors::RaftError::APIError(
                    openraft::errors::InitializeError::NotAllowed(e),
                )) => tracing::debug!(error = %e, "metadata quorum already initialized"),
                Err(e) => return Err(format!("metadata quorum: initialize: {e}")),
            }
        }
        Ok(QuorumMember {
            raft,
            state_machine,
            handler,
            contact,
            refusals,
            _server: server,
        })
    }

    /// Stops Raft and the listener.
    pub async fn stop(self) {
        let _ = self.raft.shutdown().await;
    }
}
