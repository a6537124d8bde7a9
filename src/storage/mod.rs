//! The partition log: segments of record batches on disk, appended with aligned O_DIRECT writes
//! and group commit, indexed by offset and time, recovered at start, trimmed by retention. Runs
//! on: the shard that owns each partition; nothing here is shared between shards.
//!
//! Layout on disk: `<data_dir>/<topic>-<partition>/<base offset, 20 digits>.log` with
//! `.index` beside each closed segment. Batches are stored exactly as Kafka's wire format (magic
//! v2), back to back, so a range of a segment can be sent to a consumer as it is.

pub mod framing;
pub mod index;
pub mod partition;
pub mod producer;
pub mod reader;
pub mod recovery;
mod segment;
pub mod writer;

use std::path::PathBuf;

use crate::runtime::io::IoError;

pub use partition::{AppendOutcome, Partition, PartitionHandle, Waiter};
pub use reader::{FetchRead, FetchRecords, FileRange, ReadResult};
pub use segment::write_synced as segment_write_synced;
pub use writer::{apply_retention, delete_segments_before, flush_unsynced};

/// When appended bytes are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// fdatasync after every write, before any acknowledgement (the default).
    Always,
    /// Acknowledge after the write; fdatasync at most this many milliseconds later.
    IntervalMs(u64),
    /// Never fdatasync (the page cache and disk cache decide).
    Never,
}

/// Per-partition log settings (broker defaults, overridden per topic).
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub segment_bytes: u64,
    pub segment_ms: u64,
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub message_max_bytes: u32,
    pub flush: FlushPolicy,
    pub tail_cache_bytes: u64,
    pub index_interval_bytes: u64,
    /// false: each write carries one produce request's batch (a contrast for benchmarks).
    pub group_commit: bool,
}

/// Errors at the storage boundary.
#[derive(Debug)]
pub enum Error {
    Io(IoError),
    /// A blocking std IO operation at recovery or roll time.
    Fs {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The partition saw an IO error on write or sync and refuses writes until restart
    /// (a failed fsync is never retried: its pages may be gone).
    Failed(String),
    /// The produced payload is not a valid batch.
    InvalidBatch(crate::protocol::record_batch::BatchError),
    OutOfOrderSequence,
    InvalidProducerEpoch,
    OffsetOutOfRange,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Io(e) => write!(f, "{e}"),
            Error::Fs { op, path, source } => write!(f, "{op} {}: {source}", path.display()),
            Error::Failed(why) => write!(f, "log failed: {why}"),
            Error::InvalidBatch(e) => write!(f, "invalid batch: {e:?}"),
            Error::OutOfOrderSequence => write!(f, "out of order sequence number"),
            Error::InvalidProducerEpoch => write!(f, "invalid producer epoch"),
            Error::OffsetOutOfRange => write!(f, "offset out of range"),
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
        match self {
            Error::Io(e) => crate::runtime::io::is_exhaustion(&e.source),
            Error::Fs { source, .. } => crate::runtime::io::is_exhaustion(source),
            _ => false,
        }
    }

    /// The Kafka error code a client is answered with.
    pub fn error_code(&self) -> crate::protocol::ErrorCode {
        use crate::protocol::record_batch::BatchError;
        use crate::protocol::ErrorCode;
        match self {
            Error::Io(_) | Error::Fs { .. } | Error::Failed(_) => ErrorCode::KafkaStorageError,
            Error::InvalidBatch(BatchError::TooLarge) => ErrorCode::MessageTooLarge,
            Error::InvalidBatch(BatchError::UnsupportedMagic(_)) => {
                ErrorCode::UnsupportedForMessageFormat
            }
            Error::InvalidBatch(BatchError::Invalid) => ErrorCode::InvalidRecord,
            Error::InvalidBatch(_) => ErrorCode::CorruptMessage,
            Error::OutOfOrderSequence => ErrorCode::OutOfOrderSequenceNumber,
            Error::InvalidProducerEpoch => ErrorCode::InvalidProducerEpoch,
            Error::OffsetOutOfRange => ErrorCode::OffsetOutOfRange,
        }
    }
}
