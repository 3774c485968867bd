//! Alert rules (SPEC §8): what a rule says, and whether it holds on what one
//! evaluation observed — pure functions of an [`Observation`] and the rule's own
//! [`History`], no I/O. The evaluator (`evaluator.rs`) gathers observations on
//! one node at a time, fires and resolves alerts in the store, and hands them
//! to dashboards (`/api/v1/stream`) and to the rule's webhook (`notify.rs`).
//!
//! * `capacity`: a room's sessions ≥ `threshold` % of its capacity; one alert
//!   per room (its `subject`).
//! * `latency`: the p95 of the RTTs measured in scope, over every sample of
//!   the last `window`, ≥ `threshold` ms.
//! * `heartbeat_missed`: ≥ `threshold` sessions timed out in scope within the
//!   last `window` (from the activity log, so every node's timeouts count).
//! * `online_drop`: online users in scope fell ≥ `threshold` % below their
//!   highest count within the last `window`.

pub mod evaluator;
pub mod notify;

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use crate::store::{StoredAlertRule, UnixMs};

/// Every kind, as written over REST.
pub const KINDS: &[&str] = &["capacity", "latency", "heartbeat_missed", "online_drop"];
pub const SCOPES: &[&str] = &["tenant", "room", "roomType"];
pub const SEVERITIES: &[&str] = &["info", "warning", "critical"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Capacity,
    Latency,
    HeartbeatMissed,
    OnlineDrop,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "capacity" => Kind::Capacity,
            "latency" => Kind::Latency,
            "heartbeat_missed" => Kind::HeartbeatMissed,
            "online_drop" => Kind::OnlineDrop,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Capacity => "capacity",
            Kind::Latency => "latency",
            Kind::HeartbeatMissed => "heartbeat_missed",
            Kind::OnlineDrop => "online_drop",
        }
    }
    /// Whether the threshold is a percentage (1–100).
    pub fn is_percent(self) -> bool {
        matches!(self, Kind::Capacity | Kind::OnlineDrop)
    }
}

/// Where a rule looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Tenant,
    Room(String),
    RoomType(String),
}

impl Scope {
    pub fn from_parts(scope: &str, target: Option<&str>) -> Option<Self> {
        match (scope, target) {
            ("tenant", None) => Some(Scope::Tenant),
            ("room", Some(t)) => Some(Scope::Room(t.to_string())),
            ("roomType", Some(t)) => Some(Scope::RoomType(t.to_string())),
            _ => None,
        }
    }
    fn covers(&self, room: &str, room_type: &str) -> bool {
        match self {
            Scope::Tenant => true,
            Scope::Room(k) => k == room,
            Scope::RoomType(t) => t == room_type,
        }
    }
}

/// A stored rule, read for evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub id: String,
    pub name: String,
    pub kind: Kind,
    pub threshold: i64,
    pub window: Duration,
    pub scope: Scope,
    /// Everything that changes what the rule means: its history is dropped
    /// when this changes.
    pub version: UnixMs,
}

impl Rule {
    /// `None` for a row this server cannot read (an unknown kind or scope).
    pub fn from_stored(r: &StoredAlertRule) -> Option<Self> {
        Some(Rule {
            id: r.id.clone(),
            name: r.name.clone(),
            kind: Kind::parse(&r.kind)?,
            threshold: r.threshold,
            window: Duration::from_millis(u64::try_from(r.window_ms).ok()?),
            scope: Scope::from_parts(&r.scope, r.target.as_deref())?,
            version: r.updated_at,
        })
    }
}

/// One live room, as every node sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomObs {
    pub key: String,
    pub room_type: String,
    pub capacity: u32,
    pub sessions: usize,
}

/// One live session.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionObs {
    pub user: String,
    pub rooms: Vec<String>,
    pub latency_ms: Option<u32>,
}

/// A session timeout in a room (an activity row).
#[derive(Debug, Clone, PartialEq)]
pub struct TimeoutObs {
    pub at: UnixMs,
    pub room: String,
    pub room_type: String,
    pub session: String,
}

/// What one evaluation of a tenant sees.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    pub at: UnixMs,
    pub rooms: Vec<RoomObs>,
    pub sessions: Vec<SessionObs>,
    /// Timeouts of at least the longest window of the tenant's rules.
    pub timeouts: Vec<TimeoutObs>,
}

