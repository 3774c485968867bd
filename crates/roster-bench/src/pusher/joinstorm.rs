//! `pusher-joinstorm`: N clients join one presence channel at an offered rate R
//! (client i connects at start + i/R, open loop: a slow server does not slow the
//! offer), each as its own user. Every client keeps its view of the channel the way
//! pusher-js does: `subscription_succeeded`'s `ids` replace it, `member_added` adds,
//! `member_removed` removes. Reported:
//!
//! * achieved rates: connections (`connection_established`) and subscriptions
//!   (`subscription_succeeded`) per second: N − 1 over the time from the first
//!   to the last one established / subscribed;
//! * the time until every client's view holds all N members (from the first due
//!   connection, and from the last `subscription_succeeded`);
//! * duplicate `member_added`: one for a user already in that client's view (after
//!   its snapshot). `member_added` before the client's own `subscription_succeeded`
//!   is counted apart (pusher-js drops it: the snapshot replaces the view);
//! * anything else unexpected: `member_removed` (nobody leaves), `member_added` of
//!   the client's own user, snapshots whose `ids`/`hash`/`count` disagree, Pusher
//!   events with non-string `data`, errors.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::{
    connect, data_of, presence_subscribe, send_text, snapshot_of, source_addr, PusherServer,
    PusherTarget, PONG,
};
use crate::measure::{self, micros_histogram, round3, summary_ms};
use crate::parse_duration;

#[derive(Args, Debug)]
pub struct JoinStormArgs {
    #[command(flatten)]
    pub target: PusherTarget,
    /// Clients (users) joining the channel.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Offered connections (and joins) per second.
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,
    /// After the last due connection, how long to wait for every view to complete.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub wait: Duration,
    /// Presence channel name.
    #[arg(long, default_value = "presence-bench-storm")]
    pub channel: String,
    /// Spread the clients over this many loopback addresses (127.0.0.1 … 127.0.0.N),
    /// as a storm of real users comes from many. From one address the storm meets
    /// Roster's cap on openings in progress per address
    /// (`limits.max_openings_per_ip`, 256) once the server falls behind.
    #[arg(long, default_value_t = 16)]
    pub source_addrs: usize,
}

/// What one client saw.
#[derive(Default)]
struct ClientStats {
    user: String,
    /// Since the storm's start.
    connected_at: Option<Duration>,
    subscribed_at: Option<Duration>,
    complete_at: Option<Duration>,
    /// Due time → connection_established.
    connect_us: Option<u64>,
    /// subscribe sent → subscription_succeeded.
    subscribe_us: Option<u64>,
    error: Option<String>,
    member_added: u64,
    duplicates: u64,
    added_before_snapshot: u64,
    own_added: u64,
    removed: u64,
    /// `member_removed` as received (ms since the start, the frame), the first few.
    removed_frames: Vec<(u64, String)>,
    /// The users named in this client's `member_removed`s.
    removed_users: Vec<String>,
    /// `member_added` of a user this client saw removed before (not a duplicate).
    readded: u64,
    snapshot_size: Option<usize>,
    snapshot_inconsistent: bool,
    data_not_string: u64,
    pusher_errors: Vec<String>,
    view_size_at_end: usize,
    /// Users not in the view at the end, and of those, how many had come as a
    /// member_added before this client's own snapshot (and were not in it).
    missing: u64,
    missing_added_before_snapshot: u64,
    /// The first few users missing at the end.
    missing_users: Vec<String>,
    disconnected: bool,
}

struct Storm {
    start: Instant,
    clients: usize,
    /// Clients whose view is complete, or that failed.
    done: AtomicUsize,
}

