//! The Kafka wire protocol: frame limits, the version table we advertise, error codes, newtypes
//! and the record batch format. Request and response bodies are decoded and encoded by the
//! kafka-protocol crate (generated from Kafka's own JSON schemas). Runs on: every shard.
//! Invariant: a frame's size is checked against `socket_request_max_bytes` before any byte of
//! its body is read, and its body's memory is committed only as bytes arrive.

pub mod batch_builder;
pub mod error_code;
pub mod fetch_response;
pub mod record_batch;
pub mod types;
pub mod versions;

pub use error_code::ErrorCode;

/// Why a frame could not be used. `Incomplete` never happens on a blocking read of a whole
/// frame; it is kept distinct for decoders that work on partial buffers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    Incomplete,
    Invalid(String),
}

/// Checks a frame's 4-byte size prefix.
pub fn check_frame_size(size: i32, max_bytes: u32) -> Result<usize, DecodeError> {
    if size < 8 {
        // Smallest request header: api key, version, correlation id.
        return Err(DecodeError::Invalid(format!(
            "frame size {size} is too small"
        )));
    }
    if size as u32 > max_bytes {
        return Err(DecodeError::Invalid(format!(
            "frame size {size} exceeds socket_request_max_bytes {max_bytes}"
        )));
    }
    Ok(size as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_sizes() {
        assert_eq!(check_frame_size(100, 1000), Ok(100));
        assert!(check_frame_size(-5, 1000).is_err());
        assert!(check_frame_size(0, 1000).is_err());
        assert!(check_frame_size(i32::MAX, 1000).is_err());
        assert!(check_frame_size(1001, 1000).is_err());
    }
}
