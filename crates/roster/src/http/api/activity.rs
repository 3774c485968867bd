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
use serde::Deserialize;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::{
    decode_cursor, encode_cursor, page_limit, ApiError, ApiPath, ApiQuery, ApiResult, Caller,
};
use crate::clock::iso;
use crate::core::error::ErrorCode;
use crate::http::AppState;
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

fn iso_ms(ms: UnixMs) -> String {
    iso(SystemTime::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
}

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
pub struct ActivityQuery {
    pub room: Option<String>,
    pub user: Option<String>,
    /// Activity kind, e.g. `join`, `leave`, `timeout`, `lock_acquired`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// ISO-8601, inclusive.
    pub from: Option<String>,
    /// ISO-8601, exclusive.
    pub to: Option<String>,
    pub limit: Option<usize>,
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

fn activity_json(r: &ActivityRow) -> Value {
    json!({
        "id": r.id, "at": iso_ms(r.at), "type": r.kind, "actor": r.actor, "userId": r.user,
        "room": r.room, "sessionId": r.session, "details": r.details,
    })
}

/// The activity log of the tenant, newest first, with a keyset cursor.
#[utoipa::path(get, path = "/api/v1/activity", tag = "activity", params(ActivityQuery),
    responses((status = 200, description = "{items: [{id, at, type, actor, userId, room, sessionId, details}], nextCursor}"),
              (status = 403, body = super::ErrorBody), (status = 422, body = super::ErrorBody)))]
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ActivityQuery>,
) -> ApiResult<Json<Value>> {
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
    Ok(Json(
        json!({"items": rows.iter().map(activity_json).collect::<Vec<_>>(), "nextCursor": next}),
    ))
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
#[utoipa::path(get, path = "/api/v1/activity.csv", tag = "activity", params(ActivityQuery),
    responses((status = 200, description = "text/csv: id,at,type,actor,userId,room,sessionId,details"), (status = 403, body = super::ErrorBody)))]
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
pub struct Window {
    /// ISO-8601; default 24 hours before `to`.
    pub from: Option<String>,
    /// ISO-8601; default now.
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

/// Rows by type and by hour.
#[utoipa::path(get, path = "/api/v1/activity/stats", tag = "activity", params(Window),
    responses((status = 200, description = "{byType: {type: n}, byHour: [{hour, count}]}")))]
pub async fn stats(
    State(app): State<AppState>,
    caller: Caller,
    ApiQuery(w): ApiQuery<Window>,
) -> ApiResult<Json<Value>> {
    caller.require_monitor()?;
    let (from, to) = w.resolve(DAY)?;
    let s = app.node.activity_stats(&caller.tenant, from, to).await?;
    let by_hour: Vec<Value> = s
        .by_hour
        .iter()
        .map(|(h, n)| json!({"hour": iso_ms(*h), "count": n}))
        .collect();
    Ok(Json(
        json!({"byType": s.by_type, "byHour": by_hour, "from": iso_ms(from), "to": iso_ms(to)}),
    ))
}

/// Who was in the room and for how long, lock history, and a timeline.
#[utoipa::path(get, path = "/api/v1/rooms/{room}/audit", tag = "activity", params(("room" = String, Path), Window),
    responses((status = 200, description = "{participants: [{userId, sessions, timeSpentMs, firstSeen, lastSeen}], locks: [...], timeline: [...]}")))]
