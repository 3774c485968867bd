//! `pusher-fanout`: M members (each its own user) in one presence channel; S of them
//! send client events (`client-bench`) open loop on a fixed timetable (event k due
//! at start + k/U, sent by member k mod S), each carrying `{k, t, s}`: its number,
//! its intended send time (unix ns) and its sender. Pusher does not echo a client
//! event to its sender, so every event is due at the other M − 1 members.
//!
//! For each event due in the measured window the bench keeps the slowest delivery
//! (receive time − intended send time) and how many members got it: **latency to
//! the last member** is that maximum, over the events every other member received
//! (those some member missed are counted, not timed). Per-delivery latency is
//! reported beside it. **Server CPU per delivery** is the server's CPU time
//! (/proc/PID/stat utime + stime) from the window's start to the end of the drain,
//! divided by the deliveries of the window's events; the server's CPU over an idle
//! second before the events is reported too, as the baseline it includes.
//!
//! The members join first, `--concurrency` at a time (connect, subscribe, wait for
//! `subscription_succeeded`), then `--settle` lets the join's `member_added` frames
//! drain. Roster and Pusher allow 10 client events per second per connection:
//! keep U / S below that.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use clap::Args;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::{join_presence, source_addr, PusherServer, PusherTarget};
use crate::measure::{self, micros_histogram, round3, summary_ms, unix_nanos};
use crate::parse_duration;
use crate::wire::Ws;

const EVENT: &str = "client-bench";

#[derive(Args, Debug)]
pub struct PusherFanoutArgs {
    #[command(flatten)]
    pub target: PusherTarget,
    /// Members of the channel.
    #[arg(long, default_value_t = 1000)]
    pub members: usize,
    /// Members that send client events.
    #[arg(long, default_value_t = 4)]
    pub senders: usize,
    /// Client events per second, all senders together.
    #[arg(long, default_value_t = 20.0)]
    pub events_per_sec: f64,
    /// Measured time.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Time before measuring (events sent, not recorded).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Time after the last event for deliveries still in flight.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub drain: Duration,
    /// Quiet time between the joins and the events (its last second is the idle
    /// CPU baseline).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub settle: Duration,
    /// Joins in flight.
    #[arg(long, default_value_t = 100)]
    pub concurrency: usize,
    /// Presence channel name.
    #[arg(long, default_value = "presence-bench-fanout")]
    pub channel: String,
    /// Spread the members over this many loopback addresses (127.0.0.1 … 127.0.0.N).
    #[arg(long, default_value_t = 1)]
    pub source_addrs: usize,
}

/// Each event's slowest delivery (µs) and its number of deliveries, by k.
struct Slots {
    max_us: Vec<AtomicU64>,
    count: Vec<AtomicU32>,
    /// The measured window (unix ns of the intended send time).
    from: u64,
    to: u64,
}

/// `{event, data}` of a frame, typed: only a `client-bench`'s stamp is read.
#[derive(Deserialize)]
struct FrameView<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(default)]
    data: Option<DataView>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum DataView {
    Stamp(Stamp),
    Text(String),
    #[allow(dead_code)]
    Other(serde::de::IgnoredAny),
}

#[derive(Deserialize, Clone, Copy)]
struct Stamp {
    k: u64,
    t: u64,
    s: usize,
}

struct MemberStats {
    latency: Histogram<u64>,
    deliveries: u64,
    echoes: u64,
    data_as_string: u64,
    errors: Vec<String>,
    error_count: u64,
    disconnected: bool,
}

