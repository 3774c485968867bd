//! `openings`: a flood of connections that never finish their opening (idle, or an
//! HTTP request line dribbled a byte at a time), or that sit idle after one answered
//! request (keep-alive), from one address, while real clients
//! from another address connect and must get `WELCOME` (issue 11: "10,000 such
//! connections must not stop a real client from connecting"). Reports how the server
//! disposed of the flood (closed at once by `limits.max_openings_per_ip`, or at
//! `timing.hello_timeout`), and connect→`WELCOME` latency of the real clients.
//!
//! Loopback has a whole /8, so `--from` and `--client-from` are two addresses of
//! one machine (127.0.0.1 and 127.0.0.2 by default).

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::measure::{self, micros_histogram, summary_ms};
use crate::server::Server;
use crate::token::TokenMinter;
use crate::{parse_duration, Target};

/// A flood socket closed this soon after connecting was refused at accept.
const REFUSED_WITHIN: Duration = Duration::from_millis(200);
/// Connects in flight at once while flooding (below the server's backlog of 4,096).
const CONNECTS_IN_FLIGHT: usize = 512;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum FloodMode {
    /// Connect and send nothing.
    Idle,
    /// Send `GET /ws HTTP/1.1\r\n` one byte per `--dribble-interval`.
    Dribble,
    /// One complete `GET /healthz` (answered), then nothing: an idle keep-alive
    /// connection, which no longer counts as an opening.
    KeepAlive,
}

#[derive(Args, Debug)]
pub struct OpeningsArgs {
    #[command(flatten)]
    pub target: Target,
    /// Flood connections to open.
    #[arg(long, default_value_t = 10_000)]
    pub flood: usize,
    #[arg(long, value_enum, default_value = "idle")]
    pub mode: FloodMode,
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    pub dribble_interval: Duration,
    /// Local address of the flood sockets.
    #[arg(long, default_value = "127.0.0.1")]
    pub from: IpAddr,
    /// Local address of the real clients.
    #[arg(long, default_value = "127.0.0.2")]
    pub client_from: IpAddr,
    /// Real clients, one after another, once the flood is open.
    #[arg(long, default_value_t = 50)]
    pub clients: usize,
    /// How long to wait for the server to close the flood after the clients ran.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub wait: Duration,
}

/// What happened to one flood socket.
enum Fate {
    ConnectFailed,
    /// Closed by the server this long after connecting.
    Closed(Duration),
    StillOpen,
}

