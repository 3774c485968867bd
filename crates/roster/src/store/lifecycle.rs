//! Lifecycle events already applied, by `eventId`: the deduplication window of
//! the Kafka consumer and `POST /lifecycle`.

use super::sql::{Driver, Query};
use super::{StoreError, UnixMs};

pub(super) async fn lifecycle_applied(
    db: &dyn Driver,
    tenant: &str,
    event_id: &str,
) -> Result<bool, StoreError> {
    let rows = db
        .fetch(
            Query::new("SELECT 1 FROM lifecycle_events WHERE tenant = $1 AND event_id = $2")
                .text(tenant)
                .text(event_id),
        )
        .await?;
    Ok(!rows.is_empty())
}

pub(super) async fn mark_lifecycle_applied(
    db: &dyn Driver,
    tenant: &str,
    event_id: &str,
    at: UnixMs,
) -> Result<bool, StoreError> {
    let n = db
        .execute(
            Query::new(
                "INSERT INTO lifecycle_events (tenant, event_id, applied_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant, event_id) DO NOTHING",
            )
            .text(tenant)
            .text(event_id)
            .int(at),
        )
        .await?;
    Ok(n > 0)
}

pub(super) async fn purge_lifecycle_events(
    db: &dyn Driver,
    older_than: UnixMs,
) -> Result<u64, StoreError> {
    db.execute(Query::new("DELETE FROM lifecycle_events WHERE applied_at < $1").int(older_than))
        .await
}

pub(super) async fn forget_lifecycle_event(
    db: &dyn Driver,
    tenant: &str,
    event_id: &str,
) -> Result<(), StoreError> {
    db.execute(
        Query::new("DELETE FROM lifecycle_events WHERE tenant = $1 AND event_id = $2")
            .text(tenant)
            .text(event_id),
    )
    .await
    .map(drop)
}
