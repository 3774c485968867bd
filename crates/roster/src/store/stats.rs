//! Per-room statistics: 1-minute buckets merged by upsert as samples arrive (peaks
//! take the maximum, sums and counters add, users go into a set, latencies into a
//! fixed histogram), rebuilt into hour and day buckets by [`rollup`], purged per
//! resolution. Everything is additive or a maximum, so several nodes may write the
//! same room and minute without reading first.
//!
//! Rollup rebuilds coarse buckets from finer ones (replacing, hence idempotent) and
//! remembers in `stat_rollups` how far they are final; a sample that arrives late
//! for a minute before that mark (a batch retried after an outage) moves the mark
//! back in the same transaction, so the next rollup rebuilds that hour and day.

use std::collections::HashMap;
use std::sync::LazyLock;

use super::sql::{Driver, Query, Row, Step};
use super::{Bucket, StatBucket, StatSample, StatsOverview, StoreError, UnixMs};

/// Upper bounds (inclusive, ms) of the latency histogram's bins; one more bin
/// holds everything above the last bound. p95 is interpolated inside its bin.
pub const LATENCY_BOUNDS_MS: [u32; 12] = [5, 10, 20, 35, 50, 75, 100, 150, 250, 500, 1000, 2500];
const BINS: usize = LATENCY_BOUNDS_MS.len() + 1;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 86_400_000;
/// Most buckets one `room_stats` call returns.
const MAX_BUCKETS: i64 = 10_000;
/// Users per multi-row insert.
const USERS_PER_INSERT: usize = 200;

/// Start of the bucket holding `t` (saturating at the far past: no panic on input).
fn floor(t: UnixMs, width: i64) -> UnixMs {
    t.saturating_sub(t.rem_euclid(width))
}

fn bin_of(latency: u32) -> usize {
    LATENCY_BOUNDS_MS
        .iter()
        .position(|&b| latency <= b)
        .unwrap_or(BINS - 1)
}

fn lat_columns() -> String {
    (0..BINS)
        .map(|i| format!("lat_{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Columns after the key, in the order the merge binds and reads them.
const VALUE_COLUMNS: &str = "sessions_peak, sessions_sum, samples, users_peak, joins, leaves, \
     timeouts, latency_count, latency_sum, latency_max";
/// Which of [`VALUE_COLUMNS`] merge by maximum (the rest add).
const MAX_COLUMNS: [&str; 3] = ["sessions_peak", "users_peak", "latency_max"];

fn value_columns() -> Vec<String> {
    VALUE_COLUMNS
        .split(", ")
        .map(str::to_owned)
        .chain((0..BINS).map(|i| format!("lat_{i}")))
        .collect()
}

static MERGE_SQL: LazyLock<String> = LazyLock::new(|| {
    let cols = value_columns();
    let params: Vec<String> = (0..cols.len()).map(|i| format!("${}", i + 4)).collect();
    let sets: Vec<String> = cols
        .iter()
        .map(|c| {
            if MAX_COLUMNS.contains(&c.as_str()) {
                format!(
                    "{c} = CASE WHEN excluded.{c} > room_stats.{c} \
                     THEN excluded.{c} ELSE room_stats.{c} END"
                )
            } else {
                format!("{c} = room_stats.{c} + excluded.{c}")
            }
        })
        .collect();
    format!(
        "INSERT INTO room_stats (tenant, room_key, width_ms, bucket_start, {}) \
         VALUES ($1, $2, {MINUTE}, $3, {}) \
         ON CONFLICT (tenant, room_key, width_ms, bucket_start) DO UPDATE SET {}",
        cols.join(", "),
        params.join(", "),
        sets.join(", ")
    )
});

/// Rebuilds `target`-wide buckets from `source`-wide ones starting in `[$1, $2)`.
fn rollup_sql(target: i64, source: i64) -> String {
    let cols = value_columns();
    let aggregates: Vec<String> = cols
        .iter()
        .map(|c| {
            if MAX_COLUMNS.contains(&c.as_str()) {
                format!("MAX({c})")
            } else {
                format!("CAST(SUM({c}) AS BIGINT)")
            }
        })
        .collect();
    let sets: Vec<String> = cols.iter().map(|c| format!("{c} = excluded.{c}")).collect();
    format!(
        "INSERT INTO room_stats (tenant, room_key, width_ms, bucket_start, {}) \
         SELECT tenant, room_key, {target}, (bucket_start / {target}) * {target}, {} \
         FROM room_stats WHERE width_ms = {source} AND bucket_start >= $1 AND bucket_start < $2 \
         GROUP BY tenant, room_key, (bucket_start / {target}) * {target} \
         ON CONFLICT (tenant, room_key, width_ms, bucket_start) DO UPDATE SET {}",
        cols.join(", "),
        aggregates.join(", "),
        sets.join(", ")
    )
}

fn rollup_users_sql(target: i64, source: i64) -> String {
    format!(
        "INSERT INTO room_stat_users (tenant, room_key, width_ms, bucket_start, user_id) \
         SELECT DISTINCT tenant, room_key, {target}, (bucket_start / {target}) * {target}, user_id \
         FROM room_stat_users WHERE width_ms = {source} AND bucket_start >= $1 AND bucket_start < $2 \
         ON CONFLICT DO NOTHING"
    )
}

static ROLLUP_HOURS: LazyLock<(String, String)> =
    LazyLock::new(|| (rollup_sql(HOUR, MINUTE), rollup_users_sql(HOUR, MINUTE)));
static ROLLUP_DAYS: LazyLock<(String, String)> =
    LazyLock::new(|| (rollup_sql(DAY, HOUR), rollup_users_sql(DAY, HOUR)));

static READ_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT bucket_start, {VALUE_COLUMNS}, {} FROM room_stats \
         WHERE tenant = $1 AND room_key = $2 AND width_ms = $3 \
         AND bucket_start >= $4 AND bucket_start < $5 ORDER BY bucket_start LIMIT $6",
        lat_columns()
    )
});

