//! Hostile and malformed input: raw protocol bytes on the Kafka port, and bad
//! command-line flags. The broker must drop bad connections, stay up, and keep
//! serving well-behaved clients.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::{Broker, Lcg};
use rdkafka::producer::BaseRecord;

const IO_TIMEOUT: Duration = Duration::from_secs(10);
const API_VERSIONS: i16 = 18;
const UNSUPPORTED_VERSION: i16 = 35;

// ---------------------------------------------------------------------------
// Raw protocol helpers.

#[derive(Debug, PartialEq, Eq)]
enum ReadEnd {
    /// EOF or connection reset.
    Closed,
    TimedOut,
}

fn connect(addr: &str) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream.set_nodelay(true).expect("set TCP_NODELAY");
    stream
}

/// Size-prefixes `body`.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = i32::try_from(body.len()).unwrap().to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// Request header v1: api key, api version, correlation id, client id.
fn header_v1(api_key: i16, api_version: i16, correlation_id: i32, client_id: &str) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&api_key.to_be_bytes());
    out.extend_from_slice(&api_version.to_be_bytes());
    out.extend_from_slice(&correlation_id.to_be_bytes());
    out.extend_from_slice(&i16::try_from(client_id.len()).unwrap().to_be_bytes());
    out.extend_from_slice(client_id.as_bytes());
    out
}

/// Request header v2: v1 plus an empty tagged-field section.
fn header_v2(api_key: i16, api_version: i16, correlation_id: i32, client_id: &str) -> Vec<u8> {
    let mut out = header_v1(api_key, api_version, correlation_id, client_id);
    out.push(0);
    out
}

/// Reads at least one byte before `deadline`.
fn read_some(stream: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> Result<usize, ReadEnd> {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(ReadEnd::TimedOut);
        }
        let wait = (deadline - now).max(Duration::from_millis(1));
        stream
            .set_read_timeout(Some(wait))
            .expect("set read timeout");
        match stream.read(buf) {
            Ok(0) => return Err(ReadEnd::Closed),
            Ok(n) => return Ok(n),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => return Err(ReadEnd::Closed),
        }
    }
}

