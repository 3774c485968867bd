//! Alert rules and alert events (SPEC §8), and the named leases the nodes
//! sharing one database take turns with (the alert evaluator's).
//!
//! One firing row per (tenant, rule, subject) is the database's rule (a partial
//! unique index), not the caller's: two nodes firing the same alert at once
//! get one row, and only the node whose insert went in tells anyone.

use super::sql::{Arg, Conditions, Driver, Query, Row};
use super::{AlertFilter, StoreError, StoredAlert, StoredAlertRule, UnixMs};

const RULE_COLUMNS: &str = "tenant, id, name, kind, threshold, window_ms, scope, target, \
     severity, enabled, webhook_url, webhook_secret, created_at, updated_at";

const ALERT_COLUMNS: &str = "tenant, id, rule_id, rule_name, kind, severity, scope, target, \
     subject, state, value, threshold, message, fired_at, resolved_at, acked_at, acked_by";

fn rule(r: &Row) -> Result<StoredAlertRule, StoreError> {
    Ok(StoredAlertRule {
        tenant: r.text(0)?,
        id: r.text(1)?,
        name: r.text(2)?,
        kind: r.text(3)?,
        threshold: r.int(4)?,
        window_ms: r.int(5)?,
        scope: r.text(6)?,
        target: r.opt_text(7)?,
        severity: r.text(8)?,
        enabled: r.int(9)? != 0,
        webhook_url: r.opt_text(10)?,
        webhook_secret: r.opt_text(11)?,
        created_at: r.int(12)?,
        updated_at: r.int(13)?,
    })
}

fn alert(r: &Row) -> Result<StoredAlert, StoreError> {
    Ok(StoredAlert {
        tenant: r.text(0)?,
        id: r.text(1)?,
        rule_id: r.text(2)?,
        rule_name: r.text(3)?,
        kind: r.text(4)?,
        severity: r.text(5)?,
        scope: r.text(6)?,
        target: r.opt_text(7)?,
        subject: r.text(8)?,
        state: r.text(9)?,
        value: r.int(10)?,
        threshold: r.int(11)?,
        message: r.text(12)?,
        fired_at: r.int(13)?,
        resolved_at: r.opt_int(14)?,
        acked_at: r.opt_int(15)?,
        acked_by: r.opt_text(16)?,
    })
}

pub(super) async fn upsert_alert_rule(
    db: &dyn Driver,
    x: &StoredAlertRule,
) -> Result<(), StoreError> {
    db.execute(
        Query::new(format!(
            "INSERT INTO alert_rules ({RULE_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
             ON CONFLICT (tenant, id) DO UPDATE SET name = excluded.name, \
             kind = excluded.kind, threshold = excluded.threshold, \
             window_ms = excluded.window_ms, scope = excluded.scope, \
             target = excluded.target, severity = excluded.severity, \
             enabled = excluded.enabled, webhook_url = excluded.webhook_url, \
             webhook_secret = excluded.webhook_secret, updated_at = excluded.updated_at"
        ))
        .text(&x.tenant)
        .text(&x.id)
        .text(&x.name)
        .text(&x.kind)
        .int(x.threshold)
        .int(x.window_ms)
        .text(&x.scope)
        .opt_text(x.target.as_deref())
        .text(&x.severity)
        .int(i64::from(x.enabled))
        .opt_text(x.webhook_url.as_deref())
        .opt_text(x.webhook_secret.as_deref())
        .int(x.created_at)
        .int(x.updated_at),
    )
    .await
    .map(drop)
}

pub(super) async fn delete_alert_rule(
    db: &dyn Driver,
    tenant: &str,
    id: &str,
) -> Result<bool, StoreError> {
    let n = db
        .execute(
            Query::new("DELETE FROM alert_rules WHERE tenant = $1 AND id = $2")
                .text(tenant)
                .text(id),
        )
        .await?;
    Ok(n > 0)
}

/// One tenant's rules (`Some`) or every tenant's, ordered by tenant and id.
pub(super) async fn alert_rules(
    db: &dyn Driver,
    tenant: Option<&str>,
) -> Result<Vec<StoredAlertRule>, StoreError> {
    let q = match tenant {
        Some(t) => Query::new(format!(
            "SELECT {RULE_COLUMNS} FROM alert_rules WHERE tenant = $1 ORDER BY tenant, id"
        ))
        .text(t),
        None => Query::new(format!(
            "SELECT {RULE_COLUMNS} FROM alert_rules ORDER BY tenant, id"
        )),
    };
    db.fetch(q).await?.iter().map(rule).collect()
}

