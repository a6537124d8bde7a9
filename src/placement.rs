//! Partition -> shard placement, a pure function of the topic name, the partition index and the
//! shard count: `(fnv1a_32(topic) + partition) mod shards`. Consecutive partitions of a topic land
//! on consecutive shards, so a topic with at least as many partitions as shards uses every core.
//! Runs on: every shard (and the main thread at start); no state.

use crate::protocol::types::{PartitionId, ShardId};

/// FNV-1a, 32 bits: stable across releases and platforms (placement must never change for an
/// existing data directory).
pub fn fnv1a_32(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c9dc5;
    for b in bytes {
        hash ^= *b as u32;
        hash = hash.wrapping_mul(0x01000193);
    }
    hash
}

/// The shard that owns `topic`/`partition`.
pub fn partition_owner(topic: &str, partition: PartitionId, shard_count: usize) -> ShardId {
    assert!(shard_count > 0, "placement needs at least one shard");
    let h = fnv1a_32(topic.as_bytes()) as u64 + partition.0.max(0) as u64;
    ShardId((h % shard_count as u64) as usize)
}

/// The shard that runs the controller (metadata writes). Fixed: shard 0.
pub const CONTROLLER_SHARD: ShardId = ShardId(0);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_spread() {
        assert_eq!(fnv1a_32(b""), 0x811c9dc5);
        assert_eq!(fnv1a_32(b"a"), 0xe40c292c);
        let owners: Vec<usize> = (0..4)
            .map(|p| partition_owner("orders", PartitionId(p), 2).0)
            .collect();
        assert_eq!(owners.iter().filter(|s| **s == 0).count(), 2);
        for p in 0..100 {
            assert!(partition_owner("t", PartitionId(p), 3).0 < 3);
        }
        assert_eq!(partition_owner("x", PartitionId(5), 1), ShardId(0));
    }
}
