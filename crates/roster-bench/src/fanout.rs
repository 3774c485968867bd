//! `fanout`: M members in one room; S senders (members too) send `STATE` updates
//! open-loop on a fixed timetable (update k is due at start + k/U), each carrying its
//! intended send time `{"t": unix nanos}`. Every member records, for every update it
//! sees in `PRESENCE_DIFF.updates`, receive time − intended time into an
//! HdrHistogram, so a late sender or a stalled server both show up as latency
//! (no coordinated omission). Updates due in the warm-up are sent but not recorded.
//!
//! The room's members may be spread over the nodes of a cluster (`--nodes`, running
//! servers sharing one engine; or `--node-count` servers started from
//! `--server-bin`): member i connects to node i mod N, and the senders are members
//! 0, N, 2N, …, all on the first node, so every delivery to another node has
//! crossed the engine. Latency is reported per receiving node as well.
//!
//! Before the updates the run measures the join rate: every member first opens its
//! session (`HELLO`), then the members `SUB` to the room with `--join-concurrency`
//! in flight; join latency is `SUB` sent → `PRESENCE` received, joins/s is members /
//! the phase's wall time. Each member's reader runs from the `SUB` on, so the join
//! diffs are consumed as they come and the `seq` is checked from the snapshot on.
//!
//! With `--redis URL` (the Redis the nodes use) the report adds, per phase (open,
//! join, an idle second, updates), Redis calls per operation by command, script
//! calls, bytes and Redis CPU (see `redis_info`).
//!
//! The server coalesces a room's changes for `diff_window` (50 ms by default), which
//! adds up to that much latency by design: run with `--diff-window 0ms` for raw
//! delivery latency, and without for the default configuration.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use clap::Args;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{oneshot, watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::measure::{self, micros_histogram, summary_ms, unix_nanos};
use crate::redis_info::{self, RedisInfo};
use crate::server::Server;
use crate::token::TokenMinter;
use crate::wire::{open_hello, Ws};
use crate::{http, parse_duration, Target};

#[derive(Args, Debug)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub target: Target,
    /// Running nodes of one cluster (servers sharing one engine), comma-separated:
    /// ws://HOST:PORT/ws, http://HOST:PORT or HOST:PORT. Member i joins through node
    /// i mod N; the senders are members 0, N, 2N, … (all on the first node).
    /// Instead of --url/--server-bin.
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["url", "server_bin"])]
    pub nodes: Vec<String>,
    /// PIDs of the --nodes, in the same order (for their CPU figures).
    #[arg(long, value_delimiter = ',', requires = "nodes")]
    pub server_pids: Vec<u32>,
    /// Start this many servers from --server-bin (same environment, e.g.
    /// --server-env ROSTER_ENGINE_URL=… and ROSTER_ENGINE_PREFIX=…) and spread the
    /// members over them as with --nodes.
    #[arg(long, default_value_t = 1, requires = "server_bin")]
    pub node_count: usize,
    /// The Redis the nodes use (redis://HOST:PORT): INFO is sampled at each phase's
    /// ends and reported per operation (calls by command, CPU, bytes).
    #[arg(long)]
    pub redis: Option<String>,
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
    /// Quiet time between the join phase and the updates (the last join diffs
    /// drain; with --redis, its last second is Redis's background rate).
    #[arg(long, default_value = "1500ms", value_parser = parse_duration)]
    pub settle: Duration,
    /// Room key.
    #[arg(long, default_value = "bench:fanout")]
    pub room: String,
    /// Declare the room first through REST (`POST /api/v1/rooms`, type BROADCAST,
    /// capacity = members) so ad-hoc room capacity does not cap the run.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub create_room: bool,
    /// Openings (HELLO) in flight, and joins (SUB) unless --join-concurrency says.
    #[arg(long, default_value_t = 100)]
    pub concurrency: usize,
    /// Joins (SUB) in flight in the join phase, all nodes together (default:
    /// --concurrency).
    #[arg(long)]
    pub join_concurrency: Option<usize>,
}

