//! The presence event stream to webhooks (SPEC §7, issue 13): a receiver run
//! here (a real HTTP server on 127.0.0.1) checks every POST's signature, the
//! order of the events (the tenant's sequence without gaps), batching, and
//! retries while it fails; an endpoint that never answers holds up neither
//! presence nor the other endpoints; a batch given up on is listed over REST.

mod common;
use common::*;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use serde_json::{json, Value};
use sha2::Sha256;

/// What the receiver was sent and accepted.
#[derive(Default)]
struct Received {
    /// Accepted batches, in arrival order: each POST's events.
    batches: Mutex<Vec<Vec<Value>>>,
    /// POSTs answered, accepted or not.
    posts: AtomicUsize,
    /// Answer 500 to this many more POSTs.
    fail_next: AtomicUsize,
    /// The signing secret to check against (set once the webhook exists).
    secret: Mutex<String>,
    /// Signatures that did not check out (must stay 0).
    bad_signatures: AtomicUsize,
    /// Milliseconds to take over each POST (a slow endpoint).
    delay_ms: std::sync::atomic::AtomicU64,
}

impl Received {
    fn events(&self) -> Vec<Value> {
        self.batches.lock().iter().flatten().cloned().collect()
    }
}

async fn receive(State(r): State<Arc<Received>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    r.posts.fetch_add(1, Ordering::SeqCst);
    let delay = r.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let ts = headers["x-roster-timestamp"].to_str().unwrap().to_string();
    let sig = headers["x-roster-signature"].to_str().unwrap().to_string();
    // What a receiver does: recompute the HMAC over "<timestamp>.<body>", and
    // refuse stale timestamps (replays).
    let mut mac = Hmac::<Sha256>::new_from_slice(r.secret.lock().as_bytes()).unwrap();
    mac.update(format!("{ts}.").as_bytes());
    mac.update(&body);
    let want = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let age = now.abs_diff(ts.parse::<u64>().unwrap());
    if sig != want || age > 300 {
        r.bad_signatures.fetch_add(1, Ordering::SeqCst);
        return StatusCode::UNAUTHORIZED;
    }
    if r.fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let v: Value = serde_json::from_slice(&body).unwrap();
    r.batches
        .lock()
        .push(v["events"].as_array().unwrap().clone());
    StatusCode::OK
}

/// A receiver on a free port; its URL.
async fn receiver(r: Arc<Received>) -> String {
    let app = axum::Router::new()
        .route("/hook", post(receive))
        .with_state(r);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    format!("http://{addr}/hook")
}

/// A TCP listener that accepts and never answers: a hung endpoint.
async fn black_hole() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = vec![];
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    format!("http://{addr}/hook")
}

async fn server(retry_for: &str) -> Server {
    Server::start_with(&[
        ("ROSTER_WEBHOOKS_ALLOW_PRIVATE", "true"),
        ("ROSTER_WEBHOOKS_RETRY_FOR", retry_for),
        ("ROSTER_TIMING_LOCK_TTL", "1h"),
    ])
    .await
}

async fn add_webhook(s: &Server, url: &str, events: Option<Value>) -> Value {
    let mut body = json!({"url": url});
    if let Some(e) = events {
        body["events"] = e;
    }
    let (code, w) = s
        .rest(
            "POST",
            "/api/v1/webhooks",
            &s.admin_token("acme"),
            Some(body),
        )
        .await;
    assert_eq!(code, 201, "{w}");
    w
}

/// Waits until the receiver accepted `n` events.
async fn events_become(r: &Received, n: usize) -> Vec<Value> {
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = r.events();
        if got.len() >= n {
            return got;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "{} of {n} events arrived: {got:#?}",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

/// Every event in tenant sequence 1, 2, 3, … with no gap and no repeat.
fn assert_in_sequence(events: &[Value]) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"], json!(i as u64 + 1), "event {i}: {e}");
        assert_eq!(e["tenantId"], "acme");
        assert!(e["id"].as_str().unwrap().starts_with("evt_"));
    }
}

