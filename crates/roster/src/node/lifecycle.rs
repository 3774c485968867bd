//! The entity lifecycle (`MUTATING`/`MUTATED` from REST, later Kafka): the
//! room's record marked stale or fresh, members told, stale expiry scheduled.

use super::*;

impl Node {
    /// `MUTATING`/`MUTATED` (REST or Kafka): updates entity state and tells members.
    /// Returns the room's entity state as this call left it, or `None` if the
    /// event (of time `at`, unix ms) is older than the last one applied to the
    /// room: superseded, nothing changed.
    pub async fn lifecycle(
        &self,
        room: &RoomId,
        mutating: bool,
        by: UserId,
        at: Option<u64>,
    ) -> Result<Option<crate::core::room::EntityView>, EngineError> {
        let now = self.clock.now();
        self.record(
            &room.tenant,
            if mutating { "mutating" } else { "mutated" },
            Some(by.as_str()),
            Some(&by),
            Some(&room.key),
            None,
            Value::Object(Default::default()),
        );
        let settings = self.ad_hoc_settings(room);
        let view = if mutating {
            let ttl = self.timing().stale_ttl.0;
            let v = self
                .engine
                .mutating(room, settings, by, now, ttl, at)
                .await?;
            if v.is_some() {
                self.schedule(now + ttl, Deadline::StaleExpiry(room.clone()));
            }
            v
        } else {
            self.engine.mutated(room, settings, at).await?
        };
        let Some(view) = view else {
            return Ok(None);
        };
        self.emit(Self::entity_transition(room, &view)).await;
        if self.engine.members(room).await?.is_empty() {
            let idle = self
                .engine
                .room(room)
                .await?
                .map(|r| r.settings.idle_ttl)
                .unwrap_or_default();
            self.schedule(
                now + idle.max(self.timing().stale_ttl.0),
                Deadline::RoomIdle(room.clone()),
            );
        }
        Ok(Some(view))
    }

    pub(super) fn entity_transition(
        room: &RoomId,
        view: &crate::core::room::EntityView,
    ) -> Transition {
        Transition::Entity {
            room: room.clone(),
            stale: view.stale,
            busy_by: view.busy_by.clone(),
            version: view.version,
        }
    }
}

/// What became of a lifecycle event that carries an `eventId`.
#[derive(Debug)]
pub enum Applied {
    /// Applied now: the entity's state it left.
    Now(crate::core::room::EntityView),
    /// Applied before (within `kafka.dedup_window`): nothing done; the state now.
    Before(crate::core::room::EntityView),
}

/// A lifecycle event as both ways in (REST, Kafka) carry it, before it is
/// checked: the room is `<entity>:<id>` in the tenant.
pub struct LifecycleInput<'a> {
    pub tenant: TenantId,
    pub entity: &'a str,
    pub id: &'a Value,
    pub user_id: &'a str,
    pub event_id: Option<&'a str>,
}

/// A checked lifecycle event.
#[derive(Debug)]
pub struct LifecycleTarget {
    pub room: RoomId,
    pub by: UserId,
    pub event_id: Option<String>,
    /// The event's own time (unix ms; Kafka): an older one than the room's
    /// last is superseded. REST events have none.
    pub at: Option<u64>,
}

/// Longest `eventId` kept for deduplication.
pub const MAX_EVENT_ID: usize = 200;

impl LifecycleInput<'_> {
    /// The one check of a lifecycle event's fields; the error names the field.
    pub fn check(self) -> Result<LifecycleTarget, String> {
        let id = match self.id {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return Err("field `id`: expected a string or number".into()),
        };
        let key = RoomKey::from_entity(self.entity, &id)
            .map_err(|e| format!("field `entity`/`id`: {}", e.0))?;
        let by = UserId::parse(self.user_id).map_err(|e| format!("field `userId`: {}", e.0))?;
        let event_id = match self.event_id {
            Some(e) if e.is_empty() || e.len() > MAX_EVENT_ID => {
                return Err(format!(
                    "field `eventId`: expected 1 to {MAX_EVENT_ID} bytes"
                ))
            }
            e => e.map(String::from),
        };
        Ok(LifecycleTarget {
            room: RoomId {
                tenant: self.tenant,
                key,
            },
            by,
            event_id,
            at: None,
        })
    }
}

impl Node {
    /// The room's entity state now (fresh, version 0, for a room not there).
    pub async fn entity_now(
        &self,
        room: &RoomId,
    ) -> Result<crate::core::room::EntityView, EngineError> {
        let now = self.engine.room(room).await?.map(|r| r.entity);
        Ok(now.unwrap_or_else(|| crate::core::room::EntityView {
            room: room.key.to_string(),
            stale: false,
            busy_by: None,
            version: 0,
        }))
    }

    /// Whether the tenant's lifecycle event was applied before (the store's
    /// window of `kafka.dedup_window`).
    pub async fn lifecycle_applied(
        &self,
        tenant: &TenantId,
        event_id: &str,
    ) -> Result<bool, crate::store::StoreError> {
        self.store
            .lifecycle_applied(tenant.as_str(), event_id)
            .await
    }

    /// Remembers that the event was applied; `false` if it already was.
    pub async fn mark_lifecycle_applied(
        &self,
        tenant: &TenantId,
        event_id: &str,
    ) -> Result<bool, crate::store::StoreError> {
        let now = unix_ms(self.clock.wall_now());
        self.store
            .mark_lifecycle_applied(tenant.as_str(), event_id, now)
            .await
    }

    /// Forgets a recorded event whose apply failed (it will be tried again).
    pub async fn forget_lifecycle_event(
        &self,
        tenant: &TenantId,
        event_id: &str,
    ) -> Result<(), crate::store::StoreError> {
        self.store
            .forget_lifecycle_event(tenant.as_str(), event_id)
            .await
    }

    /// A lifecycle event applied once per `eventId` (REST): a repeat within
    /// the window changes nothing and answers the state now. An event without
    /// an id is always applied. If remembering the id fails after the apply,
    /// the error is returned and a retry applies it again (at least once).
    pub async fn lifecycle_once(
        &self,
        t: &LifecycleTarget,
        mutating: bool,
    ) -> Result<Applied, super::admin::AdminError> {
        if let Some(id) = &t.event_id {
            if self.lifecycle_applied(&t.room.tenant, id).await? {
                return Ok(Applied::Before(self.entity_now(&t.room).await?));
            }
        }
        // REST events carry no time of their own: never superseded.
        let view = self
            .lifecycle(&t.room, mutating, t.by.clone(), None)
            .await?;
        if let Some(id) = &t.event_id {
            self.mark_lifecycle_applied(&t.room.tenant, id).await?;
        }
        match view {
            Some(view) => Ok(Applied::Now(view)),
            None => Ok(Applied::Before(self.entity_now(&t.room).await?)),
        }
    }
}
