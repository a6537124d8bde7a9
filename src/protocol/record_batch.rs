//! Record batch v2 (magic 2) header parsing, validation and offset assignment. Runs on: the shard
//! that owns the partition (produce validation) and at recovery. Invariants: batches are stored
//! exactly as the client sent them except `baseOffset` and `partitionLeaderEpoch`, which the
//! batch CRC-32C does not cover, so rewriting them never invalidates the CRC; records are never
//! decompressed here. Every length is checked against the bytes present before it is used.

use super::types::{LeaderEpoch, Offset, ProducerEpoch, ProducerId};

/// Bytes of the fixed v2 batch header, up to and including `recordsCount`.
pub const BATCH_HEADER_BYTES: usize = 61;
/// `baseOffset` + `batchLength`: the part that precedes what `batchLength` counts.
pub const BATCH_LENGTH_PREFIX_BYTES: usize = 12;
const MAGIC_POS: usize = 16;
const CRC_POS: usize = 17;
const ATTRIBUTES_POS: usize = 21;
const LAST_OFFSET_DELTA_POS: usize = 23;
const BASE_TIMESTAMP_POS: usize = 27;
const MAX_TIMESTAMP_POS: usize = 35;
const PRODUCER_ID_POS: usize = 43;
const PRODUCER_EPOCH_POS: usize = 51;
const BASE_SEQUENCE_POS: usize = 53;
const RECORDS_COUNT_POS: usize = 57;
/// Smallest encoded record: length, attributes, timestamp delta, offset delta, key length,
/// value length and header count, one byte each.
const RECORD_BYTES_MIN: u64 = 7;
/// Most records per compressed byte accepted in a produced batch.
const COMPRESSION_RATIO_MAX: u64 = 4096;

/// Why a batch was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchError {
    /// Fewer bytes than the header or than `batchLength` says.
    Truncated,
    /// `batchLength` is smaller than a header or larger than the configured maximum.
    BadLength,
    /// Larger than `message_max_bytes`.
    TooLarge,
    /// Magic byte is not 2 (old message formats are not stored).
    UnsupportedMagic(i8),
    /// CRC-32C over attributes..end does not match.
    BadCrc,
    /// Counts or deltas that cannot describe a real batch.
    Invalid,
}

/// The fields of a v2 batch header that the broker reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: Offset,
    /// Bytes of the whole batch, including the 12-byte prefix.
    pub total_bytes: usize,
    pub leader_epoch: LeaderEpoch,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp_ms: i64,
    pub max_timestamp_ms: i64,
    pub producer_id: ProducerId,
    pub producer_epoch: ProducerEpoch,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    pub fn last_offset(&self) -> Offset {
        Offset(self.base_offset.0 + self.last_offset_delta as i64)
    }
    /// Sequence number of the last record (wraps like Kafka's).
    pub fn last_sequence(&self) -> i32 {
        self.base_sequence.wrapping_add(self.last_offset_delta)
    }
    pub fn is_idempotent(&self) -> bool {
        self.producer_id.0 >= 0
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes & 0x10 != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }
}

fn be_i64(b: &[u8], pos: usize) -> i64 {
    i64::from_be_bytes(b[pos..pos + 8].try_into().expect("8-byte slice"))
}
fn be_i32(b: &[u8], pos: usize) -> i32 {
    i32::from_be_bytes(b[pos..pos + 4].try_into().expect("4-byte slice"))
}
fn be_i16(b: &[u8], pos: usize) -> i16 {
    i16::from_be_bytes(b[pos..pos + 2].try_into().expect("2-byte slice"))
}

/// Reads the total size of the batch starting at `bytes` from its `batchLength`, without
/// checking anything else. `None` if fewer than 12 bytes are present or the length is negative.
pub fn peek_total_bytes(bytes: &[u8]) -> Option<usize> {
    if bytes.len() < BATCH_LENGTH_PREFIX_BYTES {
        return None;
    }
    let length = be_i32(bytes, 8);
    if length < 0 {
        return None;
    }
    Some(BATCH_LENGTH_PREFIX_BYTES + length as usize)
}

