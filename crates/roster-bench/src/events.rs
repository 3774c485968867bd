//! `events`: the presence event stream (SPEC §7, docs/EVENTS.md) under a join/leave
//! workload: what a webhook receiver gets, how late, whether every `seq` arrives,
//! and what the stream costs the joins.
//!
//! Each *variant* runs the same workload against its own server (a fresh one per
//! variant with `--server-bin`, always with `ROSTER_WEBHOOKS_ALLOW_PRIVATE=true` so
//! a loopback endpoint is accepted):
//!
//! * `none`: no webhook (the tenant's transitions are not made into events at all);
//! * `fast`: one webhook to the bench's own HTTP receiver, which answers `200` to
//!   every POST at once;
//! * `hung`: one webhook to a listener that accepts the connection and never reads
//!   or answers (the server's POST waits for its 10 s timeout, then retries);
//! * `hung+fast`: both (does the hung endpoint hold the fast one back?).
//!
//! The webhook is created (`POST /api/v1/webhooks`, admin token) before the
//! sessions open, so on a started server the tenant's sequence starts at 1 with the
//! first session's `user_online`. The workload is `churn`'s: N sessions open
//! (`HELLO`), then join k (k < `--joins`) is due at start + k/J: session k mod N
//! sends `SUB` to a pseudo-random room of R and, `--hold` later, `UNSUB`. Join
//! latency is `PRESENCE` receive time − the SUB's *intended* send time (open loop),
//! leave latency `UNSUB_ACK` − the UNSUB's intended time; operations due in the
//! `--warmup` are sent but not timed. After the last reply (and `--drain`) one more
//! session joins a marker room; its `member_added` is the last event the workload
//! causes, and the bench waits (≤ `--stream-wait`) for it at the fast receiver.
//! Endpoints get a tenant's events in sequence order, so once the marker is in,
//! every seq before it must be too.
//!
//! The receiver runs on its own thread and runtime (axum, HTTP/1.1, 127.0.0.1:0).
//! For every event it records the arrival time (when the whole POST was read) −
//! the event's `at` (the server's wall clock when the transition happened, ISO-8601
//! with milliseconds, so the lag reads 0–1 ms high), and the `seq`: gaps (a seq
//! between the first and the marker that never came), duplicates (a seq again with
//! the same id: a redelivery, allowed), conflicts (a seq again with another id),
//! and first arrivals below a seq already seen (out of order). The signature is not
//! checked. The rate is over the workload's events (`at` from the first operation
//! to half the drain after the last): received/s = events ÷ (last arrival − first
//! arrival), generated/s = events ÷ (last `at` − first `at`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Router;
use clap::{Args, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::churn::{self, Timetable};
use crate::measure::{self, micros_histogram, round3, summary_ms};
use crate::server::Server;
use crate::token::TokenMinter;
use crate::wire;
use crate::{http, parse_duration, Target};

/// The setting a started server needs to accept a loopback webhook URL.
const ALLOW_PRIVATE: &str = "ROSTER_WEBHOOKS_ALLOW_PRIVATE";

#[derive(Args, Debug)]
pub struct EventsArgs {
    #[command(flatten)]
    pub target: Target,
    /// Variants to run, in this order, each on a fresh server with --server-bin:
    /// none (no webhook), fast (a webhook to the bench's receiver), hung (a webhook
    /// to a listener that never answers), hung+fast (both).
    #[arg(long, value_delimiter = ',', default_value = "none,fast,hung")]
    pub variants: Vec<Variant>,
    /// Sessions (HELLO, in no room until their turn; one user each).
    #[arg(long, default_value_t = 200)]
    pub sessions: usize,
    /// Rooms joined at random (ad hoc, GENERIC: capacity 100).
    #[arg(long, default_value_t = 100)]
    pub rooms: usize,
    /// Joins in the whole run; each is followed by its leave (2 to 4 events each:
    /// member_added/removed, and room_occupied/vacated when the room was empty).
    #[arg(long, default_value_t = 5000)]
    pub joins: u64,
    /// Joins per second, all sessions together (open loop).
    #[arg(long, default_value_t = 500.0)]
    pub joins_per_sec: f64,
    /// Time in the room between a session's SUB and its UNSUB.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub hold: Duration,
    /// Operations due in this first part of the run are sent but not timed.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Time after the last operation for replies still in flight.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub drain: Duration,
    /// How long to wait for the marker event at the fast receiver.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub stream_wait: Duration,
    /// Room keys are this prefix, the variant, `:` and 0..rooms (the marker: `end`).
    #[arg(long, default_value = "bench:events:")]
    pub room_prefix: String,
    /// Seed of the room choice.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// HELLOs in flight while the sessions open.
    #[arg(long, default_value_t = 100)]
    pub concurrency: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Variant {
    None,
    Fast,
    Hung,
    #[value(name = "hung+fast")]
    HungFast,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::None => "none",
            Variant::Fast => "fast",
            Variant::Hung => "hung",
            Variant::HungFast => "hung+fast",
        }
    }
    /// For user ids, client ids and room keys.
    fn tag(self) -> &'static str {
        match self {
            Variant::HungFast => "hungfast",
            v => v.name(),
        }
    }
    fn fast(self) -> bool {
        matches!(self, Variant::Fast | Variant::HungFast)
    }
    fn hung(self) -> bool {
        matches!(self, Variant::Hung | Variant::HungFast)
    }
}

