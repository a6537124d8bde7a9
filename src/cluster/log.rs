//! The metadata log as propose → commit: the controller proposes a record and learns when it
//! is committed; every broker reads committed records in order and applies them to its image
//! (records it did not write included, once Raft replicates them). The one-node log commits a
//! record when it is fsynced to a local file. Runs on: the controller shard (its `Rc` never
//! leaves it). Invariants: records are committed in proposal order, one append at a time; a
//! record is committed only once durable; an append that fails leaves no partial frame behind
//! (later records must never follow a torn one).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Poll, Waker};

use super::image::MetadataImage;
use super::records::{decode_frames, encode_frame, MetadataRecord};
use crate::constants::CLUSTER_ID_BYTES_MAX;
use crate::runtime::env::Env;
use crate::runtime::fs::{read_whole, File, OpenOptions};

/// Errors of the metadata log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataError {
    pub op: &'static str,
    pub path: PathBuf,
    pub detail: String,
}

impl std::fmt::Display for MetadataError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "metadata log {} {}: {}",
            self.op,
            self.path.display(),
            self.detail
        )
    }
}

impl std::error::Error for MetadataError {}

/// How a `MetadataError`'s detail starts when the log refused because this member is not
/// the quorum's leader.
pub const NOT_THE_CONTROLLER: &str = "not the controller";

/// How a `MetadataError`'s detail starts when the quorum did not commit a proposal in time
/// (too few voters answer): its outcome is unknown, so it must not be retried blindly.
pub const NO_QUORUM: &str = "no quorum";

/// A boxed future of the metadata log.
pub type LogFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// What a reader of the log gets from `committed_from`.
#[derive(Debug, Clone, PartialEq)]
pub enum Committed {
    /// The committed records from the reader's position on, with their indexes, in order,
    /// up to `end` (exclusive: the reader's next position; entries in between that are not
    /// records are skipped).
    Records {
        records: Vec<(u64, MetadataRecord)>,
        end: u64,
    },
    /// The reader is behind the log's last snapshot (the records it needs were compacted):
    /// the image after every record below `end`.
    Image { image: MetadataImage, end: u64 },
}

impl Committed {
    /// The reader's position after applying these.
    pub fn end(&self) -> u64 {
        match self {
            Committed::Records { end, .. } | Committed::Image { end, .. } => *end,
        }
    }

    /// The records to apply, in order, to a reader whose image is `current`: the records
    /// themselves, or the changes that take `current` to the snapshot's image (each with the
    /// snapshot's last index).
    pub fn over(self, current: &MetadataImage) -> Vec<(u64, MetadataRecord)> {
        match self {
            Committed::Records { records, .. } => records,
            Committed::Image { image, end } => current
                .changes_to(&image)
                .into_iter()
                .map(|r| (end.saturating_sub(1), r))
                .collect(),
        }
    }
}

/// The replicated, ordered log of metadata records. Records below `committed_end()` are
/// committed; indexes increase but need not be dense (a Raft log also holds entries that are
/// not records).
pub trait MetadataLog {
    /// Proposes a record; resolves with its index once it is committed.
    fn propose(&self, record: MetadataRecord) -> LogFuture<'_, Result<u64, MetadataError>>;
    /// The committed records from index `from` on.
    fn committed_from(&self, from: u64) -> Committed;
    fn committed_end(&self) -> u64;
    /// Resolves once `committed_end() > index`.
    fn wait_committed(&self, index: u64) -> LogFuture<'_, ()>;
    /// Resolves once every record committed anywhere before the call is in
    /// `committed_from` here (a new Raft leader may not have applied its predecessor's last
    /// records yet); fails if this member cannot tell (it is not the leader). Immediate on
    /// one node.
    fn sync(&self) -> LogFuture<'_, Result<(), MetadataError>> {
        Box::pin(async { Ok(()) })
    }
}

/// The one-node metadata log: a local file, fdatasynced on every append.
pub struct LocalMetadataLog {
    path: PathBuf,
    file: Rc<dyn File>,
    /// Bytes of whole committed frames in the file.
    len: Cell<u64>,
    records: RefCell<Vec<MetadataRecord>>,
    waiters: RefCell<Vec<Waker>>,
    appending: Cell<bool>,
}

