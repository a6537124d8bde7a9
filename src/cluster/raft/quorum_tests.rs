//! Three quorum members in one executor, over real TCP on loopback, each on its own faulty
//! disk: they elect a leader, replicate a write to every image (also through the metadata
//! log seam, which a follower refuses), elect a new leader when the
//! old one stops, and the old one rejoins from what its disk held when it stopped.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use openraft::AsyncRuntime;

use super::*;
use crate::cluster::MetadataLog;
use crate::runtime::env::Env;
use crate::runtime::fs::Fs;
use crate::runtime::io;
use crate::runtime::raft::GlommioRuntime;
use crate::testing::FaultFs;

const DIR: &str = "/data";

/// The faulty disk with the real clock: Raft's timers and the network's timeouts must run.
fn env(fs: &FaultFs) -> Env {
    let real = Env::real();
    Env {
        fs: Rc::new(fs.clone()),
        clock: real.clock,
        rng: real.rng,
    }
}

async fn start(fs: &FaultFs, id: u64, voters: &BTreeMap<u64, SocketAddr>) -> QuorumMember {
    start_with(fs, QuorumConfig::new(id, voters.clone())).await
}

async fn start_with(fs: &FaultFs, config: QuorumConfig) -> QuorumMember {
    let id = config.node_id;
    fs.create_dir_all(Path::new(DIR)).await.unwrap();
    fs.sync_dir(Path::new("/")).await.unwrap();
    let listener = io::listen(config.voters[&id]).expect("the member's port is free");
    QuorumMember::start(&env(fs), Path::new(DIR), &config, listener)
        .await
        .unwrap_or_else(|e| panic!("member {id}: {e}"))
}

/// The leader every live member agrees on, other than `not`.
async fn agreed_leader(members: &BTreeMap<u64, QuorumMember>, not: Option<u64>) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut seen = Vec::new();
        for m in members.values() {
            seen.push(m.raft.current_leader().await);
        }
        if let Some(Some(l)) = seen.first() {
            if seen.iter().all(|s| *s == Some(*l)) && Some(*l) != not && members.contains_key(l) {
                return *l;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no agreed leader after 20 s: {seen:?}"
        );
        io::sleep(Duration::from_millis(20)).await;
    }
}

fn topic(name: &str) -> MetadataRecord {
    MetadataRecord::TopicCreated {
        name: name.into(),
        topic_id: [name.len() as u8; 16],
        partitions: 1,
        configs: vec![],
    }
}

/// Waits until every member's image has every topic in `names`.
async fn replicated(members: &BTreeMap<u64, QuorumMember>, names: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !members.values().all(|m| {
        let image = m.state_machine.image();
        names.iter().all(|n| image.topics.contains_key(*n))
    }) {
        assert!(
            Instant::now() < deadline,
            "{names:?} not on every member after 20 s"
        );
        io::sleep(Duration::from_millis(20)).await;
    }
}

/// Free ports, chosen by the kernel and released for the members to bind.
fn free_voters(n: u64) -> BTreeMap<u64, SocketAddr> {
    (1..=n)
        .map(|id| {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            (id, probe.local_addr().unwrap())
        })
        .collect()
}

fn topic_names(records: Vec<(u64, MetadataRecord)>) -> Vec<String> {
    records
        .into_iter()
        .filter_map(|(_, r)| match r {
            MetadataRecord::TopicCreated { name, .. } => Some(name),
            _ => None,
        })
        .collect()
}

