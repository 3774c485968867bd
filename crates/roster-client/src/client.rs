//! [`Client`]: one WebSocket connection to a Roster server.
//!
//! A background reader task turns frames into [`Incoming`] events on an unbounded
//! queue (so it also answers the server's pings: tungstenite queues the pong while
//! reading and flushes it on the next read). [`Client::freeze`] stops that task from
//! polling the socket at all, so the server sees total silence, like a dead network
//! path. Replies are matched by `ref`; anything else that arrives while waiting for a
//! reply is kept in an in-order buffer that later `recv` calls return first.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Mutex};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::{ClientError, ConnectOptions, Hello};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Default time `hello`, `sub` and `bye` wait for their reply.
const DEFAULT_REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// One event read from the socket.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A JSON text frame.
    Message(Value),
    /// The connection ended: a close frame (`code` set) or the socket dropped (`None`).
    Closed { code: Option<u16>, reason: String },
}

/// What the reader task hands over; a protocol violation is reported, not swallowed.
enum Event {
    Message(Value),
    Violation(String),
    Closed { code: Option<u16>, reason: String },
}

/// A connection to a Roster server (see the module docs).
pub struct Client {
    sink: Mutex<SplitSink<Socket, Message>>,
    events: mpsc::UnboundedReceiver<Event>,
    /// Messages received while waiting for a reply, returned by later `recv` calls.
    buffered: VecDeque<Value>,
    /// Set once the close has been seen; every later `recv` reports it again.
    closed: Option<(Option<u16>, String)>,
    frozen: watch::Sender<bool>,
    reader: JoinHandle<()>,
    next_ref: u64,
    reply_timeout: Duration,
    session_id: Option<String>,
}

impl Drop for Client {
    fn drop(&mut self) {
        // Dropping the reader drops its half of the socket: the TCP connection ends
        // without a close frame (an abrupt disconnect), unless `close`/`bye` ran first.
        self.reader.abort();
    }
}

