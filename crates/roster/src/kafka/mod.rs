//! Kafka (SPEC §6, §7), on when `kafka.brokers` is set: the entity lifecycle in
//! (`lifecycle.rs`, a consumer group on the mutating/mutated topics) and the
//! presence event stream out (`crate::events::kafka`). This file holds what
//! both share: the client settings and the brokers' health.
//!
//! Brokers that do not answer never stop presence: `/readyz` stays 200 and says
//! so in its body, `roster_kafka_up` is 0, librdkafka reconnects by itself, and
//! consumption resumes where the group's committed offsets left it.

pub mod lifecycle;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use tokio_util::sync::CancellationToken;

use crate::config::KafkaConfig;
use crate::metrics as m;

/// How often the brokers' health and the consumer lag are read.
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(2);
/// How long one health probe (a metadata request) may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The context of every Roster Kafka client: librdkafka's own log lines and
/// "global errors" (each failed reconnect while brokers are down, several a
/// second) go to debug level; the health probe reports an outage once, at
/// warn level, with the key to check.
pub struct Quiet;

impl rdkafka::ClientContext for Quiet {
    fn log(&self, _level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        tracing::debug!(target: "roster::kafka::librdkafka", "{fac}: {log_message}");
    }
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::debug!(target: "roster::kafka::librdkafka", "{error}: {reason}");
    }
}

impl rdkafka::consumer::ConsumerContext for Quiet {}

/// The settings every Roster Kafka client starts from.
pub fn client_config(brokers: &str, client_id: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("client.id", client_id);
    c
}

/// Whether the brokers answer, as `/readyz` and `/metrics` report it.
#[derive(Default)]
pub struct KafkaHealth {
    /// Kafka is configured (otherwise nothing here is ever read).
    on: AtomicBool,
    up: AtomicBool,
    /// Why they did not answer the last probe.
    error: Mutex<Option<String>>,
}

impl KafkaHealth {
    /// `None` when Kafka is off or the brokers answered the last probe; else
    /// what `/readyz` says about it.
    pub fn problem(&self) -> Option<String> {
        if !self.on.load(Ordering::Relaxed) || self.up.load(Ordering::Relaxed) {
            return None;
        }
        Some(
            self.error
                .lock()
                .clone()
                .unwrap_or_else(|| "not connected yet".into()),
        )
    }

    fn set(&self, result: Result<(), String>) {
        self.on.store(true, Ordering::Relaxed);
        self.up.store(result.is_ok(), Ordering::Relaxed);
        metrics::gauge!(m::KAFKA_UP).set(if result.is_ok() { 1.0 } else { 0.0 });
        *self.error.lock() = result.err();
    }
}

/// Probes the brokers every [`HEALTH_INTERVAL`] through its own client (a
/// metadata request), and sets the consumer lag gauge from `lag`.
pub async fn watch_health(
    health: Arc<KafkaHealth>,
    config: KafkaConfig,
    lag: Arc<dyn Fn() -> Vec<(String, i64)> + Send + Sync>,
    stop: CancellationToken,
) {
    let Some(brokers) = config.brokers().map(String::from) else {
        return;
    };
    health.set(Err("not connected yet".into()));
    let probe: Option<Arc<BaseConsumer<Quiet>>> = client_config(&brokers, "roster-health")
        .create_with_context(Quiet)
        .map(Arc::new)
        .map_err(|e| health.set(Err(format!("kafka client: {e}"))))
        .ok();
    let mut tick = tokio::time::interval(HEALTH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => break,
        }
        let Some(probe) = probe.clone() else { continue };
        let brokers = brokers.clone();
        let result = tokio::task::spawn_blocking(move || {
            probe
                .fetch_metadata(None, PROBE_TIMEOUT)
                .map(drop)
                .map_err(|e| format!("brokers unreachable (kafka.brokers = {brokers}): {e}"))
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        if let Err(e) = &result {
            if health.problem().is_none() {
                tracing::warn!("kafka: {e}");
            }
        } else if health.problem().is_some() {
            tracing::info!("kafka: brokers answer");
        }
        health.set(result);
        let lag = lag.clone();
        if let Ok(per_topic) = tokio::task::spawn_blocking(move || lag()).await {
            for (topic, n) in per_topic {
                metrics::gauge!(m::KAFKA_CONSUMER_LAG, "topic" => topic).set(n as f64);
            }
        }
    }
    // The probe's client is dropped off the async threads: librdkafka's
    // destructor waits for its threads.
    if let Some(p) = probe {
        let _ = tokio::task::spawn_blocking(move || drop(p)).await;
    }
}

/// The messages behind the group's position, per topic, over the partitions
/// this consumer holds (blocking: run it off the async threads).
pub fn consumer_lag<C: Consumer<Cx>, Cx: rdkafka::consumer::ConsumerContext>(
    consumer: &C,
) -> Vec<(String, i64)> {
    let mut out: std::collections::BTreeMap<String, i64> = Default::default();
    let Ok(position) = consumer.position() else {
        return Vec::new();
    };
    for e in position.elements() {
        let Ok((_, high)) = consumer.fetch_watermarks(e.topic(), e.partition(), PROBE_TIMEOUT)
        else {
            continue;
        };
        let at = match e.offset() {
            rdkafka::Offset::Offset(o) => o,
            // Nothing consumed yet on this partition: all of it is behind.
            _ => match consumer.fetch_watermarks(e.topic(), e.partition(), PROBE_TIMEOUT) {
                Ok((low, _)) => low,
                Err(_) => continue,
            },
        };
        *out.entry(e.topic().to_string()).or_default() += (high - at).max(0);
    }
    out.into_iter().collect()
}
