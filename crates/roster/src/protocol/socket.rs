//! The WebSocket transport under every protocol adapter: the HTTP upgrade
//! (validated by hand on top of hyper, so we own the stream) and a [`Socket`] that
//! reads messages and writes text without holding large buffers while idle.
//!
//! Why not axum's `WebSocket`: tungstenite keeps its write buffer at the size of
//! the largest frame ever sent, so one 200 KiB snapshot pins 200 KiB for the life
//! of the connection. Here a long message goes out as fragments of at most
//! [`FRAGMENT`] bytes (RFC 6455 §5.4), which bounds what an idle connection keeps.
//!
//! Every close goes through [`Socket::close`], the closing handshake: a socket is
//! never dropped with the peer's frames unread while we still owe it a close code.

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame as WsFrame;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use crate::core::error::ErrorCode;
use crate::node::hub::close;

/// Largest frame we write; longer text goes out in fragments of this size.
pub const FRAGMENT: usize = 1024;
/// Initial read buffer: client messages are small; it grows for a large one.
const READ_BUFFER: usize = 512;
/// The most a close may take: our close frame out, the peer's close frame (or EOF)
/// back. Past it the socket is dropped anyway (a peer that stopped reading).
pub const CLOSE_HANDSHAKE: Duration = Duration::from_secs(1);

pub type Io = TokioIo<hyper::upgrade::Upgraded>;

/// What the peer sent.
pub enum Incoming {
    Text(Utf8Bytes),
    Binary(Bytes),
    Pong(Bytes),
    Ping,
    Close,
}

/// The end of reading: the close code we owe the peer, if any (1009 too large,
/// 1007 bad UTF-8), or none when the connection is simply gone.
pub struct ReadError(pub Option<u16>);

pub struct Socket {
    ws: WebSocketStream<Io>,
}

impl Socket {
    pub async fn recv(&mut self) -> Option<Result<Incoming, ReadError>> {
        Some(match self.ws.next().await? {
            Ok(Message::Text(t)) => Ok(Incoming::Text(t)),
            Ok(Message::Binary(b)) => Ok(Incoming::Binary(b)),
            Ok(Message::Pong(p)) => Ok(Incoming::Pong(p)),
            Ok(Message::Ping(_)) => Ok(Incoming::Ping),
            Ok(Message::Close(_)) => Ok(Incoming::Close),
            Ok(Message::Frame(_)) => Ok(Incoming::Ping), // never produced when reading
            Err(tungstenite::Error::Capacity(_)) => Err(ReadError(Some(close::TOO_BIG))),
            Err(tungstenite::Error::Utf8(_)) => Err(ReadError(Some(close::BAD_DATA))),
            Err(_) => Err(ReadError(None)),
        })
    }

    /// Writes one text message, fragmented above [`FRAGMENT`] bytes (cut on UTF-8
    /// character boundaries). False when the connection is gone.
    pub async fn send_text(&mut self, text: &Utf8Bytes) -> bool {
        if text.len() <= FRAGMENT {
            return self.ws.send(Message::Text(text.clone())).await.is_ok();
        }
        let s = text.as_str();
        let bytes = Bytes::from(text.clone());
        let mut start = 0;
        while start < s.len() {
            let mut end = (start + FRAGMENT).min(s.len());
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            let opcode = if start == 0 {
                OpCode::Data(Data::Text)
            } else {
                OpCode::Data(Data::Continue)
            };
            let frame = WsFrame::message(bytes.slice(start..end), opcode, end == s.len());
            if self.ws.send(Message::Frame(frame)).await.is_err() {
                return false;
            }
            start = end;
        }
        true
    }

    pub async fn ping(&mut self, payload: Vec<u8>) -> bool {
        self.ws.send(Message::Ping(payload.into())).await.is_ok()
    }

