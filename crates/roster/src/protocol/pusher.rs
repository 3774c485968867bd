//! The Pusher Channels protocol 7 (`GET /app/{key}`, docs/PUSHER.md) over one
//! connection: `pusher-js` and Laravel Echo, unchanged, against Roster.
//!
//! A Pusher app is a tenant (`[[pusher.apps]]`). A channel is the room of the same
//! name (`presence-chat` is room `presence-chat` for native and STOMP clients too).
//! The connection's Roster session is opened when it first needs one: at
//! `pusher:signin` or at the first presence subscription it takes that user
//! (`user_id` of the `channel_data`), and a public or private subscription before
//! either opens an anonymous session (user `pusher:<socket_id>`), replaced by the
//! user's session when the user becomes known. Presence channels are list-mode
//! members; public and private ones count-mode members.
//!
//! What the core delivers is rendered once per delivery by [`PUSHER`] into an
//! internal form (snapshots, diffs, watch status: one byte [`INTERNAL`] then
//! JSON). Each connection turns it into Pusher's events with its own view of each
//! presence channel's users, because Pusher speaks of *users*
//! (`member_added` when a user's first session arrives, `member_removed` when
//! its last one has left — after Roster's leave grace), where the core speaks of
//! sessions. Room events (`EMIT`, `client-*`) are rendered once, as final text.
//! Nothing here decides presence: every change goes through the node.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use super::native::{ConnectionGauge, Limits};
use super::opening::Opening;
use super::socket::{Incoming, ReadError, Socket};
use crate::auth::Identity;
use crate::config::PusherAppConfig;
use crate::core::error::ErrorCode;
use crate::core::outgoing::Outgoing;
use crate::core::room::MemberView;
use crate::core::transition::Transition;
use crate::core::types::{LeaveReason, Status, SubMode};
use crate::frame::Frame;
use crate::ids::{RoomKey, TenantId, UserId};
use crate::node::hub::{close, ConnLink, Outbound, Reply, SessionHandle, Wire};
use crate::node::{HelloInfo, Node};

/// The first byte of a frame meant for the connection task, not the socket.
const INTERNAL: u8 = 1;
/// Pusher's limit on client events per connection (per second, no burst).
const CLIENT_EVENTS_PER_SECOND: u32 = 10;
/// Pusher's longest channel name.
const MAX_CHANNEL: usize = 164;

/// Pusher's close codes (its protocol: 4000–4099 do not reconnect, 4100–4199
/// reconnect after a back-off, 4200–4299 reconnect at once).
pub mod code {
    pub const APP_DOES_NOT_EXIST: u16 = 4001;
    pub const UNSUPPORTED_PROTOCOL: u16 = 4007;
    pub const NO_PROTOCOL: u16 = 4008;
    pub const UNAUTHORIZED: u16 = 4009;
    pub const OVER_CAPACITY: u16 = 4100;
    pub const RECONNECT: u16 = 4200;
    pub const PONG_NOT_RECEIVED: u16 = 4201;
    pub const CLIENT_EVENT_RATE_LIMIT: u16 = 4301;
}

/// The Pusher close code for a Roster one.
fn pusher_close(roster: u16) -> u16 {
    match roster {
        close::GOING_AWAY => code::RECONNECT,
        close::TIMEOUT => code::PONG_NOT_RECEIVED,
        close::SLOW_CONSUMER => code::OVER_CAPACITY,
        close::KICKED | close::AUTH => code::UNAUTHORIZED,
        other => other,
    }
}

/// The Pusher [`Wire`].
pub struct Pusher;
pub static PUSHER: Pusher = Pusher;

/// One session of a presence channel: user, session, `user_info`.
type Entry = (String, String, Option<Value>);

/// What the wire hands its connections to render with their own state.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "k")]
enum Internal {
    /// A presence channel's sessions now (the answer to a subscription).
    #[serde(rename = "s")]
    Snapshot { room: String, members: Vec<Entry> },
    /// Sessions that left, then sessions that joined.
    #[serde(rename = "d")]
    Diff {
        room: String,
        leaves: Vec<(String, String)>,
        joins: Vec<Entry>,
    },
    /// Watched users: online (or away) or not.
    #[serde(rename = "w")]
    Watch { users: Vec<(String, bool)> },
}

fn internal(i: &Internal) -> Frame {
    let mut out = String::with_capacity(64);
    out.push(INTERNAL as char);
    out.push_str(&serde_json::to_string(i).unwrap_or_default());
    Frame(Arc::new(Utf8Bytes::from(out)))
}

