//! Sessions on this node: open (with resume by `clientId`, here or from another
//! node), a sign of life, a lost connection and its leave grace, the end of a
//! session (leaves, user detach, history row), what other nodes ask or tell
//! (`run_engine_events`), kicks, and the live sessions of every node (REST).

use super::*;
use crate::engine::UserChange;

/// How often the recovery after a Redis outage asks again, a sweep interval
/// apart, for what a session's rooms are there.
const RECOVERY_TRIES: usize = 10;

impl Node {
    /// `HELLO` accepted: a new session, or the resume of one inside its grace.
    pub async fn open_session(
        &self,
        identity: Identity,
        hello: HelloInfo,
        link: ConnLink,
    ) -> Welcome {
        let now = self.clock.now();
        let user_ref = UserRef {
            tenant: identity.tenant.clone(),
            user: identity.user.clone(),
        };
        // A session held in its grace on another node moves here (shared engine):
        // same id, same rooms, no leave and no join.
        let mut adopted: Option<(SessionId, Vec<RoomId>)> = None;
        if let Some(cid) = &hello.client_id {
            if let Some(w) = self.try_resume(&user_ref, cid, &link, now) {
                return w;
            }
            if self.engine.shared() {
                // Redis unreachable: a new session; the held one leaves when
                // its grace ends.
                adopted = self.engine.take_over(&user_ref, cid).await.ok().flatten();
            }
        }
        let id = adopted
            .as_ref()
            .map(|(sid, _)| sid.clone())
            .unwrap_or_else(SessionId::new_random);
        let (device, os) = match (&hello.device, &hello.os) {
            (Some(d), os) => (
                d.clone(),
                os.clone().or_else(|| {
                    crate::core::types::device_from_user_agent(hello.user_agent.as_deref()).1
                }),
            ),
            (None, os) => {
                let (d, o) =
                    crate::core::types::device_from_user_agent(hello.user_agent.as_deref());
                (d, os.clone().or(o))
            }
        };
        // Redis unreachable: the session starts all the same, and recovery
        // writes it back (`reassert_sessions`).
        let change = self
            .engine
            .user_attach(&user_ref, &id, Status::Online, &device)
            .await
            .unwrap_or(UserChange::none(Status::Online));
        let cell = self.engine.status_cell(&user_ref);
        let meta = Arc::new(SessionMeta::new(
            id.clone(),
            identity.tenant.clone(),
            identity.user.clone(),
            identity.name.clone(),
            identity.info.clone(),
            DeviceInfo {
                device,
                os,
                app_version: hello.app_version.clone(),
            },
            hello.client_id.clone(),
            hello.ip.clone(),
            hello.user_agent.clone(),
            self.clock.wall(now),
            cell,
        ));
        let ms = self.clock.millis(now);
        let handle = Arc::new(SessionHandle {
            meta,
            user_ref: user_ref.clone(),
            identity,
            conn: Mutex::new(Some(link)),
            rooms: Mutex::new(
                adopted
                    .as_ref()
                    .map(|(_, r)| r.iter().cloned().collect())
                    .unwrap_or_default(),
            ),
            watching: Mutex::new(BTreeSet::new()),
            last_frame: AtomicU64::new(ms),
            last_active: AtomicU64::new(ms),
            inactive: AtomicBool::new(false),
            explicit_status: AtomicU8::new(0),
            status: AtomicU8::new(Status::Online.as_u8()),
            grace_gen: AtomicU64::new(0),
            detached_at: AtomicU64::new(0),
            ended: AtomicBool::new(false),
            visited: Mutex::new(BTreeSet::new()),
        });
        if adopted.is_none() {
            self.journal
                .record(WriteOp::SessionStarted(records::session_started(
                    &handle.meta,
                )));
        }
        self.hub.sessions.insert(id.clone(), handle);
        if let Some(cid) = &hello.client_id {
            self.client_ids
                .insert((user_ref.clone(), cid.clone()), id.clone());
        }
        metrics::gauge!(m::SESSIONS).set(self.hub.sessions.len() as f64);
        self.schedule(
            now + self.timing().session_timeout.0,
            Deadline::SessionTimeout(id.clone()),
        );
        if self.engine.shared() {
            // Unreachable: written back on recovery, like the user entry.
            let until = self.clock.wall(now + self.timing().session_timeout.0);
            if self
                .engine
                .session_opened(&id, &user_ref, hello.client_id.as_deref())
                .await
                .is_ok()
            {
                let _ = self
                    .engine
                    .sessions_alive(std::slice::from_ref(&id), until)
                    .await;
            }
        }
        let rooms = match &adopted {
            Some((_, rooms)) => {
                self.engine.adopt_local(&id, rooms).await;
                metrics::counter!(m::SESSIONS_RESUMED).increment(1);
                rooms.iter().map(|r| r.key.as_str().to_string()).collect()
            }
            None => vec![],
        };
        self.user_changed(&user_ref, change).await;
        self.welcome(&id, &user_ref, adopted.is_some(), rooms)
    }