/// The parts of a `PRESENCE`, `PRESENCE_DIFF` or `ERROR` the reader needs;
/// everything else is skipped.
#[derive(Deserialize)]
struct DiffView<'a> {
    #[serde(rename = "type", borrow)]
    ty: &'a str,
    #[serde(borrow)]
    room: Option<&'a str>,
    seq: Option<u64>,
    updates: Option<Vec<UpdateView>>,
    code: Option<String>,
    message: Option<String>,
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
    k: Option<u64>,
}

/// What one member saw.
struct MemberStats {
    node: usize,
    latency: Histogram<u64>,
    deliveries: u64,
    frames: u64,
    gaps: u64,
    /// A diff whose `seq` was not above the last one seen (a duplicate or reorder).
    regressions: u64,
    /// A diff of the room before the member's snapshot of it.
    diffs_before_snapshot: u64,
    /// Updates this member got in a diff whose `seq` differs from the one another
    /// member (on any node) got the same update in.
    seq_mismatches: u64,
    disconnected: bool,
}

/// Everything that arrived for one receiving node.
struct NodeTotals {
    latency: Histogram<u64>,
    deliveries: u64,
    frames: u64,
    members: u64,
}

/// The measured window of the update phase (unix ns), set once the timetable is,
/// and each update's slowest delivery so far (µs, by k), to tell a few stalled
/// updates from a slow walk over every member.
struct WindowInfo {
    from: u64,
    to: u64,
    slowest: Vec<AtomicU64>,
    /// The `seq` of the diff that first carried update k, plus one (0: not seen):
    /// every member, on every node, must get update k in a diff of that `seq`.
    seq_of: Vec<AtomicU64>,
}

type Window = Arc<OnceLock<WindowInfo>>;

/// When a member's `PRESENCE` arrived, or why it did not.
type Joined = Result<Instant, String>;

/// Member i connects to node i mod N.
fn node_of(i: usize, nodes: usize) -> usize {
    i % nodes
}