/// A Pusher message: `{"event", "channel"?, "data"}`.
fn message(event: &str, channel: Option<&str>, data: &Value) -> Frame {
    let mut m = serde_json::Map::new();
    m.insert("event".into(), json!(event));
    if let Some(c) = channel {
        m.insert("channel".into(), json!(c));
    }
    m.insert("data".into(), data.clone());
    Frame(Arc::new(Utf8Bytes::from(
        serde_json::to_string(&m).unwrap_or_default(),
    )))
}

/// Pusher's own events carry their data as a JSON string.
fn event(event: &str, channel: Option<&str>, data: &Value) -> Frame {
    message(event, channel, &Value::String(data.to_string()))
}

/// A member's `user_info`: its `info`, else `{name}`, else nothing.
pub fn user_info(name: Option<&str>, info: Option<&Value>) -> Option<Value> {
    info.cloned().or_else(|| name.map(|n| json!({ "name": n })))
}

fn entry(m: &MemberView) -> Entry {
    (
        m.user_id.to_string(),
        m.session.session_id.to_string(),
        user_info(m.name.as_deref(), m.info.as_ref()),
    )
}

impl Wire for Pusher {
    fn outgoing(&self, msg: Outgoing<'_>) -> Option<(&'static str, Frame)> {
        match msg {
            Outgoing::Presence { snapshot, .. } => {
                let members = snapshot
                    .users
                    .iter()
                    .flat_map(|u| {
                        let info = user_info(u.name.as_deref(), u.info.as_ref());
                        u.sessions.iter().map(move |s| {
                            (
                                u.user_id.to_string(),
                                s.session_id.to_string(),
                                info.clone(),
                            )
                        })
                    })
                    .collect();
                let i = Internal::Snapshot {
                    room: snapshot.room.clone(),
                    members,
                };
                Some(("pusher_internal:subscription_succeeded", internal(&i)))
            }
            Outgoing::PresenceCount { .. } => None,
            Outgoing::Diff(d) => {
                if d.joins.is_empty() && d.leaves.is_empty() {
                    return None; // state updates: Pusher has no such event
                }
                let i = Internal::Diff {
                    room: d.room.clone(),
                    leaves: d
                        .leaves
                        .iter()
                        .map(|l| (l.user_id.to_string(), l.session_id.to_string()))
                        .collect(),
                    joins: d.joins.iter().map(entry).collect(),
                };
                Some(("pusher_internal:member", internal(&i)))
            }
            Outgoing::Event(Transition::RoomEvent {
                room,
                from,
                event,
                data,
                ..
            }) => {
                let channel = room.key.as_str();
                let mut m = serde_json::Map::new();
                m.insert("event".into(), json!(event));
                m.insert("channel".into(), json!(channel));
                m.insert("data".into(), data.clone());
                if let Some(f) = from.as_ref().filter(|_| channel.starts_with("presence-")) {
                    m.insert("user_id".into(), json!(f.user));
                }
                let text = serde_json::to_string(&m).unwrap_or_default();
                Some(("client_event", Frame(Arc::new(Utf8Bytes::from(text)))))
            }
            // Locks and the entity state: Pusher has no words for them.
            Outgoing::Event(_) => None,
        }
    }

    fn reply(&self, reply: Reply<'_>) -> Option<(&'static str, Frame)> {
        let users = match reply {
            Reply::StatusSnapshot { users, .. } => users
                .iter()
                .map(|(u, v)| (u.to_string(), v.status != Status::Offline))
                .collect(),
            Reply::Status { user, view } => {
                vec![(user.to_string(), view.status != Status::Offline)]
            }
            // Field locks are not part of Pusher.
            Reply::LockAck { .. } | Reply::UnlockAck { .. } => return None,
        };
        Some((
            "pusher_internal:watchlist_events",
            internal(&Internal::Watch { users }),
        ))
    }
}

/// Finds the app of a key.
pub fn app_by_key<'a>(node: &'a Node, key: &str) -> Option<&'a PusherAppConfig> {
    node.config.pusher.apps.iter().find(|a| a.key == key)
}

/// Finds the app of an id (the HTTP API).
pub fn app_by_id<'a>(node: &'a Node, id: &str) -> Option<&'a PusherAppConfig> {
    node.config.pusher.apps.iter().find(|a| a.app_id == id)
}

/// HMAC-SHA256 of `text` with the app's secret, hex.
pub fn sign(secret: &str, text: &str) -> String {
    sign_bytes(secret, text.as_bytes())
}

