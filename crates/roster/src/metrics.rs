//! Metric names, in one place (Prometheus, rendered at `/metrics`), and the
//! recorder: every histogram gets explicit buckets (so it renders as a histogram,
//! not a summary) and every unlabelled metric is registered at zero on install, so
//! a fresh server already lists all of them. The full list, with meanings, is in
//! docs/OPERATIONS.md; this file must never grow a name that is not listed there.

pub const CONNECTIONS: &str = "roster_connections";
pub const SESSIONS: &str = "roster_sessions";
pub const ROOMS: &str = "roster_rooms";
pub const MESSAGES_IN: &str = "roster_messages_in_total";
pub const MESSAGES_OUT: &str = "roster_messages_out_total";
pub const DIFFS_SENT: &str = "roster_diffs_sent_total";
pub const ERRORS: &str = "roster_errors_total";
pub const SESSION_TIMEOUTS: &str = "roster_session_timeouts_total";
pub const LOCK_ACQUISITIONS: &str = "roster_lock_acquisitions_total";
pub const LOCK_CONTENTION: &str = "roster_lock_contention_total";
pub const GHOST_TIME: &str = "roster_ghost_time_seconds";
pub const SEND_QUEUE_DROPS: &str = "roster_send_queue_drops_total";
pub const EXPIRY_QUEUE: &str = "roster_expiry_queue_depth";
pub const SESSIONS_RESUMED: &str = "roster_sessions_resumed_total";
pub const JOURNAL_QUEUE: &str = "roster_journal_queue_depth";
pub const JOURNAL_DROPPED: &str = "roster_journal_dropped_total";
pub const JOURNAL_WRITTEN: &str = "roster_journal_rows_written_total";
pub const JOURNAL_WRITE_ERRORS: &str = "roster_journal_write_errors_total";
pub const JOURNAL_BATCH_SECONDS: &str = "roster_journal_batch_seconds";
pub const OPENINGS: &str = "roster_openings";
pub const OPENINGS_REFUSED: &str = "roster_openings_refused_total";
pub const PING_RTT: &str = "roster_ping_rtt_seconds";
pub const DIFF_DELIVERY: &str = "roster_diff_delivery_seconds";
pub const HTTP_REQUEST_DURATION: &str = "roster_http_request_duration_seconds";
pub const ONLINE_USERS: &str = "roster_online_users";
pub const STALE_ENTITIES: &str = "roster_stale_entities";
pub const LOCKS_HELD: &str = "roster_locks_held";
pub const REDIS_UP: &str = "roster_redis_up";
pub const DATABASE_UP: &str = "roster_database_up";
pub const TRANSITIONS: &str = "roster_transitions_total";
pub const WEBHOOK_EVENTS: &str = "roster_webhook_events_total";
pub const WEBHOOK_RETRIES: &str = "roster_webhook_retries_total";
pub const KAFKA_UP: &str = "roster_kafka_up";
pub const KAFKA_LIFECYCLE: &str = "roster_kafka_lifecycle_events_total";
pub const KAFKA_LIFECYCLE_RETRIES: &str = "roster_kafka_lifecycle_retries_total";
pub const KAFKA_CONSUMER_LAG: &str = "roster_kafka_consumer_lag";
pub const KAFKA_PRODUCED: &str = "roster_kafka_events_produced_total";
pub const ALERTS_FIRED: &str = "roster_alerts_fired_total";
pub const ALERTS_RESOLVED: &str = "roster_alerts_resolved_total";
pub const ALERTS_FIRING: &str = "roster_alerts_firing";
pub const ALERT_EVALUATIONS: &str = "roster_alert_evaluations_total";
pub const ALERT_WEBHOOKS: &str = "roster_alert_webhooks_total";

/// Buckets (seconds) of each histogram: (name, upper bounds).
const BUCKETS: &[(&str, &[f64])] = &[
    // Seconds to minutes: session_timeout + a sweep, or leave_grace.
    (
        GHOST_TIME,
        &[0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 45.0, 60.0, 120.0],
    ),
    // A WebSocket round trip: LAN to a slow mobile link.
    (
        PING_RTT,
        &[
            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ],
    ),
    // Queue hand-off, hot path: sub-millisecond when healthy.
    (
        DIFF_DELIVERY,
        &[
            0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
        ],
    ),
    (
        HTTP_REQUEST_DURATION,
        &[
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ],
    ),
    (
        JOURNAL_BATCH_SECONDS,
        &[
            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ],
    ),
];