#[tokio::test]
async fn events_arrive_signed_in_order_and_batched() {
    let s = server("5m").await;
    let r = Arc::new(Received::default());
    let url = receiver(r.clone()).await;
    let w = add_webhook(&s, &url, None).await;
    *r.secret.lock() = w["secret"].as_str().unwrap().to_string();
    assert!(w["secret"].as_str().unwrap().len() >= 16, "{w}");

    let mut alice = s.client("alice").await;
    alice.sub("Order:1", Some(json!({"f": 1}))).await.unwrap();
    let mut bob = s.client("bob").await;
    bob.sub("Order:1", None).await.unwrap();
    alice
        .request(
            json!({"type":"LOCK","room":"Order:1","field":"total"}),
            "LOCK_ACK",
            T,
        )
        .await
        .unwrap();
    // A state change: member_updated is opt-in, so this endpoint gets none.
    alice
        .send(json!({"type":"STATE","room":"Order:1","state":{"f": 2}}))
        .await
        .unwrap();
    assert_eq!(alice.bye().await.unwrap(), Some(1000));
    bob.bye().await.unwrap();

    let events = events_become(&r, 12).await;
    assert_eq!(
        kinds(&events),
        [
            "user_online",
            "room_occupied",
            "member_added",
            "user_online",
            "member_added",
            "lock_acquired",
            "member_removed",
            "lock_released",
            "user_offline",
            "member_removed",
            "room_vacated",
            "user_offline",
        ],
        "{events:#?}"
    );
    // member_updated was numbered too (another endpoint may want it): the
    // sequence of what this endpoint got skips it exactly where it was.
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let removed = &events[6];
    assert_eq!(
        (
            removed["userId"].clone(),
            removed["room"].clone(),
            removed["reason"].clone()
        ),
        (json!("alice"), json!("Order:1"), json!("left"))
    );
    assert_eq!(events[7]["field"], "total");
    assert_eq!(events[7]["reason"], "left");
    assert_eq!(r.bad_signatures.load(Ordering::SeqCst), 0);
    // Several events went in one POST.
    assert!(
        r.batches.lock().len() < events.len(),
        "{} POSTs for {} events",
        r.batches.lock().len(),
        events.len()
    );
    // The REST view counts them.
    let id = w["id"].as_str().unwrap();
    let (_, v) = s
        .rest(
            "GET",
            &format!("/api/v1/webhooks/{id}"),
            &s.admin_token("acme"),
            None,
        )
        .await;
    assert_eq!(v["delivery"]["delivered"], json!(events.len()), "{v}");
    assert!(v.get("secret").is_none(), "the secret is shown once: {v}");
}

#[tokio::test]
async fn a_failing_endpoint_gets_everything_once_it_answers_again() {
    let s = server("30s").await;
    let r = Arc::new(Received::default());
    r.fail_next.store(4, Ordering::SeqCst);
    let url = receiver(r.clone()).await;
    let w = add_webhook(&s, &url, Some(json!(["member_added", "member_removed"]))).await;
    *r.secret.lock() = w["secret"].as_str().unwrap().to_string();
    let mut clients = vec![];
    for i in 0..10 {
        let mut c = s.client(&format!("u{i}")).await;
        c.sub("Room:r", None).await.unwrap();
        clients.push(c);
    }
    for c in &mut clients {
        c.bye().await.unwrap();
    }
    let events = events_become(&r, 20).await;
    assert_eq!(events.len(), 20, "no duplicate: {events:#?}");
    assert!(r.posts.load(Ordering::SeqCst) > 4, "it retried");
    // In order: the tenant's sequence only grows.
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let k = kinds(&events);
    assert_eq!(k.iter().filter(|k| *k == "member_added").count(), 10);
}

