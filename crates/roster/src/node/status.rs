//! A user's status and who watches it: heartbeats and activity (away after
//! `timing.away_after`), an explicit `STATUS`, the status merged over the
//! user's sessions (`user_changed`: member entries updated, watchers told,
//! other nodes told), and `WATCH`/`UNWATCH` with `lastSeen` from the store.

use super::*;

impl Node {
    /// After a user's sessions or statuses changed: if the merged status moved,
    /// every live entry of the user shows it, so each is an update in its rooms.
    /// Watchers hear of every change (devices may differ even when status doesn't).
    pub(super) async fn user_changed(&self, user: &UserRef, change: crate::engine::UserChange) {
        if let Some(t) = Transition::of_user(user, change.before, change.after) {
            self.emit(t).await;
        }
        if change.before != change.after {
            self.record(
                &user.tenant,
                "status",
                None,
                Some(&user.user),
                None,
                None,
                serde_json::json!({"from": change.before, "to": change.after}),
            );
            let sessions = match self.engine.user(user).await {
                Ok(record) => record.sessions,
                // Redis is unreachable: entries show the new status at the
                // resync that follows its recovery.
                Err(_) => vec![],
            };
            for sid in sessions {
                let rooms: Vec<RoomId> = match self.hub.get(&sid) {
                    Some(other) => other.rooms.lock().iter().cloned().collect(),
                    // A session of the user on another node.
                    None => self.engine.session_rooms(&sid).await.unwrap_or_default(),
                };
                for room in rooms {
                    // Unreachable: the entry shows the status at the resync.
                    if let Ok(true) = self.engine.touch(&room, &sid, change.after).await {
                        self.schedule_flush(&room).await;
                    }
                }
            }
        }
        self.notify_watchers(user).await;
        // Unreachable: the other nodes' watchers hear of it at the next change.
        let _ = self.engine.announce_user(user).await;
    }

    pub async fn heartbeat(&self, s: &Arc<SessionHandle>, active: bool, latency_ms: Option<u32>) {
        let now = self.clock.now();
        if let Some(l) = latency_ms {
            s.meta.record_latency(l);
        }
        let until = now + self.timing().lock_ttl.0;
        let rooms: Vec<RoomId> = s.rooms.lock().iter().cloned().collect();
        for room in &rooms {
            for field in self
                .engine
                .refresh_locks(room, &s.meta.id, until, s.meta.latency_ms())
                .await
                .unwrap_or_default()
            {
                self.schedule(until, Deadline::LockExpiry(room.clone(), field));
            }
        }
        if active {
            s.last_active
                .store(self.clock.millis(now), Ordering::Relaxed);
            s.inactive.store(false, Ordering::Relaxed);
            self.recompute_status(s).await;
        } else if !s.inactive.swap(true, Ordering::Relaxed) {
            let since = self
                .clock
                .from_millis(s.last_active.load(Ordering::Relaxed));
            self.schedule(
                since + self.timing().away_after.0,
                Deadline::Away(s.meta.id.clone()),
            );
        }
    }

    /// `STATUS away` holds the session away until `STATUS online`, which returns
    /// it to automatic status (away only after `away_after` of reported inactivity).
    pub async fn set_status(&self, s: &Arc<SessionHandle>, status: Status) {
        let explicit = if status == Status::Away {
            Status::Away.as_u8() + 1
        } else {
            0
        };
        s.explicit_status.store(explicit, Ordering::Relaxed);
        if status == Status::Online {
            s.last_active
                .store(self.clock.millis(self.clock.now()), Ordering::Relaxed);
            s.inactive.store(false, Ordering::Relaxed);
        }
        self.recompute_status(s).await;
    }

