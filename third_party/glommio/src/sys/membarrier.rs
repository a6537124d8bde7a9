// code imported from https://github.com/jeehoonkang/membarrier-rs (seems unmaintained)
//
// tusk's patch: the `sys_membarrier()` and `mprotect()` strategies are gone; both barriers are
// fences (see `heavy`).

use core::sync::atomic;

/// Issues a light memory barrier for fast path (unused; a fence since tusk's patch).
#[inline]
#[allow(dead_code)]
pub(crate) fn light() {
    atomic::fence(atomic::Ordering::SeqCst);
}

/// Issues a heavy memory barrier for slow path.
///
/// tusk's patch: a `SeqCst` fence, not `sys_membarrier()`. The only caller is the reactor
/// before it sleeps (Dekker's pattern with `SleepNotifier::notify`, which now fences too);
/// `MEMBARRIER_CMD_PRIVATE_EXPEDITED` interrupted every core the process ran on, once per
/// park: thousands of IPIs per second under small requests, a tenth of the broker's CPU.
#[inline]
#[allow(dead_code)]
pub(crate) fn heavy() {
    atomic::fence(atomic::Ordering::SeqCst);
}
