//! Time and randomness through the seam: every component reads the clock, sleeps and draws
//! random bytes through an `Env`, so a test (and the later seeded simulation) can run the
//! broker's code under virtual time with a seeded generator. Runs on: every shard; an `Env` is
//! made per shard and never leaves it. Invariant: no domain code calls `SystemTime`,
//! `Instant::now` or reads `/dev/urandom` itself.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::fs::Fs;

/// Wall and monotonic time, and timers.
pub trait Clock {
    /// Milliseconds since the Unix epoch (may jump: it is the wall clock).
    fn wall_ms(&self) -> i64;
    /// Time since an arbitrary origin; never goes backwards.
    fn monotonic(&self) -> Duration;
    /// Resolves once `duration` has passed on this clock.
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()>>>;
}

/// Random bytes.
pub trait Rng {
    fn fill(&self, buf: &mut [u8]);
}

/// The IO, clock and randomness one shard's components use.
#[derive(Clone)]
pub struct Env {
    pub fs: Rc<dyn Fs>,
    pub clock: Rc<dyn Clock>,
    pub rng: Rc<dyn Rng>,
}

impl Env {
    /// The machine's disk, clock and kernel randomness.
    pub fn real() -> Env {
        Env {
            fs: Rc::new(super::disk::Disk),
            clock: Rc::new(SystemClock::new()),
            rng: Rc::new(KernelRng),
        }
    }

    pub fn wall_ms(&self) -> i64 {
        self.clock.wall_ms()
    }

    pub fn monotonic(&self) -> Duration {
        self.clock.monotonic()
    }

    pub async fn sleep(&self, duration: Duration) {
        self.clock.sleep(duration).await
    }

    /// Runs `future` with a deadline on this clock; `None` if it did not finish in time.
    pub async fn timeout<T, F: Future<Output = T>>(
        &self,
        duration: Duration,
        future: F,
    ) -> Option<T> {
        let fut = async { Some(future.await) };
        let timer = async {
            self.clock.sleep(duration).await;
            None
        };
        futures_lite::future::or(fut, timer).await
    }

    /// 16 random bytes (topic, cluster and member ids).
    pub fn random_id(&self) -> [u8; 16] {
        let mut id = [0u8; 16];
        self.rng.fill(&mut id);
        id
    }

    pub fn random_u64(&self) -> u64 {
        let mut b = [0u8; 8];
        self.rng.fill(&mut b);
        u64::from_be_bytes(b)
    }
}

/// The system's clocks and the shard's timer.
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    pub fn new() -> SystemClock {
        SystemClock {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn wall_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }

    fn monotonic(&self) -> Duration {
        self.origin.elapsed()
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()>>> {
        Box::pin(glommio::timer::sleep(duration))
    }
}

/// getrandom(2); ids only need to be unique, so if the kernel refuses, the clock and a
/// counter stand in.
pub struct KernelRng;

impl Rng for KernelRng {
    fn fill(&self, buf: &mut [u8]) {
        // SAFETY: getrandom writes at most `buf.len()` bytes into memory we own.
        let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n == buf.len() as isize {
            return;
        }
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let mut x = nanos ^ COUNTER.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        for b in buf.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
    }
}
