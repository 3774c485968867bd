//! The node: where a presence change is decided. Protocol adapters and REST call
//! its methods; it checks limits and roles, runs the transition on the [`Engine`],
//! schedules the deadlines that follow, and tells watchers. One sweeper task
//! ([`Node::run_sweeper`]) drains every deadline of the node.

pub mod admin;
pub mod gauges;
pub mod hub;
pub mod queries;
pub mod records;
pub mod stats;
pub mod transitions;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use dashmap::DashMap;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::auth::Identity;
use crate::clock::{iso, Clock};
use crate::config::Config;
use crate::core::error::{CoreError, ErrorCode};
use crate::core::expiry::{Deadline, DeadlineQueue};
use crate::core::room::{Actor, LockOutcome, LockOwnerView, Member, RoomSettings};
use crate::core::room_type::{self, RoomType};
use crate::core::session::SessionMeta;
use crate::core::transition::{LockRelease, Transition};
use crate::core::types::{DeviceInfo, LeaveReason, Role, Status};
use crate::engine::{Engine, SubMode};
use crate::ids::{RoomId, RoomKey, SessionId, TenantId, UserId, UserRef};
use crate::journal::Journal;
use crate::metrics as m;
use crate::store::{unix_ms, ActivityRow, Store, WriteOp};
use hub::{close, ConnLink, Hub, SessionHandle};