impl Observation {
    /// The sessions in `scope`: in the tenant, in the room, or in a room of
    /// the type (the rooms in scope found once, not per session).
    fn sessions_in<'a>(&'a self, scope: &'a Scope) -> impl Iterator<Item = &'a SessionObs> {
        let rooms: Option<std::collections::HashSet<&str>> = match scope {
            Scope::Tenant => None,
            Scope::Room(k) => Some(std::iter::once(k.as_str()).collect()),
            Scope::RoomType(_) => Some(
                self.rooms
                    .iter()
                    .filter(|r| scope.covers(&r.key, &r.room_type))
                    .map(|r| r.key.as_str())
                    .collect(),
            ),
        };
        self.sessions.iter().filter(move |s| {
            rooms
                .as_ref()
                .is_none_or(|in_scope| s.rooms.iter().any(|r| in_scope.contains(r.as_str())))
        })
    }
}

/// What a rule keeps between evaluations (samples within its window).
#[derive(Debug, Default)]
pub struct History {
    version: UnixMs,
    /// `(at, RTTs)` (latency) or `(at, [online users])` (online_drop).
    samples: VecDeque<(UnixMs, Vec<u32>)>,
}

/// A condition that holds now: the rule fires for `subject` (or stays firing).
#[derive(Debug, Clone, PartialEq)]
pub struct Breach {
    /// A room key (capacity), else `""`.
    pub subject: String,
    pub value: f64,
    pub message: String,
}

/// The rule's breaches on this observation (none: it holds nowhere, so every
/// alert of the rule resolves).
pub fn evaluate(rule: &Rule, obs: &Observation, history: &mut History) -> Vec<Breach> {
    if history.version != rule.version {
        *history = History {
            version: rule.version,
            samples: VecDeque::new(),
        };
    }
    let window_start = obs.at - rule.window.as_millis() as i64;
    let threshold = rule.threshold as f64;
    match rule.kind {
        Kind::Capacity => obs
            .rooms
            .iter()
            .filter(|r| r.capacity > 0 && rule.scope.covers(&r.key, &r.room_type))
            .filter_map(|r| {
                let pct = r.sessions as f64 * 100.0 / f64::from(r.capacity);
                (pct >= threshold).then(|| Breach {
                    subject: r.key.clone(),
                    value: pct,
                    message: format!(
                        "room {} is {:.0}% full ({} of {} sessions; threshold {}%)",
                        r.key, pct, r.sessions, r.capacity, rule.threshold
                    ),
                })
            })
            .collect(),
        Kind::Latency => {
            let rtts: Vec<u32> = obs
                .sessions_in(&rule.scope)
                .filter_map(|s| s.latency_ms)
                .collect();
            push_sample(history, obs.at, rtts, window_start);
            let mut all: Vec<u32> = history
                .samples
                .iter()
                .flat_map(|(_, v)| v.iter().copied())
                .collect();
            if all.is_empty() {
                return Vec::new();
            }
            all.sort_unstable();
            let p95 = f64::from(all[(all.len() * 95).div_ceil(100).saturating_sub(1)]);
            if p95 < threshold {
                return Vec::new();
            }
            vec![Breach {
                subject: String::new(),
                value: p95,
                message: format!(
                    "p95 latency {p95:.0} ms over {} in {} (threshold {} ms)",
                    humantime::format_duration(rule.window),
                    scope_text(&rule.scope),
                    rule.threshold
                ),
            }]
        }
        Kind::HeartbeatMissed => {
            let mut sessions: Vec<&str> = obs
                .timeouts
                .iter()
                .filter(|t| t.at >= window_start && rule.scope.covers(&t.room, &t.room_type))
                .map(|t| t.session.as_str())
                .collect();
            sessions.sort_unstable();
            sessions.dedup();
            let n = sessions.len() as f64;
            if n < threshold {
                return Vec::new();
            }
            vec![Breach {
                subject: String::new(),
                value: n,
                message: format!(
                    "{n} sessions timed out within {} in {} (threshold {})",
                    humantime::format_duration(rule.window),
                    scope_text(&rule.scope),
                    rule.threshold
                ),
            }]
        }
        Kind::OnlineDrop => {
            let mut users: Vec<&str> = obs
                .sessions_in(&rule.scope)
                .map(|s| s.user.as_str())
                .collect();
            users.sort_unstable();
            users.dedup();
            let now = users.len() as u32;
            push_sample(history, obs.at, vec![now], window_start);
            let peak = history
                .samples
                .iter()
                .flat_map(|(_, v)| v.iter().copied())
                .max()
                .unwrap_or(0);
            if peak == 0 {
                return Vec::new();
            }
            let drop = f64::from(peak - now.min(peak)) * 100.0 / f64::from(peak);
            if drop < threshold {
                return Vec::new();
            }
            vec![Breach {
                subject: String::new(),
                value: drop,
                message: format!(
                    "online users in {} fell {drop:.0}% (from {peak} to {now}) within {} (threshold {}%)",
                    scope_text(&rule.scope),
                    humantime::format_duration(rule.window),
                    rule.threshold
                ),
            }]
        }
    }
}