pub async fn run(a: OpeningsArgs) -> Result<(), String> {
    let server = Server::attach_or_start(&a.target)?;
    let addr = server_addr(&server.ws_url)?;
    let minter = TokenMinter::new(&a.target.token_secret, &a.target.tenant);
    let server_cpu_before = server.pid.and_then(measure::process_cpu);
    let bench_cpu_before = measure::self_cpu();
    let flood_end = Instant::now() + a.wait + Duration::from_secs(60);

    let gate = Arc::new(Semaphore::new(CONNECTS_IN_FLIGHT));
    let mut tasks = Vec::with_capacity(a.flood);
    let mut connected = Vec::with_capacity(a.flood);
    for _ in 0..a.flood {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let permit = gate
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let (from, mode, interval) = (a.from, a.mode, a.dribble_interval);
        tasks.push(tokio::spawn(async move {
            let tcp = connect_from(from, addr).await;
            drop(permit);
            let _ = tx.send(());
            match tcp {
                Err(_) => Fate::ConnectFailed,
                Ok(tcp) => flood_socket(tcp, mode, interval, flood_end).await,
            }
        }));
        connected.push(rx);
    }
    for rx in connected {
        let _ = rx.await;
    }

    let mut welcome = micros_histogram();
    let mut failures = Vec::new();
    for i in 0..a.clients {
        let token = minter.mint(&format!("bench-o{i}"), &[])?;
        let t0 = Instant::now();
        match tokio::time::timeout(
            Duration::from_secs(10),
            welcome_from(a.client_from, addr, &server.ws_url, &token),
        )
        .await
        {
            Ok(Ok(())) => measure::record(&mut welcome, t0.elapsed().as_micros() as u64),
            Ok(Err(e)) => failures.push(format!("client {i}: {e}")),
            Err(_) => failures.push(format!("client {i}: no WELCOME within 10 s")),
        }
    }

    let wait_until = Instant::now() + a.wait;
    let (mut refused, mut by_deadline, mut still_open, mut connect_failed) = (0, 0, 0, 0);
    let mut close_after = micros_histogram();
    for t in tasks {
        let fate = tokio::time::timeout_at(wait_until, t).await;
        match fate {
            Ok(Ok(Fate::Closed(d))) => {
                if d <= REFUSED_WITHIN {
                    refused += 1;
                } else {
                    by_deadline += 1;
                    measure::record(&mut close_after, d.as_micros() as u64);
                }
            }
            Ok(Ok(Fate::ConnectFailed)) => connect_failed += 1,
            Ok(Ok(Fate::StillOpen)) | Ok(Err(_)) | Err(_) => still_open += 1,
        }
    }
    let report = json!({
        "scenario": "openings",
        "command": measure::command_line(),
        "server": {"url": server.ws_url, "pid": server.pid, "config": server.config},
        "flood": {
            "sockets": a.flood,
            "mode": format!("{:?}", a.mode).to_lowercase(),
            "from": a.from.to_string(),
            "connect_failed": connect_failed,
            "closed_at_once": refused,
            "closed_later": by_deadline,
            "closed_later_after_ms": summary_ms(&close_after),
            "still_open_after_wait": still_open,
        },
        "clients": {
            "from": a.client_from.to_string(),
            "attempted": a.clients,
            "welcomed": a.clients - failures.len(),
            "failures": failures.iter().take(20).collect::<Vec<_>>(),
            "connect_to_welcome_ms": summary_ms(&welcome),
        },
        "server_cpu_during_run": measure::cpu_delta(
            server_cpu_before,
            server.pid.and_then(measure::process_cpu)
        ),
        "bench_cpu_during_run": measure::cpu_delta(bench_cpu_before, measure::self_cpu()),
        "bench_cpu": measure::own_cpu(),
        "open_files_limit": measure::open_files_limit(),
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    if !failures.is_empty() {
        return Err(format!(
            "{} of {} real clients did not get WELCOME during the flood",
            failures.len(),
            a.clients
        ));
    }
    if still_open > 0 {
        return Err(format!(
            "{still_open} flood sockets were still open after {:?}",
            a.wait
        ));
    }
    Ok(())
}

fn server_addr(ws_url: &str) -> Result<SocketAddr, String> {
    let rest = ws_url
        .strip_prefix("ws://")
        .ok_or_else(|| format!("{ws_url}: expected ws://HOST:PORT/…"))?;
    let hostport = rest.split('/').next().unwrap_or(rest);
    hostport
        .to_socket_addrs()
        .map_err(|e| format!("{hostport}: {e}"))?
        .next()
        .ok_or_else(|| format!("{hostport}: no address"))
}

async fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = match from {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    sock.bind(SocketAddr::new(from, 0))?;
    sock.connect(to).await
}

/// Holds one flood socket until the server closes it (or `end`).
async fn flood_socket(
    mut tcp: TcpStream,
    mode: FloodMode,
    interval: Duration,
    end: Instant,
) -> Fate {
    let start = Instant::now();
    let mut buf = [0u8; 256];
    if let FloodMode::KeepAlive = mode {
        let request = b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n";
        if tcp.write_all(request).await.is_err() {
            return Fate::Closed(start.elapsed());
        }
        match tokio::time::timeout_at(end, tcp.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(_) => return Fate::Closed(start.elapsed()),
            Err(_) => return Fate::StillOpen,
        }
    }
    let line = b"GET /ws HTTP/1.1\r\n";
    let mut next_byte = 0;
    loop {
        let wake = match mode {
            FloodMode::Idle | FloodMode::KeepAlive => end,
            FloodMode::Dribble => (Instant::now() + interval).min(end),
        };
        match tokio::time::timeout_at(wake, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Fate::Closed(start.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) if Instant::now() >= end => return Fate::StillOpen,
            Err(_) => {
                let b = line[next_byte % line.len()];
                next_byte += 1;
                if tcp.write_all(&[b]).await.is_err() {
                    return Fate::Closed(start.elapsed());
                }
            }
        }
    }
}

/// A real client: connect from `from`, upgrade, `HELLO`, wait for `WELCOME`.
async fn welcome_from(
    from: IpAddr,
    addr: SocketAddr,
    url: &str,
    token: &str,
) -> Result<(), String> {
    let tcp = connect_from(from, addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let (mut ws, _) = tokio_tungstenite::client_async(url, tcp)
        .await
        .map_err(|e| format!("upgrade: {e}"))?;
    let hello = json!({"type": "HELLO", "token": token}).to_string();
    ws.send(Message::text(hello))
        .await
        .map_err(|e| format!("HELLO: {e}"))?;
    while let Some(frame) = ws.next().await {
        match frame.map_err(|e| e.to_string())? {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                if v.get("type").and_then(Value::as_str) == Some("WELCOME") {
                    let _ = ws.close(None).await;
                    return Ok(());
                }
            }
            Message::Close(f) => {
                return Err(format!(
                    "closed {:?} before WELCOME",
                    f.map(|f| u16::from(f.code))
                ))
            }
            _ => {}
        }
    }
    Err("connection ended before WELCOME".into())
}
