//! The IO seam: every glommio call the broker makes (O_DIRECT files, TCP, tasks, timers) goes
//! through this module, so the runtime can be replaced (compio, a simulator) by rewriting one
//! file. Runs on: every shard, always inside a glommio executor. Invariants: writes are whole
//! aligned blocks (`DIRECT_IO_ALIGNMENT_BYTES`) at aligned positions; errors carry the operation
//! and the path.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use glommio::io::{DmaFile, OpenOptions};

use crate::constants::DIRECT_IO_ALIGNMENT_BYTES;

/// An IO error with the operation and the path it concerned.
#[derive(Debug)]
pub struct IoError {
    pub op: &'static str,
    pub path: PathBuf,
    pub source: io::Error,
}

impl std::fmt::Display for IoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.op, self.path.display(), self.source)
    }
}

impl std::error::Error for IoError {}

/// glommio's error as the kernel's: the errno is kept (ENOSPC, EIO, EMFILE must stay
/// distinguishable: a full disk is transient, a failed fsync is not).
fn to_io(e: glommio::GlommioError<()>) -> io::Error {
    match e {
        glommio::GlommioError::IoError(e) => e,
        glommio::GlommioError::EnhancedIoError { source, .. } => source,
        other => io::Error::from(other),
    }
}

/// True for errors that mean a resource is exhausted for now (disk space, quota, descriptors,
/// memory): the operation may succeed later, so they fail the request, not the partition.
pub fn is_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOSPC | libc::EDQUOT | libc::EMFILE | libc::ENFILE | libc::ENOMEM)
    )
}

/// Bytes ready for one O_DIRECT write: block-aligned memory, padded to whole blocks.
pub struct AlignedWrite(glommio::io::DmaBuffer);

impl AlignedWrite {
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// A segment file opened with O_DIRECT for aligned appends and reads.
pub struct LogFile {
    file: Rc<DmaFile>,
    path: PathBuf,
}

impl LogFile {
    /// Opens (creating if asked) a file for O_DIRECT reads and writes.
    pub async fn open(path: &Path, create: bool) -> Result<LogFile, IoError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .dma_open(path)
            .await
            .map_err(|e| IoError {
                op: if create { "create" } else { "open" },
                path: path.to_owned(),
                source: to_io(e),
            })?;
        Ok(LogFile {
            file: Rc::new(file),
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, op: &'static str, e: glommio::GlommioError<()>) -> IoError {
        IoError {
            op,
            path: self.path.clone(),
            source: to_io(e),
        }
    }

    /// Copies `parts`, back to back, into a block-aligned DMA buffer padded with zeros to a
    /// whole block: the one copy a write needs. Synchronous, so a caller can fill it while it
    /// holds the bytes.
    pub fn prepare_write(&self, parts: &[&[u8]]) -> AlignedWrite {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let len = (total as u64).div_ceil(DIRECT_IO_ALIGNMENT_BYTES) * DIRECT_IO_ALIGNMENT_BYTES;
        let mut buf = self.file.alloc_dma_buffer(len as usize);
        let bytes = buf.as_bytes_mut();
        let mut at = 0;
        for part in parts {
            bytes[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        bytes[total..].fill(0);
        AlignedWrite(buf)
    }

    /// Writes a prepared buffer at the aligned position `pos`.
    pub async fn write_prepared(&self, pos: u64, buf: AlignedWrite) -> Result<(), IoError> {
        assert!(
            pos % DIRECT_IO_ALIGNMENT_BYTES == 0,
            "O_DIRECT writes start at an aligned position"
        );
        let len = buf.0.len();
        let written = self
            .file
            .write_at(buf.0, pos)
            .await
            .map_err(|e| self.err("write", e))?;
        if written != len {
            return Err(IoError {
                op: "write",
                path: self.path.clone(),
                source: io::Error::new(io::ErrorKind::WriteZero, "short O_DIRECT write"),
            });
        }
        Ok(())
    }

    /// Reads up to `len` bytes at `pos` (any alignment; glommio aligns internally).
    pub async fn read(&self, pos: u64, len: usize) -> Result<Bytes, IoError> {
        let result = self
            .file
            .read_at(pos, len)
            .await
            .map_err(|e| self.err("read", e))?;
        Ok(Bytes::copy_from_slice(&result[..]))
    }

    pub async fn sync(&self) -> Result<(), IoError> {
        self.file
            .fdatasync()
            .await
            .map_err(|e| self.err("fdatasync", e))
    }

    /// Allocates `len` bytes on disk so that later syncs need not commit size metadata.
    pub async fn preallocate(&self, len: u64) -> Result<(), IoError> {
        self.file
            .pre_allocate(len, false)
            .await
            .map_err(|e| self.err("fallocate", e))
    }

    pub async fn truncate(&self, len: u64) -> Result<(), IoError> {
        self.file
            .truncate(len)
            .await
            .map_err(|e| self.err("truncate", e))
    }
}

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
    let fail = |op, source| IoError {
        op,
        path: path.clone(),
        source,
    };
    std::fs::write(&path, vec![0u8; DIRECT_IO_ALIGNMENT_BYTES as usize])
        .map_err(|e| fail("write", e))?;
    let file = DmaFile::open(&path)
        .await
        .map_err(|e| fail("open", to_io(e)))?;
    let _ = file.close().await;
    std::fs::remove_file(&path).map_err(|e| fail("remove", e))
}

/// Runs `future` to completion on a fresh single-shard executor on the calling thread (benches,
/// tools and tests that need the runtime without the whole broker).
pub fn run_local<T: 'static, F: Future<Output = T> + 'static>(future: F) -> T {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .make()
        .expect("a glommio executor starts (needs io_uring and locked memory)")
        .run(future)
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
