//! Assembles a running server from a validated config: engine, node, sweeper,
//! HTTP listener, and the graceful shutdown sequence.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::clock::Clock;
use crate::config::Config;
use crate::engine::memory::MemoryEngine;
use crate::http::{self, api::RateLimiter, origins::AllowedOrigins, AppState};
use crate::ids::TenantId;
use crate::journal::{Journal, JournalSettings};
use crate::node::hub::Hub;
use crate::node::Node;
use crate::protocol::opening::{OpeningListener, Openings, Peer};
use crate::store::{unix_ms, Store};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("database {url}: {source}")]
    Database {
        url: String,
        source: crate::store::StoreError,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Auth(String),
    #[error("{0}")]
    Kafka(String),
    #[error("{0}")]
    Config(String),
    #[error("engine {url}: {reason}")]
    Engine { url: String, reason: String },
}

/// Binds with a large accept backlog: tokio's default of 128 drops SYNs when a
/// few hundred clients (re)connect at once, and each dropped SYN costs a client
/// a one-second retransmit.
fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    const BACKLOG: u32 = 4096;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

pub struct Running {
    pub addr: SocketAddr,
    pub node: Arc<Node>,
    pub task: tokio::task::JoinHandle<()>,
}

/// Opens the configured database and applies its migrations (`roster migrate`
/// and start-up alike).
pub async fn open_store(url: &str) -> Result<Arc<dyn Store>, StartError> {
    let err = |source| StartError::Database {
        url: redact(url),
        source,
    };
    let store = crate::store::connect(url).await.map_err(err)?;
    store.migrate().await.map_err(err)?;
    Ok(store)
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &creds[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Loads declared rooms, tenant room types and participants into the engine.
async fn load_rooms(store: &dyn Store, node: &Node) -> Result<usize, crate::store::StoreError> {
    for t in store.all_room_types().await? {
        if let (Ok(tenant), Some(rt)) = (
            TenantId::parse(&t.tenant),
            crate::node::records::room_type_from_store(&t),
        ) {
            node.set_room_type(tenant, rt);
        }
    }
    let mut participants: std::collections::HashMap<
        (String, String),
        Vec<crate::store::Participant>,
    > = Default::default();
    for p in store.all_participants().await? {
        participants
            .entry((p.tenant.clone(), p.room.clone()))
            .or_default()
            .push(p);
    }
    let rooms = store.all_rooms().await?;
    let n = rooms.len();
    for r in rooms {
        let ps = participants
            .remove(&(r.tenant.clone(), r.key.clone()))
            .unwrap_or_default();
        let timing = TenantId::parse(&r.tenant)
            .ok()
            .and_then(|t| node.room_type(&t, &r.room_type))
            .map(|t| t.timing)
            .unwrap_or_default();
        match crate::node::records::room_from_store(&r, &ps, timing) {
            Some((id, settings)) => {
                let _ = node.engine.create_room(id, settings).await;
            }
            None => {
                tracing::warn!(tenant = %r.tenant, room = %r.key, "skipping a stored room that no longer validates")
            }
        }
    }
    Ok(n)
}

/// How long a stopping server waits for webhook endpoints to take the events
/// still queued for them.
const WEBHOOK_FLUSH_AT_SHUTDOWN: Duration = Duration::from_secs(5);
/// How long a stopping server waits for the Kafka consumer to commit and leave
/// its group, and then for queued events to reach the brokers.
const KAFKA_STOP: Duration = Duration::from_secs(5);

/// Binds and starts serving; returns once the listener is bound. `stop` begins
/// the graceful shutdown: no new connections, leaves sent, connections closed 1001.
pub async fn start(config: Config, stop: CancellationToken) -> Result<Running, StartError> {
    // The TLS of outgoing HTTPS (webhooks): rustls with ring, as sqlx uses. A
    // second install (tests start several servers in one process) is a no-op.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = Arc::new(config);
    let (auth, dev_secret) =
        Authenticator::from_config(&config).map_err(|e| StartError::Auth(e.0))?;
    if let Some(secret) = dev_secret {
        tracing::warn!(
            "no auth.jwt_secret configured: using a random dev secret for this run only. \
             Mint tokens with: ROSTER_AUTH_JWT_SECRET={secret} roster token --user alice"
        );
        eprintln!("WARNING: no auth.jwt_secret configured; dev secret for this run: {secret}");
    }
    let addr = config.listen_addr().map_err(|e| StartError::Listen {
        addr: config.listen.clone(),
        source: std::io::Error::other(e),
    })?;
    let listener = bind(addr).map_err(|source| StartError::Listen {
        addr: config.listen.clone(),
        source,
    })?;
    let bound = listener.local_addr().map_err(|source| StartError::Listen {
        addr: config.listen.clone(),
        source,
    })?;

    let clock = Clock::new();
    let hub = Arc::new(Hub::default());
    // The engine first: an unreachable Redis stops start-up before the database
    // is touched.
    let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
    let engine: Arc<dyn crate::engine::Engine> = if config.engine.url == "memory" {
        Arc::new(MemoryEngine::new(hub.clone(), clock))
    } else {
        let e = crate::engine::redis::RedisEngine::connect(
            &config.engine.url,
            &config.engine.prefix,
            hub.clone(),
            clock,
            events_tx,
            config.timing.sweep_interval.0,
        )
        .await
        .map_err(|reason| StartError::Engine {
            url: redact(&config.engine.url),
            reason,
        })?;
        tracing::info!(node = e.node_id(), "redis engine ready");
        Arc::new(e)
    };
    let store = open_store(&config.database.url).await?;
    let db = &config.database;
    let (journal, writer) = Journal::new(
        JournalSettings {
            queue_size: db.queue_size,
            batch_size: db.batch_size,
            batch_interval: db.batch_interval.0,
            write_timeout: db.write_timeout.0,
        },
        store.clone(),
    );
    let node = Node::new(config.clone(), clock, engine, hub, journal, store.clone());
    tokio::spawn(node.clone().run_engine_events(events_rx));
    let loaded = load_rooms(&*store, &node)
        .await
        .map_err(|source| StartError::Database {
            url: redact(&db.url),
            source,
        })?;
    // `[[webhooks.endpoints]]`: the address check needs DNS, so it is here
    // rather than in the configuration's own checks.
    for (i, e) in config.webhooks.endpoints.iter().enumerate() {
        crate::events::webhooks::check_url(&e.url, config.webhooks.allow_private)
            .await
            .map_err(|why| {
                StartError::Config(format!(
                    "`webhooks.endpoints[{i}].url` = {:?}: {why}",
                    e.url
                ))
            })?;
    }
    let webhooks = node
        .load_webhooks()
        .await
        .map_err(|source| StartError::Database {
            url: redact(&db.url),
            source,
        })?;
    tracing::info!(
        backend = store.backend(),
        rooms = loaded,
        webhooks,
        "database ready"
    );
    // Kafka: the lifecycle consumer, the brokers' health, the event sink.
    let kafka_stop = CancellationToken::new();
    let mut kafka_tasks = Vec::new();
    let kafka_sink =
        crate::events::kafka::KafkaSink::new(&config.kafka).map_err(StartError::Kafka)?;
    if let Some(sink) = &kafka_sink {
        node.events.add_consumer(sink.clone());
    }
    // The event stream: appended to the engine's log, delivered from it.
    let events_stop = CancellationToken::new();
    let holder = format!("node-{}", uuid::Uuid::new_v4().simple());
    let events_task = node
        .events
        .start(node.engine.clone(), holder, events_stop.clone());
    if config.kafka.brokers().is_some() {
        let consumer =
            crate::kafka::lifecycle::LifecycleConsumer::new(node.clone(), config.kafka.clone())
                .map_err(StartError::Kafka)?;
        kafka_tasks.push(tokio::spawn(crate::kafka::watch_health(
            node.kafka.clone(),
            config.kafka.clone(),
            consumer.lag_probe(),
            kafka_stop.clone(),
        )));
        kafka_tasks.push(tokio::spawn(consumer.run(kafka_stop.clone())));
        tracing::info!(
            brokers = config.kafka.brokers(),
            group = %config.kafka.group_id,
            "kafka lifecycle consumer started"
        );
    }
    let journal_stop = CancellationToken::new();
    let journal_task = tokio::spawn(writer.run(journal_stop.clone(), Duration::from_secs(5)));
    let maintenance_stop = CancellationToken::new();
    tokio::spawn(maintenance(
        store.clone(),
        config.clone(),
        maintenance_stop.clone(),
    ));
    tokio::spawn(sample_stats(node.clone(), maintenance_stop.clone()));
    if node.engine.shared() {
        tokio::spawn(sync_webhooks(node.clone(), maintenance_stop.clone()));
    }
    let sweeper_stop = CancellationToken::new();
    let sweeper = tokio::spawn(node.clone().run_sweeper(sweeper_stop.clone()));
    // Alert rules: evaluated on the node holding the `alerts` lease.
    let alerts_task = tokio::spawn(crate::alerts::evaluator::run(
        node.clone(),
        crate::alerts::notify::Notifier::new(config.webhooks.clone()),
        format!("node-{}", uuid::Uuid::new_v4().simple()),
        maintenance_stop.clone(),
    ));

    let state = AppState {
        node: node.clone(),
        auth: Arc::new(auth),
        metrics: crate::metrics::install(),
        rest_limiter: Arc::new(RateLimiter::new(config.limits.rest_requests_per_second)),
        feeds: Default::default(),
        origins: Arc::new(AllowedOrigins::from_config(
            config.http.allowed_origins.as_deref(),
        )),
    };
    if config.http.allowed_origins.is_none() && !bound.ip().is_loopback() {
        tracing::warn!(
            listen = %bound,
            "http.allowed_origins is not set: pages from any web origin may open WebSockets \
             and read REST answers; set it to the origins of your web apps"
        );
    }
    let app = http::router(state).into_make_service_with_connect_info::<Peer>();
    // TCP_NODELAY, the per-address cap and the deadline of every opening.
    let listener = OpeningListener::new(
        listener,
        Openings::new(config.limits.max_openings_per_ip),
        config.timing.hello_timeout.0,
    );
    let node2 = node.clone();
    let task = tokio::spawn(async move {
        let shutdown = {
            let node = node2.clone();
            let sweeper_stop = sweeper_stop.clone();
            async move {
                stop.cancelled().await;
                tracing::info!(
                    "shutting down: handing sessions to their leave grace, closing connections"
                );
                // The sweeper stops first: no grace, timeout or liveness refresh
                // of this node may fire while its sessions are handed over.
                sweeper_stop.cancel();
                let _ = tokio::time::timeout(Duration::from_secs(2), sweeper).await;
                node.shutdown().await;
                // Let connection tasks drain their queues and write their close
                // frames (each bounds that to about 2 s).
                let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
                while node
                    .hub
                    .connections
                    .load(std::sync::atomic::Ordering::SeqCst)
                    > 0
                    && tokio::time::Instant::now() < deadline
                {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!("server error: {e}");
        }
        sweeper_stop.cancel();
        // The events of the shutdown reach the log and the endpoints; what
        // is still waiting for an endpoint gets a last chance. (With several
        // nodes, what this node leaves undelivered, the next lease holder
        // delivers from the cursors.)
        let flush_end = tokio::time::Instant::now() + WEBHOOK_FLUSH_AT_SHUTDOWN;
        node2.events.settle(flush_end).await;
        let waiting = node2
            .webhooks
            .flush(flush_end.saturating_duration_since(tokio::time::Instant::now()))
            .await;
        if waiting > 0 {
            tracing::warn!(events = waiting, "webhook events not delivered at shutdown");
        }
        events_stop.cancel();
        let _ = tokio::time::timeout(KAFKA_STOP, events_task).await;
        // Lifecycle consumption stops (what was applied is committed), and the
        // events of the shutdown get their chance to reach Kafka.
        kafka_stop.cancel();
        for t in kafka_tasks {
            let _ = tokio::time::timeout(KAFKA_STOP, t).await;
        }
        if let Some(sink) = kafka_sink {
            let left = tokio::task::spawn_blocking(move || sink.flush(KAFKA_STOP))
                .await
                .unwrap_or_default();
            if left > 0 {
                tracing::warn!(
                    events = left,
                    "presence events not delivered to Kafka at shutdown"
                );
            }
        }
        // Session ends and leaves of the shutdown are queued by now: write them.
        journal_stop.cancel();
        let _ = journal_task.await;
        maintenance_stop.cancel();
        // The alerts lease goes before the database closes.
        let _ = alerts_task.await;
        store.close().await;
    });
    tracing::info!(%bound, "roster listening");
    eprintln!("roster listening on http://{bound}");
    Ok(Running {
        addr: bound,
        node,
        task,
    })
}

/// Rolls statistics up every minute and applies retention every ten.
async fn maintenance(store: Arc<dyn Store>, config: Arc<Config>, stop: CancellationToken) {
    let db = &config.database;
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let now = unix_ms(std::time::SystemTime::now());
        if let Err(e) = store.rollup(now).await {
            tracing::warn!("statistics rollup failed (will retry): {e}");
        }
        if n.is_multiple_of(10) {
            let before = |d: crate::config::Dur| now - d.0.as_millis() as i64;
            if let Err(e) = store.purge_sessions(before(db.activity_retention)).await {
                tracing::warn!("session history purge failed (will retry): {e}");
            }
            if let Err(e) = store
                .purge_lifecycle_events(before(config.kafka.dedup_window))
                .await
            {
                tracing::warn!("lifecycle eventId purge failed (will retry): {e}");
            }
            match store.purge_activity(before(db.activity_retention)).await {
                Ok(k) if k > 0 => tracing::info!(rows = k, "activity retention: purged"),
                Ok(_) => {}
                Err(e) => tracing::warn!("activity purge failed (will retry): {e}"),
            }
            if let Err(e) = store
                .purge_stats(
                    before(db.stats_retention_1m),
                    before(db.stats_retention_1h),
                    before(db.stats_retention_1d),
                )
                .await
            {
                tracing::warn!("statistics purge failed (will retry): {e}");
            }
        }
        n += 1;
    }
}

/// How often a node of a cluster takes up the webhook endpoints other nodes
/// saved or deleted.
const WEBHOOK_SYNC: Duration = Duration::from_secs(1);

async fn sync_webhooks(node: Arc<Node>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(WEBHOOK_SYNC);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        if let Err(e) = node.sync_webhooks().await {
            tracing::debug!("webhook endpoints not synchronised (will retry): {e}");
        }
    }
}

/// Samples room statistics and the live-state gauges on their own task, so a
/// large deployment's sampling never delays the sweeper's timeouts and diffs.
async fn sample_stats(node: Arc<Node>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(node.config.database.stats_sample_interval.0);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                node.sample_stats().await;
                // A hung database must not hold the next sample back.
                let db = &node.config.database;
                let ping_timeout = db.write_timeout.0.min(db.stats_sample_interval.0);
                crate::node::gauges::sample(&node, ping_timeout).await;
            }
            _ = stop.cancelled() => return,
        }
    }
}
