//! Many shards on few cores, all talking over the mesh: every shard sends to every other and
//! waits for what the others send it. This is the shape of three brokers (six shards) sharing
//! this 2-core machine in the cluster tests. glommio's own `sharding::test_send_to`, the same
//! pattern over its `Sharded` wrapper, hung in 5 of 30 runs under half of tusk's first reactor
//! patch (an executor livelocked at 100 % CPU; third_party/glommio/PATCHED.md, change 2, now
//! reverted), and `scripts/test.sh` runs that test. This one did not hit that livelock in 100
//! rounds with the bad patch in place (tusk's shards are pinned, glommio's test's are not), so
//! it guards the mesh itself: every message arrives, and a stall fails by its deadline instead
//! of hanging the suite.

use std::sync::mpsc;
use std::time::Duration;

use tusk::runtime::{executor, mesh};

const SHARDS: usize = 10;
const ROUNDS: usize = 20;
const DEADLINE: Duration = Duration::from_secs(60);

/// One round: `SHARDS` executors connect a full mesh, each sends its index to every peer,
/// then receives one message from each. Returns how many messages arrived in total.
fn one_round() -> usize {
    let (done_tx, done_rx) = mpsc::channel::<usize>();
    let shards: Vec<_> = mesh::build::<usize>(SHARDS, 16)
        .into_iter()
        .enumerate()
        .map(|(me, ends)| {
            let done = done_tx.clone();
            executor::spawn_shard(me, 0, move || async move {
                let (mesh, receivers) = mesh::Mesh::connect(ends).await;
                for peer in (0..SHARDS).filter(|&p| p != me) {
                    assert!(mesh.send(peer, me).await, "shard {peer} is up");
                }
                let mut got = 0;
                for rx in &receivers {
                    if rx.recv().await.is_some() {
                        got += 1;
                    }
                }
                done.send(got).expect("the test waits");
            })
            .expect("a shard starts")
        })
        .collect();
    drop(done_tx);
    let got = done_rx.iter().sum();
    for shard in shards {
        shard.join().expect("a shard ends without a panic");
    }
    got
}

#[test]
fn ten_shards_on_two_cores_exchange_every_message_without_stalling() {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for round in 0..ROUNDS {
            let got = one_round();
            tx.send((round, got)).expect("the test waits");
        }
    });
    for _ in 0..ROUNDS {
        let (round, got) = rx.recv_timeout(DEADLINE).unwrap_or_else(|_| {
            panic!("a round of {SHARDS} shards did not finish within {DEADLINE:?}: an executor stalled")
        });
        assert_eq!(
            got,
            SHARDS * (SHARDS - 1),
            "round {round}: every shard got one message from every peer"
        );
    }
}
