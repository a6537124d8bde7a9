//! The shard mesh transport: one bounded channel from every shard to every other, carrying
//! messages of the broker's choosing (`T`). Runs on: every shard (one receiving task per peer).
//! Invariants: messages own their data (nothing mutable is shared between shards); a channel
//! delivers in send order; a full channel makes the sender wait (backpressure).

use futures_channel::oneshot;
use glommio::channels::shared_channel::{self, ConnectedReceiver, ConnectedSender};

/// The unconnected ends of every shard's channels, built on the main thread.
pub struct MeshEnds<T: Send + 'static> {
    pub senders: Vec<Option<shared_channel::SharedSender<T>>>,
    pub receivers: Vec<Option<shared_channel::SharedReceiver<T>>>,
}

/// Builds the full mesh: `ends[i].senders[j]` sends from shard i to shard j.
pub fn build<T: Send + 'static>(shard_count: usize, depth: usize) -> Vec<MeshEnds<T>> {
    let mut ends: Vec<MeshEnds<T>> = (0..shard_count)
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
pub struct Mesh<T: Send + 'static> {
    senders: Vec<Option<ConnectedSender<T>>>,
}

/// A connected receiving end: messages from one peer shard, in the order it sent them.
pub struct Receiver<T: Send + 'static>(ConnectedReceiver<T>);

impl<T: Send + 'static> Receiver<T> {
    /// The next message; `None` once the peer is gone.
    pub async fn recv(&self) -> Option<T> {
        self.0.recv().await
    }
}

impl<T: Send + 'static> Mesh<T> {
    /// Connects this shard's ends; returns the mesh and the receivers to drain. Connecting is a
    /// rendezvous with the peer, so every end connects concurrently (in order, shards would wait
    /// on each other forever).
    pub async fn connect(ends: MeshEnds<T>) -> (Mesh<T>, Vec<Receiver<T>>) {
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
            connected_receivers.push(Receiver(r.await));
        }
        (
            Mesh {
                senders: connected_senders,
            },
            connected_receivers,
        )
    }

    /// Sends to shard `to`; `false` if that shard is gone.
    pub async fn send(&self, to: usize, message: T) -> bool {
        let sender = self.senders[to]
            .as_ref()
            .expect("a shard never sends a mesh message to itself");
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
    let (to_echo, echo_in) = shared_channel::new_bounded::<oneshot::Sender<()>>(1024);
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
