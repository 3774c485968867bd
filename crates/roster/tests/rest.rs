//! REST surface: error shapes and statuses, sessions and kicks, ops endpoints.

mod common;
use common::*;
use serde_json::json;

#[tokio::test]
async fn errors_are_json_with_stable_codes_and_statuses() {
    let s = Server::start_with(&[("ROSTER_LIMITS_MAX_BODY_BYTES", "1024")]).await;
    let user = s.token("alice");
    let cases: Vec<(u16, &str, (u16, &str))> = vec![];
    let _ = cases;
    let (code, e) = rest_as(&s.url("/api/v1/rooms"), "GET", None, &[], None).await;
    assert_eq!(
        (code, e["error"]["code"].clone()),
        (401, json!("unauthorized"))
    );
    let (code, e) = rest_as(&s.url("/api/v1/rooms"), "GET", Some("not-a-jwt"), &[], None).await;
    assert_eq!(
        (code, e["error"]["code"].clone()),
        (401, json!("unauthorized"))
    );
    let expired = s.token_full("alice", "acme", &[], Some(1_000_000));
    let (code, _) = s.rest("GET", "/api/v1/rooms", &expired, None).await;
    assert_eq!(code, 401);
    let (code, e) = s.rest("GET", "/api/v1/sessions", &user, None).await;
    assert_eq!(
        (code, e["error"]["code"].clone()),
        (403, json!("forbidden"))
    );
    let (code, e) = s.rest("GET", "/api/v1/nothing/here", &user, None).await;
    assert_eq!(
        (code, e["error"]["code"].clone()),
        (404, json!("not_found"))
    );
    let (code, e) = s.rest("PUT", "/api/v1/presence/batch", &user, None).await;
    assert_eq!(
        (code, e["error"]["code"].clone()),
        (405, json!("method_not_allowed"))
    );
    let big: Vec<String> = (0..200).map(|i| format!("user-{i}")).collect();
    let (code, e) = s
        .rest("POST", "/api/v1/presence/batch", &user, Some(json!(big)))
        .await;
    assert_eq!(
        (code, e["error"]["code"].clone()),
        (413, json!("payload_too_large"))
    );
    let (code, e) = s
        .rest(
            "POST",
            "/api/v1/presence/batch",
            &user,
            Some(json!({"not": "a list"})),
        )
        .await;
    assert_eq!((code, e["error"]["code"].clone()), (422, json!("invalid")));
    let resp = reqwest::Client::new()
        .post(s.url("/api/v1/presence/batch"))
        .bearer_auth(&user)
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let e: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(e["error"]["code"], "bad_request");
    let (code, e) = s
        .rest("GET", "/api/v1/users/bad%0Auser/online", &user, None)
        .await;
    assert_eq!((code, e["error"]["code"].clone()), (422, json!("invalid")));
}

#[tokio::test]
async fn rest_is_rate_limited_per_tenant() {
    let s = Server::start_with(&[("ROSTER_LIMITS_REST_REQUESTS_PER_SECOND", "5")]).await;
    let user = s.token("alice");
    let mut limited = 0;
    for _ in 0..30 {
        let (code, e) = s.rest("GET", "/api/v1/room-types", &user, None).await;
        if code == 429 {
            assert_eq!(e["error"]["code"], "rate_limited");
            limited += 1;
        }
    }
    assert!(limited > 0);
    let (code, _) = s
        .rest(
            "GET",
            "/api/v1/room-types",
            &s.token_full("x", "other", &[], None),
            None,
        )
        .await;
    assert_eq!(code, 200, "another tenant has its own budget");
}

