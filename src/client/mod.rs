//! A small blocking Kafka client over std TCP, for `tusk bench` (and the operator subcommands to
//! come). It speaks to one broker: the bootstrap address, which on a one-node cluster leads every
//! partition. Runs on: the caller's thread, never on a shard. Invariants: a response frame's size
//! is checked against `RESPONSE_BYTES_MAX` before its body is allocated; responses are matched to
//! requests by correlation id, in order (Kafka answers a connection's requests in order).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse, RequestHeader,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

use crate::protocol::ErrorCode;

/// The largest response frame the client accepts (a fetch of many partitions fits).
pub const RESPONSE_BYTES_MAX: usize = 512 * 1024 * 1024;

/// What went wrong talking to a broker.
#[derive(Debug)]
pub enum ClientError {
    Io(std::io::Error),
    /// The broker's bytes did not decode (or a frame was out of bounds).
    Protocol(String),
    /// The broker answered with a Kafka error code.
    Kafka {
        what: String,
        code: i16,
    },
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Io(e) => write!(f, "{e}"),
            ClientError::Protocol(why) => write!(f, "protocol error: {why}"),
            ClientError::Kafka { what, code } => match ErrorCode::from_code(*code) {
                Some(e) => write!(f, "{what}: {} ({code})", e.name()),
                None => write!(f, "{what}: Kafka error code {code}"),
            },
        }
    }
}

impl std::error::Error for ClientError {}

impl From<std::io::Error> for ClientError {
    fn from(e: std::io::Error) -> Self {
        ClientError::Io(e)
    }
}

fn protocol(e: impl std::fmt::Display) -> ClientError {
    ClientError::Protocol(e.to_string())
}

/// Milliseconds since the epoch (record timestamps the client sets).
pub fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Versions this client speaks, each capped by what the broker advertises.
#[derive(Clone, Copy, Debug)]
pub struct Versions {
    pub produce: i16,
    pub fetch: i16,
    pub metadata: i16,
    pub list_offsets: i16,
    pub create_topics: i16,
}

/// One connection to a broker.
pub struct Connection {
    stream: TcpStream,
    next_correlation_id: i32,
    client_id: StrBytes,
    pub versions: Versions,
    /// (api key, min, max) as the broker advertised them.
    ranges: Vec<(i16, i16, i16)>,
}

