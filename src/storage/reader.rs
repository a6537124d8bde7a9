//! Reads of a partition: whole batches from an offset, from the in-memory tail when it covers the
//! offset, else from the segment files; and the offset lookup by timestamp. Runs on: the owning
//! shard. Invariants: nothing at or past the high watermark is ever returned; at least one whole
//! batch is returned when any is available, even if larger than `max_bytes` (Kafka's KIP-74
//! rule, so a consumer can always make progress); reads never cross the durable size of the
//! active segment.

use std::rc::Rc;

use bytes::{Bytes, BytesMut};

use super::partition::{Partition, PartitionHandle};
use super::Error;
use crate::protocol::record_batch::{self, BATCH_HEADER_BYTES};
use crate::protocol::types::Offset;
use crate::runtime::fs::{File, SpliceFile};

/// Whole batches read from a partition with its watermarks at the time of the read.
pub struct ReadResult {
    pub records: Bytes,
    pub high_watermark: Offset,
    pub log_start: Offset,
}

const DISK_READ_MIN_BYTES: usize = 64 * 1024;

/// Bytes of a fetch answer: held in memory, or a range of a segment file that the connection
/// sends with splice (zero-copy).
#[derive(Debug, Clone)]
pub enum FetchRecords {
    Memory(Bytes),
    File(FileRange),
}

/// Whole batches at `position..position + len` of a segment file.
#[derive(Debug, Clone)]
pub struct FileRange {
    pub file: SpliceFile,
    pub position: u64,
    pub len: usize,
}

