//! Nothing ever crosses tenants: not over the WebSocket, not over REST.

mod common;
use common::*;
use roster_client::Hello;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn same_room_key_and_user_id_in_two_tenants_never_meet() {
    let s = Server::start().await;
    let mut acme = s.client_in("alice", "acme", Hello::default()).await;
    let mut globex = s.client_in("alice", "globex", Hello::default()).await;
    acme.sub("Order:1", None).await.unwrap();
    let p = globex.sub("Order:1", None).await.unwrap();
    assert_eq!(p["count"], 1, "globex sees only itself: {p}");
    acme.request(
        json!({"type": "LOCK", "room": "Order:1", "field": "f"}),
        "LOCK_ACK",
        T,
    )
    .await
    .unwrap();
    let ack = globex
        .request(
            json!({"type": "LOCK", "room": "Order:1", "field": "f"}),
            "LOCK_ACK",
            T,
        )
        .await
        .unwrap();
    assert_eq!(ack["success"], true, "locks are per tenant");
    // globex may get the (empty) diff that carried its own join; never acme's.
    let mine = globex.session_id().unwrap().to_string();
    let end = tokio::time::Instant::now() + Duration::from_millis(300);
    while let Ok(roster_client::Incoming::Message(m)) = globex
        .recv(end.saturating_duration_since(tokio::time::Instant::now()))
        .await
    {
        if m["type"] == "PRESENCE_DIFF" {
            for key in ["joins", "updates", "leaves"] {
                for e in m[key].as_array().unwrap() {
                    let sid = e
                        .get("sessionId")
                        .or_else(|| e["session"].get("sessionId"))
                        .unwrap();
                    assert_eq!(sid, mine.as_str(), "only its own session: {m}");
                }
            }
        }
    }
    expect_none(&mut globex, "LOCK", Duration::from_millis(100)).await;

    // Watching "bob" in globex does not see acme's bob.
    let snap = globex
        .request(
            json!({"type": "WATCH", "users": ["bob"]}),
            "STATUS_SNAPSHOT",
            T,
        )
        .await
        .unwrap();
    let _bob = s.client_in("bob", "acme", Hello::default()).await;
    assert_eq!(snap["users"]["bob"]["status"], "offline");
    expect_none(&mut globex, "STATUS", Duration::from_millis(300)).await;

    // clientId resume is scoped to tenant + user.
    let mut a1 = s
        .client_in(
            "carol",
            "acme",
            Hello {
                client_id: Some("c".into()),
                ..Default::default()
            },
        )
        .await;
    let g1 = s
        .client_in(
            "carol",
            "globex",
            Hello {
                client_id: Some("c".into()),
                ..Default::default()
            },
        )
        .await;
    assert_ne!(a1.session_id(), g1.session_id());
    a1.request(json!({"type": "HB"}), "HB_ACK", T)
        .await
        .expect("not replaced by the other tenant");
}

#[tokio::test]
async fn rest_answers_for_the_callers_tenant_only() {
    let s = Server::start().await;
    let mut acme = s.client_in("alice", "acme", Hello::default()).await;
    acme.sub("Secret:1", None).await.unwrap();
    acme.request(
        json!({"type": "LOCK", "room": "Secret:1", "field": "f"}),
        "LOCK_ACK",
        T,
    )
    .await
    .unwrap();
    let sid = acme.session_id().unwrap().to_string();
    let globex = s.admin_token("globex");
    // Globex's Secret:1 is another room: empty, nothing of acme's.
    let (code, p) = s
        .rest("GET", "/api/v1/rooms/Secret:1/presence", &globex, None)
        .await;
    assert_eq!(
        (code, p["count"].clone(), p["users"].clone()),
        (200, json!(0), json!([]))
    );
    assert_eq!(p["locks"], json!({}), "{p}");
    let (_, online) = s
        .rest("GET", "/api/v1/users/alice/online", &globex, None)
        .await;
    assert_eq!(online["isOnline"], false);
    let (_, sessions) = s.rest("GET", "/api/v1/sessions", &globex, None).await;
    assert_eq!(sessions["items"], json!([]));
    let (code, _) = s
        .rest("DELETE", &format!("/api/v1/sessions/{sid}"), &globex, None)
        .await;
    assert_eq!(
        code, 404,
        "another tenant's session is not found, not kicked"
    );
    let (code, _) = s
        .rest("DELETE", "/api/v1/rooms/Secret:1/locks/f", &globex, None)
        .await;
    assert_eq!(code, 404);
    let (_, rooms) = s.rest("GET", "/api/v1/rooms", &globex, None).await;
    assert_eq!(rooms["items"], json!([]));
    let (_, batch) = s
        .rest(
            "POST",
            "/api/v1/presence/batch",
            &globex,
            Some(json!(["alice"])),
        )
        .await;
    assert_eq!(batch["alice"]["isOnline"], false);
    let svc = s.token_full("etl", "globex", &["service"], None);
    s.rest(
        "POST",
        "/api/v1/lifecycle",
        &svc,
        Some(json!({"type": "MUTATING", "entity": "Secret", "id": 1, "userId": "x"})),
    )
    .await;
    expect_none(&mut acme, "ENTITY", Duration::from_millis(300)).await;
    // The operator key acts in the tenant named by X-Tenant.
    let (code, p) = rest_as(
        &s.url("/api/v1/rooms/Secret:1/presence"),
        "GET",
        Some(ADMIN_KEY),
        &[("X-Tenant", "acme")],
        None,
    )
    .await;
    assert_eq!((code, p["count"].clone()), (200, json!(1)));
    let (code, p) = rest_as(
        &s.url("/api/v1/rooms/Secret:1/presence"),
        "GET",
        Some(ADMIN_KEY),
        &[("X-Tenant", "globex")],
        None,
    )
    .await;
    assert_eq!(
        (code, p["count"].clone(), p["stale"].clone()),
        (200, json!(0), json!(true)),
        "globex's own Secret:1, made by its lifecycle event"
    );
    let (code, e) = rest_as(&s.url("/api/v1/rooms"), "GET", Some(ADMIN_KEY), &[], None).await;
    assert_eq!(
        (code, e["error"]["code"].clone()),
        (400, json!("bad_request")),
        "admin key needs X-Tenant"
    );
}
