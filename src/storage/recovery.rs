//! Recovery scan of a segment: walks its batches from the start, checks each one's length,
//! magic, CRC-32C, base offset (must continue the previous batch) and leader epoch (must not go
//! backwards), and stops at the first byte that fails. Runs on: the owning shard, at start (and
//! when a log is truncated), reading through the IO seam. Invariant: the valid prefix it returns
//! is the longest prefix of whole valid batches, and the rebuilt index equals the index a fresh
//! append of that prefix builds; what follows is cut by the caller only in the active segment
//! (a torn tail), never in a closed one.

use crate::runtime::fs::{File, IoError};

use super::index::SegmentIndex;
use crate::protocol::record_batch::{parse_header, BatchHeader, BATCH_HEADER_BYTES};
use crate::protocol::types::{LeaderEpoch, Offset};

/// Why the scan stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanStop {
    /// Reached the end of the file or zeroed (never written) space: a clean end.
    CleanEnd,
    /// Found bytes that are not a valid continuation: a torn or corrupt tail.
    Invalid,
}

/// What a scan found.
#[derive(Debug, Clone)]
pub struct ScanResult {
    /// Bytes of valid batches from the segment start.
    pub valid_bytes: u64,
    /// The offset the next batch must carry.
    pub next_offset: Offset,
    pub last_epoch: LeaderEpoch,
    pub index: SegmentIndex,
    pub stop: ScanStop,
    /// Headers of the valid batches that carry a producer id (to rebuild idempotence state).
    pub producer_batches: Vec<BatchHeader>,
    /// Each leader epoch that starts in the segment and its first offset.
    pub epoch_starts: Vec<(LeaderEpoch, Offset)>,
}

const SCAN_CHUNK_BYTES: usize = 1024 * 1024;

/// Scans `file` (a segment whose first batch has offset `base_offset`).
pub async fn scan_segment(
    file: &dyn File,
    file_bytes: u64,
    base_offset: Offset,
    batch_bytes_max: usize,
    interval_bytes: u64,
    mut last_epoch: LeaderEpoch,
) -> Result<ScanResult, IoError> {
    let mut index = SegmentIndex::new();
    let mut producer_batches = Vec::new();
    let mut epoch_starts = Vec::new();
    let mut next_offset = base_offset;
    let mut pos: u64 = 0;
    let mut buf: Vec<u8> = Vec::new();
    let mut buf_pos: u64 = 0; // file position of buf[0]
    let stop = loop {
        if pos + BATCH_HEADER_BYTES as u64 > file_bytes {
            break if file_is_zero(file, pos, file_bytes).await? {
                ScanStop::CleanEnd
            } else {
                ScanStop::Invalid
            };
        }
        // Make sure the header is in the buffer.
        ensure(
            file,
            &mut buf,
            &mut buf_pos,
            pos,
            BATCH_HEADER_BYTES,
            file_bytes,
        )
        .await?;
        let at = (pos - buf_pos) as usize;
        let length_field = i32::from_be_bytes(buf[at + 8..at + 12].try_into().expect("4 bytes"));
        if length_field == 0 && buf[at..at + 12].iter().all(|b| *b == 0) {
            break if file_is_zero(file, pos, file_bytes.min(pos + SCAN_CHUNK_BYTES as u64)).await? {
                ScanStop::CleanEnd
            } else {
                ScanStop::Invalid
            };
        }
        let total = 12u64 + length_field.max(0) as u64;
        if length_field < 0 || total > batch_bytes_max as u64 || pos + total > file_bytes {
            break ScanStop::Invalid;
        }
        ensure(
            file,
            &mut buf,
            &mut buf_pos,
            pos,
            total as usize,
            file_bytes,
        )
        .await?;
        let at = (pos - buf_pos) as usize;
        let header = match parse_header(&buf[at..at + total as usize], batch_bytes_max, true) {
            Ok(h) => h,
            Err(_) => break ScanStop::Invalid,
        };
        if header.base_offset != next_offset || header.leader_epoch < last_epoch {
            break ScanStop::Invalid;
        }
        let relative = (header.base_offset.0 - base_offset.0) as u32;
        index.on_batch(
            relative,
            pos as u32,
            total,
            header.max_timestamp_ms,
            interval_bytes,
        );
        if header.is_idempotent() {
            producer_batches.push(header);
        }
        if epoch_starts
            .last()
            .is_none_or(|(e, _)| *e < header.leader_epoch)
        {
            epoch_starts.push((header.leader_epoch, header.base_offset));
        }
        last_epoch = header.leader_epoch;
        next_offset = header.last_offset().next();
        pos += total;
    };
    Ok(ScanResult {
        valid_bytes: pos,
        next_offset,
        last_epoch,
        index,
        stop,
        producer_batches,
        epoch_starts,
    })
}

/// Ensures `buf` holds file bytes [pos, pos + len).
async fn ensure(
    file: &dyn File,
    buf: &mut Vec<u8>,
    buf_pos: &mut u64,
    pos: u64,
    len: usize,
    file_bytes: u64,
) -> Result<(), IoError> {
    let have = pos >= *buf_pos && pos + len as u64 <= *buf_pos + buf.len() as u64;
    if have {
        return Ok(());
    }
    let want = len.max(SCAN_CHUNK_BYTES).min((file_bytes - pos) as usize);
    buf.clear();
    while buf.len() < want {
        let chunk = file
            .read_at(pos + buf.len() as u64, want - buf.len())
            .await?;
        if chunk.is_empty() {
            break;
        }
        buf.extend_from_slice(&chunk);
    }
    *buf_pos = pos;
    if buf.len() < len {
        return Err(IoError::new(
            "scan",
            file.path(),
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "segment shorter than its size",
            ),
        ));
    }
    Ok(())
}