/// What the client told us in `HELLO`, plus what the transport knows.
#[derive(Debug, Clone, Default)]
pub struct HelloInfo {
    pub device: Option<String>,
    pub os: Option<String>,
    pub app_version: Option<String>,
    pub client_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Welcome {
    pub session_id: SessionId,
    pub user_id: UserId,
    pub tenant_id: TenantId,
    pub heartbeat_interval_ms: u64,
    pub session_timeout_ms: u64,
    /// How long a dropped connection is held (SPEC §2): the SDK holds absent
    /// members this long after a reconnect that could not resume.
    pub leave_grace_ms: u64,
    pub server_time: String,
    pub resumed: bool,
    pub rooms: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserStatusView {
    pub status: Status,
    pub last_seen: Option<String>,
    pub devices: Vec<String>,
}

pub use crate::core::session::SessionInfoView;

pub struct Node {
    pub config: Arc<Config>,
    pub clock: Clock,
    /// Engine, hub and store are the node's own: REST reaches them through `Node`
    /// methods (`queries.rs`, `admin.rs`), never directly.
    pub(crate) engine: Arc<dyn Engine>,
    pub(crate) hub: Arc<Hub>,
    /// Where durable rows go (never awaited on a presence path).
    pub journal: Journal,
    /// Read and written for REST (`queries.rs`, `admin.rs`), and read for the
    /// `lastSeen` of users not seen since start-up.
    pub(crate) store: Arc<dyn Store>,
    pub stats: stats::StatsAggregator,
    room_types: Vec<RoomType>,
    /// Tenants' own room types, beside the seeded ones.
    tenant_types: DashMap<(TenantId, String), RoomType>,
    /// Users the store had no `lastSeen` for (not asked again).
    last_seen_misses: DashMap<UserRef, ()>,
    deadlines: Mutex<DeadlineQueue>,
    wake: Notify,
    /// (tenant, user, clientId) → session, for resume.
    client_ids: DashMap<(UserRef, String), SessionId>,
    watchers: DashMap<UserRef, HashSet<SessionId>>,
    next_conn: AtomicU64,
    pub shutting_down: AtomicBool,
    /// Consumers of this node's transitions (`transitions.rs`).
    sinks: transitions::Sinks,
}

impl Node {
    pub fn new(
        config: Arc<Config>,
        clock: Clock,
        engine: Arc<dyn Engine>,
        hub: Arc<Hub>,
        journal: Journal,
        store: Arc<dyn Store>,
    ) -> Arc<Self> {
        let node = Arc::new(Self {
            config,
            clock,
            engine,
            hub,
            journal,
            store,
            stats: stats::StatsAggregator::default(),
            room_types: room_type::seeded(),
            tenant_types: DashMap::new(),
            last_seen_misses: DashMap::new(),
            deadlines: Mutex::new(DeadlineQueue::default()),
            wake: Notify::new(),
            client_ids: DashMap::new(),
            watchers: DashMap::new(),
            next_conn: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
            sinks: transitions::Sinks::default(),
        });
        node.schedule(
            clock.now() + node.timing().heartbeat_interval.0,
            Deadline::PingAll,
        );
        if node.engine.shared() {
            node.schedule(clock.now(), Deadline::Liveness);
        }
        node
    }

    pub fn timing(&self) -> &crate::config::TimingConfig {
        &self.config.timing
    }

    /// The seeded types followed by the tenant's own, by code.
    pub fn room_types(&self, tenant: &TenantId) -> Vec<RoomType> {
        let mut own: Vec<RoomType> = self
            .tenant_types
            .iter()
            .filter(|e| &e.key().0 == tenant)
            .map(|e| e.value().clone())
            .collect();
        own.sort_by(|a, b| a.code.0.cmp(&b.code.0));
        self.room_types.iter().cloned().chain(own).collect()
    }

    pub fn is_seeded_type(&self, code: &str) -> bool {
        self.room_types.iter().any(|t| t.code.0 == code)
    }

    pub fn set_room_type(&self, tenant: TenantId, t: RoomType) {
        self.tenant_types.insert((tenant, t.code.0.clone()), t);
    }

    pub fn remove_room_type(&self, tenant: &TenantId, code: &str) -> bool {
        self.tenant_types
            .remove(&(tenant.clone(), code.to_string()))
            .is_some()
    }

    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    fn schedule(&self, at: Instant, d: Deadline) {
        let mut q = self.deadlines.lock();
        let earliest = q.insert(at, d);
        metrics::gauge!(m::EXPIRY_QUEUE).set(q.len() as f64);
        drop(q);
        if earliest {
            self.wake.notify_one();
        }
    }

    /// The settings a room gets when it is created ad hoc: the type of the first
    /// matching prefix rule, else `GENERIC`.
    pub fn ad_hoc_settings(&self, room: &RoomId) -> RoomSettings {
        let rule = self
            .config
            .rooms
            .rules
            .iter()
            .find(|r| room.key.as_str().starts_with(&r.prefix));
        let code = rule
            .map(|r| r.room_type.as_str())
            .unwrap_or(room_type::GENERIC);
        let t = self
            .room_type(&room.tenant, code)
            .unwrap_or_else(|| self.generic().clone());
        RoomSettings::from_type(
            &t,
            rule.and_then(|r| r.visibility),
            false,
            self.clock.wall_now(),
        )
    }

    pub fn room_type(&self, tenant: &TenantId, code: &str) -> Option<RoomType> {
        self.room_types
            .iter()
            .find(|t| t.code.0 == code)
            .cloned()
            .or_else(|| {
                self.tenant_types
                    .get(&(tenant.clone(), code.to_string()))
                    .map(|t| t.value().clone())
            })
    }

    fn generic(&self) -> &RoomType {
        // The seeded list always contains GENERIC (checked by a unit test there).
        self.room_types
            .iter()
            .find(|t| t.code.0 == room_type::GENERIC)
            .expect("GENERIC room type")
    }

    // ------------------------------------------------------------------ sessions

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
                adopted = self.engine.take_over(&user_ref, cid).await;
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
        let (change, cell) = self
            .engine
            .user_attach(&user_ref, &id, Status::Online, &device)
            .await;
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
            self.engine
                .session_opened(&id, &user_ref, hello.client_id.as_deref())
                .await;
            self.engine
                .sessions_alive(
                    std::slice::from_ref(&id),
                    self.clock.wall(now + self.timing().session_timeout.0),
                )
                .await;
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

    fn welcome(
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

    fn try_resume(
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
        if !self.engine.release_session(sid).await {
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
        self.engine.session_closed(sid).await;
        let wall = self.clock.wall(now);
        let change = self.engine.user_detach(&s.user_ref, sid, wall).await;
        self.record_session_end(&s, reason.as_str(), wall, change.after);
        self.user_changed(&s.user_ref, change).await;
    }

    /// The durable end of a session: its history row, and the user's last seen
    /// when it was their last session (`after` is the user's status now).
    fn record_session_end(&self, s: &SessionHandle, reason: &str, wall: SystemTime, after: Status) {
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

    /// An activity row about a session in a room (join, leave, its locks).
    fn record_member(&self, s: &SessionHandle, room: &RoomId, kind: &str, details: Value) {
        self.record(
            &room.tenant,
            kind,
            None,
            Some(&s.meta.user),
            Some(&room.key),
            Some(&s.meta.id),
            details,
        );
    }

    /// One activity row (SPEC §5), queued; never waits.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &self,
        tenant: &TenantId,
        kind: &str,
        actor: Option<&str>,
        user: Option<&UserId>,
        room: Option<&RoomKey>,
        session: Option<&SessionId>,
        details: Value,
    ) {
        if !self.config.database.log_activity {
            return;
        }
        self.journal.record(WriteOp::Activity(ActivityRow {
            id: 0,
            tenant: tenant.to_string(),
            at: unix_ms(self.clock.wall_now()),
            kind: kind.to_string(),
            actor: actor.map(str::to_string),
            user: user.map(|u| u.to_string()),
            room: room.map(|r| r.to_string()),
            session: session.map(|s| s.to_string()),
            details,
        }));
    }

    /// After a user's sessions or statuses changed: if the merged status moved,
    /// every live entry of the user shows it, so each is an update in its rooms.
    /// Watchers hear of every change (devices may differ even when status doesn't).
    async fn user_changed(&self, user: &UserRef, change: crate::engine::UserChange) {
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
            let record = self.engine.user(user).await;
            for sid in record.sessions {
                let rooms: Vec<RoomId> = match self.hub.get(&sid) {
                    Some(other) => other.rooms.lock().iter().cloned().collect(),
                    // A session of the user on another node.
                    None => self.engine.session_rooms(&sid).await,
                };
                for room in rooms {
                    if self.engine.touch(&room, &sid, change.after).await {
                        self.schedule_flush(&room).await;
                    }
                }
            }
        }
        self.notify_watchers(user).await;
        self.engine.announce_user(user).await;
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
                    self.engine.answer_sessions(ask, local).await;
                }
            }
        }
    }

