//! Webhook endpoints of the event stream: configuration, changed over REST and
//! loaded at start-up.

use super::sql::{to_json, Driver, Query};
use super::{StoreError, StoredWebhook};

pub(super) async fn upsert_webhook(db: &dyn Driver, w: &StoredWebhook) -> Result<(), StoreError> {
    let events = w.events.as_ref().map(to_json).transpose()?;
    db.execute(
        Query::new(
            "INSERT INTO webhooks (tenant, id, url, secret, events, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (tenant, id) DO UPDATE SET url = excluded.url, \
             secret = excluded.secret, events = excluded.events",
        )
        .text(&w.tenant)
        .text(&w.id)
        .text(&w.url)
        .text(&w.secret)
        .opt_text(events.as_deref())
        .int(w.created_at),
    )
    .await
    .map(drop)
}

pub(super) async fn delete_webhook(
    db: &dyn Driver,
    tenant: &str,
    id: &str,
) -> Result<bool, StoreError> {
    let n = db
        .execute(
            Query::new("DELETE FROM webhooks WHERE tenant = $1 AND id = $2")
                .text(tenant)
                .text(id),
        )
        .await?;
    Ok(n > 0)
}

pub(super) async fn all_webhooks(db: &dyn Driver) -> Result<Vec<StoredWebhook>, StoreError> {
    let rows = db
        .fetch(Query::new(
            "SELECT tenant, id, url, secret, events, created_at FROM webhooks ORDER BY tenant, id",
        ))
        .await?;
    rows.iter()
        .map(|r| {
            Ok(StoredWebhook {
                tenant: r.text(0)?,
                id: r.text(1)?,
                url: r.text(2)?,
                secret: r.text(3)?,
                events: match r.opt_text(4)? {
                    Some(t) => Some(
                        serde_json::from_str(&t)
                            .map_err(|e| StoreError::Other(format!("column 4: bad JSON: {e}")))?,
                    ),
                    None => None,
                },
                created_at: r.int(5)?,
            })
        })
        .collect()
}
