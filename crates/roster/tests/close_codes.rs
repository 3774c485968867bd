//! The closing handshake (RFC 6455 §7.1.1): when the server closes a connection
//! while the client is still sending, the client still reads the exact close code.
//! Before the handshake the server dropped the TCP connection with the client's
//! frames unread, the kernel answered with a reset, and the client saw 1006.

mod common;
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<TcpStream>;

/// Rounds per case, in case the loss is a race on some machine.
const ROUNDS: usize = 5;
/// Replies the server owes the client when it decides to close: enough that they,
/// and the close frame behind them, wait in the server's send queue.
const PENDING_REPLIES: usize = 60;

/// A welcomed connection whose receive buffer is tiny: the server's frames back up
/// in its own send queue while the client does not read, as over a slow network.
async fn welcomed_slow_reader(s: &Server, user: &str) -> Ws {
    let sock = TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(2048).unwrap();
    let tcp = sock
        .connect(s.addr.parse().unwrap())
        .await
        .expect("connect");
    let (mut ws, _) = tokio_tungstenite::client_async(s.ws_url(), tcp)
        .await
        .expect("upgrade");
    let hello = json!({"type": "HELLO", "token": s.token(user)}).to_string();
    ws.send(Message::text(hello)).await.expect("send HELLO");
    loop {
        match tokio::time::timeout(T, ws.next())
            .await
            .expect("WELCOME in time")
        {
            Some(Ok(Message::Text(t))) if t.contains("\"WELCOME\"") => return ws,
            Some(Ok(_)) => continue,
            other => panic!("no WELCOME: {other:?}"),
        }
    }
}

/// Sends frames that each earn a reply, then `trigger` (which makes the server
/// close), then keeps sending `filler`; only then starts reading. Returns the close
/// code the client reads (`None`: the connection ended without one, i.e. 1006).
async fn close_code_while_sending(mut ws: Ws, trigger: Vec<Message>, filler: &str) -> Option<u16> {
    let pad = "p".repeat(100);
    for i in 0..PENDING_REPLIES {
        let hb = json!({"type": "HB", "t": format!("{i}-{pad}")}).to_string();
        ws.send(Message::text(hb)).await.expect("send HB");
    }
    for t in trigger {
        ws.send(t).await.expect("send trigger");
    }
    for _ in 0..20 {
        if ws.send(Message::text(filler.to_string())).await.is_err() {
            break;
        }
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    loop {
        match tokio::time::timeout(T, ws.next()).await {
            Err(_) => panic!("no close within {T:?}"),
            Ok(Some(Ok(Message::Close(frame)))) => {
                // Answer the close, as a browser does.
                let _ = ws.close(None).await;
                return frame.map(|f| u16::from(f.code));
            }
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => {
                eprintln!("read error instead of a close frame: {e}");
                return None;
            }
            Ok(None) => return None,
        }
    }
}

#[tokio::test]
async fn bye_closes_1000_even_while_the_client_keeps_sending() {
    let s = Server::start().await;
    for round in 0..ROUNDS {
        let ws = welcomed_slow_reader(&s, &format!("u{round}")).await;
        let code = close_code_while_sending(
            ws,
            vec![Message::text(r#"{"type":"BYE"}"#)],
            r#"{"type":"HB"}"#,
        )
        .await;
        assert_eq!(code, Some(1000), "round {round}");
    }
}

#[tokio::test]
async fn too_many_errors_closes_4010_even_while_the_client_keeps_sending() {
    let s = Server::start_with(&[("ROSTER_LIMITS_ERRORS_PER_MINUTE", "3")]).await;
    for round in 0..ROUNDS {
        let ws = welcomed_slow_reader(&s, &format!("u{round}")).await;
        let bad = vec![Message::text("not json"); 4];
        let code = close_code_while_sending(ws, bad, "not json either").await;
        assert_eq!(code, Some(4010), "round {round}");
    }
}

#[tokio::test]
async fn a_binary_frame_closes_1003_even_while_the_client_keeps_sending() {
    let s = Server::start().await;
    for round in 0..ROUNDS {
        let ws = welcomed_slow_reader(&s, &format!("u{round}")).await;
        let binary = vec![Message::binary(vec![1u8, 2, 3])];
        let code = close_code_while_sending(ws, binary, r#"{"type":"HB"}"#).await;
        assert_eq!(code, Some(1003), "round {round}");
    }
}
