//! The one error type of the client layer. Server-side protocol errors (`ERROR`
//! replies) keep their stable wire `code`, so tests can match on it.

use tokio_tungstenite::tungstenite;

/// Everything that can go wrong talking to a Roster server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL (or the request built from it) is not usable.
    #[error("invalid url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// The server answered the upgrade request with an HTTP status instead of `101`.
    #[error("websocket upgrade rejected with HTTP {status}: {body}")]
    Rejected { status: u16, body: String },
    /// TCP / TLS / WebSocket failure while connecting or sending.
    #[error("websocket error: {0}")]
    WebSocket(#[from] tungstenite::Error),
    /// Nothing matching arrived in time.
    #[error("timed out waiting for the server")]
    Timeout,
    /// The connection closed (close frame received, or the socket dropped: `code` is
    /// `None` then).
    #[error("connection closed (code {code:?}, reason {reason:?})")]
    Closed { code: Option<u16>, reason: String },
    /// The server answered our request with `ERROR {code, message}`.
    #[error("server error {code}: {message}")]
    Server { code: String, message: String },
    /// The server sent something the protocol does not allow (binary frame, non-JSON text).
    #[error("protocol violation by the server: {0}")]
    Protocol(String),
    /// The caller passed a message that is not a JSON object.
    #[error("message must be a JSON object, got {0}")]
    NotAnObject(String),
}
