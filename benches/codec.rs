//! Micro-benchmarks of the wire codec on the hot paths: decoding a Produce v9 request carrying
//! a 16×1 KiB batch (header + body, through `server::handlers::decode`), and encoding a Fetch
//! v12 response carrying 1 MiB of records.

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

criterion_group!(benches, bench_codec);
criterion_main!(benches);