fn push_sample(h: &mut History, at: UnixMs, values: Vec<u32>, window_start: UnixMs) {
    h.samples.push_back((at, values));
    while h.samples.front().is_some_and(|(t, _)| *t < window_start) {
        h.samples.pop_front();
    }
}

fn scope_text(s: &Scope) -> String {
    match s {
        Scope::Tenant => "the tenant".into(),
        Scope::Room(k) => format!("room {k}"),
        Scope::RoomType(t) => format!("rooms of type {t}"),
    }
}

/// Histories of every rule this node evaluates, by (tenant, rule id).
pub type Histories = BTreeMap<(String, String), History>;

/// An alert as REST, the live stream and the rule's webhook show it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertView {
    pub id: String,
    pub rule_id: String,
    pub rule_name: String,
    /// `capacity` | `latency` | `heartbeat_missed` | `online_drop`
    pub kind: String,
    /// `info` | `warning` | `critical`
    pub severity: String,
    /// `tenant` | `room` | `roomType`
    pub scope: String,
    pub target: Option<String>,
    /// The room of a per-room alert (`capacity`); null for the rule's scope.
    pub subject: Option<String>,
    /// `firing` | `resolved`
    pub state: String,
    /// What was measured when it fired (percent, ms or sessions; rounded).
    pub value: i64,
    pub threshold: i64,
    pub message: String,
    pub fired_at: String,
    pub resolved_at: Option<String>,
    pub acked_at: Option<String>,
    pub acked_by: Option<String>,
}

