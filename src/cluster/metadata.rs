//! The metadata image and its durable log. Records are rkyv-encoded, each framed as
//! `[length u32][crc32c u32][payload]`; replay stops at the first torn or corrupt frame and cuts
//! it off. Runs on: the controller shard (appends, blocking std IO: metadata changes are rare and
//! never on the data path) and the main thread at start (replay).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::constants::{METADATA_RECORD_BYTES_BOUND, METADATA_RECORD_BYTES_MAX};

/// One change to the cluster metadata.
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
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
}

/// A topic as the cluster knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicMeta {
    pub name: String,
    pub topic_id: [u8; 16],
    pub partitions: u32,
    pub configs: BTreeMap<String, String>,
}

/// The state of the cluster metadata after applying every record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetadataImage {
    pub cluster_id: String,
    pub topics: BTreeMap<String, TopicMeta>,
    /// Number of records applied: a version clients never see, used in logs.
    pub records_applied: u64,
}

impl MetadataImage {
    pub fn apply(&mut self, record: &MetadataRecord) {
        self.records_applied += 1;
        match record {
            MetadataRecord::ClusterCreated { cluster_id } => self.cluster_id = cluster_id.clone(),
            MetadataRecord::TopicCreated {
                name,
                topic_id,
                partitions,
                configs,
            } => {
                self.topics.insert(
                    name.clone(),
                    TopicMeta {
                        name: name.clone(),
                        topic_id: *topic_id,
                        partitions: *partitions,
                        configs: configs.iter().cloned().collect(),
                    },
                );
            }
            MetadataRecord::TopicDeleted { name } => {
                self.topics.remove(name);
            }
            MetadataRecord::TopicConfigsChanged { name, configs } => {
                if let Some(t) = self.topics.get_mut(name) {
                    t.configs = configs.iter().cloned().collect();
                }
            }
            MetadataRecord::PartitionsCreated { name, total } => {
                if let Some(t) = self.topics.get_mut(name) {
                    t.partitions = (*total).max(t.partitions);
                }
            }
        }
    }

    pub fn topic_by_id(&self, id: &[u8; 16]) -> Option<&TopicMeta> {
        self.topics.values().find(|t| &t.topic_id == id)
    }
}

/// Errors of the metadata log.
#[derive(Debug)]
pub struct MetadataError {
    pub op: &'static str,
    pub path: PathBuf,
    pub detail: String,
}

impl std::fmt::Display for MetadataError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "metadata log {} {}: {}",
            self.op,
            self.path.display(),
            self.detail
        )
    }
}

impl std::error::Error for MetadataError {}

/// The durable, ordered log of metadata records. One node writes a local file; a cluster
/// replicates the same records through Raft.
pub trait MetadataLog {
    /// Makes `record` durable, then applies it to the image.
    fn append(&mut self, record: MetadataRecord) -> Result<(), MetadataError>;
    fn image(&self) -> &MetadataImage;
}

/// The one-node metadata log: a local file, fsynced on every append.
pub struct LocalMetadataLog {
    path: PathBuf,
    file: File,
    image: MetadataImage,
}

fn encode_frame(record: &MetadataRecord) -> Vec<u8> {
    let payload = rkyv::to_bytes::<rkyv::rancor::Error>(record).expect("metadata record encodes");
    crate::storage::framing::frame(&payload)
}

/// Why replay refused a metadata log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptRecord {
    /// Byte offset of the record that failed in the file.
    pub offset: usize,
    pub reason: &'static str,
}

/// Decodes the frames of a metadata log. Returns the records and the length of the valid
/// prefix: whatever follows it is a torn tail (the last append, cut short by a crash). A
/// record that fails while a valid record follows it, or whose CRC holds but whose payload
/// does not decode, is corruption in the middle of the log and refused: cutting there would
/// silently drop every later record (and, with them, topics and their data).
pub fn decode_frames(bytes: &[u8]) -> Result<(Vec<MetadataRecord>, usize), CorruptRecord> {
    let max = METADATA_RECORD_BYTES_MAX as usize;
    let mut records = Vec::new();
    let mut pos = 0usize;
    while pos < bytes.len() {
        let Some((payload, total)) = crate::storage::framing::unframe_prefix(&bytes[pos..], max)
        else {
            // Appends are fsynced one at a time, so only the last frame can be torn: a valid
            // frame anywhere after this one means this one was damaged in place.
            let followed = (pos + 1..bytes.len())
                .any(|q| crate::storage::framing::unframe_prefix(&bytes[q..], max).is_some());
            if followed {
                return Err(CorruptRecord {
                    offset: pos,
                    reason: "its length or checksum is wrong and valid records follow it",
                });
            }
            return Ok((records, pos));
        };
        match decode_payload(payload) {
            Some(r) => records.push(r),
            None => {
                return Err(CorruptRecord {
                    offset: pos,
                    reason: "its checksum holds but it does not decode as a metadata record",
                })
            }
        }
        pos += total;
    }
    Ok((records, pos))
}