/// The route label of a request no route matched (404s): raw paths would let
/// any client create series at will.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// `2xx`, `4xx`, … — the status label of [`HTTP_REQUEST_DURATION`].
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Installs the process-wide recorder once; later calls return the same handle.
pub fn install() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = BUCKETS
                .iter()
                .try_fold(PrometheusBuilder::new(), |b, (name, buckets)| {
                    b.set_buckets_for_metric(Matcher::Full((*name).into()), buckets)
                })
                // Only an empty bucket list fails, and none above is empty
                // (checked by `every_histogram_has_buckets` below).
                .map(|b| b.build_recorder())
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            let _ = metrics::set_global_recorder(recorder);
            describe();
            register_zeroes();
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(CONNECTIONS, "open WebSocket connections");
    describe_gauge!(
        SESSIONS,
        "live sessions (connected or inside their leave grace)"
    );
    describe_gauge!(ROOMS, "rooms held by the engine");
    describe_counter!(MESSAGES_IN, "client messages received, by type");
    describe_counter!(MESSAGES_OUT, "server messages queued, by type");
    describe_counter!(
        DIFFS_SENT,
        "PRESENCE_DIFF messages produced (one per room flush)"
    );
    describe_counter!(ERRORS, "ERROR messages sent, by code");
    describe_counter!(
        TRANSITIONS,
        "presence transitions emitted by this node, by kind (member_added, lock_released, user_online, ...)"
    );
    describe_counter!(SESSION_TIMEOUTS, "sessions ended by session_timeout");
    describe_counter!(
        WEBHOOK_EVENTS,
        "presence events handed to webhook endpoints, by outcome (delivered, failed after webhooks.retry_for, dropped: trimmed from the tenant log before delivery or not appended while the engine was unreachable)"
    );
    describe_counter!(WEBHOOK_RETRIES, "webhook POSTs tried again after a failure");
    describe_counter!(
        ALERTS_FIRED,
        "alerts fired, by severity (once per alert, on the node that fired it)"
    );
    describe_counter!(ALERTS_RESOLVED, "alerts resolved, by severity");
    describe_gauge!(
        ALERTS_FIRING,
        "alerts firing after the last evaluation (set on the node holding the alerts lease)"
    );
    describe_counter!(
        ALERT_EVALUATIONS,
        "evaluations of every tenant's alert rules run by this node (while it holds the alerts lease)"
    );
    describe_counter!(
        ALERT_WEBHOOKS,
        "alert rule webhook POSTs, by outcome (delivered, failed after webhooks.retry_for)"
    );
    describe_gauge!(
        KAFKA_UP,
        "1 if the Kafka brokers answered the last probe (kafka.brokers set)"
    );
    describe_counter!(
        KAFKA_LIFECYCLE,
        "lifecycle events consumed from Kafka, by outcome (applied, duplicate of an applied eventId, superseded by a newer event of the record, dead_lettered to <topic>.dlt)"
    );
    describe_counter!(
        KAFKA_LIFECYCLE_RETRIES,
        "lifecycle events tried again after a failed apply (kafka.retry_backoff)"
    );
    describe_gauge!(
        KAFKA_CONSUMER_LAG,
        "lifecycle messages behind the consumer's position, per topic, over the partitions this node holds"
    );
    describe_counter!(
        KAFKA_PRODUCED,
        "presence events to Kafka, by stream (events, status) and outcome (delivered, failed after librdkafka's retries, dropped from a full queue)"
    );
    describe_counter!(LOCK_ACQUISITIONS, "successful field lock acquisitions");
    describe_counter!(
        LOCK_CONTENTION,
        "LOCK requests refused because another session held the field"
    );
    describe_histogram!(
        GHOST_TIME,
        Unit::Seconds,
        "time a dead session stayed visible before its leave"
    );
    describe_counter!(
        SEND_QUEUE_DROPS,
        "frames not queued because a connection's send queue was full"
    );
    describe_gauge!(EXPIRY_QUEUE, "deadlines waiting in the sweeper");
    describe_counter!(
        SESSIONS_RESUMED,
        "sessions resumed by clientId inside the leave grace"
    );
    describe_gauge!(
        JOURNAL_QUEUE,
        "activity/session/statistics rows waiting to be written to the database"
    );
    describe_counter!(
        JOURNAL_DROPPED,
        "rows dropped: the journal queue was full, or the database refused the row"
    );
    describe_counter!(JOURNAL_WRITTEN, "rows written to the database");
    describe_counter!(
        JOURNAL_WRITE_ERRORS,
        "failed batch writes (retried with back-off)"
    );
    describe_histogram!(
        JOURNAL_BATCH_SECONDS,
        Unit::Seconds,
        "time to write one batch"
    );
    describe_histogram!(
        PING_RTT,
        Unit::Seconds,
        "server ping to client pong round trip, per pong"
    );
    describe_histogram!(
        DIFF_DELIVERY,
        Unit::Seconds,
        "from the sweeper taking a due diff flush to the diff handed to every local \
         member's send queue (Redis engine: published to Redis)"
    );
    describe_histogram!(
        HTTP_REQUEST_DURATION,
        Unit::Seconds,
        "HTTP request latency, by method, route template and status class"
    );
    describe_gauge!(
        ONLINE_USERS,
        "distinct users with a session on this node (sampled)"
    );
    describe_gauge!(
        STALE_ENTITIES,
        "rooms whose entity is flagged stale, all nodes (sampled)"
    );
    describe_gauge!(LOCKS_HELD, "field locks held, all nodes (sampled)");
    describe_gauge!(
        REDIS_UP,
        "1 when the presence engine is reachable (always 1 with the memory engine)"
    );
    describe_gauge!(
        DATABASE_UP,
        "1 when the database answered its last ping (sampled)"
    );
    describe_gauge!(
        OPENINGS,
        "connections in their opening (accepted, no WELCOME yet)"
    );
    describe_counter!(
        OPENINGS_REFUSED,
        "connections closed at accept: their address was at limits.max_openings_per_ip"
    );
}

