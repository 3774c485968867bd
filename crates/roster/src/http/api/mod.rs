//! REST API `/api/v1` (SPEC §4): one error type, one caller extractor, one JSON
//! body extractor, and a router per area.

mod activity;
pub mod alerts;
mod lifecycle;
mod locks;
pub mod openapi;
mod presence;
mod rooms;
mod sessions;
pub mod stream;
mod webhooks;

use std::time::Duration;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use dashmap::DashMap;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::AppState;
use crate::core::error::{CoreError, ErrorCode};
use crate::ids::{RoomId, RoomKey, TenantId};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(openapi::serve))
        .merge(presence::router())
        .merge(rooms::router())
        .merge(sessions::router())
        .merge(locks::router())
        .merge(lifecycle::router())
        .merge(activity::router())
        .merge(webhooks::router())
        .merge(alerts::router())
        .route("/stream", get(stream::stream))
}

/// `{"error": {"code", "message"}}` with the status of the code.
#[derive(Debug)]
pub struct ApiError(pub CoreError);

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self(CoreError::new(code, message))
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError as S;
        match e {
            S::NotFound => ApiError::new(ErrorCode::NotFound, "not found"),
            S::Conflict => ApiError::new(ErrorCode::Conflict, "already exists"),
            S::Unavailable(m) => {
                tracing::warn!("database unavailable for a REST call: {m}");
                ApiError::new(
                    ErrorCode::Unavailable,
                    "the database is unavailable; try again later",
                )
            }
            S::Other(m) => {
                let id = crate::ids::SessionId::new_random();
                tracing::error!(correlation = %id, "database error: {m}");
                ApiError::new(
                    ErrorCode::Internal,
                    format!("internal error (correlation id {id})"),
                )
            }
        }
    }
}

impl From<crate::node::admin::AdminError> for ApiError {
    fn from(e: crate::node::admin::AdminError) -> Self {
        use crate::node::admin::AdminError as A;
        match e {
            A::Store(e) => e.into(),
            A::Engine(e) => e.into(),
        }
    }
}

impl From<crate::engine::EngineError> for ApiError {
    /// A refusal keeps its code; an unreachable engine (Redis) is `503
    /// unavailable`, never "not found" or an empty list.
    fn from(e: crate::engine::EngineError) -> Self {
        use crate::engine::EngineError as E;
        match e {
            E::Refused(e) => Self(e),
            E::Unavailable => ApiError::new(
                ErrorCode::Unavailable,
                "the presence engine (Redis) is unavailable; try again later",
            ),
        }
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        Self(e)
    }
}

/// Every error answer: `{"error": {"code", "message"}}`.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"error": {"code": "not_found", "message": "no room Order:9"}}))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable per status (SPEC §4): `bad_request`, `unauthorized`, `forbidden`,
    /// `not_found`, `conflict`, `payload_too_large`, `invalid`,
    /// `method_not_allowed`, `rate_limited`, `internal`, `unavailable`.
    pub code: String,
    /// For people; names the field or parameter at fault.
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.0.code.as_str().into(),
                message: self.0.message,
            },
        };
        (status, Json(body)).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

pub async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such path")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "method not allowed on this path",
    )
}