    pub(super) fn welcome(
        &self,
        id: &SessionId,
        user: &UserRef,
        resumed: bool,
        rooms: Vec<String>,
    ) -> Welcome {
        Welcome {
            session_id: id.clone(),
            user_id: user.user.clone(),
            tenant_id: user.tenant.clone(),
            heartbeat_interval_ms: self.timing().heartbeat_interval.0.as_millis() as u64,
            session_timeout_ms: self.timing().session_timeout.0.as_millis() as u64,
            leave_grace_ms: self.timing().leave_grace.0.as_millis() as u64,
            server_time: iso(self.clock.wall_now()),
            resumed,
            rooms,
        }
    }

    pub(super) fn try_resume(
        &self,
        user: &UserRef,
        client_id: &str,
        link: &ConnLink,
        now: Instant,
    ) -> Option<Welcome> {
        let sid = self
            .client_ids
            .get(&(user.clone(), client_id.to_string()))?
            .clone();
        let s = self.hub.get(&sid)?;
        if s.ended.load(Ordering::SeqCst) || s.user_ref != *user {
            return None;
        }
        let old = s.conn.lock().replace(link.clone());
        if let Some(old) = old {
            old.close(close::REPLACED);
        }
        s.grace_gen.fetch_add(1, Ordering::SeqCst);
        s.detached_at.store(0, Ordering::SeqCst);
        s.last_frame
            .store(self.clock.millis(now), Ordering::Relaxed);
        self.schedule(
            now + self.timing().session_timeout.0,
            Deadline::SessionTimeout(sid.clone()),
        );
        metrics::counter!(m::SESSIONS_RESUMED).increment(1);
        let rooms = s
            .rooms
            .lock()
            .iter()
            .map(|r| r.key.as_str().to_string())
            .collect();
        Some(self.welcome(&sid, user, true, rooms))
    }

    /// Any frame from the client: a sign of life.
    pub fn touch(&self, s: &SessionHandle) {
        s.last_frame
            .store(self.clock.millis(self.clock.now()), Ordering::Relaxed);
    }

    /// A pong to one of the server's pings (its payload: the send time in
    /// clock millis): the session's RTT, whatever the protocol.
    pub fn pong(&self, s: &SessionHandle, payload: &[u8]) {
        if let Ok(b) = <[u8; 8]>::try_from(payload) {
            let sent = self.clock.from_millis(u64::from_be_bytes(b));
            let rtt = self.clock.now().saturating_duration_since(sent);
            s.meta.record_latency(rtt.as_millis() as u32);
            metrics::histogram!(m::PING_RTT).record(rtt.as_secs_f64());
        }
    }

    /// The connection of `link_id` ended without `BYE`: hold the session for the
    /// leave grace (unless it was already replaced or ended).
    pub fn connection_lost(&self, s: &Arc<SessionHandle>, link_id: u64) {
        let mut conn = s.conn.lock();
        if conn.as_ref().map(|l| l.id) != Some(link_id) || s.ended.load(Ordering::SeqCst) {
            return;
        }
        *conn = None;
        drop(conn);
        let now = self.clock.now();
        s.detached_at
            .store(self.clock.millis(now).max(1), Ordering::SeqCst);
        let gen = s.grace_gen.fetch_add(1, Ordering::SeqCst) + 1;
        self.schedule(
            now + self.timing().leave_grace.0,
            Deadline::LeaveGrace(s.meta.id.clone(), gen),
        );
    }

