//! The Pusher Channels protocol 7 at `/app/{key}` (docs/PUSHER.md), spoken raw
//! over a WebSocket: the opening, subscription auth, presence members with
//! Pusher's per-user semantics and Roster's grace, client events, sign-in and
//! the watchlist, bad input, and apps kept apart. `pusher-js` itself is tested
//! in clients/typescript/compat.

mod common;
use common::*;
use futures_util::{SinkExt, StreamExt};
use roster::protocol::pusher::sign;
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "acme-secret-123";

struct P {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    socket_id: String,
}

/// A Pusher message with its `data` parsed when it is a JSON string.
fn decode(text: &str) -> Value {
    let mut v: Value = serde_json::from_str(text).unwrap();
    if let Some(Value::String(s)) = v.get("data") {
        if let Ok(d) = serde_json::from_str::<Value>(s) {
            v["data"] = d;
        }
    }
    v
}

impl P {
    async fn connect(s: &Server, key: &str) -> P {
        let (ws, _) = tokio_tungstenite::connect_async(format!(
            "ws://{}/app/{key}?protocol=7&client=js&version=8.4.0",
            s.addr
        ))
        .await
        .expect("connect");
        let mut p = P {
            ws,
            socket_id: String::new(),
        };
        let m = p.next_event("pusher:connection_established").await;
        p.socket_id = m["data"]["socket_id"].as_str().unwrap().to_string();
        assert!(m["data"]["activity_timeout"].as_u64().unwrap() >= 1);
        p
    }

    async fn send(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).await.unwrap();
    }

    /// The next message, or `None` when the connection closed (with its code).
    async fn recv(&mut self, within: Duration) -> Result<Value, Option<u16>> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Err(None),
                Ok(Some(Ok(Message::Text(t)))) => return Ok(decode(t.as_str())),
                Ok(Some(Ok(Message::Close(f)))) => {
                    return Err(f.map(|f| u16::from(f.code)));
                }
                Ok(Some(Ok(_))) => continue,
                Ok(_) => return Err(None),
            }
        }
    }

    async fn next_event(&mut self, event: &str) -> Value {
        loop {
            match self.recv(T).await {
                Ok(m) if m["event"] == event => return m,
                Ok(_) => continue,
                Err(code) => panic!("waiting for {event}: closed or silent ({code:?})"),
            }
        }
    }

    /// Asserts no `event` arrives within `d`.
    async fn none(&mut self, event: &str, d: Duration) {
        let end = tokio::time::Instant::now() + d;
        loop {
            let left = end.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return;
            }
            if let Ok(m) = self.recv(left).await {
                assert_ne!(m["event"], event, "unexpected {event}: {m}");
            } else {
                return;
            }
        }
    }

    fn presence_auth(&self, channel: &str, channel_data: &str) -> String {
        let sig = sign(
            SECRET,
            &format!("{}:{channel}:{channel_data}", self.socket_id),
        );
        format!("acme-key:{sig}")
    }

    async fn join_presence(&mut self, channel: &str, user: &str, info: Value) -> Value {
        let cd = json!({"user_id": user, "user_info": info}).to_string();
        let auth = self.presence_auth(channel, &cd);
        self.send(json!({"event": "pusher:subscribe", "data": {"channel": channel, "auth": auth, "channel_data": cd}}))
            .await;
        let m = self
            .next_event("pusher_internal:subscription_succeeded")
            .await;
        assert_eq!(m["channel"], channel);
        m["data"]["presence"].clone()
    }

    async fn join_private(&mut self, channel: &str) {
        let sig = sign(SECRET, &format!("{}:{channel}", self.socket_id));
        self.send(json!({"event": "pusher:subscribe", "data": {"channel": channel, "auth": format!("acme-key:{sig}")}}))
            .await;
        let m = self
            .next_event("pusher_internal:subscription_succeeded")
            .await;
        assert_eq!(m["channel"], channel);
    }
}

/// Two apps: acme (key `acme-key`) and globex (key `globex-key`).
async fn server() -> Server {
    server_with(&[]).await
}

async fn server_with(env: &[(&str, &str)]) -> Server {
    let dir = temp_dir("pusher-config");
    let file = dir.join("roster.toml");
    std::fs::write(
        &file,
        format!(
            "[[pusher.apps]]\ntenant = \"acme\"\napp_id = \"1\"\nkey = \"acme-key\"\nsecret = \"{SECRET}\"\n\n\
             [[pusher.apps]]\ntenant = \"globex\"\napp_id = \"2\"\nkey = \"globex-key\"\nsecret = \"globex-secret-1\"\n"
        ),
    )
    .unwrap();
    Server::start_args(&["serve", "--config", file.to_str().unwrap()], env).await
}

