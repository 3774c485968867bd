//! `roster-client`: a small Rust client of Roster's native WebSocket protocol (SPEC §3).
//!
//! It exists for the server's integration tests and for `roster-bench`: it speaks the
//! wire format literally (JSON `serde_json::Value`s, no typed message model), so a test
//! can send exactly what a buggy or hostile client would. It owns one socket per
//! [`Client`]; a background task reads frames into a queue and answers pings (unless
//! the client is [frozen](Client::freeze)). [`RoomView`] is a pure model of one room's
//! roster that applies `PRESENCE` snapshots and `PRESENCE_DIFF`s, to check convergence.
//!
//! It must never panic on what the server sends: every surprise is a [`ClientError`].

mod client;
mod error;
mod options;
mod room_view;

pub use client::{Client, Incoming};
pub use error::ClientError;
pub use options::{ConnectOptions, Hello};
pub use room_view::{GapError, Member, RoomView, ViewError};

/// Re-exported so callers can build raw frames for [`Client::send_message`].
pub use tokio_tungstenite::tungstenite::Message;
