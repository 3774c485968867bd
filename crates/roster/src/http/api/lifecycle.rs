//! `POST /lifecycle`: the REST twin of the Kafka lifecycle events.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;

use super::{ApiError, ApiJson, ApiResult, Caller};
use crate::core::error::ErrorCode;
use crate::core::room::EntityView;
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

/// A record changed behind the users' backs; its room is `<entity>:<id>`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"type": "MUTATING", "entity": "Order", "id": 123, "userId": "etl"}))]
pub struct LifecycleEvent {
    #[serde(rename = "type")]
    pub kind: LifecycleType,
    /// The record's kind, e.g. `Order`.
    #[schema(pattern = "^[A-Za-z0-9_./@-]{1,199}$", example = "Order")]
    pub entity: String,
    /// The record's id: a string or an integer.
    #[schema(value_type = EntityId)]
    pub id: serde_json::Value,
    /// Who changes it (shown as `busyBy`).
    #[schema(value_type = UserId)]
    pub user_id: String,
}

/// A record's id in `POST /lifecycle`: a string or an integer.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // only its schema is used
#[schema(example = 123)]
pub enum EntityId {
    Text(String),
    Number(i64),
}

/// `MUTATING` marks the entity's room stale (busy by `userId`); `MUTATED` clears it
/// and bumps `version`. Members get an `ENTITY` event. Needs role `service` or `admin`.
#[utoipa::path(post, path = "/api/v1/lifecycle", operation_id = "postLifecycle", tag = "lifecycle", request_body = LifecycleEvent,
    responses((status = 202, description = "applied: the entity's state now", body = EntityView)))]
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
    Ok((axum::http::StatusCode::ACCEPTED, Json(view)).into_response())
}