/// Parses the header fields of the batch at the start of `bytes` from its first
/// `BATCH_HEADER_BYTES` alone (the body need not be present; nothing is checked but the
/// header's own sanity): for walking a segment a header at a time.
pub fn parse_header_only(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    if bytes.len() < BATCH_HEADER_BYTES {
        return Err(BatchError::Truncated);
    }
    let total = peek_total_bytes(bytes).ok_or(BatchError::BadLength)?;
    let mut whole = bytes[..BATCH_HEADER_BYTES].to_vec();
    // Claim exactly the header as the batch, so the full parser accepts what is present.
    whole[8..12]
        .copy_from_slice(&((BATCH_HEADER_BYTES - BATCH_LENGTH_PREFIX_BYTES) as i32).to_be_bytes());
    let mut header = parse_header(&whole, BATCH_HEADER_BYTES, false)?;
    if total < BATCH_HEADER_BYTES {
        return Err(BatchError::BadLength);
    }
    header.total_bytes = total;
    Ok(header)
}

/// Parses the header of the batch at the start of `bytes`, checking its length against the
/// bytes present and `max_bytes`, its magic, and (if `check_crc`) its CRC-32C.
pub fn parse_header(
    bytes: &[u8],
    max_bytes: usize,
    check_crc: bool,
) -> Result<BatchHeader, BatchError> {
    if bytes.len() < BATCH_HEADER_BYTES {
        return Err(BatchError::Truncated);
    }
    let length = be_i32(bytes, 8);
    if length < (BATCH_HEADER_BYTES - BATCH_LENGTH_PREFIX_BYTES) as i32 {
        return Err(BatchError::BadLength);
    }
    let total_bytes = BATCH_LENGTH_PREFIX_BYTES + length as usize;
    if total_bytes > max_bytes {
        return Err(BatchError::TooLarge);
    }
    if total_bytes > bytes.len() {
        return Err(BatchError::Truncated);
    }
    let magic = bytes[MAGIC_POS] as i8;
    if magic != 2 {
        return Err(BatchError::UnsupportedMagic(magic));
    }
    if check_crc {
        let stored = u32::from_be_bytes(bytes[CRC_POS..CRC_POS + 4].try_into().expect("4 bytes"));
        if crc32c::crc32c(&bytes[ATTRIBUTES_POS..total_bytes]) != stored {
            return Err(BatchError::BadCrc);
        }
    }
    let header = BatchHeader {
        base_offset: Offset(be_i64(bytes, 0)),
        total_bytes,
        leader_epoch: LeaderEpoch(be_i32(bytes, 12)),
        attributes: be_i16(bytes, ATTRIBUTES_POS),
        last_offset_delta: be_i32(bytes, LAST_OFFSET_DELTA_POS),
        base_timestamp_ms: be_i64(bytes, BASE_TIMESTAMP_POS),
        max_timestamp_ms: be_i64(bytes, MAX_TIMESTAMP_POS),
        producer_id: ProducerId(be_i64(bytes, PRODUCER_ID_POS)),
        producer_epoch: ProducerEpoch(be_i16(bytes, PRODUCER_EPOCH_POS)),
        base_sequence: be_i32(bytes, BASE_SEQUENCE_POS),
        records_count: be_i32(bytes, RECORDS_COUNT_POS),
    };
    if header.last_offset_delta < 0 || header.records_count < 0 {
        return Err(BatchError::Invalid);
    }
    Ok(header)
}

/// Validates a batch a producer sent: a well-formed header, CRC, at least one record and a
/// record count that matches the offset delta (what Kafka requires of producer batches).
pub fn validate_produced(bytes: &[u8], max_bytes: usize) -> Result<BatchHeader, BatchError> {
    let header = parse_header(bytes, max_bytes, true)?;
    if header.records_count < 1 || header.last_offset_delta != header.records_count - 1 {
        return Err(BatchError::Invalid);
    }
    // The count must be possible for the bytes present: an uncompressed record takes at least
    // RECORD_BYTES_MIN bytes; a compressed one cannot shrink below 1/COMPRESSION_RATIO_MAX of
    // that. This keeps a forged count from consuming the offset space.
    let area = (header.total_bytes - BATCH_HEADER_BYTES) as u64;
    let count = header.records_count as u64;
    let possible = if header.attributes & 0x07 == 0 {
        count * RECORD_BYTES_MIN <= area
    } else {
        count <= area.max(1) * COMPRESSION_RATIO_MAX
    };
    if !possible {
        return Err(BatchError::Invalid);
    }
    if header.is_control() {
        // Control batches (transaction markers) are written by the broker, never by clients.
        return Err(BatchError::Invalid);
    }
    Ok(header)
}

