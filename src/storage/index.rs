//! Sparse offset and time indexes of one segment, kept in memory and written beside the segment
//! when it is closed. Runs on: the shard that owns the partition. Invariants: entries are added in
//! increasing offset (and, for the time index, increasing timestamp) order; a lookup returns the
//! greatest entry at or below the key, so a scan from there never misses a batch. A persisted
//! index is only trusted if its length is a whole number of entries and its entries are ordered;
//! otherwise it is rebuilt from the segment.

/// One offset-index entry: offset relative to the segment base, and file position of the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

/// One time-index entry: the largest timestamp seen up to and including the batch at
/// `relative_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp_ms: i64,
    pub relative_offset: u32,
    pub position: u32,
}

/// The two indexes of a segment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegmentIndex {
    pub offsets: Vec<OffsetEntry>,
    pub times: Vec<TimeEntry>,
    bytes_since_offset_entry: u64,
    bytes_since_time_entry: u64,
    pub max_timestamp_ms: i64,
}

/// The state of an index at one point of its segment, to return to if the batches placed after
/// it are taken back (a write that failed for lack of space).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexMark {
    offsets_len: usize,
    times_len: usize,
    bytes_since_offset_entry: u64,
    bytes_since_time_entry: u64,
    max_timestamp_ms: i64,
}

impl SegmentIndex {
    /// Where the index stands now.
    pub fn mark(&self) -> IndexMark {
        IndexMark {
            offsets_len: self.offsets.len(),
            times_len: self.times.len(),
            bytes_since_offset_entry: self.bytes_since_offset_entry,
            bytes_since_time_entry: self.bytes_since_time_entry,
            max_timestamp_ms: self.max_timestamp_ms,
        }
    }

    /// Forgets every batch recorded after `mark`: the index is then exactly what it was.
    pub fn rewind(&mut self, mark: IndexMark) {
        assert!(
            mark.offsets_len <= self.offsets.len() && mark.times_len <= self.times.len(),
            "an index rewinds only backwards: mark {mark:?}, now {} offset and {} time entries",
            self.offsets.len(),
            self.times.len()
        );
        self.offsets.truncate(mark.offsets_len);
        self.times.truncate(mark.times_len);
        self.bytes_since_offset_entry = mark.bytes_since_offset_entry;
        self.bytes_since_time_entry = mark.bytes_since_time_entry;
        self.max_timestamp_ms = mark.max_timestamp_ms;
    }

    pub fn new() -> Self {
        SegmentIndex {
            max_timestamp_ms: -1,
            ..Default::default()
        }
    }

    /// Records a batch appended at `position` with the given relative offset, size and max
    /// timestamp. The first batch of a segment always gets an entry.
    pub fn on_batch(
        &mut self,
        relative_offset: u32,
        position: u32,
        batch_bytes: u64,
        max_timestamp_ms: i64,
        interval_bytes: u64,
    ) {
        if self.offsets.is_empty() || self.bytes_since_offset_entry >= interval_bytes {
            if let Some(last) = self.offsets.last() {
                assert!(
                    last.relative_offset < relative_offset && last.position < position,
                    "offset index entries must increase"
                );
            }
            self.offsets.push(OffsetEntry {
                relative_offset,
                position,
            });
            self.bytes_since_offset_entry = 0;
        }
        self.bytes_since_offset_entry += batch_bytes;
        if max_timestamp_ms > self.max_timestamp_ms {
            self.max_timestamp_ms = max_timestamp_ms;
            if self.times.is_empty() || self.bytes_since_time_entry >= interval_bytes {
                self.times.push(TimeEntry {
                    timestamp_ms: max_timestamp_ms,
                    relative_offset,
                    position,
                });
                self.bytes_since_time_entry = 0;
            }
        }
        self.bytes_since_time_entry += batch_bytes;
    }

    /// File position to start scanning from for `relative_offset`: the greatest entry at or
    /// below it, or 0.
    pub fn lookup_offset(&self, relative_offset: u32) -> u32 {
        let i = self
            .offsets
            .partition_point(|e| e.relative_offset <= relative_offset);
        if i == 0 {
            0
        } else {
            self.offsets[i - 1].position
        }
    }

    /// Position of the first entry after `relative_offset`: where the batch holding that
    /// offset has ended at the latest.
    pub fn next_entry_position(&self, relative_offset: u32) -> Option<u32> {
        let i = self
            .offsets
            .partition_point(|e| e.relative_offset <= relative_offset);
        self.offsets.get(i).map(|e| e.position)
    }

    /// The greatest entry position at or below `position`: a batch boundary.
    pub fn boundary_at_or_below(&self, position: u64) -> Option<u32> {
        let i = self
            .offsets
            .partition_point(|e| (e.position as u64) <= position);
        i.checked_sub(1).map(|i| self.offsets[i].position)
    }

    /// File position to start scanning from for the first record with timestamp >= `ts`: the
    /// position of the last entry whose running maximum is still below `ts` (every batch before
    /// it has a smaller timestamp), or 0.
    pub fn lookup_time(&self, timestamp_ms: i64) -> u32 {
        let i = self
            .times
            .partition_point(|e| e.timestamp_ms < timestamp_ms);
        if i == 0 {
            0
        } else {
            self.times[i - 1].position
        }
    }

