//! Rooms as things: declare, read, change, delete; room types; participants.
//! Handlers check the request and the caller, then call one `Node` method: the
//! writes are in `node/admin.rs` (store first, then the engine, so what a REST
//! call confirmed survives a restart), the reads in `node/queries.rs` (the engine,
//! loaded from the store at start-up).

use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    created, no_content, parse_duration_field, visible_room, ApiError, ApiJson, ApiPath, ApiQuery,
    ApiResult, Caller, Page, PageQuery,
};
use crate::clock::iso;
use crate::core::error::ErrorCode;
use crate::core::room::{RoomSettings, RoomStatus};
use crate::core::room_type::{RoomTiming, RoomType, RoomTypeCode, Visibility};
use crate::core::types::Role;
use crate::engine::{RoomPatch, RoomSummary};
use crate::http::AppState;
use crate::ids::{RoomKey, UserId};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/rooms", get(list).post(create))
        .route("/rooms/{room}", get(read).patch(patch).delete(remove))
        .route(
            "/rooms/{room}/participants/{user}",
            put(put_participant).delete(delete_participant),
        )
        .route("/rooms/{room}/participants", get(list_participants))
        .route("/room-types", get(room_types).post(create_room_type))
        .route(
            "/room-types/{code}",
            put(put_room_type).delete(delete_room_type),
        )
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoomView {
    pub key: String,
    #[serde(rename = "type")]
    pub room_type: String,
    pub capacity: u32,
    pub idle_ttl: String,
    pub visibility: Visibility,
    pub status: RoomStatus,
    pub tags: Vec<String>,
    /// Free JSON of the application's (e.g. `{"customer": "ACME"}`).
    #[schema(value_type = std::collections::HashMap<String, Value>)]
    pub attributes: serde_json::Map<String, Value>,
    /// Users with a role in this room, by user id.
    pub participants: std::collections::BTreeMap<String, Role>,
    pub declared: bool,
    pub sessions: usize,
    pub seq: u64,
    pub stale: bool,
    pub version: u64,
    pub created_at: String,
}

impl From<RoomSummary> for RoomView {
    fn from(r: RoomSummary) -> Self {
        let s = r.settings;
        Self {
            key: r.id.key.to_string(),
            room_type: s.room_type,
            capacity: s.capacity,
            idle_ttl: humantime::format_duration(s.idle_ttl).to_string(),
            visibility: s.visibility,
            status: s.status,
            tags: s.tags,
            attributes: s.attributes,
            participants: s
                .participants
                .into_iter()
                .map(|(u, r)| (u.to_string(), r))
                .collect(),
            declared: s.declared,
            sessions: r.sessions,
            seq: r.seq,
            stale: r.entity.stale,
            version: r.entity.version,
            created_at: iso(s.created_at),
        }
    }
}

/// A room's tag: 1-64 characters (its schema only; tags are strings).
pub struct Tag;

impl utoipa::PartialSchema for Tag {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .min_length(Some(1))
            .max_length(Some(64))
            .examples(["orders"])
            .into()
    }
}
impl utoipa::ToSchema for Tag {}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"key": "Order:123", "type": "COLLABORATION", "capacity": 25, "idleTtl": "30m", "visibility": "open", "tags": ["orders"], "attributes": {"customer": "ACME"}}))]
pub struct CreateRoom {
    #[schema(value_type = RoomKey)]
    pub key: String,
    /// A room type's code (default `GENERIC`): its capacity, idle TTL and
    /// visibility apply unless given here.
    #[serde(rename = "type")]
    #[schema(value_type = Option<RoomTypeCode>)]
    pub room_type: Option<String>,
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub capacity: Option<u32>,
    /// Duration with a unit, e.g. `"30m"`.
    #[schema(example = "30m")]
    pub idle_ttl: Option<String>,
    pub visibility: Option<Visibility>,
    /// At most 50 tags of 1-64 characters.
    #[schema(value_type = Option<Vec<Tag>>, max_items = 50)]
    pub tags: Option<Vec<String>>,
    /// Free JSON of the application's.
    #[schema(value_type = Option<std::collections::HashMap<String, Value>>)]
    pub attributes: Option<serde_json::Map<String, Value>>,
}