pub async fn run(a: JoinStormArgs) -> Result<(), String> {
    if a.clients == 0 || a.rate <= 0.0 {
        return Err("need --clients >= 1 and --rate > 0".into());
    }
    let server = PusherServer::start(&a.target)?;
    let url = server.app_url();
    let storm = Arc::new(Storm {
        start: Instant::now() + Duration::from_millis(200),
        clients: a.clients,
        done: AtomicUsize::new(0),
    });
    let (stop, stop_rx) = watch::channel(false);
    let cpu_before = server.cpu();
    let rss_before = server.rss();
    let bench_before = measure::self_cpu();
    let mut tasks = JoinSet::new();
    for i in 0..a.clients {
        let due = storm.start + Duration::from_secs_f64(i as f64 / a.rate);
        let (url, channel, storm, stop_rx) = (
            url.clone(),
            a.channel.clone(),
            storm.clone(),
            stop_rx.clone(),
        );
        let (key, secret) = (server.key.clone(), server.secret.clone());
        let from = source_addr(i, a.source_addrs);
        tasks.spawn(async move {
            let mut s = ClientStats::default();
            let c = Client {
                i,
                due,
                from,
                url: &url,
                channel: &channel,
                key: &key,
                secret: &secret,
            };
            client(c, &storm, stop_rx, &mut s).await;
            (i, s)
        });
    }
    let offered_span = Duration::from_secs_f64((a.clients - 1) as f64 / a.rate);
    let deadline = storm.start + offered_span + a.wait;
    while storm.done.load(Ordering::Relaxed) < a.clients && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ended = storm.start.elapsed();
    let cpu_after = server.cpu();
    let rss_after = server.rss();
    let bench_during = measure::cpu_delta(bench_before, measure::self_cpu());
    stop.send_replace(true);
    let mut stats: Vec<ClientStats> = Vec::with_capacity(a.clients);
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok((_, s)) => stats.push(s),
            Err(e) => return Err(format!("client task failed: {e}")),
        }
    }

    let mut connect_lat = micros_histogram();
    let mut subscribe_lat = micros_histogram();
    let mut complete_at: Histogram<u64> = micros_histogram();
    let mut errors = Vec::new();
    let mut pusher_errors = Vec::new();
    let (mut connected, mut subscribed, mut complete) = (0usize, 0usize, 0usize);
    let (mut last_connected, mut last_subscribed, mut last_complete) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let (mut first_connected, mut first_subscribed) = (Duration::MAX, Duration::MAX);
    let mut t = Totals::default();
    for s in &stats {
        if let Some(at) = s.connected_at {
            connected += 1;
            last_connected = last_connected.max(at);
            first_connected = first_connected.min(at);
        }
        if let Some(at) = s.subscribed_at {
            subscribed += 1;
            last_subscribed = last_subscribed.max(at);
            first_subscribed = first_subscribed.min(at);
        }
        if let Some(at) = s.complete_at {
            complete += 1;
            last_complete = last_complete.max(at);
            measure::record(&mut complete_at, at.as_micros() as u64);
        }
        if let Some(us) = s.connect_us {
            measure::record(&mut connect_lat, us);
        }
        if let Some(us) = s.subscribe_us {
            measure::record(&mut subscribe_lat, us);
        }
        if let Some(e) = &s.error {
            if errors.len() < 10 {
                errors.push(e.clone());
            }
        }
        for e in &s.pusher_errors {
            if pusher_errors.len() < 10 {
                pusher_errors.push(e.clone());
            }
        }
        t.add(s);
    }
    // n events from the first to the last: n − 1 intervals.
    let per_s = |n: usize, first: Duration, last: Duration| {
        let span = last.saturating_sub(first);
        if n < 2 || span.is_zero() {
            Value::Null
        } else {
            json!(round3((n - 1) as f64 / span.as_secs_f64()))
        }
    };
    let all_complete = complete == a.clients;
    let report = json!({
        "scenario": "pusher-joinstorm",
        "command": measure::command_line(),
        "server": server.report(),
        "clients": a.clients,
        "channel": a.channel,
        "offered_per_s": a.rate,
        "source_addrs": a.source_addrs.max(1),
        "offered_span_s": round3(offered_span.as_secs_f64()),
        "connected": connected,
        "subscribed": subscribed,
        "failed": a.clients - subscribed,
        "first_errors": errors,
        "achieved": {
            "connections_per_s": per_s(connected, first_connected, last_connected),
            "subscriptions_per_s": per_s(subscribed, first_subscribed, last_subscribed),
            "last_connected_after_s": round3(last_connected.as_secs_f64()),
            "last_subscribed_after_s": round3(last_subscribed.as_secs_f64()),
        },
        "connect_latency_ms": summary_ms(&connect_lat),
        "subscribe_latency_ms": summary_ms(&subscribe_lat),
        "views": {
            "complete": complete,
            "incomplete": a.clients - complete,
            "all_complete": all_complete,
            "all_complete_after_s": all_complete.then(|| round3(last_complete.as_secs_f64())),
            "all_complete_after_last_subscribed_ms": all_complete.then(|| {
                round3(last_complete.saturating_sub(last_subscribed).as_secs_f64() * 1000.0)
            }),
            "complete_after_start_ms": summary_ms(&complete_at),
            "sizes_at_end": t.sizes_at_end(a.clients),
            "members_missing_at_end": t.missing,
            "of_which_added_before_own_snapshot": t.missing_added_before_snapshot,
            "missing_examples": t.missing_examples,
        },
        "member_added": {
            "received": t.member_added,
            "expected_at_least": (a.clients as u64) * (a.clients as u64 - 1) / 2,
            "duplicates": t.duplicates,
            "clients_with_duplicates": t.clients_with_duplicates,
            "before_own_snapshot": t.added_before_snapshot,
            "own_user": t.own_added,
        },
        // Nobody leaves in this scenario: every member_removed is unexpected (every
        // client stays connected until the end, see `disconnected`).
        "member_removed": {
            "received": t.removed,
            "clients_that_got_one": t.clients_with_removed,
            "distinct_users_named": t.removed_users.len(),
            "users_named_first": t.removed_users_first(20),
            "added_again_after": t.readded,
            "first_frames": t.removed_frames,
        },
        "snapshots_inconsistent": t.snapshot_inconsistent,
        "data_not_string": t.data_not_string,
        "pusher_errors": t.pusher_errors,
        "first_pusher_errors": pusher_errors,
        "disconnected": t.disconnected,
        "server_cpu_during_storm": measure::cpu_delta(cpu_before, cpu_after),
        "server_rss_mb": {
            "before": rss_before.map(|b| round3(b as f64 / 1048576.0)),
            "after": rss_after.map(|b| round3(b as f64 / 1048576.0)),
        },
        "storm_s": round3(ended.as_secs_f64()),
        "bench_cpu_during_storm": bench_during,
        "bench_cpu": measure::own_cpu(),
        "loadavg": measure::loadavg(),
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    Ok(())
}

#[derive(Default)]
struct Totals {
    member_added: u64,
    duplicates: u64,
    clients_with_duplicates: u64,
    added_before_snapshot: u64,
    own_added: u64,
    removed: u64,
    clients_with_removed: u64,
    removed_users: HashSet<String>,
    removed_frames: Vec<Value>,
    readded: u64,
    snapshot_inconsistent: u64,
    data_not_string: u64,
    pusher_errors: u64,
    disconnected: u64,
    missing: u64,
    missing_added_before_snapshot: u64,
    missing_examples: Vec<Value>,
    sizes: Vec<usize>,
}

impl Totals {
    fn add(&mut self, s: &ClientStats) {
        self.member_added += s.member_added;
        self.duplicates += s.duplicates;
        self.clients_with_duplicates += u64::from(s.duplicates > 0);
        self.added_before_snapshot += s.added_before_snapshot;
        self.own_added += s.own_added;
        self.removed += s.removed;
        self.clients_with_removed += u64::from(s.removed > 0);
        self.removed_users.extend(s.removed_users.iter().cloned());
        self.readded += s.readded;
        for (ms, frame) in &s.removed_frames {
            if self.removed_frames.len() < 10 {
                self.removed_frames
                    .push(json!({"client": s.user, "at_ms": ms, "frame": frame}));
            }
        }
        self.snapshot_inconsistent += u64::from(s.snapshot_inconsistent);
        self.data_not_string += s.data_not_string;
        self.pusher_errors += s.pusher_errors.len() as u64;
        self.disconnected += u64::from(s.disconnected);
        self.missing += s.missing;
        self.missing_added_before_snapshot += s.missing_added_before_snapshot;
        if s.missing > 0 && self.missing_examples.len() < 5 {
            self.missing_examples.push(json!({
                "client": s.user,
                "subscribed_after_ms": s.subscribed_at.map(|d| d.as_millis() as u64),
                "snapshot_size": s.snapshot_size,
                "member_added_received": s.member_added,
                "added_before_own_snapshot": s.added_before_snapshot,
                "missing": s.missing,
                "missing_first": s.missing_users,
            }));
        }
        if s.snapshot_size.is_some() {
            self.sizes.push(s.view_size_at_end);
        }
    }

    /// The users named in `member_removed`s, by number (`u<i>`), the first `n`.
    fn removed_users_first(&self, n: usize) -> Vec<&String> {
        let mut u: Vec<&String> = self.removed_users.iter().collect();
        u.sort_by_key(|s| s.trim_start_matches('u').parse::<u64>().unwrap_or(u64::MAX));
        u.truncate(n);
        u
    }

    /// Views' sizes at the end: min and max, and how many were not `n`.
    fn sizes_at_end(&self, n: usize) -> Value {
        json!({
            "min": self.sizes.iter().min(),
            "max": self.sizes.iter().max(),
            "not_all": self.sizes.iter().filter(|&&s| s != n).count(),
        })
    }
}

/// Who one client is and when it connects.
struct Client<'a> {
    i: usize,
    due: Instant,
    from: Option<IpAddr>,
    url: &'a str,
    channel: &'a str,
    key: &'a str,
    secret: &'a str,
}

