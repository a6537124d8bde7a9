//! Metadata records and their encoding. Each record is framed as
//! `[length u32][crc32c u32][payload]`; the payload is `[0xFF][version u8]` and the record in
//! rkyv, so that brokers of mixed versions can read each other's records later. A payload
//! without the marker is a record written before versions existed (version 0: the same schema
//! as version 1); rkyv never starts such a payload with 0xFF (it begins with an ASCII string or
//! a small enum tag). Runs on: the shard that holds the metadata log.

use crate::constants::{METADATA_RECORD_BYTES_BOUND, METADATA_RECORD_BYTES_MAX};

/// One change to the cluster metadata.
#[derive(
    Debug,
    Clone,
    PartialEq,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
    serde::Serialize,
    serde::Deserialize,
)]
pub enum MetadataRecord {
    ClusterCreated {
        cluster_id: String,
    },
    TopicCreated {
        name: String,
        topic_id: [u8; 16],
        partitions: u32,
        configs: Vec<(String, String)>,
    },
    TopicDeleted {
        name: String,
    },
    PartitionsCreated {
        name: String,
        total: u32,
    },
    /// The topic's whole new set of config overrides (appended last: rkyv numbers variants).
    TopicConfigsChanged {
        name: String,
        configs: Vec<(String, String)>,
    },
    /// A broker's incarnation: a new `epoch` at every start supersedes (fences) the previous
    /// one at once. Registered brokers are live until fenced.
    BrokerRegistered {
        node_id: i32,
        epoch: i64,
        host: String,
        port: u16,
    },
    /// The broker's session ended (it died or hung): it leads nothing clients are sent to.
    BrokerFenced {
        node_id: i32,
        epoch: i64,
    },
    /// A fenced broker's incarnation heartbeats again.
    BrokerUnfenced {
        node_id: i32,
        epoch: i64,
    },
    /// Replicas, leader and leader epoch of partitions `first..first + assignments.len()` of
    /// topic `name` (whose id is `topic_id`: an assignment for an older topic of the same
    /// name is ignored). In a cluster a partition is served only once assigned.
    PartitionsAssigned {
        name: String,
        topic_id: [u8; 16],
        first: u32,
        assignments: Vec<Assignment>,
    },
    /// Producer ids `image.next_producer_id..next` go to broker `node_id` (KIP-730's blocks).
    ProducerIdsAllocated {
        node_id: i32,
        next: i64,
    },
    /// New leader, leader epoch and in-sync replicas of some partitions of topic `name` (an
    /// election, or an ISR change the leader asked for: Kafka's AlterPartition). At most
    /// `ASSIGNMENTS_PER_RECORD_MAX` changes; a change for an older topic of the same name, or
    /// for a partition never assigned, is ignored.
    PartitionsChanged {
        name: String,
        topic_id: [u8; 16],
        changes: Vec<PartitionChange>,
    },
    /// The broker's incarnation is stopping cleanly: it is elected nowhere and leaves the
    /// ISRs (its leadership moves first: Kafka's controlled shutdown).
    BrokerShuttingDown {
        node_id: i32,
        epoch: i64,
    },
}

/// One partition's leadership and in-sync replicas after a `PartitionsChanged`.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct PartitionChange {
    pub partition: u32,
    /// -1: no replica may lead (none in the ISR is live); the partition is offline.
    pub leader: i32,
    pub leader_epoch: i32,
    /// Never empty: the last member stays even when fenced, so the partition waits for it.
    pub isr: Vec<i32>,
}

/// Where one partition lives.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Assignment {
    /// Broker ids, the preferred leader first.
    pub replicas: Vec<i32>,
    pub leader: i32,
    pub leader_epoch: i32,
}

