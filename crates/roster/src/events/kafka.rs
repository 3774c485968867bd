//! The presence event stream to Kafka (SPEC §7), one more [`EventConsumer`]:
//!
//! * every event to `kafka.events_topic` (default `roster.presence.events`),
//!   the JSON of [`PresenceEvent`], keyed `tenant:room` (or `tenant:user` for
//!   `user_*`), so one room's (one user's) events keep their order in one
//!   partition, and `seq` orders a tenant's events across partitions;
//! * `user_online` / `user_offline` also to `kafka.status_topic` (default
//!   `user.presence.status`) in the shape of seed 004's `OnlineStatusEvent`:
//!   `{tenantId, userId, online, status, timestamp, seq, eventId}`, keyed
//!   `tenant:user`.
//!
//! An idempotent producer (`enable.idempotence`: no duplicate and no reorder
//! from its own retries). Handing it an event never blocks presence: the
//! producer's queue is bounded (librdkafka's `queue.buffering.max.messages`), an
//! event that does not fit is dropped and counted, and a brokers' outage is
//! ridden out by librdkafka's retries for `message.timeout.ms` (5 min), after
//! which the event is counted `failed`.

use std::sync::Arc;

use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use serde::Serialize;

use parking_lot::Mutex;

use super::{Acks, EventConsumer, PresenceEvent};
use crate::config::KafkaConfig;
use crate::core::types::Status;
use crate::ids::TenantId;
use crate::metrics as m;

/// seed 004's `OnlineStatusEvent`, with the tenant and the stream's numbering.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OnlineStatusEvent<'a> {
    tenant_id: &'a str,
    user_id: &'a str,
    online: bool,
    /// `online`, `away` or `offline`.
    status: Status,
    /// Unix milliseconds.
    timestamp: i64,
    seq: u64,
    event_id: &'a str,
}

/// What a message's delivery report needs: its stream (for the metric) and,
/// for the message that carries an event's delivery, the tenant and `seq` to
/// acknowledge.
struct Sent {
    stream: &'static str,
    ack: Option<(TenantId, u64)>,
}

/// Counts each message's fate and acknowledges delivered events (called on
/// the producer's polling thread).
struct Counted {
    acks: Arc<Mutex<Option<Acks>>>,
}

impl ClientContext for Counted {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, msg: &str) {
        crate::kafka::Quiet.log(level, fac, msg)
    }
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        crate::kafka::Quiet.error(error, reason)
    }
}

impl ProducerContext for Counted {
    type DeliveryOpaque = Box<Sent>;
    fn delivery(&self, result: &DeliveryResult<'_>, sent: Self::DeliveryOpaque) {
        let outcome = if result.is_ok() {
            "delivered"
        } else {
            "failed"
        };
        if let Err((e, _)) = result {
            tracing::warn!(
                "kafka: a presence event was not delivered to the {} topic: {e}",
                sent.stream
            );
        }
        // Given up on counts as done too, as for webhooks: the cursor moves on.
        if let (Some((tenant, seq)), Some(acks)) = (&sent.ack, &*self.acks.lock()) {
            acks.ack(tenant, QUEUE, *seq);
        }
        metrics::counter!(m::KAFKA_PRODUCED, "stream" => sent.stream, "outcome" => outcome)
            .increment(1);
    }
}

/// The sink's one queue per tenant (its cursor's name in the log).
const QUEUE: &str = "kafka";

pub struct KafkaSink {
    producer: ThreadedProducer<Counted>,
    acks: Arc<Mutex<Option<Acks>>>,
    events_topic: Option<String>,
    status_topic: Option<String>,
}

