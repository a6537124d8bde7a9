//! Tasks, timers, TCP, shard-local locks and queues: the glommio calls besides files (those are
//! in `fs`/`disk`) and the mesh, so the runtime can be replaced (compio, a simulator) behind
//! this seam. Runs on: every shard, always inside a glommio executor.

use std::future::Future;
use std::io;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use glommio::io::DmaFile;

use super::fs::IoError;

/// One block of the largest logical block size expected (512e and 4Kn disks).
const PROBE_BLOCK_BYTES: usize = 4096;

/// Spawns a task on the current shard and lets it run detached.
pub fn spawn<F: Future<Output = ()> + 'static>(future: F) {
    glommio::spawn_local(future).detach();
}

/// Spawns a task on the current shard and returns a handle to await its result.
pub fn spawn_joinable<T: 'static, F: Future<Output = T> + 'static>(future: F) -> Task<T> {
    Task(glommio::spawn_local(future))
}

/// A task handle; awaiting it yields the task's output.
pub struct Task<T>(glommio::Task<T>);

impl<T> Task<T> {
    pub async fn join(self) -> T {
        self.0.await
    }
}

/// Sleeps on the shard's timer.
pub async fn sleep(duration: Duration) {
    glommio::timer::sleep(duration).await;
}

/// Runs `future` with a deadline; `None` if it did not finish in time.
pub async fn timeout<T, F: Future<Output = T>>(duration: Duration, future: F) -> Option<T> {
    let fut = async { Some(future.await) };
    let timer = async {
        glommio::timer::sleep(duration).await;
        None
    };
    futures_lite::future::or(fut, timer).await
}

/// Lets every other ready task of the shard run before continuing.
pub async fn yield_now() {
    glommio::executor().yield_now().await;
}

pub use glommio::net::{TcpListener, TcpStream};

/// Connects to `addr` from the current shard.
pub async fn connect(addr: std::net::SocketAddr) -> std::io::Result<TcpStream> {
    TcpStream::connect(addr).await.map_err(std::io::Error::from)
}

/// Listens on `addr` on the current shard only (no `SO_REUSEPORT` spreading).
pub fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).map_err(std::io::Error::from)
}

/// A lock for one shard's tasks (never shared between shards): serializes control-plane work
/// such as metadata changes across their awaits.
pub struct LocalLock(glommio::sync::Semaphore);

/// Held while the lock is taken.
pub struct LocalLockGuard<'a>(#[allow(dead_code)] glommio::sync::Permit<'a>);

impl LocalLock {
    pub fn new() -> LocalLock {
        LocalLock(glommio::sync::Semaphore::new(1))
    }

    pub async fn acquire(&self) -> LocalLockGuard<'_> {
        LocalLockGuard(
            self.0
                .acquire_permit(1)
                .await
                .expect("local lock never closes"),
        )
    }
}

impl Default for LocalLock {
    fn default() -> Self {
        Self::new()
    }
}

/// Makes glommio's per-device IOPOLL probe see a real read. glommio decides whether a device
/// supports polled IO by reading the first block of the first O_DIRECT file it opens there, and
/// caches the answer; on an empty file that read returns at once with 0 bytes, so a device
/// without poll queues (virtio, most HDD controllers) is taken as pollable and every later read
/// fails with EOPNOTSUPP. Opening a file that holds one real block first gives the probe real
/// work, and the right answer is cached before any segment is opened.
pub async fn prime_device_probe(dir: &Path, shard: usize) -> Result<(), IoError> {
    let path = dir.join(format!(".io-probe-{shard}"));
    let owned = path.clone();
    glommio::executor()
        .spawn_blocking(move || std::fs::write(&owned, vec![0u8; PROBE_BLOCK_BYTES]))
        .await
        .map_err(|e| IoError::new("write", &path, e))?;
    let file = DmaFile::open(&path)
        .await
        .map_err(|e| IoError::new("open", &path, std::io::Error::from(e)))?;
    let _ = file.close().await;
    let owned = path.clone();
    glommio::executor()
        .spawn_blocking(move || std::fs::remove_file(&owned))
        .await
        .map_err(|e| IoError::new("remove", &path, e))
}

