//! The native protocol's server messages rendered from core data: what the
//! engines deliver ([`Outgoing`]: snapshots, counts, diffs, and lock/entity
//! transitions). One rendering per delivery call, whatever the number of
//! recipients (encode once). Another protocol renders the same data in a file
//! of its own.

use serde_json::json;

use crate::clock::iso;
use crate::core::transition::{LockRelease, Transition};
use crate::engine::Outgoing;
use crate::frame::Frame;

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

/// `LOCK` and `ENTITY` (PROTOCOL §10, §11).
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
        _ => None,
    }
}
