//! Drives `Client` against a tiny scripted WebSocket server (no Roster needed):
//! ref matching, buffering of unrelated messages, server errors, close codes and
//! `freeze` silence.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use roster_client::{Client, ClientError, ConnectOptions, Hello, Incoming};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(5);

type ServerSocket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Starts a one-connection server running `script`; returns the ws URL.
async fn scripted<F, Fut>(script: F) -> String
where
    F: FnOnce(ServerSocket) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        script(ws).await;
    });
    format!("ws://{addr}/ws")
}

async fn next_json(ws: &mut ServerSocket) -> Value {
    loop {
        match ws.next().await.unwrap().unwrap() {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Close(_) => panic!("client closed"),
            _ => {}
        }
    }
}

async fn send_json(ws: &mut ServerSocket, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

#[tokio::test]
async fn request_buffers_unrelated_messages_in_order() {
    let url = scripted(|mut ws| async move {
        let hello = next_json(&mut ws).await;
        assert_eq!(hello["type"], "HELLO");
        assert_eq!(hello["token"], "tok");
        send_json(
            &mut ws,
            json!({"type": "PRESENCE_DIFF", "room": "r", "seq": 1}),
        )
        .await;
        send_json(&mut ws, json!({"type": "WELCOME", "ref": "other"})).await;
        send_json(
            &mut ws,
            json!({"type": "PRESENCE_DIFF", "room": "r", "seq": 2}),
        )
        .await;
        send_json(
            &mut ws,
            json!({"type": "WELCOME", "ref": hello["ref"], "sessionId": "s1"}),
        )
        .await;
        next_json(&mut ws).await; // keep the socket open until the client is done
    })
    .await;
    let mut c = Client::connect_url(&url).await.unwrap();
    let welcome = c.hello(Hello::with_token("tok")).await.unwrap();
    assert_eq!(welcome["sessionId"], "s1");
    assert_eq!(c.session_id(), Some("s1"));
    let seqs: Vec<Value> = [
        c.recv(T).await.unwrap(),
        c.recv(T).await.unwrap(),
        c.recv(T).await.unwrap(),
    ]
    .into_iter()
    .map(|i| match i {
        Incoming::Message(m) => m,
        other => panic!("{other:?}"),
    })
    .collect();
    assert_eq!(seqs[0]["seq"], 1);
    assert_eq!(seqs[1]["ref"], "other");
    assert_eq!(seqs[2]["seq"], 2);
    assert!(matches!(
        c.recv(Duration::from_millis(50)).await,
        Err(ClientError::Timeout)
    ));
}

#[tokio::test]
async fn an_error_with_our_ref_is_a_server_error() {
    let url = scripted(|mut ws| async move {
        let sub = next_json(&mut ws).await;
        assert_eq!(sub["type"], "SUB");
        assert_eq!(sub["state"], json!({"cursor": 3}));
        send_json(&mut ws, json!({"type": "ERROR", "code": "room_full", "message": "full", "ref": sub["ref"]})).await;
        let sub2 = next_json(&mut ws).await;
        send_json(&mut ws, json!({"type": "PRESENCE", "room": "elsewhere", "users": []})).await;
        send_json(&mut ws, json!({"type": "PRESENCE", "room": "Order:1", "ref": sub2["ref"], "users": [], "count": 0})).await;
        next_json(&mut ws).await;
    })
    .await;
    let mut c = Client::connect_url(&url).await.unwrap();
    match c.sub("Order:1", Some(json!({"cursor": 3}))).await {
        Err(ClientError::Server { code, message }) => {
            assert_eq!(code, "room_full");
            assert_eq!(message, "full");
        }
        other => panic!("{other:?}"),
    }
    let presence = c.sub("Order:1", None).await.unwrap();
    assert_eq!(presence["room"], "Order:1");
    // The other room's PRESENCE was kept.
    assert_eq!(c.take_buffered().len(), 1);
}

#[tokio::test]
async fn close_codes_are_reported() {
    let url = scripted(|mut ws| async move {
        let _ = next_json(&mut ws).await;
        send_json(
            &mut ws,
            json!({"type": "ERROR", "code": "auth_failed", "message": "bad"}),
        )
        .await;
        ws.close(Some(CloseFrame {
            code: CloseCode::from(4001),
            reason: "auth".into(),
        }))
        .await
        .unwrap();
    })
    .await;
    let mut c = Client::connect_url(&url).await.unwrap();
    match c.hello(Hello::with_token("bad")).await {
        Err(ClientError::Closed { code, reason }) => {
            assert_eq!(code, Some(4001));
            assert_eq!(reason, "auth");
        }
        other => panic!("{other:?}"),
    }
    // The buffered ERROR is still there, then the close again.
    assert!(matches!(c.recv(T).await.unwrap(), Incoming::Message(m) if m["code"] == "auth_failed"));
    assert_eq!(c.expect_close(T).await.unwrap(), Some(4001));
    assert!(matches!(
        c.recv_type("WELCOME", T).await,
        Err(ClientError::Closed {
            code: Some(4001),
            ..
        })
    ));
}

#[tokio::test]
#[allow(clippy::result_large_err)] // tungstenite's callback signature
async fn query_token_bearer_and_user_agent_reach_the_server() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut seen = None;
        let cb =
            |req: &tokio_tungstenite::tungstenite::handshake::server::Request,
             resp: tokio_tungstenite::tungstenite::handshake::server::Response| {
                let h = |k: &str| {
                    req.headers()
                        .get(k)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned()
                };
                seen = Some((req.uri().to_string(), h("authorization"), h("user-agent")));
                Ok(resp)
            };
        let _ws = tokio_tungstenite::accept_hdr_async(tcp, cb).await.unwrap();
        seen.unwrap()
    });
    let opts = ConnectOptions {
        token: Some("t.k".into()),
        bearer: Some("b.k".into()),
        user_agent: Some("Mozilla/5.0 (iPhone)".into()),
        ..ConnectOptions::new(format!("ws://{addr}/ws"))
    };
    let _c = Client::connect(opts).await.unwrap();
    let (uri, auth, ua) = seen.await.unwrap();
    assert_eq!(uri, "/ws?token=t.k");
    assert_eq!(auth, "Bearer b.k");
    assert_eq!(ua, "Mozilla/5.0 (iPhone)");
}