#[tokio::test]
async fn the_opening_names_bad_keys_and_protocols_with_pushers_codes() {
    let s = server().await;
    let p = P::connect(&s, "acme-key").await;
    let parts: Vec<&str> = p.socket_id.split('.').collect();
    assert!(
        parts.len() == 2
            && parts
                .iter()
                .all(|x| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit())),
        "socket id is digits.digits: {}",
        p.socket_id
    );
    for (path, code) in [
        ("/app/nope?protocol=7", 4001),
        ("/app/acme-key", 4008),
        ("/app/acme-key?protocol=3", 4007),
        ("/app/acme-key?protocol=x", 4007),
    ] {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}{path}", s.addr))
            .await
            .unwrap();
        let mut p = P {
            ws,
            socket_id: String::new(),
        };
        let m = p.recv(T).await.expect("an error first");
        assert_eq!(
            (m["event"].clone(), m["data"]["code"].clone()),
            (json!("pusher:error"), json!(code)),
            "{path}"
        );
        assert_eq!(p.recv(T).await.unwrap_err(), Some(code), "{path}");
    }
}

#[tokio::test]
async fn ping_pong_and_bad_messages_get_pusher_errors() {
    let s = server().await;
    let mut p = P::connect(&s, "acme-key").await;
    p.send(json!({"event": "pusher:ping", "data": {}})).await;
    p.next_event("pusher:pong").await;
    p.ws.send(Message::text("not json")).await.unwrap();
    let e = p.next_event("pusher:error").await;
    assert!(
        e["data"]["message"].as_str().unwrap().contains("malformed"),
        "{e}"
    );
    p.send(json!({"event": "dance", "data": {}})).await;
    let e = p.next_event("pusher:error").await;
    assert!(
        e["data"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown event"),
        "{e}"
    );
    p.send(json!({"event": "pusher:subscribe", "data": {"nochannel": 1}}))
        .await;
    p.next_event("pusher:error").await;
    // Still open.
    p.send(json!({"event": "pusher:ping", "data": {}})).await;
    p.next_event("pusher:pong").await;
}

#[tokio::test]
async fn subscriptions_need_pushers_signatures() {
    let s = server().await;
    let mut p = P::connect(&s, "acme-key").await;
    // Public: no auth.
    p.send(json!({"event": "pusher:subscribe", "data": {"channel": "news"}}))
        .await;
    let m = p.next_event("pusher_internal:subscription_succeeded").await;
    assert_eq!(m["channel"], "news");
    // Private: a bad signature, a signature of another socket, then a good one.
    p.send(json!({"event": "pusher:subscribe", "data": {"channel": "private-a", "auth": "acme-key:00"}}))
        .await;
    let e = p.next_event("pusher:subscription_error").await;
    assert_eq!(
        (e["channel"].clone(), e["data"]["status"].clone()),
        (json!("private-a"), json!(401))
    );
    let other = sign(SECRET, "1.1:private-a");
    p.send(json!({"event": "pusher:subscribe", "data": {"channel": "private-a", "auth": format!("acme-key:{other}")}}))
        .await;
    assert_eq!(
        p.next_event("pusher:subscription_error").await["data"]["status"],
        401
    );
    let globex =
        roster::protocol::pusher::sign("globex-secret-1", &format!("{}:private-a", p.socket_id));
    p.send(json!({"event": "pusher:subscribe", "data": {"channel": "private-a", "auth": format!("globex-key:{globex}")}}))
        .await;
    assert_eq!(
        p.next_event("pusher:subscription_error").await["data"]["status"],
        401,
        "another app's signature"
    );
    p.join_private("private-a").await;
    // Presence: the channel_data is signed too.
    let cd = json!({"user_id": "alice"}).to_string();
    let auth = p.presence_auth("presence-a", &cd);
    let forged = json!({"user_id": "mallory"}).to_string();
    p.send(json!({"event": "pusher:subscribe", "data": {"channel": "presence-a", "auth": auth, "channel_data": forged}}))
        .await;
    assert_eq!(
        p.next_event("pusher:subscription_error").await["data"]["status"],
        401
    );
    // Bad names and encrypted channels.
    for bad in ["bad channel", "private-encrypted-x"] {
        p.send(json!({"event": "pusher:subscribe", "data": {"channel": bad}}))
            .await;
        let e = p.next_event("pusher:subscription_error").await;
        assert_eq!(e["data"]["status"], 400, "{bad}");
    }
}

#[tokio::test]
async fn presence_members_are_users_and_a_reload_inside_the_grace_is_not_seen() {
    // These raw clients do not answer pings while nobody reads them: a session
    // timeout longer than the test keeps them alive (pusher-js pings itself).
    let s = server_with(&[("ROSTER_TIMING_SESSION_TIMEOUT", "20s")]).await;
    let mut a = P::connect(&s, "acme-key").await;
    let presence = a
        .join_presence("presence-room", "alice", json!({"name": "Alice"}))
        .await;
    assert_eq!(presence["count"], 1);
    assert_eq!(presence["ids"], json!(["alice"]));
    assert_eq!(presence["hash"]["alice"], json!({"name": "Alice"}));

    let mut b = P::connect(&s, "acme-key").await;
    let presence = b
        .join_presence("presence-room", "bob", json!({"name": "Bob"}))
        .await;
    assert_eq!(presence["count"], 2);
    let added = a.next_event("pusher_internal:member_added").await;
    assert_eq!(
        added["data"],
        json!({"user_id": "bob", "user_info": {"name": "Bob"}})
    );

    // Bob's second connection: still one member, nothing new for Alice.
    let mut b2 = P::connect(&s, "acme-key").await;
    b2.join_presence("presence-room", "bob", json!({"name": "Bob"}))
        .await;
    a.none("pusher_internal:member_added", Duration::from_millis(300))
        .await;
    // One of Bob's connections goes: Bob is still there.
    drop(b2);
    a.none(
        "pusher_internal:member_removed",
        Duration::from_millis(1500),
    )
    .await;

    // A reload inside the grace: drop and come back at once.
    drop(b);
    let mut b = P::connect(&s, "acme-key").await;
    b.join_presence("presence-room", "bob", json!({"name": "Bob"}))
        .await;
    a.none(
        "pusher_internal:member_removed",
        Duration::from_millis(1500),
    )
    .await;
    a.none("pusher_internal:member_added", Duration::from_millis(100))
        .await;

    // Gone for good: removed after the grace (1 s here).
    drop(b);
    let removed = a.next_event("pusher_internal:member_removed").await;
    assert_eq!(removed["data"], json!({"user_id": "bob"}));
    assert_eq!(removed["channel"], "presence-room");
}

#[tokio::test]
async fn pusher_and_native_members_share_one_room_and_its_events() {
    let s = server().await;
    let mut p = P::connect(&s, "acme-key").await;
    p.join_presence("presence-mixed", "alice", json!({"color": "red"}))
        .await;
    let mut n = s.client("nina").await;
    let snap = n.sub("presence-mixed", None).await.unwrap();
    let alice = snap["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["userId"] == "alice")
        .cloned()
        .expect("the Pusher member is in the native snapshot");
    assert_eq!(alice["info"], json!({"color": "red"}));
    let added = p.next_event("pusher_internal:member_added").await;
    assert_eq!(added["data"]["user_id"], "nina");
    assert_eq!(added["data"]["user_info"], json!({"name": "nina name"}));

    // A Pusher client event is a native EVENT, and back.
    p.send(json!({"event": "client-typing", "channel": "presence-mixed", "data": {"on": true}}))
        .await;
    let e = next(&mut n, "EVENT").await;
    assert_eq!(
        (
            e["event"].clone(),
            e["data"].clone(),
            e["from"]["userId"].clone()
        ),
        (json!("client-typing"), json!({"on": true}), json!("alice"))
    );
    n.send(
        json!({"type": "EMIT", "room": "presence-mixed", "event": "client-wave", "data": {"x": 1}}),
    )
    .await
    .unwrap();
    let m = p.next_event("client-wave").await;
    assert_eq!(
        (
            m["channel"].clone(),
            m["data"].clone(),
            m["user_id"].clone()
        ),
        (json!("presence-mixed"), json!({"x": 1}), json!("nina"))
    );
    p.none("client-typing", Duration::from_millis(200)).await;

    // The native member leaves: Pusher sees it once the leave is final.
    n.bye().await.unwrap();
    let removed = p.next_event("pusher_internal:member_removed").await;
    assert_eq!(removed["data"]["user_id"], "nina");
}

#[tokio::test]
async fn client_events_only_on_private_and_presence_channels_and_rate_limited() {
    let s = server().await;
    let mut a = P::connect(&s, "acme-key").await;
    let mut b = P::connect(&s, "acme-key").await;
    a.join_private("private-chat").await;
    b.join_private("private-chat").await;
    a.send(json!({"event": "client-hi", "channel": "private-chat", "data": {"n": 1}}))
        .await;
    let m = b.next_event("client-hi").await;
    assert_eq!(m["data"], json!({"n": 1}));
    assert!(
        m.get("user_id").is_none(),
        "no user_id outside presence channels"
    );
    a.none("client-hi", Duration::from_millis(200)).await;

    a.send(json!({"event": "pusher:subscribe", "data": {"channel": "public"}}))
        .await;
    a.next_event("pusher_internal:subscription_succeeded").await;
    a.send(json!({"event": "client-hi", "channel": "public", "data": {}}))
        .await;
    let e = a.next_event("pusher:error").await;
    assert!(
        e["data"]["message"]
            .as_str()
            .unwrap()
            .contains("private and presence"),
        "{e}"
    );
    a.send(json!({"event": "client-hi", "channel": "private-other", "data": {}}))
        .await;
    let e = a.next_event("pusher:error").await;
    assert!(
        e["data"]["message"]
            .as_str()
            .unwrap()
            .contains("not subscribed"),
        "{e}"
    );

    for i in 0..15 {
        a.send(json!({"event": "client-burst", "channel": "private-chat", "data": {"i": i}}))
            .await;
    }
    let e = a.next_event("pusher:error").await;
    assert_eq!(e["data"]["code"], 4301, "{e}");
}

#[tokio::test]
async fn signin_gives_the_watchlist_online_and_offline() {
    let s = server().await;
    let mut a = P::connect(&s, "acme-key").await;
    let user_data = json!({"id": "alice", "watchlist": ["bob", "carol"]}).to_string();
    let sig = sign(SECRET, &format!("{}::user::{user_data}", a.socket_id));
    a.send(json!({"event": "pusher:signin", "data": {"auth": format!("acme-key:{sig}"), "user_data": user_data}}))
        .await;
    let ok = a.next_event("pusher:signin_success").await;
    assert_eq!(ok["data"]["user_data"], json!(user_data));
    a.none(
        "pusher_internal:watchlist_events",
        Duration::from_millis(200),
    )
    .await;

    let mut b = P::connect(&s, "acme-key").await;
    b.join_presence("presence-x", "bob", json!({})).await;
    let w = a.next_event("pusher_internal:watchlist_events").await;
    assert_eq!(
        w["data"]["events"],
        json!([{"name": "online", "user_ids": ["bob"]}])
    );
    drop(b);
    let w = a.next_event("pusher_internal:watchlist_events").await;
    assert_eq!(
        w["data"]["events"],
        json!([{"name": "offline", "user_ids": ["bob"]}])
    );

    // A bad signature closes with 4009.
    let mut c = P::connect(&s, "acme-key").await;
    c.send(json!({"event": "pusher:signin", "data": {"auth": "acme-key:00", "user_data": "{\"id\":\"x\"}"}}))
        .await;
    let e = c.next_event("pusher:error").await;
    assert_eq!(e["data"]["code"], 4009);
    loop {
        match c.recv(T).await {
            Ok(_) => continue,
            Err(code) => {
                assert_eq!(code, Some(4009));
                break;
            }
        }
    }
}

#[tokio::test]
async fn apps_are_tenants_and_never_see_each_other() {
    let s = server().await;
    let mut a = P::connect(&s, "acme-key").await;
    a.join_presence("presence-same", "alice", json!({})).await;
    let (ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/app/globex-key?protocol=7", s.addr))
            .await
            .unwrap();
    let mut g = P {
        ws,
        socket_id: String::new(),
    };
    let m = g.next_event("pusher:connection_established").await;
    g.socket_id = m["data"]["socket_id"].as_str().unwrap().to_string();
    let cd = json!({"user_id": "gary"}).to_string();
    let sig = sign(
        "globex-secret-1",
        &format!("{}:presence-same:{cd}", g.socket_id),
    );
    g.send(json!({"event": "pusher:subscribe", "data": {"channel": "presence-same", "auth": format!("globex-key:{sig}"), "channel_data": cd}}))
        .await;
    let m = g.next_event("pusher_internal:subscription_succeeded").await;
    assert_eq!(
        m["data"]["presence"]["ids"],
        json!(["gary"]),
        "only its own tenant's members"
    );
    a.none("pusher_internal:member_added", Duration::from_millis(300))
        .await;
    // The acme room is the acme tenant's, for native clients too.
    let mut n = s
        .client_in("nina", "globex", roster_client::Hello::default())
        .await;
    let snap = n.sub("presence-same", None).await.unwrap();
    let users: Vec<&str> = snap["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["userId"].as_str().unwrap())
        .collect();
    assert!(
        users.contains(&"gary") && !users.contains(&"alice"),
        "{users:?}"
    );
}