    /// Closes the connection with `code`: the closing handshake of RFC 6455 §7.1.1,
    /// the one way this server ends a WebSocket (every close code goes through here).
    ///
    /// The close frame goes out, then whatever the peer sent before it saw that
    /// frame is read and dropped, until its own close frame or EOF. Dropping the
    /// socket with client frames still unread makes the kernel answer with a reset,
    /// which can destroy the close frame on its way: the peer would see 1006 instead
    /// of `code`. The whole exchange is bounded by [`CLOSE_HANDSHAKE`].
    pub async fn close(&mut self, code: u16) {
        let deadline = Instant::now() + CLOSE_HANDSHAKE;
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: close::reason(code).into(),
        };
        let sent = tokio::time::timeout_at(deadline, self.ws.send(Message::Close(Some(frame))));
        if !matches!(sent.await, Ok(Ok(()))) {
            return;
        }
        let _ = tokio::time::timeout_at(deadline, self.discard_until_closed()).await;
    }

    async fn discard_until_closed(&mut self) {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Close(_))) | None => return,
                Some(Ok(_)) => {}
                // What follows can't be parsed as frames (too large, bad UTF-8, a
                // protocol error): read it as bytes until the peer hangs up.
                Some(Err(
                    tungstenite::Error::Capacity(_)
                    | tungstenite::Error::Utf8(_)
                    | tungstenite::Error::Protocol(_),
                )) => break,
                Some(Err(_)) => return,
            }
        }
        let mut buf = [0u8; 512];
        while matches!(self.ws.get_mut().read(&mut buf).await, Ok(n) if n > 0) {}
    }

    /// Answers the peer's close frame (tungstenite queued the reply when it read
    /// the frame; it goes out on the next write or flush).
    pub async fn answer_close(&mut self) {
        let _ = tokio::time::timeout(CLOSE_HANDSHAKE, self.ws.flush()).await;
    }
}

/// Validates a WebSocket upgrade request and answers `101`, handing the upgraded
/// connection to `serve` on a task of its own; or answers why not.
/// The upgrade itself must complete by `deadline` (the end of the opening).
pub fn upgrade<F, Fut>(
    req: Request,
    max_frame_bytes: usize,
    deadline: Instant,
    serve: F,
) -> Response
where
    F: FnOnce(Socket) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    upgrade_with(req, max_frame_bytes, deadline, None, serve)
}

/// [`upgrade`], answering `Sec-WebSocket-Protocol: subprotocol` (one the client
/// offered: browsers and Node's `ws` fail a handshake that picks none).
pub fn upgrade_with<F, Fut>(
    mut req: Request,
    max_frame_bytes: usize,
    deadline: Instant,
    subprotocol: Option<&'static str>,
    serve: F,
) -> Response
where
    F: FnOnce(Socket) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let key = match check_handshake(req.headers()) {
        Ok(key) => key,
        Err(resp) => return *resp,
    };
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "this connection cannot be upgraded",
        );
    };
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(FRAGMENT * 64 + max_frame_bytes)
        .max_message_size(Some(max_frame_bytes))
        .max_frame_size(Some(max_frame_bytes));
    let fut = async move {
        match tokio::time::timeout_at(deadline, on_upgrade).await {
            Err(_) => tracing::debug!("websocket upgrade not complete by the end of the opening"),
            Ok(Err(e)) => tracing::debug!("websocket upgrade failed: {e}"),
            Ok(Ok(upgraded)) => {
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                serve(Socket { ws }).await;
            }
        }
    };
    tokio::spawn(fut);
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(p) = subprotocol {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(p));
    }
    resp
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn check_handshake(headers: &HeaderMap) -> Result<String, Box<Response>> {
    if !has_token(headers, header::CONNECTION, "upgrade")
        || !has_token(headers, header::UPGRADE, "websocket")
    {
        return Err(Box::new(refuse(
            StatusCode::BAD_REQUEST,
            "expected a WebSocket upgrade (Connection: upgrade, Upgrade: websocket)",
        )));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .and_then(|v| v.to_str().ok())
        != Some("13")
    {
        let mut resp = refuse(
            StatusCode::UPGRADE_REQUIRED,
            "Sec-WebSocket-Version must be 13",
        );
        resp.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return Err(Box::new(resp));
    }
    match headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
    {
        Some(k) if !k.is_empty() => Ok(k.to_string()),
        _ => Err(Box::new(refuse(
            StatusCode::BAD_REQUEST,
            "missing Sec-WebSocket-Key",
        ))),
    }
}

fn refuse(status: StatusCode, message: &str) -> Response {
    let body =
        serde_json::json!({"error": {"code": ErrorCode::BadRequest.as_str(), "message": message}});
    (status, axum::Json(body)).into_response()
}
