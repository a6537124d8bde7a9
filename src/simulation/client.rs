//! The simulation's clients and checkers. Producers are idempotent, one batch in flight each,
//! retrying a batch (same sequence) until it is acknowledged, as librdkafka does with
//! `enable.idempotence`; a consumer reads every replica up to its high watermark. The checks
//! are the reliability catalogue's: no acknowledged record lost or duplicated, no offset read as
//! two values, one acknowledging leader per epoch, a leader's high watermark never moving back
//! within its epoch. Runs on: the simulation's thread.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use crate::protocol::record_batch::{self, parse_header};
use crate::protocol::types::{LeaderEpoch, Offset};
use crate::storage::{Partition, PartitionHandle};

/// A produce not answered within this long is sent again (to the leader named anew).
const RESEND_MS: u64 = 2_000;
const RETRY_BACKOFF_MS: u64 = 20;

/// A batch from producer `pid` at sequence `seq` of `count` records.
pub fn idempotent_batch(pid: i64, seq: i32, count: i32) -> Vec<u8> {
    let value = format!("{pid}:{seq}");
    let mut b = record_batch::encode_uncompressed(count, None, value.as_bytes(), 1_000, 1);
    b[43..51].copy_from_slice(&pid.to_be_bytes());
    b[51..53].copy_from_slice(&0i16.to_be_bytes());
    b[53..57].copy_from_slice(&seq.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// The batch in flight.
pub struct InFlight {
    pub seq: i32,
    pub count: i32,
    pub payload: Rc<Vec<u8>>,
    /// The attempt whose answer is awaited (`None`: not sent yet).
    pub attempt: Option<u64>,
    pub sent_at: Duration,
}

pub struct Producer {
    pub pid: i64,
    pub next_seq: i32,
    pub in_flight: Option<InFlight>,
    /// The leader last named (`None`: ask a broker).
    pub leader: Option<i32>,
    pub next_action: Duration,
    /// Which batch (sequence) each attempt carried.
    pub attempts: BTreeMap<u64, i32>,
    /// The longest time from a batch's first send to its acknowledgement.
    pub longest_wait: Duration,
    pub first_sent: Option<Duration>,
}

impl Producer {
    pub fn new(pid: i64) -> Producer {
        Producer {
            pid,
            next_seq: 0,
            in_flight: None,
            leader: None,
            next_action: Duration::ZERO,
            attempts: BTreeMap::new(),
            longest_wait: Duration::ZERO,
            first_sent: None,
        }
    }

    /// A failed attempt: the leader is asked anew, the batch sent again soon.
    pub fn failed(&mut self, attempt: u64, now: Duration) {
        if let Some(f) = &mut self.in_flight {
            if f.attempt == Some(attempt) {
                f.attempt = None;
                self.leader = None;
                self.next_action = now + Duration::from_millis(RETRY_BACKOFF_MS);
            }
        }
    }

    /// Whether the batch in flight waited too long for an answer.
    pub fn overdue(&self, now: Duration) -> bool {
        self.in_flight.as_ref().is_some_and(|f| {
            f.attempt.is_some() && now.saturating_sub(f.sent_at) >= Duration::from_millis(RESEND_MS)
        })
    }
}

/// What the checkers saw.
#[derive(Default)]
pub struct Checks {
    /// Acknowledged batches: (producer, sequence) → (base offset, records).
    pub acked: BTreeMap<(i64, i32), (Offset, i32)>,
    /// Which broker (id, incarnation) acknowledged in each leader epoch.
    pub ackers: BTreeMap<i32, (i32, i64)>,
    /// What consumers read: each offset → (producer, sequence of its record), and from which
    /// broker first.
    pub seen: BTreeMap<Offset, ((i64, i32), i32)>,
    /// Per (broker, incarnation, leader epoch): the leader's high watermark.
    pub hwm: BTreeMap<(i32, i64, i32), Offset>,
    /// Per (broker, incarnation): where the consumer read up to.
    pub read_upto: BTreeMap<(i32, i64), Offset>,
    pub violations: Vec<String>,
    pub records_acknowledged: u64,
}

impl Checks {
    /// An acknowledgement of (pid, seq) at `base` by `broker` leading at `epoch`.
    pub fn acked(
        &mut self,
        (pid, seq, count): (i64, i32, i32),
        base: Offset,
        broker: (i32, i64),
        epoch: LeaderEpoch,
    ) {
        match self.acked.get(&(pid, seq)) {
            Some((at, _)) if *at != base => self.violations.push(format!(
                "batch {pid}:{seq} acknowledged at offset {} and again at {}",
                at.0, base.0
            )),
            Some(_) => {}
            None => {
                self.acked.insert((pid, seq), (base, count));
                self.records_acknowledged += count as u64;
            }
        }
        match self.ackers.insert(epoch.0, broker) {
            Some(other) if other != broker => self.violations.push(format!(
                "brokers {}/{} and {}/{} (id/incarnation) both acknowledged in leader epoch {}",
                other.0, other.1, broker.0, broker.1, epoch.0
            )),
            _ => {}
        }
    }

    /// A leader's high watermark now; it must not move back within one epoch.
    pub fn leader_hwm(&mut self, key: (i32, i64, i32), hwm: Offset) {
        let before = self.hwm.insert(key, hwm);
        if let Some(before) = before.filter(|b| *b > hwm) {
            self.violations.push(format!(
                "broker {} (incarnation {}) leading at epoch {} moved its high watermark back from {} to {}",
                key.0, key.1, key.2, before.0, hwm.0
            ));
        }
    }

    /// Batches a consumer read from `broker`: each offset must always hold the same record
    /// (producer and sequence), whichever batch boundaries surround it.
    pub fn read(&mut self, broker: i32, batches: &[Batch]) {
        for b in batches {
            for i in 0..b.count {
                let offset = Offset(b.base.0 + i as i64);
                let record = (b.pid, b.seq + i);
                match self.seen.get(&offset) {
                    Some((before, first)) if *before != record => self.violations.push(format!(
                        "offset {} read as record {}:{} from broker {first} and as {}:{} \
                             from broker {broker}",
                        offset.0, before.0, before.1, record.0, record.1
                    )),
                    Some(_) => {}
                    None => {
                        self.seen.insert(offset, (record, broker));
                    }
                }
            }
        }
    }

    /// The final log (every replica agrees on it): each acknowledged batch where it was
    /// acknowledged, none twice. (lost, duplicated) records.
    pub fn final_log(&mut self, log: &[Batch]) -> (u64, u64) {
        let mut at: BTreeMap<(i64, i32), Vec<Offset>> = BTreeMap::new();
        for b in log {
            at.entry((b.pid, b.seq)).or_default().push(b.base);
        }
        let (mut lost, mut duplicated) = (0u64, 0u64);
        for ((pid, seq), (base, count)) in &self.acked {
            match at.get(&(*pid, *seq)) {
                Some(places) if places.contains(base) => {}
                Some(places) => {
                    lost += *count as u64;
                    self.violations.push(format!(
                        "batch {pid}:{seq} acknowledged at offset {} is at {places:?}",
                        base.0
                    ));
                }
                None => {
                    lost += *count as u64;
                    self.violations.push(format!(
                        "batch {pid}:{seq} acknowledged at offset {} is lost",
                        base.0
                    ));
                }
            }
        }
        for ((pid, seq), places) in &at {
            if places.len() > 1 {
                duplicated += (places.len() - 1) as u64;
                self.violations.push(format!(
                    "batch {pid}:{seq} is in the log {} times",
                    places.len()
                ));
            }
        }
        (lost, duplicated)
    }
}

/// A batch as read: its base offset, producer, first sequence and record count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub base: Offset,
    pub pid: i64,
    pub seq: i32,
    pub count: i32,
}

/// The batches of `log` from `from` up to its high watermark (`upto_end`: its log end).
pub async fn read_batches(
    log: &PartitionHandle,
    mut from: Offset,
    upto_end: bool,
) -> Result<Vec<Batch>, String> {
    let mut out = Vec::new();
    loop {
        let read = if upto_end {
            Partition::read_for_follower(log, from, 1 << 20).await
        } else {
            Partition::read(log, from, 1 << 20).await
        };
        let read = read.map_err(|e| format!("read at {}: {e}", from.0))?;
        if read.records.is_empty() {
            return Ok(out);
        }
        let mut at = 0;
        while at < read.records.len() {
            let h = parse_header(&read.records[at..], usize::MAX, true)
                .map_err(|e| format!("a batch at {} does not parse: {e:?}", from.0))?;
            if h.base_offset >= from {
                out.push(Batch {
                    base: h.base_offset,
                    pid: h.producer_id.0,
                    seq: h.base_sequence,
                    count: h.records_count,
                });
            }
            from = h.last_offset().next();
            at += h.total_bytes;
        }
    }
}
