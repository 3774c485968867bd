//! The activity log: the audit trail of joins, leaves, locks, lifecycle and admin
//! actions. Pages are keyset on `id` (never OFFSET), the export streams in chunks
//! so a million rows never sit in memory, and the room audit is folded from the
//! room's join/leave rows one chunk at a time.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures_util::stream::{self, BoxStream, StreamExt};

use super::sql::{page, to_json, Conditions, Driver, Query, Row};
use super::{
    ActivityFilter, ActivityRow, ActivityStats, AuditParticipant, RoomAudit, StoreError, UnixMs,
};

/// Rows per query of the stream, the audit fold and the purge.
const CHUNK: i64 = 1000;
const PURGE_CHUNK: i64 = 10_000;
const TIMELINE_ROWS: i64 = 500;
const LOCK_ROWS: i64 = 1000;

const COLUMNS: &str =
    "SELECT id, tenant, at_ms, kind, actor, user_id, room_key, session_id, details FROM activity";

fn row_from(r: &Row) -> Result<ActivityRow, StoreError> {
    Ok(ActivityRow {
        id: r.int(0)?,
        tenant: r.text(1)?,
        at: r.int(2)?,
        kind: r.text(3)?,
        actor: r.opt_text(4)?,
        user: r.opt_text(5)?,
        room: r.opt_text(6)?,
        session: r.opt_text(7)?,
        details: r.json(8)?,
    })
}

/// Rows per multi-row INSERT: one round trip instead of one per row
/// (9 parameters each, far below either database's parameter limit).
const ROWS_PER_INSERT: usize = 100;

/// Inserts in the given order (ids ascend in that order).
pub(super) fn insert(rows: &[&ActivityRow]) -> Result<Vec<Query>, StoreError> {
    let mut out = Vec::new();
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let values: Vec<String> = (0..chunk.len())
            .map(|i| {
                let p: Vec<String> = (1..=8).map(|k| format!("${}", i * 8 + k)).collect();
                format!("({})", p.join(", "))
            })
            .collect();
        let mut q = Query::new(format!(
            "INSERT INTO activity (tenant, at_ms, kind, actor, user_id, room_key, session_id, \
             details) VALUES {}",
            values.join(", ")
        ));
        for row in chunk {
            q = q
                .text(&row.tenant)
                .int(row.at)
                .text(&row.kind)
                .opt_text(row.actor.as_deref())
                .opt_text(row.user.as_deref())
                .opt_text(row.room.as_deref())
                .opt_text(row.session.as_deref())
                .text(to_json(&row.details)?);
        }
        out.push(q);
    }
    Ok(out)
}

/// The filter's conditions, plus `id > after` when streaming forward.
fn conditions(f: &ActivityFilter, forward_from: Option<i64>) -> Conditions {
    let mut c = Conditions::default();
    c.text_eq("tenant", &f.tenant);
    if let Some(room) = &f.room {
        c.text_eq("room_key", room);
    }
    if let Some(user) = &f.user {
        c.text_eq("user_id", user);
    }
    if let Some(kind) = &f.kind {
        c.text_eq("kind", kind);
    }
    if let Some(from) = f.from {
        c.int("at_ms", ">=", from);
    }
    if let Some(to) = f.to {
        c.int("at_ms", "<", to);
    }
    if let Some(after) = f.after_id {
        c.int("id", "<", after);
    }
    if let Some(last) = forward_from {
        c.int("id", ">", last);
    }
    c
}

pub(super) async fn list(
    db: &dyn Driver,
    f: &ActivityFilter,
) -> Result<Vec<ActivityRow>, StoreError> {
    let q = conditions(f, None).query(
        COLUMNS,
        "ORDER BY id DESC LIMIT {limit}",
        Some(page(f.limit)),
    );
    db.fetch(q).await?.iter().map(row_from).collect()
}