#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"status": "maintenance", "capacity": 50}))]
pub struct PatchRoom {
    #[serde(rename = "type")]
    #[schema(value_type = Option<RoomTypeCode>)]
    pub room_type: Option<String>,
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub capacity: Option<u32>,
    /// Duration with a unit, e.g. `"30m"`.
    #[schema(example = "30m")]
    pub idle_ttl: Option<String>,
    pub visibility: Option<Visibility>,
    /// `closed` kicks every member; `maintenance` refuses new joins.
    pub status: Option<RoomStatus>,
    /// At most 50 tags of 1-64 characters.
    #[schema(value_type = Option<Vec<Tag>>, max_items = 50)]
    pub tags: Option<Vec<String>>,
    #[schema(value_type = Option<std::collections::HashMap<String, Value>>)]
    pub attributes: Option<serde_json::Map<String, Value>>,
}

fn check_capacity(c: Option<u32>) -> ApiResult<()> {
    match c {
        Some(0) | Some(1_000_001..) => Err(ApiError::new(
            ErrorCode::Invalid,
            "field `capacity`: between 1 and 1000000",
        )),
        _ => Ok(()),
    }
}

fn check_tags(t: &Option<Vec<String>>) -> ApiResult<()> {
    if let Some(tags) = t {
        if tags.len() > 50 || tags.iter().any(|t| t.is_empty() || t.len() > 64) {
            return Err(ApiError::new(
                ErrorCode::Invalid,
                "field `tags`: at most 50 tags of 1-64 characters",
            ));
        }
    }
    Ok(())
}

fn find_type(app: &AppState, caller: &Caller, code: &str) -> ApiResult<RoomType> {
    app.node.room_type(&caller.tenant, code).ok_or_else(|| {
        ApiError::new(
            ErrorCode::Invalid,
            format!("field `type`: unknown room type {code:?}"),
        )
    })
}

/// Declares a room (201); 409 if it exists.
#[utoipa::path(post, path = "/api/v1/rooms", operation_id = "createRoom", tag = "rooms", request_body = CreateRoom,
    responses((status = 201, description = "declared", body = RoomView), (status = 409, description = "a room with this key exists", body = super::ErrorBody)))]
pub async fn create(
    State(app): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateRoom>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let id = caller.room(&body.key).map_err(|e| {
        ApiError::new(
            ErrorCode::Invalid,
            e.0.message.replace("path `room`", "field `key`"),
        )
    })?;
    let t = find_type(
        &app,
        &caller,
        body.room_type
            .as_deref()
            .unwrap_or(crate::core::room_type::GENERIC),
    )?;
    check_capacity(body.capacity)?;
    check_tags(&body.tags)?;
    let mut settings =
        RoomSettings::from_type(&t, body.visibility, true, app.node.clock.wall_now());
    if let Some(c) = body.capacity {
        settings.capacity = c;
    }
    if let Some(t) = &body.idle_ttl {
        settings.idle_ttl = parse_duration_field("idleTtl", t)?;
    }
    settings.tags = body.tags.unwrap_or_default();
    settings.attributes = body.attributes.unwrap_or_default();
    let summary = app
        .node
        .declare_room(&id, settings, &caller.actor())
        .await?;
    Ok(created(RoomView::from(summary)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RoomFilter {
    /// Only rooms of this room type.
    #[serde(rename = "type")]
    pub room_type: Option<String>,
    /// Only rooms with this tag.
    pub tag: Option<String>,
    /// `active` | `maintenance` | `closed`
    pub status: Option<RoomStatus>,
    /// Only rooms declared through the API (`true`) or only ad-hoc ones (`false`).
    pub declared: Option<bool>,
    /// Page size, 1-1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// `nextCursor` of the page before.
    pub cursor: Option<String>,
}

/// Rooms of the tenant (declared and ad hoc), by key. Private rooms are listed
/// only to admins, monitors and their participants.
#[utoipa::path(get, path = "/api/v1/rooms", operation_id = "listRooms", tag = "rooms", params(RoomFilter), responses((status = 200, description = "a page of rooms", body = Page<RoomView>)))]
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    ApiQuery(f): ApiQuery<RoomFilter>,
) -> ApiResult<Json<Page<RoomView>>> {
    let items: Vec<RoomView> = app
        .node
        .rooms(&caller.tenant)
        .await?
        .into_iter()
        .filter(|r| caller.may_see(&r.settings).is_ok())
        .filter(|r| {
            f.room_type
                .as_ref()
                .is_none_or(|t| &r.settings.room_type == t)
        })
        .filter(|r| f.tag.as_ref().is_none_or(|t| r.settings.tags.contains(t)))
        .filter(|r| f.status.is_none_or(|st| r.settings.status == st))
        .filter(|r| f.declared.is_none_or(|d| r.settings.declared == d))
        .map(RoomView::from)
        .collect();
    Ok(Json(
        PageQuery {
            limit: f.limit,
            cursor: f.cursor,
        }
        .apply(items, |r| r.key.clone())?,
    ))
}

#[utoipa::path(get, path = "/api/v1/rooms/{room}", operation_id = "getRoom", tag = "rooms", params(("room" = RoomKey, Path, description = "the room key, percent-encoded")),
    responses((status = 200, description = "the room", body = RoomView)))]