async fn client(
    c: Client<'_>,
    storm: &Storm,
    mut stop: watch::Receiver<bool>,
    s: &mut ClientStats,
) {
    let Client {
        i,
        due,
        from,
        url,
        channel,
        key,
        secret,
    } = c;
    tokio::time::sleep_until(due).await;
    let user = format!("u{i}");
    s.user = user.clone();
    let mut marked_done = false;
    // Counted once: the client's view is complete, or it has failed.
    let mut done = || {
        if !marked_done {
            marked_done = true;
            storm.done.fetch_add(1, Ordering::Relaxed);
        }
    };
    let mut conn = match tokio::time::timeout(Duration::from_secs(30), connect(url, from)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            s.error = Some(format!("client {i}: {e}"));
            done();
            return;
        }
        Err(_) => {
            s.error = Some(format!("client {i}: no connection_established within 30 s"));
            done();
            return;
        }
    };
    let now = Instant::now();
    s.connected_at = Some(now.saturating_duration_since(storm.start));
    s.connect_us = Some(now.saturating_duration_since(due).as_micros() as u64);
    s.data_not_string += u64::from(conn.data_not_string);
    let sub = presence_subscribe(channel, &conn.socket_id, &user, key, secret);
    let sent = Instant::now();
    if let Err(e) = send_text(&mut conn.ws, sub).await {
        s.error = Some(format!("client {i}: subscribe: {e}"));
        done();
        return;
    }
    let mut view: Option<HashSet<String>> = None;
    // Users whose member_added came before this client's snapshot.
    let mut early: HashSet<String> = HashSet::new();
    loop {
        let frame = tokio::select! {
            biased;
            _ = stop.changed() => break,
            f = conn.ws.next() => f,
        };
        // Once the run is over, clients close: what that causes (`member_removed`
        // from a server without a leave grace) is not part of the storm.
        if *stop.borrow() {
            break;
        }
        let text = match frame {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(f))) => {
                s.disconnected = true;
                if s.error.is_none() {
                    s.error = Some(format!(
                        "client {i}: closed {:?}",
                        f.map(|f| (u16::from(f.code), f.reason.to_string()))
                    ));
                }
                break;
            }
            Some(Err(e)) => {
                s.disconnected = true;
                s.error.get_or_insert_with(|| format!("client {i}: {e}"));
                break;
            }
            None => {
                s.disconnected = true;
                break;
            }
            Some(Ok(_)) => continue,
        };
        let at = Instant::now();
        let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else {
            s.pusher_errors.push(format!("non-JSON frame: {text}"));
            continue;
        };
        let event = v.get("event").and_then(Value::as_str).unwrap_or("");
        let (data, as_string) = data_of(&v);
        if event.starts_with("pusher") && !as_string && !data.is_null() {
            s.data_not_string += 1;
        }
        match event {
            "pusher_internal:subscription_succeeded" => {
                let snap = snapshot_of(&data);
                s.subscribed_at = Some(at.saturating_duration_since(storm.start));
                s.subscribe_us = Some(at.saturating_duration_since(sent).as_micros() as u64);
                s.snapshot_size = Some(snap.ids.len());
                s.snapshot_inconsistent = !snap.consistent;
                view = Some(snap.ids.into_iter().collect());
            }
            "pusher_internal:member_added" => {
                s.member_added += 1;
                let id = data.get("user_id").and_then(Value::as_str).unwrap_or("");
                if id == user {
                    s.own_added += 1;
                }
                if s.removed_users.iter().any(|u| u == id) {
                    s.readded += 1;
                }
                match &mut view {
                    None => {
                        s.added_before_snapshot += 1;
                        early.insert(id.to_owned());
                    }
                    Some(v) => {
                        if !v.insert(id.to_owned()) {
                            s.duplicates += 1;
                        }
                    }
                }
            }
            "pusher_internal:member_removed" => {
                s.removed += 1;
                let id = data.get("user_id").and_then(Value::as_str).unwrap_or("");
                if s.removed_frames.len() < 3 {
                    let ms = at.saturating_duration_since(storm.start).as_millis() as u64;
                    s.removed_frames.push((ms, text.as_str().to_owned()));
                }
                s.removed_users.push(id.to_owned());
                if let Some(v) = &mut view {
                    v.remove(id);
                }
            }
            "pusher:ping" => {
                let _ = send_text(&mut conn.ws, PONG.to_owned()).await;
            }
            "pusher:error" | "pusher:subscription_error" => {
                s.pusher_errors.push(format!("client {i}: {event} {data}"));
                if event == "pusher:subscription_error" {
                    s.error
                        .get_or_insert_with(|| format!("client {i}: {event} {data}"));
                    done();
                }
            }
            _ => {}
        }
        if let Some(v) = &view {
            s.view_size_at_end = v.len();
            if s.complete_at.is_none() && v.len() >= storm.clients {
                s.complete_at = Some(at.saturating_duration_since(storm.start));
                done();
            }
        }
    }
    done();
    if let Some(v) = &view {
        for u in (0..storm.clients).map(|n| format!("u{n}")) {
            if !v.contains(&u) {
                s.missing += 1;
                if early.contains(&u) {
                    s.missing_added_before_snapshot += 1;
                }
                if s.missing_users.len() < 5 {
                    s.missing_users.push(u);
                }
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), conn.ws.close(None)).await;
}
