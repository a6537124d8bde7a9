//! Partition work on the shard that owns the partitions: appends, fetch reads, offset lookups,
//! and opening again partitions whose open failed. Runs on: the owner shard. Invariant: the
//! appends of one message happen without an await before them, in item order, so messages
//! that reach this shard in order append in order.

use std::rc::Rc;
use std::time::Duration;

use super::messages::{OpenPartition, PartitionError, PartitionRequest, PartitionResponse};
use super::Shard;
use crate::config::FetchPath;
use crate::protocol::types::{Offset, TopicPartition};
use crate::replication::{Acks, Produced, Replica};
use crate::storage::{FetchRecords, Partition, PartitionHandle};

impl Shard {
    /// Runs partition work for partitions this shard owns.
    pub async fn execute_local(
        &self,
        items: Vec<(TopicPartition, PartitionRequest)>,
    ) -> Vec<PartitionResponse> {
        let mut answers: Vec<Option<PartitionResponse>> = vec![None; items.len()];
        let mut run = LocalRun::default();
        // Partitions that are open go first, and nothing is awaited before their appends: the
        // order in which messages reach this shard stays the order of their appends (a
        // connection's produces to a partition must land in request order). Offline partitions
        // are opened again afterwards and served then.
        self.run_items(&items, &mut answers, &mut run, false).await;
        if answers.iter().any(|a| a.is_none()) {
            self.reopen_missing(&items).await;
            self.run_items(&items, &mut answers, &mut run, true).await;
        }
        self.finish_local(&items, answers, run).await
    }

    /// Appends the items at once, without awaiting anything, if they are all produces to
    /// partitions open here (the common case of a local produce): the caller then waits with
    /// `finish_local`. `None` if anything needs an await first (a fetch, an offline partition).
    pub fn start_appends(
        &self,
        items: &[(TopicPartition, PartitionRequest)],
    ) -> Option<(Vec<Option<PartitionResponse>>, LocalRun)> {
        // One lookup per item: the replicas, if every item is a produce to one open here.
        let replicas: Vec<Rc<Replica>> = items
            .iter()
            .map(|(tp, req)| match req {
                PartitionRequest::Produce { .. } => self.replica(tp),
                _ => None,
            })
            .collect::<Option<_>>()?;
        let mut run = LocalRun::default();
        let answers = items
            .iter()
            .zip(&replicas)
            .enumerate()
            .map(|(i, ((tp, req), replica))| Some(self.produce_one(i, replica, tp, req, &mut run)))
            .collect();
        Some((answers, run))
    }

    /// Waits for what the appends of a run left to wait for; the answers in item order.
    pub async fn finish_local(
        &self,
        items: &[(TopicPartition, PartitionRequest)],
        answers: Vec<Option<PartitionResponse>>,
        run: LocalRun,
    ) -> Vec<PartitionResponse> {
        let mut answers: Vec<PartitionResponse> = answers
            .into_iter()
            .map(|a| a.expect("every local item is answered"))
            .collect();
        // Appends first, all of them, so that they share the next group commit; then wait.
        for (i, done) in run.durable {
            if let Err(e) = done.wait().await {
                let error = super::replicas::replica_error(e);
                answers[i] = PartitionResponse::error_for(&items[i].1, error);
            }
        }
        for (i, replica, base_offset) in run.duplicates {
            let timeout = match &items[i].1 {
                PartitionRequest::Produce { timeout_ms, .. } => Duration::from_millis(*timeout_ms),
                _ => Duration::from_secs(30),
            };
            if let Err(e) = replica.wait_durable(base_offset, timeout).wait().await {
                let error = super::replicas::replica_error(e);
                answers[i] = PartitionResponse::error_for(&items[i].1, error);
            }
        }
        answers
    }

    /// Answers the unanswered items whose partitions are open; on the `last` pass the others
    /// are answered as missing.
    async fn run_items(
        &self,
        items: &[(TopicPartition, PartitionRequest)],
        answers: &mut [Option<PartitionResponse>],
        run: &mut LocalRun,
        last: bool,
    ) {
        for (i, (tp, req)) in items.iter().enumerate() {
            if answers[i].is_some() {
                continue;
            }
            let replica = match req {
                PartitionRequest::ReplicaFetch { .. } => self.any_replica(tp),
                _ => self.replica(tp),
            };
            match replica {
                Some(replica) => answers[i] = Some(self.run_one(i, &replica, tp, req, run).await),
                None if last => {
                    answers[i] = Some(PartitionResponse::error_for(req, self.missing_code(tp)))
                }
                None => {}
            }
        }
    }

