//! Room types, capacity, status, private rooms and participant roles.

mod common;
use common::*;
use serde_json::json;

#[tokio::test]
async fn the_seventeenth_session_of_a_gaming_room_gets_room_full() {
    let dir = std::env::temp_dir().join(format!("roster-rooms-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("roster.toml");
    std::fs::write(
        &cfg,
        "[[rooms.rules]]\nprefix = \"Game:\"\ntype = \"GAMING\"\n",
    )
    .unwrap();
    let s = Server::start_args(&["--config", cfg.to_str().unwrap()], &[]).await;
    let mut players = vec![];
    for i in 0..16 {
        let mut c = s.client(&format!("p{i}")).await;
        c.sub("Game:1", None).await.unwrap();
        players.push(c);
    }
    let mut late = s.client("p16").await;
    let e = expect_error(&mut late, json!({"type": "SUB", "room": "Game:1"})).await;
    assert_eq!(e["code"], "room_full");
    let (_, room) = s
        .rest("GET", "/api/v1/rooms/Game:1", &s.token("x"), None)
        .await;
    assert_eq!(room["type"], "GAMING");
    assert_eq!(room["capacity"], 16);
    // A leave makes room again.
    players.pop().unwrap().bye().await.unwrap();
    late.sub("Game:1", None).await.unwrap();
    // Rooms without a rule are GENERIC.
    late.sub("Other", None).await.unwrap();
    let (_, room) = s
        .rest("GET", "/api/v1/rooms/Other", &s.token("x"), None)
        .await;
    assert_eq!(
        (room["type"].clone(), room["capacity"].clone()),
        (json!("GENERIC"), json!(100))
    );
}

#[tokio::test]
async fn private_rooms_enforce_participant_roles() {
    let s = Server::start().await;
    let admin = s.admin_token("acme");
    let (code, body) = s
        .rest(
            "POST",
            "/api/v1/rooms",
            &admin,
            Some(json!({"key": "Case:1", "type": "SUPPORT", "visibility": "private"})),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    for (user, role) in [
        ("vic", "viewer"),
        ("cole", "commenter"),
        ("opal", "operator"),
        ("owen", "owner"),
    ] {
        let (code, body) = s
            .rest(
                "PUT",
                &format!("/api/v1/rooms/Case:1/participants/{user}"),
                &admin,
                Some(json!({"role": role})),
            )
            .await;
        assert_eq!(code, 204, "{body}");
    }
    let mut stranger = s.client("stranger").await;
    let e = expect_error(&mut stranger, json!({"type": "SUB", "room": "Case:1"})).await;
    assert_eq!(e["code"], "forbidden");

    let mut vic = s.client("vic").await;
    vic.sub("Case:1", None).await.unwrap();
    let e = expect_error(
        &mut vic,
        json!({"type": "STATE", "room": "Case:1", "state": {"typing": true}}),
    )
    .await;
    assert_eq!(e["code"], "forbidden", "viewers can't publish state");
    let e = expect_error(
        &mut vic,
        json!({"type": "SUB", "room": "Case:1", "state": {"typing": true}}),
    )
    .await;
    assert_eq!(e["code"], "forbidden", "nor through SUB");
    let mut vic2 = s.client("vic").await;
    let e = expect_error(
        &mut vic2,
        json!({"type": "SUB", "room": "Case:1", "state": {"typing": true}}),
    )
    .await;
    assert_eq!(e["code"], "forbidden", "nor by joining with state");

    let mut cole = s.client("cole").await;
    cole.sub("Case:1", Some(json!({"typing": false})))
        .await
        .unwrap();
    cole.send(json!({"type": "STATE", "room": "Case:1", "state": {"typing": true}}))
        .await
        .unwrap();
    let e = expect_error(
        &mut cole,
        json!({"type": "LOCK", "room": "Case:1", "field": "notes"}),
    )
    .await;
    assert_eq!(e["code"], "forbidden", "commenters can't lock");

    let mut opal = s.client("opal").await;
    opal.sub("Case:1", None).await.unwrap();
    let ack = opal
        .request(
            json!({"type": "LOCK", "room": "Case:1", "field": "notes"}),
            "LOCK_ACK",
            T,
        )
        .await
        .unwrap();
    assert_eq!(ack["success"], true);

    // Promotion applies to a member already inside.
    s.rest(
        "PUT",
        "/api/v1/rooms/Case:1/participants/vic",
        &admin,
        Some(json!({"role": "operator"})),
    )
    .await;
    let ack = vic
        .request(
            json!({"type": "LOCK", "room": "Case:1", "field": "other"}),
            "LOCK_ACK",
            T,
        )
        .await
        .unwrap();
    assert_eq!(ack["success"], true);
    // Removal from a private room kicks.
    let (code, _) = s
        .rest(
            "DELETE",
            "/api/v1/rooms/Case:1/participants/vic",
            &admin,
            None,
        )
        .await;
    assert_eq!(code, 204);
    assert_eq!(vic.expect_close(T).await.unwrap(), Some(4011));

    // Private rooms are hidden from non-participants over REST too.
    let (code, _) = s
        .rest(
            "GET",
            "/api/v1/rooms/Case:1/presence",
            &s.token("stranger"),
            None,
        )
        .await;
    assert_eq!(code, 403);
    let (code, _) = s
        .rest(
            "GET",
            "/api/v1/rooms/Case:1/locks",
            &s.token("stranger"),
            None,
        )
        .await;
    assert_eq!(code, 403);
    let (_, list) = s
        .rest("GET", "/api/v1/rooms", &s.token("stranger"), None)
        .await;
    assert!(!list["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["key"] == "Case:1"));
    let (code, _) = s
        .rest(
            "GET",
            "/api/v1/rooms/Case:1/presence",
            &s.token("cole"),
            None,
        )
        .await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn open_rooms_take_the_role_from_the_token() {
    let s = Server::start().await;
    let viewer = s.token_full("ro", "acme", &["viewer"], None);
    let mut c = roster_client::Client::connect(roster_client::ConnectOptions::new(s.ws_url()))
        .await
        .unwrap();
    c.hello(roster_client::Hello::with_token(viewer))
        .await
        .unwrap();
    c.sub("Open", None).await.unwrap();
    let e = expect_error(
        &mut c,
        json!({"type": "LOCK", "room": "Open", "field": "f"}),
    )
    .await;
    assert_eq!(e["code"], "forbidden");
}

#[tokio::test]
async fn maintenance_refuses_joins_and_closing_kicks_everyone() {
    let s = Server::start().await;
    let admin = s.admin_token("acme");
    s.rest(
        "POST",
        "/api/v1/rooms",
        &admin,
        Some(json!({"key": "Ops", "tags": ["a"], "attributes": {"floor": 3}})),
    )
    .await;
    let mut a = s.client("alice").await;
    a.sub("Ops", None).await.unwrap();
    let mut watcher = s.client("bob").await;
    watcher.sub("Lobby", None).await.unwrap();
    let (code, body) = s
        .rest(
            "PATCH",
            "/api/v1/rooms/Ops",
            &admin,
            Some(json!({"status": "maintenance"})),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "maintenance");
    assert_eq!(body["attributes"]["floor"], 3);
    let e = expect_error(&mut watcher, json!({"type": "SUB", "room": "Ops"})).await;
    assert_eq!(e["code"], "room_closed");
    a.request(json!({"type": "HB"}), "HB_ACK", T)
        .await
        .expect("members already in stay");
    let (code, _) = s
        .rest(
            "PATCH",
            "/api/v1/rooms/Ops",
            &admin,
            Some(json!({"status": "closed"})),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(a.expect_close(T).await.unwrap(), Some(4011));
    let (_, p) = s
        .rest("GET", "/api/v1/rooms/Ops/presence", &admin, None)
        .await;
    assert_eq!(p["count"], 0);
}

#[tokio::test]
async fn rooms_rest_crud_and_validation() {
    let s = Server::start().await;
    let admin = s.admin_token("acme");
    let (code, r) = s
        .rest(
            "POST",
            "/api/v1/rooms",
            &admin,
            Some(json!({"key": "Chat:9", "type": "CHAT", "idleTtl": "10m", "tags": ["x"]})),
        )
        .await;
    assert_eq!(code, 201);
    assert_eq!(
        (
            r["type"].clone(),
            r["capacity"].clone(),
            r["idleTtl"].clone()
        ),
        (json!("CHAT"), json!(500), json!("10m"))
    );
    let (code, e) = s
        .rest(
            "POST",
            "/api/v1/rooms",
            &admin,
            Some(json!({"key": "Chat:9"})),
        )
        .await;
    assert_eq!((code, e["error"]["code"].clone()), (409, json!("conflict")));
    for (body, field) in [
        (json!({"key": "bad key"}), "key"),
        (json!({"key": "K", "type": "NOPE"}), "type"),
        (json!({"key": "K", "capacity": 0}), "capacity"),
        (json!({"key": "K", "idleTtl": "soon"}), "idleTtl"),
        (json!({"key": "K", "visibility": "secret"}), "visibility"),
        (json!({"key": 5}), "key"),
        (json!({"nokey": true}), "key"),
    ] {
        let (code, e) = s
            .rest("POST", "/api/v1/rooms", &admin, Some(body.clone()))
            .await;
        assert_eq!(code, 422, "{body} → {e}");
        assert_eq!(e["error"]["code"], "invalid");
        assert!(
            e["error"]["message"].as_str().unwrap().contains(field),
            "{body}: {e}"
        );
    }
    let (code, _) = s
        .rest(
            "POST",
            "/api/v1/rooms",
            &s.token("pleb"),
            Some(json!({"key": "K"})),
        )
        .await;
    assert_eq!(code, 403);
    let (code, r) = s
        .rest(
            "PATCH",
            "/api/v1/rooms/Chat:9",
            &admin,
            Some(json!({"capacity": 3, "tags": ["y"]})),
        )
        .await;
    assert_eq!(
        (code, r["capacity"].clone(), r["tags"].clone()),
        (200, json!(3), json!(["y"]))
    );
    let (code, _) = s
        .rest(
            "PATCH",
            "/api/v1/rooms/Chat:9",
            &admin,
            Some(json!({"status": "sleeping"})),
        )
        .await;
    assert_eq!(code, 422);
    let (code, _) = s
        .rest(
            "PATCH",
            "/api/v1/rooms/Nope",
            &admin,
            Some(json!({"capacity": 3})),
        )
        .await;
    assert_eq!(code, 404);
    for k in ["A", "B", "C"] {
        s.rest("POST", "/api/v1/rooms", &admin, Some(json!({"key": k})))
            .await;
    }
    let (_, page) = s.rest("GET", "/api/v1/rooms?limit=2", &admin, None).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let cursor = page["nextCursor"].as_str().unwrap().to_string();
    let (_, page2) = s
        .rest(
            "GET",
            &format!("/api/v1/rooms?limit=2&cursor={cursor}"),
            &admin,
            None,
        )
        .await;
    assert_eq!(page2["items"][0]["key"], "C");
    let (_, tagged) = s.rest("GET", "/api/v1/rooms?tag=y", &admin, None).await;
    assert_eq!(tagged["items"].as_array().unwrap().len(), 1);
    let (code, _) = s
        .rest("GET", "/api/v1/rooms?limit=5000", &admin, None)
        .await;
    assert_eq!(code, 422);
    let (code, _) = s.rest("DELETE", "/api/v1/rooms/Chat:9", &admin, None).await;
    assert_eq!(code, 204);
    let (code, _) = s.rest("GET", "/api/v1/rooms/Chat:9", &admin, None).await;
    assert_eq!(code, 404);
    let (code, types) = s
        .rest("GET", "/api/v1/room-types", &s.token("x"), None)
        .await;
    assert_eq!(code, 200);
    assert_eq!(types["items"].as_array().unwrap().len(), 10);
    // Percent-encoded keys with a slash.
    let (code, _) = s
        .rest(
            "POST",
            "/api/v1/rooms",
            &admin,
            Some(json!({"key": "team/a@b"})),
        )
        .await;
    assert_eq!(code, 201);
    let (code, r) = s
        .rest("GET", "/api/v1/rooms/team%2Fa%40b", &admin, None)
        .await;
    assert_eq!((code, r["key"].clone()), (200, json!("team/a@b")));
}

/// Room types' timing overrides (SPEC §1): a member silent for longer than its
/// room's own session timeout leaves that room (reason `timeout`) and stays in
/// a room of the server's timeout until that one passes too; the `PRESENCE`
/// answer to `SUB` names the room's heartbeat interval.
#[tokio::test]
async fn a_room_type_with_a_shorter_timeout_times_a_silent_member_out_of_that_room_only() {
    let s = Server::start().await; // session_timeout 2s, server pings every 500ms
    let admin = s.admin_token("acme");
    let (code, t) = s
        .rest(
            "POST",
            "/api/v1/room-types",
            &admin,
            Some(json!({"code": "FAST", "capacity": 10, "idleTtl": "1h",
                        "heartbeatInterval": "200ms", "sessionTimeout": "900ms"})),
        )
        .await;
    assert_eq!(code, 201, "{t}");
    assert_eq!(
        (t["heartbeatInterval"].clone(), t["sessionTimeout"].clone()),
        (json!("200ms"), json!("900ms"))
    );
    let (code, r) = s
        .rest(
            "POST",
            "/api/v1/rooms",
            &admin,
            Some(json!({"key": "Call:1", "type": "FAST"})),
        )
        .await;
    assert_eq!(code, 201, "{r}");

    let mut alice = s.client("alice").await;
    let fast = alice.sub("Call:1", None).await.unwrap();
    assert_eq!(fast["heartbeatIntervalMs"], 200, "{fast}");
    let slow = alice.sub("Doc:1", None).await.unwrap();
    assert!(slow.get("heartbeatIntervalMs").is_none(), "{slow}");
    let mut bob = s.client("bob").await;
    bob.sub("Call:1", None).await.unwrap();
    bob.sub("Doc:1", None).await.unwrap();
    next_change(&mut alice, "Call:1", "joins", "bob").await;
    next_change(&mut alice, "Doc:1", "joins", "bob").await;

    // Bob goes silent (no frames, no pongs): out of Call:1 first, by its own
    // timeout; still in Doc:1 then; out of Doc:1 when his session times out.
    bob.freeze();
    let silent = tokio::time::Instant::now();
    let l = next_change(&mut alice, "Call:1", "leaves", "bob").await;
    assert_eq!(l["reason"], "timeout");
    let out_of_call = silent.elapsed();
    let (_, p) = s
        .rest("GET", "/api/v1/rooms/Doc:1/presence", &s.token("x"), None)
        .await;
    assert_eq!(p["count"], 2, "bob still in Doc:1: {p}");
    let l = next_change(&mut alice, "Doc:1", "leaves", "bob").await;
    assert_eq!(l["reason"], "timeout");
    assert!(
        silent.elapsed() > out_of_call,
        "Doc:1 after Call:1: {out_of_call:?} then {:?}",
        silent.elapsed()
    );
    // Alice, who answers pings, stayed in both.
    let (_, p) = s
        .rest("GET", "/api/v1/rooms/Call:1/presence", &s.token("x"), None)
        .await;
    assert_eq!(p["count"], 1, "{p}");
    assert_eq!(p["heartbeatIntervalMs"], 200, "{p}");
}

/// The timing fields of a room type are checked: durations, bounds, and a
/// timeout above the heartbeat interval.
#[tokio::test]
async fn room_type_timing_overrides_are_validated() {
    let s = Server::start().await;
    let admin = s.admin_token("acme");
    for (body, field) in [
        (json!({"heartbeatInterval": "soon"}), "heartbeatInterval"),
        (json!({"heartbeatInterval": "10ms"}), "heartbeatInterval"),
        (json!({"sessionTimeout": "2h"}), "sessionTimeout"),
        (
            json!({"heartbeatInterval": "5s", "sessionTimeout": "5s"}),
            "sessionTimeout",
        ),
        (json!({"sessionTimeout": 20}), "sessionTimeout"),
    ] {
        let mut b = json!({"code": "BAD", "capacity": 5, "idleTtl": "1m"});
        b.as_object_mut()
            .unwrap()
            .extend(body.as_object().unwrap().clone());
        let (code, e) = s
            .rest("POST", "/api/v1/room-types", &admin, Some(b.clone()))
            .await;
        assert_eq!(code, 422, "{b} → {e}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains(field),
            "{b} → {e}"
        );
    }
    // The seeded WEBRTC type carries its overrides; GENERIC the server's.
    let (_, types) = s.rest("GET", "/api/v1/room-types", &admin, None).await;
    let find = |c: &str| {
        types["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["code"] == c)
            .unwrap()
            .clone()
    };
    assert_eq!(find("WEBRTC")["sessionTimeout"], "20s");
    assert_eq!(find("WEBRTC")["heartbeatInterval"], "5s");
    assert_eq!(find("GENERIC")["sessionTimeout"], json!(null));
}
