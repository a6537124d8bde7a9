//! Request dispatch: decode the header and body, call the API's handler, encode the response
//! header and body. One file per Kafka API beside this one. Runs on: the shard that serves the
//! connection. Invariants: ApiVersions is always answered with response header v0 (clients read
//! it before they know our versions); a version outside the served range gets UNSUPPORTED_VERSION
//! for ApiVersions and closes the connection for other APIs, as Kafka does; a body the codec
//! cannot decode closes the connection.

mod api_versions;
mod create_partitions;
mod create_topics;
mod delete_groups;
mod delete_topics;
mod describe_cluster;
mod describe_configs;
mod describe_groups;
mod describe_log_dirs;
mod elect_leaders;
mod fetch;
mod find_coordinator;
mod heartbeat;
mod incremental_alter_configs;
mod init_producer_id;
mod join_group;
mod leave_group;
mod list_groups;
mod list_offsets;
mod metadata;
mod offset_commit;
mod offset_delete;
mod offset_fetch;
mod produce;
mod replica_fetch;
mod sync_group;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::constants::RESPONSE_BYTES_MAX;
use crate::protocol::fetch_response::Piece;
use crate::protocol::versions;
use crate::shard::ShardRef;
use crate::storage::FetchRecords;

/// What the connection does with a handled request.
pub enum Reply {
    Send(Bytes),
    /// A Fetch response: encoded bytes and record sets, some of them file ranges to splice.
    Parts(Vec<Piece<FetchRecords>>),
    /// acks=0 produce: Kafka sends no response.
    Nothing,
    Close(String),
}

/// A request frame, decoded as far as the connection needs.
pub enum Decoded {
    Request {
        correlation_id: i32,
        api_key: ApiKey,
        version: i16,
        client_id: String,
        request: Box<RequestKind>,
    },
    /// An ApiVersions version we do not serve: answered with error 35 in v0.
    UnsupportedApiVersions { correlation_id: i32 },
    /// Unrecoverable: close the connection, for this reason.
    Close(String),
}