fn to_i64(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

pub(super) fn merge_sample(s: &StatSample, steps: &mut Vec<Step>) {
    let minute = floor(s.minute, MINUTE);
    let mut bins = [0i64; BINS];
    let mut sum: i64 = 0;
    let mut max: i64 = 0;
    for &l in &s.latency_ms {
        bins[bin_of(l)] += 1;
        sum = sum.saturating_add(l.into());
        max = max.max(l.into());
    }
    let mut q = Query::new(MERGE_SQL.as_str())
        .text(&s.tenant)
        .text(&s.room)
        .int(minute)
        .int(s.online_sessions_peak.into())
        .int(to_i64(s.online_sessions_sum))
        .int(s.samples.into())
        .int(s.online_users_peak.into())
        .int(s.joins.into())
        .int(s.leaves.into())
        .int(s.timeouts.into())
        .int(s.latency_ms.len() as i64)
        .int(sum)
        .int(max);
    for b in bins {
        q = q.int(b);
    }
    steps.push(q.into());

    let mut users: Vec<&String> = s.unique_users.iter().collect();
    users.sort_unstable();
    users.dedup();
    for chunk in users.chunks(USERS_PER_INSERT) {
        let values: Vec<String> = (0..chunk.len())
            .map(|i| format!("($1, $2, {MINUTE}, $3, ${})", i + 4))
            .collect();
        let mut q = Query::new(format!(
            "INSERT INTO room_stat_users (tenant, room_key, width_ms, bucket_start, user_id) \
             VALUES {} ON CONFLICT DO NOTHING",
            values.join(", ")
        ))
        .text(&s.tenant)
        .text(&s.room)
        .int(minute);
        for u in chunk {
            q = q.text(u.as_str());
        }
        steps.push(q.into());
    }

    // A no-op unless the minute is in an hour (day) that rollup already finalised.
    steps.push(
        Query::new(format!(
            "UPDATE stat_rollups SET done_before = CASE WHEN width_ms = {HOUR} THEN $1 ELSE $2 END \
             WHERE (width_ms = {HOUR} AND done_before > $1) OR (width_ms = {DAY} AND done_before > $2)"
        ))
        .int(floor(minute, HOUR))
        .int(floor(minute, DAY))
        .into(),
    );
}

pub(super) async fn rollup(db: &dyn Driver, now: UnixMs) -> Result<u64, StoreError> {
    let marks = db
        .fetch(Query::new("SELECT width_ms, done_before FROM stat_rollups"))
        .await?;
    let mut done: HashMap<i64, i64> = HashMap::new();
    for r in &marks {
        done.insert(r.int(0)?, r.int(1)?);
    }
    let mut written = 0;
    // Hours from the complete minutes (the current hour is partial and will be
    // rebuilt next time), then days from the complete hours.
    let levels = [
        (HOUR, floor(now, MINUTE), &*ROLLUP_HOURS),
        (DAY, floor(now, HOUR), &*ROLLUP_DAYS),
    ];
    for (width, source_end, (sql, users_sql)) in levels {
        let mark = done.get(&width).copied().unwrap_or(0);
        let from = floor(mark, width);
        if from >= source_end {
            continue;
        }
        let changed = db
            .transaction(vec![
                Query::new(sql.as_str()).int(from).int(source_end).into(),
                Query::new(users_sql.as_str())
                    .int(from)
                    .int(source_end)
                    .into(),
                // Compare-and-set: a late sample that moved the mark meanwhile wins.
                Query::new(format!(
                    "UPDATE stat_rollups SET done_before = $1 \
                     WHERE width_ms = {width} AND done_before = $2"
                ))
                .int(floor(source_end, width))
                .int(mark)
                .into(),
            ])
            .await?;
        written += changed.first().copied().unwrap_or(0);
    }
    Ok(written)
}

fn p95(bins: &[i64; BINS], max: i64) -> Option<f64> {
    let total: i64 = bins.iter().sum();
    if total <= 0 {
        return None;
    }
    let rank = (total as f64 * 0.95).ceil();
    let mut below = 0.0;
    for (i, &n) in bins.iter().enumerate() {
        let n = n as f64;
        if n > 0.0 && below + n >= rank {
            let lower = if i == 0 {
                0.0
            } else {
                f64::from(LATENCY_BOUNDS_MS[i - 1])
            };
            let upper = match LATENCY_BOUNDS_MS.get(i) {
                Some(&b) => f64::from(b),
                None => (max as f64).max(lower),
            };
            let estimate = lower + (upper - lower) * ((rank - below) / n);
            return Some(estimate.min(max as f64));
        }
        below += n;
    }
    Some(max as f64)
}

fn bucket_from_row(r: &Row, unique: &HashMap<i64, u64>) -> Result<StatBucket, StoreError> {
    let start = r.int(0)?;
    let sessions_sum = r.int_or_zero(2)?;
    let samples = r.int_or_zero(3)?;
    let latency_count = r.int_or_zero(8)?;
    let latency_sum = r.int_or_zero(9)?;
    let latency_max = r.int_or_zero(10)?;
    let mut bins = [0i64; BINS];
    for (i, b) in bins.iter_mut().enumerate() {
        *b = r.int_or_zero(11 + i)?;
    }
    Ok(StatBucket {
        start,
        online_sessions_peak: r.u32(1)?,
        online_sessions_avg: if samples > 0 {
            sessions_sum as f64 / samples as f64
        } else {
            0.0
        },
        online_users_peak: r.u32(4)?,
        joins: r.u64(5)?,
        leaves: r.u64(6)?,
        timeouts: r.u64(7)?,
        unique_users: unique.get(&start).copied().unwrap_or(0),
        latency_avg_ms: (latency_count > 0).then(|| latency_sum as f64 / latency_count as f64),
        latency_p95_ms: p95(&bins, latency_max),
    })
}

pub(super) async fn room_stats(
    db: &dyn Driver,
    tenant: &str,
    room: &str,
    bucket: Bucket,
    from: UnixMs,
    to: UnixMs,
) -> Result<Vec<StatBucket>, StoreError> {
    let width = bucket.width_ms();
    let rows = db
        .fetch(
            Query::new(READ_SQL.as_str())
                .text(tenant)
                .text(room)
                .int(width)
                .int(from)
                .int(to)
                .int(MAX_BUCKETS),
        )
        .await?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let counts = db
        .fetch(
            Query::new(
                "SELECT bucket_start, COUNT(*) FROM room_stat_users \
                 WHERE tenant = $1 AND room_key = $2 AND width_ms = $3 \
                 AND bucket_start >= $4 AND bucket_start < $5 GROUP BY bucket_start",
            )
            .text(tenant)
            .text(room)
            .int(width)
            .int(from)
            .int(to),
        )
        .await?;
    let mut unique = HashMap::with_capacity(counts.len());
    for r in &counts {
        unique.insert(r.int(0)?, r.u64(1)?);
    }
    rows.iter().map(|r| bucket_from_row(r, &unique)).collect()
}

pub(super) async fn purge(
    db: &dyn Driver,
    minute_before: UnixMs,
    hour_before: UnixMs,
    day_before: UnixMs,
) -> Result<u64, StoreError> {
    let mut steps: Vec<Step> = Vec::new();
    for (width, before) in [
        (MINUTE, minute_before),
        (HOUR, hour_before),
        (DAY, day_before),
    ] {
        steps.push(
            Query::new("DELETE FROM room_stats WHERE width_ms = $1 AND bucket_start < $2")
                .int(width)
                .int(before)
                .into(),
        );
        steps.push(
            Query::new("DELETE FROM room_stat_users WHERE width_ms = $1 AND bucket_start < $2")
                .int(width)
                .int(before)
                .into(),
        );
    }
    let changed = db.transaction(steps).await?;
    Ok(changed.iter().step_by(2).sum())
}

pub(super) async fn overview(
    db: &dyn Driver,
    tenant: &str,
    from: UnixMs,
    to: UnixMs,
) -> Result<StatsOverview, StoreError> {
    let window = |sql: &str| Query::new(sql.to_owned()).text(tenant).int(from).int(to);
    let mut out = StatsOverview::default();

    let totals = db
        .fetch(window(
            "SELECT COUNT(*), COUNT(DISTINCT user_id) FROM sessions \
             WHERE tenant = $1 AND started_at >= $2 AND started_at < $3",
        ))
        .await?;
    if let Some(r) = totals.first() {
        out.sessions_started = r.u64(0)?;
        out.unique_users = r.u64(1)?;
    }

    let busiest = db
        .fetch(window(
            "SELECT room_key, MAX(sessions_peak) FROM room_stats \
             WHERE tenant = $1 AND bucket_start >= $2 AND bucket_start < $3 \
             GROUP BY room_key ORDER BY 2 DESC, 1 LIMIT 10",
        ))
        .await?;
    for r in &busiest {
        out.busiest_rooms.push((r.text(0)?, r.u32(1)?));
    }

    for (column, into) in [
        ("device", &mut out.by_device),
        ("os", &mut out.by_os),
        ("app_version", &mut out.by_app_version),
    ] {
        let rows = db
            .fetch(window(&format!(
                "SELECT COALESCE({column}, 'unknown'), COUNT(*) FROM sessions \
                 WHERE tenant = $1 AND started_at >= $2 AND started_at < $3 GROUP BY 1"
            )))
            .await?;
        for r in &rows {
            into.insert(r.text(0)?, r.u64(1)?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_land_in_their_bins() {
        assert_eq!(bin_of(0), 0);
        assert_eq!(bin_of(5), 0);
        assert_eq!(bin_of(6), 1);
        assert_eq!(bin_of(2500), 11);
        assert_eq!(bin_of(2501), 12);
    }

    #[test]
    fn p95_is_interpolated_inside_its_bin_and_never_above_the_max() {
        let mut bins = [0i64; BINS];
        assert_eq!(p95(&bins, 0), None);
        // 100 samples of 8 ms: all in (5, 10].
        bins[1] = 100;
        let p = p95(&bins, 8).unwrap_or_default();
        assert!(p > 5.0 && p <= 8.0, "{p}");
        // 95 fast, 5 very slow: p95 is still in the fast bin.
        let mut bins = [0i64; BINS];
        bins[0] = 95;
        bins[12] = 5;
        assert!(p95(&bins, 9000).unwrap_or_default() <= 5.0);
    }

    #[test]
    fn floors_are_euclidean() {
        assert_eq!(floor(61_500, MINUTE), 60_000);
        assert_eq!(floor(-1, MINUTE), -60_000);
        assert_eq!(floor(i64::MIN, DAY), i64::MIN);
        assert_eq!(floor(i64::MAX, DAY) % DAY, 0);
    }
}