    /// Session status: an explicit `STATUS` wins; else away after `away_after` of
    /// reported inactivity.
    pub(super) async fn recompute_status(&self, s: &Arc<SessionHandle>) {
        let explicit = s.explicit_status.load(Ordering::Relaxed);
        let status = if explicit > 0 {
            Status::from_u8(explicit - 1)
        } else {
            let now_ms = self.clock.millis(self.clock.now());
            let idle =
                Duration::from_millis(now_ms.saturating_sub(s.last_active.load(Ordering::Relaxed)));
            if s.inactive.load(Ordering::Relaxed) && idle >= self.timing().away_after.0 {
                Status::Away
            } else {
                Status::Online
            }
        };
        let was = s.status.swap(status.as_u8(), Ordering::Relaxed);
        if was == status.as_u8() {
            return;
        }
        match self
            .engine
            .user_set_status(&s.user_ref, &s.meta.id, status)
            .await
        {
            Ok(change) if change.before != change.after => {
                self.user_changed(&s.user_ref, change).await;
            }
            Ok(_) => {}
            // Unreachable: the next recompute tries again (and recovery writes
            // the session's status back).
            Err(_) => {
                let _ = s.status.compare_exchange(
                    status.as_u8(),
                    was,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
        }
    }

    pub async fn user_status(&self, user: &UserRef) -> Result<UserStatusView, EngineError> {
        self.user_status_with(user, true).await
    }

    /// `lookup`: ask the store for the `lastSeen` of a user not seen since
    /// start-up (bounded); otherwise answer from memory only.
    pub(super) async fn user_status_with(
        &self,
        user: &UserRef,
        lookup: bool,
    ) -> Result<UserStatusView, EngineError> {
        let record = self.engine.user(user).await?;
        let devices = record.devices;
        let last_seen = if record.status == Status::Offline {
            match record.last_seen {
                Some(t) => Some(iso(t)),
                None if lookup => self.stored_last_seen(user).await.map(iso),
                None => None,
            }
        } else {
            Some(iso(self.clock.wall_now()))
        };
        Ok(UserStatusView {
            status: record.status,
            last_seen,
            devices,
        })
    }

    /// `lastSeen` of a user not seen since start-up, from the store. Bounded (the
    /// answer to a WATCH must not wait on a slow database) and remembered, found
    /// or not.
    pub(super) async fn stored_last_seen(&self, user: &UserRef) -> Option<SystemTime> {
        if self.last_seen_misses.contains_key(user) {
            return None;
        }
        let lookup = self
            .store
            .last_seen(user.tenant.as_str(), user.user.as_str());
        let ms = match tokio::time::timeout(Duration::from_millis(250), lookup).await {
            Ok(Ok(Some(ms))) => ms,
            Ok(Ok(None)) => {
                // Bounded: forgetting everything now and then costs only lookups.
                if self.last_seen_misses.len() >= 100_000 {
                    self.last_seen_misses.clear();
                }
                self.last_seen_misses.insert(user.clone(), ());
                return None;
            }
            Ok(Err(e)) => {
                tracing::debug!("lastSeen lookup failed: {e}");
                return None;
            }
            Err(_) => return None,
        };
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
        // Unreachable: asked the store again next time.
        let _ = self.engine.user_seen(user, at).await;
        Some(at)
    }

    pub async fn watch(
        &self,
        s: &Arc<SessionHandle>,
        users: Vec<UserId>,
        reply_ref: Option<&Value>,
    ) -> Result<(), CoreError> {
        {
            let watching = s.watching.lock();
            let new = users
                .iter()
                .filter(|u| !watching.contains(*u))
                .collect::<HashSet<_>>()
                .len();
            if watching.len() + new > self.config.limits.max_watch {
                return Err(CoreError::new(
                    ErrorCode::TooManyWatched,
                    format!(
                        "at most {} watched users per session",
                        self.config.limits.max_watch
                    ),
                ));
            }
        }
        let mut snapshot = BTreeMap::new();
        let mut unknown = vec![];
        for u in users {
            let key = UserRef {
                tenant: s.user_ref.tenant.clone(),
                user: u.clone(),
            };
            self.watchers
                .entry(key.clone())
                .or_default()
                .insert(s.meta.id.clone());
            s.watching.lock().insert(u.clone());
            let v = self.user_status_with(&key, false).await?;
            if v.status == Status::Offline && v.last_seen.is_none() {
                unknown.push(key);
            }
            snapshot.insert(u, v);
        }
        // Users not seen since start-up: their lastSeen comes from the store, a
        // few lookups at a time, all within one bound. Whatever is not back by
        // then is answered `null` (and WATCH answers promptly anyway).
        if !unknown.is_empty() {
            use futures_util::StreamExt;
            let deadline = Instant::now() + Duration::from_millis(250);
            let mut lookups = futures_util::stream::iter(unknown)
                .map(|key| async move {
                    let at = self.stored_last_seen(&key).await;
                    (key, at)
                })
                .buffer_unordered(16);
            while let Ok(Some((key, at))) = tokio::time::timeout_at(deadline, lookups.next()).await
            {
                if let (Some(at), Some(v)) = (at, snapshot.get_mut(&key.user)) {
                    v.last_seen = Some(iso(at));
                }
            }
        }
        hub::reply_to(
            s,
            hub::Reply::StatusSnapshot {
                users: &snapshot,
                reply_ref,
            },
        );
        Ok(())
    }

    pub fn unwatch(&self, s: &Arc<SessionHandle>, users: Vec<UserId>) {
        for u in users {
            s.watching.lock().remove(&u);
            let key = UserRef {
                tenant: s.user_ref.tenant.clone(),
                user: u,
            };
            if let Some(mut w) = self.watchers.get_mut(&key) {
                w.remove(&s.meta.id);
            }
            self.watchers.remove_if(&key, |_, w| w.is_empty());
        }
    }

    pub(super) async fn notify_watchers(&self, user: &UserRef) {
        let Some(ws) = self
            .watchers
            .get(user)
            .map(|w| w.iter().cloned().collect::<Vec<_>>())
        else {
            return;
        };
        let Ok(view) = self.user_status(user).await else {
            return; // Redis is unreachable: watchers hear of the next change
        };
        let reply = hub::Reply::Status {
            user: &user.user,
            view: &view,
        };
        for sid in ws {
            if let Some(s) = self.hub.get(&sid) {
                hub::reply_to(&s, reply);
            }
        }
    }
}
