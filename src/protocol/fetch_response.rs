//! Encodes Fetch responses (v4–v12) as a list of pieces: encoded bytes, and the record sets in
//! between, which the caller supplies however it likes (bytes in memory or a range of a segment
//! file sent with splice). kafka-protocol encodes every other response; Fetch is written here
//! because its records must be able to stay on disk. Runs on: the connection's shard.
//! Invariants: the bytes equal kafka-protocol's encoding of the same response (tested for every
//! served version); the size prefix counts every piece.

use bytes::{BufMut, Bytes, BytesMut};

/// The first flexible (compact, tagged) Fetch version.
const FLEXIBLE_MIN_VERSION: i16 = 12;

/// One partition of a Fetch response. `records` is `None` for a null record set.
pub struct PartitionOut<R> {
    pub index: i32,
    pub error_code: i16,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    pub records: Option<(usize, R)>,
    /// KIP-320's diverging epoch for a follower (epoch, end offset): a tagged field of v12.
    pub diverging: Option<(i32, i64)>,
}

impl<R> PartitionOut<R> {
    /// Partition `index` with no error, no watermarks (-1) and no records yet.
    pub fn empty(index: i32) -> PartitionOut<R> {
        PartitionOut {
            index,
            error_code: 0,
            high_watermark: -1,
            last_stable_offset: -1,
            log_start_offset: -1,
            records: None,
            diverging: None,
        }
    }
}

pub struct TopicOut<R> {
    pub name: Bytes,
    /// The topic's id: v13+ name topics by id (followers only: see `versions`).
    pub topic_id: [u8; 16],
    pub partitions: Vec<PartitionOut<R>>,
}

/// A piece of an encoded response.
pub enum Piece<R> {
    Bytes(Bytes),
    Records(R),
}

/// The whole response frame (size prefix included) as pieces, in order.
pub fn encode<R>(correlation_id: i32, version: i16, topics: Vec<TopicOut<R>>) -> Vec<Piece<R>> {
    assert!(
        (4..=crate::protocol::versions::REPLICA_FETCH_VERSION).contains(&version),
        "fetch_response::encode serves v4..=v15 (the decoded Fetch range)"
    );
    let flexible = version >= FLEXIBLE_MIN_VERSION;
    let mut pieces = Vec::new();
    let mut total = 0usize;
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0); // size, patched below
    buf.put_i32(correlation_id);
    if flexible {
        buf.put_u8(0); // response header tagged fields
    }
    buf.put_i32(0); // throttle_time_ms
    if version >= 7 {
        buf.put_i16(0); // error_code
        buf.put_i32(0); // session_id: no fetch sessions
    }
    put_len(&mut buf, flexible, topics.len());
    for topic in topics {
        if version >= 13 {
            buf.put_slice(&topic.topic_id);
        } else if flexible {
            put_uvarint(&mut buf, topic.name.len() as u64 + 1);
        } else {
            buf.put_i16(topic.name.len() as i16);
        }
        if version < 13 {
            buf.put_slice(&topic.name);
        }
        put_len(&mut buf, flexible, topic.partitions.len());
        for p in topic.partitions {
            buf.put_i32(p.index);
            buf.put_i16(p.error_code);
            buf.put_i64(p.high_watermark);
            buf.put_i64(p.last_stable_offset);
            if version >= 5 {
                buf.put_i64(p.log_start_offset);
            }
            put_len(&mut buf, flexible, 0); // aborted_transactions: empty
            if version >= 11 {
                buf.put_i32(-1); // preferred_read_replica
            }
            match p.records {
                None if flexible => buf.put_u8(0),
                None => buf.put_i32(-1),
                Some((len, records)) => {
                    if flexible {
                        put_uvarint(&mut buf, len as u64 + 1);
                    } else {
                        buf.put_i32(len as i32);
                    }
                    if len > 0 {
                        total += buf.len() + len;
                        pieces.push(Piece::Bytes(buf.split().freeze()));
                        pieces.push(Piece::Records(records));
                    }
                }
            }
            match p.diverging {
                Some((epoch, end_offset)) if flexible => {
                    buf.put_u8(1); // one tagged field
                    buf.put_u8(0); // tag 0: DivergingEpoch
                    buf.put_u8(13); // its size: epoch, end offset, its own tagged fields
                    buf.put_i32(epoch);
                    buf.put_i64(end_offset);
                    buf.put_u8(0);
                }
                _ if flexible => buf.put_u8(0), // partition tagged fields
                _ => {}
            }
        }
        if flexible {
            buf.put_u8(0); // topic tagged fields
        }
    }
    if flexible {
        buf.put_u8(0); // response tagged fields
    }
    total += buf.len();
    pieces.push(Piece::Bytes(buf.freeze()));
    let size = (total - 4) as i32;
    let Some(Piece::Bytes(first)) = pieces.first_mut() else {
        unreachable!("the first piece is always the header bytes")
    };
    let mut patched = BytesMut::from(&first[..]);
    patched[..4].copy_from_slice(&size.to_be_bytes());
    *first = patched.freeze();
    pieces
}

