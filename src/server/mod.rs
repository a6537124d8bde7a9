//! The Kafka-facing server: connections (framing, pipelining, ordered responses) and one handler
//! per Kafka API. Runs on: every shard (each accepts connections on the shared listen address).
//! Invariant: handlers never touch a partition directly; partition work goes through
//! `Shard::execute`, which sends it to the owning shard; Kafka error codes are chosen here
//! (`errors`), from the typed errors of the layers below.

pub mod connection;
pub mod errors;
pub mod handlers;