#[tokio::test]
async fn every_event_is_numbered_in_one_tenant_sequence_without_gaps() {
    let s = server("5m").await;
    let r = Arc::new(Received::default());
    let url = receiver(r.clone()).await;
    // Every kind, member_updated included: the whole sequence.
    let all = json!([
        "member_added",
        "member_removed",
        "member_updated",
        "room_occupied",
        "room_vacated",
        "user_online",
        "user_offline",
        "lock_acquired",
        "lock_released",
        "entity_stale",
        "entity_fresh"
    ]);
    let w = add_webhook(&s, &url, Some(all)).await;
    *r.secret.lock() = w["secret"].as_str().unwrap().to_string();
    let mut a = s.client("alice").await;
    a.sub("Order:2", None).await.unwrap();
    a.send(json!({"type":"STATE","room":"Order:2","state":{"x": 1}}))
        .await
        .unwrap();
    let svc = s.token_full("etl", "acme", &["service"], None);
    for ty in ["MUTATING", "MUTATED"] {
        let (code, _) = s
            .rest(
                "POST",
                "/api/v1/lifecycle",
                &svc,
                Some(json!({"type": ty, "entity": "Order", "id": 2, "userId": "etl"})),
            )
            .await;
        assert_eq!(code, 202);
    }
    a.bye().await.unwrap();
    let events = events_become(&r, 9).await;
    assert_in_sequence(&events);
    assert_eq!(
        kinds(&events),
        [
            "user_online",
            "room_occupied",
            "member_added",
            "member_updated",
            "entity_stale",
            "entity_fresh",
            "member_removed",
            "room_vacated",
            "user_offline"
        ]
    );
    assert_eq!(events[4]["busyBy"], "etl");
    assert_eq!(events[5]["version"], 1);
}

#[tokio::test]
async fn a_hung_endpoint_holds_up_neither_presence_nor_the_others_and_failures_are_listed() {
    let s = server("1s").await;
    let hung = black_hole().await;
    add_webhook(&s, &hung, None).await;
    let r = Arc::new(Received::default());
    r.fail_next.store(usize::MAX, Ordering::SeqCst); // always 500
    let failing_url = receiver(r.clone()).await;
    let failing = add_webhook(&s, &failing_url, None).await;
    *r.secret.lock() = failing["secret"].as_str().unwrap().to_string();
    let good = Arc::new(Received::default());
    let good_url = receiver(good.clone()).await;
    let w = add_webhook(&s, &good_url, None).await;
    *good.secret.lock() = w["secret"].as_str().unwrap().to_string();

    // Presence goes on while one endpoint hangs and another fails.
    let mut clients = vec![];
    for i in 0..20 {
        let mut c = s.client(&format!("p{i}")).await;
        c.sub("Hall:1", None).await.unwrap();
        clients.push(c);
    }
    // user_online + member_added for each, and one room_occupied.
    let events = events_become(&good, 41).await;
    assert_eq!(events.len(), 41);
    // The failing endpoint's first batch is given up on after retry_for and
    // listed; it goes on with the next events.
    let id = failing["id"].as_str().unwrap();
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, v) = s
            .rest(
                "GET",
                &format!("/api/v1/webhooks/{id}"),
                &s.admin_token("acme"),
                None,
            )
            .await;
        let f = &v["delivery"]["failures"];
        if f.as_array().is_some_and(|a| !a.is_empty()) {
            assert_eq!(f[0]["error"], "answered 500", "{v}");
            assert!(f[0]["attempts"].as_u64().unwrap() >= 2, "{v}");
            assert!(v["delivery"]["failed"].as_u64().unwrap() >= 1, "{v}");
            break;
        }
        assert!(tokio::time::Instant::now() < end, "no failure listed: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = s.metrics().await;
    assert!(
        m.contains("roster_webhook_retries_total"),
        "metrics lack the retries counter"
    );
}