/// Who calls: a tenant's JWT, or the operator admin key with `X-Tenant`.
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant: TenantId,
    pub user: Option<crate::ids::UserId>,
    pub roles: Vec<String>,
    pub operator: bool,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.operator || self.roles.iter().any(|r| r == "admin")
    }

    /// Who acted, for the activity log: the token's user, or `operator`.
    pub fn actor(&self) -> String {
        self.user
            .as_ref()
            .map(|u| u.to_string())
            .unwrap_or_else(|| "operator".into())
    }
    fn has(&self, role: &str) -> bool {
        self.is_admin() || self.roles.iter().any(|r| r == role)
    }
    pub fn require_admin(&self) -> ApiResult<()> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::new(ErrorCode::Forbidden, "needs role admin"))
        }
    }
    pub fn require_monitor(&self) -> ApiResult<()> {
        if self.has("monitor") {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::Forbidden,
                "needs role monitor or admin",
            ))
        }
    }
    pub fn require_service(&self) -> ApiResult<()> {
        if self.has("service") {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::Forbidden,
                "needs role service or admin",
            ))
        }
    }
    /// Private rooms are visible to admins, monitors and their participants.
    pub fn may_see(&self, settings: &crate::core::room::RoomSettings) -> ApiResult<()> {
        use crate::core::room_type::Visibility;
        if settings.visibility == Visibility::Open
            || self.is_admin()
            || self.roles.iter().any(|r| r == "monitor")
            || self
                .user
                .as_ref()
                .is_some_and(|u| settings.participants.contains_key(u))
        {
            Ok(())
        } else {
            Err(ApiError::new(ErrorCode::Forbidden, "this room is private"))
        }
    }

    pub fn room(&self, key: &str) -> ApiResult<RoomId> {
        let key = RoomKey::parse(key)
            .map_err(|e| ApiError::new(ErrorCode::Invalid, format!("path `room`: {}", e.0)))?;
        Ok(RoomId {
            tenant: self.tenant.clone(),
            key,
        })
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::Unauthorized,
                    "missing Authorization: Bearer <token>",
                )
            })?;
        let caller = if app.auth.is_admin_key(bearer) {
            let tenant = parts
                .headers
                .get("x-tenant")
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::BadRequest,
                        "the admin key needs an X-Tenant header",
                    )
                })?;
            let tenant = TenantId::parse(tenant)
                .map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("X-Tenant: {}", e.0)))?;
            Caller {
                tenant,
                user: None,
                roles: vec!["admin".into()],
                operator: true,
            }
        } else {
            let id = app
                .auth
                .verify(bearer)
                .map_err(|e| ApiError::new(ErrorCode::Unauthorized, e.0))?;
            Caller {
                tenant: id.tenant,
                user: Some(id.user),
                roles: id.roles,
                operator: false,
            }
        };
        if !app.rest_limiter.take(&caller.tenant) {
            return Err(ApiError::new(
                ErrorCode::RateLimited,
                "too many requests for this tenant",
            ));
        }
        Ok(caller)
    }
}

/// Per-tenant token bucket for REST (`limits.rest_requests_per_second`, burst 2×).
pub struct RateLimiter {
    rate: f64,
    buckets: DashMap<TenantId, (f64, Instant)>,
}

impl RateLimiter {
    pub fn new(rate: u32) -> Self {
        Self {
            rate: rate as f64,
            buckets: DashMap::new(),
        }
    }
    pub fn take(&self, tenant: &TenantId) -> bool {
        let now = Instant::now();
        let burst = self.rate * 2.0;
        let mut b = self.buckets.entry(tenant.clone()).or_insert((burst, now));
        let (tokens, last) = *b;
        let tokens = (tokens + (now - last).as_secs_f64() * self.rate).min(burst);
        if tokens >= 1.0 {
            *b = (tokens - 1.0, now);
            true
        } else {
            *b = (tokens, now);
            false
        }
    }
}

/// A JSON body: 413 above `limits.max_body_bytes`, 400 when not JSON, 422 naming
/// the field when the shape is wrong.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        ErrorCode::PayloadTooLarge,
                        format!(
                            "body above {} bytes",
                            state.node.config.limits.max_body_bytes
                        ),
                    )
                } else {
                    ApiError::new(ErrorCode::BadRequest, e.body_text())
                }
            })?;
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::new(
                ErrorCode::BadRequest,
                format!("body is not valid JSON: {e}"),
            )
        })?;
        serde_path_to_error::deserialize(value)
            .map(ApiJson)
            .map_err(|e| {
                let path = e.path().to_string();
                ApiError::new(
                    ErrorCode::Invalid,
                    format!("field `{path}`: {}", e.into_inner()),
                )
            })
    }
}

