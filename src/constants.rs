//! Every limit and default of the broker in one place, with compile-time checks of how they
//! relate. Runs on: nothing (constants only). Invariant: a limit used anywhere in the crate is
//! defined here, so the relations between limits can be asserted where they are declared.

/// Default largest request frame accepted from a client (Kafka's `socket.request.max.bytes`).
pub const SOCKET_REQUEST_MAX_BYTES_DEFAULT: u32 = 100 * 1024 * 1024;
/// Largest `socket_request_max_bytes` accepted: a frame must fit a connection's in-flight
/// budget (`CONNECTION_IN_FLIGHT_BYTES_MAX`), or reading it would wait forever.
pub const SOCKET_REQUEST_MAX_BYTES_MAX: u32 = 128 * 1024 * 1024;
/// Default size at which the active segment rolls (Kafka's `segment.bytes`).
pub const SEGMENT_BYTES_DEFAULT: u64 = 1024 * 1024 * 1024;
/// Smallest segment size accepted in the configuration (the batch limit is clamped to it).
pub const SEGMENT_BYTES_MIN: u64 = 1024 * 1024;
/// Default age at which the active segment rolls even if not full (Kafka's `segment.ms`, 7 days).
pub const SEGMENT_MS_DEFAULT: u64 = 7 * 24 * 3600 * 1000;
/// Default retention by time (Kafka's `retention.ms`, 7 days); -1 means unlimited.
pub const RETENTION_MS_DEFAULT: i64 = 7 * 24 * 3600 * 1000;
/// Default retention by size per partition; -1 means unlimited (Kafka's default).
pub const RETENTION_BYTES_DEFAULT: i64 = -1;
/// Largest record batch accepted on produce (Kafka's `message.max.bytes` is ~1 MiB; ours is larger
/// so a ~900 KB record with its batch overhead always fits).
pub const MESSAGE_MAX_BYTES_DEFAULT: u32 = 8 * 1024 * 1024;
/// Upper bound of `message_max_bytes` in configuration: a batch must fit in one segment.
pub const MESSAGE_MAX_BYTES_MAX: u32 = 512 * 1024 * 1024;
/// Largest fetch response the broker builds, whatever the client asks (Kafka's
/// `fetch.max.bytes`).
pub const FETCH_MAX_BYTES_DEFAULT: u32 = 55 * 1024 * 1024;
/// Largest response other than Fetch (whose records are bounded by `fetch_max_bytes`) that a
/// connection sends; past it the connection is closed.
pub const RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// The longest acks=all wait a produce may ask for (its `timeout_ms` is clamped to it).
pub const PRODUCE_TIMEOUT_MAX_MS: u64 = 300_000;
/// Longest long-poll wait honoured for a fetch.
pub const FETCH_WAIT_MAX_MS: u64 = 30_000;
/// Default number of partitions for auto-created topics.
pub const DEFAULT_PARTITIONS_DEFAULT: u32 = 1;
/// Largest partition count of one topic: bounds directories, memory and metadata size.
pub const PARTITIONS_PER_TOPIC_MAX: u32 = 10_000;
/// Largest number of topics in the cluster.
pub const TOPICS_MAX: usize = 10_000;
/// Kafka's limit on topic name length.
pub const TOPIC_NAME_BYTES_MAX: usize = 249;
/// Most shards (executors) one broker runs.
pub const SHARDS_MAX: usize = 256;
/// Depth of each shard-to-shard channel in the mesh; senders wait when it is full.
pub const MESH_CHANNEL_DEPTH: usize = 1024;
/// Largest configurable mesh channel depth (each slot is one message of a few dozen bytes).
pub const MESH_CHANNEL_DEPTH_MAX: usize = 1 << 16;
/// O_DIRECT alignment used for every write: the largest logical block size we expect (4 KiB
/// covers 512e and 4Kn disks).
pub const DIRECT_IO_ALIGNMENT_BYTES: u64 = 4096;
/// One offset-index entry is added after at least this many bytes of batches (Kafka's
/// `index.interval.bytes`).
pub const INDEX_INTERVAL_BYTES: u64 = 4096;
/// The active segment's disk space is allocated ahead of the writes, so an fdatasync commits a
/// size change only once per allocation. A new segment has none until its first write, which
/// allocates at least this much; each extension
/// quadruples what the segment has, up to steps of `PREALLOCATE_STEP_BYTES` (and at most
/// `segment_bytes`), so space follows the data written: an empty broker's 16 offsets partitions
/// hold none, not 16 × 64 MiB, and a busy segment reaches full steps after three
/// extensions (each costs a journal commit on the next fdatasync: an IO on a spinning disk).
pub const PREALLOCATE_FIRST_BYTES: u64 = 1024 * 1024;
/// Largest single extension of a segment's allocation.
pub const PREALLOCATE_STEP_BYTES: u64 = 64 * 1024 * 1024;
/// Bytes of request frames one connection may hold in progress (frames read but not yet
/// answered); the reader waits when a new frame would pass it.
pub const CONNECTION_IN_FLIGHT_BYTES_MAX: u64 = 128 * 1024 * 1024;
/// Bytes of recently appended batches each partition keeps in memory for tail reads.
pub const TAIL_CACHE_BYTES_DEFAULT: u64 = 8 * 1024 * 1024;
/// How many recent batches per producer and partition are remembered to answer duplicates
/// (Kafka keeps 5).
pub const PRODUCER_BATCHES_REMEMBERED: usize = 5;
/// Largest metadata record payload replay accepts; a larger one is refused as corrupt. Writers
/// never produce one (see `METADATA_RECORD_BYTES_BOUND`).
pub const METADATA_RECORD_BYTES_MAX: u32 = 1024 * 1024;
/// Largest encoded entry of the metadata quorum's Raft log (a metadata record in JSON, or a
/// membership change); replay refuses a larger frame as corrupt, and append refuses to write one.
pub const RAFT_ENTRY_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Largest snapshot of the metadata image (the records that rebuild it) a broker writes, reads
/// or accepts from its leader.
pub const RAFT_SNAPSHOT_BYTES_MAX: usize = 1024 * 1024 * 1024;
/// Largest Raft message between brokers (a snapshot in JSON, escaped as a string, at most
/// doubles in size).
pub const RAFT_RPC_BYTES_MAX: usize = 2 * RAFT_SNAPSHOT_BYTES_MAX + 1024 * 1024;
/// Most voters of the metadata quorum (Raft's quorum grows with them; five tolerate two
/// failures).
pub const QUORUM_VOTERS_MAX: usize = 15;
/// Most ISR changes one request to the controller carries (a shard's changes of one check
/// are sent in requests of at most this many).
pub const ISR_CHANGES_PER_REQUEST_MAX: usize = 1024;
// Each change, in JSON with a topic name of the longest and an ISR of every voter, fits a
// forwarded request.
const _: () = assert!(
    ISR_CHANGES_PER_REQUEST_MAX * (128 + TOPIC_NAME_BYTES_MAX + 12 * QUORUM_VOTERS_MAX)
        < RAFT_RPC_BYTES_MAX
);
/// Most partition assignments one metadata record carries (a larger change is several
/// records), so that every record stays within `METADATA_RECORD_BYTES_BOUND`.
pub const ASSIGNMENTS_PER_RECORD_MAX: usize = 64;
/// Most configs a topic may carry.
pub const TOPIC_CONFIGS_MAX: usize = 64;
/// Longest topic config key accepted (Kafka's keys are at most ~40 bytes).
pub const TOPIC_CONFIG_KEY_BYTES_MAX: usize = 64;
/// Longest topic config value accepted: every valid value is a number or an enumerated word.
pub const TOPIC_CONFIG_VALUE_BYTES_MAX: usize = 64;
/// Longest cluster id (32 hex digits).
pub const CLUSTER_ID_BYTES_MAX: usize = 64;
/// Upper bound of the encoded size of any metadata record: the largest is a topic creation
/// with the longest name and the most configs. rkyv lays each string out with at most 8 bytes
/// of header and 8 of padding; 256 bytes cover the record's fixed fields and its envelope.
pub const METADATA_RECORD_BYTES_BOUND: usize = 256
    + (TOPIC_NAME_BYTES_MAX + 16)
    + TOPIC_CONFIGS_MAX * (TOPIC_CONFIG_KEY_BYTES_MAX + TOPIC_CONFIG_VALUE_BYTES_MAX + 2 * 16);
