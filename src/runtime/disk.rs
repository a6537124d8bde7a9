//! The real `Fs`: glommio's io_uring files for reads, writes, allocation and syncs, and the
//! executor's blocking thread pool for what io_uring does not offer here (directory
//! operations, stat). Runs on: every shard. Invariant: the shard thread never makes a blocking
//! file system call.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;

use super::fs::{
    AlignedBuf, AlignedInner, File, FileKind, Fs, IoError, IoFuture, OpenOptions, SpliceFile,
};

/// glommio's error as the kernel's: the errno is kept.
fn to_io(e: glommio::GlommioError<()>) -> std::io::Error {
    match e {
        glommio::GlommioError::IoError(e) => e,
        glommio::GlommioError::EnhancedIoError { source, .. } => source,
        other => std::io::Error::from(other),
    }
}

/// Runs a blocking file system call on the executor's blocking pool.
async fn blocking<T: Send + 'static>(
    op: &'static str,
    path: &Path,
    f: impl FnOnce(&Path) -> std::io::Result<T> + Send + 'static,
) -> Result<T, IoError> {
    let owned = path.to_owned();
    let result = glommio::executor().spawn_blocking(move || f(&owned)).await;
    result.map_err(|e| IoError::new(op, path, e))
}

/// The file system of the machine.
#[derive(Default)]
pub struct Disk;

enum Inner {
    Direct(glommio::io::DmaFile),
    Buffered(glommio::io::BufferedFile),
}

struct DiskFile {
    inner: Inner,
    path: PathBuf,
    /// Opened with O_DSYNC: a completed write is durable, data and the metadata to read it.
    sync_writes: bool,
    /// Calls that changed the file other than by writing (allocate, truncate, zero_range),
    /// and how many of them the last successful fdatasync covered.
    changes: std::cell::Cell<u64>,
    changes_synced: std::cell::Cell<u64>,
    /// Opened on the first zero-copy send; in-flight splices hold their own reference.
    splice: std::cell::OnceCell<SpliceFile>,
}

impl DiskFile {
    fn err(&self, op: &'static str, e: glommio::GlommioError<()>) -> IoError {
        IoError::new(op, &self.path, to_io(e))
    }

    /// Counts a change an O_DSYNC write does not cover; called before the change starts, so
    /// an fdatasync running meanwhile never claims it.
    fn changing(&self) {
        self.changes.set(self.changes.get() + 1);
    }

    fn raw_fd(&self) -> i32 {
        use std::os::fd::AsRawFd;
        match &self.inner {
            Inner::Direct(f) => f.as_raw_fd(),
            Inner::Buffered(f) => f.as_raw_fd(),
        }
    }
}

impl Fs for Disk {
    fn open(&self, path: &Path, options: OpenOptions) -> IoFuture<'_, Rc<dyn File>> {
        let path = path.to_owned();
        Box::pin(async move {
            let mut o = glommio::io::OpenOptions::new();
            o.read(true).write(options.write).create(options.create);
            let op = if options.create { "create" } else { "open" };
            // O_DSYNC turns write + fdatasync into one IO: one completion instead of two, and
            // no hop to the kernel's io-wq threads, where io_uring runs every fsync.
            let sync_writes = options.sync_writes && options.kind == FileKind::Direct;
            if sync_writes {
                o.custom_flags(libc::O_DSYNC);
            }
            let inner = match options.kind {
                FileKind::Direct => Inner::Direct(
                    o.dma_open(&path)
                        .await
                        .map_err(|e| IoError::new(op, &path, to_io(e)))?,
                ),
                FileKind::Buffered => Inner::Buffered(
                    o.buffered_open(&path)
                        .await
                        .map_err(|e| IoError::new(op, &path, to_io(e)))?,
                ),
            };
            Ok(Rc::new(DiskFile {
                inner,
                path,
                sync_writes,
                changes: std::cell::Cell::new(0),
                changes_synced: std::cell::Cell::new(0),
                splice: std::cell::OnceCell::new(),
            }) as Rc<dyn File>)
        })
    }

    fn create_dir_all(&self, path: &Path) -> IoFuture<'_, ()> {
        let path = path.to_owned();
        Box::pin(async move { blocking("create_dir", &path, |p| std::fs::create_dir_all(p)).await })
    }

    fn list_dir(&self, path: &Path) -> IoFuture<'_, Vec<String>> {
        let path = path.to_owned();
        Box::pin(async move {
            blocking("read_dir", &path, |p| {
                let mut names = Vec::new();
                for entry in std::fs::read_dir(p)? {
                    names.push(entry?.file_name().to_string_lossy().into_owned());
                }
                Ok(names)
            })
            .await
        })
    }

    fn exists(&self, path: &Path) -> IoFuture<'_, bool> {
        let path = path.to_owned();
        Box::pin(async move {
            blocking("stat", &path, |p| match std::fs::symlink_metadata(p) {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(e),
            })
            .await
        })
    }

    fn rename(&self, from: &Path, to: &Path) -> IoFuture<'_, ()> {
        let (from, to) = (from.to_owned(), to.to_owned());
        Box::pin(async move { blocking("rename", &from, move |f| std::fs::rename(f, &to)).await })
    }

    fn remove_file(&self, path: &Path) -> IoFuture<'_, ()> {
        let path = path.to_owned();
        Box::pin(async move { blocking("remove", &path, |p| std::fs::remove_file(p)).await })
    }

    fn remove_dir_all(&self, path: &Path) -> IoFuture<'_, ()> {
        let path = path.to_owned();
        Box::pin(async move { blocking("remove_dir", &path, |p| std::fs::remove_dir_all(p)).await })
    }

    fn sync_dir(&self, path: &Path) -> IoFuture<'_, ()> {
        let path = path.to_owned();
        Box::pin(async move {
            blocking("fsync dir", &path, |p| std::fs::File::open(p)?.sync_all()).await
        })
    }
}

