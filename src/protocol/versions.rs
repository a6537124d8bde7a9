//! The API versions tusk serves, advertised in ApiVersions. Runs on: every shard. Invariant:
//! every advertised range lies inside what the codec decodes, except Produce v0-v2: like Kafka 4,
//! we advertise Produce from v0 (older librdkafka derives message-format features from it) and
//! refuse v0-v2 requests when they arrive (their message sets predate magic v2).

use kafka_protocol::messages::ApiKey;

/// (api key, min version, max version) of every API served.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::Produce, 0, 10),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 7),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 4),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::DescribeLogDirs, 1, 4),
];

/// The Fetch version followers send: decoded but not advertised (clients keep v12, which
/// names topics), served only with a replica state whose broker epoch is a live broker's
/// current one, so a client cannot pass itself off as a follower.
pub const REPLICA_FETCH_VERSION: i16 = 15;

/// First Produce version whose body the codec decodes (magic v2 only).
pub const PRODUCE_VERSION_DECODED_MIN: i16 = 3;

/// The served range of `key`, if served.
pub fn supported(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, min, max)| (*min, *max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertised_ranges_are_decodable() {
        for (key, min, max) in SUPPORTED {
            let codec = key.valid_versions();
            let min = if *key == ApiKey::Produce {
                PRODUCE_VERSION_DECODED_MIN
            } else {
                *min
            };
            assert!(
                codec.min <= min && *max <= codec.max,
                "{key:?} {min}..={max} vs {codec}"
            );
        }
        assert_eq!(supported(ApiKey::Produce), Some((0, 10)));
        assert_eq!(supported(ApiKey::JoinGroup), Some((0, 7)));
        assert_eq!(supported(ApiKey::EndTxn), None);
    }
}
