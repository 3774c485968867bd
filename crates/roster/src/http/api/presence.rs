//! Presence reads: a room's roster, a user's status and sessions, batch status.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use super::{ApiError, ApiJson, ApiPath, ApiResult, Caller};
use crate::core::error::ErrorCode;
use crate::core::room::PresenceSnapshot;
use crate::core::types::Status;
use crate::http::AppState;
use crate::ids::{RoomKey, UserId, UserRef};
use crate::node::SessionInfoView;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/rooms/{room}/presence", get(room_presence))
        .route("/users/{id}/presence", get(user_presence))
        .route("/users/{id}/online", get(user_online))
        .route("/presence/batch", post(batch))
}

/// The room's `PRESENCE` snapshot, as a WebSocket subscriber would get it. A
/// valid key of a room nobody is in (ad hoc rooms exist only while used) is
/// simply empty: `count` 0, no users.
#[utoipa::path(get, path = "/api/v1/rooms/{room}/presence", operation_id = "getRoomPresence", tag = "presence",
    params(("room" = RoomKey, Path, description = "the room key, percent-encoded")),
    responses((status = 200, description = "the `PRESENCE` snapshot: users grouped with their sessions", body = PresenceSnapshot)))]
pub async fn room_presence(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(room): ApiPath<String>,
) -> ApiResult<Json<PresenceSnapshot>> {
    let id = caller.room(&room)?;
    let Some(summary) = app.node.room(&id).await? else {
        return Ok(Json(PresenceSnapshot::empty(id.key.as_str())));
    };
    caller.may_see(&summary.settings)?;
    let snap = app.node.room_presence(&id).await?;
    Ok(Json(snap.unwrap_or_else(|| {
        PresenceSnapshot::empty(id.key.as_str())
    })))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserPresence {
    user_id: UserId,
    /// Merged over the user's sessions: online beats away beats offline.
    status: Status,
    is_online: bool,
    /// ISO-8601; null if never seen.
    last_seen: Option<String>,
    /// Distinct device kinds of the live sessions.
    devices: Vec<String>,
    sessions: Vec<SessionInfoView>,
    /// Keys of the rooms the user's sessions are in.
    rooms: Vec<String>,
}

/// The user ids of `POST /presence/batch`: at most 1000.
#[derive(ToSchema)]
#[schema(max_items = 1000)]
#[allow(dead_code)] // only its schema is used
pub struct BatchIds(Vec<UserId>);

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OnlineView {
    is_online: bool,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserStatusItem {
    status: Status,
    is_online: bool,
    /// ISO-8601; null if never seen.
    last_seen: Option<String>,
}

fn user_id(id: &str) -> ApiResult<UserId> {
    UserId::parse(id).map_err(|e| ApiError::new(ErrorCode::Invalid, format!("path `id`: {}", e.0)))
}

/// Status, last seen, live sessions and rooms of one user.
#[utoipa::path(get, path = "/api/v1/users/{id}/presence", operation_id = "getUserPresence", tag = "presence",
    params(("id" = UserId, Path, description = "the user id (`sub`), percent-encoded")),
    responses((status = 200, description = "the user's presence on every node", body = UserPresence)))]
pub async fn user_presence(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<UserPresence>> {
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
    Ok(Json(body))
}

/// Whether the user has a live session (online or away).
#[utoipa::path(get, path = "/api/v1/users/{id}/online", operation_id = "getUserOnline", tag = "presence",
    params(("id" = UserId, Path, description = "the user id (`sub`), percent-encoded")),
    responses((status = 200, description = "online or not", body = OnlineView)))]
pub async fn user_online(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<OnlineView>> {
    let user = UserRef {
        tenant: caller.tenant.clone(),
        user: user_id(&id)?,
    };
    let online = app.node.is_online(&user).await?;
    Ok(Json(OnlineView { is_online: online }))
}

/// `[ids]` (at most 1000) → `{id: {status, isOnline, lastSeen}}`.
#[utoipa::path(post, path = "/api/v1/presence/batch", operation_id = "getPresenceBatch", tag = "presence",
    request_body(content = BatchIds, description = "user ids, at most 1000", example = json!(["alice", "bob"])),
    responses((status = 200, description = "each user id asked, with its status", body = BTreeMap<String, UserStatusItem>)))]
pub async fn batch(
    State(app): State<AppState>,
    caller: Caller,
    ApiJson(ids): ApiJson<Vec<String>>,
) -> ApiResult<Json<BTreeMap<String, UserStatusItem>>> {
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
        out.insert(
            id.clone(),
            UserStatusItem {
                status: v.status,
                is_online: v.status != Status::Offline,
                last_seen: v.last_seen,
            },
        );
    }
    Ok(Json(out))
}
