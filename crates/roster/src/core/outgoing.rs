//! What a session is sent, as data: a snapshot, a count, a diff, or a room
//! event. The engines hand it to the node (`engine::Outbox`); each
//! connection's protocol renders it (`node::hub::Wire`), once per protocol,
//! whatever the number of recipients. No wire text here.

use serde_json::Value;

use super::room::{PresenceDiff, PresenceSnapshot};
use super::transition::Transition;

#[derive(Clone, Copy)]
pub enum Outgoing<'a> {
    Presence {
        snapshot: &'a PresenceSnapshot,
        reply_ref: Option<&'a Value>,
    },
    PresenceCount {
        room: &'a str,
        count: usize,
        seq: u64,
        reply_ref: Option<&'a Value>,
    },
    Diff(&'a PresenceDiff),
    /// A lock or entity transition of the room ([`Transition::is_room_event`]),
    /// rendered by each protocol.
    Event(&'a Transition),
}
