//! `fanout`: M members in one room; S senders (members too) send `STATE` updates
//! open-loop on a fixed timetable (update k is due at start + k/U), each carrying its
//! intended send time `{"t": unix nanos}`. Every member records, for every update it
//! sees in `PRESENCE_DIFF.updates`, receive time − intended time into an
//! HdrHistogram, so a late sender or a stalled server both show up as latency
//! (no coordinated omission). Updates due in the warm-up are sent but not recorded.
//!
//! The server coalesces a room's changes for `diff_window` (50 ms by default), which
//! adds up to that much latency by design: run with `--diff-window 0ms` for raw
//! delivery latency, and without for the default configuration.

use std::time::Duration;

use clap::Args;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::measure::{self, micros_histogram, summary_ms, unix_nanos};
use crate::server::Server;
use crate::token::TokenMinter;
use crate::wire::{open_session, Ws};
use crate::{http, parse_duration, Target};

#[derive(Args, Debug)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub target: Target,
    /// Sessions in the room.
    #[arg(long, default_value_t = 1000)]
    pub members: usize,
    /// Members that send updates (each sends every senders/U seconds).
    #[arg(long, default_value_t = 4)]
    pub senders: usize,
    /// Updates per second, all senders together.
    #[arg(long, default_value_t = 20.0)]
    pub updates_per_sec: f64,
    /// Measured time.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Time before measuring (updates sent, not recorded).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Time after the last update for deliveries still in flight.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub drain: Duration,
    /// Room key.
    #[arg(long, default_value = "bench:fanout")]
    pub room: String,
    /// Declare the room first through REST (`POST /api/v1/rooms`, type BROADCAST,
    /// capacity = members) so ad-hoc room capacity does not cap the run.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub create_room: bool,
    /// Openings in flight while members join.
    #[arg(long, default_value_t = 100)]
    pub concurrency: usize,
}

/// The parts of a `PRESENCE_DIFF` the reader needs; everything else is skipped.
#[derive(Deserialize)]
struct DiffView<'a> {
    #[serde(rename = "type", borrow)]
    ty: &'a str,
    #[serde(borrow)]
    room: Option<&'a str>,
    seq: Option<u64>,
    updates: Option<Vec<UpdateView>>,
}

#[derive(Deserialize)]
struct UpdateView {
    session: Option<SessionView>,
}

#[derive(Deserialize)]
struct SessionView {
    state: Option<StateView>,
}

#[derive(Deserialize)]
struct StateView {
    t: Option<u64>,
}

/// What one member saw.
struct MemberStats {
    latency: Histogram<u64>,
    deliveries: u64,
    frames: u64,
    gaps: u64,
    disconnected: bool,
}

