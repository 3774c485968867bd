//! STOMP 1.2 (and 1.1) over WebSocket at `/stomp` (docs/STOMP.md): the wire of
//! the Spring designs the seeds describe, for `@stomp/stompjs` clients
//! unchanged. `CONNECT` with the JWT opens the Roster session; `SEND` to an
//! `/app/…` destination is a native message; `SUBSCRIBE` to a room topic joins
//! the room, and to `/user/queue/…` receives this connection's own messages.
//!
//! What the core delivers is rendered once per delivery by [`STOMP`]: the
//! native message's JSON (the body every recipient gets), tagged with where
//! it belongs (a room, watch status, or acks: one byte [`INTERNAL`], the tag,
//! a newline, the body). Each connection wraps it in `MESSAGE` frames for its
//! own subscriptions (their ids and destinations are per connection). Nothing
//! here decides presence: every change goes through the node.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use super::messages::RoomAddr;
use super::native::{check_field, ConnectionGauge, Limits};
use super::opening::Opening;
use super::render;
use super::socket::{Incoming, ReadError, Socket};
use crate::auth::Authenticator;
use crate::core::error::{CoreError, ErrorCode};
use crate::core::outgoing::Outgoing;
use crate::core::types::{LeaveReason, Status, SubMode};
use crate::frame::Frame;
use crate::ids::{RoomKey, UserId};
use crate::node::hub::{close, ConnLink, Outbound, Reply, SessionHandle, Wire};
use crate::node::{HelloInfo, Node};

/// The first byte of a frame meant for the connection task, not the socket.
const INTERNAL: u8 = 1;
/// The WebSocket subprotocols a STOMP client may offer, best first.
pub const SUBPROTOCOLS: [&str; 3] = ["v12.stomp", "v11.stomp", "v10.stomp"];
/// Close code of a protocol error (RFC 6455).
const PROTOCOL_ERROR: u16 = 1002;

/// One STOMP frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StompFrame {
    pub command: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl StompFrame {
    /// The first value of a header (STOMP: repeated headers, the first wins).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the parser found in the bytes: a frame, or a heart-beat (a bare EOL).
#[derive(Debug, PartialEq, Eq)]
pub enum Item {
    Frame(StompFrame),
    HeartBeat,
}

/// A streaming frame parser: several frames per WebSocket message, or one
/// frame over several, buffered up to `max` bytes.
pub struct Parser {
    buf: Vec<u8>,
    max: usize,
    /// Header escapes apply (STOMP 1.2), except in `CONNECT`/`CONNECTED`.
    pub escapes: bool,
}

fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some('c') => out.push(':'),
            Some('\\') => out.push('\\'),
            other => {
                return Err(format!(
                    "undefined escape sequence \\{}",
                    other.unwrap_or(' ')
                ))
            }
        }
    }
    Ok(out)
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            ':' => out.push_str("\\c"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out
}

impl Parser {
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            max,
            escapes: false,
        }
    }

    /// Adds bytes; answers the complete items, or why the stream is broken.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Item>, String> {
        self.buf.extend_from_slice(bytes);
        let mut out = vec![];
        loop {
            // Heart-beats (EOLs) between frames.
            let skip = self
                .buf
                .iter()
                .take_while(|b| **b == b'\n' || **b == b'\r')
                .count();
            if skip > 0 {
                let beats = self.buf[..skip].iter().filter(|b| **b == b'\n').count();
                out.extend((0..beats).map(|_| Item::HeartBeat));
                self.buf.drain(..skip);
            }
            if self.buf.is_empty() {
                return Ok(out);
            }
            match self.frame()? {
                Some(f) => out.push(Item::Frame(f)),
                None => {
                    if self.buf.len() > self.max {
                        return Err(format!("frame larger than {} bytes", self.max));
                    }
                    return Ok(out);
                }
            }
        }
    }

    /// One frame off the front of the buffer, if it is complete.
    fn frame(&mut self) -> Result<Option<StompFrame>, String> {
        // The head ends at the first empty line.
        let Some(head_end) = find_blank_line(&self.buf) else {
            return Ok(None);
        };
        let (head_len, sep_len) = head_end;
        let head = std::str::from_utf8(&self.buf[..head_len])
            .map_err(|_| "frame head is not UTF-8".to_string())?
            .to_string();
        let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        let command = lines.next().unwrap_or_default().to_string();
        if command.is_empty() || !command.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(format!("not a STOMP command: {:?}", truncate(&command)));
        }
        let escapes = self.escapes && command != "CONNECT" && command != "CONNECTED";
        let mut headers = vec![];
        for line in lines {
            let Some((k, v)) = line.split_once(':') else {
                return Err(format!("header line without a colon: {:?}", truncate(line)));
            };
            let (k, v) = if escapes {
                (unescape(k)?, unescape(v)?)
            } else {
                (k.to_string(), v.to_string())
            };
            headers.push((k, v));
        }
        let body_start = head_len + sep_len;
        let length = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .map(|(_, v)| v.trim().parse::<usize>())
            .transpose()
            .map_err(|_| "content-length is not a number".to_string())?;
        let body_end = match length {
            Some(n) => {
                if n > self.max {
                    return Err(format!("content-length {n} above {} bytes", self.max));
                }
                if self.buf.len() < body_start + n + 1 {
                    return Ok(None);
                }
                if self.buf[body_start + n] != 0 {
                    return Err("the body does not end with NUL at content-length".into());
                }
                body_start + n
            }
            None => match self.buf[body_start..].iter().position(|b| *b == 0) {
                Some(i) => body_start + i,
                None => return Ok(None),
            },
        };
        let body = self.buf[body_start..body_end].to_vec();
        self.buf.drain(..=body_end);
        Ok(Some(StompFrame {
            command,
            headers,
            body,
        }))
    }
}

