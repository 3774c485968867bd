//! `lifecycle`: the entity lifecycle from Kafka (SPEC §6, docs/EVENTS.md "Lifecycle
//! in") end to end: a message produced to the mutating or mutated topic → the
//! `ENTITY` at the room's subscribed member. Events/s applied, latency percentiles,
//! and whether every message produced its `ENTITY`, with the right state.
//!
//! Kafka is librdkafka's mock cluster, run inside the bench process (one broker on a
//! 127.0.0.1 port), or a running broker given by `--brokers` (topics created through
//! the admin API): the lifecycle topics with `--partitions` partitions each, their
//! `.dlt` topics, and the server's event and status topics (one partition each) are
//! created before the server starts. The server is started from `--server-bin` with
//! `ROSTER_KAFKA_BROKERS` = that address and `ROSTER_KAFKA_SESSION_TIMEOUT=6s`
//! (unless `--server-env` gives one); `--server-env ROSTER_KAFKA_*_TOPIC` names other
//! topics and the bench creates those instead.
//!
//! The mock answers a fetch that finds no new data only after the consumer's whole
//! `fetch.wait.max.ms` (librdkafka's default 500 ms, which the server keeps), where
//! Kafka answers as soon as data arrives: on the mock a message waits 0–500 ms for
//! the consumer's next fetch, whatever the server does (tansu 0.6.0 holds every
//! fetch 250 ms, with the same effect). The minimum latency is the floor the server
//! and the network add.
//!
//! S sessions (`--rooms`) each `SUB` to their own room `<entity>:<i>` of the tokens'
//! tenant. A probe session joins `<entity>:probe`, and a `MUTATING` then a `MUTATED`
//! for it must come back as `ENTITY` before anything is timed (the consumer group's
//! first join on the mock takes ~3 s).
//!
//! Then message k (k < `--events`) is due at start + k/R (R = `--events-per-sec`,
//! open loop: one thread sleeps to each due time and hands the message to a
//! librdkafka producer, never skipping a late one): room k mod S, and that room's
//! n-th message (n = k div S) is a `MUTATING` when n is even and a `MUTATED` when it
//! is odd, so each one changes the room's state and yields exactly one `ENTITY`:
//! after the n-th, `stale` = n even, `busyBy` = `etl` when stale (else null),
//! `version` = (n + 1) div 2. The message is `{tenantId, entity, id: i, userId:
//! "etl", eventId}` (a unique `eventId`, so the server's once-per-`eventId` window
//! is read and written for every message; `--event-ids false` leaves it out), keyed
//! `tenant:entity:i` so a room's messages stay in one partition of each topic. The
//! producer is idempotent (`acks=all`, no reordering by its retries), `linger.ms` =
//! `--linger`.
//!
//! Each room keeps a FIFO of its messages produced and not yet seen. An `ENTITY` takes
//! the oldest: latency = arrival − that message's *intended* send time (so a late
//! producer or a backlog in the consumer both show as latency), and its `stale`,
//! `busyBy` and `version` must be what that message leaves (else a mismatch). An
//! `ENTITY` with nothing pending is unexpected. A room's two topics are not ordered
//! together: when the consumer fetches a room's MUTATING and MUTATED in one go, it
//! may apply the MUTATED first; its ENTITY then shows the state of the message after
//! the one expected (`mismatches_overtaken`), and a room whose last ENTITY is not
//! the state its last message leaves is counted in `rooms_left_in_wrong_state`.
//! Messages due in `--warmup` are sent but not timed. After the last message the
//! bench waits (≤ `--wait`) for the FIFOs to empty; what is left is missing.
//! Applied/s = timed `ENTITY`s ÷ (last − first arrival). During the run `/metrics`
//! is sampled every `--sample-interval` for `roster_kafka_consumer_lag` (the server
//! updates it every 2 s) and `roster_kafka_lifecycle_events_total`; after it, read
//! until the lag gauge says 0 (≤ `--lag-wait`: `after_run`). The server's CPU and the
//! bench's (by thread: the mock broker's and the producer's librdkafka threads are
//! the bench's) are over the run, from the first message's due time to the last
//! `ENTITY`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use crate::measure::{self, micros_histogram, round3, summary_ms};
use crate::server::Server;
use crate::token::TokenMinter;
use crate::wire::{self, Ws};
use crate::{churn, http, parse_duration, prom, Target};

/// The server's topics, by the variable that renames each and its default.
const MUTATING_TOPIC: (&str, &str) = (
    "ROSTER_KAFKA_MUTATING_TOPIC",
    "core.entities.lifecycle.mutating",
);
const MUTATED_TOPIC: (&str, &str) = (
    "ROSTER_KAFKA_MUTATED_TOPIC",
    "core.entities.lifecycle.mutated",
);
const EVENTS_TOPIC: (&str, &str) = ("ROSTER_KAFKA_EVENTS_TOPIC", "roster.presence.events");
const STATUS_TOPIC: (&str, &str) = ("ROSTER_KAFKA_STATUS_TOPIC", "user.presence.status");
const BROKERS: &str = "ROSTER_KAFKA_BROKERS";
const SESSION_TIMEOUT: &str = "ROSTER_KAFKA_SESSION_TIMEOUT";

