//! The transitions of presence, as data: who joined, left or changed, which lock
//! was taken or let go, which record went stale or fresh, which room filled or
//! emptied, which user came online or went offline. This is what every consumer
//! reads — the members' protocols (native today; Pusher and STOMP are new files
//! under `protocol/`), metrics, and event sinks — and each renders it itself.
//! Nothing here is wire text: codes, ids, numbers and times.
//!
//! Who emits: the node that performed the operation, once in the cluster (an
//! engine answers each operation to exactly one caller: a leave, a lock expiry,
//! a dead session's claim). Members hear of their room's lock and entity
//! transitions through the engine ([`crate::engine::Presence::broadcast`], which on
//! Redis publishes this type as data); of joins, leaves and updates through the
//! room's diffs (`core::diff`), which carry the same facts per `seq`.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::core::types::{LeaveReason, Status};
use crate::ids::{RoomId, SessionId, TenantId, UserId, UserRef};

/// Why a field lock ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockRelease {
    /// Its owner unlocked it.
    Unlocked,
    /// Its owner left the room (the reason of that leave).
    OwnerLeft(LeaveReason),
    /// Its owner lost the role (a participant change or the room made private).
    AccessLost,
    /// Nobody refreshed it within `timing.lock_ttl`.
    Expired,
    /// An admin released it over REST.
    ForceReleased,
}

impl LockRelease {
    /// How the event stream spells it (`lock_released.reason`): the leave's
    /// own reason when its owner left.
    pub fn as_str(&self) -> &'static str {
        match self {
            LockRelease::Unlocked => "unlocked",
            LockRelease::OwnerLeft(r) => r.as_str(),
            LockRelease::AccessLost => "access_lost",
            LockRelease::Expired => "expired",
            LockRelease::ForceReleased => "force_released",
        }
    }
}

/// Who sent a room event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventSender {
    pub user: UserId,
    pub session: SessionId,
}

/// One transition. `room`/`user` carry the tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Transition {
    /// A session became a member of a room.
    MemberAdded {
        room: RoomId,
        user: UserId,
        session: SessionId,
    },
    /// A session stopped being a member.
    MemberRemoved {
        room: RoomId,
        user: UserId,
        session: SessionId,
        reason: LeaveReason,
    },
    /// A member's state changed.
    MemberUpdated {
        room: RoomId,
        user: UserId,
        session: SessionId,
    },
    /// A room's first member joined.
    RoomOccupied { room: RoomId },
    /// A room's last member left.
    RoomVacated { room: RoomId },
    /// A user's first live session started (`status`: online or away).
    UserOnline { user: UserRef, status: Status },
    /// A user's last live session ended.
    UserOffline { user: UserRef },
    /// A user with live sessions went from online to away or back.
    UserStatus {
        user: UserRef,
        from: Status,
        to: Status,
    },
    LockAcquired {
        room: RoomId,
        field: String,
        user: UserId,
        session: SessionId,
        expires_at: SystemTime,
    },
    LockReleased {
        room: RoomId,
        field: String,
        user: UserId,
        session: SessionId,
        reason: LockRelease,
    },
    /// The record behind a room is being changed (`stale`) or was changed and is
    /// current again; `version` counts completed changes.
    Entity {
        room: RoomId,
        stale: bool,
        busy_by: Option<UserId>,
        version: u64,
    },
    /// An ephemeral room event (`EMIT`; Pusher's `client-*` events and its
    /// HTTP API's events): delivered once to the room's members connected now
    /// (but its sender), never stored.
    RoomEvent {
        room: RoomId,
        /// The member who sent it; `None` for an event of the back end.
        from: Option<EventSender>,
        event: String,
        data: serde_json::Value,
        /// A connection not to deliver to, by its Pusher socket id (the HTTP
        /// API's `socket_id`: the back end excludes the client that caused it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        except_socket: Option<String>,
    },
}

