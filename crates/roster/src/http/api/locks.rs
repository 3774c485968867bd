//! Field locks of a room: list, and admin force-release.

use axum::extract::State;
use axum::response::Response;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Serialize;

use super::{no_content, visible_room, ApiError, ApiPath, ApiResult, Caller, Page};
use crate::core::error::ErrorCode;
use crate::http::AppState;
use crate::ids::RoomKey;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/rooms/{room}/locks", get(list))
        .route("/rooms/{room}/locks/{field}", delete(force_release))
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LockItem {
    pub field: String,
    pub user_id: String,
    pub session_id: String,
    pub expires_at: String,
}

#[utoipa::path(get, path = "/api/v1/rooms/{room}/locks", operation_id = "listLocks", tag = "locks", params(("room" = RoomKey, Path, description = "the room key, percent-encoded")),
    responses((status = 200, description = "every lock held (one page)", body = Page<LockItem>)))]
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(room): ApiPath<String>,
) -> ApiResult<Json<Page<LockItem>>> {
    let (id, _) = visible_room(&app, &caller, &room).await?;
    let locks = app
        .node
        .room_locks(&id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no room {room}")))?;
    let items = locks
        .into_iter()
        .map(|(field, o)| LockItem {
            field,
            user_id: o.user_id.to_string(),
            session_id: o.session_id.to_string(),
            expires_at: o.expires_at,
        })
        .collect();
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

/// Releases a lock whoever holds it; members get a `LOCK` event with
/// `owner: null, reason: "force_released"`.
#[utoipa::path(delete, path = "/api/v1/rooms/{room}/locks/{field}", operation_id = "forceReleaseLock", tag = "locks",
    params(("room" = RoomKey, Path, description = "the room key, percent-encoded"), ("field" = String, Path, description = "the locked field, as `LOCK` named it")),
    responses((status = 204, description = "released")))]
pub async fn force_release(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath((room, field)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let id = caller.room(&room)?;
    if app.node.force_unlock(&id, &field, &caller.actor()).await? {
        Ok(no_content())
    } else {
        Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no lock on {field} in {room}"),
        ))
    }
}
