//! The shard mesh: one bounded channel from every shard to every other, carrying
//! `ShardMessage`s. Runs on: every shard (one receiving task per peer). Invariants: messages own
//! their data (`Bytes`, `Arc` of immutable snapshots): nothing mutable is shared between shards;
//! every request carries its reply channel, and a dropped reply (the owner went away) is answered
//! to the client as an error, never a hang. A full channel makes the sender wait (backpressure).

use std::sync::Arc;

use bytes::Bytes;
use futures_channel::oneshot;
use glommio::channels::shared_channel::{self, ConnectedReceiver, ConnectedSender};

use crate::cluster::MetadataImage;
use crate::protocol::types::{Offset, TopicPartition};
use crate::protocol::ErrorCode;
use crate::storage::{FetchRecords, LogConfig};

/// Work for one partition, sent to its owner.
#[derive(Debug)]
pub enum PartitionRequest {
    Produce {
        payload: Bytes,
        acks: i16,
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
}

/// The owner's answer for one partition.
#[derive(Debug, Clone)]
pub enum PartitionResponse {
    Produce {
        error: ErrorCode,
        base_offset: Offset,
        log_start: Offset,
    },
    Fetch {
        error: ErrorCode,
        high_watermark: Offset,
        log_start: Offset,
        records: FetchRecords,
    },
    ListOffsets {
        error: ErrorCode,
        offset: Offset,
        timestamp_ms: i64,
    },
}

impl PartitionResponse {
    /// The answer for a partition this broker does not have (or whose owner is gone).
    pub fn error_for(request: &PartitionRequest, error: ErrorCode) -> PartitionResponse {
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
        }
    }
}

/// A partition for its owner to open: its log settings and the id of the topic it belongs to
/// (a directory left by an older topic of the same name is wiped).
#[derive(Debug, Clone)]
pub struct OpenPartition {
    pub tp: TopicPartition,
    pub log: LogConfig,
    pub topic_id: [u8; 16],
}

/// Config keys to set (`Some`) or remove (`None`).
pub type ConfigChanges = Vec<(String, Option<String>)>;

/// Topic-level changes the controller asks of partition owners and shards.
#[derive(Debug)]
pub enum ControllerRequest {
    CreateTopics {
        topics: Vec<crate::cluster::controller::NewTopic>,
        validate_only: bool,
        reply: oneshot::Sender<Vec<(ErrorCode, Option<String>)>>,
    },
    DeleteTopics {
        names: Vec<String>,
        reply: oneshot::Sender<Vec<ErrorCode>>,
    },
    CreatePartitions {
        topics: Vec<(String, u32)>,
        validate_only: bool,
        reply: oneshot::Sender<Vec<(ErrorCode, Option<String>)>>,
    },
    /// Per topic: configs to set (`Some`) or remove (`None`).
    AlterTopicConfigs {
        topics: Vec<(String, ConfigChanges)>,
        validate_only: bool,
        reply: oneshot::Sender<Vec<(ErrorCode, Option<String>)>>,
    },
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
    /// Work for the coordinator of a group this shard owns.
    Group {
        call: crate::group::coordinator::GroupCall,
        reply: oneshot::Sender<crate::group::coordinator::GroupReply>,
    },
}

/// The unconnected ends of every shard's channels, built on the main thread.
pub struct MeshEnds {
    pub senders: Vec<Option<shared_channel::SharedSender<ShardMessage>>>,
    pub receivers: Vec<Option<shared_channel::SharedReceiver<ShardMessage>>>,
}

/// Builds the full mesh: `ends[i].senders[j]` sends from shard i to shard j.
pub fn build(shard_count: usize, depth: usize) -> Vec<MeshEnds> {
    let mut ends: Vec<MeshEnds> = (0..shard_count)
        .map(|_| MeshEnds {
            senders: (0..shard_count).map(|_| None).collect(),
            receivers: (0..shard_count).map(|_| None).collect(),
        })
        .collect();
    for from in 0..shard_count {
        for to in 0..shard_count {
            if from != to {
                let (tx, rx) = shared_channel::new_bounded(depth);
                ends[from].senders[to] = Some(tx);
                ends[to].receivers[from] = Some(rx);
            }
        }
    }
    ends
}

/// The connected sending side of one shard.
pub struct Mesh {
    senders: Vec<Option<ConnectedSender<ShardMessage>>>,
}

impl Mesh {
    /// Connects this shard's ends; returns the mesh and the receivers to drain. Connecting is a
    /// rendezvous with the peer, so every end connects concurrently (in order, shards would wait
    /// on each other forever).
    pub async fn connect(ends: MeshEnds) -> (Mesh, Vec<ConnectedReceiver<ShardMessage>>) {
        let senders: Vec<_> = ends
            .senders
            .into_iter()
            .map(|s| {
                glommio::spawn_local(async move {
                    match s {
                        Some(s) => Some(s.connect().await),
                        None => None,
                    }
                })
            })
            .collect();
        let receivers: Vec<_> = ends
            .receivers
            .into_iter()
            .flatten()
            .map(|r| glommio::spawn_local(r.connect()))
            .collect();
        let mut connected_senders = Vec::new();
        for s in senders {
            connected_senders.push(s.await);
        }
        let mut connected_receivers = Vec::new();
        for r in receivers {
            connected_receivers.push(r.await);
        }
        (
            Mesh {
                senders: connected_senders,
            },
            connected_receivers,
        )
    }

    /// Sends to shard `to`; `false` if that shard is gone.
    pub async fn send(&self, to: usize, message: ShardMessage) -> bool {
        let sender = self.senders[to]
            .as_ref()
            .expect("a shard never sends a mesh message to itself");
        crate::metrics::with(|m| {
            m.mesh_messages
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        });
        sender.send(message).await.is_ok()
    }
}

/// Measures `samples` round trips between two pinned shards over the same transport the mesh
/// uses (a bounded shared channel carrying a oneshot reply), with `spin_before_park_us` on both
/// executors. Returns each round trip's duration. For `examples/mesh_hop.rs`.
pub fn measure_round_trips(samples: usize, spin_before_park_us: u64) -> Vec<std::time::Duration> {
    use glommio::{LocalExecutorBuilder, Placement};
    use std::time::{Duration, Instant};
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let (to_echo, echo_in) =
        shared_channel::new_bounded::<oneshot::Sender<()>>(crate::constants::MESH_CHANNEL_DEPTH);
    let builder = |cpu: usize| {
        let b = LocalExecutorBuilder::new(Placement::Fixed(cpu % cpus));
        if spin_before_park_us > 0 {
            b.spin_before_park(Duration::from_micros(spin_before_park_us))
        } else {
            b
        }
    };
    let echo = builder(1)
        .spawn(move || async move {
            let rx = echo_in.connect().await;
            while let Some(reply) = rx.recv().await {
                let _ = reply.send(());
            }
        })
        .expect("start the echo shard");
    let caller = builder(0)
        .spawn(move || async move {
            let tx = to_echo.connect().await;
            let mut times = Vec::with_capacity(samples);
            for _ in 0..samples {
                let (reply, answered) = oneshot::channel();
                let start = Instant::now();
                if tx.send(reply).await.is_err() {
                    break;
                }
                let _ = answered.await;
                times.push(start.elapsed());
            }
            times
        })
        .expect("start the calling shard");
    let times = caller.join().expect("caller finished");
    echo.join().expect("echo finished");
    times
}
