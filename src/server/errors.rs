//! Kafka error codes, chosen here from the typed errors of the layers below (storage, the
//! shard layer, the controller): the only place that maps them. Runs on: the connection's
//! shard.

use crate::cluster::controller::ControllerError;
use crate::group::GroupCode;
use crate::protocol::record_batch::BatchError;
use crate::protocol::ErrorCode;
use crate::shard::messages::PartitionError;
use crate::storage::Error as StorageError;

/// The code a client gets for a storage error.
pub fn storage_code(e: &StorageError) -> ErrorCode {
    match e {
        StorageError::Io(_) | StorageError::Failed(_) | StorageError::Corrupt { .. } => {
            ErrorCode::KafkaStorageError
        }
        StorageError::InvalidBatch(BatchError::TooLarge) => ErrorCode::MessageTooLarge,
        StorageError::InvalidBatch(BatchError::UnsupportedMagic(_)) => {
            ErrorCode::UnsupportedForMessageFormat
        }
        StorageError::InvalidBatch(BatchError::Invalid) => ErrorCode::InvalidRecord,
        StorageError::InvalidBatch(_) => ErrorCode::CorruptMessage,
        StorageError::OutOfOrderSequence => ErrorCode::OutOfOrderSequenceNumber,
        StorageError::InvalidProducerEpoch => ErrorCode::InvalidProducerEpoch,
        StorageError::OffsetOutOfRange => ErrorCode::OffsetOutOfRange,
        // A follower cutting its log back: the client asks again (it is no leader now).
        StorageError::Truncating => ErrorCode::NotLeaderOrFollower,
        StorageError::NotContiguous { .. } => ErrorCode::OffsetOutOfRange,
    }
}

/// The code for one partition's answer (`None`: success).
pub fn partition_code(e: &Option<PartitionError>) -> ErrorCode {
    match e {
        None => ErrorCode::None,
        Some(PartitionError::Unknown) => ErrorCode::UnknownTopicOrPartition,
        // Its open failed (a full disk, a damaged directory): the partition is offline here.
        Some(PartitionError::Offline) => ErrorCode::KafkaStorageError,
        // Clients refresh metadata and retry on this one.
        Some(PartitionError::OwnerGone) => ErrorCode::NotLeaderOrFollower,
        Some(PartitionError::InvalidTimestamp) => ErrorCode::InvalidRequest,
        Some(PartitionError::Storage(e)) => storage_code(e),
        // Led by another broker, or not yet assigned: clients refresh metadata and retry.
        Some(PartitionError::NotLeader) => ErrorCode::NotLeaderOrFollower,
        Some(PartitionError::NotEnoughReplicas) => ErrorCode::NotEnoughReplicas,
        Some(PartitionError::NotEnoughReplicasAfterAppend) => {
            ErrorCode::NotEnoughReplicasAfterAppend
        }
        Some(PartitionError::TimedOut) => ErrorCode::RequestTimedOut,
        Some(PartitionError::FencedLeaderEpoch) => ErrorCode::FencedLeaderEpoch,
        Some(PartitionError::UnknownLeaderEpoch) => ErrorCode::UnknownLeaderEpoch,
        Some(PartitionError::OffsetOutOfRange) => ErrorCode::OffsetOutOfRange,
    }
}

/// The code and message for a controller's answer.
pub fn controller_answer(r: &Result<(), ControllerError>) -> (ErrorCode, Option<String>) {
    let Err(e) = r else {
        return (ErrorCode::None, None);
    };
    let code = match e {
        ControllerError::InvalidTopic(_) => ErrorCode::InvalidTopicException,
        ControllerError::TopicExists(_) => ErrorCode::TopicAlreadyExists,
        ControllerError::UnknownTopic(_) => ErrorCode::UnknownTopicOrPartition,
        ControllerError::InvalidPartitions(_) => ErrorCode::InvalidPartitions,
        ControllerError::InvalidReplicationFactor(_) => ErrorCode::InvalidReplicationFactor,
        ControllerError::InvalidConfig(_) => ErrorCode::InvalidConfig,
        ControllerError::PolicyViolation(_) => ErrorCode::PolicyViolation,
        ControllerError::Log(_) | ControllerError::Apply(_) => ErrorCode::KafkaStorageError,
        ControllerError::NotEnoughBrokers(_) => ErrorCode::InvalidReplicationFactor,
        ControllerError::StaleBrokerEpoch(_) => ErrorCode::StaleBrokerEpoch,
        ControllerError::StaleLeader(_) => ErrorCode::FencedLeaderEpoch,
        ControllerError::ElectionNotNeeded(_) => ErrorCode::ElectionNotNeeded,
        ControllerError::PreferredLeaderNotAvailable(_) => ErrorCode::PreferredLeaderNotAvailable,
        // No controller could be reached within the wait: the client may retry.
        ControllerError::NotController(_) | ControllerError::NoQuorum(_) => {
            ErrorCode::RequestTimedOut
        }
    };
    (code, Some(e.message().to_string()))
}

/// The code for a group request's outcome.
pub fn group_code(c: GroupCode) -> ErrorCode {
    match c {
        GroupCode::Ok => ErrorCode::None,
        GroupCode::UnknownMemberId => ErrorCode::UnknownMemberId,
        GroupCode::IllegalGeneration => ErrorCode::IllegalGeneration,
        GroupCode::RebalanceInProgress => ErrorCode::RebalanceInProgress,
        GroupCode::InconsistentGroupProtocol => ErrorCode::InconsistentGroupProtocol,
        GroupCode::GroupMaxSizeReached => ErrorCode::GroupMaxSizeReached,
        GroupCode::InvalidSessionTimeout => ErrorCode::InvalidSessionTimeout,
        GroupCode::MemberIdRequired => ErrorCode::MemberIdRequired,
        GroupCode::FencedInstanceId => ErrorCode::FencedInstanceId,
        GroupCode::CoordinatorNotAvailable => ErrorCode::CoordinatorNotAvailable,
        GroupCode::CoordinatorLoadInProgress => ErrorCode::CoordinatorLoadInProgress,
        GroupCode::NotCoordinator => ErrorCode::NotCoordinator,
        GroupCode::InvalidGroupId => ErrorCode::InvalidGroupId,
        GroupCode::GroupIdNotFound => ErrorCode::GroupIdNotFound,
        GroupCode::NonEmptyGroup => ErrorCode::NonEmptyGroup,
        GroupCode::OffsetMetadataTooLarge => ErrorCode::OffsetMetadataTooLarge,
        GroupCode::InvalidRequest => ErrorCode::InvalidRequest,
        GroupCode::StorageFailed => ErrorCode::KafkaStorageError,
        GroupCode::Unexpected => ErrorCode::UnknownServerError,
    }
}

/// The wire value of a typed outcome.
pub trait WireCode {
    fn code(&self) -> i16;
}

impl WireCode for GroupCode {
    fn code(&self) -> i16 {
        group_code(*self).code()
    }
}
