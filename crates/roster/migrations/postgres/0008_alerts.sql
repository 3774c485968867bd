-- Alert rules (SPEC §8), per tenant, managed over REST (/api/v1/alert-rules).
-- kind: capacity | latency | heartbeat_missed | online_drop; scope: tenant |
-- room | roomType (target: the room key or the type code); the webhook secret
-- is write-only over REST.
CREATE TABLE alert_rules (
    tenant         TEXT   NOT NULL CHECK (length(tenant) BETWEEN 1 AND 64),
    id             TEXT   NOT NULL CHECK (length(id) BETWEEN 1 AND 64),
    name           TEXT   NOT NULL,
    kind           TEXT   NOT NULL,
    threshold      BIGINT NOT NULL,
    window_ms      BIGINT NOT NULL,
    scope          TEXT   NOT NULL,
    target         TEXT,
    severity       TEXT   NOT NULL,
    enabled        BIGINT NOT NULL,
    webhook_url    TEXT,
    webhook_secret TEXT,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    PRIMARY KEY (tenant, id)
);

-- Alert events: one row per firing, resolved in place. subject is the room
-- key of a per-room alert (capacity) and '' for the rule's whole scope. At
-- most one firing row per (tenant, rule, subject): the index is what makes a
-- rule fire once when several nodes evaluate it.
CREATE TABLE alert_events (
    tenant      TEXT   NOT NULL CHECK (length(tenant) BETWEEN 1 AND 64),
    id          TEXT   NOT NULL,
    rule_id     TEXT   NOT NULL,
    rule_name   TEXT   NOT NULL,
    kind        TEXT   NOT NULL,
    severity    TEXT   NOT NULL,
    scope       TEXT   NOT NULL,
    target      TEXT,
    subject     TEXT   NOT NULL,
    state       TEXT   NOT NULL,
    value       BIGINT NOT NULL,
    threshold   BIGINT NOT NULL,
    message     TEXT   NOT NULL,
    fired_at    BIGINT NOT NULL,
    resolved_at BIGINT,
    acked_at    BIGINT,
    acked_by    TEXT,
    PRIMARY KEY (tenant, id)
);
CREATE UNIQUE INDEX alert_events_one_firing ON alert_events (tenant, rule_id, subject) WHERE state = 'firing';
CREATE INDEX alert_events_by_time ON alert_events (tenant, fired_at);

-- Named leases among the nodes sharing this database (the alert evaluator's):
-- held by one node until expires_at (unix ms) unless renewed.
CREATE TABLE leases (
    name       TEXT   NOT NULL PRIMARY KEY,
    holder     TEXT   NOT NULL,
    expires_at BIGINT NOT NULL
);
