//! RS256 / ES256 tokens checked against a configured public key.

mod common;
use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use roster_client::{Client, ConnectOptions, Hello};
use serde_json::json;

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn claims(user: &str) -> serde_json::Value {
    json!({"sub": user, "tenant": "acme", "exp": roster::auth::expiry_in(std::time::Duration::from_secs(600))})
}

async fn hello(s: &Server, token: String) -> Result<serde_json::Value, roster_client::ClientError> {
    let mut c = Client::connect(ConnectOptions::new(s.ws_url()))
        .await
        .unwrap();
    c.hello(Hello::with_token(token)).await
}

#[tokio::test]
async fn rs256_and_es256_tokens_verify_against_the_public_key() {
    for (alg, private, public) in [
        (Algorithm::RS256, "rs256-private.pem", "rs256-public.pem"),
        (
            Algorithm::ES256,
            "es256-private.pk8.pem",
            "es256-public.pem",
        ),
    ] {
        let s = Server::start_with(&[("ROSTER_AUTH_JWT_PUBLIC_KEY", &fixture(public))]).await;
        let pem = std::fs::read(fixture(private)).unwrap();
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
            _ => EncodingKey::from_ec_pem(&pem).unwrap(),
        };
        let good = encode(&Header::new(alg), &claims("alice"), &key).unwrap();
        let w = hello(&s, good.clone()).await.unwrap();
        assert_eq!(w["userId"], "alice", "{alg:?}");
        let (code, _) = s
            .rest("GET", "/api/v1/users/alice/online", &good, None)
            .await;
        assert_eq!(code, 200);

        // An HS256 token "signed" with the public key's text (algorithm confusion)
        // and a token signed by another key are both refused.
        let public_pem = std::fs::read(fixture(public)).unwrap();
        let confused = encode(
            &Header::new(Algorithm::HS256),
            &claims("mallory"),
            &EncodingKey::from_secret(&public_pem),
        )
        .unwrap();
        match hello(&s, confused).await {
            Err(roster_client::ClientError::Server { code, .. }) => assert_eq!(code, "auth_failed"),
            other => panic!("{alg:?}: {other:?}"),
        }
        let other = encode(
            &Header::new(Algorithm::HS256),
            &claims("mallory"),
            &EncodingKey::from_secret(b"x"),
        )
        .unwrap();
        assert!(hello(&s, other).await.is_err());
    }
}

#[test]
fn a_bad_public_key_file_stops_start_up() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_roster"))
        .env_clear()
        .env("ROSTER_AUTH_JWT_PUBLIC_KEY", fixture("README.md"))
        .env("ROSTER_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("auth.jwt_public_key") && err.contains("PEM"),
        "{err}"
    );
}
