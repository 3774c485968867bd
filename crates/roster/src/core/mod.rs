//! The presence core: pure state and transitions, no I/O. Nothing in here imports
//! axum, sockets, databases or Redis; time comes in as arguments.

pub mod diff;
pub mod error;
pub mod expiry;
pub mod outgoing;
pub mod room;
pub mod room_type;
pub mod session;
pub mod transition;
pub mod types;