impl Client {
    /// Opens the socket (TCP_NODELAY on) and starts the reader task.
    pub async fn connect(opts: ConnectOptions) -> Result<Client, ClientError> {
        let url = with_token(&opts.url, opts.token.as_deref());
        let invalid = |reason: String| ClientError::InvalidUrl {
            url: url.clone(),
            reason,
        };
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| invalid(e.to_string()))?;
        let headers = request.headers_mut();
        if let Some(bearer) = &opts.bearer {
            let v = HeaderValue::from_str(&format!("Bearer {bearer}"))
                .map_err(|e| invalid(format!("bearer token is not a valid header: {e}")))?;
            headers.insert("authorization", v);
        }
        if let Some(ua) = &opts.user_agent {
            let v = HeaderValue::from_str(ua)
                .map_err(|e| invalid(format!("user agent is not a valid header: {e}")))?;
            headers.insert("user-agent", v);
        }
        let (socket, _response) =
            match tokio_tungstenite::connect_async_with_config(request, None, true).await {
                Ok(ok) => ok,
                Err(tungstenite::Error::Http(response)) => {
                    let status = response.status().as_u16();
                    let body = response
                        .body()
                        .as_deref()
                        .map(|b| String::from_utf8_lossy(b).into_owned())
                        .unwrap_or_default();
                    return Err(ClientError::Rejected { status, body });
                }
                Err(e) => return Err(e.into()),
            };
        let (sink, stream) = socket.split();
        let (tx, events) = mpsc::unbounded_channel();
        let (frozen, frozen_rx) = watch::channel(false);
        let reader = tokio::spawn(read_frames(stream, tx, frozen_rx));
        Ok(Client {
            sink: Mutex::new(sink),
            events,
            buffered: VecDeque::new(),
            closed: None,
            frozen,
            reader,
            next_ref: 0,
            reply_timeout: DEFAULT_REPLY_TIMEOUT,
            session_id: None,
        })
    }

    /// `connect` with no token, bearer or user agent.
    pub async fn connect_url(url: &str) -> Result<Client, ClientError> {
        Self::connect(ConnectOptions::new(url)).await
    }

    /// How long `hello`, `sub` and `bye` wait (default 10 s).
    pub fn set_reply_timeout(&mut self, timeout: Duration) {
        self.reply_timeout = timeout;
    }

    /// The `sessionId` from the last `WELCOME` seen by [`Client::hello`].
    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    /// Sends one JSON text frame.
    pub async fn send(&self, msg: Value) -> Result<(), ClientError> {
        self.send_message(Message::text(msg.to_string())).await
    }

    /// Sends a raw text frame (need not be JSON).
    pub async fn send_text(&self, s: &str) -> Result<(), ClientError> {
        self.send_message(Message::text(s)).await
    }

    /// Sends a raw binary frame (the protocol forbids them: the server closes 1003).
    pub async fn send_binary(&self, b: Vec<u8>) -> Result<(), ClientError> {
        self.send_message(Message::binary(b)).await
    }

    /// Sends any frame, including pings and close frames with a chosen code.
    pub async fn send_message(&self, msg: Message) -> Result<(), ClientError> {
        let mut sink = self.sink.lock().await;
        sink.send(msg).await?;
        Ok(())
    }

    /// Stops reading the socket entirely: no pongs, no close replies, nothing. The
    /// server sees a silent peer. Events already read stay available to `recv`.
    pub fn freeze(&mut self) {
        self.frozen.send_replace(true);
    }

    /// Undoes [`Client::freeze`]: the reader polls the socket again.
    pub fn thaw(&mut self) {
        self.frozen.send_replace(false);
    }

    /// Takes every message buffered while waiting for replies (oldest first).
    pub fn take_buffered(&mut self) -> Vec<Value> {
        self.buffered.drain(..).collect()
    }

    /// The next message (buffered ones first) or the close; `Timeout` if none in time.
    /// After the close it keeps returning the same `Incoming::Closed`.
    pub async fn recv(&mut self, timeout: Duration) -> Result<Incoming, ClientError> {
        self.recv_until(Instant::now() + timeout).await
    }

    /// The next message of type `ty`; other messages are dropped. A close is
    /// `ClientError::Closed` with its code.
    pub async fn recv_type(&mut self, ty: &str, timeout: Duration) -> Result<Value, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.recv_until(deadline).await? {
                Incoming::Message(m) if type_of(&m) == Some(ty) => return Ok(m),
                Incoming::Message(_) => {}
                Incoming::Closed { code, reason } => {
                    return Err(ClientError::Closed { code, reason })
                }
            }
        }
    }

    /// Skips messages until the connection closes; returns the close code (`None`
    /// when the socket dropped without a close frame).
    pub async fn expect_close(&mut self, timeout: Duration) -> Result<Option<u16>, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Incoming::Closed { code, .. } = self.recv_until(deadline).await? {
                return Ok(code);
            }
        }
    }

    /// Sends `HELLO` and waits for `WELCOME` (remembering its `sessionId`).
    pub async fn hello(&mut self, h: Hello) -> Result<Value, ClientError> {
        let welcome = self
            .request(h.to_message(), "WELCOME", self.reply_timeout)
            .await?;
        self.session_id = welcome
            .get("sessionId")
            .and_then(Value::as_str)
            .map(str::to_owned);
        Ok(welcome)
    }

    /// Sends `SUB {room, state?}` and waits for the `PRESENCE` of that room.
    pub async fn sub(&mut self, room: &str, state: Option<Value>) -> Result<Value, ClientError> {
        let mut msg = serde_json::json!({"type": "SUB", "room": room});
        if let Some(state) = state {
            msg["state"] = state;
        }
        let r = self.stamp_ref(&mut msg)?;
        self.send(msg).await?;
        let deadline = Instant::now() + self.reply_timeout;
        self.await_reply(&r, deadline, |m| {
            type_of(m) == Some("PRESENCE")
                && m.get("room").and_then(Value::as_str) == Some(room)
                && m.get("ref").is_none_or(|got| *got == r)
        })
        .await
    }

    /// Adds a unique `ref` to `msg`, sends it and waits for a `reply_type` message
    /// echoing that `ref`. An `ERROR` with the `ref` is `ClientError::Server`. Other
    /// messages that arrive meanwhile are buffered for later `recv` calls.
    pub async fn request(
        &mut self,
        mut msg: Value,
        reply_type: &str,
        timeout: Duration,
    ) -> Result<Value, ClientError> {
        let r = self.stamp_ref(&mut msg)?;
        self.send(msg).await?;
        let deadline = Instant::now() + timeout;
        self.await_reply(&r, deadline, |m| {
            type_of(m) == Some(reply_type) && m.get("ref") == Some(&r)
        })
        .await
    }

    /// Sends `BYE` and waits for the server to close; returns the close code
    /// (the spec says 1000).
    pub async fn bye(&mut self) -> Result<Option<u16>, ClientError> {
        self.send(serde_json::json!({"type": "BYE"})).await?;
        self.expect_close(self.reply_timeout).await
    }

    /// Closes with code 1000 and waits (up to 2 s) for the server's close reply.
    pub async fn close(mut self) {
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        if self.send_message(Message::Close(Some(frame))).await.is_ok() {
            let _ = self.expect_close(Duration::from_secs(2)).await;
        }
    }

    fn stamp_ref(&mut self, msg: &mut Value) -> Result<Value, ClientError> {
        let Some(obj) = msg.as_object_mut() else {
            return Err(ClientError::NotAnObject(msg.to_string()));
        };
        self.next_ref += 1;
        let r = Value::from(format!("c{}", self.next_ref));
        obj.insert("ref".into(), r.clone());
        Ok(r)
    }

    /// Reads from the socket (not the buffer: a fresh `ref` cannot be in it) until a
    /// message satisfies `is_reply`, or an `ERROR` carries `r`.
    async fn await_reply(
        &mut self,
        r: &Value,
        deadline: Instant,
        is_reply: impl Fn(&Value) -> bool,
    ) -> Result<Value, ClientError> {
        loop {
            match self.next_event(deadline).await? {
                Incoming::Message(m) if is_reply(&m) => return Ok(m),
                Incoming::Message(m) if type_of(&m) == Some("ERROR") && m.get("ref") == Some(r) => {
                    let field = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
                    return Err(ClientError::Server {
                        code: field("code"),
                        message: field("message"),
                    });
                }
                Incoming::Message(m) => self.buffered.push_back(m),
                Incoming::Closed { code, reason } => {
                    return Err(ClientError::Closed { code, reason })
                }
            }
        }
    }

    async fn recv_until(&mut self, deadline: Instant) -> Result<Incoming, ClientError> {
        if let Some(m) = self.buffered.pop_front() {
            return Ok(Incoming::Message(m));
        }
        self.next_event(deadline).await
    }

    /// The next event from the reader task, skipping the buffer.
    async fn next_event(&mut self, deadline: Instant) -> Result<Incoming, ClientError> {
        if let Some((code, reason)) = &self.closed {
            return Ok(Incoming::Closed {
                code: *code,
                reason: reason.clone(),
            });
        }
        let event = match tokio::time::timeout_at(deadline, self.events.recv()).await {
            Err(_elapsed) => return Err(ClientError::Timeout),
            Ok(Some(event)) => event,
            Ok(None) => Event::Closed {
                code: None,
                reason: "reader stopped".into(),
            },
        };
        match event {
            Event::Message(m) => Ok(Incoming::Message(m)),
            Event::Violation(what) => Err(ClientError::Protocol(what)),
            Event::Closed { code, reason } => {
                self.closed = Some((code, reason.clone()));
                Ok(Incoming::Closed { code, reason })
            }
        }
    }
}