/// HMAC-SHA256 of `body` with the app's secret, hex (`X-Pusher-Signature`).
pub fn sign_bytes(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `sig_hex` is the HMAC-SHA256 of `text` with `secret`, checked in
/// constant time.
pub fn verify(secret: &str, text: &str, sig_hex: &str) -> bool {
    let Ok(sig) = hex::decode(sig_hex) else {
        return false;
    };
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(text.as_bytes());
    mac.verify_slice(&sig).is_ok()
}

/// Checks `key:signature` against `text`, in constant time.
pub fn check_auth(app: &PusherAppConfig, auth: &str, text: &str) -> bool {
    auth.split_once(':')
        .is_some_and(|(key, sig)| key == app.key && verify(&app.secret, text, sig))
}

/// What the HTTP upgrade knew about the connection.
pub struct PusherContext {
    pub opening: Option<Arc<Opening>>,
    /// The app of the key in the path, if there is one.
    pub app: Option<PusherAppConfig>,
    /// The `protocol` query parameter.
    pub protocol: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Public,
    Private,
    Presence,
}

fn kind_of(channel: &str) -> Kind {
    if channel.starts_with("presence-") {
        Kind::Presence
    } else if channel.starts_with("private-") {
        Kind::Private
    } else {
        Kind::Public
    }
}

/// A subscribed channel; for a presence channel, its users' sessions as this
/// connection knows them.
struct Channel {
    kind: Kind,
    /// Only ids: `user_info` comes with the snapshot and the joins that
    /// render it (a connection of a 1,000-member channel keeps 1,000 small
    /// entries, not 1,000 copies of everyone's info).
    users: HashMap<String, HashSet<String>>,
    /// The subscription is answered (its snapshot came).
    ready: bool,
}

/// A client message: `{"event", "channel"?, "data"?}`.
#[derive(Deserialize)]
struct ClientMessage {
    event: String,
    channel: Option<String>,
    #[serde(default)]
    data: Value,
}

/// `data` of `pusher:subscribe`, as an object or a JSON string.
#[derive(Deserialize)]
struct Subscribe {
    channel: String,
    auth: Option<String>,
    channel_data: Option<String>,
}

#[derive(Deserialize)]
struct Signin {
    auth: String,
    user_data: String,
}

/// Who a connection is: the signed-in user or a presence channel's member.
#[derive(Clone)]
struct Who {
    user: UserId,
    info: Option<Value>,
}

/// `user_id` may be a string or a number in Pusher's `channel_data`.
fn user_id_of(v: Option<&Value>) -> Result<UserId, String> {
    let raw = match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err("`user_id` (a string or number) is required".into()),
    };
    UserId::parse(&raw).map_err(|e| e.0)
}

struct Conn {
    node: Arc<Node>,
    app: PusherAppConfig,
    tenant: TenantId,
    socket_id: String,
    link: ConnLink,
    ip: Option<String>,
    user_agent: Option<String>,
    session: Option<Arc<SessionHandle>>,
    /// The session is anonymous (`pusher:<socket_id>`).
    anonymous: bool,
    signed_in: bool,
    channels: BTreeMap<String, Channel>,
    watch: HashMap<String, bool>,
    limits: Limits,
    client_events: Limits,
}

