//! Idempotent-producer state of one partition: the last batches' sequence ranges per producer id,
//! so a retried batch gets its original offset back and a gap is refused. Runs on: the shard that
//! owns the partition. Invariant: at most `PRODUCER_BATCHES_REMEMBERED` batches per producer, in
//! append order.

use std::collections::{HashMap, VecDeque};

use crate::constants::PRODUCER_BATCHES_REMEMBERED;
use crate::protocol::types::{Offset, ProducerEpoch, ProducerId};

/// What to do with an incoming idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    Append,
    /// Already appended: answer with its original base offset.
    Duplicate(Offset),
    /// A gap or a reordering: OUT_OF_ORDER_SEQUENCE_NUMBER.
    OutOfOrder,
    /// An older epoch of a producer that has been fenced: INVALID_PRODUCER_EPOCH.
    Fenced,
}

#[derive(Debug, Clone, Copy, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct Remembered {
    first_sequence: i32,
    last_sequence: i32,
    base_offset: i64,
}

#[derive(Debug, Clone, Default, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct Producer {
    epoch: i16,
    batches: VecDeque<Remembered>,
}

/// How to take back one recorded batch: the producer's state before it (at most
/// `PRODUCER_BATCHES_REMEMBERED` entries, so an undo is small).
#[derive(Debug)]
pub struct ProducerUndo {
    /// Offset of the batch the undo takes back.
    pub base: Offset,
    producer_id: i64,
    before: Option<Producer>,
}

/// Sequence state for every producer that wrote to the partition.
#[derive(Debug, Default, PartialEq)]
pub struct ProducerStates {
    producers: HashMap<i64, Producer>,
}

/// A persisted snapshot: `[length u32][crc32c u32][rkyv payload]`.
type SnapshotBody = Vec<(i64, Producer)>;

impl ProducerStates {
    pub fn check(
        &self,
        producer_id: ProducerId,
        epoch: ProducerEpoch,
        first: i32,
        last: i32,
    ) -> SequenceCheck {
        let epoch = epoch.0;
        let Some(p) = self.producers.get(&producer_id.0) else {
            // Unknown producer (new, or its state predates what recovery scanned): accept.
            return SequenceCheck::Append;
        };
        if epoch < p.epoch {
            return SequenceCheck::Fenced;
        }
        if epoch > p.epoch {
            return if first == 0 {
                SequenceCheck::Append
            } else {
                SequenceCheck::OutOfOrder
            };
        }
        if let Some(r) = p
            .batches
            .iter()
            .find(|r| r.first_sequence == first && r.last_sequence == last)
        {
            return SequenceCheck::Duplicate(Offset(r.base_offset));
        }
        match p.batches.back() {
            Some(r) if r.last_sequence.wrapping_add(1) & i32::MAX == first => SequenceCheck::Append,
            Some(_) => SequenceCheck::OutOfOrder,
            None => SequenceCheck::Append,
        }
    }

    /// Records batches found on disk (recovery, truncation), in log order.
    pub fn replay(&mut self, batches: &[crate::protocol::record_batch::BatchHeader]) {
        for h in batches {
            let _ = self.record(
                h.producer_id,
                h.producer_epoch,
                h.base_sequence,
                h.last_sequence(),
                h.base_offset,
            );
        }
    }

    /// Records an appended batch; returns how to undo it (the producer's state before).
    pub fn record(
        &mut self,
        producer_id: ProducerId,
        epoch: ProducerEpoch,
        first: i32,
        last: i32,
        base: Offset,
    ) -> ProducerUndo {
        let (producer_id, epoch) = (producer_id.0, epoch.0);
        let before = self.producers.get(&producer_id).cloned();
        let p = self.producers.entry(producer_id).or_default();
        if epoch != p.epoch {
            p.epoch = epoch;
            p.batches.clear();
        }
        if p.batches.len() == PRODUCER_BATCHES_REMEMBERED {
            p.batches.pop_front();
        }
        p.batches.push_back(Remembered {
            first_sequence: first,
            last_sequence: last,
            base_offset: base.0,
        });
        ProducerUndo {
            base,
            producer_id,
            before,
        }
    }

    /// Takes back one recorded batch (undos are applied newest first).
    pub fn undo(&mut self, undo: ProducerUndo) {
        match undo.before {
            Some(p) => self.producers.insert(undo.producer_id, p),
            None => self.producers.remove(&undo.producer_id),
        };
    }
}

impl ProducerStates {
    /// The state as of `offset`: only batches that start before it. Written when a segment
    /// rolls at `offset`, so that recovery can start from it and scan only later segments.
    pub fn snapshot(&self, offset: Offset) -> Vec<u8> {
        let body: SnapshotBody = self
            .producers
            .iter()
            .map(|(id, p)| {
                let batches = p
                    .batches
                    .iter()
                    .filter(|b| b.base_offset < offset.0)
                    .copied()
                    .collect();
                (
                    *id,
                    Producer {
                        epoch: p.epoch,
                        batches,
                    },
                )
            })
            .filter(|(_, p)| !p.batches.is_empty())
            .collect();
        let payload =
            rkyv::to_bytes::<rkyv::rancor::Error>(&body).expect("producer snapshot encodes");
        super::framing::frame(&payload)
    }

