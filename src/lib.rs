//! tusk: a Kafka-compatible message broker for Linux, thread-per-core on io_uring, built for
//! spinning disks and low tail latency.
//!
//! # Layout
//! Each CPU core runs one shard (a glommio executor). A shard owns a set of partitions outright
//! and serves any client connection the kernel hands it; work for a partition another shard owns
//! crosses the shard mesh as a message. See ARCHITECTURE.md for the map and its invariants.

/// The global allocator that keeps forged wire counts from committing memory.
pub mod alloc;
/// `tusk bench`: a Kafka-protocol load generator with latency histograms and plots.
pub mod bench;
/// Starting and stopping the broker: executors, the mesh, recovery, listeners, signals.
pub mod broker;
/// The command line (`tusk serve`, `tusk bench`).
pub mod cli;
/// A small blocking Kafka client (bench and operator tools).
pub mod client;
/// Cluster metadata: the image, its durable log, the controller.
pub mod cluster;
/// Broker configuration: defaults, TOML file, flags, validation.
pub mod config;
/// Every limit and default, with compile-time checks of how they relate.
pub mod constants;
/// Consumer groups: the classic rebalance state machine (coordinator wiring comes next).
pub mod group;
/// Prometheus metrics: per-shard atomics and the /metrics endpoint.
pub mod metrics;
/// Partition -> shard placement: a pure function of topic, partition and shard count.
pub mod placement;
/// The Kafka wire protocol: framing, versions, error codes, record batches.
pub mod protocol;
/// Replication: one replica per partition, deciding when the high watermark moves.
pub mod replication;
/// The runtime seam: executors, the IO trait, clock and randomness, tasks, TCP, the mesh.
pub mod runtime;
/// Connections and one handler per Kafka API.
pub mod server;
/// The per-core broker: shards, their messages, routing, long-poll waiters, start and stop.
pub mod shard;
/// The seeded simulation of replication and the controller (tests only).
pub mod simulation;
/// The partition log: segments, group-commit appends, indexes, recovery, retention.
pub mod storage;
/// Test doubles for the runtime seam: a faulty file system, a manual clock, seeded randomness.
pub mod testing;
/// Host tuning for HDD nodes: `tusk tune check|apply` against tuning/hdd-profile.toml.
pub mod tune;
