//! F1 in CI size: seeded mutations of valid inputs fed to every decoder the broker runs on
//! bytes it did not write itself: request frames (header and body through the codec, then the
//! record-batch parser on produce payloads), record batches, segment files (recovery scan),
//! persisted indexes and metadata-log frames. Nothing may panic and nothing may allocate from an
//! unchecked count. The seed is printed on failure; set TUSK_FUZZ_SEED to replay one.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, CreateTopicsRequest, FetchRequest, GroupId, JoinGroupRequest,
    ListOffsetsRequest, MetadataRequest, OffsetCommitRequest, ProduceRequest, RequestHeader,
    RequestKind, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use tusk::cluster::records::decode_frames;
use tusk::protocol::record_batch;
use tusk::protocol::types::{LeaderEpoch, Offset};
use tusk::server::handlers::{decode, Decoded};
use tusk::storage::index::SegmentIndex;
use tusk::storage::recovery::scan_segment;

const ROUNDS: usize = 25_000;

/// The broker's allocator (see `tusk::alloc`). Without it, a mutated array count makes
/// the codec ask for tens of GB and the process aborts: this test found exactly that.
#[global_allocator]
static ALLOCATOR: tusk::alloc::ReservingAllocator = tusk::alloc::ReservingAllocator;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn seed() -> u64 {
    std::env::var("TUSK_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x05ee_d0f7_u64)
}

/// One mutation: bit flips, byte sets, a forged count, truncation or insertion.
fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(3) {
        if out.is_empty() {
            out.push(rng.next() as u8);
            continue;
        }
        let at = rng.below(out.len());
        match rng.below(6) {
            0 => out[at] ^= 1 << rng.below(8),
            1 => out[at] = rng.next() as u8,
            2 => {
                let forged: [u8; 4] = match rng.below(3) {
                    0 => i32::MAX.to_be_bytes(),
                    1 => (-1i32).to_be_bytes(),
                    _ => [0xff, 0xff, 0xff, 0x0f],
                };
                for (i, b) in forged.iter().enumerate() {
                    if at + i < out.len() {
                        out[at + i] = *b;
                    }
                }
            }
            3 => out.truncate(at),
            4 => {
                let extra: Vec<u8> = (0..1 + rng.below(16)).map(|_| rng.next() as u8).collect();
                out.splice(at..at, extra);
            }
            _ => out[at] = 0,
        }
    }
    out
}

fn batch(count: i32) -> Vec<u8> {
    record_batch::encode_uncompressed(count, Some(b"k"), b"val", 1000, 10)
}

fn frame<R: Encodable>(key: ApiKey, version: i16, request: &R) -> Vec<u8> {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("fuzz")))
        .encode(&mut buf, key.request_header_version(version))
        .expect("encode header");
    request.encode(&mut buf, version).expect("encode body");
    buf.to_vec()
}

fn seed_frames() -> Vec<Vec<u8>> {
    let produce = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(1000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("t")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(Bytes::from(batch(3))))])]);
    let metadata = MetadataRequest::default().with_topics(Some(vec![
        kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
            .with_name(Some(TopicName(StrBytes::from_static_str("t")))),
    ]));
    let fetch = FetchRequest::default()
        .with_max_wait_ms(10)
        .with_topics(vec![
            kafka_protocol::messages::fetch_request::FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(vec![
                    kafka_protocol::messages::fetch_request::FetchPartition::default()
                        .with_partition_max_bytes(1 << 20),
                ]),
        ]);
    let create = CreateTopicsRequest::default().with_topics(vec![
        kafka_protocol::messages::create_topics_request::CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("t")))
            .with_num_partitions(3)
            .with_replication_factor(1),
    ]);
    let list = ListOffsetsRequest::default().with_topics(vec![
        kafka_protocol::messages::list_offsets_request::ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("t")))
            .with_partitions(vec![
                kafka_protocol::messages::list_offsets_request::ListOffsetsPartition::default()
                    .with_timestamp(-1),
            ]),
    ]);
    let join = JoinGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("g")))
        .with_session_timeout_ms(6000)
        .with_rebalance_timeout_ms(6000)
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(StrBytes::from_static_str("range"))
            .with_metadata(Bytes::from_static(
                b"\x00\x03\x00\x00\x00\x01\x00\x01t",
            ))]);
    let commit = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("g")))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("t")))
            .with_partitions(vec![
                OffsetCommitRequestPartition::default().with_committed_offset(5)
            ])]);
    vec![
        frame(ApiKey::JoinGroup, 7, &join),
        frame(ApiKey::JoinGroup, 0, &join),
        frame(ApiKey::OffsetCommit, 8, &commit),
        frame(ApiKey::OffsetCommit, 2, &commit),
        frame(ApiKey::Produce, 9, &produce),
        frame(ApiKey::Produce, 3, &produce),
        frame(ApiKey::Metadata, 12, &metadata),
        frame(ApiKey::Metadata, 1, &metadata),
        frame(ApiKey::Fetch, 12, &fetch),
        frame(ApiKey::Fetch, 4, &fetch),
        frame(ApiKey::CreateTopics, 7, &create),
        frame(ApiKey::CreateTopics, 2, &create),
        frame(ApiKey::ListOffsets, 7, &list),
        frame(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()),
    ]
}