impl Conn {
    /// Queues a frame behind whatever the session was already sent.
    fn send(&self, f: Frame) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.link.tx.try_send(Outbound::Frame(f)) {
            metrics::counter!(crate::metrics::SEND_QUEUE_DROPS).increment(1);
            self.link.close(close::SLOW_CONSUMER);
        }
    }

    fn error(&self, code: Option<u16>, message: &str) {
        self.send(event(
            "pusher:error",
            None,
            &json!({"code": code, "message": message}),
        ));
    }

    fn subscription_error(&self, channel: &str, ty: &str, status: u16, message: &str) {
        self.send(event(
            "pusher:subscription_error",
            Some(channel),
            &json!({"type": ty, "error": message, "status": status}),
        ));
    }

    /// A session for `who` (or an anonymous one): the current one if it is
    /// that user's; the user's in place of an anonymous one. `Err`: the
    /// connection is another user already.
    async fn session_for(&mut self, who: Option<&Who>) -> Result<Arc<SessionHandle>, String> {
        if let Some(s) = &self.session {
            match who {
                None => return Ok(s.clone()),
                Some(w) if !self.anonymous && s.meta.user == w.user => return Ok(s.clone()),
                Some(w) if !self.anonymous => {
                    return Err(format!(
                        "this connection is user {:?}; {:?} needs a connection of its own",
                        s.meta.user.as_str(),
                        w.user.as_str()
                    ))
                }
                Some(_) => {}
            }
        }
        let identity = match who {
            Some(w) => Identity {
                tenant: self.tenant.clone(),
                user: w.user.clone(),
                roles: vec![],
                name: w
                    .info
                    .as_ref()
                    .and_then(|i| i.get("name"))
                    .and_then(Value::as_str)
                    .map(str::to_string),
                info: w.info.clone(),
            },
            None => Identity {
                tenant: self.tenant.clone(),
                user: UserId::parse(&format!("pusher:{}", self.socket_id)).map_err(|e| e.0)?,
                roles: vec![],
                name: None,
                info: None,
            },
        };
        let hello = HelloInfo {
            device: None,
            os: None,
            app_version: None,
            client_id: None,
            ip: self.ip.clone(),
            user_agent: self.user_agent.clone(),
        };
        let welcome = Box::pin(self.node.open_session(identity, hello, self.link.clone())).await;
        let Some(new) = self.node.hub.get(&welcome.session_id) else {
            return Err("the session could not be opened".into());
        };
        self.node.touch(&new);
        let old = self.session.replace(new.clone());
        self.anonymous = who.is_none();
        // The anonymous session's channels move to the user's; then it ends.
        if let Some(old) = old {
            for (name, ch) in &self.channels {
                if ch.kind != Kind::Presence {
                    if let Ok(key) = RoomKey::parse(name) {
                        let _ = self.node.sub(&new, key, None, SubMode::Count, None).await;
                    }
                }
            }
            self.node.end_session(&old.meta.id, LeaveReason::Left).await;
        }
        Ok(new)
    }

    async fn on_text(&mut self, text: &str) -> Option<u16> {
        if !self.limits.take() {
            self.error(None, "too many messages; this one was dropped");
            return None;
        }
        let msg: ClientMessage = match serde_json::from_str(text) {
            Ok(m) => m,
            Err(e) => return self.client_error(&format!("malformed message: {e}")),
        };
        match msg.event.as_str() {
            "pusher:ping" => self.send(event("pusher:pong", None, &json!({}))),
            "pusher:pong" => {}
            "pusher:subscribe" => return self.subscribe(msg.data).await,
            "pusher:unsubscribe" => {
                let channel = msg
                    .data
                    .get("channel")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                match channel {
                    Some(c) => self.unsubscribe(&c).await,
                    None => return self.client_error("pusher:unsubscribe needs `data.channel`"),
                }
            }
            "pusher:signin" => return self.signin(msg.data).await,
            e if e.starts_with("client-") => return self.client_event(msg).await,
            other => {
                let shown: String = other.chars().take(40).collect();
                return self.client_error(&format!("unknown event {shown:?}"));
            }
        }
        None
    }

    /// A refused sign-in: Pusher closes the connection with 4009.
    fn unauthorized(&self, why: &str) -> Option<u16> {
        self.error(Some(code::UNAUTHORIZED), why);
        Some(code::UNAUTHORIZED)
    }

    /// A client error: `pusher:error`, counted in the error budget.
    fn client_error(&mut self, message: &str) -> Option<u16> {
        self.error(None, message);
        if self.limits.error() {
            self.error(None, "too many errors: closing");
            return Some(close::TOO_MANY_ERRORS);
        }
        None
    }

    async fn subscribe(&mut self, data: Value) -> Option<u16> {
        let data = match data {
            Value::String(s) => serde_json::from_str(&s).unwrap_or(Value::Null),
            v => v,
        };
        let sub: Subscribe = match serde_json::from_value(data) {
            Ok(s) => s,
            Err(e) => return self.client_error(&format!("pusher:subscribe: {e}")),
        };
        let channel = sub.channel;
        let kind = kind_of(&channel);
        if self.channels.contains_key(&channel) {
            // Pusher answers a repeated subscription with nothing new.
            return None;
        }
        // pusher-js subscribes to its user's own channel after a sign-in
        // (for the HTTP API's events to a user, which Roster does not send):
        // accepted for the signed-in user, and nothing arrives on it.
        if let Some(user) = channel.strip_prefix("#server-to-user-") {
            let own = self.signed_in
                && !self.anonymous
                && self
                    .session
                    .as_ref()
                    .is_some_and(|s| s.meta.user.as_str() == user);
            if own {
                self.send(event(
                    "pusher_internal:subscription_succeeded",
                    Some(&channel),
                    &json!({}),
                ));
            } else {
                self.subscription_error(
                    &channel,
                    "AuthError",
                    403,
                    "only the signed-in user's own channel",
                );
            }
            return None;
        }
        let key = match RoomKey::parse(&channel) {
            Ok(k) if channel.len() <= MAX_CHANNEL && !channel.starts_with("private-encrypted-") => {
                k
            }
            _ => {
                self.subscription_error(
                    &channel,
                    "InvalidChannel",
                    400,
                    "channel names here match [A-Za-z0-9_.:@/-]{1,164}; encrypted channels are not supported",
                );
                return self.client_error("invalid channel");
            }
        };
        let who = match kind {
            Kind::Public => None,
            Kind::Private => {
                let text = format!("{}:{}", self.socket_id, channel);
                if !sub
                    .auth
                    .as_deref()
                    .is_some_and(|a| check_auth(&self.app, a, &text))
                {
                    self.subscription_error(
                        &channel,
                        "AuthError",
                        401,
                        "invalid signature: expected key:HMAC-SHA256(secret, socket_id:channel)",
                    );
                    return self.client_error("unauthorized subscription");
                }
                None
            }
            Kind::Presence => {
                let channel_data = sub.channel_data.unwrap_or_default();
                let text = format!("{}:{}:{}", self.socket_id, channel, channel_data);
                if !sub
                    .auth
                    .as_deref()
                    .is_some_and(|a| check_auth(&self.app, a, &text))
                {
                    self.subscription_error(
                        &channel,
                        "AuthError",
                        401,
                        "invalid signature: expected key:HMAC-SHA256(secret, socket_id:channel:channel_data)",
                    );
                    return self.client_error("unauthorized subscription");
                }
                let parsed: Value = serde_json::from_str(&channel_data).unwrap_or(Value::Null);
                match user_id_of(parsed.get("user_id")) {
                    Ok(user) => Some(Who {
                        user,
                        info: parsed.get("user_info").cloned().filter(|v| !v.is_null()),
                    }),
                    Err(why) => {
                        self.subscription_error(
                            &channel,
                            "AuthError",
                            400,
                            &format!("channel_data: {why}"),
                        );
                        return self.client_error("bad channel_data");
                    }
                }
            }
        };
        // A signed-in connection keeps its user for public and private channels.
        let session = if who.is_none() && self.session.is_some() {
            self.session.clone().ok_or_else(String::new)
        } else {
            self.session_for(who.as_ref()).await
        };
        let session = match session {
            Ok(s) => s,
            Err(why) => {
                self.subscription_error(&channel, "AuthError", 403, &why);
                return None;
            }
        };
        self.channels.insert(
            channel.clone(),
            Channel {
                kind,
                users: HashMap::new(),
                ready: false,
            },
        );
        let mode = if kind == Kind::Presence {
            SubMode::List
        } else {
            SubMode::Count
        };
        if let Err(e) = self.node.sub(&session, key, None, mode, None).await {
            self.channels.remove(&channel);
            let status = match e.code {
                ErrorCode::Forbidden => 403,
                ErrorCode::RoomFull | ErrorCode::TooManyRooms => 429,
                ErrorCode::RoomClosed => 423,
                ErrorCode::Internal => 503,
                _ => 400,
            };
            self.subscription_error(&channel, e.code.as_str(), status, &e.message);
            return None;
        }
        if kind != Kind::Presence {
            if let Some(ch) = self.channels.get_mut(&channel) {
                ch.ready = true;
            }
            self.send(event(
                "pusher_internal:subscription_succeeded",
                Some(&channel),
                &json!({}),
            ));
        }
        None
    }

    async fn unsubscribe(&mut self, channel: &str) {
        if self.channels.remove(channel).is_none() {
            return;
        }
        if let (Some(s), Ok(key)) = (&self.session, RoomKey::parse(channel)) {
            let _ = self.node.unsub(s, key).await;
        }
    }

    async fn signin(&mut self, data: Value) -> Option<u16> {
        let data = match data {
            Value::String(s) => serde_json::from_str(&s).unwrap_or(Value::Null),
            v => v,
        };
        let Ok(signin) = serde_json::from_value::<Signin>(data) else {
            return self.client_error("pusher:signin needs `data.auth` and `data.user_data`");
        };
        let text = format!("{}::user::{}", self.socket_id, signin.user_data);
        if !check_auth(&self.app, &signin.auth, &text) {
            return self.unauthorized(
                "invalid signature: expected key:HMAC-SHA256(secret, socket_id::user::user_data)",
            );
        }
        let user_data: Value = serde_json::from_str(&signin.user_data).unwrap_or(Value::Null);
        let user = match user_id_of(user_data.get("id")) {
            Ok(u) => u,
            Err(why) => return self.unauthorized(&format!("user_data: {why}")),
        };
        let who = Who {
            user,
            info: user_data.get("user_info").cloned().filter(|v| !v.is_null()),
        };
        let session = match self.session_for(Some(&who)).await {
            Ok(s) => s,
            Err(why) => return self.unauthorized(&why),
        };
        self.signed_in = true;
        self.send(event(
            "pusher:signin_success",
            None,
            &json!({ "user_data": signin.user_data }),
        ));
        let watchlist: Vec<UserId> = user_data
            .get("watchlist")
            .and_then(Value::as_array)
            .map(|l| l.iter().filter_map(|v| user_id_of(Some(v)).ok()).collect())
            .unwrap_or_default();
        if !watchlist.is_empty() {
            if let Err(e) = self.node.watch(&session, watchlist, None).await {
                self.error(None, &e.message);
            }
        }
        None
    }

    async fn client_event(&mut self, msg: ClientMessage) -> Option<u16> {
        let Some(channel) = msg.channel else {
            return self.client_error("a client event needs `channel`");
        };
        match self.channels.get(&channel).map(|c| c.kind) {
            None => return self.client_error(&format!("not subscribed to {channel}")),
            Some(Kind::Public) => {
                return self.client_error(
                    "client events are only allowed on private and presence channels",
                )
            }
            Some(_) => {}
        }
        if !self.client_events.take() {
            self.error(
                Some(code::CLIENT_EVENT_RATE_LIMIT),
                "Client event rejected due to rate limit",
            );
            return None;
        }
        let (Some(s), Ok(key)) = (self.session.clone(), RoomKey::parse(&channel)) else {
            return None;
        };
        if let Err(e) = self.node.emit_event(&s, key, msg.event, msg.data).await {
            return self.client_error(&e.message);
        }
        None
    }

    /// Renders what the wire handed over with this connection's own state.
    fn on_internal(&mut self, text: &str) {
        let Ok(i) = serde_json::from_str::<Internal>(text) else {
            return;
        };
        match i {
            Internal::Snapshot { room, members } => {
                let Some(ch) = self.channels.get_mut(&room) else {
                    return;
                };
                ch.users.clear();
                let mut hash = serde_json::Map::new();
                for (user, session, info) in members {
                    if let Some(info) = info {
                        hash.insert(user.clone(), info);
                    }
                    ch.users.entry(user).or_default().insert(session);
                }
                let first = !ch.ready;
                ch.ready = true;
                if first {
                    let ids: Vec<&String> = ch.users.keys().collect();
                    for id in &ids {
                        if !hash.contains_key(id.as_str()) {
                            hash.insert(id.to_string(), Value::Null);
                        }
                    }
                    let data = json!({"presence": {"ids": ids, "hash": hash, "count": ids.len()}});
                    let f = event("pusher_internal:subscription_succeeded", Some(&room), &data);
                    self.send(f);
                }
            }
            Internal::Diff {
                room,
                leaves,
                joins,
            } => {
                let Some(ch) = self.channels.get_mut(&room) else {
                    return;
                };
                if !ch.ready {
                    return;
                }
                let mut touched: Vec<String> = vec![];
                let mut before: HashMap<String, bool> = HashMap::new();
                for (user, _) in &leaves {
                    before
                        .entry(user.clone())
                        .or_insert_with(|| ch.users.contains_key(user));
                }
                for (user, _, _) in &joins {
                    before
                        .entry(user.clone())
                        .or_insert_with(|| ch.users.contains_key(user));
                }
                for (user, session) in leaves {
                    if let Some(sessions) = ch.users.get_mut(&user) {
                        sessions.remove(&session);
                        if sessions.is_empty() {
                            ch.users.remove(&user);
                        }
                    }
                    touched.push(user);
                }
                let mut infos: HashMap<String, Value> = HashMap::new();
                for (user, session, info) in joins {
                    ch.users.entry(user.clone()).or_default().insert(session);
                    if let Some(info) = info {
                        infos.insert(user.clone(), info);
                    }
                    touched.push(user);
                }
                let mut frames = vec![];
                let mut seen = HashSet::new();
                for user in touched {
                    if !seen.insert(user.clone()) {
                        continue;
                    }
                    let was = before.get(&user).copied().unwrap_or(false);
                    match (was, ch.users.contains_key(&user)) {
                        (false, true) => frames.push(event(
                            "pusher_internal:member_added",
                            Some(&room),
                            &json!({"user_id": user, "user_info": infos.get(&user)}),
                        )),
                        (true, false) => frames.push(event(
                            "pusher_internal:member_removed",
                            Some(&room),
                            &json!({ "user_id": user }),
                        )),
                        _ => {}
                    }
                }
                for f in frames {
                    self.send(f);
                }
            }
            Internal::Watch { users } => {
                let (mut online, mut offline) = (vec![], vec![]);
                for (user, now) in users {
                    let was = self.watch.insert(user.clone(), now);
                    match (was, now) {
                        (Some(a), b) if a == b => {}
                        (None, false) => {}
                        (_, true) => online.push(user),
                        (_, false) => offline.push(user),
                    }
                }
                let mut events = vec![];
                if !online.is_empty() {
                    events.push(json!({"name": "online", "user_ids": online}));
                }
                if !offline.is_empty() {
                    events.push(json!({"name": "offline", "user_ids": offline}));
                }
                if !events.is_empty() {
                    self.send(event(
                        "pusher_internal:watchlist_events",
                        None,
                        &json!({ "events": events }),
                    ));
                }
            }
        }
    }
}

