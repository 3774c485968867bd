//! STOMP 1.2 over WebSocket at `/stomp` (docs/STOMP.md), spoken raw: the
//! seed designs' flows (online status and watching, room hello/leave, room
//! topics), receipts, heart-beats, one room with native clients, and bad
//! frames. `@stomp/stompjs` itself is tested in clients/typescript/compat.

mod common;
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

#[derive(Debug)]
struct F {
    command: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl F {
    fn h(&self, k: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

fn parse(text: &str) -> Option<F> {
    let text = text.trim_start_matches(['\n', '\r']);
    if text.is_empty() {
        return None;
    }
    let (head, rest) = text.split_once("\n\n").unwrap();
    let mut lines = head.lines();
    let command = lines.next().unwrap().to_string();
    let unescape = |s: &str| {
        s.replace("\\c", ":")
            .replace("\\n", "\n")
            .replace("\\\\", "\\")
    };
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (unescape(k), unescape(v))
        })
        .collect();
    Some(F {
        command,
        headers,
        body: rest.trim_end_matches('\0').to_string(),
    })
}

struct S {
    ws: Ws,
    /// Bare EOL heart-beats received.
    beats: usize,
}

fn frame(command: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut s = format!("{command}\n");
    for (k, v) in headers {
        s.push_str(&format!("{k}:{v}\n"));
    }
    s.push('\n');
    s.push_str(body);
    s.push('\0');
    s
}

impl S {
    async fn open(s: &Server) -> (S, Option<String>) {
        let mut req = format!("ws://{}/stomp", s.addr)
            .into_client_request()
            .unwrap();
        req.headers_mut().insert(
            "sec-websocket-protocol",
            "v12.stomp, v11.stomp, v10.stomp".parse().unwrap(),
        );
        let (ws, resp) = tokio_tungstenite::connect_async(req)
            .await
            .expect("upgrade");
        let proto = resp
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap().to_string());
        (S { ws, beats: 0 }, proto)
    }

    /// Opens and CONNECTs as `user` (tenant acme).
    async fn connect(s: &Server, user: &str) -> S {
        let (mut c, proto) = S::open(s).await;
        assert_eq!(proto.as_deref(), Some("v12.stomp"));
        let token = s.token(user);
        let auth = format!("Bearer {token}");
        c.send(&frame(
            "CONNECT",
            &[
                ("accept-version", "1.2,1.1,1.0"),
                ("heart-beat", "0,0"),
                ("Authorization", &auth),
            ],
            "",
        ))
        .await;
        let f = c.next().await.expect("CONNECTED");
        assert_eq!(f.command, "CONNECTED", "{f:?}");
        assert_eq!(f.h("version"), Some("1.2"));
        assert_eq!(f.h("user-name"), Some(user));
        assert!(f.h("session").is_some() && f.h("heart-beat").is_some());
        c
    }

    async fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    /// The next frame (heart-beats counted and skipped); `None` when closed.
    async fn next(&mut self) -> Option<F> {
        self.next_within(T).await.ok().flatten()
    }

    /// `Err(code)` when the connection closed (with that code), `Ok(None)` on
    /// silence until `d`.
    async fn next_within(&mut self, d: Duration) -> Result<Option<F>, Option<u16>> {
        let end = tokio::time::Instant::now() + d;
        loop {
            match tokio::time::timeout_at(end, self.ws.next()).await {
                Err(_) => return Ok(None),
                Ok(Some(Ok(Message::Text(t)))) => match parse(t.as_str()) {
                    Some(f) => return Ok(Some(f)),
                    None => self.beats += 1,
                },
                Ok(Some(Ok(Message::Close(c)))) => return Err(c.map(|c| u16::from(c.code))),
                Ok(Some(Ok(_))) => continue,
                _ => return Err(None),
            }
        }
    }

