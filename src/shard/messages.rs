//! The messages shards send each other over the mesh (`runtime::mesh`). Runs on: every shard.
//! Invariants: messages own their data (`Bytes`, `Arc` of immutable snapshots): nothing mutable
//! is shared between shards; every request carries its reply channel, and a dropped reply (the
//! owner went away) is answered to the client as an error, never a hang.

use std::sync::Arc;

use bytes::Bytes;
use futures_channel::oneshot;

use crate::cluster::controller::{ControllerAnswer, ControllerOp};
use crate::cluster::MetadataImage;
use crate::protocol::types::{Offset, TopicPartition};
use crate::storage::{FetchRecords, LogConfig};

/// Work for one partition, sent to its owner.
#[derive(Debug, Clone)]
pub enum PartitionRequest {
    Produce {
        payload: Bytes,
        acks: crate::replication::Acks,
        /// How long acks=all may wait for the in-sync replicas.
        timeout_ms: u64,
    },
    /// `max_bytes` bounds this partition; `request_bytes_max` is the request-wide limit, which
    /// the owner applies across the fetch items of one message while it reads.
    Fetch {
        offset: Offset,
        max_bytes: usize,
        request_bytes_max: usize,
    },
    ListOffsets {
        timestamp_ms: i64,
    },
    /// A follower's fetch (Fetch with a replica id) at the leader.
    ReplicaFetch {
        follower: i32,
        offset: Offset,
        current_epoch: crate::protocol::types::LeaderEpoch,
        last_fetched_epoch: crate::protocol::types::LeaderEpoch,
        max_bytes: usize,
    },
    /// This replica's size and how far it trails its leader (DescribeLogDirs).
    Describe,
}

/// Why a partition's work failed; the server layer picks the Kafka error code.
#[derive(Debug, Clone, PartialEq)]
pub enum PartitionError {
    /// No such topic or partition.
    Unknown,
    /// The image names it, but it is not open here (its open failed).
    Offline,
    /// Its owner shard is gone (or refused the message).
    OwnerGone,
    /// A ListOffsets timestamp that means nothing.
    InvalidTimestamp,
    /// Another broker of the cluster leads it (or none does yet).
    NotLeader,
    /// acks=all with fewer in-sync replicas than `min.insync.replicas`.
    NotEnoughReplicas,
    /// The ISR shrank below `min.insync.replicas` while an acks=all batch waited.
    NotEnoughReplicasAfterAppend,
    /// acks=all did not complete within the request's timeout.
    TimedOut,
    /// The request names an older leader epoch.
    FencedLeaderEpoch,
    /// The request names a leader epoch this broker does not know yet.
    UnknownLeaderEpoch,
    /// A replica fetch outside the leader's log.
    OffsetOutOfRange,
    Storage(crate::storage::Error),
}

/// The owner's answer for one partition (`error` is `None` on success).
#[derive(Debug, Clone)]
pub enum PartitionResponse {
    Produce {
        error: Option<PartitionError>,
        base_offset: Offset,
        log_start: Offset,
    },
    Fetch {
        error: Option<PartitionError>,
        high_watermark: Offset,
        log_start: Offset,
        records: FetchRecords,
    },
    ListOffsets {
        error: Option<PartitionError>,
        offset: Offset,
        timestamp_ms: i64,
    },
    ReplicaFetch {
        error: Option<PartitionError>,
        high_watermark: Offset,
        log_start: Offset,
        records: FetchRecords,
        /// Where the follower's log leaves this leader's (epoch, end offset), if it does.
        diverging: Option<(crate::protocol::types::LeaderEpoch, Offset)>,
    },
    Described {
        error: Option<PartitionError>,
        size_bytes: u64,
        /// Records this replica's log end trails the leader's high watermark as last seen
        /// (0 on the leader).
        offset_lag: i64,
    },
}

impl PartitionResponse {
    /// The answer for a partition whose work failed before it started.
    pub fn error_for(request: &PartitionRequest, error: PartitionError) -> PartitionResponse {
        let error = Some(error);
        match request {
            PartitionRequest::Produce { .. } => PartitionResponse::Produce {
                error,
                base_offset: Offset(-1),
                log_start: Offset(-1),
            },
            PartitionRequest::Fetch { .. } => PartitionResponse::Fetch {
                error,
                high_watermark: Offset(-1),
                log_start: Offset(-1),
                records: FetchRecords::Memory(Bytes::new()),
            },
            PartitionRequest::ListOffsets { .. } => PartitionResponse::ListOffsets {
                error,
                offset: Offset(-1),
                timestamp_ms: -1,
            },
            PartitionRequest::ReplicaFetch { .. } => PartitionResponse::ReplicaFetch {
                error,
                high_watermark: Offset(-1),
                log_start: Offset(-1),
                records: FetchRecords::Memory(Bytes::new()),
                diverging: None,
            },
            PartitionRequest::Describe => PartitionResponse::Described {
                error,
                size_bytes: 0,
                offset_lag: 0,
            },
        }
    }
}

/// A partition for its owner to open: its log settings and the id of the topic it belongs to
/// (a directory left by an older topic of the same name is moved aside).
#[derive(Debug, Clone)]
pub struct OpenPartition {
    pub tp: TopicPartition,
    pub log: LogConfig,
    pub topic_id: crate::protocol::types::TopicId,
}

/// A change for the controller, with the channel its answer goes back on.
#[derive(Debug)]
pub struct ControllerRequest {
    pub op: ControllerOp,
    pub reply: oneshot::Sender<ControllerAnswer>,
}

/// The metadata quorum as this broker's member sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuorumStatus {
    /// The active controller (-1: none known).
    pub leader: i32,
    /// 1 follower, 2 candidate, 3 leader (0: not a cluster).
    pub role: i64,
    pub term: u64,
    /// Last metadata log index known committed (-1: none).
    pub committed: i64,
    /// Last metadata log index applied here (-1: none).
    pub applied: i64,
}

impl Default for QuorumStatus {
    fn default() -> Self {
        QuorumStatus {
            leader: -1,
            role: 0,
            term: 0,
            committed: -1,
            applied: -1,
        }
    }
}

impl QuorumStatus {
    pub fn role_name(&self) -> &'static str {
        match self.role {
            1 => "follower",
            2 => "candidate",
            3 => "leader",
            _ => "none",
        }
    }
}

/// A message between shards.
#[derive(Debug)]
pub enum ShardMessage {
    Partitions {
        items: Vec<(TopicPartition, PartitionRequest)>,
        reply: oneshot::Sender<Vec<PartitionResponse>>,
    },
    /// Resolve `reply` as soon as any of the partitions has data past the given offset.
    WaitForData {
        items: Vec<(TopicPartition, Offset)>,
        reply: oneshot::Sender<()>,
        /// Wait for data written (a follower's fetch), not for the high watermark.
        written: bool,
    },
    OpenPartitions {
        partitions: Vec<OpenPartition>,
        reply: oneshot::Sender<Vec<Result<(), String>>>,
    },
    DeletePartitions {
        partitions: Vec<TopicPartition>,
        reply: oneshot::Sender<()>,
    },
    MetadataUpdate {
        image: Arc<MetadataImage>,
        reply: oneshot::Sender<()>,
    },
    Controller(ControllerRequest),
    /// The metadata quorum as the controller shard sees it changed (in a cluster).
    Quorum(QuorumStatus),
    /// Work for the coordinator of a group this shard owns.
    /// (The call carries the sender of its own typed reply.)
    Group(crate::group::calls::GroupCall),
}
