//! `/metrics` and the logs, as an operator sees them: every histogram and gauge is
//! exported from start-up, the gauges follow live state, request latency is
//! labelled by route template, ghost time is recorded when a session times out,
//! and logs written to a pipe carry no colour codes.

mod common;
use common::*;
use serde_json::json;
use std::time::Duration;

const HISTOGRAMS: &[&str] = &[
    "roster_ghost_time_seconds",
    "roster_ping_rtt_seconds",
    "roster_diff_delivery_seconds",
    "roster_http_request_duration_seconds",
    "roster_journal_batch_seconds",
];

const GAUGES: &[&str] = &[
    "roster_connections",
    "roster_sessions",
    "roster_rooms",
    "roster_online_users",
    "roster_stale_entities",
    "roster_locks_held",
    "roster_redis_up",
    "roster_database_up",
    "roster_expiry_queue_depth",
    "roster_journal_queue_depth",
];

/// The value of the first series of `name` whose labels contain every one of
/// `labels` (e.g. `route="/metrics"`), if any.
fn series(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Scrapes until `done` holds for the page (or fails after `T`); returns the page.
async fn scrape_until(s: &Server, what: &str, done: impl Fn(&str) -> bool) -> String {
    let end = tokio::time::Instant::now() + T;
    loop {
        let m = s.metrics().await;
        if done(&m) {
            return m;
        }
        if tokio::time::Instant::now() > end {
            panic!("metrics never showed {what}:\n{m}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_fresh_server_exports_every_histogram_and_gauge_before_any_client() {
    let s = Server::start().await;
    let m = s.metrics().await;
    for name in HISTOGRAMS.iter().chain(GAUGES) {
        assert!(
            m.contains(&format!("# HELP {name} ")),
            "{name} is not described:\n{m}"
        );
    }
    for h in HISTOGRAMS {
        assert!(
            m.contains(&format!("# TYPE {h} histogram")),
            "{h} is not a histogram:\n{m}"
        );
        for part in ["_bucket", "_sum", "_count"] {
            assert!(
                series(&m, &format!("{h}{part}"), &[]).is_some(),
                "{h}{part} missing:\n{m}"
            );
        }
        assert!(
            m.contains(&format!("{h}_bucket{{")) && m.contains("le=\"+Inf\""),
            "{h} has no buckets:\n{m}"
        );
    }
    // Nothing has happened yet: empty histograms (the scrape route's own series
    // may hold earlier scrapes; this is the first).
    for h in [
        "roster_ghost_time_seconds",
        "roster_ping_rtt_seconds",
        "roster_diff_delivery_seconds",
    ] {
        assert_eq!(series(&m, &format!("{h}_count"), &[]), Some(0.0), "{h}");
    }
    for g in GAUGES {
        assert!(
            m.contains(&format!("# TYPE {g} gauge")),
            "{g} is not a gauge:\n{m}"
        );
    }
    for (g, want) in [
        ("roster_connections", 0.0),
        ("roster_sessions", 0.0),
        ("roster_rooms", 0.0),
        ("roster_online_users", 0.0),
        ("roster_stale_entities", 0.0),
        ("roster_locks_held", 0.0),
        ("roster_redis_up", 1.0),
        ("roster_database_up", 1.0),
    ] {
        assert_eq!(series(&m, g, &[]), Some(want), "{g}:\n{m}");
    }
    assert!(
        series(
            &m,
            "roster_http_request_duration_seconds_count",
            &[r#"route="/metrics""#]
        )
        .is_some(),
        "the scrape route's series exists from the start:\n{m}"
    );
}

#[tokio::test]
async fn live_state_gauges_follow_a_client_and_rest_latency_is_labelled_by_route_template() {
    let s = Server::start_with(&[
        ("ROSTER_DATABASE_STATS_SAMPLE_INTERVAL", "100ms"),
        ("ROSTER_TIMING_LOCK_TTL", "30s"),
        ("ROSTER_TIMING_STALE_TTL", "30s"),
    ])
    .await;
    let mut alice = s.client("alice").await;
    alice.sub("Order:9", None).await.unwrap();
    let ack = alice
        .request(
            json!({"type":"LOCK","room":"Order:9","field":"total"}),
            "LOCK_ACK",
            T,
        )
        .await
        .unwrap();
    assert_eq!(ack["success"], true);
    let svc = s.token_full("etl", "acme", &["service"], None);
    let (code, body) = s
        .rest(
            "POST",
            "/api/v1/lifecycle",
            &svc,
            Some(json!({"type": "MUTATING", "entity": "Order", "id": 9, "userId": "etl-bot"})),
        )
        .await;
    assert_eq!(code, 202, "{body}");
    let (code, _) = s
        .rest("GET", "/api/v1/rooms/Order:9/locks", &s.token("x"), None)
        .await;
    assert_eq!(code, 200);
    let (code, _) = s
        .rest("GET", "/api/v1/no/such/thing/Order:9", &s.token("x"), None)
        .await;
    assert_eq!(code, 404);
    // A second member: a diff goes out (diff delivery), and two users are online.
    let mut bob = s.client("bob").await;
    bob.sub("Order:9", None).await.unwrap();
    next_change(&mut alice, "Order:9", "joins", "bob").await;

    let m = scrape_until(&s, "the live state of two users in one room", |m| {
        [
            ("roster_sessions", 2.0),
            ("roster_connections", 2.0),
            ("roster_online_users", 2.0),
            ("roster_rooms", 1.0),
            ("roster_locks_held", 1.0),
            ("roster_stale_entities", 1.0),
        ]
        .iter()
        .all(|(g, want)| series(m, g, &[]) == Some(*want))
            // Pings go out every 500 ms; the client's pongs come back.
            && series(m, "roster_ping_rtt_seconds_count", &[]).unwrap_or(0.0) >= 1.0
    })
    .await;
    assert!(
        series(&m, "roster_diff_delivery_seconds_count", &[]).unwrap_or(0.0) >= 1.0,
        "a diff was delivered:\n{m}"
    );
    let rest = "roster_http_request_duration_seconds_count";
    for (route, method, status) in [
        ("/api/v1/rooms/{room}/locks", "GET", "2xx"),
        ("/api/v1/lifecycle", "POST", "2xx"),
        ("unmatched", "GET", "4xx"),
    ] {
        let n = series(
            &m,
            rest,
            &[
                &format!(r#"route="{route}""#),
                &format!(r#"method="{method}""#),
                &format!(r#"status="{status}""#),
            ],
        );
        assert_eq!(n, Some(1.0), "{method} {route} {status}:\n{m}");
    }
    assert!(
        !m.lines()
            .any(|l| l.starts_with("roster_http_") && l.contains("Order:9")),
        "a raw path became a label:\n{m}"
    );

    // The lock released, one user gone: the gauges come back down.
    alice
        .request(
            json!({"type":"UNLOCK","room":"Order:9","field":"total"}),
            "UNLOCK_ACK",
            T,
        )
        .await
        .unwrap();
    drop(bob);
    scrape_until(&s, "the lock released and bob gone", |m| {
        series(m, "roster_locks_held", &[]) == Some(0.0)
            && series(m, "roster_online_users", &[]) == Some(1.0)
    })
    .await;
}

#[tokio::test]
async fn a_timed_out_session_adds_its_ghost_time_to_the_histogram() {
    let s = Server::start().await; // session_timeout 2s
    let mut alice = s.client("alice").await;
    alice.sub("R", None).await.unwrap();
    let mut bob = s.client("bob").await;
    bob.sub("R", None).await.unwrap();
    next_change(&mut alice, "R", "joins", "bob").await;
    let before = s.metrics().await;
    assert_eq!(
        series(&before, "roster_ghost_time_seconds_count", &[]),
        Some(0.0)
    );
    bob.freeze();
    next_change(&mut alice, "R", "leaves", "bob").await;
    let m = s.metrics().await;
    assert_eq!(
        series(&m, "roster_ghost_time_seconds_count", &[]),
        Some(1.0),
        "{m}"
    );
    // Bob was silent for about session_timeout before the leave.
    let sum = series(&m, "roster_ghost_time_seconds_sum", &[]).unwrap_or(0.0);
    assert!((1.5..=4.0).contains(&sum), "ghost time {sum} s");
    assert_eq!(
        series(&m, "roster_ghost_time_seconds_bucket", &[r#"le="1""#]),
        Some(0.0),
        "{m}"
    );
    assert_eq!(
        series(&m, "roster_ghost_time_seconds_bucket", &[r#"le="5""#]),
        Some(1.0),
        "{m}"
    );
}

#[tokio::test]
async fn logs_written_to_a_pipe_carry_no_colour_codes() {
    for format in ["text", "json"] {
        // The harness pipes stderr; info level so the start-up lines are logged.
        let s = Server::start_with(&[("ROSTER_LOG_LEVEL", "info"), ("ROSTER_LOG_FORMAT", format)])
            .await;
        let log = s.log.lock().unwrap().clone();
        assert!(
            log.iter()
                .any(|l| l.contains("roster listening") && !l.starts_with("roster listening")),
            "{format}: no tracing line to look at: {log:?}"
        );
        let coloured: Vec<&String> = log.iter().filter(|l| l.contains("\x1b[")).collect();
        assert!(coloured.is_empty(), "{format}: {coloured:?}");
    }
}