    /// One item on its open partition. A produce appends without awaiting and leaves what to
    /// wait for in `run`.
    async fn run_one(
        &self,
        i: usize,
        replica: &Rc<Replica>,
        tp: &TopicPartition,
        req: &PartitionRequest,
        run: &mut LocalRun,
    ) -> PartitionResponse {
        let part = replica.log();
        match req {
            PartitionRequest::Produce { .. } => self.produce_one(i, replica, tp, req, run),
            PartitionRequest::Fetch {
                offset,
                max_bytes,
                request_bytes_max,
            } => {
                // The request-wide limit applies while reading: once it is spent, later
                // partitions are not read at all (the first non-empty one is always whole, so
                // a consumer can progress: KIP-74).
                let left = request_bytes_max.saturating_sub(run.fetched_bytes);
                let answer = if left == 0 && run.fetched_bytes > 0 {
                    let p = part.borrow();
                    PartitionResponse::Fetch {
                        error: None,
                        high_watermark: p.high_watermark(),
                        log_start: p.log_start(),
                        records: FetchRecords::Memory(bytes::Bytes::new()),
                    }
                } else {
                    let max = (*max_bytes).min(left.max(1));
                    self.fetch_local(part, *offset, max).await
                };
                if let PartitionResponse::Fetch { records, .. } = &answer {
                    run.fetched_bytes += records.len();
                }
                answer
            }
            PartitionRequest::ListOffsets { timestamp_ms } => {
                list_offset(part, *timestamp_ms).await
            }
            PartitionRequest::Describe => {
                let p = part.borrow();
                let offset_lag = match replica.following() {
                    Some(_) => p.hwm_cap().map_or(0, |hwm| (hwm.0 - p.log_end().0).max(0)),
                    None => 0,
                };
                PartitionResponse::Described {
                    error: None,
                    size_bytes: p.size_bytes(),
                    offset_lag,
                }
            }
            PartitionRequest::ReplicaFetch {
                follower,
                offset,
                current_epoch,
                last_fetched_epoch,
                max_bytes,
            } => {
                self.replica_fetch(
                    tp,
                    *follower,
                    *offset,
                    *current_epoch,
                    *last_fetched_epoch,
                    *max_bytes,
                )
                .await
            }
        }
    }

    /// One produce item on its open partition: appended at once (never awaits).
    fn produce_one(
        &self,
        i: usize,
        replica: &Rc<Replica>,
        tp: &TopicPartition,
        req: &PartitionRequest,
        run: &mut LocalRun,
    ) -> PartitionResponse {
        let PartitionRequest::Produce {
            payload,
            acks,
            timeout_ms,
        } = req
        else {
            unreachable!("produce_one takes produce items");
        };
        let log_start = replica.log().borrow().log_start();
        let timeout = Duration::from_millis(*timeout_ms);
        match replica.produce(payload, *acks, timeout) {
            Ok(Produced::Appended { base_offset, done }) => {
                if let Some(done) = done {
                    run.durable.push((i, done));
                }
                produce_ok(base_offset, log_start)
            }
            Ok(Produced::Duplicate { base_offset }) => {
                if *acks != Acks::None {
                    run.duplicates.push((i, replica.clone(), base_offset));
                }
                produce_ok(base_offset, log_start)
            }
            Err(e) => {
                tracing::debug!(partition = %tp, error = %e, "produce refused");
                PartitionResponse::error_for(req, super::replicas::replica_error(e))
            }
        }
    }

    /// The answer for a partition that is not open here: KAFKA_STORAGE_ERROR if the image
    /// names it (it is offline: its open failed), else UNKNOWN_TOPIC_OR_PARTITION.
    fn missing_code(&self, tp: &TopicPartition) -> PartitionError {
        let image = self.image();
        match image.topics.get(&tp.topic) {
            Some(t) if tp.partition.0 >= 0 && (tp.partition.0 as u32) < t.partitions => {
                PartitionError::Offline
            }
            _ => PartitionError::Unknown,
        }
    }

