//! The entity lifecycle (`MUTATING`/`MUTATED` from REST, later Kafka): the
//! room's record marked stale or fresh, members told, stale expiry scheduled.

use super::*;

impl Node {
    /// `MUTATING`/`MUTATED` (REST or Kafka): updates entity state and tells members.
    /// Returns the room's entity state as this call left it.
    pub async fn lifecycle(
        &self,
        room: &RoomId,
        mutating: bool,
        by: UserId,
    ) -> Result<crate::core::room::EntityView, EngineError> {
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
            let v = self.engine.mutating(room, settings, by, now, ttl).await?;
            self.schedule(now + ttl, Deadline::StaleExpiry(room.clone()));
            v
        } else {
            self.engine.mutated(room, settings).await?
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
        Ok(view)
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