/// Splits a produce payload into its batches, validating each. The whole payload is refused if
/// any batch is bad (Kafka refuses the partition's whole write).
pub fn split_produced(
    mut bytes: &[u8],
    max_bytes: usize,
) -> Result<Vec<(usize, BatchHeader)>, BatchError> {
    let mut batches = Vec::new();
    let mut pos = 0usize;
    if bytes.is_empty() {
        return Err(BatchError::Invalid);
    }
    while !bytes.is_empty() {
        let header = validate_produced(bytes, max_bytes)?;
        batches.push((pos, header));
        pos += header.total_bytes;
        bytes = &bytes[header.total_bytes..];
    }
    Ok(batches)
}

/// Rewrites `baseOffset` and `partitionLeaderEpoch` in place. Neither is covered by the CRC.
pub fn assign_offset(batch: &mut [u8], base_offset: Offset, epoch: LeaderEpoch) {
    assert!(
        batch.len() >= BATCH_HEADER_BYTES,
        "assign_offset: batch shorter than its header"
    );
    batch[0..8].copy_from_slice(&base_offset.0.to_be_bytes());
    batch[12..16].copy_from_slice(&epoch.0.to_be_bytes());
}

/// Reads a zig-zag varint from `bytes` at `*pos`, advancing it; `None` if truncated or too long.
fn read_varint(bytes: &[u8], pos: &mut usize) -> Option<i64> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*pos)?;
        *pos += 1;
        value |= ((b & 0x7f) as u64) << shift;
        if b & 0x80 == 0 {
            return Some(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    None
}

/// For an uncompressed batch, the offset delta and timestamp of the first record whose
/// timestamp is at least `timestamp_ms`. `None` if the batch is compressed, malformed, or has
/// no such record.
pub fn first_record_at_or_after(
    batch: &[u8],
    header: &BatchHeader,
    timestamp_ms: i64,
) -> Option<(i32, i64)> {
    if header.attributes & 0x07 != 0 || batch.len() < header.total_bytes {
        return None;
    }
    let records = &batch[..header.total_bytes];
    let mut pos = BATCH_HEADER_BYTES;
    for _ in 0..header.records_count {
        let length = read_varint(records, &mut pos)?;
        if length < 0 || pos as i64 + length > records.len() as i64 {
            return None;
        }
        let end = pos + length as usize;
        let mut at = pos + 1; // attributes byte
        let timestamp_delta = read_varint(records, &mut at)?;
        let offset_delta = read_varint(records, &mut at)?;
        let record_timestamp_ms = header.base_timestamp_ms.saturating_add(timestamp_delta);
        if record_timestamp_ms >= timestamp_ms {
            return i32::try_from(offset_delta)
                .ok()
                .map(|d| (d, record_timestamp_ms));
        }
        pos = end;
    }
    None
}

/// Appends `v` as a zig-zag varint (the record fields of a v2 batch).
pub fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// A record to encode: (key, value); a `None` value is a tombstone.
pub type RecordRef<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// Encodes an uncompressed v2 batch of `count` records with the same `key` and `value`, the
/// i-th stamped `base_timestamp_ms + i * timestamp_step_ms`, with no producer id. Load
/// generators, benches and tests build batches with it.
pub fn encode_uncompressed(
    count: i32,
    key: Option<&[u8]>,
    value: &[u8],
    base_timestamp_ms: i64,
    timestamp_step_ms: i64,
) -> Vec<u8> {
    assert!(count >= 1, "a batch holds at least one record");
    let records: Vec<RecordRef> = (0..count).map(|_| (key, Some(value))).collect();
    encode_records(&records, base_timestamp_ms, timestamp_step_ms)
}

/// Encodes an uncompressed v2 batch of the given (key, value) records; a `None` value is a
/// tombstone. The i-th record is stamped `base_timestamp_ms + i * timestamp_step_ms`.
pub fn encode_records(
    records: &[RecordRef],
    base_timestamp_ms: i64,
    timestamp_step_ms: i64,
) -> Vec<u8> {
    assert!(!records.is_empty(), "a batch holds at least one record");
    let bytes: usize = records
        .iter()
        .map(|(k, v)| 16 + k.map_or(0, <[u8]>::len) + v.map_or(0, <[u8]>::len))
        .sum();
    let mut b =
        super::batch_builder::BatchBuilder::new(kafka_protocol::records::Compression::None, bytes);
    for (i, (key, value)) in records.iter().enumerate() {
        b.push(
            base_timestamp_ms + i as i64 * timestamp_step_ms,
            *key,
            *value,
        );
    }
    Vec::from(b.finish())
}

/// Reads a varint-length-prefixed nullable byte field.
fn read_nullable<'a>(bytes: &'a [u8], pos: &mut usize) -> Option<Option<&'a [u8]>> {
    let len = read_varint(bytes, pos)?;
    if len < 0 {
        return Some(None);
    }
    let end = pos.checked_add(usize::try_from(len).ok()?)?;
    let field = bytes.get(*pos..end)?;
    *pos = end;
    Some(Some(field))
}

