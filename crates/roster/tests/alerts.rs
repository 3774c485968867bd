//! Alert rules (SPEC §8, issue 15) against the real binary: each kind fires on
//! real traffic and resolves when it clears, with short windows and a short
//! `alerts.eval_interval`; a rule fires once and stays firing; the rule's
//! webhook is received here and its signature checked; acknowledgements;
//! tenants apart; every wrong field named; the live stream (`/api/v1/stream`)
//! carries rooms, activity and alerts. Runs on the memory engine and (in the
//! conformance run) on Redis; `cluster.rs` has one firing across three nodes.

mod common;
use common::*;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use roster_client::Hello;
use serde_json::{json, Value};
use sha2::Sha256;

const FAST_ALERTS: &[(&str, &str)] = &[
    ("ROSTER_ALERTS_EVAL_INTERVAL", "200ms"),
    ("ROSTER_DASHBOARD_UPDATE_INTERVAL", "200ms"),
    ("ROSTER_WEBHOOKS_ALLOW_PRIVATE", "true"),
    ("ROSTER_DATABASE_BATCH_INTERVAL", "100ms"),
];

async fn server() -> Server {
    Server::start_with(FAST_ALERTS).await
}

/// What the rule's webhook received: (type, alert), signatures checked.
#[derive(Default)]
struct Hooks {
    got: Mutex<Vec<(String, Value)>>,
    bad_signatures: std::sync::atomic::AtomicUsize,
    secret: Mutex<String>,
}

async fn receive(State(h): State<Arc<Hooks>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let ts = headers["x-roster-timestamp"].to_str().unwrap();
    let sig = headers["x-roster-signature"].to_str().unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(h.secret.lock().as_bytes()).unwrap();
    mac.update(format!("{ts}.").as_bytes());
    mac.update(&body);
    if sig != format!("v1={}", hex::encode(mac.finalize().into_bytes())) {
        h.bad_signatures
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        return StatusCode::UNAUTHORIZED;
    }
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        headers["x-roster-alert-rule"].to_str().unwrap(),
        v["alert"]["ruleId"].as_str().unwrap()
    );
    h.got
        .lock()
        .push((v["type"].as_str().unwrap().to_string(), v["alert"].clone()));
    StatusCode::OK
}

async fn hook_receiver(h: Arc<Hooks>) -> String {
    let app = axum::Router::new()
        .route("/alerts", post(receive))
        .with_state(h);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    format!("http://{addr}/alerts")
}

async fn create_rule(s: &Server, tenant: &str, body: Value) -> Value {
    let (code, r) = s
        .rest(
            "POST",
            "/api/v1/alert-rules",
            &s.admin_token(tenant),
            Some(body),
        )
        .await;
    assert_eq!(code, 201, "{r}");
    r
}

async fn alerts(s: &Server, tenant: &str, query: &str) -> Vec<Value> {
    let (code, v) = s
        .rest(
            "GET",
            &format!("/api/v1/alerts{query}"),
            &s.admin_token(tenant),
            None,
        )
        .await;
    assert_eq!(code, 200, "{v}");
    v["items"].as_array().unwrap().clone()
}

