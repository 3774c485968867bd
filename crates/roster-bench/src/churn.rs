//! `churn`: N sessions (HELLO, in no room) join and leave rooms on a fixed timetable
//! while the server journals every change to its database; measures presence latency
//! and the journal's throughput and backlog.
//!
//! Operation k is due at start + k/J (J = `--joins-per-sec`): session k mod N sends
//! `SUB` to a pseudo-random room of R (seeded, reproducible), and `--hold` later the
//! same session sends `UNSUB`: a join and a leave, i.e. two activity rows when the
//! server logs activity. One timetable thread sleeps to each due time (nanosleep, no
//! spinning, so the bench stays cheap at 1,000 sends/s) and hands the operation to one
//! dispatcher task that owns every socket's write half; each session's reader times
//! the reply, found by its `ref` (2k for the SUB, 2k+1 for the UNSUB), from the
//! operation's *intended* send time (open loop, no coordinated omission):
//! `SUB → PRESENCE` (join latency) and `UNSUB → UNSUB_ACK` (leave latency). Only
//! operations due in the measured window are recorded; the warm-up's are sent too.
//!
//! During the window `/metrics` is sampled every `--sample-interval`:
//! `roster_journal_rows_written_total` (rows/s = delta / window),
//! `roster_journal_queue_depth` (max and mean), `roster_journal_dropped_total` and
//! `roster_journal_write_errors_total`. After the run the bench waits (bounded) for the
//! journal to flush and reports the totals.
//!
//! Database: a started server gets `--database-url` as `ROSTER_DATABASE_URL` (default:
//! the server's own `sqlite://roster.db`, which lands in the bench's scratch directory).
//! For `postgres://…` the bench creates a fresh schema with `psql`, points the server
//! at it (`?options=-c%20search_path%3D<schema>`) and drops it afterwards
//! (`--keep-schema` keeps it for inspection).

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use crate::measure::{self, micros_histogram, round3, summary_ms};
use crate::server::Server;
use crate::token::TokenMinter;
use crate::wire::{open_hello, open_session, Ws};
use crate::{http, parse_duration, prom, Target};

const ROWS_WRITTEN: &str = "roster_journal_rows_written_total";
const QUEUE_DEPTH: &str = "roster_journal_queue_depth";
const DROPPED: &str = "roster_journal_dropped_total";
const WRITE_ERRORS: &str = "roster_journal_write_errors_total";

#[derive(Args, Debug)]
pub struct ChurnArgs {
    #[command(flatten)]
    pub target: Target,
    /// Database of a server started with --server-bin, passed as ROSTER_DATABASE_URL
    /// (sqlite://… or postgres://…). Default: the server's own (sqlite://roster.db,
    /// in the bench's scratch directory).
    #[arg(long)]
    pub database_url: Option<String>,
    /// With a postgres:// --database-url: run in a fresh schema created with `psql`
    /// (and dropped afterwards), unless the URL already sets search_path.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub fresh_schema: bool,
    /// Keep the fresh PostgreSQL schema after the run (to inspect what was written).
    #[arg(long)]
    pub keep_schema: bool,
    /// Sessions (HELLO, in no room until their turn).
    #[arg(long, default_value_t = 2000)]
    pub sessions: usize,
    /// Rooms joined at random (ad hoc, GENERIC: capacity 100).
    #[arg(long, default_value_t = 50)]
    pub rooms: usize,
    /// Joins per second, all sessions together; each join is followed by its leave.
    #[arg(long, default_value_t = 500.0)]
    pub joins_per_sec: f64,
    /// Time in the room between a session's SUB and its UNSUB (below sessions/J, the
    /// time between one session's turns).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub hold: Duration,
    /// Measured time.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Time before measuring (operations sent, not recorded).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Time after the last operation for replies still in flight.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub drain: Duration,
    /// Interval between two /metrics samples in the window.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    pub sample_interval: Duration,
    /// After the run, wait at most this long for the journal to flush (queue empty,
    /// rows written steady) before reading the totals.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub flush_wait: Duration,
    /// Room keys are this prefix plus 0..rooms.
    #[arg(long, default_value = "bench:churn:")]
    pub room_prefix: String,
    /// Seed of the room choice.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// HELLOs in flight while the sessions open.
    #[arg(long, default_value_t = 100)]
    pub concurrency: usize,
}

/// When operation k is due, relative to `base`.
#[derive(Clone, Copy)]
pub(crate) struct Timetable {
    pub(crate) base: Instant,
    pub(crate) joins_per_sec: f64,
    pub(crate) hold: Duration,
    /// The measured window, relative to `base`.
    pub(crate) from: Duration,
    pub(crate) to: Duration,
    /// Operations (SUB + UNSUB pairs) in the whole run.
    pub(crate) total: u64,
    pub(crate) sessions: u64,
    pub(crate) rooms: u64,
    pub(crate) seed: u64,
}

