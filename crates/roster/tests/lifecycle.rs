//! Entity lifecycle: MUTATING / MUTATED over REST, stale expiry.

mod common;
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[tokio::test]
async fn mutating_marks_stale_mutated_bumps_version_and_stale_expires() {
    let s = Server::start().await; // stale_ttl 2s
    let svc = s.token_full("etl", "acme", &["service"], None);
    let mut a = s.client("alice").await;
    a.sub("Order:77", None).await.unwrap();
    let (code, body) = s
        .rest(
            "POST",
            "/api/v1/lifecycle",
            &svc,
            Some(json!({"type": "MUTATING", "entity": "Order", "id": 77, "userId": "etl-bot"})),
        )
        .await;
    assert_eq!(code, 202, "{body}");
    let e = next(&mut a, "ENTITY").await;
    assert_eq!(
        e,
        json!({"type": "ENTITY", "room": "Order:77", "stale": true, "busyBy": "etl-bot", "version": 0})
    );
    let p = a.sub("Order:77", None).await.unwrap();
    assert_eq!(
        (p["stale"].clone(), p["busyBy"].clone()),
        (json!(true), json!("etl-bot"))
    );
    s.rest(
        "POST",
        "/api/v1/lifecycle",
        &svc,
        Some(json!({"type": "MUTATED", "entity": "Order", "id": "77", "userId": "etl-bot"})),
    )
    .await;
    let e = next(&mut a, "ENTITY").await;
    assert_eq!(
        (
            e["stale"].clone(),
            e["busyBy"].clone(),
            e["version"].clone()
        ),
        (json!(false), json!(null), json!(1))
    );
    // MUTATING without MUTATED clears itself after stale_ttl.
    s.rest(
        "POST",
        "/api/v1/lifecycle",
        &svc,
        Some(json!({"type": "MUTATING", "entity": "Order", "id": "77", "userId": "etl-bot"})),
    )
    .await;
    let started = Instant::now();
    assert_eq!(next(&mut a, "ENTITY").await["stale"], true);
    let e = next(&mut a, "ENTITY").await;
    assert_eq!(
        (e["stale"].clone(), e["version"].clone()),
        (json!(false), json!(1)),
        "expiry does not bump version"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn lifecycle_before_anyone_looks_is_seen_by_the_first_viewer() {
    let s = Server::start().await;
    let svc = s.token_full("etl", "acme", &["service"], None);
    s.rest(
        "POST",
        "/api/v1/lifecycle",
        &svc,
        Some(json!({"type": "MUTATING", "entity": "Invoice", "id": "5", "userId": "etl"})),
    )
    .await;
    let mut a = s.client("alice").await;
    let p = a.sub("Invoice:5", None).await.unwrap();
    assert_eq!(p["stale"], true);
}

#[tokio::test]
async fn lifecycle_needs_the_service_role_and_a_valid_body() {
    let s = Server::start().await;
    let (code, e) = s
        .rest(
            "POST",
            "/api/v1/lifecycle",
            &s.token("alice"),
            Some(json!({"type": "MUTATING", "entity": "Order", "id": 1, "userId": "x"})),
        )
        .await;
    assert_eq!(
        (code, e["error"]["code"].clone()),
        (403, json!("forbidden"))
    );
    let svc = s.token_full("etl", "acme", &["service"], None);
    for (body, field) in [
        (
            json!({"type": "DELETED", "entity": "Order", "id": 1, "userId": "x"}),
            "type",
        ),
        (
            json!({"type": "MUTATING", "id": 1, "userId": "x"}),
            "entity",
        ),
        (
            json!({"type": "MUTATING", "entity": "Or der", "id": 1, "userId": "x"}),
            "entity",
        ),
        (
            json!({"type": "MUTATING", "entity": "Order", "id": [1], "userId": "x"}),
            "id",
        ),
        (
            json!({"type": "MUTATING", "entity": "Order", "id": 1}),
            "userId",
        ),
    ] {
        let (code, e) = s
            .rest("POST", "/api/v1/lifecycle", &svc, Some(body.clone()))
            .await;
        assert_eq!(code, 422, "{body}: {e}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains(field),
            "{body}: {e}"
        );
    }
}

#[tokio::test]
async fn an_event_id_applies_once_and_a_bad_one_is_refused() {
    let s = Server::start().await;
    let svc = s.token_full("etl", "acme", &["service"], None);
    let post = |event_id: Value| {
        let body = json!({"type": "MUTATED", "entity": "Order", "id": 8, "userId": "etl", "eventId": event_id});
        s.rest("POST", "/api/v1/lifecycle", &svc, Some(body))
    };
    let (code, body) = post(json!("e-1")).await;
    assert_eq!((code, body["version"].clone()), (202, json!(1)), "{body}");
    let (code, body) = post(json!("e-1")).await;
    assert_eq!(
        (code, body["version"].clone()),
        (200, json!(1)),
        "applied once: {body}"
    );
    let (code, body) = post(json!("e-2")).await;
    assert_eq!((code, body["version"].clone()), (202, json!(2)), "{body}");
    // Another tenant's e-1 is another event.
    let other = s.token_full("etl", "other", &["service"], None);
    let (code, _) = s
        .rest("POST", "/api/v1/lifecycle", &other,
            Some(json!({"type": "MUTATED", "entity": "Order", "id": 8, "userId": "etl", "eventId": "e-1"})))
        .await;
    assert_eq!(code, 202);
    // Each is an invalid field (422) naming it.
    for (bad, want) in [
        (json!(""), 422),
        (json!("x".repeat(201)), 422),
        (json!(7), 422),
    ] {
        let (code, body) = post(bad.clone()).await;
        assert_eq!(code, want, "{bad}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("eventId"),
            "{body}"
        );
    }
}