#[tokio::test]
async fn sessions_list_filters_and_kick_closes_4011() {
    let s = Server::start().await;
    let mut a = s.client("alice").await;
    a.sub("R1", None).await.unwrap();
    let mut b = s.client("bob").await;
    b.sub("R2", None).await.unwrap();
    b.send(json!({"type": "STATUS", "status": "away"}))
        .await
        .unwrap();
    b.request(json!({"type": "HB", "active": false}), "HB_ACK", T)
        .await
        .unwrap();
    let mon = s.token_full("mon", "acme", &["monitor"], None);
    let (code, all) = s.rest("GET", "/api/v1/sessions", &mon, None).await;
    assert_eq!(code, 200);
    assert_eq!(all["items"].as_array().unwrap().len(), 2);
    assert!(all["nextCursor"].is_null());
    let (_, r1) = s.rest("GET", "/api/v1/sessions?room=R1", &mon, None).await;
    assert_eq!(r1["items"][0]["userId"], "alice");
    let (_, bob) = s.rest("GET", "/api/v1/sessions?user=bob", &mon, None).await;
    assert_eq!(bob["items"][0]["rooms"], json!(["R2"]));
    assert!(bob["items"][0]["connectedAt"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    let (_, away) = s
        .rest("GET", "/api/v1/sessions?status=away", &mon, None)
        .await;
    assert_eq!(away["items"][0]["userId"], "bob");
    let (code, _) = s
        .rest("GET", "/api/v1/sessions?status=dancing", &mon, None)
        .await;
    assert_eq!(code, 422);
    let (_, page) = s.rest("GET", "/api/v1/sessions?limit=1", &mon, None).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert!(page["nextCursor"].is_string());
    let (code, _) = s
        .rest("GET", "/api/v1/sessions?cursor=%%%", &mon, None)
        .await;
    assert_eq!(code, 422);

    let sid = a.session_id().unwrap().to_string();
    let (code, _) = s
        .rest("DELETE", &format!("/api/v1/sessions/{sid}"), &mon, None)
        .await;
    assert_eq!(code, 403, "monitor may read, not kick");
    let (code, _) = s
        .rest(
            "DELETE",
            &format!("/api/v1/sessions/{sid}"),
            &s.admin_token("acme"),
            None,
        )
        .await;
    assert_eq!(code, 204);
    assert_eq!(a.expect_close(T).await.unwrap(), Some(4011));
    let (code, _) = s
        .rest(
            "DELETE",
            &format!("/api/v1/sessions/{sid}"),
            &s.admin_token("acme"),
            None,
        )
        .await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn a_kicked_members_leave_says_kicked() {
    let s = Server::start().await;
    let mut a = s.client("alice").await;
    a.sub("R", None).await.unwrap();
    let b = s.client("bob").await;
    let mut b = b;
    b.sub("R", None).await.unwrap();
    next_change(&mut a, "R", "joins", "bob").await;
    let sid = b.session_id().unwrap().to_string();
    s.rest(
        "DELETE",
        &format!("/api/v1/sessions/{sid}"),
        &s.admin_token("acme"),
        None,
    )
    .await;
    let l = next_change(&mut a, "R", "leaves", "bob").await;
    assert_eq!(l["reason"], "kicked");
}

#[tokio::test]
async fn ops_endpoints_and_openapi() {
    let s = Server::start().await;
    let mut a = s.client("alice").await;
    a.sub("R", None).await.unwrap();
    a.send_text("junk").await.unwrap();
    next(&mut a, "ERROR").await;
    a.request(json!({"type":"LOCK","room":"R","field":"f"}), "LOCK_ACK", T)
        .await
        .unwrap();
    assert_eq!(
        reqwest::get(s.url("/healthz"))
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        reqwest::get(s.url("/readyz"))
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    let m = s.metrics().await;
    for name in [
        "roster_connections 1",
        "roster_sessions 1",
        "roster_rooms 1",
        "roster_messages_in_total{type=\"SUB\"} 1",
        "roster_messages_out_total{type=\"PRESENCE\"} 1",
        "roster_errors_total{code=\"invalid_json\"} 1",
        "roster_lock_acquisitions_total 1",
        "roster_expiry_queue_depth",
    ] {
        assert!(m.contains(name), "metrics lack {name}:\n{m}");
    }
    let doc: serde_json::Value = reqwest::get(s.url("/api/v1/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/v1/rooms/{room}/presence",
        "/api/v1/users/{id}/presence",
        "/api/v1/users/{id}/online",
        "/api/v1/presence/batch",
        "/api/v1/rooms",
        "/api/v1/rooms/{room}",
        "/api/v1/rooms/{room}/participants/{user}",
        "/api/v1/room-types",
        "/api/v1/sessions",
        "/api/v1/sessions/{id}",
        "/api/v1/rooms/{room}/locks",
        "/api/v1/rooms/{room}/locks/{field}",
        "/api/v1/lifecycle",
    ] {
        assert!(doc["paths"].get(path).is_some(), "openapi lacks {path}");
    }
    // What the server serves is the committed docs/openapi.json.
    let committed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/openapi.json"
        ))
        .unwrap(),
    )
    .unwrap();
    assert!(
        doc == committed,
        "the served document is not docs/openapi.json"
    );
}

/// The API reference page: Redoc, its script served by the binary (no CDN).
#[tokio::test]
async fn the_api_reference_page_is_served_with_its_viewer_embedded() {
    let s = Server::start().await;
    let page = reqwest::get(s.url("/api/docs")).await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = page.text().await.unwrap();
    assert!(
        html.contains(r#"spec-url="/api/v1/openapi.json""#),
        "{html}"
    );
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );
    let src = html
        .split(r#"<script src=""#)
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a script tag");
    let js = reqwest::get(s.url(src)).await.unwrap();
    assert_eq!(js.status().as_u16(), 200, "{src}");
    assert!(js.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    let body = js.bytes().await.unwrap();
    assert!(
        body.len() > 500_000,
        "the Redoc bundle, whole: {}",
        body.len()
    );
}

/// The quick start's first call: the presence of a room nobody is in is an
/// empty roster, not a 404; declared-room operations still answer 404.
#[tokio::test]
async fn the_presence_of_an_unused_room_is_empty() {
    let s = Server::start().await;
    let t = s.token("x");
    let (code, p) = s
        .rest("GET", "/api/v1/rooms/Order:123/presence", &t, None)
        .await;
    assert_eq!(code, 200, "{p}");
    assert_eq!(
        p,
        json!({"room": "Order:123", "seq": 0, "count": 0, "users": [], "stale": false,
               "busyBy": null, "version": 0, "locks": {}})
    );
    let (code, e) = s.rest("GET", "/api/v1/rooms/Order:123", &t, None).await;
    assert_eq!(
        (code, e["error"]["code"].clone()),
        (404, json!("not_found"))
    );
    let (code, e) = s
        .rest("GET", "/api/v1/rooms/Order:123/locks", &t, None)
        .await;
    assert_eq!(
        (code, e["error"]["code"].clone()),
        (404, json!("not_found"))
    );
    let (code, e) = s
        .rest("GET", "/api/v1/rooms/bad%20key/presence", &t, None)
        .await;
    assert_eq!((code, e["error"]["code"].clone()), (422, json!("invalid")));
}

#[tokio::test]
async fn a_bad_websocket_handshake_gets_a_clear_http_error() {
    let s = Server::start().await;
    let plain = reqwest::get(s.url("/ws")).await.unwrap();
    assert_eq!(plain.status().as_u16(), 400);
    let e: serde_json::Value = plain.json().await.unwrap();
    assert_eq!(e["error"]["code"], "bad_request");
    let old = reqwest::Client::new()
        .get(s.url("/ws"))
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("sec-websocket-version", "8")
        .send()
        .await
        .unwrap();
    assert_eq!(old.status().as_u16(), 426);
    assert_eq!(old.headers()["sec-websocket-version"], "13");
}

#[tokio::test]
async fn large_messages_arrive_whole_through_fragments() {
    // A snapshot far above the 1 KiB fragment size, with multi-byte characters
    // that must not be cut.
    let s = Server::start().await;
    let mut members = vec![];
    for i in 0..20 {
        let mut c = s.client(&format!("ü-{i}")).await;
        c.sub("Big", Some(json!({"note": "žluťoučký kůň ".repeat(20)})))
            .await
            .unwrap();
        members.push(c);
    }
    let mut late = s.client("late").await;
    let p = late.sub("Big", None).await.unwrap();
    assert_eq!(p["count"], 21);
    assert!(p.to_string().len() > 10_000);
    let u = p["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["userId"] == "ü-7")
        .unwrap();
    assert_eq!(
        u["sessions"][0]["state"]["note"],
        "žluťoučký kůň ".repeat(20)
    );
}

#[tokio::test]
async fn bad_path_encodings_get_the_api_error_shape() {
    let s = Server::start().await;
    let (code, e) = s
        .rest("GET", "/api/v1/rooms/%FF%FE/presence", &s.token("x"), None)
        .await;
    assert_eq!(
        (code, e["error"]["code"].clone()),
        (422, json!("invalid")),
        "{e}"
    );
}