#[test]
fn mutated_request_frames_never_escape_the_decoder() {
    let seed = seed();
    let mut rng = Rng(seed);
    let mut decoded = 0usize;
    for original in seed_frames() {
        assert!(
            matches!(
                decode(Bytes::from(original.clone())),
                Decoded::Request { .. }
            ),
            "the unmutated seed frame decodes"
        );
        for round in 0..ROUNDS {
            let input = mutate(&mut rng, &original);
            let result = std::panic::catch_unwind(|| {
                let Decoded::Request { request, .. } = decode(Bytes::from(input.clone())) else {
                    return false;
                };
                if let RequestKind::Produce(p) = *request {
                    for t in &p.topic_data {
                        for d in &t.partition_data {
                            if let Some(r) = &d.records {
                                let _ = record_batch::split_produced(r, 1 << 20);
                            }
                        }
                    }
                    return true;
                }
                false
            });
            match result {
                Ok(ok) => decoded += ok as usize,
                Err(_) => {
                    panic!("seed {seed}, round {round}: a mutated frame panicked: {input:02x?}")
                }
            }
        }
    }
    eprintln!("{decoded} mutated produce frames still decoded (seed {seed})");
}

#[test]
fn mutated_batches_indexes_and_metadata_never_panic() {
    let seed = seed() ^ 0xbadc0ffee;
    let mut rng = Rng(seed);
    let valid = batch(5);
    for round in 0..ROUNDS * 5 {
        let input = mutate(&mut rng, &valid);
        let r = std::panic::catch_unwind(|| {
            let _ = record_batch::split_produced(&input, 1 << 20);
            if let Ok(h) = record_batch::parse_header(&input, 1 << 20, false) {
                let _ = record_batch::first_record_at_or_after(&input, &h, 1020);
            }
        });
        assert!(r.is_ok(), "seed {seed}, round {round}: batch {input:02x?}");
    }
    let mut index = SegmentIndex::new();
    for i in 0..50u32 {
        index.on_batch(i * 5, i * 300, 300, 1000 + i as i64, 512);
    }
    let encoded = index.encode();
    for round in 0..ROUNDS {
        let input = mutate(&mut rng, &encoded);
        let r = std::panic::catch_unwind(|| SegmentIndex::decode(&input));
        assert!(r.is_ok(), "seed {seed}, round {round}: index {input:02x?}");
    }
    let frames = metadata_log_bytes();
    for round in 0..ROUNDS {
        let input = mutate(&mut rng, &frames);
        let r = std::panic::catch_unwind(|| decode_frames(&input));
        assert!(
            r.is_ok(),
            "seed {seed}, round {round}: metadata {input:02x?}"
        );
    }
}

/// The bytes of a fresh metadata log (its first record), written on the in-memory disk.
fn metadata_log_bytes() -> Vec<u8> {
    use tusk::runtime::fs::Fs;
    let fs = tusk::testing::FaultFs::new();
    let env = tusk::testing::env(&fs, &tusk::testing::ManualClock::new(0), 7);
    let dir = std::path::Path::new("/data");
    futures_lite::future::block_on(async {
        fs.create_dir_all(dir).await.unwrap();
        tusk::cluster::LocalMetadataLog::open(&env, dir)
            .await
            .unwrap();
    });
    fs.contents(&dir.join("__cluster_metadata.log")).unwrap()
}

#[test]
fn mutated_segments_recover_a_valid_prefix() {
    let seed = seed() ^ 0x5e9;
    let mut rng = Rng(seed);
    let mut segment = Vec::new();
    for i in 0..20i64 {
        let mut b = batch(5);
        record_batch::assign_offset(&mut b, Offset(i * 5), LeaderEpoch(0));
        segment.extend(b);
    }
    for round in 0..ROUNDS / 4 {
        let input = mutate(&mut rng, &segment);
        let fs = tusk::testing::FaultFs::new();
        let path = std::path::Path::new("/segment.log");
        fs.put(path, &input);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            use tusk::runtime::fs::{Fs, OpenOptions};
            futures_lite::future::block_on(async {
                let file = fs.open(path, OpenOptions::read_only()).await.unwrap();
                scan_segment(
                    file.as_ref(),
                    input.len() as u64,
                    Offset(0),
                    1 << 20,
                    512,
                    LeaderEpoch(0),
                )
                .await
            })
        }));
        let scan = match r {
            Ok(Ok(scan)) => scan,
            Ok(Err(e)) => panic!("seed {seed}, round {round}: scan error {e}"),
            Err(_) => panic!("seed {seed}, round {round}: scan panicked"),
        };
        assert!(scan.valid_bytes as usize <= input.len());
        // Whatever survived is a prefix of whole, valid, contiguous batches.
        let mut pos = 0usize;
        let mut next = 0i64;
        while pos < scan.valid_bytes as usize {
            let h = record_batch::parse_header(&input[pos..], 1 << 20, true).unwrap_or_else(|e| {
                panic!("seed {seed}, round {round}: kept an invalid batch at {pos}: {e:?}")
            });
            assert_eq!(
                h.base_offset.0, next,
                "seed {seed}, round {round}: offsets contiguous"
            );
            next = h.last_offset().0 + 1;
            pos += h.total_bytes;
        }
        assert_eq!(pos, scan.valid_bytes as usize);
        assert_eq!(scan.next_offset.0, next);
    }
}
