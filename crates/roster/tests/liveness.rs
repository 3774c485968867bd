//! The timing model, enforced by the server alone: timeouts, grace, resume, away.

mod common;
use common::*;
use roster_client::{Client, ConnectOptions, Hello};
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn a_silent_client_times_out_within_timeout_plus_one_second_and_loses_its_locks() {
    let s = Server::start().await; // session_timeout 2s, server pings every 500ms
    let mut alice = s.client("alice").await;
    alice.sub("Order:9", None).await.unwrap();
    let mut bob = s.client("bob").await;
    bob.sub("Order:9", None).await.unwrap();
    let ack = bob
        .request(
            json!({"type":"LOCK","room":"Order:9","field":"total"}),
            "LOCK_ACK",
            T,
        )
        .await
        .unwrap();
    assert_eq!(ack["success"], true);
    next_change(&mut alice, "Order:9", "joins", "bob").await;
    // Bob goes completely silent: no frames, no pongs (a dead network path).
    bob.freeze();
    let silent_since = Instant::now();
    let l = next_change(&mut alice, "Order:9", "leaves", "bob").await;
    let took = silent_since.elapsed();
    assert_eq!(l["reason"], "timeout");
    assert!(
        took <= Duration::from_millis(3000 + 500),
        "detected after {took:?}, want <= timeout + 1 s"
    );
    assert!(
        took >= Duration::from_millis(1500),
        "not before the timeout: {took:?}"
    );
    let (_, locks) = s
        .rest("GET", "/api/v1/rooms/Order:9/locks", &s.token("x"), None)
        .await;
    assert_eq!(locks["items"], json!([]), "locks released on timeout");
    let lock = alice
        .request(
            json!({"type":"LOCK","room":"Order:9","field":"total"}),
            "LOCK_ACK",
            T,
        )
        .await
        .unwrap();
    assert_eq!(lock["success"], true);
    assert!(s
        .metrics()
        .await
        .contains("roster_session_timeouts_total 1"));
    // The server closed with 4008; whether the frozen client still reads that close
    // frame depends on its kernel (its queued pongs can draw a reset first).
    bob.thaw();
    let code = bob.expect_close(T).await.ok().flatten();
    assert!(matches!(code, Some(4008) | None), "{code:?}");
    // The histogram is listed from start-up: its count, not its presence, shows
    // the ghost time was recorded.
    let m = s.metrics().await;
    assert_eq!(metric(&m, "roster_ghost_time_seconds_count"), 1.0, "{m}");
}

#[tokio::test]
async fn a_client_that_only_answers_pings_stays_present() {
    let s = Server::start().await;
    let mut alice = s.client("alice").await;
    alice.sub("R", None).await.unwrap();
    let mut bob = s.client("bob").await; // never sends HB; its reader answers pings
    bob.sub("R", None).await.unwrap();
    next_change(&mut alice, "R", "joins", "bob").await;
    expect_none(&mut alice, "PRESENCE_DIFF", Duration::from_millis(3500)).await;
    let (_, p) = s
        .rest("GET", "/api/v1/rooms/R/presence", &s.token("x"), None)
        .await;
    assert_eq!(p["count"], 2);
}

#[tokio::test]
async fn an_abrupt_close_is_a_disconnected_leave_after_the_grace() {
    let s = Server::start().await; // leave_grace 1s
    let mut alice = s.client("alice").await;
    alice.sub("R", None).await.unwrap();
    let mut bob = s.client("bob").await;
    bob.sub("R", None).await.unwrap();
    next_change(&mut alice, "R", "joins", "bob").await;
    let dropped = Instant::now();
    drop(bob); // TCP goes away without a close frame
    let l = next_change(&mut alice, "R", "leaves", "bob").await;
    assert_eq!(l["reason"], "disconnected");
    assert!(
        dropped.elapsed() >= Duration::from_millis(900),
        "held for the grace: {:?}",
        dropped.elapsed()
    );
}

