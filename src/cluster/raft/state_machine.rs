//! The metadata quorum's state machine: the metadata image, built by applying committed
//! records in log order, with snapshots. A snapshot is the image re-expressed as the few
//! records that rebuild it (the cluster's creation, then one creation per topic with its
//! current partitions and configs), so a lagging broker installs it with the same `apply` that
//! replays the log. The snapshot file (`<data>/__raft/snapshot`, one frame: its meta and
//! records in JSON) is replaced atomically; the applied state is rebuilt at start from it and
//! the log. Runs on: the controller shard. Invariants: entries are applied once each, in
//! index order (an entry at or below `last_applied` is refused); the records kept for the
//! broker's own shards are those after `base` (the snapshot's last index), so a reader behind
//! `base` gets the whole image instead.

use std::cell::RefCell;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::task::{Poll, Waker};

use futures_lite::StreamExt;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};

use super::{
    corrupt, io_error, LogId, Snapshot, SnapshotData, SnapshotMeta, StoredMembership, TypeConfig,
    RAFT_DIR,
};
use crate::cluster::{MetadataImage, MetadataRecord};
use crate::constants::RAFT_SNAPSHOT_BYTES_MAX;
use crate::runtime::env::Env;
use crate::runtime::fs::{read_bounded, write_atomic};
use crate::storage::framing;

const SNAPSHOT_FILE: &str = "snapshot";

/// The snapshot file's one frame.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta,
    records: Vec<MetadataRecord>,
}

/// What a reader of the applied records gets (`applied_since`).
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// The records after the reader's position, with their Raft indexes, in order.
    Records(Vec<(u64, MetadataRecord)>),
    /// The reader is behind the last snapshot: the whole image, as of Raft index `index`
    /// (`None`: nothing applied).
    Image(MetadataImage, Option<u64>),
}

struct State {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    image: MetadataImage,
    /// The Raft index whose state the kept records start after (the last snapshot's).
    base: Option<u64>,
    records: Vec<(u64, MetadataRecord)>,
    /// The last snapshot built or installed, and its encoded records.
    snapshot: Option<(SnapshotMeta, Vec<u8>)>,
}

struct Shared {
    env: Env,
    path: PathBuf,
    state: RefCell<State>,
    waiters: RefCell<Vec<Waker>>,
    /// Held across a snapshot's write: openraft builds snapshots in a task of their own, which
    /// may overlap an install, and both replace the same file.
    saving: crate::runtime::io::LocalLock,
}

/// The state machine; clones share it (openraft's snapshot builder is a clone).
#[derive(Clone)]
pub struct MetadataStateMachine {
    shared: Rc<Shared>,
}

/// The records that rebuild `image` from nothing.
fn image_records(image: &MetadataImage) -> Vec<MetadataRecord> {
    MetadataImage::default().changes_to(image)
}

fn image_of(records: &[MetadataRecord]) -> MetadataImage {
    let mut image = MetadataImage::default();
    for r in records {
        image.apply(r);
    }
    image
}

fn decode_records(bytes: &[u8]) -> io::Result<Vec<MetadataRecord>> {
    if bytes.len() > RAFT_SNAPSHOT_BYTES_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "a metadata snapshot of {} bytes is over the {RAFT_SNAPSHOT_BYTES_MAX} accepted",
                bytes.len()
            ),
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

impl MetadataStateMachine {
    /// Opens the state machine under `data_dir`: the last snapshot's image if there is one
    /// (openraft then applies the committed entries after it).
    pub async fn open(env: &Env, data_dir: &Path) -> io::Result<MetadataStateMachine> {
        let path = data_dir.join(RAFT_DIR).join(SNAPSHOT_FILE);
        let bytes = read_bounded(env.fs.as_ref(), &path, RAFT_SNAPSHOT_BYTES_MAX + 8)
            .await
            .map_err(io_error)?;
        let mut state = State {
            last_applied: None,
            membership: StoredMembership::default(),
            image: MetadataImage::default(),
            base: None,
            records: Vec::new(),
            snapshot: None,
        };
        if let Some(bytes) = bytes {
            let payload = framing::unframe(&bytes)
                .ok_or_else(|| corrupt(&path, 0, "a torn or damaged frame"))?;
            let file: SnapshotFile =
                serde_json::from_slice(payload).map_err(|e| corrupt(&path, 8, e))?;
            state.image = image_of(&file.records);
            state.last_applied = file.meta.last_log_id;
            state.membership = file.meta.last_membership.clone();
            state.base = file.meta.last_log_id.as_ref().map(|l| l.index);
            let encoded = serde_json::to_vec(&file.records).map_err(|e| corrupt(&path, 8, e))?;
            state.snapshot = Some((file.meta, encoded));
        }
        Ok(MetadataStateMachine {
            shared: Rc::new(Shared {
                env: env.clone(),
                path,
                state: RefCell::new(state),
                waiters: RefCell::new(Vec::new()),
                saving: crate::runtime::io::LocalLock::new(),
            }),
        })
    }

    /// The image of every applied record.
    pub fn image(&self) -> MetadataImage {
        self.shared.state.borrow().image.clone()
    }

    /// The Raft index of the last applied entry.
    pub fn applied_index(&self) -> Option<u64> {
        self.shared
            .state
            .borrow()
            .last_applied
            .as_ref()
            .map(|l| l.index)
    }