pub async fn run(a: PusherFanoutArgs) -> Result<(), String> {
    if a.members < 2 || a.senders == 0 || a.senders > a.members || a.events_per_sec <= 0.0 {
        return Err("need members >= 2, 1 <= senders <= members, events-per-sec > 0".into());
    }
    let per_sender = a.events_per_sec / a.senders as f64;
    if per_sender > 10.0 {
        return Err(format!(
            "{per_sender:.1} events/s per sender is above the 10/s per connection that Roster \
             and Pusher allow: use more --senders"
        ));
    }
    let server = PusherServer::start(&a.target)?;
    let url = server.app_url();

    // Join phase.
    let join_began = Instant::now();
    let permits = Arc::new(Semaphore::new(a.concurrency.max(1)));
    let mut joins = JoinSet::new();
    for i in 0..a.members {
        let (url, channel, permits) = (url.clone(), a.channel.clone(), permits.clone());
        let (key, secret) = (server.key.clone(), server.secret.clone());
        let from = source_addr(i, a.source_addrs);
        joins.spawn(async move {
            let _permit = permits.acquire_owned().await.map_err(|e| e.to_string())?;
            let t0 = Instant::now();
            let ws = tokio::time::timeout(
                Duration::from_secs(30),
                join_presence(&url, from, &channel, &format!("u{i}"), &key, &secret),
            )
            .await
            .map_err(|_| format!("member {i}: not subscribed within 30 s"))?
            .map_err(|e| format!("member {i}: {e}"))?;
            Ok::<_, String>((i, ws, t0.elapsed()))
        });
    }
    // Each member's reader starts as soon as it has joined, so the join's
    // `member_added` frames are consumed as they come (a member that does not read
    // would be closed as a slow consumer).
    let slots: Arc<OnceLock<Slots>> = Arc::new(OnceLock::new());
    let (stop, stop_rx) = watch::channel(false);
    let mut readers = JoinSet::new();
    let mut join_latency = micros_histogram();
    let mut sinks: Vec<Option<SplitSink<Ws, Message>>> = (0..a.members).map(|_| None).collect();
    while let Some(r) = joins.join_next().await {
        match r {
            Ok(Ok((i, ws, took))) => {
                measure::record(&mut join_latency, took.as_micros() as u64);
                let (sink, stream) = ws.split();
                readers.spawn(read_member(i, stream, slots.clone(), stop_rx.clone()));
                sinks[i] = Some(sink);
            }
            Ok(Err(e)) => {
                joins.abort_all();
                return Err(format!("join phase failed: {e}"));
            }
            Err(e) => return Err(format!("join task failed: {e}")),
        }
    }
    let join_s = join_began.elapsed().as_secs_f64();

    // Timetable.
    let interval = Duration::from_secs_f64(1.0 / a.events_per_sec);
    let total = ((a.warmup + a.duration).as_secs_f64() * a.events_per_sec).floor() as u64;
    let lead = a.settle + Duration::from_millis(200);
    let base = Instant::now() + lead;
    let base_unix = unix_nanos() + lead.as_nanos() as u64;
    let from = base_unix + a.warmup.as_nanos() as u64;
    let to = from + a.duration.as_nanos() as u64;
    let _ = slots.set(Slots {
        max_us: (0..total).map(|_| AtomicU64::new(0)).collect(),
        count: (0..total).map(|_| AtomicU32::new(0)).collect(),
        from,
        to,
    });
    let slots = slots.get().expect("set just above");
    let mut senders = JoinSet::new();
    let mut idle_sinks = Vec::new();
    for (i, sink) in sinks.into_iter().enumerate() {
        let Some(sink) = sink else {
            return Err(format!("member {i} has no connection"));
        };
        if i < a.senders {
            let plan = Plan {
                rank: i,
                step: a.senders as u64,
                total,
                base,
                base_unix,
                interval,
                from,
                to,
                channel: a.channel.clone(),
            };
            senders.spawn(send_events(sink, plan));
        } else {
            idle_sinks.push(sink);
        }
    }

    // Settle; its last second (or less) is the idle baseline.
    let idle = a.settle.min(Duration::from_secs(1));
    tokio::time::sleep(a.settle.saturating_sub(idle)).await;
    let idle_began = Instant::now();
    let cpu_idle_before = server.cpu();
    tokio::time::sleep(idle).await;
    let cpu_idle_after = server.cpu();
    let idle_s = idle_began.elapsed().as_secs_f64();

    // The measured window starts with the first measured event's due time.
    tokio::time::sleep_until(base + a.warmup).await;
    let cpu_before = server.cpu();
    let bench_before = measure::self_cpu();
    let window_began = Instant::now();
    let mut lateness = micros_histogram();
    let (mut sent_in_window, mut send_errors) = (0u64, Vec::new());
    while let Some(r) = senders.join_next().await {
        match r {
            Ok(Ok((late, n))) => {
                let _ = lateness.add(&late);
                sent_in_window += n;
            }
            Ok(Err(e)) => send_errors.push(e),
            Err(e) => send_errors.push(e.to_string()),
        }
    }
    tokio::time::sleep(a.drain).await;
    let cpu_after = server.cpu();
    let cpu_span_s = window_began.elapsed().as_secs_f64();
    let bench_during = measure::cpu_delta(bench_before, measure::self_cpu());
    let rss = server.rss();
    stop.send_replace(true);

    let mut per_delivery = micros_histogram();
    let (mut deliveries, mut echoes, mut as_string, mut disconnected) = (0u64, 0u64, 0u64, 0u64);
    let (mut error_count, mut errors) = (0u64, Vec::new());
    while let Some(r) = readers.join_next().await {
        let Ok(m) = r else { continue };
        let _ = per_delivery.add(&m.latency);
        deliveries += m.deliveries;
        echoes += m.echoes;
        as_string += m.data_as_string;
        disconnected += u64::from(m.disconnected);
        error_count += m.error_count;
        for e in m.errors {
            if errors.len() < 10 {
                errors.push(e);
            }
        }
    }
    drop(idle_sinks);

    // Latency to the last member, over the window's events every other member got.
    let expected_per_event = (a.members - 1) as u32;
    let mut to_last = micros_histogram();
    let (mut in_window, mut complete, mut incomplete, mut missing, mut duplicated) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    for k in 0..total {
        let t = base_unix + (interval.as_nanos() as u64) * k;
        if !(from..to).contains(&t) {
            continue;
        }
        in_window += 1;
        let n = slots.count[k as usize].load(Ordering::Relaxed);
        if n >= expected_per_event {
            complete += 1;
            measure::record(
                &mut to_last,
                slots.max_us[k as usize].load(Ordering::Relaxed),
            );
            duplicated += u64::from(n - expected_per_event);
        } else {
            incomplete += 1;
            missing += u64::from(expected_per_event - n);
        }
    }
    let cpu = measure::cpu_delta(cpu_before, cpu_after);
    let cpu_s = cpu["user_s"]
        .as_f64()
        .zip(cpu["sys_s"].as_f64())
        .map(|(u, s)| u + s);
    let idle_cpu = measure::cpu_delta(cpu_idle_before, cpu_idle_after);
    let idle_cores = idle_cpu["user_s"]
        .as_f64()
        .zip(idle_cpu["sys_s"].as_f64())
        .map(|(u, s)| round3((u + s) / idle_s.max(1e-9)));
    let secs = a.duration.as_secs_f64().max(1e-9);
    let report = json!({
        "scenario": "pusher-fanout",
        "command": measure::command_line(),
        "server": server.report(),
        "members": a.members,
        "senders": a.senders,
        "events_per_sec": a.events_per_sec,
        "source_addrs": a.source_addrs.max(1),
        "channel": a.channel,
        "join": {
            "elapsed_s": round3(join_s),
            "joins_per_s": round3(a.members as f64 / join_s.max(1e-9)),
            "latency_ms": summary_ms(&join_latency),
        },
        "events_sent_in_window": sent_in_window,
        "events_in_window": in_window,
        "events_complete": complete,
        "events_incomplete": incomplete,
        "deliveries_missing": missing,
        "deliveries_duplicated": duplicated,
        "deliveries": deliveries,
        "deliveries_expected": in_window * u64::from(expected_per_event),
        "deliveries_per_s": (deliveries as f64 / secs).round(),
        "latency_to_last_member_ms": summary_ms(&to_last),
        "latency_per_delivery_ms": summary_ms(&per_delivery),
        "send_lateness_in_window_ms": summary_ms(&lateness),
        "echoes_to_sender": echoes,
        "client_event_data_as_string": as_string,
        "pusher_errors": error_count,
        "first_pusher_errors": errors,
        "send_errors": send_errors,
        "members_disconnected": disconnected,
        "server_cpu_in_window": {
            "span_s": round3(cpu_span_s),
            "cpu": cpu,
            "cores": cpu_s.map(|c| round3(c / cpu_span_s.max(1e-9))),
            "us_per_delivery": cpu_s
                .filter(|_| deliveries > 0)
                .map(|c| round3(c * 1e6 / deliveries as f64)),
        },
        "server_cpu_idle_baseline": {"span_s": round3(idle_s), "cpu": idle_cpu, "cores": idle_cores},
        "server_rss_mb": rss.map(|b| round3(b as f64 / 1048576.0)),
        "bench_cpu_in_window": bench_during,
        "bench_cpu": measure::own_cpu(),
        "loadavg": measure::loadavg(),
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    Ok(())
}

struct Plan {
    rank: usize,
    step: u64,
    total: u64,
    base: Instant,
    base_unix: u64,
    interval: Duration,
    from: u64,
    to: u64,
    channel: String,
}

/// Sends events `rank, rank+step, …` at their due times, never skipping a late one;
/// returns the send lateness in the window and how many were sent in it.
async fn send_events(
    mut sink: SplitSink<Ws, Message>,
    p: Plan,
) -> Result<(Histogram<u64>, u64), String> {
    let mut lateness = micros_histogram();
    let mut in_window = 0u64;
    let mut k = p.rank as u64;
    while k < p.total {
        let offset = p.interval.mul_f64(k as f64);
        let due = p.base + offset;
        // As in `fanout`: sleep to 2 ms before the due time, yield-spin the rest.
        tokio::time::sleep_until(due - Duration::from_millis(2)).await;
        while Instant::now() < due {
            tokio::task::yield_now().await;
        }
        let late = Instant::now().saturating_duration_since(due);
        let t = p.base_unix + offset.as_nanos() as u64;
        if (p.from..p.to).contains(&t) {
            measure::record(&mut lateness, late.as_micros() as u64);
            in_window += 1;
        }
        let msg = json!({
            "event": EVENT,
            "channel": p.channel,
            "data": {"k": k, "t": t, "s": p.rank},
        });
        sink.send(Message::text(msg.to_string()))
            .await
            .map_err(|e| format!("client event {k}: {e}"))?;
        k += p.step;
    }
    Ok((lateness, in_window))
}

async fn read_member(
    me: usize,
    mut stream: SplitStream<Ws>,
    slots: Arc<OnceLock<Slots>>,
    mut stop: watch::Receiver<bool>,
) -> MemberStats {
    let mut m = MemberStats {
        latency: micros_histogram(),
        deliveries: 0,
        echoes: 0,
        data_as_string: 0,
        errors: Vec::new(),
        error_count: 0,
        disconnected: false,
    };
    loop {
        let frame = tokio::select! {
            _ = stop.changed() => return m,
            f = stream.next() => f,
        };
        let text = match frame {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                m.disconnected = true;
                return m;
            }
            Some(Ok(_)) => continue,
        };
        let now = unix_nanos();
        let Ok(f) = serde_json::from_str::<FrameView>(text.as_str()) else {
            continue;
        };
        if f.event != EVENT {
            if f.event == "pusher:error" {
                m.error_count += 1;
                if m.errors.len() < 3 {
                    m.errors.push(format!("member {me}: {text}"));
                }
            }
            continue;
        }
        let stamp = match f.data {
            Some(DataView::Stamp(s)) => s,
            Some(DataView::Text(s)) => match serde_json::from_str::<Stamp>(&s) {
                Ok(st) => {
                    m.data_as_string += 1;
                    st
                }
                Err(_) => continue,
            },
            _ => continue,
        };
        if stamp.s == me {
            m.echoes += 1;
            continue;
        }
        let Some(slots) = slots.get() else { continue };
        if !(slots.from..slots.to).contains(&stamp.t) {
            continue;
        }
        let us = now.saturating_sub(stamp.t) / 1000;
        m.deliveries += 1;
        measure::record(&mut m.latency, us);
        if let (Some(max), Some(count)) = (
            slots.max_us.get(stamp.k as usize),
            slots.count.get(stamp.k as usize),
        ) {
            max.fetch_max(us, Ordering::Relaxed);
            count.fetch_add(1, Ordering::Relaxed);
        }
    }
}
