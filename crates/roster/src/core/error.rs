//! The core's one error type. Each variant has a stable machine code that is the
//! wire `ERROR.code` (SPEC §3) and maps to an HTTP status for REST (SPEC §4).

use serde::Serialize;

use super::types::Role;
use crate::ids::RoomKey;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidJson,
    BadRequest,
    UnknownType,
    NotAuthenticated,
    AuthFailed,
    InvalidRoom,
    StateTooLarge,
    NotSubscribed,
    RoomFull,
    RoomClosed,
    Forbidden,
    TooManyRooms,
    TooManyWatched,
    NotLockOwner,
    RateLimited,
    TooManyErrors,
    Internal,
    // REST-only codes (SPEC §4)
    Unauthorized,
    NotFound,
    Conflict,
    Invalid,
    PayloadTooLarge,
    MethodNotAllowed,
    Unavailable,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            InvalidJson => "invalid_json",
            BadRequest => "bad_request",
            UnknownType => "unknown_type",
            NotAuthenticated => "not_authenticated",
            AuthFailed => "auth_failed",
            InvalidRoom => "invalid_room",
            StateTooLarge => "state_too_large",
            NotSubscribed => "not_subscribed",
            RoomFull => "room_full",
            RoomClosed => "room_closed",
            Forbidden => "forbidden",
            TooManyRooms => "too_many_rooms",
            TooManyWatched => "too_many_watched",
            NotLockOwner => "not_lock_owner",
            RateLimited => "rate_limited",
            TooManyErrors => "too_many_errors",
            Internal => "internal",
            Unauthorized => "unauthorized",
            NotFound => "not_found",
            Conflict => "conflict",
            Invalid => "invalid",
            PayloadTooLarge => "payload_too_large",
            MethodNotAllowed => "method_not_allowed",
            Unavailable => "unavailable",
        }
    }

    /// HTTP status of this code when it reaches a REST caller.
    pub fn http_status(self) -> u16 {
        use ErrorCode::*;
        match self {
            InvalidJson | BadRequest | UnknownType => 400,
            NotAuthenticated | AuthFailed | Unauthorized => 401,
            Forbidden => 403,
            NotFound | NotSubscribed => 404,
            Conflict | RoomFull | RoomClosed | NotLockOwner => 409,
            Invalid | InvalidRoom | StateTooLarge | TooManyRooms | TooManyWatched => 422,
            PayloadTooLarge => 413,
            MethodNotAllowed => 405,
            RateLimited | TooManyErrors => 429,
            Unavailable => 503,
            Internal => 500,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct CoreError {
    pub code: ErrorCode,
    pub message: String,
}

impl CoreError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    // The room rules' errors, worded once for every engine (the Redis engine
    // gets a code and a detail back from its scripts and words them here too).

    pub fn not_subscribed(room: &RoomKey) -> Self {
        Self::new(
            ErrorCode::NotSubscribed,
            format!("not subscribed to {room}"),
        )
    }
    pub fn room_closed(room: &RoomKey, closed: bool) -> Self {
        let what = if closed { "closed" } else { "in maintenance" };
        Self::new(ErrorCode::RoomClosed, format!("room {room} is {what}"))
    }
    pub fn not_participant(room: &RoomKey) -> Self {
        Self::new(
            ErrorCode::Forbidden,
            format!("room {room} is private and you are no participant"),
        )
    }
    /// `action` needs role `needed`; the member has `have`.
    pub fn role_needed(room: &RoomKey, action: &str, needed: Role, have: Role) -> Self {
        Self::new(
            ErrorCode::Forbidden,
            format!(
                "{action} needs role {} or higher in {room}; you are {}",
                needed.as_str(),
                have.as_str()
            ),
        )
    }
    pub fn room_full(room: &RoomKey, capacity: u32) -> Self {
        Self::new(
            ErrorCode::RoomFull,
            format!("room {room} is full ({capacity} sessions)"),
        )
    }
    pub fn not_lock_owner(room: &RoomKey, field: &str) -> Self {
        Self::new(
            ErrorCode::NotLockOwner,
            format!("{field} in {room} is locked by another session"),
        )
    }
    pub fn no_room(room: &RoomKey) -> Self {
        Self::new(ErrorCode::NotFound, format!("no room {room}"))
    }
    pub fn room_exists(room: &RoomKey) -> Self {
        Self::new(ErrorCode::Conflict, format!("room {room} already exists"))
    }
}