/// Polls `GET /alerts{query}` until `done`, for up to 15 s.
async fn alerts_until(
    s: &Server,
    tenant: &str,
    query: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let a = alerts(s, tenant, query).await;
        if done(&a) {
            return a;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "alerts{query} never matched: {a:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn joined(s: &Server, user: &str, room: &str) -> roster_client::Client {
    let mut c = s.client_in(user, "acme", Hello::default()).await;
    c.sub(room, None).await.expect("joined");
    c
}

#[tokio::test]
async fn capacity_fires_once_is_acked_and_resolves_with_a_signed_webhook() {
    let s = server().await;
    let hooks = Arc::new(Hooks::default());
    let url = hook_receiver(hooks.clone()).await;
    let admin = s.admin_token("acme");
    let (code, _) = s
        .rest(
            "POST",
            "/api/v1/rooms",
            &admin,
            Some(json!({"key": "Ward:1", "capacity": 2})),
        )
        .await;
    assert_eq!(code, 201);
    let rule = create_rule(
        &s,
        "acme",
        json!({"name": "ward full", "kind": "capacity", "threshold": 100, "scope": "room",
               "target": "Ward:1", "severity": "critical", "webhookUrl": url}),
    )
    .await;
    let secret = rule["webhookSecret"]
        .as_str()
        .expect("secret answered once");
    *hooks.secret.lock() = secret.to_string();
    let (_, again) = s
        .rest(
            "GET",
            &format!("/api/v1/alert-rules/{}", rule["id"].as_str().unwrap()),
            &admin,
            None,
        )
        .await;
    assert!(
        again.get("webhookSecret").is_none(),
        "the secret is shown once: {again}"
    );

    let a = joined(&s, "ann", "Ward:1").await;
    // Half full: nothing fires.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(alerts(&s, "acme", "?state=firing").await.is_empty());
    let b = joined(&s, "bob", "Ward:1").await;
    let firing = alerts_until(&s, "acme", "?state=firing", |a| !a.is_empty()).await;
    assert_eq!(firing.len(), 1);
    let al = &firing[0];
    assert_eq!(al["ruleId"], rule["id"]);
    assert_eq!(al["subject"], "Ward:1");
    assert_eq!(al["severity"], "critical");
    assert_eq!(al["value"], 100);
    assert!(al["message"].as_str().unwrap().contains("Ward:1"), "{al}");
    assert!(al["resolvedAt"].is_null() && al["ackedAt"].is_null());

    // It stays one alert over several evaluations.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(alerts(&s, "acme", "").await.len(), 1);

    // A monitor acknowledges it; the first acknowledgement stays.
    let id = al["id"].as_str().unwrap();
    let monitor = s.token_full("olga", "acme", &["monitor"], None);
    let (code, acked) = s
        .rest("POST", &format!("/api/v1/alerts/{id}/ack"), &monitor, None)
        .await;
    assert_eq!(code, 200, "{acked}");
    assert_eq!(acked["ackedBy"], "olga");
    assert_eq!(acked["state"], "firing");
    let (_, twice) = s
        .rest("POST", &format!("/api/v1/alerts/{id}/ack"), &admin, None)
        .await;
    assert_eq!(twice["ackedAt"], acked["ackedAt"]);
    assert_eq!(twice["ackedBy"], "olga");

    // Below the threshold again: resolved, the same row.
    b.close().await;
    let resolved = alerts_until(&s, "acme", "?state=resolved", |a| !a.is_empty()).await;
    assert_eq!(resolved[0]["id"], al["id"]);
    assert!(resolved[0]["resolvedAt"].is_string());
    assert!(alerts(&s, "acme", "?state=firing").await.is_empty());

    // The webhook got both, signed (a bad signature would not be recorded).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while hooks.got.lock().len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "webhooks: {:?}",
            hooks.got.lock()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = hooks.got.lock().clone();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].0, "alert_fired");
    assert_eq!(got[0].1["id"], al["id"]);
    assert_eq!(got[1].0, "alert_resolved");
    assert_eq!(got[1].1["state"], "resolved");
    assert_eq!(
        hooks
            .bad_signatures
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );

    let m = s.metrics().await;
    assert!(
        m.contains("roster_alerts_fired_total{severity=\"critical\"} 1"),
        "{m}"
    );
    assert!(m.contains("roster_alerts_resolved_total{severity=\"critical\"} 1"));
    assert!(m.contains("roster_alert_webhooks_total{outcome=\"delivered\"} 2"));
    drop(a);
}

