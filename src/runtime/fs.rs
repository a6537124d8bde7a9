//! The IO seam: one trait for every file operation the broker makes (open, read, write,
//! allocate, fdatasync, truncate, rename, remove, create and list directories, directory
//! fsync), so storage, groups and the controller never touch `std::fs`, and a test can put a
//! faulty disk under them (`testing::FaultFs`). Runs on: every shard (the futures are `!Send`,
//! driven by the shard's executor). Invariants: no operation blocks the calling thread (the
//! real implementation, `runtime::disk`, uses io_uring or the executor's blocking pool);
//! errors keep the operation, the path and the errno, so ENOSPC, EIO and EMFILE stay apart.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;

/// A boxed future of one IO operation.
pub type IoFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, IoError>> + 'a>>;

/// An IO error with the operation, the path and the kernel's error number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoError {
    pub op: &'static str,
    pub path: PathBuf,
    /// The errno, when the kernel gave one.
    pub errno: Option<i32>,
    pub kind: std::io::ErrorKind,
    pub message: String,
}

impl IoError {
    pub fn new(op: &'static str, path: &Path, e: std::io::Error) -> IoError {
        IoError {
            op,
            path: path.to_owned(),
            errno: e.raw_os_error(),
            kind: e.kind(),
            message: e.to_string(),
        }
    }

    /// An error with an errno (as a test's faulty disk makes them).
    pub fn from_errno(op: &'static str, path: &Path, errno: i32) -> IoError {
        IoError::new(op, path, std::io::Error::from_raw_os_error(errno))
    }

    /// True if a resource is exhausted for now (disk space, quota, descriptors, memory): the
    /// operation may succeed later, so it fails the request, not the partition.
    pub fn is_exhaustion(&self) -> bool {
        matches!(
            self.errno,
            Some(libc::ENOSPC | libc::EDQUOT | libc::EMFILE | libc::ENFILE | libc::ENOMEM)
        )
    }

    pub fn is_not_found(&self) -> bool {
        self.kind == std::io::ErrorKind::NotFound
    }
}

impl std::fmt::Display for IoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.op, self.path.display(), self.message)
    }
}

impl std::error::Error for IoError {}

/// How a file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// O_DIRECT: writes are whole aligned blocks from `File::alloc_aligned` (segments).
    Direct,
    /// Through the page cache: small files written at any position (snapshots, markers,
    /// indexes, the metadata log).
    Buffered,
}

/// Options of `Fs::open`.
#[derive(Debug, Clone, Copy)]
pub struct OpenOptions {
    pub kind: FileKind,
    pub create: bool,
    pub write: bool,
    /// Every write is durable when it completes (O_DSYNC; Direct files only), so an
    /// fdatasync after it is needed only when something else changed the file.
    pub sync_writes: bool,
}

impl OpenOptions {
    pub fn direct(create: bool) -> OpenOptions {
        OpenOptions {
            kind: FileKind::Direct,
            create,
            write: true,
            sync_writes: false,
        }
    }

    pub fn buffered(create: bool) -> OpenOptions {
        OpenOptions {
            kind: FileKind::Buffered,
            create,
            write: true,
            sync_writes: false,
        }
    }

    /// See `sync_writes`.
    pub fn with_sync_writes(mut self, on: bool) -> OpenOptions {
        self.sync_writes = on;
        self
    }

    pub fn read_only() -> OpenOptions {
        OpenOptions {
            kind: FileKind::Buffered,
            create: false,
            write: false,
            sync_writes: false,
        }
    }
}

/// Memory for one O_DIRECT write: aligned as the file needs it.
pub struct AlignedBuf(pub(super) AlignedInner);

pub(super) enum AlignedInner {
    Dma(glommio::io::DmaBuffer),
    Heap(Vec<u8>),
}

impl AlignedBuf {
    /// Plain memory (for implementations that need no real alignment).
    pub fn heap(len: usize) -> AlignedBuf {
        AlignedBuf(AlignedInner::Heap(vec![0; len]))
    }

    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            AlignedInner::Dma(b) => b.as_bytes(),
            AlignedInner::Heap(v) => v,
        }
    }

    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        match &mut self.0 {
            AlignedInner::Dma(b) => b.as_bytes_mut(),
            AlignedInner::Heap(v) => v,
        }
    }
}

/// An ordinary read-only descriptor of a file, for splicing its page-cache bytes into a socket.
pub type SpliceFile = Arc<std::fs::File>;

