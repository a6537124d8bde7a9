//! Cluster metadata: topics, partitions, their configs and ids, as an image built from a log of
//! metadata records, and the controller that proposes the records. Runs on: the controller
//! shard (the log and the controller); every shard holds an immutable image. Invariant: an
//! image changes only by applying committed records in log order, so every broker (and every
//! restart) builds the same image from the same log. The `MetadataLog` trait is the seam the
//! Raft-replicated log implements when the cluster arrives.

pub mod assign;
pub mod controller;
pub mod controller_isr;
pub mod elect;
pub mod image;
pub mod log;
pub mod raft;
pub mod records;
pub mod sessions;

pub use image::{MetadataImage, TopicMeta};
pub use log::{Committed, LocalMetadataLog, MetadataError, MetadataLog};
pub use records::MetadataRecord;
