//! HTTP surface: the WebSocket upgrade, REST under `/api/v1` (and its reference
//! page at `/api/docs`), and ops endpoints.
//! Handlers are thin: they extract, call the node, and shape the answer. Around
//! every route: CORS and the origin allow-list (`origins.rs`), and the end of the
//! connection's opening (`protocol/opening.rs`) when a request is answered. One
//! layer times every request into the latency histogram, labelled by the route
//! *template* (`MatchedPath`), never the raw path.

pub mod api;
mod dashboard;
mod docs;
pub mod origins;
mod pusher;

use std::sync::Arc;

use axum::extract::{ConnectInfo, MatchedPath, Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;

use crate::auth::Authenticator;
use crate::node::Node;
use crate::protocol::native::{self, ConnContext};
use crate::protocol::opening::{InFlight, Peer};
use crate::protocol::pusher as pusher_wire;
use crate::protocol::socket;
use crate::protocol::stomp;

#[derive(Clone)]
pub struct AppState {
    pub node: Arc<Node>,
    pub auth: Arc<Authenticator>,
    pub metrics: PrometheusHandle,
    pub rest_limiter: Arc<api::RateLimiter>,
    pub origins: Arc<origins::AllowedOrigins>,
    /// The live streams' shared feeds (`/api/v1/stream`).
    pub feeds: Arc<api::stream::Feeds>,
}

pub fn router(state: AppState) -> Router {
    let max_body = state.node.config.limits.max_body_bytes;
    let routes = Router::new()
        .route("/ws", get(ws_upgrade))
        .route("/app/{key}", get(pusher_upgrade))
        .route("/stomp", get(stomp_upgrade))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .nest("/api/v1", api::router())
        .merge(self::pusher::router())
        .merge(docs::router())
        .merge(dashboard::router())
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn(time_request))
        .with_state(state.clone());
    // Around the whole router, so they also see the 404 and 405 answers: a
    // preflight (`OPTIONS`) has no route of its own.
    Router::new()
        .fallback_service(routes)
        .layer(middleware::from_fn_with_state(state, origins::cors))
        .layer(middleware::from_fn(end_of_opening))
}

/// A request's answer ends its connection's opening (`protocol/opening.rs`): a
/// `101` hands it to the WebSocket side, which ends it at `WELCOME`; any other
/// answer ends it here. While a request is in flight (until its answer's body has
/// been sent) the socket's time bound is off.
async fn end_of_opening(req: axum::extract::Request, next: Next) -> Response {
    let Some(opening) = req
        .extensions()
        .get::<ConnectInfo<Peer>>()
        .and_then(|c| c.0.opening.clone())
    else {
        return next.run(req).await;
    };
    let in_flight = opening.request();
    let resp = next.run(req).await;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        opening.upgraded();
        return resp;
    }
    opening.answered();
    resp.map(|body| {
        axum::body::Body::new(AnswerBody {
            body,
            _in_flight: in_flight,
        })
    })
}

/// An answer's body that marks its request done when hyper drops it (sent, or
/// abandoned with the connection).
struct AnswerBody {
    body: axum::body::Body,
    _in_flight: InFlight,
}

impl http_body::Body for AnswerBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Records the request's latency (until the response head is ready) under its
/// method, route template and status class.
async fn time_request(req: axum::extract::Request, next: Next) -> Response {
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

/// What every WebSocket upgrade checks and learns first, whatever the
/// protocol: the origin is allowed; the opening's deadline, the bearer token
/// of the request, the client's address and user agent.
struct Upgrade {
    opening: Option<std::sync::Arc<crate::protocol::opening::Opening>>,
    deadline: tokio::time::Instant,
    bearer: Option<String>,
    ip: String,
    user_agent: Option<String>,
    max_frame: usize,
}

/// Before the upgrade: a page from another origin never gets a socket.
fn before_upgrade(
    app: &AppState,
    peer: &Peer,
    headers: &HeaderMap,
) -> Result<Upgrade, Box<Response>> {
    if let Some(origin) = origins::AllowedOrigins::origin_of(headers) {
        if !app.origins.allows(origin) {
            return Err(Box::new(origins::forbidden(origin)));
        }
    }
    Ok(Upgrade {
        opening: peer.opening.clone(),
        deadline: match &peer.opening {
            Some(o) => o.deadline(),
            None => tokio::time::Instant::now() + app.node.config.timing.hello_timeout.0,
        },
        bearer: headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|s| s.trim().to_string()),
        ip: client_ip(peer, headers),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(512).collect()),
        max_frame: app.node.config.limits.max_frame_bytes,
    })
}