    /// What was applied after Raft index `after` (`None`: from the start).
    pub fn applied_since(&self, after: Option<u64>) -> Applied {
        let state = self.shared.state.borrow();
        if after < state.base {
            return Applied::Image(
                state.image.clone(),
                state.last_applied.as_ref().map(|l| l.index),
            );
        }
        Applied::Records(
            state
                .records
                .iter()
                .filter(|(i, _)| Some(*i) > after)
                .cloned()
                .collect(),
        )
    }

    /// Resolves once an entry after Raft index `after` is applied.
    pub async fn wait_applied_past(&self, after: Option<u64>) {
        std::future::poll_fn(|cx| {
            if self.applied_index() > after {
                Poll::Ready(())
            } else {
                self.shared.waiters.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    fn wake(&self) {
        for w in self.shared.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    /// The current snapshot, if it covers at least what `meta` covers (a write of `meta`
    /// would then only move the file backwards).
    fn current_if_not_older_than(&self, meta: &SnapshotMeta) -> Option<Snapshot> {
        let state = self.shared.state.borrow();
        let (current, bytes) = state.snapshot.as_ref()?;
        (current.last_log_id >= meta.last_log_id).then(|| Snapshot {
            meta: current.clone(),
            snapshot: std::io::Cursor::new(bytes.clone()),
        })
    }

    /// Persists `file` as the current snapshot and makes it the state's base.
    async fn save_snapshot(
        &self,
        meta: SnapshotMeta,
        records: Vec<MetadataRecord>,
    ) -> io::Result<Vec<u8>> {
        let encoded = serde_json::to_vec(&records).map_err(|e| io::Error::other(e.to_string()))?;
        let file = SnapshotFile {
            meta: meta.clone(),
            records,
        };
        let payload = serde_json::to_vec(&file).map_err(|e| io::Error::other(e.to_string()))?;
        if payload.len() > RAFT_SNAPSHOT_BYTES_MAX {
            return Err(io::Error::other(format!(
                "a metadata snapshot of {} bytes is over the {RAFT_SNAPSHOT_BYTES_MAX} allowed",
                payload.len()
            )));
        }
        write_atomic(
            self.shared.env.fs.as_ref(),
            &self.shared.path,
            framing::frame(&payload),
        )
        .await
        .map_err(io_error)?;
        Ok(encoded)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for MetadataStateMachine {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let _saving = self.shared.saving.acquire().await;
        let (meta, records) = {
            let state = self.shared.state.borrow();
            let meta = SnapshotMeta {
                last_log_id: state.last_applied,
                last_membership: state.membership.clone(),
            };
            (meta, image_records(&state.image))
        };
        if let Some(current) = self.current_if_not_older_than(&meta) {
            return Ok(current);
        }
        let encoded = self.save_snapshot(meta.clone(), records).await?;
        let mut state = self.shared.state.borrow_mut();
        // The state may have moved on while the file was written: keep what came after.
        let base = meta.last_log_id.as_ref().map(|l| l.index);
        if base > state.base {
            state.records.retain(|(i, _)| Some(*i) > base);
            state.base = base;
        }
        state.snapshot = Some((meta.clone(), encoded.clone()));
        Ok(Snapshot {
            meta,
            snapshot: std::io::Cursor::new(encoded),
        })
    }
}

impl RaftStateMachine<TypeConfig> for MetadataStateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = MetadataStateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let state = self.shared.state.borrow();
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures_lite::Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>>
            + Unpin
            + OptionalSend,
    {
        while let Some(next) = entries.next().await {
            let (entry, responder) = next?;
            {
                let mut state = self.shared.state.borrow_mut();
                let index = entry.log_id.index;
                if state
                    .last_applied
                    .as_ref()
                    .is_some_and(|l| l.index >= index)
                {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "entry {index} applied again (last applied {:?})",
                            state.last_applied
                        ),
                    ));
                }
                match entry.payload {
                    EntryPayload::Blank => {}
                    EntryPayload::Normal(record) => {
                        state.image.apply(&record);
                        state.records.push((index, record));
                    }
                    EntryPayload::Membership(m) => {
                        state.membership = StoredMembership::new(Some(entry.log_id), m);
                    }
                }
                state.last_applied = Some(entry.log_id);
            }
            if let Some(r) = responder {
                r.send(());
            }
        }
        self.wake();
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        let records = decode_records(snapshot.get_ref())?;
        let _saving = self.shared.saving.acquire().await;
        if self.current_if_not_older_than(meta).is_some() {
            // Already at or past it (a snapshot built or installed meanwhile).
            return Ok(());
        }
        let encoded = self.save_snapshot(meta.clone(), records.clone()).await?;
        {
            let mut state = self.shared.state.borrow_mut();
            state.image = image_of(&records);
            state.last_applied = meta.last_log_id;
            state.membership = meta.last_membership.clone();
            state.base = meta.last_log_id.as_ref().map(|l| l.index);
            state.records.clear();
            state.snapshot = Some((meta.clone(), encoded));
        }
        self.wake();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let state = self.shared.state.borrow();
        Ok(state.snapshot.as_ref().map(|(meta, bytes)| Snapshot {
            meta: meta.clone(),
            snapshot: std::io::Cursor::new(bytes.clone()),
        }))
    }
}