impl From<&crate::store::StoredAlert> for AlertView {
    fn from(a: &crate::store::StoredAlert) -> Self {
        let iso = |ms: UnixMs| crate::clock::iso_ms(ms);
        Self {
            id: a.id.clone(),
            rule_id: a.rule_id.clone(),
            rule_name: a.rule_name.clone(),
            kind: a.kind.clone(),
            severity: a.severity.clone(),
            scope: a.scope.clone(),
            target: a.target.clone(),
            subject: (!a.subject.is_empty()).then(|| a.subject.clone()),
            state: a.state.clone(),
            value: a.value,
            threshold: a.threshold,
            message: a.message.clone(),
            fired_at: iso(a.fired_at),
            resolved_at: a.resolved_at.map(iso),
            acked_at: a.acked_at.map(iso),
            acked_by: a.acked_by.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(kind: Kind, threshold: i64, scope: Scope) -> Rule {
        Rule {
            id: "r".into(),
            name: "r".into(),
            kind,
            threshold,
            window: Duration::from_secs(10),
            scope,
            version: 1,
        }
    }

    fn room(key: &str, t: &str, capacity: u32, sessions: usize) -> RoomObs {
        RoomObs {
            key: key.into(),
            room_type: t.into(),
            capacity,
            sessions,
        }
    }

    fn session(user: &str, rooms: &[&str], latency: Option<u32>) -> SessionObs {
        SessionObs {
            user: user.into(),
            rooms: rooms.iter().map(|r| r.to_string()).collect(),
            latency_ms: latency,
        }
    }

    #[test]
    fn capacity_breaches_per_room_in_scope() {
        let obs = Observation {
            at: 0,
            rooms: vec![
                room("a", "T", 2, 2),
                room("b", "T", 4, 1),
                room("c", "U", 1, 1),
            ],
            ..Default::default()
        };
        let mut h = History::default();
        let by_type = evaluate(
            &rule(Kind::Capacity, 50, Scope::RoomType("T".into())),
            &obs,
            &mut h,
        );
        assert_eq!(by_type.len(), 1);
        assert_eq!(by_type[0].subject, "a");
        assert_eq!(by_type[0].value, 100.0);
        let tenant = evaluate(&rule(Kind::Capacity, 25, Scope::Tenant), &obs, &mut h);
        assert_eq!(tenant.len(), 3);
        assert!(evaluate(
            &rule(Kind::Capacity, 50, Scope::Room("b".into())),
            &obs,
            &mut h
        )
        .is_empty());
    }

    #[test]
    fn latency_is_the_p95_over_the_window() {
        let r = rule(Kind::Latency, 200, Scope::Room("a".into()));
        let mut h = History::default();
        let mut obs = Observation {
            at: 0,
            rooms: vec![room("a", "T", 10, 2)],
            sessions: vec![
                session("u1", &["a"], Some(300)),
                session("u2", &["b"], Some(900)),
            ],
            ..Default::default()
        };
        assert_eq!(evaluate(&r, &obs, &mut h)[0].value, 300.0);
        // By type: rooms of the type only (b is of none); the tenant: everyone.
        let by_type = rule(Kind::Latency, 200, Scope::RoomType("T".into()));
        assert_eq!(
            evaluate(&by_type, &obs, &mut History::default())[0].value,
            300.0
        );
        let tenant = rule(Kind::Latency, 200, Scope::Tenant);
        assert_eq!(
            evaluate(&tenant, &obs, &mut History::default())[0].value,
            900.0
        );
        // Low samples within the window keep the p95 up until the high one ages out.
        obs.sessions = vec![session("u1", &["a"], Some(5))];
        for at in [1_000, 2_000] {
            obs.at = at;
            assert!(!evaluate(&r, &obs, &mut h).is_empty(), "at {at}");
        }
        obs.at = 10_001;
        assert!(evaluate(&r, &obs, &mut h).is_empty());
    }

    #[test]
    fn heartbeat_missed_counts_sessions_in_the_window() {
        let t = |at, room: &str, s: &str| TimeoutObs {
            at,
            room: room.into(),
            room_type: "T".into(),
            session: s.into(),
        };
        let obs = Observation {
            at: 20_000,
            timeouts: vec![
                t(15_000, "a", "s1"),
                t(15_000, "b", "s1"),
                t(16_000, "a", "s2"),
                t(1_000, "a", "s3"),
            ],
            ..Default::default()
        };
        let mut h = History::default();
        assert_eq!(
            evaluate(&rule(Kind::HeartbeatMissed, 2, Scope::Tenant), &obs, &mut h)[0].value,
            2.0
        );
        assert!(evaluate(&rule(Kind::HeartbeatMissed, 3, Scope::Tenant), &obs, &mut h).is_empty());
        assert!(evaluate(
            &rule(Kind::HeartbeatMissed, 2, Scope::Room("b".into())),
            &obs,
            &mut h
        )
        .is_empty());
    }

    #[test]
    fn online_drop_compares_with_the_peak_in_the_window() {
        let r = rule(Kind::OnlineDrop, 50, Scope::Tenant);
        let mut h = History::default();
        let users = |n: usize| {
            (0..n)
                .map(|i| session(&format!("u{i}"), &[], None))
                .collect()
        };
        let mut obs = Observation {
            at: 0,
            sessions: users(4),
            ..Default::default()
        };
        assert!(evaluate(&r, &obs, &mut h).is_empty());
        obs.at = 1_000;
        obs.sessions = users(2);
        assert_eq!(evaluate(&r, &obs, &mut h)[0].value, 50.0);
        obs.at = 11_000; // the peak of 4 left the window
        assert!(evaluate(&r, &obs, &mut h).is_empty());
        // A changed rule starts a new history.
        let mut r2 = r.clone();
        r2.version = 2;
        obs.sessions = users(1);
        assert!(evaluate(&r2, &obs, &mut h).is_empty());
    }
}
