//! A file system in memory with the failures a real disk has, behind the same `Fs` trait the
//! broker uses: for in-process tests of storage, groups and the metadata log (and, later, the
//! seeded simulation). Runs on: one test thread (single-threaded, `Rc`). What it models:
//! - a crash (`crash`): each write not yet covered by an fdatasync of its file is
//!   independently kept, dropped, or torn at a 512-byte boundary (a prefix of its sectors
//!   lands); size changes not covered by a sync may be lost; directory operations (create,
//!   rename, remove) form one ordered journal of which only a prefix survives unless a
//!   directory fsync made them durable (as ext4's journal does);
//! - injected errors (`inject`): EIO on fdatasync, ENOSPC on write or allocation, EMFILE on
//!   open, for files whose path contains a pattern, a number of times;
//! - a space limit (`set_space_bytes`): writes and allocations past it fail with ENOSPC;
//! - bit rot (`flip_bit`): one bit of a file changed in place, durable and current alike.
//!
//! Every future completes at once: with no real IO and no timers, a test on one executor runs
//! the same way every time.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;

use crate::runtime::fs::{
    AlignedBuf, File, FileKind, Fs, IoError, IoFuture, OpenOptions, SpliceFile,
};

const SECTOR_BYTES: usize = 512;

/// Operations an injected fault can hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Open,
    Write,
    Allocate,
    Fdatasync,
    Rename,
    SyncDir,
}

/// An error to return from the next `times` operations `op` on paths containing `path`.
#[derive(Debug, Clone)]
pub struct Fault {
    pub op: Op,
    pub path: String,
    pub errno: i32,
    pub times: usize,
}

/// One file's bytes: what the disk surely holds, and what was written since.
#[derive(Debug, Default)]
struct Inode {
    current: Vec<u8>,
    durable: Vec<u8>,
    /// Writes and size changes since the last fdatasync, in order.
    unsynced: Vec<Change>,
}

#[derive(Debug, Clone)]
enum Change {
    Write { pos: u64, data: Vec<u8> },
    SetLen(u64),
}

/// A directory operation in the journal.
#[derive(Debug, Clone)]
enum DirOp {
    Link(PathBuf, Rc<RefCell<Inode>>),
    Unlink(PathBuf),
    Mkdir(PathBuf),
    Rmdir(PathBuf),
}

#[derive(Default)]
struct State {
    names: BTreeMap<PathBuf, Rc<RefCell<Inode>>>,
    dirs: BTreeSet<PathBuf>,
    /// Directory operations not yet made durable by a directory fsync, oldest first.
    journal: Vec<DirOp>,
    /// The namespace as the disk surely holds it.
    durable_names: BTreeMap<PathBuf, Rc<RefCell<Inode>>>,
    durable_dirs: BTreeSet<PathBuf>,
    faults: Vec<Fault>,
    space_bytes: Option<u64>,
    /// Counts of operations done, by kind (for tests that check what happened).
    syncs: usize,
}

impl State {
    fn used_bytes(&self) -> u64 {
        let mut seen = std::collections::HashSet::new();
        self.names
            .values()
            .filter(|i| seen.insert(Rc::as_ptr(i)))
            .map(|i| i.borrow().current.len() as u64)
            .sum()
    }

    fn take_fault(&mut self, op: Op, path: &Path) -> Option<i32> {
        let p = path.to_string_lossy();
        let i = self
            .faults
            .iter()
            .position(|f| f.op == op && f.times > 0 && p.contains(&f.path))?;
        self.faults[i].times -= 1;
        let errno = self.faults[i].errno;
        if self.faults[i].times == 0 {
            self.faults.remove(i);
        }
        Some(errno)
    }

    fn check(&mut self, op: Op, opname: &'static str, path: &Path) -> Result<(), IoError> {
        match self.take_fault(op, path) {
            Some(errno) => Err(IoError::from_errno(opname, path, errno)),
            None => Ok(()),
        }
    }