impl Timetable {
    pub(crate) fn sub_at(&self, k: u64) -> Duration {
        Duration::from_secs_f64(k as f64 / self.joins_per_sec)
    }
    pub(crate) fn unsub_at(&self, k: u64) -> Duration {
        self.sub_at(k) + self.hold
    }
    pub(crate) fn in_window(&self, at: Duration) -> bool {
        (self.from..self.to).contains(&at)
    }
    fn session_of(&self, k: u64) -> usize {
        (k % self.sessions) as usize
    }
    /// splitmix64 of (seed, k): reproducible, evenly spread.
    fn room_of(&self, k: u64) -> u64 {
        let mut z = self
            .seed
            .wrapping_mul(0xD6E8_FEB8_6659_FD93)
            .wrapping_add(k.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % self.rooms
    }
}

#[derive(Clone, Copy)]
pub(crate) struct Op {
    k: u64,
    unsub: bool,
}

/// SUB → PRESENCE and UNSUB → UNSUB_ACK, for operations due in the window.
pub(crate) struct Latencies {
    pub(crate) join: Histogram<u64>,
    pub(crate) leave: Histogram<u64>,
}

/// CPU (user, system) seconds at the window's start and end.
type CpuAtEnds = (Option<(f64, f64)>, Option<(f64, f64)>);

/// What the readers share.
pub(crate) struct Shared {
    pub(crate) tt: Timetable,
    pub(crate) latency: Mutex<Latencies>,
    pub(crate) presence_replies: AtomicU64,
    pub(crate) unsub_acks: AtomicU64,
    pub(crate) sub_errors: AtomicU64,
    pub(crate) unsub_errors: AtomicU64,
    pub(crate) frames_in_window: AtomicU64,
    pub(crate) diffs_in_window: AtomicU64,
    pub(crate) disconnected: AtomicU64,
    pub(crate) errors: Mutex<ErrorLog>,
}

impl Shared {
    pub(crate) fn new(tt: Timetable) -> Self {
        Shared {
            tt,
            latency: Mutex::new(Latencies {
                join: micros_histogram(),
                leave: micros_histogram(),
            }),
            presence_replies: AtomicU64::new(0),
            unsub_acks: AtomicU64::new(0),
            sub_errors: AtomicU64::new(0),
            unsub_errors: AtomicU64::new(0),
            frames_in_window: AtomicU64::new(0),
            diffs_in_window: AtomicU64::new(0),
            disconnected: AtomicU64::new(0),
            errors: Mutex::new(ErrorLog::default()),
        }
    }
}

#[derive(Default)]
pub(crate) struct ErrorLog {
    pub(crate) by_code: BTreeMap<String, u64>,
    pub(crate) first: Vec<String>,
}

impl ErrorLog {
    fn note(&mut self, code: &str, text: String) {
        *self.by_code.entry(code.to_owned()).or_insert(0) += 1;
        if self.first.len() < 20 {
            self.first.push(text);
        }
    }
}

/// The two fields a reader needs of every frame; the rest is skipped unparsed.
#[derive(Deserialize)]
struct ReplyView<'a> {
    #[serde(rename = "type", borrow)]
    ty: &'a str,
    #[serde(rename = "ref", default)]
    reply_ref: Option<u64>,
}

pub async fn run(a: ChurnArgs) -> Result<(), String> {
    validate(&a)?;
    let mut target = a.target.clone();
    // Declared before the server, so it is dropped after it: the schema goes only
    // once the server (and its connections) are gone.
    let mut schema: Option<PgSchema> = None;
    let mut database =
        json!({"url": "server default (sqlite://roster.db, in the bench's scratch directory)"});
    if let Some(url) = &a.database_url {
        if target.url.is_some() {
            return Err(
                "--database-url configures a server started with --server-bin; \
                 a running server (--url) keeps its own database"
                    .into(),
            );
        }
        let mut url = url.clone();
        let postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
        if postgres && a.fresh_schema && !url.contains("search_path") {
            let s = PgSchema::create(&url, a.keep_schema)?;
            url = s.url_with_search_path(&url);
            database["schema"] = json!(s.name);
            database["schema_kept"] = json!(a.keep_schema);
            schema = Some(s);
        }
        database["url"] = json!(redact(&url));
        target.server_env.push(("ROSTER_DATABASE_URL".into(), url));
    }
    let log_activity = target
        .server_env
        .iter()
        .rev()
        .find(|(k, _)| k == "ROSTER_DATABASE_LOG_ACTIVITY")
        .map(|(_, v)| v.clone());
    database["log_activity"] = json!(match (log_activity, &target.url) {
        (Some(v), _) => v,
        (None, Some(_)) => "unknown (external server)".into(),
        (None, None) => "default (true)".into(),
    });
    if target.url.is_some() && a.database_url.is_none() {
        database["url"] = json!("unknown (external server)");
    }
    let server = Server::attach_or_start(&target)?;
    let result = churn(&a, &server, database).await;
    drop(server);
    drop(schema);
    result
}

