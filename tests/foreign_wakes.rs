//! Cross-thread wakes of a shard's tasks (the shape of every cross-shard request: a handler task
//! awaits a oneshot reply that another shard's thread completes, and the connection then awaits
//! the handler's join handle and drops it). glommio 0.9's foreign `drop_waker` let the count
//! of a task's references pass through zero and back, and a join handle dropped in that window
//! freed the task while the other thread was about to hand it one more waker: a double free
//! (seen as `free(): double free detected in tcache 2` under librdkafka at 2,000 rec/s).
//! third_party/glommio/PATCHED.md, change 3, is the fix.
//!
//! The window is a few instructions wide and needs two coincidences (the waking thread delayed
//! after it queued the wake, then again between its decrement and increment), so this test
//! cannot reproduce the abort on demand: three 8-second runs of it before the fix did not. It
//! guards the path instead: over a hundred thousand wake-and-release cycles of joinable tasks
//! from another thread, with a busy thread on the waker's core so the kernel preempts the waker
//! at arbitrary points, every reply arrives, every task completes once, and nothing is freed
//! twice (glibc aborts the test process on a double free it detects). The reproduction that
//! did abort is the broker under librdkafka at 2,000 rec/s: BENCHMARKS.md, issue 10 notes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use tusk::runtime::io;

const RUN_FOR: Duration = Duration::from_secs(8);

#[test]
fn tasks_woken_and_released_from_another_thread_are_freed_once() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let waker_cpu = cpus.saturating_sub(1);
    let stop = Arc::new(AtomicBool::new(false));

    // The thread that completes the replies (another shard's role), sharing its core with a hog.
    let (to_waker, replies) = crossbeam::channel::unbounded::<oneshot::Sender<u64>>();
    let waker = std::thread::spawn(move || {
        let _ = core_affinity::set_for_current(core_affinity::CoreId { id: waker_cpu });
        let mut sent = 0u64;
        for tx in replies {
            let _ = tx.send(sent);
            sent += 1;
        }
        sent
    });
    let hog = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let _ = core_affinity::set_for_current(core_affinity::CoreId { id: waker_cpu });
            let mut x = 0u64;
            while !stop.load(Ordering::Relaxed) {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        })
    };

    // The shard whose tasks are woken from the other thread, started through the runtime seam
    // the broker uses (`spawn_shard`, `spawn_joinable`, `Task::join`).
    let rounds = Arc::new(AtomicU64::new(0));
    let counted = rounds.clone();
    let owner = tusk::runtime::executor::spawn_shard(0, 0, move || async move {
        let deadline = Instant::now() + RUN_FOR;
        while Instant::now() < deadline {
            // Enough handlers in flight that some complete while their wakers are mid-drop.
            let handlers: Vec<_> = (0..64)
                .map(|_| {
                    let (tx, rx) = oneshot::channel::<u64>();
                    to_waker.send(tx).expect("the waker thread runs");
                    io::spawn_joinable(async move { rx.await.ok() })
                })
                .collect();
            for handler in handlers {
                let round = counted.load(Ordering::Relaxed);
                assert!(
                    handler.join().await.is_some(),
                    "every reply arrives (round {round})"
                );
            }
            counted.fetch_add(1, Ordering::Relaxed);
        }
    })
    .expect("a shard starts");
    owner.join().expect("the shard ends without a panic");
    let rounds = rounds.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    hog.join().expect("the hog ends");
    let sent = waker.join().expect("the waker ends");
    assert_eq!(sent, rounds * 64, "one reply per handler");
    eprintln!("{sent} cross-thread wakes in {RUN_FOR:?}");
}
