//! Alert rules and alerts (SPEC §8): `GET/POST /alert-rules`,
//! `GET/PATCH/DELETE /alert-rules/{id}`, `GET /alerts?state=`, `POST
//! /alerts/{id}/ack`. Reading needs `monitor` (or `admin`); changing rules
//! needs `admin`; a `monitor` may acknowledge. Every rule field is checked here
//! with an error naming it; evaluation is `alerts/evaluator.rs`.

use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::webhooks::secret_or_new;
use super::{
    created, decode_cursor, encode_cursor, no_content, page_limit, ApiError, ApiJson, ApiPath,
    ApiQuery, ApiResult, Caller, Page,
};
use crate::alerts::{AlertView, Kind, KINDS, SCOPES, SEVERITIES};
use crate::clock::iso_ms;
use crate::core::error::ErrorCode;
use crate::events::webhooks::check_url;
use crate::http::AppState;
use crate::ids::RoomKey;
use crate::store::{AlertFilter, StoredAlertRule};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/alert-rules", get(list_rules).post(create_rule))
        .route(
            "/alert-rules/{id}",
            get(read_rule).patch(patch_rule).delete(delete_rule),
        )
        .route("/alerts", get(list_alerts))
        .route("/alerts/{id}/ack", post(ack))
}

/// Longest rule window.
const MAX_WINDOW: std::time::Duration = std::time::Duration::from_secs(86_400);

/// An alert rule.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertRuleView {
    pub id: String,
    pub name: String,
    /// `capacity` | `latency` | `heartbeat_missed` | `online_drop`
    pub kind: String,
    /// Percent (`capacity`, `online_drop`), milliseconds (`latency`) or
    /// sessions (`heartbeat_missed`).
    pub threshold: i64,
    /// Duration with a unit (ignored by `capacity`, which looks at now).
    pub window: String,
    /// `tenant` | `room` | `roomType`
    pub scope: String,
    /// The room key (`room`) or type code (`roomType`); null for `tenant`.
    pub target: Option<String>,
    /// `info` | `warning` | `critical`
    pub severity: String,
    pub enabled: bool,
    pub webhook_url: Option<String>,
    /// The webhook's signing secret: only in the answer that set it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl AlertRuleView {
    fn new(r: &StoredAlertRule, show_secret: bool) -> Self {
        Self {
            id: r.id.clone(),
            name: r.name.clone(),
            kind: r.kind.clone(),
            threshold: r.threshold,
            window: humantime::format_duration(std::time::Duration::from_millis(
                r.window_ms.max(0) as u64,
            ))
            .to_string(),
            scope: r.scope.clone(),
            target: r.target.clone(),
            severity: r.severity.clone(),
            enabled: r.enabled,
            webhook_url: r.webhook_url.clone(),
            webhook_secret: if show_secret {
                r.webhook_secret.clone()
            } else {
                None
            },
            created_at: iso_ms(r.created_at),
            updated_at: iso_ms(r.updated_at),
        }
    }
}

/// A rule to create (`name`, `kind` and `threshold` required) or the fields
/// to change (`PATCH`: any of them).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"name": "order rooms full", "kind": "capacity", "threshold": 90, "scope": "roomType", "target": "COLLABORATION", "severity": "critical", "webhookUrl": "https://ops.example.com/roster-alerts"}))]
pub struct AlertRuleBody {
    /// 1-100 characters.
    pub name: Option<String>,
    /// `capacity` | `latency` | `heartbeat_missed` | `online_drop`
    pub kind: Option<String>,
    /// 1-100 for the percentages (`capacity`, `online_drop`); 1-1000000 ms
    /// (`latency`) or sessions (`heartbeat_missed`).
    pub threshold: Option<i64>,
    /// 1s-24h (default `5m`).
    pub window: Option<String>,
    /// `tenant` (default) | `room` | `roomType`
    pub scope: Option<String>,
    /// The room key (`room`) or an existing type's code (`roomType`).
    pub target: Option<String>,
    /// `info` | `warning` (default) | `critical`
    pub severity: Option<String>,
    /// Default true; a disabled rule's firing alerts resolve.
    pub enabled: Option<bool>,
    /// Where firings and resolutions are POSTed (`""` removes it). Not a
    /// private or loopback address unless `webhooks.allow_private`.
    pub webhook_url: Option<String>,
    /// The HMAC-SHA256 key of `X-Roster-Signature`, 16-256 characters
    /// (absent with a new URL: one is generated and answered once).
    pub webhook_secret: Option<String>,
}

fn invalid(m: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::Invalid, m)
}

fn one_of(field: &str, v: &str, allowed: &[&str]) -> ApiResult<String> {
    if allowed.contains(&v) {
        Ok(v.to_string())
    } else {
        Err(invalid(format!(
            "field `{field}`: {v:?} is not one of {}",
            allowed.join(", ")
        )))
    }
}