/// The length of the head and of the blank line after it (`\n\n` or `\r\n\r\n`).
fn find_blank_line(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i < buf.len() {
        if buf[i] == b'\n' {
            let rest = &buf[i + 1..];
            if rest.first() == Some(&b'\n') {
                return Some((i, 2));
            }
            if rest.starts_with(b"\r\n") {
                return Some((i, 3));
            }
        }
        i += 1;
    }
    None
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

/// Encodes a frame (header values escaped when `escapes`).
pub fn encode(command: &str, headers: &[(&str, &str)], body: &str, escapes: bool) -> String {
    let mut out = String::with_capacity(64 + body.len());
    out.push_str(command);
    out.push('\n');
    for (k, v) in headers {
        if escapes {
            out.push_str(&escape(k));
            out.push(':');
            out.push_str(&escape(v));
        } else {
            out.push_str(k);
            out.push(':');
            out.push_str(&v.replace(['\n', '\r'], " "));
        }
        out.push('\n');
    }
    if !body.is_empty() {
        out.push_str("content-length:");
        out.push_str(&body.len().to_string());
        out.push('\n');
    }
    out.push('\n');
    out.push_str(body);
    out.push('\0');
    out
}

/// The STOMP [`Wire`].
pub struct Stomp;
pub static STOMP: Stomp = Stomp;

fn internal(tag: &str, body: &Frame) -> Frame {
    let mut out = String::with_capacity(tag.len() + 2 + body.as_str().len());
    out.push(INTERNAL as char);
    out.push_str(tag);
    out.push('\n');
    out.push_str(body.as_str());
    Frame(Arc::new(Utf8Bytes::from(out)))
}

impl Wire for Stomp {
    fn outgoing(&self, msg: Outgoing<'_>) -> Option<(&'static str, Frame)> {
        let room = match msg {
            Outgoing::Presence { snapshot, .. } => snapshot.room.clone(),
            Outgoing::PresenceCount { room, .. } => room.to_string(),
            Outgoing::Diff(d) => d.room.clone(),
            Outgoing::Event(t) => t.room()?.key.to_string(),
        };
        let (ty, frame) = render::outgoing(msg)?;
        Some((ty, internal(&format!("room:{room}"), &frame)))
    }

    fn reply(&self, reply: Reply<'_>) -> Option<(&'static str, Frame)> {
        let tag = match reply {
            Reply::LockAck { .. } | Reply::UnlockAck { .. } => "ack",
            Reply::StatusSnapshot { .. } | Reply::Status { .. } => "status",
        };
        let (ty, frame) = render::NATIVE.reply(reply)?;
        Some((ty, internal(tag, &frame)))
    }
}

/// What a subscription receives.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Room(RoomKey),
    Status,
    Ack,
    Errors,
}

struct Subscription {
    destination: String,
    target: Target,
    /// `client` / `client-individual`: `MESSAGE`s carry an `ack` header.
    acks: bool,
}

/// The target of a `SUBSCRIBE` destination.
fn target_of(destination: &str) -> Result<Target, String> {
    if let Some(room) = destination.strip_prefix("/topic/room/") {
        return RoomKey::parse(room).map(Target::Room).map_err(|e| e.0);
    }
    if let Some(rest) = destination.strip_prefix("/topic/presence/") {
        let Some((entity, id)) = rest.split_once('/') else {
            return Err("expected /topic/presence/{entity}/{id}".into());
        };
        return RoomKey::from_entity(entity, id)
            .map(Target::Room)
            .map_err(|e| e.0);
    }
    match destination {
        "/user/queue/online-status" | "/queue/online-status" => Ok(Target::Status),
        "/user/queue/ack" | "/queue/ack" => Ok(Target::Ack),
        "/user/queue/errors" | "/queue/errors" => Ok(Target::Errors),
        other => Err(format!("unknown destination {:?}", truncate(other))),
    }
}