    /// Serializes both indexes (written when a segment is closed).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.offsets.len() * 8 + self.times.len() * 16);
        out.extend((self.offsets.len() as u32).to_be_bytes());
        out.extend((self.times.len() as u32).to_be_bytes());
        out.extend(self.max_timestamp_ms.to_be_bytes());
        for e in &self.offsets {
            out.extend(e.relative_offset.to_be_bytes());
            out.extend(e.position.to_be_bytes());
        }
        for e in &self.times {
            out.extend(e.timestamp_ms.to_be_bytes());
            out.extend(e.relative_offset.to_be_bytes());
            out.extend(e.position.to_be_bytes());
        }
        out.extend(crc32c::crc32c(&out).to_be_bytes());
        out
    }

    /// Parses a persisted index; `None` if it is torn, corrupt or unordered (then it is rebuilt).
    pub fn decode(bytes: &[u8]) -> Option<SegmentIndex> {
        if bytes.len() < 20 {
            return None;
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32c::crc32c(body).to_be_bytes() != crc {
            return None;
        }
        let offsets_count = u32::from_be_bytes(body[0..4].try_into().ok()?) as usize;
        let times_count = u32::from_be_bytes(body[4..8].try_into().ok()?) as usize;
        let expected = 16usize
            .checked_add(offsets_count.checked_mul(8)?)?
            .checked_add(times_count.checked_mul(16)?)?;
        if body.len() != expected {
            return None;
        }
        let mut index = SegmentIndex::new();
        index.max_timestamp_ms = i64::from_be_bytes(body[8..16].try_into().ok()?);
        let mut pos = 16;
        for _ in 0..offsets_count {
            let relative_offset = u32::from_be_bytes(body[pos..pos + 4].try_into().ok()?);
            let position = u32::from_be_bytes(body[pos + 4..pos + 8].try_into().ok()?);
            if let Some(last) = index.offsets.last() {
                if last.relative_offset >= relative_offset || last.position >= position {
                    return None;
                }
            }
            index.offsets.push(OffsetEntry {
                relative_offset,
                position,
            });
            pos += 8;
        }
        for _ in 0..times_count {
            let timestamp_ms = i64::from_be_bytes(body[pos..pos + 8].try_into().ok()?);
            let relative_offset = u32::from_be_bytes(body[pos + 8..pos + 12].try_into().ok()?);
            let position = u32::from_be_bytes(body[pos + 12..pos + 16].try_into().ok()?);
            index.times.push(TimeEntry {
                timestamp_ms,
                relative_offset,
                position,
            });
            pos += 16;
        }
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build() -> SegmentIndex {
        let mut index = SegmentIndex::new();
        // 100 batches of 1000 bytes, 10 records each, timestamps rising by 10 ms.
        for i in 0..100u32 {
            index.on_batch(i * 10, i * 1000, 1000, 1000 + i as i64 * 10, 4096);
        }
        index
    }

    #[test]
    fn sparse_entries_and_floor_lookup() {
        let index = build();
        // One entry every 5 batches (5000 bytes >= 4096).
        assert_eq!(index.offsets.len(), 20);
        assert_eq!(index.lookup_offset(0), 0);
        assert_eq!(index.lookup_offset(49), 0);
        assert_eq!(index.lookup_offset(50), 5000);
        assert_eq!(index.lookup_offset(999), 95_000);
    }

    #[test]
    fn boundaries_for_zero_copy_ranges() {
        let index = build();
        assert_eq!(index.next_entry_position(49), Some(5000));
        assert_eq!(index.next_entry_position(50), Some(10_000));
        assert_eq!(index.next_entry_position(999), None);
        assert_eq!(index.boundary_at_or_below(4999), Some(0));
        assert_eq!(index.boundary_at_or_below(5000), Some(5000));
        assert_eq!(index.boundary_at_or_below(1 << 40), Some(95_000));
    }

    #[test]
    fn time_lookup_never_skips_a_batch() {
        let index = build();
        for batch in 0..100u32 {
            let ts = 1000 + batch as i64 * 10;
            let start = index.lookup_time(ts);
            assert!(start <= batch * 1000, "scan for {ts} starts past its batch");
        }
    }

    #[test]
    fn rewind_returns_to_the_mark_exactly() {
        let mut index = SegmentIndex::new();
        for i in 0..37u32 {
            index.on_batch(i * 10, i * 1000, 1000, 1000 + i as i64 * 10, 4096);
        }
        let mark = index.mark();
        let before = index.clone();
        for i in 37..100u32 {
            index.on_batch(i * 10, i * 1000, 1000, 1000 + i as i64 * 10, 4096);
        }
        index.rewind(mark);
        assert_eq!(index, before);
        // The same batches placed again build the same index as a fresh build.
        for i in 37..100u32 {
            index.on_batch(i * 10, i * 1000, 1000, 1000 + i as i64 * 10, 4096);
        }
        assert_eq!(index, build());
    }

    #[test]
    fn round_trips_and_rejects_damage() {
        let index = build();
        let bytes = index.encode();
        let back = SegmentIndex::decode(&bytes).unwrap();
        assert_eq!(back.offsets, index.offsets);
        assert_eq!(back.times, index.times);
        assert_eq!(back.max_timestamp_ms, index.max_timestamp_ms);
        assert!(SegmentIndex::decode(&bytes[..bytes.len() - 1]).is_none());
        let mut flipped = bytes.clone();
        flipped[20] ^= 0x40;
        assert!(SegmentIndex::decode(&flipped).is_none());
        assert!(SegmentIndex::decode(&[]).is_none());
    }
}
