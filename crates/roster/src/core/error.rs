//! The core's one error type. Each variant has a stable machine code that is the
//! wire `ERROR.code` (SPEC §3) and maps to an HTTP status for REST (SPEC §4).

use serde::Serialize;

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
}