impl Transition {
    /// The transition's name, as event consumers (metrics labels, the event
    /// stream) spell it.
    pub fn kind(&self) -> &'static str {
        match self {
            Transition::MemberAdded { .. } => "member_added",
            Transition::MemberRemoved { .. } => "member_removed",
            Transition::MemberUpdated { .. } => "member_updated",
            Transition::RoomOccupied { .. } => "room_occupied",
            Transition::RoomVacated { .. } => "room_vacated",
            Transition::UserOnline { .. } => "user_online",
            Transition::UserOffline { .. } => "user_offline",
            Transition::UserStatus { .. } => "user_status",
            Transition::LockAcquired { .. } => "lock_acquired",
            Transition::LockReleased { .. } => "lock_released",
            Transition::Entity { stale: true, .. } => "entity_stale",
            Transition::Entity { stale: false, .. } => "entity_fresh",
            Transition::RoomEvent { .. } => "room_event",
        }
    }

    /// Every kind, for consumers that must know them all up front (metrics
    /// export each from start-up).
    pub const KINDS: [&'static str; 13] = [
        "member_added",
        "member_removed",
        "member_updated",
        "room_occupied",
        "room_vacated",
        "user_online",
        "user_offline",
        "user_status",
        "lock_acquired",
        "lock_released",
        "entity_stale",
        "entity_fresh",
        "room_event",
    ];

    /// The tenant it happened in.
    pub fn tenant(&self) -> &TenantId {
        match self {
            Transition::UserOnline { user, .. }
            | Transition::UserOffline { user }
            | Transition::UserStatus { user, .. } => &user.tenant,
            Transition::MemberAdded { room, .. }
            | Transition::MemberRemoved { room, .. }
            | Transition::MemberUpdated { room, .. }
            | Transition::RoomOccupied { room }
            | Transition::RoomVacated { room }
            | Transition::LockAcquired { room, .. }
            | Transition::LockReleased { room, .. }
            | Transition::Entity { room, .. }
            | Transition::RoomEvent { room, .. } => &room.tenant,
        }
    }

    /// The room it happened in (none for user transitions).
    pub fn room(&self) -> Option<&RoomId> {
        match self {
            Transition::MemberAdded { room, .. }
            | Transition::MemberRemoved { room, .. }
            | Transition::MemberUpdated { room, .. }
            | Transition::RoomOccupied { room }
            | Transition::RoomVacated { room }
            | Transition::LockAcquired { room, .. }
            | Transition::LockReleased { room, .. }
            | Transition::Entity { room, .. }
            | Transition::RoomEvent { room, .. } => Some(room),
            Transition::UserOnline { .. }
            | Transition::UserOffline { .. }
            | Transition::UserStatus { .. } => None,
        }
    }

    /// Whether a room's members are told of it as an event of its own (locks,
    /// the entity); joins, leaves and updates reach them in the room's diffs.
    pub fn is_room_event(&self) -> bool {
        matches!(
            self,
            Transition::LockAcquired { .. }
                | Transition::LockReleased { .. }
                | Transition::Entity { .. }
                | Transition::RoomEvent { .. }
        )
    }

    /// The user transitions of a status change from `before` to `after`
    /// (merged over the user's live sessions): none if it did not move.
    pub fn of_user(user: &UserRef, before: Status, after: Status) -> Option<Transition> {
        let user = user.clone();
        match (before, after) {
            (a, b) if a == b => None,
            (Status::Offline, status) => Some(Transition::UserOnline { user, status }),
            (_, Status::Offline) => Some(Transition::UserOffline { user }),
            (from, to) => Some(Transition::UserStatus { user, from, to }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{RoomKey, TenantId};

    fn user() -> UserRef {
        UserRef {
            tenant: TenantId::parse("t").unwrap(),
            user: UserId::parse("u").unwrap(),
        }
    }

    #[test]
    fn a_status_change_is_online_offline_or_a_move_between_live_statuses() {
        let u = user();
        assert_eq!(Transition::of_user(&u, Status::Away, Status::Away), None);
        assert_eq!(
            Transition::of_user(&u, Status::Offline, Status::Away)
                .unwrap()
                .kind(),
            "user_online"
        );
        assert_eq!(
            Transition::of_user(&u, Status::Online, Status::Offline)
                .unwrap()
                .kind(),
            "user_offline"
        );
        assert_eq!(
            Transition::of_user(&u, Status::Online, Status::Away),
            Some(Transition::UserStatus {
                user: u.clone(),
                from: Status::Online,
                to: Status::Away
            })
        );
    }

    #[test]
    fn transitions_travel_as_data_and_come_back_equal() {
        let room = RoomId {
            tenant: TenantId::parse("t").unwrap(),
            key: RoomKey::parse("Order:1").unwrap(),
        };
        let all = [
            Transition::LockReleased {
                room: room.clone(),
                field: "total".into(),
                user: UserId::parse("u").unwrap(),
                session: SessionId::new_random(),
                reason: LockRelease::OwnerLeft(LeaveReason::Timeout),
            },
            Transition::Entity {
                room: room.clone(),
                stale: true,
                busy_by: Some(UserId::parse("u").unwrap()),
                version: 3,
            },
            Transition::UserOnline {
                user: user(),
                status: Status::Online,
            },
        ];
        for t in all {
            let text = serde_json::to_string(&t).unwrap();
            let back: Transition = serde_json::from_str(&text).unwrap();
            assert_eq!(back, t);
            assert!(Transition::KINDS.contains(&t.kind()));
        }
    }
}
