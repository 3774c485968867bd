//! The seam between the store's logic and a database driver.
//!
//! sqlx's generic bounds over `Database` are unwieldy, so instead of writing the
//! store twice the backends implement this small [`Driver`]: run a [`Query`]
//! (portable SQL text with `$1`-style parameters, which SQLite accepts too), run
//! a list of [`Step`]s in one transaction, and hand back owned [`Row`]s of plain
//! values. Everything above it — [`SqlStore`] and the table-family files — is
//! written once. The SQL avoids dialect differences: no `GREATEST` (a `CASE`
//! instead), aggregates cast to `BIGINT`/`DOUBLE PRECISION`, JSON kept as text.

use std::borrow::Cow;
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::stream::BoxStream;

use super::{
    activity, alerts, lifecycle, rooms, sessions, stats, webhooks, ActivityFilter, ActivityRow,
    ActivityStats, AlertFilter, Bucket, Participant, RoomAudit, RoomFilter, SessionFilter,
    SessionRecord, StatBucket, StatsOverview, Store, StoreError, StoredAlert, StoredAlertRule,
    StoredRoom, StoredRoomType, StoredWebhook, UnixMs, WriteOp, MAX_PAGE,
};

/// A bound parameter. `None` binds a typed NULL (PostgreSQL needs the type).
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    Int(Option<i64>),
    Text(Option<String>),
}

#[derive(Debug, Clone)]
pub(crate) struct Query {
    pub sql: Cow<'static, str>,
    pub args: Vec<Arg>,
}

impl Query {
    pub fn new(sql: impl Into<Cow<'static, str>>) -> Self {
        Self {
            sql: sql.into(),
            args: Vec::new(),
        }
    }
    pub fn int(mut self, v: i64) -> Self {
        self.args.push(Arg::Int(Some(v)));
        self
    }
    pub fn text(mut self, v: impl Into<String>) -> Self {
        self.args.push(Arg::Text(Some(v.into())));
        self
    }
    pub fn opt_text(mut self, v: Option<&str>) -> Self {
        self.args.push(Arg::Text(v.map(str::to_owned)));
        self
    }
    pub fn opt_int(mut self, v: Option<i64>) -> Self {
        self.args.push(Arg::Int(v));
        self
    }
}

/// One statement of a transaction.
#[derive(Debug, Clone)]
pub(crate) struct Step {
    pub query: Query,
    /// Roll back with [`StoreError::NotFound`] if the statement changed no row.
    pub must_change: bool,
}

impl From<Query> for Step {
    fn from(query: Query) -> Self {
        Step {
            query,
            must_change: false,
        }
    }
}

/// A column value as the driver decoded it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

/// One result row, addressed by column position.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Row(pub Vec<Val>);

impl Row {
    fn val(&self, i: usize) -> Result<&Val, StoreError> {
        self.0
            .get(i)
            .ok_or_else(|| StoreError::Other(format!("row has no column {i}")))
    }
    pub fn int(&self, i: usize) -> Result<i64, StoreError> {
        match self.val(i)? {
            Val::Int(v) => Ok(*v),
            other => Err(bad_column(i, "an integer", other)),
        }
    }
    /// An integer where NULL (an aggregate over no rows) means 0.
    pub fn int_or_zero(&self, i: usize) -> Result<i64, StoreError> {
        match self.val(i)? {
            Val::Null => Ok(0),
            _ => self.int(i),
        }
    }
    pub fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError> {
        match self.val(i)? {
            Val::Null => Ok(None),
            _ => self.int(i).map(Some),
        }
    }
    pub fn u32(&self, i: usize) -> Result<u32, StoreError> {
        let v = self.int_or_zero(i)?;
        u32::try_from(v).map_err(|_| StoreError::Other(format!("column {i}: {v} is out of range")))
    }
    pub fn u64(&self, i: usize) -> Result<u64, StoreError> {
        let v = self.int_or_zero(i)?;
        u64::try_from(v).map_err(|_| StoreError::Other(format!("column {i}: {v} is negative")))
    }
    pub fn text(&self, i: usize) -> Result<String, StoreError> {
        match self.val(i)? {
            Val::Text(v) => Ok(v.clone()),
            other => Err(bad_column(i, "text", other)),
        }
    }
    pub fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError> {
        match self.val(i)? {
            Val::Null => Ok(None),
            _ => self.text(i).map(Some),
        }
    }
    /// A JSON text column.
    pub fn json<T: serde::de::DeserializeOwned>(&self, i: usize) -> Result<T, StoreError> {
        match self.val(i)? {
            Val::Text(v) => serde_json::from_str(v)
                .map_err(|e| StoreError::Other(format!("column {i}: bad JSON: {e}"))),
            other => Err(bad_column(i, "JSON text", other)),
        }
    }
}

