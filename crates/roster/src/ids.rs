//! Identifier newtypes, validated once at the edge (token, wire message, REST path)
//! so the core never sees a malformed tenant, user or room key.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Why an identifier was refused; the message is shown to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidId(pub String);

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $describe:expr, $pattern:expr, $example:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(Arc<str>);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $name::parse(&s).map_err(serde::de::Error::custom)
            }
        }
        /// In the OpenAPI document: a string, with the rule above as a pattern.
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .description(Some($describe))
                    .pattern(Some($pattern))
                    .examples([$example])
                    .into()
            }
        }
        impl utoipa::ToSchema for $name {}
    };
}

id_type!(
    /// `[A-Za-z0-9_-]{1,64}` (SPEC §3 "Identifiers").
    TenantId,
    "A tenant id: `[A-Za-z0-9_-]{1,64}`.",
    "^[A-Za-z0-9_-]{1,64}$",
    "acme"
);
id_type!(
    /// The token's `sub`: 1–256 characters, no control characters.
    UserId,
    "A user id (the token's `sub`): 1-256 characters, no control characters.",
    "^[^\\u0000-\\u001F\\u007F-\\u009F]{1,256}$",
    "alice"
);
id_type!(
    /// `[A-Za-z0-9_.:\-/@]{1,200}`, unique per tenant (SPEC §1).
    RoomKey,
    "A room key: `[A-Za-z0-9_.:-/@]{1,200}`, unique per tenant (`<entity>:<id>` for a record's room).",
    "^[A-Za-z0-9_.:/@-]{1,200}$",
    "Order:123"
);
id_type!(
    /// Server-assigned, unique per process run (random 96 bits, URL-safe).
    SessionId,
    "A session id, assigned by the server.",
    "^[^\\u0000-\\u001F\\u007F-\\u009F]{1,64}$",
    "q3Jx0bW9sZWN1bGVz"
);

impl TenantId {
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        if (1..=64).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            Ok(Self(s.into()))
        } else {
            Err(InvalidId(format!(
                "tenant {s:?} must match [A-Za-z0-9_-]{{1,64}}"
            )))
        }
    }
    pub fn default_tenant() -> Self {
        Self("default".into())
    }
}

impl UserId {
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        let n = s.chars().count();
        if (1..=256).contains(&n) && !s.chars().any(char::is_control) {
            Ok(Self(s.into()))
        } else {
            Err(InvalidId(
                "user id must be 1-256 characters without control characters".into(),
            ))
        }
    }
}

impl RoomKey {
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        if (1..=200).contains(&s.len())
            && s.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-' | b'/' | b'@')
            })
        {
            Ok(Self(s.into()))
        } else {
            Err(InvalidId(format!(
                "room key {:?} must match [A-Za-z0-9_.:\\-/@]{{1,200}}",
                truncate(s, 80)
            )))
        }
    }
    /// `entity` + `id` addressing: room `"<entity>:<id>"`.
    pub fn from_entity(entity: &str, id: &str) -> Result<Self, InvalidId> {
        Self::parse(&format!("{entity}:{id}"))
    }
}

impl SessionId {
    pub fn new_random() -> Self {
        use rand::RngExt;
        let mut bytes = [0u8; 12];
        rand::rng().fill(&mut bytes);
        use base64::Engine;
        Self(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(bytes)
                .into(),
        )
    }
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        if (1..=64).contains(&s.len()) && !s.chars().any(char::is_control) {
            Ok(Self(s.into()))
        } else {
            Err(InvalidId("bad session id".into()))
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A room is addressed by tenant + key everywhere inside the server.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct RoomId {
    pub tenant: TenantId,
    pub key: RoomKey,
}

/// A user is addressed by tenant + user id everywhere inside the server.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct UserRef {
    pub tenant: TenantId,
    pub user: UserId,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_keys_follow_the_pattern() {
        assert!(RoomKey::parse("Order:123").is_ok());
        assert!(RoomKey::parse("a/b@c.d-e_f").is_ok());
        assert!(RoomKey::parse("").is_err());
        assert!(RoomKey::parse("has space").is_err());
        assert!(RoomKey::parse(&"x".repeat(201)).is_err());
        assert!(RoomKey::parse(&"x".repeat(200)).is_ok());
        assert_eq!(
            RoomKey::from_entity("Order", "7").unwrap().as_str(),
            "Order:7"
        );
    }

    #[test]
    fn tenants_and_users() {
        assert!(TenantId::parse("acme-1_x").is_ok());
        assert!(TenantId::parse("a.b").is_err());
        assert!(TenantId::parse(&"t".repeat(65)).is_err());
        assert!(UserId::parse("alice@example.com").is_ok());
        assert!(UserId::parse("bad\nuser").is_err());
        assert!(UserId::parse("").is_err());
    }

    #[test]
    fn session_ids_are_unique() {
        let a = SessionId::new_random();
        let b = SessionId::new_random();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 16);
    }
}
