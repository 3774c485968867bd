//! The durable record over REST: activity log (JSON pages and streamed CSV), room
//! audit, activity statistics, per-room statistics, the tenant overview, and
//! session history. Reads go to the store; `monitor` or `admin` role required.

use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::{
    decode_cursor, encode_cursor, page_limit, ApiError, ApiPath, ApiQuery, ApiResult, Caller, Page,
};
use crate::core::error::ErrorCode;
use crate::http::AppState;
use crate::ids::RoomKey;
use crate::store::{
    unix_ms, ActivityFilter, ActivityRow, Bucket, SessionCursor, SessionFilter, SessionRecord,
    UnixMs,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/activity", get(list))
        .route("/activity.csv", get(csv))
        .route("/activity/stats", get(stats))
        .route("/rooms/{room}/audit", get(audit))
        .route("/rooms/{room}/stats", get(room_stats))
        .route("/stats/overview", get(overview))
        .route("/sessions/history", get(history))
}

const DAY: Duration = Duration::from_secs(86_400);

use crate::clock::iso_ms;

/// An ISO-8601 time parameter (`2026-11-26T14:03:05Z`).
fn time_param(name: &str, v: &Option<String>) -> ApiResult<Option<UnixMs>> {
    match v {
        None => Ok(None),
        Some(s) => OffsetDateTime::parse(s, &Rfc3339)
            .map(|t| Some((t.unix_timestamp_nanos() / 1_000_000) as i64))
            .map_err(|_| {
                ApiError::new(
                    ErrorCode::Invalid,
                    format!("field `{name}`: expected an ISO-8601 time like 2026-11-26T14:03:05Z"),
                )
            }),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ActivityQuery {
    /// Only rows of this room (key).
    pub room: Option<String>,
    /// Only rows of this user.
    pub user: Option<String>,
    /// Activity kind, e.g. `join`, `leave`, `timeout`, `lock_acquired`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// ISO-8601, inclusive.
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// ISO-8601, exclusive.
    #[param(format = DateTime)]
    pub to: Option<String>,
    /// Page size, 1-1000 (default 100; not for the CSV, which has every row).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// `nextCursor` of the page before (not for the CSV).
    pub cursor: Option<String>,
}

impl ActivityQuery {
    fn filter(&self, caller: &Caller, with_cursor: bool) -> ApiResult<ActivityFilter> {
        let after_id = match (&self.cursor, with_cursor) {
            (Some(c), true) => Some(decode_cursor(c)?.parse::<i64>().map_err(|_| {
                ApiError::new(
                    ErrorCode::Invalid,
                    "field `cursor`: not a cursor from this API",
                )
            })?),
            _ => None,
        };
        Ok(ActivityFilter {
            tenant: caller.tenant.to_string(),
            room: self.room.clone(),
            user: self.user.clone(),
            kind: self.kind.clone(),
            from: time_param("from", &self.from)?,
            to: time_param("to", &self.to)?,
            after_id,
            limit: page_limit(self.limit)?,
        })
    }
}

/// One row of the activity log.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActivityItem {
    pub id: i64,
    /// ISO-8601.
    pub at: String,
    /// `join`, `leave`, `timeout`, `lock_acquired`, `room_created`, … (SPEC §5).
    #[serde(rename = "type")]
    pub kind: String,
    /// Who acted through REST: a user id, or `operator` (the admin key).
    pub actor: Option<String>,
    pub user_id: Option<String>,
    pub room: Option<String>,
    pub session_id: Option<String>,
    /// Kind-specific details, e.g. `{"reason": "timeout"}`.
    pub details: Value,
}

impl From<&ActivityRow> for ActivityItem {
    fn from(r: &ActivityRow) -> Self {
        Self {
            id: r.id,
            at: iso_ms(r.at),
            kind: r.kind.clone(),
            actor: r.actor.clone(),
            user_id: r.user.clone(),
            room: r.room.clone(),
            session_id: r.session.clone(),
            details: r.details.clone(),
        }
    }
}

/// The activity log of the tenant, newest first, with a keyset cursor.
#[utoipa::path(get, path = "/api/v1/activity", operation_id = "listActivity", tag = "activity", params(ActivityQuery),
    responses((status = 200, description = "a page of rows", body = Page<ActivityItem>)))]
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ActivityQuery>,
) -> ApiResult<Json<Page<ActivityItem>>> {
    caller.require_monitor()?;
    let filter = q.filter(&caller, true)?;
    let lim = filter.limit;
    let mut rows = app
        .node
        .activity(ActivityFilter {
            limit: lim + 1,
            ..filter
        })
        .await?;
    let next = if rows.len() > lim {
        rows.truncate(lim);
        rows.last().map(|r| encode_cursor(&r.id.to_string()))
    } else {
        None
    };
    Ok(Json(Page {
        items: rows.iter().map(ActivityItem::from).collect(),
        next_cursor: next,
    }))
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn csv_line(r: &ActivityRow) -> String {
    let o = |v: &Option<String>| csv_field(v.as_deref().unwrap_or(""));
    format!(
        "{},{},{},{},{},{},{},{}\n",
        r.id,
        iso_ms(r.at),
        csv_field(&r.kind),
        o(&r.actor),
        o(&r.user),
        o(&r.room),
        o(&r.session),
        csv_field(&r.details.to_string())
    )
}

/// The same rows as `/activity` (every page, oldest first) as CSV, streamed from
/// the database: memory stays flat whatever the number of rows.
#[utoipa::path(get, path = "/api/v1/activity.csv", operation_id = "exportActivityCsv", tag = "activity", params(ActivityQuery),
    responses((status = 200, description = "the rows as CSV, header line first",
        content_type = "text/csv", body = String,
        example = "id,at,type,actor,userId,room,sessionId,details\n1,2026-11-26T14:03:05.123Z,join,,alice,Order:1,s1,{}\n")))]