    /// The next MESSAGE whose body has `type` = `ty` (or any, for `None`).
    async fn message(&mut self, subscription: &str, ty: Option<&str>) -> F {
        loop {
            let f = self.next().await.expect("a MESSAGE");
            if f.command == "MESSAGE"
                && f.h("subscription") == Some(subscription)
                && ty.is_none_or(|t| f.json()["type"] == t)
            {
                return f;
            }
        }
    }

    async fn closed_with(&mut self) -> Option<u16> {
        loop {
            match self.next_within(T).await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("still open"),
                Err(code) => return code,
            }
        }
    }
}

#[tokio::test]
async fn the_online_status_flow_of_seed_004() {
    let s = Server::start().await;
    let mut a = S::connect(&s, "alice").await;
    a.send(&frame(
        "SUBSCRIBE",
        &[
            ("id", "sub-0"),
            ("destination", "/user/queue/online-status"),
        ],
        "",
    ))
    .await;
    a.send(&frame(
        "SEND",
        &[
            ("destination", "/app/presence.subscribe"),
            ("receipt", "r1"),
        ],
        r#"{"userIds":["bob"]}"#,
    ))
    .await;
    let m = a.message("sub-0", None).await;
    let v = m.json();
    assert_eq!(
        (v["userId"].clone(), v["online"].clone()),
        (json!("bob"), json!(false)),
        "{v}"
    );
    assert_eq!(m.h("destination"), Some("/user/queue/online-status"));
    assert_eq!(m.h("content-type"), Some("application/json"));
    assert!(m.h("message-id").is_some());
    let r = a.next().await.unwrap();
    assert_eq!(
        (r.command.as_str(), r.h("receipt-id")),
        ("RECEIPT", Some("r1"))
    );

    let mut b = S::connect(&s, "bob").await;
    let v = a.message("sub-0", None).await.json();
    assert_eq!(
        (
            v["userId"].clone(),
            v["online"].clone(),
            v["status"].clone()
        ),
        (json!("bob"), json!(true), json!("online"))
    );
    assert!(v["timestamp"].is_string());
    b.send(&frame(
        "SEND",
        &[("destination", "/app/online-status")],
        r#"{"online":true}"#,
    ))
    .await;
    b.send(&frame("SEND", &[("destination", "/app/heartbeat")], ""))
        .await;
    // The app stops: offline at once.
    b.send(&frame(
        "SEND",
        &[("destination", "/app/online-status")],
        r#"{"online":false}"#,
    ))
    .await;
    let v = a.message("sub-0", None).await.json();
    assert_eq!(
        (v["userId"].clone(), v["online"].clone()),
        (json!("bob"), json!(false))
    );
    assert_eq!(b.closed_with().await, Some(1000));
    a.send(&frame(
        "SEND",
        &[("destination", "/app/presence.unsubscribe")],
        r#"{"userIds":["bob"]}"#,
    ))
    .await;
    let _b2 = S::connect(&s, "bob").await;
    assert!(
        matches!(a.next_within(Duration::from_millis(300)).await, Ok(None)),
        "unwatched"
    );
}

