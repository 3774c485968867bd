//! `connect`: opens many idle sessions (HELLO, then SUB to one of R rooms), reports the
//! connect rate, and — once everything is idle — the server's RSS and the kernel's
//! socket memory before/after, i.e. bytes per idle connection.
//!
//! One process may hold at most ~20,000 open files here, so above `--max-per-proc`
//! sessions the parent forks `connect-worker` copies of itself, each holding a slice;
//! they report over JSON lines on stdout and close their sessions when told `stop` on
//! stdin (or when stdin closes, so a dead parent never leaves them behind).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::measure::{self, histogram_to_json, merge_histogram_json, micros_histogram, summary_ms};
use crate::server::Server;
use crate::token::TokenMinter;
use crate::wire::open_session;
use crate::{parse_duration, Target};

#[derive(Args, Debug)]
pub struct ConnectArgs {
    #[command(flatten)]
    pub target: Target,
    /// Sessions to open in total.
    #[arg(long, default_value_t = 2000)]
    pub sessions: usize,
    /// Rooms the sessions are spread over (session i joins room i mod R).
    #[arg(long, default_value_t = 100)]
    pub rooms: usize,
    /// Worker processes (default: enough to keep each under --max-per-proc).
    #[arg(long)]
    pub procs: Option<usize>,
    /// Most sessions one bench process holds (the open-files limit is ~20,000).
    #[arg(long, default_value_t = 18_000)]
    pub max_per_proc: usize,
    /// Openings in flight, all processes together (split evenly between workers).
    /// Above the server's listen backlog, SYNs are dropped and retried after 1 s.
    #[arg(long, default_value_t = 100)]
    pub concurrency: usize,
    /// Idle time after the last opening before memory is read.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub settle: Duration,
    /// Extra idle time after the memory reading (e.g. to outlast session_timeout).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub hold: Duration,
    /// Limit for one session's HELLO→PRESENCE opening.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub open_timeout: Duration,
}

#[derive(Args, Debug)]
pub struct WorkerArgs {
    #[arg(long)]
    pub url: String,
    #[arg(long)]
    pub token_secret: String,
    #[arg(long)]
    pub tenant: String,
    /// Index of this worker's first session.
    #[arg(long)]
    pub start: usize,
    #[arg(long)]
    pub count: usize,
    #[arg(long)]
    pub rooms: usize,
    #[arg(long)]
    pub concurrency: usize,
    #[arg(long, value_parser = parse_duration)]
    pub open_timeout: Duration,
}

/// Sessions held open by this process until `close_all`.
struct Holding {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    dropped: Arc<AtomicU64>,
}

