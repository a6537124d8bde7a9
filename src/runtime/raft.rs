//! openraft's async runtime on glommio: the adapter that lets the cluster metadata log (issue
//! 11) run openraft on a shard, with openraft's `single-threaded` feature (no `Send` bounds on
//! its futures). Runs on: the shard that drives Raft (shard 0), inside its glommio executor.
//! openraft ships adapters for tokio, compio and monoio, none for glommio; this one follows the
//! compio adapter's shape. Invariants: a spawned task keeps running when its handle is dropped
//! (openraft drops handles of tasks that must live on, while glommio's `Task` cancels on drop);
//! every channel here is shard-local (its wakers never cross threads); time is the shard's
//! timer, so a Raft timeout wakes the executor like any other timer.
//! `openraft_rt::testing::Suite` checks the whole contract (see the tests below).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use openraft_rt::{
    mutex, oneshot, watch, AsyncRuntime, Mpsc, MpscReceiver, MpscSender, MpscWeakSender,
    OptionalSend, OptionalSync, SendError, TryRecvError,
};

/// openraft's `AsyncRuntime` on the current glommio executor. A value of it (from `new`) is
/// an executor of its own on the calling thread, for tests; the broker only uses the type.
pub struct GlommioRuntime {
    executor: glommio::LocalExecutor,
}

impl fmt::Debug for GlommioRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GlommioRuntime").finish_non_exhaustive()
    }
}

/// A task ended without output: it was cancelled (glommio stops the process on a task's panic,
/// so a join never observes one).
#[derive(Debug)]
pub struct JoinError;

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the task was cancelled before it finished")
    }
}

/// A detached task's handle: awaiting it yields the output; dropping it leaves the task running.
pub struct JoinHandle<T>(glommio::task::JoinHandle<T>);

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|out| out.ok_or(JoinError))
    }
}

/// The deadline of a `timeout` passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the deadline passed")
    }
}

type LocalBoxFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// `future`, or `Elapsed` once `delay` fires; the delay is checked first, so a future that is
/// always ready cannot outlive its deadline.
pub struct Timeout<F> {
    future: Pin<Box<F>>,
    delay: LocalBoxFuture<()>,
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.delay.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(Elapsed));
        }
        self.future.as_mut().poll(cx).map(Ok)
    }
}

fn sleep_for(duration: Duration) -> LocalBoxFuture<()> {
    Box::pin(async move {
        glommio::timer::sleep(duration).await;
    })
}

fn until(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// How soon openraft's task queue must get the CPU once one of its tasks is runnable: well
/// under the heartbeat (250 ms), so partition work on the same shard cannot delay heartbeats
/// into an election.
const RAFT_QUEUE_LATENCY_MS: u64 = 5;

thread_local! {
    /// The current executor's task queue for openraft's tasks, with the executor's id (a test
    /// thread runs several executors, one after another).
    static RAFT_QUEUE: std::cell::Cell<Option<(usize, glommio::TaskQueueHandle)>> =
        const { std::cell::Cell::new(None) };
}

/// openraft's task queue on this executor: latency-sensitive (glommio preempts other queues'
/// tasks for it at their next yield point), created on first use.
pub fn raft_task_queue() -> glommio::TaskQueueHandle {
    let executor = glommio::executor().id();
    RAFT_QUEUE.with(|q| match q.get() {
        Some((id, handle)) if id == executor => handle,
        _ => {
            let handle = glommio::executor().create_task_queue(
                glommio::Shares::Static(1000),
                glommio::Latency::Matters(Duration::from_millis(RAFT_QUEUE_LATENCY_MS)),
                "openraft",
            );
            q.set(Some((executor, handle)));
            handle
        }
    })
}

/// Runs `future` in openraft's latency-sensitive task queue (the cluster's heartbeats and
/// session checks, which must not wait behind partition work either).
pub fn spawn_urgent<F: std::future::Future<Output = ()> + 'static>(future: F) {
    glommio::spawn_local_into(future, raft_task_queue())
        .expect("openraft's task queue exists on this executor")
        .detach();
}

/// How long ago `instant` (one of openraft's metrics timestamps) was.
pub fn elapsed_since(instant: Instant) -> Duration {
    Instant::now().saturating_duration_since(instant)
}