#[tokio::test]
async fn webhooks_are_managed_over_rest_and_bad_bodies_get_clear_errors() {
    // Private addresses are refused when webhooks.allow_private is off (default).
    let s = Server::start().await;
    let admin = s.admin_token("acme");
    for (body, field) in [
        (json!({"url": "http://127.0.0.1:9/hook"}), "url"),
        (json!({"url": "http://169.254.169.254/latest"}), "url"),
        (json!({"url": "not a url"}), "url"),
        (json!({"url": "ftp://example.com/x"}), "url"),
        (
            json!({"url": "https://93.184.215.14/h", "events": []}),
            "events",
        ),
        (
            json!({"url": "https://93.184.215.14/h", "events": ["nope"]}),
            "events",
        ),
        (
            json!({"url": "https://93.184.215.14/h", "secret": "short"}),
            "secret",
        ),
        (
            json!({"url": "https://93.184.215.14/h", "extra": 1}),
            "extra",
        ),
    ] {
        let (code, e) = s
            .rest("POST", "/api/v1/webhooks", &admin, Some(body.clone()))
            .await;
        assert_eq!(code, 422, "{body} → {e}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains(field),
            "{body} → {e}"
        );
    }
    // Admins only.
    let (code, _) = s
        .rest("GET", "/api/v1/webhooks", &s.token("alice"), None)
        .await;
    assert_eq!(code, 403);
    let (code, _) = s
        .rest("GET", "/api/v1/webhooks/wh_nope", &admin, None)
        .await;
    assert_eq!(code, 404);

    let s = server("5m").await;
    let admin = s.admin_token("acme");
    let (code, w) = s
        .rest(
            "POST",
            "/api/v1/webhooks",
            &admin,
            Some(json!({"url": "http://127.0.0.1:9/a", "secret": "0123456789abcdef", "events": ["room_vacated"]})),
        )
        .await;
    assert_eq!(code, 201, "{w}");
    assert_eq!(w["secret"], "0123456789abcdef");
    let id = w["id"].as_str().unwrap().to_string();
    let (code, w2) = s
        .rest(
            "PUT",
            &format!("/api/v1/webhooks/{id}"),
            &admin,
            Some(json!({"url": "http://127.0.0.1:9/b"})),
        )
        .await;
    assert_eq!(code, 200, "{w2}");
    assert_eq!(
        (w2["url"].clone(), w2["events"].clone()),
        (json!("http://127.0.0.1:9/b"), json!(null))
    );
    // Another tenant sees none of it.
    let (_, other) = s
        .rest("GET", "/api/v1/webhooks", &s.admin_token("globex"), None)
        .await;
    assert_eq!(other["items"], json!([]));
    let (code, _) = s
        .rest(
            "DELETE",
            &format!("/api/v1/webhooks/{id}"),
            &s.admin_token("globex"),
            None,
        )
        .await;
    assert_eq!(code, 404);
    let (_, list) = s.rest("GET", "/api/v1/webhooks", &admin, None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    let (code, _) = s
        .rest("DELETE", &format!("/api/v1/webhooks/{id}"), &admin, None)
        .await;
    assert_eq!(code, 204);
    let (_, list) = s.rest("GET", "/api/v1/webhooks", &admin, None).await;
    assert_eq!(list["items"], json!([]));
}

/// A stopping server gives the events still queued for an endpoint a last
/// chance (a few seconds) before it exits. (Two workers: `stop` blocks one while
/// the receiver answers on the other.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_queued_at_shutdown_are_still_delivered() {
    let s = server("30s").await;
    let r = Arc::new(Received::default());
    r.fail_next.store(2, Ordering::SeqCst);
    let url = receiver(r.clone()).await;
    let w = add_webhook(&s, &url, None).await;
    *r.secret.lock() = w["secret"].as_str().unwrap().to_string();
    let mut clients = vec![];
    for i in 0..3 {
        let mut c = s.client(&format!("q{i}")).await;
        c.sub("Shop:1", None).await.unwrap();
        clients.push(c);
    }
    // Still retrying the first batch when the stop comes.
    s.stop();
    let events = r.events();
    assert_eq!(events.len(), 7, "{events:#?}");
    assert_in_sequence(&events);
}

/// A tenant without an endpoint costs no events: its changes before the first
/// endpoint are not numbered, so that endpoint's sequence starts at 1.
#[tokio::test]
async fn changes_before_the_first_endpoint_are_not_events() {
    let s = server("5m").await;
    let mut early = s.client("early").await;
    early.sub("Lobby:1", None).await.unwrap();
    early.bye().await.unwrap();
    let r = Arc::new(Received::default());
    let url = receiver(r.clone()).await;
    let w = add_webhook(&s, &url, None).await;
    *r.secret.lock() = w["secret"].as_str().unwrap().to_string();
    let mut late = s.client("late").await;
    late.sub("Lobby:1", None).await.unwrap();
    let events = events_become(&r, 3).await;
    assert_in_sequence(&events);
    assert_eq!(
        kinds(&events),
        ["user_online", "room_occupied", "member_added"]
    );
}

