//! Room types: templates for capacity, idle TTL and visibility.
//! The ten seeded types come from the Spidi design (SPEC §1).

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    #[default]
    Open,
    Private,
}

/// `[A-Z0-9_]{1,32}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct RoomTypeCode(pub String);

/// In the OpenAPI document: a string with the rule above as a pattern.
impl utoipa::PartialSchema for RoomTypeCode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("A room type's code: `[A-Z0-9_]{1,32}`."))
            .pattern(Some("^[A-Z0-9_]{1,32}$"))
            .examples(["COLLABORATION"])
            .into()
    }
}
impl utoipa::ToSchema for RoomTypeCode {}

impl RoomTypeCode {
    pub fn parse(s: &str) -> Result<Self, String> {
        if (1..=32).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        {
            Ok(Self(s.to_string()))
        } else {
            Err(format!("room type {s:?} must match [A-Z0-9_]{{1,32}}"))
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomType {
    pub code: RoomTypeCode,
    pub capacity: u32,
    #[serde(serialize_with = "ser_secs")]
    pub idle_ttl: Duration,
    pub visibility: Visibility,
    #[serde(skip)]
    pub timing: RoomTiming,
}

/// A room type's timing overrides (SPEC §1, "default heartbeat/timeout
/// overrides"); `None` is the server's `timing.*`. A member whose session is
/// silent for longer than its room's `session_timeout` leaves that room (reason
/// `timeout`) and stays in the others; clients heartbeat at the smallest
/// `heartbeat_interval` of their rooms (the `PRESENCE` answer to `SUB` names it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RoomTiming {
    pub heartbeat_interval: Option<Duration>,
    pub session_timeout: Option<Duration>,
}

fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

pub const GENERIC: &str = "GENERIC";

/// The ten seeded types: code, capacity, idle TTL.
/// WEBRTC rooms (calls) show a dropped participant sooner than the server's
/// default: heartbeats every 5 s, out of the room after 20 s of silence (the
/// server's own pings, every `timing.heartbeat_interval`, 15 s by default, keep
/// a client that only answers them inside that bound).
pub const WEBRTC_TIMING: RoomTiming = RoomTiming {
    heartbeat_interval: Some(Duration::from_secs(5)),
    session_timeout: Some(Duration::from_secs(20)),
};

pub fn seeded() -> Vec<RoomType> {
    const H: u64 = 3600;
    const M: u64 = 60;
    [
        ("WEBRTC", 50, 2 * H),
        ("CHAT", 500, H),
        ("NOTIFICATION", 10_000, 30 * M),
        ("BROADCAST", 1000, 4 * H),
        ("COLLABORATION", 25, H),
        ("SUPPORT", 100, 30 * M),
        ("GAMING", 16, 2 * H),
        ("MONITORING", 10, 24 * H),
        ("EVENT", 200, 3 * H),
        (GENERIC, 100, H),
    ]
    .into_iter()
    .map(|(code, capacity, ttl)| RoomType {
        code: RoomTypeCode(code.into()),
        capacity,
        idle_ttl: Duration::from_secs(ttl),
        visibility: Visibility::Open,
        timing: if code == "WEBRTC" {
            WEBRTC_TIMING
        } else {
            RoomTiming::default()
        },
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_seeded_types() {
        let t = seeded();
        assert_eq!(t.len(), 10);
        assert!(
            t.iter().any(|t| t.code.0 == GENERIC),
            "Node::generic relies on it"
        );
        let gaming = t.iter().find(|t| t.code.0 == "GAMING").unwrap();
        assert_eq!(gaming.capacity, 16);
        assert_eq!(gaming.idle_ttl, Duration::from_secs(7200));
        assert!(RoomTypeCode::parse("chat").is_err());
    }
}
