//! The entity lifecycle from Kafka (SPEC §6): a consumer in group
//! `kafka.group_id` on `kafka.mutating_topic` and `kafka.mutated_topic`.
//!
//! Each message is `{tenantId, entity, id, userId, eventId?, timestamp?}`
//! (key `tenantId:entity:id`, not read: it only places the message in a
//! partition). It is applied exactly as `POST /lifecycle` applies it
//! (`Node::lifecycle`), once per `eventId` within `kafka.dedup_window`. Then,
//! and only then, its offset is stored for the next commit — after the apply,
//! or after it went to the dead-letter topic, never before.
//!
//! * A malformed message (not JSON, a field missing or wrong, a tenant id that
//!   is no tenant id) goes to `<topic>.dlt` at once.
//! * A failing apply (the engine or the database unavailable) is tried again
//!   after each wait of `kafka.retry_backoff` (1 s, 3 s, 9 s), then goes to
//!   `<topic>.dlt`.
//!
//! A dead-lettered message keeps its key and payload; headers say why:
//! `roster-dlt-reason` (`malformed` | `failed`), `roster-dlt-error`,
//! `roster-dlt-attempts`, `roster-dlt-original-topic`,
//! `roster-dlt-original-partition`, `roster-dlt-original-offset`. If the DLT
//! itself cannot be written, the message is not committed: it is tried again
//! until it is written or the node stops (and then redelivered).
//!
//! Messages are handled one at a time in partition order: a retried event
//! holds back the events behind it (an outage that fails one apply fails the
//! next too, and the lifecycle of one record must stay in order).

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Deserialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::config::KafkaConfig;
use crate::ids::TenantId;
use crate::metrics as m;
use crate::node::lifecycle::{LifecycleInput, LifecycleTarget};
use crate::node::Node;

/// How long one write to a dead-letter topic may take before it is tried again.
const DLT_SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// A lifecycle message as producers write it. Unknown fields are ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireEvent {
    tenant_id: String,
    entity: String,
    id: Value,
    user_id: String,
    #[serde(default)]
    event_id: Option<String>,
    /// When the change happened: unix ms, or an ISO-8601 / RFC 3339 time.
    #[serde(default)]
    timestamp: Option<Value>,
}

/// Why a message went to the dead-letter topic.
#[derive(Debug)]
struct DeadLetter {
    reason: &'static str,
    error: String,
    attempts: u32,
}

/// Checks a message's payload; the error says what is wrong with it.
fn parse(payload: Option<&[u8]>) -> Result<LifecycleTarget, String> {
    let payload = payload.ok_or("empty message: expected a JSON object")?;
    let de = &mut serde_json::Deserializer::from_slice(payload);
    let ev: WireEvent = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data if path != "." => format!("field `{path}`: {inner}"),
            _ => format!("bad JSON: {inner}"),
        }
    })?;
    let tenant =
        TenantId::parse(&ev.tenant_id).map_err(|e| format!("field `tenantId`: {}", e.0))?;
    let mut t = LifecycleInput {
        tenant,
        entity: &ev.entity,
        id: &ev.id,
        user_id: &ev.user_id,
        event_id: ev.event_id.as_deref(),
    }
    .check()?;
    t.at = match &ev.timestamp {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(
            n.as_u64()
                .ok_or("field `timestamp`: expected unix milliseconds")?,
        ),
        Some(Value::String(s)) => Some(
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .map(|t| (t.unix_timestamp_nanos() / 1_000_000).max(0) as u64)
                .map_err(|e| {
                    format!("field `timestamp`: {e}; expected unix ms or an RFC 3339 time")
                })?,
        ),
        Some(_) => return Err("field `timestamp`: expected unix ms or an RFC 3339 time".into()),
    };
    Ok(t)
}

/// The consumer's context: librdkafka's noise as [`super::Quiet`], and the
/// partitions this node holds now. Before partitions are taken away, what was
/// applied on them is committed; after, messages of theirs still queued here
/// are not applied (their next owner starts at that commit). Only a message
/// being applied at that instant can reach both, and its `eventId` catches it.
#[derive(Default)]
struct Group {
    held: parking_lot::Mutex<std::collections::HashSet<(String, i32)>>,
}

impl Group {
    fn holds(&self, topic: &str, partition: i32) -> bool {
        self.held.lock().contains(&(topic.to_string(), partition))
    }
}