    /// Opens again the partitions of `items` that this shard owns and the image names but that
    /// are not open: their open failed (for lack of space or descriptors while the topic was
    /// created, say), and they must come back without a restart once the resource returns.
    /// Each is tried at most once per `REOPEN_INTERVAL_MS`.
    async fn reopen_missing(&self, items: &[(TopicPartition, PartitionRequest)]) {
        const REOPEN_INTERVAL_MS: u64 = 1000;
        if items.iter().all(|(tp, _)| self.partition(tp).is_some()) {
            return;
        }
        let image = self.image();
        let now = self.env.monotonic();
        let mut list = Vec::new();
        for (tp, _) in items {
            let Some(topic) = image.topics.get(&tp.topic) else {
                continue;
            };
            let in_range = tp.partition.0 >= 0 && (tp.partition.0 as u32) < topic.partitions;
            if !in_range || self.owner(tp) != self.id || self.partition(tp).is_some() {
                continue;
            }
            let mut tried = self.reopen_tried.borrow_mut();
            let recent = tried.get(tp).is_some_and(|at| {
                now.saturating_sub(*at) < Duration::from_millis(REOPEN_INTERVAL_MS)
            });
            if recent {
                continue;
            }
            tried.insert(tp.clone(), now);
            list.push(OpenPartition {
                tp: tp.clone(),
                log: self.config.topic_log_config(&topic.configs),
                topic_id: topic.topic_id,
            });
        }
        let ids: Vec<(TopicPartition, crate::protocol::types::TopicId)> =
            list.iter().map(|o| (o.tp.clone(), o.topic_id)).collect();
        for result in self.open_partitions(list).await {
            if let Err(e) = result {
                tracing::warn!(error = %e, "reopening an offline partition failed");
            }
        }
        // The topic may have been deleted (or re-created) while it opened.
        let image = self.image();
        let gone: Vec<TopicPartition> = ids
            .into_iter()
            .filter(|(tp, id)| image.topics.get(&tp.topic).map(|t| t.topic_id) != Some(*id))
            .map(|(tp, _)| tp)
            .collect();
        self.delete_partitions(&gone).await;
        for (tp, _) in items {
            if self.partition(tp).is_some() {
                self.reopen_tried.borrow_mut().remove(tp);
            }
        }
    }

    /// One partition's fetch read on its owner.
    async fn fetch_local(
        &self,
        part: &PartitionHandle,
        offset: Offset,
        max_bytes: usize,
    ) -> PartitionResponse {
        let zero_copy = self.config.fetch_path == FetchPath::Splice;
        match Partition::read_for_fetch(part, offset, max_bytes, zero_copy).await {
            Ok(r) => PartitionResponse::Fetch {
                error: None,
                high_watermark: r.high_watermark,
                log_start: r.log_start,
                records: r.records,
            },
            Err(e) => {
                let p = part.borrow();
                PartitionResponse::Fetch {
                    error: Some(PartitionError::Storage(e)),
                    high_watermark: p.high_watermark(),
                    log_start: p.log_start(),
                    records: FetchRecords::Memory(bytes::Bytes::new()),
                }
            }
        }
    }
}

/// What the items of one local run leave to wait for once every append is placed.
#[derive(Default)]
pub struct LocalRun {
    /// (item, what its produce waits for).
    durable: Vec<(usize, crate::replication::Done)>,
    /// (item, replica, original offset) of retried batches already in the log.
    duplicates: Vec<(usize, std::rc::Rc<crate::replication::Replica>, Offset)>,
    /// Record bytes the fetch items read so far (the request-wide limit).
    fetched_bytes: usize,
}

fn produce_ok(base_offset: Offset, log_start: Offset) -> PartitionResponse {
    PartitionResponse::Produce {
        error: None,
        base_offset,
        log_start,
    }
}

/// Kafka's ListOffsets: -2 earliest, -1 latest, -3 the last offset with the largest timestamp
/// in the log (-1/-1 when empty), anything else the first record at or after that
/// timestamp with its own timestamp (-1/-1 when there is none).
async fn list_offset(part: &PartitionHandle, timestamp_ms: i64) -> PartitionResponse {
    let (start, hwm, max_ts) = {
        let p = part.borrow();
        (p.log_start(), p.high_watermark(), p.max_timestamp_ms())
    };
    let answer = |error, offset, timestamp_ms| PartitionResponse::ListOffsets {
        error,
        offset,
        timestamp_ms,
    };
    match timestamp_ms {
        -2 => answer(None, start, -1),
        -1 => answer(None, hwm, -1),
        -3 if hwm > start => answer(None, Offset(hwm.0 - 1), max_ts),
        -3 => answer(None, Offset(-1), -1),
        t if t < 0 => answer(Some(PartitionError::InvalidTimestamp), Offset(-1), -1),
        t => match Partition::offset_for_timestamp(part, t).await {
            Ok(Some((offset, found_ms))) => answer(None, offset, found_ms),
            Ok(None) => answer(None, Offset(-1), -1),
            Err(e) => {
                tracing::warn!(error = %e, timestamp_ms = t, "offset lookup by timestamp failed");
                answer(Some(PartitionError::Storage(e)), Offset(-1), -1)
            }
        },
    }
}
