//! Time: the sweeper that fires every deadline of the node (timeouts, leave
//! grace, away, lock and stale expiry, diff flushes, idle rooms, pings, the
//! liveness sweep of a shared engine), the statistics sampling, and shutdown
//! (sessions handed to their leave grace, not announced as leaves).

use super::*;

impl Node {
    /// Samples every room's occupancy and members' latency into the current
    /// minute, and hands completed minutes to the journal.
    pub async fn sample_stats(&self) {
        let at = self.clock.wall_now();
        // Unreachable (Redis down): this sample is skipped.
        for room in self.engine.all_rooms().await.unwrap_or_default() {
            let Ok(members) = self.engine.members(&room.id).await else {
                continue;
            };
            let mut users = HashSet::new();
            let mut latencies = Vec::with_capacity(members.len());
            for sid in &members {
                if let Some(s) = self.hub.get(sid) {
                    users.insert(s.meta.user.clone());
                    if let Some(l) = s.meta.latency_ms() {
                        latencies.push(l);
                    }
                }
            }
            self.stats.sample(
                &room.id,
                members.len() as u32,
                users.len() as u32,
                latencies,
                at,
            );
        }
        for sample in self.stats.completed(at) {
            self.journal.record(WriteOp::RoomStat(sample));
        }
    }