fn bad_column(i: usize, expected: &str, got: &Val) -> StoreError {
    StoreError::Other(format!("column {i}: expected {expected}, got {got:?}"))
}

pub(crate) fn to_json(v: &impl serde::Serialize) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Other(format!("cannot encode JSON: {e}")))
}

/// A `WHERE` clause built from the filters that are present, numbering the
/// parameters as it goes (only present filters reach the SQL, so each variant
/// gets a plan that uses its index).
#[derive(Debug, Default)]
pub(crate) struct Conditions {
    clauses: Vec<String>,
    args: Vec<Arg>,
}

impl Conditions {
    /// Next placeholder (`$n`).
    fn next(&self) -> String {
        format!("${}", self.args.len() + 1)
    }
    /// `column <op> value` for an integer.
    pub fn int(&mut self, column: &str, op: &str, v: i64) -> &mut Self {
        let p = self.next();
        self.clauses.push(format!("{column} {op} {p}"));
        self.args.push(Arg::Int(Some(v)));
        self
    }
    /// A clause without parameters.
    pub fn raw(&mut self, clause: &str) -> &mut Self {
        self.clauses.push(clause.to_owned());
        self
    }
    /// `column = value` for text.
    pub fn text_eq(&mut self, column: &str, v: &str) -> &mut Self {
        let p = self.next();
        self.clauses.push(format!("{column} = {p}"));
        self.args.push(Arg::Text(Some(v.to_owned())));
        self
    }
    /// A clause with one text parameter written as `{}`.
    pub fn text_clause(&mut self, template: &str, v: &str) -> &mut Self {
        let p = self.next();
        self.clauses.push(template.replace("{}", &p));
        self.args.push(Arg::Text(Some(v.to_owned())));
        self
    }
    /// A clause with parameters written as `{0}`, `{1}`, ….
    pub fn clause(&mut self, template: &str, args: Vec<Arg>) -> &mut Self {
        let mut c = template.to_owned();
        for (k, a) in args.into_iter().enumerate() {
            let p = self.next();
            c = c.replace(&format!("{{{k}}}"), &p);
            self.args.push(a);
        }
        self.clauses.push(c);
        self
    }
    /// `SELECT … WHERE <clauses> <tail>`, where `tail` may use `{limit}` for one
    /// more integer parameter.
    pub fn query(mut self, head: &str, tail: &str, limit: Option<i64>) -> Query {
        let mut sql = String::from(head);
        if !self.clauses.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&self.clauses.join(" AND "));
        }
        sql.push(' ');
        if let Some(n) = limit {
            let p = self.next();
            self.args.push(Arg::Int(Some(n)));
            sql.push_str(&tail.replace("{limit}", &p));
        } else {
            sql.push_str(tail);
        }
        Query {
            sql: sql.into(),
            args: self.args,
        }
    }
}

/// A page size the database can be asked for: 1..=MAX_PAGE.
pub(crate) fn page(limit: usize) -> i64 {
    limit.clamp(1, MAX_PAGE) as i64
}

