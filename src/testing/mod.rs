//! Test doubles for the runtime seam: a faulty in-memory file system, a clock that moves only
//! when told, a seeded random generator. Used by in-process tests (unit tests and `tests/`),
//! and the base of the seeded simulation to come. Runs on: one test thread. Nothing here is
//! used by the broker itself.

pub mod fault_fs;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

pub use fault_fs::{Fault, FaultFs, Op, SplitMix};

use crate::runtime::env::{Clock, Env, Rng};

/// Virtual time: `advance` moves it, and wakes the sleeps that end by then.
pub struct ManualClock {
    inner: Rc<ClockState>,
    wall_origin_ms: i64,
}

#[derive(Default)]
struct ClockState {
    now: Cell<Duration>,
    sleepers: RefCell<Vec<(Duration, Waker)>>,
}

impl ManualClock {
    /// A clock whose wall time starts at `wall_origin_ms`.
    pub fn new(wall_origin_ms: i64) -> Rc<ManualClock> {
        Rc::new(ManualClock {
            inner: Rc::default(),
            wall_origin_ms,
        })
    }

    pub fn advance(&self, by: Duration) {
        let state = &self.inner;
        state.now.set(state.now.get() + by);
        let now = state.now.get();
        let due: Vec<(Duration, Waker)> = {
            let mut sleepers = state.sleepers.borrow_mut();
            let (due, later) = sleepers.drain(..).partition(|(at, _)| *at <= now);
            *sleepers = later;
            due
        };
        for (_, waker) in due {
            waker.wake();
        }
    }
}

impl Clock for ManualClock {
    fn wall_ms(&self) -> i64 {
        self.wall_origin_ms + self.inner.now.get().as_millis() as i64
    }

    fn monotonic(&self) -> Duration {
        self.inner.now.get()
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()>>> {
        let state = self.inner.clone();
        let until = state.now.get() + duration;
        Box::pin(std::future::poll_fn(move |cx| {
            if state.now.get() >= until {
                Poll::Ready(())
            } else {
                state
                    .sleepers
                    .borrow_mut()
                    .push((until, cx.waker().clone()));
                Poll::Pending
            }
        }))
    }
}

/// Random bytes from a seed.
pub struct SeededRng(RefCell<SplitMix>);

impl SeededRng {
    pub fn new(seed: u64) -> SeededRng {
        SeededRng(RefCell::new(SplitMix(seed)))
    }
}

impl Rng for SeededRng {
    fn fill(&self, buf: &mut [u8]) {
        let mut rng = self.0.borrow_mut();
        for chunk in buf.chunks_mut(8) {
            let v = rng.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// An `Env` over `fs` with a manual clock and a seeded generator.
pub fn env(fs: &FaultFs, clock: &Rc<ManualClock>, seed: u64) -> Env {
    Env {
        fs: Rc::new(fs.clone()),
        clock: clock.clone(),
        rng: Rc::new(SeededRng::new(seed)),
    }
}
