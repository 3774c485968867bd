//! Roster: a self-hosted, real-time presence server.
//!
//! Where things are: a presence change enters through `protocol` (WebSocket) or
//! `http::api` (REST), is decided in `node` using the pure rules of `core`, is
//! stored through the `engine` interface, and goes out through the node's `Hub`
//! (per-connection send queues). See docs/ARCHITECTURE.md.

pub mod alerts;
pub mod auth;
pub mod clock;
pub mod config;
pub mod core;
pub mod engine;
pub mod events;
pub mod frame;
pub mod http;
pub mod ids;
pub mod journal;
pub mod kafka;
pub mod metrics;
pub mod node;
pub mod protocol;
pub mod server;
pub mod store;
