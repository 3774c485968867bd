//! The opening (accept → HTTP request → upgrade → `HELLO` → `WELCOME`) is bounded:
//! by `timing.hello_timeout` counted from the accept, and by
//! `limits.max_openings_per_ip` openings in progress per client address, so idle or
//! dribbling sockets from one address never keep a real client out.

mod common;
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;

/// Waits until the server closes `tcp` (EOF or reset); the time it took, or `None`
/// if it is still open after `within`.
async fn closed_within(tcp: &mut TcpStream, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at((start + within).into(), tcp.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => continue,
        }
    }
}

/// A TCP connection to the server from local address `from` (any 127/8 address).
async fn connect_from(s: &Server, from: &str) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let addr: SocketAddr = s.addr.parse().unwrap();
    sock.connect(addr).await.expect("tcp connect")
}

/// Upgrades, sends HELLO and returns once WELCOME arrived.
async fn welcome_from(s: &Server, from: &str, user: &str) {
    let tcp = connect_from(s, from).await;
    let (mut ws, _) = tokio::time::timeout(T, tokio_tungstenite::client_async(s.ws_url(), tcp))
        .await
        .expect("upgrade in time")
        .expect("upgrade");
    let hello = json!({"type": "HELLO", "token": s.token(user)}).to_string();
    ws.send(Message::text(hello)).await.unwrap();
    loop {
        match tokio::time::timeout(T, ws.next())
            .await
            .expect("WELCOME in time")
        {
            Some(Ok(Message::Text(t))) if t.contains("\"WELCOME\"") => return,
            Some(Ok(_)) => continue,
            other => panic!("no WELCOME from {from}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_socket_that_never_sends_its_request_is_closed_at_hello_timeout() {
    let s = Server::start_with(&[("ROSTER_TIMING_HELLO_TIMEOUT", "1s")]).await;
    let mut tcp = connect_from(&s, "127.0.0.1").await;
    let took = closed_within(&mut tcp, Duration::from_secs(3))
        .await
        .expect("closed by the server");
    assert!(
        took >= Duration::from_millis(800) && took <= Duration::from_millis(1800),
        "closed after {took:?}, expected about 1 s"
    );
}

#[tokio::test]
async fn a_request_dribbled_a_byte_at_a_time_is_cut_off_at_hello_timeout() {
    let s = Server::start_with(&[("ROSTER_TIMING_HELLO_TIMEOUT", "1s")]).await;
    let mut tcp = connect_from(&s, "127.0.0.1").await;
    let start = Instant::now();
    let request = b"GET /ws HTTP/1.1\r\n";
    let mut sent = 0;
    let mut closed = None;
    for b in request {
        if tcp.write_all(&[*b]).await.is_err() {
            closed = Some(start.elapsed());
            break;
        }
        sent += 1;
        if let Some(_t) = closed_within(&mut tcp, Duration::from_millis(200)).await {
            closed = Some(start.elapsed());
            break;
        }
    }
    let took = closed.expect("the server closed the dribbling socket");
    assert!(sent < request.len(), "the whole line got through");
    assert!(
        took >= Duration::from_millis(800) && took <= Duration::from_millis(1800),
        "closed after {took:?}, expected about 1 s"
    );
}

#[tokio::test]
async fn idle_openings_from_one_address_do_not_keep_others_out() {
    let s = Server::start_with(&[
        ("ROSTER_TIMING_HELLO_TIMEOUT", "3s"),
        ("ROSTER_LIMITS_MAX_OPENINGS_PER_IP", "20"),
    ])
    .await;
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(connect_from(&s, "127.0.0.1").await);
    }
    // Let the server accept (and count) all twenty before the ones above the cap.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut over = Vec::new();
    for _ in 0..5 {
        over.push(connect_from(&s, "127.0.0.1").await);
    }
    for (i, tcp) in over.iter_mut().enumerate() {
        assert!(
            closed_within(tcp, Duration::from_millis(500))
                .await
                .is_some(),
            "socket {} from 127.0.0.1 (above the cap) is closed at once",
            21 + i
        );
    }
    // Another address is not affected.
    welcome_from(&s, "127.0.0.2", "alice").await;
    // The twenty idle ones are still open (their deadline is 3 s) ...
    for (i, tcp) in idle.iter_mut().enumerate() {
        assert!(
            closed_within(tcp, Duration::from_millis(10))
                .await
                .is_none(),
            "idle socket {i} closed early"
        );
    }
    // ... then closed by their deadline, and 127.0.0.1 gets in again.
    for tcp in idle.iter_mut() {
        assert!(
            closed_within(tcp, Duration::from_secs(5)).await.is_some(),
            "idle socket closed at its deadline"
        );
    }
    welcome_from(&s, "127.0.0.1", "bob").await;
    // A welcomed session no longer counts: twenty more openings fit.
    let mut again = Vec::new();
    for _ in 0..20 {
        again.push(connect_from(&s, "127.0.0.1").await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for tcp in again.iter_mut() {
        assert!(closed_within(tcp, Duration::from_millis(10))
            .await
            .is_none());
    }
}

async fn healthz(tcp: &mut TcpStream) {
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(T, tcp.read(&mut buf))
        .await
        .expect("answer in time")
        .expect("answer");
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[tokio::test]
async fn an_answered_rest_request_ends_the_opening_and_keep_alive_is_bounded_between_requests() {
    let s = Server::start_with(&[
        ("ROSTER_TIMING_HELLO_TIMEOUT", "1s"),
        ("ROSTER_LIMITS_MAX_OPENINGS_PER_IP", "2"),
    ])
    .await;
    // Four keep-alive REST connections from one address with a cap of two: answered
    // requests are not openings, so none is refused and WebSockets still get in.
    let mut conns = Vec::new();
    for _ in 0..4 {
        let mut tcp = connect_from(&s, "127.0.0.1").await;
        healthz(&mut tcp).await;
        conns.push(tcp);
    }
    welcome_from(&s, "127.0.0.1", "alice").await;
    // Requests keep a connection alive; each resets the bound ...
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        healthz(&mut conns[0]).await;
    }
    // ... and silence after the last answer ends it, about hello_timeout later.
    let start = Instant::now();
    let took = closed_within(&mut conns[0], Duration::from_secs(3))
        .await
        .expect("idle keep-alive connection closed");
    assert!(
        took >= Duration::from_millis(700) && took <= Duration::from_millis(1600),
        "closed {took:?} after the last answer"
    );
    assert!(start.elapsed() < Duration::from_secs(3));
    // A second request dribbled a byte at a time is cut off the same way.
    let mut tcp = connect_from(&s, "127.0.0.1").await;
    healthz(&mut tcp).await;
    let start = Instant::now();
    let mut closed = None;
    for b in b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" {
        if tcp.write_all(&[*b]).await.is_err()
            || closed_within(&mut tcp, Duration::from_millis(200))
                .await
                .is_some()
        {
            closed = Some(start.elapsed());
            break;
        }
    }
    let took = closed.expect("the dribbled second request is cut off");
    assert!(took <= Duration::from_millis(1800), "after {took:?}");
}

#[tokio::test]
async fn an_upgrade_asked_later_on_a_keep_alive_connection_gets_its_own_time() {
    let s = Server::start_with(&[("ROSTER_TIMING_HELLO_TIMEOUT", "1s")]).await;
    let mut tcp = connect_from(&s, "127.0.0.1").await;
    healthz(&mut tcp).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (mut ws, _) = tokio_tungstenite::client_async(s.ws_url(), tcp)
        .await
        .expect("upgrade on the same connection");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let hello = json!({"type": "HELLO", "token": s.token("alice")}).to_string();
    ws.send(Message::text(hello)).await.unwrap();
    let mut welcomed = false;
    while let Some(Ok(m)) = tokio::time::timeout(T, ws.next()).await.expect("reply") {
        if let Message::Text(t) = m {
            if t.contains("\"WELCOME\"") {
                welcomed = true;
                break;
            }
        }
    }
    assert!(
        welcomed,
        "HELLO 1.2 s after accept, 0.5 s after the upgrade"
    );
    // The session outlives hello_timeout: the keep-alive bound is gone.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    ws.send(Message::text(r#"{"type":"HB","t":"x"}"#))
        .await
        .unwrap();
    loop {
        match tokio::time::timeout(T, ws.next()).await.expect("HB_ACK") {
            Some(Ok(Message::Text(t))) if t.contains("HB_ACK") => break,
            Some(Ok(_)) => continue,
            other => panic!("session lost: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_websocket_that_upgrades_but_sends_no_hello_is_closed_4001_at_the_deadline() {
    let s = Server::start_with(&[("ROSTER_TIMING_HELLO_TIMEOUT", "1s")]).await;
    let tcp = connect_from(&s, "127.0.0.1").await;
    let start = Instant::now();
    // The upgrade itself comes late: the deadline counts from the accept.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (mut ws, _) = tokio_tungstenite::client_async(s.ws_url(), tcp)
        .await
        .expect("upgrade");
    let code = loop {
        match tokio::time::timeout(T, ws.next())
            .await
            .expect("closed in time")
        {
            Some(Ok(Message::Close(f))) => break f.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    };
    assert_eq!(code, Some(4001));
    let took = start.elapsed();
    assert!(
        took <= Duration::from_millis(1500),
        "closed after {took:?}: the deadline counts from the accept"
    );
}