impl FetchRecords {
    pub fn len(&self) -> usize {
        match self {
            FetchRecords::Memory(b) => b.len(),
            FetchRecords::File(r) => r.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A fetch read with the watermarks at the time of the read.
pub struct FetchRead {
    pub records: FetchRecords,
    pub high_watermark: Offset,
    pub log_start: Offset,
}

struct DiskSpan {
    file: Rc<dyn File>,
    position: u64,
    limit: u64,
    next_segment_base: Option<Offset>,
}

impl Partition {
    /// Batches from `offset` on, below the high watermark, at most about `max_bytes` (at least
    /// one whole batch).
    pub async fn read(
        this: &PartitionHandle,
        offset: Offset,
        max_bytes: usize,
    ) -> Result<ReadResult, Error> {
        Partition::read_below(this, offset, max_bytes, None).await
    }

    /// Like `read`, for a follower of this leader: batches below `written`, which the leader
    /// may not have synced yet (the follower's sync runs in parallel with the leader's; the
    /// high watermark waits for both).
    pub async fn read_for_follower(
        this: &PartitionHandle,
        offset: Offset,
        max_bytes: usize,
    ) -> Result<ReadResult, Error> {
        let written = this.borrow().written.offset;
        Partition::read_below(this, offset, max_bytes, Some(written)).await
    }

    /// Batches from `offset` on that start below `limit` (`None`: the high watermark).
    async fn read_below(
        this: &PartitionHandle,
        offset: Offset,
        max_bytes: usize,
        limit: Option<Offset>,
    ) -> Result<ReadResult, Error> {
        let mut offset_cursor = offset;
        loop {
            let span = {
                let p = this.borrow();
                let result = |records| ReadResult {
                    records,
                    high_watermark: p.high_watermark,
                    log_start: p.log_start,
                };
                if offset < p.log_start || offset > p.log_end {
                    return Err(Error::OffsetOutOfRange);
                }
                let upto = limit.unwrap_or(p.high_watermark);
                if offset >= upto {
                    return Ok(result(Bytes::new()));
                }
                if let Some(bytes) = p.read_cache(offset, max_bytes, upto) {
                    return Ok(result(bytes));
                }
                match p.disk_span(offset_cursor) {
                    Some(span) => (span, upto),
                    None => return Ok(result(Bytes::new())),
                }
            };
            let (span, upto) = span;
            let records = read_span(&span, offset, max_bytes, upto).await?;
            if !records.is_empty() {
                let p = this.borrow();
                return Ok(ReadResult {
                    records,
                    high_watermark: p.high_watermark,
                    log_start: p.log_start,
                });
            }
            // Nothing at or after `offset` in that segment: continue in the next one.
            match span.next_segment_base {
                Some(next) if next > offset_cursor => offset_cursor = next,
                _ => {
                    let p = this.borrow();
                    return Ok(ReadResult {
                        records,
                        high_watermark: p.high_watermark,
                        log_start: p.log_start,
                    });
                }
            }
        }
    }

    /// A fetch: like `read`, but with `zero_copy` a read from the segment files comes back as
    /// a file range (no bytes copied) when the index can bound it to whole batches.
    pub async fn read_for_fetch(
        this: &PartitionHandle,
        offset: Offset,
        max_bytes: usize,
        zero_copy: bool,
    ) -> Result<FetchRead, Error> {
        if zero_copy {
            let range = this.borrow().file_range(offset, max_bytes);
            if let Some((file, position, len)) = range {
                // A file without a page-cache descriptor (a test's disk) falls back to a copy.
                if let Some(source) = file.splice_source().await? {
                    let p = this.borrow();
                    return Ok(FetchRead {
                        records: FetchRecords::File(FileRange {
                            file: source,
                            position,
                            len,
                        }),
                        high_watermark: p.high_watermark,
                        log_start: p.log_start,
                    });
                }
            }
        }
        let r = Partition::read(this, offset, max_bytes).await?;
        Ok(FetchRead {
            records: FetchRecords::Memory(r.records),
            high_watermark: r.high_watermark,
            log_start: r.log_start,
        })
    }

    /// The file range for a fetch at `offset`, or `None` when the tail cache serves it, the
    /// range would hold no whole batch, or the first batch alone exceeds `max_bytes` (the copy
    /// path then reads exactly that batch). The range starts at the index entry at or below
    /// `offset` (clients skip records below their fetch offset, as with Kafka's sendfile) and
    /// ends at a batch boundary: an index entry, or the end of what is durable. In the active
    /// segment it never reaches the block the writer still rewrites, so page-cache reads never
    /// race an O_DIRECT rewrite of the same block.
    fn file_range(&self, offset: Offset, max_bytes: usize) -> Option<(Rc<dyn File>, u64, usize)> {
        if offset < self.log_start || offset >= self.high_watermark {
            return None;
        }
        // Bytes past the high watermark but durable (a leader waiting for its followers) must
        // not go out: the copy path stops at the high watermark by batch.
        if self.high_watermark < self.flushed {
            return None;
        }
        if self.cache.front().is_some_and(|c| c.base <= offset) {
            return None;
        }
        let (base, seg) = self.segments.range(..=offset).next_back()?;
        let relative = u32::try_from(offset.0 - base.0).ok()?;
        let start = seg.index.lookup_offset(relative) as u64;
        let settled = if seg.closed {
            seg.durable_bytes
        } else {
            seg.durable_bytes & !(crate::constants::DIRECT_IO_ALIGNMENT_BYTES - 1)
        };
        let limit = settled.min(start + max_bytes as u64);
        let end = if seg.durable_bytes <= limit {
            seg.durable_bytes
        } else {
            seg.index.boundary_at_or_below(limit)? as u64
        };
        // The batch holding `offset` ends by the next index entry (or the durable end).
        let must_reach = seg
            .index
            .next_entry_position(relative)
            .map_or(seg.durable_bytes, |p| p as u64);
        if end <= start || end < must_reach.min(seg.durable_bytes) {
            return None;
        }
        Some((seg.file.clone(), start, (end - start) as usize))
    }

    fn read_cache(&self, offset: Offset, max_bytes: usize, upto: Offset) -> Option<Bytes> {
        let front = self.cache.front()?;
        if front.base > offset {
            return None;
        }
        let mut parts: Vec<&Bytes> = Vec::new();
        let mut total = 0usize;
        for c in self.cache.iter() {
            if c.last < offset {
                continue;
            }
            if c.base >= upto {
                break;
            }
            if !parts.is_empty() && total + c.bytes.len() > max_bytes {
                break;
            }
            total += c.bytes.len();
            parts.push(&c.bytes);
        }
        match parts.len() {
            0 => None,
            1 => Some(parts[0].clone()),
            _ => {
                let mut out = BytesMut::with_capacity(total);
                for p in parts {
                    out.extend_from_slice(p);
                }
                Some(out.freeze())
            }
        }
    }

    fn disk_span(&self, offset: Offset) -> Option<DiskSpan> {
        let (base, seg) = self.segments.range(..=offset).next_back()?;
        let relative = (offset.0 - base.0).clamp(0, u32::MAX as i64) as u32;
        let position = seg.index.lookup_offset(relative) as u64;
        let next_segment_base = self
            .segments
            .range(Offset(base.0 + 1)..)
            .next()
            .map(|(b, _)| *b);
        Some(DiskSpan {
            file: seg.file.clone(),
            position,
            limit: seg.durable_bytes,
            next_segment_base,
        })
    }

    /// The offset and timestamp of the first record with a timestamp at or after
    /// `timestamp_ms`, if any.
    pub async fn offset_for_timestamp(
        this: &PartitionHandle,
        timestamp_ms: i64,
    ) -> Result<Option<(Offset, i64)>, Error> {
        let spans: Vec<(Rc<dyn File>, u64, u64)> = {
            let p = this.borrow();
            p.segments
                .values()
                .filter(|s| s.index.max_timestamp_ms >= timestamp_ms)
                .map(|s| {
                    (
                        s.file.clone(),
                        s.index.lookup_time(timestamp_ms) as u64,
                        s.durable_bytes,
                    )
                })
                .collect()
        };
        for (file, mut pos, limit) in spans {
            while pos + BATCH_HEADER_BYTES as u64 <= limit {
                let want = DISK_READ_MIN_BYTES.min((limit - pos) as usize);
                let data = file.read_at(pos, want).await?;
                let mut at = 0usize;
                while at + BATCH_HEADER_BYTES <= data.len() {
                    let total = record_batch::peek_total_bytes(&data[at..]).unwrap_or(0);
                    if total < BATCH_HEADER_BYTES {
                        return Ok(None);
                    }
                    let batch = if at + total <= data.len() {
                        data.slice(at..at + total)
                    } else {
                        file.read_at(pos + at as u64, total).await?
                    };
                    let header = record_batch::parse_header(&batch, usize::MAX, false)
                        .map_err(Error::InvalidBatch)?;
                    if header.max_timestamp_ms >= timestamp_ms {
                        // A compressed batch answers with its first offset and its largest
                        // timestamp (its records are not decompressed here).
                        let (delta, found_ms) =
                            record_batch::first_record_at_or_after(&batch, &header, timestamp_ms)
                                .unwrap_or((0, header.max_timestamp_ms));
                        return Ok(Some((
                            Offset(header.base_offset.0 + delta as i64),
                            found_ms,
                        )));
                    }
                    at += total;
                }
                if at == 0 {
                    break;
                }
                pos += at as u64;
            }
        }
        Ok(None)
    }
}

/// Reads whole batches with last offset >= `offset` and base offset < `upto` from a segment
/// span.
async fn read_span(
    span: &DiskSpan,
    offset: Offset,
    max_bytes: usize,
    upto: Offset,
) -> Result<Bytes, Error> {
    let mut pos = span.position;
    loop {
        if pos + BATCH_HEADER_BYTES as u64 > span.limit {
            return Ok(Bytes::new());
        }
        let want = max_bytes
            .max(DISK_READ_MIN_BYTES)
            .min((span.limit - pos) as usize);
        let data = span.file.read_at(pos, want).await?;
        let mut at = 0usize;
        let mut start: Option<usize> = None;
        let mut end = 0usize;
        while at + BATCH_HEADER_BYTES <= data.len() {
            let header = match record_batch::parse_header(&data[at..], usize::MAX, false) {
                Ok(h) => h,
                Err(record_batch::BatchError::Truncated) => {
                    let total = record_batch::peek_total_bytes(&data[at..]).unwrap_or(0);
                    if start.is_none() && total > 0 {
                        // The first batch is larger than what was read: read exactly it.
                        let whole = span.file.read_at(pos + at as u64, total).await?;
                        let h = record_batch::parse_header(&whole, usize::MAX, false)
                            .map_err(Error::InvalidBatch)?;
                        if h.base_offset >= upto {
                            return Ok(Bytes::new());
                        }
                        if h.last_offset() >= offset {
                            return Ok(whole);
                        }
                        pos += (at + total) as u64;
                        start = Some(usize::MAX);
                    }
                    break;
                }
                Err(e) => return Err(Error::InvalidBatch(e)),
            };
            if header.base_offset >= upto {
                break;
            }
            if header.last_offset() >= offset {
                let first = *start.get_or_insert(at);
                if at + header.total_bytes - first > max_bytes && end > first {
                    break;
                }
                end = at + header.total_bytes;
            }
            at += header.total_bytes;
        }
        match start {
            Some(usize::MAX) => continue,
            Some(first) => return Ok(data.slice(first..end)),
            None if at == 0 => return Ok(Bytes::new()),
            None => pos += at as u64,
        }
    }
}
