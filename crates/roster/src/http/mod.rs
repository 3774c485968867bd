//! HTTP surface: the WebSocket upgrade, REST under `/api/v1`, and ops endpoints.
//! Handlers are thin: they extract, call the node, and shape the answer. One
//! layer times every request into the latency histogram, labelled by the route
//! *template* (`MatchedPath`), never the raw path.

pub mod api;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, MatchedPath, Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;

use crate::auth::Authenticator;
use crate::node::Node;
use crate::protocol::native::{self, ConnContext};
use crate::protocol::socket;

#[derive(Clone)]
pub struct AppState {
    pub node: Arc<Node>,
    pub auth: Arc<Authenticator>,
    pub metrics: PrometheusHandle,
    pub rest_limiter: Arc<api::RateLimiter>,
}

pub fn router(state: AppState) -> Router {
    let max_body = state.node.config.limits.max_body_bytes;
    Router::new()
        .route("/ws", get(ws_upgrade))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .nest("/api/v1", api::router())
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn(time_request))
        .with_state(state)
}

/// Records the request's latency (until the response head is ready) under its
/// method, route template and status class.
async fn time_request(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let started = std::time::Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| crate::metrics::UNMATCHED_ROUTE.to_owned());
    // Only the standard methods: a made-up one must not become a series.
    let method = match *req.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let resp = next.run(req).await;
    metrics::histogram!(
        crate::metrics::HTTP_REQUEST_DURATION,
        "method" => method,
        "route" => route,
        "status" => crate::metrics::status_class(resp.status().as_u16())
    )
    .record(started.elapsed().as_secs_f64());
    resp
}

#[derive(Deserialize)]
struct WsQuery {
    token: Option<String>,
}

async fn ws_upgrade(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<WsQuery>,
    req: axum::extract::Request,
) -> Response {
    let headers = req.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|s| s.trim().to_string());
    let ctx = ConnContext {
        pre_token: q.token.or(bearer),
        // X-Forwarded-For is believed only from a proxy on this machine.
        ip: Some(
            peer.ip()
                .is_loopback()
                .then(|| forwarded_ip(headers))
                .flatten()
                .unwrap_or_else(|| peer.ip().to_string()),
        ),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(512).collect()),
    };
    let (node, auth) = (app.node.clone(), app.auth.clone());
    let max_frame = app.node.config.limits.max_frame_bytes;
    socket::upgrade(req, max_frame, move |ws| native::serve(ws, ctx, node, auth))
}

fn forwarded_ip(headers: &HeaderMap) -> Option<String> {
    let v = headers.get("x-forwarded-for")?.to_str().ok()?;
    let first = v.split(',').next()?.trim();
    first
        .parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| ip.to_string())
}

async fn readyz(State(app): State<AppState>) -> Response {
    if app
        .node
        .shutting_down
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response()
    } else if !app.node.engine.healthy() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "presence engine (Redis) unreachable",
        )
            .into_response()
    } else {
        "ready".into_response()
    }
}

async fn metrics(State(app): State<AppState>) -> Response {
    metrics::gauge!(crate::metrics::ROOMS).set(app.node.engine_room_count().await as f64);
    metrics::gauge!(crate::metrics::REDIS_UP).set(if app.node.engine.healthy() {
        1.0
    } else {
        0.0
    });
    // Read live: the writer only updates it between batches.
    metrics::gauge!(crate::metrics::JOURNAL_QUEUE).set(app.node.journal.depth() as f64);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
        .into_response()
}