    /// ENOSPC if growing files by `grow` bytes passes the space limit.
    fn reserve(&self, grow: u64, path: &Path, op: &'static str) -> Result<(), IoError> {
        match self.space_bytes {
            Some(limit) if grow > 0 && self.used_bytes() + grow > limit => {
                Err(IoError::from_errno(op, path, libc::ENOSPC))
            }
            _ => Ok(()),
        }
    }

    fn parent_exists(&self, path: &Path) -> bool {
        match path.parent() {
            None => true,
            Some(p) if p.as_os_str().is_empty() => true,
            Some(p) => self.dirs.contains(p),
        }
    }
}

/// The in-memory faulty file system. Cloning shares it.
#[derive(Clone, Default)]
pub struct FaultFs {
    state: Rc<RefCell<State>>,
}

fn not_found(op: &'static str, path: &Path) -> IoError {
    IoError::from_errno(op, path, libc::ENOENT)
}

impl FaultFs {
    pub fn new() -> FaultFs {
        FaultFs::default()
    }

    /// Makes the next `fault.times` operations `fault.op` on matching paths fail.
    pub fn inject(&self, fault: Fault) {
        self.state.borrow_mut().faults.push(fault);
    }

    /// Forgets every injected fault not yet used.
    pub fn clear_faults(&self) {
        self.state.borrow_mut().faults.clear();
    }

    /// Limits the bytes all files may hold together (`None`: no limit).
    pub fn set_space_bytes(&self, limit: Option<u64>) {
        self.state.borrow_mut().space_bytes = limit;
    }

    /// Bytes all files hold now.
    pub fn used_bytes(&self) -> u64 {
        self.state.borrow().used_bytes()
    }

    /// How many fdatasyncs succeeded so far.
    pub fn syncs(&self) -> usize {
        self.state.borrow().syncs
    }

    /// Flips one bit of a file, in what the disk holds as well as in what reads see.
    pub fn flip_bit(&self, path: &Path, byte: usize, bit: u8) {
        let st = self.state.borrow();
        let inode = st.names.get(path).expect("flip_bit: no such file");
        let mut i = inode.borrow_mut();
        i.current[byte] ^= 1 << bit;
        if byte < i.durable.len() {
            i.durable[byte] ^= 1 << bit;
        }
    }

    /// The bytes reads of `path` see now.
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let st = self.state.borrow();
        st.names.get(path).map(|i| i.borrow().current.clone())
    }

    /// Replaces the bytes of `path` (made durable), creating it if needed: for tests that
    /// prepare damaged files.
    pub fn put(&self, path: &Path, bytes: &[u8]) {
        let mut st = self.state.borrow_mut();
        let inode = Rc::new(RefCell::new(Inode {
            current: bytes.to_vec(),
            durable: bytes.to_vec(),
            unsynced: Vec::new(),
        }));
        st.names.insert(path.to_owned(), inode.clone());
        st.durable_names.insert(path.to_owned(), inode);
    }

    /// Names of every file, for tests.
    pub fn files(&self) -> Vec<PathBuf> {
        self.state.borrow().names.keys().cloned().collect()
    }

    /// The file system after a power loss, decided by `seed`: a new `FaultFs` (handles into
    /// the old one see the old state). Injected faults and the space limit carry over.
    pub fn crash(&self, seed: u64) -> FaultFs {
        let mut rng = SplitMix(seed);
        let st = self.state.borrow();
        // A random prefix of the directory journal survives.
        let kept_ops = rng.below(st.journal.len() as u64 + 1) as usize;
        let mut names = st.durable_names.clone();
        let mut dirs = st.durable_dirs.clone();
        for op in &st.journal[..kept_ops] {
            match op {
                DirOp::Link(p, i) => {
                    names.insert(p.clone(), i.clone());
                }
                DirOp::Unlink(p) => {
                    names.remove(p);
                }
                DirOp::Mkdir(p) => {
                    dirs.insert(p.clone());
                }
                DirOp::Rmdir(p) => {
                    dirs.remove(p);
                    names.retain(|n, _| !n.starts_with(p));
                }
            }
        }
        // Each surviving file: its durable bytes, plus each unsynced change kept, dropped or
        // (a write) torn at a sector boundary. Inodes are rebuilt once, shared by names.
        let mut rebuilt: BTreeMap<*const RefCell<Inode>, Rc<RefCell<Inode>>> = BTreeMap::new();
        let mut new_names = BTreeMap::new();
        for (path, inode) in names {
            let ptr = Rc::as_ptr(&inode);
            let fresh = rebuilt
                .entry(ptr)
                .or_insert_with(|| {
                    let old = inode.borrow();
                    let mut bytes = old.durable.clone();
                    for change in &old.unsynced {
                        apply_after_crash(&mut bytes, change, &mut rng);
                    }
                    Rc::new(RefCell::new(Inode {
                        current: bytes.clone(),
                        durable: bytes,
                        unsynced: Vec::new(),
                    }))
                })
                .clone();
            new_names.insert(path, fresh);
        }
        let state = State {
            durable_names: new_names.clone(),
            names: new_names,
            durable_dirs: dirs.clone(),
            dirs,
            journal: Vec::new(),
            faults: st.faults.clone(),
            space_bytes: st.space_bytes,
            syncs: 0,
        };
        FaultFs {
            state: Rc::new(RefCell::new(state)),
        }
    }
}