pub async fn read(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(room): ApiPath<String>,
) -> ApiResult<Json<RoomView>> {
    let (_, r) = visible_room(&app, &caller, &room).await?;
    Ok(Json(r.into()))
}

/// Changes a room. `status: closed` kicks every member (reason `kicked`);
/// `maintenance` refuses new joins with `room_closed`.
#[utoipa::path(patch, path = "/api/v1/rooms/{room}", operation_id = "updateRoom", tag = "rooms", params(("room" = RoomKey, Path, description = "the room key, percent-encoded")), request_body = PatchRoom,
    responses((status = 200, description = "the room", body = RoomView)))]
pub async fn patch(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(room): ApiPath<String>,
    ApiJson(body): ApiJson<PatchRoom>,
) -> ApiResult<Json<RoomView>> {
    caller.require_admin()?;
    let id = caller.room(&room)?;
    check_capacity(body.capacity)?;
    check_tags(&body.tags)?;
    let details = serde_json::to_value(&body).unwrap_or_default();
    // A new type brings its timing overrides (capacity and the rest stay).
    let timing = match &body.room_type {
        Some(t) => Some(find_type(&app, &caller, t)?.timing),
        None => None,
    };
    let patch = RoomPatch {
        room_type: body.room_type,
        capacity: body.capacity,
        idle_ttl: body
            .idle_ttl
            .as_deref()
            .map(|t| parse_duration_field("idleTtl", t))
            .transpose()?,
        visibility: body.visibility,
        status: body.status,
        tags: body.tags,
        attributes: body.attributes,
        timing,
    };
    let summary = app
        .node
        .update_room(&id, patch, &caller.actor(), details)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no room {room}")))?;
    Ok(Json(summary.into()))
}

/// Deletes a room; its members leave with reason `kicked`.
#[utoipa::path(delete, path = "/api/v1/rooms/{room}", operation_id = "deleteRoom", tag = "rooms", params(("room" = RoomKey, Path, description = "the room key, percent-encoded")),
    responses((status = 204, description = "deleted")))]
pub async fn remove(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(room): ApiPath<String>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let id = caller.room(&room)?;
    if !app.node.delete_room(&id, &caller.actor()).await? {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no room {room}"),
        ));
    }
    Ok(no_content())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"role": "operator"}))]
pub struct ParticipantBody {
    pub role: Role,
}

#[utoipa::path(put, path = "/api/v1/rooms/{room}/participants/{user}", operation_id = "setParticipant", tag = "rooms",
    params(("room" = RoomKey, Path, description = "the room key, percent-encoded"), ("user" = UserId, Path, description = "the user id (`sub`), percent-encoded")), request_body = ParticipantBody,
    responses((status = 204, description = "set")))]
pub async fn put_participant(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath((room, user)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<ParticipantBody>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let id = caller.room(&room)?;
    let user = UserId::parse(&user)
        .map_err(|e| ApiError::new(ErrorCode::Invalid, format!("path `user`: {}", e.0)))?;
    if !app
        .node
        .set_participant(&id, user, body.role, &caller.actor())
        .await?
    {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no room {room}"),
        ));
    }
    Ok(no_content())
}

#[utoipa::path(delete, path = "/api/v1/rooms/{room}/participants/{user}", operation_id = "removeParticipant", tag = "rooms",
    params(("room" = RoomKey, Path, description = "the room key, percent-encoded"), ("user" = UserId, Path, description = "the user id (`sub`), percent-encoded")),
    responses((status = 204, description = "removed")))]
