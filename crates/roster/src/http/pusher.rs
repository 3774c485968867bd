//! The Pusher HTTP API (docs/PUSHER.md "HTTP API"), so the official `pusher`
//! server libraries work unchanged: trigger events, query channels and their
//! users, terminate a user's connections. Every request is signed with the
//! app's secret (Pusher's `auth_signature` scheme); answers are Pusher's
//! (JSON on success, a plain-text reason on error).

use std::collections::{BTreeMap, BTreeSet};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use md5::{Digest, Md5};
use serde::Deserialize;
use serde_json::{json, Value};

use super::AppState;
use crate::config::PusherAppConfig;
use crate::ids::{RoomId, RoomKey, TenantId, UserId};
use crate::protocol::pusher::{app_by_id, verify};

/// How far `auth_timestamp` may be from now (Pusher's 600 s).
const MAX_SKEW_SECS: u64 = 600;
/// Pusher's limits on a triggered event.
const MAX_EVENT_NAME: usize = 200;
const MAX_DATA_BYTES: usize = 10 * 1024;
const MAX_CHANNELS: usize = 100;
const MAX_BATCH: usize = 10;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/apps/{app_id}/events", post(events))
        .route("/apps/{app_id}/batch_events", post(batch_events))
        .route("/apps/{app_id}/channels", get(channels))
        .route("/apps/{app_id}/channels/{channel}", get(channel))
        .route("/apps/{app_id}/channels/{channel}/users", get(users))
        .route(
            "/apps/{app_id}/users/{user_id}/terminate_connections",
            post(terminate),
        )
}

/// A Pusher API error: a status and a plain-text reason.
struct Refused(StatusCode, String);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        (self.0, self.1).into_response()
    }
}

fn bad(msg: impl Into<String>) -> Refused {
    Refused(StatusCode::BAD_REQUEST, msg.into())
}

/// The query parameters, decoded.
fn params(raw: Option<&str>) -> BTreeMap<String, String> {
    form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Checks the request's signature: `auth_key` is the app's key, the
/// timestamp is recent, `body_md5` is the body's, and `auth_signature` is
/// HMAC-SHA256(secret, "METHOD\npath\nsorted params but the signature").
fn authenticate(
    app: &PusherAppConfig,
    method: &Method,
    path: &str,
    params: &BTreeMap<String, String>,
    body: &[u8],
    now_secs: u64,
) -> Result<(), Refused> {
    let unauthorized = |m: &str| Refused(StatusCode::UNAUTHORIZED, m.to_string());
    if params.get("auth_key").map(String::as_str) != Some(app.key.as_str()) {
        return Err(unauthorized("unknown auth_key"));
    }
    let ts: u64 = params
        .get("auth_timestamp")
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| unauthorized("auth_timestamp is required (unix seconds)"))?;
    if ts.abs_diff(now_secs) > MAX_SKEW_SECS {
        return Err(unauthorized(
            "auth_timestamp is more than 600 s away from the server's clock",
        ));
    }
    if !body.is_empty() {
        let md5 = hex::encode(Md5::digest(body));
        if params.get("body_md5") != Some(&md5) {
            return Err(unauthorized("body_md5 does not match the body"));
        }
    }
    let Some(given) = params.get("auth_signature") else {
        return Err(unauthorized("auth_signature is required"));
    };
    let signed: Vec<String> = params
        .iter()
        .filter(|(k, _)| k.as_str() != "auth_signature")
        .map(|(k, v)| format!("{}={v}", k.to_lowercase()))
        .collect();
    let text = format!("{}\n{path}\n{}", method.as_str(), signed.join("&"));
    if !verify(&app.secret, &text, given) {
        return Err(unauthorized("invalid auth_signature"));
    }
    Ok(())
}

/// The app of the path, with the request authenticated.
fn app_of(
    state: &AppState,
    app_id: &str,
    method: &Method,
    uri: &Uri,
    query: Option<&str>,
    body: &[u8],
) -> Result<(PusherAppConfig, TenantId, BTreeMap<String, String>), Refused> {
    let Some(app) = app_by_id(&state.node, app_id).cloned() else {
        return Err(Refused(
            StatusCode::NOT_FOUND,
            format!("unknown app {app_id:?}"),
        ));
    };
    let params = params(query);
    let now = state.node.clock.wall_now();
    let now_secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    authenticate(&app, method, uri.path(), &params, body, now_secs)?;
    let tenant = TenantId::parse(&app.tenant).map_err(|e| bad(e.0))?;
    Ok((app, tenant, params))
}