/// True if the file holds only zeros in [from, to).
async fn file_is_zero(file: &dyn File, from: u64, to: u64) -> Result<bool, IoError> {
    let mut pos = from;
    while pos < to {
        let want = (64 * 1024).min((to - pos) as usize);
        let chunk = file.read_at(pos, want).await?;
        if chunk.is_empty() {
            return Ok(true);
        }
        if chunk.iter().any(|b| *b != 0) {
            return Ok(false);
        }
        pos += chunk.len() as u64;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::record_batch::{assign_offset, tests::make_batch};
    use crate::runtime::fs::{Fs, OpenOptions};
    use crate::testing::FaultFs;

    /// A segment of `count` batches (3 records each) followed by `zeros` bytes of zeros.
    fn segment(count: usize, zeros: usize) -> (Vec<u8>, Vec<u64>) {
        let mut bytes = Vec::new();
        let mut ends = Vec::new();
        for i in 0..count {
            let mut b = make_batch(3, 1000 + i as i64, 100 + i * 7);
            assign_offset(&mut b, Offset(100 + 3 * i as i64), LeaderEpoch(1));
            bytes.extend(b);
            ends.push(bytes.len() as u64);
        }
        bytes.extend(std::iter::repeat_n(0u8, zeros));
        (bytes, ends)
    }

    fn scan_from(bytes: &[u8], last_epoch: LeaderEpoch) -> ScanResult {
        let fs = FaultFs::new();
        let path = std::path::Path::new("/seg.log");
        fs.put(path, bytes);
        futures_lite::future::block_on(async {
            let f = fs.open(path, OpenOptions::read_only()).await.unwrap();
            scan_segment(
                f.as_ref(),
                bytes.len() as u64,
                Offset(100),
                1 << 20,
                512,
                last_epoch,
            )
            .await
            .unwrap()
        })
    }

    fn scan(bytes: &[u8]) -> ScanResult {
        scan_from(bytes, LeaderEpoch(0))
    }

    #[test]
    fn clean_segment_with_preallocated_zeros() {
        let (bytes, ends) = segment(20, 8192);
        let r = scan(&bytes);
        assert_eq!(r.stop, ScanStop::CleanEnd);
        assert_eq!(r.valid_bytes, *ends.last().unwrap());
        assert_eq!(r.next_offset, Offset(160));
    }

    /// D3: the tail cut at every 512-byte boundary of the last 64 KiB and filled with zeros,
    /// garbage or stale bytes always recovers the longest valid prefix, and the rebuilt index
    /// equals the index of a fresh scan of exactly that prefix.
    #[test]
    fn torn_tail_recovers_longest_valid_prefix() {
        let (clean, ends) = segment(200, 0);
        let len = clean.len();
        let start = len.saturating_sub(64 * 1024) / 512 * 512;
        let mut seed = 0x9e3779b97f4a7c15u64;
        for cut in (start..len).step_by(512) {
            for fill in 0..3 {
                let mut torn = clean[..cut].to_vec();
                let tail = len - cut;
                match fill {
                    0 => torn.extend(std::iter::repeat_n(0u8, tail)),
                    1 => torn.extend((0..tail).map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        seed as u8
                    })),
                    _ => torn.extend_from_slice(&clean[cut - 512.min(cut)..][..tail]),
                }
                let r = scan(&torn);
                let expected = ends
                    .iter()
                    .copied()
                    .filter(|e| *e <= cut as u64)
                    .max()
                    .unwrap_or(0);
                assert_eq!(r.valid_bytes, expected, "cut at {cut}, fill {fill}");
                let fresh = scan(&clean[..expected as usize]);
                assert_eq!(
                    r.index, fresh.index,
                    "index differs at cut {cut}, fill {fill}"
                );
                assert_eq!(r.next_offset, fresh.next_offset);
            }
        }
    }

    #[test]
    fn flipped_bit_mid_log_stops_there() {
        let (mut bytes, ends) = segment(10, 0);
        bytes[ends[4] as usize + 30] ^= 0x01;
        let r = scan(&bytes);
        assert_eq!(r.stop, ScanStop::Invalid);
        assert_eq!(r.valid_bytes, ends[4]);
    }

    #[test]
    fn offsets_must_continue_and_epochs_not_go_back() {
        let (mut bytes, ends) = segment(3, 0);
        // Batch 2 claims a base offset that skips ahead.
        let at = ends[1] as usize;
        bytes[at..at + 8].copy_from_slice(&500i64.to_be_bytes());
        assert_eq!(scan(&bytes).valid_bytes, ends[1]);
        let (mut bytes, ends) = segment(3, 0);
        let at = ends[1] as usize;
        bytes[at + 12..at + 16].copy_from_slice(&0i32.to_be_bytes());
        let r = scan_from(&bytes, LeaderEpoch(1));
        assert_eq!(r.valid_bytes, ends[1]);
    }
}
