-- Lifecycle events already applied, by their eventId (Kafka and POST
-- /lifecycle), so a redelivered or repeated event applies once. Kept for
-- kafka.dedup_window (purged by the maintenance task), so a restart keeps it.
CREATE TABLE lifecycle_events (
    tenant     TEXT   NOT NULL CHECK (length(tenant) BETWEEN 1 AND 64),
    event_id   TEXT   NOT NULL CHECK (length(event_id) BETWEEN 1 AND 200),
    applied_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, event_id)
) WITHOUT ROWID;
CREATE INDEX lifecycle_events_applied_at ON lifecycle_events (applied_at);
