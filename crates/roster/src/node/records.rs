//! Between the core's types and the store's rows: sessions, rooms, room types.
//! (The store speaks plain strings and unix milliseconds; the core speaks
//! validated ids and enums. Conversions live here, in one place.)

use std::time::{Duration, UNIX_EPOCH};

use crate::core::room::{RoomSettings, RoomStatus};
use crate::core::room_type::{RoomTiming, RoomType, RoomTypeCode, Visibility};
use crate::core::session::SessionMeta;
use crate::core::types::Role;
use crate::ids::{RoomId, RoomKey, TenantId, UserId};
use crate::store::{unix_ms, Participant, SessionRecord, StoredRoom, StoredRoomType};

pub fn session_started(meta: &SessionMeta) -> SessionRecord {
    SessionRecord {
        tenant: meta.tenant.to_string(),
        session_id: meta.id.to_string(),
        user: meta.user.to_string(),
        device: meta.device.device.clone(),
        os: meta.device.os.clone(),
        app_version: meta.device.app_version.clone(),
        client_id: meta.client_id.clone(),
        ip: meta.ip.clone(),
        user_agent: meta.user_agent.clone(),
        started_at: unix_ms(meta.connected_at),
        ended_at: None,
        end_reason: None,
        rooms: vec![],
    }
}

pub fn visibility_str(v: Visibility) -> &'static str {
    match v {
        Visibility::Open => "open",
        Visibility::Private => "private",
    }
}

pub fn status_str(s: RoomStatus) -> &'static str {
    match s {
        RoomStatus::Active => "active",
        RoomStatus::Maintenance => "maintenance",
        RoomStatus::Closed => "closed",
    }
}

pub fn role_str(r: Role) -> &'static str {
    match r {
        Role::Viewer => "viewer",
        Role::Commenter => "commenter",
        Role::Operator => "operator",
        Role::Owner => "owner",
    }
}

fn visibility(s: &str) -> Option<Visibility> {
    match s {
        "open" => Some(Visibility::Open),
        "private" => Some(Visibility::Private),
        _ => None,
    }
}

fn status(s: &str) -> Option<RoomStatus> {
    match s {
        "active" => Some(RoomStatus::Active),
        "maintenance" => Some(RoomStatus::Maintenance),
        "closed" => Some(RoomStatus::Closed),
        _ => None,
    }
}

pub fn room_to_store(id: &RoomId, s: &RoomSettings, now_ms: i64) -> StoredRoom {
    StoredRoom {
        tenant: id.tenant.to_string(),
        key: id.key.to_string(),
        room_type: s.room_type.clone(),
        capacity: s.capacity,
        idle_ttl_ms: s.idle_ttl.as_millis() as u64,
        visibility: visibility_str(s.visibility).into(),
        status: status_str(s.status).into(),
        tags: s.tags.clone(),
        attributes: s.attributes.clone(),
        created_at: unix_ms(s.created_at),
        updated_at: now_ms,
    }
}

/// A stored room as the engine holds it (declared), with its participants;
/// `None` if a stored value no longer validates.
/// `timing`: the overrides of the room's type (not stored per room: a
/// declared room takes them from its type at start-up).
pub fn room_from_store(
    r: &StoredRoom,
    participants: &[Participant],
    timing: RoomTiming,
) -> Option<(RoomId, RoomSettings)> {
    let id = RoomId {
        tenant: TenantId::parse(&r.tenant).ok()?,
        key: RoomKey::parse(&r.key).ok()?,
    };
    let settings = RoomSettings {
        room_type: r.room_type.clone(),
        capacity: r.capacity,
        idle_ttl: Duration::from_millis(r.idle_ttl_ms),
        visibility: visibility(&r.visibility)?,
        status: status(&r.status)?,
        participants: participants
            .iter()
            .filter_map(|p| Some((UserId::parse(&p.user).ok()?, Role::parse(&p.role)?)))
            .collect(),
        tags: r.tags.clone(),
        attributes: r.attributes.clone(),
        declared: true,
        created_at: UNIX_EPOCH + Duration::from_millis(r.created_at.max(0) as u64),
        timing,
    };
    Some((id, settings))
}

pub fn room_type_to_store(tenant: &TenantId, t: &RoomType, now_ms: i64) -> StoredRoomType {
    StoredRoomType {
        tenant: tenant.to_string(),
        code: t.code.0.clone(),
        capacity: t.capacity,
        idle_ttl_ms: t.idle_ttl.as_millis() as u64,
        visibility: visibility_str(t.visibility).into(),
        created_at: now_ms,
        heartbeat_interval_ms: t.timing.heartbeat_interval.map(|d| d.as_millis() as u64),
        session_timeout_ms: t.timing.session_timeout.map(|d| d.as_millis() as u64),
    }
}

pub fn room_type_from_store(t: &StoredRoomType) -> Option<RoomType> {
    Some(RoomType {
        code: RoomTypeCode::parse(&t.code).ok()?,
        capacity: t.capacity,
        idle_ttl: Duration::from_millis(t.idle_ttl_ms),
        visibility: visibility(&t.visibility)?,
        timing: RoomTiming {
            heartbeat_interval: t.heartbeat_interval_ms.map(Duration::from_millis),
            session_timeout: t.session_timeout_ms.map(Duration::from_millis),
        },
    })
}
