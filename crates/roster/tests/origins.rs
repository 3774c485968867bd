//! `http.allowed_origins`: a WebSocket upgrade from a page of another origin is
//! refused with 403 before the upgrade; clients without `Origin` are not browsers
//! and always get in; the REST API answers CORS for allowed origins only.

mod common;
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::process::Command;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

const APPS: &str = "https://app.example, http://localhost:3000";

/// Opens `/ws` with `Origin: origin` (none when `None`): `Ok` once WELCOME
/// arrived, `Err((status, body))` when the upgrade was refused.
async fn ws_with_origin(s: &Server, origin: Option<&str>) -> Result<(), (u16, Value)> {
    let mut req = s.ws_url().into_client_request().unwrap();
    if let Some(o) = origin {
        req.headers_mut().insert("origin", o.parse().unwrap());
    }
    let mut ws = match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => ws,
        Err(tungstenite::Error::Http(resp)) => {
            let body = resp.body().as_deref().unwrap_or_default();
            return Err((
                resp.status().as_u16(),
                serde_json::from_slice(body).unwrap_or(Value::Null),
            ));
        }
        Err(e) => panic!("connect: {e}"),
    };
    let hello = json!({"type": "HELLO", "token": s.token("alice")}).to_string();
    ws.send(Message::text(hello)).await.unwrap();
    loop {
        match tokio::time::timeout(T, ws.next())
            .await
            .expect("WELCOME in time")
        {
            Some(Ok(Message::Text(t))) if t.contains("\"WELCOME\"") => return Ok(()),
            Some(Ok(_)) => continue,
            other => panic!("no WELCOME: {other:?}"),
        }
    }
}

/// A request with `Origin` (and more headers); status and headers of the answer.
async fn with_origin(
    s: &Server,
    method: &str,
    path: &str,
    origin: &str,
    extra: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap) {
    let mut req = reqwest::Client::new()
        .request(method.parse().unwrap(), s.url(path))
        .header("origin", origin)
        .bearer_auth(ADMIN_KEY)
        .header("x-tenant", "acme");
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("http");
    (resp.status().as_u16(), resp.headers().clone())
}

fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn no_cors_headers(h: &reqwest::header::HeaderMap) -> bool {
    !h.keys().any(|k| k.as_str().starts_with("access-control-"))
}

#[tokio::test]
async fn a_websocket_from_a_page_of_another_origin_is_refused_with_403() {
    let s = Server::start_with(&[("ROSTER_HTTP_ALLOWED_ORIGINS", APPS)]).await;
    let (status, body) = ws_with_origin(&s, Some("https://evil.example"))
        .await
        .expect_err("refused");
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], "forbidden", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("https://evil.example"),
        "{body}"
    );
    // The same host on another port or scheme is another origin.
    assert!(ws_with_origin(&s, Some("http://app.example"))
        .await
        .is_err());
    assert!(ws_with_origin(&s, Some("http://localhost:3001"))
        .await
        .is_err());
    assert!(ws_with_origin(&s, Some("null")).await.is_err());
    // Allowed origins, and clients that are not browsers (no Origin), get in.
    ws_with_origin(&s, Some("https://app.example"))
        .await
        .unwrap();
    ws_with_origin(&s, Some("http://localhost:3000"))
        .await
        .unwrap();
    ws_with_origin(&s, None).await.unwrap();
}

#[tokio::test]
async fn a_star_allows_any_origin() {
    let s = Server::start_with(&[("ROSTER_HTTP_ALLOWED_ORIGINS", "*")]).await;
    ws_with_origin(&s, Some("https://anything.example"))
        .await
        .unwrap();
    let (status, h) = with_origin(
        &s,
        "OPTIONS",
        "/api/v1/sessions",
        "https://anything.example",
        &[("access-control-request-method", "GET")],
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(
        header(&h, "access-control-allow-origin"),
        "https://anything.example"
    );
}

#[tokio::test]
async fn without_the_setting_any_origin_is_allowed_and_a_public_listener_warns() {
    let s = Server::start().await;
    ws_with_origin(&s, Some("https://anything.example"))
        .await
        .unwrap();
    let quiet = s.log.lock().unwrap().join("\n");
    assert!(
        !quiet.contains("allowed_origins"),
        "no warning on loopback: {quiet}"
    );
    let public = Server::start_with(&[("ROSTER_LISTEN", "0.0.0.0:0")]).await;
    let log = public.log.lock().unwrap().join("\n");
    assert!(
        log.contains("http.allowed_origins is not set"),
        "warning when listening beyond loopback: {log}"
    );
}

#[tokio::test]
async fn rest_answers_cors_for_allowed_origins_only() {
    let s = Server::start_with(&[("ROSTER_HTTP_ALLOWED_ORIGINS", APPS)]).await;
    let preflight = [
        ("access-control-request-method", "POST"),
        (
            "access-control-request-headers",
            "authorization, content-type, x-tenant",
        ),
    ];
    let (status, h) = with_origin(
        &s,
        "OPTIONS",
        "/api/v1/rooms",
        "https://app.example",
        &preflight,
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(
        header(&h, "access-control-allow-origin"),
        "https://app.example"
    );
    assert!(
        header(&h, "vary").to_lowercase().contains("origin"),
        "{h:?}"
    );
    assert!(header(&h, "access-control-allow-methods").contains("POST"));
    let allow_headers = header(&h, "access-control-allow-headers").to_lowercase();
    for wanted in ["authorization", "content-type", "x-tenant"] {
        assert!(allow_headers.contains(wanted), "{allow_headers}");
    }
    assert!(!header(&h, "access-control-max-age").is_empty());

    let (status, h) = with_origin(
        &s,
        "OPTIONS",
        "/api/v1/rooms",
        "https://evil.example",
        &preflight,
    )
    .await;
    assert_eq!(status, 403);
    assert!(no_cors_headers(&h), "{h:?}");

    let (status, h) =
        with_origin(&s, "GET", "/api/v1/sessions", "http://localhost:3000", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&h, "access-control-allow-origin"),
        "http://localhost:3000"
    );
    let (status, h) = with_origin(&s, "GET", "/api/v1/sessions", "https://evil.example", &[]).await;
    assert_eq!(status, 200, "served, but the browser may not read it");
    assert!(no_cors_headers(&h), "{h:?}");
}

#[test]
fn a_bad_origin_in_the_configuration_stops_start_up() {
    for (value, why) in [
        ("https://app.example/app", "path"),
        ("app.example", "scheme"),
        ("https://app.example:99999", "port"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_roster"))
            .args(["serve"])
            .env_clear()
            .env(
                "ROSTER_HTTP_ALLOWED_ORIGINS",
                format!("https://ok.example,{value}"),
            )
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{value}: {err}");
        assert!(
            err.contains("http.allowed_origins") && err.contains(value) && err.contains(why),
            "{value}: {err}"
        );
    }
}