/// Oldest first, one keyset chunk at a time: no connection or snapshot is held
/// between chunks, so a slow reader never blocks writers or checkpoints.
pub(super) fn stream(
    db: Arc<dyn Driver>,
    f: ActivityFilter,
) -> BoxStream<'static, Result<ActivityRow, StoreError>> {
    struct State {
        db: Arc<dyn Driver>,
        f: ActivityFilter,
        last_id: i64,
        done: bool,
    }
    let state = State {
        db,
        f,
        last_id: i64::MIN,
        done: false,
    };
    stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        let q = conditions(&s.f, Some(s.last_id)).query(
            COLUMNS,
            "ORDER BY id LIMIT {limit}",
            Some(CHUNK),
        );
        let chunk: Result<Vec<ActivityRow>, StoreError> = match s.db.fetch(q).await {
            Ok(rows) => rows.iter().map(row_from).collect(),
            Err(e) => Err(e),
        };
        match chunk {
            Ok(rows) => {
                if (rows.len() as i64) < CHUNK {
                    s.done = true;
                }
                if let Some(last) = rows.last() {
                    s.last_id = last.id;
                }
                Some((stream::iter(rows.into_iter().map(Ok)).left_stream(), s))
            }
            Err(e) => {
                s.done = true;
                Some((stream::iter(std::iter::once(Err(e))).right_stream(), s))
            }
        }
    })
    .flatten()
    .boxed()
}

pub(super) async fn stats(
    db: &dyn Driver,
    tenant: &str,
    from: UnixMs,
    to: UnixMs,
) -> Result<ActivityStats, StoreError> {
    let mut out = ActivityStats::default();
    let by_type = db
        .fetch(
            Query::new(
                "SELECT kind, COUNT(*) FROM activity \
                 WHERE tenant = $1 AND at_ms >= $2 AND at_ms < $3 GROUP BY kind",
            )
            .text(tenant)
            .int(from)
            .int(to),
        )
        .await?;
    for r in &by_type {
        out.by_type.insert(r.text(0)?, r.u64(1)?);
    }
    let by_hour = db
        .fetch(
            Query::new(
                "SELECT (at_ms / 3600000) * 3600000, COUNT(*) FROM activity \
                 WHERE tenant = $1 AND at_ms >= $2 AND at_ms < $3 GROUP BY 1 ORDER BY 1",
            )
            .text(tenant)
            .int(from)
            .int(to),
        )
        .await?;
    for r in &by_hour {
        out.by_hour.push((r.int(0)?, r.u64(1)?));
    }
    Ok(out)
}

/// Deletes in chunks so other writers get the database in between.
pub(super) async fn purge(db: &dyn Driver, older_than: UnixMs) -> Result<u64, StoreError> {
    let mut total = 0;
    loop {
        let n = db
            .execute(
                Query::new(
                    "DELETE FROM activity WHERE id IN \
                     (SELECT id FROM activity WHERE at_ms < $1 LIMIT $2)",
                )
                .int(older_than)
                .int(PURGE_CHUNK),
            )
            .await?;
        total += n;
        if n < PURGE_CHUNK as u64 {
            return Ok(total);
        }
    }
}

/// Memberships of one user, as closed intervals `[start, end]`.
#[derive(Default)]
struct Presence {
    sessions: std::collections::HashSet<String>,
    intervals: Vec<(UnixMs, UnixMs)>,
}

