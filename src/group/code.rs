//! The outcome of a group request in the group protocol's own terms; the server layer maps
//! it to Kafka's error code (`server::errors::group_code`). Runs on: the coordinator's shard
//! (and crosses the mesh in replies).

/// `Ok`, or why a group request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupCode {
    Ok,
    UnknownMemberId,
    IllegalGeneration,
    RebalanceInProgress,
    InconsistentGroupProtocol,
    GroupMaxSizeReached,
    InvalidSessionTimeout,
    MemberIdRequired,
    FencedInstanceId,
    CoordinatorNotAvailable,
    /// The coordinator is loading the group's offsets partition (it just became its leader).
    CoordinatorLoadInProgress,
    /// Another broker of the cluster coordinates the group.
    NotCoordinator,
    InvalidGroupId,
    GroupIdNotFound,
    NonEmptyGroup,
    OffsetMetadataTooLarge,
    InvalidRequest,
    /// The offsets log could not make the change durable.
    StorageFailed,
    /// A reply of another call's shape: a bug, answered as an unknown server error.
    Unexpected,
}