pub async fn csv(
    State(app): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ActivityQuery>,
) -> ApiResult<Response> {
    caller.require_monitor()?;
    // The CSV has every matching row: `limit` and `cursor` don't apply.
    let q = ActivityQuery {
        limit: None,
        cursor: None,
        ..q
    };
    let filter = q.filter(&caller, false)?;
    let header_line = futures_util::stream::once(async {
        Ok::<_, std::io::Error>("id,at,type,actor,userId,room,sessionId,details\n".to_string())
    });
    let rows = app.node.activity_stream(filter).map(|r| match r {
        Ok(row) => Ok(csv_line(&row)),
        Err(e) => {
            tracing::warn!("activity.csv ended early: {e}");
            Err(std::io::Error::other(e.to_string()))
        }
    });
    let body = Body::from_stream(header_line.chain(rows));
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"activity.csv\"",
            ),
        ],
        body,
    )
        .into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Window {
    /// ISO-8601; default 24 hours before `to`.
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// ISO-8601; default now.
    #[param(format = DateTime)]
    pub to: Option<String>,
}

impl Window {
    fn resolve(&self, default_span: Duration) -> ApiResult<(UnixMs, UnixMs)> {
        let to = time_param("to", &self.to)?.unwrap_or_else(|| unix_ms(SystemTime::now()));
        let from = time_param("from", &self.from)?.unwrap_or(to - default_span.as_millis() as i64);
        if from > to {
            return Err(ApiError::new(
                ErrorCode::Invalid,
                "field `from`: must not be after `to`",
            ));
        }
        Ok((from, to))
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActivityStatsView {
    pub from: String,
    pub to: String,
    /// Rows per activity type.
    pub by_type: std::collections::BTreeMap<String, u64>,
    pub by_hour: Vec<HourCount>,
}

#[derive(Serialize, ToSchema)]
pub struct HourCount {
    /// The hour's start, ISO-8601.
    pub hour: String,
    pub count: u64,
}

/// Rows by type and by hour.
#[utoipa::path(get, path = "/api/v1/activity/stats", operation_id = "getActivityStats", tag = "activity", params(Window),
    responses((status = 200, description = "counts in the window", body = ActivityStatsView)))]
pub async fn stats(
    State(app): State<AppState>,
    caller: Caller,
    ApiQuery(w): ApiQuery<Window>,
) -> ApiResult<Json<ActivityStatsView>> {
    caller.require_monitor()?;
    let (from, to) = w.resolve(DAY)?;
    let s = app.node.activity_stats(&caller.tenant, from, to).await?;
    Ok(Json(ActivityStatsView {
        from: iso_ms(from),
        to: iso_ms(to),
        by_type: s.by_type,
        by_hour: s
            .by_hour
            .iter()
            .map(|(h, n)| HourCount {
                hour: iso_ms(*h),
                count: *n,
            })
            .collect(),
    }))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditView {
    pub room: String,
    pub from: String,
    pub to: String,
    pub participants: Vec<AuditParticipantView>,
    /// Lock rows (`lock_acquired`, `lock_released`, …), oldest first.
    pub locks: Vec<ActivityItem>,
    /// Every row of the room in the window, oldest first.
    pub timeline: Vec<ActivityItem>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditParticipantView {
    pub user_id: String,
    pub sessions: u32,
    pub time_spent_ms: u64,
    pub first_seen: String,
    pub last_seen: String,
}

/// Who was in the room and for how long, lock history, and a timeline.
#[utoipa::path(get, path = "/api/v1/rooms/{room}/audit", operation_id = "getRoomAudit", tag = "activity", params(("room" = RoomKey, Path, description = "the room key, percent-encoded"), Window),
    responses((status = 200, description = "the room's audit for the window", body = AuditView)))]