/// Serves one Pusher connection.
pub async fn serve(mut ws: Socket, mut ctx: PusherContext, node: Arc<Node>) {
    let finish_opening = |ctx: &mut PusherContext| {
        if let Some(o) = ctx.opening.take() {
            o.finish();
        }
    };
    let fail = |code: u16, message: &str| {
        event(
            "pusher:error",
            None,
            &json!({"code": code, "message": message}),
        )
    };
    let Some(app) = ctx.app.clone() else {
        finish_opening(&mut ctx);
        ws.send_text(&fail(code::APP_DOES_NOT_EXIST, "App key not in this cluster").0)
            .await;
        ws.close(code::APP_DOES_NOT_EXIST).await;
        return;
    };
    match ctx.protocol.as_deref().map(str::parse::<u32>) {
        None => {
            finish_opening(&mut ctx);
            ws.send_text(&fail(code::NO_PROTOCOL, "No protocol version supplied").0)
                .await;
            ws.close(code::NO_PROTOCOL).await;
            return;
        }
        Some(Ok(5..=7)) => {}
        Some(_) => {
            finish_opening(&mut ctx);
            ws.send_text(
                &fail(
                    code::UNSUPPORTED_PROTOCOL,
                    "Unsupported protocol version: 5 to 7 are",
                )
                .0,
            )
            .await;
            ws.close(code::UNSUPPORTED_PROTOCOL).await;
            return;
        }
    }
    let Ok(tenant) = TenantId::parse(&app.tenant) else {
        return; // validated at start-up
    };
    if node.shutting_down.load(Ordering::SeqCst) {
        ws.close(code::RECONNECT).await;
        return;
    }
    let cfg = node.config.clone();
    let (tx, mut rx) = mpsc::channel(cfg.limits.send_queue);
    let kill = CancellationToken::new();
    let link = ConnLink {
        id: node.next_conn_id(),
        wire: &PUSHER,
        tx,
        kill: kill.clone(),
        close_code: Arc::new(AtomicU16::new(0)),
    };
    let socket_id = crate::node::hub::socket_id(link.id);
    let _connected = ConnectionGauge::new(&node);
    let mut conn = Conn {
        node: node.clone(),
        app,
        tenant,
        socket_id: socket_id.clone(),
        link: link.clone(),
        ip: ctx.ip.take(),
        user_agent: ctx.user_agent.take(),
        session: None,
        anonymous: false,
        signed_in: false,
        channels: BTreeMap::new(),
        watch: HashMap::new(),
        limits: Limits::new(
            cfg.limits.messages_per_second,
            cfg.limits.messages_burst,
            cfg.limits.errors_per_minute,
        ),
        client_events: Limits::new(CLIENT_EVENTS_PER_SECOND, CLIENT_EVENTS_PER_SECOND, u32::MAX),
    };
    // The activity timeout Pusher clients ping after: the heartbeat interval.
    let activity = cfg.timing.heartbeat_interval.0.as_secs().max(1);
    let established = event(
        "pusher:connection_established",
        None,
        &json!({"socket_id": socket_id, "activity_timeout": activity}),
    );
    finish_opening(&mut ctx);
    if !ws.send_text(&established.0).await {
        return;
    }
    // Until a session exists, the connection keeps its own liveness.
    let idle_limit = cfg.timing.session_timeout.0;
    let mut last_heard = Instant::now();
    loop {
        let idle_deadline = last_heard + idle_limit;
        tokio::select! {
            biased;
            _ = kill.cancelled() => {
                let c = link.close_code.load(Ordering::SeqCst);
                let c = pusher_close(if c == 0 { close::GOING_AWAY } else { c });
                Box::pin(async {
                    if c != code::OVER_CAPACITY {
                        let _ = tokio::time::timeout(Duration::from_secs(1), drain(&mut ws, &mut rx, &mut conn)).await;
                    }
                    ws.close(c).await;
                })
                .await;
                break;
            }
            _ = tokio::time::sleep_until(idle_deadline), if conn.session.is_none() => {
                ws.close(code::PONG_NOT_RECEIVED).await;
                break;
            }
            out = rx.recv() => {
                let sent = match out {
                    Some(Outbound::Frame(f)) => Box::pin(write(&mut ws, &mut conn, f)).await,
                    Some(Outbound::Ping(stamp)) => Box::pin(ws.ping(stamp.to_be_bytes().to_vec())).await,
                    None => break,
                };
                if !sent {
                    break;
                }
            }
            incoming = ws.recv() => {
                let msg = match incoming {
                    Some(Ok(msg)) => msg,
                    Some(Err(ReadError(code))) => {
                        if let Some(code) = code {
                            Box::pin(ws.close(code)).await;
                        }
                        break;
                    }
                    None => break,
                };
                last_heard = Instant::now();
                if let Some(s) = &conn.session {
                    node.touch(s);
                }
                match msg {
                    Incoming::Text(text) => {
                        if let Some(c) = Box::pin(conn.on_text(text.as_str())).await {
                            Box::pin(async {
                                let _ = tokio::time::timeout(Duration::from_secs(1), drain(&mut ws, &mut rx, &mut conn)).await;
                                ws.close(c).await;
                            })
                            .await;
                            break;
                        }
                    }
                    Incoming::Binary(_) => {
                        Box::pin(ws.close(close::UNSUPPORTED)).await;
                        break;
                    }
                    Incoming::Pong(payload) => {
                        if let Some(s) = &conn.session {
                            node.pong(s, &payload);
                        }
                    }
                    Incoming::Ping => {}
                    Incoming::Close => {
                        Box::pin(ws.answer_close()).await;
                        break;
                    }
                }
            }
        }
    }
    // Pusher has no goodbye: every end is a dropped connection, held for the
    // leave grace (a reload inside it shows no `member_removed`).
    if let Some(s) = &conn.session {
        node.connection_lost(s, link.id);
    }
}