/// A room in a `SEND` body: `room`, `roomCode`, `roomId`, or `entity` + `id`.
fn room_of(body: &Value) -> Result<RoomKey, CoreError> {
    let named = ["room", "roomCode", "roomId"]
        .into_iter()
        .find_map(|k| body.get(k).map(|v| (k, v)));
    let room = match named {
        None => None,
        Some((_, Value::String(s))) => Some(s.clone()),
        Some((_, Value::Number(n))) => Some(n.to_string()),
        Some((k, _)) => {
            return Err(CoreError::new(
                ErrorCode::BadRequest,
                format!("field `{k}`: expected a string"),
            ))
        }
    };
    let entity = body
        .get("entity")
        .and_then(Value::as_str)
        .map(str::to_string);
    if room.is_none() && (entity.is_none() || body.get("id").is_none()) {
        return Err(CoreError::new(
            ErrorCode::BadRequest,
            "missing field `room` (or `roomCode`, `roomId`, `entity` + `id`)",
        ));
    }
    RoomAddr {
        room,
        entity,
        id: body.get("id").cloned(),
    }
    .key()
}

fn user_list(body: &Value, max: usize) -> Result<Vec<UserId>, CoreError> {
    let list = body
        .get("userIds")
        .or_else(|| body.get("users"))
        .and_then(Value::as_array)
        .ok_or_else(|| {
            CoreError::new(
                ErrorCode::BadRequest,
                "missing field `userIds` (a list of user ids)",
            )
        })?;
    if list.len() > max {
        return Err(CoreError::new(
            ErrorCode::TooManyWatched,
            format!("at most {max} users per watch"),
        ));
    }
    list.iter()
        .map(|v| {
            v.as_str()
                .and_then(|s| UserId::parse(s).ok())
                .ok_or_else(|| {
                    CoreError::new(
                        ErrorCode::BadRequest,
                        "field `userIds`: user ids are strings of 1-256 characters",
                    )
                })
        })
        .collect()
}

/// What the HTTP upgrade knew about the connection.
pub struct StompContext {
    pub opening: Option<Arc<Opening>>,
    pub deadline: Instant,
    /// A token from the URL (`?token=`, `?access_token=`) or the upgrade's
    /// `Authorization: Bearer`.
    pub pre_token: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// How a frame's handling ends.
enum Flow {
    Continue,
    /// A protocol error: `ERROR` was queued; close with this code.
    Close(u16),
}

struct Conn {
    node: Arc<Node>,
    session: Arc<SessionHandle>,
    link: ConnLink,
    escapes: bool,
    subs: BTreeMap<String, Subscription>,
    next_message: u64,
    limits: Limits,
}

impl Conn {
    fn queue(&self, text: String) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self
            .link
            .tx
            .try_send(Outbound::Frame(Frame(Arc::new(Utf8Bytes::from(text)))))
        {
            metrics::counter!(crate::metrics::SEND_QUEUE_DROPS).increment(1);
            self.link.close(close::SLOW_CONSUMER);
        }
    }