/// The log file's name in the data directory.
pub const METADATA_LOG_FILE: &str = "__cluster_metadata.log";

impl LocalMetadataLog {
    /// Opens (or creates) the log in `dir` and replays it. A torn last record is cut; a
    /// corrupt record in the middle refuses the start, naming the file and byte offset. A new
    /// log starts with the cluster's creation (a random cluster id).
    pub async fn open(env: &Env, dir: &Path) -> Result<Rc<LocalMetadataLog>, MetadataError> {
        let path = dir.join(METADATA_LOG_FILE);
        let err = |op, e: crate::runtime::fs::IoError| MetadataError {
            op,
            path: path.clone(),
            detail: e.to_string(),
        };
        let bytes = read_whole(env.fs.as_ref(), &path)
            .await
            .map_err(|e| err("read", e))?
            .unwrap_or_default();
        let file = env
            .fs
            .open(&path, OpenOptions::buffered(true))
            .await
            .map_err(|e| err("open", e))?;
        // The file's directory entry must survive a crash as well as its bytes.
        env.fs
            .sync_dir(dir)
            .await
            .map_err(|e| err("fsync dir", e))?;
        let (records, valid) = decode_frames(&bytes).map_err(|c| MetadataError {
            op: "replay",
            path: path.clone(),
            detail: format!(
                "the record at byte {} is corrupt: {}; refusing to start rather than cut the \
                 cluster's history there (restore the file, or move it away to start empty)",
                c.offset, c.reason
            ),
        })?;
        if valid < bytes.len() {
            tracing::warn!(path = %path.display(), valid, total = bytes.len(), "cutting torn metadata log tail");
            file.truncate(valid as u64)
                .await
                .map_err(|e| err("truncate", e))?;
            file.fdatasync().await.map_err(|e| err("fsync", e))?;
        }
        let log = Rc::new(LocalMetadataLog {
            path,
            file,
            len: Cell::new(valid as u64),
            records: RefCell::new(records),
            waiters: RefCell::new(Vec::new()),
            appending: Cell::new(false),
        });
        if log.records.borrow().is_empty() {
            let cluster_id: String = env.random_id().iter().map(|b| format!("{b:02x}")).collect();
            assert!(cluster_id.len() <= CLUSTER_ID_BYTES_MAX);
            log.propose(MetadataRecord::ClusterCreated { cluster_id })
                .await?;
        }
        Ok(log)
    }

    async fn append(&self, record: MetadataRecord) -> Result<u64, MetadataError> {
        // Never write a record that replay would refuse: validation bounds every field, so
        // this only trips on a bug, and then the change is refused instead of cutting the log.
        let frame = encode_frame(&record).ok_or_else(|| MetadataError {
            op: "append",
            path: self.path.clone(),
            detail: format!("a record over the replay bound: {record:?}"),
        })?;
        let at = self.len.get();
        let frame_len = frame.len() as u64;
        let written = async {
            self.file.write_at(at, frame).await?;
            self.file.fdatasync().await
        }
        .await;
        if let Err(e) = written {
            // Never leave a partial frame for later records to follow: replay would stop at it
            // and forget them.
            let _ = self.file.truncate(at).await;
            let _ = self.file.fdatasync().await;
            return Err(MetadataError {
                op: "append",
                path: self.path.clone(),
                detail: e.to_string(),
            });
        }
        self.len.set(at + frame_len);
        let mut records = self.records.borrow_mut();
        records.push(record);
        Ok(records.len() as u64 - 1)
    }
}

