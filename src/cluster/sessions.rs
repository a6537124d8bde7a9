//! Broker sessions as the active controller sees them: when each broker last heartbeated, and
//! which ones to fence. Pure: callers pass the monotonic time and how long ago Raft last heard
//! from each voter. Runs on: the controller shard of the active controller. Invariants: a
//! broker is fenced only after a whole grace period of this controller's session (a new
//! controller, or one that regained its quorum, restarts every session: heartbeats it could not
//! receive are not missed); a broker whose process is gone (no heartbeat and no Raft answer for
//! `fast_ms`) is fenced in about `fast_ms`, one that only stopped heartbeating (hung, its Raft
//! still answering) after `session_ms`, and one whose controller listener refused a connection
//! within `fast_ms` (nothing listens: the process is gone) at once, even in a grace period;
//! this controller's own broker is never fenced by itself.

use std::collections::HashMap;
use std::time::Duration;

use super::image::MetadataImage;

/// How long silence lasts before a broker is fenced.
#[derive(Debug, Clone, Copy)]
pub struct SessionTimeouts {
    /// No heartbeat and no Raft answer: the process died.
    pub fast_ms: u64,
    /// No heartbeat at all (`broker_session_timeout_ms`).
    pub session_ms: u64,
}

#[derive(Debug, Default)]
pub struct Sessions {
    /// When this controller's sessions (re)started.
    since: Duration,
    last_seen: HashMap<i32, Duration>,
    /// When a broker's controller listener last refused a connection (its process is gone),
    /// and the incarnation (epoch) the image named then, with no heartbeat from it since. Kept
    /// across restarts of the sessions: it is what this broker saw itself, not session state a
    /// previous controller held.
    refused: HashMap<i32, (Duration, i64)>,
}

impl Sessions {
    /// Starts every session again at `now` (a grace period for every broker).
    pub fn restart(&mut self, now: Duration) {
        self.since = now;
        self.last_seen.clear();
    }

    pub fn heard(&mut self, node_id: i32, now: Duration) {
        self.last_seen.insert(node_id, now);
        self.refused.remove(&node_id);
    }

    /// Broker `node_id`'s controller listener refused a connection at `now`, while the image
    /// named incarnation `epoch`: nothing listens there, so that process is gone (a hung or
    /// unreachable one is silent instead).
    pub fn refused(&mut self, node_id: i32, epoch: i64, now: Duration) {
        // A heartbeat after the refusal proves a process listens again.
        if self
            .last_seen
            .get(&node_id)
            .is_some_and(|seen| *seen >= now)
        {
            return;
        }
        self.refused.insert(node_id, (now, epoch));
    }

    /// The live brokers (`node_id`, `epoch`) to fence now. `raft_silence` is how long since
    /// Raft last heard from a voter (`None`: not yet in this term).
    pub fn expired(
        &self,
        image: &MetadataImage,
        me: i32,
        now: Duration,
        timeouts: SessionTimeouts,
        raft_silence: impl Fn(i32) -> Option<Duration>,
    ) -> Vec<(i32, i64)> {
        let in_session = now.saturating_sub(self.since);
        image
            .live_brokers()
            .filter(|b| b.node_id != me)
            .filter(|b| {
                let seen = self
                    .last_seen
                    .get(&b.node_id)
                    .copied()
                    .unwrap_or(self.since);
                let silent = now.saturating_sub(seen);
                let raft = raft_silence(b.node_id)
                    .unwrap_or(in_session)
                    .min(in_session);
                let fast = Duration::from_millis(timeouts.fast_ms);
                // A refusal seen within `fast_ms` needs no grace: that incarnation's process
                // is gone. An older one, or one of an earlier incarnation, proves nothing about
                // a broker that may have come back since.
                let gone = self.refused.get(&b.node_id).is_some_and(|(at, epoch)| {
                    *epoch == b.epoch && now.saturating_sub(*at) <= fast
                });
                gone || silent > fast && raft > fast
                    || silent > Duration::from_millis(timeouts.session_ms)
            })
            .map(|b| (b.node_id, b.epoch))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::MetadataRecord;

    const T: SessionTimeouts = SessionTimeouts {
        fast_ms: 1500,
        session_ms: 9000,
    };

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Brokers 1..=3, live, with epochs 11..=13.
    fn three_brokers() -> MetadataImage {
        let mut image = MetadataImage::default();
        for id in 1..=3 {
            image.apply(&MetadataRecord::BrokerRegistered {
                node_id: id,
                epoch: 10 + id as i64,
                host: "h".into(),
                port: 1,
            });
        }
        image
    }

    #[test]
    fn dead_brokers_fast_hung_ones_after_the_session_and_a_grace_for_new_controllers() {
        let mut image = three_brokers();
        let mut s = Sessions::default();
        s.restart(ms(1000));
        // A new controller hears nothing for 1.4 s: still within its grace.
        assert!(s.expired(&image, 1, ms(2400), T, |_| None).is_empty());
        // Broker 2 heartbeats, broker 3 neither heartbeats nor answers Raft: fenced at 1.5 s.
        s.heard(2, ms(2400));
        assert_eq!(s.expired(&image, 1, ms(2600), T, |_| None), vec![(3, 13)]);
        // Broker 2 stops heartbeating but Raft still hears it (a hung broker shard): fenced
        // only after the session timeout.
        let raft_alive = |_| Some(ms(100));
        assert_eq!(
            s.expired(&image, 1, ms(9000), T, raft_alive),
            vec![] as Vec<(i32, i64)>
        );
        assert_eq!(
            s.expired(&image, 1, ms(11_500), T, raft_alive),
            vec![(2, 12), (3, 13)]
        );
        // Regaining the quorum restarts every session.
        s.restart(ms(20_000));
        assert!(s
            .expired(&image, 1, ms(21_000), T, |_| Some(ms(60_000)))
            .is_empty());
        // The controller's own broker is never fenced; fenced brokers are not fenced again.
        image.apply(&MetadataRecord::BrokerFenced {
            node_id: 3,
            epoch: 13,
        });
        assert_eq!(s.expired(&image, 1, ms(40_000), T, |_| None), vec![(2, 12)]);
    }

    #[test]
    fn a_refused_connection_fences_at_once_unless_old_or_followed_by_a_heartbeat() {
        let image = three_brokers();
        let mut s = Sessions::default();
        // Broker 3's listener refused this broker while it was a follower; it then became the
        // active controller: the grace period does not cover a process known to be gone.
        s.refused(3, 13, ms(1000));
        s.restart(ms(1100));
        assert_eq!(s.expired(&image, 1, ms(1200), T, |_| None), vec![(3, 13)]);
        // Not if broker 3 came back as a new incarnation meanwhile (registered with another
        // controller, so this one never heard its heartbeat).
        let mut back = image.clone();
        back.apply(&MetadataRecord::BrokerRegistered {
            node_id: 3,
            epoch: 14,
            host: "h".into(),
            port: 1,
        });
        assert!(s.expired(&back, 1, ms(1200), T, |_| None).is_empty());
        // A heartbeat after the refusal (the broker came back) withdraws it.
        s.heard(3, ms(1300));
        assert!(s.expired(&image, 1, ms(1400), T, |_| None).is_empty());
        // A refusal older than fast_ms proves nothing now: only the grace period counts.
        s.refused(2, 12, ms(1000));
        s.restart(ms(5000));
        assert!(s.expired(&image, 1, ms(5100), T, |_| None).is_empty());
    }
}
