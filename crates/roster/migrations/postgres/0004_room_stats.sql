-- Per-room statistics buckets. `width_ms` is the resolution: 60000 (raw minutes,
-- merged by upsert as samples arrive), 3600000 and 86400000 (rebuilt from the finer
-- resolution by rollup). lat_0..lat_12 are a fixed latency histogram (bounds in
-- store/stats.rs) so p95 is computable for any bucket and adds up across buckets.

CREATE TABLE room_stats (
    tenant        TEXT   NOT NULL CHECK (length(tenant) BETWEEN 1 AND 64),
    room_key      TEXT   NOT NULL,
    width_ms      BIGINT NOT NULL CHECK (width_ms IN (60000, 3600000, 86400000)),
    bucket_start  BIGINT NOT NULL,
    sessions_peak BIGINT NOT NULL DEFAULT 0,
    sessions_sum  BIGINT NOT NULL DEFAULT 0,
    samples       BIGINT NOT NULL DEFAULT 0,
    users_peak    BIGINT NOT NULL DEFAULT 0,
    joins         BIGINT NOT NULL DEFAULT 0,
    leaves        BIGINT NOT NULL DEFAULT 0,
    timeouts      BIGINT NOT NULL DEFAULT 0,
    latency_count BIGINT NOT NULL DEFAULT 0,
    latency_sum   BIGINT NOT NULL DEFAULT 0,
    latency_max   BIGINT NOT NULL DEFAULT 0,
    lat_0         BIGINT NOT NULL DEFAULT 0,
    lat_1         BIGINT NOT NULL DEFAULT 0,
    lat_2         BIGINT NOT NULL DEFAULT 0,
    lat_3         BIGINT NOT NULL DEFAULT 0,
    lat_4         BIGINT NOT NULL DEFAULT 0,
    lat_5         BIGINT NOT NULL DEFAULT 0,
    lat_6         BIGINT NOT NULL DEFAULT 0,
    lat_7         BIGINT NOT NULL DEFAULT 0,
    lat_8         BIGINT NOT NULL DEFAULT 0,
    lat_9         BIGINT NOT NULL DEFAULT 0,
    lat_10        BIGINT NOT NULL DEFAULT 0,
    lat_11        BIGINT NOT NULL DEFAULT 0,
    lat_12        BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, room_key, width_ms, bucket_start)
);
-- Rollup and purge walk one resolution across every tenant by time.
CREATE INDEX room_stats_by_time ON room_stats (width_ms, bucket_start);

-- Distinct users seen per bucket (unique users = a count here).
CREATE TABLE room_stat_users (
    tenant       TEXT   NOT NULL,
    room_key     TEXT   NOT NULL,
    width_ms     BIGINT NOT NULL,
    bucket_start BIGINT NOT NULL,
    user_id      TEXT   NOT NULL,
    PRIMARY KEY (tenant, room_key, width_ms, bucket_start, user_id)
);
CREATE INDEX room_stat_users_by_time ON room_stat_users (width_ms, bucket_start);

-- How far each coarser resolution is final: buckets starting before `done_before`
-- are not rebuilt again. A late minute sample lowers it (store/stats.rs).
CREATE TABLE stat_rollups (
    width_ms    BIGINT NOT NULL PRIMARY KEY,
    done_before BIGINT NOT NULL
);
INSERT INTO stat_rollups (width_ms, done_before) VALUES (3600000, 0), (86400000, 0);
