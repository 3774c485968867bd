//! Presence reads: a room's roster, a user's status and sessions, batch status.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{json, Value};

use super::{visible_room, ApiError, ApiJson, ApiPath, ApiResult, Caller};
use crate::core::error::ErrorCode;
use crate::core::types::Status;
use crate::http::AppState;
use crate::ids::{UserId, UserRef};
use crate::node::SessionInfoView;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/rooms/{room}/presence", get(room_presence))
        .route("/users/{id}/presence", get(user_presence))
        .route("/users/{id}/online", get(user_online))
        .route("/presence/batch", post(batch))
}

/// The room's `PRESENCE` snapshot, as a WebSocket subscriber would get it.
#[utoipa::path(get, path = "/api/v1/rooms/{room}/presence", tag = "presence",
    params(("room" = String, Path, description = "room key, percent-encoded")),
    responses((status = 200, description = "PRESENCE snapshot (users grouped with their sessions)"),
              (status = 403, body = super::ErrorBody), (status = 404, body = super::ErrorBody), (status = 503, description = "the presence engine (Redis) is unavailable; try again", body = super::ErrorBody)))]
pub async fn room_presence(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(room): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let (id, _) = visible_room(&app, &caller, &room).await?;
    let snap = app
        .node
        .room_presence(&id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no room {room}")))?;
    Ok(Json(serde_json::to_value(snap).unwrap_or_default()))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UserPresence {
    user_id: UserId,
    status: Status,
    is_online: bool,
    last_seen: Option<String>,
    devices: Vec<String>,
    sessions: Vec<SessionInfoView>,
    rooms: Vec<String>,
}

fn user_id(id: &str) -> ApiResult<UserId> {
    UserId::parse(id).map_err(|e| ApiError::new(ErrorCode::Invalid, format!("path `id`: {}", e.0)))
}

/// Status, last seen, live sessions and rooms of one user.
#[utoipa::path(get, path = "/api/v1/users/{id}/presence", tag = "presence",
    params(("id" = String, Path, description = "user id (`sub`)")),
    responses((status = 200, description = "{userId, status, isOnline, lastSeen, devices, sessions, rooms}"), (status = 503, description = "the presence engine (Redis) is unavailable; try again", body = super::ErrorBody)))]
pub async fn user_presence(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let user = UserRef {
        tenant: caller.tenant.clone(),
        user: user_id(&id)?,
    };
    let p = app.node.user_presence(&user).await?;
    let status = p.status;
    let body = UserPresence {
        user_id: user.user,
        status: status.status,
        is_online: status.status != Status::Offline,
        last_seen: status.last_seen,
        devices: status.devices,
        sessions: p.sessions,
        rooms: p.rooms,
    };
    Ok(Json(serde_json::to_value(body).unwrap_or_default()))
}

#[utoipa::path(get, path = "/api/v1/users/{id}/online", tag = "presence",
    params(("id" = String, Path)), responses((status = 200, description = "{isOnline}"), (status = 503, description = "the presence engine (Redis) is unavailable; try again", body = super::ErrorBody)))]
pub async fn user_online(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let user = UserRef {
        tenant: caller.tenant.clone(),
        user: user_id(&id)?,
    };
    let online = app.node.is_online(&user).await?;
    Ok(Json(json!({"isOnline": online})))
}

/// `[ids]` (at most 1000) → `{id: {status, isOnline, lastSeen}}`.
#[utoipa::path(post, path = "/api/v1/presence/batch", tag = "presence",
    request_body(content = Vec<String>, description = "user ids, at most 1000"),
    responses((status = 200, description = "{id: {status, isOnline, lastSeen}}"), (status = 422, body = super::ErrorBody), (status = 503, description = "the presence engine (Redis) is unavailable; try again", body = super::ErrorBody)))]
pub async fn batch(
    State(app): State<AppState>,
    caller: Caller,
    ApiJson(ids): ApiJson<Vec<String>>,
) -> ApiResult<Json<Value>> {
    if ids.len() > 1000 {
        return Err(ApiError::new(
            ErrorCode::Invalid,
            "body: at most 1000 user ids",
        ));
    }
    let mut out = BTreeMap::new();
    for (i, id) in ids.iter().enumerate() {
        let user = UserId::parse(id)
            .map_err(|e| ApiError::new(ErrorCode::Invalid, format!("field `[{i}]`: {}", e.0)))?;
        let v = app
            .node
            .user_status(&UserRef {
                tenant: caller.tenant.clone(),
                user,
            })
            .await?;
        out.insert(id.clone(), json!({"status": v.status, "isOnline": v.status != Status::Offline, "lastSeen": v.last_seen}));
    }
    Ok(Json(serde_json::to_value(out).unwrap_or_default()))
}
