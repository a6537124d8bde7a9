//! The partition log: segments of record batches on disk, appended with aligned O_DIRECT writes
//! and group commit, indexed by offset and time, recovered at start, trimmed by retention. Runs
//! on: the shard that owns each partition; nothing here is shared between shards.
//!
//! Layout on disk: `<data_dir>/<topic>-<partition>/<base offset, 20 digits>.log` with
//! `.index` beside each closed segment. Batches are stored exactly as Kafka's wire format (magic
//! v2), back to back, so a range of a segment can be sent to a consumer as it is.

pub mod dir;
pub mod epochs;
pub mod follower;
pub mod framing;
pub mod index;
mod open;
pub mod partition;
pub mod producer;
pub mod reader;
pub mod recovery;
pub mod retention;
mod segment;
pub mod writer;

use std::path::PathBuf;

use crate::protocol::types::Offset;
use crate::runtime::fs::IoError;

pub use crate::config::{FlushPolicy, LogConfig};
pub use partition::{AppendOutcome, Completion, Partition, PartitionHandle, Waiter};
pub use reader::{FetchRead, FetchRecords, FileRange, ReadResult};
pub use writer::{apply_retention, delete_segments_before, flush_unsynced};

/// Errors at the storage boundary. Cloneable and `Send`: one failure answers every produce
/// waiting on it, and answers cross the shard mesh.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    Io(IoError),
    /// The partition saw an IO error on write or sync and refuses writes until restart
    /// (a failed fsync is never retried: its pages may be gone), or it was closed.
    Failed(String),
    /// Recovery found damage it must not cut (a closed segment's invalid batch).
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: &'static str,
    },
    /// The produced payload is not a valid batch.
    InvalidBatch(crate::protocol::record_batch::BatchError),
    OutOfOrderSequence,
    InvalidProducerEpoch,
    OffsetOutOfRange,
    /// A truncation (a follower cutting back to its leader's history) is under way.
    Truncating,
    /// A follower append whose first offset does not continue the log.
    NotContiguous {
        expected: Offset,
        got: Offset,
    },
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Io(e) => write!(f, "{e}"),
            Error::Failed(why) => write!(f, "log failed: {why}"),
            Error::Corrupt {
                path,
                position,
                reason,
            } => write!(f, "{} at byte {position}: {reason}", path.display()),
            Error::InvalidBatch(e) => write!(f, "invalid batch: {e:?}"),
            Error::OutOfOrderSequence => write!(f, "out of order sequence number"),
            Error::InvalidProducerEpoch => write!(f, "invalid producer epoch"),
            Error::OffsetOutOfRange => write!(f, "offset out of range"),
            Error::Truncating => write!(f, "the log is being truncated"),
            Error::NotContiguous { expected, got } => write!(
                f,
                "a follower append starts at {} but the log ends at {}",
                got.0, expected.0
            ),
        }
    }
}

impl std::error::Error for Error {}

impl From<IoError> for Error {
    fn from(e: IoError) -> Self {
        Error::Io(e)
    }
}

impl Error {
    /// True if the operation failed for lack of a resource that may come back (disk space,
    /// quota, descriptors): the request fails, the partition does not.
    pub fn is_exhaustion(&self) -> bool {
        matches!(self, Error::Io(e) if e.is_exhaustion())
    }
}