fn apply_after_crash(bytes: &mut Vec<u8>, change: &Change, rng: &mut SplitMix) {
    match change {
        Change::SetLen(len) => {
            if rng.below(2) == 0 {
                bytes.resize(*len as usize, 0);
            }
        }
        Change::Write { pos, data } => {
            let keep = match rng.below(3) {
                0 => 0,
                1 => data.len(),
                _ => {
                    // A prefix of whole sectors (counted on the file's sector grid) lands.
                    let pos = *pos as usize;
                    let first_boundary = pos.div_ceil(SECTOR_BYTES) * SECTOR_BYTES;
                    let sectors = (pos + data.len()).saturating_sub(first_boundary) / SECTOR_BYTES;
                    let cut =
                        first_boundary + rng.below(sectors as u64 + 1) as usize * SECTOR_BYTES;
                    cut.saturating_sub(pos).min(data.len())
                }
            };
            if keep == 0 {
                return;
            }
            let end = *pos as usize + keep;
            if bytes.len() < end {
                bytes.resize(end, 0);
            }
            bytes[*pos as usize..end].copy_from_slice(&data[..keep]);
        }
    }
}

/// A small seeded generator (SplitMix64).
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (0 when n is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
}

struct FaultFile {
    fs: FaultFs,
    inode: Rc<RefCell<Inode>>,
    path: PathBuf,
    kind: FileKind,
}