#[tokio::test]
async fn latency_fires_on_slow_pongs_and_resolves_when_they_are_quick_again() {
    let s = Server::start_with(
        &[
            FAST_ALERTS,
            &[("ROSTER_TIMING_HEARTBEAT_INTERVAL", "200ms")],
        ]
        .concat(),
    )
    .await;
    create_rule(
        &s,
        "acme",
        json!({"name": "slow", "kind": "latency", "threshold": 100, "window": "1s",
               "scope": "room", "target": "Call:1"}),
    )
    .await;
    let mut c = joined(&s, "ann", "Call:1").await;
    // Elsewhere, a quick member does not count.
    let _other = joined(&s, "bob", "Call:2").await;
    // Pongs held back: the client reads its socket only every 300 ms.
    let slow = tokio::spawn(async move {
        for _ in 0..40 {
            c.freeze();
            tokio::time::sleep(Duration::from_millis(300)).await;
            c.thaw();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        c
    });
    let firing = alerts_until(&s, "acme", "?state=firing", |a| !a.is_empty()).await;
    assert_eq!(firing[0]["kind"], "latency");
    assert!(firing[0]["value"].as_i64().unwrap() >= 100, "{}", firing[0]);
    assert!(firing[0]["subject"].is_null());
    slow.abort();
    // (Aborted mid-freeze, the client may be frozen: a new one answers quickly.)
    let _quick = joined(&s, "ann", "Call:1").await;
    // The slow session's last RTT stays in its record until it times out; then
    // only quick RTTs are in the window.
    alerts_until(&s, "acme", "?state=resolved", |a| !a.is_empty()).await;
}

#[tokio::test]
async fn heartbeat_missed_fires_when_sessions_time_out() {
    let s = server().await;
    create_rule(
        &s,
        "acme",
        json!({"name": "dropping", "kind": "heartbeat_missed", "threshold": 2, "window": "4s",
               "scope": "roomType", "target": "GENERIC", "severity": "warning"}),
    )
    .await;
    let mut a = joined(&s, "ann", "Shop:1").await;
    let mut b = joined(&s, "bob", "Shop:2").await;
    let _c = joined(&s, "cid", "Shop:3").await;
    // Two silent peers: no pongs, no heartbeats; timed out after 2 s.
    a.freeze();
    b.freeze();
    let firing = alerts_until(&s, "acme", "?state=firing", |a| !a.is_empty()).await;
    assert_eq!(firing[0]["kind"], "heartbeat_missed");
    assert_eq!(firing[0]["value"], 2);
    // The window passes: resolved.
    alerts_until(&s, "acme", "?state=resolved", |a| !a.is_empty()).await;
    assert_eq!(alerts(&s, "acme", "").await.len(), 1, "fired once");
}

#[tokio::test]
async fn online_drop_fires_when_users_leave_and_resolves_after_the_window() {
    let s = server().await;
    create_rule(
        &s,
        "acme",
        json!({"name": "exodus", "kind": "online_drop", "threshold": 50, "window": "3s"}),
    )
    .await;
    let mut cs = Vec::new();
    for u in ["u1", "u2", "u3", "u4"] {
        cs.push(joined(&s, u, "Hall:1").await);
    }
    // Let the peak of 4 be sampled.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(alerts(&s, "acme", "").await.is_empty());
    for c in cs.drain(1..) {
        let mut c = c;
        c.bye().await.unwrap();
    }
    let firing = alerts_until(&s, "acme", "?state=firing", |a| !a.is_empty()).await;
    assert_eq!(firing[0]["kind"], "online_drop");
    assert_eq!(firing[0]["value"], 75);
    assert!(
        firing[0]["message"]
            .as_str()
            .unwrap()
            .contains("from 4 to 1"),
        "{}",
        firing[0]
    );
    alerts_until(&s, "acme", "?state=resolved", |a| !a.is_empty()).await;
}

#[tokio::test]
async fn a_disabled_or_deleted_rule_resolves_its_alerts() {
    let s = server().await;
    let admin = s.admin_token("acme");
    let rule = create_rule(
        &s,
        "acme",
        json!({"name": "anyone", "kind": "capacity", "threshold": 1, "scope": "tenant"}),
    )
    .await;
    let (code, _) = s
        .rest(
            "POST",
            "/api/v1/rooms",
            &admin,
            Some(json!({"key": "Desk:1", "capacity": 10})),
        )
        .await;
    assert_eq!(code, 201);
    let _a = joined(&s, "ann", "Desk:1").await;
    alerts_until(&s, "acme", "?state=firing", |a| a.len() == 1).await;
    let id = rule["id"].as_str().unwrap();
    let (code, patched) = s
        .rest(
            "PATCH",
            &format!("/api/v1/alert-rules/{id}"),
            &admin,
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(code, 200, "{patched}");
    assert_eq!(patched["enabled"], false);
    alerts_until(&s, "acme", "?state=resolved", |a| a.len() == 1).await;
    // Enabled again: a new alert; deleted: resolved at once.
    s.rest(
        "PATCH",
        &format!("/api/v1/alert-rules/{id}"),
        &admin,
        Some(json!({"enabled": true})),
    )
    .await;
    alerts_until(&s, "acme", "?state=firing", |a| a.len() == 1).await;
    let (code, _) = s
        .rest("DELETE", &format!("/api/v1/alert-rules/{id}"), &admin, None)
        .await;
    assert_eq!(code, 204);
    assert!(alerts(&s, "acme", "?state=firing").await.is_empty());
    assert_eq!(alerts(&s, "acme", "?state=resolved").await.len(), 2);
    let (code, _) = s
        .rest("DELETE", &format!("/api/v1/alert-rules/{id}"), &admin, None)
        .await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn rules_and_alerts_stay_in_their_tenant() {
    let s = server().await;
    let rule = create_rule(
        &s,
        "acme",
        json!({"name": "anyone", "kind": "capacity", "threshold": 1}),
    )
    .await;
    let (code, _) = s
        .rest(
            "POST",
            "/api/v1/rooms",
            &s.admin_token("acme"),
            Some(json!({"key": "Desk:1", "capacity": 10})),
        )
        .await;
    assert_eq!(code, 201);
    let _a = joined(&s, "ann", "Desk:1").await;
    // A room of another tenant, just as full, under no rule.
    let (code, _) = s
        .rest(
            "POST",
            "/api/v1/rooms",
            &s.admin_token("globex"),
            Some(json!({"key": "Desk:1", "capacity": 1})),
        )
        .await;
    assert_eq!(code, 201);
    let mut g = s.client_in("gus", "globex", Hello::default()).await;
    g.sub("Desk:1", None).await.unwrap();
    let firing = alerts_until(&s, "acme", "?state=firing", |a| !a.is_empty()).await;
    assert_eq!(firing.len(), 1);
    let other = s.admin_token("globex");
    let id = rule["id"].as_str().unwrap();
    let alert = firing[0]["id"].as_str().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(alerts(&s, "globex", "").await.is_empty());
    let (code, list) = s.rest("GET", "/api/v1/alert-rules", &other, None).await;
    assert_eq!((code, list["items"].as_array().unwrap().len()), (200, 0));
    for (method, path) in [
        ("GET", format!("/api/v1/alert-rules/{id}")),
        ("PATCH", format!("/api/v1/alert-rules/{id}")),
        ("DELETE", format!("/api/v1/alert-rules/{id}")),
        ("POST", format!("/api/v1/alerts/{alert}/ack")),
    ] {
        let body = (method == "PATCH").then(|| json!({"threshold": 5}));
        let (code, e) = s.rest(method, &path, &other, body).await;
        assert_eq!(code, 404, "{method} {path}: {e}");
    }
    // The rule is untouched.
    let (_, r) = s
        .rest(
            "GET",
            &format!("/api/v1/alert-rules/{id}"),
            &s.admin_token("acme"),
            None,
        )
        .await;
    assert_eq!(r["threshold"], 1);
}

#[tokio::test]
async fn roles_and_every_wrong_field_get_a_clear_error() {
    let s = Server::start_with(&[("ROSTER_ALERTS_EVAL_INTERVAL", "200ms")]).await;
    let admin = s.admin_token("acme");
    let monitor = s.token_full("olga", "acme", &["monitor"], None);
    let user = s.token("ann");
    // Reading needs monitor, writing admin.
    assert_eq!(
        s.rest("GET", "/api/v1/alert-rules", &user, None).await.0,
        403
    );
    assert_eq!(s.rest("GET", "/api/v1/alerts", &user, None).await.0, 403);
    assert_eq!(
        s.rest("GET", "/api/v1/alert-rules", &monitor, None).await.0,
        200
    );
    assert_eq!(s.rest("GET", "/api/v1/stream", &user, None).await.0, 403);
    let ok = json!({"name": "n", "kind": "capacity", "threshold": 90});
    assert_eq!(
        s.rest("POST", "/api/v1/alert-rules", &monitor, Some(ok.clone()))
            .await
            .0,
        403
    );
    assert_eq!(
        rest_as(&s.url("/api/v1/alert-rules"), "GET", None, &[], None)
            .await
            .0,
        401
    );
    let with = |k: &str, v: Value| {
        let mut b = ok.clone();
        b[k] = v;
        b
    };
    let cases = [
        (json!({"kind": "capacity", "threshold": 90}), "name"),
        (with("name", json!("")), "name"),
        (with("name", json!("x".repeat(101))), "name"),
        (json!({"name": "n", "threshold": 90}), "kind"),
        (with("kind", json!("cpu")), "kind"),
        (with("threshold", json!(0)), "threshold"),
        (with("threshold", json!(101)), "threshold"),
        (
            json!({"name": "n", "kind": "latency", "threshold": 2_000_000}),
            "threshold",
        ),
        (with("threshold", json!("high")), "threshold"),
        (with("window", json!("soon")), "window"),
        (with("window", json!("100ms")), "window"),
        (with("window", json!("2d")), "window"),
        (with("scope", json!("planet")), "scope"),
        (with("scope", json!("room")), "target"),
        (with("target", json!("Order:1")), "target"),
        (
            {
                let mut b = with("scope", json!("room"));
                b["target"] = json!("has space");
                b
            },
            "target",
        ),
        (
            {
                let mut b = with("scope", json!("roomType"));
                b["target"] = json!("NOPE");
                b
            },
            "target",
        ),
        (with("severity", json!("fatal")), "severity"),
        (with("webhookUrl", json!("ftp://x.example/")), "webhookUrl"),
        // Loopback is refused while webhooks.allow_private is off (SSRF).
        (
            with("webhookUrl", json!("http://127.0.0.1:9/x")),
            "webhookUrl",
        ),
        (
            with("webhookSecret", json!("0123456789abcdef")),
            "webhookSecret",
        ),
        (with("colour", json!("red")), "colour"),
    ];
    for (body, field) in cases {
        let (code, e) = s
            .rest("POST", "/api/v1/alert-rules", &admin, Some(body.clone()))
            .await;
        assert!(code == 422 || code == 400, "{body}: {code} {e}");
        let msg = e["error"]["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains(field),
            "{body}: message {msg:?} should name {field}"
        );
    }
    assert!(
        s.rest("GET", "/api/v1/alert-rules", &admin, None).await.1["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // A PATCH is checked as a whole rule too.
    let r = create_rule(&s, "acme", ok.clone()).await;
    let path = format!("/api/v1/alert-rules/{}", r["id"].as_str().unwrap());
    let (code, e) = s
        .rest(
            "PATCH",
            &path,
            &admin,
            Some(json!({"kind": "online_drop", "threshold": 150})),
        )
        .await;
    assert_eq!(code, 422, "{e}");
    let (code, e) = s
        .rest("PATCH", &path, &admin, Some(json!({"scope": "room"})))
        .await;
    assert_eq!(code, 422, "{e}");
    assert_eq!(
        s.rest("GET", &path, &admin, None).await.1["kind"],
        "capacity"
    );
    // Lists: a bad state, a bad cursor, an unknown alert.
    let (code, e) = s
        .rest("GET", "/api/v1/alerts?state=burning", &admin, None)
        .await;
    assert_eq!(code, 422, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("state"));
    let (code, e) = s
        .rest("GET", "/api/v1/alerts?cursor=bm9wZQ", &admin, None)
        .await;
    assert_eq!(code, 422, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("cursor"));
    assert_eq!(
        s.rest("POST", "/api/v1/alerts/al_nope/ack", &admin, None)
            .await
            .0,
        404
    );
    assert_eq!(
        s.rest("GET", "/api/v1/alert-rules/no%20pe", &admin, None)
            .await
            .0,
        422
    );
}

#[tokio::test]
async fn alerts_page_newest_first_with_a_cursor() {
    let s = server().await;
    let admin = s.admin_token("acme");
    create_rule(
        &s,
        "acme",
        json!({"name": "any", "kind": "capacity", "threshold": 1}),
    )
    .await;
    let mut cs = Vec::new();
    for i in 0..3 {
        let key = format!("Box:{i}");
        s.rest(
            "POST",
            "/api/v1/rooms",
            &admin,
            Some(json!({"key": key, "capacity": 5})),
        )
        .await;
        cs.push(joined(&s, &format!("u{i}"), &key).await);
        // Distinct firing times.
        alerts_until(&s, "acme", "", |a| a.len() == i + 1).await;
    }
    let (_, p1) = s.rest("GET", "/api/v1/alerts?limit=2", &admin, None).await;
    let items = p1["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["subject"], "Box:2");
    let cursor = p1["nextCursor"].as_str().unwrap();
    let (_, p2) = s
        .rest(
            "GET",
            &format!("/api/v1/alerts?limit=2&cursor={cursor}"),
            &admin,
            None,
        )
        .await;
    let items2 = p2["items"].as_array().unwrap();
    assert_eq!(items2.len(), 1);
    assert_eq!(items2[0]["subject"], "Box:0");
    assert!(p2["nextCursor"].is_null());
}

/// Reads SSE events (name, data) from `/api/v1/stream` into a channel.
async fn open_stream(
    s: &Server,
    token: &str,
) -> tokio::sync::mpsc::UnboundedReceiver<(String, Value)> {
    let resp = reqwest::Client::new()
        .get(s.url("/api/v1/stream"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut resp = resp;
        let mut buf = String::new();
        while let Ok(Some(chunk)) = resp.chunk().await {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                let mut name = String::new();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(n) = line.strip_prefix("event:") {
                        name = n.trim().to_string();
                    } else if let Some(d) = line.strip_prefix("data:") {
                        data.push_str(d.trim_start());
                    }
                }
                if !name.is_empty()
                    && tx
                        .send((name, serde_json::from_str(&data).unwrap()))
                        .is_err()
                {
                    return;
                }
            }
        }
    });
    rx
}

async fn until_event(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(String, Value)>,
    what: &str,
    mut pred: impl FnMut(&str, &Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((n, v))) if pred(&n, &v) => return v,
            Ok(Some(_)) => {}
            other => panic!("no {what} on the stream: {other:?}"),
        }
    }
}

#[tokio::test]
async fn the_live_stream_carries_totals_rooms_activity_and_alerts() {
    let s = server().await;
    let admin = s.admin_token("acme");
    s.rest(
        "POST",
        "/api/v1/rooms",
        &admin,
        Some(json!({"key": "Bay:1", "capacity": 2})),
    )
    .await;
    let monitor = s.token_full("olga", "acme", &["monitor"], None);
    let mut rx = open_stream(&s, &monitor).await;
    let hello = until_event(&mut rx, "hello", |n, _| n == "hello").await;
    assert_eq!(hello["tenant"], "acme");
    assert_eq!(hello["intervalMs"], 200);
    let first = until_event(&mut rx, "full rooms", |n, _| n == "rooms").await;
    assert_eq!(first["full"], true);
    assert!(first["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["key"] == "Bay:1" && r["sessions"] == 0));

    create_rule(&s, "acme", json!({"name": "bay full", "kind": "capacity", "threshold": 100, "scope": "room", "target": "Bay:1"})).await;
    let mut c = s
        .client_in(
            "ann",
            "acme",
            Hello {
                device: Some("tablet".into()),
                ..Hello::default()
            },
        )
        .await;
    c.sub("Bay:1", None).await.unwrap();
    let _b = joined(&s, "bob", "Bay:1").await;
    // One update: totals, then the rooms that changed.
    until_event(&mut rx, "totals", |n, v| {
        n == "totals" && v["sessions"] == 2 && v["users"] == 2
    })
    .await;
    let room = until_event(&mut rx, "Bay:1 with members", |n, v| {
        n == "rooms"
            && v["rooms"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["key"] == "Bay:1" && r["sessions"] == 2)
    })
    .await;
    assert_eq!(room["full"], false);
    let r = room["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == "Bay:1")
        .unwrap()
        .clone();
    assert_eq!(
        (
            r["users"].as_u64(),
            r["capacity"].as_u64(),
            r["type"].as_str()
        ),
        (Some(2), Some(2), Some("GENERIC"))
    );
    // A second stream shares the feed and starts from where it is: the
    // totals and every room, current.
    let mut late = open_stream(&s, &monitor).await;
    until_event(&mut late, "hello", |n, _| n == "hello").await;
    let t = until_event(&mut late, "totals", |n, _| n == "totals").await;
    assert_eq!(
        (t["sessions"].as_u64(), t["users"].as_u64()),
        (Some(2), Some(2))
    );
    let all = until_event(&mut late, "full rooms", |n, _| n == "rooms").await;
    assert_eq!(all["full"], true);
    assert!(
        all["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["key"] == "Bay:1" && r["sessions"] == 2),
        "{all}"
    );
    let join = until_event(&mut rx, "join row", |n, v| {
        n == "activity" && v["type"] == "join"
    })
    .await;
    assert_eq!(join["room"], "Bay:1");
    let fired = until_event(&mut rx, "alert", |n, _| n == "alert").await;
    assert_eq!(
        (fired["state"].as_str(), fired["subject"].as_str()),
        (Some("firing"), Some("Bay:1"))
    );
    // An acknowledgement from elsewhere shows on the stream.
    let id = fired["id"].as_str().unwrap();
    s.rest("POST", &format!("/api/v1/alerts/{id}/ack"), &admin, None)
        .await;
    let acked = until_event(&mut rx, "acked alert", |n, v| {
        n == "alert" && v["ackedAt"].is_string()
    })
    .await;
    assert_eq!(acked["id"], fired["id"]);
    until_event(&mut late, "acked alert on the late stream", |n, v| {
        n == "alert" && v["ackedAt"].is_string()
    })
    .await;
    drop(late);
    c.bye().await.unwrap();
    // The leave row and the resolution, in either order.
    let (mut resolved, mut left) = (false, false);
    while !(resolved && left) {
        until_event(&mut rx, "leave row and resolved alert", |n, v| {
            let r = n == "alert" && v["state"] == "resolved";
            let l = n == "activity" && v["type"] == "leave";
            resolved |= r;
            left |= l;
            r || l
        })
        .await;
    }
}

#[tokio::test]
async fn the_dashboard_is_served_from_the_binary() {
    let s = server().await;
    let r = reqwest::get(s.url("/dashboard")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'self'"));
    let page = r.text().await.unwrap();
    assert!(page.contains("<html"), "{page}");
    let r = reqwest::get(s.url("/dashboard/nope.js")).await.unwrap();
    assert_eq!(r.status(), 404);
}
