//! Membership: `SUB` (join and the joiner's snapshot), `UNSUB`, member state,
//! leaves (with the locks they release and the room they vacate), the diff
//! window's flush, and access changes (participants, visibility) that evict
//! members or release their locks.

use super::*;

/// The longest `EMIT` event name (SPEC §3).
pub const MAX_EVENT_NAME: usize = 64;

impl Node {
    /// `false`: the engine could not be reached (nothing was left).
    pub(super) async fn leave_room(
        &self,
        s: &SessionHandle,
        room: &RoomId,
        reason: LeaveReason,
        now: Instant,
    ) -> bool {
        self.leave_room_as(room, &s.meta.id, &s.meta.user, reason, now)
            .await
    }

    pub(super) async fn leave_room_as(
        &self,
        room: &RoomId,
        sid: &SessionId,
        user: &UserId,
        reason: LeaveReason,
        now: Instant,
    ) -> bool {
        // Unreachable: the session's liveness record is not refreshed any more,
        // so the liveness sweep announces this leave after recovery.
        let left = match self.engine.leave(room, sid, reason, now).await {
            Ok(left) => left,
            Err(_) => return false,
        };
        if let Some(left) = left {
            self.member_left(room, sid, user, reason, now, left.released_locks)
                .await;
            if left.needs_flush {
                self.schedule_flush(room).await;
            }
            if left.now_empty {
                self.emit(Transition::RoomVacated { room: room.clone() })
                    .await;
                let idle = self
                    .engine
                    .room(room)
                    .await
                    .ok()
                    .flatten()
                    .map(|r| r.settings.idle_ttl)
                    .unwrap_or_default();
                self.schedule(now + idle, Deadline::RoomIdle(room.clone()));
            }
        }
        true
    }

    /// What a member's leave means beyond the engine, once: its activity row,
    /// the room's statistics, `member_removed`, and the release of the locks it
    /// held.
    pub(super) async fn member_left(
        &self,
        room: &RoomId,
        sid: &SessionId,
        user: &UserId,
        reason: LeaveReason,
        now: Instant,
        released_locks: Vec<String>,
    ) {
        let kind = if reason == LeaveReason::Timeout {
            "timeout"
        } else {
            "leave"
        };
        self.record(
            &room.tenant,
            kind,
            None,
            Some(user),
            Some(&room.key),
            Some(sid),
            serde_json::json!({"reason": reason.as_str()}),
        );
        self.stats.left(room, reason, self.clock.wall(now));
        self.emit(Transition::MemberRemoved {
            room: room.clone(),
            user: user.clone(),
            session: sid.clone(),
            reason,
        })
        .await;
        for field in released_locks {
            let why = LockRelease::OwnerLeft(reason);
            self.lock_released(room, field, user.clone(), sid.clone(), why, None)
                .await;
        }
    }

    pub(super) async fn schedule_flush(&self, room: &RoomId) {
        let w = self.timing().diff_window.0;
        if w.is_zero() || self.shutting_down.load(Ordering::Relaxed) {
            self.flush_diff(room, self.clock.now()).await;
        } else {
            self.schedule(self.clock.now() + w, Deadline::DiffFlush(room.clone()));
        }
    }

    /// Publishes the room's pending diff. `since` is when the sweeper took the due
    /// flush (or the change itself, without a diff window); the time from there
    /// until the diff is handed to every local member's queue (Redis: published)
    /// is the diff delivery histogram.
    pub(super) async fn flush_diff(&self, room: &RoomId, since: Instant) {
        match self
            .engine
            .flush(room, self.config.limits.presence_list_limit)
            .await
        {
            Ok(0) => {}
            Ok(_) => {
                let took = self.clock.now().saturating_duration_since(since);
                metrics::histogram!(m::DIFF_DELIVERY).record(took.as_secs_f64());
            }
            Err(_) => self.retry_later(Deadline::DiffFlush(room.clone())),
        }
    }

