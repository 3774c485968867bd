//! Rooms declared through REST, tenant room types and participants' roles: the
//! configuration the server loads at start-up and changes through the API.
//! Tags are kept twice: as JSON on the room (what is read back) and one row per tag
//! in `room_tags` (what the tag filter searches), always in the same transaction.

use super::sql::{page, to_json, Conditions, Driver, Query, Row, Step};
use super::{Participant, RoomFilter, StoreError, StoredRoom, StoredRoomType};

const ROOM_COLUMNS: &str = "SELECT tenant, room_key, room_type, capacity, idle_ttl_ms, \
     visibility, status, tags, attributes, created_at, updated_at FROM rooms";

fn room_from_row(r: &Row) -> Result<StoredRoom, StoreError> {
    Ok(StoredRoom {
        tenant: r.text(0)?,
        key: r.text(1)?,
        room_type: r.text(2)?,
        capacity: r.u32(3)?,
        idle_ttl_ms: r.u64(4)?,
        visibility: r.text(5)?,
        status: r.text(6)?,
        tags: r.json(7)?,
        attributes: r.json(8)?,
        created_at: r.int(9)?,
        updated_at: r.int(10)?,
    })
}

/// Tags without duplicates, in first-seen order.
fn distinct_tags(tags: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(tags.len());
    for t in tags {
        if !out.contains(t) {
            out.push(t.clone());
        }
    }
    out
}

fn tag_rows<'a>(room: &'a StoredRoom, tags: &'a [String]) -> impl Iterator<Item = Step> + 'a {
    tags.iter().map(move |tag| {
        Query::new("INSERT INTO room_tags (tenant, tag, room_key) VALUES ($1, $2, $3)")
            .text(&room.tenant)
            .text(tag)
            .text(&room.key)
            .into()
    })
}

fn idle_ttl(room_idle_ttl_ms: u64) -> i64 {
    i64::try_from(room_idle_ttl_ms).unwrap_or(i64::MAX)
}

