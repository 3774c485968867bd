-- A room type's timing overrides (SPEC §1, "default heartbeat/timeout
-- overrides"): NULL is the server's `timing.heartbeat_interval` /
-- `timing.session_timeout`. Rooms take them from their type.
ALTER TABLE room_types ADD COLUMN heartbeat_interval_ms BIGINT CHECK (heartbeat_interval_ms > 0);
ALTER TABLE room_types ADD COLUMN session_timeout_ms BIGINT CHECK (session_timeout_ms > 0);