impl Fs for FaultFs {
    fn open(&self, path: &Path, options: OpenOptions) -> IoFuture<'_, Rc<dyn File>> {
        let path = path.to_owned();
        Box::pin(async move {
            let mut st = self.state.borrow_mut();
            st.check(Op::Open, "open", &path)?;
            let inode = match st.names.get(&path) {
                Some(i) => i.clone(),
                None if options.create => {
                    if !st.parent_exists(&path) {
                        return Err(not_found("create", &path));
                    }
                    let i = Rc::new(RefCell::new(Inode::default()));
                    st.names.insert(path.clone(), i.clone());
                    st.journal.push(DirOp::Link(path.clone(), i.clone()));
                    i
                }
                None => return Err(not_found("open", &path)),
            };
            Ok(Rc::new(FaultFile {
                fs: self.clone(),
                inode,
                path,
                kind: options.kind,
            }) as Rc<dyn File>)
        })
    }

    fn create_dir_all(&self, path: &Path) -> IoFuture<'_, ()> {
        let path = path.to_owned();
        Box::pin(async move {
            let mut st = self.state.borrow_mut();
            let mut missing = Vec::new();
            let mut p = Some(path.as_path());
            while let Some(dir) = p {
                if dir.as_os_str().is_empty() || st.dirs.contains(dir) {
                    break;
                }
                missing.push(dir.to_owned());
                p = dir.parent();
            }
            for dir in missing.into_iter().rev() {
                st.dirs.insert(dir.clone());
                st.journal.push(DirOp::Mkdir(dir));
            }
            Ok(())
        })
    }

    fn list_dir(&self, path: &Path) -> IoFuture<'_, Vec<String>> {
        let path = path.to_owned();
        Box::pin(async move {
            let st = self.state.borrow();
            if !st.dirs.contains(&path) {
                return Err(not_found("read_dir", &path));
            }
            let child = |p: &PathBuf| {
                (p.parent() == Some(path.as_path()))
                    .then(|| p.file_name().unwrap().to_string_lossy().into_owned())
            };
            let mut names: BTreeSet<String> = st.names.keys().filter_map(child).collect();
            names.extend(st.dirs.iter().filter_map(child));
            Ok(names.into_iter().collect())
        })
    }

    fn exists(&self, path: &Path) -> IoFuture<'_, bool> {
        let path = path.to_owned();
        Box::pin(async move {
            let st = self.state.borrow();
            Ok(st.names.contains_key(&path) || st.dirs.contains(&path))
        })
    }

    fn rename(&self, from: &Path, to: &Path) -> IoFuture<'_, ()> {
        let (from, to) = (from.to_owned(), to.to_owned());
        Box::pin(async move {
            let mut st = self.state.borrow_mut();
            st.check(Op::Rename, "rename", &from)?;
            if let Some(inode) = st.names.remove(&from) {
                st.names.insert(to.clone(), inode.clone());
                st.journal.push(DirOp::Link(to, inode));
                st.journal.push(DirOp::Unlink(from));
                return Ok(());
            }
            if st.dirs.contains(&from) {
                // A directory rename: move every name below it.
                let moved: Vec<(PathBuf, Rc<RefCell<Inode>>)> = st
                    .names
                    .iter()
                    .filter(|(p, _)| p.starts_with(&from))
                    .map(|(p, i)| (p.clone(), i.clone()))
                    .collect();
                let subdirs: Vec<PathBuf> = st
                    .dirs
                    .iter()
                    .filter(|d| d.starts_with(&from))
                    .cloned()
                    .collect();
                for d in subdirs {
                    st.dirs.remove(&d);
                    let new = to.join(d.strip_prefix(&from).unwrap());
                    st.dirs.insert(new.clone());
                    st.journal.push(DirOp::Mkdir(new));
                }
                for (p, i) in moved {
                    st.names.remove(&p);
                    let new = to.join(p.strip_prefix(&from).unwrap());
                    st.names.insert(new.clone(), i.clone());
                    st.journal.push(DirOp::Link(new, i));
                }
                st.journal.push(DirOp::Rmdir(from));
                return Ok(());
            }
            Err(not_found("rename", &from))
        })
    }

    fn remove_file(&self, path: &Path) -> IoFuture<'_, ()> {
        let path = path.to_owned();
        Box::pin(async move {
            let mut st = self.state.borrow_mut();
            if st.names.remove(&path).is_none() {
                return Err(not_found("remove", &path));
            }
            st.journal.push(DirOp::Unlink(path));
            Ok(())
        })
    }

    fn remove_dir_all(&self, path: &Path) -> IoFuture<'_, ()> {
        let path = path.to_owned();
        Box::pin(async move {
            let mut st = self.state.borrow_mut();
            if !st.dirs.contains(&path) {
                return Err(not_found("remove_dir", &path));
            }
            st.names.retain(|p, _| !p.starts_with(&path));
            st.dirs.retain(|d| !d.starts_with(&path));
            st.journal.push(DirOp::Rmdir(path));
            Ok(())
        })
    }

    fn sync_dir(&self, path: &Path) -> IoFuture<'_, ()> {
        let path = path.to_owned();
        Box::pin(async move {
            let mut st = self.state.borrow_mut();
            st.check(Op::SyncDir, "fsync dir", &path)?;
            // The journal commits in order: everything logged so far becomes durable.
            st.journal.clear();
            st.durable_names = st.names.clone();
            st.durable_dirs = st.dirs.clone();
            Ok(())
        })
    }
}