/// A short form for Raft's logs (openraft's application data must be `Display`).
impl std::fmt::Display for MetadataRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetadataRecord::ClusterCreated { cluster_id } => {
                write!(f, "cluster {cluster_id} created")
            }
            MetadataRecord::TopicCreated {
                name, partitions, ..
            } => write!(f, "topic {name} created with {partitions} partitions"),
            MetadataRecord::TopicDeleted { name } => write!(f, "topic {name} deleted"),
            MetadataRecord::PartitionsCreated { name, total } => {
                write!(f, "topic {name} grown to {total} partitions")
            }
            MetadataRecord::TopicConfigsChanged { name, .. } => {
                write!(f, "topic {name} configs changed")
            }
            MetadataRecord::BrokerRegistered {
                node_id,
                epoch,
                host,
                port,
            } => write!(
                f,
                "broker {node_id} registered at {host}:{port}, epoch {epoch}"
            ),
            MetadataRecord::BrokerFenced { node_id, epoch } => {
                write!(f, "broker {node_id} (epoch {epoch}) fenced")
            }
            MetadataRecord::BrokerUnfenced { node_id, epoch } => {
                write!(f, "broker {node_id} (epoch {epoch}) unfenced")
            }
            MetadataRecord::PartitionsAssigned {
                name,
                first,
                assignments,
                ..
            } => write!(
                f,
                "topic {name} partitions {first}..{} assigned",
                *first as usize + assignments.len()
            ),
            MetadataRecord::ProducerIdsAllocated { node_id, next } => {
                write!(f, "producer ids below {next} allocated to broker {node_id}")
            }
            MetadataRecord::BrokerShuttingDown { node_id, epoch } => {
                write!(f, "broker {node_id} (epoch {epoch}) shutting down")
            }
            MetadataRecord::PartitionsChanged { name, changes, .. } => {
                write!(f, "topic {name}: {} partition(s) changed", changes.len())?;
                if let Some(c) = changes.first() {
                    write!(
                        f,
                        " (partition {}: leader {} epoch {} isr {:?})",
                        c.partition, c.leader, c.leader_epoch, c.isr
                    )?;
                }
                Ok(())
            }
        }
    }
}

/// The marker that starts a versioned payload.
const VERSIONED_MARKER: u8 = 0xFF;
/// The version this broker writes (and the highest it reads).
pub const RECORD_VERSION: u8 = 1;

/// The framed bytes of `record`, or `None` if it is larger than the bound every reader
/// accepts (a bug upstream: validation bounds every field).
pub fn encode_frame(record: &MetadataRecord) -> Option<Vec<u8>> {
    let body = rkyv::to_bytes::<rkyv::rancor::Error>(record).expect("metadata record encodes");
    let mut payload = Vec::with_capacity(2 + body.len());
    payload.push(VERSIONED_MARKER);
    payload.push(RECORD_VERSION);
    payload.extend_from_slice(&body);
    let frame = crate::storage::framing::frame(&payload);
    (frame.len() <= METADATA_RECORD_BYTES_BOUND).then_some(frame)
}

/// Why replay refused a metadata log.
pub use crate::storage::framing::CorruptFrame as CorruptRecord;

/// Decodes the frames of a metadata log: the records and the length of the valid prefix
/// (`framing::replay` says what is cut and what is refused).
pub fn decode_frames(bytes: &[u8]) -> Result<(Vec<MetadataRecord>, usize), CorruptRecord> {
    let (items, valid) =
        crate::storage::framing::replay(bytes, METADATA_RECORD_BYTES_MAX as usize, decode_payload)?;
    Ok((items.into_iter().map(|(_, r)| r).collect(), valid))
}