/// Unlabelled counters and gauges exist from the start (at 0), so a scrape can
/// tell "nothing happened" from "not exported".
fn register_zeroes() {
    for c in [
        DIFFS_SENT,
        SESSION_TIMEOUTS,
        LOCK_ACQUISITIONS,
        LOCK_CONTENTION,
        SEND_QUEUE_DROPS,
        SESSIONS_RESUMED,
        JOURNAL_DROPPED,
        JOURNAL_WRITTEN,
        JOURNAL_WRITE_ERRORS,
        OPENINGS_REFUSED,
    ] {
        metrics::counter!(c).increment(0);
    }
    for kind in crate::core::transition::Transition::KINDS {
        metrics::counter!(TRANSITIONS, "kind" => kind).increment(0);
    }
    for outcome in ["delivered", "failed", "dropped"] {
        metrics::counter!(WEBHOOK_EVENTS, "outcome" => outcome).increment(0);
    }
    metrics::counter!(WEBHOOK_RETRIES).increment(0);
    for sev in ["info", "warning", "critical"] {
        metrics::counter!(ALERTS_FIRED, "severity" => sev).increment(0);
        metrics::counter!(ALERTS_RESOLVED, "severity" => sev).increment(0);
    }
    for outcome in ["delivered", "failed"] {
        metrics::counter!(ALERT_WEBHOOKS, "outcome" => outcome).increment(0);
    }
    metrics::counter!(ALERT_EVALUATIONS).increment(0);
    metrics::gauge!(ALERTS_FIRING).set(0.0);
    for outcome in ["applied", "duplicate", "superseded", "dead_lettered"] {
        metrics::counter!(KAFKA_LIFECYCLE, "outcome" => outcome).increment(0);
    }
    metrics::counter!(KAFKA_LIFECYCLE_RETRIES).increment(0);
    for g in [
        CONNECTIONS,
        SESSIONS,
        ROOMS,
        EXPIRY_QUEUE,
        JOURNAL_QUEUE,
        ONLINE_USERS,
        STALE_ENTITIES,
        LOCKS_HELD,
        OPENINGS,
    ] {
        metrics::gauge!(g).set(0.0);
    }
    // Health is up until a check says otherwise: start-up fails when the engine
    // or the database cannot be reached.
    for g in [REDIS_UP, DATABASE_UP] {
        metrics::gauge!(g).set(1.0);
    }
    // Registering a histogram handle is enough for the exporter to list it
    // (empty buckets, `_sum 0`, `_count 0`).
    for h in [GHOST_TIME, PING_RTT, DIFF_DELIVERY, JOURNAL_BATCH_SECONDS] {
        let _ = metrics::histogram!(h);
    }
    // Request latency is labelled; label sets exist once seen. The scrape route's
    // own series is there from the start (every scrape lands in it).
    let _ = metrics::histogram!(
        HTTP_REQUEST_DURATION,
        "method" => "GET",
        "route" => "/metrics",
        "status" => "2xx"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_histogram_has_buckets() {
        for h in [
            GHOST_TIME,
            PING_RTT,
            DIFF_DELIVERY,
            HTTP_REQUEST_DURATION,
            JOURNAL_BATCH_SECONDS,
        ] {
            let b = BUCKETS.iter().find(|(n, _)| *n == h).map(|(_, b)| *b);
            assert!(b.is_some_and(|b| !b.is_empty()), "{h} has no buckets");
            let b = b.unwrap_or_default();
            assert!(b.windows(2).all(|w| w[0] < w[1]), "{h}: buckets not sorted");
        }
    }

    #[test]
    fn status_classes() {
        assert_eq!(status_class(200), "2xx");
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(404), "4xx");
        assert_eq!(status_class(503), "5xx");
        assert_eq!(status_class(101), "1xx");
    }
}