/// `false` if the rule already has a firing alert for this subject.
pub(super) async fn fire_alert(db: &dyn Driver, a: &StoredAlert) -> Result<bool, StoreError> {
    let n = db
        .execute(
            Query::new(format!(
                "INSERT INTO alert_events ({ALERT_COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'firing', $10, $11, $12, $13, \
                 NULL, NULL, NULL) ON CONFLICT DO NOTHING"
            ))
            .text(&a.tenant)
            .text(&a.id)
            .text(&a.rule_id)
            .text(&a.rule_name)
            .text(&a.kind)
            .text(&a.severity)
            .text(&a.scope)
            .opt_text(a.target.as_deref())
            .text(&a.subject)
            .int(a.value)
            .int(a.threshold)
            .text(&a.message)
            .int(a.fired_at),
        )
        .await?;
    Ok(n > 0)
}

/// Marks a firing alert resolved; `None` if it was not firing (another node
/// resolved it first, or it never was).
pub(super) async fn resolve_alert(
    db: &dyn Driver,
    tenant: &str,
    id: &str,
    at: UnixMs,
) -> Result<Option<StoredAlert>, StoreError> {
    let n = db
        .execute(
            Query::new(
                "UPDATE alert_events SET state = 'resolved', resolved_at = $3 \
                 WHERE tenant = $1 AND id = $2 AND state = 'firing'",
            )
            .text(tenant)
            .text(id)
            .int(at),
        )
        .await?;
    if n == 0 {
        return Ok(None);
    }
    get_alert(db, tenant, id).await
}

/// Acknowledges an alert (the first acknowledgement is kept).
pub(super) async fn ack_alert(
    db: &dyn Driver,
    tenant: &str,
    id: &str,
    at: UnixMs,
    by: &str,
) -> Result<Option<StoredAlert>, StoreError> {
    db.execute(
        Query::new(
            "UPDATE alert_events SET acked_at = $3, acked_by = $4 \
             WHERE tenant = $1 AND id = $2 AND acked_at IS NULL",
        )
        .text(tenant)
        .text(id)
        .int(at)
        .text(by),
    )
    .await?;
    get_alert(db, tenant, id).await
}

pub(super) async fn get_alert(
    db: &dyn Driver,
    tenant: &str,
    id: &str,
) -> Result<Option<StoredAlert>, StoreError> {
    let rows = db
        .fetch(
            Query::new(format!(
                "SELECT {ALERT_COLUMNS} FROM alert_events WHERE tenant = $1 AND id = $2"
            ))
            .text(tenant)
            .text(id),
        )
        .await?;
    rows.first().map(alert).transpose()
}

/// Newest first (`fired_at`, then `id`, descending); `before` is the keyset
/// cursor (the last row of the previous page).
pub(super) async fn list_alerts(
    db: &dyn Driver,
    f: &AlertFilter,
) -> Result<Vec<StoredAlert>, StoreError> {
    let mut c = Conditions::default();
    c.text_eq("tenant", &f.tenant);
    if let Some(s) = &f.state {
        c.text_eq("state", s);
    }
    if let Some(r) = &f.rule_id {
        c.text_eq("rule_id", r);
    }
    if let Some((at, id)) = &f.before {
        c.clause(
            "(fired_at < {0} OR (fired_at = {0} AND id < {1}))",
            vec![Arg::Int(Some(*at)), Arg::Text(Some(id.clone()))],
        );
    }
    let q = c.query(
        &format!("SELECT {ALERT_COLUMNS} FROM alert_events"),
        "ORDER BY fired_at DESC, id DESC LIMIT {limit}",
        Some(super::sql::page(f.limit)),
    );
    db.fetch(q).await?.iter().map(alert).collect()
}

/// Takes the lease `name` for `holder` until `until`, or renews it if the
/// holder has it; `false` while another holder's lease runs.
pub(super) async fn hold_lease(
    db: &dyn Driver,
    name: &str,
    holder: &str,
    now: UnixMs,
    until: UnixMs,
) -> Result<bool, StoreError> {
    let n = db
        .execute(
            Query::new(
                "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
                 expires_at = excluded.expires_at \
                 WHERE leases.holder = excluded.holder OR leases.expires_at < $4",
            )
            .text(name)
            .text(holder)
            .int(until)
            .int(now),
        )
        .await?;
    Ok(n > 0)
}

pub(super) async fn release_lease(
    db: &dyn Driver,
    name: &str,
    holder: &str,
) -> Result<(), StoreError> {
    db.execute(
        Query::new("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .text(name)
            .text(holder),
    )
    .await
    .map(drop)
}