/// Applies `body` on `rule` (a new one's defaults or the stored one), checking
/// every field it sets and the whole rule after.
async fn apply(
    app: &AppState,
    caller: &Caller,
    rule: &mut StoredAlertRule,
    body: AlertRuleBody,
) -> ApiResult<()> {
    if let Some(n) = body.name {
        let n = n.trim().to_string();
        if n.is_empty() || n.chars().count() > 100 {
            return Err(invalid("field `name`: 1-100 characters"));
        }
        rule.name = n;
    }
    if let Some(k) = body.kind {
        rule.kind = one_of("kind", &k, KINDS)?;
    }
    if let Some(t) = body.threshold {
        rule.threshold = t;
    }
    if let Some(w) = body.window {
        let d = crate::config::parse_duration(&w)
            .map_err(|e| invalid(format!("field `window`: {e}")))?;
        if d < std::time::Duration::from_secs(1) || d > MAX_WINDOW {
            return Err(invalid("field `window`: between 1s and 24h"));
        }
        rule.window_ms = d.as_millis() as i64;
    }
    if let Some(s) = body.scope {
        rule.scope = one_of("scope", &s, SCOPES)?;
        if rule.scope == "tenant" && body.target.is_none() {
            rule.target = None;
        }
    }
    if let Some(t) = body.target {
        rule.target = Some(t);
    }
    if let Some(s) = body.severity {
        rule.severity = one_of("severity", &s, SEVERITIES)?;
    }
    if let Some(e) = body.enabled {
        rule.enabled = e;
    }
    match body.webhook_url.as_deref() {
        Some("") => {
            rule.webhook_url = None;
            rule.webhook_secret = None;
        }
        Some(u) => {
            let url = check_url(u, app.node.config.webhooks.allow_private)
                .await
                .map_err(|e| invalid(format!("field `webhookUrl`: {e}")))?;
            rule.webhook_url = Some(url);
            if rule.webhook_secret.is_none() && body.webhook_secret.is_none() {
                rule.webhook_secret = Some(secret_or_new("webhookSecret", None)?);
            }
        }
        None => {}
    }
    if let Some(s) = body.webhook_secret {
        let s = secret_or_new("webhookSecret", Some(s))?;
        if rule.webhook_url.is_none() {
            return Err(invalid("field `webhookSecret`: set `webhookUrl` too"));
        }
        rule.webhook_secret = Some(s);
    }
    // The rule as a whole.
    let kind = Kind::parse(&rule.kind).ok_or_else(|| invalid("field `kind`: required"))?;
    if rule.name.is_empty() {
        return Err(invalid("field `name`: required"));
    }
    let max = if kind.is_percent() { 100 } else { 1_000_000 };
    if !(1..=max).contains(&rule.threshold) {
        return Err(invalid(format!(
            "field `threshold`: between 1 and {max} for kind {}",
            rule.kind
        )));
    }
    match (rule.scope.as_str(), rule.target.as_deref()) {
        ("tenant", None) => {}
        ("tenant", Some(_)) => return Err(invalid("field `target`: not used with scope `tenant`")),
        (_, None) => {
            return Err(invalid(format!(
                "field `target`: required with scope `{}`",
                rule.scope
            )))
        }
        ("room", Some(t)) => {
            RoomKey::parse(t).map_err(|e| invalid(format!("field `target`: {e}")))?;
        }
        (_, Some(t)) => {
            if app.node.room_type(&caller.tenant, t).is_none() {
                return Err(invalid(format!("field `target`: no room type {t:?}")));
            }
        }
    }
    Ok(())
}

async fn find_rule(app: &AppState, caller: &Caller, id: &str) -> ApiResult<StoredAlertRule> {
    let id = super::path_id(id)?;
    app.node
        .alert_rules(&caller.tenant)
        .await?
        .into_iter()
        .find(|r| r.id == id)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no alert rule {id}")))
}

/// The tenant's alert rules, by id.
#[utoipa::path(get, path = "/api/v1/alert-rules", operation_id = "listAlertRules", tag = "alerts", params(super::PageQuery),
    responses((status = 200, description = "a page of rules", body = Page<AlertRuleView>)))]
pub async fn list_rules(
    State(app): State<AppState>,
    caller: Caller,
    ApiQuery(page): ApiQuery<super::PageQuery>,
) -> ApiResult<Json<Page<AlertRuleView>>> {
    caller.require_monitor()?;
    let items = app
        .node
        .alert_rules(&caller.tenant)
        .await?
        .iter()
        .map(|r| AlertRuleView::new(r, false))
        .collect();
    Ok(Json(page.apply(items, |r| r.id.clone())?))
}

/// Adds a rule; it is evaluated from the next `alerts.eval_interval` on.
#[utoipa::path(post, path = "/api/v1/alert-rules", operation_id = "createAlertRule", tag = "alerts", request_body = AlertRuleBody,
    responses((status = 201, description = "created (with the webhook secret, once)", body = AlertRuleView),
        (status = 422, description = "a field is wrong (the message names it)", body = super::ErrorBody)))]
