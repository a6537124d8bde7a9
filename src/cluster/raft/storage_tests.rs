//! The Raft storage against openraft's own storage suite, and against crashes, torn tails,
//! damage and failed syncs on the faulty disk.

use std::path::Path;

use openraft::storage::{IOFlushed, RaftLogStorage, RaftStateMachine};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::{AsyncRuntime, EntryPayload, RaftLogReader, RaftSnapshotBuilder, StorageError};

use super::state_machine::Applied;
use super::*;
use crate::runtime::fs::Fs;
use crate::runtime::raft::GlommioRuntime;
use crate::testing::{Fault, FaultFs, ManualClock, Op};

const DIR: &str = "/data";

fn env(fs: &FaultFs, seed: u64) -> crate::runtime::env::Env {
    crate::testing::env(fs, &ManualClock::new(0), seed)
}

async fn open(fs: &FaultFs) -> std::io::Result<(RaftLogStore, MetadataStateMachine)> {
    let env = env(fs, 1);
    fs.create_dir_all(Path::new(DIR)).await.unwrap();
    fs.sync_dir(Path::new("/")).await.unwrap();
    let log = RaftLogStore::open(&env, Path::new(DIR)).await?;
    let sm = MetadataStateMachine::open(&env, Path::new(DIR)).await?;
    Ok((log, sm))
}

/// Builds a store on a new faulty disk for each of the suite's tests.
struct Builder;

impl StoreBuilder<TypeConfig, RaftLogStore, MetadataStateMachine> for Builder {
    async fn build(
        &self,
    ) -> Result<((), RaftLogStore, MetadataStateMachine), StorageError<TypeConfig>> {
        let (log, sm) = open(&FaultFs::new()).await.expect("a new store opens");
        Ok(((), log, sm))
    }
}

/// openraft's storage conformance suite: log state, reads, appends, truncation, purges,
/// votes, memberships, apply and snapshot transfer.
#[test]
fn openraft_storage_suite_passes() {
    GlommioRuntime::new(1).block_on(async {
        Suite::test_all(Builder)
            .await
            .expect("openraft's storage suite");
    });
}

fn log_id(term: u64, index: u64) -> LogId {
    openraft::LogId::new(
        openraft::impls::leader_id_adv::LeaderId { term, node_id: 1 },
        index,
    )
}

fn topic(name: &str, index: u64) -> Entry {
    Entry {
        log_id: log_id(1, index),
        payload: EntryPayload::Normal(MetadataRecord::TopicCreated {
            name: name.into(),
            topic_id: [index as u8; 16],
            partitions: 3,
            configs: vec![("retention.ms".into(), "1000".into())],
        }),
    }
}

async fn append(log: &mut RaftLogStore, entries: Vec<Entry>) -> std::io::Result<()> {
    log.append(entries, IOFlushed::noop()).await
}

async fn indexes(log: &mut RaftLogStore) -> Vec<u64> {
    log.try_get_log_entries(0..)
        .await
        .unwrap()
        .iter()
        .map(|e| e.log_id.index)
        .collect()
}

/// Every appended entry and the saved vote survive a crash that drops or tears whatever was
/// not synced; an append whose sync failed leaves nothing behind, and the same index can be
/// appended again.
#[test]
fn acknowledged_entries_and_vote_survive_crashes() {
    for seed in 0..24 {
        let fs = FaultFs::new();
        GlommioRuntime::new(1).block_on(async {
            let (mut log, _) = open(&fs).await.unwrap();
            append(&mut log, (0..3).map(|i| topic("a", i)).collect())
                .await
                .unwrap();
            let vote = Vote::new(2, 1);
            log.save_vote(&vote).await.unwrap();
            fs.inject(Fault {
                op: Op::Fdatasync,
                path: "__raft/log".into(),
                errno: libc::EIO,
                times: 1,
            });
            assert!(append(&mut log, vec![topic("lost", 3)]).await.is_err());
            append(&mut log, vec![topic("b", 3)]).await.unwrap();
        });
        let after = fs.crash(seed);
        GlommioRuntime::new(1).block_on(async {
            let (mut log, _) = open(&after)
                .await
                .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            assert_eq!(indexes(&mut log).await, vec![0, 1, 2, 3], "seed {seed}");
            let last = log.try_get_log_entries(3..4).await.unwrap();
            match &last[0].payload {
                EntryPayload::Normal(MetadataRecord::TopicCreated { name, .. }) => {
                    assert_eq!(name, "b", "seed {seed}")
                }
                other => panic!("seed {seed}: {other:?}"),
            }
            assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(2, 1)));
        });
    }
}