pub async fn audit(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(room): ApiPath<String>,
    ApiQuery(w): ApiQuery<Window>,
) -> ApiResult<Json<Value>> {
    caller.require_monitor()?;
    let id = caller.room(&room)?;
    let (from, to) = w.resolve(DAY)?;
    let a = app.node.room_audit(&id, from, to).await?;
    let participants: Vec<Value> = a
        .participants
        .iter()
        .map(|p| json!({"userId": p.user, "sessions": p.sessions, "timeSpentMs": p.time_spent_ms, "firstSeen": iso_ms(p.first_seen), "lastSeen": iso_ms(p.last_seen)}))
        .collect();
    Ok(Json(json!({
        "room": id.key, "from": iso_ms(from), "to": iso_ms(to),
        "participants": participants,
        "locks": a.locks.iter().map(activity_json).collect::<Vec<_>>(),
        "timeline": a.timeline.iter().map(activity_json).collect::<Vec<_>>(),
    })))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct StatsQuery {
    /// `1m` (default), `1h` or `1d`.
    pub bucket: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// Per-room statistics buckets.
#[utoipa::path(get, path = "/api/v1/rooms/{room}/stats", tag = "stats", params(("room" = String, Path), StatsQuery),
    responses((status = 200, description = "{bucket, items: [{start, onlineSessionsPeak, onlineSessionsAvg, onlineUsersPeak, joins, leaves, timeouts, uniqueUsers, latencyAvgMs, latencyP95Ms}]}"),
              (status = 422, body = super::ErrorBody)))]
pub async fn room_stats(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(room): ApiPath<String>,
    ApiQuery(q): ApiQuery<StatsQuery>,
) -> ApiResult<Json<Value>> {
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
    let items: Vec<Value> = rows
        .iter()
        .map(|b| json!({
            "start": iso_ms(b.start), "onlineSessionsPeak": b.online_sessions_peak, "onlineSessionsAvg": b.online_sessions_avg,
            "onlineUsersPeak": b.online_users_peak, "joins": b.joins, "leaves": b.leaves, "timeouts": b.timeouts,
            "uniqueUsers": b.unique_users, "latencyAvgMs": b.latency_avg_ms, "latencyP95Ms": b.latency_p95_ms,
        }))
        .collect();
    Ok(Json(
        json!({"room": id.key, "bucket": q.bucket.as_deref().unwrap_or("1m"), "items": items}),
    ))
}

/// Tenant totals: sessions, unique users, busiest rooms, device / OS / app
/// version breakdown, live counts.
#[utoipa::path(get, path = "/api/v1/stats/overview", tag = "stats", params(Window),
    responses((status = 200, description = "{online: {users, sessions, rooms}, sessionsStarted, uniqueUsers, busiestRooms, byDevice, byOs, byAppVersion}")))]
pub async fn overview(
    State(app): State<AppState>,
    caller: Caller,
    ApiQuery(w): ApiQuery<Window>,
) -> ApiResult<Json<Value>> {
    caller.require_monitor()?;
    let (from, to) = w.resolve(DAY)?;
    let o = app.node.stats_overview(&caller.tenant, from, to).await?;
    let live = app.node.live_totals(&caller.tenant).await?;
    Ok(Json(json!({
        "from": iso_ms(from), "to": iso_ms(to),
        "online": {"users": live.users, "sessions": live.sessions, "rooms": live.rooms},
        "sessionsStarted": o.sessions_started, "uniqueUsers": o.unique_users,
        "busiestRooms": o.busiest_rooms.iter().map(|(r, p)| json!({"room": r, "peakSessions": p})).collect::<Vec<_>>(),
        "byDevice": o.by_device, "byOs": o.by_os, "byAppVersion": o.by_app_version,
    })))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct HistoryQuery {
    pub user: Option<String>,
    pub room: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

fn session_json(r: &SessionRecord) -> Value {
    json!({
        "sessionId": r.session_id, "userId": r.user, "device": r.device, "os": r.os, "appVersion": r.app_version,
        "clientId": r.client_id, "ip": r.ip, "userAgent": r.user_agent, "startedAt": iso_ms(r.started_at),
        "endedAt": r.ended_at.map(iso_ms), "endReason": r.end_reason, "rooms": r.rooms,
    })
}

/// Ended and live sessions of the tenant, newest first.
#[utoipa::path(get, path = "/api/v1/sessions/history", tag = "sessions", params(HistoryQuery),
    responses((status = 200, description = "{items: [{sessionId, userId, device, os, appVersion, clientId, ip, userAgent, startedAt, endedAt, endReason, rooms}], nextCursor}")))]
pub async fn history(
    State(app): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> ApiResult<Json<Value>> {
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
    Ok(Json(
        json!({"items": rows.iter().map(session_json).collect::<Vec<_>>(), "nextCursor": next}),
    ))
}
