//! The metadata quorum's Raft, on openraft: the type configuration, the log and vote storage
//! (`log_store`), the state machine (`state_machine`), which is the metadata image, the
//! messages between members (`network`), a running member (`member`) and the `MetadataLog`
//! over it (`metadata_log`). Runs on:
//! the controller shard of each broker (openraft's `single-threaded` build: every handle and
//! task stays on the executor that made it). Invariants: a vote or an appended entry is
//! acknowledged to openraft only once it is durable (fdatasync through the IO seam); a restart
//! recovers every acknowledged entry and cuts only a torn tail; the state machine applies
//! committed entries in log order, so every broker builds the same image.

pub mod log_store;
pub mod member;
pub mod metadata_log;
pub mod network;
#[cfg(test)]
mod quorum_tests;
pub mod state_machine;
#[cfg(test)]
mod storage_tests;

pub use log_store::RaftLogStore;
pub use member::{QuorumConfig, QuorumMember};
pub use metadata_log::RaftMetadataLog;
pub use state_machine::MetadataStateMachine;

use super::records::MetadataRecord;

openraft::declare_raft_types!(
    /// The metadata quorum's types: entries carry metadata records; nodes are brokers by id,
    /// reached at their controller listener.
    pub TypeConfig:
        D = MetadataRecord,
        R = (),
        NodeId = u64,
        Node = openraft::BasicNode,
        AsyncRuntime = crate::runtime::raft::GlommioRuntime,
);

pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
/// Raft's view of the quorum as one member sees it.
pub type Metrics = openraft::RaftMetrics<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
/// A snapshot's bytes, in memory: the image is small (it is bounded by the topic limits).
pub type SnapshotData = std::io::Cursor<Vec<u8>>;
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, SnapshotData>;
/// A member's handle on the quorum's Raft.
pub type MetadataRaft = openraft::Raft<TypeConfig, MetadataStateMachine>;

/// The directory of the Raft files in a data directory.
pub const RAFT_DIR: &str = "__raft";

/// An IO error of the seam as the `std::io::Error` openraft's storage traits return (the
/// operation, path and errno stay in its message and source).
fn io_error(e: crate::runtime::fs::IoError) -> std::io::Error {
    std::io::Error::new(e.kind, e)
}

/// A file that replay refused, as an `InvalidData` error naming it.
fn corrupt(
    path: &std::path::Path,
    offset: usize,
    reason: impl std::fmt::Display,
) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!(
            "{} is corrupt at byte {offset}: {reason}; refusing to start rather than lose the \
             quorum's history (restore the file, or move the directory away to rejoin empty)",
            path.display()
        ),
    )
}