/// Query parameters: a value of the wrong shape is a 422 naming the parameter,
/// in the API's error shape (axum's own rejection is plain text).
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| ApiQuery(q.0))
            .map_err(|e| {
                let text = e.body_text();
                let detail = text.trim_start_matches("Failed to deserialize query string: ");
                ApiError::new(ErrorCode::Invalid, format!("query: {detail}"))
            })
    }
}

/// The caller's room `key` as the engine holds it, or 404.
pub async fn room_or_404(
    app: &super::AppState,
    caller: &Caller,
    key: &str,
) -> ApiResult<(RoomId, crate::engine::RoomSummary)> {
    let id = caller.room(key)?;
    let summary = app
        .node
        .room(&id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no room {key}")))?;
    Ok((id, summary))
}

/// Like [`room_or_404`], and the caller may see it (private rooms: 403).
pub async fn visible_room(
    app: &super::AppState,
    caller: &Caller,
    key: &str,
) -> ApiResult<(RoomId, crate::engine::RoomSummary)> {
    let (id, summary) = room_or_404(app, caller, key).await?;
    caller.may_see(&summary.settings)?;
    Ok((id, summary))
}

/// Path parameters, percent-decoded; a bad encoding is a 422 in the API's shape.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e| ApiError::new(ErrorCode::Invalid, format!("path: {}", e.body_text())))
    }
}

/// A page size: default 100, 1 to 1000 (SPEC §4).
/// An id in a path that the server generated (`wh_…`, `ar_…`, `al_…`) or a
/// configuration names: `[A-Za-z0-9_-]{1,64}`.
pub fn path_id(id: &str) -> ApiResult<String> {
    if (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        Ok(id.to_string())
    } else {
        Err(ApiError::new(
            ErrorCode::Invalid,
            "path `id`: [A-Za-z0-9_-]{1,64}",
        ))
    }
}

pub fn page_limit(l: Option<usize>) -> ApiResult<usize> {
    match l.unwrap_or(100) {
        n @ 1..=1000 => Ok(n),
        _ => Err(ApiError::new(
            ErrorCode::Invalid,
            "field `limit`: between 1 and 1000",
        )),
    }
}

/// Cursors are opaque to clients: the key of the last item, base64url.
pub fn encode_cursor(key: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
}

pub fn decode_cursor(c: &str) -> ApiResult<String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::Invalid,
                "field `cursor`: not a cursor from this API",
            )
        })
}

/// `limit` (default 100, max 1000) and an opaque `cursor`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page size, 1-1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// `nextCursor` of the page before.
    pub cursor: Option<String>,
}

/// A page of a list: pass `nextCursor` back as `cursor` for the next one.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Page<T: Serialize> {
    pub items: Vec<T>,
    /// Null on the last page.
    pub next_cursor: Option<String>,
}

impl PageQuery {
    /// Pages a list sorted by `key`: items strictly after the cursor's key.
    pub fn apply<T: Serialize>(
        &self,
        items: Vec<T>,
        key: impl Fn(&T) -> String,
    ) -> ApiResult<Page<T>> {
        let limit = page_limit(self.limit)?;
        let after = self.cursor.as_deref().map(decode_cursor).transpose()?;
        let mut rest: Vec<T> = items
            .into_iter()
            .filter(|i| after.as_ref().is_none_or(|a| key(i) > *a))
            .collect();
        let next_cursor = if rest.len() > limit {
            rest.truncate(limit);
            rest.last().map(|i| encode_cursor(&key(i)))
        } else {
            None
        };
        Ok(Page {
            items: rest,
            next_cursor,
        })
    }
}

pub fn parse_duration_field(field: &str, s: &str) -> ApiResult<Duration> {
    crate::config::parse_duration(s)
        .map_err(|e| ApiError::new(ErrorCode::Invalid, format!("field `{field}`: {e}")))
}

pub fn created<T: Serialize>(body: T) -> Response {
    (StatusCode::CREATED, Json(body)).into_response()
}

pub fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}