/// Three nodes on one Redis and one PostgreSQL: the transitions of all three
/// are one tenant sequence, delivered once by whichever node holds the
/// tenant's lease. Two nodes are killed while a slow endpoint still has a
/// backlog: the third delivers the rest from the cursors, so after removing
/// repeats (by `id`) the endpoint has every `seq` from 1 on, without a gap,
/// and every join of every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_one_sequence_and_a_killed_node_loses_nothing() {
    let (db, schema) = pg_schema().await;
    let prefix = unique_prefix();
    let redis =
        std::env::var("ROSTER_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let env = [
        ("ROSTER_ENGINE_URL", redis.as_str()),
        ("ROSTER_ENGINE_PREFIX", prefix.as_str()),
        ("ROSTER_DATABASE_URL", db.as_str()),
        ("ROSTER_TIMING_SWEEP_INTERVAL", "300ms"),
        ("ROSTER_TIMING_LOCK_TTL", "1h"),
        ("ROSTER_WEBHOOKS_ALLOW_PRIVATE", "true"),
        ("ROSTER_WEBHOOKS_BATCH_SIZE", "5"),
    ];
    let mut ns = vec![];
    for _ in 0..3 {
        ns.push(Server::start_with(&env).await);
    }
    let r = Arc::new(Received::default());
    r.delay_ms.store(60, Ordering::SeqCst);
    let url = receiver(r.clone()).await;
    let w = add_webhook(&ns[0], &url, None).await;
    *r.secret.lock() = w["secret"].as_str().unwrap().to_string();
    // The other nodes take the endpoint up from the database.
    for n in &ns[1..] {
        let end = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (_, list) = n
                .rest("GET", "/api/v1/webhooks", &n.admin_token("acme"), None)
                .await;
            if list["items"].as_array().is_some_and(|l| !l.is_empty()) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < end,
                "never synchronised: {list}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut joins = 0;
    let mut clients = vec![];
    for (i, n) in ns.iter().enumerate() {
        let mut c = n
            .client_in(&format!("u{i}"), "acme", Default::default())
            .await;
        for k in 0..12 {
            c.sub(&format!("R-{}", k % 4), None).await.unwrap();
            joins += 1;
            c.request(
                json!({"type": "UNSUB", "room": format!("R-{}", k % 4)}),
                "UNSUB_ACK",
                T,
            )
            .await
            .unwrap();
        }
        clients.push(c);
    }
    // Appended by now; the slow endpoint is still working through them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = r.events().len();
    let survivor = ns.pop().unwrap();
    for n in &ns {
        let _ = std::process::Command::new("kill")
            .args(["-9", &n.pid().to_string()])
            .status();
    }
    let mut c = survivor.client_in("late", "acme", Default::default()).await;
    for k in 0..6 {
        c.sub(&format!("L-{k}"), None).await.unwrap();
        joins += 1;
    }
    // Everything arrives: repeats removed, every seq from 1 to the newest.
    let end = tokio::time::Instant::now() + Duration::from_secs(30);
    let (n, added) = loop {
        let (complete, n, added) = one_sequence(&r.events());
        if complete && added == joins {
            break (n, added);
        }
        assert!(
            tokio::time::Instant::now() < end,
            "{added} of {joins} joins, {n} events, a gap: {complete}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        before < n,
        "the kill came mid-delivery ({before} delivered before it)"
    );
    assert_eq!(added, joins);
    assert_eq!(r.bad_signatures.load(Ordering::SeqCst), 0);
    drop(clients);
    drop(c);
    survivor.stop();
    drop_pg_schema(&schema).await;
}

/// `[[webhooks.endpoints]]` in the configuration file: delivered like any
/// endpoint, listed over REST, and read-only there.
#[tokio::test]
async fn an_endpoint_from_the_configuration_file_delivers_and_is_read_only() {
    let r = Arc::new(Received::default());
    let url = receiver(r.clone()).await;
    let secret = "config-secret-0123456789";
    *r.secret.lock() = secret.to_string();
    let dir = temp_dir("hook-config");
    let file = dir.join("roster.toml");
    std::fs::write(
        &file,
        format!(
            "[[webhooks.endpoints]]\nid = \"crm\"\ntenant = \"acme\"\nurl = \"{url}\"\nsecret = \"{secret}\"\nevents = [\"member_added\"]\n"
        ),
    )
    .unwrap();
    let s = Server::start_args(
        &["serve", "--config", file.to_str().unwrap()],
        &[("ROSTER_WEBHOOKS_ALLOW_PRIVATE", "true")],
    )
    .await;
    let mut a = s.client_in("alice", "acme", Default::default()).await;
    a.sub("Order:1", None).await.unwrap();
    let got = events_become(&r, 1).await;
    assert_eq!(kinds(&got), ["member_added"], "the filter applies");
    assert_eq!(
        r.bad_signatures.load(Ordering::SeqCst),
        0,
        "signed with the configured secret"
    );
    let admin = s.admin_token("acme");
    let (code, list) = s.rest("GET", "/api/v1/webhooks", &admin, None).await;
    assert_eq!(
        (code, list["items"][0]["id"].clone()),
        (200, json!("crm")),
        "{list}"
    );
    let (code, body) = s.rest("DELETE", "/api/v1/webhooks/crm", &admin, None).await;
    assert_eq!(code, 409, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("configuration file"));
    let (code, _) = s
        .rest(
            "PUT",
            "/api/v1/webhooks/crm",
            &admin,
            Some(json!({"url": url})),
        )
        .await;
    assert_eq!(code, 409);
    // Another tenant does not see it.
    let (_, list) = s
        .rest("GET", "/api/v1/webhooks", &s.admin_token("other"), None)
        .await;
    assert_eq!(list["items"], json!([]));
}

/// Room events (`EMIT`) are opt-in: an endpoint that names `room_event` gets
/// them with their name and data; one with the default filter does not.
#[tokio::test]
async fn room_events_reach_only_the_endpoints_that_ask_for_them() {
    let s = server("5s").await;
    let (asks, default) = (Arc::new(Received::default()), Arc::new(Received::default()));
    let w = add_webhook(
        &s,
        &receiver(asks.clone()).await,
        Some(json!(["room_event", "member_added"])),
    )
    .await;
    *asks.secret.lock() = w["secret"].as_str().unwrap().to_string();
    let w = add_webhook(&s, &receiver(default.clone()).await, None).await;
    *default.secret.lock() = w["secret"].as_str().unwrap().to_string();
    let mut a = s.client("alice").await;
    let mut b = s.client("bob").await;
    a.sub("Doc:1", None).await.unwrap();
    b.sub("Doc:1", None).await.unwrap();
    a.send(json!({"type": "EMIT", "room": "Doc:1", "event": "reaction", "data": {"emoji": "🎉"}}))
        .await
        .unwrap();
    next(&mut b, "EVENT").await;
    let got = events_become(&asks, 3).await;
    assert_eq!(kinds(&got), ["member_added", "member_added", "room_event"]);
    let e = &got[2];
    assert_eq!(
        (
            e["room"].clone(),
            e["userId"].clone(),
            e["event"].clone(),
            e["data"].clone()
        ),
        (
            json!("Doc:1"),
            json!("alice"),
            json!("reaction"),
            json!({"emoji": "🎉"})
        )
    );
    assert!(
        got.windows(2)
            .all(|w| w[0]["seq"].as_u64() < w[1]["seq"].as_u64()),
        "in sequence order"
    );
    let got = events_become(&default, 4).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !kinds(&default.events()).contains(&"room_event".to_string()),
        "{got:?}"
    );
}