impl Holding {
    async fn close_all(mut self) -> u64 {
        self.stop.send_replace(true);
        while self.tasks.join_next().await.is_some() {}
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Opens sessions `start..start+count`; returns when every opening finished (ok or not),
/// with `{opened, failed, errors, elapsed_s, latency}`.
async fn open_many(
    url: &str,
    minter: &TokenMinter,
    start: usize,
    count: usize,
    rooms: usize,
    concurrency: usize,
    timeout: Duration,
) -> Result<(Value, Holding), String> {
    let rooms = rooms.max(1);
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let (stop, stop_rx) = watch::channel(false);
    let dropped = Arc::new(AtomicU64::new(0));
    let (results, mut results_rx) = mpsc::unbounded_channel::<Result<u64, String>>();
    let mut tasks = JoinSet::new();
    let began = Instant::now();
    for i in start..start + count {
        let user = format!("bench-c{i}");
        let token = minter.mint(&user, &[])?;
        let (url, room, client_id) = (
            url.to_owned(),
            format!("bench:conn:{}", i % rooms),
            format!("cid-{i}"),
        );
        let (permits, results, dropped, mut stop_rx) = (
            permits.clone(),
            results.clone(),
            dropped.clone(),
            stop_rx.clone(),
        );
        tasks.spawn(async move {
            let Ok(permit) = permits.acquire_owned().await else {
                return;
            };
            let t0 = Instant::now();
            let opened = open_session(&url, &token, &client_id, &room, timeout).await;
            drop(permit);
            let mut ws = match opened {
                Ok(o) => {
                    let _ = results.send(Ok(t0.elapsed().as_micros() as u64));
                    o.ws
                }
                Err(e) => {
                    let _ = results.send(Err(e));
                    return;
                }
            };
            // Idle: keep reading (diffs, pings — tungstenite answers them) until told to stop.
            loop {
                tokio::select! {
                    _ = stop_rx.changed() => break,
                    frame = ws.next() => match frame {
                        Some(Ok(_)) => {}
                        _ => {
                            dropped.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
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
                if errors.len() < 5 {
                    errors.push(e);
                }
            }
        }
        if opened + failed == count as u64 {
            break;
        }
    }
    let report = json!({
        "opened": opened,
        "failed": failed,
        "errors": errors,
        "elapsed_s": measure::round3(began.elapsed().as_secs_f64()),
        "latency": histogram_to_json(&latency),
    });
    Ok((
        report,
        Holding {
            stop,
            tasks,
            dropped,
        },
    ))
}

/// The hidden `connect-worker` subcommand.
pub async fn run_worker(a: WorkerArgs) -> Result<(), String> {
    let minter = TokenMinter::new(&a.token_secret, &a.tenant);
    if let Some(limit) = measure::open_files_limit() {
        if a.count as u64 + 50 > limit {
            return Err(format!(
                "worker asked for {} sessions but may open only {limit} files",
                a.count
            ));
        }
    }
    let (mut ready, holding) = open_many(
        &a.url,
        &minter,
        a.start,
        a.count,
        a.rooms,
        a.concurrency,
        a.open_timeout,
    )
    .await?;
    ready["event"] = json!("ready");
    println!("{ready}");
    // Hold until the parent says stop (or goes away).
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = stdin.next_line().await {
        if line.trim() == "stop" {
            break;
        }
    }
    let dropped = holding.close_all().await;
    println!(
        "{}",
        json!({"event": "done", "dropped_while_idle": dropped, "cpu": measure::own_cpu()})
    );
    Ok(())
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Worker {
    async fn next_event(&mut self, want: &str) -> Result<Value, String> {
        while let Some(line) = self
            .lines
            .next_line()
            .await
            .map_err(|e| format!("worker output: {e}"))?
        {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if v.get("event").and_then(Value::as_str) == Some(want) {
                    return Ok(v);
                }
            }
        }
        Err(format!(
            "a worker exited before reporting {want:?} (see its stderr above)"
        ))
    }
}

pub async fn run(a: ConnectArgs) -> Result<(), String> {
    let server = Server::attach_or_start(&a.target)?;
    let minter = TokenMinter::new(&a.target.token_secret, &a.target.tenant);
    let procs = a
        .procs
        .unwrap_or_else(|| a.sessions.div_ceil(a.max_per_proc.max(1)))
        .max(1);
    let rss_before = server.pid.and_then(measure::rss_bytes);
    let sock_before = measure::tcp_sockstat();
    let slab_before = measure::slab_bytes();
    let cpu_before = server.pid.and_then(measure::process_cpu);

    let began = Instant::now();
    let mut latency = micros_histogram();
    let (mut opened, mut failed, mut errors) = (0u64, 0u64, Vec::<Value>::new());
    let mut absorb = |r: &Value| {
        opened += r["opened"].as_u64().unwrap_or(0);
        failed += r["failed"].as_u64().unwrap_or(0);
        let room_left = 5usize.saturating_sub(errors.len());
        errors.extend(
            r["errors"]
                .as_array()
                .into_iter()
                .flatten()
                .take(room_left)
                .cloned(),
        );
        merge_histogram_json(&mut latency, &r["latency"]);
    };
    let mut inline_holding = None;
    let mut workers = Vec::new();
    if procs == 1 {
        let (r, h) = open_many(
            &server.ws_url,
            &minter,
            0,
            a.sessions,
            a.rooms,
            a.concurrency,
            a.open_timeout,
        )
        .await?;
        absorb(&r);
        inline_holding = Some(h);
    } else {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find my own binary: {e}"))?;
        let per = a.sessions.div_ceil(procs);
        let per_worker_concurrency = (a.concurrency / procs).max(1);
        for w in 0..procs {
            let start = w * per;
            let count = per.min(a.sessions.saturating_sub(start));
            if count == 0 {
                break;
            }
            let mut child = Command::new(&exe)
                .arg("connect-worker")
                .args([
                    "--url",
                    &server.ws_url,
                    "--token-secret",
                    &a.target.token_secret,
                ])
                .args(["--tenant", &a.target.tenant, "--start", &start.to_string()])
                .args([
                    "--count",
                    &count.to_string(),
                    "--rooms",
                    &a.rooms.to_string(),
                ])
                .args(["--concurrency", &per_worker_concurrency.to_string()])
                .args([
                    "--open-timeout",
                    &format!("{}ms", a.open_timeout.as_millis()),
                ])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("cannot start worker {w}: {e}"))?;
            let stdin = child.stdin.take().ok_or("worker stdin not captured")?;
            let stdout = child.stdout.take().ok_or("worker stdout not captured")?;
            workers.push(Worker {
                child,
                stdin,
                lines: BufReader::new(stdout).lines(),
            });
        }
        for w in &mut workers {
            let r = w.next_event("ready").await?;
            absorb(&r);
        }
    }
    let connect_elapsed = began.elapsed().as_secs_f64();

    tokio::time::sleep(a.settle).await;
    let rss_after = server.pid.and_then(measure::rss_bytes);
    let sock_after = measure::tcp_sockstat();
    let slab_after = measure::slab_bytes();
    tokio::time::sleep(a.hold).await;

    let mut dropped = 0u64;
    let mut worker_cpu = Vec::new();
    if let Some(h) = inline_holding {
        dropped += h.close_all().await;
    }
    for mut w in workers {
        let _ = w.stdin.write_all(b"stop\n").await;
        let _ = w.stdin.flush().await;
        if let Ok(done) = w.next_event("done").await {
            dropped += done["dropped_while_idle"].as_u64().unwrap_or(0);
            worker_cpu.push(done["cpu"]["self"].clone());
        }
        let _ = w.child.wait().await;
    }
    let cpu_after = server.pid.and_then(measure::process_cpu);

    let n = opened.max(1) as f64;
    let rss_delta = match (rss_before, rss_after) {
        (Some(b), Some(a)) => Some(a as i64 - b as i64),
        _ => None,
    };
    let per_conn = rss_delta.map(|d| (d as f64 / n).round());
    let kernel = match (sock_before, sock_after, slab_before, slab_after) {
        (Some((sb, mb)), Some((sa, ma)), Some(lb), Some(la)) => {
            let slab_delta = la as i64 - lb as i64;
            let sockets = sa as i64 - sb as i64;
            json!({
                "tcp_sockets_delta": sockets,
                "tcp_buffer_pages_delta": ma as i64 - mb as i64,
                "slab_bytes_delta": slab_delta,
                // Both ends are on this host: the delta covers 2 sockets per session.
                "slab_bytes_per_socket_estimate": if sockets > 0 { (slab_delta as f64 / sockets as f64).round() } else { 0.0 },
            })
        }
        _ => Value::Null,
    };
    let report = json!({
        "scenario": "connect",
        "command": measure::command_line(),
        "server": {"url": server.ws_url, "pid": server.pid, "config": server.config},
        "sessions_requested": a.sessions,
        "sessions_opened": opened,
        "sessions_failed": failed,
        "first_errors": errors,
        "rooms": a.rooms,
        "procs": procs,
        "concurrency": a.concurrency,
        "connect": {
            "elapsed_s": measure::round3(connect_elapsed),
            "sessions_per_s": (opened as f64 / connect_elapsed.max(1e-9)).round(),
            "open_latency_ms": summary_ms(&latency),
        },
        "idle": {
            "settle_s": a.settle.as_secs_f64(),
            "dropped_while_idle": dropped,
            "server_rss_before_bytes": rss_before,
            "server_rss_after_bytes": rss_after,
            "server_rss_bytes_per_connection": per_conn,
            "server_rss_for_1m_connections_gib": per_conn.map(|b| measure::round3(b * 1e6 / (1u64 << 30) as f64)),
            "kernel": kernel,
        },
        "server_cpu": measure::cpu_delta(cpu_before, cpu_after),
        "bench_cpu": measure::own_cpu(),
        "worker_cpu": worker_cpu,
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    if opened == 0 {
        return Err("no session could be opened".into());
    }
    Ok(())
}