#[tokio::test]
async fn rooms_hello_topics_and_leave_with_native_members() {
    let s = Server::start().await;
    let mut a = S::connect(&s, "alice").await;
    a.send(&frame(
        "SUBSCRIBE",
        &[("id", "ack"), ("destination", "/user/queue/ack")],
        "",
    ))
    .await;
    // A topic with ':' arrives escaped (1.2).
    a.send(&frame(
        "SUBSCRIBE",
        &[("id", "room"), ("destination", "/topic/room/Order\\c1")],
        "",
    ))
    .await;
    let p = a.message("room", Some("PRESENCE")).await;
    assert_eq!(p.h("destination"), Some("/topic/room/Order:1"));
    assert_eq!(p.json()["room"], "Order:1");
    a.send(&frame(
        "SEND",
        &[("destination", "/app/presence/hello")],
        r#"{"roomCode":"Order:1"}"#,
    ))
    .await;
    let ack = a.message("ack", Some("ACK")).await.json();
    assert_eq!(ack["room"], "Order:1");
    assert!(ack["sessionId"].is_string() && ack["ttl"].is_u64(), "{ack}");

    // A native member joins, emits, leaves: the topic shows it all.
    let mut n = s.client("nina").await;
    let snap = n.sub("Order:1", None).await.unwrap();
    assert!(snap["users"]
        .as_array()
        .unwrap()
        .iter()
        .any(|u| u["userId"] == "alice"));
    // (A diff may come first that carries nothing new for this subscriber.)
    loop {
        let d = a.message("room", Some("PRESENCE_DIFF")).await.json();
        if d["joins"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["userId"] == "nina")
        {
            break;
        }
        assert!(d["leaves"].as_array().unwrap().is_empty(), "{d}");
    }
    n.send(json!({"type": "EMIT", "room": "Order:1", "event": "wave", "data": {"x": 1}}))
        .await
        .unwrap();
    let e = a.message("room", Some("EVENT")).await.json();
    assert_eq!(
        (e["event"].clone(), e["from"]["userId"].clone()),
        (json!("wave"), json!("nina"))
    );
    // STOMP's own extensions: emit, and a lock answered on the ack queue.
    a.send(&frame(
        "SEND",
        &[("destination", "/app/presence/emit")],
        r#"{"room":"Order:1","event":"hi","data":1}"#,
    ))
    .await;
    assert_eq!(next(&mut n, "EVENT").await["from"]["userId"], "alice");
    a.send(&frame(
        "SEND",
        &[("destination", "/app/presence/lock")],
        r#"{"room":"Order:1","field":"total"}"#,
    ))
    .await;
    let l = a.message("ack", Some("LOCK_ACK")).await.json();
    assert_eq!(l["success"], true);
    assert_eq!(next(&mut n, "LOCK").await["owner"]["userId"], "alice");
    // Leave: the native member sees it.
    a.send(&frame(
        "SEND",
        &[("destination", "/app/presence/leave")],
        r#"{"room":"Order:1"}"#,
    ))
    .await;
    let left = next_change(&mut n, "Order:1", "leaves", "alice").await;
    assert_eq!(left["reason"], "left");

    // Entity topics are rooms too.
    a.send(&frame(
        "SUBSCRIBE",
        &[("id", "ent"), ("destination", "/topic/presence/Invoice/7")],
        "",
    ))
    .await;
    assert_eq!(
        a.message("ent", Some("PRESENCE")).await.json()["room"],
        "Invoice:7"
    );
    // The last UNSUBSCRIBE of a room leaves it.
    let mut w = s.client("walt").await;
    w.sub("Invoice:7", None).await.unwrap();
    a.send(&frame("UNSUBSCRIBE", &[("id", "ent")], "")).await;
    let left = next_change(&mut w, "Invoice:7", "leaves", "alice").await;
    assert_eq!(left["reason"], "left");
}

#[tokio::test]
async fn the_token_travels_in_connect_passcode_or_url_and_bad_ones_close_4001() {
    let s = Server::start().await;
    let (mut c, _) = S::open(&s).await;
    c.send(&frame(
        "CONNECT",
        &[
            ("accept-version", "1.2"),
            ("login", "x"),
            ("passcode", &s.token("pam")),
        ],
        "",
    ))
    .await;
    assert_eq!(c.next().await.unwrap().h("user-name"), Some("pam"));
    let url = format!("ws://{}/stomp?token={}", s.addr, s.token("quinn"));
    let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut q = S { ws, beats: 0 };
    q.send(&frame("STOMP", &[("accept-version", "1.1,1.2")], ""))
        .await;
    assert_eq!(q.next().await.unwrap().h("user-name"), Some("quinn"));
    for headers in [
        vec![("accept-version", "1.2")],
        vec![("accept-version", "1.2"), ("Authorization", "Bearer nope")],
    ] {
        let (mut c, _) = S::open(&s).await;
        c.send(&frame("CONNECT", &headers, "")).await;
        let e = c.next().await.unwrap();
        assert_eq!(
            (e.command.as_str(), e.h("message")),
            ("ERROR", Some("auth_failed")),
            "{e:?}"
        );
        assert_eq!(c.closed_with().await, Some(4001));
    }
}