impl File for DiskFile {
    fn path(&self) -> &Path {
        &self.path
    }

    fn kind(&self) -> FileKind {
        match self.inner {
            Inner::Direct(_) => FileKind::Direct,
            Inner::Buffered(_) => FileKind::Buffered,
        }
    }

    fn size(&self) -> IoFuture<'_, u64> {
        Box::pin(async move {
            match &self.inner {
                Inner::Direct(f) => f.file_size().await,
                Inner::Buffered(f) => f.file_size().await,
            }
            .map_err(|e| self.err("stat", e))
        })
    }

    fn modified_ms(&self) -> IoFuture<'_, i64> {
        Box::pin(async move {
            blocking("stat", &self.path, |p| {
                let modified = std::fs::metadata(p)?.modified()?;
                Ok(modified
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0))
            })
            .await
        })
    }

    fn read_at(&self, pos: u64, len: usize) -> IoFuture<'_, Bytes> {
        Box::pin(async move {
            let read = match &self.inner {
                Inner::Direct(f) => f.read_at(pos, len).await,
                Inner::Buffered(f) => f.read_at(pos, len).await,
            }
            .map_err(|e| self.err("read", e))?;
            Ok(Bytes::copy_from_slice(&read[..]))
        })
    }

    fn alloc_aligned(&self, len: usize) -> AlignedBuf {
        match &self.inner {
            Inner::Direct(f) => AlignedBuf(AlignedInner::Dma(f.alloc_dma_buffer(len))),
            Inner::Buffered(_) => AlignedBuf::heap(len),
        }
    }

    fn write_aligned(&self, pos: u64, buf: AlignedBuf) -> IoFuture<'_, ()> {
        Box::pin(async move {
            let len = buf.len();
            let written = match (&self.inner, buf.0) {
                (Inner::Direct(f), AlignedInner::Dma(b)) => {
                    assert!(
                        pos.is_multiple_of(f.alignment())
                            && (len as u64).is_multiple_of(f.alignment()),
                        "O_DIRECT writes are whole aligned blocks: {len} bytes at {pos} in {}",
                        self.path.display()
                    );
                    f.write_at(b, pos).await
                }
                (Inner::Buffered(f), AlignedInner::Heap(v)) => f.write_at(v, pos).await,
                (Inner::Buffered(f), AlignedInner::Dma(b)) => {
                    f.write_at(b.as_bytes().to_vec(), pos).await
                }
                (Inner::Direct(_), AlignedInner::Heap(_)) => {
                    unreachable!("O_DIRECT buffers come from alloc_aligned")
                }
            }
            .map_err(|e| self.err("write", e))?;
            if written != len {
                return Err(IoError::new(
                    "write",
                    &self.path,
                    std::io::Error::new(std::io::ErrorKind::WriteZero, "short write"),
                ));
            }
            Ok(())
        })
    }

    fn write_at(&self, pos: u64, data: Vec<u8>) -> IoFuture<'_, ()> {
        Box::pin(async move {
            let Inner::Buffered(f) = &self.inner else {
                unreachable!("byte writes go to buffered files");
            };
            let mut at = 0usize;
            while at < data.len() {
                let n = f
                    .write_at(data[at..].to_vec(), pos + at as u64)
                    .await
                    .map_err(|e| self.err("write", e))?;
                if n == 0 {
                    return Err(IoError::new(
                        "write",
                        &self.path,
                        std::io::Error::new(std::io::ErrorKind::WriteZero, "wrote nothing"),
                    ));
                }
                at += n;
            }
            Ok(())
        })
    }

    fn fdatasync(&self) -> IoFuture<'_, ()> {
        Box::pin(async move {
            let covers = self.changes.get();
            match &self.inner {
                Inner::Direct(f) => f.fdatasync().await,
                Inner::Buffered(f) => f.fdatasync().await,
            }
            .map_err(|e| self.err("fdatasync", e))?;
            self.changes_synced.set(covers);
            Ok(())
        })
    }

    fn sync_needed(&self) -> bool {
        !self.sync_writes || self.changes.get() != self.changes_synced.get()
    }

    fn allocate(&self, len: u64) -> IoFuture<'_, ()> {
        Box::pin(async move {
            self.changing();
            match &self.inner {
                Inner::Direct(f) => f.pre_allocate(len, false).await,
                Inner::Buffered(f) => f.pre_allocate(len, false).await,
            }
            .map_err(|e| self.err("fallocate", e))
        })
    }

    fn available_bytes(&self) -> IoFuture<'_, u64> {
        Box::pin(async move {
            // Called inline, not on the blocking pool: statfs of a local file system reads
            // counters the kernel keeps in memory and does not wait for the disk, while the hop
            // to the pool delayed the write that carried each allocation step (with a statx
            // before it, 2-3 % of produce throughput on the emulated HDD).
            let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
            // SAFETY: fstatvfs fills a struct we own, on a descriptor `self` keeps open.
            if unsafe { libc::fstatvfs(self.raw_fd(), &mut st) } != 0 {
                return Err(IoError::new(
                    "statvfs",
                    &self.path,
                    std::io::Error::last_os_error(),
                ));
            }
            Ok(st.f_bavail as u64 * st.f_frsize as u64)
        })
    }

    fn zero_range(&self, from: u64, len: u64) -> IoFuture<'_, ()> {
        Box::pin(async move {
            if len == 0 {
                return Ok(());
            }
            self.changing();
            let fd = self.raw_fd();
            // The descriptor stays open: `self` is borrowed until the call returns.
            blocking("zero range", &self.path, move |path| {
                // SAFETY: fallocate on a descriptor the borrowed file keeps open.
                let rc = unsafe {
                    libc::fallocate(
                        fd,
                        libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
                        from as libc::off_t,
                        len as libc::off_t,
                    )
                };
                if rc == 0 {
                    return Ok(());
                }
                // Filesystems without ZERO_RANGE get written zeros, through an ordinary
                // descriptor (the file's own may be O_DIRECT, which refuses unaligned writes).
                use std::os::unix::fs::FileExt;
                let file = std::fs::OpenOptions::new().write(true).open(path)?;
                let zeros = vec![0u8; 1 << 20];
                let mut at = from;
                while at < from + len {
                    let n = zeros.len().min((from + len - at) as usize);
                    file.write_all_at(&zeros[..n], at)?;
                    at += n as u64;
                }
                file.sync_data()?;
                Ok(())
            })
            .await
        })
    }

    fn truncate(&self, len: u64) -> IoFuture<'_, ()> {
        Box::pin(async move {
            self.changing();
            match &self.inner {
                Inner::Direct(f) => f.truncate(len).await,
                Inner::Buffered(f) => f.truncate(len).await,
            }
            .map_err(|e| self.err("truncate", e))
        })
    }

    fn splice_source(&self) -> IoFuture<'_, Option<SpliceFile>> {
        Box::pin(async move {
            if let Some(f) = self.splice.get() {
                return Ok(Some(f.clone()));
            }
            let file = blocking("open", &self.path, |p| std::fs::File::open(p)).await?;
            let file = self.splice.get_or_init(|| Arc::new(file)).clone();
            Ok(Some(file))
        })
    }
}