pub async fn delete_participant(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath((room, user)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let id = caller.room(&room)?;
    let user = UserId::parse(&user)
        .map_err(|e| ApiError::new(ErrorCode::Invalid, format!("path `user`: {}", e.0)))?;
    app.node
        .remove_participant(&id, user, &caller.actor())
        .await?;
    Ok(no_content())
}

/// Participants of a room and their roles, by user.
#[utoipa::path(get, path = "/api/v1/rooms/{room}/participants", operation_id = "listParticipants", tag = "rooms", params(("room" = RoomKey, Path, description = "the room key, percent-encoded")),
    responses((status = 200, description = "every participant (one page)", body = Page<ParticipantItem>)))]
pub async fn list_participants(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(room): ApiPath<String>,
) -> ApiResult<Json<Page<ParticipantItem>>> {
    let (_, r) = visible_room(&app, &caller, &room).await?;
    let items = r
        .settings
        .participants
        .into_iter()
        .map(|(user_id, role)| ParticipantItem { user_id, role })
        .collect();
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantItem {
    pub user_id: UserId,
    pub role: Role,
}

/// A room type as REST shows it.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoomTypeView {
    /// `[A-Z0-9_]{1,32}`.
    pub code: String,
    pub capacity: u32,
    /// Duration with a unit, e.g. `"1h"`.
    pub idle_ttl: String,
    pub visibility: Visibility,
    /// The heartbeat interval of its rooms (null: the server's
    /// `timing.heartbeat_interval`); told to members in the `PRESENCE` answer.
    pub heartbeat_interval: Option<String>,
    /// How long a member's session may be silent before it leaves a room of
    /// this type with reason `timeout` (null: the server's
    /// `timing.session_timeout`, when the whole session ends).
    pub session_timeout: Option<String>,
    /// One of the ten seeded types (read-only).
    pub seeded: bool,
}

impl RoomTypeView {
    fn new(app: &AppState, t: RoomType) -> Self {
        Self {
            seeded: app.node.is_seeded_type(&t.code.0),
            code: t.code.0,
            capacity: t.capacity,
            idle_ttl: humantime::format_duration(t.idle_ttl).to_string(),
            visibility: t.visibility,
            heartbeat_interval: t
                .timing
                .heartbeat_interval
                .map(|d| humantime::format_duration(d).to_string()),
            session_timeout: t
                .timing
                .session_timeout
                .map(|d| humantime::format_duration(d).to_string()),
        }
    }
}

/// Seeded types followed by the tenant's own.
#[utoipa::path(get, path = "/api/v1/room-types", operation_id = "listRoomTypes", tag = "rooms", responses((status = 200, description = "every room type (one page)", body = Page<RoomTypeView>)))]
pub async fn room_types(
    State(app): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Page<RoomTypeView>>> {
    let items = app
        .node
        .room_types(&caller.tenant)
        .into_iter()
        .map(|t| RoomTypeView::new(&app, t))
        .collect();
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"code": "KIOSK", "capacity": 5, "idleTtl": "10m", "visibility": "open", "heartbeatInterval": "5s", "sessionTimeout": "20s"}))]
pub struct RoomTypeBody {
    /// Needed by `POST /room-types`; in `PUT /room-types/{code}` the path gives it.
    #[schema(value_type = Option<RoomTypeCode>)]
    pub code: Option<String>,
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub capacity: u32,
    /// Duration with a unit, e.g. `"1h"`.
    #[schema(example = "1h")]
    pub idle_ttl: String,
    pub visibility: Option<Visibility>,
    /// Its rooms' heartbeat interval, 100 ms to 1 h (absent: the server's).
    #[schema(example = "5s")]
    pub heartbeat_interval: Option<String>,
    /// Silence after which a member leaves a room of this type with reason
    /// `timeout`, 500 ms to 1 h, above `heartbeatInterval` (absent: the
    /// server's session timeout).
    #[schema(example = "20s")]
    pub session_timeout: Option<String>,
}

