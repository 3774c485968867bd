//! Field locks asked by members: `LOCK` (acquire or refresh; the ack before
//! the members' `LOCK` event), `UNLOCK`, and an admin's force release.

use super::*;

impl Node {
    /// Answers `LOCK_ACK` to the asker, then (on success) tells every member with
    /// a `LOCK` event, in that order.
    pub async fn lock(
        &self,
        s: &Arc<SessionHandle>,
        key: RoomKey,
        field: &str,
        reply_ref: Option<&Value>,
    ) -> Result<(), CoreError> {
        let id = self.joined_room(s, key)?;
        let now = self.clock.now();
        let outcome = self
            .engine
            .lock(&id, field, &s.meta.id, now, self.timing().lock_ttl.0)
            .await?;
        let (success, lock) = match outcome {
            LockOutcome::Acquired(l) => (true, l),
            LockOutcome::TakenOver(l, old) => {
                // The expired lock ends before the new one starts.
                self.lock_released(
                    &id,
                    field.to_string(),
                    old.user,
                    old.session,
                    LockRelease::Expired,
                    None,
                )
                .await;
                (true, l)
            }
            LockOutcome::Held(l) => (false, l),
        };
        let owner = LockOwnerView::new(&lock, &self.clock);
        hub::reply_to(
            s,
            hub::Reply::LockAck {
                room: &id.key,
                field,
                success,
                owner: &owner,
                reply_ref,
            },
        );
        if success {
            metrics::counter!(m::LOCK_ACQUISITIONS).increment(1);
            self.record_member(s, &id, "lock_acquired", serde_json::json!({"field": field}));
            self.schedule(
                lock.expires_at,
                Deadline::LockExpiry(id.clone(), field.to_string()),
            );
            self.emit(Transition::LockAcquired {
                room: id.clone(),
                field: field.to_string(),
                user: lock.user.clone(),
                session: lock.session.clone(),
                expires_at: self.clock.wall(lock.expires_at),
            })
            .await;
        } else {
            metrics::counter!(m::LOCK_CONTENTION).increment(1);
        }
        Ok(())
    }

    pub async fn unlock(
        &self,
        s: &Arc<SessionHandle>,
        key: RoomKey,
        field: &str,
        reply_ref: Option<&Value>,
    ) -> Result<(), CoreError> {
        let id = self.joined_room(s, key)?;
        let released = self.engine.unlock(&id, field, &s.meta.id).await?;
        hub::reply_to(
            s,
            hub::Reply::UnlockAck {
                room: &id.key,
                field,
                success: released.is_some(),
                reply_ref,
            },
        );
        if let Some(lock) = released {
            self.lock_released(
                &id,
                field.to_string(),
                lock.user,
                lock.session,
                LockRelease::Unlocked,
                None,
            )
            .await;
        }
        Ok(())
    }

    /// Admin force-release (REST); `actor` is who asked.
    /// `false`: the field was not locked.
    pub async fn force_unlock(
        &self,
        room: &RoomId,
        field: &str,
        actor: &str,
    ) -> Result<bool, EngineError> {
        let Some(lock) = self.engine.force_unlock(room, field).await? else {
            return Ok(false);
        };
        self.lock_released(
            room,
            field.to_string(),
            lock.user,
            lock.session,
            LockRelease::ForceReleased,
            Some(actor),
        )
        .await;
        Ok(true)
    }

    /// A lock ended, for whatever `reason`: its activity row (`actor`: who
    /// asked, for a force release) and its transition, written once here.
    pub(super) async fn lock_released(
        &self,
        room: &RoomId,
        field: String,
        user: UserId,
        session: SessionId,
        reason: LockRelease,
        actor: Option<&str>,
    ) {
        let (kind, details) = match reason {
            LockRelease::Unlocked => (
                "lock_released",
                serde_json::json!({"field": field, "reason": "unlock"}),
            ),
            LockRelease::OwnerLeft(r) => (
                "lock_released",
                serde_json::json!({"field": field, "reason": r.as_str()}),
            ),
            LockRelease::AccessLost => (
                "lock_released",
                serde_json::json!({"field": field, "reason": "role"}),
            ),
            LockRelease::Expired => ("lock_expired", serde_json::json!({"field": field})),
            LockRelease::ForceReleased => {
                ("lock_force_released", serde_json::json!({"field": field}))
            }
        };
        self.record(
            &room.tenant,
            kind,
            actor,
            Some(&user),
            Some(&room.key),
            Some(&session),
            details,
        );
        self.emit(Transition::LockReleased {
            room: room.clone(),
            field,
            user,
            session,
            reason,
        })
        .await;
    }
}