fn validate(a: &ChurnArgs) -> Result<(), String> {
    if a.sessions == 0 || a.rooms == 0 {
        return Err("--sessions and --rooms must be at least 1".into());
    }
    if !(a.joins_per_sec > 0.0 && a.joins_per_sec.is_finite()) {
        return Err("--joins-per-sec must be above 0".into());
    }
    if a.duration.is_zero() || a.sample_interval.is_zero() {
        return Err("--duration and --sample-interval must be above 0".into());
    }
    // One session's turns come every sessions/J seconds.
    let period = a.sessions as f64 / a.joins_per_sec;
    if a.hold.as_secs_f64() >= period {
        return Err(format!(
            "--hold {:?} must be shorter than a session's turn, sessions/joins-per-sec = {period:.3} s \
             (its UNSUB must come before its next SUB)",
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
    let per_room = a.joins_per_sec * a.hold.as_secs_f64() / a.rooms as f64;
    if per_room > 50.0 {
        eprintln!(
            "roster-bench: warning: ~{per_room:.0} members per room on average; ad-hoc rooms \
             (GENERIC) hold 100, so joins may be refused (room_full)"
        );
    }
    Ok(())
}

async fn churn(a: &ChurnArgs, server: &Server, database: Value) -> Result<(), String> {
    let minter = TokenMinter::new(&a.target.token_secret, &a.target.tenant);

    // Open phase: N sessions, HELLO only.
    let (opened, hello_latency, open_s) =
        open_sessions(&server.ws_url, &minter, a.sessions, a.concurrency, |i| {
            (format!("bench-ch{i}"), format!("churn-{i}"))
        })
        .await?;

    let run_for = a.warmup + a.duration;
    let tt = Timetable {
        base: Instant::now() + Duration::from_millis(500),
        joins_per_sec: a.joins_per_sec,
        hold: a.hold,
        from: a.warmup,
        to: run_for,
        total: (run_for.as_secs_f64() * a.joins_per_sec).floor() as u64,
        sessions: a.sessions as u64,
        rooms: a.rooms as u64,
        seed: a.seed,
    };
    let shared = Arc::new(Shared::new(tt));
    let (stop, stop_rx) = watch::channel(false);
    let mut readers = JoinSet::new();
    let mut sinks = Vec::with_capacity(a.sessions);
    for ws in opened.into_iter().flatten() {
        let (sink, stream) = ws.split();
        sinks.push(Some(sink));
        readers.spawn(read_session(stream, shared.clone(), stop_rx.clone()));
    }
    let rooms: Vec<String> = (0..a.rooms)
        .map(|r| format!("{}{r}", a.room_prefix))
        .collect();

    let sampler = tokio::spawn(sample_window(
        server.http_base.clone(),
        server.pid,
        tt,
        a.sample_interval,
    ));
    let (tx, rx) = mpsc::unbounded_channel();
    let dispatcher = tokio::spawn(dispatch(sinks, rx, tt, rooms));
    let timetable = std::thread::Builder::new()
        .name("churn-timetable".into())
        .spawn(move || keep_timetable(tt, tx))
        .map_err(|e| format!("cannot start the timetable thread: {e}"))?;

    let (sent, mut sinks) = dispatcher
        .await
        .map_err(|e| format!("dispatcher failed: {e}"))?;
    let _ = timetable.join();
    tokio::time::sleep(a.drain).await;
    stop.send_replace(true);
    while readers.join_next().await.is_some() {}
    let window = sampler
        .await
        .map_err(|e| format!("metrics sampler failed: {e}"))?;
    let (flushed, flush_s) = wait_for_flush(&server.http_base, a.flush_wait).await;
    // Close politely (an external server then ends the sessions at once).
    let closing = sinks.iter_mut().flatten().map(|s| s.close());
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        futures_util::future::join_all(closing),
    )
    .await;

    // ---------------------------------------------------------------- report
    let secs = a.duration.as_secs_f64();
    let (join_latency, leave_latency) = {
        let l = shared.latency.lock().unwrap_or_else(|e| e.into_inner());
        (l.join.clone(), l.leave.clone())
    };
    let errors = std::mem::take(&mut *shared.errors.lock().unwrap_or_else(|e| e.into_inner()));
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let replies_missing = (sent.subs + sent.unsubs)
        .saturating_sub(load(&shared.presence_replies) + load(&shared.sub_errors))
        .saturating_sub(load(&shared.unsub_acks) + load(&shared.unsub_errors));
    let ops_acked_in_window = join_latency.len() + leave_latency.len();
    let journal = journal_report(&window.samples, &flushed, flush_s, ops_acked_in_window);
    let mut server_config = server.config.clone();
    if let Some(url) = server_config.pointer_mut("/env/ROSTER_DATABASE_URL") {
        *url = json!(redact(url.as_str().unwrap_or("")));
    }
    let report = json!({
        "scenario": "churn",
        "command": measure::command_line(),
        "server": {"url": server.ws_url, "pid": server.pid, "config": server_config},
        "database": database,
        "sessions": a.sessions,
        "rooms": a.rooms,
        "joins_per_sec": a.joins_per_sec,
        "hold_ms": a.hold.as_millis() as u64,
        "members_in_rooms_mean_estimate": round3(a.joins_per_sec * a.hold.as_secs_f64()),
        "warmup_s": a.warmup.as_secs_f64(),
        "duration_s": secs,
        "seed": a.seed,
        "open_phase": {
            "elapsed_s": round3(open_s),
            "sessions_per_s": (a.sessions as f64 / open_s.max(1e-9)).round(),
            "hello_latency_ms": summary_ms(&hello_latency),
        },
        "joins_sent_in_window": sent.subs_in_window,
        "leaves_sent_in_window": sent.unsubs_in_window,
        "joins_acknowledged_per_s": (join_latency.len() as f64 / secs).round(),
        "leaves_acknowledged_per_s": (leave_latency.len() as f64 / secs).round(),
        "join_latency_ms": summary_ms(&join_latency),
        "leave_latency_ms": summary_ms(&leave_latency),
        "send_lateness_in_window_ms": summary_ms(&sent.lateness),
        "journal": journal,
        "errors_by_code": errors.by_code,
        "first_errors": errors.first,
        "send_errors": sent.errors,
        "replies_missing": replies_missing,
        "sessions_disconnected": load(&shared.disconnected),
        "frames_received_per_s": (load(&shared.frames_in_window) as f64 / secs).round(),
        "presence_diffs_received_per_s": (load(&shared.diffs_in_window) as f64 / secs).round(),
        "metrics_scrape_errors": window.scrape_errors,
        "server_cpu_in_window": cpu_share(window.server_cpu, window.elapsed_s),
        "server_rss_bytes": server.pid.and_then(measure::rss_bytes),
        "bench_cpu_in_window": cpu_share(window.bench_cpu, window.elapsed_s),
        "bench_cpu": measure::own_cpu(),
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    let problems = errors.first.len() + sent.errors.len();
    if problems > 0 || replies_missing > 0 || load(&shared.disconnected) > 0 {
        return Err(format!(
            "{} error(s), {} send error(s), {replies_missing} reply(ies) missing, {} session(s) disconnected",
            errors.by_code.values().sum::<u64>(),
            sent.errors.len(),
            load(&shared.disconnected)
        ));
    }
    Ok(())
}

/// Opens `n` sessions (HELLO only, in no room), `concurrency` at a time; session i
/// is user and clientId `names(i)`. Answers them in order, the HELLO → WELCOME
/// latencies and the seconds the whole phase took; the first failure ends it.
pub(crate) async fn open_sessions(
    url: &str,
    minter: &TokenMinter,
    n: usize,
    concurrency: usize,
    names: impl Fn(usize) -> (String, String),
) -> Result<(Vec<Option<Ws>>, Histogram<u64>, f64), String> {
    open_sessions_in(url, minter, n, concurrency, |i| {
        let (user, client_id) = names(i);
        (user, client_id, None)
    })
    .await
}

/// As [`open_sessions`], and a session whose `names(i)` gives a room also joins it
/// (`SUB`, waits for its `PRESENCE`; the latency is then HELLO → PRESENCE).
pub(crate) async fn open_sessions_in(
    url: &str,
    minter: &TokenMinter,
    n: usize,
    concurrency: usize,
    names: impl Fn(usize) -> (String, String, Option<String>),
) -> Result<(Vec<Option<Ws>>, Histogram<u64>, f64), String> {
    let open_began = Instant::now();
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut opens = JoinSet::new();
    for i in 0..n {
        let (user, client_id, room) = names(i);
        let token = minter.mint(&user, &[])?;
        let (url, permits) = (url.to_owned(), permits.clone());
        opens.spawn(async move {
            let _permit = permits.acquire_owned().await.map_err(|e| e.to_string())?;
            let t0 = Instant::now();
            let timeout = Duration::from_secs(30);
            let ws = match &room {
                Some(room) => open_session(&url, &token, &client_id, room, timeout)
                    .await
                    .map(|o| o.ws),
                None => open_hello(&url, &token, &client_id, timeout).await,
            }
            .map_err(|e| format!("session {i}: {e}"))?;
            Ok::<_, String>((i, ws, t0.elapsed()))
        });
    }
    let mut hello_latency = micros_histogram();
    let mut opened: Vec<Option<Ws>> = (0..n).map(|_| None).collect();
    while let Some(r) = opens.join_next().await {
        match r {
            Ok(Ok((i, ws, took))) => {
                measure::record(&mut hello_latency, took.as_micros() as u64);
                opened[i] = Some(ws);
            }
            Ok(Err(e)) => {
                opens.abort_all();
                return Err(format!("open phase failed: {e}"));
            }
            Err(e) => return Err(format!("open task failed: {e}")),
        }
    }
    Ok((opened, hello_latency, open_began.elapsed().as_secs_f64()))
}

/// The timetable thread: sleeps to each operation's due time (SUBs and UNSUBs merged
/// in time order) and hands it over; never skips one that is late.
pub(crate) fn keep_timetable(tt: Timetable, tx: mpsc::UnboundedSender<Op>) {
    let (mut next_sub, mut next_unsub) = (0u64, 0u64);
    while next_unsub < tt.total {
        // An UNSUB is never due before its own SUB (hold >= 0): on a tie the SUB goes first.
        let op = if next_sub < tt.total && tt.sub_at(next_sub) <= tt.unsub_at(next_unsub) {
            next_sub += 1;
            Op {
                k: next_sub - 1,
                unsub: false,
            }
        } else {
            next_unsub += 1;
            Op {
                k: next_unsub - 1,
                unsub: true,
            }
        };
        let at = if op.unsub {
            tt.unsub_at(op.k)
        } else {
            tt.sub_at(op.k)
        };
        let due = tt.base + at;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        if tx.send(op).is_err() {
            return;
        }
    }
}

pub(crate) struct Sent {
    pub(crate) subs: u64,
    pub(crate) unsubs: u64,
    pub(crate) subs_in_window: u64,
    pub(crate) unsubs_in_window: u64,
    pub(crate) lateness: Histogram<u64>,
    pub(crate) errors: Vec<String>,
}

/// Owns every session's write half; sends each operation as it comes due.
pub(crate) async fn dispatch(
    mut sinks: Vec<Option<SplitSink<Ws, Message>>>,
    mut rx: mpsc::UnboundedReceiver<Op>,
    tt: Timetable,
    rooms: Vec<String>,
) -> (Sent, Vec<Option<SplitSink<Ws, Message>>>) {
    let mut s = Sent {
        subs: 0,
        unsubs: 0,
        subs_in_window: 0,
        unsubs_in_window: 0,
        lateness: micros_histogram(),
        errors: Vec::new(),
    };
    while let Some(op) = rx.recv().await {
        let i = tt.session_of(op.k);
        let Some(sink) = sinks.get_mut(i).and_then(Option::as_mut) else {
            continue; // this session's socket failed already (reported once)
        };
        let room = &rooms[tt.room_of(op.k) as usize];
        let (at, msg) = if op.unsub {
            let m = json!({"type": "UNSUB", "ref": 2 * op.k + 1, "room": room});
            (tt.unsub_at(op.k), m)
        } else {
            let m = json!({"type": "SUB", "ref": 2 * op.k, "room": room});
            (tt.sub_at(op.k), m)
        };
        let late = Instant::now().saturating_duration_since(tt.base + at);
        if let Err(e) = sink.send(Message::text(msg.to_string())).await {
            let what = if op.unsub { "UNSUB" } else { "SUB" };
            if s.errors.len() < 20 {
                s.errors.push(format!("session {i} {what} {}: {e}", op.k));
            }
            sinks[i] = None;
            continue;
        }
        let in_window = tt.in_window(at);
        if in_window {
            measure::record(&mut s.lateness, late.as_micros() as u64);
        }
        match (op.unsub, in_window) {
            (false, w) => {
                s.subs += 1;
                s.subs_in_window += u64::from(w);
            }
            (true, w) => {
                s.unsubs += 1;
                s.unsubs_in_window += u64::from(w);
            }
        }
    }
    (s, sinks)
}

/// Reads one session's socket until stopped: times the replies to its SUBs and
/// UNSUBs, counts what else arrives (the diffs of its rooms).
pub(crate) async fn read_session(
    mut stream: SplitStream<Ws>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let tt = shared.tt;
    loop {
        let frame = tokio::select! {
            _ = stop.changed() => return,
            frame = stream.next() => frame,
        };
        let text = match frame {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                shared.disconnected.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Some(Ok(_)) => continue,
        };
        let now = Instant::now();
        let Ok(reply) = serde_json::from_str::<ReplyView>(text.as_str()) else {
            continue;
        };
        if tt.in_window(now.saturating_duration_since(tt.base)) {
            shared.frames_in_window.fetch_add(1, Ordering::Relaxed);
            if reply.ty == "PRESENCE_DIFF" {
                shared.diffs_in_window.fetch_add(1, Ordering::Relaxed);
            }
        }
        let timed = |at: Duration, leave: bool| {
            if tt.in_window(at) {
                let took = now.saturating_duration_since(tt.base + at);
                let mut l = shared.latency.lock().unwrap_or_else(|e| e.into_inner());
                let h = if leave { &mut l.leave } else { &mut l.join };
                measure::record(h, took.as_micros() as u64);
            }
        };
        match (reply.ty, reply.reply_ref) {
            ("PRESENCE", Some(r)) if r % 2 == 0 => {
                shared.presence_replies.fetch_add(1, Ordering::Relaxed);
                timed(tt.sub_at(r / 2), false);
            }
            ("UNSUB_ACK", Some(r)) if r % 2 == 1 => {
                shared.unsub_acks.fetch_add(1, Ordering::Relaxed);
                timed(tt.unsub_at(r / 2), true);
            }
            ("ERROR", r) => {
                let v: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
                let code = v.get("code").and_then(Value::as_str).unwrap_or("?");
                let message = v.get("message").and_then(Value::as_str).unwrap_or("");
                let what = match r {
                    Some(r) if r % 2 == 0 => {
                        shared.sub_errors.fetch_add(1, Ordering::Relaxed);
                        format!("SUB {}", r / 2)
                    }
                    Some(r) => {
                        shared.unsub_errors.fetch_add(1, Ordering::Relaxed);
                        format!("UNSUB {}", r / 2)
                    }
                    None => "unsolicited".into(),
                };
                shared
                    .errors
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .note(code, format!("{what}: {code}: {message}"));
            }
            _ => {}
        }
    }
}

/// One `/metrics` reading: the four journal series (None when not exported).
#[derive(Clone, Debug, Default)]
struct JournalSample {
    /// Seconds since the window began.
    t_s: f64,
    rows: Option<f64>,
    depth: Option<f64>,
    dropped: Option<f64>,
    errors: Option<f64>,
}

impl JournalSample {
    fn exported(&self) -> bool {
        self.rows.is_some()
            || self.depth.is_some()
            || self.dropped.is_some()
            || self.errors.is_some()
    }
}

async fn scrape(http_base: &str, t_s: f64) -> Result<JournalSample, String> {
    let (status, body) = http::get(http_base, "/metrics").await?;
    if status != 200 {
        return Err(format!("GET /metrics answered {status}"));
    }
    let m = prom::parse(&body);
    Ok(JournalSample {
        t_s,
        rows: m.get(ROWS_WRITTEN).copied(),
        depth: m.get(QUEUE_DEPTH).copied(),
        dropped: m.get(DROPPED).copied(),
        errors: m.get(WRITE_ERRORS).copied(),
    })
}

struct WindowSamples {
    samples: Vec<JournalSample>,
    scrape_errors: Vec<String>,
    elapsed_s: f64,
    server_cpu: CpuAtEnds,
    bench_cpu: CpuAtEnds,
}

/// Samples `/metrics` from the window's start to its end, every `interval` (the last
/// one at the end exactly), and the CPU of both processes at the two ends.
async fn sample_window(
    http_base: String,
    pid: Option<u32>,
    tt: Timetable,
    interval: Duration,
) -> WindowSamples {
    let start = tt.base + tt.from;
    let end = tt.base + tt.to;
    let mut out = WindowSamples {
        samples: Vec::new(),
        scrape_errors: Vec::new(),
        elapsed_s: 0.0,
        server_cpu: (None, None),
        bench_cpu: (None, None),
    };
    let mut i = 0u32;
    loop {
        let due = (start + interval * i).min(end);
        tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
        let now = Instant::now();
        let last = due >= end;
        if i == 0 {
            out.server_cpu.0 = pid.and_then(measure::process_cpu);
            out.bench_cpu.0 = measure::self_cpu();
        }
        if last {
            out.server_cpu.1 = pid.and_then(measure::process_cpu);
            out.bench_cpu.1 = measure::self_cpu();
            out.elapsed_s = now.saturating_duration_since(start).as_secs_f64();
        }
        let t_s = now.saturating_duration_since(start).as_secs_f64();
        match scrape(&http_base, t_s).await {
            Ok(s) => out.samples.push(s),
            Err(e) if out.scrape_errors.len() < 5 => out.scrape_errors.push(e),
            Err(_) => {}
        }
        if last {
            return out;
        }
        i += 1;
    }
}

/// Polls `/metrics` until the queue is empty and the rows written stayed put for
/// 1.5 s (longer than the default 1 s batch interval, during which a batch may sit
/// in the writer outside the queue), at most `limit`. Returns the last sample and
/// the time waited.
async fn wait_for_flush(http_base: &str, limit: Duration) -> (Option<JournalSample>, f64) {
    let began = Instant::now();
    let mut last: Option<JournalSample> = None;
    let mut steady_since = Instant::now();
    loop {
        let t = began.elapsed().as_secs_f64();
        if let Ok(s) = scrape(http_base, t).await {
            let moved = last.as_ref().is_none_or(|l| l.rows != s.rows);
            if moved {
                steady_since = Instant::now();
            }
            let empty = s.depth.unwrap_or(0.0) == 0.0;
            last = Some(s);
            if empty && steady_since.elapsed() >= Duration::from_millis(1500) {
                break;
            }
        }
        if began.elapsed() >= limit {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    (last, round3(began.elapsed().as_secs_f64()))
}

fn journal_report(
    samples: &[JournalSample],
    flushed: &Option<JournalSample>,
    flush_s: f64,
    ops_acked_in_window: u64,
) -> Value {
    let exported = samples.iter().any(JournalSample::exported)
        || flushed.as_ref().is_some_and(JournalSample::exported);
    if !exported || samples.len() < 2 {
        return json!({
            "exported": exported,
            "note": "no roster_journal_* series in /metrics over the window (a server without the journal, or /metrics unreachable)",
            "samples_taken": samples.len(),
        });
    }
    // The exporter lists a counter only after its first increment: absent is 0.
    let counter = |s: &JournalSample, f: fn(&JournalSample) -> Option<f64>| f(s).unwrap_or(0.0);
    let (first, last) = (&samples[0], &samples[samples.len() - 1]);
    let span = (last.t_s - first.t_s).max(1e-9);
    let rows = counter(last, |s| s.rows) - counter(first, |s| s.rows);
    let depths: Vec<f64> = samples.iter().filter_map(|s| s.depth).collect();
    let depth_max = depths.iter().copied().fold(0.0, f64::max);
    let depth_mean = if depths.is_empty() {
        0.0
    } else {
        depths.iter().sum::<f64>() / depths.len() as f64
    };
    let series: Vec<Value> = samples
        .iter()
        .map(|s| {
            json!([
                round3(s.t_s),
                s.rows.unwrap_or(0.0),
                s.depth,
                s.dropped.unwrap_or(0.0),
                s.errors.unwrap_or(0.0)
            ])
        })
        .collect();
    json!({
        "exported": true,
        "window_s": round3(span),
        "rows_written_in_window": rows,
        "rows_per_s": (rows / span).round(),
        "rows_per_acknowledged_op": if ops_acked_in_window > 0 { round3(rows / ops_acked_in_window as f64) } else { 0.0 },
        "queue_depth": {"max": depth_max, "mean": round3(depth_mean), "samples": depths.len()},
        "dropped_in_window": counter(last, |s| s.dropped) - counter(first, |s| s.dropped),
        "write_errors_in_window": counter(last, |s| s.errors) - counter(first, |s| s.errors),
        "after_run": flushed.as_ref().map(|s| json!({
            "flush_wait_s": flush_s,
            "queue_depth": s.depth,
            "rows_written_total": s.rows.unwrap_or(0.0),
            "dropped_total": s.dropped.unwrap_or(0.0),
            "write_errors_total": s.errors.unwrap_or(0.0),
        })),
        "samples_columns": ["t_s", "rows_written_total", "queue_depth", "dropped_total", "write_errors_total"],
        "samples": series,
    })
}

/// CPU used over the window, with the share of one core it amounts to.
fn cpu_share(cpu: CpuAtEnds, secs: f64) -> Value {
    let mut v = measure::cpu_delta(cpu.0, cpu.1);
    if let (Some(b), Some(a)) = cpu {
        let used = (a.0 - b.0) + (a.1 - b.1);
        v["cores"] = json!(round3(used / secs.max(1e-9)));
    }
    v
}

/// `scheme://user:***@host…` for a URL with a password; anything else unchanged.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// A PostgreSQL schema made for one run with `psql`; dropped (CASCADE) when this
/// goes out of scope unless kept.
struct PgSchema {
    /// The URL psql connects with (the run's URL without its query).
    psql_url: String,
    name: String,
    keep: bool,
}

impl PgSchema {
    fn create(url: &str, keep: bool) -> Result<PgSchema, String> {
        let psql_url = url.split('?').next().unwrap_or(url).to_owned();
        let name = format!(
            "roster_bench_{}_{}",
            std::process::id(),
            measure::unix_nanos() / 1_000_000_000
        );
        psql(&psql_url, &format!("create schema {name}")).map_err(|e| {
            format!(
                "cannot create a fresh schema for the run: {e}\n(give --fresh-schema false to use the \
                 URL as it is, or create one yourself and add ?options=-c%20search_path%3D<schema>)"
            )
        })?;
        eprintln!(
            "roster-bench: running in PostgreSQL schema {name}{}",
            if keep { " (kept afterwards)" } else { "" }
        );
        Ok(PgSchema {
            psql_url,
            name,
            keep,
        })
    }

    fn url_with_search_path(&self, url: &str) -> String {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}options=-c%20search_path%3D{}", self.name)
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        if let Err(e) = psql(
            &self.psql_url,
            &format!("drop schema {} cascade", self.name),
        ) {
            eprintln!(
                "roster-bench: could not drop schema {}: {e} (drop it by hand: \
                 psql -c 'drop schema {} cascade')",
                self.name, self.name
            );
        }
    }
}

/// Runs one SQL command with `psql` (no password prompt; fails fast).
fn psql(url: &str, sql: &str) -> Result<(), String> {
    let out = Command::new("psql")
        .arg(url)
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-w", "-c", sql])
        .env("PGCONNECT_TIMEOUT", "5")
        .output()
        .map_err(|e| format!("cannot run psql: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "psql {:?} failed: {}",
            sql,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tt(joins_per_sec: f64, hold_ms: u64) -> Timetable {
        Timetable {
            base: Instant::now(),
            joins_per_sec,
            hold: Duration::from_millis(hold_ms),
            from: Duration::from_secs(1),
            to: Duration::from_secs(3),
            total: 100,
            sessions: 10,
            rooms: 7,
            seed: 1,
        }
    }

    #[test]
    fn the_timetable_merges_subs_and_unsubs_in_time_order() {
        let t = Timetable {
            base: Instant::now(),
            total: 20,
            ..tt(1000.0, 3)
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        keep_timetable(t, tx);
        let mut ops = Vec::new();
        while let Ok(op) = rx.try_recv() {
            ops.push(op);
        }
        assert_eq!(ops.len(), 40);
        let at = |o: &Op| {
            if o.unsub {
                t.unsub_at(o.k)
            } else {
                t.sub_at(o.k)
            }
        };
        assert!(ops.windows(2).all(|w| at(&w[0]) <= at(&w[1])));
        // Every UNSUB after its SUB.
        for (i, o) in ops.iter().enumerate().filter(|(_, o)| o.unsub) {
            assert!(ops[..i].iter().any(|p| !p.unsub && p.k == o.k));
        }
    }

    #[test]
    fn rooms_and_sessions_are_spread_evenly() {
        let t = tt(100.0, 10);
        let mut per_room = [0u32; 7];
        for k in 0..7000 {
            per_room[t.room_of(k) as usize] += 1;
        }
        assert!(
            per_room.iter().all(|&n| (850..1150).contains(&n)),
            "{per_room:?}"
        );
        assert_eq!(t.session_of(13), 3);
        assert!(t.in_window(Duration::from_secs(1)) && !t.in_window(Duration::from_secs(3)));
        assert_eq!(t.unsub_at(100), Duration::from_millis(1010));
    }

    #[test]
    fn journal_figures_come_from_the_first_and_last_sample() {
        let s = |t_s, rows, depth| JournalSample {
            t_s,
            rows,
            depth,
            dropped: None,
            errors: Some(0.0),
        };
        let samples = [
            s(0.0, None, Some(0.0)),
            s(1.0, Some(500.0), Some(30.0)),
            s(2.0, Some(2000.0), Some(10.0)),
        ];
        let r = journal_report(&samples, &None, 0.0, 1000);
        assert_eq!(r["rows_written_in_window"], 2000.0);
        assert_eq!(r["rows_per_s"], 1000.0);
        assert_eq!(r["rows_per_acknowledged_op"], 2.0);
        assert_eq!(r["queue_depth"]["max"], 30.0);
        assert!((r["queue_depth"]["mean"].as_f64().unwrap() - 13.333).abs() < 0.001);
        assert_eq!(r["dropped_in_window"], 0.0);
        let none = journal_report(&vec![JournalSample::default(); 3], &None, 0.0, 0);
        assert_eq!(none["exported"], false);
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://u:secret@127.0.0.1:5432/test?options=x"),
            "postgres://u:***@127.0.0.1:5432/test?options=x"
        );
        assert_eq!(
            redact("postgres://postgres@127.0.0.1/test"),
            "postgres://postgres@127.0.0.1/test"
        );
        assert_eq!(redact("sqlite://roster.db"), "sqlite://roster.db");
    }
}