impl KafkaSink {
    /// `None` when Kafka is off or both topics are empty.
    pub fn new(config: &KafkaConfig) -> Result<Option<Arc<Self>>, String> {
        let Some(brokers) = config.brokers() else {
            return Ok(None);
        };
        let topic = |t: &str| (!t.is_empty()).then(|| t.to_string());
        let (events_topic, status_topic) =
            (topic(&config.events_topic), topic(&config.status_topic));
        if events_topic.is_none() && status_topic.is_none() {
            return Ok(None);
        }
        let acks = Arc::new(Mutex::new(None));
        let producer = crate::kafka::client_config(brokers, "roster-events")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create_with_context(Counted { acks: acks.clone() })
            .map_err(|e| format!("`kafka.brokers`: cannot create the event producer: {e}"))?;
        Ok(Some(Arc::new(Self {
            producer,
            acks,
            events_topic,
            status_topic,
        })))
    }

    /// `false`: librdkafka's queue is full.
    fn send(&self, sent: Sent, topic: &str, key: &str, payload: &[u8]) -> bool {
        let record = BaseRecord::with_opaque_to(topic, Box::new(sent))
            .key(key)
            .payload(payload);
        match self.producer.send(record) {
            Ok(()) => true,
            Err((e, _)) => {
                tracing::debug!("kafka: presence event not queued: {e}");
                false
            }
        }
    }

    /// Waits up to `within` for queued events to reach the brokers; returns
    /// how many did not.
    pub fn flush(&self, within: std::time::Duration) -> i32 {
        let _ = self.producer.flush(within);
        self.producer.in_flight_count()
    }
}

impl EventConsumer for KafkaSink {
    fn queues(&self, _tenant: &TenantId) -> Vec<String> {
        vec![QUEUE.to_string()]
    }

    fn offer(&self, tenant: &TenantId, _queue: &str, e: &Arc<PresenceEvent>, acks: &Acks) -> bool {
        if self.acks.lock().is_none() {
            *self.acks.lock() = Some(acks.clone());
        }
        let about = e
            .room
            .as_deref()
            .or(e.user_id.as_deref())
            .unwrap_or_default();
        let key = format!("{tenant}:{about}");
        let status = match e.kind.as_str() {
            "user_online" => Some(true),
            "user_offline" => Some(false),
            _ => None,
        }
        .filter(|_| self.status_topic.is_some() && e.user_id.is_some());
        // The events topic's message acknowledges the event; without that
        // topic, the status message does; an event neither takes is done.
        let mut ack = Some((tenant.clone(), e.seq));
        // Room events (opt-in, for webhooks that ask) are not Kafka's.
        let events_topic = self
            .events_topic
            .as_ref()
            .filter(|_| e.kind != "room_event");
        if let Some(topic) = events_topic {
            let json = serde_json::to_vec(&**e).unwrap_or_default();
            let sent = Sent {
                stream: "events",
                ack: ack.take(),
            };
            if !self.send(sent, topic, &key, &json) {
                return false;
            }
        }
        if let (Some(online), Some(topic), Some(user)) = (status, &self.status_topic, &e.user_id) {
            let status = match (online, e.status) {
                (false, _) => Status::Offline,
                (true, s) => s.unwrap_or(Status::Online),
            };
            let msg = OnlineStatusEvent {
                tenant_id: tenant.as_str(),
                user_id: user,
                online,
                status,
                timestamp: time::OffsetDateTime::parse(
                    &e.at,
                    &time::format_description::well_known::Rfc3339,
                )
                .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
                .unwrap_or_default(),
                seq: e.seq,
                event_id: &e.id,
            };
            let json = serde_json::to_vec(&msg).unwrap_or_default();
            // A full queue here (the event already went out): counted, not retried.
            if !self.send(
                Sent {
                    stream: "status",
                    ack: ack.take(),
                },
                topic,
                &format!("{tenant}:{user}"),
                &json,
            ) {
                metrics::counter!(m::KAFKA_PRODUCED, "stream" => "status", "outcome" => "dropped")
                    .increment(1);
            }
        }
        if let Some((t, seq)) = ack {
            acks.ack(&t, QUEUE, seq);
        }
        true
    }
}