/// What a backend provides. Errors are already mapped to [`StoreError`].
#[async_trait]
pub(crate) trait Driver: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    async fn migrate(&self) -> Result<(), StoreError>;
    /// Rows changed.
    async fn execute(&self, query: Query) -> Result<u64, StoreError>;
    async fn fetch(&self, query: Query) -> Result<Vec<Row>, StoreError>;
    /// Runs the steps in one transaction; returns the rows each changed.
    async fn transaction(&self, steps: Vec<Step>) -> Result<Vec<u64>, StoreError>;
    /// Finishes cleanly: SQLite checkpoints its WAL into the main file (so a copy
    /// of `roster.db` alone is a full backup after a clean stop); pools close.
    async fn close(&self);
}

/// The one [`Store`] implementation, over either driver.
pub(crate) struct SqlStore {
    db: Arc<dyn Driver>,
}

impl SqlStore {
    pub fn new(db: Arc<dyn Driver>) -> Self {
        Self { db }
    }
}

#[async_trait]
impl Store for SqlStore {
    fn backend(&self) -> &'static str {
        self.db.name()
    }
    async fn migrate(&self) -> Result<(), StoreError> {
        self.db.migrate().await
    }
    async fn close(&self) {
        self.db.close().await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.db.fetch(Query::new("SELECT 1")).await.map(drop)
    }

    async fn insert_room(&self, room: &StoredRoom) -> Result<(), StoreError> {
        rooms::insert_room(&*self.db, room).await
    }
    async fn update_room(&self, room: &StoredRoom) -> Result<(), StoreError> {
        rooms::update_room(&*self.db, room).await
    }
    async fn delete_room(&self, tenant: &str, key: &str) -> Result<bool, StoreError> {
        rooms::delete_room(&*self.db, tenant, key).await
    }
    async fn get_room(&self, tenant: &str, key: &str) -> Result<Option<StoredRoom>, StoreError> {
        rooms::get_room(&*self.db, tenant, key).await
    }
    async fn list_rooms(
        &self,
        tenant: &str,
        filter: RoomFilter,
    ) -> Result<Vec<StoredRoom>, StoreError> {
        rooms::list_rooms(&*self.db, tenant, &filter).await
    }
    async fn all_rooms(&self) -> Result<Vec<StoredRoom>, StoreError> {
        rooms::all_rooms(&*self.db).await
    }

    async fn upsert_room_type(&self, room_type: &StoredRoomType) -> Result<(), StoreError> {
        rooms::upsert_room_type(&*self.db, room_type).await
    }
    async fn delete_room_type(&self, tenant: &str, code: &str) -> Result<bool, StoreError> {
        rooms::delete_room_type(&*self.db, tenant, code).await
    }
    async fn list_room_types(&self, tenant: &str) -> Result<Vec<StoredRoomType>, StoreError> {
        rooms::list_room_types(&*self.db, Some(tenant)).await
    }
    async fn all_room_types(&self) -> Result<Vec<StoredRoomType>, StoreError> {
        rooms::list_room_types(&*self.db, None).await
    }

    async fn set_participant(&self, participant: &Participant) -> Result<(), StoreError> {
        rooms::set_participant(&*self.db, participant).await
    }
    async fn delete_participant(
        &self,
        tenant: &str,
        room: &str,
        user: &str,
    ) -> Result<bool, StoreError> {
        rooms::delete_participant(&*self.db, tenant, room, user).await
    }
    async fn list_participants(
        &self,
        tenant: &str,
        room: &str,
    ) -> Result<Vec<Participant>, StoreError> {
        rooms::list_participants(&*self.db, Some((tenant, room))).await
    }
    async fn all_participants(&self) -> Result<Vec<Participant>, StoreError> {
        rooms::list_participants(&*self.db, None).await
    }

    async fn upsert_webhook(&self, webhook: &StoredWebhook) -> Result<(), StoreError> {
        webhooks::upsert_webhook(&*self.db, webhook).await
    }
    async fn delete_webhook(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        webhooks::delete_webhook(&*self.db, tenant, id).await
    }
    async fn all_webhooks(&self) -> Result<Vec<StoredWebhook>, StoreError> {
        webhooks::all_webhooks(&*self.db).await
    }
    async fn upsert_alert_rule(&self, rule: &StoredAlertRule) -> Result<(), StoreError> {
        alerts::upsert_alert_rule(&*self.db, rule).await
    }
    async fn delete_alert_rule(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        alerts::delete_alert_rule(&*self.db, tenant, id).await
    }
    async fn alert_rules(&self, tenant: Option<&str>) -> Result<Vec<StoredAlertRule>, StoreError> {
        alerts::alert_rules(&*self.db, tenant).await
    }
    async fn fire_alert(&self, alert: &StoredAlert) -> Result<bool, StoreError> {
        alerts::fire_alert(&*self.db, alert).await
    }
    async fn resolve_alert(
        &self,
        tenant: &str,
        id: &str,
        at: UnixMs,
    ) -> Result<Option<StoredAlert>, StoreError> {
        alerts::resolve_alert(&*self.db, tenant, id, at).await
    }
    async fn ack_alert(
        &self,
        tenant: &str,
        id: &str,
        at: UnixMs,
        by: &str,
    ) -> Result<Option<StoredAlert>, StoreError> {
        alerts::ack_alert(&*self.db, tenant, id, at, by).await
    }
    async fn get_alert(&self, tenant: &str, id: &str) -> Result<Option<StoredAlert>, StoreError> {
        alerts::get_alert(&*self.db, tenant, id).await
    }
    async fn list_alerts(&self, filter: AlertFilter) -> Result<Vec<StoredAlert>, StoreError> {
        alerts::list_alerts(&*self.db, &filter).await
    }
    async fn hold_lease(
        &self,
        name: &str,
        holder: &str,
        now: UnixMs,
        until: UnixMs,
    ) -> Result<bool, StoreError> {
        alerts::hold_lease(&*self.db, name, holder, now, until).await
    }
    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        alerts::release_lease(&*self.db, name, holder).await
    }
    async fn lifecycle_applied(&self, tenant: &str, event_id: &str) -> Result<bool, StoreError> {
        lifecycle::lifecycle_applied(&*self.db, tenant, event_id).await
    }
    async fn mark_lifecycle_applied(
        &self,
        tenant: &str,
        event_id: &str,
        at: UnixMs,
    ) -> Result<bool, StoreError> {
        lifecycle::mark_lifecycle_applied(&*self.db, tenant, event_id, at).await
    }
    async fn forget_lifecycle_event(&self, tenant: &str, event_id: &str) -> Result<(), StoreError> {
        lifecycle::forget_lifecycle_event(&*self.db, tenant, event_id).await
    }
    async fn purge_lifecycle_events(&self, older_than: UnixMs) -> Result<u64, StoreError> {
        lifecycle::purge_lifecycle_events(&*self.db, older_than).await
    }

    async fn write_batch(&self, ops: &[WriteOp]) -> Result<(), StoreError> {
        // Activity rows (most of any batch) go first, many per statement; nothing
        // else in a batch depends on them.
        let activity: Vec<&ActivityRow> = ops
            .iter()
            .filter_map(|op| match op {
                WriteOp::Activity(row) => Some(row),
                _ => None,
            })
            .collect();
        let mut steps: Vec<Step> = activity::insert(&activity)?
            .into_iter()
            .map(Step::from)
            .collect();
        for op in ops {
            match op {
                WriteOp::Activity(_) => {}
                WriteOp::SessionStarted(record) => sessions::started(record, &mut steps)?,
                WriteOp::SessionEnded {
                    tenant,
                    session_id,
                    ended_at,
                    reason,
                    rooms,
                } => sessions::ended(tenant, session_id, *ended_at, reason, rooms, &mut steps)?,
                WriteOp::LastSeen { tenant, user, at } => {
                    steps.push(sessions::last_seen_upsert(tenant, user, *at).into())
                }
                WriteOp::RoomStat(sample) => stats::merge_sample(sample, &mut steps),
            }
        }
        if steps.is_empty() {
            return Ok(());
        }
        self.db.transaction(steps).await.map(drop)
    }

    async fn list_session_history(
        &self,
        tenant: &str,
        filter: SessionFilter,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        sessions::history(&*self.db, tenant, &filter).await
    }
    async fn last_seen(&self, tenant: &str, user: &str) -> Result<Option<UnixMs>, StoreError> {
        sessions::last_seen(&*self.db, tenant, user).await
    }

    async fn activity(&self, filter: ActivityFilter) -> Result<Vec<ActivityRow>, StoreError> {
        activity::list(&*self.db, &filter).await
    }
    fn activity_stream(
        &self,
        filter: ActivityFilter,
    ) -> BoxStream<'static, Result<ActivityRow, StoreError>> {
        activity::stream(self.db.clone(), filter)
    }
    async fn activity_stats(
        &self,
        tenant: &str,
        from: UnixMs,
        to: UnixMs,
    ) -> Result<ActivityStats, StoreError> {
        activity::stats(&*self.db, tenant, from, to).await
    }
    async fn purge_activity(&self, older_than: UnixMs) -> Result<u64, StoreError> {
        activity::purge(&*self.db, older_than).await
    }
    async fn purge_sessions(&self, older_than: UnixMs) -> Result<u64, StoreError> {
        sessions::purge(&*self.db, older_than).await
    }
    async fn room_audit(
        &self,
        tenant: &str,
        room: &str,
        from: UnixMs,
        to: UnixMs,
    ) -> Result<RoomAudit, StoreError> {
        activity::room_audit(&*self.db, tenant, room, from, to).await
    }

    async fn room_stats(
        &self,
        tenant: &str,
        room: &str,
        bucket: Bucket,
        from: UnixMs,
        to: UnixMs,
    ) -> Result<Vec<StatBucket>, StoreError> {
        stats::room_stats(&*self.db, tenant, room, bucket, from, to).await
    }
    async fn rollup(&self, now: UnixMs) -> Result<u64, StoreError> {
        stats::rollup(&*self.db, now).await
    }
    async fn purge_stats(
        &self,
        minute_before: UnixMs,
        hour_before: UnixMs,
        day_before: UnixMs,
    ) -> Result<u64, StoreError> {
        stats::purge(&*self.db, minute_before, hour_before, day_before).await
    }
    async fn stats_overview(
        &self,
        tenant: &str,
        from: UnixMs,
        to: UnixMs,
    ) -> Result<StatsOverview, StoreError> {
        stats::overview(&*self.db, tenant, from, to).await
    }
}

/// Maps a driver error; `transient` says which database error codes mean "busy or
/// going away, try again" for this backend.
pub(crate) fn map_error(e: sqlx::Error, transient: fn(&str) -> bool) -> StoreError {
    match e {
        sqlx::Error::Database(db) => {
            if db.is_unique_violation() {
                StoreError::Conflict
            } else if db.code().is_some_and(|c| transient(&c)) {
                StoreError::Unavailable(db.to_string())
            } else {
                StoreError::Other(db.to_string())
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e.to_string()),
        sqlx::Error::RowNotFound => StoreError::NotFound,
        other => StoreError::Other(other.to_string()),
    }
}

pub(crate) fn map_migrate_error(
    e: sqlx::migrate::MigrateError,
    transient: fn(&str) -> bool,
) -> StoreError {
    use sqlx::migrate::MigrateError;
    match e {
        MigrateError::Execute(e) => map_error(e, transient),
        MigrateError::ExecuteMigration(e, version) => match map_error(e, transient) {
            StoreError::Other(m) => StoreError::Other(format!("migration {version}: {m}")),
            other => other,
        },
        other => StoreError::Other(format!("migrations: {other}")),
    }
}