fn decode_payload(payload: &[u8]) -> Result<MetadataRecord, String> {
    let body = match payload {
        [VERSIONED_MARKER, version, body @ ..] => match *version {
            1 => body,
            v => {
                return Err(format!(
                    "it is a version {v} record, written by a newer tusk (this one reads up to \
                     version {RECORD_VERSION})"
                ))
            }
        },
        // Written before records carried a version: the schema of version 1.
        legacy => legacy,
    };
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(body.len());
    aligned.extend_from_slice(body);
    rkyv::from_bytes::<MetadataRecord, rkyv::rancor::Error>(&aligned)
        .map_err(|_| "its checksum holds but it does not decode as a metadata record".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bound the const assertion in `constants` rests on holds for rkyv's real encoding:
    /// the largest record validation lets through is framed below it.
    #[test]
    fn largest_valid_record_fits_the_bound() {
        use crate::constants::*;
        let configs = (0..TOPIC_CONFIGS_MAX)
            .map(|i| {
                let key = format!("{i:0width$}", width = TOPIC_CONFIG_KEY_BYTES_MAX);
                (key, "v".repeat(TOPIC_CONFIG_VALUE_BYTES_MAX))
            })
            .collect();
        let record = MetadataRecord::TopicCreated {
            name: "t".repeat(TOPIC_NAME_BYTES_MAX),
            topic_id: [7; 16],
            partitions: PARTITIONS_PER_TOPIC_MAX,
            configs,
        };
        let frame = encode_frame(&record).expect("within the bound");
        assert!(
            frame.len() <= METADATA_RECORD_BYTES_BOUND,
            "largest record {} bytes, bound {METADATA_RECORD_BYTES_BOUND}",
            frame.len()
        );
        let assignment = Assignment {
            replicas: (0..QUORUM_VOTERS_MAX as i32)
                .map(|i| i32::MAX - i)
                .collect(),
            leader: i32::MAX,
            leader_epoch: i32::MAX,
        };
        let assigned = MetadataRecord::PartitionsAssigned {
            name: "t".repeat(TOPIC_NAME_BYTES_MAX),
            topic_id: [7; 16],
            first: u32::MAX,
            assignments: vec![assignment; ASSIGNMENTS_PER_RECORD_MAX],
        };
        let frame = encode_frame(&assigned).expect("within the bound");
        assert!(
            frame.len() <= METADATA_RECORD_BYTES_BOUND,
            "{}",
            frame.len()
        );
        assert!(encode_frame(&MetadataRecord::ClusterCreated {
            cluster_id: "c".repeat(CLUSTER_ID_BYTES_MAX),
        })
        .is_some());
    }

    #[test]
    fn corrupt_frame_stops_replay() {
        let a = encode_frame(&MetadataRecord::TopicDeleted { name: "x".into() }).unwrap();
        let mut bytes = a.clone();
        bytes.extend(&a);
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        let (records, valid) = decode_frames(&bytes).expect("a damaged last record is a tail");
        assert_eq!(records.len(), 1);
        assert_eq!(valid, a.len());
        let mut huge = a.clone();
        huge[0..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(decode_frames(&huge).unwrap().0.len(), 0);
        // Damage in the first of two records: valid data follows, so it is corruption.
        let mut mid = bytes.clone();
        mid[last] ^= 0xff;
        mid[9] ^= 0x01;
        assert_eq!(
            decode_frames(&mid),
            Err(CorruptRecord {
                offset: 0,
                reason: "its length or checksum is wrong and valid records follow it".into()
            })
        );
        // A frame over the replay limit with valid records after it (what a 2 MB config value
        // once left behind) is refused, not cut.
        let big =
            crate::storage::framing::frame(&vec![0u8; METADATA_RECORD_BYTES_MAX as usize + 1]);
        let mut after_big = big.clone();
        after_big.extend(&a);
        assert_eq!(decode_frames(&after_big).unwrap_err().offset, 0);
        // A checksummed payload that is not a record.
        let mut junk = a.clone();
        junk.extend(crate::storage::framing::frame(b"not a record"));
        assert_eq!(decode_frames(&junk).unwrap_err().offset, a.len());
        // Zeroed space after the last record (a preallocated or half-written tail) is a tail.
        let mut zeros = a.clone();
        zeros.extend([0u8; 64]);
        assert_eq!(decode_frames(&zeros).unwrap().1, a.len());
    }

    /// Records written before versions existed (bare rkyv) still read; a version this broker
    /// does not know refuses the start instead of being skipped.
    #[test]
    fn records_carry_a_version_and_old_ones_still_read() {
        let record = MetadataRecord::TopicDeleted { name: "y".into() };
        let legacy = rkyv::to_bytes::<rkyv::rancor::Error>(&record).unwrap();
        assert_ne!(legacy[0], VERSIONED_MARKER);
        let mut log = crate::storage::framing::frame(&legacy);
        log.extend(encode_frame(&record).unwrap());
        let (records, _) = decode_frames(&log).unwrap();
        assert_eq!(records, vec![record.clone(), record.clone()]);
        let body = rkyv::to_bytes::<rkyv::rancor::Error>(&record).unwrap();
        let mut future = vec![VERSIONED_MARKER, RECORD_VERSION + 1];
        future.extend_from_slice(&body);
        let e = decode_frames(&crate::storage::framing::frame(&future)).unwrap_err();
        assert!(e.reason.contains("newer tusk"), "{}", e.reason);
    }
}
