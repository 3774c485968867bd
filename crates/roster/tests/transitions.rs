//! Presence transitions (`core::transition`) as a consumer sees them: the node
//! that performs an operation emits each transition once, with the kind the
//! event stream will use, and only when something changed. Seen here through
//! the always-on metrics sink, `roster_transitions_total{kind}`; the members'
//! `LOCK` and `ENTITY` events are the same transitions rendered by the native
//! protocol (`tests/locks.rs`, `tests/lifecycle.rs`). Runs on the memory engine
//! and, in `scripts/test.sh`, on Redis.

mod common;
use common::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

/// Scrapes until the transitions counted are exactly `want`; fails with the
/// last page after `T`.
async fn transitions_become(s: &Server, step: &str, want: &[(&str, u64)]) {
    let want: BTreeMap<String, u64> = want.iter().map(|(k, n)| (k.to_string(), *n)).collect();
    let end = tokio::time::Instant::now() + T;
    loop {
        let got = transitions(&s.metrics().await);
        if got == want {
            return;
        }
        if tokio::time::Instant::now() > end {
            panic!("after {step}: transitions {got:?}, expected {want:?}");
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

#[tokio::test]
async fn each_change_of_presence_is_one_transition_of_its_kind_and_no_change_is_none() {
    let s = Server::start_with(&[
        ("ROSTER_TIMING_AWAY_AFTER", "1h"),
        ("ROSTER_TIMING_LOCK_TTL", "1h"),
        ("ROSTER_TIMING_STALE_TTL", "1h"),
    ])
    .await;
    transitions_become(&s, "start-up", &[]).await;

    let mut alice = s.client("alice").await;
    alice.sub("Order:1", None).await.unwrap();
    let mut bob = s.client("bob").await;
    bob.sub("Order:1", None).await.unwrap();
    let mut steps = vec![
        ("user_online", 2),
        ("room_occupied", 1),
        ("member_added", 2),
    ];
    transitions_become(&s, "two joins", &steps).await;

    // A state change is an update; the same state again is nothing.
    for _ in 0..2 {
        alice
            .send(json!({"type":"STATE","room":"Order:1","state":{"x":1}}))
            .await
            .unwrap();
    }
    next_change(&mut bob, "Order:1", "updates", "alice").await;
    steps.push(("member_updated", 1));
    transitions_become(&s, "one state change sent twice", &steps).await;

    // Taken, released, taken again; a refused LOCK is no transition.
    for (ty, ack) in [
        ("LOCK", "LOCK_ACK"),
        ("UNLOCK", "UNLOCK_ACK"),
        ("LOCK", "LOCK_ACK"),
    ] {
        alice
            .request(
                json!({"type": ty, "room":"Order:1","field":"total"}),
                ack,
                T,
            )
            .await
            .unwrap();
    }
    let refused = bob
        .request(
            json!({"type":"LOCK","room":"Order:1","field":"total"}),
            "LOCK_ACK",
            T,
        )
        .await
        .unwrap();
    assert_eq!(refused["success"], false);
    steps.extend([("lock_acquired", 2), ("lock_released", 1)]);
    transitions_become(&s, "lock, unlock, lock, refused lock", &steps).await;

    let svc = s.token_full("etl", "acme", &["service"], None);
    for ty in ["MUTATING", "MUTATED"] {
        let (code, body) = s
            .rest(
                "POST",
                "/api/v1/lifecycle",
                &svc,
                Some(json!({"type": ty, "entity": "Order", "id": 1, "userId": "etl"})),
            )
            .await;
        assert_eq!(code, 202, "{body}");
    }
    steps.extend([("entity_stale", 1), ("entity_fresh", 1)]);
    transitions_become(&s, "mutating, mutated", &steps).await;

    // Away and back: a status move of a user who stays online.
    for status in ["away", "online"] {
        bob.send(json!({"type":"STATUS","status": status}))
            .await
            .unwrap();
    }
    steps.push(("user_status", 2));
    transitions_become(&s, "bob away and back", &steps).await;

    // alice leaves holding the lock: her leave, the lock let go, her user offline.
    assert_eq!(alice.bye().await.unwrap(), Some(1000));
    steps.retain(|(k, _)| !["member_removed", "lock_released"].contains(k));
    steps.extend([
        ("member_removed", 1),
        ("lock_released", 2),
        ("user_offline", 1),
    ]);
    transitions_become(&s, "alice's BYE", &steps).await;

    // The last member leaves: the room is vacated (bob stays online).
    bob.request(json!({"type":"UNSUB","room":"Order:1"}), "UNSUB_ACK", T)
        .await
        .unwrap();
    steps.retain(|(k, _)| *k != "member_removed");
    steps.extend([("member_removed", 2), ("room_vacated", 1)]);
    transitions_become(&s, "bob's UNSUB", &steps).await;
}

/// Deleting a room with members: each member leaves it (`member_removed`, reason
/// `kicked`), the lock one of them held is released, and the room is vacated,
/// each once; the kicked sessions' leaves of their other rooms are their own.
#[tokio::test]
async fn a_deleted_room_vacates_with_one_leave_per_member_and_its_locks_released() {
    let s = Server::start_with(&[("ROSTER_TIMING_LOCK_TTL", "1h")]).await;
    let admin = s.admin_token("acme");
    let (code, body) = s
        .rest(
            "POST",
            "/api/v1/rooms",
            &admin,
            Some(json!({"key": "Case:1"})),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let mut alice = s.client("alice").await;
    alice.sub("Case:1", None).await.unwrap();
    alice.sub("Side:1", None).await.unwrap();
    let mut bob = s.client("bob").await;
    bob.sub("Case:1", None).await.unwrap();
    alice
        .request(
            json!({"type":"LOCK","room":"Case:1","field":"notes"}),
            "LOCK_ACK",
            T,
        )
        .await
        .unwrap();
    let (code, body) = s.rest("DELETE", "/api/v1/rooms/Case:1", &admin, None).await;
    assert_eq!(code, 204, "{body}");
    // Case:1: two leaves, alice's lock, vacated. Side:1: alice's kicked
    // session leaves it too (and vacates it). Both users go offline.
    transitions_become(
        &s,
        "DELETE /rooms/Case:1",
        &[
            ("member_added", 3),
            ("room_occupied", 2),
            ("user_online", 2),
            ("lock_acquired", 1),
            ("member_removed", 3),
            ("lock_released", 1),
            ("room_vacated", 2),
            ("user_offline", 2),
        ],
    )
    .await;
}