    /// Parses a snapshot; `None` if it is torn or corrupt (then recovery scans instead).
    pub fn from_snapshot(bytes: &[u8]) -> Option<ProducerStates> {
        let payload = super::framing::unframe(bytes)?;
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(payload.len());
        aligned.extend_from_slice(payload);
        let body = rkyv::from_bytes::<SnapshotBody, rkyv::rancor::Error>(&aligned).ok()?;
        let producers = body
            .into_iter()
            .filter(|(_, p)| p.batches.len() <= PRODUCER_BATCHES_REMEMBERED)
            .collect();
        Some(ProducerStates { producers })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_gaps_and_fencing() {
        let mut s = ProducerStates::default();
        assert_eq!(
            s.check(ProducerId(7), ProducerEpoch(0), 0, 4),
            SequenceCheck::Append
        );
        s.record(ProducerId(7), ProducerEpoch(0), 0, 4, Offset(100));
        assert_eq!(
            s.check(ProducerId(7), ProducerEpoch(0), 5, 9),
            SequenceCheck::Append
        );
        s.record(ProducerId(7), ProducerEpoch(0), 5, 9, Offset(105));
        assert_eq!(
            s.check(ProducerId(7), ProducerEpoch(0), 0, 4),
            SequenceCheck::Duplicate(Offset(100))
        );
        assert_eq!(
            s.check(ProducerId(7), ProducerEpoch(0), 5, 9),
            SequenceCheck::Duplicate(Offset(105))
        );
        assert_eq!(
            s.check(ProducerId(7), ProducerEpoch(0), 11, 12),
            SequenceCheck::OutOfOrder
        );
        assert_eq!(
            s.check(ProducerId(7), ProducerEpoch(1), 3, 4),
            SequenceCheck::OutOfOrder
        );
        assert_eq!(
            s.check(ProducerId(7), ProducerEpoch(1), 0, 4),
            SequenceCheck::Append
        );
        s.record(ProducerId(7), ProducerEpoch(1), 0, 4, Offset(110));
        assert_eq!(
            s.check(ProducerId(7), ProducerEpoch(0), 10, 12),
            SequenceCheck::Fenced
        );
    }

    #[test]
    fn remembers_only_the_last_five() {
        let mut s = ProducerStates::default();
        for i in 0..7 {
            s.record(
                ProducerId(1),
                ProducerEpoch(0),
                i * 2,
                i * 2 + 1,
                Offset(i as i64 * 2),
            );
        }
        assert_eq!(
            s.check(ProducerId(1), ProducerEpoch(0), 0, 1),
            SequenceCheck::OutOfOrder
        );
        assert_eq!(
            s.check(ProducerId(1), ProducerEpoch(0), 4, 5),
            SequenceCheck::Duplicate(Offset(4))
        );
        assert_eq!(
            s.check(ProducerId(1), ProducerEpoch(0), 14, 15),
            SequenceCheck::Append
        );
    }

    #[test]
    fn snapshot_keeps_batches_before_its_offset() {
        let mut s = ProducerStates::default();
        s.record(ProducerId(7), ProducerEpoch(2), 0, 4, Offset(100));
        s.record(ProducerId(7), ProducerEpoch(2), 5, 9, Offset(105));
        s.record(ProducerId(8), ProducerEpoch(0), 0, 0, Offset(110));
        let snap = s.snapshot(Offset(106));
        let back = ProducerStates::from_snapshot(&snap).unwrap();
        assert_eq!(
            back.check(ProducerId(7), ProducerEpoch(2), 5, 9),
            SequenceCheck::Duplicate(Offset(105))
        );
        assert_eq!(
            back.check(ProducerId(7), ProducerEpoch(2), 10, 12),
            SequenceCheck::Append
        );
        // Producer 8's only batch starts after the snapshot offset: unknown in the snapshot.
        assert_eq!(
            back.check(ProducerId(8), ProducerEpoch(0), 0, 0),
            SequenceCheck::Append
        );
        assert!(ProducerStates::from_snapshot(&snap[..snap.len() - 1]).is_none());
        let mut flipped = snap.clone();
        flipped[10] ^= 1;
        assert!(ProducerStates::from_snapshot(&flipped).is_none());
    }

    #[test]
    fn sequence_wraps_at_int_max() {
        let mut s = ProducerStates::default();
        s.record(
            ProducerId(1),
            ProducerEpoch(0),
            i32::MAX - 1,
            i32::MAX,
            Offset(0),
        );
        assert_eq!(
            s.check(ProducerId(1), ProducerEpoch(0), 0, 3),
            SequenceCheck::Append
        );
    }
}
