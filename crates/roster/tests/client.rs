//! `roster-client` against the real server: replies matched by `ref`, server errors
//! with their code, unrelated messages kept in order for later `recv`, `recv_type`
//! dropping others, close codes, `freeze` silence, `bye`, and upgrades refused over
//! HTTP.

mod common;
use common::*;
use roster_client::{Client, ClientError, ConnectOptions, Hello, Incoming};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Every message `c` has (buffered first, then from the socket) until `quiet`
/// passes with nothing new.
async fn drain(c: &mut Client, quiet: Duration) -> Vec<Value> {
    let mut out = vec![];
    loop {
        match c.recv(quiet).await {
            Ok(Incoming::Message(m)) => out.push(m),
            Ok(Incoming::Closed { code, reason }) => panic!("closed {code:?} {reason}"),
            Err(ClientError::Timeout) => return out,
            Err(e) => panic!("{e}"),
        }
    }
}

/// Bob joins `room` and sets his state twice, one diff window apart; returns
/// once `witness` (a member since before) has seen the second update, plus a
/// margin, so every member's reader has read those diffs too.
async fn bob_joins_and_updates(s: &Server, room: &str, witness: &mut Client) -> Client {
    let mut bob = s.client("bob").await;
    bob.sub(room, None).await.unwrap();
    // Apart from the join: an update inside the join's window is folded into it.
    next_change(witness, room, "joins", "bob").await;
    for n in 1..=2 {
        bob.send(json!({"type": "STATE", "room": room, "state": {"n": n}}))
            .await
            .unwrap();
        loop {
            let u = next_change(witness, room, "updates", "bob").await;
            if u["session"]["state"]["n"] == n {
                break;
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    bob
}

#[tokio::test]
async fn hello_returns_the_welcome_and_remembers_the_session_id() {
    let s = Server::start().await;
    let mut c = s.raw().await;
    assert_eq!(c.session_id(), None);
    let welcome = c.hello(Hello::with_token(s.token("alice"))).await.unwrap();
    assert_eq!(welcome["type"], "WELCOME");
    assert_eq!(welcome["userId"], "alice");
    let sid = welcome["sessionId"].as_str().expect("sessionId");
    assert_eq!(c.session_id(), Some(sid));
    // WELCOME echoed the ref `hello` stamped on the HELLO.
    assert!(welcome["ref"].is_string(), "{welcome}");
}

#[tokio::test]
async fn replies_are_matched_by_ref_and_other_messages_wait_in_order() {
    let s = Server::start().await;
    let mut alice = s.client("alice").await;
    let presence = alice.sub("R", None).await.unwrap();
    let seq0 = presence["seq"].as_u64().unwrap();
    let mut carol = s.client("carol").await;
    carol.sub("R", None).await.unwrap();
    let _bob = bob_joins_and_updates(&s, "R", &mut carol).await;

    // Alice has unread diffs queued. An HB_ACK for a ref of her own choosing is
    // the reply type `request` waits for, but not its ref: it must be kept too.
    alice
        .send(json!({"type": "HB", "ref": "other", "t": "first"}))
        .await
        .unwrap();
    let ack = alice
        .request(json!({"type": "HB", "t": "mine"}), "HB_ACK", T)
        .await
        .unwrap();
    assert_eq!(ack["t"], "mine", "{ack}");
    assert_ne!(ack["ref"], "other");

    // Later `recv` returns everything that arrived meanwhile, oldest first.
    let kept = drain(&mut alice, Duration::from_millis(300)).await;
    let (diffs, rest): (Vec<&Value>, Vec<&Value>) =
        kept.iter().partition(|m| m["type"] == "PRESENCE_DIFF");
    assert_eq!(rest.len(), 1, "{kept:?}");
    assert_eq!(rest[0]["type"], "HB_ACK");
    assert_eq!(rest[0]["ref"], "other");
    assert_eq!(rest[0]["t"], "first");
    assert_eq!(
        kept.last().unwrap()["ref"],
        "other",
        "the diffs came first: {kept:?}"
    );
    let seqs: Vec<u64> = diffs.iter().map(|d| d["seq"].as_u64().unwrap()).collect();
    let expected: Vec<u64> = (seq0 + 1..=seq0 + seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "consecutive, in order: {kept:?}");
    // carol's join, bob's join, bob's two updates.
    let bob_states: Vec<&Value> = diffs
        .iter()
        .flat_map(|d| d["updates"].as_array().unwrap())
        .filter(|u| u["userId"] == "bob")
        .map(|u| &u["session"]["state"])
        .collect();
    assert_eq!(bob_states, [&json!({"n": 1}), &json!({"n": 2})], "{kept:?}");
    let joined: Vec<&Value> = diffs
        .iter()
        .flat_map(|d| d["joins"].as_array().unwrap())
        .map(|j| &j["userId"])
        .collect();
    assert_eq!(joined, [&json!("carol"), &json!("bob")], "{kept:?}");
    // Nothing is returned twice.
    assert!(alice.take_buffered().is_empty());
}

#[tokio::test]
async fn an_error_with_our_ref_is_a_server_error_with_its_code() {
    let s = Server::start().await;

    // Before WELCOME.
    let mut raw = s.raw().await;
    match raw
        .request(json!({"type": "SUB", "room": "R"}), "PRESENCE", T)
        .await
    {
        Err(ClientError::Server { code, message }) => {
            assert_eq!(code, "not_authenticated");
            assert!(message.contains("HELLO"), "{message}");
        }
        other => panic!("{other:?}"),
    }

    let mut c = s.client("alice").await;
    match c.sub("has space", Some(json!({"cursor": 3}))).await {
        Err(ClientError::Server { code, message }) => {
            assert_eq!(code, "invalid_room");
            assert!(message.contains("room"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    match c
        .request(
            json!({"type": "LOCK", "room": "Elsewhere", "field": "f"}),
            "LOCK_ACK",
            T,
        )
        .await
    {
        Err(ClientError::Server { code, message }) => {
            assert_eq!(code, "not_subscribed");
            assert!(message.contains("Elsewhere"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // An ERROR answering another ref is not ours: it is kept, and our reply wins.
    c.send(json!({"type": "DANCE", "ref": "theirs"}))
        .await
        .unwrap();
    let presence = c.sub("Order:1", Some(json!({"cursor": 3}))).await.unwrap();
    assert_eq!(presence["room"], "Order:1");
    assert_eq!(presence["users"][0]["sessions"][0]["state"]["cursor"], 3);
    let kept = c.take_buffered();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0]["type"], "ERROR");
    assert_eq!(kept[0]["code"], "unknown_type");
    assert_eq!(kept[0]["ref"], "theirs");
}

#[tokio::test]
async fn recv_type_drops_the_messages_it_skips() {
    let s = Server::start().await;
    let mut alice = s.client("alice").await;
    alice.sub("R", None).await.unwrap();
    let mut carol = s.client("carol").await;
    carol.sub("R", None).await.unwrap();
    let _bob = bob_joins_and_updates(&s, "R", &mut carol).await;

    // Alice has diffs queued (carol's and bob's joins, bob's updates) before this ack.
    alice
        .send(json!({"type": "HB", "ref": "x", "t": 1}))
        .await
        .unwrap();
    let ack = alice.recv_type("HB_ACK", T).await.unwrap();
    assert_eq!(ack["ref"], "x");
    assert_eq!(ack["t"], 1);
    // The diffs before it are gone, not kept for later.
    assert!(matches!(
        alice.recv(Duration::from_millis(300)).await,
        Err(ClientError::Timeout)
    ));
    assert!(alice.take_buffered().is_empty());
    // Without a match in time: Timeout.
    assert!(matches!(
        alice
            .recv_type("LOCK_ACK", Duration::from_millis(200))
            .await,
        Err(ClientError::Timeout)
    ));
}

#[tokio::test]
async fn expect_close_skips_messages_and_returns_the_close_code() {
    let s = Server::start().await;

    // Kicked (4011) with unread diffs queued: they are skipped.
    let mut alice = s.client("alice").await;
    alice.sub("R", None).await.unwrap();
    let mut carol = s.client("carol").await;
    carol.sub("R", None).await.unwrap();
    let _bob = bob_joins_and_updates(&s, "R", &mut carol).await;
    let sid = alice.session_id().unwrap().to_string();
    let (code, _) = s
        .rest(
            "DELETE",
            &format!("/api/v1/sessions/{sid}"),
            &s.admin_token("acme"),
            None,
        )
        .await;
    assert_eq!(code, 204);
    assert_eq!(alice.expect_close(T).await.unwrap(), Some(4011));
    // The close is reported again, by every call.
    assert!(matches!(
        alice.recv(T).await.unwrap(),
        Incoming::Closed {
            code: Some(4011),
            ..
        }
    ));
    assert!(matches!(
        alice.recv_type("HB_ACK", T).await,
        Err(ClientError::Closed {
            code: Some(4011),
            ..
        })
    ));

    // A bad token: the ERROR answers the HELLO's ref, then the server closes 4001.
    let mut bad = s.raw().await;
    match bad.hello(Hello::with_token("not-a-jwt")).await {
        Err(ClientError::Server { code, .. }) => assert_eq!(code, "auth_failed"),
        other => panic!("{other:?}"),
    }
    assert_eq!(bad.expect_close(T).await.unwrap(), Some(4001));
    assert!(matches!(
        bad.recv(T).await.unwrap(),
        Incoming::Closed {
            code: Some(4001),
            ..
        }
    ));

    // No HELLO within hello_timeout (1 s here): 4001 without an ERROR.
    let mut mute = s.raw().await;
    let began = Instant::now();
    assert_eq!(mute.expect_close(T).await.unwrap(), Some(4001));
    assert!(began.elapsed() >= Duration::from_millis(500));
}

#[tokio::test]
async fn a_frozen_client_is_timed_out_by_the_server_and_a_quiet_one_is_not() {
    let s = Server::start().await; // pings every 500 ms, session_timeout 2 s
    let mut alice = s.client("alice").await;
    alice.sub("R", None).await.unwrap();
    let mut bob = s.client("bob").await;
    bob.sub("R", None).await.unwrap();
    let mut carol = s.client("carol").await;
    carol.sub("R", None).await.unwrap();
    next_change(&mut alice, "R", "joins", "carol").await;

    // Bob stops reading the socket: no pongs. Carol sends nothing either, but her
    // reader still answers the server's pings.
    bob.freeze();
    let frozen_at = Instant::now();
    let l = next_change(&mut alice, "R", "leaves", "bob").await;
    let took = frozen_at.elapsed();
    assert_eq!(l["reason"], "timeout");
    assert!(
        took >= Duration::from_millis(1500) && took <= Duration::from_millis(3500),
        "timed out after {took:?}, want about session_timeout (2 s)"
    );
    // Carol was as quiet for as long, and is still there.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ack = carol
        .request(json!({"type": "HB", "t": "alive"}), "HB_ACK", T)
        .await
        .expect("carol's session is alive");
    assert_eq!(ack["t"], "alive");
    let kept = drain(&mut alice, Duration::from_millis(200)).await;
    assert!(
        !kept
            .iter()
            .flat_map(|d| d["leaves"].as_array().into_iter().flatten())
            .any(|l| l["userId"] == "carol"),
        "{kept:?}"
    );
    // The server closed 4008; whether the frozen client still reads that close
    // frame depends on its kernel (its unread data can draw a reset first).
    bob.thaw();
    let code = bob.expect_close(T).await.ok().flatten();
    assert!(matches!(code, Some(4008) | None), "{code:?}");
}

#[tokio::test]
async fn bye_returns_the_normal_close_code() {
    let s = Server::start().await;
    let mut alice = s.client("alice").await;
    alice.sub("R", None).await.unwrap();
    let mut bob = s.client("bob").await;
    bob.sub("R", None).await.unwrap();
    // A join and leave inside one diff window are nothing to alice: let her see bob.
    next_change(&mut alice, "R", "joins", "bob").await;
    assert_eq!(bob.bye().await.unwrap(), Some(1000));
    assert!(matches!(
        bob.recv(T).await.unwrap(),
        Incoming::Closed {
            code: Some(1000),
            ..
        }
    ));
    let l = next_change(&mut alice, "R", "leaves", "bob").await;
    assert_eq!(l["reason"], "left");
}

#[tokio::test]
async fn an_upgrade_refused_over_http_is_rejected_with_the_status_and_body() {
    let s = Server::start().await;
    match Client::connect(ConnectOptions::new(format!("ws://{}/nope", s.addr))).await {
        Err(ClientError::Rejected { status, body }) => {
            assert_eq!(status, 404);
            let body: Value = serde_json::from_str(&body).expect("JSON error body");
            assert_eq!(body["error"]["code"], "not_found", "{body}");
        }
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("connected to /nope"),
    }
    // A 200 is no upgrade either.
    match Client::connect_url(&format!("ws://{}/healthz", s.addr)).await {
        Err(ClientError::Rejected { status, body }) => {
            assert_eq!(status, 200);
            assert_eq!(body, "ok");
        }
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("connected to /healthz"),
    }
    // The real endpoint still upgrades.
    let mut c = s.client("alice").await;
    assert!(c.session_id().is_some());
    c.bye().await.unwrap();
}