fn channel_key(name: &str) -> Result<RoomKey, Refused> {
    if name.len() > 164 {
        return Err(bad(format!("channel name longer than 164: {name:.40}…")));
    }
    RoomKey::parse(name).map_err(|e| bad(format!("invalid channel name: {}", e.0)))
}

#[derive(Deserialize)]
struct Trigger {
    name: String,
    data: Value,
    channels: Option<Vec<String>>,
    channel: Option<String>,
    socket_id: Option<String>,
}

/// One checked event: its rooms, name, data and excluded socket.
struct Checked {
    rooms: Vec<RoomKey>,
    name: String,
    data: Value,
    socket_id: Option<String>,
}

fn check_trigger(t: Trigger) -> Result<Checked, Refused> {
    if t.name.is_empty() || t.name.chars().count() > MAX_EVENT_NAME {
        return Err(bad("`name`: 1-200 characters"));
    }
    // Pusher's data is a string (usually JSON text); other JSON is taken as is.
    let size = match &t.data {
        Value::String(s) => s.len(),
        v => v.to_string().len(),
    };
    if size > MAX_DATA_BYTES {
        return Err(Refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("`data` is {size} bytes; at most {MAX_DATA_BYTES}"),
        ));
    }
    let names: Vec<String> = match (t.channels, t.channel) {
        (Some(c), _) => c,
        (None, Some(c)) => vec![c],
        (None, None) => return Err(bad("`channels` (or `channel`) is required")),
    };
    if names.is_empty() || names.len() > MAX_CHANNELS {
        return Err(bad("`channels`: 1-100 channel names"));
    }
    let rooms = names
        .iter()
        .map(|n| channel_key(n))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(s) = &t.socket_id {
        let ok = s.split_once('.').is_some_and(|(a, b)| {
            [a, b]
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()))
        });
        if !ok {
            return Err(bad("`socket_id`: expected digits.digits"));
        }
    }
    Ok(Checked {
        rooms,
        name: t.name,
        data: t.data,
        socket_id: t.socket_id,
    })
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Refused> {
    serde_json::from_slice(body).map_err(|e| bad(format!("invalid JSON body: {e}")))
}

async fn publish(state: &AppState, tenant: &TenantId, c: Checked) {
    for key in c.rooms {
        let room = RoomId {
            tenant: tenant.clone(),
            key,
        };
        state
            .node
            .publish_event(room, c.name.clone(), c.data.clone(), c.socket_id.clone())
            .await;
    }
}

