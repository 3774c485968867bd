//! Webhook endpoints of the presence event stream (SPEC §7): list, create,
//! read (with what it delivered), replace, delete. Admin role. Checks the URL
//! (and, unless `webhooks.allow_private`, that it points at no private
//! address) and the event filter, then calls `node/webhooks.rs`.

use std::collections::BTreeSet;

use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::{created, no_content, ApiError, ApiJson, ApiPath, ApiResult, Caller, Page};
use crate::core::error::ErrorCode;
use crate::events::kinds;
use crate::events::webhooks::{check_url, DeliveryStats, WebhookSpec};
use crate::http::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/webhooks", get(list).post(create))
        .route("/webhooks/{id}", get(read).put(replace).delete(remove))
}

/// A webhook endpoint and what it delivered since this server started.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookView {
    pub id: String,
    pub url: String,
    /// The event kinds it gets; null: every kind but `member_updated` and `room_event`.
    pub events: Option<Vec<String>>,
    /// The signing secret: only in the answer that created or replaced it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub created_at: String,
    pub delivery: DeliveryStats,
}

impl WebhookView {
    fn new(spec: WebhookSpec, delivery: DeliveryStats, show_secret: bool) -> Self {
        Self {
            secret: show_secret.then(|| spec.secret.clone()),
            id: spec.id,
            url: spec.url,
            events: spec.events.map(|e| e.into_iter().collect()),
            created_at: crate::clock::iso(
                std::time::UNIX_EPOCH
                    + std::time::Duration::from_millis(spec.created_at.max(0) as u64),
            ),
            delivery,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"url": "https://backend.example.com/roster-events", "events": ["member_added", "member_removed", "room_vacated"]}))]
pub struct WebhookBody {
    /// `http://` or `https://`; not a private or loopback address unless
    /// `webhooks.allow_private`.
    pub url: String,
    /// The HMAC-SHA256 key of `X-Roster-Signature`, 16-256 characters
    /// (absent: one is generated and answered once).
    pub secret: Option<String>,
    /// Event kinds to send (absent: every kind but the chatty
    /// `member_updated` and the opt-in `room_event`).
    pub events: Option<Vec<String>>,
}

async fn spec_from(
    app: &AppState,
    caller: &Caller,
    id: String,
    body: WebhookBody,
    created_at: i64,
) -> ApiResult<WebhookSpec> {
    let url = check_url(&body.url, app.node.config.webhooks.allow_private)
        .await
        .map_err(|e| ApiError::new(ErrorCode::Invalid, format!("field `url`: {e}")))?;
    let secret = secret_or_new("secret", body.secret)?;
    let events = match body.events {
        None => None,
        Some(list) => {
            if list.is_empty() {
                return Err(ApiError::new(
                    ErrorCode::Invalid,
                    "field `events`: name at least one kind (or leave it out)",
                ));
            }
            let set: BTreeSet<String> = list.into_iter().collect();
            if let Some(bad) = set.iter().find(|k| !kinds().any(|x| x == k.as_str())) {
                return Err(ApiError::new(
                    ErrorCode::Invalid,
                    format!(
                        "field `events`: unknown kind {bad:?}; kinds: {}",
                        kinds().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            Some(set)
        }
    };
    Ok(WebhookSpec {
        id,
        tenant: caller.tenant.clone(),
        url,
        secret,
        events,
        created_at,
        pusher_key: None,
    })
}

/// A signing secret (event and alert webhooks): the one given in `field`,
/// 16-256 characters, or, when none is given, a new random one.
pub(super) fn secret_or_new(field: &str, given: Option<String>) -> ApiResult<String> {
    match given {
        Some(s) if (16..=256).contains(&s.len()) => Ok(s),
        Some(_) => Err(ApiError::new(
            ErrorCode::Invalid,
            format!("field `{field}`: 16-256 characters"),
        )),
        None => {
            use rand::RngExt;
            let mut b = [0u8; 24];
            rand::rng().fill(&mut b);
            Ok(format!("whsec_{}", hex::encode(b)))
        }
    }
}

/// An endpoint of `[[webhooks.endpoints]]` is changed in the configuration file.
fn read_only_if_configured(app: &AppState, caller: &Caller, id: &str) -> ApiResult<()> {
    if app.node.is_config_webhook(&caller.tenant, id) {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("webhook {id} is defined in the configuration file ([[webhooks.endpoints]]); change it there"),
        ));
    }
    Ok(())
}

/// The tenant's webhook endpoints, by id.
#[utoipa::path(get, path = "/api/v1/webhooks", operation_id = "listWebhooks", tag = "webhooks",
    responses((status = 200, description = "every endpoint (one page)", body = Page<WebhookView>)))]
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Page<WebhookView>>> {
    caller.require_admin()?;
    let items = app
        .node
        .webhooks(&caller.tenant)
        .into_iter()
        .map(|(s, d)| WebhookView::new(s, d, false))
        .collect();
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

/// Adds an endpoint: from now on it gets the tenant's events, in order, in
/// signed batches.
#[utoipa::path(post, path = "/api/v1/webhooks", operation_id = "createWebhook", tag = "webhooks", request_body = WebhookBody,
    responses((status = 201, description = "created; the answer shows the secret, once", body = WebhookView)))]
