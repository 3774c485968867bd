//! Per-room statistics of the current minute, kept in memory and handed to the
//! journal as one [`StatSample`] per room when the minute is over. Joins, leaves
//! and timeouts are counted as they happen; occupancy and latency are sampled
//! every `database.stats_sample_interval`.

use std::collections::HashSet;
use std::time::SystemTime;

use dashmap::DashMap;

use crate::core::types::LeaveReason;
use crate::ids::{RoomId, UserId};
use crate::store::{unix_ms, StatSample, UnixMs};

const MINUTE_MS: UnixMs = 60_000;

#[derive(Default)]
struct Minute {
    start: UnixMs,
    sessions_peak: u32,
    sessions_sum: u64,
    samples: u32,
    users_peak: u32,
    joins: u32,
    leaves: u32,
    timeouts: u32,
    users: HashSet<String>,
    latency: Vec<u32>,
}

impl Minute {
    fn new(start: UnixMs) -> Self {
        Self {
            start,
            ..Default::default()
        }
    }

    fn is_empty(&self) -> bool {
        self.samples == 0 && self.joins == 0 && self.leaves == 0 && self.timeouts == 0
    }

    fn into_sample(self, room: &RoomId) -> StatSample {
        StatSample {
            tenant: room.tenant.to_string(),
            room: room.key.to_string(),
            minute: self.start,
            online_sessions_peak: self.sessions_peak,
            online_sessions_sum: self.sessions_sum,
            samples: self.samples,
            online_users_peak: self.users_peak,
            joins: self.joins,
            leaves: self.leaves,
            timeouts: self.timeouts,
            unique_users: self.users.into_iter().collect(),
            latency_ms: self.latency,
        }
    }
}

fn minute_of(at: SystemTime) -> UnixMs {
    let ms = unix_ms(at);
    ms - ms.rem_euclid(MINUTE_MS)
}

/// At most this many latency samples are kept per room and minute.
const MAX_LATENCIES: usize = 4096;

#[derive(Default)]
pub struct StatsAggregator {
    rooms: DashMap<RoomId, Minute>,
    /// Minutes that ended while something happened in them, waiting for `completed`.
    done: parking_lot::Mutex<Vec<StatSample>>,
}

impl StatsAggregator {
    /// The room's current minute, closing the previous one if the clock moved on.
    fn with(&self, room: &RoomId, at: SystemTime, f: impl FnOnce(&mut Minute)) {
        let start = minute_of(at);
        let mut m = self
            .rooms
            .entry(room.clone())
            .or_insert_with(|| Minute::new(start));
        if m.start < start {
            let old = std::mem::replace(&mut *m, Minute::new(start));
            if !old.is_empty() {
                self.done.lock().push(old.into_sample(room));
            }
        }
        f(&mut m);
    }

    pub fn joined(&self, room: &RoomId, user: &UserId, at: SystemTime) {
        self.with(room, at, |m| {
            m.joins += 1;
            m.users.insert(user.to_string());
        });
    }

    pub fn left(&self, room: &RoomId, reason: LeaveReason, at: SystemTime) {
        self.with(room, at, |m| match reason {
            LeaveReason::Timeout => m.timeouts += 1,
            _ => m.leaves += 1,
        });
    }

    pub fn sample(
        &self,
        room: &RoomId,
        sessions: u32,
        users: u32,
        latencies: Vec<u32>,
        at: SystemTime,
    ) {
        if sessions == 0 && !self.rooms.contains_key(room) {
            return;
        }
        self.with(room, at, |m| {
            m.samples += 1;
            m.sessions_sum += sessions as u64;
            m.sessions_peak = m.sessions_peak.max(sessions);
            m.users_peak = m.users_peak.max(users);
            let room_left = MAX_LATENCIES.saturating_sub(m.latency.len());
            m.latency.extend(latencies.into_iter().take(room_left));
        });
    }

    /// Every minute, finished or not (clean shutdown: nothing counted is lost).
    pub fn drain(&self) -> Vec<StatSample> {
        let mut out = std::mem::take(&mut *self.done.lock());
        let rooms: Vec<RoomId> = self.rooms.iter().map(|e| e.key().clone()).collect();
        for room in rooms {
            if let Some((room, m)) = self.rooms.remove(&room) {
                if !m.is_empty() {
                    out.push(m.into_sample(&room));
                }
            }
        }
        out
    }

    /// Minutes finished before `at`: closed, removed, and returned for writing.
    pub fn completed(&self, at: SystemTime) -> Vec<StatSample> {
        let now = minute_of(at);
        let mut out = std::mem::take(&mut *self.done.lock());
        let finished: Vec<RoomId> = self
            .rooms
            .iter()
            .filter(|e| e.value().start < now)
            .map(|e| e.key().clone())
            .collect();
        for room in finished {
            if let Some((room, m)) = self.rooms.remove_if(&room, |_, m| m.start < now) {
                if !m.is_empty() {
                    out.push(m.into_sample(&room));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{RoomKey, TenantId};
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn a_minute_is_closed_once_and_counts_what_happened() {
        let agg = StatsAggregator::default();
        let room = RoomId {
            tenant: TenantId::default_tenant(),
            key: RoomKey::parse("R").unwrap(),
        };
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000 / 60 * 60);
        let u = UserId::parse("alice").unwrap();
        agg.joined(&room, &u, t0);
        agg.sample(&room, 3, 2, vec![10, 20], t0 + Duration::from_secs(10));
        agg.sample(&room, 5, 2, vec![30], t0 + Duration::from_secs(20));
        agg.left(&room, LeaveReason::Timeout, t0 + Duration::from_secs(30));
        assert!(agg.completed(t0 + Duration::from_secs(59)).is_empty());
        let done = agg.completed(t0 + Duration::from_secs(61));
        assert_eq!(done.len(), 1);
        let s = &done[0];
        assert_eq!(
            (
                s.joins,
                s.timeouts,
                s.samples,
                s.online_sessions_peak,
                s.online_sessions_sum
            ),
            (1, 1, 2, 5, 8)
        );
        assert_eq!(s.unique_users, vec!["alice".to_string()]);
        assert_eq!(s.latency_ms, vec![10, 20, 30]);
        assert!(
            agg.completed(t0 + Duration::from_secs(200)).is_empty(),
            "closed once"
        );
    }
}