impl rdkafka::ClientContext for Group {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, msg: &str) {
        rdkafka::ClientContext::log(&super::Quiet, level, fac, msg)
    }
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        rdkafka::ClientContext::error(&super::Quiet, error, reason)
    }
}

impl rdkafka::consumer::ConsumerContext for Group {
    fn pre_rebalance(
        &self,
        consumer: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        if let rdkafka::consumer::Rebalance::Revoke(tpl) = rebalance {
            let mut held = self.held.lock();
            for e in tpl.elements() {
                held.remove(&(e.topic().to_string(), e.partition()));
            }
            drop(held);
            if let Err(e) = consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync) {
                tracing::debug!("kafka: no commit before a rebalance: {e}");
            }
        }
    }

    fn post_rebalance(
        &self,
        _consumer: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        if let rdkafka::consumer::Rebalance::Assign(tpl) = rebalance {
            let mut held = self.held.lock();
            for e in tpl.elements() {
                held.insert((e.topic().to_string(), e.partition()));
            }
        }
    }
}

pub struct LifecycleConsumer {
    node: Arc<Node>,
    config: KafkaConfig,
    consumer: Arc<StreamConsumer<Group>>,
    dlt: FutureProducer<super::Quiet>,
}

impl LifecycleConsumer {
    /// Creates the consumer and subscribes (no broker needs to answer yet).
    pub fn new(node: Arc<Node>, config: KafkaConfig) -> Result<Self, String> {
        let brokers = config.brokers().ok_or("kafka.brokers is not set")?;
        let consumer: StreamConsumer<Group> = super::client_config(brokers, "roster-lifecycle")
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "true")
            // Offsets are stored by hand after each apply; the periodic (and
            // the closing) commit only commits what was stored.
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("allow.auto.create.topics", "true")
            .set(
                "session.timeout.ms",
                config.session_timeout.0.as_millis().to_string(),
            )
            // librdkafka's advice: a third of the session timeout.
            .set(
                "heartbeat.interval.ms",
                (config.session_timeout.0.as_millis() / 3).to_string(),
            )
            .create_with_context(Group::default())
            .map_err(|e| format!("`kafka.brokers`: cannot create the consumer: {e}"))?;
        consumer
            .subscribe(&[&config.mutating_topic, &config.mutated_topic])
            .map_err(|e| format!("`kafka.mutating_topic`/`kafka.mutated_topic`: {e}"))?;
        let dlt: FutureProducer<super::Quiet> =
            super::client_config(brokers, "roster-lifecycle-dlt")
                .set("enable.idempotence", "true")
                .create_with_context(super::Quiet)
                .map_err(|e| format!("`kafka.brokers`: cannot create the DLT producer: {e}"))?;
        Ok(Self {
            node,
            config,
            consumer: Arc::new(consumer),
            dlt,
        })
    }

    /// The lag of this consumer's partitions (for the health task).
    pub fn lag_probe(&self) -> Arc<dyn Fn() -> Vec<(String, i64)> + Send + Sync> {
        let c = self.consumer.clone();
        Arc::new(move || super::consumer_lag(&*c))
    }

    /// Consumes until `stop`; then commits what was applied and leaves the group.
    pub async fn run(self, stop: CancellationToken) {
        loop {
            let msg = tokio::select! {
                m = self.consumer.recv() => m,
                _ = stop.cancelled() => break,
            };
            let msg = match msg {
                Ok(m) => m.detach(),
                Err(e) => {
                    // Broker trouble or an unknown topic, one queued error per
                    // event librdkafka saw (several a second while brokers are
                    // down). It keeps reconnecting by itself and the health
                    // task reports the outage; waiting here would only let
                    // the errors pile up ahead of the messages.
                    tracing::debug!("kafka lifecycle consumer: {e}");
                    continue;
                }
            };
            if !self.consumer.context().holds(msg.topic(), msg.partition()) {
                continue; // its partition went to another node meanwhile
            }
            if !self.handle(&msg, &stop).await {
                break; // stopping: this message stays uncommitted
            }
            if let Err(e) = self
                .consumer
                .store_offset(msg.topic(), msg.partition(), msg.offset())
            {
                // The partition was taken away meanwhile: its new owner gets the
                // message again, and deduplicates it by eventId.
                tracing::debug!("kafka: offset not stored: {e}");
            }
        }
        // Commit what was applied, then leave the group — off the async threads
        // (librdkafka's close blocks).
        let consumer = self.consumer;
        let _ = tokio::task::spawn_blocking(move || {
            match consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync) {
                Ok(()) => tracing::debug!("kafka: lifecycle offsets committed"),
                // NoOffset: nothing consumed since the last commit.
                Err(e) => tracing::debug!("kafka: lifecycle offsets not committed at stop: {e}"),
            }
            drop(consumer);
        })
        .await;
    }

    /// Applies one message or dead-letters it. `false`: the node is stopping
    /// and the message is neither applied nor dead-lettered.
    async fn handle(&self, msg: &OwnedMessage, stop: &CancellationToken) -> bool {
        let mutating = msg.topic() == self.config.mutating_topic;
        let target = match parse(msg.payload()) {
            // Without a `timestamp` of its own, the message's (producer or
            // broker) time orders it.
            Ok(mut t) => {
                t.at = t.at.or(msg
                    .timestamp()
                    .to_millis()
                    .and_then(|m| u64::try_from(m).ok()));
                t
            }
            Err(error) => {
                let letter = DeadLetter {
                    reason: "malformed",
                    error,
                    attempts: 1,
                };
                return self.dead_letter(msg, letter, stop).await;
            }
        };
        let mut applied = false;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            match self.apply(&target, mutating, &mut applied).await {
                Ok(outcome) => {
                    metrics::counter!(m::KAFKA_LIFECYCLE, "outcome" => outcome).increment(1);
                    return true;
                }
                Err(error) => {
                    let Some(wait) = self.config.retry_backoff.0.get(attempts as usize - 1) else {
                        let letter = DeadLetter {
                            reason: "failed",
                            error,
                            attempts,
                        };
                        return self.dead_letter(msg, letter, stop).await;
                    };
                    tracing::warn!(
                        topic = msg.topic(),
                        partition = msg.partition(),
                        offset = msg.offset(),
                        attempt = attempts,
                        "lifecycle event failed, retrying in {wait:?}: {error}"
                    );
                    metrics::counter!(m::KAFKA_LIFECYCLE_RETRIES).increment(1);
                    tokio::select! {
                        _ = tokio::time::sleep(*wait) => {}
                        _ = stop.cancelled() => return false,
                    }
                }
            }
        }
    }

    /// One attempt. An event with an `eventId` is claimed first (recorded
    /// in the store's window, atomically): if it was already there, it is a
    /// duplicate; if the apply then fails, the claim is taken back so the
    /// retry can claim it again. So two nodes that read the same message at
    /// once (a rebalance under load) apply it once; a node killed between the
    /// claim and the apply (a round trip) loses that one event.
    async fn apply(
        &self,
        t: &LifecycleTarget,
        mutating: bool,
        applied: &mut bool,
    ) -> Result<&'static str, String> {
        let node = &self.node;
        if *applied {
            return Ok("applied");
        }
        if let Some(id) = &t.event_id {
            let claimed = node
                .mark_lifecycle_applied(&t.room.tenant, id)
                .await
                .map_err(|e| e.to_string())?;
            if !claimed {
                return Ok("duplicate");
            }
        }
        match node.lifecycle(&t.room, mutating, t.by.clone(), t.at).await {
            Ok(done) => {
                *applied = true;
                // `None`: older than the record's last event (its MUTATED, or a
                // newer MUTATING, came first on the other topic).
                Ok(if done.is_some() {
                    "applied"
                } else {
                    "superseded"
                })
            }
            Err(e) => {
                if let Some(id) = &t.event_id {
                    if let Err(f) = node.forget_lifecycle_event(&t.room.tenant, id).await {
                        tracing::warn!(event = %id, "a failed event's claim stays (a retry will see a duplicate): {f}");
                    }
                }
                Err(e.to_string())
            }
        }
    }

    /// Writes the message to `<topic>.dlt`, trying until it is written; `false`
    /// if the node stops first.
    async fn dead_letter(
        &self,
        msg: &OwnedMessage,
        letter: DeadLetter,
        stop: &CancellationToken,
    ) -> bool {
        let topic = format!("{}.dlt", msg.topic());
        tracing::warn!(
            topic = msg.topic(),
            partition = msg.partition(),
            offset = msg.offset(),
            attempts = letter.attempts,
            reason = letter.reason,
            "lifecycle event to {topic}: {}",
            letter.error
        );
        let (attempts, partition, offset) = (
            letter.attempts.to_string(),
            msg.partition().to_string(),
            msg.offset().to_string(),
        );
        let mut wait = self
            .config
            .retry_backoff
            .0
            .first()
            .copied()
            .unwrap_or(Duration::from_secs(1));
        loop {
            let mut headers = OwnedHeaders::new();
            if let Some(h) = msg.headers() {
                for h in h.iter() {
                    headers = headers.insert(Header {
                        key: h.key,
                        value: h.value,
                    });
                }
            }
            for (key, value) in [
                ("roster-dlt-reason", letter.reason),
                ("roster-dlt-error", letter.error.as_str()),
                ("roster-dlt-attempts", attempts.as_str()),
                ("roster-dlt-original-topic", msg.topic()),
                ("roster-dlt-original-partition", partition.as_str()),
                ("roster-dlt-original-offset", offset.as_str()),
            ] {
                headers = headers.insert(Header {
                    key,
                    value: Some(value),
                });
            }
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&topic).headers(headers);
            if let Some(k) = msg.key() {
                record = record.key(k);
            }
            if let Some(p) = msg.payload() {
                record = record.payload(p);
            }
            let sent = tokio::select! {
                r = self.dlt.send(record, DLT_SEND_TIMEOUT) => r,
                _ = stop.cancelled() => return false,
            };
            match sent {
                Ok(_) => {
                    metrics::counter!(m::KAFKA_LIFECYCLE, "outcome" => "dead_lettered")
                        .increment(1);
                    return true;
                }
                Err((e, _)) => {
                    tracing::warn!("cannot write to {topic} (trying again in {wait:?}): {e}");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.cancelled() => return false,
                    }
                    wait = (wait * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn malformed_messages_say_what_is_wrong() {
        let cases: &[(&[u8], &str)] = &[
            (b"{", "bad JSON"),
            (b"[]", "bad JSON"),
            (br#"{"entity":"Order","id":1,"userId":"etl"}"#, "tenantId"),
            (br#"{"tenantId":"acme","id":1,"userId":"etl"}"#, "entity"),
            (
                br#"{"tenantId":"acme","entity":"Order","userId":"etl"}"#,
                "id",
            ),
            (br#"{"tenantId":"acme","entity":"Order","id":1}"#, "userId"),
            (
                br#"{"tenantId":"a c","entity":"Order","id":1,"userId":"etl"}"#,
                "field `tenantId`",
            ),
            (
                br#"{"tenantId":"acme","entity":"Order","id":[1],"userId":"etl"}"#,
                "field `id`",
            ),
            (
                br#"{"tenantId":"acme","entity":"Or der","id":1,"userId":"etl"}"#,
                "field `entity`",
            ),
            (
                br#"{"tenantId":"acme","entity":"Order","id":1,"userId":""}"#,
                "field `userId`",
            ),
            (
                br#"{"tenantId":"acme","entity":"Order","id":1,"userId":"etl","eventId":""}"#,
                "field `eventId`",
            ),
            (
                br#"{"tenantId":"acme","entity":"Order","id":1,"userId":"etl","eventId":7}"#,
                "eventId",
            ),
        ];
        for (payload, want) in cases {
            let err = parse(Some(payload))
                .err()
                .unwrap_or_else(|| panic!("{} was accepted", String::from_utf8_lossy(payload)));
            assert!(
                err.contains(want),
                "{}: {err}",
                String::from_utf8_lossy(payload)
            );
        }
        assert!(parse(None).unwrap_err().contains("empty"));
        let ok = parse(Some(
            br#"{"tenantId":"acme","entity":"Order","id":123,"userId":"etl","eventId":"e1","timestamp":1}"#,
        ))
        .unwrap();
        assert_eq!(ok.room.key.as_str(), "Order:123");
        assert_eq!(ok.at, Some(1));
        let iso = br#"{"tenantId":"a","entity":"O","id":1,"userId":"u","timestamp":"2026-12-06T10:00:00.250Z"}"#;
        assert_eq!(parse(Some(iso)).unwrap().at, Some(1_796_551_200_250));
        for bad in [&br#""yesterday""#[..], b"-5", b"[1]"] {
            let mut p =
                br#"{"tenantId":"a","entity":"O","id":1,"userId":"u","timestamp":"#.to_vec();
            p.extend_from_slice(bad);
            p.push(b'}');
            let err = parse(Some(&p)).unwrap_err();
            assert!(err.contains("field `timestamp`"), "{err}");
        }
        assert_eq!(ok.event_id.as_deref(), Some("e1"));
    }
}