    /// `MESSAGE` frames of `body` for every subscription to `target`.
    fn messages(&mut self, target: &Target, body: &str) -> Vec<String> {
        let mut out = vec![];
        let ids: Vec<String> = self
            .subs
            .iter()
            .filter(|(_, s)| &s.target == target)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.next_message += 1;
            let message_id = format!("{}-{}", self.session.meta.id, self.next_message);
            let sub = &self.subs[&id];
            let mut headers = vec![
                ("destination", sub.destination.as_str()),
                ("subscription", id.as_str()),
                ("message-id", message_id.as_str()),
                ("content-type", "application/json"),
            ];
            if sub.acks {
                headers.push(("ack", message_id.as_str()));
            }
            out.push(encode("MESSAGE", &headers, body, self.escapes));
        }
        out
    }

    /// A Roster error of a `SEND`: a message on `/user/queue/errors`, if the
    /// client listens there (STOMP's `ERROR` would close the connection).
    fn roster_error(&mut self, e: &CoreError, destination: &str) -> Flow {
        metrics::counter!(crate::metrics::ERRORS, "code" => e.code.as_str()).increment(1);
        let body = json!({"type": "ERROR", "code": e.code.as_str(), "message": e.message, "destination": destination})
            .to_string();
        for m in self.messages(&Target::Errors, &body) {
            self.queue(m);
        }
        if e.code != ErrorCode::RateLimited && self.limits.error() {
            self.queue(error_frame(
                "too_many_errors",
                "more than limits.errors_per_minute errors",
                None,
                self.escapes,
            ));
            return Flow::Close(close::TOO_MANY_ERRORS);
        }
        Flow::Continue
    }

    fn fatal(&self, message: &str, detail: &str, receipt: Option<&str>) -> Flow {
        self.queue(error_frame(message, detail, receipt, self.escapes));
        Flow::Close(PROTOCOL_ERROR)
    }

    async fn on_frame(&mut self, f: StompFrame) -> Flow {
        let receipt = f.header("receipt").map(str::to_string);
        let flow = match f.command.as_str() {
            "SEND" => self.send(&f).await,
            "SUBSCRIBE" => self.subscribe(&f).await,
            "UNSUBSCRIBE" => self.unsubscribe(&f).await,
            "ACK" | "NACK" => match f.header("id") {
                Some(_) => Flow::Continue, // presence is never redelivered
                None => self.fatal(
                    "missing header: id",
                    "ACK and NACK need `id`",
                    receipt.as_deref(),
                ),
            },
            "DISCONNECT" => {
                if let Some(r) = &receipt {
                    self.queue(encode("RECEIPT", &[("receipt-id", r)], "", self.escapes));
                }
                self.node
                    .end_session(&self.session.meta.id, LeaveReason::Left)
                    .await;
                return Flow::Close(close::NORMAL);
            }
            "CONNECT" | "STOMP" => {
                self.fatal("already connected", "a second CONNECT", receipt.as_deref())
            }
            "BEGIN" | "COMMIT" | "ABORT" => self.fatal(
                "transactions are not supported",
                "presence messages take effect one by one; send them without `transaction`",
                receipt.as_deref(),
            ),
            other => self.fatal(
                "unknown command",
                &format!("{:?} is not a STOMP client command", truncate(other)),
                receipt.as_deref(),
            ),
        };
        if let (Flow::Continue, Some(r)) = (&flow, &receipt) {
            self.queue(encode("RECEIPT", &[("receipt-id", r)], "", self.escapes));
        }
        flow
    }

    async fn send(&mut self, f: &StompFrame) -> Flow {
        let Some(destination) = f.header("destination").map(str::to_string) else {
            return self.fatal(
                "missing header: destination",
                "SEND needs `destination`",
                f.header("receipt"),
            );
        };
        if !self.limits.take() {
            let e = CoreError::new(
                ErrorCode::RateLimited,
                "too many messages; this one was dropped",
            );
            return self.roster_error(&e, &destination);
        }
        let body: Value = if f.body.iter().all(|b| b.is_ascii_whitespace()) {
            json!({})
        } else {
            match serde_json::from_slice(&f.body) {
                Ok(v @ Value::Object(_)) => v,
                Ok(_) => {
                    let e =
                        CoreError::new(ErrorCode::InvalidJson, "the body must be a JSON object");
                    return self.roster_error(&e, &destination);
                }
                Err(e) => {
                    let e = CoreError::new(ErrorCode::InvalidJson, format!("malformed JSON: {e}"));
                    return self.roster_error(&e, &destination);
                }
            }
        };
        match self.apply(&destination, body).await {
            Ok(flow) => flow,
            Err(e) => self.roster_error(&e, &destination),
        }
    }

    /// A `SEND` to an `/app/…` destination, as the native message it stands for.
    async fn apply(&mut self, destination: &str, body: Value) -> Result<Flow, CoreError> {
        let node = self.node.clone();
        let s = self.session.clone();
        metrics::counter!(crate::metrics::MESSAGES_IN, "type" => "STOMP_SEND").increment(1);
        match destination {
            "/app/heartbeat" | "/app/presence.heartbeat" | "/app/presence/heartbeat" => {
                let latency = body
                    .get("latencyMs")
                    .or_else(|| body.get("latency"))
                    .and_then(Value::as_f64)
                    .filter(|l| l.is_finite() && *l >= 0.0)
                    .map(|l| l as u32);
                let active = body.get("active").and_then(Value::as_bool).unwrap_or(true);
                node.heartbeat(&s, active, latency).await;
            }
            "/app/online-status" => {
                let status = match (
                    body.get("online"),
                    body.get("status").and_then(Value::as_str),
                ) {
                    (Some(Value::Bool(b)), _) => if *b { "online" } else { "offline" }.to_string(),
                    (_, Some(st)) => st.to_ascii_lowercase(),
                    _ => {
                        return Err(CoreError::new(
                            ErrorCode::BadRequest,
                            "expected `online` (true/false) or `status` (online, away, offline)",
                        ))
                    }
                };
                match status.as_str() {
                    "online" => node.set_status(&s, Status::Online).await,
                    "away" => node.set_status(&s, Status::Away).await,
                    // The app stopped: the session ends (like DISCONNECT).
                    "offline" => {
                        node.end_session(&s.meta.id, LeaveReason::Left).await;
                        return Ok(Flow::Close(close::NORMAL));
                    }
                    other => {
                        return Err(CoreError::new(
                            ErrorCode::BadRequest,
                            format!(
                                "field `status`: {:?} is not online, away or offline",
                                truncate(other)
                            ),
                        ))
                    }
                }
            }
            "/app/presence.subscribe" => {
                let users = user_list(&body, node.config.limits.max_watch)?;
                node.watch(&s, users, None).await?;
            }
            "/app/presence.unsubscribe" => {
                let users = user_list(&body, usize::MAX)?;
                node.unwatch(&s, users);
            }
            "/app/presence/hello" => {
                let key = room_of(&body)?;
                let state = body.get("state").cloned();
                node.sub(&s, key.clone(), state, SubMode::List, None)
                    .await?;
                let t = node.timing();
                let ack = json!({
                    "type": "ACK",
                    "room": key,
                    "sessionId": s.meta.id,
                    "heartbeatIntervalMs": t.heartbeat_interval.0.as_millis() as u64,
                    "sessionTimeoutMs": t.session_timeout.0.as_millis() as u64,
                    "ttl": t.session_timeout.0.as_secs(),
                    "serverTime": crate::clock::iso(node.clock.wall_now()),
                })
                .to_string();
                for m in self.messages(&Target::Ack, &ack) {
                    self.queue(m);
                }
            }
            "/app/presence/leave" => {
                if body.as_object().is_some_and(|o| o.is_empty()) {
                    let rooms: Vec<RoomKey> =
                        s.rooms.lock().iter().map(|r| r.key.clone()).collect();
                    for key in rooms {
                        let _ = node.unsub(&s, key).await;
                    }
                } else {
                    node.unsub(&s, room_of(&body)?).await?;
                }
            }
            "/app/presence/state" => {
                let state = body.get("state").cloned().ok_or_else(|| {
                    CoreError::new(ErrorCode::BadRequest, "missing field `state`")
                })?;
                node.set_state(&s, room_of(&body)?, state).await?;
            }
            "/app/presence/emit" => {
                let event = body
                    .get("event")
                    .and_then(Value::as_str)
                    .ok_or_else(|| CoreError::new(ErrorCode::BadRequest, "missing field `event`"))?
                    .to_string();
                let data = body
                    .get("data")
                    .cloned()
                    .ok_or_else(|| CoreError::new(ErrorCode::BadRequest, "missing field `data`"))?;
                node.emit_event(&s, room_of(&body)?, event, data).await?;
            }
            "/app/presence/lock" | "/app/presence/unlock" => {
                let field = body
                    .get("field")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                check_field(&field)?;
                let key = room_of(&body)?;
                if destination.ends_with("/lock") {
                    node.lock(&s, key, &field, None).await?;
                } else {
                    node.unlock(&s, key, &field, None).await?;
                }
            }
            other => {
                return Err(CoreError::new(
                    ErrorCode::UnknownType,
                    format!("unknown destination {:?}", truncate(other)),
                ))
            }
        }
        Ok(Flow::Continue)
    }

    async fn subscribe(&mut self, f: &StompFrame) -> Flow {
        let receipt = f.header("receipt");
        let (Some(id), Some(destination)) = (f.header("id"), f.header("destination")) else {
            return self.fatal(
                "missing header: id or destination",
                "SUBSCRIBE needs `id` and `destination`",
                receipt,
            );
        };
        if self.subs.contains_key(id) {
            return self.fatal(
                "duplicate subscription id",
                &format!("subscription {:?} exists", truncate(id)),
                receipt,
            );
        }
        let target = match target_of(destination) {
            Ok(t) => t,
            Err(why) => {
                let e = CoreError::new(ErrorCode::BadRequest, why);
                return self.roster_error(&e, destination);
            }
        };
        let acks = matches!(f.header("ack"), Some("client" | "client-individual"));
        let (id, destination) = (id.to_string(), destination.to_string());
        self.subs.insert(
            id.clone(),
            Subscription {
                destination: destination.clone(),
                target: target.clone(),
                acks,
            },
        );
        if let Target::Room(key) = target {
            let mode = if f.header("mode") == Some("count") {
                SubMode::Count
            } else {
                SubMode::List
            };
            // A member or not, the subscription gets a fresh PRESENCE.
            if let Err(e) = self.node.sub(&self.session, key, None, mode, None).await {
                self.subs.remove(&id);
                return self.roster_error(&e, &destination);
            }
        }
        Flow::Continue
    }

    async fn unsubscribe(&mut self, f: &StompFrame) -> Flow {
        let Some(id) = f.header("id") else {
            return self.fatal(
                "missing header: id",
                "UNSUBSCRIBE needs `id`",
                f.header("receipt"),
            );
        };
        let Some(sub) = self.subs.remove(id) else {
            return Flow::Continue;
        };
        if let Target::Room(key) = sub.target {
            let still = self
                .subs
                .values()
                .any(|s| s.target == Target::Room(key.clone()));
            if !still {
                let _ = self.node.unsub(&self.session, key).await;
            }
        }
        Flow::Continue
    }

    /// Renders what the wire handed over into `MESSAGE` frames.
    fn on_internal(&mut self, text: &str) -> Vec<String> {
        let Some((tag, body)) = text.split_once('\n') else {
            return vec![];
        };
        if let Some(room) = tag.strip_prefix("room:") {
            let Ok(key) = RoomKey::parse(room) else {
                return vec![];
            };
            return self.messages(&Target::Room(key), body);
        }
        match tag {
            "ack" => self.messages(&Target::Ack, body),
            "status" => {
                let Ok(v) = serde_json::from_str::<Value>(body) else {
                    return vec![];
                };
                let now = crate::clock::iso(self.node.clock.wall_now());
                let one = |user: &str, s: &Value| {
                    json!({
                        "userId": user,
                        "online": s["status"] != "offline",
                        "status": s["status"],
                        "lastSeen": s["lastSeen"],
                        "devices": s["devices"],
                        "timestamp": now,
                    })
                    .to_string()
                };
                let events: Vec<String> = match v["type"].as_str() {
                    Some("STATUS") => vec![one(v["userId"].as_str().unwrap_or_default(), &v)],
                    Some("STATUS_SNAPSHOT") => v["users"]
                        .as_object()
                        .map(|m| m.iter().map(|(u, s)| one(u, s)).collect())
                        .unwrap_or_default(),
                    _ => vec![],
                };
                events
                    .iter()
                    .flat_map(|e| self.messages(&Target::Status, e))
                    .collect()
            }
            _ => vec![],
        }
    }
}

