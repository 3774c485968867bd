-- Webhook endpoints of the presence event stream (SPEC §7), per tenant:
-- managed over REST (/api/v1/webhooks) and loaded at start-up. `events` is a
-- JSON array of event kinds, or NULL for every kind but member_updated.
CREATE TABLE webhooks (
    tenant     TEXT   NOT NULL CHECK (length(tenant) BETWEEN 1 AND 64),
    id         TEXT   NOT NULL CHECK (length(id) BETWEEN 1 AND 64),
    url        TEXT   NOT NULL,
    secret     TEXT   NOT NULL,
    events     TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, id)
) WITHOUT ROWID;
