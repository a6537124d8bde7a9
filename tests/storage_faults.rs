//! Fault tests of the partition log on the faulty in-memory disk (`testing::FaultFs`), in
//! process, seconds each: torn tails at every 512-byte boundary, EIO on fdatasync, ENOSPC on
//! write and on allocation, crashes with unsynced writes dropped or torn at random points of a
//! produce workload, truncation into closed segments with follower appends after it, and a
//! flipped bit in a closed segment.
//! Every test checks the broker's promise: an acknowledged record is never lost.

use std::path::{Path, PathBuf};

use tusk::protocol::record_batch::{self, parse_header};
use tusk::protocol::types::{LeaderEpoch, Offset, TopicPartition};
use tusk::runtime::env::Env;
use tusk::runtime::fs::Fs;
use tusk::storage::{AppendOutcome, Error, FlushPolicy, LogConfig, Partition, PartitionHandle};
use tusk::testing::{Fault, FaultFs, ManualClock, Op, SplitMix};

fn dir() -> PathBuf {
    PathBuf::from("/data/t-0")
}

fn config(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        segment_ms: u64::MAX / 2,
        retention_ms: -1,
        retention_bytes: -1,
        message_max_bytes: 1 << 20,
        flush: FlushPolicy::Always,
        tail_cache_bytes: 64 << 10,
        index_interval_bytes: 4096,
        group_commit: true,
    }
}

fn env_on(fs: &FaultFs, seed: u64) -> Env {
    tusk::testing::env(fs, &ManualClock::new(1_700_000_000_000), seed)
}

/// A fresh disk with the data directory made durable.
fn fresh_fs() -> FaultFs {
    let fs = FaultFs::new();
    futures_lite::future::block_on(async {
        fs.create_dir_all(&dir()).await.unwrap();
        fs.sync_dir(Path::new("/")).await.unwrap();
        fs.sync_dir(Path::new("/data")).await.unwrap();
    });
    fs
}

async fn open(env: &Env, segment_bytes: u64) -> Result<PartitionHandle, Error> {
    Partition::open(
        env,
        &dir(),
        TopicPartition::new("t", 0),
        config(segment_bytes),
        LeaderEpoch(0),
    )
    .await
}

/// A batch of `count` records whose values name `id`.
fn batch(id: u64, count: i32, value_bytes: usize) -> Vec<u8> {
    let mut value = format!("{id:016}").into_bytes();
    value.resize(value_bytes.max(16), b'.');
    record_batch::encode_uncompressed(count, None, &value, 1000 + id as i64, 1)
}