const LIFECYCLE_EVENTS: &str = "roster_kafka_lifecycle_events_total";
const CONSUMER_LAG: &str = "roster_kafka_consumer_lag";

/// The `userId` of every message (the `busyBy` of a stale room).
const BY: &str = "etl";
/// How often an idle session says it is alive (under the server's 45 s timeout).
const HEARTBEAT: Duration = Duration::from_secs(15);

#[derive(Args, Debug)]
pub struct LifecycleArgs {
    #[command(flatten)]
    pub target: Target,
    /// Rooms `<entity>:0` … `<entity>:<rooms-1>`, one session subscribed to each.
    #[arg(long, default_value_t = 200)]
    pub rooms: usize,
    /// Messages in the whole run (message k to room k mod rooms; a room's messages
    /// alternate MUTATING, MUTATED).
    #[arg(long, default_value_t = 5000)]
    pub events: u64,
    /// Messages per second, all rooms together (open loop).
    #[arg(long, default_value_t = 500.0)]
    pub events_per_sec: f64,
    /// Messages due in this first part of the run are sent but not timed.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// After the last message, how long to wait for the ENTITYs still missing.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub wait: Duration,
    /// How long each probe message may take to come back as ENTITY (the first one
    /// waits for the consumer group's first join).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub probe_wait: Duration,
    /// Partitions of each lifecycle topic.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// A running Kafka-protocol broker (HOST:PORT, e.g. tansu) instead of the
    /// in-process mock cluster; the bench creates the topics through the admin API.
    #[arg(long)]
    pub brokers: Option<String>,
    /// Give every message a unique `eventId` (the server then reads and writes its
    /// once-per-eventId window in the database for each one).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub event_ids: bool,
    /// After the run, how long to wait for the server's consumer lag gauge to read 0.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub lag_wait: Duration,
    /// Entity of the rooms (`<entity>:<id>`).
    #[arg(long, default_value = "Order")]
    pub entity: String,
    /// The bench producer's `linger.ms` (librdkafka's default is 5 ms).
    #[arg(long, default_value = "0ms", value_parser = parse_duration)]
    pub linger: Duration,
    /// Interval between two /metrics samples during the run.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    pub sample_interval: Duration,
    /// Sessions opening at once.
    #[arg(long, default_value_t = 100)]
    pub concurrency: usize,
}

/// When message k is due and what it is.
#[derive(Clone, Copy)]
struct Plan {
    base: Instant,
    per_sec: f64,
    total: u64,
    rooms: u64,
    /// Messages due before this (from `base`) are not timed.
    warmup: Duration,
}

impl Plan {
    fn due(&self, k: u64) -> Duration {
        Duration::from_secs_f64(k as f64 / self.per_sec)
    }
    fn room_of(&self, k: u64) -> usize {
        (k % self.rooms) as usize
    }
    /// The message's place among its room's messages (0: the first).
    fn nth(&self, k: u64) -> u64 {
        k / self.rooms
    }
    fn timed(&self, k: u64) -> bool {
        self.due(k) >= self.warmup
    }
    /// The place of the room's last message (None: the room gets none).
    fn last_nth(&self, room: usize) -> Option<u64> {
        self.total
            .saturating_sub(room as u64)
            .div_ceil(self.rooms)
            .checked_sub(1)
    }
}

/// A room's entity state as `ENTITY` carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct EntityState {
    stale: bool,
    busy_by: Option<String>,
    version: u64,
}

/// Whether a room's n-th message is a MUTATING (else a MUTATED).
fn mutating(n: u64) -> bool {
    n.is_multiple_of(2)
}

/// The state a fresh room is in after its n-th message (MUTATING at even n,
/// MUTATED at odd n).
fn after(n: u64) -> EntityState {
    let stale = mutating(n);
    EntityState {
        stale,
        busy_by: stale.then(|| BY.to_owned()),
        version: n.div_ceil(2),
    }
}

fn state_json(s: Option<&EntityState>) -> Value {
    match s {
        Some(s) => json!({"stale": s.stale, "busyBy": s.busy_by, "version": s.version}),
        None => Value::Null,
    }
}

/// What the readers share with the producing thread.
struct Shared {
    plan: Plan,
    /// Per room: its messages produced and not yet seen as ENTITY, oldest first.
    pending: Vec<Mutex<VecDeque<u64>>>,
    /// Messages produced and not yet seen.
    outstanding: AtomicU64,
    tally: Mutex<Tally>,
    disconnected: AtomicU64,
}