#[tokio::test]
async fn a_frozen_client_does_not_answer_pings() {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let url = scripted(|mut ws| async move {
        // Unfrozen: a ping is answered.
        ws.send(Message::Ping(b"1".to_vec().into())).await.unwrap();
        let first = tokio::time::timeout(T, ws.next()).await;
        let answered = matches!(first, Ok(Some(Ok(Message::Pong(_)))));
        send_json(&mut ws, json!({"type": "GO"})).await;
        // Wait for the client's FROZEN notice, then ping again: silence.
        let _ = next_json(&mut ws).await;
        ws.send(Message::Ping(b"2".to_vec().into())).await.unwrap();
        let second = tokio::time::timeout(Duration::from_millis(500), ws.next()).await;
        let _ = tx.send((answered, second.is_err()));
    })
    .await;
    let mut c = Client::connect_url(&url).await.unwrap();
    c.recv_type("GO", T).await.unwrap();
    c.freeze();
    c.send(json!({"type": "FROZEN"})).await.unwrap();
    let (answered, silent) = rx.await.unwrap();
    assert!(answered, "an unfrozen client answers pings");
    assert!(silent, "a frozen client sends nothing");
}

#[tokio::test]
async fn binary_or_non_json_frames_from_the_server_are_protocol_errors() {
    let url = scripted(|mut ws| async move {
        ws.send(Message::text("not json")).await.unwrap();
        ws.send(Message::binary(vec![1, 2])).await.unwrap();
        let _ = ws.next().await;
    })
    .await;
    let mut c = Client::connect_url(&url).await.unwrap();
    assert!(matches!(c.recv(T).await, Err(ClientError::Protocol(_))));
    assert!(matches!(c.recv(T).await, Err(ClientError::Protocol(_))));
}

#[tokio::test]
async fn a_rejected_upgrade_reports_the_http_status() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 2048];
        let _ = tcp.read(&mut buf).await;
        let body = "{\"error\":\"no\"}";
        let resp = format!(
            "HTTP/1.1 401 Unauthorized\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let _ = tcp.write_all(resp.as_bytes()).await;
    });
    match Client::connect_url(&format!("ws://{addr}/ws")).await {
        Err(ClientError::Rejected { status, .. }) => assert_eq!(status, 401),
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("connected"),
    }
}

#[tokio::test]
async fn bye_waits_for_the_close() {
    let url = scripted(|mut ws| async move {
        let bye = next_json(&mut ws).await;
        assert_eq!(bye["type"], "BYE");
        ws.close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        }))
        .await
        .unwrap();
        let _ = ws.next().await;
    })
    .await;
    let mut c = Client::connect_url(&url).await.unwrap();
    assert_eq!(c.bye().await.unwrap(), Some(1000));
}
