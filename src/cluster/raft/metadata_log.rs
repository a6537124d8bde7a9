//! The metadata log on the quorum: `MetadataLog` over a member's Raft and state machine, so
//! the controller proposes and every broker's applier reads the same way on one node and in a
//! cluster. Indexes are Raft log indexes (not dense: blank and membership entries take some).
//! "Committed" means applied to this member's state machine. Runs on: the controller shard.
//! Invariant: `propose` resolves only after openraft has committed and applied the record on
//! the leader; on a member that is not the leader it fails and names the leader it knows.

use std::path::PathBuf;

use openraft::errors::{ClientWriteError, RaftError};

use super::state_machine::Applied;
use super::{MetadataRaft, MetadataStateMachine, RAFT_DIR};
use crate::cluster::log::{
    Committed, LogFuture, MetadataError, MetadataLog, NOT_THE_CONTROLLER, NO_QUORUM,
};
use crate::cluster::MetadataRecord;

/// How long a proposal may wait for the quorum to commit it (the controller's lock is held
/// meanwhile: without a majority, changes fail instead of queueing forever).
const COMMIT_WAIT_MS: u64 = 8000;

pub struct RaftMetadataLog {
    raft: MetadataRaft,
    state_machine: MetadataStateMachine,
    /// For errors: where the quorum's files are.
    path: PathBuf,
}

impl RaftMetadataLog {
    pub fn new(
        raft: MetadataRaft,
        state_machine: MetadataStateMachine,
        data_dir: &std::path::Path,
    ) -> RaftMetadataLog {
        RaftMetadataLog {
            raft,
            state_machine,
            path: data_dir.join(RAFT_DIR),
        }
    }

    fn error(&self, detail: String) -> MetadataError {
        MetadataError {
            op: "propose",
            path: self.path.clone(),
            detail,
        }
    }
}

impl MetadataLog for RaftMetadataLog {
    fn propose(&self, record: MetadataRecord) -> LogFuture<'_, Result<u64, MetadataError>> {
        Box::pin(async move {
            let wait = std::time::Duration::from_millis(COMMIT_WAIT_MS);
            let Some(written) =
                crate::runtime::io::timeout(wait, self.raft.client_write(record)).await
            else {
                return Err(self.error(format!(
                    "{NO_QUORUM}: the record was not committed within {COMMIT_WAIT_MS} ms (fewer \
                     than a majority of the voters answer); it may still commit later"
                )));
            };
            match written {
                Ok(written) => Ok(written.log_id.index),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    Err(self.error(match f.leader_id {
                        Some(leader) => format!("{NOT_THE_CONTROLLER}: node {leader} is"),
                        None => format!("{NOT_THE_CONTROLLER}, and no controller is known"),
                    }))
                }
                Err(e) => Err(self.error(e.to_string())),
            }
        })
    }

    fn committed_from(&self, from: u64) -> Committed {
        let end = self.committed_end();
        match self.state_machine.applied_since(from.checked_sub(1)) {
            Applied::Records(records) => Committed::Records {
                records: records.into_iter().filter(|(i, _)| *i < end).collect(),
                end,
            },
            Applied::Image(image, index) => Committed::Image {
                image,
                end: index.map_or(0, |i| i + 1),
            },
        }
    }

    fn committed_end(&self) -> u64 {
        self.state_machine.applied_index().map_or(0, |i| i + 1)
    }

    fn sync(&self) -> LogFuture<'_, Result<(), MetadataError>> {
        Box::pin(async move {
            let wait = std::time::Duration::from_millis(COMMIT_WAIT_MS);
            let read = self
                .raft
                .ensure_linearizable(openraft::raft::ReadPolicy::ReadIndex);
            let read = crate::runtime::io::timeout(wait, read)
                .await
                .ok_or_else(|| self.error(format!("{NO_QUORUM}: no majority answered")))?
                .map_err(|e| self.error(format!("{NOT_THE_CONTROLLER}: {e}")))?;
            self.state_machine
                .wait_applied_past(read.index().checked_sub(1))
                .await;
            Ok(())
        })
    }

    fn wait_committed(&self, index: u64) -> LogFuture<'_, ()> {
        Box::pin(self.state_machine.wait_applied_past(index.checked_sub(1)))
    }
}