struct Tally {
    latency: Histogram<u64>,
    received: u64,
    timed: u64,
    first_timed: Option<Instant>,
    last_timed: Option<Instant>,
    last: Option<Instant>,
    mismatches: u64,
    /// Mismatches showing the state the room's next message leaves: that message
    /// was applied before this one (the two topics are not ordered together).
    overtaken: u64,
    unexpected: u64,
    errors: u64,
    /// The first few mismatches, unexpected ENTITYs and ERRORs, in words.
    first_problems: Vec<String>,
}

impl Tally {
    fn new() -> Self {
        Tally {
            latency: micros_histogram(),
            received: 0,
            timed: 0,
            first_timed: None,
            last_timed: None,
            last: None,
            mismatches: 0,
            overtaken: 0,
            unexpected: 0,
            errors: 0,
            first_problems: Vec::new(),
        }
    }

    fn note(&mut self, what: String) {
        if self.first_problems.len() < 20 {
            self.first_problems.push(what);
        }
    }
}

/// The fields of a frame a reader looks at.
#[derive(Deserialize)]
struct FrameView {
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    room: Option<String>,
    #[serde(default)]
    stale: Option<bool>,
    #[serde(default, rename = "busyBy")]
    busy_by: Option<String>,
    #[serde(default)]
    version: Option<u64>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// The producer's delivery reports, counted.
#[derive(Default)]
struct Deliveries {
    delivered: AtomicU64,
    failed: AtomicU64,
    first_failures: Mutex<Vec<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let mut f = self
                    .first_failures
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                if f.len() < 10 {
                    f.push(e.to_string());
                }
            }
        }
    }
}

type Kafka = ThreadedProducer<Deliveries>;

/// The message to produce: its topic, key and payload.
struct Outgoing {
    topic: String,
    key: String,
    payload: String,
}

/// How the bench writes lifecycle messages.
struct Messages {
    tenant: String,
    entity: String,
    mutating_topic: String,
    mutated_topic: String,
    /// Unique to this run: the `eventId`s are `<run>-<k>`; None: no `eventId`.
    run: Option<String>,
}

impl Messages {
    fn make(&self, id: &str, mutating: bool, event: &str) -> Outgoing {
        let id_json = match id.parse::<u64>() {
            Ok(n) => json!(n),
            Err(_) => json!(id),
        };
        let mut payload = json!({
            "tenantId": self.tenant,
            "entity": self.entity,
            "id": id_json,
            "userId": BY,
        });
        if let Some(run) = &self.run {
            payload["eventId"] = json!(format!("{run}-{event}"));
        }
        Outgoing {
            topic: if mutating {
                self.mutating_topic.clone()
            } else {
                self.mutated_topic.clone()
            },
            key: format!("{}:{}:{id}", self.tenant, self.entity),
            payload: payload.to_string(),
        }
    }
}

/// Hands one message to the producer, waiting while its queue is full.
fn produce(producer: &Kafka, m: &Outgoing) -> Result<(), KafkaError> {
    loop {
        let record = BaseRecord::to(&m.topic).key(&m.key).payload(&m.payload);
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

pub async fn run(a: LifecycleArgs) -> Result<(), String> {
    validate(&a)?;
    let env = |(key, default): (&str, &str)| {
        a.target
            .server_env
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map_or(default.to_owned(), |(_, v)| v.clone())
    };
    let (mutating_topic, mutated_topic) = (env(MUTATING_TOPIC), env(MUTATED_TOPIC));

    // Kafka: the mock cluster (or the given broker) and the topics, before the
    // server subscribes.
    let mock = match &a.brokers {
        Some(_) => None,
        None => {
            Some(MockCluster::new(1).map_err(|e| format!("cannot start the mock cluster: {e}"))?)
        }
    };
    let brokers = match (&mock, &a.brokers) {
        (Some(m), _) => m.bootstrap_servers(),
        (None, b) => b.clone().unwrap_or_default(),
    };
    let mut topics = BTreeMap::new();
    for t in [&mutating_topic, &mutated_topic] {
        topics.insert(t.clone(), a.partitions);
        topics.insert(format!("{t}.dlt"), 1);
    }
    for t in [env(EVENTS_TOPIC), env(STATUS_TOPIC)] {
        if !t.is_empty() {
            topics.insert(t, 1);
        }
    }
    match &mock {
        Some(mock) => {
            for (t, partitions) in &topics {
                mock.create_topic(t, *partitions, 1)
                    .map_err(|e| format!("mock cluster: cannot create {t}: {e}"))?;
            }
        }
        None => create_topics(&brokers, &topics).await?,
    }
    let deliveries = Deliveries::default();
    let producer: Arc<Kafka> = Arc::new(
        ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("client.id", "roster-bench-lifecycle")
            .set("enable.idempotence", "true")
            .set("linger.ms", a.linger.as_millis().to_string())
            .create_with_context(deliveries)
            .map_err(|e| format!("cannot create the producer: {e}"))?,
    );

    // The server, pointed at the same broker.
    let mut target = a.target.clone();
    let mut env_first = vec![(BROKERS.to_owned(), brokers.clone())];
    if !target.server_env.iter().any(|(k, _)| k == SESSION_TIMEOUT) {
        env_first.push((SESSION_TIMEOUT.to_owned(), "6s".to_owned()));
    }
    env_first.append(&mut target.server_env);
    target.server_env = env_first;
    let server = Server::attach_or_start(&target)?;
    let loadavg = measure::loadavg();
    let (mut report, trouble) = lifecycle(
        &a,
        &server,
        &producer,
        &brokers,
        mutating_topic,
        mutated_topic,
    )
    .await?;
    report["loadavg_at_start"] = json!(loadavg);
    report["kafka"]["topics"] = json!(topics);
    drop(server);
    // librdkafka's destructors wait for their threads: not on an async thread's time.
    tokio::task::block_in_place(move || {
        drop(producer);
        drop(mock);
    });
    report["bench_cpu"] = measure::own_cpu();
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    if trouble.is_empty() {
        Ok(())
    } else {
        Err(trouble.join("; "))
    }
}

/// Creates the topics on a running broker through the admin API (one that exists
/// already is kept as it is).
async fn create_topics(brokers: &str, topics: &BTreeMap<String, i32>) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(|e| format!("--brokers {brokers}: cannot create an admin client: {e}"))?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(t, p)| NewTopic::new(t, *p, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(&new, &options)
        .await
        .map_err(|e| format!("--brokers {brokers}: cannot create the topics: {e}"))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => return Err(format!("--brokers {brokers}: topic {t}: {e}")),
        }
    }
    tokio::task::block_in_place(move || drop(admin));
    Ok(())
}

