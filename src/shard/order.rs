//! The order of one connection's produce requests (see `Sequencer`). Runs on: the shard that
//! serves the connection.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::task::Poll;

/// The order of one connection's partition work: each produce request takes a `Turn` as the
/// connection reads it, and hands its work to the owners only once every earlier turn has
/// (Kafka handles a connection's requests one at a time; librdkafka and the Java client rely
/// on it for ordering and idempotent sequences). A full mesh channel once let a later produce
/// overtake an earlier one.
#[derive(Default)]
pub struct Sequencer {
    issued: Cell<u64>,
    serving: Cell<u64>,
    /// Turns released before they were served (a request that ended early).
    released_early: RefCell<std::collections::BTreeSet<u64>>,
    waiters: RefCell<Vec<std::task::Waker>>,
}

impl Sequencer {
    pub fn new() -> Rc<Sequencer> {
        Rc::new(Sequencer::default())
    }

    /// The next turn, after every turn taken before it.
    pub fn turn(self: &Rc<Self>) -> Turn {
        let ticket = self.issued.get();
        self.issued.set(ticket + 1);
        Turn {
            sequencer: self.clone(),
            ticket,
        }
    }

    fn release(&self, ticket: u64) {
        if self.serving.get() != ticket {
            assert!(
                ticket > self.serving.get(),
                "turn {ticket} released twice (serving {})",
                self.serving.get()
            );
            self.released_early.borrow_mut().insert(ticket);
            return;
        }
        let mut next = ticket + 1;
        while self.released_early.borrow_mut().remove(&next) {
            next += 1;
        }
        self.serving.set(next);
        for waker in self.waiters.borrow_mut().drain(..) {
            waker.wake();
        }
    }
}

/// A request's place in its connection's `Sequencer`; dropping it lets the next one go.
pub struct Turn {
    sequencer: Rc<Sequencer>,
    ticket: u64,
}

impl Turn {
    /// Waits until every earlier turn of the connection was released.
    pub async fn wait(&mut self) {
        std::future::poll_fn(|cx| {
            if self.sequencer.serving.get() == self.ticket {
                Poll::Ready(())
            } else {
                self.sequencer.waiters.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.sequencer.release(self.ticket);
    }
}