fn read_full(stream: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> Result<(), ReadEnd> {
    let mut filled = 0;
    while filled < buf.len() {
        filled += read_some(stream, &mut buf[filled..], deadline)?;
    }
    Ok(())
}

/// Reads one size-prefixed response frame (without its size).
fn read_frame(stream: &mut TcpStream, timeout: Duration) -> Result<Vec<u8>, ReadEnd> {
    let deadline = Instant::now() + timeout;
    let mut size = [0u8; 4];
    read_full(stream, &mut size, deadline)?;
    let size = i32::from_be_bytes(size);
    assert!(
        (4..=(64 << 20)).contains(&size),
        "response frame with implausible size {size}"
    );
    let mut body = vec![0u8; usize::try_from(size).unwrap()];
    read_full(stream, &mut body, deadline)?;
    Ok(body)
}

/// Asserts the broker closes the connection within IO_TIMEOUT (any bytes it
/// sends before closing are ignored).
fn expect_closed(stream: &mut TcpStream, what: &str) {
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut sink = [0u8; 4096];
    loop {
        match read_some(stream, &mut sink, deadline) {
            Ok(_) => {}
            Err(ReadEnd::Closed) => return,
            Err(ReadEnd::TimedOut) => {
                panic!("broker kept the connection open {IO_TIMEOUT:?} after {what}")
            }
        }
    }
}

fn be16(bytes: &[u8]) -> i16 {
    i16::from_be_bytes([bytes[0], bytes[1]])
}

fn be32(bytes: &[u8]) -> i32 {
    i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

struct ApiVersionsV0 {
    correlation_id: i32,
    error_code: i16,
    /// (api key, min version, max version)
    apis: Vec<(i16, i16, i16)>,
}

/// Parses a response with header v0 and an ApiVersions v0 body, which has
/// nothing after the api_keys array (no throttle time, no tagged fields).
fn parse_api_versions_v0(frame: &[u8]) -> ApiVersionsV0 {
    assert!(
        frame.len() >= 10,
        "ApiVersions response too short: {frame:?}"
    );
    let count = usize::try_from(be32(&frame[6..10]))
        .unwrap_or_else(|_| panic!("negative api_keys count in {:?}", &frame[..10]));
    assert_eq!(
        frame.len(),
        10 + count * 6,
        "ApiVersions v0 response must be exactly correlation id, error code and {count} \
         api_keys entries"
    );
    ApiVersionsV0 {
        correlation_id: be32(&frame[0..4]),
        error_code: be16(&frame[4..6]),
        apis: frame[10..]
            .chunks_exact(6)
            .map(|c| (be16(&c[0..2]), be16(&c[2..4]), be16(&c[4..6])))
            .collect(),
    }
}

/// Sends ApiVersions v0 on a fresh connection and checks the answer.
fn assert_api_versions_v0_works(addr: &str, correlation_id: i32) {
    let mut stream = connect(addr);
    stream
        .write_all(&frame(&header_v1(API_VERSIONS, 0, correlation_id, "raw")))
        .expect("send ApiVersions v0");
    let response = read_frame(&mut stream, IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("no ApiVersions v0 response: {e:?}"));
    let parsed = parse_api_versions_v0(&response);
    assert_eq!(parsed.correlation_id, correlation_id, "correlation id");
    assert_eq!(parsed.error_code, 0, "ApiVersions v0 error code");
}

// ---------------------------------------------------------------------------
// Garbage on the wire.

fn run_garbage_cases(addr: &str) {
    // (a) A frame size far above any sane limit.
    let mut stream = connect(addr);
    stream
        .write_all(&0x7fff_ffff_i32.to_be_bytes())
        .expect("send size 0x7fffffff");
    expect_closed(&mut stream, "a frame size of 0x7fffffff");
    assert_api_versions_v0_works(addr, 101);

    // (b) A negative frame size.
    let mut stream = connect(addr);
    stream
        .write_all(&(-5_i32).to_be_bytes())
        .expect("send size -5");
    expect_closed(&mut stream, "a frame size of -5");
    assert_api_versions_v0_works(addr, 102);

    // (c) 10 KiB of pseudo-random bytes, then EOF from our side. The broker
    // may close early (then our write fails), but must close in the end.
    let mut stream = connect(addr);
    let garbage = Lcg::new(0xC0FF_EE00).bytes(10 * 1024);
    let _ = stream.write_all(&garbage);
    let _ = stream.shutdown(Shutdown::Write);
    expect_closed(&mut stream, "10 KiB of garbage and EOF");
    assert_api_versions_v0_works(addr, 103);

    // (d) Well-formed sizes around malformed requests: the broker must answer
    // (with this correlation id) or close, never hang or crash.
    let mut api_versions_v3 = header_v2(API_VERSIONS, 3, 201, "raw");
    api_versions_v3.extend_from_slice(&[0xff, 0xff, 0xff]);
    let mut produce_v9 = header_v2(0, 9, 202, "raw");
    // transactional_id null, acks -1, timeout 1000 ms, one topic whose
    // compact name claims 99 bytes but only 3 follow.
    produce_v9.extend_from_slice(&[0x00, 0xff, 0xff, 0x00, 0x00, 0x03, 0xe8, 0x02, 0x64]);
    produce_v9.extend_from_slice(b"abc");
    let unknown_api = header_v1(9_999, 0, 203, "raw");
    let cases: [(&str, Vec<u8>, Option<i32>); 4] = [
        (
            "ApiVersions v3 with a garbage body",
            api_versions_v3,
            Some(201),
        ),
        ("a truncated Produce v9", produce_v9, Some(202)),
        ("an unknown api key", unknown_api, Some(203)),
        ("a 3-byte request header", vec![0x00, 0x12, 0x00], None),
    ];
    for (what, body, correlation_id) in cases {
        let mut stream = connect(addr);
        stream
            .write_all(&frame(&body))
            .unwrap_or_else(|e| panic!("send {what}: {e}"));
        match read_frame(&mut stream, IO_TIMEOUT) {
            Ok(response) => {
                if let Some(id) = correlation_id {
                    assert_eq!(
                        be32(&response),
                        id,
                        "correlation id of the answer to {what}"
                    );
                }
            }
            Err(ReadEnd::Closed) => {}
            Err(ReadEnd::TimedOut) => panic!(
                "broker neither answered nor closed the connection within {IO_TIMEOUT:?} \
                 after {what}"
            ),
        }
        assert_api_versions_v0_works(addr, 104);
    }
}

#[test]
fn malformed_input_is_rejected_without_disturbing_clients() {
    const TOPIC: &str = "steady";
    const COUNT: usize = 1_000;
    let mut broker = Broker::start(&[]);
    let bootstrap = broker.bootstrap();
    common::create_topic(&bootstrap, TOPIC, 1);

    let producer = common::producer(&bootstrap, &[]);
    let send = |i: usize| {
        let value = format!("steady-{i}");
        common::send(
            &producer,
            BaseRecord::with_opaque_to(TOPIC, i)
                .key("s")
                .payload(&value),
        );
    };
    for i in 0..COUNT / 2 {
        send(i);
    }
    common::flush(&producer, COUNT / 2, Duration::from_secs(60));

    // The second half is produced while the garbage goes in.
    let garbage = {
        let addr = bootstrap.clone();
        thread::spawn(move || run_garbage_cases(&addr))
    };
    for i in COUNT / 2..COUNT {
        send(i);
        producer.poll(Duration::from_millis(1));
    }
    if let Err(panic) = garbage.join() {
        std::panic::resume_unwind(panic);
    }
    common::flush(&producer, COUNT, Duration::from_secs(60));
    broker.assert_alive();

    let consumer = common::consumer(&bootstrap);
    let records = common::consume_all(&consumer, TOPIC, 1, COUNT, Duration::from_secs(60));
    assert_eq!(records.len(), COUNT, "records consumed");
    common::assert_offsets_contiguous(0, &records, 0);
    for (record, i) in records.iter().zip(0..) {
        assert_eq!(
            record.value_str(),
            format!("steady-{i}"),
            "value at offset {i}"
        );
    }
    broker.assert_alive();
}

// ---------------------------------------------------------------------------
// ApiVersions by hand.

#[test]
fn api_versions_v0_by_hand() {
    let broker = Broker::start(&[]);
    let mut stream = connect(&broker.bootstrap());
    stream
        .write_all(&frame(&header_v1(API_VERSIONS, 0, 7, "raw")))
        .expect("send ApiVersions v0");
    let response = read_frame(&mut stream, IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("no ApiVersions v0 response: {e:?}"));
    let parsed = parse_api_versions_v0(&response);
    assert_eq!(parsed.correlation_id, 7, "correlation id");
    assert_eq!(parsed.error_code, 0, "error code");

    let find = |key: i16| parsed.apis.iter().find(|api| api.0 == key).copied();
    let produce = find(0).expect("Produce (api key 0) is advertised");
    assert_eq!(
        produce.1, 0,
        "Produce must be advertised from version 0 (old clients need it): {produce:?}"
    );
    let api_versions = find(API_VERSIONS).expect("ApiVersions (api key 18) is advertised");
    assert_eq!(api_versions.1, 0, "ApiVersions min version");
    assert!(
        api_versions.2 >= 3,
        "ApiVersions max version should be at least 3: {api_versions:?}"
    );
    for (key, min, max) in &parsed.apis {
        assert!(*min >= 0, "api key {key}: negative min version {min}");
        assert!(
            min <= max,
            "api key {key}: min version {min} above max {max}"
        );
        let copies = parsed.apis.iter().filter(|api| api.0 == *key).count();
        assert_eq!(copies, 1, "api key {key} listed {copies} times");
    }

    // The connection stays usable for the next request.
    stream
        .write_all(&frame(&header_v1(API_VERSIONS, 0, 8, "raw")))
        .expect("send a second ApiVersions v0");
    let second = read_frame(&mut stream, IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("no answer to the second request: {e:?}"));
    assert_eq!(parse_api_versions_v0(&second).correlation_id, 8);
}

#[test]
fn api_versions_with_unsupported_version_answers_v0_with_error_35() {
    let broker = Broker::start(&[]);
    let mut stream = connect(&broker.bootstrap());
    // Version 99 as a new client would send it: header v2, then a v3-shaped
    // body (client software name and version as compact strings).
    let mut request = header_v2(API_VERSIONS, 99, 13, "raw");
    request.extend_from_slice(&[4, b'r', b'a', b'w', 4, b'0', b'.', b'1', 0]);
    stream
        .write_all(&frame(&request))
        .expect("send ApiVersions v99");
    let response = read_frame(&mut stream, IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("no answer to ApiVersions v99: {e:?}"));
    let parsed = parse_api_versions_v0(&response);
    assert_eq!(parsed.correlation_id, 13, "correlation id");
    assert_eq!(
        parsed.error_code, UNSUPPORTED_VERSION,
        "error code for an unsupported ApiVersions version"
    );
    assert!(
        parsed.apis.iter().any(|api| api.0 == API_VERSIONS),
        "the error response still lists the supported versions: {:?}",
        parsed.apis
    );
}

// ---------------------------------------------------------------------------
// Command line.

fn serve_with(extra: &[&str]) -> common::CmdOutput {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let listen = format!("127.0.0.1:{}", common::free_port());
    common::run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_tusk"))
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--listen")
            .arg(listen)
            .args(["--metrics-listen", "off"])
            .args(extra),
        None,
        Duration::from_secs(30),
    )
}

#[test]
fn unknown_flag_is_rejected_by_name() {
    let out = serve_with(&["--no-such-flag"]);
    assert!(
        !out.status.success(),
        "tusk serve --no-such-flag exited with {}",
        out.status
    );
    assert!(
        out.stderr.contains("no-such-flag"),
        "the error should name the flag; stderr:\n{}",
        out.stderr
    );
}

#[test]
fn bad_flag_value_is_rejected_by_name() {
    let out = serve_with(&["--flush", "sometimes"]);
    assert!(
        !out.status.success(),
        "tusk serve --flush sometimes exited with {}",
        out.status
    );
    assert!(
        out.stderr.contains("flush"),
        "the error should name the flag; stderr:\n{}",
        out.stderr
    );
}

/// KAFKA-14063's shape: tiny requests whose array counts claim billions of elements. The broker
/// must refuse them without committing the claimed memory, and keep serving.
#[test]
fn huge_array_counts_are_refused_without_allocating() {
    let mut broker = Broker::start(&[]);
    let addr = broker.bootstrap();
    // Metadata v1 (non-flexible): topics array count i32::MAX, no elements.
    let mut metadata_v1 = header_v1(3, 1, 301, "raw");
    metadata_v1.extend_from_slice(&i32::MAX.to_be_bytes());
    // Produce v9 (flexible): null transactional id, acks -1, timeout 1000, then a compact array
    // count of u32::MAX - 1 topics (varint 0xffffffff).
    let mut produce_v9 = header_v2(0, 9, 302, "raw");
    produce_v9.extend_from_slice(&[0x00, 0xff, 0xff, 0x00, 0x00, 0x03, 0xe8]);
    produce_v9.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    // CreateTopics v2 (non-flexible): topics count i32::MAX.
    let mut create_v2 = header_v1(19, 2, 303, "raw");
    create_v2.extend_from_slice(&i32::MAX.to_be_bytes());
    for (what, body) in [
        ("Metadata v1 claiming 2^31 topics", metadata_v1),
        ("Produce v9 claiming 2^32 topics", produce_v9),
        ("CreateTopics v2 claiming 2^31 topics", create_v2),
    ] {
        for _ in 0..20 {
            let mut stream = connect(&addr);
            stream
                .write_all(&frame(&body))
                .unwrap_or_else(|e| panic!("send {what}: {e}"));
            match read_frame(&mut stream, IO_TIMEOUT) {
                Ok(_) | Err(ReadEnd::Closed) => {}
                Err(ReadEnd::TimedOut) => panic!("no answer and no close after {what}"),
            }
        }
        broker.assert_alive();
        assert_api_versions_v0_works(&addr, 304);
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", broker.pid())).unwrap();
    let rss_kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/pid/status");
    assert!(
        rss_kib < 512 * 1024,
        "broker RSS {rss_kib} KiB after hostile counts"
    );
}

fn serve_raw(args: &[&str]) -> common::CmdOutput {
    common::run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_tusk"))
            .arg("serve")
            .args(args),
        None,
        Duration::from_secs(30),
    )
}

/// An unusable data dir, a data dir another broker holds, a port another broker holds, and an
/// unknown config-file key each refuse the start with a message naming the setting.
#[test]
fn unusable_start_conditions_are_refused_by_name() {
    let port = common::free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let out = serve_raw(&["--data-dir", "/proc/no-such-dir", "--listen", &listen]);
    assert!(
        !out.status.success() && out.stderr.contains("data_dir"),
        "{}",
        out.stderr
    );

    let broker = Broker::start(&[]);
    let dir = broker.data_dir();
    let out = serve_raw(&["--data-dir", dir.to_str().unwrap(), "--listen", &listen]);
    assert!(
        !out.status.success() && out.stderr.contains("another broker"),
        "second broker on the same data dir: {}",
        out.stderr
    );
    let other_dir = tempfile::tempdir().unwrap();
    let out = serve_raw(&[
        "--data-dir",
        other_dir.path().to_str().unwrap(),
        "--listen",
        &broker.bootstrap(),
    ]);
    assert!(
        !out.status.success() && out.stderr.contains("listen"),
        "second broker on the same port: {}",
        out.stderr
    );

    let config = other_dir.path().join("tusk.toml");
    std::fs::write(&config, "shards = 1\nflsh = \"always\"\n").unwrap();
    let out = serve_raw(&["--config", config.to_str().unwrap(), "--listen", &listen]);
    assert!(
        !out.status.success() && out.stderr.contains("config") && out.stderr.contains("flsh"),
        "unknown config key: {}",
        out.stderr
    );

    // A bad or inconsistent quorum, or a session timeout out of range, fails at start naming
    // the setting.
    let dir = other_dir.path().to_str().unwrap();
    let voters = "1@127.0.0.1:19093,2@127.0.0.1:19193,3@127.0.0.1:19293";
    for (args, setting) in [
        (
            vec![
                "--controller-quorum-voters",
                "1@127.0.0.1:19093,1@127.0.0.1:19193",
                "--node-id",
                "1",
            ],
            "controller_quorum_voters",
        ),
        (
            vec![
                "--controller-quorum-voters",
                "one@127.0.0.1:19093",
                "--node-id",
                "1",
            ],
            "controller_quorum_voters",
        ),
        (vec!["--controller-quorum-voters", voters], "node_id"),
        (
            vec!["--controller-quorum-voters", voters, "--node-id", "7"],
            "node_id",
        ),
        (
            vec!["--controller-listen", "127.0.0.1:19093"],
            "controller_listen",
        ),
        (
            vec![
                "--controller-quorum-voters",
                voters,
                "--node-id",
                "1",
                "--broker-session-timeout-ms",
                "10",
            ],
            "broker_session_timeout_ms",
        ),
        (
            vec!["--default-replication-factor", "3"],
            "default_replication_factor",
        ),
        (vec!["--min-insync-replicas", "0"], "min_insync_replicas"),
        (
            vec!["--replica-lag-time-max-ms", "10"],
            "replica_lag_time_max_ms",
        ),
        (
            vec!["--replication-throttle-bytes-per-sec", "5"],
            "replication_throttle_bytes_per_sec",
        ),
    ] {
        let mut all = vec!["--data-dir", dir, "--listen", &listen];
        all.extend(args.iter().copied());
        let out = serve_raw(&all);
        assert!(
            !out.status.success() && out.stderr.contains(setting),
            "{args:?} should fail naming {setting}: {}",
            out.stderr
        );
    }
}

/// Flexible request versions carry group ids with a varint length: a 70,000-byte group id in an
/// OffsetCommit v8 must be answered (INVALID_GROUP_ID) without stopping the broker.
#[test]
fn oversized_group_id_is_refused() {
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::{
        ApiKey, GroupId, OffsetCommitRequest, RequestHeader, TopicName,
    };
    use kafka_protocol::protocol::{Encodable, StrBytes};

    let mut broker = Broker::start(&[]);
    let addr = broker.bootstrap();
    common::create_topic(&addr, "long-group-topic", 1);
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_string("g".repeat(70_000))))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("long-group-topic")))
            .with_partitions(vec![
                OffsetCommitRequestPartition::default().with_committed_offset(1)
            ])]);
    let mut body = bytes::BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::OffsetCommit as i16)
        .with_request_api_version(8)
        .with_correlation_id(401)
        .encode(&mut body, ApiKey::OffsetCommit.request_header_version(8))
        .unwrap();
    request.encode(&mut body, 8).unwrap();
    let mut stream = connect(&addr);
    stream.write_all(&frame(&body)).unwrap();
    let response = read_frame(&mut stream, IO_TIMEOUT).expect("an answer, not a close");
    assert_eq!(be32(&response), 401, "correlation id");
    // Header v1: correlation id + empty tagged fields; body: throttle, topics[1].partitions[1].
    // The partition's error code is the last two bytes before the trailing tagged fields.
    let code = i16::from_be_bytes([response[response.len() - 5], response[response.len() - 4]]);
    assert_eq!(code, 24, "INVALID_GROUP_ID in {response:02x?}");
    broker.assert_alive();
    assert_api_versions_v0_works(&addr, 402);
}
