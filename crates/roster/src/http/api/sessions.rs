//! Sessions: list (monitor) and kick (admin).

use axum::extract::State;
use axum::response::Response;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Deserialize;

use super::{no_content, ApiError, ApiPath, ApiQuery, ApiResult, Caller, Page, PageQuery};
use crate::core::error::ErrorCode;
use crate::http::AppState;
use crate::ids::SessionId;
use crate::node::SessionInfoView;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/sessions", get(list))
        .route("/sessions/{id}", delete(kick))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SessionFilter {
    /// Only sessions in this room (key).
    pub room: Option<String>,
    /// Only sessions of this user.
    pub user: Option<String>,
    /// `online` or `away`.
    #[param(pattern = "^(online|away)$")]
    pub status: Option<String>,
    /// Page size, 1-1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// `nextCursor` of the page before.
    pub cursor: Option<String>,
}

/// Live sessions of the tenant (connected or inside their leave grace).
#[utoipa::path(get, path = "/api/v1/sessions", operation_id = "listSessions", tag = "sessions", params(SessionFilter),
    responses((status = 200, description = "a page of live sessions, on every node", body = Page<SessionInfoView>)))]
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    ApiQuery(f): ApiQuery<SessionFilter>,
) -> ApiResult<Json<Page<SessionInfoView>>> {
    caller.require_monitor()?;
    let status = match f.status.as_deref() {
        None => None,
        Some("online") => Some(crate::core::types::Status::Online),
        Some("away") => Some(crate::core::types::Status::Away),
        Some(other) => {
            return Err(ApiError::new(
                ErrorCode::Invalid,
                format!("field `status`: {other:?} is not online or away"),
            ))
        }
    };
    let items: Vec<SessionInfoView> = app
        .node
        .sessions_in(&caller.tenant, None, f.room.as_deref())
        .await?
        .into_iter()
        .filter(|s| f.user.as_ref().is_none_or(|u| s.user_id.as_str() == u))
        .filter(|s| status.is_none_or(|st| s.status == st))
        .collect();
    Ok(Json(
        PageQuery {
            limit: f.limit,
            cursor: f.cursor,
        }
        .apply(items, |s| s.session_id.to_string())?,
    ))
}

/// Kicks a session: its connection is closed with 4011 and it leaves every room
/// with reason `kicked`.
#[utoipa::path(delete, path = "/api/v1/sessions/{id}", operation_id = "kickSession", tag = "sessions", params(("id" = SessionId, Path, description = "the session id")),
    responses((status = 204, description = "kicked")))]
pub async fn kick(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let not_found = || ApiError::new(ErrorCode::NotFound, format!("no session {id}"));
    let sid = SessionId::parse(&id).map_err(|_| not_found())?;
    if !app
        .node
        .kick_session(&caller.tenant, &sid, &caller.actor())
        .await?
    {
        return Err(not_found());
    }
    Ok(no_content())
}
