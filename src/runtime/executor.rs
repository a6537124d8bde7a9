//! Executors: one glommio executor per shard, pinned to a core, each on its own thread. Runs
//! on: the main thread (spawning and joining). Invariant: a shard's future runs on its thread
//! only.

use std::future::Future;
use std::time::Duration;

/// A running shard thread.
pub struct ShardThread(glommio::ExecutorJoinHandle<()>);

impl ShardThread {
    /// Waits for the shard to end; `Err` if it panicked.
    pub fn join(self) -> Result<(), String> {
        self.0.join().map_err(|e| e.to_string())
    }
}

/// How many CPUs the process may run on.
pub fn cpu_count() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Starts shard `index` pinned to CPU `index mod cpus`, running the future `make` returns.
/// `spin_before_park_us` > 0 makes an idle executor spin that long before it sleeps.
pub fn spawn_shard<F, Fut>(
    index: usize,
    spin_before_park_us: u64,
    make: F,
) -> Result<ShardThread, String>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let cpus = cpu_count();
    let mut builder = glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(index % cpus))
        .name(&format!("tusk-shard-{index}"));
    if spin_before_park_us > 0 {
        builder = builder.spin_before_park(Duration::from_micros(spin_before_park_us));
    }
    builder
        .spawn(make)
        .map(ShardThread)
        .map_err(|e| e.to_string())
}