fn validate(a: &LifecycleArgs) -> Result<(), String> {
    if a.target.url.is_some() || a.target.server_bin.is_none() {
        return Err(
            "lifecycle starts its own server pointed at the bench's mock Kafka: give \
             --server-bin (not --url)"
                .into(),
        );
    }
    if a.target.server_env.iter().any(|(k, _)| k == BROKERS) {
        return Err(format!(
            "--server-env {BROKERS}: the bench sets it (its mock cluster, or --brokers)"
        ));
    }
    if a.rooms == 0 || a.events == 0 {
        return Err("--rooms and --events must be at least 1".into());
    }
    if !(a.events_per_sec > 0.0 && a.events_per_sec.is_finite()) {
        return Err("--events-per-sec must be above 0".into());
    }
    if !(1..=256).contains(&a.partitions) {
        return Err("--partitions must be 1 to 256".into());
    }
    if a.sample_interval.is_zero() {
        return Err("--sample-interval must be above 0".into());
    }
    Ok(())
}

/// The run on a started server: sessions, probe, the timed messages, the wait, the
/// report (and what went wrong: the run fails after printing it).
async fn lifecycle(
    a: &LifecycleArgs,
    server: &Server,
    producer: &Arc<Kafka>,
    brokers: &str,
    mutating_topic: String,
    mutated_topic: String,
) -> Result<(Value, Vec<String>), String> {
    let minter = TokenMinter::new(&a.target.token_secret, &a.target.tenant);
    let room_key = |id: &str| format!("{}:{id}", a.entity);
    let messages = Arc::new(Messages {
        tenant: a.target.tenant.clone(),
        entity: a.entity.clone(),
        mutating_topic,
        mutated_topic,
        run: a.event_ids.then(|| {
            format!(
                "lc{}-{}",
                std::process::id(),
                measure::unix_nanos() / 1_000_000
            )
        }),
    });

    // Open phase: one session per room, in its room.
    let (opened, open_latency, open_s) =
        churn::open_sessions_in(&server.ws_url, &minter, a.rooms, a.concurrency, |i| {
            (
                format!("bench-lc-{i}"),
                format!("lifecycle-{i}"),
                Some(room_key(&i.to_string())),
            )
        })
        .await?;

    // The probe: the consumer group has joined once a MUTATING and a MUTATED for the
    // probe room came back as ENTITY.
    let probe = probe(a, server, &minter, producer, &messages).await?;

    // Workload.
    let lead = Duration::from_millis(500);
    let plan = Plan {
        base: Instant::now() + lead,
        per_sec: a.events_per_sec,
        total: a.events,
        rooms: a.rooms as u64,
        warmup: a.warmup,
    };
    let shared = Arc::new(Shared {
        plan,
        pending: (0..a.rooms).map(|_| Mutex::new(VecDeque::new())).collect(),
        outstanding: AtomicU64::new(0),
        tally: Mutex::new(Tally::new()),
        disconnected: AtomicU64::new(0),
    });
    let (stop, stop_rx) = watch::channel(false);
    let mut readers = JoinSet::new();
    for (i, ws) in opened.into_iter().enumerate() {
        let Some(ws) = ws else { continue };
        let key = room_key(&i.to_string());
        readers.spawn(read_room(ws, i, key, shared.clone(), stop_rx.clone()));
    }
    let sampler = tokio::spawn(sample_kafka(
        server.http_base.clone(),
        plan.base,
        a.sample_interval,
        stop_rx.clone(),
    ));
    let cpu_from = (
        server.pid.and_then(measure::process_cpu),
        measure::self_cpu(),
        measure::threads_cpu(),
    );
    let sending = {
        let (shared, producer, messages) = (shared.clone(), producer.clone(), messages.clone());
        std::thread::Builder::new()
            .name("lifecycle-timetable".into())
            .spawn(move || keep_timetable(&shared, &producer, &messages))
            .map_err(|e| format!("cannot start the timetable thread: {e}"))?
    };
    let sent = tokio::task::spawn_blocking(move || sending.join())
        .await
        .map_err(|e| format!("timetable thread: {e}"))?
        .map_err(|_| "the timetable thread panicked".to_string())?;
    let last_due = plan.base + plan.due(plan.total - 1);

    // Wait for the ENTITYs still on their way.
    let deadline = Instant::now() + a.wait;
    while shared.outstanding.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ended = Instant::now();
    let cpu_to = (
        server.pid.and_then(measure::process_cpu),
        measure::self_cpu(),
        measure::threads_cpu(),
    );
    let run_s = ended.saturating_duration_since(plan.base).as_secs_f64();
    let flushed = {
        let producer = producer.clone();
        tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(5)))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
    };
    stop.send_replace(true);
    let mut final_states = Vec::with_capacity(a.rooms);
    while let Some(r) = readers.join_next().await {
        if let Ok(r) = r {
            final_states.push(r);
        }
    }
    let samples = sampler
        .await
        .map_err(|e| format!("metrics sampler failed: {e}"))?;
    // Every message was consumed (or the wait is over): the server's lag gauge,
    // read every 2 s, should come down to 0.
    let settle_began = Instant::now();
    let mut lag_zero_after_ms = None;
    let (metrics_after, scrape_error) = loop {
        let got = match http::get(&server.http_base, "/metrics").await {
            Ok((200, body)) => (Some(body), None),
            Ok((status, _)) => (None, Some(format!("GET /metrics answered {status}"))),
            Err(e) => (None, Some(e)),
        };
        let lag = got
            .0
            .as_deref()
            .map(|b| prom::parse(b).get(CONSUMER_LAG).copied());
        if lag == Some(Some(0.0)) {
            lag_zero_after_ms = Some(round3(settle_began.elapsed().as_secs_f64() * 1e3));
            break got;
        }
        if settle_began.elapsed() >= a.lag_wait {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };

    // ---------------------------------------------------------------- report
    let tally = std::mem::replace(
        &mut *shared.tally.lock().unwrap_or_else(|e| e.into_inner()),
        Tally::new(),
    );
    // Each room's last ENTITY against the state its last message leaves.
    let wrong_final: Vec<Value> = if sent.errors.is_empty() {
        final_states
            .iter()
            .filter_map(|(room, last)| {
                let want = after(plan.last_nth(*room)?);
                (last.as_ref() != Some(&want)).then(|| {
                    json!({"room": room_key(&room.to_string()), "expected": state_json(Some(&want)),
                           "last_entity": state_json(last.as_ref())})
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    let missing_by_room: Vec<usize> = shared
        .pending
        .iter()
        .map(|p| p.lock().unwrap_or_else(|e| e.into_inner()).len())
        .collect();
    let missing: usize = missing_by_room.iter().sum();
    let rooms_missing = missing_by_room.iter().filter(|&&n| n > 0).count();
    let applied_per_s = match (tally.first_timed, tally.last_timed) {
        (Some(f), Some(l)) if l > f => json!((tally.timed as f64 / (l - f).as_secs_f64()).round()),
        _ => Value::Null,
    };
    let offered_per_s = a.events_per_sec;
    let last_after_last_due_ms = tally
        .last
        .map(|l| round3(l.saturating_duration_since(last_due).as_secs_f64() * 1e3));
    let server_metrics = metrics_after.as_deref().map(|body| {
        json!({
            "lifecycle_events_total": prom::series(body, LIFECYCLE_EVENTS),
            "lifecycle_retries_total": prom::parse(body).get("roster_kafka_lifecycle_retries_total"),
            "consumer_lag": prom::series(body, CONSUMER_LAG),
        })
    });
    let lag_max = samples
        .iter()
        .filter_map(|s| s.lag)
        .fold(None, |m: Option<f64>, l| Some(m.map_or(l, |m| m.max(l))));
    let cores = |b: Option<(f64, f64)>, e: Option<(f64, f64)>| {
        let mut c = measure::cpu_delta(b, e);
        if let (Some(b), Some(e)) = (b, e) {
            c["cores"] = json!(round3(((e.0 - b.0) + (e.1 - b.1)) / run_s.max(1e-9)));
        }
        c
    };
    let mut bench_cpu = cores(cpu_from.1, cpu_to.1);
    bench_cpu["by_thread_s"] = measure::threads_cpu_delta(&cpu_from.2, &cpu_to.2);
    let deliveries = producer.context();
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let produce_failed = load(&deliveries.failed);
    let first_failures = deliveries
        .first_failures
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();

    let mut trouble = Vec::new();
    if missing > 0 {
        trouble.push(format!(
            "{missing} message(s) produced no ENTITY within {:?} ({rooms_missing} room(s))",
            a.wait
        ));
    }
    for (n, what) in [
        (
            tally.mismatches,
            "ENTITY(s) with another state than expected",
        ),
        (tally.unexpected, "ENTITY(s) with no message pending"),
        (tally.errors, "ERROR frame(s)"),
        (
            sent.errors.len() as u64,
            "message(s) not handed to the producer",
        ),
        (produce_failed, "message(s) not delivered to the broker"),
        (load(&shared.disconnected), "session(s) disconnected"),
    ] {
        if n > 0 {
            trouble.push(format!("{n} {what}"));
        }
    }
    let report = json!({
        "scenario": "lifecycle",
        "command": measure::command_line(),
        "server": {"url": server.ws_url, "pid": server.pid, "config": server.config},
        "tenant": a.target.tenant,
        "entity": a.entity,
        "rooms": a.rooms,
        "events": a.events,
        "events_per_sec": a.events_per_sec,
        "events_per_room_per_sec": round3(a.events_per_sec / a.rooms as f64),
        "warmup_s": a.warmup.as_secs_f64(),
        "event_ids": a.event_ids,
        "kafka": {
            "broker": if a.brokers.is_some() { "external (--brokers)" } else { "librdkafka mock cluster, 1 broker, in the bench process" },
            "bootstrap_servers": brokers,
            "producer": {
                "linger_ms": a.linger.as_millis() as u64,
                "idempotent": true,
                "handed_over": sent.produced,
                "delivered": load(&deliveries.delivered),
                "failed": produce_failed,
                "first_failures": first_failures,
                "flush": flushed.err(),
                "not_handed_over": sent.errors,
            },
        },
        "open_phase": {
            "elapsed_s": round3(open_s),
            "open_latency_ms": summary_ms(&open_latency),
        },
        "probe": probe,
        "run": {
            "elapsed_s": round3(run_s),
            "messages_produced": sent.produced,
            "messages_timed": sent.timed,
            "send_lateness_ms": summary_ms(&sent.lateness),
        },
        "entity": {
            "received": tally.received,
            "timed": tally.timed,
            "offered_per_s": offered_per_s,
            "applied_per_s": applied_per_s,
            "latency_ms": summary_ms(&tally.latency),
            // The floor: a message that found the consumer's fetch about to return.
            "latency_min_ms": (!tally.latency.is_empty()).then(|| tally.latency.min() as f64 / 1e3),
            // When the stream caught up: the last ENTITY after the last message was
            // due (about the latency when the server keeps up).
            "last_after_last_due_ms": last_after_last_due_ms,
            "missing": missing,
            "rooms_missing": rooms_missing,
            "mismatches": tally.mismatches,
            "mismatches_overtaken": tally.overtaken,
            // Rooms whose last ENTITY is not the state their last message leaves
            // (e.g. stale after their last MUTATED): what the members are left with.
            "rooms_left_in_wrong_state": wrong_final.len(),
            "first_rooms_left_in_wrong_state": wrong_final.iter().take(5).collect::<Vec<_>>(),
            "unexpected": tally.unexpected,
            "errors": tally.errors,
            "first_problems": tally.first_problems,
            "sessions_disconnected": load(&shared.disconnected),
        },
        "server_kafka": {
            "after_run": server_metrics,
            "scrape_error": scrape_error,
            "consumer_lag_max_in_run": lag_max,
            // After the last ENTITY (or the wait), until the gauge read 0; null: it
            // did not within --lag-wait (after_run has the last reading).
            "lag_zero_after_ms": lag_zero_after_ms,
            "samples_columns": ["t_s", "consumer_lag", "applied_total"],
            "samples": samples.iter().map(|s| json!([round3(s.t_s), s.lag, s.applied])).collect::<Vec<_>>(),
        },
        "server_cpu_in_run": cores(cpu_from.0, cpu_to.0),
        "server_rss_bytes": server.pid.and_then(measure::rss_bytes),
        "bench_cpu_in_run": bench_cpu,
    });
    Ok((report, trouble))
}

/// Produces a MUTATING then a MUTATED for `<entity>:probe` and waits for each one's
/// ENTITY on a session of that room.
async fn probe(
    a: &LifecycleArgs,
    server: &Server,
    minter: &TokenMinter,
    producer: &Arc<Kafka>,
    messages: &Messages,
) -> Result<Value, String> {
    let room = format!("{}:probe", a.entity);
    let token = minter.mint("bench-lc-probe", &[])?;
    let mut ws = wire::open_session(
        &server.ws_url,
        &token,
        "lifecycle-probe",
        &room,
        Duration::from_secs(30),
    )
    .await
    .map_err(|e| format!("probe session: {e}"))?
    .ws;
    let mut took = Vec::new();
    for (n, mutating) in [(0, true), (1, false)] {
        let m = messages.make("probe", mutating, &format!("probe-{n}"));
        let sent = Instant::now();
        produce(producer, &m).map_err(|e| format!("probe message: {e}"))?;
        let entity = tokio::time::timeout(
            a.probe_wait,
            wire::await_type(&mut ws, "ENTITY", Some(&room)),
        )
        .await
        .map_err(|_| {
            format!(
                "the probe's {} produced no ENTITY within {:?} (the server's consumer \
                 did not join the group, or does not apply; see --server-log)",
                if mutating { "MUTATING" } else { "MUTATED" },
                a.probe_wait
            )
        })?
        .map_err(|e| format!("probe session: {e}"))?;
        let want = after(n);
        let got = (
            entity["stale"].as_bool(),
            entity["busyBy"].as_str(),
            entity["version"].as_u64(),
        );
        if got
            != (
                Some(want.stale),
                want.busy_by.as_deref(),
                Some(want.version),
            )
        {
            return Err(format!(
                "the probe's ENTITY is {entity}, expected stale {}, busyBy {:?}, version {}",
                want.stale, want.busy_by, want.version
            ));
        }
        took.push(round3(sent.elapsed().as_secs_f64() * 1e3));
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    Ok(json!({
        "room": room,
        // The first waits for the consumer group's first join.
        "first_entity_after_ms": took[0],
        "second_entity_after_ms": took[1],
    }))
}

/// What the timetable thread did.
struct Sent {
    produced: u64,
    timed: u64,
    lateness: Histogram<u64>,
    errors: Vec<String>,
}

/// Sleeps to each message's due time (never skipping a late one), puts it in its
/// room's FIFO and hands it to the producer.
fn keep_timetable(shared: &Shared, producer: &Kafka, messages: &Messages) -> Sent {
    let plan = shared.plan;
    let mut s = Sent {
        produced: 0,
        timed: 0,
        lateness: micros_histogram(),
        errors: Vec::new(),
    };
    for k in 0..plan.total {
        let room = plan.room_of(k);
        let n = plan.nth(k);
        let m = messages.make(&room.to_string(), mutating(n), &k.to_string());
        let due = plan.base + plan.due(k);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let late = Instant::now().saturating_duration_since(due);
        // In the FIFO first: its ENTITY cannot come before.
        shared.pending[room]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(k);
        shared.outstanding.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = produce(producer, &m) {
            shared.pending[room]
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_back();
            shared.outstanding.fetch_sub(1, Ordering::Relaxed);
            if s.errors.len() < 20 {
                s.errors.push(format!("message {k}: {e}"));
            }
            continue;
        }
        s.produced += 1;
        if plan.timed(k) {
            s.timed += 1;
            measure::record(&mut s.lateness, late.as_micros() as u64);
        }
    }
    s
}

/// Reads room `room`'s session until stopped (heartbeating meanwhile): matches each
/// ENTITY to the room's oldest pending message, checks its state, times it. Answers
/// the room and the last state an ENTITY gave.
async fn read_room(
    mut ws: Ws,
    room: usize,
    key: String,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> (usize, Option<EntityState>) {
    let plan = shared.plan;
    let mut last = None;
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.tick().await;
    loop {
        let frame = tokio::select! {
            _ = stop.changed() => return (room, last),
            _ = heartbeat.tick() => {
                if ws.send(Message::text(r#"{"type":"HB","active":true}"#)).await.is_err() {
                    shared.disconnected.fetch_add(1, Ordering::Relaxed);
                    return (room, last);
                }
                continue;
            }
            frame = ws.next() => frame,
        };
        let text = match frame {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                shared.disconnected.fetch_add(1, Ordering::Relaxed);
                return (room, last);
            }
            Some(Ok(_)) => continue,
        };
        let now = Instant::now();
        let Ok(f) = serde_json::from_str::<FrameView>(text.as_str()) else {
            continue;
        };
        match f.ty.as_str() {
            "ENTITY" => {
                let k = shared.pending[room]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .pop_front();
                let mut t = shared.tally.lock().unwrap_or_else(|e| e.into_inner());
                let Some(k) = k else {
                    t.unexpected += 1;
                    t.note(format!("{key}: ENTITY with no message pending: {text}"));
                    continue;
                };
                shared.outstanding.fetch_sub(1, Ordering::Relaxed);
                t.received += 1;
                t.last = Some(now);
                let n = plan.nth(k);
                let want = after(n);
                let got = EntityState {
                    stale: f.stale.unwrap_or(!want.stale),
                    busy_by: f.busy_by,
                    version: f.version.unwrap_or(u64::MAX),
                };
                if f.room.as_deref() != Some(key.as_str()) || got != want {
                    t.mismatches += 1;
                    if got == after(n + 1) {
                        t.overtaken += 1;
                    }
                    t.note(format!(
                        "{key}: message {k} (the room's {n}th, {}) expected stale {}, busyBy \
                         {:?}, version {}; got {text}",
                        if mutating(n) { "MUTATING" } else { "MUTATED" },
                        want.stale,
                        want.busy_by,
                        want.version
                    ));
                }
                last = Some(got);
                if plan.timed(k) {
                    let took = now.saturating_duration_since(plan.base + plan.due(k));
                    measure::record(&mut t.latency, took.as_micros() as u64);
                    t.timed += 1;
                    t.first_timed.get_or_insert(now);
                    t.last_timed = Some(now);
                }
            }
            "ERROR" => {
                let mut t = shared.tally.lock().unwrap_or_else(|e| e.into_inner());
                t.errors += 1;
                t.note(format!(
                    "{key}: ERROR {}: {}",
                    f.code.unwrap_or_default(),
                    f.message.unwrap_or_default()
                ));
            }
            _ => {}
        }
    }
}

/// One `/metrics` reading during the run.
struct KafkaSample {
    /// Seconds since the first message was due.
    t_s: f64,
    /// `roster_kafka_consumer_lag`, summed over the topics.
    lag: Option<f64>,
    /// `roster_kafka_lifecycle_events_total{outcome="applied"}`.
    applied: Option<f64>,
}

/// Samples `/metrics` every `interval` from `base` until stopped.
async fn sample_kafka(
    http_base: String,
    base: Instant,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) -> Vec<KafkaSample> {
    let mut out = Vec::new();
    let mut i = 0u32;
    loop {
        let due = tokio::time::Instant::from_std(base + interval * i);
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {}
            _ = stop.changed() => return out,
        }
        if let Ok((200, body)) = http::get(&http_base, "/metrics").await {
            out.push(KafkaSample {
                t_s: Instant::now().saturating_duration_since(base).as_secs_f64(),
                lag: prom::parse(&body).get(CONSUMER_LAG).copied(),
                applied: prom::series(&body, LIFECYCLE_EVENTS)
                    .get("outcome=\"applied\"")
                    .copied(),
            });
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rooms_messages_alternate_and_each_changes_its_state() {
        assert_eq!(
            after(0),
            EntityState {
                stale: true,
                busy_by: Some(BY.into()),
                version: 0
            }
        );
        assert_eq!(
            after(1),
            EntityState {
                stale: false,
                busy_by: None,
                version: 1
            }
        );
        assert_eq!(after(2).version, 1);
        assert_eq!((after(5).stale, after(5).version), (false, 3));
        for n in 0..10 {
            assert_ne!(after(n), after(n + 1));
        }
        let plan = Plan {
            base: Instant::now(),
            per_sec: 100.0,
            total: 1000,
            rooms: 7,
            warmup: Duration::from_secs(1),
        };
        assert_eq!((plan.room_of(15), plan.nth(15)), (1, 2));
        assert_eq!(plan.due(250), Duration::from_millis(2500));
        assert!(!plan.timed(99) && plan.timed(100));
        // Room 0 gets messages 0, 7, …, 994; room 6 gets 6, …, 999.
        assert_eq!((plan.last_nth(0), plan.last_nth(6)), (Some(142), Some(141)));
        let few = Plan { total: 3, ..plan };
        assert_eq!((few.last_nth(2), few.last_nth(3)), (Some(0), None));
    }

    #[test]
    fn messages_carry_tenant_entity_id_and_a_unique_event_id() {
        let m = Messages {
            tenant: "acme".into(),
            entity: "Order".into(),
            mutating_topic: "in.mutating".into(),
            mutated_topic: "in.mutated".into(),
            run: Some("r1".into()),
        };
        let o = m.make("12", true, "7");
        assert_eq!(
            (o.topic.as_str(), o.key.as_str()),
            ("in.mutating", "acme:Order:12")
        );
        let v: Value = serde_json::from_str(&o.payload).unwrap();
        assert_eq!(
            v,
            json!({"tenantId": "acme", "entity": "Order", "id": 12, "userId": "etl", "eventId": "r1-7"})
        );
        let p = m.make("probe", false, "probe-1");
        assert_eq!(p.topic, "in.mutated");
        let v: Value = serde_json::from_str(&p.payload).unwrap();
        assert_eq!(
            (&v["id"], &v["eventId"]),
            (&json!("probe"), &json!("r1-probe-1"))
        );
        let without = Messages { run: None, ..m };
        let v: Value = serde_json::from_str(&without.make("3", true, "1").payload).unwrap();
        assert!(v.get("eventId").is_none(), "{v}");
    }
}