/// Writes one queued frame: internal ones are rendered with the connection's
/// state first.
async fn write(ws: &mut Socket, conn: &mut Conn, f: Frame) -> bool {
    let text = f.as_str();
    if text.as_bytes().first() == Some(&INTERNAL) {
        conn.on_internal(&text[1..]);
        return true;
    }
    ws.send_text(&f.0).await
}

async fn drain(ws: &mut Socket, rx: &mut mpsc::Receiver<Outbound>, conn: &mut Conn) {
    while let Ok(out) = rx.try_recv() {
        if let Outbound::Frame(f) = out {
            if !write(ws, conn, f).await {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> PusherAppConfig {
        PusherAppConfig {
            tenant: "acme".into(),
            app_id: "1".into(),
            key: "key".into(),
            secret: "7ad3773142a6692b25b8".into(),
            webhook_url: None,
        }
    }

    #[test]
    fn signatures_are_pushers() {
        // The example of Pusher's authentication docs.
        let sig = sign("7ad3773142a6692b25b8", "1234.1234:private-foobar");
        assert_eq!(
            sig,
            "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
        );
        let a = app();
        assert!(check_auth(
            &a,
            &format!("key:{sig}"),
            "1234.1234:private-foobar"
        ));
        assert!(!check_auth(
            &a,
            &format!("other:{sig}"),
            "1234.1234:private-foobar"
        ));
        assert!(!check_auth(
            &a,
            &format!("key:{sig}"),
            "1234.1235:private-foobar"
        ));
        assert!(!check_auth(&a, "key:zz", "1234.1234:private-foobar"));
        assert!(!check_auth(&a, "nocolon", "1234.1234:private-foobar"));
    }

    #[test]
    fn channel_kinds_and_close_codes() {
        assert_eq!(kind_of("presence-chat"), Kind::Presence);
        assert_eq!(kind_of("private-chat"), Kind::Private);
        assert_eq!(kind_of("chat"), Kind::Public);
        assert_eq!(pusher_close(close::TIMEOUT), code::PONG_NOT_RECEIVED);
        assert_eq!(pusher_close(close::GOING_AWAY), code::RECONNECT);
        assert_eq!(pusher_close(close::KICKED), code::UNAUTHORIZED);
    }
}