impl AsyncRuntime for GlommioRuntime {
    type JoinError = JoinError;
    type JoinHandle<T: OptionalSend + 'static> = JoinHandle<T>;
    type Sleep = LocalBoxFuture<()>;
    type Instant = Instant;
    type TimeoutError = Elapsed;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = Timeout<T>;
    type ThreadLocalRng = rand::rngs::ThreadRng;
    type Mpsc = LocalMpsc;
    type Watch = LocalWatch;
    type Oneshot = LocalOneshot;
    type Mutex<T: OptionalSend + 'static> = LocalMutex<T>;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        let task = glommio::spawn_local_into(future, raft_task_queue())
            .expect("openraft's task queue belongs to this executor");
        JoinHandle(task.detach())
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        sleep_for(duration)
    }

    fn sleep_until(deadline: Instant) -> Self::Sleep {
        sleep_for(until(deadline))
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        Timeout {
            future: Box::pin(future),
            delay: sleep_for(duration),
        }
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        Self::timeout(until(deadline), future)
    }

    fn is_panic(_: &JoinError) -> bool {
        false
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        rand::rng()
    }

    fn new(_threads: usize) -> Self {
        GlommioRuntime {
            executor: super::io::local_executor(),
        }
    }

    fn block_on<F, T>(&mut self, future: F) -> T
    where
        F: Future<Output = T>,
    {
        self.executor.run(future)
    }
}

/// Bounded channels with weak senders (tokio's `sync` channels need no tokio runtime).
pub struct LocalMpsc;

pub struct MpscTx<T>(tokio::sync::mpsc::Sender<T>);
pub struct MpscWeakTx<T>(tokio::sync::mpsc::WeakSender<T>);
pub struct MpscRx<T>(tokio::sync::mpsc::Receiver<T>);

impl<T> Clone for MpscTx<T> {
    fn clone(&self) -> Self {
        MpscTx(self.0.clone())
    }
}

impl<T> Clone for MpscWeakTx<T> {
    fn clone(&self) -> Self {
        MpscWeakTx(self.0.clone())
    }
}

impl Mpsc for LocalMpsc {
    type Sender<T: OptionalSend> = MpscTx<T>;
    type Receiver<T: OptionalSend> = MpscRx<T>;
    type WeakSender<T: OptionalSend> = MpscWeakTx<T>;

    fn channel<T: OptionalSend>(buffer: usize) -> (MpscTx<T>, MpscRx<T>) {
        let (tx, rx) = tokio::sync::mpsc::channel(buffer);
        (MpscTx(tx), MpscRx(rx))
    }
}

impl<T: OptionalSend> MpscSender<LocalMpsc, T> for MpscTx<T> {
    async fn send(&self, msg: T) -> Result<(), SendError<T>> {
        self.0.send(msg).await.map_err(|e| SendError(e.0))
    }

    fn downgrade(&self) -> MpscWeakTx<T> {
        MpscWeakTx(self.0.downgrade())
    }
}

impl<T: OptionalSend> MpscWeakSender<LocalMpsc, T> for MpscWeakTx<T> {
    fn upgrade(&self) -> Option<MpscTx<T>> {
        self.0.upgrade().map(MpscTx)
    }
}

impl<T> MpscReceiver<T> for MpscRx<T> {
    async fn recv(&mut self) -> Option<T> {
        self.0.recv().await
    }

    fn try_recv(&mut self) -> Result<T, TryRecvError> {
        self.0.try_recv().map_err(|e| match e {
            tokio::sync::mpsc::error::TryRecvError::Empty => TryRecvError::Empty,
            tokio::sync::mpsc::error::TryRecvError::Disconnected => TryRecvError::Disconnected,
        })
    }
}

/// Watch channels with tokio's semantics (`changed` marks the value seen), as openraft expects.
pub struct LocalWatch;

pub struct WatchTx<T>(tokio::sync::watch::Sender<T>);
pub struct WatchRx<T>(tokio::sync::watch::Receiver<T>);

impl<T> Clone for WatchTx<T> {
    fn clone(&self) -> Self {
        WatchTx(self.0.clone())
    }
}

impl<T> Clone for WatchRx<T> {
    fn clone(&self) -> Self {
        WatchRx(self.0.clone())
    }
}

impl watch::Watch for LocalWatch {
    type Sender<T: OptionalSend + OptionalSync> = WatchTx<T>;
    type Receiver<T: OptionalSend + OptionalSync> = WatchRx<T>;
    type Ref<'a, T: OptionalSend + 'a> = tokio::sync::watch::Ref<'a, T>;

    fn channel<T: OptionalSend + OptionalSync>(init: T) -> (WatchTx<T>, WatchRx<T>) {
        let (tx, rx) = tokio::sync::watch::channel(init);
        (WatchTx(tx), WatchRx(rx))
    }
}

