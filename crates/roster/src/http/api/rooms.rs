//! Rooms as things: declare, read, change, delete; room types; participants.
//! (Kept in the engine for now; persistence comes with the store.)

use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    created, no_content, parse_duration_field, ApiError, ApiJson, ApiResult, Caller, Page,
    PageQuery,
};
use crate::clock::iso;
use crate::core::error::ErrorCode;
use crate::core::room::{RoomSettings, RoomStatus};
use crate::core::room_type::{RoomType, Visibility};
use crate::core::types::Role;
use crate::engine::{RoomPatch, RoomSummary};
use crate::http::AppState;
use crate::ids::UserId;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/rooms", get(list).post(create))
        .route("/rooms/{room}", get(read).patch(patch).delete(remove))
        .route(
            "/rooms/{room}/participants/{user}",
            put(put_participant).delete(delete_participant),
        )
        .route("/room-types", get(room_types))
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
    #[schema(value_type = Object)]
    pub attributes: serde_json::Map<String, Value>,
    #[schema(value_type = Object)]
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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateRoom {
    pub key: String,
    #[serde(rename = "type")]
    pub room_type: Option<String>,
    pub capacity: Option<u32>,
    /// Duration with a unit, e.g. `"30m"`.
    pub idle_ttl: Option<String>,
    pub visibility: Option<Visibility>,
    pub tags: Option<Vec<String>>,
    #[schema(value_type = Object)]
    pub attributes: Option<serde_json::Map<String, Value>>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PatchRoom {
    #[serde(rename = "type")]
    pub room_type: Option<String>,
    pub capacity: Option<u32>,
    pub idle_ttl: Option<String>,
    pub visibility: Option<Visibility>,
    pub status: Option<RoomStatus>,
    pub tags: Option<Vec<String>>,
    #[schema(value_type = Object)]
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

fn find_type<'a>(app: &'a AppState, code: &str) -> ApiResult<&'a RoomType> {
    app.node.room_type(code).ok_or_else(|| {
        ApiError::new(
            ErrorCode::Invalid,
            format!("field `type`: unknown room type {code:?}"),
        )
    })
}

/// Declares a room (201); 409 if it exists.
#[utoipa::path(post, path = "/api/v1/rooms", tag = "rooms", request_body = CreateRoom,
    responses((status = 201, body = RoomView), (status = 409, body = super::ErrorBody), (status = 422, body = super::ErrorBody)))]
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
        body.room_type
            .as_deref()
            .unwrap_or(crate::core::room_type::GENERIC),
    )?;
    check_capacity(body.capacity)?;
    check_tags(&body.tags)?;
    let mut settings = RoomSettings::from_type(t, body.visibility, true, app.node.clock.wall_now());
    if let Some(c) = body.capacity {
        settings.capacity = c;
    }
    if let Some(t) = &body.idle_ttl {
        settings.idle_ttl = parse_duration_field("idleTtl", t)?;
    }
    settings.tags = body.tags.unwrap_or_default();
    settings.attributes = body.attributes.unwrap_or_default();
    app.node.engine.create_room(id.clone(), settings).await?;
    let summary = app
        .node
        .engine
        .room(&id)
        .await
        .ok_or_else(|| ApiError::new(ErrorCode::Internal, "room vanished"))?;
    Ok(created(RoomView::from(summary)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct RoomFilter {
    #[serde(rename = "type")]
    pub room_type: Option<String>,
    pub tag: Option<String>,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

/// Rooms of the tenant (declared and ad hoc), by key. Private rooms are listed
/// only to admins, monitors and their participants.
#[utoipa::path(get, path = "/api/v1/rooms", tag = "rooms", params(RoomFilter), responses((status = 200, body = Page<RoomView>)))]
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    Query(f): Query<RoomFilter>,
) -> ApiResult<Json<Page<RoomView>>> {
    let items: Vec<RoomView> = app
        .node
        .engine
        .list_rooms(&caller.tenant)
        .await
        .into_iter()
        .filter(|r| caller.may_see(&r.settings).is_ok())
        .filter(|r| {
            f.room_type
                .as_ref()
                .is_none_or(|t| &r.settings.room_type == t)
        })
        .filter(|r| f.tag.as_ref().is_none_or(|t| r.settings.tags.contains(t)))
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

#[utoipa::path(get, path = "/api/v1/rooms/{room}", tag = "rooms", params(("room" = String, Path)),
    responses((status = 200, body = RoomView), (status = 404, body = super::ErrorBody)))]
pub async fn read(
    State(app): State<AppState>,
    caller: Caller,
    Path(room): Path<String>,
) -> ApiResult<Json<RoomView>> {
    let id = caller.room(&room)?;
    let r = app
        .node
        .engine
        .room(&id)
        .await
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no room {room}")))?;
    caller.may_see(&r.settings)?;
    Ok(Json(r.into()))
}

/// Changes a room. `status: closed` kicks every member (reason `kicked`);
/// `maintenance` refuses new joins with `room_closed`.
#[utoipa::path(patch, path = "/api/v1/rooms/{room}", tag = "rooms", params(("room" = String, Path)), request_body = PatchRoom,
    responses((status = 200, body = RoomView), (status = 404, body = super::ErrorBody), (status = 422, body = super::ErrorBody)))]
