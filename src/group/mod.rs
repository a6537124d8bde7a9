//! Consumer groups (classic protocol): the rebalance state machine (free of IO, clocks and
//! randomness: callers pass `now_ms` and a member-id seed and act on the events it returns),
//! the per-shard coordinator, and committed offsets in the internal offsets log. Runs on: the
//! shard that owns each group's offsets partition.

pub mod calls;
pub mod code;
pub mod coordinator;
pub mod offsets;
pub mod state;

pub use code::GroupCode;
pub use state::{Event, Group, GroupConfig, GroupState, JoinRequest, JoinResult, SyncOutcome};
