//! `pusher-idle`: C idle connections, each its own user subscribed to a presence
//! channel of G (`presence-bench-idle-<i / G>`); once all are open and `--settle`
//! has passed, the server's RSS delta over the run divided by the connections
//! opened is its memory per idle connection. The kernel's side (Slab and TCP buffer
//! pages, both ends of every connection on this host) is reported apart. The
//! connections answer `pusher:ping` with `pusher:pong` (and WebSocket pings) while
//! they wait.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::{join_presence, send_text, source_addr, PusherServer, PusherTarget, PONG};
use crate::measure::{self, micros_histogram, round3, summary_ms};
use crate::parse_duration;

#[derive(Args, Debug)]
pub struct PusherIdleArgs {
    #[command(flatten)]
    pub target: PusherTarget,
    /// Connections to open.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Members per presence channel.
    #[arg(long, default_value_t = 10)]
    pub group: usize,
    /// Openings (connect → subscription_succeeded) in flight.
    #[arg(long, default_value_t = 100)]
    pub concurrency: usize,
    /// Idle time after the last opening before memory is read.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub settle: Duration,
    /// Limit for one opening.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub open_timeout: Duration,
    /// Channel names are this prefix plus i / group.
    #[arg(long, default_value = "presence-bench-idle-")]
    pub channel_prefix: String,
    /// Spread the connections over this many loopback addresses (127.0.0.1 …
    /// 127.0.0.N); one address has ~28,000 ephemeral ports.
    #[arg(long, default_value_t = 1)]
    pub source_addrs: usize,
}

pub async fn run(a: PusherIdleArgs) -> Result<(), String> {
    if a.connections == 0 || a.group == 0 {
        return Err("need --connections >= 1 and --group >= 1".into());
    }
    if let Some(limit) = measure::open_files_limit() {
        if a.connections as u64 + 100 > limit {
            return Err(format!(
                "{} connections need more open files than this process may have ({limit})",
                a.connections
            ));
        }
    }
    let server = PusherServer::start(&a.target)?;
    let url = server.app_url();
    // The server is idle and empty: its baseline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = server.rss();
    let slab_before = measure::slab_bytes();
    let sock_before = measure::tcp_sockstat();
    let cpu_before = server.cpu();

    let permits = Arc::new(Semaphore::new(a.concurrency.max(1)));
    let (stop, stop_rx) = watch::channel(false);
    let dropped = Arc::new(AtomicU64::new(0));
    let pings = Arc::new(AtomicU64::new(0));
    let (results, mut results_rx) = mpsc::unbounded_channel::<Result<u64, String>>();
    let mut tasks = JoinSet::new();
    let began = Instant::now();
    for i in 0..a.connections {
        let channel = format!("{}{}", a.channel_prefix, i / a.group);
        let (url, permits, results, dropped, pings, mut stop_rx) = (
            url.clone(),
            permits.clone(),
            results.clone(),
            dropped.clone(),
            pings.clone(),
            stop_rx.clone(),
        );
        let (key, secret, timeout) = (server.key.clone(), server.secret.clone(), a.open_timeout);
        let from = source_addr(i, a.source_addrs);
        tasks.spawn(async move {
            let Ok(permit) = permits.acquire_owned().await else {
                return;
            };
            let t0 = Instant::now();
            let user = format!("u{i}");
            let opened = tokio::time::timeout(
                timeout,
                join_presence(&url, from, &channel, &user, &key, &secret),
            )
            .await;
            drop(permit);
            let mut ws = match opened {
                Ok(Ok(c)) => {
                    let _ = results.send(Ok(t0.elapsed().as_micros() as u64));
                    c
                }
                Ok(Err(e)) => {
                    let _ = results.send(Err(format!("connection {i}: {e}")));
                    return;
                }
                Err(_) => {
                    let _ = results.send(Err(format!(
                        "connection {i}: not subscribed within {timeout:?}"
                    )));
                    return;
                }
            };
            loop {
                tokio::select! {
                    _ = stop_rx.changed() => break,
                    frame = ws.next() => match frame {
                        Some(Ok(Message::Text(t))) => {
                            if t.as_str().contains("\"pusher:ping\"") {
                                pings.fetch_add(1, Ordering::Relaxed);
                                let _ = send_text(&mut ws, PONG.to_owned()).await;
                            }
                        }
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                            dropped.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        Some(Ok(_)) => {}
                    },
                }
            }
            let _ = tokio::time::timeout(Duration::from_secs(5), ws.close(None)).await;
        });
    }
    drop(results);
    let mut latency = micros_histogram();
    let (mut opened, mut failed, mut errors) = (0u64, 0u64, Vec::new());
    while let Some(r) = results_rx.recv().await {
        match r {
            Ok(us) => {
                opened += 1;
                measure::record(&mut latency, us);
            }
            Err(e) => {
                failed += 1;
                if errors.len() < 10 {
                    errors.push(e);
                }
            }
        }
        if opened + failed == a.connections as u64 {
            break;
        }
    }
    let open_s = began.elapsed().as_secs_f64();
    tokio::time::sleep(a.settle).await;
    let rss_after = server.rss();
    let slab_after = measure::slab_bytes();
    let sock_after = measure::tcp_sockstat();
    let cpu_after = server.cpu();
    let dropped_while_idle = dropped.load(Ordering::Relaxed);
    let held = opened.saturating_sub(dropped_while_idle);

    let mib = |b: u64| round3(b as f64 / 1048576.0);
    let per_conn = |before: Option<u64>, after: Option<u64>| match (before, after) {
        (Some(b), Some(a)) if held > 0 => {
            json!(((a as f64 - b as f64) / held as f64).round() as i64)
        }
        _ => Value::Null,
    };
    // SAFETY: sysconf has no memory effects.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    let report = json!({
        "scenario": "pusher-idle",
        "command": measure::command_line(),
        "server": server.report(),
        "connections": a.connections,
        "group": a.group,
        "source_addrs": a.source_addrs.max(1),
        "channels": a.connections.div_ceil(a.group),
        "opened": opened,
        "failed": failed,
        "first_errors": errors,
        "dropped_while_idle": dropped_while_idle,
        "pusher_pings_answered": pings.load(Ordering::Relaxed),
        "open_s": round3(open_s),
        "opens_per_s": round3(opened as f64 / open_s.max(1e-9)),
        "open_latency_ms": summary_ms(&latency),
        "settle_s": a.settle.as_secs_f64(),
        "server_rss_mb": {"before": rss_before.map(mib), "after": rss_after.map(mib)},
        "server_bytes_per_connection": per_conn(rss_before, rss_after),
        "kernel": {
            "slab_bytes_per_connection": per_conn(slab_before, slab_after),
            "tcp_buffer_bytes_per_connection": per_conn(
                sock_before.map(|s| s.1 * page),
                sock_after.map(|s| s.1 * page),
            ),
            "note": "both ends of every connection are on this host",
        },
        "server_cpu_during_run": measure::cpu_delta(cpu_before, cpu_after),
        "bench_cpu": measure::own_cpu(),
        "open_files_limit": measure::open_files_limit(),
        "loadavg": measure::loadavg(),
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    stop.send_replace(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}
