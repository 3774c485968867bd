-- The audit trail. `id` is the keyset cursor: it only grows.

CREATE TABLE activity (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant     TEXT   NOT NULL CHECK (length(tenant) BETWEEN 1 AND 64),
    at_ms      BIGINT NOT NULL,
    kind       TEXT   NOT NULL CHECK (length(kind) BETWEEN 1 AND 64),
    actor      TEXT,
    user_id    TEXT,
    room_key   TEXT,
    session_id TEXT,
    details    TEXT   NOT NULL DEFAULT '{}'
);
CREATE INDEX activity_by_tenant ON activity (tenant, id);
CREATE INDEX activity_by_room ON activity (tenant, room_key, id) WHERE room_key IS NOT NULL;
CREATE INDEX activity_by_user ON activity (tenant, user_id, id) WHERE user_id IS NOT NULL;
-- Retention purge and time windows.
CREATE INDEX activity_by_time ON activity (at_ms);