/// Calls `f(offset, key, value)` for each record of an uncompressed batch (`batch` starts at
/// the batch header). `false` if the batch is compressed or malformed (records before the
/// fault were delivered).
pub fn for_each_record(
    batch: &[u8],
    header: &BatchHeader,
    mut f: impl FnMut(Offset, Option<&[u8]>, Option<&[u8]>),
) -> bool {
    if header.attributes & 0x07 != 0 || batch.len() < header.total_bytes {
        return false;
    }
    let records = &batch[..header.total_bytes];
    let mut pos = BATCH_HEADER_BYTES;
    for _ in 0..header.records_count {
        let Some(length) = read_varint(records, &mut pos) else {
            return false;
        };
        let Some(end) = usize::try_from(length)
            .ok()
            .and_then(|l| pos.checked_add(l))
        else {
            return false;
        };
        if end > records.len() {
            return false;
        }
        let mut at = pos + 1; // attributes byte
        let (Some(_ts), Some(offset_delta)) =
            (read_varint(records, &mut at), read_varint(records, &mut at))
        else {
            return false;
        };
        let (Some(key), Some(value)) = (
            read_nullable(&records[..end], &mut at),
            read_nullable(&records[..end], &mut at),
        ) else {
            return false;
        };
        f(Offset(header.base_offset.0 + offset_delta), key, value);
        pos = end;
    }
    true
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A valid uncompressed batch of `count` records with `value_bytes`-byte values.
    pub fn make_batch(count: i32, base_timestamp_ms: i64, value_bytes: usize) -> Vec<u8> {
        encode_uncompressed(count, None, &vec![b'v'; value_bytes], base_timestamp_ms, 0)
    }

    #[test]
    fn parses_valid_batch() {
        let b = make_batch(3, 1000, 10);
        let h = validate_produced(&b, 1 << 20).unwrap();
        assert_eq!(h.records_count, 3);
        assert_eq!(h.last_offset_delta, 2);
        assert_eq!(h.total_bytes, b.len());
        assert_eq!(h.base_timestamp_ms, 1000);
    }

    #[test]
    fn assign_offset_keeps_crc_valid() {
        let mut b = make_batch(2, 0, 4);
        assign_offset(&mut b, Offset(77), LeaderEpoch(3));
        let h = parse_header(&b, 1 << 20, true).unwrap();
        assert_eq!(h.base_offset, Offset(77));
        assert_eq!(h.leader_epoch, LeaderEpoch(3));
        assert_eq!(h.last_offset(), Offset(78));
    }

    #[test]
    fn rejects_corruption_truncation_and_size() {
        let b = make_batch(2, 0, 4);
        let mut flipped = b.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(
            parse_header(&flipped, 1 << 20, true),
            Err(BatchError::BadCrc)
        );
        assert_eq!(
            parse_header(&b[..b.len() - 1], 1 << 20, true),
            Err(BatchError::Truncated)
        );
        assert_eq!(
            parse_header(&b[..30], 1 << 20, true),
            Err(BatchError::Truncated)
        );
        assert_eq!(parse_header(&b, 20, true), Err(BatchError::TooLarge));
        let mut old = b.clone();
        old[16] = 1;
        assert_eq!(
            parse_header(&old, 1 << 20, false),
            Err(BatchError::UnsupportedMagic(1))
        );
        let mut negative = b.clone();
        negative[8..12].copy_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(
            parse_header(&negative, 1 << 20, true),
            Err(BatchError::BadLength)
        );
    }

    #[test]
    fn finds_record_by_timestamp() {
        let b = make_batch(5, 1000, 3);
        let h = parse_header(&b, 1 << 20, true).unwrap();
        assert_eq!(first_record_at_or_after(&b, &h, 0), Some((0, 1000)));
        assert_eq!(first_record_at_or_after(&b, &h, 1000), Some((0, 1000)));
        assert_eq!(first_record_at_or_after(&b, &h, 1001), None);
        assert_eq!(first_record_at_or_after(&b[..70], &h, 0), None);
    }

    #[test]
    fn refuses_counts_the_bytes_cannot_hold_and_control_batches() {
        let mut b = make_batch(3, 0, 4);
        // Claim 2^30 records in a 3-record batch (count and delta agree, CRC recomputed).
        b[23..27].copy_from_slice(&((1i32 << 30) - 1).to_be_bytes());
        b[57..61].copy_from_slice(&(1i32 << 30).to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(validate_produced(&b, 1 << 20), Err(BatchError::Invalid));
        let mut c = make_batch(1, 0, 4);
        c[22] |= 0x20; // control bit
        let crc = crc32c::crc32c(&c[21..]);
        c[17..21].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(validate_produced(&c, 1 << 20), Err(BatchError::Invalid));
    }

    #[test]
    fn encoded_batches_carry_keys_and_stepped_timestamps() {
        let b = encode_uncompressed(5, Some(b"key"), b"value", 1000, 10);
        let h = validate_produced(&b, 1 << 20).unwrap();
        assert_eq!(
            (h.records_count, h.base_timestamp_ms, h.max_timestamp_ms),
            (5, 1000, 1040)
        );
        assert_eq!(first_record_at_or_after(&b, &h, 1015), Some((2, 1020)));
        assert_eq!(first_record_at_or_after(&b, &h, 1041), None);
        assert!(b.windows(3).any(|w| w == b"key"), "the key is stored");
    }

    #[test]
    fn records_round_trip_with_tombstones() {
        let records: Vec<RecordRef> = vec![
            (Some(b"a"), Some(b"1")),
            (Some(b"b"), None),
            (None, Some(b"3")),
        ];
        let mut b = encode_records(&records, 5, 1);
        assign_offset(&mut b, Offset(40), LeaderEpoch(0));
        let h = validate_produced(&b, 1 << 20).unwrap();
        let mut seen = Vec::new();
        assert!(for_each_record(&b, &h, |o, k, v| seen.push((
            o.0,
            k.map(<[u8]>::to_vec),
            v.map(<[u8]>::to_vec)
        ))));
        assert_eq!(
            seen,
            vec![
                (40, Some(b"a".to_vec()), Some(b"1".to_vec())),
                (41, Some(b"b".to_vec()), None),
                (42, None, Some(b"3".to_vec()))
            ]
        );
        assert!(!for_each_record(&b[..b.len() - 2], &h, |_, _, _| {}));
    }

    #[test]
    fn splits_concatenated_batches() {
        let mut payload = make_batch(2, 0, 4);
        payload.extend(make_batch(3, 0, 4));
        let parts = split_produced(&payload, 1 << 20).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1].0, parts[0].1.total_bytes);
        assert!(split_produced(&payload[..payload.len() - 2], 1 << 20).is_err());
        assert!(split_produced(&[], 1 << 20).is_err());
    }
}
