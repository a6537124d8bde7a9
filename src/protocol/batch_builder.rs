//! Builds v2 record batches: records are appended as they come (varint fields straight into
//! one buffer), and `finish` fills in the header and CRC-32C and compresses the records section
//! if asked. The one batch encoder of the project: the bench and CLI producers, the offsets log
//! (`record_batch::encode_records`), tests and benches all build batches with it. Runs on:
//! whichever thread produces. Invariants: the result is a valid magic-2 batch with base offset
//! 0 and no producer id (the broker assigns offsets).

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::compression::Compressor;
use kafka_protocol::records::Compression;

use super::record_batch::{put_varint, BATCH_HEADER_BYTES};

/// Byte offsets inside the v2 header (see Kafka's DefaultRecordBatch).
const LENGTH_POS: usize = 8;
const CRC_POS: usize = 17;
const ATTRIBUTES_POS: usize = 21;

/// The compression codecs a producer can choose.
pub fn parse_compression(name: &str) -> Option<Compression> {
    Some(match name {
        "none" => Compression::None,
        "gzip" => Compression::Gzip,
        "snappy" => Compression::Snappy,
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        _ => return None,
    })
}

/// One batch being filled.
pub struct BatchBuilder {
    records: Vec<u8>,
    record: Vec<u8>,
    count: i32,
    base_timestamp_ms: i64,
    max_timestamp_ms: i64,
    compression: Compression,
}

impl BatchBuilder {
    pub fn new(compression: Compression, capacity_bytes: usize) -> BatchBuilder {
        BatchBuilder {
            records: Vec::with_capacity(capacity_bytes),
            record: Vec::with_capacity(256),
            count: 0,
            base_timestamp_ms: 0,
            max_timestamp_ms: 0,
            compression,
        }
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes of record data so far (uncompressed), without the header.
    pub fn size_bytes(&self) -> usize {
        self.records.len()
    }

    /// Appends one record stamped `timestamp_ms`; a `None` value is a tombstone.
    pub fn push(&mut self, timestamp_ms: i64, key: Option<&[u8]>, value: Option<&[u8]>) {
        if self.count == 0 {
            self.base_timestamp_ms = timestamp_ms;
        }
        self.max_timestamp_ms = self.max_timestamp_ms.max(timestamp_ms);
        let r = &mut self.record;
        r.clear();
        r.push(0); // attributes
        put_varint(r, timestamp_ms - self.base_timestamp_ms);
        put_varint(r, self.count as i64);
        for field in [key, value] {
            match field {
                Some(bytes) => {
                    put_varint(r, bytes.len() as i64);
                    r.extend_from_slice(bytes);
                }
                None => put_varint(r, -1),
            }
        }
        put_varint(r, 0); // headers
        put_varint(&mut self.records, r.len() as i64);
        self.records.extend_from_slice(r);
        self.count += 1;
    }

    /// The finished batch; the builder is emptied for reuse.
    pub fn finish(&mut self) -> Bytes {
        assert!(self.count > 0, "finish: a batch holds at least one record");
        let mut b = BytesMut::with_capacity(BATCH_HEADER_BYTES + self.records.len());
        b.put_i64(0); // base offset
        b.put_i32(0); // length, below
        b.put_i32(-1); // partition leader epoch
        b.put_i8(2); // magic
        b.put_u32(0); // crc, below
        b.put_i16(self.compression as i16);
        b.put_i32(self.count - 1);
        b.put_i64(self.base_timestamp_ms);
        b.put_i64(self.max_timestamp_ms);
        b.put_i64(-1); // producer id
        b.put_i16(-1); // producer epoch
        b.put_i32(-1); // base sequence
        b.put_i32(self.count);
        let records = &self.records;
        let fill = |buf: &mut BytesMut| -> anyhow::Result<()> {
            buf.put_slice(records);
            Ok(())
        };
        let compressed = match self.compression {
            Compression::None => fill(&mut b),
            Compression::Gzip => kafka_protocol::compression::Gzip::compress(&mut b, fill),
            Compression::Snappy => kafka_protocol::compression::Snappy::compress(&mut b, fill),
            Compression::Lz4 => kafka_protocol::compression::Lz4::compress(&mut b, fill),
            Compression::Zstd => kafka_protocol::compression::Zstd::compress(&mut b, fill),
        };
        compressed.expect("compressing into memory cannot fail");
        let length = (b.len() - 12) as i32;
        b[LENGTH_POS..LENGTH_POS + 4].copy_from_slice(&length.to_be_bytes());
        let crc = crc32c::crc32c(&b[ATTRIBUTES_POS..]);
        b[CRC_POS..CRC_POS + 4].copy_from_slice(&crc.to_be_bytes());
        self.records.clear();
        self.count = 0;
        self.max_timestamp_ms = 0;
        b.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::record_batch::{for_each_record, validate_produced};

    #[test]
    fn built_batches_validate_and_decode() {
        for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
            let mut b = BatchBuilder::new(parse_compression(codec).unwrap(), 1024);
            b.push(1_000, Some(b"k1"), Some(b"v1"));
            b.push(1_005, None, Some(b"value-two"));
            let batch = b.finish();
            let header = validate_produced(&batch, 1 << 20).expect(codec);
            assert_eq!(header.last_offset_delta, 1, "{codec}");
            assert_eq!(header.max_timestamp_ms, 1_005, "{codec}");
            let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut batch.clone())
                .expect(codec);
            let values: Vec<_> = set.records.iter().map(|r| r.value.clone()).collect();
            assert_eq!(values[1].as_deref(), Some(&b"value-two"[..]), "{codec}");
            assert_eq!(set.records[0].timestamp, 1_000, "{codec}");
            if codec == "none" {
                let mut seen = Vec::new();
                assert!(for_each_record(&batch, &header, |o, k, _| seen
                    .push((o.0, k.map(|k| k.to_vec())))));
                assert_eq!(seen, vec![(0, Some(b"k1".to_vec())), (1, None)]);
            }
            assert!(b.is_empty(), "the builder is reusable");
        }
    }
}