pub async fn create_rule(
    State(app): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<AlertRuleBody>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let now = crate::store::unix_ms(app.node.clock.wall_now());
    let mut rule = StoredAlertRule {
        tenant: caller.tenant.to_string(),
        id: format!("ar_{}", uuid::Uuid::new_v4().simple()),
        name: String::new(),
        kind: String::new(),
        threshold: 0,
        window_ms: 300_000,
        scope: "tenant".into(),
        target: None,
        severity: "warning".into(),
        enabled: true,
        webhook_url: None,
        webhook_secret: None,
        created_at: now,
        updated_at: now,
    };
    apply(&app, &caller, &mut rule, body).await?;
    app.node.save_alert_rule(&rule, &caller.actor()).await?;
    Ok(created(AlertRuleView::new(&rule, true)))
}

#[utoipa::path(get, path = "/api/v1/alert-rules/{id}", operation_id = "getAlertRule", tag = "alerts",
    params(("id" = String, Path, description = "the rule's id")),
    responses((status = 200, description = "the rule", body = AlertRuleView)))]
pub async fn read_rule(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<AlertRuleView>> {
    caller.require_monitor()?;
    Ok(Json(AlertRuleView::new(
        &find_rule(&app, &caller, &id).await?,
        false,
    )))
}

/// Changes some of a rule's fields; its evaluation history starts again.
#[utoipa::path(patch, path = "/api/v1/alert-rules/{id}", operation_id = "updateAlertRule", tag = "alerts",
    params(("id" = String, Path, description = "the rule's id")), request_body = AlertRuleBody,
    responses((status = 200, description = "changed", body = AlertRuleView)))]
pub async fn patch_rule(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<AlertRuleBody>,
) -> ApiResult<Json<AlertRuleView>> {
    caller.require_admin()?;
    let mut rule = find_rule(&app, &caller, &id).await?;
    let show_secret = body.webhook_secret.is_some()
        || (body.webhook_url.as_deref().is_some_and(|u| !u.is_empty())
            && rule.webhook_url.is_none());
    apply(&app, &caller, &mut rule, body).await?;
    rule.updated_at = crate::store::unix_ms(app.node.clock.wall_now()).max(rule.updated_at + 1);
    app.node.save_alert_rule(&rule, &caller.actor()).await?;
    Ok(Json(AlertRuleView::new(&rule, show_secret)))
}

/// Deletes a rule; its firing alerts resolve at the next evaluation.
#[utoipa::path(delete, path = "/api/v1/alert-rules/{id}", operation_id = "deleteAlertRule", tag = "alerts",
    params(("id" = String, Path, description = "the rule's id")),
    responses((status = 204, description = "deleted")))]
pub async fn delete_rule(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let id = super::path_id(&id)?;
    if !app
        .node
        .delete_alert_rule(&caller.tenant, &id, &caller.actor())
        .await?
    {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no alert rule {id}"),
        ));
    }
    Ok(no_content())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AlertQuery {
    /// `firing` | `resolved` (absent: both).
    pub state: Option<String>,
    /// Only this rule's alerts.
    pub rule: Option<String>,
    /// Page size, 1-1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// `nextCursor` of the page before.
    pub cursor: Option<String>,
}

/// Alerts, newest first.
#[utoipa::path(get, path = "/api/v1/alerts", operation_id = "listAlerts", tag = "alerts", params(AlertQuery),
    responses((status = 200, description = "a page of alerts, newest first", body = Page<AlertView>)))]
pub async fn list_alerts(
    State(app): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<AlertQuery>,
) -> ApiResult<Json<Page<AlertView>>> {
    caller.require_monitor()?;
    let limit = page_limit(q.limit)?;
    if let Some(s) = &q.state {
        one_of("state", s, &["firing", "resolved"])?;
    }
    let before = match q.cursor.as_deref().map(decode_cursor).transpose()? {
        None => None,
        Some(c) => {
            let bad = || invalid("field `cursor`: not a cursor from this API");
            let (at, id) = c.split_once(':').ok_or_else(bad)?;
            Some((at.parse::<i64>().map_err(|_| bad())?, id.to_string()))
        }
    };
    let mut rows = app
        .node
        .alerts(AlertFilter {
            tenant: caller.tenant.to_string(),
            state: q.state,
            rule_id: q.rule,
            before,
            limit: limit + 1,
        })
        .await?;
    let next_cursor = if rows.len() > limit {
        rows.truncate(limit);
        rows.last()
            .map(|a| encode_cursor(&format!("{}:{}", a.fired_at, a.id)))
    } else {
        None
    };
    Ok(Json(Page {
        items: rows.iter().map(AlertView::from).collect(),
        next_cursor,
    }))
}

/// Acknowledges an alert (firing or resolved); the first acknowledgement
/// stays.
#[utoipa::path(post, path = "/api/v1/alerts/{id}/ack", operation_id = "ackAlert", tag = "alerts",
    params(("id" = String, Path, description = "the alert's id")),
    responses((status = 200, description = "the alert, acknowledged", body = AlertView)))]
pub async fn ack(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<AlertView>> {
    caller.require_monitor()?;
    let id = super::path_id(&id)?;
    let a = app
        .node
        .ack_alert(&caller.tenant, &id, &caller.actor())
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no alert {id}")))?;
    Ok(Json(AlertView::from(&a)))
}