pub async fn audit(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(room): ApiPath<String>,
    ApiQuery(w): ApiQuery<Window>,
) -> ApiResult<Json<AuditView>> {
    caller.require_monitor()?;
    let id = caller.room(&room)?;
    let (from, to) = w.resolve(DAY)?;
    let a = app.node.room_audit(&id, from, to).await?;
    Ok(Json(AuditView {
        room: id.key.to_string(),
        from: iso_ms(from),
        to: iso_ms(to),
        participants: a
            .participants
            .iter()
            .map(|p| AuditParticipantView {
                user_id: p.user.clone(),
                sessions: p.sessions,
                time_spent_ms: p.time_spent_ms,
                first_seen: iso_ms(p.first_seen),
                last_seen: iso_ms(p.last_seen),
            })
            .collect(),
        locks: a.locks.iter().map(ActivityItem::from).collect(),
        timeline: a.timeline.iter().map(ActivityItem::from).collect(),
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// `1m` (default), `1h` or `1d`.
    #[param(pattern = "^(1m|1h|1d)$")]
    pub bucket: Option<String>,
    /// ISO-8601; default one bucket span (1 h, 1 day, 30 days) before `to`.
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// ISO-8601; default now.
    #[param(format = DateTime)]
    pub to: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoomStatsView {
    pub room: String,
    /// `1m`, `1h` or `1d`.
    pub bucket: String,
    pub items: Vec<StatBucketView>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatBucketView {
    /// The bucket's start, ISO-8601.
    pub start: String,
    pub online_sessions_peak: u32,
    pub online_sessions_avg: f64,
    pub online_users_peak: u32,
    pub joins: u64,
    pub leaves: u64,
    pub timeouts: u64,
    pub unique_users: u64,
    pub latency_avg_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
}

/// Per-room statistics buckets.
#[utoipa::path(get, path = "/api/v1/rooms/{room}/stats", operation_id = "getRoomStats", tag = "stats", params(("room" = RoomKey, Path, description = "the room key, percent-encoded"), StatsQuery),
    responses((status = 200, description = "the buckets of the window, oldest first", body = RoomStatsView)))]
pub async fn room_stats(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(room): ApiPath<String>,
    ApiQuery(q): ApiQuery<StatsQuery>,
) -> ApiResult<Json<RoomStatsView>> {
    caller.require_monitor()?;
    let id = caller.room(&room)?;
    let (bucket, span) = match q.bucket.as_deref().unwrap_or("1m") {
        "1m" => (Bucket::Minute, Duration::from_secs(3600)),
        "1h" => (Bucket::Hour, DAY),
        "1d" => (Bucket::Day, DAY * 30),
        other => {
            return Err(ApiError::new(
                ErrorCode::Invalid,
                format!("field `bucket`: {other:?} is not 1m, 1h or 1d"),
            ))
        }
    };
    let (from, to) = Window {
        from: q.from,
        to: q.to,
    }
    .resolve(span)?;
    let rows = app.node.room_stats(&id, bucket, from, to).await?;
    Ok(Json(RoomStatsView {
        room: id.key.to_string(),
        bucket: q.bucket.unwrap_or_else(|| "1m".into()),
        items: rows
            .iter()
            .map(|b| StatBucketView {
                start: iso_ms(b.start),
                online_sessions_peak: b.online_sessions_peak,
                online_sessions_avg: b.online_sessions_avg,
                online_users_peak: b.online_users_peak,
                joins: b.joins,
                leaves: b.leaves,
                timeouts: b.timeouts,
                unique_users: b.unique_users,
                latency_avg_ms: b.latency_avg_ms,
                latency_p95_ms: b.latency_p95_ms,
            })
            .collect(),
    }))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OverviewView {
    pub from: String,
    pub to: String,
    /// Live now.
    pub online: OnlineTotals,
    /// Sessions that started in the window.
    pub sessions_started: u64,
    /// Distinct users among them.
    pub unique_users: u64,
    /// Up to 10 rooms by peak online sessions in the window, busiest first.
    pub busiest_rooms: Vec<BusyRoom>,
    pub by_device: std::collections::BTreeMap<String, u64>,
    /// Sessions without the field count under `unknown`.
    pub by_os: std::collections::BTreeMap<String, u64>,
    pub by_app_version: std::collections::BTreeMap<String, u64>,
}

#[derive(Serialize, ToSchema)]
pub struct OnlineTotals {
    pub users: usize,
    pub sessions: usize,
    pub rooms: usize,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BusyRoom {
    pub room: String,
    pub peak_sessions: u32,
}

/// Tenant totals: sessions, unique users, busiest rooms, device / OS / app
/// version breakdown, live counts.
#[utoipa::path(get, path = "/api/v1/stats/overview", operation_id = "getStatsOverview", tag = "stats", params(Window),
    responses((status = 200, description = "the tenant's totals", body = OverviewView)))]
pub async fn overview(
    State(app): State<AppState>,
    caller: Caller,
    ApiQuery(w): ApiQuery<Window>,
) -> ApiResult<Json<OverviewView>> {
    caller.require_monitor()?;
    let (from, to) = w.resolve(DAY)?;
    let o = app.node.stats_overview(&caller.tenant, from, to).await?;
    let live = app.node.live_totals(&caller.tenant).await?;
    Ok(Json(OverviewView {
        from: iso_ms(from),
        to: iso_ms(to),
        online: OnlineTotals {
            users: live.users,
            sessions: live.sessions,
            rooms: live.rooms,
        },
        sessions_started: o.sessions_started,
        unique_users: o.unique_users,
        busiest_rooms: o
            .busiest_rooms
            .into_iter()
            .map(|(room, peak_sessions)| BusyRoom {
                room,
                peak_sessions,
            })
            .collect(),
        by_device: o.by_device,
        by_os: o.by_os,
        by_app_version: o.by_app_version,
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Only sessions of this user.
    pub user: Option<String>,
    /// Only sessions that were in this room (key).
    pub room: Option<String>,
    /// Sessions started at or after (ISO-8601).
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// Sessions started before (ISO-8601).
    #[param(format = DateTime)]
    pub to: Option<String>,
    /// Page size, 1-1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// `nextCursor` of the page before.
    pub cursor: Option<String>,
}

/// A session of the history: ended, or live (`endedAt` null).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionHistoryItem {
    pub session_id: String,
    pub user_id: String,
    pub device: String,
    pub os: Option<String>,
    pub app_version: Option<String>,
    pub client_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub started_at: String,
    pub ended_at: Option<String>,
    /// `left` (BYE), `disconnected`, `timeout`, `kicked` or `shutdown`.
    pub end_reason: Option<String>,
    /// The rooms it was in.
    pub rooms: Vec<String>,
}

impl From<&SessionRecord> for SessionHistoryItem {
    fn from(r: &SessionRecord) -> Self {
        Self {
            session_id: r.session_id.clone(),
            user_id: r.user.clone(),
            device: r.device.clone(),
            os: r.os.clone(),
            app_version: r.app_version.clone(),
            client_id: r.client_id.clone(),
            ip: r.ip.clone(),
            user_agent: r.user_agent.clone(),
            started_at: iso_ms(r.started_at),
            ended_at: r.ended_at.map(iso_ms),
            end_reason: r.end_reason.clone(),
            rooms: r.rooms.clone(),
        }
    }
}

/// Ended and live sessions of the tenant, newest first.
#[utoipa::path(get, path = "/api/v1/sessions/history", operation_id = "listSessionHistory", tag = "sessions", params(HistoryQuery),
    responses((status = 200, description = "a page of sessions", body = Page<SessionHistoryItem>)))]
pub async fn history(
    State(app): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> ApiResult<Json<Page<SessionHistoryItem>>> {
    caller.require_monitor()?;
    let lim = page_limit(q.limit)?;
    let after = match &q.cursor {
        None => None,
        Some(c) => {
            let s = decode_cursor(c)?;
            let (at, sid) = s.split_once(':').ok_or_else(|| {
                ApiError::new(
                    ErrorCode::Invalid,
                    "field `cursor`: not a cursor from this API",
                )
            })?;
            let started_at = at.parse().map_err(|_| {
                ApiError::new(
                    ErrorCode::Invalid,
                    "field `cursor`: not a cursor from this API",
                )
            })?;
            Some(SessionCursor {
                started_at,
                session_id: sid.to_string(),
            })
        }
    };
    let filter = SessionFilter {
        user: q.user.clone(),
        room: q.room.clone(),
        from: time_param("from", &q.from)?,
        to: time_param("to", &q.to)?,
        after,
        limit: lim + 1,
    };
    let mut rows = app.node.session_history(&caller.tenant, filter).await?;
    let next = if rows.len() > lim {
        rows.truncate(lim);
        rows.last()
            .map(|r| encode_cursor(&format!("{}:{}", r.started_at, r.session_id)))
    } else {
        None
    };
    Ok(Json(Page {
        items: rows.iter().map(SessionHistoryItem::from).collect(),
        next_cursor: next,
    }))
}
