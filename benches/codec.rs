//! Micro-benchmarks of the wire codec on the hot paths: decoding a Produce v9 request carrying
//! a 16×1 KiB batch (header + body, through `server::handlers::decode`), encoding a Fetch v12
//! response carrying 1 MiB of records, CRC-32C over 1 KiB and 1 MiB, and the Fetch encoder
//! that leaves record sets out of the frame (the splice path).

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kafka_protocol::messages::fetch_response::{
    FetchResponse, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, RequestHeader, TopicName};
use kafka_protocol::protocol::{Encodable, StrBytes};
use tusk::protocol::record_batch;
use tusk::server::handlers::{decode, Decoded};

fn produce_frame() -> Bytes {
    let batch = record_batch::encode_uncompressed(16, None, &[b'x'; 1024], 0, 0);
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(1000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("bench")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(Bytes::from(batch)))])]);
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(9)
        .with_correlation_id(1)
        .encode(&mut buf, ApiKey::Produce.request_header_version(9))
        .unwrap();
    request.encode(&mut buf, 9).unwrap();
    buf.freeze()
}

fn bench_codec(c: &mut Criterion) {
    let frame = produce_frame();
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Bytes(frame.len() as u64));
    group.bench_function("decode_produce_v9_16x1KiB", |b| {
        b.iter(|| match decode(std::hint::black_box(frame.clone())) {
            Decoded::Request { .. } => {}
            _ => panic!("the frame decodes"),
        })
    });
    let records = Bytes::from(vec![7u8; 1 << 20]);
    let response = FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
        .with_topic(TopicName(StrBytes::from_static_str("bench")))
        .with_partitions(vec![PartitionData::default().with_records(Some(records))])]);
    group.throughput(Throughput::Bytes(1 << 20));
    group.bench_function("encode_fetch_v12_1MiB", |b| {
        b.iter(|| {
            let mut buf = BytesMut::with_capacity((1 << 20) + 256);
            response.encode(&mut buf, 12).unwrap();
            buf
        })
    });
    group.finish();
}

/// CRC-32C (hardware, three-way parallel) over a 1 KiB record batch and a 1 MiB one: the check
/// every produced batch pays, and recovery's per-batch check.
fn bench_crc32c(c: &mut Criterion) {
    let mut group = c.benchmark_group("crc32c");
    for size in [1024usize, 1 << 20] {
        let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("{size}B"), |b| {
            b.iter(|| crc32c::crc32c(std::hint::black_box(&data)))
        });
    }
    group.finish();
}

/// Fetch responses as pieces (`protocol::fetch_response`): what the splice path encodes
/// instead of copying record bytes into the frame.
fn bench_fetch_pieces(c: &mut Criterion) {
    use tusk::protocol::fetch_response::{encode, PartitionOut, TopicOut};
    let mut group = c.benchmark_group("fetch_pieces");
    group.bench_function("encode_v12_4_partitions", |b| {
        b.iter(|| {
            let partitions = (0..4)
                .map(|i| PartitionOut {
                    index: i,
                    error_code: 0,
                    high_watermark: 1000,
                    last_stable_offset: 1000,
                    log_start_offset: 0,
                    records: Some((1 << 20, ())),
                    diverging: None,
                })
                .collect();
            let topics = vec![TopicOut {
                name: bytes::Bytes::from_static(b"bench"),
                topic_id: [0; 16],
                partitions,
            }];
            encode(42, 12, topics)
        })
    });
    group.finish();
}

criterion_group!(benches, bench_codec, bench_crc32c, bench_fetch_pieces);
criterion_main!(benches);