#[tokio::test]
async fn bad_frames_get_error_frames_and_roster_errors_go_to_the_errors_queue() {
    let s = Server::start().await;
    // Protocol errors: ERROR with a message header, then close 1002.
    let token = s.token("eve");
    let auth = format!("Bearer {token}");
    for (frames, message) in [
        (
            vec![frame("SEND", &[("destination", "/app/heartbeat")], "")],
            "not connected",
        ),
        (
            vec![frame(
                "CONNECT",
                &[("accept-version", "1.0"), ("Authorization", &auth)],
                "",
            )],
            "unsupported version",
        ),
        (
            vec![frame(
                "CONNECT",
                &[
                    ("accept-version", "1.2"),
                    ("heart-beat", "abc"),
                    ("Authorization", &auth),
                ],
                "",
            )],
            "bad heart-beat",
        ),
        (vec!["hello\n\n\0".to_string()], "malformed frame"),
        (
            vec![
                frame(
                    "CONNECT",
                    &[("accept-version", "1.2"), ("Authorization", &auth)],
                    "",
                ),
                frame("SEND", &[], "{}"),
            ],
            "missing header: destination",
        ),
        (
            vec![
                frame(
                    "CONNECT",
                    &[("accept-version", "1.2"), ("Authorization", &auth)],
                    "",
                ),
                frame("SUBSCRIBE", &[("destination", "/user/queue/ack")], ""),
            ],
            "missing header: id or destination",
        ),
        (
            vec![
                frame(
                    "CONNECT",
                    &[("accept-version", "1.2"), ("Authorization", &auth)],
                    "",
                ),
                frame("DANCE", &[], ""),
            ],
            "unknown command",
        ),
        (
            vec![
                frame(
                    "CONNECT",
                    &[("accept-version", "1.2"), ("Authorization", &auth)],
                    "",
                ),
                "SEND\nbad:\\t\n\n\0".to_string(),
            ],
            "malformed frame",
        ),
        (
            vec![
                frame(
                    "CONNECT",
                    &[("accept-version", "1.2"), ("Authorization", &auth)],
                    "",
                ),
                frame("BEGIN", &[("transaction", "t")], ""),
            ],
            "transactions are not supported",
        ),
    ] {
        let (mut c, _) = S::open(&s).await;
        for f in &frames {
            c.send(f).await;
        }
        let e = loop {
            let f = c.next().await.expect("an ERROR");
            if f.command == "ERROR" {
                break f;
            }
        };
        assert_eq!(e.h("message"), Some(message), "{frames:?}: {e:?}");
        assert_eq!(c.closed_with().await, Some(1002), "{frames:?}");
    }
    // Roster errors do not close: they go to /user/queue/errors.
    let mut c = S::connect(&s, "eve").await;
    c.send(&frame(
        "SUBSCRIBE",
        &[("id", "e"), ("destination", "/user/queue/errors")],
        "",
    ))
    .await;
    for (dest, body, code) in [
        ("/app/nowhere", "{}", "unknown_type"),
        ("/app/presence/hello", "not json", "invalid_json"),
        (
            "/app/presence/hello",
            r#"{"room":"bad room"}"#,
            "invalid_room",
        ),
        ("/app/presence/hello", "{}", "bad_request"),
        (
            "/app/presence/leave",
            r#"{"room":"Never:1"}"#,
            "not_subscribed",
        ),
        (
            "/app/presence.subscribe",
            r#"{"userIds":"bob"}"#,
            "bad_request",
        ),
        (
            "/app/online-status",
            r#"{"status":"dancing"}"#,
            "bad_request",
        ),
    ] {
        c.send(&frame("SEND", &[("destination", dest)], body)).await;
        let e = c.message("e", Some("ERROR")).await.json();
        assert_eq!(
            (e["code"].as_str(), e["destination"].as_str()),
            (Some(code), Some(dest)),
            "{e}"
        );
    }
    c.send(&frame(
        "SUBSCRIBE",
        &[("id", "x"), ("destination", "/topic/nowhere")],
        "",
    ))
    .await;
    assert_eq!(
        c.message("e", Some("ERROR")).await.json()["code"],
        "bad_request"
    );
    // Still open, and receipts still answered.
    c.send(&frame(
        "SEND",
        &[("destination", "/app/heartbeat"), ("receipt", "ok")],
        "",
    ))
    .await;
    let r = c.next().await.unwrap();
    assert_eq!(r.h("receipt-id"), Some("ok"));
    // DISCONNECT with a receipt: RECEIPT, then close 1000.
    c.send(&frame("DISCONNECT", &[("receipt", "bye")], ""))
        .await;
    let r = c.next().await.unwrap();
    assert_eq!(
        (r.command.as_str(), r.h("receipt-id")),
        ("RECEIPT", Some("bye"))
    );
    assert_eq!(c.closed_with().await, Some(1000));
}

