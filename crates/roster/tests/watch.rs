//! WATCH: live status of users, independent of rooms.

mod common;
use common::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn watch_snapshot_then_live_status_with_away_and_last_seen() {
    let s = Server::start().await; // away_after 1s, leave_grace 1s
    let mut bob = s.client("bob").await;
    let mut me = s.client("me").await;
    let snap = me
        .request(
            json!({"type": "WATCH", "users": ["bob", "ghost"]}),
            "STATUS_SNAPSHOT",
            T,
        )
        .await
        .unwrap();
    assert_eq!(snap["users"]["bob"]["status"], "online");
    assert_eq!(snap["users"]["bob"]["devices"], json!(["unknown"]));
    assert_eq!(
        snap["users"]["ghost"],
        json!({"status": "offline", "lastSeen": null, "devices": []})
    );

    // Inactivity → away, without any room.
    bob.send(json!({"type": "HB", "active": false}))
        .await
        .unwrap();
    let st = next(&mut me, "STATUS").await;
    assert_eq!(
        (st["userId"].clone(), st["status"].clone()),
        (json!("bob"), json!("away")),
        "{st}"
    );
    bob.send(json!({"type": "HB", "active": true}))
        .await
        .unwrap();
    let st = next(&mut me, "STATUS").await;
    assert_eq!(st["status"], "online");
    // Explicit STATUS.
    bob.send(json!({"type": "STATUS", "status": "away"}))
        .await
        .unwrap();
    assert_eq!(next(&mut me, "STATUS").await["status"], "away");

    // Offline after BYE, with lastSeen.
    let before = std::time::SystemTime::now();
    bob.bye().await.unwrap();
    let st = loop {
        let st = next(&mut me, "STATUS").await;
        if st["status"] == "offline" {
            break st;
        }
    };
    let last_seen = st["lastSeen"].as_str().unwrap();
    assert!(
        last_seen.ends_with('Z') && last_seen.len() == 24,
        "{last_seen}"
    );
    assert_eq!(st["devices"], json!([]));
    let _ = before;
    // The ghost comes online: watchers learn it.
    let _ghost = s.client("ghost").await;
    let st = next(&mut me, "STATUS").await;
    assert_eq!(
        (st["userId"].clone(), st["status"].clone()),
        (json!("ghost"), json!("online"))
    );
    // UNWATCH stops it.
    me.send(json!({"type": "UNWATCH", "users": ["ghost"]}))
        .await
        .unwrap();
    me.request(json!({"type": "HB"}), "HB_ACK", T)
        .await
        .unwrap();
    drop(_ghost);
    expect_none(&mut me, "STATUS", Duration::from_millis(1500)).await;
    // REST agrees on lastSeen for offline users.
    let (_, p) = s
        .rest("GET", "/api/v1/users/bob/presence", &s.token("me"), None)
        .await;
    assert_eq!(
        (p["status"].clone(), p["isOnline"].clone()),
        (json!("offline"), json!(false))
    );
    assert_eq!(p["lastSeen"], last_seen);
    let (_, b) = s
        .rest(
            "POST",
            "/api/v1/presence/batch",
            &s.token("me"),
            Some(json!(["bob", "me", "nobody"])),
        )
        .await;
    assert_eq!(b["me"]["isOnline"], true);
    assert_eq!(b["bob"]["lastSeen"], last_seen);
    assert_eq!(
        b["nobody"],
        json!({"status": "offline", "isOnline": false, "lastSeen": null})
    );
}

#[tokio::test]
async fn a_user_with_two_devices_stays_online_until_the_last_one_leaves() {
    let s = Server::start().await;
    let mut me = s.client("me").await;
    let phone = s
        .client_in(
            "bob",
            "acme",
            roster_client::Hello {
                device: Some("mobile".into()),
                ..Default::default()
            },
        )
        .await;
    let mut web = s
        .client_in(
            "bob",
            "acme",
            roster_client::Hello {
                device: Some("web".into()),
                ..Default::default()
            },
        )
        .await;
    let snap = me
        .request(
            json!({"type": "WATCH", "users": ["bob"]}),
            "STATUS_SNAPSHOT",
            T,
        )
        .await
        .unwrap();
    assert_eq!(snap["users"]["bob"]["devices"], json!(["mobile", "web"]));
    web.bye().await.unwrap();
    let st = next(&mut me, "STATUS").await;
    assert_eq!(st["status"], "online");
    assert_eq!(st["devices"], json!(["mobile"]));
    drop(phone);
    let st = next(&mut me, "STATUS").await; // after the 1 s grace
    assert_eq!(st["status"], "offline");
}

#[tokio::test]
async fn watch_lists_are_bounded_and_validated() {
    let s = Server::start().await;
    let mut me = s.client("me").await;
    let many: Vec<String> = (0..1001).map(|i| format!("u{i}")).collect();
    let e = expect_error(&mut me, json!({"type": "WATCH", "users": many})).await;
    assert_eq!(e["code"], "too_many_watched");
    let e = expect_error(&mut me, json!({"type": "WATCH", "users": "bob"})).await;
    assert_eq!(e["code"], "bad_request");
    let e = expect_error(&mut me, json!({"type": "WATCH", "users": [""]})).await;
    assert_eq!(e["code"], "bad_request");
}