async fn events(
    State(state): State<AppState>,
    Path(app_id): Path<String>,
    method: Method,
    uri: Uri,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Json<Value>, Refused> {
    let (_, tenant, _) = app_of(&state, &app_id, &method, &uri, query.as_deref(), &body)?;
    let checked = check_trigger(parse_body(&body)?)?;
    publish(&state, &tenant, checked).await;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct Batch {
    batch: Vec<Trigger>,
}

async fn batch_events(
    State(state): State<AppState>,
    Path(app_id): Path<String>,
    method: Method,
    uri: Uri,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Json<Value>, Refused> {
    let (_, tenant, _) = app_of(&state, &app_id, &method, &uri, query.as_deref(), &body)?;
    let batch: Batch = parse_body(&body)?;
    if batch.batch.len() > MAX_BATCH {
        return Err(bad("`batch`: at most 10 events"));
    }
    // All checked before any is sent: a bad one refuses the whole batch.
    let checked = batch
        .batch
        .into_iter()
        .map(check_trigger)
        .collect::<Result<Vec<_>, _>>()?;
    for c in checked {
        publish(&state, &tenant, c).await;
    }
    Ok(Json(json!({ "batch": [] })))
}

/// The `info` attributes asked for.
fn info(params: &BTreeMap<String, String>) -> BTreeSet<String> {
    params
        .get("info")
        .map(|i| i.split(',').map(|s| s.trim().to_string()).collect())
        .unwrap_or_default()
}

fn unavailable(e: impl std::fmt::Display) -> Refused {
    Refused(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
}

/// The distinct users of a room now.
async fn user_ids(state: &AppState, room: &RoomId) -> Result<Vec<String>, Refused> {
    let snap = state.node.room_presence(room).await.map_err(unavailable)?;
    Ok(snap
        .map(|s| s.users.iter().map(|u| u.user_id.to_string()).collect())
        .unwrap_or_default())
}

async fn channels(
    State(state): State<AppState>,
    Path(app_id): Path<String>,
    method: Method,
    uri: Uri,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, Refused> {
    let (_, tenant, params) = app_of(&state, &app_id, &method, &uri, query.as_deref(), &[])?;
    let prefix = params.get("filter_by_prefix").cloned().unwrap_or_default();
    let info = info(&params);
    if info.contains("user_count") && !prefix.starts_with("presence-") {
        return Err(bad("info=user_count needs filter_by_prefix=presence-"));
    }
    let rooms = state.node.rooms(&tenant).await.map_err(unavailable)?;
    let mut out = serde_json::Map::new();
    for r in rooms {
        if r.sessions == 0 || !r.id.key.as_str().starts_with(&prefix) {
            continue;
        }
        let mut attrs = serde_json::Map::new();
        if info.contains("user_count") {
            attrs.insert(
                "user_count".into(),
                json!(user_ids(&state, &r.id).await?.len()),
            );
        }
        out.insert(r.id.key.to_string(), Value::Object(attrs));
    }
    Ok(Json(json!({ "channels": out })))
}

async fn channel(
    State(state): State<AppState>,
    Path((app_id, channel)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, Refused> {
    let (_, tenant, params) = app_of(&state, &app_id, &method, &uri, query.as_deref(), &[])?;
    let key = channel_key(&channel)?;
    let info = info(&params);
    if info.contains("user_count") && !channel.starts_with("presence-") {
        return Err(bad("user_count is only available for presence channels"));
    }
    let room = RoomId { tenant, key };
    let sessions = state
        .node
        .room(&room)
        .await
        .map_err(unavailable)?
        .map(|r| r.sessions)
        .unwrap_or(0);
    let mut out = serde_json::Map::new();
    out.insert("occupied".into(), json!(sessions > 0));
    if info.contains("user_count") {
        out.insert(
            "user_count".into(),
            json!(user_ids(&state, &room).await?.len()),
        );
    }
    if info.contains("subscription_count") {
        out.insert("subscription_count".into(), json!(sessions));
    }
    Ok(Json(Value::Object(out)))
}

async fn users(
    State(state): State<AppState>,
    Path((app_id, channel)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, Refused> {
    let (_, tenant, _) = app_of(&state, &app_id, &method, &uri, query.as_deref(), &[])?;
    if !channel.starts_with("presence-") {
        return Err(bad("users are only listed for presence channels"));
    }
    let room = RoomId {
        tenant,
        key: channel_key(&channel)?,
    };
    let users: Vec<Value> = user_ids(&state, &room)
        .await?
        .into_iter()
        .map(|id| json!({ "id": id }))
        .collect();
    Ok(Json(json!({ "users": users })))
}

async fn terminate(
    State(state): State<AppState>,
    Path((app_id, user)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Json<Value>, Refused> {
    let (_, tenant, _) = app_of(&state, &app_id, &method, &uri, query.as_deref(), &body)?;
    let user = UserId::parse(&user).map_err(|e| bad(e.0))?;
    let sessions = state
        .node
        .sessions(&tenant, Some(&user))
        .await
        .map_err(unavailable)?;
    state
        .node
        .kick_sessions(sessions.into_iter().map(|s| s.session_id).collect())
        .await;
    Ok(Json(json!({})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_pushers_scheme() {
        let app = PusherAppConfig {
            tenant: "acme".into(),
            app_id: "3".into(),
            key: "278d425bdf160c739803".into(),
            secret: "7ad3773142a6692b25b8".into(),
            webhook_url: None,
        };
        let body = br#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
        let mut p: BTreeMap<String, String> = [
            ("auth_key", "278d425bdf160c739803"),
            ("auth_timestamp", "1353088179"),
            ("auth_version", "1.0"),
            ("body_md5", "ec365a775a4cd0599faeb73354201b6f"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        // The example of Pusher's HTTP API reference.
        p.insert(
            "auth_signature".into(),
            "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c".into(),
        );
        let ok = authenticate(&app, &Method::POST, "/apps/3/events", &p, body, 1353088179);
        assert!(ok.is_ok(), "{:?}", ok.err().map(|r| r.1));
        let late = authenticate(
            &app,
            &Method::POST,
            "/apps/3/events",
            &p,
            body,
            1353088179 + 601,
        );
        assert_eq!(late.err().unwrap().0, StatusCode::UNAUTHORIZED);
        let tampered = authenticate(&app, &Method::POST, "/apps/3/events", &p, b"{}", 1353088179);
        assert!(tampered.err().unwrap().1.contains("body_md5"));
        p.insert("auth_signature".into(), "00".into());
        let forged = authenticate(&app, &Method::POST, "/apps/3/events", &p, body, 1353088179);
        assert!(forged.err().unwrap().1.contains("auth_signature"));
    }
}