    /// Drops a session from this node without leaving anything: it moved to
    /// another node (a `clientId` resume there).
    async fn forget_session(&self, s: &Arc<SessionHandle>) {
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
    fn unregister(&self, s: &SessionHandle) {
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
    async fn reassert_sessions(&self) {
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
            self.engine
                .user_attach(&s.user_ref, &s.meta.id, s.status(), &s.meta.device.device)
                .await;
            self.engine
                .session_opened(&s.meta.id, &s.user_ref, s.meta.client_id.as_deref())
                .await;
            self.engine
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
            for room in self.engine.session_rooms(&s.meta.id).await {
                if !rooms.contains(&room) {
                    self.leave_room(s, &room, LeaveReason::Left, self.clock.now())
                        .await;
                }
            }
        }
        self.engine.resync().await;
    }

    /// A session whose node died (found by the liveness sweep, claimed by this
    /// node alone): it leaves here, once, for everyone. A node that died without
    /// a word times its sessions out; one that shut down handed them over for
    /// their leave grace, so those nobody resumed are `disconnected` (and their
    /// history ends with `shutdown`).
    async fn end_dead_session(&self, d: crate::engine::DeadSession) {
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
        let change = self.engine.user_detach(&d.user, &d.id, wall).await;
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

    async fn leave_room(
        &self,
        s: &SessionHandle,
        room: &RoomId,
        reason: LeaveReason,
        now: Instant,
    ) {
        self.leave_room_as(room, &s.meta.id, &s.meta.user, reason, now)
            .await
    }

    async fn leave_room_as(
        &self,
        room: &RoomId,
        sid: &SessionId,
        user: &UserId,
        reason: LeaveReason,
        now: Instant,
    ) {
        if let Some(left) = self.engine.leave(room, sid, reason, now).await {
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
            for field in left.released_locks {
                self.record(
                    &room.tenant,
                    "lock_released",
                    None,
                    Some(user),
                    Some(&room.key),
                    Some(sid),
                    serde_json::json!({"field": field, "reason": reason.as_str()}),
                );
                self.emit(Transition::LockReleased {
                    room: room.clone(),
                    field,
                    user: user.clone(),
                    session: sid.clone(),
                    reason: LockRelease::OwnerLeft(reason),
                })
                .await;
            }
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
                    .map(|r| r.settings.idle_ttl)
                    .unwrap_or_default();
                self.schedule(now + idle, Deadline::RoomIdle(room.clone()));
            }
        }
    }

    async fn schedule_flush(&self, room: &RoomId) {
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
    async fn flush_diff(&self, room: &RoomId, since: Instant) {
        let n = self
            .engine
            .flush(room, self.config.limits.presence_list_limit)
            .await;
        if n > 0 {
            let took = self.clock.now().saturating_duration_since(since);
            metrics::histogram!(m::DIFF_DELIVERY).record(took.as_secs_f64());
        }
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

    // ------------------------------------------------------------------ rooms

    fn actor<'a>(s: &'a SessionHandle) -> Actor<'a> {
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

    fn joined_room(&self, s: &SessionHandle, key: RoomKey) -> Result<RoomId, CoreError> {
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

    /// After the engine set a member's state: `None` if it was unchanged.
    async fn state_set(
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

    // ------------------------------------------------------------------ liveness & status

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
    async fn recompute_status(&self, s: &Arc<SessionHandle>) {
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
        if s.status.swap(status.as_u8(), Ordering::Relaxed) == status.as_u8() {
            return;
        }
        let change = self
            .engine
            .user_set_status(&s.user_ref, &s.meta.id, status)
            .await;
        if change.before != change.after {
            self.user_changed(&s.user_ref, change).await;
        }
    }

    // ------------------------------------------------------------------ watch

    pub async fn user_status(&self, user: &UserRef) -> UserStatusView {
        self.user_status_with(user, true).await
    }

    /// `lookup`: ask the store for the `lastSeen` of a user not seen since
    /// start-up (bounded); otherwise answer from memory only.
    async fn user_status_with(&self, user: &UserRef, lookup: bool) -> UserStatusView {
        let record = self.engine.user(user).await;
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
        UserStatusView {
            status: record.status,
            last_seen,
            devices,
        }
    }

    /// `lastSeen` of a user not seen since start-up, from the store. Bounded (the
    /// answer to a WATCH must not wait on a slow database) and remembered, found
    /// or not.
    async fn stored_last_seen(&self, user: &UserRef) -> Option<SystemTime> {
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
        self.engine.user_seen(user, at).await;
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
            let v = self.user_status_with(&key, false).await;
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

    async fn notify_watchers(&self, user: &UserRef) {
        let Some(ws) = self
            .watchers
            .get(user)
            .map(|w| w.iter().cloned().collect::<Vec<_>>())
        else {
            return;
        };
        let view = self.user_status(user).await;
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

    // ------------------------------------------------------------------ locks

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
            self.record_member(
                s,
                &id,
                "lock_released",
                serde_json::json!({"field": field, "reason": "unlock"}),
            );
            self.emit(Transition::LockReleased {
                room: id.clone(),
                field: field.to_string(),
                user: lock.user,
                session: lock.session,
                reason: LockRelease::Unlocked,
            })
            .await;
        }
        Ok(())
    }

    /// Admin force-release (REST); `actor` is who asked.
    pub async fn force_unlock(&self, room: &RoomId, field: &str, actor: &str) -> bool {
        let Some(lock) = self.engine.force_unlock(room, field).await else {
            return false;
        };
        self.record(
            &room.tenant,
            "lock_force_released",
            Some(actor),
            Some(&lock.user),
            Some(&room.key),
            Some(&lock.session),
            serde_json::json!({"field": field}),
        );
        self.emit(Transition::LockReleased {
            room: room.clone(),
            field: field.to_string(),
            user: lock.user,
            session: lock.session,
            reason: LockRelease::ForceReleased,
        })
        .await;
        true
    }

    // ------------------------------------------------------------------ lifecycle

    /// `MUTATING`/`MUTATED` (REST or Kafka): updates entity state and tells members.
    /// Returns the room's entity state read afterwards (`None` if the room is gone).
    pub async fn lifecycle(
        &self,
        room: &RoomId,
        mutating: bool,
        by: UserId,
    ) -> Option<crate::core::room::EntityView> {
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
            let v = self.engine.mutating(room, settings, by, now, ttl).await;
            self.schedule(now + ttl, Deadline::StaleExpiry(room.clone()));
            v
        } else {
            self.engine.mutated(room, settings).await
        };
        self.emit(Self::entity_transition(room, &view)).await;
        if self.engine.members(room).await.is_empty() {
            let idle = self
                .engine
                .room(room)
                .await
                .map(|r| r.settings.idle_ttl)
                .unwrap_or_default();
            self.schedule(
                now + idle.max(self.timing().stale_ttl.0),
                Deadline::RoomIdle(room.clone()),
            );
        }
        self.engine.room(room).await.map(|r| r.entity)
    }

    fn entity_transition(room: &RoomId, view: &crate::core::room::EntityView) -> Transition {
        Transition::Entity {
            room: room.clone(),
            stale: view.stale,
            busy_by: view.busy_by.clone(),
            version: view.version,
        }
    }

    // ------------------------------------------------------------------ queries (REST)

    /// The live sessions of `tenant` (of `user` only, if given) on every node:
    /// this node's, and what the other nodes answer (shared engine). Sorted by id.
    pub async fn sessions(
        &self,
        tenant: &TenantId,
        user: Option<&UserId>,
    ) -> Result<Vec<SessionInfoView>, CoreError> {
        let mut out = self.local_sessions(tenant, user);
        let remote = self.engine.remote_sessions(tenant, user).await?;
        out.extend(
            remote
                .into_iter()
                .filter(|r| self.hub.get(&r.session_id).is_none()),
        );
        out.sort_by(|a, b| a.session_id.cmp(&b.session_id));
        out.dedup_by(|a, b| a.session_id == b.session_id);
        Ok(out)
    }

    /// This node's sessions of `tenant` (of `user` only, if given).
    fn local_sessions(&self, tenant: &TenantId, user: Option<&UserId>) -> Vec<SessionInfoView> {
        let handles: Vec<Arc<SessionHandle>> = self
            .hub
            .sessions
            .iter()
            .filter(|e| &e.value().user_ref.tenant == tenant)
            .filter(|e| user.is_none_or(|u| &e.value().user_ref.user == u))
            .map(|e| e.value().clone())
            .collect();
        handles.iter().map(|s| self.session_info(s)).collect()
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
                // Not here: maybe on another node.
                self.engine.kick_remote(&sid, close::KICKED).await;
            }
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
        for lock in change.released_locks {
            self.record(
                &room.tenant,
                "lock_released",
                None,
                Some(&lock.user),
                Some(&room.key),
                Some(&lock.session),
                serde_json::json!({"field": lock.field, "reason": "role"}),
            );
            self.emit(Transition::LockReleased {
                room: room.clone(),
                field: lock.field,
                user: lock.user,
                session: lock.session,
                reason: LockRelease::AccessLost,
            })
            .await;
        }
        self.kick_sessions(change.evicted).await;
    }

    /// Samples every room's occupancy and members' latency into the current
    /// minute, and hands completed minutes to the journal.
    pub async fn sample_stats(&self) {
        let at = self.clock.wall_now();
        for room in self.engine.all_rooms().await {
            let members = self.engine.members(&room.id).await;
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

    // ------------------------------------------------------------------ the sweeper

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

    async fn fire(&self, d: Deadline, now: Instant) {
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
                if let Some(lock) = self.engine.expire_lock(&room, &field, now).await {
                    self.record(
                        &room.tenant,
                        "lock_expired",
                        None,
                        Some(&lock.user),
                        Some(&room.key),
                        Some(&lock.session),
                        serde_json::json!({"field": field}),
                    );
                    self.emit(Transition::LockReleased {
                        room: room.clone(),
                        field,
                        user: lock.user,
                        session: lock.session,
                        reason: LockRelease::Expired,
                    })
                    .await;
                }
            }

            Deadline::StaleExpiry(room) => {
                if let Some(view) = self.engine.expire_stale(&room, now).await {
                    self.emit(Self::entity_transition(&room, &view)).await;
                }
            }
            Deadline::DiffFlush(room) => self.flush_diff(&room, now).await,
            Deadline::RoomIdle(room) => {
                self.engine.remove_if_idle(&room, now).await;
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
                self.engine.sessions_alive(&ids, until).await;
                for dead in self.engine.claim_dead(self.clock.wall(now)).await {
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
            self.engine.hand_over_at_shutdown(&held).await;
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
    async fn end_at_shutdown(&self, s: &SessionHandle, now: Instant) {
        let wall = self.clock.wall(now);
        for room in s.rooms.lock().iter() {
            self.record_member(s, room, "leave", serde_json::json!({"reason": "shutdown"}));
        }
        let change = self.engine.user_detach(&s.user_ref, &s.meta.id, wall).await;
        self.record_session_end(s, "shutdown", wall, change.after);
    }
}
