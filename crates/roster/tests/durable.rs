//! Durable data (SQLite by default): rooms and participants survive a restart,
//! `lastSeen` too; session history, the activity log, audit and statistics are
//! written in the background and read over REST.

mod common;
use common::*;
use roster_client::Hello;
use serde_json::json;
use std::time::Duration;

fn db_env(dir: &std::path::Path) -> String {
    format!("sqlite://{}", dir.join("shared.db").display())
}

#[tokio::test]
async fn declared_rooms_participants_and_last_seen_survive_a_restart() {
    let dir = temp_dir("restart");
    let url = db_env(&dir);
    let env = [("ROSTER_DATABASE_URL", url.as_str())];
    let s = Server::start_with(&env).await;
    let admin = s.admin_token("acme");
    let (code, body) = s
        .rest("POST", "/api/v1/rooms", &admin, Some(json!({"key": "Case:9", "type": "SUPPORT", "capacity": 7, "visibility": "private", "tags": ["vip"], "attributes": {"sla": "4h"}})))
        .await;
    assert_eq!(code, 201, "{body}");
    s.rest(
        "PUT",
        "/api/v1/rooms/Case:9/participants/agent",
        &admin,
        Some(json!({"role": "operator"})),
    )
    .await;
    s.rest(
        "PUT",
        "/api/v1/rooms/Case:9/participants/client",
        &admin,
        Some(json!({"role": "viewer"})),
    )
    .await;
    let (code, _) = s
        .rest(
            "POST",
            "/api/v1/room-types",
            &admin,
            Some(json!({"code": "WAR_ROOM", "capacity": 3, "idleTtl": "10m",
                        "heartbeatInterval": "3s", "sessionTimeout": "9s"})),
        )
        .await;
    assert_eq!(code, 201);
    let (code, body) = s
        .rest(
            "POST",
            "/api/v1/rooms",
            &admin,
            Some(json!({"key": "War:1", "type": "WAR_ROOM"})),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let (code, hook) = s
        .rest(
            "POST",
            "/api/v1/webhooks",
            &admin,
            Some(json!({"url": "https://93.184.215.14/roster", "events": ["room_vacated"]})),
        )
        .await;
    assert_eq!(code, 201, "{hook}");
    let mut bob = s.client("bob").await;
    bob.sub("Lobby", None).await.unwrap();
    bob.bye().await.unwrap();
    let (_, before) = s
        .rest("GET", "/api/v1/users/bob/presence", &admin, None)
        .await;
    let last_seen = before["lastSeen"].as_str().unwrap().to_string();
    s.stop();

    let s = Server::start_with(&env).await;
    let admin = s.admin_token("acme");
    let (code, room) = s.rest("GET", "/api/v1/rooms/Case:9", &admin, None).await;
    assert_eq!(code, 200, "{room}");
    assert_eq!(
        (
            room["type"].clone(),
            room["capacity"].clone(),
            room["visibility"].clone(),
            room["tags"].clone(),
            room["attributes"]["sla"].clone()
        ),
        (
            json!("SUPPORT"),
            json!(7),
            json!("private"),
            json!(["vip"]),
            json!("4h")
        )
    );
    assert_eq!(
        room["participants"],
        json!({"agent": "operator", "client": "viewer"})
    );
    let (_, ps) = s
        .rest("GET", "/api/v1/rooms/Case:9/participants", &admin, None)
        .await;
    assert_eq!(ps["items"].as_array().unwrap().len(), 2);
    // Webhook endpoints are configuration: back, with their filter.
    let (_, hooks) = s.rest("GET", "/api/v1/webhooks", &admin, None).await;
    assert_eq!(hooks["items"][0]["id"], hook["id"], "{hooks}");
    assert_eq!(hooks["items"][0]["events"], json!(["room_vacated"]));
    // The tenant's room type keeps its timing, and its declared room takes it.
    let (_, types) = s.rest("GET", "/api/v1/room-types", &admin, None).await;
    let war = types["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["code"] == "WAR_ROOM")
        .cloned()
        .unwrap();
    assert_eq!(
        (
            war["heartbeatInterval"].clone(),
            war["sessionTimeout"].clone()
        ),
        (json!("3s"), json!("9s"))
    );
    let mut watcher = s.client("watcher").await;
    let p = watcher.sub("War:1", None).await.unwrap();
    assert_eq!(p["heartbeatIntervalMs"], 3000, "{p}");
    // Roles still apply after the restart.
    let mut stranger = s.client("stranger").await;
    let e = expect_error(&mut stranger, json!({"type": "SUB", "room": "Case:9"})).await;
    assert_eq!(e["code"], "forbidden");
    let mut agent = s.client("agent").await;
    agent.sub("Case:9", None).await.unwrap();
    let ack = agent
        .request(
            json!({"type": "LOCK", "room": "Case:9", "field": "notes"}),
            "LOCK_ACK",
            T,
        )
        .await
        .unwrap();
    assert_eq!(ack["success"], true);
    // The tenant's own room type too.
    let (_, types) = s.rest("GET", "/api/v1/room-types", &admin, None).await;
    assert!(types["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["code"] == "WAR_ROOM" && t["capacity"] == 3));
    // bob went offline before the restart: lastSeen comes from the database.
    let snap = agent
        .request(
            json!({"type": "WATCH", "users": ["bob"]}),
            "STATUS_SNAPSHOT",
            T,
        )
        .await
        .unwrap();
    assert_eq!(snap["users"]["bob"]["status"], "offline");
    assert_eq!(snap["users"]["bob"]["lastSeen"], last_seen.as_str());
    let (_, p) = s
        .rest("GET", "/api/v1/users/bob/presence", &admin, None)
        .await;
    assert_eq!(p["lastSeen"], last_seen.as_str());
    // Deleting is durable as well.
    let (code, _) = s.rest("DELETE", "/api/v1/rooms/Case:9", &admin, None).await;
    assert_eq!(code, 204);
    s.stop();
    let s = Server::start_with(&env).await;
    let (code, _) = s
        .rest("GET", "/api/v1/rooms/Case:9", &s.admin_token("acme"), None)
        .await;
    assert_eq!(code, 404);
    drop(s);
    let _ = std::fs::remove_dir_all(dir);
}

/// Polls `GET path` until `ok` holds (rows are written in the background).
async fn eventually(
    s: &Server,
    path: &str,
    token: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (code, body) = s.rest("GET", path, token, None).await;
        if code == 200 && ok(&body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "{path}: never satisfied; last answer {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn activity_history_audit_and_stats_over_rest() {
    let s = Server::start_with(&[
        ("ROSTER_DATABASE_BATCH_INTERVAL", "100ms"),
        ("ROSTER_DATABASE_STATS_SAMPLE_INTERVAL", "200ms"),
    ])
    .await;
    let mon = s.token_full("mon", "acme", &["monitor"], None);
    let mut alice = s
        .client_in(
            "alice",
            "acme",
            Hello {
                device: Some("mobile".into()),
                os: Some("iOS".into()),
                app_version: Some("3.1".into()),
                ..Default::default()
            },
        )
        .await;
    alice.sub("Order:1", None).await.unwrap();
    alice
        .request(
            json!({"type": "LOCK", "room": "Order:1", "field": "total"}),
            "LOCK_ACK",
            T,
        )
        .await
        .unwrap();
    alice
        .request(
            json!({"type": "UNLOCK", "room": "Order:1", "field": "total"}),
            "UNLOCK_ACK",
            T,
        )
        .await
        .unwrap();
    let mut bob = s.client("bob").await;
    bob.sub("Order:1", None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    bob.request(json!({"type": "UNSUB", "room": "Order:1"}), "UNSUB_ACK", T)
        .await
        .unwrap();
    let bob_sid = bob.session_id().unwrap().to_string();
    let (code, _) = s
        .rest(
            "DELETE",
            &format!("/api/v1/sessions/{bob_sid}"),
            &s.admin_token("acme"),
            None,
        )
        .await;
    assert_eq!(code, 204);
    alice.bye().await.unwrap();

    let all = eventually(&s, "/api/v1/activity?limit=1000", &mon, |b| {
        b["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["type"] == "admin_kick")
    })
    .await;
    let kinds: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    for k in [
        "join",
        "leave",
        "lock_acquired",
        "lock_released",
        "admin_kick",
        "status",
    ] {
        assert!(kinds.contains(&k), "no {k} row in {kinds:?}");
    }
    let joins = eventually(&s, "/api/v1/activity?room=Order:1&type=join", &mon, |b| {
        b["items"].as_array().unwrap().len() == 2
    })
    .await;
    assert!(joins["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["room"] == "Order:1" && r["at"].as_str().unwrap().ends_with('Z')));
    let bobs = eventually(&s, "/api/v1/activity?user=bob&type=leave", &mon, |b| {
        !b["items"].as_array().unwrap().is_empty()
    })
    .await;
    assert_eq!(bobs["items"][0]["details"]["reason"], "left");
    // Keyset pages: every row once.
    let mut seen = std::collections::BTreeSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/activity?limit=2&cursor={c}"),
            None => "/api/v1/activity?limit=2".into(),
        };
        let (_, page) = s.rest("GET", &path, &mon, None).await;
        for r in page["items"].as_array().unwrap() {
            assert!(seen.insert(r["id"].as_i64().unwrap()), "duplicate row {r}");
        }
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert!(seen.len() >= all["items"].as_array().unwrap().len());
    // CSV of the same rows.
    let csv = reqwest::Client::new()
        .get(s.url("/api/v1/activity.csv?room=Order:1"))
        .bearer_auth(&mon)
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status().as_u16(), 200);
    assert!(csv.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = csv.text().await.unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "id,at,type,actor,userId,room,sessionId,details"
    );
    assert!(
        lines
            .clone()
            .any(|l| l.contains(",join,") && l.contains("Order:1")),
        "{text}"
    );
    assert!(lines.all(|l| l.contains("Order:1")));
    // Session history with end reasons and rooms.
    let hist = eventually(&s, "/api/v1/sessions/history", &mon, |b| {
        b["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["endedAt"].is_string())
            .count()
            >= 2
    })
    .await;
    let by_user = |u: &str| {
        hist["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["userId"] == u)
            .unwrap()
            .clone()
    };
    assert_eq!(
        (
            by_user("bob")["endReason"].clone(),
            by_user("alice")["endReason"].clone()
        ),
        (json!("kicked"), json!("left"))
    );
    assert_eq!(by_user("alice")["rooms"], json!(["Order:1"]));
    assert_eq!(
        (
            by_user("alice")["device"].clone(),
            by_user("alice")["appVersion"].clone()
        ),
        (json!("mobile"), json!("3.1"))
    );
    // Audit: who was there, for how long; lock history.
    let audit = eventually(&s, "/api/v1/rooms/Order:1/audit", &mon, |b| {
        b["participants"].as_array().unwrap().len() == 2
    })
    .await;
    let bob_time = audit["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["userId"] == "bob")
        .unwrap()["timeSpentMs"]
        .as_u64()
        .unwrap();
    assert!(bob_time >= 250, "bob stayed ~300 ms: {audit}");
    assert!(audit["locks"].as_array().unwrap().len() >= 2);
    let stats = eventually(&s, "/api/v1/activity/stats", &mon, |b| {
        b["byType"]["join"] == 2
    })
    .await;
    assert!(!stats["byHour"].as_array().unwrap().is_empty());
    // Tenant scoping and roles.
    let (_, other) = s
        .rest(
            "GET",
            "/api/v1/activity",
            &s.token_full("mon", "globex", &["monitor"], None),
            None,
        )
        .await;
    assert_eq!(other["items"], json!([]));
    let (code, _) = s
        .rest("GET", "/api/v1/activity", &s.token("alice"), None)
        .await;
    assert_eq!(code, 403);
    for bad in [
        "/api/v1/activity?from=yesterday",
        "/api/v1/activity?limit=0",
        "/api/v1/activity?cursor=zzz",
        "/api/v1/rooms/Order:1/stats?bucket=5m",
        "/api/v1/activity/stats?from=2026-11-27T00:00:00Z&to=2026-11-26T00:00:00Z",
    ] {
        let (code, e) = s.rest("GET", bad, &mon, None).await;
        assert_eq!(
            (code, e["error"]["code"].clone()),
            (422, json!("invalid")),
            "{bad}: {e}"
        );
    }
    // Statistics of the minute in progress are written at a clean stop.
    let url = format!("sqlite://{}", s.dir.join("roster.db").display());
    let s2_env = [("ROSTER_DATABASE_URL", url.as_str())];
    // The database lives in `s`'s directory, removed only when `s` is dropped.
    let mut s = s;
    s.sigterm();
    assert!(s.wait_exit(Duration::from_secs(15)).unwrap().success());
    let s2 = Server::start_with(&s2_env).await;
    let st = eventually(
        &s2,
        "/api/v1/rooms/Order:1/stats?bucket=1m",
        &s2.token_full("mon", "acme", &["monitor"], None),
        |b| !b["items"].as_array().unwrap().is_empty(),
    )
    .await;
    let b = &st["items"][0];
    assert_eq!(
        (b["joins"].clone(), b["uniqueUsers"].clone()),
        (json!(2), json!(2)),
        "{st}"
    );
    assert!(b["onlineSessionsPeak"].as_u64().unwrap() >= 1);
    let ov = eventually(
        &s2,
        "/api/v1/stats/overview",
        &s2.token_full("mon", "acme", &["monitor"], None),
        |b| b["sessionsStarted"].as_u64().unwrap() >= 2,
    )
    .await;
    assert_eq!(ov["byDevice"]["mobile"], 1);
    assert_eq!(ov["byAppVersion"]["3.1"], 1);
    drop(s2);
    drop(s);
}

#[test]
fn migrate_runs_alone_and_bad_urls_are_clear_errors() {
    let dir = temp_dir("migrate");
    let db = dir.join("m.db");
    let run = |url: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_roster"))
            .args(["migrate", "--database-url", url])
            .env_clear()
            .output()
            .unwrap()
    };
    let out = run(&format!("sqlite://{}", db.display()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(db.exists());
    let again = run(&format!("sqlite://{}", db.display()));
    assert!(again.status.success(), "migrations are idempotent");
    let bad = run("mysql://nope");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("database.url"));
    let down = run("postgres://postgres:secret@127.0.0.1:1/test");
    assert_eq!(down.status.code(), Some(2));
    let err = String::from_utf8_lossy(&down.stderr);
    assert!(
        err.contains("127.0.0.1:1") && !err.contains("secret"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn room_types_crud_and_validation() {
    let s = Server::start().await;
    let admin = s.admin_token("acme");
    let body = |code: &str| json!({"code": code, "capacity": 4, "idleTtl": "15m", "visibility": "private"});
    let (code, t) = s
        .rest("POST", "/api/v1/room-types", &admin, Some(body("DUEL")))
        .await;
    assert_eq!(
        (code, t["capacity"].clone(), t["visibility"].clone()),
        (201, json!(4), json!("private")),
        "{t}"
    );
    let (code, _) = s
        .rest("POST", "/api/v1/room-types", &admin, Some(body("DUEL")))
        .await;
    assert_eq!(code, 409);
    let (code, e) = s
        .rest("POST", "/api/v1/room-types", &admin, Some(body("CHAT")))
        .await;
    assert_eq!(
        (code, e["error"]["code"].clone()),
        (409, json!("conflict")),
        "seeded types are fixed"
    );
    for (bad, field) in [
        (
            json!({"code": "lower", "capacity": 4, "idleTtl": "1m"}),
            "code",
        ),
        (
            json!({"code": "X", "capacity": 0, "idleTtl": "1m"}),
            "capacity",
        ),
        (
            json!({"code": "X", "capacity": 4, "idleTtl": "soon"}),
            "idleTtl",
        ),
        (json!({"code": "X", "capacity": 4}), "idleTtl"),
        (json!({"capacity": 4, "idleTtl": "1m"}), "code"),
    ] {
        let (code, e) = s
            .rest("POST", "/api/v1/room-types", &admin, Some(bad.clone()))
            .await;
        assert_eq!(code, 422, "{bad}: {e}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains(field),
            "{bad}: {e}"
        );
    }
    let (code, _) = s
        .rest(
            "POST",
            "/api/v1/room-types",
            &s.token("pleb"),
            Some(body("X")),
        )
        .await;
    assert_eq!(code, 403);
    // Rooms of the new type get its capacity and visibility.
    let (code, r) = s
        .rest(
            "POST",
            "/api/v1/rooms",
            &admin,
            Some(json!({"key": "Duel:1", "type": "DUEL"})),
        )
        .await;
    assert_eq!(
        (code, r["capacity"].clone(), r["visibility"].clone()),
        (201, json!(4), json!("private"))
    );
    // Other tenants don't see it.
    let (code, _) = s
        .rest(
            "POST",
            "/api/v1/rooms",
            &s.admin_token("globex"),
            Some(json!({"key": "Duel:1", "type": "DUEL"})),
        )
        .await;
    assert_eq!(code, 422);
    let (code, t) = s
        .rest(
            "PUT",
            "/api/v1/room-types/DUEL",
            &admin,
            Some(json!({"capacity": 6, "idleTtl": "1h"})),
        )
        .await;
    assert_eq!((code, t["capacity"].clone()), (200, json!(6)));
    let (code, _) = s
        .rest("DELETE", "/api/v1/room-types/CHAT", &admin, None)
        .await;
    assert_eq!(code, 409);
    let (code, _) = s
        .rest("DELETE", "/api/v1/room-types/DUEL", &admin, None)
        .await;
    assert_eq!(code, 204);
    let (code, _) = s
        .rest("DELETE", "/api/v1/room-types/DUEL", &admin, None)
        .await;
    assert_eq!(code, 404);
    // Participants need a room.
    let (code, _) = s
        .rest(
            "PUT",
            "/api/v1/rooms/Nowhere/participants/bob",
            &admin,
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!(code, 404);
    let (code, e) = s
        .rest(
            "PUT",
            "/api/v1/rooms/Duel:1/participants/bob",
            &admin,
            Some(json!({"role": "king"})),
        )
        .await;
    assert_eq!((code, e["error"]["code"].clone()), (422, json!("invalid")));
}

#[tokio::test]
async fn with_the_activity_log_off_sessions_and_last_seen_are_still_kept() {
    let s = Server::start_with(&[
        ("ROSTER_DATABASE_LOG_ACTIVITY", "false"),
        ("ROSTER_DATABASE_BATCH_INTERVAL", "100ms"),
    ])
    .await;
    let mon = s.token_full("mon", "acme", &["monitor"], None);
    let mut a = s.client("alice").await;
    a.sub("R", None).await.unwrap();
    a.bye().await.unwrap();
    let hist = eventually(&s, "/api/v1/sessions/history", &mon, |b| {
        b["items"][0]["endReason"] == "left"
    })
    .await;
    assert_eq!(hist["items"][0]["rooms"], json!(["R"]));
    let (_, act) = s.rest("GET", "/api/v1/activity", &mon, None).await;
    assert_eq!(act["items"], json!([]));
}
