//! Ordered deadlines: one set for every expiry of a node (session timeouts, leave
//! grace, away, lock TTLs, stale flags, diff windows, idle rooms, pings), drained by
//! one sweeper task. Entries are hints: the owner of the state re-checks when one
//! fires (a heartbeat may have moved the real deadline), so nothing is ever removed
//! early and refreshing is free. Shape taken from mini-redis's `purge_expired_keys`.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;

use crate::ids::{RoomId, SessionId};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Deadline {
    /// No frame from the session for `session_timeout`?
    SessionTimeout(SessionId),
    /// No frame from the session for its room's own (shorter) session timeout?
    /// Then it leaves that room alone.
    RoomTimeout(SessionId, RoomId, Duration),
    /// The connection dropped `leave_grace` ago and nobody resumed (generation).
    LeaveGrace(SessionId, u64),
    /// `active:false` for `away_after`?
    Away(SessionId),
    LockExpiry(RoomId, String),
    StaleExpiry(RoomId),
    DiffFlush(RoomId),
    RoomIdle(RoomId),
    /// Server pings to every connection, once per `heartbeat_interval`.
    PingAll,
    /// Shared engine only, once per `sweep_interval`: this node's sessions are
    /// marked alive, and sessions of nodes that stopped doing so are claimed.
    Liveness,
}

#[derive(Debug, Default)]
pub struct DeadlineQueue {
    set: BTreeSet<(Instant, u64, Deadline)>,
    tie: u64,
}

impl DeadlineQueue {
    /// Adds a deadline; returns true when it is now the earliest (wake the sweeper).
    pub fn insert(&mut self, at: Instant, d: Deadline) -> bool {
        self.tie += 1;
        let earliest = self.set.first().is_none_or(|(t, _, _)| at < *t);
        self.set.insert((at, self.tie, d));
        earliest
    }

    pub fn pop_due(&mut self, now: Instant, max: usize) -> Vec<Deadline> {
        let mut out = vec![];
        while out.len() < max {
            match self.set.first() {
                Some((t, _, _)) if *t <= now => {
                    // Just saw the first element.
                    let (_, _, d) = self.set.pop_first().expect("first");
                    out.push(d);
                }
                _ => break,
            }
        }
        out
    }

    pub fn next_at(&self) -> Option<Instant> {
        self.set.first().map(|(t, _, _)| *t)
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_deadline_order() {
        let mut q = DeadlineQueue::default();
        let t0 = Instant::now();
        assert!(q.insert(t0 + Duration::from_secs(2), Deadline::PingAll));
        assert!(q.insert(
            t0 + Duration::from_secs(1),
            Deadline::SessionTimeout(SessionId::parse("a").unwrap())
        ));
        assert!(!q.insert(t0 + Duration::from_secs(3), Deadline::PingAll));
        assert!(q.pop_due(t0, 10).is_empty());
        let due = q.pop_due(t0 + Duration::from_secs(2), 10);
        assert_eq!(due.len(), 2);
        assert!(matches!(due[0], Deadline::SessionTimeout(_)));
        assert_eq!(q.len(), 1);
        assert_eq!(q.next_at(), Some(t0 + Duration::from_secs(3)));
    }
}