pub async fn run(a: FanoutArgs) -> Result<(), String> {
    if a.members == 0 || a.senders == 0 || a.senders > a.members || a.updates_per_sec <= 0.0 {
        return Err("need members >= senders >= 1 and updates-per-sec > 0".into());
    }
    let per_sender_hz = a.updates_per_sec / a.senders as f64;
    if per_sender_hz > 40.0 {
        return Err(format!(
            "{per_sender_hz:.1} updates/s per sender exceeds the server's 50 msg/s per-connection limit \
             with margin; use more --senders"
        ));
    }
    let server = Server::attach_or_start(&a.target)?;
    let minter = TokenMinter::new(&a.target.token_secret, &a.target.tenant);
    let room_setup = if a.create_room {
        declare_room(&server, &minter, &a).await
    } else {
        json!("skipped")
    };

    // Join phase.
    let join_began = Instant::now();
    let permits = std::sync::Arc::new(Semaphore::new(a.concurrency.max(1)));
    let mut joins = JoinSet::new();
    for i in 0..a.members {
        let token = minter.mint(&format!("bench-f{i}"), &[])?;
        let (url, room, permits) = (server.ws_url.clone(), a.room.clone(), permits.clone());
        joins.spawn(async move {
            let _permit = permits.acquire_owned().await.map_err(|e| e.to_string())?;
            let o = open_session(
                &url,
                &token,
                &format!("fan-{i}"),
                &room,
                Duration::from_secs(30),
            )
            .await;
            o.map(|o| (i, o)).map_err(|e| format!("member {i}: {e}"))
        });
    }
    let mut opened = Vec::with_capacity(a.members);
    while let Some(r) = joins.join_next().await {
        match r {
            Ok(Ok(o)) => opened.push(o),
            Ok(Err(e)) => {
                joins.abort_all();
                let hint = if e.contains("room_full") {
                    " (the room's capacity is below --members: declare it via REST, see room_setup)"
                } else {
                    ""
                };
                return Err(format!(
                    "join phase failed: {e}{hint}; room_setup: {room_setup}"
                ));
            }
            Err(e) => return Err(format!("join task failed: {e}")),
        }
    }
    opened.sort_by_key(|(i, _)| *i);
    let join_s = join_began.elapsed().as_secs_f64();

    // Timetable: update k is due at base + k / U.
    let base = Instant::now() + Duration::from_millis(500);
    let base_unix = unix_nanos() + 500_000_000;
    let interval = Duration::from_secs_f64(1.0 / a.updates_per_sec);
    let total_updates = ((a.warmup + a.duration).as_secs_f64() * a.updates_per_sec).floor() as u64;
    let measure_from = base_unix + a.warmup.as_nanos() as u64;
    let measure_to = measure_from + a.duration.as_nanos() as u64;

    let (stop, stop_rx) = watch::channel(false);
    let mut readers = JoinSet::new();
    let mut senders = JoinSet::new();
    let mut idle_sinks = Vec::new();
    for (i, o) in opened {
        let (sink, stream) = o.ws.split();
        readers.spawn(read_member(
            stream,
            a.room.clone(),
            o.seq,
            measure_from,
            measure_to,
            stop_rx.clone(),
        ));
        if i < a.senders {
            let plan = SendPlan {
                first: i as u64,
                step: a.senders as u64,
                total: total_updates,
                base,
                base_unix,
                interval,
                measure_from,
                measure_to,
                room: a.room.clone(),
            };
            senders.spawn(send_updates(sink, plan));
        } else {
            idle_sinks.push(sink);
        }
    }
    let server_cpu_before = server.pid.and_then(measure::process_cpu);
    let bench_cpu_before = measure::self_cpu();

    let mut lateness = micros_histogram();
    let mut sent_in_window = 0u64;
    let mut send_errors = Vec::new();
    while let Some(r) = senders.join_next().await {
        match r {
            Ok(Ok(s)) => {
                let _ = lateness.add(&s.lateness);
                sent_in_window += s.sent_in_window(measure_from, measure_to, base_unix, interval);
            }
            Ok(Err(e)) => send_errors.push(e),
            Err(e) => send_errors.push(e.to_string()),
        }
    }
    tokio::time::sleep(a.drain).await;
    let server_cpu_after = server.pid.and_then(measure::process_cpu);
    stop.send_replace(true);

    let mut latency = micros_histogram();
    let (mut deliveries, mut frames, mut gaps, mut disconnected) = (0u64, 0u64, 0u64, 0u64);
    while let Some(r) = readers.join_next().await {
        if let Ok(m) = r {
            let _ = latency.add(&m.latency);
            deliveries += m.deliveries;
            frames += m.frames;
            gaps += m.gaps;
            disconnected += u64::from(m.disconnected);
        }
    }
    drop(idle_sinks);
    let expected = sent_in_window * a.members as u64;
    let secs = a.duration.as_secs_f64().max(1e-9);
    let report = json!({
        "scenario": "fanout",
        "command": measure::command_line(),
        "server": {"url": server.ws_url, "pid": server.pid, "config": server.config},
        "room": a.room,
        "room_setup": room_setup,
        "members": a.members,
        "senders": a.senders,
        "updates_per_sec": a.updates_per_sec,
        "warmup_s": a.warmup.as_secs_f64(),
        "duration_s": a.duration.as_secs_f64(),
        "join_phase_s": measure::round3(join_s),
        "updates_sent_in_window": sent_in_window,
        "deliveries": deliveries,
        "deliveries_expected": expected,
        "delivery_ratio": if expected > 0 { measure::round3(deliveries as f64 / expected as f64) } else { 0.0 },
        "deliveries_per_s": (deliveries as f64 / secs).round(),
        "diff_frames_per_s_all_members": (frames as f64 / secs).round(),
        "latency_ms": summary_ms(&latency),
        "send_lateness_in_window_ms": summary_ms(&lateness),
        "seq_gaps": gaps,
        "members_disconnected": disconnected,
        "send_errors": send_errors,
        "server_cpu_during_run": measure::cpu_delta(server_cpu_before, server_cpu_after),
        "server_rss_bytes": server.pid.and_then(measure::rss_bytes),
        "bench_cpu_during_run": measure::cpu_delta(bench_cpu_before, measure::self_cpu()),
        "bench_cpu": measure::own_cpu(),
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    if !send_errors.is_empty() {
        return Err(format!("{} sender(s) failed", send_errors.len()));
    }
    Ok(())
}

/// `POST /api/v1/rooms {key, type: BROADCAST, capacity}` with an admin token; the
/// outcome goes into the report (a server without the endpoint just answers 404).
async fn declare_room(server: &Server, minter: &TokenMinter, a: &FanoutArgs) -> Value {
    let token = match minter.mint("bench-admin", &["admin"]) {
        Ok(t) => t,
        Err(e) => return json!({"error": e}),
    };
    let body =
        json!({"key": a.room, "type": "BROADCAST", "capacity": a.members.max(1000)}).to_string();
    match http::request_json(&server.http_base, "POST", "/api/v1/rooms", &token, &body).await {
        Ok((status, body)) => {
            json!({"status": status, "body": body.chars().take(300).collect::<String>()})
        }
        Err(e) => json!({"error": e}),
    }
}

struct SendPlan {
    first: u64,
    step: u64,
    total: u64,
    base: Instant,
    base_unix: u64,
    interval: Duration,
    /// Lateness is recorded for updates due in [measure_from, measure_to) (unix ns).
    measure_from: u64,
    measure_to: u64,
    room: String,
}

struct SendStats {
    lateness: Histogram<u64>,
    ks: Vec<u64>,
}

impl SendStats {
    fn sent_in_window(&self, from: u64, to: u64, base_unix: u64, interval: Duration) -> u64 {
        let due = |k: u64| base_unix + (interval.as_nanos() as u64) * k;
        self.ks
            .iter()
            .filter(|&&k| (from..to).contains(&due(k)))
            .count() as u64
    }
}

/// Sends updates `first, first+step, …` at their due times; never skips one that is late.
async fn send_updates(mut sink: SplitSink<Ws, Message>, p: SendPlan) -> Result<SendStats, String> {
    let mut stats = SendStats {
        lateness: micros_histogram(),
        ks: Vec::new(),
    };
    let mut k = p.first;
    while k < p.total {
        let offset = p.interval.mul_f64(k as f64);
        let due = p.base + offset;
        // tokio's timer fires on millisecond ticks (up to ~1 ms late); sleep to just
        // before the due time and yield-spin the rest, so the timetable is kept to
        // microseconds and timer slack is not billed to the server.
        tokio::time::sleep_until(due - Duration::from_millis(2)).await;
        while Instant::now() < due {
            tokio::task::yield_now().await;
        }
        let late = Instant::now().saturating_duration_since(due);
        let t = p.base_unix + offset.as_nanos() as u64;
        if (p.measure_from..p.measure_to).contains(&t) {
            measure::record(&mut stats.lateness, late.as_micros() as u64);
        }
        let msg = json!({"type": "STATE", "room": p.room, "state": {"t": t, "k": k}});
        sink.send(Message::text(msg.to_string()))
            .await
            .map_err(|e| format!("STATE {k}: {e}"))?;
        stats.ks.push(k);
        k += p.step;
    }
    Ok(stats)
}

/// Reads one member's socket until stopped, timing every update in every diff.
async fn read_member(
    mut stream: SplitStream<Ws>,
    room: String,
    mut seq: Option<u64>,
    from: u64,
    to: u64,
    mut stop: watch::Receiver<bool>,
) -> MemberStats {
    let mut s = MemberStats {
        latency: micros_histogram(),
        deliveries: 0,
        frames: 0,
        gaps: 0,
        disconnected: false,
    };
    loop {
        let frame = tokio::select! {
            _ = stop.changed() => return s,
            frame = stream.next() => frame,
        };
        let text = match frame {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                s.disconnected = true;
                return s;
            }
            Some(Ok(_)) => continue,
        };
        let now = unix_nanos();
        // Typed, borrowing parse of only the fields needed: keeps the reader cheap so
        // the bench's own CPU adds as little as possible to the latency it measures.
        let Ok(msg) = serde_json::from_str::<DiffView>(text.as_str()) else {
            continue;
        };
        if msg.ty != "PRESENCE_DIFF" || msg.room != Some(room.as_str()) {
            continue;
        }
        if (from..to).contains(&now) {
            s.frames += 1;
        }
        if let Some(got) = msg.seq {
            if let Some(prev) = seq {
                if got > prev + 1 {
                    s.gaps += 1;
                }
            }
            seq = Some(got);
        }
        for u in msg.updates.into_iter().flatten() {
            let Some(t) = u.session.and_then(|s| s.state).and_then(|st| st.t) else {
                continue;
            };
            if (from..to).contains(&t) {
                s.deliveries += 1;
                measure::record(&mut s.latency, now.saturating_sub(t) / 1000);
            }
        }
    }
}
