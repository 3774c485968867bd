//! Metric names, in one place (Prometheus, rendered at `/metrics`).

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

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Installs the process-wide recorder once; later calls return the same handle.
pub fn install() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(GHOST_TIME.into()),
                    &[0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 45.0, 60.0, 120.0],
                )
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
    describe_counter!(SESSION_TIMEOUTS, "sessions ended by session_timeout");
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
    for g in [
        CONNECTIONS,
        SESSIONS,
        ROOMS,
        EXPIRY_QUEUE,
        JOURNAL_QUEUE,
        OPENINGS,
    ] {
        metrics::gauge!(g).set(0.0);
    }
}