impl MetadataLog for LocalMetadataLog {
    fn propose(&self, record: MetadataRecord) -> LogFuture<'_, Result<u64, MetadataError>> {
        Box::pin(async move {
            assert!(
                !self.appending.replace(true),
                "metadata appends are serialized by the controller"
            );
            let result = self.append(record).await;
            self.appending.set(false);
            if result.is_ok() {
                for w in self.waiters.borrow_mut().drain(..) {
                    w.wake();
                }
            }
            result
        })
    }

    fn committed_from(&self, from: u64) -> Committed {
        let records = self.records.borrow();
        Committed::Records {
            records: records
                .iter()
                .enumerate()
                .skip(from as usize)
                .map(|(i, r)| (i as u64, r.clone()))
                .collect(),
            end: records.len() as u64,
        }
    }

    fn committed_end(&self) -> u64 {
        self.records.borrow().len() as u64
    }

    fn wait_committed(&self, index: u64) -> LogFuture<'_, ()> {
        Box::pin(std::future::poll_fn(move |cx| {
            if self.committed_end() > index {
                Poll::Ready(())
            } else {
                self.waiters.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{FaultFs, ManualClock};

    fn topic(name: &str) -> MetadataRecord {
        MetadataRecord::TopicCreated {
            name: name.into(),
            topic_id: [1; 16],
            partitions: 3,
            configs: vec![("retention.ms".into(), "1000".into())],
        }
    }

    #[test]
    fn replays_and_cuts_torn_tail() {
        let fs = FaultFs::new();
        let env = crate::testing::env(&fs, &ManualClock::new(0), 1);
        let dir = Path::new("/data");
        let path = dir.join(METADATA_LOG_FILE);
        futures_lite::future::block_on(async {
            use crate::runtime::fs::Fs;
            fs.create_dir_all(dir).await.unwrap();
            let log = LocalMetadataLog::open(&env, dir).await.unwrap();
            assert_eq!(log.propose(topic("a")).await.unwrap(), 1);
            let grow = MetadataRecord::PartitionsCreated {
                name: "a".into(),
                total: 5,
            };
            assert_eq!(log.propose(grow).await.unwrap(), 2);
        });
        let mut bytes = fs.contents(&path).unwrap();
        let full = bytes.len();
        bytes.extend([0, 0, 0, 9, 1, 2]); // a torn frame
        fs.put(&path, &bytes);
        futures_lite::future::block_on(async {
            let log = LocalMetadataLog::open(&env, dir).await.unwrap();
            let mut image = crate::cluster::MetadataImage::default();
            for (_, r) in log.committed_from(0).over(&MetadataImage::default()) {
                image.apply(&r);
            }
            let t = &image.topics["a"];
            assert_eq!(t.partitions, 5);
            assert_eq!(t.configs["retention.ms"], "1000");
        });
        assert_eq!(fs.contents(&path).unwrap().len(), full);
    }

    /// Every record the log acknowledged survives a crash (unsynced bytes dropped or torn at
    /// random), and an append that fails leaves nothing a later record would follow.
    #[test]
    fn committed_records_survive_crashes_and_failed_appends_leave_no_frame() {
        use crate::testing::{Fault, Op};
        for seed in 0..32 {
            let fs = FaultFs::new();
            let env = crate::testing::env(&fs, &ManualClock::new(0), seed);
            let dir = Path::new("/data");
            let committed = futures_lite::future::block_on(async {
                use crate::runtime::fs::Fs;
                fs.create_dir_all(dir).await.unwrap();
                fs.sync_dir(Path::new("/")).await.unwrap();
                let log = LocalMetadataLog::open(&env, dir).await.unwrap();
                log.propose(topic("a")).await.unwrap();
                fs.inject(Fault {
                    op: Op::Fdatasync,
                    path: METADATA_LOG_FILE.into(),
                    errno: libc::EIO,
                    times: 1,
                });
                assert!(log.propose(topic("lost")).await.is_err());
                log.propose(topic("b")).await.unwrap();
                log.committed_end()
            });
            let after = fs.crash(seed);
            let env = crate::testing::env(&after, &ManualClock::new(0), seed);
            futures_lite::future::block_on(async {
                let log = LocalMetadataLog::open(&env, dir)
                    .await
                    .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
                assert_eq!(log.committed_end(), committed, "seed {seed}");
                let names: Vec<String> = log
                    .committed_from(1)
                    .over(&crate::cluster::MetadataImage::default())
                    .into_iter()
                    .filter_map(|(_, r)| match r {
                        MetadataRecord::TopicCreated { name, .. } => Some(name),
                        _ => None,
                    })
                    .collect();
                assert_eq!(names, vec!["a".to_string(), "b".to_string()], "seed {seed}");
            });
        }
    }
}