impl Connection {
    /// Connects and negotiates versions with ApiVersions v0 (every broker answers it).
    pub fn connect(address: &str, client_id: &str) -> Result<Connection, ClientError> {
        let addr = address
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| protocol(format!("`{address}` resolves to no address")))?;
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| {
            ClientError::Io(std::io::Error::new(
                e.kind(),
                format!("cannot reach {address}: {e}"),
            ))
        })?;
        stream.set_nodelay(true)?;
        let mut c = Connection {
            stream,
            next_correlation_id: 1,
            client_id: StrBytes::from_string(client_id.to_string()),
            versions: Versions {
                produce: 3,
                fetch: 4,
                metadata: 1,
                list_offsets: 1,
                create_topics: 2,
            },
            ranges: Vec::new(),
        };
        let r: ApiVersionsResponse = c.call(ApiVersionsRequest::default(), 0)?;
        if r.error_code != 0 {
            return Err(ClientError::Kafka {
                what: "ApiVersions".into(),
                code: r.error_code,
            });
        }
        let pick = |key: ApiKey, ours: i16| -> i16 {
            r.api_keys
                .iter()
                .find(|k| k.api_key == key as i16)
                .map(|k| ours.min(k.max_version))
                .unwrap_or(-1)
        };
        c.ranges = r
            .api_keys
            .iter()
            .map(|k| (k.api_key, k.min_version, k.max_version))
            .collect();
        c.versions = Versions {
            produce: pick(ApiKey::Produce, 9),
            fetch: pick(ApiKey::Fetch, 12),
            metadata: pick(ApiKey::Metadata, 12),
            list_offsets: pick(ApiKey::ListOffsets, 7),
            create_topics: pick(ApiKey::CreateTopics, 7),
        };
        Ok(c)
    }

    /// The version to use for `key`: the highest both sides speak, at most `ours`.
    pub fn version(&self, key: ApiKey, ours: i16) -> Result<i16, ClientError> {
        self.ranges
            .iter()
            .find(|(k, min, _)| *k == key as i16 && *min <= ours)
            .map(|(_, _, max)| ours.min(*max))
            .ok_or_else(|| protocol(format!("the broker does not serve {key:?}")))
    }

    /// A second handle on the same socket, for a thread that only reads responses.
    pub fn try_clone_stream(&self) -> Result<TcpStream, ClientError> {
        Ok(self.stream.try_clone()?)
    }

    /// Writes one request; returns its correlation id.
    pub fn send<R: Request>(&mut self, request: &R, version: i16) -> Result<i32, ClientError> {
        let frame = self.encode(request, version)?;
        self.stream.write_all(&frame)?;
        Ok(self.next_correlation_id - 1)
    }

    /// Encodes one request frame (size prefix included) with the next correlation id.
    pub fn encode<R: Request>(&mut self, request: &R, version: i16) -> Result<Bytes, ClientError> {
        let id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(id)
            .with_client_id(Some(self.client_id.clone()));
        let mut buf = BytesMut::with_capacity(64);
        buf.extend_from_slice(&[0; 4]);
        header
            .encode(&mut buf, R::header_version(version))
            .map_err(protocol)?;
        request.encode(&mut buf, version).map_err(protocol)?;
        let size = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&size.to_be_bytes());
        Ok(buf.freeze())
    }

    /// Writes an already encoded frame.
    pub fn write_frame(&mut self, frame: &[u8]) -> Result<(), ClientError> {
        Ok(self.stream.write_all(frame)?)
    }

    /// Sends `request` and waits for its response.
    pub fn call<R: Request>(&mut self, request: R, version: i16) -> Result<R::Response, ClientError>
    where
        R::Response: Decodable + HeaderVersion,
    {
        let id = self.send(&request, version)?;
        let (got, response) = read_response::<R::Response>(&mut self.stream, version)?;
        if got != id {
            return Err(protocol(format!(
                "response for correlation id {got}, expected {id}"
            )));
        }
        Ok(response)
    }

    /// Partition count of `topic`, or `None` if the broker does not know it.
    pub fn partition_count(&mut self, topic: &str) -> Result<Option<usize>, ClientError> {
        use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
        let request = MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(topic_name(topic)))
            ]))
            .with_allow_auto_topic_creation(false);
        let v = self.versions.metadata;
        let r: MetadataResponse = self.call(request, v)?;
        Ok(r.topics
            .iter()
            .find(|t| t.name.as_ref().map(|n| n.as_str()) == Some(topic))
            .filter(|t| t.error_code == 0)
            .map(|t| t.partitions.len()))
    }

    /// Creates `topic` unless it exists; returns its partition count.
    pub fn ensure_topic(&mut self, topic: &str, partitions: i32) -> Result<usize, ClientError> {
        use kafka_protocol::messages::create_topics_request::CreatableTopic;
        if let Some(n) = self.partition_count(topic)? {
            return Ok(n);
        }
        let request = CreateTopicsRequest::default()
            .with_topics(vec![CreatableTopic::default()
                .with_name(topic_name(topic))
                .with_num_partitions(partitions)
                .with_replication_factor(1)])
            .with_timeout_ms(30_000);
        let v = self.versions.create_topics;
        let r: CreateTopicsResponse = self.call(request, v)?;
        for t in &r.topics {
            // 36: TOPIC_ALREADY_EXISTS (a concurrent creator won).
            if t.error_code != 0 && t.error_code != 36 {
                return Err(ClientError::Kafka {
                    what: format!("creating topic {topic}"),
                    code: t.error_code,
                });
            }
        }
        // A broker may answer before its metadata shows the topic: wait for it.
        for _ in 0..100 {
            if let Some(n) = self.partition_count(topic)? {
                return Ok(n);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(protocol(format!(
            "topic {topic} was created but never appeared"
        )))
    }

    /// One fetch of `wanted` (partition, offset); the record bytes per partition.
    pub fn fetch(
        &mut self,
        topic: &str,
        wanted: &[(usize, i64)],
        partition_max_bytes: i32,
        max_wait_ms: i32,
    ) -> Result<Vec<(usize, Bytes)>, ClientError> {
        use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
        use kafka_protocol::messages::{FetchRequest, FetchResponse};
        let request = FetchRequest::default()
            .with_replica_id((-1).into())
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(i32::MAX)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(topic_name(topic))
                .with_partitions(
                    wanted
                        .iter()
                        .map(|(p, offset)| {
                            FetchPartition::default()
                                .with_partition(*p as i32)
                                .with_fetch_offset(*offset)
                                .with_partition_max_bytes(partition_max_bytes)
                        })
                        .collect(),
                )]);
        let v = self.versions.fetch;
        let response: FetchResponse = self.call(request, v)?;
        if response.error_code != 0 {
            return Err(ClientError::Kafka {
                what: "Fetch".into(),
                code: response.error_code,
            });
        }
        let mut out = Vec::with_capacity(wanted.len());
        for t in response.responses {
            for p in t.partitions {
                if p.error_code != 0 {
                    return Err(ClientError::Kafka {
                        what: format!("Fetch {topic}-{}", p.partition_index),
                        code: p.error_code,
                    });
                }
                if let Some(records) = p.records {
                    out.push((p.partition_index as usize, records));
                }
            }
        }
        Ok(out)
    }

    /// One fetch, decoded into records (compressed batches decompressed; a torn last batch
    /// is left for the next fetch).
    pub fn fetch_records(
        &mut self,
        topic: &str,
        wanted: &[(usize, i64)],
    ) -> Result<Vec<(usize, Vec<kafka_protocol::records::Record>)>, ClientError> {
        let mut out = Vec::new();
        for (p, bytes) in self.fetch(topic, wanted, 1 << 20, 500)? {
            out.push((p, decode_records(&bytes)?));
        }
        Ok(out)
    }

    /// The offset of each partition at `timestamp` (-1 latest, -2 earliest).
    pub fn list_offsets(
        &mut self,
        topic: &str,
        partitions: usize,
        timestamp: i64,
    ) -> Result<Vec<i64>, ClientError> {
        let all: Vec<i32> = (0..partitions as i32).collect();
        let found = self.list_offsets_of(topic, &all, timestamp)?;
        let mut out = vec![0i64; partitions];
        for (p, offset) in found {
            if let Some(slot) = out.get_mut(p as usize) {
                *slot = offset;
            }
        }
        Ok(out)
    }

    /// (partition, offset at `timestamp`) of the partitions named (all led by this broker).
    pub fn list_offsets_of(
        &mut self,
        topic: &str,
        partitions: &[i32],
        timestamp: i64,
    ) -> Result<Vec<(i32, i64)>, ClientError> {
        use kafka_protocol::messages::list_offsets_request::{
            ListOffsetsPartition, ListOffsetsTopic,
        };
        let request = ListOffsetsRequest::default()
            .with_replica_id((-1).into())
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(
                    partitions
                        .iter()
                        .map(|&p| {
                            ListOffsetsPartition::default()
                                .with_partition_index(p)
                                .with_timestamp(timestamp)
                        })
                        .collect(),
                )]);
        let v = self.versions.list_offsets;
        let r: ListOffsetsResponse = self.call(request, v)?;
        let mut out = Vec::with_capacity(partitions.len());
        for t in &r.topics {
            for p in &t.partitions {
                if p.error_code != 0 {
                    return Err(ClientError::Kafka {
                        what: format!("ListOffsets {topic}-{}", p.partition_index),
                        code: p.error_code,
                    });
                }
                out.push((p.partition_index, p.offset));
            }
        }
        Ok(out)
    }
}

