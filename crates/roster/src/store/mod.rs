//! Durable data: rooms, room types, participants, session history, last seen, the
//! activity log and per-room statistics (SPEC §5).
//!
//! The server sees one interface, [`Store`], and never a SQL dialect. Both backends
//! (an embedded SQLite file, PostgreSQL for clusters) run the same SQL text through a
//! tiny `sql::Driver` seam, so their behaviour is identical by construction and one
//! conformance suite (`tests/store_conformance.rs`) holds them to it. Each table
//! family has its own file (`rooms`, `sessions`, `activity`, `stats`); each backend
//! file (`sqlite`, `postgres`) only connects, migrates, binds and maps errors.
//!
//! What the store must never do: be awaited on a presence path. The caller queues
//! [`WriteOp`]s and hands them to [`Store::write_batch`] from a background task; a
//! failed batch is kept and retried, which is why a batch is all or nothing.
//!
//! Times are unix milliseconds (`i64`) everywhere, so both dialects store plain
//! integers and compare them the same way. Every read is scoped by tenant.

mod activity;
mod alerts;
mod lifecycle;
mod postgres;
mod rooms;
mod sessions;
mod sql;
mod sqlite;
mod stats;
mod webhooks;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use serde_json::{Map, Value};

pub use stats::LATENCY_BOUNDS_MS;

/// Unix time in milliseconds.
pub type UnixMs = i64;

/// Largest page any list method returns, whatever the caller asks for.
pub const MAX_PAGE: usize = 1000;

/// Wall-clock time as [`UnixMs`] (0 before 1970, saturating far in the future).
pub fn unix_ms(t: SystemTime) -> UnixMs {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    Conflict,
    /// The database could not be reached or is busy: retrying later may succeed.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Anything else (a constraint violated by the data, a bad URL, a corrupt row):
    /// retrying the same thing will fail again.
    #[error("database error: {0}")]
    Other(String),
}

impl StoreError {
    /// Whether the same call may succeed later (connection trouble, lock contention).
    /// A batch that failed with a non-retryable error will keep failing.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

// ---------------------------------------------------------------------------------
// Records

/// A room declared through the REST API.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRoom {
    pub tenant: String,
    pub key: String,
    pub room_type: String,
    pub capacity: u32,
    pub idle_ttl_ms: u64,
    /// `open` | `private`
    pub visibility: String,
    /// `active` | `maintenance` | `closed`
    pub status: String,
    pub tags: Vec<String>,
    pub attributes: Map<String, Value>,
    pub created_at: UnixMs,
    pub updated_at: UnixMs,
}

/// A tenant's own room type (the ten seeded types are never stored).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRoomType {
    pub tenant: String,
    pub code: String,
    pub capacity: u32,
    pub idle_ttl_ms: u64,
    pub visibility: String,
    pub created_at: UnixMs,
    /// Timing overrides; `None`: the server's.
    pub heartbeat_interval_ms: Option<u64>,
    pub session_timeout_ms: Option<u64>,
}

/// A webhook endpoint of the event stream (`events`: the kinds it wants;
/// `None`: every kind but `member_updated`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredWebhook {
    pub tenant: String,
    pub id: String,
    pub url: String,
    pub secret: String,
    pub events: Option<Vec<String>>,
    pub created_at: UnixMs,
}

/// An alert rule (SPEC §8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAlertRule {
    pub tenant: String,
    pub id: String,
    pub name: String,
    /// `capacity` | `latency` | `heartbeat_missed` | `online_drop`
    pub kind: String,
    pub threshold: i64,
    pub window_ms: i64,
    /// `tenant` | `room` | `roomType`
    pub scope: String,
    /// The room key (`room`) or type code (`roomType`).
    pub target: Option<String>,
    /// `info` | `warning` | `critical`
    pub severity: String,
    pub enabled: bool,
    pub webhook_url: Option<String>,
    pub webhook_secret: Option<String>,
    pub created_at: UnixMs,
    pub updated_at: UnixMs,
}