    /// Ends a session for good: leaves every room (releasing its locks), stops its
    /// watches, and updates the user's status.
    pub async fn end_session(&self, sid: &SessionId, reason: LeaveReason) {
        let Some(s) = self.hub.get(sid) else { return };
        if s.ended.swap(true, Ordering::SeqCst) {
            return;
        }
        // Unreachable: it ends here; the liveness sweep sorts out the rest.
        if !self.engine.release_session(sid).await.unwrap_or(true) {
            // Resumed on another node meanwhile: it lives on there.
            self.forget_session(&s).await;
            return;
        }
        let now = self.clock.now();
        // Ghost time: from the last sign of life to this leave. Only for deaths
        // noticed by the server (timeout, or a drop that outlived its grace).
        let last_alive = match reason {
            LeaveReason::Timeout => Some(s.last_frame.load(Ordering::Relaxed)),
            LeaveReason::Disconnected => {
                Some(s.detached_at.load(Ordering::SeqCst)).filter(|t| *t > 0)
            }
            _ => None,
        };
        if let Some(last) = last_alive {
            let ghost = now.saturating_duration_since(self.clock.from_millis(last));
            metrics::histogram!(m::GHOST_TIME).record(ghost.as_secs_f64());
        }
        let rooms: Vec<RoomId> = std::mem::take(&mut *s.rooms.lock()).into_iter().collect();
        for room in rooms {
            self.leave_room(&s, &room, reason, now).await;
        }
        self.unregister(&s);
        // Unreachable: the liveness entry stays, and the sweep that claims it
        // after recovery detaches the user (a no-op where this got through).
        let _ = self.engine.session_closed(sid).await;
        let wall = self.clock.wall(now);
        match self.engine.user_detach(&s.user_ref, sid, wall).await {
            Ok(change) => {
                self.record_session_end(&s, reason.as_str(), wall, change.after);
                self.user_changed(&s.user_ref, change).await;
            }
            // The user's other sessions unknown: no last seen recorded.
            Err(_) => self.record_session_end(&s, reason.as_str(), wall, Status::Online),
        }
    }

    /// The durable end of a session: its history row, and the user's last seen
    /// when it was their last session (`after` is the user's status now).
    pub(super) fn record_session_end(
        &self,
        s: &SessionHandle,
        reason: &str,
        wall: SystemTime,
        after: Status,
    ) {
        self.journal.record(WriteOp::SessionEnded {
            tenant: s.user_ref.tenant.to_string(),
            session_id: s.meta.id.to_string(),
            ended_at: unix_ms(wall),
            reason: reason.to_string(),
            rooms: s.visited.lock().iter().cloned().collect(),
        });
        if after == Status::Offline {
            self.journal.record(WriteOp::LastSeen {
                tenant: s.user_ref.tenant.to_string(),
                user: s.user_ref.user.to_string(),
                at: unix_ms(wall),
            });
        }
    }

    /// What another node asks of this one (shared engine).
    pub async fn run_engine_events(
        self: Arc<Self>,
        mut rx: tokio::sync::mpsc::UnboundedReceiver<crate::engine::EngineEvent>,
    ) {
        use crate::engine::EngineEvent;
        while let Some(e) = rx.recv().await {
            match e {
                EngineEvent::UserChanged(u) => self.notify_watchers(&u).await,
                EngineEvent::Kick(sid, code) => {
                    self.close_and_end(&sid, code, LeaveReason::Kicked).await;
                }
                EngineEvent::Recovered => self.reassert_sessions().await,
                EngineEvent::TakenOver(sid) => {
                    if let Some(s) = self.hub.get(&sid) {
                        self.forget_session(&s).await;
                    }
                }
                EngineEvent::SessionsAsked(ask) => {
                    let local = self.local_sessions(&ask.tenant, ask.user.as_ref());
                    // Unreachable: the asking node answers without ours.
                    let _ = self.engine.answer_sessions(ask, local).await;
                }
            }
        }
    }

    /// Drops a session from this node without leaving anything: it moved to
    /// another node (a `clientId` resume there).
    pub(super) async fn forget_session(&self, s: &Arc<SessionHandle>) {
        let sid = &s.meta.id;
        s.ended.store(true, Ordering::SeqCst);
        if let Some(link) = s.conn.lock().take() {
            link.close(close::REPLACED);
        }
        let rooms: Vec<RoomId> = std::mem::take(&mut *s.rooms.lock()).into_iter().collect();
        self.engine.forget_local(sid, &rooms).await;
        self.unregister(s);
    }

    /// Takes an ended session off this node: its watches, its entry in the hub
    /// and its `clientId`.
    pub(super) fn unregister(&self, s: &SessionHandle) {
        let sid = &s.meta.id;
        let watching: Vec<UserId> = std::mem::take(&mut *s.watching.lock())
            .into_iter()
            .collect();
        for u in watching {
            let key = UserRef {
                tenant: s.user_ref.tenant.clone(),
                user: u,
            };
            if let Some(mut w) = self.watchers.get_mut(&key) {
                w.remove(sid);
            }
            self.watchers.remove_if(&key, |_, w| w.is_empty());
        }
        self.hub.sessions.remove(sid);
        if let Some(cid) = &s.meta.client_id {
            self.client_ids
                .remove_if(&(s.user_ref.clone(), cid.clone()), |_, v| v == sid);
        }
        metrics::gauge!(m::SESSIONS).set(self.hub.sessions.len() as f64);
    }

