//! Admin writes (REST): declared rooms, participants, tenant room types, and the
//! kick of one session. What a 2xx confirmed must survive a restart, so the store
//! is written first and the engine is changed only on success; each action is
//! logged to the activity log with who asked. The request's shape and who may ask
//! are checked in `http/api` before anything here runs; this file never decides
//! an HTTP status.

use serde_json::Value;

use super::hub::close;
use super::{records, Node};
use crate::core::error::{CoreError, ErrorCode};
use crate::core::room::{RoomSettings, RoomStatus};
use crate::core::room_type::RoomType;
use crate::core::transition::Transition;
use crate::core::types::{LeaveReason, Role};
use crate::engine::{EngineError, RoomPatch, RoomSummary};
use crate::ids::{RoomId, SessionId, TenantId, UserId};
use crate::store::{unix_ms, Participant, StoreError};

/// An admin write that failed: in the store (written first) or in the engine.
#[derive(Debug)]
pub enum AdminError {
    Store(StoreError),
    Engine(EngineError),
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl From<CoreError> for AdminError {
    fn from(e: CoreError) -> Self {
        Self::Engine(e.into())
    }
}

impl From<EngineError> for AdminError {
    fn from(e: EngineError) -> Self {
        Self::Engine(e)
    }
}

impl Node {
    /// Declares a room with `settings` (already validated). A room that is live
    /// ad hoc is declared with these settings. Returns the room as the engine
    /// holds it now.
    pub async fn declare_room(
        &self,
        id: &RoomId,
        settings: RoomSettings,
        actor: &str,
    ) -> Result<RoomSummary, AdminError> {
        let now = unix_ms(self.clock.wall_now());
        self.store
            .insert_room(&records::room_to_store(id, &settings, now))
            .await?;
        // A room that is live ad hoc is declared with these settings.
        if self
            .engine
            .create_room(id.clone(), settings.clone())
            .await
            .is_err()
        {
            let patch = full_patch(&settings);
            let (_, change) = self.engine.update_room(id, patch).await?;
            self.access_changed(id, change).await;
        }
        self.record_admin(
            id,
            "room_created",
            actor,
            serde_json::json!({"type": settings.room_type}),
        );
        let summary = self
            .engine
            .room(id)
            .await?
            .ok_or_else(|| CoreError::new(ErrorCode::Internal, "room vanished"))?;
        Ok(summary)
    }

    /// Changes a room; `None` if there is no such room. `status: closed` kicks
    /// every member. `details` go to the activity row.
    pub async fn update_room(
        &self,
        id: &RoomId,
        patch: RoomPatch,
        actor: &str,
        details: Value,
    ) -> Result<Option<RoomSummary>, AdminError> {
        let closing = patch.status == Some(RoomStatus::Closed);
        let Some(current) = self.engine.room(id).await? else {
            return Ok(None);
        };
        let mut next = current.settings.clone();
        patch.apply(&mut next);
        self.save_room(id, &next).await?;
        let (summary, change) = self.engine.update_room(id, patch).await?;
        self.record_admin(id, "room_updated", actor, details);
        self.access_changed(id, change).await;
        if closing {
            let members = self.engine.members(id).await?;
            self.kick_sessions(members).await;
        }
        Ok(Some(self.engine.room(id).await?.unwrap_or(summary)))
    }

    /// Deletes a room, stored or live; its members are kicked. `false` if it was
    /// neither.
    pub async fn delete_room(&self, id: &RoomId, actor: &str) -> Result<bool, AdminError> {
        let stored = self
            .store
            .delete_room(id.tenant.as_str(), id.key.as_str())
            .await?;
        // What the room holds, read before it goes: its members leave it
        // (reason `kicked`) and their locks are released here, once; the kicked
        // sessions' own leaves then find the room gone. (A session that joins
        // between this read and the delete is kicked without a leave of this
        // room: there is no room left to leave.)
        let held = self.engine.snapshot(id).await?;
        let members = self.engine.delete_room(id).await?;
        if !stored && members.is_none() {
            return Ok(false);
        }
        self.record_admin(id, "room_deleted", actor, Value::Object(Default::default()));
        if let (Some(held), Some(_)) = (held, &members) {
            let now = self.clock.now();
            for u in &held.users {
                for x in &u.sessions {
                    let locks = held
                        .locks
                        .iter()
                        .filter(|(_, o)| o.session_id == x.session_id)
                        .map(|(f, _)| f.clone())
                        .collect();
                    self.member_left(
                        id,
                        &x.session_id,
                        &u.user_id,
                        LeaveReason::Kicked,
                        now,
                        locks,
                    )
                    .await;
                }
            }
            if !held.users.is_empty() {
                self.emit(Transition::RoomVacated { room: id.clone() })
                    .await;
            }
        }
        self.kick_sessions(members.unwrap_or_default()).await;
        Ok(true)
    }

