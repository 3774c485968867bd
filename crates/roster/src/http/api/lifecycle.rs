//! `POST /lifecycle`: the REST twin of the Kafka lifecycle events.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;

use axum::http::StatusCode;

use super::{ApiError, ApiJson, ApiResult, Caller};
use crate::core::error::ErrorCode;
use crate::core::room::EntityView;
use crate::http::AppState;
use crate::ids::UserId;
use crate::node::lifecycle::{Applied, LifecycleInput};

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
    /// The event's unique id: an event with an id already applied (within
    /// `kafka.dedup_window`, across restarts) changes nothing and is answered
    /// `200` with the state now. The Kafka lifecycle topics share the window.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 200, example = "etl-7f3a")]
    pub event_id: Option<String>,
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
    responses(
        (status = 202, description = "applied: the entity's state now", body = EntityView),
        (status = 200, description = "an `eventId` already applied: nothing changed; the entity's state now", body = EntityView)))]
pub async fn lifecycle(
    State(app): State<AppState>,
    caller: Caller,
    ApiJson(ev): ApiJson<LifecycleEvent>,
) -> ApiResult<Response> {
    caller.require_service()?;
    let target = LifecycleInput {
        tenant: caller.tenant.clone(),
        entity: &ev.entity,
        id: &ev.id,
        user_id: &ev.user_id,
        event_id: ev.event_id.as_deref(),
    }
    .check()
    .map_err(|e| ApiError::new(ErrorCode::Invalid, e))?;
    let mutating = matches!(ev.kind, LifecycleType::Mutating);
    Ok(match app.node.lifecycle_once(&target, mutating).await? {
        Applied::Now(view) => (StatusCode::ACCEPTED, Json(view)).into_response(),
        Applied::Before(view) => (StatusCode::OK, Json(view)).into_response(),
    })
}