fn error_frame(message: &str, detail: &str, receipt: Option<&str>, escapes: bool) -> String {
    error_frame_with(message, detail, receipt, &[], escapes)
}

/// An `ERROR` frame with headers of its own (`version` when none is shared).
fn error_frame_with(
    message: &str,
    detail: &str,
    receipt: Option<&str>,
    extra: &[(&str, &str)],
    escapes: bool,
) -> String {
    let mut headers = vec![("message", message), ("content-type", "text/plain")];
    headers.extend_from_slice(extra);
    if let Some(r) = receipt {
        headers.push(("receipt-id", r));
    }
    encode("ERROR", &headers, detail, escapes)
}

/// The versions both sides speak, best first.
fn negotiate(accept: Option<&str>) -> Option<&'static str> {
    let offered: Vec<&str> = accept.unwrap_or("1.0").split(',').map(str::trim).collect();
    ["1.2", "1.1"].into_iter().find(|v| offered.contains(v))
}

/// `heart-beat: cx,cy`: two non-negative integers.
fn heart_beat(h: Option<&str>) -> Result<(u64, u64), String> {
    let Some(h) = h else { return Ok((0, 0)) };
    let parts: Vec<&str> = h.split(',').map(str::trim).collect();
    match parts.as_slice() {
        [a, b] => match (a.parse::<u64>(), b.parse::<u64>()) {
            (Ok(a), Ok(b)) => Ok((a, b)),
            _ => Err(format!(
                "heart-beat {h:?}: expected two non-negative integers"
            )),
        },
        _ => Err(format!(
            "heart-beat {h:?}: expected two non-negative integers"
        )),
    }
}

