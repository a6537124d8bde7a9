//! CRC-framed blobs for the broker's own files (producer snapshots, offsets snapshots, metadata
//! records): `[length u32][crc32c u32][payload]`, big-endian. Runs on: any shard, and the main
//! thread at start. Invariant: a frame is accepted only if its length fits the bytes present
//! and its CRC matches; anything else reads as absent (torn or corrupt), never as a panic.

/// Frames `payload`.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    assert!(!payload.is_empty(), "framed payloads are never empty");
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend((payload.len() as u32).to_be_bytes());
    out.extend(crc32c::crc32c(payload).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The payload of the frame at the start of `bytes` and the frame's total size, if the frame
/// is whole, not empty, at most `payload_bytes_max`, and its CRC matches. Empty payloads are
/// never written, and refusing them keeps zeroed space (whose CRC of nothing is 0) from
/// reading as frames.
pub fn unframe_prefix(bytes: &[u8], payload_bytes_max: usize) -> Option<(&[u8], usize)> {
    let len = u32::from_be_bytes(bytes.get(0..4)?.try_into().ok()?) as usize;
    let crc = u32::from_be_bytes(bytes.get(4..8)?.try_into().ok()?);
    if len == 0 || len > payload_bytes_max {
        return None;
    }
    let payload = bytes.get(8..8usize.checked_add(len)?)?;
    (crc32c::crc32c(payload) == crc).then_some((payload, 8 + len))
}

/// The payload of `bytes` if it is exactly one valid frame.
pub fn unframe(bytes: &[u8]) -> Option<&[u8]> {
    match unframe_prefix(bytes, usize::MAX)? {
        (payload, total) if total == bytes.len() => Some(payload),
        _ => None,
    }
}

/// Why replay refused a file of frames: the byte offset of the frame, and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptFrame {
    pub offset: usize,
    pub reason: String,
}

/// Replays an append-only file of frames (the metadata log, Raft's log), decoding each payload
/// with `decode`. Returns the items with the byte offset of each one's frame, and the length of
/// the valid prefix: whatever follows it is a torn tail (the last append, cut short by a crash).
/// A frame that fails while a valid frame follows it, or whose CRC holds but whose payload does
/// not decode, is refused: appends are synced one at a time, so only the last frame can be
/// torn, and cutting anywhere else would silently drop every later record.
pub fn replay<T>(
    bytes: &[u8],
    payload_bytes_max: usize,
    mut decode: impl FnMut(&[u8]) -> Result<T, String>,
) -> Result<(Vec<(usize, T)>, usize), CorruptFrame> {
    let mut items = Vec::new();
    let mut pos = 0usize;
    while pos < bytes.len() {
        let Some((payload, total)) = unframe_prefix(&bytes[pos..], payload_bytes_max) else {
            let followed = (pos + 1..bytes.len())
                .any(|q| unframe_prefix(&bytes[q..], payload_bytes_max).is_some());
            if followed {
                return Err(CorruptFrame {
                    offset: pos,
                    reason: "its length or checksum is wrong and valid records follow it".into(),
                });
            }
            return Ok((items, pos));
        };
        let item = decode(payload).map_err(|reason| CorruptFrame {
            offset: pos,
            reason,
        })?;
        items.push((pos, item));
        pos += total;
    }
    Ok((items, pos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_refuse_damage() {
        let f = frame(b"hello");
        assert_eq!(unframe(&f), Some(&b"hello"[..]));
        assert_eq!(unframe(&f[..f.len() - 1]), None);
        let mut bad = f.clone();
        bad[9] ^= 1;
        assert_eq!(unframe(&bad), None);
        let mut two = f.clone();
        two.extend(&f);
        assert_eq!(unframe(&two), None, "trailing bytes are not one frame");
        assert_eq!(unframe_prefix(&two, 16), Some((&b"hello"[..], f.len())));
        assert_eq!(unframe_prefix(&two, 4), None, "over the payload limit");
        assert_eq!(unframe(&[]), None);
        assert_eq!(
            unframe(&[0u8; 8]),
            None,
            "zeroed space is not an empty frame"
        );
    }
}