#[derive(Deserialize)]
struct WsQuery {
    token: Option<String>,
}

async fn ws_upgrade(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Query(q): Query<WsQuery>,
    req: axum::extract::Request,
) -> Response {
    let u = match before_upgrade(&app, &peer, req.headers()) {
        Ok(u) => u,
        Err(refused) => return *refused,
    };
    let ctx = ConnContext {
        opening: u.opening,
        deadline: u.deadline,
        pre_token: q.token.or(u.bearer),
        ip: Some(u.ip),
        user_agent: u.user_agent,
    };
    let (node, auth) = (app.node.clone(), app.auth.clone());
    socket::upgrade(req, u.max_frame, u.deadline, move |ws| {
        native::serve(ws, ctx, node, auth)
    })
}

#[derive(Deserialize)]
struct PusherQuery {
    protocol: Option<String>,
}

/// `GET /app/{key}`: the Pusher Channels protocol (`protocol/pusher.rs`). An
/// unknown key is upgraded all the same and closed with Pusher's 4001, which
/// is what its clients understand.
async fn pusher_upgrade(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    axum::extract::Path(key): axum::extract::Path<String>,
    Query(q): Query<PusherQuery>,
    req: axum::extract::Request,
) -> Response {
    let u = match before_upgrade(&app, &peer, req.headers()) {
        Ok(u) => u,
        Err(refused) => return *refused,
    };
    let ctx = pusher_wire::PusherContext {
        opening: u.opening,
        app: pusher_wire::app_by_key(&app.node, &key).cloned(),
        protocol: q.protocol,
        ip: Some(u.ip),
        user_agent: u.user_agent,
    };
    let node = app.node.clone();
    socket::upgrade(req, u.max_frame, u.deadline, move |ws| {
        pusher_wire::serve(ws, ctx, node)
    })
}

#[derive(Deserialize)]
struct StompQuery {
    token: Option<String>,
    access_token: Option<String>,
}

/// `GET /stomp`: STOMP 1.2 over WebSocket (`protocol/stomp.rs`), answering the
/// best `v1x.stomp` subprotocol the client offers.
async fn stomp_upgrade(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Query(q): Query<StompQuery>,
    req: axum::extract::Request,
) -> Response {
    let u = match before_upgrade(&app, &peer, req.headers()) {
        Ok(u) => u,
        Err(refused) => return *refused,
    };
    let offered: Vec<String> = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_ascii_lowercase())
        .collect();
    let subprotocol = stomp::SUBPROTOCOLS
        .into_iter()
        .find(|p| offered.iter().any(|o| o == p));
    let ctx = stomp::StompContext {
        opening: u.opening,
        deadline: u.deadline,
        pre_token: q.token.or(q.access_token).or(u.bearer),
        ip: Some(u.ip),
        user_agent: u.user_agent,
    };
    let (node, auth) = (app.node.clone(), app.auth.clone());
    socket::upgrade_with(req, u.max_frame, u.deadline, subprotocol, move |ws| {
        stomp::serve(ws, ctx, node, auth)
    })
}

/// The client's address; X-Forwarded-For is believed only from a proxy on
/// this machine.
fn client_ip(peer: &Peer, headers: &HeaderMap) -> String {
    peer.addr
        .ip()
        .is_loopback()
        .then(|| forwarded_ip(headers))
        .flatten()
        .unwrap_or_else(|| peer.addr.ip().to_string())
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
    } else if !app.node.live_state_healthy() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "presence engine (Redis) unreachable",
        )
            .into_response()
    } else if let Some(problem) = app.node.kafka.problem() {
        // Presence keeps serving without Kafka: ready, and saying why not quite.
        format!("ready; kafka: {problem}").into_response()
    } else {
        "ready".into_response()
    }
}

async fn metrics(State(app): State<AppState>) -> Response {
    metrics::gauge!(crate::metrics::ROOMS).set(app.node.room_count().await as f64);
    metrics::gauge!(crate::metrics::REDIS_UP).set(if app.node.live_state_healthy() {
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
