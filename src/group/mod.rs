//! Consumer groups (classic protocol). Runs on: the shard that owns each group (placement comes
//! with the coordinator). This first part is the rebalance state machine, free of IO and
//! clocks: callers pass `now_ms` and act on the events it returns, so it is tested with a
//! virtual clock. Not yet wired to the wire protocol or advertised in ApiVersions (issue 3).

pub mod coordinator;
pub mod offsets;
pub mod state;

pub use state::{Event, Group, GroupConfig, GroupState, JoinRequest, JoinResult, SyncOutcome};