/// Runs `future` to completion on a fresh single-shard executor on the calling thread (benches,
/// tools and tests that need the runtime without the whole broker).
pub fn run_local<T: 'static, F: Future<Output = T> + 'static>(future: F) -> T {
    local_executor().run(future)
}

/// A fresh unpinned executor on the calling thread (`run_local`, openraft's test runtime).
pub(crate) fn local_executor() -> glommio::LocalExecutor {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .make()
        .expect("a glommio executor starts (needs io_uring and locked memory)")
}

/// A budget of units (bytes) shared by one shard's tasks, with owned permits that return their
/// units when dropped.
pub struct Budget(Rc<glommio::sync::Semaphore>);

/// Units taken from a `Budget`, returned on drop.
pub struct BudgetPermit(#[allow(dead_code)] glommio::sync::StaticPermit);

impl Budget {
    pub fn new(units: u64) -> Budget {
        Budget(Rc::new(glommio::sync::Semaphore::new(units)))
    }

    /// Waits until `units` are available and takes them.
    pub async fn take(&self, units: u64) -> BudgetPermit {
        BudgetPermit(
            self.0
                .acquire_static_permit(units)
                .await
                .expect("a budget is never closed"),
        )
    }
}

/// A bounded FIFO between tasks of one shard: `push` waits while it is full.
pub struct LocalQueue<T>(glommio::channels::local_channel::LocalSender<T>);

/// The receiving end of a `LocalQueue`; `pop` yields `None` once every sender is gone.
pub struct LocalQueueReceiver<T>(glommio::channels::local_channel::LocalReceiver<T>);

/// A bounded queue of `depth` items for tasks of the current shard.
pub fn local_queue<T>(depth: usize) -> (LocalQueue<T>, LocalQueueReceiver<T>) {
    let (tx, rx) = glommio::channels::local_channel::new_bounded(depth);
    (LocalQueue(tx), LocalQueueReceiver(rx))
}

impl<T> LocalQueue<T> {
    /// Waits for room, then enqueues; `false` if the receiver is gone.
    pub async fn push(&self, item: T) -> bool {
        self.0.send(item).await.is_ok()
    }
}

impl<T> LocalQueueReceiver<T> {
    pub async fn pop(&self) -> Option<T> {
        self.0.recv().await
    }
}

/// One TCP stream used by two tasks of its shard: the connection's reader and its ordered
/// writer. Each poll borrows the stream only for the call, never across an await, and glommio
/// keeps separate read and write wait sources, so the two tasks interleave safely on one
/// descriptor (a `dup` per connection would halve how many connections a file limit allows).
#[derive(Clone)]
pub struct SharedStream(Rc<std::cell::RefCell<TcpStream>>);

impl SharedStream {
    pub fn new(stream: TcpStream) -> SharedStream {
        SharedStream(Rc::new(std::cell::RefCell::new(stream)))
    }

    pub fn as_raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.0.borrow().as_raw_fd()
    }

    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.0
            .borrow()
            .set_nodelay(on)
            .map_err(|e| io::Error::other(e.to_string()))
    }

    pub fn shutdown(&self) {
        // SAFETY: shutdown(2) on a descriptor the stream owns; it stays open until dropped.
        unsafe { libc::shutdown(self.as_raw_fd(), libc::SHUT_RDWR) };
    }
}

impl futures_lite::io::AsyncRead for SharedStream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<io::Result<usize>> {
        let mut stream = self.0.borrow_mut();
        std::pin::Pin::new(&mut *stream).poll_read(cx, buf)
    }
}

impl futures_lite::io::AsyncWrite for SharedStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        let mut stream = self.0.borrow_mut();
        std::pin::Pin::new(&mut *stream).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let mut stream = self.0.borrow_mut();
        std::pin::Pin::new(&mut *stream).poll_flush(cx)
    }

    fn poll_close(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let mut stream = self.0.borrow_mut();
        std::pin::Pin::new(&mut *stream).poll_close(cx)
    }
}