pub(super) async fn room_audit(
    db: &dyn Driver,
    tenant: &str,
    room: &str,
    from: UnixMs,
    to: UnixMs,
) -> Result<RoomAudit, StoreError> {
    let window = || ActivityFilter {
        tenant: tenant.to_owned(),
        room: Some(room.to_owned()),
        from: Some(from),
        to: Some(to),
        ..ActivityFilter::default()
    };

    // Open memberships by session (or by user for rows without a session).
    let mut open: HashMap<String, (String, UnixMs)> = HashMap::new();
    let mut users: BTreeMap<String, Presence> = BTreeMap::new();
    let mut last_id = i64::MIN;
    loop {
        let mut c = conditions(&window(), Some(last_id));
        c.raw("kind IN ('join', 'leave', 'timeout')");
        let rows = db
            .fetch(c.query(COLUMNS, "ORDER BY id LIMIT {limit}", Some(CHUNK)))
            .await?;
        for r in &rows {
            let row = row_from(r)?;
            last_id = row.id;
            let Some(user) = row.user else { continue };
            let key = row
                .session
                .clone()
                .unwrap_or_else(|| format!("user:{user}"));
            let entry = users.entry(user.clone()).or_default();
            entry.sessions.insert(key.clone());
            if row.kind == "join" {
                // A second join without a leave closes the first membership.
                if let Some((u, since)) = open.insert(key, (user, row.at)) {
                    users.entry(u).or_default().intervals.push((since, row.at));
                }
            } else {
                let since = match open.remove(&key) {
                    Some((_, since)) => since,
                    None => from,
                };
                entry.intervals.push((since, row.at));
            }
        }
        if (rows.len() as i64) < CHUNK {
            break;
        }
    }
    for (_, (user, since)) in open {
        users.entry(user).or_default().intervals.push((since, to));
    }

    let mut participants: Vec<AuditParticipant> = users
        .into_iter()
        .filter(|(_, p)| !p.intervals.is_empty())
        .map(|(user, mut p)| {
            p.intervals.sort_unstable();
            let first_seen = p.intervals.first().map_or(from, |i| i.0);
            let last_seen = p.intervals.iter().map(|i| i.1).max().unwrap_or(first_seen);
            AuditParticipant {
                user,
                sessions: u32::try_from(p.sessions.len()).unwrap_or(u32::MAX),
                time_spent_ms: union_length(&p.intervals),
                first_seen,
                last_seen,
            }
        })
        .collect();
    participants.sort_by(|a, b| {
        b.time_spent_ms
            .cmp(&a.time_spent_ms)
            .then_with(|| a.user.cmp(&b.user))
    });

    let mut c = conditions(&window(), None);
    c.raw("kind IN ('lock_acquired', 'lock_released', 'lock_expired', 'lock_force_released')");
    let locks = db
        .fetch(c.query(COLUMNS, "ORDER BY id DESC LIMIT {limit}", Some(LOCK_ROWS)))
        .await?
        .iter()
        .map(row_from)
        .collect::<Result<_, _>>()?;
    let timeline = db
        .fetch(conditions(&window(), None).query(
            COLUMNS,
            "ORDER BY id DESC LIMIT {limit}",
            Some(TIMELINE_ROWS),
        ))
        .await?
        .iter()
        .map(row_from)
        .collect::<Result<_, _>>()?;
    Ok(RoomAudit {
        participants,
        locks,
        timeline,
    })
}

/// Total length covered by sorted intervals, overlaps counted once.
fn union_length(sorted: &[(UnixMs, UnixMs)]) -> u64 {
    let mut total: u64 = 0;
    let mut current: Option<(UnixMs, UnixMs)> = None;
    for &(start, end) in sorted {
        let end = end.max(start);
        current = match current {
            Some((s, e)) if start <= e => Some((s, e.max(end))),
            Some((s, e)) => {
                total = total.saturating_add(e.abs_diff(s));
                Some((start, end))
            }
            None => Some((start, end)),
        };
    }
    if let Some((s, e)) = current {
        total = total.saturating_add(e.abs_diff(s));
    }
    total
}

#[cfg(test)]
mod tests {
    use super::union_length;

    #[test]
    fn overlapping_sessions_count_once() {
        assert_eq!(union_length(&[(0, 10), (5, 20), (30, 40)]), 30);
        assert_eq!(union_length(&[(0, 10), (10, 20)]), 20);
        assert_eq!(union_length(&[(5, 3)]), 0);
        assert_eq!(union_length(&[]), 0);
    }
}