#[tokio::test]
async fn heart_beats_are_negotiated_and_sent() {
    let s = Server::start().await;
    let (mut c, _) = S::open(&s).await;
    let auth = format!("Bearer {}", s.token("hank"));
    c.send(&frame(
        "CONNECT",
        &[
            ("accept-version", "1.2"),
            ("heart-beat", "0,100"),
            ("Authorization", &auth),
        ],
        "",
    ))
    .await;
    let f = c.next().await.unwrap();
    let hb: Vec<u64> = f
        .h("heart-beat")
        .unwrap()
        .split(',')
        .map(|x| x.parse().unwrap())
        .collect();
    assert!(hb[0] > 0, "the server sends heart-beats: {hb:?}");
    // The server beats at max(its interval, 100 ms): a few arrive within 3 intervals.
    let _ = c
        .next_within(Duration::from_millis(hb[0].max(100) * 3 + 200))
        .await;
    assert!(c.beats >= 1, "heart-beats received: {}", c.beats);
    // And a client that sends only EOLs stays alive past the session timeout (2 s).
    for _ in 0..12 {
        c.send("\n").await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    c.send(&frame(
        "SEND",
        &[("destination", "/app/heartbeat"), ("receipt", "alive")],
        "",
    ))
    .await;
    loop {
        let f = c.next().await.expect("still open");
        if f.command == "RECEIPT" {
            break;
        }
    }
}

#[tokio::test]
async fn oversized_frames_are_refused_in_one_message_or_many() {
    let s = Server::start_with(&[("ROSTER_LIMITS_MAX_FRAME_BYTES", "4096")]).await;
    // One WebSocket message above the limit: 1009.
    let mut a = S::connect(&s, "alice").await;
    let big = format!("{{\"room\":\"{}\"}}", "x".repeat(5000));
    a.send(&frame(
        "SEND",
        &[("destination", "/app/presence/hello")],
        &big,
    ))
    .await;
    assert_eq!(a.closed_with().await, Some(1009));
    // A frame split over small messages that never ends: ERROR, then 1002.
    let mut b = S::connect(&s, "bob").await;
    b.send("SEND\ndestination:/app/heartbeat\n\n").await;
    for _ in 0..5 {
        b.send(&"y".repeat(1000)).await;
    }
    let e = b.next().await.expect("an ERROR");
    assert_eq!(
        (e.command.as_str(), e.h("message")),
        ("ERROR", Some("malformed frame")),
        "{e:?}"
    );
    assert!(e.body.contains("larger than"), "{}", e.body);
    assert_eq!(b.closed_with().await, Some(1002));
    // A content-length above the limit: refused before the body comes.
    let mut c = S::connect(&s, "carol").await;
    c.send("SEND\ndestination:/app/heartbeat\ncontent-length:999999\n\n")
        .await;
    let e = c.next().await.expect("an ERROR");
    assert!(e.body.contains("content-length"), "{e:?}");
    assert_eq!(c.closed_with().await, Some(1002));
}