pub async fn create(
    State(app): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<WebhookBody>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let id = format!("wh_{}", uuid::Uuid::new_v4().simple());
    let now = crate::store::unix_ms(app.node.clock.wall_now());
    let spec = spec_from(&app, &caller, id, body, now).await?;
    app.node.save_webhook(spec.clone(), &caller.actor()).await?;
    Ok(created(WebhookView::new(
        spec,
        DeliveryStats::default(),
        true,
    )))
}

/// An endpoint with what it delivered, failed and dropped since start-up.
#[utoipa::path(get, path = "/api/v1/webhooks/{id}", operation_id = "getWebhook", tag = "webhooks",
    params(("id" = String, Path, description = "the endpoint's id")),
    responses((status = 200, description = "the endpoint", body = WebhookView)))]
pub async fn read(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<WebhookView>> {
    caller.require_admin()?;
    let (s, d) = app
        .node
        .webhook(&caller.tenant, &super::path_id(&id)?)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no webhook {id}")))?;
    Ok(Json(WebhookView::new(s, d, false)))
}

/// Replaces an endpoint's URL, secret and filter; events waiting for it stay.
#[utoipa::path(put, path = "/api/v1/webhooks/{id}", operation_id = "replaceWebhook", tag = "webhooks",
    params(("id" = String, Path, description = "the endpoint's id")), request_body = WebhookBody,
    responses((status = 200, description = "replaced; the answer shows the secret, once", body = WebhookView),
        (status = 409, description = "defined in the configuration file (`[[webhooks.endpoints]]`)", body = super::ErrorBody)))]
pub async fn replace(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<WebhookBody>,
) -> ApiResult<Json<WebhookView>> {
    caller.require_admin()?;
    let id = super::path_id(&id)?;
    read_only_if_configured(&app, &caller, &id)?;
    let (old, delivery) = app
        .node
        .webhook(&caller.tenant, &id)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no webhook {id}")))?;
    let spec = spec_from(&app, &caller, id, body, old.created_at).await?;
    app.node.save_webhook(spec.clone(), &caller.actor()).await?;
    // The replaced endpoint carries its counts and waiting events over.
    Ok(Json(WebhookView::new(spec, delivery, true)))
}

/// Removes an endpoint; events still waiting for it are dropped.
#[utoipa::path(delete, path = "/api/v1/webhooks/{id}", operation_id = "deleteWebhook", tag = "webhooks",
    params(("id" = String, Path, description = "the endpoint's id")),
    responses((status = 204, description = "deleted"),
        (status = 409, description = "defined in the configuration file (`[[webhooks.endpoints]]`)", body = super::ErrorBody)))]
pub async fn remove(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let id = super::path_id(&id)?;
    read_only_if_configured(&app, &caller, &id)?;
    if !app
        .node
        .delete_webhook(&caller.tenant, &id, &caller.actor())
        .await?
    {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no webhook {id}"),
        ));
    }
    Ok(no_content())
}
