//! Ephemeral room events (SPEC §3 `EMIT` → `EVENT`): delivered once to the
//! room's other members connected now, never to the sender, never across
//! rooms or tenants; checked (membership, name, size, role) like any message.

mod common;
use common::*;
use roster_client::Hello;
use serde_json::json;
use std::time::Duration;

const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn an_emit_reaches_the_other_members_once_and_not_the_sender() {
    let s = Server::start().await;
    let mut a = s.client("alice").await;
    let mut b = s.client("bob").await;
    let mut c = s.client("carol").await;
    let mut outsider = s.client("olga").await;
    let mut other_tenant = s.client_in("bob", "globex", Hello::default()).await;
    for x in [&mut a, &mut b, &mut c] {
        x.sub("Doc:1", None).await.unwrap();
    }
    outsider.sub("Doc:2", None).await.unwrap();
    other_tenant.sub("Doc:1", None).await.unwrap();

    a.send(json!({"type": "EMIT", "room": "Doc:1", "event": "reaction", "data": {"emoji": "👍"}}))
        .await
        .unwrap();
    for x in [&mut b, &mut c] {
        let e = next(x, "EVENT").await;
        assert_eq!(e["room"], "Doc:1");
        assert_eq!(e["event"], "reaction");
        assert_eq!(e["data"], json!({"emoji": "👍"}));
        assert_eq!(e["from"]["userId"], "alice");
        assert_eq!(e["from"]["sessionId"].as_str(), a.session_id());
        expect_none(x, "EVENT", QUIET).await;
    }
    expect_none(&mut a, "EVENT", QUIET).await;
    expect_none(&mut outsider, "EVENT", QUIET).await;
    expect_none(&mut other_tenant, "EVENT", QUIET).await;

    // Any JSON is data; a count-mode member gets events too.
    let mut counter = s.client("dan").await;
    counter
        .request(
            json!({"type": "SUB", "room": "Doc:1", "mode": "count"}),
            "PRESENCE_COUNT",
            T,
        )
        .await
        .unwrap();
    b.send(json!({"type": "EMIT", "entity": "Doc", "id": 1, "event": "typing", "data": [1, "two", null]}))
        .await
        .unwrap();
    let e = next(&mut counter, "EVENT").await;
    assert_eq!(
        (e["event"].clone(), e["data"].clone()),
        (json!("typing"), json!([1, "two", null]))
    );
    let e = next(&mut a, "EVENT").await;
    assert_eq!(e["from"]["userId"], "bob");
}

#[tokio::test]
async fn bad_emits_get_clear_errors_and_reach_nobody() {
    let s = Server::start().await;
    let mut a = s.client("alice").await;
    let mut b = s.client("bob").await;
    a.sub("Doc:1", None).await.unwrap();
    b.sub("Doc:1", None).await.unwrap();

    let e = expect_error(
        &mut a,
        json!({"type": "EMIT", "room": "Doc:9", "event": "x", "data": 1}),
    )
    .await;
    assert_eq!(e["code"], "not_subscribed", "{e}");
    let e = expect_error(
        &mut a,
        json!({"type": "EMIT", "room": "Doc:1", "event": "", "data": 1}),
    )
    .await;
    assert_eq!(e["code"], "bad_request");
    assert!(e["message"].as_str().unwrap().contains("event"), "{e}");
    let long = "e".repeat(65);
    let e = expect_error(
        &mut a,
        json!({"type": "EMIT", "room": "Doc:1", "event": long, "data": 1}),
    )
    .await;
    assert_eq!(e["code"], "bad_request");
    let e = expect_error(
        &mut a,
        json!({"type": "EMIT", "room": "Doc:1", "event": "x"}),
    )
    .await;
    assert_eq!(e["code"], "bad_request");
    assert!(e["message"].as_str().unwrap().contains("data"), "{e}");
    let e = expect_error(&mut a, json!({"type": "EMIT", "room": "Doc:1", "data": 1})).await;
    assert_eq!(e["code"], "bad_request");
    let big = "x".repeat(2100);
    let e = expect_error(
        &mut a,
        json!({"type": "EMIT", "room": "Doc:1", "event": "x", "data": {"big": big}}),
    )
    .await;
    assert_eq!(e["code"], "state_too_large", "{e}");
    let e = expect_error(
        &mut a,
        json!({"type": "EMIT", "room": "bad room", "event": "x", "data": 1}),
    )
    .await;
    assert_eq!(e["code"], "invalid_room");
    expect_none(&mut b, "EVENT", QUIET).await;

    // 64 characters is still a name.
    let name = "é".repeat(64);
    a.send(json!({"type": "EMIT", "room": "Doc:1", "event": name, "data": null}))
        .await
        .unwrap();
    assert_eq!(next(&mut b, "EVENT").await["event"], json!(name));
}

#[tokio::test]
async fn viewers_of_a_private_room_cannot_emit() {
    let s = Server::start().await;
    let admin = s.admin_token("acme");
    let (code, body) = s
        .rest(
            "POST",
            "/api/v1/rooms",
            &admin,
            Some(json!({"key": "Case:7", "visibility": "private"})),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    for (user, role) in [("vic", "viewer"), ("cole", "commenter")] {
        let (code, body) = s
            .rest(
                "PUT",
                &format!("/api/v1/rooms/Case:7/participants/{user}"),
                &admin,
                Some(json!({"role": role})),
            )
            .await;
        assert_eq!(code, 204, "{body}");
    }
    let mut vic = s.client("vic").await;
    let mut cole = s.client("cole").await;
    vic.sub("Case:7", None).await.unwrap();
    cole.sub("Case:7", None).await.unwrap();
    let e = expect_error(
        &mut vic,
        json!({"type": "EMIT", "room": "Case:7", "event": "wave", "data": {}}),
    )
    .await;
    assert_eq!(e["code"], "forbidden", "{e}");
    expect_none(&mut cole, "EVENT", QUIET).await;
    cole.send(json!({"type": "EMIT", "room": "Case:7", "event": "wave", "data": {}}))
        .await
        .unwrap();
    let e = next(&mut vic, "EVENT").await;
    assert_eq!(e["from"]["userId"], "cole", "viewers still receive");
}

#[tokio::test]
async fn emits_count_against_the_message_rate() {
    let s = Server::start_with(&[
        ("ROSTER_LIMITS_MESSAGES_PER_SECOND", "1"),
        ("ROSTER_LIMITS_MESSAGES_BURST", "5"),
    ])
    .await;
    let mut a = s.client("alice").await;
    let mut b = s.client("bob").await;
    a.sub("Doc:1", None).await.unwrap();
    b.sub("Doc:1", None).await.unwrap();
    for i in 0..20 {
        a.send(json!({"type": "EMIT", "room": "Doc:1", "event": "tick", "data": i}))
            .await
            .unwrap();
    }
    let e = next(&mut a, "ERROR").await;
    assert_eq!(e["code"], "rate_limited");
    let mut got = 0;
    while let Ok(roster_client::Incoming::Message(m)) = b.recv(QUIET).await {
        if m["type"] == "EVENT" {
            got += 1;
        }
    }
    assert!(
        (1..20).contains(&got),
        "some events dropped by the limit, not all: {got}"
    );
}
