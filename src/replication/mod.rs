//! Replication: one `Replica` per partition between the shard layer and storage. It takes a
//! leader's produce (`produce(batch, acks) → completion`) and decides when the high watermark
//! moves. On one node (today) the high watermark follows the log's `flushed` stage, which is
//! exactly what the broker did before this layer existed; the cluster's replica will track its
//! followers' durable positions and move it to the minimum over the in-sync replicas. Runs on:
//! the partition's owner shard.

use crate::protocol::types::Offset;
use crate::storage::{AppendOutcome, Completion, Error, Partition, PartitionHandle};

/// Kafka's `acks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// 0: no answer is sent, nothing is awaited.
    None,
    /// 1: answered once the leader has the batch durably.
    Leader,
    /// -1: answered once every in-sync replica has it durably.
    All,
}

impl Acks {
    /// The wire value's meaning; `None` for values Kafka refuses (INVALID_REQUIRED_ACKS).
    pub fn from_wire(acks: i16) -> Option<Acks> {
        match acks {
            0 => Some(Acks::None),
            1 => Some(Acks::Leader),
            -1 => Some(Acks::All),
            _ => None,
        }
    }
}

/// What a produce did.
pub enum Produced {
    /// Appended at `base_offset`; `done` resolves when `acks` is satisfied (absent for acks=0).
    Appended {
        base_offset: Offset,
        done: Option<Completion>,
    },
    /// A retried idempotent batch already in the log, at `base_offset`: answer once it is
    /// durable (`Replica::wait_durable`).
    Duplicate { base_offset: Offset },
}

/// How the high watermark moves.
enum Mode {
    /// One replica: the high watermark is the log's `flushed` stage.
    SingleNode,
}

/// A partition as its leader replicates it.
pub struct Replica {
    log: PartitionHandle,
    mode: Mode,
}

impl Replica {
    /// The replica of a one-node cluster: acks=1 and acks=all both mean "durable here".
    pub fn single_node(log: PartitionHandle) -> Replica {
        log.borrow_mut().set_hwm_follows_flushed(true);
        Replica {
            log,
            mode: Mode::SingleNode,
        }
    }

    pub fn log(&self) -> &PartitionHandle {
        &self.log
    }

    /// Appends a producer's batch as the leader. Never awaits (the connection's order of
    /// appends is kept by calling this in order).
    pub fn produce(&self, payload: &[u8], acks: Acks) -> Result<Produced, Error> {
        let outcome = Partition::append(&self.log, payload)?;
        Ok(match outcome {
            AppendOutcome::Appended {
                base_offset,
                durable,
            } => {
                let done = match (&self.mode, acks) {
                    (_, Acks::None) => None,
                    // On one node, durable here is durable on every in-sync replica.
                    (Mode::SingleNode, Acks::Leader | Acks::All) => Some(durable),
                };
                Produced::Appended { base_offset, done }
            }
            AppendOutcome::Duplicate { base_offset } => Produced::Duplicate { base_offset },
        })
    }

    /// Resolves once `offset` is below the high watermark (a retried batch's original).
    pub async fn wait_durable(&self, offset: Offset) -> Result<(), Error> {
        Partition::wait_durable(&self.log, offset).await
    }
}