/// Decodes one request frame (without its size prefix). Never panics: the codec runs guarded.
pub fn decode(mut frame: Bytes) -> Decoded {
    if frame.len() < 8 {
        return Decoded::Close("frame shorter than a request header".into());
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let Ok(api_key) = ApiKey::try_from(key) else {
        return Decoded::Close(format!("unknown api key {key}"));
    };
    let served = versions::supported(api_key);
    let in_range = served.is_some_and(|(min, max)| version >= min && version <= max)
        || (api_key == ApiKey::Fetch && version == versions::REPLICA_FETCH_VERSION);
    if api_key == ApiKey::ApiVersions && !in_range {
        return Decoded::UnsupportedApiVersions { correlation_id };
    }
    if !in_range {
        return Decoded::Close(format!("{api_key:?} v{version} is not served"));
    }
    if api_key == ApiKey::Produce && version < versions::PRODUCE_VERSION_DECODED_MIN {
        return Decoded::Close(format!(
            "Produce v{version} (message format before v2) is not served"
        ));
    }
    let header_version = api_key.request_header_version(version);
    // The codec is not ours: a panic inside it must cost this connection, not the shard.
    let decoded = crate::runtime::guarded(|| {
        let header = RequestHeader::decode(&mut frame, header_version)?;
        let request = RequestKind::decode(api_key, &mut frame, version)?;
        Ok::<_, anyhow::Error>((header, request))
    });
    match decoded {
        Ok(Ok((header, request))) => Decoded::Request {
            correlation_id,
            api_key,
            version,
            client_id: header.client_id.map(|c| c.to_string()).unwrap_or_default(),
            request: Box::new(request),
        },
        Ok(Err(e)) => Decoded::Close(format!("bad {api_key:?} v{version} request: {e}")),
        Err(_) => Decoded::Close(format!(
            "{api_key:?} v{version} request made the decoder panic"
        )),
    }
}

/// Handles one request frame (without its size prefix) from a client at `peer_host`.
/// `turn` is the request's place in its connection's order (produce requests only).
pub async fn handle(
    shard: &ShardRef,
    frame: Bytes,
    peer_host: &str,
    turn: Option<crate::shard::Turn>,
) -> Reply {
    let (correlation_id, api_key, version, client_id, request) = match decode(frame) {
        Decoded::Request {
            correlation_id,
            api_key,
            version,
            client_id,
            request,
        } => (correlation_id, api_key, version, client_id, request),
        Decoded::UnsupportedApiVersions { correlation_id } => {
            return encode(
                correlation_id,
                ApiKey::ApiVersions,
                0,
                api_versions::unsupported(),
            )
        }
        Decoded::Close(why) => return Reply::Close(why),
    };
    let response = match *request {
        RequestKind::ApiVersions(_) => api_versions::handle(),
        RequestKind::Metadata(r) => metadata::handle(shard, r, version).await,
        RequestKind::Produce(r) => {
            let turn = turn.unwrap_or_else(|| crate::shard::Sequencer::new().turn());
            if r.acks == 0 {
                produce::handle(shard, r, turn, version).await;
                return Reply::Nothing;
            }
            produce::handle(shard, r, turn, version).await
        }
        RequestKind::Fetch(r) => return fetch::handle(shard, r, correlation_id, version).await,
        RequestKind::ListOffsets(r) => list_offsets::handle(shard, r).await,
        RequestKind::CreateTopics(r) => create_topics::handle(shard, r).await,
        RequestKind::DeleteTopics(r) => delete_topics::handle(shard, r).await,
        RequestKind::CreatePartitions(r) => create_partitions::handle(shard, r).await,
        RequestKind::ElectLeaders(r) => elect_leaders::handle(shard, r).await,
        RequestKind::DescribeLogDirs(r) => describe_log_dirs::handle(shard, r).await,
        RequestKind::InitProducerId(r) => init_producer_id::handle(shard, r).await,
        RequestKind::DescribeConfigs(r) => describe_configs::handle(shard, r),
        RequestKind::IncrementalAlterConfigs(r) => {
            incremental_alter_configs::handle(shard, r).await
        }
        RequestKind::DescribeCluster(_) => describe_cluster::handle(shard).await,
        RequestKind::FindCoordinator(r) => find_coordinator::handle(shard, r, version).await,
        RequestKind::JoinGroup(r) => {
            join_group::handle(shard, r, version, client_id, peer_host.to_string()).await
        }
        RequestKind::SyncGroup(r) => sync_group::handle(shard, r).await,
        RequestKind::Heartbeat(r) => heartbeat::handle(shard, r).await,
        RequestKind::LeaveGroup(r) => leave_group::handle(shard, r, version).await,
        RequestKind::OffsetCommit(r) => offset_commit::handle(shard, r).await,
        RequestKind::OffsetFetch(r) => offset_fetch::handle(shard, r).await,
        RequestKind::ListGroups(r) => list_groups::handle(shard, r).await,
        RequestKind::DescribeGroups(r) => describe_groups::handle(shard, r).await,
        RequestKind::DeleteGroups(r) => delete_groups::handle(shard, r).await,
        RequestKind::OffsetDelete(r) => offset_delete::handle(shard, r).await,
        other => return Reply::Close(format!("unexpected request {other:?}")),
    };
    encode(correlation_id, api_key, version, response)
}

fn encode(correlation_id: i32, api_key: ApiKey, version: i16, response: ResponseKind) -> Reply {
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0); // size, patched below
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = if api_key == ApiKey::ApiVersions {
        0
    } else {
        api_key.response_header_version(version)
    };
    if let Err(e) = header.encode(&mut buf, header_version) {
        return Reply::Close(format!("encoding response header: {e}"));
    }
    if let Err(e) = response.encode(&mut buf, version) {
        return Reply::Close(format!("encoding {api_key:?} v{version} response: {e}"));
    }
    // Requests are deduplicated before any work, so only a very large cluster can come near
    // this; past it the connection is closed rather than a response of any size queued.
    if buf.len() - 4 > RESPONSE_BYTES_MAX {
        return Reply::Close(format!(
            "{api_key:?} v{version} response of {} bytes is over {RESPONSE_BYTES_MAX}",
            buf.len() - 4
        ));
    }
    let size = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&size.to_be_bytes());
    Reply::Send(buf.freeze())
}