    /// Sets a participant's role; `false` if there is no such room. Members who
    /// may no longer be in the room are kicked.
    pub async fn set_participant(
        &self,
        id: &RoomId,
        user: UserId,
        role: Role,
        actor: &str,
    ) -> Result<bool, AdminError> {
        let Some(current) = self.engine.room(id).await? else {
            return Ok(false);
        };
        // A room with participants is a declared room: it must survive a restart,
        // and idle expiry must not drop it.
        self.save_room(id, &current.settings).await?;
        if !current.settings.declared {
            self.engine.update_room(id, RoomPatch::default()).await?;
        }
        self.store
            .set_participant(&Participant {
                tenant: id.tenant.to_string(),
                room: id.key.to_string(),
                user: user.to_string(),
                role: records::role_str(role).into(),
            })
            .await?;
        self.participant_changed(id, user.clone(), Some(role))
            .await?;
        self.record_admin(
            id,
            "participant_set",
            actor,
            serde_json::json!({"user": user, "role": role}),
        );
        Ok(true)
    }

    /// Removes a participant; members who may no longer be in the room are kicked.
    pub async fn remove_participant(
        &self,
        id: &RoomId,
        user: UserId,
        actor: &str,
    ) -> Result<(), AdminError> {
        self.store
            .delete_participant(id.tenant.as_str(), id.key.as_str(), user.as_str())
            .await?;
        self.participant_changed(id, user.clone(), None).await?;
        self.record_admin(
            id,
            "participant_removed",
            actor,
            serde_json::json!({"user": user}),
        );
        Ok(())
    }

    /// Creates or replaces a tenant room type (not a seeded one: checked by the
    /// caller).
    pub async fn save_room_type(
        &self,
        tenant: &TenantId,
        t: &RoomType,
        actor: &str,
    ) -> Result<(), AdminError> {
        let now = unix_ms(self.clock.wall_now());
        self.store
            .upsert_room_type(&records::room_type_to_store(tenant, t, now))
            .await?;
        self.set_room_type(tenant.clone(), t.clone());
        self.record(
            tenant,
            "room_type_set",
            Some(actor),
            None,
            None,
            None,
            serde_json::json!({"code": t.code}),
        );
        Ok(())
    }

    /// Deletes a tenant room type; rooms created with it keep their settings.
    /// `false` if it was neither stored nor known here.
    pub async fn delete_room_type(
        &self,
        tenant: &TenantId,
        code: &str,
        actor: &str,
    ) -> Result<bool, AdminError> {
        let stored = self.store.delete_room_type(tenant.as_str(), code).await?;
        if !self.remove_room_type(tenant, code) && !stored {
            return Ok(false);
        }
        self.record(
            tenant,
            "room_type_deleted",
            Some(actor),
            None,
            None,
            None,
            serde_json::json!({"code": code}),
        );
        Ok(true)
    }

    /// Kicks a session of `tenant` on any node: its connection is closed with
    /// 4011 and it leaves every room with reason `kicked`. `false` if the tenant
    /// has no such session.
    pub async fn kick_session(
        &self,
        tenant: &TenantId,
        sid: &SessionId,
        actor: &str,
    ) -> Result<bool, EngineError> {
        let Some(s) = self.hub.get(sid) else {
            // Maybe a session of another node (shared engine): kicked through it.
            let Some(user) = self
                .engine
                .session_user(sid)
                .await?
                .filter(|u| &u.tenant == tenant)
            else {
                return Ok(false);
            };
            self.engine.kick_remote(sid, close::KICKED).await?;
            self.record(
                tenant,
                "admin_kick",
                Some(actor),
                Some(&user.user),
                None,
                Some(sid),
                Value::Object(Default::default()),
            );
            return Ok(true);
        };
        if &s.user_ref.tenant != tenant {
            return Ok(false);
        }
        self.record(
            tenant,
            "admin_kick",
            Some(actor),
            Some(&s.meta.user),
            None,
            Some(sid),
            Value::Object(Default::default()),
        );
        self.close_and_end(sid, close::KICKED, LeaveReason::Kicked)
            .await;
        Ok(true)
    }

    /// Writes a room's settings to the store (insert or replace).
    async fn save_room(&self, id: &RoomId, settings: &RoomSettings) -> Result<(), StoreError> {
        let row = records::room_to_store(id, settings, unix_ms(self.clock.wall_now()));
        match self.store.update_room(&row).await {
            Err(StoreError::NotFound) => self.store.insert_room(&row).await,
            other => other,
        }
    }

    /// One activity row for an admin action on a room.
    fn record_admin(&self, id: &RoomId, kind: &str, actor: &str, details: Value) {
        self.record(
            &id.tenant,
            kind,
            Some(actor),
            None,
            Some(&id.key),
            None,
            details,
        );
    }
}

/// Every setting of `s`, as a patch (an ad hoc room declared with `s`).
fn full_patch(s: &RoomSettings) -> RoomPatch {
    RoomPatch {
        room_type: Some(s.room_type.clone()),
        capacity: Some(s.capacity),
        idle_ttl: Some(s.idle_ttl),
        visibility: Some(s.visibility),
        status: Some(s.status),
        tags: Some(s.tags.clone()),
        attributes: Some(s.attributes.clone()),
        timing: Some(s.timing),
    }
}
