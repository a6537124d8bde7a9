//! Raft's log and vote for the metadata quorum, on the IO seam. Files in `<data>/__raft/`:
//! `log` is a header frame (the format version and the last purged log id) followed by one
//! frame per entry (`[length][crc32c][JSON]`, `storage::framing`); `vote` and `committed` hold
//! one frame each. Runs on: the controller shard (openraft's core task owns the store; readers
//! are clones of the same `Rc`). Invariants: `append` returns, and reports its entries flushed,
//! only after they are fdatasynced, and a vote is saved (written to a temp file, synced and
//! renamed) before `save_vote` returns; entries are contiguous by index and follow the purged
//! id; a failed append leaves no partial frame behind; no `RefCell` borrow is held across an
//! await, so readers never see a half-applied change.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use serde::{Deserialize, Serialize};

use super::{corrupt, io_error, Entry, LogId, TypeConfig, Vote, RAFT_DIR};
use crate::constants::RAFT_ENTRY_BYTES_MAX;
use crate::runtime::env::Env;
use crate::runtime::fs::{read_bounded, read_whole, write_atomic, write_synced, File, OpenOptions};
use crate::storage::framing;

const LOG_FILE: &str = "log";
const VOTE_FILE: &str = "vote";
const COMMITTED_FILE: &str = "committed";
/// The log file format this broker writes and reads.
const LOG_FORMAT_VERSION: u8 = 1;

/// The first frame of the log file.
#[derive(Serialize, Deserialize)]
struct Header {
    version: u8,
    purged: Option<LogId>,
}

/// An entry's frame: the entry and the index of the first entry of the append it came in.
/// One append is several frames under one fdatasync, which the disk may persist in any order;
/// replay uses `batch_first` to tell a torn last append from damage to a synced one.
#[derive(Serialize)]
struct StoredRef<'a> {
    batch_first: u64,
    entry: &'a Entry,
}

#[derive(Deserialize)]
struct Stored {
    batch_first: u64,
    entry: Entry,
}

/// One frame of the log file, as replay reads it.
enum Item {
    Header(Header),
    Entry(Box<Entry>),
}

struct State {
    file: Rc<dyn File>,
    /// Bytes of whole frames in the file: the next append goes here.
    len: u64,
    /// Entries by index, with the byte offset of each one's frame.
    entries: BTreeMap<u64, (u64, Entry)>,
    purged: Option<LogId>,
    vote: Option<Vote>,
    committed: Option<LogId>,
}

struct Shared {
    env: Env,
    dir: PathBuf,
    state: RefCell<State>,
}

/// The log and vote store; clones share it (openraft's readers are clones).
#[derive(Clone)]
pub struct RaftLogStore {
    shared: Rc<Shared>,
}

/// An `InvalidInput` error: openraft asked for something that breaks the log's invariants.
fn refused(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what)
}

fn encode<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    let payload = serde_json::to_vec(value).map_err(|e| refused(e.to_string()))?;
    if payload.len() > RAFT_ENTRY_BYTES_MAX {
        return Err(refused(format!(
            "a Raft frame of {} bytes is over the {RAFT_ENTRY_BYTES_MAX} replay accepts",
            payload.len()
        )));
    }
    Ok(framing::frame(&payload))
}

/// A file of exactly one frame (`vote`, `committed`); `None` if the file is missing.
async fn read_one<T: for<'a> Deserialize<'a>>(env: &Env, path: &Path) -> io::Result<Option<T>> {
    let Some(bytes) = read_bounded(env.fs.as_ref(), path, RAFT_ENTRY_BYTES_MAX + 8)
        .await
        .map_err(io_error)?
    else {
        return Ok(None);
    };
    let payload = framing::unframe(&bytes).ok_or_else(|| corrupt(path, 0, "a torn frame"))?;
    serde_json::from_slice(payload)
        .map(Some)
        .map_err(|e| corrupt(path, 8, e))
}