#[tokio::test]
async fn reconnecting_within_the_grace_with_the_same_client_id_is_not_a_leave() {
    let s = Server::start_with(&[
        ("ROSTER_TIMING_LEAVE_GRACE", "3s"),
        ("ROSTER_TIMING_LOCK_TTL", "30s"),
    ])
    .await;
    let mut alice = s.client("alice").await;
    alice.sub("Order:5", None).await.unwrap();
    let hello = || Hello {
        client_id: Some("tab-1".into()),
        ..Default::default()
    };
    let mut bob = s.client_in("bob", "acme", hello()).await;
    let first = bob.session_id().unwrap().to_string();
    bob.sub("Order:5", None).await.unwrap();
    bob.request(
        json!({"type":"LOCK","room":"Order:5","field":"f"}),
        "LOCK_ACK",
        T,
    )
    .await
    .unwrap();
    next_change(&mut alice, "Order:5", "joins", "bob").await;
    drop(bob); // page reload
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut again = Client::connect(ConnectOptions::new(s.ws_url()))
        .await
        .unwrap();
    let w = again
        .hello(Hello {
            token: Some(s.token("bob")),
            ..hello()
        })
        .await
        .unwrap();
    assert_eq!(w["resumed"], true);
    assert_eq!(w["sessionId"], first.as_str());
    assert_eq!(w["rooms"], json!(["Order:5"]));
    // Nobody sees a leave or a join, and the lock is still bob's.
    expect_none(&mut alice, "PRESENCE_DIFF", Duration::from_millis(3500)).await;
    let (_, locks) = s
        .rest("GET", "/api/v1/rooms/Order:5/locks", &s.token("x"), None)
        .await;
    assert_eq!(locks["items"][0]["sessionId"], first.as_str());
    // The resumed session still works.
    again
        .send(json!({"type":"STATE","room":"Order:5","state":{"back":true}}))
        .await
        .unwrap();
    let u = next_change(&mut alice, "Order:5", "updates", "bob").await;
    assert_eq!(u["session"]["sessionId"], first.as_str());
}

#[tokio::test]
async fn resuming_while_the_old_connection_is_open_closes_it_with_4012() {
    let s = Server::start().await;
    let hello = || Hello {
        client_id: Some("tab-9".into()),
        ..Default::default()
    };
    let mut old = s.client_in("bob", "acme", hello()).await;
    let mut new = s.client_in("bob", "acme", hello()).await;
    assert_eq!(new.session_id(), old.session_id());
    assert_eq!(old.expect_close(T).await.unwrap(), Some(4012));
    new.request(json!({"type":"HB"}), "HB_ACK", T)
        .await
        .unwrap();
}

#[tokio::test]
async fn another_users_client_id_never_resumes_anything() {
    let s = Server::start().await;
    let hello = || Hello {
        client_id: Some("shared".into()),
        ..Default::default()
    };
    let bob = s.client_in("bob", "acme", hello()).await;
    let mut eve = s.client_in("eve", "acme", hello()).await;
    assert_ne!(eve.session_id(), bob.session_id());
    let w = eve
        .hello(Hello {
            token: Some(s.token("eve")),
            ..hello()
        })
        .await;
    assert!(w.is_err(), "a second HELLO on one connection is refused");
}

#[tokio::test]
async fn inactivity_makes_a_session_away_and_activity_brings_it_back() {
    let s = Server::start().await; // away_after 1s
    let mut alice = s.client("alice").await;
    alice.sub("R", None).await.unwrap();
    let mut bob = s.client("bob").await;
    bob.sub("R", None).await.unwrap();
    next_change(&mut alice, "R", "joins", "bob").await;
    bob.send(json!({"type":"HB","active":false})).await.unwrap();
    let u = next_change(&mut alice, "R", "updates", "bob").await;
    assert_eq!(u["status"], "away", "{u}");
    bob.send(json!({"type":"HB","active":true})).await.unwrap();
    let u = next_change(&mut alice, "R", "updates", "bob").await;
    assert_eq!(u["status"], "online");
}

#[tokio::test]
async fn no_hello_in_time_closes_4001() {
    let s = Server::start().await; // hello_timeout 1s
    let mut c = s.raw().await;
    let started = Instant::now();
    assert_eq!(c.expect_close(T).await.unwrap(), Some(4001));
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn token_in_query_or_header_then_hello_for_metadata() {
    let s = Server::start().await;
    let mut q = Client::connect(ConnectOptions {
        token: Some(s.token("qq")),
        ..ConnectOptions::new(s.ws_url())
    })
    .await
    .unwrap();
    let w = q
        .hello(Hello {
            device: Some("web".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(w["userId"], "qq");
    assert_eq!(w["tenantId"], "acme");
    assert_eq!(w["heartbeatIntervalMs"], 500);
    assert_eq!(w["sessionTimeoutMs"], 2000);
    assert_eq!(
        w["leaveGraceMs"], 1000,
        "the SDK holds absent members this long"
    );
    let mut h = Client::connect(ConnectOptions {
        bearer: Some(s.token("hh")),
        ..ConnectOptions::new(s.ws_url())
    })
    .await
    .unwrap();
    let w = h.hello(Hello::default()).await.unwrap();
    assert_eq!(w["userId"], "hh");
}
