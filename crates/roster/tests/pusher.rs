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
    // What pusher-js does after a sign-in: its user's own channel.
    a.send(json!({"event": "pusher:subscribe", "data": {"auth": "", "channel": "#server-to-user-alice"}}))
        .await;
    let m = a.next_event("pusher_internal:subscription_succeeded").await;
    assert_eq!(m["channel"], "#server-to-user-alice");
    a.send(json!({"event": "pusher:subscribe", "data": {"auth": "", "channel": "#server-to-user-bob"}}))
        .await;
    assert_eq!(
        a.next_event("pusher:subscription_error").await["data"]["status"],
        403
    );

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

/// A request to the Pusher HTTP API, signed as Pusher's server libraries sign.
async fn api(
    s: &Server,
    method: &str,
    path: &str,
    query: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, String) {
    api_signed(s, method, path, query, body, SECRET, "acme-key").await
}

async fn api_signed(
    s: &Server,
    method: &str,
    path: &str,
    query: &[(&str, &str)],
    body: Option<Value>,
    secret: &str,
    key: &str,
) -> (u16, String) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let mut params: Vec<(String, String)> = vec![
        ("auth_key".into(), key.into()),
        ("auth_timestamp".into(), now),
        ("auth_version".into(), "1.0".into()),
    ];
    if !body.is_empty() {
        use md5::Digest;
        params.push((
            "body_md5".into(),
            hex::encode(md5::Md5::digest(body.as_bytes())),
        ));
    }
    params.extend(query.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    params.sort();
    let q: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let q = q.join("&");
    let sig = sign(secret, &format!("{method}\n{path}\n{q}"));
    let url = format!("http://{}{path}?{q}&auth_signature={sig}", s.addr);
    let client = reqwest::Client::new();
    let req = match method {
        "POST" => client
            .post(url)
            .header("content-type", "application/json")
            .body(body),
        _ => client.get(url),
    };
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test]
async fn the_http_api_triggers_events_to_pusher_and_native_members() {
    let s = server().await;
    let mut a = P::connect(&s, "acme-key").await;
    let mut b = P::connect(&s, "acme-key").await;
    a.join_presence("presence-news", "alice", json!({})).await;
    b.join_presence("presence-news", "bob", json!({})).await;
    let mut n = s.client("nina").await;
    n.sub("presence-news", None).await.unwrap();
    let mut p = P::connect(&s, "acme-key").await;
    p.send(json!({"event": "pusher:subscribe", "data": {"channel": "public-feed"}}))
        .await;
    p.next_event("pusher_internal:subscription_succeeded").await;

    // To two channels, excluding Alice's connection.
    let (code, text) = api(
        &s,
        "POST",
        "/apps/1/events",
        &[],
        Some(json!({"name": "price", "channels": ["presence-news", "public-feed"], "data": "{\"p\":3}", "socket_id": a.socket_id})),
    )
    .await;
    assert_eq!((code, text.as_str()), (200, "{}"));
    let m = b.next_event("price").await;
    assert_eq!(
        (m["channel"].clone(), m["data"].clone()),
        (json!("presence-news"), json!({"p": 3}))
    );
    assert!(m.get("user_id").is_none(), "no sender: {m}");
    let m = p.next_event("price").await;
    assert_eq!(m["channel"], "public-feed");
    let e = next(&mut n, "EVENT").await;
    assert_eq!(
        (e["event"].clone(), e["data"].clone(), e["from"].clone()),
        (json!("price"), json!("{\"p\":3}"), Value::Null)
    );
    a.none("price", Duration::from_millis(300)).await;

    // A batch.
    let (code, _) = api(
        &s,
        "POST",
        "/apps/1/batch_events",
        &[],
        Some(json!({"batch": [{"channel": "presence-news", "name": "one", "data": "1"}, {"channel": "public-feed", "name": "two", "data": "2"}]})),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(a.next_event("one").await["data"], json!(1));
    assert_eq!(p.next_event("two").await["data"], json!(2));
}

#[tokio::test]
async fn the_http_api_answers_channel_queries_and_terminates_users() {
    let s = server().await;
    let mut a = P::connect(&s, "acme-key").await;
    a.join_presence("presence-q", "alice", json!({})).await;
    let mut a2 = P::connect(&s, "acme-key").await;
    a2.join_presence("presence-q", "alice", json!({})).await;
    let mut b = P::connect(&s, "acme-key").await;
    b.join_presence("presence-q", "bob", json!({})).await;
    b.join_private("private-q").await;

    let (code, text) = api(&s, "GET", "/apps/1/channels", &[], None).await;
    assert_eq!(code, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["channels"], json!({"presence-q": {}, "private-q": {}}));
    let (code, text) = api(
        &s,
        "GET",
        "/apps/1/channels",
        &[("filter_by_prefix", "presence-"), ("info", "user_count")],
        None,
    )
    .await;
    assert_eq!(code, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["channels"], json!({"presence-q": {"user_count": 2}}));
    let (code, _) = api(
        &s,
        "GET",
        "/apps/1/channels",
        &[("info", "user_count")],
        None,
    )
    .await;
    assert_eq!(code, 400, "user_count needs the presence- prefix");

    let (code, text) = api(
        &s,
        "GET",
        "/apps/1/channels/presence-q",
        &[("info", "user_count,subscription_count")],
        None,
    )
    .await;
    assert_eq!(code, 200, "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        json!({"occupied": true, "user_count": 2, "subscription_count": 3})
    );
    let (_, text) = api(&s, "GET", "/apps/1/channels/presence-empty", &[], None).await;
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        json!({"occupied": false})
    );

    let (code, text) = api(&s, "GET", "/apps/1/channels/presence-q/users", &[], None).await;
    assert_eq!(code, 200);
    let mut ids: Vec<String> = serde_json::from_str::<Value>(&text).unwrap()["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    assert_eq!(ids, ["alice", "bob"]);
    let (code, _) = api(&s, "GET", "/apps/1/channels/private-q/users", &[], None).await;
    assert_eq!(code, 400);

    // Both of Alice's connections are closed; Bob's stays.
    let (code, _) = api(
        &s,
        "POST",
        "/apps/1/users/alice/terminate_connections",
        &[],
        Some(json!({})),
    )
    .await;
    assert_eq!(code, 200);
    for c in [&mut a, &mut a2] {
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
    let removed = b.next_event("pusher_internal:member_removed").await;
    assert_eq!(removed["data"]["user_id"], "alice");
}

#[tokio::test]
async fn the_http_api_refuses_bad_signatures_and_bad_bodies() {
    let s = server().await;
    let ev = json!({"name": "x", "channel": "c", "data": "d"});
    // Another app's secret, key, an unknown app.
    let (code, text) = api_signed(
        &s,
        "POST",
        "/apps/1/events",
        &[],
        Some(ev.clone()),
        "globex-secret-1",
        "acme-key",
    )
    .await;
    assert_eq!(code, 401, "{text}");
    assert!(text.contains("auth_signature"), "{text}");
    let (code, _) = api_signed(
        &s,
        "POST",
        "/apps/1/events",
        &[],
        Some(ev.clone()),
        "globex-secret-1",
        "globex-key",
    )
    .await;
    assert_eq!(code, 401, "globex's key on acme's app");
    let (code, _) = api(&s, "POST", "/apps/9/events", &[], Some(ev.clone())).await;
    assert_eq!(code, 404);
    // Unsigned, and a body other than the signed one.
    let r = reqwest::Client::new()
        .post(format!("http://{}/apps/1/events", s.addr))
        .body(ev.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    for (body, code) in [
        (json!({"name": "x", "data": "d"}), 400),
        (json!({"name": "", "channel": "c", "data": "d"}), 400),
        (
            json!({"name": "x", "channel": "bad channel", "data": "d"}),
            400,
        ),
        (
            json!({"name": "x", "channel": "c", "data": "d", "socket_id": "abc"}),
            400,
        ),
        (
            json!({"name": "x", "channels": (0..101).map(|i| format!("c{i}")).collect::<Vec<_>>(), "data": "d"}),
            400,
        ),
        (
            json!({"name": "x", "channel": "c", "data": "d".repeat(10 * 1024 + 1)}),
            413,
        ),
        (
            json!({"batch": (0..11).map(|_| json!({"name": "x", "channel": "c", "data": "d"})).collect::<Vec<_>>()}),
            400,
        ),
    ] {
        let path = if body.get("batch").is_some() {
            "/apps/1/batch_events"
        } else {
            "/apps/1/events"
        };
        let (got, text) = api(&s, "POST", path, &[], Some(body.clone())).await;
        assert_eq!(got, code, "{body}: {text}");
    }
    let (code, text) = api(
        &s,
        "POST",
        "/apps/1/events",
        &[],
        Some(json!("not an object")),
    )
    .await;
    assert_eq!(code, 400, "{text}");
}

/// What a Pusher webhook receiver got: bodies whose signature checked out,
/// and how many did not.
#[derive(Default)]
struct Hooks {
    bodies: std::sync::Mutex<Vec<Value>>,
    bad: std::sync::atomic::AtomicUsize,
}

async fn pusher_receiver(h: std::sync::Arc<Hooks>) -> String {
    use axum::extract::State;
    async fn hook(
        State(h): State<std::sync::Arc<Hooks>>,
        headers: axum::http::HeaderMap,
        body: axum::body::Bytes,
    ) -> axum::http::StatusCode {
        let key = headers.get("x-pusher-key").and_then(|v| v.to_str().ok());
        let sig = headers
            .get("x-pusher-signature")
            .and_then(|v| v.to_str().ok());
        let want = roster::protocol::pusher::sign_bytes(SECRET, &body);
        if key != Some("acme-key") || sig != Some(want.as_str()) {
            h.bad.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            return axum::http::StatusCode::UNAUTHORIZED;
        }
        h.bodies
            .lock()
            .unwrap()
            .push(serde_json::from_slice(&body).unwrap());
        axum::http::StatusCode::OK
    }
    let app = axum::Router::new()
        .route("/pusher", axum::routing::post(hook))
        .with_state(h);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    format!("http://{addr}/pusher")
}

#[tokio::test]
async fn pusher_webhooks_name_channels_and_users_and_are_signed() {
    let hooks = std::sync::Arc::new(Hooks::default());
    let url = pusher_receiver(hooks.clone()).await;
    let dir = temp_dir("pusher-hooks");
    let file = dir.join("roster.toml");
    std::fs::write(
        &file,
        format!(
            "[[pusher.apps]]\ntenant = \"acme\"\napp_id = \"1\"\nkey = \"acme-key\"\nsecret = \"{SECRET}\"\nwebhook_url = \"{url}\"\n"
        ),
    )
    .unwrap();
    let s = Server::start_args(
        &["serve", "--config", file.to_str().unwrap()],
        &[("ROSTER_WEBHOOKS_ALLOW_PRIVATE", "true")],
    )
    .await;
    let mut a = P::connect(&s, "acme-key").await;
    a.join_presence("presence-h", "alice", json!({})).await;
    let mut a2 = P::connect(&s, "acme-key").await;
    a2.join_presence("presence-h", "alice", json!({})).await;
    let mut b = P::connect(&s, "acme-key").await;
    b.join_presence("presence-h", "bob", json!({})).await;
    b.join_private("private-h").await;
    a.send(json!({"event": "client-typing", "channel": "presence-h", "data": {"on": true}}))
        .await;
    b.next_event("client-typing").await;
    drop(a2);
    drop(a);
    drop(b);
    let want = [
        json!({"name": "channel_occupied", "channel": "presence-h"}),
        json!({"name": "member_added", "channel": "presence-h", "user_id": "alice"}),
        json!({"name": "member_added", "channel": "presence-h", "user_id": "bob"}),
        json!({"name": "channel_occupied", "channel": "private-h"}),
        json!({"name": "client_event", "channel": "presence-h", "event": "client-typing", "data": "{\"on\":true}", "user_id": "alice"}),
    ];
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    let events = loop {
        let events: Vec<Value> = hooks
            .bodies
            .lock()
            .unwrap()
            .iter()
            .flat_map(|b| {
                assert!(b["time_ms"].as_u64().unwrap() > 1_700_000_000_000);
                b["events"].as_array().unwrap().clone()
            })
            .collect();
        let vacated = events
            .iter()
            .filter(|e| e["name"] == "channel_vacated")
            .count();
        if vacated == 2 || tokio::time::Instant::now() > end {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(events[..5], want[..], "{events:#?}");
    let mut rest: Vec<String> = events[5..].iter().map(|e| e.to_string()).collect();
    rest.sort();
    let mut want_rest: Vec<String> = [
        json!({"name": "member_removed", "channel": "presence-h", "user_id": "alice"}),
        json!({"name": "member_removed", "channel": "presence-h", "user_id": "bob"}),
        json!({"name": "channel_vacated", "channel": "presence-h"}),
        json!({"name": "channel_vacated", "channel": "private-h"}),
    ]
    .iter()
    .map(|e| e.to_string())
    .collect();
    want_rest.sort();
    assert_eq!(
        rest, want_rest,
        "one member_removed per user, at its last session: {events:#?}"
    );
    assert_eq!(hooks.bad.load(std::sync::atomic::Ordering::SeqCst), 0);
    // Read-only over REST, like any endpoint of the configuration.
    let (code, _) = s
        .rest(
            "DELETE",
            "/api/v1/webhooks/pusher",
            &s.admin_token("acme"),
            None,
        )
        .await;
    assert_eq!(code, 409);
}

#[tokio::test]
async fn an_oversized_frame_closes_1009_and_the_others_stay() {
    let s = server_with(&[("ROSTER_LIMITS_MAX_FRAME_BYTES", "4096")]).await;
    let mut a = P::connect(&s, "acme-key").await;
    let mut b = P::connect(&s, "acme-key").await;
    a.join_private("private-big").await;
    b.join_private("private-big").await;
    let big = "x".repeat(5000);
    a.send(json!({"event": "client-big", "channel": "private-big", "data": {"x": big}}))
        .await;
    let code = loop {
        match a.recv(T).await {
            Ok(_) => continue,
            Err(code) => break code,
        }
    };
    assert_eq!(code, Some(1009));
    b.none("client-big", Duration::from_millis(200)).await;
    b.send(json!({"event": "pusher:ping", "data": {}})).await;
    b.next_event("pusher:pong").await;
}