impl RaftLogStore {
    /// Opens (or creates) the store under `data_dir`, replaying the log: a torn last frame is
    /// cut; anything else that does not read refuses the start, naming the file and offset.
    pub async fn open(env: &Env, data_dir: &Path) -> io::Result<RaftLogStore> {
        let dir = data_dir.join(RAFT_DIR);
        let fs = env.fs.as_ref();
        fs.create_dir_all(&dir).await.map_err(io_error)?;
        fs.sync_dir(data_dir).await.map_err(io_error)?;
        let vote = read_one::<Vote>(env, &dir.join(VOTE_FILE)).await?;
        // `committed` is written in place (no rename): a torn one is only a hint lost, and
        // openraft learns the commit index again from the leader.
        let committed = read_one::<LogId>(env, &dir.join(COMMITTED_FILE))
            .await
            .unwrap_or(None);
        let path = dir.join(LOG_FILE);
        let bytes = read_whole(fs, &path)
            .await
            .map_err(io_error)?
            .unwrap_or_default();
        let (purged, entries, valid) = replay_log(&path, &bytes)?;
        let len = if bytes.is_empty() {
            let header = encode(&Header {
                version: LOG_FORMAT_VERSION,
                purged: None,
            })?;
            let len = header.len() as u64;
            write_atomic(fs, &path, header).await.map_err(io_error)?;
            len
        } else {
            valid as u64
        };
        let file = fs
            .open(&path, OpenOptions::buffered(true))
            .await
            .map_err(io_error)?;
        if valid < bytes.len() {
            tracing::warn!(path = %path.display(), valid, total = bytes.len(), "cutting a torn Raft log tail");
            file.truncate(len).await.map_err(io_error)?;
            file.fdatasync().await.map_err(io_error)?;
        }
        let state = State {
            file,
            len,
            entries,
            purged,
            vote,
            committed,
        };
        Ok(RaftLogStore {
            shared: Rc::new(Shared {
                env: env.clone(),
                dir,
                state: RefCell::new(state),
            }),
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.shared.dir.join(name)
    }

    /// The index the next appended entry must have.
    fn next_index(state: &State) -> Option<u64> {
        match (state.entries.last_key_value(), &state.purged) {
            (Some((&last, _)), _) => Some(last + 1),
            (None, Some(p)) => Some(p.index + 1),
            (None, None) => None,
        }
    }

    /// Rewrites the log file with the header and the entries kept (after a purge): a new file
    /// renamed over the old, so a crash leaves one or the other.
    async fn rewrite(&self) -> io::Result<()> {
        let path = self.path(LOG_FILE);
        let (bytes, offsets) = {
            let state = self.shared.state.borrow();
            let mut bytes = encode(&Header {
                version: LOG_FORMAT_VERSION,
                purged: state.purged,
            })?;
            let mut offsets = Vec::with_capacity(state.entries.len());
            for (&index, (_, entry)) in &state.entries {
                offsets.push((index, bytes.len() as u64));
                bytes.extend(encode(&StoredRef {
                    batch_first: index,
                    entry,
                })?);
            }
            (bytes, offsets)
        };
        let len = bytes.len() as u64;
        let fs = self.shared.env.fs.as_ref();
        write_atomic(fs, &path, bytes).await.map_err(io_error)?;
        let file = fs
            .open(&path, OpenOptions::buffered(true))
            .await
            .map_err(io_error)?;
        let mut state = self.shared.state.borrow_mut();
        state.file = file;
        state.len = len;
        for (index, offset) in offsets {
            if let Some(e) = state.entries.get_mut(&index) {
                e.0 = offset;
            }
        }
        Ok(())
    }
}

type Replayed = (Option<LogId>, BTreeMap<u64, (u64, Entry)>, usize);

/// The purged id, the entries (contiguous, after the purged id) and the valid prefix's length.
/// Damage followed by valid frames is a torn tail, cut, only when every frame after it belongs
/// to one append that began at or before the damaged frame (that append was never reported
/// flushed); anything else refuses the start.
fn replay_log(path: &Path, bytes: &[u8]) -> io::Result<Replayed> {
    match replay_prefix(path, bytes) {
        Err(e) => {
            let Some(offset) = torn_last_append(bytes, &e) else {
                return Err(e);
            };
            let (purged, entries, valid) = replay_prefix(path, &bytes[..offset])?;
            let last = entries
                .last_key_value()
                .map(|(i, _)| *i)
                .or(purged.map(|p| p.index));
            if batch_after(bytes, offset).is_some_and(|b| last.is_none_or(|l| b <= l + 1)) {
                Ok((purged, entries, valid))
            } else {
                Err(e)
            }
        }
        ok => ok,
    }
}

/// The offset of the damaged frame if replay failed on a frame that does not unframe (not on
/// one that unframes but does not decode, which is damage a CRC did not catch).
fn torn_last_append(bytes: &[u8], e: &io::Error) -> Option<usize> {
    let offset = e.get_ref()?.downcast_ref::<DamageAt>()?.0;
    framing::unframe_prefix(&bytes[offset..], RAFT_ENTRY_BYTES_MAX)
        .is_none()
        .then_some(offset)
}

/// The `batch_first` shared by every valid frame after `offset`, if they all share one.
fn batch_after(bytes: &[u8], offset: usize) -> Option<u64> {
    let mut batch = None;
    for q in offset + 1..bytes.len() {
        if let Some((payload, _)) = framing::unframe_prefix(&bytes[q..], RAFT_ENTRY_BYTES_MAX) {
            let stored: Stored = serde_json::from_slice(payload).ok()?;
            if batch.is_some_and(|b| b != stored.batch_first) {
                return None;
            }
            batch = Some(stored.batch_first);
        }
    }
    batch
}

/// The byte offset a replay error is about (carried inside the `io::Error`).
#[derive(Debug)]
struct DamageAt(usize, String);

impl std::fmt::Display for DamageAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}

impl std::error::Error for DamageAt {}

fn replay_prefix(path: &Path, bytes: &[u8]) -> io::Result<Replayed> {
    let mut first = true;
    let (items, valid) = framing::replay(bytes, RAFT_ENTRY_BYTES_MAX, |payload| {
        let item = if std::mem::take(&mut first) {
            let h: Header = serde_json::from_slice(payload)
                .map_err(|e| format!("the header does not decode: {e}"))?;
            if h.version != LOG_FORMAT_VERSION {
                return Err(format!(
                    "format version {} (this tusk reads {LOG_FORMAT_VERSION})",
                    h.version
                ));
            }
            Item::Header(h)
        } else {
            let stored: Stored = serde_json::from_slice(payload)
                .map_err(|e| format!("an entry does not decode: {e}"))?;
            Item::Entry(Box::new(stored.entry))
        };
        Ok(item)
    })
    .map_err(|c| {
        let message = corrupt(path, c.offset, &c.reason).to_string();
        io::Error::new(io::ErrorKind::InvalidData, DamageAt(c.offset, message))
    })?;
    let mut purged = None;
    let mut entries = BTreeMap::new();
    let mut next: Option<u64> = None;
    for (offset, item) in items {
        match item {
            Item::Header(h) => {
                next = h.purged.as_ref().map(|p| p.index + 1);
                purged = h.purged;
            }
            Item::Entry(e) => {
                let index = e.log_id.index;
                if next.is_some_and(|n| n != index) {
                    return Err(corrupt(
                        path,
                        offset,
                        format!("entry {index} where entry {next:?} belongs"),
                    ));
                }
                next = Some(index + 1);
                entries.insert(index, (offset as u64, *e));
            }
        }
    }
    if !bytes.is_empty() && valid == 0 {
        return Err(corrupt(path, 0, "the header is torn"));
    }
    Ok((purged, entries, valid))
}

impl RaftLogReader<TypeConfig> for RaftLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let state = self.shared.state.borrow();
        Ok(state
            .entries
            .range(range)
            .map(|(_, (_, e))| e.clone())
            .collect())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.shared.state.borrow().vote)
    }
}

