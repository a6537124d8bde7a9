//! The leader-epoch cache of one partition (Kafka's `leader-epoch-checkpoint`): for every
//! leader epoch that wrote to the log, the offset of its first batch. A follower of a new
//! leader asks for the end of its last epoch there to find where the two histories diverge
//! (KIP-101, KIP-320). Runs on: the partition's owner shard. Invariants: epochs and start
//! offsets both strictly increase; no entry starts at or past the log end; the file is replaced
//! whole (temp file, fsync, rename).

use super::framing;
use crate::protocol::types::{LeaderEpoch, Offset};

/// File name beside the segments.
pub const EPOCH_CHECKPOINT: &str = "leader-epoch-checkpoint";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochCache {
    /// (epoch, offset of its first batch), increasing in both.
    entries: Vec<(LeaderEpoch, Offset)>,
}

impl EpochCache {
    /// Records that `epoch` wrote its first batch at `start`; `true` if that is news.
    pub fn assign(&mut self, epoch: LeaderEpoch, start: Offset) -> bool {
        match self.entries.last() {
            Some((last, _)) if *last >= epoch => false,
            Some((last, last_start)) => {
                assert!(
                    start >= *last_start,
                    "epoch {} starts at {} before epoch {} at {}",
                    epoch.0,
                    start.0,
                    last.0,
                    last_start.0
                );
                self.entries.push((epoch, start));
                true
            }
            None => {
                self.entries.push((epoch, start));
                true
            }
        }
    }

    /// Forgets the epochs that start at or after `offset` (the log was truncated there).
    pub fn truncate_from(&mut self, offset: Offset) -> bool {
        let before = self.entries.len();
        self.entries.retain(|(_, start)| *start < offset);
        self.entries.len() != before
    }

    /// The latest epoch and its start offset.
    pub fn latest(&self) -> Option<(LeaderEpoch, Offset)> {
        self.entries.last().copied()
    }

    /// KIP-101's answer for a follower whose last epoch is `epoch`: the largest epoch at or
    /// below it that this log knows, and the offset where that epoch ended (the next epoch's
    /// start, or `log_end` for the latest). `None` if the log knows no epoch at or below it.
    pub fn end_offset_for(
        &self,
        epoch: LeaderEpoch,
        log_end: Offset,
    ) -> Option<(LeaderEpoch, Offset)> {
        let i = self.entries.partition_point(|(e, _)| *e <= epoch);
        if i == 0 {
            return None;
        }
        let (found, _) = self.entries[i - 1];
        let end = self.entries.get(i).map_or(log_end, |(_, start)| *start);
        Some((found, end))
    }

    pub fn entries(&self) -> &[(LeaderEpoch, Offset)] {
        &self.entries
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut payload = vec![1u8];
        for (epoch, start) in &self.entries {
            payload.extend(epoch.0.to_be_bytes());
            payload.extend(start.0.to_be_bytes());
        }
        framing::frame(&payload)
    }

    /// `None` if the bytes are not a whole, ordered checkpoint (then it is rebuilt from the
    /// segments that recovery scans).
    pub fn decode(bytes: &[u8]) -> Option<EpochCache> {
        let payload = framing::unframe(bytes)?;
        let (&version, body) = payload.split_first()?;
        if version != 1 || body.len() % 12 != 0 {
            return None;
        }
        let mut cache = EpochCache::default();
        for chunk in body.chunks(12) {
            let epoch = LeaderEpoch(i32::from_be_bytes(chunk[..4].try_into().ok()?));
            let start = Offset(i64::from_be_bytes(chunk[4..].try_into().ok()?));
            if cache
                .entries
                .last()
                .is_some_and(|(e, s)| *e >= epoch || *s > start)
            {
                return None;
            }
            cache.entries.push((epoch, start));
        }
        Some(cache)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_offsets_follow_kip_101() {
        let mut c = EpochCache::default();
        assert!(c.assign(LeaderEpoch(0), Offset(0)));
        assert!(!c.assign(LeaderEpoch(0), Offset(5)));
        assert!(c.assign(LeaderEpoch(2), Offset(10)));
        assert!(c.assign(LeaderEpoch(5), Offset(30)));
        let end = Offset(42);
        assert_eq!(
            c.end_offset_for(LeaderEpoch(0), end),
            Some((LeaderEpoch(0), Offset(10)))
        );
        assert_eq!(
            c.end_offset_for(LeaderEpoch(1), end),
            Some((LeaderEpoch(0), Offset(10)))
        );
        assert_eq!(
            c.end_offset_for(LeaderEpoch(3), end),
            Some((LeaderEpoch(2), Offset(30)))
        );
        assert_eq!(
            c.end_offset_for(LeaderEpoch(9), end),
            Some((LeaderEpoch(5), end))
        );
        assert_eq!(EpochCache::decode(&c.encode()), Some(c.clone()));
        assert!(c.truncate_from(Offset(30)));
        assert_eq!(c.latest(), Some((LeaderEpoch(2), Offset(10))));
        let mut torn = c.encode();
        torn.pop();
        assert_eq!(EpochCache::decode(&torn), None);
    }
}