impl FaultFile {
    fn write_bytes(&self, op: Op, pos: u64, data: &[u8]) -> Result<(), IoError> {
        let mut st = self.fs.state.borrow_mut();
        st.check(op, "write", &self.path)?;
        let end = pos as usize + data.len();
        let grow = end.saturating_sub(self.inode.borrow().current.len()) as u64;
        st.reserve(grow, &self.path, "write")?;
        let mut inode = self.inode.borrow_mut();
        if inode.current.len() < end {
            inode.current.resize(end, 0);
        }
        inode.current[pos as usize..end].copy_from_slice(data);
        inode.unsynced.push(Change::Write {
            pos,
            data: data.to_vec(),
        });
        Ok(())
    }
}

impl File for FaultFile {
    fn path(&self) -> &Path {
        &self.path
    }

    fn kind(&self) -> FileKind {
        self.kind
    }

    fn size(&self) -> IoFuture<'_, u64> {
        Box::pin(async move { Ok(self.inode.borrow().current.len() as u64) })
    }

    fn modified_ms(&self) -> IoFuture<'_, i64> {
        Box::pin(async move { Ok(0) })
    }

    fn read_at(&self, pos: u64, len: usize) -> IoFuture<'_, Bytes> {
        Box::pin(async move {
            let inode = self.inode.borrow();
            let start = (pos as usize).min(inode.current.len());
            let end = (pos as usize).saturating_add(len).min(inode.current.len());
            Ok(Bytes::copy_from_slice(&inode.current[start..end]))
        })
    }

    fn alloc_aligned(&self, len: usize) -> AlignedBuf {
        AlignedBuf::heap(len)
    }

    fn write_aligned(&self, pos: u64, buf: AlignedBuf) -> IoFuture<'_, ()> {
        Box::pin(async move {
            if self.kind == FileKind::Direct {
                assert!(
                    pos.is_multiple_of(4096) && buf.len().is_multiple_of(4096),
                    "O_DIRECT writes are whole aligned blocks: {} bytes at {pos}",
                    buf.len()
                );
            }
            self.write_bytes(Op::Write, pos, buf.as_bytes())
        })
    }

    fn write_at(&self, pos: u64, data: Vec<u8>) -> IoFuture<'_, ()> {
        Box::pin(async move { self.write_bytes(Op::Write, pos, &data) })
    }

    fn fdatasync(&self) -> IoFuture<'_, ()> {
        Box::pin(async move {
            let mut st = self.fs.state.borrow_mut();
            st.check(Op::Fdatasync, "fdatasync", &self.path)?;
            st.syncs += 1;
            let mut inode = self.inode.borrow_mut();
            inode.durable = inode.current.clone();
            inode.unsynced.clear();
            Ok(())
        })
    }

    fn allocate(&self, len: u64) -> IoFuture<'_, ()> {
        Box::pin(async move {
            let mut st = self.fs.state.borrow_mut();
            st.check(Op::Allocate, "fallocate", &self.path)?;
            let have = self.inode.borrow().current.len() as u64;
            if len > have {
                st.reserve(len - have, &self.path, "fallocate")?;
                let mut inode = self.inode.borrow_mut();
                inode.current.resize(len as usize, 0);
                inode.unsynced.push(Change::SetLen(len));
            }
            Ok(())
        })
    }

    fn available_bytes(&self) -> IoFuture<'_, u64> {
        Box::pin(async move {
            let st = self.fs.state.borrow();
            Ok(st
                .space_bytes
                .map_or(u64::MAX, |limit| limit.saturating_sub(st.used_bytes())))
        })
    }

    fn zero_range(&self, from: u64, len: u64) -> IoFuture<'_, ()> {
        Box::pin(async move {
            let have = self.inode.borrow().current.len() as u64;
            let end = (from + len).min(have);
            if end > from {
                let zeros = vec![0u8; (end - from) as usize];
                self.write_bytes(Op::Write, from, &zeros)?;
            }
            Ok(())
        })
    }

    fn truncate(&self, len: u64) -> IoFuture<'_, ()> {
        Box::pin(async move {
            let have = self.inode.borrow().current.len() as u64;
            if len > have {
                self.fs
                    .state
                    .borrow()
                    .reserve(len - have, &self.path, "truncate")?;
            }
            let mut inode = self.inode.borrow_mut();
            inode.current.resize(len as usize, 0);
            inode.unsynced.push(Change::SetLen(len));
            Ok(())
        })
    }

    fn splice_source(&self) -> IoFuture<'_, Option<SpliceFile>> {
        Box::pin(async move { Ok(None) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::fs::{read_whole, write_atomic};

    fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
        futures_lite::future::block_on(f)
    }

    #[test]
    fn synced_data_survives_every_crash_and_unsynced_data_may_not() {
        let fs = FaultFs::new();
        let dir = Path::new("/d");
        block_on(async {
            fs.create_dir_all(dir).await.unwrap();
            let f = fs
                .open(&dir.join("a"), OpenOptions::buffered(true))
                .await
                .unwrap();
            f.write_at(0, vec![1; 4096]).await.unwrap();
            f.fdatasync().await.unwrap();
            fs.sync_dir(dir).await.unwrap();
            f.write_at(4096, vec![2; 4096]).await.unwrap();
        });
        let mut outcomes = BTreeSet::new();
        for seed in 0..64 {
            let after = fs.crash(seed);
            let bytes = after
                .contents(&dir.join("a"))
                .expect("synced file survives");
            assert_eq!(&bytes[..4096], &[1; 4096][..], "seed {seed}");
            outcomes.insert(bytes.len());
            assert!(bytes[4096..].iter().all(|b| *b == 2), "seed {seed}");
        }
        assert!(
            outcomes.contains(&4096) && outcomes.contains(&8192),
            "{outcomes:?}"
        );
        assert!(
            outcomes.len() > 2,
            "some crashes tear the write: {outcomes:?}"
        );
    }

    #[test]
    fn an_atomic_replace_is_old_or_new_after_a_crash() {
        let fs = FaultFs::new();
        let path = Path::new("/d/marker");
        block_on(async {
            fs.create_dir_all(Path::new("/d")).await.unwrap();
            write_atomic(&fs, path, b"old".to_vec()).await.unwrap();
        });
        for seed in 0..32 {
            let during = fs.clone();
            block_on(async {
                let f = during
                    .open(Path::new("/d/marker.tmp"), OpenOptions::buffered(true))
                    .await
                    .unwrap();
                f.write_at(0, b"new".to_vec()).await.unwrap();
            });
            let after = during.crash(seed);
            let got = block_on(read_whole(&after, path)).unwrap();
            assert_eq!(got.as_deref(), Some(&b"old"[..]), "seed {seed}");
        }
    }

    #[test]
    fn injected_errors_and_space_limits() {
        let fs = FaultFs::new();
        block_on(async {
            fs.create_dir_all(Path::new("/d")).await.unwrap();
            let f = fs
                .open(Path::new("/d/x.log"), OpenOptions::buffered(true))
                .await
                .unwrap();
            fs.inject(Fault {
                op: Op::Fdatasync,
                path: ".log".into(),
                errno: libc::EIO,
                times: 1,
            });
            assert_eq!(f.fdatasync().await.unwrap_err().errno, Some(libc::EIO));
            f.fdatasync().await.unwrap();
            fs.set_space_bytes(Some(100));
            let e = f.write_at(0, vec![0; 101]).await.unwrap_err();
            assert!(e.is_exhaustion());
            f.write_at(0, vec![0; 100]).await.unwrap();
            assert!(f.allocate(200).await.unwrap_err().is_exhaustion());
            fs.set_space_bytes(None);
            f.allocate(200).await.unwrap();
        });
    }
}