/// A member that was down while the others compacted their logs past its position catches up
/// from the leader's snapshot (sent over the network), and a reader of its metadata log that
/// was behind the snapshot gets the image, whose changes create what it missed.
#[test]
fn a_member_behind_the_compacted_log_catches_up_from_a_snapshot() {
    GlommioRuntime::new(1).block_on(async {
        let disks: BTreeMap<u64, FaultFs> = (1..=3).map(|id| (id, FaultFs::new())).collect();
        let voters = free_voters(3);
        let config = |id| QuorumConfig {
            snapshot_every_entries: 20,
            ..QuorumConfig::new(id, voters.clone())
        };
        let mut members = BTreeMap::new();
        for (id, fs) in &disks {
            members.insert(*id, start_with(fs, config(*id)).await);
        }
        let leader = agreed_leader(&members, None).await;
        members[&leader]
            .raft
            .client_write(topic("early"))
            .await
            .unwrap();
        replicated(&members, &["early"]).await;
        let behind = *members.keys().find(|id| **id != leader).unwrap();
        members.remove(&behind).unwrap().stop().await;
        for i in 0..60 {
            members[&leader]
                .raft
                .client_write(topic(&format!("late-{i}")))
                .await
                .unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let metrics = members[&leader].raft.metrics().borrow_watched().clone();
            if metrics.purged.is_some_and(|p| p.index > 10) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the leader did not compact its log: snapshot {:?}, purged {:?}",
                metrics.snapshot,
                metrics.purged
            );
            io::sleep(Duration::from_millis(20)).await;
        }
        members.insert(behind, start_with(&disks[&behind], config(behind)).await);
        replicated(&members, &["early", "late-0", "late-59"]).await;
        let m = &members[&behind];
        let log = RaftMetadataLog::new(m.raft.clone(), m.state_machine.clone(), Path::new(DIR));
        let mut before = crate::cluster::MetadataImage::default();
        before.apply(&topic("early"));
        let committed = log.committed_from(2);
        assert!(
            matches!(committed, crate::cluster::Committed::Image { .. }),
            "a reader behind the snapshot gets the image"
        );
        let created = topic_names(committed.over(&before));
        assert_eq!(created.len(), 60, "{created:?}");
        assert!(!created.contains(&"early".to_string()));
        for (_, m) in std::mem::take(&mut members) {
            m.stop().await;
        }
    });
}

#[test]
fn three_members_elect_replicate_fail_over_and_rejoin() {
    GlommioRuntime::new(1).block_on(async {
        let disks: BTreeMap<u64, FaultFs> = (1..=3).map(|id| (id, FaultFs::new())).collect();
        let voters = free_voters(3);
        let mut members = BTreeMap::new();
        for (id, fs) in &disks {
            members.insert(*id, start(fs, *id, &voters).await);
        }
        let first = agreed_leader(&members, None).await;
        members[&first]
            .raft
            .client_write(topic("a"))
            .await
            .expect("the leader commits");
        replicated(&members, &["a"]).await;

        // Through the metadata log seam, as the controller proposes: a follower refuses and
        // names the leader; the leader's record reaches every member's committed records.
        let logs: BTreeMap<u64, RaftMetadataLog> = members
            .iter()
            .map(|(id, m)| {
                let log =
                    RaftMetadataLog::new(m.raft.clone(), m.state_machine.clone(), Path::new(DIR));
                (*id, log)
            })
            .collect();
        let follower = logs
            .keys()
            .copied()
            .find(|id| *id != first)
            .expect("two followers");
        let refused = logs[&follower]
            .propose(topic("no"))
            .await
            .expect_err("a follower refuses");
        assert!(
            refused
                .detail
                .contains(&format!("not the controller: node {first} is")),
            "{refused}"
        );
        let index = logs[&first]
            .propose(topic("via-log"))
            .await
            .expect("the leader commits");
        for log in logs.values() {
            log.wait_committed(index).await;
            assert!(log.committed_end() > index);
            let records = log
                .committed_from(0)
                .over(&crate::cluster::MetadataImage::default());
            let names: Vec<String> = records
                .into_iter()
                .filter_map(|(_, r)| match r {
                    MetadataRecord::TopicCreated { name, .. } => Some(name),
                    _ => None,
                })
                .collect();
            assert_eq!(names, vec!["a".to_string(), "via-log".to_string()]);
            assert!(log
                .committed_from(index + 1)
                .over(&Default::default())
                .is_empty());
        }
        drop(logs);

        let stopped_at = Instant::now();
        members.remove(&first).expect("a member").stop().await;
        let second = agreed_leader(&members, Some(first)).await;
        let failover = stopped_at.elapsed();
        members[&second]
            .raft
            .client_write(topic("bb"))
            .await
            .expect("the new leader commits with two of three");
        replicated(&members, &["a", "bb"]).await;
        eprintln!("leader {first} stopped; {second} leads after {failover:?}");

        // The old leader restarts from what its disk surely held (unsynced writes dropped);
        // with another voter list it refuses to start, naming the setting.
        let disk = disks[&first].crash(9);
        let mut moved = voters.clone();
        let spare = free_voters(1)[&1];
        moved.insert(first % 3 + 1, spare);
        let listener = io::listen(voters[&first]).unwrap();
        let refused = QuorumMember::start(
            &env(&disk),
            Path::new(DIR),
            &QuorumConfig::new(first, moved),
            listener,
        )
        .await
        .err()
        .expect("a changed voter list is refused");
        assert!(refused.contains("controller_quorum_voters"), "{refused}");
        members.insert(first, start(&disk, first, &voters).await);
        replicated(&members, &["a", "bb"]).await;
        for (_, m) in std::mem::take(&mut members) {
            m.stop().await;
        }
    });
}