/// One firing of a rule, resolved in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAlert {
    pub tenant: String,
    pub id: String,
    pub rule_id: String,
    pub rule_name: String,
    pub kind: String,
    pub severity: String,
    pub scope: String,
    pub target: Option<String>,
    /// The room of a per-room alert (`capacity`); `""` for the rule's scope.
    pub subject: String,
    /// `firing` | `resolved`
    pub state: String,
    /// What was measured when it fired (rounded).
    pub value: i64,
    pub threshold: i64,
    pub message: String,
    pub fired_at: UnixMs,
    pub resolved_at: Option<UnixMs>,
    pub acked_at: Option<UnixMs>,
    pub acked_by: Option<String>,
}

/// `GET /alerts` filters, newest first; `before` is the keyset cursor
/// (`fired_at`, `id` of the previous page's last row).
#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    pub tenant: String,
    pub state: Option<String>,
    pub rule_id: Option<String>,
    pub before: Option<(UnixMs, String)>,
    pub limit: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    pub tenant: String,
    pub room: String,
    pub user: String,
    /// `viewer` | `commenter` | `operator` | `owner`
    pub role: String,
}

/// One session, from connect to end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub tenant: String,
    pub session_id: String,
    pub user: String,
    pub device: String,
    pub os: Option<String>,
    pub app_version: Option<String>,
    pub client_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub started_at: UnixMs,
    pub ended_at: Option<UnixMs>,
    /// `left` | `disconnected` | `timeout` | `kicked` | `shutdown`
    pub end_reason: Option<String>,
    /// Rooms visited during the session.
    pub rooms: Vec<String>,
}

/// One line of the audit trail.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivityRow {
    /// Assigned by the database; ignored (use 0) when writing.
    pub id: i64,
    pub tenant: String,
    pub at: UnixMs,
    /// `join`, `leave`, `timeout`, `status`, `lock_acquired`, `lock_released`,
    /// `lock_expired`, `lock_force_released`, `mutating`, `mutated`, `admin_kick`,
    /// `room_created`, `room_updated`, `room_deleted`, `participant_set`,
    /// `participant_removed`, … (at most 64 bytes).
    pub kind: String,
    pub actor: Option<String>,
    pub user: Option<String>,
    pub room: Option<String>,
    pub session: Option<String>,
    pub details: Value,
}

/// What one session contributed to one room during one minute. Samples for the
/// same room and minute merge: peaks take the maximum, sums and counters add,
/// users form a set, latencies go into the bucket's histogram.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatSample {
    pub tenant: String,
    pub room: String,
    /// Start of the minute (floored again by the store).
    pub minute: UnixMs,
    pub online_sessions_peak: u32,
    /// Sum of the online-session counts observed; with `samples` gives the average.
    pub online_sessions_sum: u64,
    pub samples: u32,
    pub online_users_peak: u32,
    pub joins: u32,
    pub leaves: u32,
    pub timeouts: u32,
    pub unique_users: Vec<String>,
    /// Individual latency measurements.
    pub latency_ms: Vec<u32>,
}

/// A queued write. A batch of them is applied in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOp {
    Activity(ActivityRow),
    /// Inserted once; a repeat of the same session id is ignored.
    SessionStarted(SessionRecord),
    /// `rooms` is the full list of rooms the session visited (it replaces the
    /// stored list). Ignored if the session's start was never written.
    SessionEnded {
        tenant: String,
        session_id: String,
        ended_at: UnixMs,
        reason: String,
        rooms: Vec<String>,
    },
    /// Keeps the latest time.
    LastSeen {
        tenant: String,
        user: String,
        at: UnixMs,
    },
    RoomStat(StatSample),
}

// ---------------------------------------------------------------------------------
// Queries

/// `GET /rooms` filters. Pages are ordered by key; `after_key` is the cursor.
#[derive(Debug, Clone, Default)]
pub struct RoomFilter {
    pub room_type: Option<String>,
    pub tag: Option<String>,
    pub status: Option<String>,
    pub after_key: Option<String>,
    pub limit: usize,
}

/// Keyset cursor of the session history (the last row of the previous page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionCursor {
    pub started_at: UnixMs,
    pub session_id: String,
}