    /// Drains due deadlines forever (until `shutdown` fires). One per node.
    pub async fn run_sweeper(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        loop {
            let now = self.clock.now();
            let due = self.deadlines.lock().pop_due(now, 4096);
            let had = !due.is_empty();
            for d in due {
                self.fire(d, now).await;
            }
            if had {
                continue;
            }
            let next = self.deadlines.lock().next_at();
            metrics::gauge!(m::EXPIRY_QUEUE).set(self.deadlines.lock().len() as f64);
            let sleep = async {
                match next {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = sleep => {}
                _ = self.wake.notified() => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    pub(super) async fn fire(&self, d: Deadline, now: Instant) {
        match d {
            Deadline::SessionTimeout(sid) => {
                let Some(s) = self.hub.get(&sid) else { return };
                if s.ended.load(Ordering::SeqCst) || !s.is_connected() {
                    return; // ended, or detached: the leave grace decides
                }
                let last = self.clock.from_millis(s.last_frame.load(Ordering::Relaxed));
                let deadline = last + self.timing().session_timeout.0;
                if deadline > now {
                    self.schedule(deadline, Deadline::SessionTimeout(sid));
                } else {
                    metrics::counter!(m::SESSION_TIMEOUTS).increment(1);
                    tracing::info!(session = %sid, user = %s.meta.user, tenant = %s.meta.tenant, "session timed out");
                    self.close_and_end(&sid, close::TIMEOUT, LeaveReason::Timeout)
                        .await;
                }
            }
            Deadline::RoomTimeout(sid, room, timeout) => {
                let Some(s) = self.hub.get(&sid) else { return };
                if s.ended.load(Ordering::SeqCst) || !s.rooms.lock().contains(&room) {
                    return;
                }
                let last = self.clock.from_millis(s.last_frame.load(Ordering::Relaxed));
                if last + timeout > now {
                    self.schedule(last + timeout, Deadline::RoomTimeout(sid, room, timeout));
                } else if s.rooms.lock().remove(&room) {
                    // The session stays, in its other rooms; it is told nothing
                    // (it was silent): a later message about this room answers
                    // `not_subscribed`, and a `SUB` joins it again.
                    tracing::info!(session = %sid, user = %s.meta.user, room = %room.key, "member timed out of a room with a shorter timeout");
                    self.leave_room(&s, &room, LeaveReason::Timeout, now).await;
                }
            }
            Deadline::LeaveGrace(sid, gen) => {
                let Some(s) = self.hub.get(&sid) else { return };
                if s.grace_gen.load(Ordering::SeqCst) == gen && !s.is_connected() {
                    self.end_session(&sid, LeaveReason::Disconnected).await;
                }
            }
            Deadline::Away(sid) => {
                if let Some(s) = self.hub.get(&sid) {
                    self.recompute_status(&s).await;
                }
            }
            Deadline::LockExpiry(room, field) => {
                let lock = match self.engine.expire_lock(&room, &field, now).await {
                    Ok(lock) => lock,
                    Err(_) => {
                        return self.retry_later(Deadline::LockExpiry(room, field));
                    }
                };
                if let Some(l) = lock {
                    self.lock_released(&room, field, l.user, l.session, LockRelease::Expired, None)
                        .await;
                }
            }

            Deadline::StaleExpiry(room) => match self.engine.expire_stale(&room, now).await {
                Ok(Some(view)) => self.emit(Self::entity_transition(&room, &view)).await,
                Ok(None) => {}
                Err(_) => self.retry_later(Deadline::StaleExpiry(room)),
            },
            Deadline::DiffFlush(room) => self.flush_diff(&room, now).await,
            Deadline::RoomIdle(room) => {
                if self.engine.remove_if_idle(&room, now).await.is_err() {
                    self.retry_later(Deadline::RoomIdle(room));
                }
            }
            Deadline::PingAll => {
                let stamp = self.clock.millis(now);
                for s in self.hub.sessions.iter() {
                    if let Some(link) = s.link() {
                        let _ = link.tx.try_send(hub::Outbound::Ping(stamp));
                    }
                }
                self.schedule(now + self.timing().heartbeat_interval.0, Deadline::PingAll);
            }
            Deadline::Liveness => {
                let ids: Vec<SessionId> =
                    self.hub.sessions.iter().map(|e| e.key().clone()).collect();
                let until = self.clock.wall(now + self.timing().session_timeout.0);
                // Unreachable: tried again at the next sweep (a session is due
                // only `session_timeout` after its last refresh).
                let _ = self.engine.sessions_alive(&ids, until).await;
                let dead = self
                    .engine
                    .claim_dead(self.clock.wall(now))
                    .await
                    .unwrap_or_default();
                for dead in dead {
                    if self.hub.get(&dead.id).is_none() {
                        self.end_dead_session(dead).await;
                    }
                }
                if !self.shutting_down.load(Ordering::SeqCst) {
                    self.schedule(now + self.timing().sweep_interval.0, Deadline::Liveness);
                }
            }
        }
    }

    /// SIGTERM (SPEC §3, close code 1001): nobody is announced as leaving. The
    /// sweeper is stopped before this runs (`server.rs`), so no grace or timeout
    /// of this node fires meanwhile. On a shared engine each session is handed to
    /// the cluster for the rest of its leave grace: a `clientId` reconnect to any
    /// node (this one restarted included) resumes it, and if nobody comes back
    /// the liveness sweep of another node announces it `disconnected`. On the
    /// memory engine the roster dies with the process: the session history and
    /// `last_seen` are written, and clients re-`SUB` after the restart. Then every
    /// connection is closed with 1001.
    pub async fn shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        let sessions: Vec<Arc<SessionHandle>> = self
            .hub
            .sessions
            .iter()
            .map(|e| e.value().clone())
            .collect();
        let links: Vec<ConnLink> = sessions.iter().filter_map(|s| s.link()).collect();
        // The minute in progress is written too (a restart loses no count),
        // sampled while everyone is still in.
        self.sample_stats().await;
        let now = self.clock.now();
        let grace = self.timing().leave_grace.0;
        let mut held = vec![];
        for s in &sessions {
            if s.ended.swap(true, Ordering::SeqCst) {
                continue;
            }
            if self.engine.shared() {
                // A session already detached keeps the rest of its own grace.
                let detached = s.detached_at.load(Ordering::SeqCst);
                let from = if detached > 0 {
                    self.clock.from_millis(detached)
                } else {
                    now
                };
                held.push((s.meta.id.clone(), self.clock.wall(from + grace)));
            } else {
                self.end_at_shutdown(s, now).await;
            }
        }
        if !held.is_empty() {
            // Those not handed over time out on another node instead (logged).
            let _ = self.engine.hand_over_at_shutdown(&held).await;
        }
        for sample in self.stats.drain() {
            self.journal.record(WriteOp::RoomStat(sample));
        }
        for l in links {
            l.close(close::GOING_AWAY);
        }
    }

    /// The end of a session whose roster dies with this process (memory engine):
    /// durable rows only. No leave goes out (the members are told nothing but
    /// 1001) and watchers hear nothing: the user is back within the grace.
    pub(super) async fn end_at_shutdown(&self, s: &SessionHandle, now: Instant) {
        let wall = self.clock.wall(now);
        for room in s.rooms.lock().iter() {
            self.record_member(s, room, "leave", serde_json::json!({"reason": "shutdown"}));
        }
        let after = self
            .engine
            .user_detach(&s.user_ref, &s.meta.id, wall)
            .await
            .map_or(Status::Online, |c| c.after);
        self.record_session_end(s, "shutdown", wall, after);
    }
}
