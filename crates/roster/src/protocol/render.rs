//! The native protocol's server messages rendered from data: what the engines
//! deliver ([`Outgoing`]: snapshots, counts, diffs, and lock/entity
//! transitions) and what the node replies to one session ([`Reply`]: lock acks,
//! watch status). This is the native [`Wire`]; the hub renders once per
//! delivery, whatever the number of recipients (encode once). Another protocol
//! renders the same data in a file of its own.

use serde_json::json;

use crate::clock::iso;
use crate::core::outgoing::Outgoing;
use crate::core::transition::{LockRelease, Transition};
use crate::frame::Frame;
use crate::node::hub::{Reply, Wire};

/// The native protocol's [`Wire`].
pub struct Native;
pub static NATIVE: Native = Native;

impl Wire for Native {
    fn outgoing(&self, msg: Outgoing<'_>) -> Option<(&'static str, Frame)> {
        outgoing(msg)
    }

    fn reply(&self, reply: Reply<'_>) -> Option<(&'static str, Frame)> {
        Some(match reply {
            Reply::LockAck {
                room,
                field,
                success,
                owner,
                reply_ref,
            } => {
                let body = json!({"room": room, "field": field, "success": success, "owner": owner, "expiresAt": owner.expires_at});
                ("LOCK_ACK", Frame::encode("LOCK_ACK", &body, reply_ref))
            }
            Reply::UnlockAck {
                room,
                field,
                success,
                reply_ref,
            } => {
                let body = json!({"room": room, "field": field, "success": success});
                ("UNLOCK_ACK", Frame::encode("UNLOCK_ACK", &body, reply_ref))
            }
            Reply::StatusSnapshot { users, reply_ref } => (
                "STATUS_SNAPSHOT",
                Frame::encode("STATUS_SNAPSHOT", &json!({ "users": users }), reply_ref),
            ),
            Reply::Status { user, view } => {
                let body = json!({"userId": user, "status": view.status, "lastSeen": view.last_seen, "devices": view.devices});
                ("STATUS", Frame::encode("STATUS", &body, None))
            }
        })
    }
}

/// The message type and the frame for one delivery; `None` for a transition
/// that members do not get as an event of its own.
pub fn outgoing(msg: Outgoing<'_>) -> Option<(&'static str, Frame)> {
    Some(match msg {
        Outgoing::Presence {
            snapshot,
            reply_ref,
        } => ("PRESENCE", Frame::encode("PRESENCE", snapshot, reply_ref)),
        Outgoing::PresenceCount {
            room,
            count,
            seq,
            reply_ref,
        } => (
            "PRESENCE_COUNT",
            Frame::encode(
                "PRESENCE_COUNT",
                &json!({"room": room, "count": count, "seq": seq}),
                reply_ref,
            ),
        ),
        Outgoing::Diff(d) => ("PRESENCE_DIFF", Frame::encode("PRESENCE_DIFF", d, None)),
        Outgoing::Event(t) => return event(t),
    })
}

/// `LOCK`, `ENTITY` and `EVENT` (PROTOCOL §10, §11, §12).
pub fn event(t: &Transition) -> Option<(&'static str, Frame)> {
    match t {
        Transition::LockAcquired {
            room,
            field,
            user,
            session,
            expires_at,
        } => {
            let owner =
                json!({"userId": user, "sessionId": session, "expiresAt": iso(*expires_at)});
            let body = json!({"room": room.key, "field": field, "owner": owner});
            Some(("LOCK", Frame::encode("LOCK", &body, None)))
        }
        Transition::LockReleased {
            room,
            field,
            reason,
            ..
        } => {
            let reason = match reason {
                LockRelease::Expired => "expired",
                LockRelease::ForceReleased => "force_released",
                LockRelease::Unlocked | LockRelease::OwnerLeft(_) | LockRelease::AccessLost => {
                    "released"
                }
            };
            let body = json!({"room": room.key, "field": field, "owner": null, "reason": reason});
            Some(("LOCK", Frame::encode("LOCK", &body, None)))
        }
        Transition::Entity {
            room,
            stale,
            busy_by,
            version,
        } => {
            let body =
                json!({"room": room.key, "stale": stale, "busyBy": busy_by, "version": version});
            Some(("ENTITY", Frame::encode("ENTITY", &body, None)))
        }
        Transition::RoomEvent {
            room,
            from,
            event,
            data,
            ..
        } => {
            let from = from
                .as_ref()
                .map(|f| json!({"userId": f.user, "sessionId": f.session}));
            let body = json!({"room": room.key, "event": event, "data": data, "from": from});
            Some(("EVENT", Frame::encode("EVENT", &body, None)))
        }
        _ => None,
    }
}