pub async fn patch(
    State(app): State<AppState>,
    caller: Caller,
    Path(room): Path<String>,
    ApiJson(body): ApiJson<PatchRoom>,
) -> ApiResult<Json<RoomView>> {
    caller.require_admin()?;
    let id = caller.room(&room)?;
    check_capacity(body.capacity)?;
    check_tags(&body.tags)?;
    if let Some(t) = &body.room_type {
        find_type(&app, t)?;
    }
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
    };
    let closing = patch.status == Some(RoomStatus::Closed);
    let (summary, change) = app.node.engine.update_room(&id, patch).await?;
    app.node.access_changed(&id, change).await;
    if closing {
        let members = app.node.engine.members(&id).await;
        app.node.kick_sessions(members).await;
    }
    Ok(Json(
        app.node.engine.room(&id).await.unwrap_or(summary).into(),
    ))
}

/// Deletes a room; its members leave with reason `kicked`.
#[utoipa::path(delete, path = "/api/v1/rooms/{room}", tag = "rooms", params(("room" = String, Path)),
    responses((status = 204, description = "deleted"), (status = 404, body = super::ErrorBody)))]
pub async fn remove(
    State(app): State<AppState>,
    caller: Caller,
    Path(room): Path<String>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let id = caller.room(&room)?;
    let members = app
        .node
        .engine
        .delete_room(&id)
        .await
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no room {room}")))?;
    app.node.kick_sessions(members).await;
    Ok(no_content())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ParticipantBody {
    pub role: Role,
}

#[utoipa::path(put, path = "/api/v1/rooms/{room}/participants/{user}", tag = "rooms",
    params(("room" = String, Path), ("user" = String, Path)), request_body = ParticipantBody,
    responses((status = 204, description = "set"), (status = 404, body = super::ErrorBody), (status = 422, body = super::ErrorBody)))]
pub async fn put_participant(
    State(app): State<AppState>,
    caller: Caller,
    Path((room, user)): Path<(String, String)>,
    ApiJson(body): ApiJson<ParticipantBody>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let id = caller.room(&room)?;
    let user = UserId::parse(&user)
        .map_err(|e| ApiError::new(ErrorCode::Invalid, format!("path `user`: {}", e.0)))?;
    app.node
        .participant_changed(&id, user, Some(body.role))
        .await?;
    Ok(no_content())
}

#[utoipa::path(delete, path = "/api/v1/rooms/{room}/participants/{user}", tag = "rooms",
    params(("room" = String, Path), ("user" = String, Path)),
    responses((status = 204, description = "removed"), (status = 404, body = super::ErrorBody)))]
pub async fn delete_participant(
    State(app): State<AppState>,
    caller: Caller,
    Path((room, user)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let id = caller.room(&room)?;
    let user = UserId::parse(&user)
        .map_err(|e| ApiError::new(ErrorCode::Invalid, format!("path `user`: {}", e.0)))?;
    app.node.participant_changed(&id, user, None).await?;
    Ok(no_content())
}

/// The room types: the ten seeded ones.
#[utoipa::path(get, path = "/api/v1/room-types", tag = "rooms", responses((status = 200, description = "{items: [roomType], nextCursor: null}")))]
pub async fn room_types(State(app): State<AppState>, _caller: Caller) -> ApiResult<Json<Value>> {
    Ok(Json(
        serde_json::json!({"items": app.node.room_types(), "nextCursor": null}),
    ))
}
