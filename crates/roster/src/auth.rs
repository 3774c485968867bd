//! JWT → [`Identity`]. HS256 with `auth.jwt_secret`, or RS256/ES256 with the PEM in
//! `auth.jwt_public_key`; `alg: none` is never accepted. Also mints dev tokens
//! (`roster token`) and recognises the operator admin key.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::core::types::Role;
use crate::ids::{TenantId, UserId};

/// Who is speaking, established once per connection or request.
#[derive(Debug, Clone)]
pub struct Identity {
    pub tenant: TenantId,
    pub user: UserId,
    pub roles: Vec<String>,
    pub name: Option<String>,
    pub info: Option<serde_json::Value>,
}

impl Identity {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
    pub fn is_admin(&self) -> bool {
        self.has_role("admin")
    }
    /// The participant role this token carries into open rooms: `owner` for admins,
    /// else the highest participant role named in `roles`, else `operator`.
    pub fn open_room_role(&self) -> Role {
        if self.is_admin() {
            return Role::Owner;
        }
        self.roles
            .iter()
            .filter_map(|r| Role::parse(r))
            .max()
            .unwrap_or(Role::Operator)
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, deserialize_with = "roles_de")]
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
}

/// `roles` may be an array or a comma-separated string.
fn roles_de<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum R {
        List(Vec<String>),
        One(String),
    }
    Ok(match Option::<R>::deserialize(d)? {
        None => vec![],
        Some(R::List(v)) => v,
        Some(R::One(s)) => s
            .split(',')
            .map(|x| x.trim().to_string())
            .filter(|x| !x.is_empty())
            .collect(),
    })
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AuthError(pub String);

pub struct Authenticator {
    decoding: DecodingKey,
    validation: Validation,
    encoding: Option<EncodingKey>,
    admin_key: Option<String>,
}

impl Authenticator {
    /// Builds from config. Returns the authenticator and, when no key was configured,
    /// the random dev secret that was generated (the caller prints it with a warning).
    pub fn from_config(config: &Config) -> Result<(Self, Option<String>), AuthError> {
        let leeway = config.auth.leeway.map(|d| d.0.as_secs()).unwrap_or(0);
        let (decoding, algs, encoding, generated) = if let Some(path) = &config.auth.jwt_public_key
        {
            let pem = std::fs::read(path)
                .map_err(|e| AuthError(format!("auth.jwt_public_key {}: {e}", path.display())))?;
            if let Ok(k) = DecodingKey::from_rsa_pem(&pem) {
                (k, vec![Algorithm::RS256], None, None)
            } else if let Ok(k) = DecodingKey::from_ec_pem(&pem) {
                (k, vec![Algorithm::ES256], None, None)
            } else {
                return Err(AuthError(format!(
                    "auth.jwt_public_key {}: not an RSA or EC public key in PEM",
                    path.display()
                )));
            }
        } else {
            let (secret, generated) = match &config.auth.jwt_secret {
                Some(s) => (s.clone(), None),
                None => {
                    let s = crate::ids::SessionId::new_random().as_str().to_string()
                        + crate::ids::SessionId::new_random().as_str();
                    (s.clone(), Some(s))
                }
            };
            (
                DecodingKey::from_secret(secret.as_bytes()),
                vec![Algorithm::HS256],
                Some(EncodingKey::from_secret(secret.as_bytes())),
                generated,
            )
        };
        let mut validation = Validation::new(algs[0]);
        validation.algorithms = algs;
        validation.leeway = leeway;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.required_spec_claims = ["sub".to_string()].into_iter().collect();
        validation.validate_aud = false;
        Ok((
            Self {
                decoding,
                validation,
                encoding,
                admin_key: config.auth.admin_key.clone(),
            },
            generated,
        ))
    }

    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| AuthError(format!("invalid token: {e}")))?;
        let c = data.claims;
        let tenant = match &c.tenant {
            Some(t) => TenantId::parse(t).map_err(|e| AuthError(e.0))?,
            None => TenantId::default_tenant(),
        };
        let user = UserId::parse(&c.sub).map_err(|e| AuthError(e.0))?;
        Ok(Identity {
            tenant,
            user,
            roles: c.roles,
            name: c.name,
            info: c.info,
        })
    }

    /// Constant-time comparison with the configured operator key.
    pub fn is_admin_key(&self, bearer: &str) -> bool {
        match &self.admin_key {
            Some(k) if k.len() == bearer.len() => {
                k.bytes()
                    .zip(bearer.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
            }
            _ => false,
        }
    }

    pub fn mint(&self, claims: &Claims) -> Result<String, AuthError> {
        let key = self.encoding.as_ref().ok_or_else(|| {
            AuthError("cannot mint: only a public key is configured (set auth.jwt_secret)".into())
        })?;
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, key)
            .map_err(|e| AuthError(e.to_string()))
    }
}

pub fn expiry_in(ttl: Duration) -> u64 {
    (SystemTime::now() + ttl)
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(secret: &str) -> Authenticator {
        let mut c = Config::default();
        c.auth.jwt_secret = Some(secret.into());
        Authenticator::from_config(&c).unwrap().0
    }

    fn claims(sub: &str, tenant: Option<&str>, exp: Option<u64>) -> Claims {
        Claims {
            sub: sub.into(),
            tenant: tenant.map(Into::into),
            roles: vec!["admin".into()],
            name: None,
            info: None,
            exp,
        }
    }

    #[test]
    fn roundtrip_and_default_tenant() {
        let a = auth("s3cret");
        let t = a
            .mint(&claims(
                "alice",
                None,
                Some(expiry_in(Duration::from_secs(60))),
            ))
            .unwrap();
        let id = a.verify(&t).unwrap();
        assert_eq!(id.user.as_str(), "alice");
        assert_eq!(id.tenant.as_str(), "default");
        assert!(id.is_admin());
    }

    #[test]
    fn wrong_secret_expired_bad_tenant_and_none_alg_fail() {
        let a = auth("one");
        let b = auth("two");
        let t = b.mint(&claims("alice", Some("acme"), None)).unwrap();
        assert!(a.verify(&t).is_err());
        let old = a.mint(&claims("alice", None, Some(1000))).unwrap();
        assert!(a.verify(&old).unwrap_err().0.contains("xpired"));
        let bad = a.mint(&claims("alice", Some("no spaces"), None)).unwrap();
        assert!(a.verify(&bad).is_err());
        // alg: none, unsigned
        use base64::Engine;
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let none = format!(
            "{}.{}.",
            e.encode(r#"{"alg":"none","typ":"JWT"}"#),
            e.encode(r#"{"sub":"alice"}"#)
        );
        assert!(a.verify(&none).is_err());
    }

    #[test]
    fn roles_as_string_and_admin_key() {
        let a = auth("k");
        let t = a
            .mint(&Claims {
                roles: vec![],
                ..claims("bob", None, None)
            })
            .unwrap();
        assert!(!a.verify(&t).unwrap().is_admin());
        let c: Claims = serde_json::from_str(r#"{"sub":"x","roles":"admin, monitor"}"#).unwrap();
        assert_eq!(c.roles, vec!["admin", "monitor"]);
        assert!(!a.is_admin_key("anything"));
    }
}