pub async fn run(a: EventsArgs) -> Result<(), String> {
    validate(&a)?;
    let mut variants = Vec::new();
    let mut summary = Vec::new();
    let mut problems = Vec::new();
    for &v in &a.variants {
        let (report, trouble) = run_variant(&a, v).await?;
        summary.push(summary_row(v, &report));
        problems.extend(trouble.into_iter().map(|p| format!("{}: {p}", v.name())));
        variants.push(report);
    }
    let report = json!({
        "scenario": "events",
        "command": measure::command_line(),
        "sessions": a.sessions,
        "rooms": a.rooms,
        "joins": a.joins,
        "joins_per_sec": a.joins_per_sec,
        "hold_ms": a.hold.as_millis() as u64,
        "warmup_s": a.warmup.as_secs_f64(),
        "seed": a.seed,
        "summary": summary,
        "variants": variants,
        "bench_cpu": measure::own_cpu(),
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

fn validate(a: &EventsArgs) -> Result<(), String> {
    if a.sessions == 0 || a.rooms == 0 || a.joins == 0 {
        return Err("--sessions, --rooms and --joins must be at least 1".into());
    }
    if a.variants.is_empty() {
        return Err("--variants names none".into());
    }
    if !(a.joins_per_sec > 0.0 && a.joins_per_sec.is_finite()) {
        return Err("--joins-per-sec must be above 0".into());
    }
    let period = a.sessions as f64 / a.joins_per_sec;
    if a.hold.as_secs_f64() >= period {
        return Err(format!(
            "--hold {:?} must be shorter than a session's turn, sessions/joins-per-sec = \
             {period:.3} s (its UNSUB must come before its next SUB)",
            a.hold
        ));
    }
    if 2.0 / period > 40.0 {
        return Err(format!(
            "each session would send {:.1} msg/s, over the server's 50 msg/s per-connection \
             limit with margin: use more --sessions",
            2.0 / period
        ));
    }
    if period > 20.0 {
        return Err(format!(
            "a session would stay silent for {period:.1} s between turns, near the server's \
             45 s session_timeout: use fewer --sessions or more --joins-per-sec"
        ));
    }
    Ok(())
}

/// The row of `summary` for one variant.
fn summary_row(v: Variant, r: &Value) -> Value {
    let join = &r["workload"]["join_latency_ms"];
    let s = &r["stream"];
    json!({
        "variant": v.name(),
        "join_p50_ms": join["p50"],
        "join_p99_ms": join["p99"],
        "join_p999_ms": join["p999"],
        "join_max_ms": join["max"],
        "leave_p99_ms": r["workload"]["leave_latency_ms"]["p99"],
        "events_received": s["events_received"],
        "marker_received": r["marker"]["received"],
        "received_per_s": s["workload"]["received_per_s"],
        "generated_per_s": s["workload"]["generated_per_s"],
        "last_arrival_after_last_op_ms": s["workload"]["last_arrival_after_last_op_ms"],
        "lag_p50_ms": s["lag_ms"]["p50"],
        "lag_p99_ms": s["lag_ms"]["p99"],
        "stream_complete": s["complete"],
        "member_added_received": s["member_added"]["received"],
        "seq_missing": s["seq"]["missing"],
        "seq_duplicates": s["seq"]["duplicates"],
        "server_cpu_cores": r["server_cpu_in_workload"]["cores"],
    })
}

/// One variant: its server, receivers and webhooks, the workload, the marker, and
/// the report; plus what went wrong (the run fails after printing the report).
async fn run_variant(a: &EventsArgs, v: Variant) -> Result<(Value, Vec<String>), String> {
    let mut target = a.target.clone();
    let started = target.url.is_none();
    if started {
        target
            .server_env
            .push((ALLOW_PRIVATE.into(), "true".into()));
    }
    let server = Server::attach_or_start(&target)?;
    let loadavg = measure::loadavg();
    let marker_room = format!("{}{}:end", a.room_prefix, v.tag());
    let receivers = Receivers::start(v.fast(), v.hung(), marker_room.clone())?;
    let minter = TokenMinter::new(&a.target.token_secret, &a.target.tenant);
    let admin = minter.mint("bench-admin", &["admin"])?;

    // The webhooks, before any session: the tenant's first event is the first HELLO's.
    let mut webhooks = Vec::new();
    for (which, addr) in [("hung", receivers.hung_addr), ("fast", receivers.fast_addr)] {
        let Some(addr) = addr else { continue };
        let url = format!("http://{addr}/roster-events/{}", v.tag());
        let body = json!({"url": url}).to_string();
        let (status, answer) =
            http::request_json(&server.http_base, "POST", "/api/v1/webhooks", &admin, &body)
                .await?;
        if status != 201 {
            return Err(format!(
                "POST /api/v1/webhooks answered {status}: {answer}{}",
                if status == 422 && !started {
                    " (the server needs webhooks.allow_private for a loopback receiver)"
                } else {
                    ""
                }
            ));
        }
        let id = serde_json::from_str::<Value>(&answer)
            .ok()
            .and_then(|v| v["id"].as_str().map(str::to_owned))
            .ok_or_else(|| format!("POST /api/v1/webhooks answered no id: {answer}"))?;
        webhooks.push((which, url, id));
    }

    // Open phase.
    let tag = v.tag();
    let (opened, hello_latency, open_s) =
        churn::open_sessions(&server.ws_url, &minter, a.sessions, a.concurrency, |i| {
            (format!("bench-ev-{tag}-{i}"), format!("events-{tag}-{i}"))
        })
        .await?;

    // Workload: churn's timetable, dispatcher and readers.
    let last_due = Duration::from_secs_f64((a.joins - 1) as f64 / a.joins_per_sec) + a.hold;
    let lead = Duration::from_millis(500);
    let tt = Timetable {
        base: Instant::now() + lead,
        joins_per_sec: a.joins_per_sec,
        hold: a.hold,
        from: a.warmup,
        to: last_due + Duration::from_secs(1),
        total: a.joins,
        sessions: a.sessions as u64,
        rooms: a.rooms as u64,
        seed: a.seed,
    };
    let base_unix_us = measure::unix_nanos() / 1000 + lead.as_micros() as u64;
    let shared = Arc::new(churn::Shared::new(tt));
    let (stop, stop_rx) = watch::channel(false);
    let mut readers = JoinSet::new();
    let mut sinks = Vec::with_capacity(a.sessions);
    for ws in opened.into_iter().flatten() {
        let (sink, stream) = ws.split();
        sinks.push(Some(sink));
        readers.spawn(churn::read_session(stream, shared.clone(), stop_rx.clone()));
    }
    let rooms: Vec<String> = (0..a.rooms)
        .map(|r| format!("{}{tag}:{r}", a.room_prefix))
        .collect();
    let cpu_from = (
        server.pid.and_then(measure::process_cpu),
        measure::self_cpu(),
    );
    let began = Instant::now();
    let (tx, rx) = mpsc::unbounded_channel();
    let dispatcher = tokio::spawn(churn::dispatch(sinks, rx, tt, rooms));
    let timetable = std::thread::Builder::new()
        .name("events-timetable".into())
        .spawn(move || churn::keep_timetable(tt, tx))
        .map_err(|e| format!("cannot start the timetable thread: {e}"))?;
    let (sent, mut sinks) = dispatcher
        .await
        .map_err(|e| format!("dispatcher failed: {e}"))?;
    let _ = timetable.join();
    tokio::time::sleep(a.drain).await;
    let workload_s = began.elapsed().as_secs_f64();
    let cpu_to = (
        server.pid.and_then(measure::process_cpu),
        measure::self_cpu(),
    );
    stop.send_replace(true);
    while readers.join_next().await.is_some() {}

    // The marker: one more session joins one more room.
    let marker_token = minter.mint(&format!("bench-ev-{tag}-marker"), &[])?;
    let marker_sent = Instant::now();
    let marker = wire::open_session(
        &server.ws_url,
        &marker_token,
        &format!("events-{tag}-marker"),
        &marker_room,
        Duration::from_secs(30),
    )
    .await
    .map_err(|e| format!("marker session: {e}"))?;
    let mut marker_report = json!({"room": marker_room, "awaited": v.fast()});
    if v.fast() {
        let deadline = marker_sent + a.stream_wait;
        loop {
            if receivers.marker_seq().is_some() || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        marker_report["received"] = json!(receivers.marker_seq().is_some());
        marker_report["seq"] = json!(receivers.marker_seq());
        marker_report["waited_ms"] = json!(round3(marker_sent.elapsed().as_secs_f64() * 1e3));
    }

    // What the server says it did.
    let mut hooks = Vec::new();
    for (which, url, id) in &webhooks {
        let path = format!("/api/v1/webhooks/{id}");
        let view = match http::request_json(&server.http_base, "GET", &path, &admin, "").await {
            Ok((200, body)) => serde_json::from_str::<Value>(&body).unwrap_or(json!(body)),
            Ok((status, body)) => json!({"status": status, "body": body}),
            Err(e) => json!({"error": e}),
        };
        hooks.push(json!({"receiver": which, "url": url, "id": id, "after_run": view}));
    }
    let webhook_metrics = match http::get(&server.http_base, "/metrics").await {
        Ok((200, body)) => json!(body
            .lines()
            .filter(|l| l.starts_with("roster_webhook") || l.starts_with("roster_event"))
            .collect::<Vec<_>>()),
        Ok((status, _)) => json!(format!("GET /metrics answered {status}")),
        Err(e) => json!(e),
    };
    let server_rss = server.pid.and_then(measure::rss_bytes);

    // Close politely; an external server keeps no webhook of the bench's.
    let closing = sinks.iter_mut().flatten().map(|s| s.close());
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        futures_util::future::join_all(closing),
    )
    .await;
    let mut marker_ws = marker.ws;
    let _ = tokio::time::timeout(Duration::from_secs(2), marker_ws.close(None)).await;
    if !started {
        for (_, _, id) in &webhooks {
            let path = format!("/api/v1/webhooks/{id}");
            let _ = http::request_json(&server.http_base, "DELETE", &path, &admin, "").await;
        }
    }
    let server_config = server.config.clone();
    let server_url = server.ws_url.clone();
    let server_pid = server.pid;
    drop(server);
    let got = receivers.stop();

    // ---------------------------------------------------------------- report
    let (join_latency, leave_latency) = {
        let l = shared.latency.lock().unwrap_or_else(|e| e.into_inner());
        (l.join.clone(), l.leave.clone())
    };
    let errors = std::mem::take(&mut *shared.errors.lock().unwrap_or_else(|e| e.into_inner()));
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let replies_missing = (sent.subs + sent.unsubs)
        .saturating_sub(load(&shared.presence_replies) + load(&shared.sub_errors))
        .saturating_sub(load(&shared.unsub_acks) + load(&shared.unsub_errors));
    // The workload's events happened by the last operation's reply: half the drain
    // after it is late enough, and well before the marker (a whole drain after it).
    let last_op_unix_us = base_unix_us + last_due.as_micros() as u64;
    let window_end_unix_us = last_op_unix_us + a.drain.as_micros() as u64 / 2;
    let window = (base_unix_us, window_end_unix_us, last_op_unix_us);
    let stream = got
        .fast
        .as_ref()
        .map(|log| log.report(started, window, a.joins))
        .unwrap_or(Value::Null);
    let mut trouble = Vec::new();
    let errs = errors.by_code.values().sum::<u64>() as usize + sent.errors.len();
    if errs > 0 || replies_missing > 0 || load(&shared.disconnected) > 0 {
        trouble.push(format!(
            "{errs} error(s), {replies_missing} reply(ies) missing, {} session(s) disconnected",
            load(&shared.disconnected)
        ));
    }
    if v.fast() {
        if marker_report["received"] != json!(true) {
            trouble.push(format!(
                "the marker event did not reach the fast receiver within {:?}",
                a.stream_wait
            ));
        }
        let seq = &stream["seq"];
        for (k, what) in [
            ("missing", "seq(s) missing"),
            ("conflicts", "seq(s) with two ids"),
            ("out_of_order", "event(s) out of order"),
        ] {
            if seq[k].as_u64().unwrap_or(0) > 0 {
                trouble.push(format!("{} {what}", seq[k]));
            }
        }
        if stream["parse_errors"].as_u64().unwrap_or(0) > 0 {
            trouble.push(format!(
                "{} POST body(ies) unreadable",
                stream["parse_errors"]
            ));
        }
    }
    let secs = (workload_s).max(1e-9);
    let cpu_share = |b: Option<(f64, f64)>, e: Option<(f64, f64)>| {
        let mut c = measure::cpu_delta(b, e);
        if let (Some(b), Some(e)) = (b, e) {
            c["cores"] = json!(round3(((e.0 - b.0) + (e.1 - b.1)) / secs));
        }
        c
    };
    let report = json!({
        "variant": v.name(),
        "server": {"url": server_url, "pid": server_pid, "config": server_config},
        "loadavg_at_start": loadavg,
        "webhooks": hooks,
        "open_phase": {
            "elapsed_s": round3(open_s),
            "hello_latency_ms": summary_ms(&hello_latency),
        },
        "workload": {
            "elapsed_s": round3(workload_s),
            "joins_sent": sent.subs,
            "leaves_sent": sent.unsubs,
            "joins_sent_in_window": sent.subs_in_window,
            "leaves_sent_in_window": sent.unsubs_in_window,
            "join_latency_ms": summary_ms(&join_latency),
            "leave_latency_ms": summary_ms(&leave_latency),
            "send_lateness_in_window_ms": summary_ms(&sent.lateness),
            "presence_replies": load(&shared.presence_replies),
            "unsub_acks": load(&shared.unsub_acks),
            "replies_missing": replies_missing,
            "errors_by_code": errors.by_code,
            "first_errors": errors.first,
            "send_errors": sent.errors,
            "sessions_disconnected": load(&shared.disconnected),
        },
        "marker": marker_report,
        "stream": stream,
        "hung_receiver": got.hung_accepted.map(|n| json!({"connections_accepted": n})),
        "receiver_thread_cpu": got.thread_cpu,
        "server_webhook_metrics": webhook_metrics,
        "server_cpu_in_workload": cpu_share(cpu_from.0, cpu_to.0),
        "bench_cpu_in_workload": cpu_share(cpu_from.1, cpu_to.1),
        "server_rss_bytes": server_rss,
    });
    Ok((report, trouble))
}

// ------------------------------------------------------------------ receivers

/// The receivers of one variant, on their own thread and runtime: the fast one
/// (axum, answers 200 to every POST) and the hung one (accepts, never reads).
struct Receivers {
    fast_addr: Option<std::net::SocketAddr>,
    hung_addr: Option<std::net::SocketAddr>,
    fast: Option<Arc<Mutex<EventLog>>>,
    hung_accepted: Option<Arc<AtomicU64>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Option<(f64, f64)>>>,
}

/// What the receivers got, once stopped.
struct Received {
    fast: Option<EventLog>,
    hung_accepted: Option<u64>,
    /// CPU (user, system) of the receivers' thread.
    thread_cpu: Value,
}

impl Receivers {
    fn start(fast: bool, hung: bool, marker_room: String) -> Result<Receivers, String> {
        let bind = || {
            let l = std::net::TcpListener::bind("127.0.0.1:0")
                .map_err(|e| format!("cannot bind a receiver on 127.0.0.1:0: {e}"))?;
            l.set_nonblocking(true).map_err(|e| e.to_string())?;
            Ok::<_, String>(l)
        };
        let fast_listener = fast.then(bind).transpose()?;
        let hung_listener = hung.then(bind).transpose()?;
        let addr = |l: &Option<std::net::TcpListener>| l.as_ref().and_then(|l| l.local_addr().ok());
        let (fast_addr, hung_addr) = (addr(&fast_listener), addr(&hung_listener));
        let log = fast.then(|| Arc::new(Mutex::new(EventLog::new(marker_room))));
        let accepted = hung.then(|| Arc::new(AtomicU64::new(0)));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (log2, accepted2) = (log.clone(), accepted.clone());
        let thread = std::thread::Builder::new()
            .name("events-receiver".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                rt.block_on(async move {
                    let mut tasks = JoinSet::new();
                    if let (Some(l), Some(log)) = (fast_listener, log2) {
                        if let Ok(l) = tokio::net::TcpListener::from_std(l) {
                            let app = Router::new().fallback(take_batch).with_state(log);
                            tasks.spawn(async move {
                                let _ = axum::serve(l, app).await;
                            });
                        }
                    }
                    if let (Some(l), Some(n)) = (hung_listener, accepted2) {
                        if let Ok(l) = tokio::net::TcpListener::from_std(l) {
                            tasks.spawn(hold_forever(l, n));
                        }
                    }
                    let _ = stop_rx.await;
                    tasks.abort_all();
                });
                drop(rt);
                measure::thread_cpu()
            })
            .map_err(|e| format!("cannot start the receiver thread: {e}"))?;
        Ok(Receivers {
            fast_addr,
            hung_addr,
            fast: log,
            hung_accepted: accepted,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    fn marker_seq(&self) -> Option<u64> {
        self.fast
            .as_ref()
            .and_then(|l| l.lock().unwrap_or_else(|e| e.into_inner()).marker_seq)
    }

    fn stop(mut self) -> Received {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let cpu = self
            .thread
            .take()
            .and_then(|t| t.join().ok())
            .flatten()
            .map(|(u, s)| json!({"user_s": round3(u), "sys_s": round3(s)}))
            .unwrap_or(Value::Null);
        Received {
            fast: self.fast.take().map(|l| {
                std::mem::replace(
                    &mut *l.lock().unwrap_or_else(|e| e.into_inner()),
                    EventLog::new(String::new()),
                )
            }),
            hung_accepted: self.hung_accepted.take().map(|n| n.load(Ordering::Relaxed)),
            thread_cpu: cpu,
        }
    }
}

/// The fast receiver's handler: every POST, whatever its path, is a batch.
async fn take_batch(State(log): State<Arc<Mutex<EventLog>>>, body: Bytes) -> StatusCode {
    let arrived_us = measure::unix_nanos() / 1000;
    log.lock()
        .unwrap_or_else(|e| e.into_inner())
        .take(&body, arrived_us);
    StatusCode::OK
}

/// The hung receiver: accepts every connection and keeps it, unread, unanswered.
async fn hold_forever(listener: tokio::net::TcpListener, accepted: Arc<AtomicU64>) {
    let mut held = Vec::new();
    loop {
        if let Ok((socket, _)) = listener.accept().await {
            accepted.fetch_add(1, Ordering::Relaxed);
            held.push(socket);
        }
    }
}

#[derive(Deserialize)]
struct BatchView<'a> {
    #[serde(borrow)]
    events: Vec<EventView<'a>>,
}

#[derive(Deserialize)]
struct EventView<'a> {
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
    seq: u64,
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    at: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    room: Option<std::borrow::Cow<'a, str>>,
}

/// Every event the fast receiver got.
struct EventLog {
    marker_room: String,
    posts: u64,
    events: u64,
    largest_batch: usize,
    parse_errors: u64,
    first_parse_error: Option<String>,
    /// seq → id of its first arrival.
    seen: HashMap<u64, String>,
    duplicates: u64,
    conflicts: u64,
    out_of_order: u64,
    max_seq: u64,
    /// First arrivals: (seq, at in unix µs, arrival in unix µs).
    arrivals: Vec<(u64, u64, u64)>,
    lag: Histogram<u64>,
    bad_at: u64,
    by_type: BTreeMap<String, u64>,
    marker_seq: Option<u64>,
}

impl EventLog {
    fn new(marker_room: String) -> Self {
        EventLog {
            marker_room,
            posts: 0,
            events: 0,
            largest_batch: 0,
            parse_errors: 0,
            first_parse_error: None,
            seen: HashMap::new(),
            duplicates: 0,
            conflicts: 0,
            out_of_order: 0,
            max_seq: 0,
            arrivals: Vec::new(),
            lag: micros_histogram(),
            bad_at: 0,
            by_type: BTreeMap::new(),
            marker_seq: None,
        }
    }

    fn take(&mut self, body: &[u8], arrived_us: u64) {
        self.posts += 1;
        let batch: BatchView = match serde_json::from_slice(body) {
            Ok(b) => b,
            Err(e) => {
                self.parse_errors += 1;
                if self.first_parse_error.is_none() {
                    let start = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
                    self.first_parse_error = Some(format!("{e}: {start}"));
                }
                return;
            }
        };
        self.largest_batch = self.largest_batch.max(batch.events.len());
        for e in batch.events {
            self.events += 1;
            match self.seen.get(&e.seq) {
                Some(id) if *id == e.id => {
                    self.duplicates += 1;
                    continue;
                }
                Some(_) => {
                    self.conflicts += 1;
                    continue;
                }
                None => {}
            }
            self.seen.insert(e.seq, e.id.into_owned());
            if e.seq < self.max_seq {
                self.out_of_order += 1;
            }
            self.max_seq = self.max_seq.max(e.seq);
            *self.by_type.entry(e.kind.to_string()).or_insert(0) += 1;
            match parse_iso_ms(&e.at) {
                Some(at_ms) => {
                    let at_us = at_ms * 1000;
                    measure::record(&mut self.lag, arrived_us.saturating_sub(at_us));
                    self.arrivals.push((e.seq, at_us, arrived_us));
                }
                None => self.bad_at += 1,
            }
            if e.kind == "member_added"
                && e.room.as_deref() == Some(self.marker_room.as_str())
                && self.marker_seq.is_none()
            {
                self.marker_seq = Some(e.seq);
            }
        }
    }

    /// The receiver's figures. `from_one`: the server was started for this run, so
    /// its tenant's sequence starts at 1. `window`: the workload's first operation,
    /// the end of its events (half the drain after its last operation) and its last
    /// operation's due time (unix µs).
    fn report(&self, from_one: bool, window: (u64, u64, u64), joins: u64) -> Value {
        let first = if from_one {
            1
        } else {
            self.seen.keys().copied().min().unwrap_or(1)
        };
        let last = self.marker_seq.unwrap_or(self.max_seq);
        let (missing, missing_ranges) = missing_seqs(&self.seen, first, last);
        // The workload's events: `at` within it (`at` is whole ms: 1 ms of slack).
        let mut in_window: Vec<&(u64, u64, u64)> = self
            .arrivals
            .iter()
            .filter(|(_, at, _)| *at + 1000 >= window.0 && *at <= window.1)
            .collect();
        in_window.sort_unstable_by_key(|(seq, _, _)| *seq);
        let n = in_window.len() as u64;
        let span = |f: fn(&(u64, u64, u64)) -> u64| {
            let lo = in_window.iter().map(|x| f(x)).min().unwrap_or(0);
            let hi = in_window.iter().map(|x| f(x)).max().unwrap_or(0);
            (hi.saturating_sub(lo)) as f64 / 1e6
        };
        let (at_span, arrival_span) = (span(|x| x.1), span(|x| x.2));
        let per_s = |secs: f64| {
            if secs > 0.0 {
                (n as f64 / secs).round()
            } else {
                0.0
            }
        };
        let last_arrival = in_window.iter().map(|x| x.2).max().unwrap_or(0);
        json!({
            "posts": self.posts,
            "events_received": self.events,
            "events_per_post_mean": if self.posts > 0 { round3(self.events as f64 / self.posts as f64) } else { 0.0 },
            "largest_post": self.largest_batch,
            "parse_errors": self.parse_errors,
            "first_parse_error": self.first_parse_error,
            "by_type": self.by_type,
            "lag_ms": summary_ms(&self.lag),
            "unreadable_at": self.bad_at,
            // Complete: the marker came, and every seq from the first to it.
            "complete": self.marker_seq.is_some() && missing == 0 && self.conflicts == 0,
            // The bench's joins and the marker's (exact on a server of its own).
            "member_added": {
                "received": self.by_type.get("member_added").copied().unwrap_or(0),
                "expected": joins + 1,
            },
            "seq": {
                "expected_from": first,
                // The marker's seq; null when it never came (then the gaps are
                // counted up to the highest seq received only).
                "expected_to": self.marker_seq,
                "distinct": self.seen.len(),
                "max": self.max_seq,
                "missing": missing,
                "missing_ranges": missing_ranges,
                "duplicates": self.duplicates,
                "conflicts": self.conflicts,
                "out_of_order": self.out_of_order,
            },
            "workload": {
                "events": n,
                "events_per_join": if joins > 0 { round3(n as f64 / joins as f64) } else { 0.0 },
                "generated_over_s": round3(at_span),
                "received_over_s": round3(arrival_span),
                "generated_per_s": per_s(at_span),
                "received_per_s": per_s(arrival_span),
                // When the stream caught up: the last workload event's arrival
                // after the last operation was due (about the lag when it keeps up).
                "last_arrival_after_last_op_ms": if last_arrival > 0 {
                    json!(round3((last_arrival as f64 - window.2 as f64) / 1e3))
                } else {
                    Value::Null
                },
            },
        })
    }
}

/// How many seqs in `first..=last` were never seen, and the first few missing
/// ranges as `[from, to]`.
fn missing_seqs(seen: &HashMap<u64, String>, first: u64, last: u64) -> (u64, Vec<[u64; 2]>) {
    let mut missing = 0;
    let mut ranges: Vec<[u64; 2]> = Vec::new();
    let mut open: Option<u64> = None;
    for s in first..=last {
        if seen.contains_key(&s) {
            if let Some(from) = open.take() {
                if ranges.len() < 10 {
                    ranges.push([from, s - 1]);
                }
            }
        } else {
            missing += 1;
            open.get_or_insert(s);
        }
    }
    if let Some(from) = open {
        if ranges.len() < 10 {
            ranges.push([from, last]);
        }
    }
    (missing, ranges)
}

/// Unix milliseconds of `YYYY-MM-DDTHH:MM:SS[.fff]Z` (the server's `at`).
fn parse_iso_ms(s: &str) -> Option<u64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-');
    let (y, mo, day): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let (hms, frac) = match time.split_once('.') {
        Some((hms, f)) => (hms, f),
        None => (time, ""),
    };
    let mut t = hms.split(':');
    let (h, mi, sec): (i64, i64, i64) = (
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
    );
    let ms: i64 = match frac.len() {
        0 => 0,
        n if n <= 9 && frac.bytes().all(|b| b.is_ascii_digit()) => {
            let digits: i64 = frac.parse().ok()?;
            match n {
                1 => digits * 100,
                2 => digits * 10,
                3 => digits,
                n => digits / 10i64.pow(n as u32 - 3),
            }
        }
        _ => return None,
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&day) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    // Days from 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let total = ((days * 24 + h) * 60 + mi) * 60 + sec;
    u64::try_from(total * 1000 + ms).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_times_parse_to_unix_millis() {
        assert_eq!(parse_iso_ms("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(
            parse_iso_ms("2026-11-18T11:06:40.123Z"),
            Some(1_795_000_000_123)
        );
        // 2000-03-01 (after a leap day of a year divisible by 400).
        assert_eq!(parse_iso_ms("2000-03-01T00:00:00Z"), Some(951_868_800_000));
        assert_eq!(
            parse_iso_ms("2024-02-29T23:59:59.5Z"),
            Some(1_709_251_199_500)
        );
        assert_eq!(parse_iso_ms("2026-11-26 14:03:05Z"), None);
        assert_eq!(parse_iso_ms("2026-11-26T14:03:05.123"), None);
    }

    #[test]
    fn the_log_counts_gaps_duplicates_and_order() {
        let mut log = EventLog::new("r:end".into());
        let ev = |seq: u64, id: &str, kind: &str, room: &str| {
            json!({"id": id, "seq": seq, "tenantId": "t", "type": kind,
                   "at": "2026-11-26T14:03:05.123Z", "room": room})
        };
        let post = |events: Vec<Value>| json!({"webhookId": "wh_1", "events": events}).to_string();
        let t0 = parse_iso_ms("2026-11-26T14:03:05.123Z").unwrap() * 1000;
        log.take(
            post(vec![
                ev(1, "a", "user_online", ""),
                ev(2, "b", "member_added", "r:1"),
            ])
            .as_bytes(),
            t0 + 2_000,
        );
        // seq 3 lost, 2 again (a redelivery), 5 before 4, 4 with a second id later.
        log.take(
            post(vec![
                ev(2, "b", "member_added", "r:1"),
                ev(5, "e", "member_added", "r:end"),
            ])
            .as_bytes(),
            t0 + 4_000,
        );
        log.take(
            post(vec![
                ev(4, "d", "room_vacated", "r:1"),
                ev(4, "x", "room_vacated", "r:1"),
            ])
            .as_bytes(),
            t0 + 5_000,
        );
        log.take(b"not json", t0);
        assert_eq!(log.marker_seq, Some(5));
        let r = log.report(true, (t0, t0 + 10_000, t0 + 1_000), 2);
        assert_eq!(r["events_received"], 6);
        assert_eq!(r["posts"], 4);
        assert_eq!(r["parse_errors"], 1);
        assert_eq!(r["seq"]["missing"], 1);
        assert_eq!(r["seq"]["expected_to"], 5);
        assert_eq!(r["complete"], false);
        assert_eq!(r["member_added"], json!({"received": 2, "expected": 3}));
        assert_eq!(r["seq"]["missing_ranges"], json!([[3, 3]]));
        assert_eq!(r["seq"]["duplicates"], 1);
        assert_eq!(r["seq"]["conflicts"], 1);
        assert_eq!(r["seq"]["out_of_order"], 1);
        assert_eq!(r["by_type"]["member_added"], 2);
        assert_eq!(r["lag_ms"]["count"], 4);
        assert!(
            (r["lag_ms"]["max"].as_f64().unwrap() - 5.0).abs() < 0.01,
            "{r}"
        );
        assert_eq!(r["workload"]["events"], 4);
        assert_eq!(r["workload"]["received_over_s"], 0.003);
        assert_eq!(r["workload"]["last_arrival_after_last_op_ms"], 4.0);
    }

    #[test]
    fn missing_ranges_are_listed() {
        let seen: HashMap<u64, String> = [1, 2, 5, 8].iter().map(|&s| (s, String::new())).collect();
        let (n, r) = missing_seqs(&seen, 1, 10);
        assert_eq!(n, 6);
        assert_eq!(r, vec![[3, 4], [6, 7], [9, 10]]);
        assert_eq!(missing_seqs(&seen, 1, 2), (0, vec![]));
    }
}