impl<T: OptionalSend + OptionalSync> watch::WatchSender<LocalWatch, T> for WatchTx<T> {
    fn send(&self, value: T) -> Result<(), watch::SendError<T>> {
        self.0.send(value).map_err(|e| watch::SendError(e.0))
    }

    fn send_if_modified<F>(&self, modify: F) -> bool
    where
        F: FnOnce(&mut T) -> bool,
    {
        self.0.send_if_modified(modify)
    }

    fn borrow_watched(&self) -> tokio::sync::watch::Ref<'_, T> {
        self.0.borrow()
    }

    fn subscribe(&self) -> WatchRx<T> {
        WatchRx(self.0.subscribe())
    }
}

impl<T: OptionalSend + OptionalSync> watch::WatchReceiver<LocalWatch, T> for WatchRx<T> {
    async fn changed(&mut self) -> Result<(), watch::RecvError> {
        self.0.changed().await.map_err(|_| watch::RecvError(()))
    }

    fn borrow_watched(&self) -> tokio::sync::watch::Ref<'_, T> {
        self.0.borrow()
    }

    fn borrow_and_update(&mut self) -> tokio::sync::watch::Ref<'_, T> {
        self.0.borrow_and_update()
    }
}

/// One-shot replies.
pub struct LocalOneshot;

pub struct OneshotTx<T>(futures_channel::oneshot::Sender<T>);

impl oneshot::Oneshot for LocalOneshot {
    type Sender<T: OptionalSend> = OneshotTx<T>;
    type Receiver<T: OptionalSend> = futures_channel::oneshot::Receiver<T>;
    type ReceiverError = futures_channel::oneshot::Canceled;

    fn channel<T: OptionalSend>() -> (OneshotTx<T>, futures_channel::oneshot::Receiver<T>) {
        let (tx, rx) = futures_channel::oneshot::channel();
        (OneshotTx(tx), rx)
    }
}

impl<T: OptionalSend> oneshot::OneshotSender<T> for OneshotTx<T> {
    fn send(self, t: T) -> Result<(), T> {
        self.0.send(t)
    }
}

/// An async mutex for openraft's shared state (held across awaits by one shard's tasks).
pub struct LocalMutex<T>(tokio::sync::Mutex<T>);

impl<T: OptionalSend + 'static> mutex::Mutex<T> for LocalMutex<T> {
    type Guard<'a> = tokio::sync::MutexGuard<'a, T>;

    fn new(value: T) -> Self {
        LocalMutex(tokio::sync::Mutex::new(value))
    }

    fn lock(&self) -> impl Future<Output = tokio::sync::MutexGuard<'_, T>> + OptionalSend {
        self.0.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// openraft's own conformance suite for a runtime: spawn and join, detach on drop, sleep,
    /// timeouts, biased select, every channel's semantics (weak senders, backpressure, watch's
    /// "changed marks seen"), non-`Send` futures, and deterministic seeding.
    #[test]
    fn openraft_runtime_conformance_suite() {
        openraft_rt::testing::Suite::<GlommioRuntime>::test_all();
    }

    /// openraft's tasks run in a latency-sensitive queue of their own, a new one for each
    /// executor a thread runs.
    #[test]
    fn openraft_tasks_run_in_a_latency_queue() {
        for _ in 0..2 {
            let mut rt = GlommioRuntime::new(1);
            rt.block_on(async {
                let default = glommio::executor().current_task_queue();
                let spawned =
                    GlommioRuntime::spawn(async { glommio::executor().current_task_queue() })
                        .await
                        .expect("the task ran");
                assert_eq!(spawned, raft_task_queue());
                assert_ne!(spawned, default, "not the executor's default queue");
                let stats = glommio::executor()
                    .task_queue_stats(spawned)
                    .expect("the queue exists");
                assert_eq!(stats.index(), spawned);
                assert_eq!(stats.current_shares(), 1000);
            });
        }
    }

    #[test]
    fn a_dropped_join_handle_leaves_the_task_running() {
        let mut rt = GlommioRuntime::new(1);
        let ran = rt.block_on(async {
            let (tx, rx) = futures_channel::oneshot::channel::<u32>();
            drop(GlommioRuntime::spawn(async move {
                GlommioRuntime::sleep(Duration::from_millis(5)).await;
                let _ = tx.send(7);
            }));
            rx.await
        });
        assert_eq!(
            ran,
            Ok(7),
            "the detached task finished after its handle was dropped"
        );
    }
}
