//! Rosters: snapshots, numbered diffs, tabs, state updates, leaving.

mod common;
use common::*;
use roster_client::{Hello, RoomView};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn snapshot_then_diffs_with_increasing_seq() {
    let s = Server::start().await;
    let mut alice = s.client("alice").await;
    let p = alice
        .sub("Order:1", Some(json!({"field": "name"})))
        .await
        .unwrap();
    assert_eq!(p["count"], 1, "{p}");
    assert_eq!(p["users"][0]["userId"], "alice");
    assert_eq!(
        p["users"][0]["sessions"][0]["state"],
        json!({"field": "name"})
    );
    assert_eq!(p["users"][0]["name"], "alice name");
    assert!(
        p["stale"] == false && p["version"] == 0 && p["locks"] == json!({}),
        "{p}"
    );
    let seq0 = p["seq"].as_u64().unwrap();

    let mut bob = s.client("bob").await;
    let pb = bob.sub("Order:1", None).await.unwrap();
    assert_eq!(pb["count"], 2);
    let j = next_change(&mut alice, "Order:1", "joins", "bob").await;
    assert_eq!(j["status"], "online");
    assert_eq!(j["name"], "bob name");
    assert!(j["session"]["sessionId"].is_string());
    let seq1 = j["seq"].as_u64().unwrap();
    assert!(seq1 > seq0);

    bob.send(json!({"type": "UNSUB", "room": "Order:1", "ref": 5}))
        .await
        .unwrap();
    let ack = next(&mut bob, "UNSUB_ACK").await;
    assert_eq!(
        (ack["ref"].clone(), ack["room"].clone()),
        (json!(5), json!("Order:1"))
    );
    let d2 = next_diff(&mut alice, "Order:1").await;
    assert_eq!(
        d2["seq"].as_u64().unwrap(),
        seq1 + 1,
        "seq increases by one per diff"
    );
    assert_eq!(d2["leaves"][0]["reason"], "left");
    assert_eq!(d2["leaves"][0]["userId"], "bob");
}

#[tokio::test]
async fn two_users_with_two_tabs_each_are_grouped_by_user() {
    let s = Server::start().await;
    let mut tabs = vec![];
    for user in ["alice", "bob"] {
        for tab in 0..2 {
            let mut c = s.client(user).await;
            c.sub("Doc:7", Some(json!({"tab": tab}))).await.unwrap();
            tabs.push(c);
        }
    }
    let mut late = s.client("carol").await;
    let p = late.sub("Doc:7", None).await.unwrap();
    assert_eq!(p["count"], 5);
    let users = p["users"].as_array().unwrap();
    assert_eq!(users.len(), 3);
    for u in users {
        let n = u["sessions"].as_array().unwrap().len();
        assert_eq!(n, if u["userId"] == "carol" { 1 } else { 2 }, "{u}");
    }
    // Closing one of alice's tabs leaves her online (the other tab lives).
    tabs.remove(0).bye().await.unwrap();
    let l = next_change(&mut late, "Doc:7", "leaves", "alice").await;
    assert_eq!(l["reason"], "left");
    let (code, body) = s
        .rest("GET", "/api/v1/users/alice/online", &s.token("x"), None)
        .await;
    assert_eq!((code, body), (200, json!({"isOnline": true})));
}

#[tokio::test]
async fn state_change_is_an_update_never_leave_and_join() {
    let s = Server::start().await;
    let mut alice = s.client("alice").await;
    alice.sub("Order:2", None).await.unwrap();
    let mut bob = s.client("bob").await;
    bob.sub("Order:2", None).await.unwrap();
    next_change(&mut alice, "Order:2", "joins", "bob").await;
    bob.send(json!({"type": "STATE", "room": "Order:2", "state": {"cursor": 3}}))
        .await
        .unwrap();
    let d = next_diff(&mut alice, "Order:2").await;
    assert_eq!(d["joins"], json!([]));
    assert_eq!(d["leaves"], json!([]));
    assert_eq!(d["updates"][0]["userId"], "bob");
    assert_eq!(d["updates"][0]["session"]["state"], json!({"cursor": 3}));
    // Explicit status is an update too.
    bob.send(json!({"type": "STATUS", "status": "away"}))
        .await
        .unwrap();
    let d = next_diff(&mut alice, "Order:2").await;
    assert_eq!(d["updates"][0]["status"], "away", "{d}");
    assert_eq!(d["leaves"], json!([]));
}

