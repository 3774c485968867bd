//! `POST /lifecycle`: the REST twin of the Kafka lifecycle events.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;

use super::{ApiError, ApiJson, ApiResult, Caller};
use crate::core::error::ErrorCode;
use crate::http::AppState;
use crate::ids::{RoomId, RoomKey, UserId};

pub fn router() -> Router<AppState> {
    Router::new().route("/lifecycle", post(lifecycle))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum LifecycleType {
    Mutating,
    Mutated,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleEvent {
    #[serde(rename = "type")]
    pub kind: LifecycleType,
    pub entity: String,
    #[schema(value_type = String)]
    pub id: serde_json::Value,
    pub user_id: String,
}

/// `MUTATING` marks the entity's room stale (busy by `userId`); `MUTATED` clears it
/// and bumps `version`. Members get an `ENTITY` event. Needs role `service` or `admin`.
#[utoipa::path(post, path = "/api/v1/lifecycle", tag = "lifecycle", request_body = LifecycleEvent,
    responses((status = 202, description = "{room, stale, busyBy, version}"), (status = 422, body = super::ErrorBody), (status = 403, body = super::ErrorBody), (status = 503, description = "the presence engine (Redis) is unavailable; try again", body = super::ErrorBody)))]
pub async fn lifecycle(
    State(app): State<AppState>,
    caller: Caller,
    ApiJson(ev): ApiJson<LifecycleEvent>,
) -> ApiResult<Response> {
    caller.require_service()?;
    let id = match &ev.id {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => {
            return Err(ApiError::new(
                ErrorCode::Invalid,
                "field `id`: expected a string or number",
            ))
        }
    };
    let key = RoomKey::from_entity(&ev.entity, &id)
        .map_err(|e| ApiError::new(ErrorCode::Invalid, format!("field `entity`/`id`: {}", e.0)))?;
    let user = UserId::parse(&ev.user_id)
        .map_err(|e| ApiError::new(ErrorCode::Invalid, format!("field `userId`: {}", e.0)))?;
    let room = RoomId {
        tenant: caller.tenant.clone(),
        key,
    };
    let view = app
        .node
        .lifecycle(&room, matches!(ev.kind, LifecycleType::Mutating), user)
        .await?;
    Ok((
        axum::http::StatusCode::ACCEPTED,
        Json(view.map(|v| serde_json::to_value(v).unwrap_or_default())),
    )
        .into_response())
}
