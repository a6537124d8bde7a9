//! The runtime seam: executors pinned to cores, the IO trait and its real implementation,
//! time and randomness, tasks and timers, TCP, splice, the mesh transport, and openraft's
//! runtime adapter. Every glommio call lives under this module. Runs on: the main thread
//! (starting executors) and every shard. Invariant: this module imports nothing from the
//! broker (no `crate::` path outside `runtime`), so the broker can run on another runtime or a
//! simulator by replacing it.

pub mod disk;
pub mod env;
pub mod executor;
pub mod fs;
pub mod io;
pub mod mesh;
pub mod raft;
pub mod splice;

thread_local! {
    /// Set while a panic is expected and caught (the codec guard); such a panic costs one
    /// connection, not the broker.
    static PANIC_GUARDED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, turning a panic into `Err` without stopping the broker (for code that is not ours:
/// the wire codec).
pub fn guarded<T>(f: impl FnOnce() -> T) -> std::thread::Result<T> {
    PANIC_GUARDED.with(|g| g.set(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    PANIC_GUARDED.with(|g| g.set(false));
    result
}

/// Any panic outside `guarded` calls `on_panic` after the default report (the broker stops:
/// a shard that died would leave its partitions unanswered while the others kept serving).
pub fn install_panic_hook(on_panic: impl Fn() + Send + Sync + 'static) {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if PANIC_GUARDED.with(|g| g.get()) {
            return;
        }
        previous(info);
        on_panic();
    }));
}