    pub(super) fn actor<'a>(s: &'a SessionHandle) -> Actor<'a> {
        Actor {
            user: &s.identity.user,
            open_role: s.identity.open_room_role(),
            is_admin: s.identity.is_admin(),
        }
    }

    pub async fn sub(
        &self,
        s: &Arc<SessionHandle>,
        key: RoomKey,
        mut state: Option<Value>,
        mode: SubMode,
        reply_ref: Option<&Value>,
    ) -> Result<(), CoreError> {
        let id = RoomId {
            tenant: s.user_ref.tenant.clone(),
            key,
        };
        let already = s.rooms.lock().contains(&id);
        if already {
            // Already in: a fresh snapshot, no diff; a new `state` is an update.
            if let Some(st) = state.take() {
                self.check_state(&st)?;
                let set = self.engine.set_state(&id, &s.meta.id, st).await?;
                self.state_set(s, &id, set).await;
            }
        }
        if !already && s.rooms.lock().len() >= self.config.limits.max_rooms_per_session {
            return Err(CoreError::new(
                ErrorCode::TooManyRooms,
                format!(
                    "at most {} rooms per session",
                    self.config.limits.max_rooms_per_session
                ),
            ));
        }
        if let Some(st) = &state {
            self.check_state(st)?;
        }
        let member = Member::new(
            s.meta.clone(),
            self.clock.wall_now(),
            state.unwrap_or_else(|| Value::Object(Default::default())),
            mode == SubMode::Count,
        );
        let joined = self
            .engine
            .join(
                &id,
                self.ad_hoc_settings(&id),
                member,
                Self::actor(s),
                mode,
                self.config.limits.presence_list_limit,
                reply_ref,
            )
            .await?;
        s.rooms.lock().insert(id.clone());
        if !joined.already_member {
            if joined.occupied {
                self.emit(Transition::RoomOccupied { room: id.clone() })
                    .await;
            }
            self.emit(Transition::MemberAdded {
                room: id.clone(),
                user: s.meta.user.clone(),
                session: s.meta.id.clone(),
            })
            .await;
            s.visited.lock().insert(id.key.to_string());
            self.record_member(
                s,
                &id,
                "join",
                serde_json::json!({"device": s.meta.device.device}),
            );
            self.stats.joined(&id, &s.meta.user, self.clock.wall_now());
        }
        if joined.needs_flush {
            self.schedule_flush(&id).await;
        }
        // A room whose type times members out sooner than the server does.
        // (Once per membership: the deadline reschedules itself while the
        // member is heard from.)
        if let Some(t) = joined
            .session_timeout
            .filter(|t| !joined.already_member && *t < self.timing().session_timeout.0)
        {
            let last = self.clock.from_millis(s.last_frame.load(Ordering::Relaxed));
            self.schedule(
                last + t,
                Deadline::RoomTimeout(s.meta.id.clone(), id.clone(), t),
            );
        }
        if s.ended.load(Ordering::SeqCst) {
            // Ended (kicked, timed out) while this SUB was in flight: don't leave a ghost.
            s.rooms.lock().remove(&id);
            self.leave_room(s, &id, LeaveReason::Left, self.clock.now())
                .await;
        }
        Ok(())
    }

    pub fn check_state(&self, state: &Value) -> Result<(), CoreError> {
        if !state.is_object() {
            return Err(CoreError::new(
                ErrorCode::BadRequest,
                "field `state`: expected a JSON object",
            ));
        }
        let size = serde_json::to_string(state)
            .map(|s| s.len())
            .unwrap_or(usize::MAX);
        if size > self.config.limits.max_state_bytes {
            return Err(CoreError::new(
                ErrorCode::StateTooLarge,
                format!(
                    "state is {size} bytes; at most {} allowed",
                    self.config.limits.max_state_bytes
                ),
            ));
        }
        Ok(())
    }

    pub(super) fn joined_room(&self, s: &SessionHandle, key: RoomKey) -> Result<RoomId, CoreError> {
        let id = RoomId {
            tenant: s.user_ref.tenant.clone(),
            key,
        };
        if s.rooms.lock().contains(&id) {
            Ok(id)
        } else {
            Err(CoreError::new(
                ErrorCode::NotSubscribed,
                format!("not subscribed to {}", id.key),
            ))
        }
    }

    pub async fn unsub(&self, s: &Arc<SessionHandle>, key: RoomKey) -> Result<(), CoreError> {
        let id = self.joined_room(s, key)?;
        s.rooms.lock().remove(&id);
        self.leave_room(s, &id, LeaveReason::Left, self.clock.now())
            .await;
        Ok(())
    }

    pub async fn set_state(
        &self,
        s: &Arc<SessionHandle>,
        key: RoomKey,
        state: Value,
    ) -> Result<(), CoreError> {
        let id = self.joined_room(s, key)?;
        self.check_state(&state)?;
        let set = self.engine.set_state(&id, &s.meta.id, state).await?;
        self.state_set(s, &id, set).await;
        Ok(())
    }

    /// `EMIT`: an ephemeral event to the room's other members connected now
    /// (every node's). Not stored and not coalesced; the sender must be a
    /// member with role `commenter` or higher.
    pub async fn emit_event(
        &self,
        s: &Arc<SessionHandle>,
        key: RoomKey,
        event: String,
        data: Value,
    ) -> Result<(), CoreError> {
        let id = self.joined_room(s, key)?;
        let n = event.chars().count();
        if !(1..=MAX_EVENT_NAME).contains(&n) || event.chars().any(char::is_control) {
            return Err(CoreError::new(
                ErrorCode::BadRequest,
                format!("field `event`: 1-{MAX_EVENT_NAME} characters, no control characters"),
            ));
        }
        let size = serde_json::to_string(&data)
            .map(|s| s.len())
            .unwrap_or(usize::MAX);
        if size > self.config.limits.max_state_bytes {
            return Err(CoreError::new(
                ErrorCode::StateTooLarge,
                format!(
                    "event data is {size} bytes; at most {} allowed (limits.max_state_bytes)",
                    self.config.limits.max_state_bytes
                ),
            ));
        }
        self.engine
            .require_role(&id, &s.meta.id, Role::Commenter, "sending room events")
            .await?;
        self.emit(Transition::RoomEvent {
            room: id,
            from: Some(crate::core::transition::EventSender {
                user: s.meta.user.clone(),
                session: s.meta.id.clone(),
            }),
            event,
            data,
            except_socket: None,
        })
        .await;
        Ok(())
    }

    /// An event of the back end to a room's members connected now (the
    /// Pusher HTTP API): like an `EMIT` with no sender, the connection of
    /// `except_socket` excluded. Checked by the caller.
    pub async fn publish_event(
        &self,
        room: RoomId,
        event: String,
        data: Value,
        except_socket: Option<String>,
    ) {
        self.emit(Transition::RoomEvent {
            room,
            from: None,
            event,
            data,
            except_socket,
        })
        .await;
    }

    /// After the engine set a member's state: `None` if it was unchanged.
    pub(super) async fn state_set(
        &self,
        s: &SessionHandle,
        room: &RoomId,
        set: Option<crate::core::room::NeedsFlush>,
    ) {
        let Some(needs_flush) = set else { return };
        self.emit(Transition::MemberUpdated {
            room: room.clone(),
            user: s.meta.user.clone(),
            session: s.meta.id.clone(),
        })
        .await;
        if needs_flush {
            self.schedule_flush(room).await;
        }
    }

    /// After a participant change: members whose role no longer lets them in (a
    /// private room they are no participant of) are kicked.
    pub async fn participant_changed(
        &self,
        room: &RoomId,
        user: UserId,
        role: Option<Role>,
    ) -> Result<(), CoreError> {
        let change = self.engine.set_participant(room, user, role).await?;
        self.access_changed(room, change).await;
        Ok(())
    }

    /// Carries out an [`AccessChange`]: locks released are announced, evicted
    /// sessions are kicked.
    pub async fn access_changed(&self, room: &RoomId, change: crate::core::room::AccessChange) {
        for l in change.released_locks {
            self.lock_released(
                room,
                l.field,
                l.user,
                l.session,
                LockRelease::AccessLost,
                None,
            )
            .await;
        }
        self.kick_sessions(change.evicted).await;
    }
}