/// Truncation and purges are durable, and the log reopens with its purged id and the rest.
#[test]
fn truncation_and_purge_survive_reopen() {
    let fs = FaultFs::new();
    GlommioRuntime::new(1).block_on(async {
        let (mut log, _) = open(&fs).await.unwrap();
        append(&mut log, (0..10).map(|i| topic("t", i)).collect())
            .await
            .unwrap();
        log.truncate_after(Some(log_id(1, 6))).await.unwrap();
        log.purge(log_id(1, 2)).await.unwrap();
        append(&mut log, vec![topic("t", 7)]).await.unwrap();
        assert!(
            append(&mut log, vec![topic("gap", 9)]).await.is_err(),
            "a gap in the log is refused"
        );
    });
    let after = fs.crash(7);
    GlommioRuntime::new(1).block_on(async {
        let (mut log, _) = open(&after).await.unwrap();
        assert_eq!(indexes(&mut log).await, vec![3, 4, 5, 6, 7]);
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 2)));
        assert_eq!(state.last_log_id, Some(log_id(1, 7)));
    });
}

/// Byte offsets of the frames of a log file (header first).
fn frame_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some((_, total)) = crate::storage::framing::unframe_prefix(
        &bytes[pos..],
        crate::constants::RAFT_ENTRY_BYTES_MAX,
    ) {
        out.push(pos);
        pos += total;
    }
    out
}

/// A torn last frame is cut, and so is damage inside the last append (its frames share one
/// fdatasync, which the disk may persist in any order); damage to an earlier append, with
/// valid frames after it, refuses the start, naming the file.
#[test]
fn torn_tail_is_cut_and_damage_refuses_the_start() {
    let fs = FaultFs::new();
    let path = Path::new(DIR).join(RAFT_DIR).join("log");
    GlommioRuntime::new(1).block_on(async {
        let (mut log, _) = open(&fs).await.unwrap();
        append(&mut log, (0..3).map(|i| topic("t", i)).collect())
            .await
            .unwrap();
        append(&mut log, (3..6).map(|i| topic("t", i)).collect())
            .await
            .unwrap();
    });
    let clean = fs.contents(&path).unwrap();
    let frames = frame_offsets(&clean);
    assert_eq!(frames.len(), 7, "a header and six entries");

    let mut torn = clean.clone();
    torn.extend([0, 0, 0, 40, 1, 2, 3]);
    fs.put(&path, &torn);
    GlommioRuntime::new(1).block_on(async {
        let (mut log, _) = open(&fs).await.unwrap();
        assert_eq!(indexes(&mut log).await, vec![0, 1, 2, 3, 4, 5]);
    });
    assert_eq!(fs.contents(&path).unwrap(), clean, "the torn tail is cut");

    // Entry 4's frame lost, entry 5's persisted: the last append is cut from entry 4 on.
    let mut last_append = clean.clone();
    last_append[frames[5] + 9] ^= 0x55;
    fs.put(&path, &last_append);
    GlommioRuntime::new(1).block_on(async {
        let (mut log, _) = open(&fs).await.unwrap();
        assert_eq!(indexes(&mut log).await, vec![0, 1, 2, 3]);
    });

    // Entry 1 damaged, with the rest of its append and a later append after it: refused.
    let mut damaged = clean.clone();
    damaged[frames[2] + 9] ^= 0x55;
    fs.put(&path, &damaged);
    GlommioRuntime::new(1).block_on(async {
        let e = open(&fs).await.err().expect("damage refuses the start");
        assert!(e.to_string().contains("__raft/log is corrupt"), "{e}");
    });
}

/// Applied records build the image; a snapshot of it survives a restart, and a reader behind
/// the snapshot gets the image while one past it gets the later records.
#[test]
fn state_machine_snapshots_rebuild_the_image() {
    let fs = FaultFs::new();
    let image = GlommioRuntime::new(1).block_on(async {
        let (_, mut sm) = open(&fs).await.unwrap();
        let entries = (0..4).map(|i| Ok((topic(&format!("t{i}"), i), None)));
        sm.apply(futures_lite::stream::iter(entries)).await.unwrap();
        let snap = sm.build_snapshot().await.unwrap();
        assert_eq!(snap.meta.last_log_id, Some(log_id(1, 3)));
        let later = vec![Ok((topic("late", 4), None))];
        sm.apply(futures_lite::stream::iter(later)).await.unwrap();
        match sm.applied_since(Some(3)) {
            Applied::Records(r) => assert_eq!(r.len(), 1),
            other => panic!("{other:?}"),
        }
        match sm.applied_since(Some(1)) {
            Applied::Image(image, index) => {
                assert_eq!(image.topics.len(), 5);
                assert_eq!(index, Some(4));
            }
            other => panic!("{other:?}"),
        }
        let again = vec![Ok((topic("dup", 2), None))];
        assert!(
            sm.apply(futures_lite::stream::iter(again)).await.is_err(),
            "an entry is applied once"
        );
        sm.image()
    });
    GlommioRuntime::new(1).block_on(async {
        let (_, mut sm) = open(&fs).await.unwrap();
        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(
            applied,
            Some(log_id(1, 3)),
            "the snapshot's state, before the log"
        );
        let restored = sm.image();
        assert_eq!(restored.topics.len(), 4);
        assert_eq!(restored.topics["t0"], image.topics["t0"]);
    });
}