/// An idempotent batch from producer 7, epoch 0.
fn idempotent(first_sequence: i32, count: i32) -> Vec<u8> {
    let mut b = record_batch::encode_uncompressed(count, None, &[b'i'; 200], 0, 0);
    b[43..51].copy_from_slice(&7i64.to_be_bytes());
    b[51..53].copy_from_slice(&0i16.to_be_bytes());
    b[53..57].copy_from_slice(&first_sequence.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// Appends and waits until durable; the batch's base offset.
async fn append_acked(part: &PartitionHandle, bytes: &[u8]) -> Result<Offset, Error> {
    match Partition::append(part, bytes)? {
        AppendOutcome::Appended {
            base_offset,
            durable,
        } => {
            durable.await.expect("the writer answers")?;
            Ok(base_offset)
        }
        AppendOutcome::Duplicate { base_offset } => Ok(base_offset),
    }
}

/// Every batch of the log from its start: (base offset, the id its values carry).
async fn read_all(part: &PartitionHandle) -> Vec<(Offset, u64)> {
    let mut out = Vec::new();
    let mut next = part.borrow().log_start();
    loop {
        let read = Partition::read(part, next, 1 << 20).await.expect("read");
        if read.records.is_empty() {
            return out;
        }
        let mut at = 0;
        while at < read.records.len() {
            let h = parse_header(&read.records[at..], usize::MAX, true).expect("a valid batch");
            let mut id = None;
            record_batch::for_each_record(&read.records[at..], &h, |_, _, v| {
                let v = v.expect("a value");
                id.get_or_insert_with(|| std::str::from_utf8(&v[..16]).unwrap().parse().unwrap());
            });
            if h.base_offset >= next {
                out.push((h.base_offset, id.expect("a record")));
            }
            next = h.last_offset().next();
            at += h.total_bytes;
        }
    }
}

fn run<T: 'static>(f: impl std::future::Future<Output = T> + 'static) -> T {
    tusk::runtime::io::run_local(f)
}

/// D3: the active segment's last 64 KiB cut at every 512-byte boundary and filled with zeros,
/// garbage or stale bytes: the partition opens with the longest valid prefix, every record
/// acknowledged below the cut is there, and the rebuilt index equals a fresh build of that
/// prefix.
#[test]
fn torn_tail_keeps_the_longest_valid_prefix_at_every_boundary() {
    let fs = fresh_fs();
    let env = env_on(&fs, 1);
    let ends: Vec<(Offset, u64)> = run(async move {
        let part = open(&env, 64 << 20).await.unwrap();
        let mut ends = Vec::new();
        for id in 0..120u64 {
            append_acked(&part, &batch(id, 2, 700)).await.unwrap();
            let p = part.borrow();
            ends.push((p.log_end(), p.size_bytes()));
        }
        ends
    });
    let log = dir().join("00000000000000000000.log");
    let clean = fs.contents(&log).unwrap();
    let valid_len = ends.last().unwrap().1 as usize;
    let start = valid_len.saturating_sub(64 * 1024) / 512 * 512;
    let mut rng = SplitMix(9);
    for cut in (start..valid_len).step_by(512) {
        for fill in 0..3 {
            let mut torn = clean[..cut].to_vec();
            let tail = clean.len() - cut;
            match fill {
                0 => torn.extend(std::iter::repeat_n(0u8, tail)),
                1 => torn.extend((0..tail).map(|_| rng.next_u64() as u8)),
                _ => torn.extend_from_slice(&clean[cut - 512..][..tail]),
            }
            let expected = ends.iter().rfind(|(_, end)| *end as usize <= cut);
            let (expected_end, _) = expected.copied().unwrap_or((Offset(0), 0));
            let damaged = fs.crash(0);
            damaged.put(&log, &torn);
            let prefix = damaged.clone();
            let (got_end, rebuilt, kept) = run(async move {
                let env = env_on(&prefix, 2);
                let part = open(&env, 64 << 20).await.unwrap();
                let kept = read_all(&part).await;
                let p = part.borrow();
                (p.log_end(), p.active_index(), kept)
            });
            assert_eq!(got_end, expected_end, "cut at {cut}, fill {fill}");
            assert_eq!(
                kept.len() as i64 * 2,
                expected_end.0,
                "cut at {cut}, fill {fill}"
            );
            for (i, (offset, id)) in kept.iter().enumerate() {
                assert_eq!((*offset, *id), (Offset(i as i64 * 2), i as u64));
            }
            let fresh = fresh_build(kept.len() as u64);
            assert_eq!(rebuilt, fresh, "index at cut {cut}, fill {fill}");
        }
    }
}

/// The index of a partition built by appending batches 0..count afresh.
fn fresh_build(count: u64) -> Vec<u8> {
    let fs = fresh_fs();
    run(async move {
        let env = env_on(&fs, 3);
        let part = open(&env, 64 << 20).await.unwrap();
        for id in 0..count {
            append_acked(&part, &batch(id, 2, 700)).await.unwrap();
        }
        let index = part.borrow().active_index();
        index
    })
}

/// D5: EIO on fdatasync: the write it covered is not acknowledged, the partition refuses
/// produces from then on (a failed fsync is never retried), and a restart recovers every
/// record acknowledged before it.
#[test]
fn eio_on_fdatasync_acknowledges_nothing_and_fails_the_partition() {
    let fs = fresh_fs();
    let env = env_on(&fs, 4);
    let probe = fs.clone();
    run(async move {
        let part = open(&env, 64 << 20).await.unwrap();
        for id in 0..10 {
            append_acked(&part, &batch(id, 1, 100)).await.unwrap();
        }
        probe.inject(Fault {
            op: Op::Fdatasync,
            path: ".log".into(),
            errno: libc::EIO,
            times: 1,
        });
        let failed = append_acked(&part, &batch(10, 1, 100)).await;
        assert!(
            matches!(failed, Err(Error::Io(ref e)) if e.errno == Some(libc::EIO)),
            "{failed:?}"
        );
        assert_eq!(
            part.borrow().high_watermark(),
            Offset(10),
            "nothing of it acknowledged"
        );
        let after = Partition::append(&part, &batch(11, 1, 100));
        assert!(
            matches!(after, Err(Error::Failed(_))),
            "the partition refuses produces"
        );
    });
    for seed in 0..16 {
        let crashed = fs.crash(seed);
        let kept = run(async move {
            let env = env_on(&crashed, seed);
            let part = open(&env, 64 << 20).await.unwrap();
            read_all(&part).await
        });
        assert!(
            kept.len() >= 10,
            "seed {seed}: acknowledged records lost: {kept:?}"
        );
        for (i, (offset, id)) in kept.iter().take(10).enumerate() {
            assert_eq!((*offset, *id), (Offset(i as i64), i as u64));
        }
    }
}

/// D6 in process: ENOSPC on the write and on the allocation before it. Produce gets an error,
/// the partition is not failed, the next produce gets the failed batch's offsets once space
/// returns, and nothing acknowledged is lost (through a crash too).
#[test]
fn enospc_on_write_and_allocation_rewinds_and_resumes() {
    for op in [Op::Write, Op::Allocate] {
        let fs = fresh_fs();
        let env = env_on(&fs, 5);
        let probe = fs.clone();
        run(async move {
            let part = open(&env, 64 << 20).await.unwrap();
            let mut id = 0;
            // Fill close to the first allocation (1 MiB), so that the next writes need one.
            while part.borrow().size_bytes() < 980 << 10 {
                append_acked(&part, &batch(id, 4, 1000)).await.unwrap();
                id += 1;
            }
            let end = part.borrow().log_end();
            // The next batch (120 KB) must extend the file past its first allocation.
            probe.inject(Fault {
                op,
                path: ".log".into(),
                errno: libc::ENOSPC,
                times: 3,
            });
            // A failed allocation is retried with the write's own size, so one attempt may
            // use up two faults and a later one may succeed: stop at the first success.
            let mut refused = 0;
            let mut landed = None;
            for _ in 0..3 {
                match append_acked(&part, &batch(id, 4, 30_000)).await {
                    Err(e) => {
                        assert!(e.is_exhaustion(), "{op:?}: {e}");
                        refused += 1;
                        assert_eq!(
                            part.borrow().log_end(),
                            end,
                            "{op:?}: log_end rewinds to written"
                        );
                    }
                    Ok(at) => {
                        landed = Some(at);
                        break;
                    }
                }
            }
            assert!(refused > 0, "{op:?}: the fault was hit");
            probe.clear_faults();
            let again = match landed {
                Some(at) => at,
                None => append_acked(&part, &batch(id, 4, 30_000)).await.unwrap(),
            };
            assert_eq!(
                again, end,
                "{op:?}: the next produce gets the failed batch's offsets"
            );
            if op == Op::Write {
                // An idempotent producer's sequence is rolled back with the failed batch: its
                // retry is appended (at the same offsets), not taken for a duplicate of a
                // batch that is not in the log.
                let before = part.borrow().log_end();
                probe.inject(Fault {
                    op,
                    path: ".log".into(),
                    errno: libc::ENOSPC,
                    times: 1,
                });
                assert!(append_acked(&part, &idempotent(0, 3)).await.is_err());
                assert_eq!(part.borrow().log_end(), before);
                let retried = append_acked(&part, &idempotent(0, 3)).await.unwrap();
                assert_eq!(retried, before);
                assert_eq!(part.borrow().log_end(), Offset(before.0 + 3));
                let next = append_acked(&part, &idempotent(3, 3)).await.unwrap();
                assert_eq!(next, Offset(before.0 + 3));
            }
        });
        for seed in 0..8 {
            let crashed = fs.crash(seed);
            run(async move {
                let env = env_on(&crashed, seed);
                let part = open(&env, 64 << 20).await.unwrap();
                let p = part.borrow();
                assert!(p.log_end() >= p.high_watermark());
            });
        }
    }
}

/// D2: crashes at random points of a produce workload (appends of several sizes, some
/// waited on, some left in flight), with every write not covered by an fdatasync kept,
/// dropped or torn at random: no acknowledged record is ever lost, and none appears at
/// another offset.
#[test]
fn crashes_at_random_points_lose_no_acknowledged_record() {
    for seed in 0..150u64 {
        let fs = fresh_fs();
        let env = env_on(&fs, seed);
        let probe = fs.clone();
        let (acked, crashed) = run(async move {
            let mut rng = SplitMix(seed);
            let part = open(&env, 256 << 10).await.unwrap();
            let steps = 5 + rng.below(60);
            let mut acked: Vec<(Offset, u64)> = Vec::new();
            let mut waiting = Vec::new();
            for id in 0..steps {
                let size = [100, 3000, 40_000][rng.below(3) as usize];
                let bytes = batch(id, 1 + rng.below(3) as i32, size);
                if let Ok(AppendOutcome::Appended {
                    base_offset,
                    durable,
                }) = Partition::append(&part, &bytes)
                {
                    waiting.push((base_offset, id, durable));
                }
                if rng.below(3) == 0 {
                    for (offset, id, durable) in waiting.drain(..) {
                        if matches!(durable.await, Ok(Ok(()))) {
                            acked.push((offset, id));
                        }
                    }
                }
                if rng.below(4) == 0 {
                    tusk::runtime::io::yield_now().await;
                }
            }
            // The power fails now: whatever is in flight is left as it is.
            let crashed = probe.crash(seed);
            (acked, crashed)
        });
        let kept = run(async move {
            let env = env_on(&crashed, seed);
            let part = open(&env, 256 << 10).await.unwrap();
            read_all(&part).await
        });
        for (offset, id) in &acked {
            assert!(
                kept.contains(&(*offset, *id)),
                "seed {seed}: acknowledged batch {id} at offset {} lost; kept {kept:?}",
                offset.0
            );
        }
    }
}

/// Truncation reaches into closed segments and rolls back the index, the idempotence state
/// and the epoch cache; a follower append then continues from the cut with the leader's
/// offsets and epochs, and all of it survives a crash.
#[test]
fn truncate_into_a_closed_segment_then_follow() {
    let fs = fresh_fs();
    let env = env_on(&fs, 6);
    let probe = fs.clone();
    run(async move {
        let part = open(&env, 1 << 20).await.unwrap();
        // 30 idempotent batches of 3 records (~700 bytes each) and 3 big ones: several segments.
        for i in 0..30 {
            append_acked(&part, &idempotent(i * 3, 3)).await.unwrap();
        }
        for id in 0..3 {
            append_acked(&part, &batch(id, 1, 600_000)).await.unwrap();
        }
        assert!(part.borrow().segment_count() >= 3, "segments rolled");
        part.borrow_mut().set_leader_epoch(LeaderEpoch(3));
        append_acked(&part, &batch(99, 1, 100)).await.unwrap();
        assert_eq!(
            part.borrow().epochs().latest(),
            Some((LeaderEpoch(3), Offset(93)))
        );
        // Cut inside the idempotent run: batch 20 (offsets 60..63) and everything after it go.
        let end = Partition::truncate_to(&part, Offset(61)).await.unwrap();
        assert_eq!(end, Offset(60), "a cut inside a batch keeps none of it");
        {
            let p = part.borrow();
            assert_eq!((p.log_end(), p.high_watermark()), (Offset(60), Offset(60)));
            assert_eq!(p.segment_count(), 1, "later segments removed");
            assert_eq!(p.epochs().latest(), Some((LeaderEpoch(0), Offset(0))));
        }
        // The producer's state is rolled back: its batch at sequence 60 is new again.
        match Partition::append(&part, &idempotent(60, 3)).unwrap() {
            AppendOutcome::Appended {
                base_offset,
                durable,
            } => {
                assert_eq!(base_offset, Offset(60));
                durable.await.unwrap().unwrap();
            }
            AppendOutcome::Duplicate { .. } => {
                panic!("a truncated batch was taken for a duplicate")
            }
        }
        let _ = Partition::truncate_to(&part, Offset(60)).await.unwrap();
        // A follower append: the leader's offsets and epochs, kept as they are.
        let mut b = batch(7, 2, 100);
        record_batch::assign_offset(&mut b, Offset(60), LeaderEpoch(5));
        let durable = Partition::append_follower(&part, bytes::Bytes::from(b.clone())).unwrap();
        durable.await.unwrap().unwrap();
        let mut gap = batch(8, 1, 100);
        record_batch::assign_offset(&mut gap, Offset(70), LeaderEpoch(5));
        assert!(matches!(
            Partition::append_follower(&part, bytes::Bytes::from(gap)),
            Err(Error::NotContiguous { .. })
        ));
        let p = part.borrow();
        assert_eq!(p.log_end(), Offset(62));
        assert_eq!(
            p.epochs().end_offset_for(LeaderEpoch(4), p.log_end()),
            Some((LeaderEpoch(0), Offset(60)))
        );
    });
    for seed in 0..16 {
        let crashed = probe.crash(seed);
        run(async move {
            let env = env_on(&crashed, seed);
            let part = open(&env, 1 << 20).await.unwrap();
            let p = part.borrow();
            assert_eq!(p.log_end(), Offset(62), "seed {seed}");
            assert_eq!(
                p.epochs().latest(),
                Some((LeaderEpoch(5), Offset(60))),
                "seed {seed}"
            );
        });
    }
}

/// A flipped bit in a closed segment is damage, not a torn tail: once the segment has to be
/// scanned (its index unreadable), the partition refuses to open and names the file and the
/// position of the damaged batch; nothing is cut. (With a valid index a closed segment is
/// trusted at start: finding bit rot in acknowledged data is the replicas' job.)
#[test]
fn a_flipped_bit_in_a_closed_segment_is_refused_not_cut() {
    let fs = fresh_fs();
    let env = env_on(&fs, 8);
    run(async move {
        let part = open(&env, 1 << 20).await.unwrap();
        for id in 0..20 {
            append_acked(&part, &batch(id, 2, 100_000)).await.unwrap();
        }
        assert!(part.borrow().segment_count() >= 2, "segments rolled");
    });
    let first = dir().join("00000000000000000000.log");
    let clean = fs.contents(&first).expect("the first segment");
    let second_batch = parse_header(&clean, usize::MAX, true)
        .expect("a batch")
        .total_bytes;
    for (byte, expect_position) in [(100, 0), (second_batch + 5_000, second_batch)] {
        let damaged = fs.crash(0);
        damaged.flip_bit(&first, byte, 3);
        damaged.put(&dir().join("00000000000000000000.index"), b"not an index");
        let before = damaged.contents(&first).unwrap();
        let opened = run({
            let damaged = damaged.clone();
            async move { open(&env_on(&damaged, 9), 1 << 20).await.map(|_| ()) }
        });
        match opened {
            Err(Error::Corrupt { path, position, .. }) => {
                assert_eq!(path, first, "byte {byte}");
                assert_eq!(position, expect_position as u64, "byte {byte}");
            }
            other => panic!("byte {byte}: a damaged closed segment opened: {other:?}"),
        }
        assert_eq!(
            damaged.contents(&first).unwrap(),
            before,
            "byte {byte}: the damaged segment is left as it was"
        );
    }
}

/// A follower append that fails for lack of space takes back the epochs its batches began,
/// with the batches: fetched again, the same batches append (a kept epoch 5 used to refuse
/// the epoch-4 batch before it forever, as "epochs never go back").
#[test]
fn a_rewound_follower_append_forgets_its_epochs() {
    let fs = fresh_fs();
    let env = env_on(&fs, 9);
    let probe = fs.clone();
    run(async move {
        let part = open(&env, 64 << 20).await.unwrap();
        let mut a = batch(1, 2, 100);
        record_batch::assign_offset(&mut a, Offset(0), LeaderEpoch(4));
        let mut b = batch(2, 2, 100);
        record_batch::assign_offset(&mut b, Offset(2), LeaderEpoch(5));
        let payload: Vec<u8> = [a, b].concat();
        probe.inject(Fault {
            op: Op::Write,
            path: ".log".into(),
            errno: libc::ENOSPC,
            times: 1,
        });
        let durable =
            Partition::append_follower(&part, bytes::Bytes::from(payload.clone())).unwrap();
        assert!(durable.await.unwrap().is_err(), "the write fails");
        assert_eq!(part.borrow().log_end(), Offset(0), "rewound");
        assert_eq!(part.borrow().epochs().latest(), None, "epochs taken back");
        probe.clear_faults();
        let durable = Partition::append_follower(&part, bytes::Bytes::from(payload)).unwrap();
        durable.await.unwrap().unwrap();
        assert_eq!(
            part.borrow().epochs().latest(),
            Some((LeaderEpoch(5), Offset(2)))
        );
    });
}

/// A follower whose log ends below its leader's log start starts over there: every segment
/// goes, the log is empty at the leader's start with no epochs and no idempotence state, the
/// leader's next batch appends there, and the log reopens from the disk the same way.
#[test]
fn a_follower_below_its_leaders_log_start_restarts_there() {
    let fs = fresh_fs();
    let env = env_on(&fs, 10);
    run(async move {
        let part = open(&env, 1 << 20).await.unwrap();
        let mut a = batch(1, 4, 300_000);
        record_batch::assign_offset(&mut a, Offset(0), LeaderEpoch(3));
        let mut b = batch(2, 4, 900_000);
        record_batch::assign_offset(&mut b, Offset(4), LeaderEpoch(3));
        for payload in [a, b] {
            let durable = Partition::append_follower(&part, bytes::Bytes::from(payload)).unwrap();
            durable.await.unwrap().unwrap();
        }
        assert_eq!(part.borrow().log_end(), Offset(8));
        assert!(
            Partition::restart_at(&part, Offset(5)).await.is_err(),
            "a restart never goes backwards"
        );
        Partition::restart_at(&part, Offset(500)).await.unwrap();
        {
            let p = part.borrow();
            assert_eq!(
                (p.log_start(), p.log_end(), p.flushed(), p.high_watermark()),
                (Offset(500), Offset(500), Offset(500), Offset(500)),
                "{}",
                p.state()
            );
            assert_eq!(p.epochs().latest(), None);
            assert_eq!(p.segment_count(), 1);
        }
        let mut c = batch(3, 2, 100);
        record_batch::assign_offset(&mut c, Offset(500), LeaderEpoch(6));
        let durable = Partition::append_follower(&part, bytes::Bytes::from(c)).unwrap();
        durable.await.unwrap().unwrap();
        drop(part);
        let part = open(&env, 1 << 20).await.unwrap();
        let p = part.borrow();
        assert_eq!(
            (p.log_start(), p.log_end()),
            (Offset(500), Offset(502)),
            "{}",
            p.state()
        );
        assert_eq!(p.epochs().latest(), Some((LeaderEpoch(6), Offset(500))));
    });
}
