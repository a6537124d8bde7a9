//! Cluster metadata: topics, partitions, their configs and ids, as an image built from a log of
//! metadata records. Runs on: the controller (shard 0) writes the log; every shard holds an
//! immutable `Arc<MetadataImage>` that the controller replaces by message. Invariant: the image
//! changes only by applying a record that is already durable in the metadata log, so a restart
//! rebuilds exactly the image clients saw. The `MetadataLog` trait is the seam that a
//! Raft-replicated log (raft-rs) implements when the cluster arrives.

pub mod controller;
pub mod metadata;

pub use metadata::{LocalMetadataLog, MetadataImage, MetadataLog, MetadataRecord, TopicMeta};