/// An array length: compact (length + 1 as an unsigned varint) or a 4-byte count.
fn put_len(buf: &mut BytesMut, flexible: bool, len: usize) {
    if flexible {
        put_uvarint(buf, len as u64 + 1);
    } else {
        buf.put_i32(len as i32);
    }
}

fn put_uvarint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{
        EpochEndOffset, FetchResponse, FetchableTopicResponse, PartitionData,
    };
    use kafka_protocol::messages::{ResponseHeader, TopicName};
    use kafka_protocol::protocol::{Encodable, StrBytes};
    use uuid::Uuid;

    fn reference(version: i16, records: &[Option<Bytes>]) -> Vec<u8> {
        let partitions = records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                PartitionData::default()
                    .with_partition_index(i as i32)
                    .with_error_code(if r.is_none() { 3 } else { 0 })
                    .with_high_watermark(100 + i as i64)
                    .with_last_stable_offset(100 + i as i64)
                    .with_log_start_offset(7)
                    .with_aborted_transactions(Some(Vec::new()))
                    .with_records(r.clone())
                    .with_diverging_epoch(if i == 1 && version >= 12 {
                        EpochEndOffset::default().with_epoch(3).with_end_offset(42)
                    } else {
                        EpochEndOffset::default()
                    })
            })
            .collect();
        let response = FetchResponse::default().with_responses(vec![
            FetchableTopicResponse::default()
                .with_topic(if version < 13 {
                    TopicName(StrBytes::from_static_str("orders"))
                } else {
                    TopicName::default()
                })
                .with_topic_id(if version >= 13 {
                    Uuid::from_bytes([5; 16])
                } else {
                    Uuid::nil()
                })
                .with_partitions(partitions),
            FetchableTopicResponse::default()
                .with_topic(TopicName(StrBytes::from_static_str("")))
                .with_partitions(vec![]),
        ]);
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        let header_version = if version >= 12 { 1 } else { 0 };
        ResponseHeader::default()
            .with_correlation_id(42)
            .encode(&mut buf, header_version)
            .unwrap();
        response.encode(&mut buf, version).unwrap();
        let size = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&size.to_be_bytes());
        buf.to_vec()
    }

    fn ours(version: i16, records: &[Option<Bytes>]) -> Vec<u8> {
        let partitions = records
            .iter()
            .enumerate()
            .map(|(i, r)| PartitionOut {
                index: i as i32,
                error_code: if r.is_none() { 3 } else { 0 },
                high_watermark: 100 + i as i64,
                last_stable_offset: 100 + i as i64,
                log_start_offset: 7,
                records: r.clone().map(|b| (b.len(), b)),
                diverging: (i == 1).then_some((3, 42)),
            })
            .collect();
        let topics = vec![
            TopicOut {
                name: Bytes::from_static(b"orders"),
                topic_id: [5; 16],
                partitions,
            },
            TopicOut {
                name: Bytes::new(),
                topic_id: [0; 16],
                partitions: vec![],
            },
        ];
        let mut out = Vec::new();
        for piece in encode(42, version, topics) {
            match piece {
                Piece::Bytes(b) | Piece::Records(b) => out.extend_from_slice(&b),
            }
        }
        out
    }

    #[test]
    fn matches_kafka_protocol_for_every_served_version() {
        let big = Bytes::from(vec![7u8; 300]);
        let records = [
            Some(Bytes::from_static(b"batch-bytes")),
            None,
            Some(Bytes::new()),
            Some(big),
        ];
        for version in 4..=15 {
            assert_eq!(
                ours(version, &records),
                reference(version, &records),
                "v{version}"
            );
        }
    }
}