/// The token of a `CONNECT`: `Authorization` (any case, `Bearer ` optional),
/// then `passcode`, then what the upgrade carried.
fn token_of(f: &StompFrame, pre: Option<&String>) -> Option<String> {
    f.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| {
            v.trim()
                .strip_prefix("Bearer ")
                .unwrap_or(v.trim())
                .trim()
                .to_string()
        })
        .or_else(|| f.header("passcode").map(str::to_string))
        .filter(|t| !t.is_empty())
        .or_else(|| pre.cloned())
}

/// Serves one STOMP connection.
pub async fn serve(
    mut ws: Socket,
    mut ctx: StompContext,
    node: Arc<Node>,
    auth: Arc<Authenticator>,
) {
    let cfg = node.config.clone();
    let mut parser = Parser::new(cfg.limits.max_frame_bytes);
    // The opening: CONNECT (or STOMP) by the deadline.
    let connect = loop {
        let next = match tokio::time::timeout_at(ctx.deadline, ws.recv()).await {
            Err(_) => {
                ws.close(close::AUTH).await;
                return;
            }
            Ok(None) => return,
            Ok(Some(Err(ReadError(code)))) => {
                if let Some(code) = code {
                    ws.close(code).await;
                }
                return;
            }
            Ok(Some(Ok(m))) => m,
        };
        let bytes = match &next {
            Incoming::Text(t) => t.as_bytes().to_vec(),
            Incoming::Binary(b) => b.to_vec(),
            Incoming::Close => {
                ws.answer_close().await;
                return;
            }
            _ => continue,
        };
        match parser.push(&bytes) {
            Err(why) => {
                let _ = ws
                    .send_text(&Utf8Bytes::from(error_frame(
                        "malformed frame",
                        &why,
                        None,
                        false,
                    )))
                    .await;
                ws.close(PROTOCOL_ERROR).await;
                return;
            }
            Ok(items) => {
                if let Some(f) = items.into_iter().find_map(|i| match i {
                    Item::Frame(f) => Some(f),
                    Item::HeartBeat => None,
                }) {
                    break f;
                }
            }
        }
    };
    let refuse =
        |message: &str, detail: &str| Utf8Bytes::from(error_frame(message, detail, None, false));
    if connect.command != "CONNECT" && connect.command != "STOMP" {
        let _ = ws
            .send_text(&refuse(
                "not connected",
                "the first frame must be CONNECT or STOMP",
            ))
            .await;
        ws.close(PROTOCOL_ERROR).await;
        return;
    }
    let Some(version) = negotiate(connect.header("accept-version")) else {
        let f = error_frame_with(
            "unsupported version",
            "this server speaks STOMP 1.2 and 1.1",
            None,
            &[("version", "1.2,1.1")],
            false,
        );
        let _ = ws.send_text(&Utf8Bytes::from(f)).await;
        ws.close(PROTOCOL_ERROR).await;
        return;
    };
    let (cx, cy) = match heart_beat(connect.header("heart-beat")) {
        Ok(h) => h,
        Err(why) => {
            let _ = ws.send_text(&refuse("bad heart-beat", &why)).await;
            ws.close(PROTOCOL_ERROR).await;
            return;
        }
    };
    let identity = match token_of(&connect, ctx.pre_token.as_ref()) {
        None => Err(
            "no token: send it in the CONNECT header Authorization: Bearer <jwt>, or as passcode"
                .to_string(),
        ),
        Some(t) => auth.verify(&t).map_err(|e| e.0),
    };
    let identity = match identity {
        Ok(i) => i,
        Err(why) => {
            metrics::counter!(crate::metrics::ERRORS, "code" => "auth_failed").increment(1);
            let _ = ws.send_text(&refuse("auth_failed", &why)).await;
            ws.close(close::AUTH).await;
            return;
        }
    };
    if node.shutting_down.load(Ordering::SeqCst) {
        ws.close(close::GOING_AWAY).await;
        return;
    }
    parser.escapes = version == "1.2";
    let (tx, mut rx) = mpsc::channel(cfg.limits.send_queue);
    let kill = CancellationToken::new();
    let link = ConnLink {
        id: node.next_conn_id(),
        wire: &STOMP,
        tx,
        kill: kill.clone(),
        close_code: Arc::new(AtomicU16::new(0)),
    };
    let info = HelloInfo {
        device: connect.header("device").map(str::to_string),
        os: connect.header("os").map(str::to_string),
        app_version: connect.header("app-version").map(str::to_string),
        client_id: connect.header("client-id").map(str::to_string),
        ip: ctx.ip.take(),
        user_agent: ctx.user_agent.take(),
    };
    let welcome = Box::pin(node.open_session(identity, info, link.clone())).await;
    let _connected = ConnectionGauge::new(&node);
    let Some(session) = node.hub.get(&welcome.session_id) else {
        return;
    };
    if let Some(o) = ctx.opening.take() {
        o.finish();
    }
    // Heart-beats: we send every max(sx, cy), and ask for max(cx, sy).
    let every = cfg.timing.heartbeat_interval.0.as_millis() as u64;
    let beat = format!("{every},{every}");
    let server = concat!("Roster/", env!("CARGO_PKG_VERSION"));
    let connected = encode(
        "CONNECTED",
        &[
            ("version", version),
            ("heart-beat", &beat),
            ("session", welcome.session_id.as_str()),
            ("server", server),
            ("user-name", welcome.user_id.as_str()),
        ],
        "",
        false,
    );
    if !ws.send_text(&Utf8Bytes::from(connected)).await {
        node.connection_lost(&session, link.id);
        return;
    }
    let send_every = (every > 0 && cy > 0).then(|| Duration::from_millis(every.max(cy)));
    let _ = cx;
    let mut conn = Conn {
        node: node.clone(),
        session: session.clone(),
        link: link.clone(),
        escapes: version == "1.2",
        subs: BTreeMap::new(),
        next_message: 0,
        limits: Limits::new(
            cfg.limits.messages_per_second,
            cfg.limits.messages_burst,
            cfg.limits.errors_per_minute,
        ),
    };
    let mut last_sent = Instant::now();
    let mut said_bye = false;
    loop {
        let beat_at = send_every.map(|d| last_sent + d);
        tokio::select! {
            biased;
            _ = kill.cancelled() => {
                let code = link.close_code.load(Ordering::SeqCst);
                let code = if code == 0 { close::GOING_AWAY } else { code };
                Box::pin(async {
                    if code != close::SLOW_CONSUMER {
                        let _ = tokio::time::timeout(Duration::from_secs(1), drain(&mut ws, &mut rx, &mut conn)).await;
                        let e = error_frame(close::reason(code), "the server closed this connection", None, conn.escapes);
                        let _ = ws.send_text(&Utf8Bytes::from(e)).await;
                    }
                    ws.close(code).await;
                })
                .await;
                break;
            }
            _ = sleep_until(beat_at) => {
                if !ws.send_text(&Utf8Bytes::from_static("\n")).await {
                    break;
                }
                last_sent = Instant::now();
            }
            out = rx.recv() => {
                let sent = match out {
                    Some(Outbound::Frame(f)) => {
                        // A STOMP client sees frames, not WebSocket pings.
                        last_sent = Instant::now();
                        Box::pin(write(&mut ws, &mut conn, f)).await
                    }
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
                node.touch(&session);
                let bytes = match msg {
                    Incoming::Text(t) => t.as_bytes().to_vec(),
                    Incoming::Binary(b) => b.to_vec(),
                    Incoming::Pong(payload) => {
                        node.pong(&session, &payload);
                        continue;
                    }
                    Incoming::Ping => continue,
                    Incoming::Close => {
                        Box::pin(ws.answer_close()).await;
                        break;
                    }
                };
                let items = match parser.push(&bytes) {
                    Ok(items) => items,
                    Err(why) => {
                        conn.queue(error_frame("malformed frame", &why, None, conn.escapes));
                        Box::pin(close_after_drain(&mut ws, &mut rx, &mut conn, PROTOCOL_ERROR)).await;
                        break;
                    }
                };
                let mut closing = None;
                for item in items {
                    if let Item::Frame(f) = item {
                        if let Flow::Close(code) = Box::pin(conn.on_frame(f)).await {
                            closing = Some(code);
                            break;
                        }
                    }
                }
                if let Some(code) = closing {
                    said_bye = code == close::NORMAL;
                    Box::pin(close_after_drain(&mut ws, &mut rx, &mut conn, code)).await;
                    break;
                }
            }
        }
    }
    if !said_bye {
        node.connection_lost(&session, link.id);
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

async fn close_after_drain(
    ws: &mut Socket,
    rx: &mut mpsc::Receiver<Outbound>,
    conn: &mut Conn,
    code: u16,
) {
    let _ = tokio::time::timeout(Duration::from_secs(1), drain(ws, rx, conn)).await;
    ws.close(code).await;
}

/// Writes one queued frame: internal ones become this connection's
/// `MESSAGE`s first.
async fn write(ws: &mut Socket, conn: &mut Conn, f: Frame) -> bool {
    let text = f.as_str();
    if text.as_bytes().first() == Some(&INTERNAL) {
        for m in conn.on_internal(&text[1..]) {
            if !ws.send_text(&Utf8Bytes::from(m)).await {
                return false;
            }
        }
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

    fn frames(p: &mut Parser, bytes: &[u8]) -> Vec<Item> {
        p.push(bytes).unwrap()
    }

    #[test]
    fn frames_parse_across_and_within_messages() {
        let mut p = Parser::new(1024);
        p.escapes = true;
        let items = frames(
            &mut p,
            b"\nSEND\ndestination:/topic/room/Order\\c1\n\n{}\0\nSUBSCRIBE\nid:0\n",
        );
        assert_eq!(items.len(), 3, "{items:?}");
        assert_eq!(items[0], Item::HeartBeat);
        let Item::Frame(f) = &items[1] else { panic!() };
        assert_eq!(f.header("destination"), Some("/topic/room/Order:1"));
        assert_eq!(f.body, b"{}");
        let items = frames(&mut p, b"destination:/x\r\n\r\n\0");
        let Item::Frame(f) = &items[0] else { panic!() };
        assert_eq!(
            (f.command.as_str(), f.header("id")),
            ("SUBSCRIBE", Some("0"))
        );
        // content-length lets a body hold NUL.
        let items = frames(&mut p, b"SEND\ncontent-length:3\n\na\0b\0");
        let Item::Frame(f) = &items[0] else { panic!() };
        assert_eq!(f.body, b"a\0b");
        // CONNECT headers are not unescaped.
        let items = frames(&mut p, b"CONNECT\npasscode:a\\cb\n\n\0");
        let Item::Frame(f) = &items[0] else { panic!() };
        assert_eq!(f.header("passcode"), Some("a\\cb"));
    }

    #[test]
    fn broken_frames_are_errors() {
        for bad in [
            &b"send\n\n\0"[..],
            b"SEND\nnocolon\n\n\0",
            b"SEND\nx:\\t\n\n\0",
            b"SEND\ncontent-length:x\n\n\0",
            b"SEND\ncontent-length:1\n\nab\0",
        ] {
            let mut p = Parser::new(1024);
            p.escapes = true;
            assert!(p.push(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let mut p = Parser::new(16);
        assert!(p.push(&[b'A'; 40]).is_err(), "an endless head is bounded");
    }

    #[test]
    fn versions_heart_beats_and_escapes() {
        assert_eq!(negotiate(Some("1.0,1.1,1.2")), Some("1.2"));
        assert_eq!(negotiate(Some("1.1,1.0")), Some("1.1"));
        assert_eq!(negotiate(Some("1.0")), None);
        assert_eq!(negotiate(None), None);
        assert_eq!(heart_beat(Some("10000,0")), Ok((10000, 0)));
        assert_eq!(heart_beat(None), Ok((0, 0)));
        for bad in ["abc", "-1,0", "10000", "1,2,3"] {
            assert!(heart_beat(Some(bad)).is_err(), "{bad}");
        }
        let e = encode(
            "MESSAGE",
            &[("destination", "/topic/room/Order:1")],
            "{}",
            true,
        );
        assert_eq!(
            e,
            "MESSAGE\ndestination:/topic/room/Order\\c1\ncontent-length:2\n\n{}\0"
        );
        assert_eq!(unescape(&escape("a:b\\c\nd")).unwrap(), "a:b\\c\nd");
    }
}
