-- Session history (one row per session) and users' last seen time.

CREATE TABLE sessions (
    tenant      TEXT   NOT NULL CHECK (length(tenant) BETWEEN 1 AND 64),
    session_id  TEXT   NOT NULL,
    user_id     TEXT   NOT NULL,
    device      TEXT   NOT NULL,
    os          TEXT,
    app_version TEXT,
    client_id   TEXT,
    ip          TEXT,
    user_agent  TEXT,
    started_at  BIGINT NOT NULL,
    ended_at    BIGINT,
    end_reason  TEXT CHECK (end_reason IN ('left', 'disconnected', 'timeout', 'kicked', 'shutdown')),
    rooms       TEXT   NOT NULL DEFAULT '[]',
    PRIMARY KEY (tenant, session_id)
);
-- Newest-first keyset pages, for the tenant and per user.
CREATE INDEX sessions_by_start ON sessions (tenant, started_at, session_id);
CREATE INDEX sessions_by_user ON sessions (tenant, user_id, started_at, session_id);

-- The room filter of the history: which sessions visited a room, in page order.
CREATE TABLE session_rooms (
    tenant     TEXT   NOT NULL,
    room_key   TEXT   NOT NULL,
    started_at BIGINT NOT NULL,
    session_id TEXT   NOT NULL,
    PRIMARY KEY (tenant, room_key, started_at, session_id)
);

CREATE TABLE last_seen (
    tenant  TEXT   NOT NULL CHECK (length(tenant) BETWEEN 1 AND 64),
    user_id TEXT   NOT NULL,
    at_ms   BIGINT NOT NULL,
    PRIMARY KEY (tenant, user_id)
);