impl SessionCursor {
    pub fn after(record: &SessionRecord) -> Self {
        Self {
            started_at: record.started_at,
            session_id: record.session_id.clone(),
        }
    }
}

/// Session history filters: sessions that *started* in `[from, to)`, newest first.
#[derive(Debug, Clone, Default)]
pub struct SessionFilter {
    pub user: Option<String>,
    pub room: Option<String>,
    pub from: Option<UnixMs>,
    pub to: Option<UnixMs>,
    pub after: Option<SessionCursor>,
    pub limit: usize,
}

/// Activity filters; `at` in `[from, to)`. `after_id` is the keyset cursor: only
/// rows with `id < after_id` (the next page of a newest-first listing).
#[derive(Debug, Clone, Default)]
pub struct ActivityFilter {
    pub tenant: String,
    pub room: Option<String>,
    pub user: Option<String>,
    pub kind: Option<String>,
    pub from: Option<UnixMs>,
    pub to: Option<UnixMs>,
    pub after_id: Option<i64>,
    pub limit: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActivityStats {
    pub by_type: BTreeMap<String, u64>,
    /// `(hour start, rows)`, ascending, hours with rows only.
    pub by_hour: Vec<(UnixMs, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditParticipant {
    pub user: String,
    /// Sessions of this user that were in the room during the window.
    pub sessions: u32,
    /// Time the user was in the room (overlapping sessions count once).
    pub time_spent_ms: u64,
    pub first_seen: UnixMs,
    pub last_seen: UnixMs,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RoomAudit {
    /// Longest time spent first.
    pub participants: Vec<AuditParticipant>,
    /// `lock_*` rows, newest first (at most 1000).
    pub locks: Vec<ActivityRow>,
    /// Every kind of row, newest first (at most 500).
    pub timeline: Vec<ActivityRow>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Minute,
    Hour,
    Day,
}

impl Bucket {
    pub fn width_ms(self) -> i64 {
        match self {
            Bucket::Minute => 60_000,
            Bucket::Hour => 3_600_000,
            Bucket::Day => 86_400_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct StatBucket {
    pub start: UnixMs,
    pub online_sessions_peak: u32,
    pub online_sessions_avg: f64,
    pub online_users_peak: u32,
    pub joins: u64,
    pub leaves: u64,
    pub timeouts: u64,
    pub unique_users: u64,
    pub latency_avg_ms: Option<f64>,
    /// Estimated from the bucket's histogram (see [`LATENCY_BOUNDS_MS`]).
    pub latency_p95_ms: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsOverview {
    /// Sessions that started in the window.
    pub sessions_started: u64,
    /// Distinct users among them.
    pub unique_users: u64,
    /// Up to 10 rooms by peak online sessions in the window, busiest first.
    pub busiest_rooms: Vec<(String, u32)>,
    pub by_device: BTreeMap<String, u64>,
    /// Sessions without the field count under `unknown`.
    pub by_os: BTreeMap<String, u64>,
    pub by_app_version: BTreeMap<String, u64>,
}

// ---------------------------------------------------------------------------------
// The interface

#[async_trait]
pub trait Store: Send + Sync {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    /// Applies pending migrations; running it again is a no-op.
    async fn migrate(&self) -> Result<(), StoreError>;
    async fn ping(&self) -> Result<(), StoreError>;
    /// Clean shutdown, after the last write (see the drivers).
    async fn close(&self);

    /// [`StoreError::Conflict`] if the key exists in the tenant.
    async fn insert_room(&self, room: &StoredRoom) -> Result<(), StoreError>;
    /// Replaces everything but `created_at`; [`StoreError::NotFound`] if absent.
    async fn update_room(&self, room: &StoredRoom) -> Result<(), StoreError>;
    /// Also deletes the room's participants. `false` if there was no such room.
    async fn delete_room(&self, tenant: &str, key: &str) -> Result<bool, StoreError>;
    async fn get_room(&self, tenant: &str, key: &str) -> Result<Option<StoredRoom>, StoreError>;
    async fn list_rooms(
        &self,
        tenant: &str,
        filter: RoomFilter,
    ) -> Result<Vec<StoredRoom>, StoreError>;
    /// Every tenant's rooms, for start-up.
    async fn all_rooms(&self) -> Result<Vec<StoredRoom>, StoreError>;

    /// Creates or replaces (keeping the first `created_at`).
    async fn upsert_room_type(&self, room_type: &StoredRoomType) -> Result<(), StoreError>;
    async fn delete_room_type(&self, tenant: &str, code: &str) -> Result<bool, StoreError>;
    /// Ordered by code.
    async fn list_room_types(&self, tenant: &str) -> Result<Vec<StoredRoomType>, StoreError>;
    async fn all_room_types(&self) -> Result<Vec<StoredRoomType>, StoreError>;

    /// Creates or changes the role.
    async fn set_participant(&self, participant: &Participant) -> Result<(), StoreError>;
    async fn delete_participant(
        &self,
        tenant: &str,
        room: &str,
        user: &str,
    ) -> Result<bool, StoreError>;
    /// Ordered by user.
    async fn list_participants(
        &self,
        tenant: &str,
        room: &str,
    ) -> Result<Vec<Participant>, StoreError>;
    async fn all_participants(&self) -> Result<Vec<Participant>, StoreError>;

    /// Creates or replaces (url, secret, events) a webhook endpoint.
    async fn upsert_webhook(&self, webhook: &StoredWebhook) -> Result<(), StoreError>;
    /// `false` if the tenant has no such endpoint.
    async fn delete_webhook(&self, tenant: &str, id: &str) -> Result<bool, StoreError>;
    /// Every tenant's endpoints (start-up).
    async fn all_webhooks(&self) -> Result<Vec<StoredWebhook>, StoreError>;

    /// Creates or replaces an alert rule (keeping the first `created_at`).
    async fn upsert_alert_rule(&self, rule: &StoredAlertRule) -> Result<(), StoreError>;
    /// `false` if the tenant has no such rule.
    async fn delete_alert_rule(&self, tenant: &str, id: &str) -> Result<bool, StoreError>;
    /// One tenant's rules (`Some`), or every tenant's; ordered by tenant, id.
    async fn alert_rules(&self, tenant: Option<&str>) -> Result<Vec<StoredAlertRule>, StoreError>;
    /// Inserts a firing alert; `false` if its rule already has one firing for
    /// the same subject (another node fired it).
    async fn fire_alert(&self, alert: &StoredAlert) -> Result<bool, StoreError>;
    /// Resolves a firing alert; `None` if it was not firing.
    async fn resolve_alert(
        &self,
        tenant: &str,
        id: &str,
        at: UnixMs,
    ) -> Result<Option<StoredAlert>, StoreError>;
    /// Acknowledges an alert (the first acknowledgement stays); `None` if the
    /// tenant has no such alert.
    async fn ack_alert(
        &self,
        tenant: &str,
        id: &str,
        at: UnixMs,
        by: &str,
    ) -> Result<Option<StoredAlert>, StoreError>;
    async fn get_alert(&self, tenant: &str, id: &str) -> Result<Option<StoredAlert>, StoreError>;
    async fn list_alerts(&self, filter: AlertFilter) -> Result<Vec<StoredAlert>, StoreError>;
    /// Takes the named lease for `holder` until `until`, or renews it; `false`
    /// while another holder's lease runs (several nodes, one database).
    async fn hold_lease(
        &self,
        name: &str,
        holder: &str,
        now: UnixMs,
        until: UnixMs,
    ) -> Result<bool, StoreError>;
    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError>;

    /// Whether the tenant's lifecycle event `event_id` was applied (within the
    /// kept window).
    async fn lifecycle_applied(&self, tenant: &str, event_id: &str) -> Result<bool, StoreError>;
    /// Records that it was applied; `false` if it already was.
    async fn mark_lifecycle_applied(
        &self,
        tenant: &str,
        event_id: &str,
        at: UnixMs,
    ) -> Result<bool, StoreError>;
    /// Forgets one event (its apply failed after it was recorded).
    async fn forget_lifecycle_event(&self, tenant: &str, event_id: &str) -> Result<(), StoreError>;
    /// Forgets events applied before `older_than` (every tenant); returns how many.
    async fn purge_lifecycle_events(&self, older_than: UnixMs) -> Result<u64, StoreError>;

    /// Applies every op in one transaction: all or nothing.
    async fn write_batch(&self, ops: &[WriteOp]) -> Result<(), StoreError>;

    /// Newest first; continue with `after: Some(SessionCursor::after(last))`.
    async fn list_session_history(
        &self,
        tenant: &str,
        filter: SessionFilter,
    ) -> Result<Vec<SessionRecord>, StoreError>;
    async fn last_seen(&self, tenant: &str, user: &str) -> Result<Option<UnixMs>, StoreError>;

    /// Newest first (id descending); continue with `after_id: Some(last.id)`.
    async fn activity(&self, filter: ActivityFilter) -> Result<Vec<ActivityRow>, StoreError>;
    /// Every matching row (no limit; `after_id` still bounds from above), oldest
    /// first (id ascending), read in pages so memory stays flat. The first error
    /// ends the stream.
    fn activity_stream(
        &self,
        filter: ActivityFilter,
    ) -> BoxStream<'static, Result<ActivityRow, StoreError>>;
    /// Rows with `at` in `[from, to)`.
    async fn activity_stats(
        &self,
        tenant: &str,
        from: UnixMs,
        to: UnixMs,
    ) -> Result<ActivityStats, StoreError>;
    /// Deletes rows with `at < older_than` (every tenant); returns how many.
    async fn purge_activity(&self, older_than: UnixMs) -> Result<u64, StoreError>;
    /// Deletes session history rows of sessions that ended before `older_than`.
    async fn purge_sessions(&self, older_than: UnixMs) -> Result<u64, StoreError>;
    /// Built from the room's `join` / `leave` / `timeout` rows in `[from, to)`,
    /// paired per session; a membership still open counts up to `to`, one that
    /// ends without a join in the window counts from `from`.
    async fn room_audit(
        &self,
        tenant: &str,
        room: &str,
        from: UnixMs,
        to: UnixMs,
    ) -> Result<RoomAudit, StoreError>;

    /// Buckets starting in `[from, to)`, ascending (at most 10,000). Hour and day
    /// buckets exist once [`Store::rollup`] has run.
    async fn room_stats(
        &self,
        tenant: &str,
        room: &str,
        bucket: Bucket,
        from: UnixMs,
        to: UnixMs,
    ) -> Result<Vec<StatBucket>, StoreError>;
    /// Rebuilds hour buckets from the complete minutes before `now` and day buckets
    /// from the complete hours; idempotent. Returns the buckets written.
    async fn rollup(&self, now: UnixMs) -> Result<u64, StoreError>;
    /// Deletes buckets of each resolution starting before its bound; returns how
    /// many buckets went.
    async fn purge_stats(
        &self,
        minute_before: UnixMs,
        hour_before: UnixMs,
        day_before: UnixMs,
    ) -> Result<u64, StoreError>;
    /// Tenant totals over sessions started in `[from, to)` and buckets in it.
    async fn stats_overview(
        &self,
        tenant: &str,
        from: UnixMs,
        to: UnixMs,
    ) -> Result<StatsOverview, StoreError>;
}

/// Opens a store from a URL: `sqlite://path`, `sqlite:path` (created if missing,
/// WAL, busy timeout), `sqlite::memory:` (tests), `postgres://…` or
/// `postgresql://…` (a small pool). Fails with [`StoreError::Unavailable`] if the
/// database cannot be reached. Does not migrate: call [`Store::migrate`].
pub async fn connect(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    let driver: Arc<dyn sql::Driver> = if url.starts_with("sqlite:") {
        Arc::new(sqlite::Sqlite::connect(url).await?)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Arc::new(postgres::Postgres::connect(url).await?)
    } else {
        return Err(StoreError::Other(format!(
            "database url must start with sqlite: or postgres://, got {:?}",
            url.split(':').next().unwrap_or_default()
        )));
    };
    Ok(Arc::new(sql::SqlStore::new(driver)))
}