/// Default interval of the background flusher for `flush = "interval:<ms>"`.
pub const FLUSH_INTERVAL_MS_MIN: u64 = 1;
/// Largest member metadata (subscription), assignment or offset metadata a group accepts.
pub const GROUP_METADATA_BYTES_MAX: usize = 1024 * 1024;
/// Segment size of the internal offsets log (at most the broker's `segment_bytes`).
pub const OFFSETS_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Largest metadata string of one committed offset (Kafka's `offset.metadata.max.bytes`).
pub const OFFSET_METADATA_BYTES_MAX: usize = 4096;
/// Longest group id accepted (flexible request versions carry ids with a varint length, so the
/// wire alone does not bound them).
pub const GROUP_ID_BYTES_MAX: usize = 4096;
/// How long an empty group's membership state is kept before it is forgotten.
pub const GROUP_EMPTY_FORGET_MS: u64 = 10 * 60 * 1000;
/// How often each shard advances its groups' timers (session and rebalance timeouts).
pub const GROUP_TICK_MS: u64 = 100;
/// Name of the internal offsets log; reserved, never a user topic.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Partitions of the offsets log. Fixed forever: a group's partition must never change.
pub const OFFSETS_PARTITIONS: u32 = 16;
/// The internal topic's id (owns its partition directories).
pub const OFFSETS_TOPIC_ID: [u8; 16] = [0xff; 16];
/// Producer ids a broker of a cluster takes from the controller at a time (KIP-730).
pub const PRODUCER_ID_BLOCK: i64 = 1000;
/// Node id of this broker in a one-node cluster.
pub const NODE_ID_DEFAULT: i32 = 0;
/// Allocations of at least this size are reserved as no-reserve mappings; see `runtime::alloc`.
pub const RESERVED_ALLOCATION_BYTES_MIN: usize = 256 * 1024 * 1024;

const _: () = assert!(SEGMENT_BYTES_DEFAULT >= MESSAGE_MAX_BYTES_DEFAULT as u64);
const _: () = assert!(SEGMENT_BYTES_DEFAULT >= SEGMENT_BYTES_MIN);
const _: () = assert!(MESSAGE_MAX_BYTES_MAX as u64 <= SEGMENT_BYTES_DEFAULT);
const _: () = assert!(MESSAGE_MAX_BYTES_DEFAULT <= SOCKET_REQUEST_MAX_BYTES_DEFAULT);
// A frame buffer of the default maximum size stays an ordinary allocation.
const _: () = assert!(SOCKET_REQUEST_MAX_BYTES_DEFAULT as usize <= RESERVED_ALLOCATION_BYTES_MIN);
const _: () = assert!(DIRECT_IO_ALIGNMENT_BYTES.is_power_of_two());
const _: () = assert!(PREALLOCATE_STEP_BYTES.is_multiple_of(DIRECT_IO_ALIGNMENT_BYTES));
const _: () = assert!(PREALLOCATE_FIRST_BYTES.is_multiple_of(DIRECT_IO_ALIGNMENT_BYTES));
const _: () = assert!(PREALLOCATE_FIRST_BYTES <= PREALLOCATE_STEP_BYTES);
// The largest frame must fit the connection budget, or it could never be read.
const _: () = assert!(CONNECTION_IN_FLIGHT_BYTES_MAX >= SOCKET_REQUEST_MAX_BYTES_MAX as u64);
const _: () = assert!(SOCKET_REQUEST_MAX_BYTES_DEFAULT <= SOCKET_REQUEST_MAX_BYTES_MAX);
const _: () = assert!(SEGMENT_BYTES_MIN.is_multiple_of(DIRECT_IO_ALIGNMENT_BYTES));
const _: () = assert!(TAIL_CACHE_BYTES_DEFAULT >= MESSAGE_MAX_BYTES_DEFAULT as u64);
const _: () = assert!(RESPONSE_BYTES_MAX <= i32::MAX as usize);
// An assignment record (64 partitions, each naming every voter) is smaller than the largest
// topic creation the bound covers.
const _: () = assert!(
    ASSIGNMENTS_PER_RECORD_MAX * (32 + 4 * QUORUM_VOTERS_MAX)
        <= TOPIC_CONFIGS_MAX * (TOPIC_CONFIG_KEY_BYTES_MAX + TOPIC_CONFIG_VALUE_BYTES_MAX + 2 * 16)
);
// Every record the metadata log writes is one replay accepts: a record replay refuses would
// cut the log (and, before this bound, cost a topic and its acknowledged data).
const _: () = assert!(METADATA_RECORD_BYTES_BOUND < METADATA_RECORD_BYTES_MAX as usize);
const _: () = assert!(CLUSTER_ID_BYTES_MAX <= TOPIC_NAME_BYTES_MAX);
const _: () = assert!(RAFT_RPC_BYTES_MAX <= u32::MAX as usize);
// In JSON a record grows at most sixfold (a control character escapes as `\u00XX`): every
// record the controller writes fits a Raft entry, and every image fits a snapshot.
const _: () = assert!(6 * METADATA_RECORD_BYTES_BOUND + 4096 < RAFT_ENTRY_BYTES_MAX);
const _: () =
    assert!(TOPICS_MAX * (6 * METADATA_RECORD_BYTES_BOUND + 64) < RAFT_SNAPSHOT_BYTES_MAX);
// Segment positions are stored as u32 in the offset index.
const _: () = assert!(SEGMENT_BYTES_DEFAULT <= u32::MAX as u64);