fn decode_payload(payload: &[u8]) -> Option<MetadataRecord> {
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(payload.len());
    aligned.extend_from_slice(payload);
    rkyv::from_bytes::<MetadataRecord, rkyv::rancor::Error>(&aligned).ok()
}

impl LocalMetadataLog {
    /// Opens (or creates) the log in `dir` and replays it.
    pub fn open(dir: &Path) -> Result<LocalMetadataLog, MetadataError> {
        let path = dir.join("__cluster_metadata.log");
        let err = |op, e: std::io::Error| MetadataError {
            op,
            path: path.clone(),
            detail: e.to_string(),
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| err("open", e))?;
        // The file's directory entry must survive a crash as well as its bytes.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| err("fsync dir", e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| err("read", e))?;
        let (records, valid) = decode_frames(&bytes).map_err(|c| MetadataError {
            op: "replay",
            path: path.clone(),
            detail: format!(
                "the record at byte {} is corrupt: {}; refusing to start rather than cut the \
                 cluster's history there (restore the file, or move it away to start empty)",
                c.offset, c.reason
            ),
        })?;
        if valid < bytes.len() {
            tracing::warn!(path = %path.display(), valid, total = bytes.len(), "cutting torn metadata log tail");
            file.set_len(valid as u64).map_err(|e| err("truncate", e))?;
            file.sync_all().map_err(|e| err("fsync", e))?;
        }
        let mut image = MetadataImage::default();
        for r in &records {
            image.apply(r);
        }
        let mut log = LocalMetadataLog { path, file, image };
        if log.image.cluster_id.is_empty() {
            let id = random_id();
            let cluster_id: String = id.iter().map(|b| format!("{b:02x}")).collect();
            log.append(MetadataRecord::ClusterCreated { cluster_id })?;
        }
        Ok(log)
    }
}

impl MetadataLog for LocalMetadataLog {
    fn append(&mut self, record: MetadataRecord) -> Result<(), MetadataError> {
        let frame = encode_frame(&record);
        let err = |op, e: std::io::Error| MetadataError {
            op,
            path: self.path.clone(),
            detail: e.to_string(),
        };
        // Never write a record that replay would refuse: validation bounds every field, so this
        // only trips on a bug, and then the change is refused instead of cutting the log later.
        if frame.len() > METADATA_RECORD_BYTES_BOUND {
            return Err(MetadataError {
                op: "append",
                path: self.path.clone(),
                detail: format!(
                    "record of {} bytes is over the {METADATA_RECORD_BYTES_BOUND}-byte bound",
                    frame.len()
                ),
            });
        }
        let good_len = self.file.metadata().map_err(|e| err("stat", e))?.len();
        let written = self
            .file
            .write_all(&frame)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // Never leave a partial frame for later records to follow: replay would stop at it
            // and forget them.
            let _ = self.file.set_len(good_len);
            let _ = self.file.sync_all();
            return Err(err("append", e));
        }
        self.image.apply(&record);
        Ok(())
    }

    fn image(&self) -> &MetadataImage {
        &self.image
    }
}

/// 16 random bytes from the kernel (topic and cluster ids).
pub fn random_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    let filled = File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut id));
    if filled.is_err() {
        // Fall back to the clock: ids only need to be unique, not secret.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        id = nanos.to_be_bytes();
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_and_cuts_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = LocalMetadataLog::open(dir.path()).unwrap();
            log.append(MetadataRecord::TopicCreated {
                name: "a".into(),
                topic_id: [1; 16],
                partitions: 3,
                configs: vec![("retention.ms".into(), "1000".into())],
            })
            .unwrap();
            log.append(MetadataRecord::PartitionsCreated {
                name: "a".into(),
                total: 5,
            })
            .unwrap();
        }
        let path = dir.path().join("__cluster_metadata.log");
        let mut bytes = std::fs::read(&path).unwrap();
        let full = bytes.len();
        bytes.extend([0, 0, 0, 9, 1, 2]); // a torn frame
        std::fs::write(&path, &bytes).unwrap();
        let log = LocalMetadataLog::open(dir.path()).unwrap();
        let t = &log.image().topics["a"];
        assert_eq!(t.partitions, 5);
        assert_eq!(t.configs["retention.ms"], "1000");
        assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, full);
    }

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
        let frame = encode_frame(&record);
        assert!(
            frame.len() <= METADATA_RECORD_BYTES_BOUND,
            "largest record {} bytes, bound {METADATA_RECORD_BYTES_BOUND}",
            frame.len()
        );
        let cluster = encode_frame(&MetadataRecord::ClusterCreated {
            cluster_id: "c".repeat(CLUSTER_ID_BYTES_MAX),
        });
        assert!(cluster.len() <= METADATA_RECORD_BYTES_BOUND);
    }

    #[test]
    fn corrupt_frame_stops_replay() {
        let a = encode_frame(&MetadataRecord::TopicDeleted { name: "x".into() });
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
                reason: "its length or checksum is wrong and valid records follow it"
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
}
