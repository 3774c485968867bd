//! Field locks: one winner, owner-only unlock, release on leave, TTL, admin release.

mod common;
use common::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_racing_sessions_get_exactly_one_winner() {
    let s = Server::start().await;
    let mut clients = vec![];
    for i in 0..50 {
        let mut c = s.client(&format!("u{i}")).await;
        c.sub("Order:1", None).await.unwrap();
        clients.push(c);
    }
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let ack = c
                    .request(
                        json!({"type":"LOCK","room":"Order:1","field":"totalAmount"}),
                        "LOCK_ACK",
                        T,
                    )
                    .await
                    .unwrap();
                (ack, c)
            })
        })
        .collect();
    let mut winners = vec![];
    let mut owners = std::collections::BTreeSet::new();
    let mut keep = vec![];
    for t in tasks {
        let (ack, c) = t.await.unwrap();
        if ack["success"] == true {
            winners.push(ack["owner"]["sessionId"].clone());
        } else {
            owners.insert(ack["owner"]["sessionId"].as_str().unwrap().to_string());
            assert!(ack["owner"]["expiresAt"].is_string());
        }
        keep.push(c);
    }
    assert_eq!(winners.len(), 1, "exactly one winner");
    assert_eq!(owners.len(), 1, "every loser names the same holder");
    assert_eq!(
        owners.into_iter().next().unwrap(),
        winners[0].as_str().unwrap()
    );
}

#[tokio::test]
async fn only_the_owner_unlocks_and_members_see_lock_events() {
    let s = Server::start().await;
    let mut a = s.client("alice").await;
    a.sub("Doc", None).await.unwrap();
    let mut b = s.client("bob").await;
    b.sub("Doc", None).await.unwrap();
    let ack = a
        .request(
            json!({"type":"LOCK","room":"Doc","field":"title"}),
            "LOCK_ACK",
            T,
        )
        .await
        .unwrap();
    assert_eq!(ack["success"], true);
    let ev = next(&mut b, "LOCK").await;
    assert_eq!(ev["field"], "title");
    assert_eq!(ev["owner"]["userId"], "alice");
    let lost = b
        .request(
            json!({"type":"LOCK","room":"Doc","field":"title"}),
            "LOCK_ACK",
            T,
        )
        .await
        .unwrap();
    assert_eq!(lost["success"], false);
    assert_eq!(lost["owner"]["userId"], "alice");
    let e = expect_error(
        &mut b,
        json!({"type":"UNLOCK","room":"Doc","field":"title"}),
    )
    .await;
    assert_eq!(e["code"], "not_lock_owner");
    let p = b.sub("Doc", None).await.unwrap();
    assert_eq!(
        p["locks"]["title"]["userId"], "alice",
        "locks show in snapshots"
    );
    let un = a
        .request(
            json!({"type":"UNLOCK","room":"Doc","field":"title"}),
            "UNLOCK_ACK",
            T,
        )
        .await
        .unwrap();
    assert_eq!(un["success"], true);
    let ev = next(&mut b, "LOCK").await;
    assert_eq!(ev["owner"], json!(null));
    let un = a
        .request(
            json!({"type":"UNLOCK","room":"Doc","field":"title"}),
            "UNLOCK_ACK",
            T,
        )
        .await
        .unwrap();
    assert_eq!(un["success"], false, "nothing to unlock");
}

#[tokio::test]
async fn locks_go_with_unsub_and_bye() {
    let s = Server::start().await;
    let mut a = s.client("alice").await;
    a.sub("Doc", None).await.unwrap();
    let mut b = s.client("bob").await;
    b.sub("Doc", None).await.unwrap();
    a.request(
        json!({"type":"LOCK","room":"Doc","field":"f1"}),
        "LOCK_ACK",
        T,
    )
    .await
    .unwrap();
    a.request(json!({"type":"UNSUB","room":"Doc"}), "UNSUB_ACK", T)
        .await
        .unwrap();
    let ev = loop {
        let ev = next(&mut b, "LOCK").await;
        if ev["owner"].is_null() {
            break ev;
        }
    };
    assert_eq!(ev["field"], "f1");
    let mut c = s.client("carol").await;
    c.sub("Doc", None).await.unwrap();
    c.request(
        json!({"type":"LOCK","room":"Doc","field":"f2"}),
        "LOCK_ACK",
        T,
    )
    .await
    .unwrap();
    c.bye().await.unwrap();
    let (_, locks) = s
        .rest("GET", "/api/v1/rooms/Doc/locks", &s.token("x"), None)
        .await;
    assert_eq!(locks["items"], json!([]));
}

#[tokio::test]
async fn a_lock_expires_without_heartbeats_and_heartbeats_keep_it() {
    let s = Server::start_with(&[
        ("ROSTER_TIMING_LOCK_TTL", "1s"),
        ("ROSTER_TIMING_SESSION_TIMEOUT", "10s"),
    ])
    .await;
    let mut a = s.client("alice").await;
    a.sub("Doc", None).await.unwrap();
    let mut b = s.client("bob").await;
    b.sub("Doc", None).await.unwrap();
    a.request(
        json!({"type":"LOCK","room":"Doc","field":"kept"}),
        "LOCK_ACK",
        T,
    )
    .await
    .unwrap();
    b.request(
        json!({"type":"LOCK","room":"Doc","field":"lapsed"}),
        "LOCK_ACK",
        T,
    )
    .await
    .unwrap();
    for _ in 0..6 {
        a.request(json!({"type":"HB"}), "HB_ACK", T).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (_, locks) = s
        .rest("GET", "/api/v1/rooms/Doc/locks", &s.token("x"), None)
        .await;
    let fields: Vec<_> = locks["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["field"].clone())
        .collect();
    assert_eq!(fields, vec![json!("kept")], "{locks}");
    let mut saw_expired = false;
    for _ in 0..10 {
        let ev = next(&mut a, "LOCK").await;
        if ev["field"] == "lapsed" && ev["owner"].is_null() {
            assert_eq!(ev["reason"], "expired");
            saw_expired = true;
            break;
        }
    }
    assert!(saw_expired);
}

#[tokio::test]
async fn an_admin_force_releases_a_lock_over_rest() {
    let s = Server::start().await;
    let mut a = s.client("alice").await;
    a.sub("Doc", None).await.unwrap();
    a.request(
        json!({"type":"LOCK","room":"Doc","field":"f"}),
        "LOCK_ACK",
        T,
    )
    .await
    .unwrap();
    let (code, body) = s
        .rest("DELETE", "/api/v1/rooms/Doc/locks/f", &s.token("bob"), None)
        .await;
    assert_eq!(code, 403, "{body}");
    let (code, _) = s
        .rest(
            "DELETE",
            "/api/v1/rooms/Doc/locks/f",
            &s.admin_token("acme"),
            None,
        )
        .await;
    assert_eq!(code, 204);
    loop {
        let ev = next(&mut a, "LOCK").await;
        if ev["owner"].is_null() {
            assert_eq!(ev["reason"], "force_released");
            break;
        }
    }
    let (code, body) = s
        .rest(
            "DELETE",
            "/api/v1/rooms/Doc/locks/f",
            &s.admin_token("acme"),
            None,
        )
        .await;
    assert_eq!(code, 404);
    assert_eq!(body["error"]["code"], "not_found");
}