/// Collapses duplicates in a request's topic list, as Kafka does by building maps from it:
/// entries naming the same topic are merged, and within a topic only the first entry of each
/// partition key is kept, in request order. A request naming one partition 100,000 times then
/// costs the work (and the response bytes) of naming it once.
pub fn collapse_topics<T, K, P, PK>(
    topics: Vec<T>,
    name: impl Fn(&T) -> K,
    partitions: impl Fn(&mut T) -> &mut Vec<P>,
    partition_key: impl Fn(&P) -> PK,
) -> Vec<T>
where
    K: std::hash::Hash + Eq,
    PK: std::hash::Hash + Eq,
{
    // One topic (the common fetch and produce) has nothing to merge: no map is built for it.
    let mut out: Vec<T> = if topics.len() < 2 {
        topics
    } else {
        merge_by_name(topics, name, &partitions)
    };
    for topic in &mut out {
        let list = partitions(topic);
        let taken = std::mem::take(list);
        *list = first_of_each(taken, &partition_key);
    }
    out
}

/// Topics with the same name become the first of them, holding all their partitions.
fn merge_by_name<T, K: std::hash::Hash + Eq, P>(
    topics: Vec<T>,
    name: impl Fn(&T) -> K,
    partitions: impl Fn(&mut T) -> &mut Vec<P>,
) -> Vec<T> {
    let mut at: std::collections::HashMap<K, usize> = std::collections::HashMap::new();
    let mut out: Vec<T> = Vec::new();
    for mut topic in topics {
        match at.entry(name(&topic)) {
            std::collections::hash_map::Entry::Occupied(e) => {
                let more = std::mem::take(partitions(&mut topic));
                partitions(&mut out[*e.get()]).extend(more);
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(out.len());
                out.push(topic);
            }
        }
    }
    out
}

/// The first item of each key, in order.
pub fn first_of_each<T, K: std::hash::Hash + Eq>(items: Vec<T>, key: impl Fn(&T) -> K) -> Vec<T> {
    if items.len() < 2 {
        return items;
    }
    let mut seen = std::collections::HashSet::with_capacity(items.len().min(1024));
    items.into_iter().filter(|i| seen.insert(key(i))).collect()
}

/// True if `name` can name a topic at all (Kafka's 249-byte limit): checked before a name is
/// copied per partition, so a 30 KB name listed with 20,000 partitions costs nothing.
pub fn topic_name_fits(name: &str) -> bool {
    !name.is_empty() && name.len() <= crate::constants::TOPIC_NAME_BYTES_MAX
}

/// Sends a request to the controller and maps its answers to Kafka codes and messages; every
/// item gets UNKNOWN_SERVER_ERROR if the controller is unreachable.
pub async fn ask_controller(
    shard: &ShardRef,
    count: usize,
    op: crate::cluster::controller::ControllerOp,
) -> Vec<(crate::protocol::ErrorCode, Option<String>)> {
    match crate::shard::metadata::ask(shard, op).await {
        Some(answers) => answers
            .iter()
            .map(|a| crate::server::errors::controller_answer(&a.clone().map(|_| ())))
            .collect(),
        None => vec![
            (
                crate::protocol::ErrorCode::UnknownServerError,
                Some("controller unavailable".into())
            );
            count
        ],
    }
}

/// A `StrBytes` from a `&str`.
pub fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

/// A Kafka topic id from our 16 bytes.
pub fn uuid(id: crate::protocol::types::TopicId) -> uuid::Uuid {
    uuid::Uuid::from_bytes(id.0)
}