    /// After a Redis outage: Redis may have restarted empty, or kept everything,
    /// or timed some of ours out meanwhile. Every live session of this node is
    /// written back (user entry, session record, liveness) and re-joins the rooms
    /// it is in (a no-op where it still is a member; a join where it was lost);
    /// then every local member gets a fresh snapshot.
    pub(super) async fn reassert_sessions(&self) {
        let sessions: Vec<Arc<SessionHandle>> = self
            .hub
            .sessions
            .iter()
            .map(|e| e.value().clone())
            .collect();
        let until = self
            .clock
            .wall(self.clock.now() + self.timing().session_timeout.0);
        for s in &sessions {
            if s.ended.load(Ordering::SeqCst) {
                continue;
            }
            // Each write tried once; should Redis fail again, the health check
            // sees it and the next recovery writes everything again.
            let _ = self
                .engine
                .user_attach(&s.user_ref, &s.meta.id, s.status(), &s.meta.device.device)
                .await;
            let _ = self
                .engine
                .session_opened(&s.meta.id, &s.user_ref, s.meta.client_id.as_deref())
                .await;
            let _ = self
                .engine
                .sessions_alive(std::slice::from_ref(&s.meta.id), until)
                .await;
            let rooms: Vec<RoomId> = s.rooms.lock().iter().cloned().collect();
            for room in &rooms {
                if let Err(e) = self
                    .sub(s, room.key.clone(), None, SubMode::List, None)
                    .await
                {
                    tracing::warn!(session = %s.meta.id, room = %room.key, "rejoin after outage: {}", e.message);
                    s.rooms.lock().remove(room);
                }
            }
            // An UNSUB during the outage could not be written: leave it now.
            // Redis may still be settling (a reconnect under way): tried again,
            // a sweep interval apart, until it answers.
            for _ in 0..RECOVERY_TRIES {
                let mut done = false;
                if let Ok(held) = self.engine.session_rooms(&s.meta.id).await {
                    done = true;
                    for room in held.iter().filter(|r| !rooms.contains(r)) {
                        done &= self
                            .leave_room(s, room, LeaveReason::Left, self.clock.now())
                            .await;
                    }
                }
                if done {
                    break;
                }
                tokio::time::sleep(self.timing().sweep_interval.0).await;
            }
        }
        self.engine.resync().await;
    }

    /// A session whose node died (found by the liveness sweep, claimed by this
    /// node alone): it leaves here, once, for everyone. A node that died without
    /// a word times its sessions out; one that shut down handed them over for
    /// their leave grace, so those nobody resumed are `disconnected` (and their
    /// history ends with `shutdown`).
    pub(super) async fn end_dead_session(&self, d: crate::engine::DeadSession) {
        let now = self.clock.now();
        let (reason, history) = if d.handed_over {
            tracing::info!(session = %d.id, user = %d.user.user, tenant = %d.user.tenant, "session of a stopped node was not resumed within its grace");
            (LeaveReason::Disconnected, "shutdown")
        } else {
            metrics::counter!(m::SESSION_TIMEOUTS).increment(1);
            tracing::info!(session = %d.id, user = %d.user.user, tenant = %d.user.tenant, "session of a dead node timed out");
            (LeaveReason::Timeout, LeaveReason::Timeout.as_str())
        };
        for room in &d.rooms {
            self.leave_room_as(room, &d.id, &d.user.user, reason, now)
                .await;
        }
        let wall = self.clock.wall(now);
        // Unreachable (Redis failed right after the claim): the user's other
        // sessions unknown, no last seen recorded and no one told.
        let change = self
            .engine
            .user_detach(&d.user, &d.id, wall)
            .await
            .unwrap_or(UserChange::none(Status::Online));
        self.journal.record(WriteOp::SessionEnded {
            tenant: d.user.tenant.to_string(),
            session_id: d.id.to_string(),
            ended_at: unix_ms(wall),
            reason: history.to_string(),
            rooms: d.rooms.iter().map(|r| r.key.to_string()).collect(),
        });
        if change.after == Status::Offline {
            self.journal.record(WriteOp::LastSeen {
                tenant: d.user.tenant.to_string(),
                user: d.user.user.to_string(),
                at: unix_ms(wall),
            });
        }
        self.user_changed(&d.user, change).await;
    }

