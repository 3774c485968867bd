-- Rooms declared through the REST API (rooms created ad hoc by a join are never
-- stored), tenant room types beyond the ten seeded ones, and participants' roles.
-- Times are unix milliseconds; JSON is stored as text so both dialects agree.

CREATE TABLE rooms (
    tenant      TEXT   NOT NULL CHECK (length(tenant) BETWEEN 1 AND 64),
    room_key    TEXT   NOT NULL CHECK (length(room_key) BETWEEN 1 AND 200),
    room_type   TEXT   NOT NULL CHECK (length(room_type) BETWEEN 1 AND 64),
    capacity    BIGINT NOT NULL CHECK (capacity >= 0),
    idle_ttl_ms BIGINT NOT NULL CHECK (idle_ttl_ms >= 0),
    visibility  TEXT   NOT NULL CHECK (visibility IN ('open', 'private')),
    status      TEXT   NOT NULL CHECK (status IN ('active', 'maintenance', 'closed')),
    tags        TEXT   NOT NULL DEFAULT '[]',
    attributes  TEXT   NOT NULL DEFAULT '{}',
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant, room_key)
) WITHOUT ROWID;

-- The tag filter of GET /rooms; `rooms.tags` stays the copy that is read.
CREATE TABLE room_tags (
    tenant   TEXT NOT NULL,
    tag      TEXT NOT NULL,
    room_key TEXT NOT NULL,
    PRIMARY KEY (tenant, tag, room_key),
    FOREIGN KEY (tenant, room_key) REFERENCES rooms (tenant, room_key) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX room_tags_by_room ON room_tags (tenant, room_key);

CREATE TABLE room_types (
    tenant      TEXT   NOT NULL CHECK (length(tenant) BETWEEN 1 AND 64),
    code        TEXT   NOT NULL CHECK (length(code) BETWEEN 1 AND 64),
    capacity    BIGINT NOT NULL CHECK (capacity >= 0),
    idle_ttl_ms BIGINT NOT NULL CHECK (idle_ttl_ms >= 0),
    visibility  TEXT   NOT NULL CHECK (visibility IN ('open', 'private')),
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant, code)
) WITHOUT ROWID;

-- No foreign key to rooms: participants may be set on a room that lives only in
-- memory (created ad hoc); deleting a stored room deletes its participants.
CREATE TABLE participants (
    tenant   TEXT NOT NULL CHECK (length(tenant) BETWEEN 1 AND 64),
    room_key TEXT NOT NULL,
    user_id  TEXT NOT NULL,
    role     TEXT NOT NULL CHECK (role IN ('viewer', 'commenter', 'operator', 'owner')),
    PRIMARY KEY (tenant, room_key, user_id)
) WITHOUT ROWID;