#[tokio::test]
async fn bye_is_an_immediate_left_and_closes_1000() {
    let s = Server::start_with(&[("ROSTER_TIMING_LEAVE_GRACE", "30s")]).await;
    let mut alice = s.client("alice").await;
    alice.sub("R", None).await.unwrap();
    let mut bob = s.client("bob").await;
    bob.sub("R", None).await.unwrap();
    next_change(&mut alice, "R", "joins", "bob").await;
    let started = std::time::Instant::now();
    assert_eq!(bob.bye().await.unwrap(), Some(1000));
    let d = next_diff(&mut alice, "R").await;
    assert_eq!(d["leaves"][0]["reason"], "left");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "BYE skips the 30 s grace"
    );
}

#[tokio::test]
async fn resubscribing_answers_a_fresh_snapshot_and_sends_no_diff() {
    let s = Server::start().await;
    let mut alice = s.client("alice").await;
    alice.sub("R", None).await.unwrap();
    let mut bob = s.client("bob").await;
    bob.sub("R", None).await.unwrap();
    next_change(&mut alice, "R", "joins", "bob").await;
    let again = bob.sub("R", None).await.unwrap();
    assert_eq!(again["count"], 2);
    expect_none(&mut alice, "PRESENCE_DIFF", Duration::from_millis(300)).await;
}

#[tokio::test]
async fn entity_and_id_address_the_same_room() {
    let s = Server::start().await;
    let mut a = s.client("alice").await;
    let p = a
        .request(
            json!({"type": "SUB", "entity": "Order", "id": 123}),
            "PRESENCE",
            T,
        )
        .await
        .unwrap();
    assert_eq!(p["room"], "Order:123");
    let mut b = s.client("bob").await;
    let p = b.sub("Order:123", None).await.unwrap();
    assert_eq!(p["count"], 2);
}

#[tokio::test]
async fn count_mode_subscribers_get_counts_only() {
    let s = Server::start().await;
    let mut watcher = s.client("tv").await;
    let c = watcher
        .request(
            json!({"type": "SUB", "room": "Live", "mode": "count"}),
            "PRESENCE_COUNT",
            T,
        )
        .await
        .unwrap();
    assert_eq!(c["count"], 1);
    let mut a = s.client("alice").await;
    let p = a.sub("Live", None).await.unwrap();
    assert_eq!(p["count"], 2, "count-mode members are members");
    let c = next(&mut watcher, "PRESENCE_COUNT").await;
    assert_eq!(c["count"], 2);
    a.send(json!({"type":"STATE","room":"Live","state":{"x":1}}))
        .await
        .unwrap();
    expect_none(&mut watcher, "PRESENCE_DIFF", Duration::from_millis(300)).await;
}

#[tokio::test]
async fn rooms_above_the_list_limit_serve_counts_to_everyone() {
    let s = Server::start_with(&[("ROSTER_LIMITS_PRESENCE_LIST_LIMIT", "2")]).await;
    let mut a = s.client("a").await;
    a.sub("Big", None).await.unwrap();
    let mut b = s.client("b").await;
    b.sub("Big", None).await.unwrap();
    let mut c = s.client("c").await;
    let reply = c
        .request(json!({"type": "SUB", "room": "Big"}), "PRESENCE_COUNT", T)
        .await
        .unwrap();
    assert_eq!(reply["count"], 3);
    let n = next(&mut a, "PRESENCE_COUNT").await;
    assert_eq!(n["count"], 3);
}