/// Endpoint ids are the tenant's own: two tenants' `crm` are two endpoints,
/// and neither gets the other's events (they used to share one slot, and the
/// second replaced the first, taking its waiting events along).
#[tokio::test]
async fn two_tenants_may_name_their_endpoints_alike_and_never_share_events() {
    let secret = "config-secret-0123456789";
    let (ra, rg) = (Arc::new(Received::default()), Arc::new(Received::default()));
    *ra.secret.lock() = secret.to_string();
    *rg.secret.lock() = secret.to_string();
    let (ua, ug) = (receiver(ra.clone()).await, receiver(rg.clone()).await);
    let dir = temp_dir("hook-config-2");
    let file = dir.join("roster.toml");
    let endpoint = |tenant: &str, url: &str| {
        format!("[[webhooks.endpoints]]\nid = \"crm\"\ntenant = \"{tenant}\"\nurl = \"{url}\"\nsecret = \"{secret}\"\nevents = [\"member_added\"]\n")
    };
    std::fs::write(&file, endpoint("acme", &ua) + &endpoint("globex", &ug)).unwrap();
    let s = Server::start_args(
        &["serve", "--config", file.to_str().unwrap()],
        &[("ROSTER_WEBHOOKS_ALLOW_PRIVATE", "true")],
    )
    .await;
    let mut a = s.client_in("alice", "acme", Default::default()).await;
    a.sub("Order:1", None).await.unwrap();
    let mut g = s.client_in("gary", "globex", Default::default()).await;
    g.sub("Order:1", None).await.unwrap();
    events_become(&ra, 1).await;
    events_become(&rg, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (got_a, got_g) = (ra.events(), rg.events());
    assert_eq!(got_a.len(), 1, "{got_a:?}");
    assert_eq!(
        (got_a[0]["tenantId"].clone(), got_a[0]["userId"].clone()),
        (json!("acme"), json!("alice"))
    );
    assert_eq!(got_g.len(), 1, "{got_g:?}");
    assert_eq!(
        (got_g[0]["tenantId"].clone(), got_g[0]["userId"].clone()),
        (json!("globex"), json!("gary"))
    );
}

/// An endpoint whose queue is full (it fails, so its events wait) holds back
/// nothing: another endpoint of the tenant gets every event long past the
/// point where the first stopped. When the first answers again it goes on
/// from the oldest event the log still has; what was trimmed meanwhile is
/// counted once: delivered + dropped = every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_endpoint_holds_back_no_other_and_its_losses_count_once() {
    let s = Server::start_with(&[
        ("ROSTER_WEBHOOKS_ALLOW_PRIVATE", "true"),
        // A log (and a queue) longer than one read of the log (500 events),
        // so reading from the full endpoint's position would stop the other.
        ("ROSTER_WEBHOOKS_QUEUE_SIZE", "600"),
        ("ROSTER_LIMITS_MESSAGES_PER_SECOND", "100000"),
        ("ROSTER_LIMITS_MESSAGES_BURST", "100000"),
    ])
    .await;
    let flaky = Arc::new(Received::default());
    flaky.fail_next.store(usize::MAX, Ordering::SeqCst);
    let f = add_webhook(&s, &receiver(flaky.clone()).await, None).await;
    *flaky.secret.lock() = f["secret"].as_str().unwrap().to_string();
    let good = Arc::new(Received::default());
    let w = add_webhook(&s, &receiver(good.clone()).await, None).await;
    *good.secret.lock() = w["secret"].as_str().unwrap().to_string();
    let mut c = s.client_in("alice", "acme", Default::default()).await;
    // user_online, then 4 events per round: 1 + 4 × 400 = 1,601.
    // Paced so the working endpoint never lags by a whole log (600 events)
    // however loaded the machine: it must get every event.
    for i in 0..400 {
        let room = format!("R-{}", i % 5);
        c.sub(&room, None).await.unwrap();
        c.request(json!({"type": "UNSUB", "room": room}), "UNSUB_ACK", T)
            .await
            .unwrap();
        if i % 10 == 9 {
            events_become(&good, 1 + 4 * (i + 1)).await;
        }
    }
    let got = events_become(&good, 1601).await;
    let (complete, n, _) = one_sequence(&got);
    assert!(
        complete && n == 1601,
        "{n} events, without a gap: {complete}"
    );
    flaky.fail_next.store(0, Ordering::SeqCst);
    let url = format!("/api/v1/webhooks/{}", f["id"].as_str().unwrap());
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    let (delivered, dropped) = loop {
        let (_, v) = s.rest("GET", &url, &s.admin_token("acme"), None).await;
        let d = &v["delivery"];
        let (delivered, dropped) = (
            d["delivered"].as_u64().unwrap(),
            d["dropped"].as_u64().unwrap(),
        );
        if delivered + dropped >= 1601 {
            break (delivered, dropped);
        }
        assert!(tokio::time::Instant::now() < end, "{v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        delivered + dropped,
        1601,
        "each event delivered or counted lost, once"
    );
    assert!(dropped > 0, "the log (600 events) trimmed some");
    assert_eq!(flaky.events().len() as u64, delivered);
    let m = s.metrics().await;
    assert_eq!(
        metric(&m, "roster_webhook_events_total{outcome=\"dropped\"}"),
        dropped as f64
    );
}
