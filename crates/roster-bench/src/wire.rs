//! Lean raw sockets for thousands of bench sessions: tokio-tungstenite with small
//! buffers (4 KiB reads, unbuffered writes) and TCP_NODELAY, plus the HELLO → WELCOME
//! (→ SUB → PRESENCE) opening. `roster-client` is used where a few rich clients suffice
//! (locks); here one task per socket and no per-session queue keeps the bench's own
//! footprint and CPU low.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub(crate) fn lean_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

/// A session after its opening handshake.
pub struct Opened {
    pub ws: Ws,
}

/// Connects, sends `HELLO {token, clientId}`, waits `WELCOME`, sends `SUB {room}` and
/// waits for that room's `PRESENCE`. Messages in between are skipped. Errors name the
/// step and the server's error code or close code.
pub async fn open_session(
    url: &str,
    token: &str,
    client_id: &str,
    room: &str,
    timeout: Duration,
) -> Result<Opened, String> {
    let fut = async {
        let mut ws = hello(url, token, client_id).await?;
        let sub = json!({"type": "SUB", "ref": "s", "room": room});
        send_json(&mut ws, &sub)
            .await
            .map_err(|e| format!("SUB: {e}"))?;
        await_type(&mut ws, "PRESENCE", Some(room))
            .await
            .map_err(|e| format!("SUB {room}: {e}"))?;
        Ok(Opened { ws })
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| format!("no WELCOME/PRESENCE within {timeout:?}"))?
}

/// Connects and sends `HELLO`; returns once the server answered `WELCOME` (a session
/// in no room).
pub async fn open_hello(
    url: &str,
    token: &str,
    client_id: &str,
    timeout: Duration,
) -> Result<Ws, String> {
    tokio::time::timeout(timeout, hello(url, token, client_id))
        .await
        .map_err(|_| format!("no WELCOME within {timeout:?}"))?
}

async fn hello(url: &str, token: &str, client_id: &str) -> Result<Ws, String> {
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(lean_config()), true)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let hello = json!({"type": "HELLO", "ref": "h", "token": token, "clientId": client_id, "device": "desktop"});
    send_json(&mut ws, &hello)
        .await
        .map_err(|e| format!("HELLO: {e}"))?;
    await_type(&mut ws, "WELCOME", None)
        .await
        .map_err(|e| format!("HELLO: {e}"))?;
    Ok(ws)
}

pub async fn send_json(ws: &mut Ws, v: &Value) -> Result<(), String> {
    ws.send(Message::text(v.to_string()))
        .await
        .map_err(|e| e.to_string())
}

/// Reads until a message of type `ty` (for `room`, if given); an `ERROR` or a close
/// ends the wait with an error.
pub(crate) async fn await_type(ws: &mut Ws, ty: &str, room: Option<&str>) -> Result<Value, String> {
    loop {
        let frame = match ws.next().await {
            None => return Err("connection ended".into()),
            Some(Err(e)) => return Err(e.to_string()),
            Some(Ok(frame)) => frame,
        };
        match frame {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(t.as_str())
                    .map_err(|e| format!("server sent non-JSON: {e}"))?;
                let got = v.get("type").and_then(Value::as_str);
                if got == Some("ERROR") {
                    return Err(format!(
                        "server error {}: {}",
                        v.get("code").and_then(Value::as_str).unwrap_or("?"),
                        v.get("message").and_then(Value::as_str).unwrap_or("")
                    ));
                }
                if got == Some(ty)
                    && room.is_none_or(|r| v.get("room").and_then(Value::as_str) == Some(r))
                {
                    return Ok(v);
                }
            }
            Message::Close(frame) => {
                let code = frame.as_ref().map(|f| u16::from(f.code));
                let reason = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                return Err(format!(
                    "closed by the server (code {code:?}, reason {reason:?})"
                ));
            }
            _ => {}
        }
    }
}