#[tokio::test]
async fn session_metadata_shows_in_snapshots() {
    let s = Server::start().await;
    let mut phone = roster_client::Client::connect(roster_client::ConnectOptions {
        user_agent: Some(
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148".into(),
        ),
        ..roster_client::ConnectOptions::new(s.ws_url())
    })
    .await
    .unwrap();
    phone
        .hello(Hello {
            token: Some(s.token("alice")),
            app_version: Some("2.4.1".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    phone.sub("M", None).await.unwrap();
    phone
        .request(json!({"type":"HB","t":1,"latencyMs":42}), "HB_ACK", T)
        .await
        .unwrap();
    let mut desk = s
        .client_in(
            "bob",
            "acme",
            Hello {
                device: Some("desktop".into()),
                os: Some("Linux".into()),
                ..Default::default()
            },
        )
        .await;
    let p = desk.sub("M", None).await.unwrap();
    let alice = p["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["userId"] == "alice")
        .unwrap();
    let sess = &alice["sessions"][0];
    assert_eq!(sess["device"], "mobile", "{sess}");
    assert_eq!(sess["os"], "iOS");
    assert_eq!(sess["appVersion"], "2.4.1");
    assert_eq!(sess["latencyMs"], 42);
    assert!(sess["joinedAt"].as_str().unwrap().ends_with('Z'));
    let bob = p["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["userId"] == "bob")
        .unwrap();
    assert_eq!(bob["sessions"][0]["device"], "desktop");
    // REST shows ip and client metadata.
    let (code, body) = s
        .rest(
            "GET",
            "/api/v1/users/alice/presence",
            &s.admin_token("acme"),
            None,
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(body["sessions"][0]["ip"], "127.0.0.1");
    assert_eq!(body["rooms"], json!(["M"]));
}

#[tokio::test]
async fn heartbeat_ack_echoes_t_and_ref() {
    let s = Server::start().await;
    let mut a = s.client("alice").await;
    let ack = a
        .request(json!({"type": "HB", "t": 12345}), "HB_ACK", T)
        .await
        .unwrap();
    assert_eq!(ack["t"], 12345);
    assert!(ack["serverTime"].as_str().unwrap().ends_with('Z'));
}

/// 1,000 sessions join one room; every member's roster, rebuilt from its snapshot
/// and the diffs after it, ends equal to the server's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sessions_converge_to_the_same_roster() {
    let s = Server::start().await;
    let n = 1000;
    // GENERIC rooms hold 100 sessions; a BROADCAST room holds 1,000.
    let (code, body) = s
        .rest(
            "POST",
            "/api/v1/rooms",
            &s.admin_token("acme"),
            Some(json!({"key": "Big:1", "type": "BROADCAST"})),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let mut clients = Vec::with_capacity(n);
    let mut views = Vec::with_capacity(n);
    for i in 0..n {
        let mut c = s.client(&format!("user{}", i % 700)).await;
        let p = c.sub("Big:1", None).await.unwrap();
        let mut v = RoomView::new("Big:1");
        v.apply(&p).unwrap();
        for m in c.take_buffered() {
            v.apply(&m).unwrap();
        }
        clients.push(c);
        views.push(v);
    }
    let (_, truth) = s
        .rest("GET", "/api/v1/rooms/Big:1/presence", &s.token("x"), None)
        .await;
    let expected = session_ids(&truth);
    assert_eq!(expected.len(), n);
    let expected: std::collections::BTreeSet<String> = expected.into_iter().collect();
    let end = tokio::time::Instant::now() + Duration::from_secs(60);
    for (c, v) in clients.iter_mut().zip(views.iter_mut()) {
        while v.sessions() != expected {
            let left = end.saturating_duration_since(tokio::time::Instant::now());
            match c.recv(left).await.expect("diffs until converged") {
                roster_client::Incoming::Message(m) => v.apply(&m).unwrap(),
                other => panic!("{other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn server_pings_measure_latency_without_client_reports() {
    let s = Server::start().await; // pings every 500 ms
    let mut quiet = s.client("quiet").await;
    quiet.sub("R", None).await.unwrap();
    let mon = s.token_full("mon", "acme", &["monitor"], None);
    let end = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let (_, sessions) = s
            .rest("GET", "/api/v1/sessions?user=quiet", &mon, None)
            .await;
        if sessions["items"][0]["latencyMs"].is_number() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "no RTT measured from pongs: {sessions}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Applies one diff to the set of sessions a member holds, failing on anything
/// that does not apply cleanly (SPEC §3: no join for a session already held, no
/// leave or update for one not held).
fn apply_strictly(held: &mut std::collections::BTreeSet<String>, d: &serde_json::Value, who: &str) {
    let sid = |e: &serde_json::Value, p: &str| e.pointer(p).unwrap().as_str().unwrap().to_string();
    for l in d["leaves"].as_array().unwrap() {
        let s = sid(l, "/sessionId");
        assert!(held.remove(&s), "{who}: leave of {s} it never held: {d}");
    }
    for j in d["joins"].as_array().unwrap() {
        let s = sid(j, "/session/sessionId");
        assert!(
            held.insert(s.clone()),
            "{who}: join of {s} already held: {d}"
        );
    }
    for u in d["updates"].as_array().unwrap() {
        let s = sid(u, "/session/sessionId");
        assert!(
            held.contains(&s),
            "{who}: update of {s} it does not hold: {d}"
        );
    }
}

#[tokio::test]
async fn every_diff_applies_cleanly_to_the_snapshot_it_follows() {
    // A long window, so every change below lands inside the same one.
    let s = Server::start_with(&[("ROSTER_TIMING_DIFF_WINDOW", "400ms")]).await;
    let room = "Order:dup";
    let mut alice = s.client("alice").await;
    let pa = alice.sub(room, None).await.unwrap();
    // Let alice's own window pass: her roster is the room before the storm.
    let mut alice_seq = pa["seq"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    while let Ok(roster_client::Incoming::Message(m)) = alice.recv(Duration::from_millis(50)).await
    {
        if m["type"] == "PRESENCE_DIFF" {
            alice_seq = m["seq"].as_u64().unwrap();
        }
    }
    let mut views = vec![(
        "alice",
        session_ids(&pa)
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>(),
        alice_seq,
    )];
    // Inside one window: carol joins, bob joins (his snapshot shows carol),
    // alice changes state, carol leaves, dave joins after that.
    let mut carol = s.client("carol").await;
    carol.sub(room, None).await.unwrap();
    let mut bob = s.client("bob").await;
    let pb = bob.sub(room, None).await.unwrap();
    assert_eq!(
        pb["count"], 3,
        "bob's snapshot shows the pending join: {pb}"
    );
    alice
        .send(json!({"type": "STATE", "room": room, "state": {"f": 1}}))
        .await
        .unwrap();
    carol.bye().await.unwrap();
    let mut dave = s.client("dave").await;
    let pd = dave.sub(room, None).await.unwrap();
    for (who, p) in [("bob", &pb), ("dave", &pd)] {
        views.push((
            who,
            session_ids(p).into_iter().collect(),
            p["seq"].as_u64().unwrap(),
        ));
    }
    let mut clients = [alice, bob, dave];
    for ((who, held, seq), c) in views.iter_mut().zip(clients.iter_mut()) {
        let d = next_diff(c, room).await;
        assert_eq!(d["seq"].as_u64().unwrap(), *seq + 1, "{who}: no gap: {d}");
        apply_strictly(held, &d, who);
    }
    // After the window everyone holds the same roster: alice, bob, dave.
    let all: Vec<_> = views.iter().map(|(_, h, _)| h.clone()).collect();
    assert!(
        all.iter().all(|h| h == &all[0] && h.len() == 3),
        "{views:?}"
    );
}