impl RaftLogStorage<TypeConfig> for RaftLogStore {
    type LogReader = RaftLogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let state = self.shared.state.borrow();
        let last = state.entries.last_key_value().map(|(_, (_, e))| e.log_id);
        Ok(LogState {
            last_purged_log_id: state.purged,
            last_log_id: last.or_else(|| state.purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let frame = encode(vote)?;
        write_atomic(self.shared.env.fs.as_ref(), &self.path(VOTE_FILE), frame)
            .await
            .map_err(io_error)?;
        self.shared.state.borrow_mut().vote = Some(*vote);
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        if let Some(c) = &committed {
            let frame = encode(c)?;
            write_synced(
                self.shared.env.fs.as_ref(),
                &self.path(COMMITTED_FILE),
                frame,
            )
            .await
            .map_err(io_error)?;
        }
        self.shared.state.borrow_mut().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.shared.state.borrow().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let (file, at, mut expected) = {
            let state = self.shared.state.borrow();
            (state.file.clone(), state.len, Self::next_index(&state))
        };
        let mut bytes = Vec::new();
        let mut offsets = Vec::with_capacity(entries.len());
        let batch_first = entries.first().map_or(0, |e| e.log_id.index);
        for e in &entries {
            let index = e.log_id.index;
            if expected.is_some_and(|n| n != index) {
                return Err(refused(format!(
                    "append of entry {index} where entry {expected:?} belongs"
                )));
            }
            expected = Some(index + 1);
            offsets.push(at + bytes.len() as u64);
            bytes.extend(encode(&StoredRef {
                batch_first,
                entry: e,
            })?);
        }
        let len = bytes.len() as u64;
        let written = async {
            file.write_at(at, bytes).await?;
            file.fdatasync().await
        }
        .await;
        if let Err(e) = written {
            // Never leave a partial frame for later entries to follow: replay would refuse it.
            let _ = file.truncate(at).await;
            let _ = file.fdatasync().await;
            callback.io_completed(Err(io_error(e.clone())));
            return Err(io_error(e));
        }
        {
            let mut state = self.shared.state.borrow_mut();
            state.len = at + len;
            for (e, offset) in entries.into_iter().zip(offsets) {
                state.entries.insert(e.log_id.index, (offset, e));
            }
        }
        callback.io_completed(Ok(()));
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let keep_to = last_log_id.as_ref().map(|l| l.index);
        let (file, cut_at) = {
            let state = self.shared.state.borrow();
            let first_removed = match keep_to {
                Some(i) => state.entries.range(i + 1..).next(),
                None => state.entries.iter().next(),
            };
            match first_removed {
                Some((_, (offset, _))) => (state.file.clone(), *offset),
                None => return Ok(()),
            }
        };
        file.truncate(cut_at).await.map_err(io_error)?;
        file.fdatasync().await.map_err(io_error)?;
        let mut state = self.shared.state.borrow_mut();
        state.len = cut_at;
        match keep_to {
            Some(i) => drop(state.entries.split_off(&(i + 1))),
            None => state.entries.clear(),
        }
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        {
            let mut state = self.shared.state.borrow_mut();
            if state
                .purged
                .as_ref()
                .is_some_and(|p| p.index >= log_id.index)
            {
                return Ok(());
            }
            let kept = state.entries.split_off(&(log_id.index + 1));
            state.entries = kept;
            state.purged = Some(log_id);
        }
        self.rewrite().await
    }
}