fn type_of(m: &Value) -> Option<&str> {
    m.get("type").and_then(Value::as_str)
}

fn with_token(url: &str, token: Option<&str>) -> String {
    match token {
        None => url.to_owned(),
        Some(t) => {
            let sep = if url.contains('?') { '&' } else { '?' };
            format!("{url}{sep}token={}", percent_encode(t))
        }
    }
}

/// Percent-encodes everything outside the URL-safe unreserved set (JWTs are already
/// URL-safe, but a test may pass anything).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The reader task: frames → events, until the socket ends. While frozen it does not
/// poll the socket at all.
async fn read_frames(
    mut stream: SplitStream<Socket>,
    tx: mpsc::UnboundedSender<Event>,
    mut frozen: watch::Receiver<bool>,
) {
    loop {
        if *frozen.borrow_and_update() {
            // Wait for a thaw; the sender lives in the Client, so an error means it is gone.
            if frozen.changed().await.is_err() {
                return;
            }
            continue;
        }
        let frame = tokio::select! {
            biased;
            changed = frozen.changed() => {
                if changed.is_err() { return; }
                continue;
            }
            frame = stream.next() => frame,
        };
        let event = match frame {
            Some(Ok(Message::Text(text))) => match serde_json::from_str::<Value>(text.as_str()) {
                Ok(v) => Event::Message(v),
                Err(e) => {
                    Event::Violation(format!("text frame is not JSON ({e}): {}", text.as_str()))
                }
            },
            Some(Ok(Message::Binary(b))) => {
                Event::Violation(format!("binary frame of {} bytes", b.len()))
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Ok(Message::Close(frame))) => Event::Closed {
                code: frame.as_ref().map(|f| u16::from(f.code)),
                reason: frame.map(|f| f.reason.to_string()).unwrap_or_default(),
            },
            Some(Err(e)) => Event::Closed {
                code: None,
                reason: e.to_string(),
            },
            None => Event::Closed {
                code: None,
                reason: "connection ended".into(),
            },
        };
        let end = matches!(event, Event::Closed { .. });
        if tx.send(event).is_err() || end {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_appended_to_the_query() {
        assert_eq!(
            with_token("ws://h/ws", Some("a.b_c")),
            "ws://h/ws?token=a.b_c"
        );
        assert_eq!(
            with_token("ws://h/ws?x=1", Some("a b")),
            "ws://h/ws?x=1&token=a%20b"
        );
        assert_eq!(with_token("ws://h/ws", None), "ws://h/ws");
    }

    #[test]
    fn hello_leaves_out_absent_fields() {
        let h = Hello {
            token: Some("t".into()),
            client_id: Some("c1".into()),
            ..Hello::default()
        };
        assert_eq!(
            h.to_message(),
            serde_json::json!({"type": "HELLO", "token": "t", "clientId": "c1"})
        );
    }
}
