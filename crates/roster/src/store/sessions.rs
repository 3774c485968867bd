//! Session history (one row per session, written when it starts and updated when it
//! ends) and each user's last seen time. Writes arrive only through batches, so
//! they are idempotent: a repeated start is ignored, an end for a session whose start
//! was never written changes nothing, and last seen only moves forward.

use super::sql::{page, to_json, Arg, Conditions, Driver, Query, Row, Step};
use super::{SessionFilter, SessionRecord, StoreError, UnixMs};

pub(super) fn started(record: &SessionRecord, steps: &mut Vec<Step>) -> Result<(), StoreError> {
    steps.push(
        Query::new(
            "INSERT INTO sessions (tenant, session_id, user_id, device, os, app_version, \
             client_id, ip, user_agent, started_at, ended_at, end_reason, rooms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
             ON CONFLICT (tenant, session_id) DO NOTHING",
        )
        .text(&record.tenant)
        .text(&record.session_id)
        .text(&record.user)
        .text(&record.device)
        .opt_text(record.os.as_deref())
        .opt_text(record.app_version.as_deref())
        .opt_text(record.client_id.as_deref())
        .opt_text(record.ip.as_deref())
        .opt_text(record.user_agent.as_deref())
        .int(record.started_at)
        .opt_int(record.ended_at)
        .opt_text(record.end_reason.as_deref())
        .text(to_json(&record.rooms)?)
        .into(),
    );
    visited(&record.tenant, &record.session_id, &record.rooms, steps);
    Ok(())
}

pub(super) fn ended(
    tenant: &str,
    session_id: &str,
    ended_at: UnixMs,
    reason: &str,
    rooms: &[String],
    steps: &mut Vec<Step>,
) -> Result<(), StoreError> {
    steps.push(
        Query::new(
            "UPDATE sessions SET ended_at = $3, end_reason = $4, rooms = $5 \
             WHERE tenant = $1 AND session_id = $2",
        )
        .text(tenant)
        .text(session_id)
        .int(ended_at)
        .text(reason)
        .text(to_json(&rooms)?)
        .into(),
    );
    visited(tenant, session_id, rooms, steps);
    Ok(())
}

/// Index rows for the room filter; they carry the session's start so a room's
/// history pages straight off the primary key.
fn visited(tenant: &str, session_id: &str, rooms: &[String], steps: &mut Vec<Step>) {
    for room in rooms {
        steps.push(
            Query::new(
                "INSERT INTO session_rooms (tenant, room_key, started_at, session_id) \
                 SELECT tenant, $3, started_at, session_id FROM sessions \
                 WHERE tenant = $1 AND session_id = $2 \
                 ON CONFLICT DO NOTHING",
            )
            .text(tenant)
            .text(session_id)
            .text(room)
            .into(),
        );
    }
}

pub(super) fn last_seen_upsert(tenant: &str, user: &str, at: UnixMs) -> Query {
    Query::new(
        "INSERT INTO last_seen (tenant, user_id, at_ms) VALUES ($1, $2, $3) \
         ON CONFLICT (tenant, user_id) DO UPDATE SET at_ms = excluded.at_ms \
         WHERE excluded.at_ms > last_seen.at_ms",
    )
    .text(tenant)
    .text(user)
    .int(at)
}

pub(super) async fn last_seen(
    db: &dyn Driver,
    tenant: &str,
    user: &str,
) -> Result<Option<UnixMs>, StoreError> {
    let rows = db
        .fetch(
            Query::new("SELECT at_ms FROM last_seen WHERE tenant = $1 AND user_id = $2")
                .text(tenant)
                .text(user),
        )
        .await?;
    rows.first().map(|r| r.int(0)).transpose()
}

const SESSION_COLUMNS: &str = "s.tenant, s.session_id, s.user_id, s.device, s.os, \
     s.app_version, s.client_id, s.ip, s.user_agent, s.started_at, s.ended_at, s.end_reason, \
     s.rooms";

fn session_from_row(r: &Row) -> Result<SessionRecord, StoreError> {
    Ok(SessionRecord {
        tenant: r.text(0)?,
        session_id: r.text(1)?,
        user: r.text(2)?,
        device: r.text(3)?,
        os: r.opt_text(4)?,
        app_version: r.opt_text(5)?,
        client_id: r.opt_text(6)?,
        ip: r.opt_text(7)?,
        user_agent: r.opt_text(8)?,
        started_at: r.int(9)?,
        ended_at: r.opt_int(10)?,
        end_reason: r.opt_text(11)?,
        rooms: r.json(12)?,
    })
}

pub(super) async fn history(
    db: &dyn Driver,
    tenant: &str,
    f: &SessionFilter,
) -> Result<Vec<SessionRecord>, StoreError> {
    // With a room filter the page is driven by `session_rooms` (ordered by the
    // session's start), otherwise by `sessions` itself.
    let (head, order) = match &f.room {
        Some(_) => (
            format!(
                "SELECT {SESSION_COLUMNS} FROM session_rooms k JOIN sessions s \
                 ON s.tenant = k.tenant AND s.session_id = k.session_id"
            ),
            "k",
        ),
        None => (format!("SELECT {SESSION_COLUMNS} FROM sessions s"), "s"),
    };
    let mut c = Conditions::default();
    c.text_eq(&format!("{order}.tenant"), tenant);
    if let Some(room) = &f.room {
        c.text_eq("k.room_key", room);
    }
    if let Some(user) = &f.user {
        c.text_eq("s.user_id", user);
    }
    if let Some(from) = f.from {
        c.int(&format!("{order}.started_at"), ">=", from);
    }
    if let Some(to) = f.to {
        c.int(&format!("{order}.started_at"), "<", to);
    }
    if let Some(after) = &f.after {
        c.clause(
            &format!(
                "({order}.started_at < {{0}} OR ({order}.started_at = {{0}} \
                 AND {order}.session_id < {{1}}))"
            ),
            vec![
                Arg::Int(Some(after.started_at)),
                Arg::Text(Some(after.session_id.clone())),
            ],
        );
    }
    let tail = format!("ORDER BY {order}.started_at DESC, {order}.session_id DESC LIMIT {{limit}}");
    let rows = db.fetch(c.query(&head, &tail, Some(page(f.limit)))).await?;
    rows.iter().map(session_from_row).collect()
}

/// Deletes ended sessions (and their room index rows) that ended before
/// `older_than`; live sessions are kept whatever their age.
pub(super) async fn purge(db: &dyn Driver, older_than: UnixMs) -> Result<u64, StoreError> {
    db.execute(
        Query::new(
            "DELETE FROM session_rooms WHERE (tenant, session_id) IN \
             (SELECT tenant, session_id FROM sessions WHERE ended_at IS NOT NULL AND ended_at < $1)",
        )
        .int(older_than),
    )
    .await?;
    db.execute(
        Query::new("DELETE FROM sessions WHERE ended_at IS NOT NULL AND ended_at < $1")
            .int(older_than),
    )
    .await
}