/// A room type's timing overrides from its body: each within its bounds, and
/// the timeout above the heartbeat interval (a member heartbeating at the
/// room's pace must never time out of it).
fn timing_fields(body: &RoomTypeBody) -> ApiResult<RoomTiming> {
    use std::time::Duration;
    let field = |name: &str, v: &Option<String>, min: Duration| -> ApiResult<Option<Duration>> {
        let Some(v) = v else { return Ok(None) };
        let d = parse_duration_field(name, v)?;
        if d < min || d > Duration::from_secs(3600) {
            return Err(ApiError::new(
                ErrorCode::Invalid,
                format!(
                    "field `{name}`: between {} and 1h",
                    humantime::format_duration(min)
                ),
            ));
        }
        Ok(Some(d))
    };
    let heartbeat_interval = field(
        "heartbeatInterval",
        &body.heartbeat_interval,
        Duration::from_millis(100),
    )?;
    let session_timeout = field(
        "sessionTimeout",
        &body.session_timeout,
        Duration::from_millis(500),
    )?;
    if let (Some(h), Some(t)) = (heartbeat_interval, session_timeout) {
        if t <= h {
            return Err(ApiError::new(
                ErrorCode::Invalid,
                "field `sessionTimeout`: must be longer than `heartbeatInterval`",
            ));
        }
    }
    Ok(RoomTiming {
        heartbeat_interval,
        session_timeout,
    })
}

async fn save_room_type(
    app: &AppState,
    caller: &Caller,
    code: &str,
    body: RoomTypeBody,
) -> ApiResult<RoomType> {
    let code = RoomTypeCode::parse(code)
        .map_err(|e| ApiError::new(ErrorCode::Invalid, format!("field `code`: {e}")))?;
    if app.node.is_seeded_type(&code.0) {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("{} is a seeded room type and can't be changed", code.0),
        ));
    }
    check_capacity(Some(body.capacity))?;
    let t = RoomType {
        code,
        capacity: body.capacity,
        idle_ttl: parse_duration_field("idleTtl", &body.idle_ttl)?,
        visibility: body.visibility.unwrap_or_default(),
        timing: timing_fields(&body)?,
    };
    app.node
        .save_room_type(&caller.tenant, &t, &caller.actor())
        .await?;
    Ok(t)
}

/// Creates a tenant room type (201); 409 if the code exists (seeded or own).
#[utoipa::path(post, path = "/api/v1/room-types", operation_id = "createRoomType", tag = "rooms", request_body = RoomTypeBody,
    responses((status = 201, description = "created", body = RoomTypeView), (status = 409, description = "the code exists (seeded or the tenant's)", body = super::ErrorBody)))]
pub async fn create_room_type(
    State(app): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<RoomTypeBody>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let code = body
        .code
        .clone()
        .ok_or_else(|| ApiError::new(ErrorCode::Invalid, "field `code`: missing"))?;
    if app.node.room_type(&caller.tenant, &code).is_some() {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("room type {code} exists"),
        ));
    }
    let t = save_room_type(&app, &caller, &code, body).await?;
    Ok(created(RoomTypeView::new(&app, t)))
}

/// Creates or replaces a tenant room type (seeded types can't be changed: 409).
#[utoipa::path(put, path = "/api/v1/room-types/{code}", operation_id = "putRoomType", tag = "rooms", params(("code" = RoomTypeCode, Path, description = "the room type's code")), request_body = RoomTypeBody,
    responses((status = 200, description = "created or replaced", body = RoomTypeView), (status = 409, description = "a seeded type", body = super::ErrorBody)))]
pub async fn put_room_type(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(code): ApiPath<String>,
    ApiJson(body): ApiJson<RoomTypeBody>,
) -> ApiResult<Json<RoomTypeView>> {
    caller.require_admin()?;
    let t = save_room_type(&app, &caller, &code, body).await?;
    Ok(Json(RoomTypeView::new(&app, t)))
}

/// Deletes a tenant room type (rooms created with it keep their settings).
#[utoipa::path(delete, path = "/api/v1/room-types/{code}", operation_id = "deleteRoomType", tag = "rooms", params(("code" = RoomTypeCode, Path, description = "the room type's code")),
    responses((status = 204, description = "deleted"), (status = 409, description = "a seeded type", body = super::ErrorBody)))]
pub async fn delete_room_type(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(code): ApiPath<String>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    if app.node.is_seeded_type(&code) {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("{code} is a seeded room type and can't be deleted"),
        ));
    }
    if !app
        .node
        .delete_room_type(&caller.tenant, &code, &caller.actor())
        .await?
    {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no room type {code}"),
        ));
    }
    Ok(no_content())
}