pub(super) async fn insert_room(db: &dyn Driver, room: &StoredRoom) -> Result<(), StoreError> {
    let tags = distinct_tags(&room.tags);
    let mut steps: Vec<Step> = vec![Query::new(
        "INSERT INTO rooms (tenant, room_key, room_type, capacity, idle_ttl_ms, visibility, \
         status, tags, attributes, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .text(&room.tenant)
    .text(&room.key)
    .text(&room.room_type)
    .int(room.capacity.into())
    .int(idle_ttl(room.idle_ttl_ms))
    .text(&room.visibility)
    .text(&room.status)
    .text(to_json(&tags)?)
    .text(to_json(&room.attributes)?)
    .int(room.created_at)
    .int(room.updated_at)
    .into()];
    steps.extend(tag_rows(room, &tags));
    db.transaction(steps).await.map(drop)
}

pub(super) async fn update_room(db: &dyn Driver, room: &StoredRoom) -> Result<(), StoreError> {
    let tags = distinct_tags(&room.tags);
    let mut steps = vec![
        Step {
            query: Query::new(
                "UPDATE rooms SET room_type = $3, capacity = $4, idle_ttl_ms = $5, \
                 visibility = $6, status = $7, tags = $8, attributes = $9, updated_at = $10 \
                 WHERE tenant = $1 AND room_key = $2",
            )
            .text(&room.tenant)
            .text(&room.key)
            .text(&room.room_type)
            .int(room.capacity.into())
            .int(idle_ttl(room.idle_ttl_ms))
            .text(&room.visibility)
            .text(&room.status)
            .text(to_json(&tags)?)
            .text(to_json(&room.attributes)?)
            .int(room.updated_at),
            must_change: true,
        },
        Query::new("DELETE FROM room_tags WHERE tenant = $1 AND room_key = $2")
            .text(&room.tenant)
            .text(&room.key)
            .into(),
    ];
    steps.extend(tag_rows(room, &tags));
    db.transaction(steps).await.map(drop)
}

pub(super) async fn delete_room(
    db: &dyn Driver,
    tenant: &str,
    key: &str,
) -> Result<bool, StoreError> {
    let changed = db
        .transaction(vec![
            Query::new("DELETE FROM participants WHERE tenant = $1 AND room_key = $2")
                .text(tenant)
                .text(key)
                .into(),
            Query::new("DELETE FROM room_tags WHERE tenant = $1 AND room_key = $2")
                .text(tenant)
                .text(key)
                .into(),
            Query::new("DELETE FROM rooms WHERE tenant = $1 AND room_key = $2")
                .text(tenant)
                .text(key)
                .into(),
        ])
        .await?;
    Ok(changed.last().copied().unwrap_or(0) > 0)
}

pub(super) async fn get_room(
    db: &dyn Driver,
    tenant: &str,
    key: &str,
) -> Result<Option<StoredRoom>, StoreError> {
    let rows = db
        .fetch(
            Query::new(format!(
                "{ROOM_COLUMNS} WHERE tenant = $1 AND room_key = $2"
            ))
            .text(tenant)
            .text(key),
        )
        .await?;
    rows.first().map(room_from_row).transpose()
}

pub(super) async fn list_rooms(
    db: &dyn Driver,
    tenant: &str,
    filter: &RoomFilter,
) -> Result<Vec<StoredRoom>, StoreError> {
    let mut c = Conditions::default();
    c.text_eq("tenant", tenant);
    if let Some(t) = &filter.room_type {
        c.text_eq("room_type", t);
    }
    if let Some(s) = &filter.status {
        c.text_eq("status", s);
    }
    if let Some(tag) = &filter.tag {
        c.text_clause(
            "EXISTS (SELECT 1 FROM room_tags t WHERE t.tenant = rooms.tenant \
             AND t.room_key = rooms.room_key AND t.tag = {})",
            tag,
        );
    }
    if let Some(after) = &filter.after_key {
        c.text_clause("room_key > {}", after);
    }
    let rows = db
        .fetch(c.query(
            ROOM_COLUMNS,
            "ORDER BY room_key LIMIT {limit}",
            Some(page(filter.limit)),
        ))
        .await?;
    rows.iter().map(room_from_row).collect()
}

pub(super) async fn all_rooms(db: &dyn Driver) -> Result<Vec<StoredRoom>, StoreError> {
    let rows = db
        .fetch(Query::new(format!(
            "{ROOM_COLUMNS} ORDER BY tenant, room_key"
        )))
        .await?;
    rows.iter().map(room_from_row).collect()
}

pub(super) async fn upsert_room_type(
    db: &dyn Driver,
    t: &StoredRoomType,
) -> Result<(), StoreError> {
    db.execute(
        Query::new(
            "INSERT INTO room_types (tenant, code, capacity, idle_ttl_ms, visibility, created_at, \
             heartbeat_interval_ms, session_timeout_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (tenant, code) DO UPDATE SET capacity = excluded.capacity, \
             idle_ttl_ms = excluded.idle_ttl_ms, visibility = excluded.visibility, \
             heartbeat_interval_ms = excluded.heartbeat_interval_ms, \
             session_timeout_ms = excluded.session_timeout_ms",
        )
        .text(&t.tenant)
        .text(&t.code)
        .int(t.capacity.into())
        .int(idle_ttl(t.idle_ttl_ms))
        .text(&t.visibility)
        .int(t.created_at)
        .opt_int(t.heartbeat_interval_ms.map(idle_ttl))
        .opt_int(t.session_timeout_ms.map(idle_ttl)),
    )
    .await
    .map(drop)
}

pub(super) async fn delete_room_type(
    db: &dyn Driver,
    tenant: &str,
    code: &str,
) -> Result<bool, StoreError> {
    let n = db
        .execute(
            Query::new("DELETE FROM room_types WHERE tenant = $1 AND code = $2")
                .text(tenant)
                .text(code),
        )
        .await?;
    Ok(n > 0)
}

pub(super) async fn list_room_types(
    db: &dyn Driver,
    tenant: Option<&str>,
) -> Result<Vec<StoredRoomType>, StoreError> {
    let mut c = Conditions::default();
    if let Some(tenant) = tenant {
        c.text_eq("tenant", tenant);
    }
    let rows = db
        .fetch(c.query(
            "SELECT tenant, code, capacity, idle_ttl_ms, visibility, created_at, \
             heartbeat_interval_ms, session_timeout_ms FROM room_types",
            "ORDER BY tenant, code",
            None,
        ))
        .await?;
    rows.iter()
        .map(|r| {
            Ok(StoredRoomType {
                tenant: r.text(0)?,
                code: r.text(1)?,
                capacity: r.u32(2)?,
                idle_ttl_ms: r.u64(3)?,
                visibility: r.text(4)?,
                created_at: r.int(5)?,
                heartbeat_interval_ms: r.opt_int(6)?.map(|v| v.max(0) as u64),
                session_timeout_ms: r.opt_int(7)?.map(|v| v.max(0) as u64),
            })
        })
        .collect()
}

pub(super) async fn set_participant(db: &dyn Driver, p: &Participant) -> Result<(), StoreError> {
    db.execute(
        Query::new(
            "INSERT INTO participants (tenant, room_key, user_id, role) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant, room_key, user_id) DO UPDATE SET role = excluded.role",
        )
        .text(&p.tenant)
        .text(&p.room)
        .text(&p.user)
        .text(&p.role),
    )
    .await
    .map(drop)
}

pub(super) async fn delete_participant(
    db: &dyn Driver,
    tenant: &str,
    room: &str,
    user: &str,
) -> Result<bool, StoreError> {
    let n = db
        .execute(
            Query::new(
                "DELETE FROM participants WHERE tenant = $1 AND room_key = $2 AND user_id = $3",
            )
            .text(tenant)
            .text(room)
            .text(user),
        )
        .await?;
    Ok(n > 0)
}

/// One room's participants, or everyone's.
pub(super) async fn list_participants(
    db: &dyn Driver,
    room: Option<(&str, &str)>,
) -> Result<Vec<Participant>, StoreError> {
    let mut c = Conditions::default();
    if let Some((tenant, room)) = room {
        c.text_eq("tenant", tenant).text_eq("room_key", room);
    }
    let rows = db
        .fetch(c.query(
            "SELECT tenant, room_key, user_id, role FROM participants",
            "ORDER BY tenant, room_key, user_id",
            None,
        ))
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Participant {
                tenant: r.text(0)?,
                room: r.text(1)?,
                user: r.text(2)?,
                role: r.text(3)?,
            })
        })
        .collect()
}