/// An open file.
pub trait File {
    fn path(&self) -> &Path;
    fn kind(&self) -> FileKind;
    /// The file's length.
    fn size(&self) -> IoFuture<'_, u64>;
    /// Last modification, in milliseconds since the epoch.
    fn modified_ms(&self) -> IoFuture<'_, i64>;
    /// Up to `len` bytes at `pos` (fewer at the end of the file).
    fn read_at(&self, pos: u64, len: usize) -> IoFuture<'_, Bytes>;
    /// Memory for a `write_aligned` of `len` bytes (`len` a multiple of the alignment).
    fn alloc_aligned(&self, len: usize) -> AlignedBuf;
    /// Writes a whole aligned buffer at an aligned position (Direct files).
    fn write_aligned(&self, pos: u64, buf: AlignedBuf) -> IoFuture<'_, ()>;
    /// Writes bytes at any position (Buffered files).
    fn write_at(&self, pos: u64, data: Vec<u8>) -> IoFuture<'_, ()>;
    fn fdatasync(&self) -> IoFuture<'_, ()>;
    /// False when an fdatasync now would add nothing: the file was opened with `sync_writes`
    /// and nothing but writes changed it since its last fdatasync (no allocate, truncate or
    /// zero_range). Files that do not know say true.
    fn sync_needed(&self) -> bool {
        true
    }
    /// Allocates disk space up to `len` bytes; the file's length grows to `len` if shorter.
    fn allocate(&self, len: u64) -> IoFuture<'_, ()>;
    /// Bytes the file system holding this file can still allocate (for unprivileged users).
    fn available_bytes(&self) -> IoFuture<'_, u64>;
    /// Turns `len` bytes from `from` into zeros without changing the length.
    fn zero_range(&self, from: u64, len: u64) -> IoFuture<'_, ()>;
    fn truncate(&self, len: u64) -> IoFuture<'_, ()>;
    /// A page-cache descriptor for zero-copy sends; `None` where there is no real file.
    fn splice_source(&self) -> IoFuture<'_, Option<SpliceFile>>;
}

/// Every file operation the broker makes.
pub trait Fs {
    fn open(&self, path: &Path, options: OpenOptions) -> IoFuture<'_, Rc<dyn File>>;
    fn create_dir_all(&self, path: &Path) -> IoFuture<'_, ()>;
    /// The names of a directory's entries.
    fn list_dir(&self, path: &Path) -> IoFuture<'_, Vec<String>>;
    fn exists(&self, path: &Path) -> IoFuture<'_, bool>;
    fn rename(&self, from: &Path, to: &Path) -> IoFuture<'_, ()>;
    fn remove_file(&self, path: &Path) -> IoFuture<'_, ()>;
    fn remove_dir_all(&self, path: &Path) -> IoFuture<'_, ()>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, path: &Path) -> IoFuture<'_, ()>;
}

/// The whole content of a small file; `None` if it does not exist.
pub async fn read_whole(fs: &dyn Fs, path: &Path) -> Result<Option<Vec<u8>>, IoError> {
    read_bounded(fs, path, usize::MAX).await
}

/// The whole content of a small file of at most `bytes_max` bytes (checked before anything
/// is allocated; a larger file is an `InvalidData` error); `None` if it does not exist.
pub async fn read_bounded(
    fs: &dyn Fs,
    path: &Path,
    bytes_max: usize,
) -> Result<Option<Vec<u8>>, IoError> {
    let file = match fs.open(path, OpenOptions::read_only()).await {
        Ok(f) => f,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = file.size().await?;
    let len = usize::try_from(len)
        .ok()
        .filter(|&l| l <= bytes_max)
        .ok_or_else(|| IoError {
            op: "read",
            path: path.to_owned(),
            errno: None,
            kind: std::io::ErrorKind::InvalidData,
            message: format!("{len} bytes are more than the {bytes_max} this file may hold"),
        })?;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let chunk = file.read_at(out.len() as u64, len - out.len()).await?;
        if chunk.is_empty() {
            break;
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Some(out))
}

/// Replaces `path` with `bytes` so that after a crash it holds the old content or the new one,
/// never a mix: a temp file beside it, fdatasync, rename, directory fsync.
pub async fn write_atomic(fs: &dyn Fs, path: &Path, bytes: Vec<u8>) -> Result<(), IoError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let file = fs.open(&tmp, OpenOptions::buffered(true)).await?;
    file.truncate(0).await?;
    file.write_at(0, bytes).await?;
    file.fdatasync().await?;
    drop(file);
    fs.rename(&tmp, path).await?;
    fs.sync_dir(path.parent().unwrap_or(Path::new("."))).await
}

/// Writes a new file (or replaces one) and syncs it, without the rename: for files whose
/// loss is harmless because a reader checks them (an index, a snapshot with a CRC).
pub async fn write_synced(fs: &dyn Fs, path: &Path, bytes: Vec<u8>) -> Result<(), IoError> {
    let file = fs.open(path, OpenOptions::buffered(true)).await?;
    file.truncate(0).await?;
    file.write_at(0, bytes).await?;
    file.fdatasync().await
}