/// The records of the whole batches in `bytes`.
pub fn decode_records(bytes: &Bytes) -> Result<Vec<kafka_protocol::records::Record>, ClientError> {
    use crate::protocol::record_batch::{peek_total_bytes, BATCH_HEADER_BYTES};
    let mut out = Vec::new();
    let mut at = 0usize;
    while at + BATCH_HEADER_BYTES <= bytes.len() {
        let total = peek_total_bytes(&bytes[at..]).unwrap_or(0);
        if total < BATCH_HEADER_BYTES || at + total > bytes.len() {
            break;
        }
        let mut batch = bytes.slice(at..at + total);
        let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut batch)
            .map_err(|e| protocol(format!("fetched batch: {e}")))?;
        out.extend(set.records.into_iter().filter(|r| !r.control));
        at += total;
    }
    Ok(out)
}

/// A topic name for requests.
pub fn topic_name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

/// Reads one response frame and decodes it: `(correlation id, response)`.
pub fn read_response<T: Decodable + HeaderVersion>(
    stream: &mut impl Read,
    version: i16,
) -> Result<(i32, T), ClientError> {
    let mut body = read_frame(stream)?;
    let header =
        kafka_protocol::messages::ResponseHeader::decode(&mut body, T::header_version(version))
            .map_err(protocol)?;
    let response = T::decode(&mut body, version).map_err(protocol)?;
    Ok((header.correlation_id, response))
}

/// Reads one size-prefixed frame.
pub fn read_frame(stream: &mut impl Read) -> Result<Bytes, ClientError> {
    let mut size = [0u8; 4];
    stream.read_exact(&mut size)?;
    let size = i32::from_be_bytes(size);
    if size < 4 || size as usize > RESPONSE_BYTES_MAX {
        return Err(protocol(format!("response frame of {size} bytes")));
    }
    // read_to_end fills spare capacity without zeroing it first.
    let mut body = Vec::with_capacity(size as usize);
    stream.take(size as u64).read_to_end(&mut body)?;
    if body.len() != size as usize {
        return Err(ClientError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(Bytes::from(body))
}
