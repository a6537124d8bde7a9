//! Long-poll waiters: a fetch that found too little data waits on the owners of its partitions
//! until any high watermark moves past what it saw, or its wait ends. Runs on: the connection's
//! shard (waiting) and the owners (registering, waking). Invariant: a waiter is resolved at
//! most once, by whichever partition moves first; waiters whose fetch went away are pruned.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_channel::oneshot;

use super::messages::ShardMessage;
use super::Shard;
use crate::protocol::types::{Offset, ShardId, TopicPartition};
use crate::storage::Waiter;

impl Shard {
    /// Waits until any of the partitions has data past its offset, or `timeout` passes.
    pub async fn wait_for_data(
        self: &Rc<Self>,
        items: Vec<(TopicPartition, Offset)>,
        timeout: Duration,
    ) {
        self.wait_for(items, timeout, false).await
    }

    /// Like `wait_for_data`, for followers: until any log is *written* past its offset.
    pub async fn wait_for_written(
        self: &Rc<Self>,
        items: Vec<(TopicPartition, Offset)>,
        timeout: Duration,
    ) {
        self.wait_for(items, timeout, true).await
    }

    async fn wait_for(
        self: &Rc<Self>,
        items: Vec<(TopicPartition, Offset)>,
        timeout: Duration,
        written: bool,
    ) {
        let mut groups: HashMap<usize, Vec<(TopicPartition, Offset)>> = HashMap::new();
        for (tp, offset) in items {
            groups
                .entry(self.owner(&tp).0)
                .or_default()
                .push((tp, offset));
        }
        let mut receivers = Vec::new();
        for (shard, group) in groups {
            let (tx, rx) = oneshot::channel();
            if shard == self.id.0 {
                self.register_waiter(&group, tx, written);
            } else if !self
                .send(
                    ShardId(shard),
                    ShardMessage::WaitForData {
                        items: group,
                        reply: tx,
                        written,
                    },
                )
                .await
            {
                return;
            }
            receivers.push(rx);
        }
        self.env.timeout(timeout, FirstOf(receivers)).await;
    }

    /// Registers `reply` on each partition; resolves it at once if one already has data
    /// (`written`: data written, for a follower; else below the high watermark).
    pub fn register_waiter(
        &self,
        items: &[(TopicPartition, Offset)],
        reply: oneshot::Sender<()>,
        written: bool,
    ) {
        let waiter: Waiter = Rc::new(RefCell::new(Some(reply)));
        for (tp, offset) in items {
            // A follower's wait may be on an offsets partition (client waits never are).
            let part = match written {
                true => self.any_replica(tp).map(|r| r.log().clone()),
                false => self.partition(tp),
            };
            match part {
                Some(part) => {
                    let mut p = part.borrow_mut();
                    let reached = if written {
                        p.written()
                    } else {
                        p.high_watermark()
                    };
                    if reached > *offset {
                        drop(p);
                        if let Some(tx) = waiter.borrow_mut().take() {
                            let _ = tx.send(());
                        }
                        return;
                    }
                    if written {
                        p.add_data_waiter(waiter.clone());
                    } else {
                        p.add_waiter(waiter.clone());
                    }
                }
                None => {
                    if let Some(tx) = waiter.borrow_mut().take() {
                        let _ = tx.send(());
                    }
                    return;
                }
            }
        }
    }
}

/// Resolves when the first of several receivers does (either value or cancellation).
struct FirstOf(Vec<oneshot::Receiver<()>>);

impl Future for FirstOf {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.is_empty() {
            return Poll::Ready(());
        }
        for rx in self.0.iter_mut() {
            if Pin::new(rx).poll(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    }
}