    /// Closes the connection with `code` and ends the session now.
    pub async fn close_and_end(&self, sid: &SessionId, code: u16, reason: LeaveReason) -> bool {
        let Some(s) = self.hub.get(sid) else {
            return false;
        };
        if let Some(link) = s.conn.lock().take() {
            link.close(code);
        }
        self.end_session(sid, reason).await;
        true
    }

    /// The live sessions of `tenant` (of `user` only, if given) on every node:
    /// this node's, and what the other nodes answer (shared engine). Sorted by id.
    pub async fn sessions(
        &self,
        tenant: &TenantId,
        user: Option<&UserId>,
    ) -> Result<Vec<SessionInfoView>, EngineError> {
        self.sessions_in(tenant, user, None).await
    }

    /// [`Node::sessions`], of one room's members only if `room` is given
    /// (filtered before this node's views are built).
    pub async fn sessions_in(
        &self,
        tenant: &TenantId,
        user: Option<&UserId>,
        room: Option<&str>,
    ) -> Result<Vec<SessionInfoView>, EngineError> {
        let in_room = |s: &SessionHandle| {
            room.is_none_or(|k| s.rooms.lock().iter().any(|r| r.key.as_str() == k))
        };
        let mut out: Vec<SessionInfoView> = self
            .local_handles(tenant, user)
            .iter()
            .filter(|s| in_room(s))
            .map(|s| self.session_info(s))
            .collect();
        let remote = self.engine.remote_sessions(tenant, user).await?;
        out.extend(remote.into_iter().filter(|r| {
            self.hub.get(&r.session_id).is_none()
                && room.is_none_or(|k| r.rooms.iter().any(|x| x == k))
        }));
        out.sort_by(|a, b| a.session_id.cmp(&b.session_id));
        out.dedup_by(|a, b| a.session_id == b.session_id);
        Ok(out)
    }

    /// This node's sessions of `tenant` (of `user` only, if given).
    pub(super) fn local_sessions(
        &self,
        tenant: &TenantId,
        user: Option<&UserId>,
    ) -> Vec<SessionInfoView> {
        self.local_handles(tenant, user)
            .iter()
            .map(|s| self.session_info(s))
            .collect()
    }

    /// This node's session handles of `tenant` (of `user` only, if given).
    pub(super) fn local_handles(
        &self,
        tenant: &TenantId,
        user: Option<&UserId>,
    ) -> Vec<Arc<SessionHandle>> {
        self.hub
            .sessions
            .iter()
            .filter(|e| &e.value().user_ref.tenant == tenant)
            .filter(|e| user.is_none_or(|u| &e.value().user_ref.user == u))
            .map(|e| e.value().clone())
            .collect()
    }

    pub fn session_info(&self, s: &SessionHandle) -> SessionInfoView {
        SessionInfoView {
            session_id: s.meta.id.clone(),
            user_id: s.meta.user.clone(),
            tenant_id: s.meta.tenant.clone(),
            device: s.meta.device.device.clone(),
            os: s.meta.device.os.clone(),
            app_version: s.meta.device.app_version.clone(),
            client_id: s.meta.client_id.clone(),
            ip: s.meta.ip.clone(),
            user_agent: s.meta.user_agent.clone(),
            connected_at: iso(s.meta.connected_at),
            last_heartbeat_at: iso(self
                .clock
                .wall(self.clock.from_millis(s.last_frame.load(Ordering::Relaxed)))),
            latency_ms: s.meta.latency_ms(),
            status: s.status(),
            connected: s.is_connected(),
            rooms: s
                .rooms
                .lock()
                .iter()
                .map(|r| r.key.as_str().to_string())
                .collect(),
        }
    }

    /// A room was closed or deleted: its members are kicked (SPEC §3 close code
    /// 4011 covers "room closed"): connection closed 4011, session ended with
    /// reason `kicked` in every room it was in.
    pub async fn kick_sessions(&self, sessions: Vec<SessionId>) {
        for sid in sessions {
            if !self
                .close_and_end(&sid, close::KICKED, LeaveReason::Kicked)
                .await
            {
                // Not here: maybe on another node. Unreachable: a session of
                // another node is then ended by the liveness sweep at worst.
                let _ = self.engine.kick_remote(&sid, close::KICKED).await;
            }
        }
    }
}
