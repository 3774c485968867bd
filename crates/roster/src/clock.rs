//! The one place the server reads time from.
//!
//! Deadlines are `tokio::time::Instant` (monotonic, and pausable in unit tests with
//! `tokio::time::pause`); wall-clock times on the wire are derived from the same
//! instant through a fixed anchor, so a paused test clock moves both together.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::time::Instant;

#[derive(Clone, Copy, Debug)]
pub struct Clock {
    anchor_instant: Instant,
    anchor_wall: SystemTime,
}

impl Clock {
    pub fn new() -> Self {
        Self {
            anchor_instant: Instant::now(),
            anchor_wall: SystemTime::now(),
        }
    }

    pub fn now(&self) -> Instant {
        Instant::now()
    }

    /// Wall-clock time of an instant of this clock.
    pub fn wall(&self, at: Instant) -> SystemTime {
        if at >= self.anchor_instant {
            self.anchor_wall + (at - self.anchor_instant)
        } else {
            self.anchor_wall - (self.anchor_instant - at)
        }
    }

    /// The instant of this clock at a wall-clock time (times shared between nodes).
    pub fn from_wall(&self, t: SystemTime) -> Instant {
        match t.duration_since(self.anchor_wall) {
            Ok(d) => self.anchor_instant + d,
            Err(e) => self
                .anchor_instant
                .checked_sub(e.duration())
                .unwrap_or(self.anchor_instant),
        }
    }

    pub fn wall_now(&self) -> SystemTime {
        self.wall(self.now())
    }

    /// Milliseconds since the anchor: a compact monotonic stamp for atomics.
    pub fn millis(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.anchor_instant)
            .as_millis() as u64
    }

    pub fn from_millis(&self, ms: u64) -> Instant {
        self.anchor_instant + Duration::from_millis(ms)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// ISO-8601 UTC with milliseconds, the only time format on the wire
/// (`2026-11-26T14:03:05.123Z`).
pub fn iso(t: SystemTime) -> String {
    let ms = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i128)
        .unwrap_or(0);
    let dt = OffsetDateTime::from_unix_timestamp_nanos(ms * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    dt.format(&fmt)
        .unwrap_or_else(|_| dt.format(&Rfc3339).unwrap_or_default())
}

/// [`iso`] of unix milliseconds (the store's times).
pub fn iso_ms(ms: i64) -> String {
    iso(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_has_milliseconds_and_z() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        let s = iso(t);
        assert!(s.ends_with(".123Z"), "{s}");
        assert_eq!(s.len(), "2026-11-26T14:03:05.123Z".len());
    }

    #[tokio::test(start_paused = true)]
    async fn wall_follows_the_paused_clock() {
        let c = Clock::new();
        let w0 = c.wall_now();
        tokio::time::advance(Duration::from_secs(10)).await;
        let w1 = c.wall_now();
        assert_eq!(w1.duration_since(w0).unwrap(), Duration::from_secs(10));
        assert_eq!(c.millis(c.now()), 10_000);
    }
}
