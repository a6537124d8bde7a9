//! Retention: closed segments past `retention.ms` or beyond `retention.bytes` are deleted, as
//! the topic's configuration asks (the only data the broker removes, and only by that
//! policy), and closed offsets segments that a compacting snapshot covers. Runs on: the owning
//! shard. Invariants: the active segment always stays, and so does any segment holding
//! offsets at or past the high watermark; the log start moves before the files go, so no read
//! is offered bytes that are being deleted.

use super::partition::PartitionHandle;
use super::segment;
use crate::protocol::types::Offset;

/// Deletes closed segments past the retention time or beyond the retention size.
pub async fn apply_retention(part: &PartitionHandle) {
    let (now, retention_ms, retention_bytes) = {
        let p = part.borrow();
        (
            p.env.wall_ms(),
            p.config.retention_ms,
            p.config.retention_bytes,
        )
    };
    let mut total: i64 = part.borrow().size_bytes() as i64;
    remove_leading_segments(part, "retention", |segment| {
        let newest_ms = if segment.index.max_timestamp_ms >= 0 {
            segment.index.max_timestamp_ms
        } else {
            segment.created_ms as i64
        };
        let expired = retention_ms >= 0 && newest_ms < now - retention_ms;
        let oversize = retention_bytes >= 0 && total - segment.size_bytes as i64 >= retention_bytes;
        if expired || oversize {
            total -= segment.size_bytes as i64;
        }
        expired || oversize
    })
    .await;
}

/// Deletes the closed segments that hold only offsets below `offset` (a compacting snapshot
/// covers them). Returns how many went.
pub async fn delete_segments_before(part: &PartitionHandle, offset: Offset) -> usize {
    remove_leading_segments(part, "snapshot", |segment| segment.next_offset <= offset).await
}

/// Removes closed segments from the start of the log while `remove` says so; the active
/// segment always stays. Moves the log start, then deletes the files.
async fn remove_leading_segments(
    part: &PartitionHandle,
    why: &str,
    mut remove: impl FnMut(&segment::Segment) -> bool,
) -> usize {
    let (env, dir, tp, removed) = {
        let mut p = part.borrow_mut();
        let mut removed = Vec::new();
        while p.segments.len() > 1 {
            let first = p.segments.values().next().expect("segment");
            // Only what every in-sync replica holds goes (a leader's high watermark may lag
            // its log while followers catch up; a follower's its leader's).
            if !first.closed || first.next_offset > p.high_watermark || !remove(first) {
                break;
            }
            let base = first.base_offset;
            p.segments.remove(&base);
            removed.push(base);
        }
        if removed.is_empty() {
            return 0;
        }
        let new_start = *p.segments.keys().next().expect("segment");
        p.log_start = new_start;
        p.cache.retain(|c| c.base >= new_start);
        p.cache_bytes = p.cache.iter().map(|c| c.bytes.len() as u64).sum();
        p.assert_stages("retention");
        (p.env.clone(), p.dir.clone(), p.tp.clone(), removed)
    };
    for base in &removed {
        for path in segment::file_paths(&dir, *base) {
            if let Err(e) = env.fs.remove_file(&path).await {
                if !e.is_not_found() {
                    tracing::warn!(error = %e, "removing a deleted segment's file");
                }
            }
        }
        tracing::info!(partition = %tp, base = base.0, why, "deleted segment");
    }
    removed.len()
}
