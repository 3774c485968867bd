//! Mints the HS256 tokens the bench's sessions authenticate with (claims `sub`,
//! `tenant`, `roles`, `exp`), signed with the same secret as the server under test.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, EncodingKey, Header};
use serde::Serialize;

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    tenant: &'a str,
    roles: &'a [&'a str],
    exp: u64,
}

/// Signs tokens valid for one day.
#[derive(Clone)]
pub struct TokenMinter {
    key: EncodingKey,
    tenant: String,
}

impl TokenMinter {
    pub fn new(secret: &str, tenant: &str) -> Self {
        Self {
            key: EncodingKey::from_secret(secret.as_bytes()),
            tenant: tenant.to_owned(),
        }
    }

    pub fn mint(&self, user: &str, roles: &[&str]) -> Result<String, String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| e.to_string())?;
        let claims = Claims {
            sub: user,
            tenant: &self.tenant,
            roles,
            exp: now.as_secs() + 24 * 3600,
        };
        encode(&Header::default(), &claims, &self.key)
            .map_err(|e| format!("cannot sign a token: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_hs256_with_the_claims_the_server_reads() {
        let t = TokenMinter::new("s3cret", "acme")
            .mint("alice", &["admin"])
            .unwrap();
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        v.set_required_spec_claims(&["exp", "sub"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(
            &t,
            &jsonwebtoken::DecodingKey::from_secret(b"s3cret"),
            &v,
        )
        .unwrap();
        assert_eq!(data.claims["sub"], "alice");
        assert_eq!(data.claims["tenant"], "acme");
        assert_eq!(data.claims["roles"], serde_json::json!(["admin"]));
    }
}