/// The senders are the first `senders` members of node 0 (members 0, N, 2N, …):
/// sender r sends updates r, r + senders, r + 2·senders, …
fn sender_rank(i: usize, senders: usize, nodes: usize) -> Option<usize> {
    (i.is_multiple_of(nodes) && i / nodes < senders).then_some(i / nodes)
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
    let redis = a.redis.as_deref().map(RedisInfo::new).transpose()?;
    let nodes = Server::cluster(&a.target, &a.nodes, &a.server_pids, a.node_count.max(1))?;
    let n_nodes = nodes.len();
    if (a.senders - 1) * n_nodes >= a.members {
        return Err(format!(
            "{} senders on the first of {n_nodes} nodes need at least {} members",
            a.senders,
            (a.senders - 1) * n_nodes + 1
        ));
    }
    let server = &nodes[0];
    let minter = TokenMinter::new(&a.target.token_secret, &a.target.tenant);
    let room_setup = if a.create_room {
        declare_room(server, &minter, &a).await
    } else {
        json!("skipped")
    };
    let loadavg_before = measure::loadavg();
    let cpu_now = || -> Vec<Option<(f64, f64)>> {
        nodes
            .iter()
            .map(|n| n.pid.and_then(measure::process_cpu))
            .collect()
    };
    let cpu_between = |b: &[Option<(f64, f64)>], e: &[Option<(f64, f64)>]| -> Vec<Value> {
        b.iter()
            .zip(e)
            .map(|(b, e)| measure::cpu_delta(*b, *e))
            .collect()
    };
    let sample = || async {
        match &redis {
            Some(r) => Some(r.sample().await),
            None => None,
        }
    };
    let redis_delta = |b: &Option<Result<redis_info::Sample, String>>,
                       e: &Option<Result<redis_info::Sample, String>>,
                       ops: u64,
                       op: &str| match (b, e) {
        (Some(Ok(b)), Some(Ok(e))) => redis_info::delta(b, e, ops, op),
        (Some(Err(err)), _) | (_, Some(Err(err))) => json!({"error": err}),
        _ => Value::Null,
    };

    // Open phase: every member's session (HELLO, in no room yet).
    let r_open = sample().await;
    let cpu_open = cpu_now();
    let open_began = Instant::now();
    let permits = Arc::new(Semaphore::new(a.concurrency.max(1)));
    let mut opens = JoinSet::new();
    for i in 0..a.members {
        let token = minter.mint(&format!("bench-f{i}"), &[])?;
        let url = nodes[node_of(i, n_nodes)].ws_url.clone();
        let permits = permits.clone();
        opens.spawn(async move {
            let _permit = permits.acquire_owned().await.map_err(|e| e.to_string())?;
            let t0 = Instant::now();
            let ws = open_hello(&url, &token, &format!("fan-{i}"), Duration::from_secs(30))
                .await
                .map_err(|e| format!("member {i} on {url}: {e}"))?;
            Ok::<_, String>((i, ws, t0.elapsed()))
        });
    }
    let mut hello_latency = micros_histogram();
    let mut opened: Vec<Option<Ws>> = (0..a.members).map(|_| None).collect();
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
    let open_s = open_began.elapsed().as_secs_f64();
    let r_join = sample().await;
    let cpu_join = cpu_now();

    // Join phase: readers start now; each member's SUB is timed to its PRESENCE.
    let join_concurrency = a.join_concurrency.unwrap_or(a.concurrency).max(1);
    let permits = Arc::new(Semaphore::new(join_concurrency));
    let window: Window = Arc::new(OnceLock::new());
    let (stop, stop_rx) = watch::channel(false);
    let mut readers = JoinSet::new();
    let mut joins = JoinSet::new();
    let join_began = Instant::now();
    for (i, ws) in opened.into_iter().enumerate() {
        let Some(ws) = ws else {
            return Err(format!("member {i} has no session"));
        };
        let node = node_of(i, n_nodes);
        let (mut sink, stream) = ws.split();
        let (joined_tx, joined_rx) = oneshot::channel::<Joined>();
        readers.spawn(read_member(
            stream,
            node,
            a.room.clone(),
            window.clone(),
            joined_tx,
            stop_rx.clone(),
        ));
        let (room, permits) = (a.room.clone(), permits.clone());
        joins.spawn(async move {
            let _permit = permits.acquire_owned().await.map_err(|e| e.to_string())?;
            let t0 = Instant::now();
            let sub = json!({"type": "SUB", "ref": "s", "room": room});
            sink.send(Message::text(sub.to_string()))
                .await
                .map_err(|e| format!("member {i}: SUB: {e}"))?;
            let at = match tokio::time::timeout(Duration::from_secs(30), joined_rx).await {
                Err(_) => return Err(format!("member {i}: no PRESENCE within 30 s")),
                Ok(Err(_)) => return Err(format!("member {i}: connection ended before PRESENCE")),
                Ok(Ok(Err(e))) => return Err(format!("member {i}: SUB {room}: {e}")),
                Ok(Ok(Ok(at))) => at,
            };
            Ok::<_, String>((i, node, sink, at.saturating_duration_since(t0)))
        });
    }
    let mut join_latency = micros_histogram();
    let mut join_latency_by_node: Vec<Histogram<u64>> =
        (0..n_nodes).map(|_| micros_histogram()).collect();
    let mut sinks: Vec<Option<SplitSink<Ws, Message>>> = (0..a.members).map(|_| None).collect();
    while let Some(r) = joins.join_next().await {
        match r {
            Ok(Ok((i, node, sink, took))) => {
                measure::record(&mut join_latency, took.as_micros() as u64);
                measure::record(&mut join_latency_by_node[node], took.as_micros() as u64);
                sinks[i] = Some(sink);
            }
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
    let join_s = join_began.elapsed().as_secs_f64();
    let r_joined = sample().await;
    let cpu_joined = cpu_now();

    // Settle: the last join diffs drain; the last second is Redis's idle rate.
    let idle = a.settle.min(Duration::from_secs(1));
    tokio::time::sleep(a.settle.saturating_sub(idle)).await;
    let r_idle = sample().await;
    tokio::time::sleep(idle).await;
    let r_idle_end = sample().await;

    // Timetable: update k is due at base + k / U.
    let base = Instant::now() + Duration::from_millis(500);
    let base_unix = unix_nanos() + 500_000_000;
    let interval = Duration::from_secs_f64(1.0 / a.updates_per_sec);
    let total_updates = ((a.warmup + a.duration).as_secs_f64() * a.updates_per_sec).floor() as u64;
    let measure_from = base_unix + a.warmup.as_nanos() as u64;
    let measure_to = measure_from + a.duration.as_nanos() as u64;
    let _ = window.set(WindowInfo {
        from: measure_from,
        to: measure_to,
        slowest: (0..total_updates).map(|_| AtomicU64::new(0)).collect(),
        seq_of: (0..total_updates).map(|_| AtomicU64::new(0)).collect(),
    });

    let mut senders = JoinSet::new();
    let mut idle_sinks = Vec::new();
    for (i, sink) in sinks.into_iter().enumerate() {
        let Some(sink) = sink else { continue };
        if let Some(rank) = sender_rank(i, a.senders, n_nodes) {
            let plan = SendPlan {
                first: rank as u64,
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
    let r_updates = sample().await;
    let server_cpu_before = cpu_now();
    let bench_cpu_before = measure::self_cpu();

    let mut lateness = micros_histogram();
    let mut sent_in_window = 0u64;
    let mut sent_total = 0u64;
    let mut send_errors = Vec::new();
    while let Some(r) = senders.join_next().await {
        match r {
            Ok(Ok(s)) => {
                let _ = lateness.add(&s.lateness);
                sent_in_window += s.sent_in_window(measure_from, measure_to, base_unix, interval);
                sent_total += s.ks.len() as u64;
            }
            Ok(Err(e)) => send_errors.push(e),
            Err(e) => send_errors.push(e.to_string()),
        }
    }
    tokio::time::sleep(a.drain).await;
    let server_cpu_after = cpu_now();
    let r_updates_end = sample().await;
    let bench_cpu_during = measure::cpu_delta(bench_cpu_before, measure::self_cpu());
    stop.send_replace(true);

    let mut latency = micros_histogram();
    let mut per_node: Vec<NodeTotals> = (0..n_nodes)
        .map(|_| NodeTotals {
            latency: micros_histogram(),
            deliveries: 0,
            frames: 0,
            members: 0,
        })
        .collect();
    let (mut deliveries, mut frames, mut gaps, mut disconnected) = (0u64, 0u64, 0u64, 0u64);
    let (mut regressions, mut early_diffs, mut seq_mismatches) = (0u64, 0u64, 0u64);
    while let Some(r) = readers.join_next().await {
        if let Ok(m) = r {
            let _ = latency.add(&m.latency);
            let n = &mut per_node[m.node];
            let _ = n.latency.add(&m.latency);
            n.deliveries += m.deliveries;
            n.frames += m.frames;
            n.members += 1;
            deliveries += m.deliveries;
            frames += m.frames;
            gaps += m.gaps;
            regressions += m.regressions;
            early_diffs += m.diffs_before_snapshot;
            seq_mismatches += m.seq_mismatches;
            disconnected += u64::from(m.disconnected);
        }
    }
    drop(idle_sinks);
    let expected = sent_in_window * a.members as u64;
    let secs = a.duration.as_secs_f64().max(1e-9);
    let mut other_nodes = micros_histogram();
    for n in per_node.iter().skip(1) {
        let _ = other_nodes.add(&n.latency);
    }
    let by_node: Vec<Value> = per_node
        .iter()
        .enumerate()
        .map(|(i, n)| {
            json!({
                "node": i,
                "url": nodes[i].ws_url,
                "pid": nodes[i].pid,
                "members": n.members,
                "senders": if i == 0 { a.senders } else { 0 },
                "deliveries": n.deliveries,
                "deliveries_expected": sent_in_window * n.members,
                "diff_frames_per_s": (n.frames as f64 / secs).round(),
                "latency_ms": summary_ms(&n.latency),
                "join_latency_ms": summary_ms(&join_latency_by_node[i]),
            })
        })
        .collect();
    // Each measured update's slowest delivery: the 5 slowest, and their spread.
    let mut slowest: Vec<(u64, u64)> = window
        .get()
        .map(|w| {
            w.slowest
                .iter()
                .enumerate()
                .map(|(k, us)| (k as u64, us.load(Ordering::Relaxed)))
                .filter(|(_, us)| *us > 0)
                .collect()
        })
        .unwrap_or_default();
    let mut per_update_max = micros_histogram();
    for (_, us) in &slowest {
        measure::record(&mut per_update_max, *us);
    }
    slowest.sort_by_key(|&(_, us)| std::cmp::Reverse(us));
    let slowest_updates: Vec<Value> = slowest
        .iter()
        .take(5)
        .map(|(k, us)| {
            json!({
                "k": k,
                "due_s_after_window_start": measure::round3(
                    (interval.as_secs_f64() * *k as f64) - a.warmup.as_secs_f64()
                ),
                "slowest_delivery_ms": *us as f64 / 1000.0,
            })
        })
        .collect();
    let update_cpu = cpu_between(&server_cpu_before, &server_cpu_after);
    let join_cpu = cpu_between(&cpu_join, &cpu_joined);
    let open_cpu = cpu_between(&cpu_open, &cpu_join);
    let members = a.members as u64;
    let redis_report = redis.as_ref().map(|_| {
        json!({
            "open": redis_delta(&r_open, &r_join, members, "session"),
            "join": redis_delta(&r_join, &r_joined, members, "join"),
            "idle": redis_delta(&r_idle, &r_idle_end, 0, ""),
            "updates": redis_delta(&r_updates, &r_updates_end, sent_total, "update"),
        })
    });
    let report = json!({
        "scenario": "fanout",
        "command": measure::command_line(),
        "server": {"url": server.ws_url, "pid": server.pid, "config": server.config},
        "nodes": by_node,
        "room": a.room,
        "room_setup": room_setup,
        "members": a.members,
        "senders": a.senders,
        "updates_per_sec": a.updates_per_sec,
        "warmup_s": a.warmup.as_secs_f64(),
        "duration_s": a.duration.as_secs_f64(),
        "open_phase": {
            "elapsed_s": measure::round3(open_s),
            "sessions_per_s": (a.members as f64 / open_s.max(1e-9)).round(),
            "hello_latency_ms": summary_ms(&hello_latency),
            "server_cpu": measure::cpu_sum(&open_cpu),
        },
        "join_phase": {
            "concurrency": join_concurrency,
            "elapsed_s": measure::round3(join_s),
            "joins_per_s": (a.members as f64 / join_s.max(1e-9)).round(),
            "join_latency_ms": summary_ms(&join_latency),
            "server_cpu": measure::cpu_sum(&join_cpu),
            "server_cpu_by_node": join_cpu,
        },
        "join_phase_s": measure::round3(join_s),
        "updates_sent_total": sent_total,
        "updates_sent_in_window": sent_in_window,
        "deliveries": deliveries,
        "deliveries_expected": expected,
        "delivery_ratio": if expected > 0 { measure::round3(deliveries as f64 / expected as f64) } else { 0.0 },
        "deliveries_per_s": (deliveries as f64 / secs).round(),
        "diff_frames_per_s_all_members": (frames as f64 / secs).round(),
        "latency_ms": summary_ms(&latency),
        "latency_ms_publisher_node": summary_ms(&per_node[0].latency),
        "latency_ms_other_nodes": if n_nodes > 1 { summary_ms(&other_nodes) } else { Value::Null },
        "slowest_delivery_per_update_ms": summary_ms(&per_update_max),
        "slowest_updates": slowest_updates,
        "send_lateness_in_window_ms": summary_ms(&lateness),
        "seq_gaps": gaps,
        "seq_regressions": regressions,
        "diffs_before_snapshot": early_diffs,
        "update_seq_mismatches": seq_mismatches,
        "members_disconnected": disconnected,
        "send_errors": send_errors,
        "server_cpu_during_run": measure::cpu_sum(&update_cpu),
        "server_cpu_by_node": update_cpu,
        "server_rss_bytes": nodes.iter().map(|n| n.pid.and_then(measure::rss_bytes)).collect::<Vec<_>>(),
        "redis": redis_report,
        "loadavg_before": loadavg_before,
        "loadavg_after": measure::loadavg(),
        "bench_cpu_during_run": bench_cpu_during,
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

/// Reads one member's socket until stopped: first until the room's `PRESENCE`
/// (told to `joined`), then timing every update in every diff.
async fn read_member(
    mut stream: SplitStream<Ws>,
    node: usize,
    room: String,
    window: Window,
    joined: oneshot::Sender<Joined>,
    mut stop: watch::Receiver<bool>,
) -> MemberStats {
    let mut s = MemberStats {
        node,
        latency: micros_histogram(),
        deliveries: 0,
        frames: 0,
        gaps: 0,
        regressions: 0,
        diffs_before_snapshot: 0,
        seq_mismatches: 0,
        disconnected: false,
    };
    let mut joined = Some(joined);
    let mut seq: Option<u64> = None;
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
        let at = Instant::now();
        let now = unix_nanos();
        // Typed, borrowing parse of only the fields needed: keeps the reader cheap so
        // the bench's own CPU adds as little as possible to the latency it measures.
        let Ok(msg) = serde_json::from_str::<DiffView>(text.as_str()) else {
            continue;
        };
        if let Some(tx) = joined.take() {
            match msg.ty {
                "PRESENCE" | "PRESENCE_COUNT" if msg.room == Some(room.as_str()) => {
                    seq = msg.seq;
                    let _ = tx.send(Ok(at));
                }
                "ERROR" => {
                    let _ = tx.send(Err(format!(
                        "server error {}: {}",
                        msg.code.as_deref().unwrap_or("?"),
                        msg.message.as_deref().unwrap_or("")
                    )));
                }
                "PRESENCE_DIFF" if msg.room == Some(room.as_str()) => {
                    s.diffs_before_snapshot += 1;
                    joined = Some(tx);
                }
                _ => joined = Some(tx),
            }
            continue;
        }
        if msg.ty != "PRESENCE_DIFF" || msg.room != Some(room.as_str()) {
            continue;
        }
        let info = window.get();
        let (from, to) = info.map_or((u64::MAX, u64::MAX), |w| (w.from, w.to));
        if (from..to).contains(&now) {
            s.frames += 1;
        }
        if let Some(got) = msg.seq {
            if let Some(prev) = seq {
                if got > prev + 1 {
                    s.gaps += 1;
                } else if got <= prev {
                    s.regressions += 1;
                }
            }
            seq = Some(got);
        }
        for u in msg.updates.into_iter().flatten() {
            let Some(st) = u.session.and_then(|s| s.state) else {
                continue;
            };
            let Some(t) = st.t else { continue };
            if (from..to).contains(&t) {
                let us = now.saturating_sub(t) / 1000;
                s.deliveries += 1;
                measure::record(&mut s.latency, us);
                let slot = st.k.and_then(|k| info?.slowest.get(k as usize));
                if let Some(slot) = slot {
                    slot.fetch_max(us, Ordering::Relaxed);
                }
                let first = st.k.and_then(|k| info?.seq_of.get(k as usize));
                if let (Some(first), Some(seq)) = (first, msg.seq) {
                    let r =
                        first.compare_exchange(0, seq + 1, Ordering::Relaxed, Ordering::Relaxed);
                    if r.is_err_and(|had| had != seq + 1) {
                        s.seq_mismatches += 1;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn senders_join_through_the_first_node_the_rest_round_robin() {
        let nodes: Vec<usize> = (0..7).map(|i| node_of(i, 3)).collect();
        assert_eq!(nodes, [0, 1, 2, 0, 1, 2, 0]);
        let senders: Vec<Option<usize>> = (0..12).map(|i| sender_rank(i, 3, 3)).collect();
        let s = |r| Some(r);
        assert_eq!(
            senders,
            [
                s(0),
                None,
                None,
                s(1),
                None,
                None,
                s(2),
                None,
                None,
                None,
                None,
                None
            ]
        );
        let one_node: Vec<Option<usize>> = (0..5).map(|i| sender_rank(i, 4, 1)).collect();
        assert_eq!(one_node, [s(0), s(1), s(2), s(3), None]);
    }
}
