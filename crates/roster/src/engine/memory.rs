//! The single-node engine: rooms and users in sharded maps (`DashMap`), each room
//! behind its own mutex so no lock serialises unrelated rooms. No lock is held
//! across an `.await`: every method is synchronous inside.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use dashmap::DashMap;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::time::Instant;

use super::{
    Cluster, EngineError, EventLog, Locks, Outbox, Outgoing, Presence, RoomPatch, RoomSummary,
    Rooms, SubMode, UserChange, UserRecord, Users,
};
use crate::clock::Clock;
use crate::core::error::CoreError;
use crate::core::room::{
    AccessChange, Actor, EntityView, FieldLock, Joined, Left, LockOutcome, LockOwnerView, Member,
    NeedsFlush, PresenceSnapshot, Room, RoomSettings,
};
use crate::core::transition::Transition;
use crate::core::types::{LeaveReason, Role, Status};
use crate::ids::{RoomId, SessionId, TenantId, UserId, UserRef};

struct UserEntry {
    sessions: BTreeMap<SessionId, (Status, String)>,
    last_seen: Option<SystemTime>,
    cell: Arc<AtomicU8>,
}

impl UserEntry {
    fn merged(&self) -> Status {
        Status::merge(self.sessions.values().map(|(s, _)| *s))
    }
}

type RoomGuard = parking_lot::ArcMutexGuard<parking_lot::RawMutex, Room>;

pub struct MemoryEngine {
    rooms: DashMap<RoomId, Arc<Mutex<Room>>>,
    users: DashMap<UserRef, UserEntry>,
    outbox: Arc<dyn Outbox>,
    clock: Clock,
    /// The event stream's log, per tenant.
    events: DashMap<TenantId, Arc<Mutex<TenantLog>>>,
}

/// One tenant's event log (the Redis engine keeps the same in a stream).
#[derive(Default)]
struct TenantLog {
    last: u64,
    events: std::collections::VecDeque<(u64, String)>,
    cursors: HashMap<String, u64>,
    lease: Option<(String, Instant)>,
}

impl MemoryEngine {
    pub fn new(outbox: Arc<dyn Outbox>, clock: Clock) -> Self {
        Self {
            rooms: DashMap::new(),
            users: DashMap::new(),
            outbox,
            clock,
            events: DashMap::new(),
        }
    }

    fn log(&self, tenant: &TenantId) -> Arc<Mutex<TenantLog>> {
        self.events.entry(tenant.clone()).or_default().clone()
    }

    fn get(&self, id: &RoomId) -> Option<Arc<Mutex<Room>>> {
        self.rooms.get(id).map(|r| r.value().clone())
    }

    /// Runs `f` on a live room (never on one already dropped from the map).
    fn with<R>(&self, id: &RoomId, f: impl FnOnce(&mut Room) -> R) -> Option<R> {
        let room = self.get(id)?;
        let mut g = room.lock();
        if g.removed {
            return None;
        }
        Some(f(&mut g))
    }

    /// Locks the room, creating it from `create` if absent. A room dropped from
    /// the map between the lookup and the lock is looked up again, so nobody can
    /// join a room that no longer exists. Also says whether this call created it.
    fn lock_or_create(&self, id: &RoomId, create: &RoomSettings) -> (RoomGuard, bool) {
        loop {
            let mut created = false;
            let room = match self.get(id) {
                Some(r) => r,
                None => self
                    .rooms
                    .entry(id.clone())
                    .or_insert_with(|| {
                        created = true;
                        Arc::new(Mutex::new(Room::new(
                            id.clone(),
                            create.clone(),
                            self.clock.now(),
                        )))
                    })
                    .value()
                    .clone(),
            };
            let guard = room.lock_arc();
            if !guard.removed {
                return (guard, created);
            }
        }
    }

    /// Drops the room held by `guard` from the map.
    fn drop_room(&self, id: &RoomId, mut guard: RoomGuard) {
        guard.removed = true;
        let room = parking_lot::ArcMutexGuard::mutex(&guard).clone();
        drop(guard);
        self.rooms.remove_if(id, |_, v| Arc::ptr_eq(v, &room));
    }

    fn summary(room: &Room) -> RoomSummary {
        RoomSummary {
            id: room.id.clone(),
            settings: room.settings.clone(),
            sessions: room.len(),
            seq: room.seq(),
            entity: room.entity_view(),
        }
    }

    fn not_found(id: &RoomId) -> CoreError {
        CoreError::no_room(&id.key)
    }

    fn user_change(&self, user: &UserRef, f: impl FnOnce(&mut UserEntry)) -> UserChange {
        let mut e = self.users.entry(user.clone()).or_insert_with(|| UserEntry {
            sessions: BTreeMap::new(),
            last_seen: None,
            cell: Arc::new(AtomicU8::new(Status::Offline.as_u8())),
        });
        let before = e.merged();
        f(&mut e);
        let after = e.merged();
        e.cell.store(after.as_u8(), Ordering::Relaxed);
        UserChange { before, after }
    }
}

#[async_trait]
impl Rooms for MemoryEngine {
    async fn create_room(&self, id: RoomId, settings: RoomSettings) -> Result<(), EngineError> {
        use dashmap::mapref::entry::Entry;
        match self.rooms.entry(id.clone()) {
            Entry::Occupied(_) => Err(CoreError::room_exists(&id.key).into()),
            Entry::Vacant(v) => {
                v.insert(Arc::new(Mutex::new(Room::new(
                    id,
                    settings,
                    self.clock.now(),
                ))));
                Ok(())
            }
        }
    }

    async fn room(&self, id: &RoomId) -> Result<Option<RoomSummary>, EngineError> {
        Ok(self.with(id, |r| Self::summary(r)))
    }

    async fn update_room(
        &self,
        id: &RoomId,
        p: RoomPatch,
    ) -> Result<(RoomSummary, AccessChange), EngineError> {
        self.with(id, |r| {
            p.apply(&mut r.settings);
            let change = if p.visibility.is_some() {
                r.reapply_roles()
            } else {
                AccessChange::default()
            };
            (Self::summary(r), change)
        })
        .ok_or_else(|| Self::not_found(id).into())
    }

    async fn delete_room(&self, id: &RoomId) -> Result<Option<Vec<SessionId>>, EngineError> {
        let Some((_, room)) = self.rooms.remove(id) else {
            return Ok(None);
        };
        let mut r = room.lock();
        r.removed = true;
        Ok(Some(r.member_ids().cloned().collect()))
    }

    async fn set_participant(
        &self,
        id: &RoomId,
        user: UserId,
        role: Option<Role>,
    ) -> Result<AccessChange, EngineError> {
        self.with(id, |r| r.set_participant(user, role))
            .ok_or_else(|| Self::not_found(id).into())
    }

    async fn list_rooms(&self, tenant: &TenantId) -> Result<Vec<RoomSummary>, EngineError> {
        let rooms: Vec<Arc<Mutex<Room>>> = self
            .rooms
            .iter()
            .filter(|e| &e.key().tenant == tenant)
            .map(|e| e.value().clone())
            .collect();
        let mut out: Vec<RoomSummary> = rooms.iter().map(|r| Self::summary(&r.lock())).collect();
        out.sort_by(|a, b| a.id.key.cmp(&b.id.key));
        Ok(out)
    }

    async fn all_rooms(&self) -> Result<Vec<RoomSummary>, EngineError> {
        let rooms: Vec<Arc<Mutex<Room>>> = self.rooms.iter().map(|e| e.value().clone()).collect();
        Ok(rooms.iter().map(|r| Self::summary(&r.lock())).collect())
    }

    async fn room_count(&self) -> usize {
        self.rooms.len()
    }
}

#[async_trait]
impl Presence for MemoryEngine {
    async fn join(
        &self,
        id: &RoomId,
        create: RoomSettings,
        member: Member,
        actor: Actor<'_>,
        mode: SubMode,
        list_limit: usize,
        reply_ref: Option<&Value>,
    ) -> Result<Joined, EngineError> {
        let (mut r, created) = self.lock_or_create(id, &create);
        let session = member.meta.id.clone();
        let joined = match r.join(member, actor) {
            Ok(j) => j,
            Err(e) => {
                // Don't keep an ad-hoc room that this refused SUB just created.
                if created {
                    self.drop_room(id, r);
                }
                return Err(e.into());
            }
        };
        let to = [session];
        if mode == SubMode::Count || r.over_limit(list_limit) {
            let key = r.id.key.as_str().to_string();
            self.outbox.deliver(
                &mut to.iter(),
                Outgoing::PresenceCount {
                    room: &key,
                    count: r.len(),
                    seq: r.seq(),
                    reply_ref,
                },
            );
        } else {
            let snapshot = r.snapshot_for(&to[0], &self.clock);
            self.outbox.deliver(
                &mut to.iter(),
                Outgoing::Presence {
                    snapshot: &snapshot,
                    reply_ref,
                },
            );
        }
        Ok(joined)
    }

    async fn leave(
        &self,
        id: &RoomId,
        session: &SessionId,
        reason: LeaveReason,
        now: Instant,
    ) -> Result<Option<Left>, EngineError> {
        Ok(self.with(id, |r| r.leave(session, reason, now)).flatten())
    }

    async fn set_state(
        &self,
        id: &RoomId,
        session: &SessionId,
        state: Value,
    ) -> Result<Option<NeedsFlush>, EngineError> {
        Ok(self
            .with(id, |r| r.set_state(session, state))
            .unwrap_or_else(|| Err(CoreError::not_subscribed(&id.key)))?)
    }

    async fn touch(
        &self,
        id: &RoomId,
        session: &SessionId,
        _status: Status,
    ) -> Result<NeedsFlush, EngineError> {
        Ok(self.with(id, |r| r.touch(session)).unwrap_or(false))
    }

    async fn flush(&self, id: &RoomId, list_limit: usize) -> Result<usize, EngineError> {
        Ok(self
            .with(id, |r| {
                let Some(f) = r.take_diff(&self.clock, list_limit) else {
                    return 0;
                };
                let mut n = 0;
                let variant_recipients = f.variants.iter().flat_map(|(_, to)| to);
                if f.snapshot_for_list {
                    let snap = r.snapshot(&self.clock);
                    let mut to = f.list_recipients.iter().chain(variant_recipients);
                    self.outbox.deliver(
                        &mut to,
                        Outgoing::Presence {
                            snapshot: &snap,
                            reply_ref: None,
                        },
                    );
                } else {
                    if !f.list_recipients.is_empty() {
                        self.outbox
                            .deliver(&mut f.list_recipients.iter(), Outgoing::Diff(&f.diff));
                    }
                    for (diff, to) in &f.variants {
                        self.outbox.deliver(&mut to.iter(), Outgoing::Diff(diff));
                    }
                }
                n += f.list_recipients.len()
                    + f.variants.iter().map(|(_, to)| to.len()).sum::<usize>();
                if f.count_changed && !f.count_recipients.is_empty() {
                    self.outbox.deliver(
                        &mut f.count_recipients.iter(),
                        Outgoing::PresenceCount {
                            room: &f.diff.room,
                            count: f.count,
                            seq: f.diff.seq,
                            reply_ref: None,
                        },
                    );
                    n += f.count_recipients.len();
                }
                n
            })
            .unwrap_or(0))
    }

    async fn snapshot(&self, id: &RoomId) -> Result<Option<PresenceSnapshot>, EngineError> {
        Ok(self.with(id, |r| r.snapshot(&self.clock)))
    }

    async fn members(&self, id: &RoomId) -> Result<Vec<SessionId>, EngineError> {
        Ok(self
            .with(id, |r| r.member_ids().cloned().collect())
            .unwrap_or_default())
    }

    async fn broadcast(&self, id: &RoomId, t: &Transition) -> Result<usize, EngineError> {
        Ok(self
            .with(id, |r| {
                self.outbox.deliver(&mut r.member_ids(), Outgoing::Event(t));
                r.len()
            })
            .unwrap_or(0))
    }

    async fn remove_if_idle(&self, id: &RoomId, now: Instant) -> Result<bool, EngineError> {
        Ok(self
            .rooms
            .remove_if(id, |_, room| {
                let mut r = room.lock();
                let idle = !r.settings.declared
                    && r.is_empty()
                    && !r.has_pending()
                    && r.empty_since
                        .is_some_and(|t| now.saturating_duration_since(t) >= r.settings.idle_ttl);
                // Marked under the lock: a join that already holds the Arc retries.
                r.removed |= idle;
                idle
            })
            .is_some())
    }
}

#[async_trait]
impl Locks for MemoryEngine {
    async fn lock(
        &self,
        id: &RoomId,
        field: &str,
        session: &SessionId,
        now: Instant,
        ttl: Duration,
    ) -> Result<LockOutcome, EngineError> {
        Ok(self
            .with(id, |r| r.lock(field, session, now, ttl))
            .unwrap_or_else(|| Err(CoreError::not_subscribed(&id.key)))?)
    }

    async fn unlock(
        &self,
        id: &RoomId,
        field: &str,
        session: &SessionId,
    ) -> Result<Option<FieldLock>, EngineError> {
        Ok(self
            .with(id, |r| r.unlock(field, session))
            .unwrap_or_else(|| Err(CoreError::not_subscribed(&id.key)))?)
    }

    async fn refresh_locks(
        &self,
        id: &RoomId,
        session: &SessionId,
        until: Instant,
        _latency_ms: Option<u32>,
    ) -> Result<Vec<String>, EngineError> {
        Ok(self
            .with(id, |r| r.refresh_locks(session, until))
            .unwrap_or_default())
    }

    async fn expire_lock(
        &self,
        id: &RoomId,
        field: &str,
        now: Instant,
    ) -> Result<Option<FieldLock>, EngineError> {
        Ok(self.with(id, |r| r.expire_lock(field, now)).flatten())
    }

    async fn force_unlock(
        &self,
        id: &RoomId,
        field: &str,
    ) -> Result<Option<FieldLock>, EngineError> {
        Ok(self.with(id, |r| r.force_unlock(field)).flatten())
    }

    async fn locks(
        &self,
        id: &RoomId,
    ) -> Result<Option<BTreeMap<String, LockOwnerView>>, EngineError> {
        Ok(self.with(id, |r| {
            r.locks()
                .iter()
                .map(|(f, l)| (f.clone(), LockOwnerView::new(l, &self.clock)))
                .collect()
        }))
    }

    async fn require_role(
        &self,
        id: &RoomId,
        session: &SessionId,
        role: Role,
        action: &str,
    ) -> Result<(), EngineError> {
        Ok(self
            .with(id, |r| r.require_role(session, role, action))
            .unwrap_or_else(|| Err(CoreError::not_subscribed(&id.key)))?)
    }

    async fn mutating(
        &self,
        id: &RoomId,
        create: RoomSettings,
        by: UserId,
        now: Instant,
        stale_ttl: Duration,
        at: Option<u64>,
    ) -> Result<Option<EntityView>, EngineError> {
        let (mut r, _) = self.lock_or_create(id, &create);
        let applied = r.mutating(by, now, stale_ttl, at).is_some();
        Ok(applied.then(|| r.entity_view()))
    }

    async fn mutated(
        &self,
        id: &RoomId,
        create: RoomSettings,
        at: Option<u64>,
    ) -> Result<Option<EntityView>, EngineError> {
        let (mut r, _) = self.lock_or_create(id, &create);
        let applied = r.mutated(at).is_some();
        Ok(applied.then(|| r.entity_view()))
    }

    async fn expire_stale(
        &self,
        id: &RoomId,
        now: Instant,
    ) -> Result<Option<EntityView>, EngineError> {
        Ok(self
            .with(id, |r| {
                r.expire_stale(now).is_some().then(|| r.entity_view())
            })
            .flatten())
    }
}

#[async_trait]
impl Users for MemoryEngine {
    async fn user_attach(
        &self,
        user: &UserRef,
        session: &SessionId,
        status: Status,
        device: &str,
    ) -> Result<UserChange, EngineError> {
        Ok(self.user_change(user, |e| {
            e.sessions
                .insert(session.clone(), (status, device.to_string()));
        }))
    }

    fn status_cell(&self, user: &UserRef) -> Arc<AtomicU8> {
        self.users
            .get(user)
            .map(|e| e.cell.clone())
            .unwrap_or_default()
    }

    async fn user_detach(
        &self,
        user: &UserRef,
        session: &SessionId,
        now: SystemTime,
    ) -> Result<UserChange, EngineError> {
        Ok(self.user_change(user, |e| {
            if e.sessions.remove(session).is_some() {
                e.last_seen = Some(now);
            }
        }))
    }

    async fn user_set_status(
        &self,
        user: &UserRef,
        session: &SessionId,
        status: Status,
    ) -> Result<UserChange, EngineError> {
        Ok(self.user_change(user, |e| {
            if let Some(s) = e.sessions.get_mut(session) {
                s.0 = status;
            }
        }))
    }

    async fn user_seen(&self, user: &UserRef, at: SystemTime) -> Result<(), EngineError> {
        self.user_change(user, |e| {
            if e.last_seen.is_none_or(|t| t < at) {
                e.last_seen = Some(at);
            }
        });
        Ok(())
    }

    async fn user(&self, user: &UserRef) -> Result<UserRecord, EngineError> {
        Ok(match self.users.get(user) {
            Some(e) => UserRecord {
                status: e.merged(),
                last_seen: e.last_seen,
                sessions: e.sessions.keys().cloned().collect(),
                devices: {
                    let mut d: Vec<String> = e.sessions.values().map(|(_, d)| d.clone()).collect();
                    d.sort();
                    d.dedup();
                    d
                },
            },
            None => UserRecord {
                status: Status::Offline,
                last_seen: None,
                sessions: vec![],
                devices: vec![],
            },
        })
    }
}

#[async_trait]
impl Cluster for MemoryEngine {}

#[async_trait]
impl EventLog for MemoryEngine {
    async fn append_events(
        &self,
        tenant: &TenantId,
        events: &[String],
        limit: usize,
    ) -> Result<u64, EngineError> {
        let log = self.log(tenant);
        let mut log = log.lock();
        let first = log.last + 1;
        for e in events {
            log.last += 1;
            let n = log.last;
            log.events.push_back((n, e.clone()));
        }
        while log.events.len() > limit.max(1) {
            log.events.pop_front();
        }
        Ok(first)
    }

    async fn read_events(
        &self,
        tenant: &TenantId,
        after: u64,
        max: usize,
    ) -> Result<Vec<(u64, String)>, EngineError> {
        let Some(log) = self.events.get(tenant).map(|l| l.clone()) else {
            return Ok(vec![]);
        };
        let log = log.lock();
        Ok(log
            .events
            .iter()
            .filter(|(n, _)| *n > after)
            .take(max)
            .cloned()
            .collect())
    }

    async fn event_head(&self, tenant: &TenantId) -> Result<u64, EngineError> {
        Ok(self.events.get(tenant).map(|l| l.lock().last).unwrap_or(0))
    }

    async fn event_tenants(&self) -> Result<Vec<TenantId>, EngineError> {
        Ok(self.events.iter().map(|e| e.key().clone()).collect())
    }

    async fn hold_event_lease(
        &self,
        tenant: &TenantId,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, EngineError> {
        let now = self.clock.now();
        let log = self.log(tenant);
        let mut log = log.lock();
        match &log.lease {
            Some((h, until)) if h != holder && *until > now => Ok(false),
            _ => {
                log.lease = Some((holder.to_string(), now + ttl));
                Ok(true)
            }
        }
    }

    async fn release_event_lease(
        &self,
        tenant: &TenantId,
        holder: &str,
    ) -> Result<(), EngineError> {
        if let Some(log) = self.events.get(tenant).map(|l| l.clone()) {
            let mut log = log.lock();
            if log.lease.as_ref().is_some_and(|(h, _)| h == holder) {
                log.lease = None;
            }
        }
        Ok(())
    }

    async fn event_cursor(&self, tenant: &TenantId, consumer: &str) -> Result<u64, EngineError> {
        Ok(self
            .events
            .get(tenant)
            .and_then(|l| l.lock().cursors.get(consumer).copied())
            .unwrap_or(0))
    }

    async fn set_event_cursor(
        &self,
        tenant: &TenantId,
        consumer: &str,
        seq: u64,
    ) -> Result<(), EngineError> {
        let log = self.log(tenant);
        let mut log = log.lock();
        let c = log.cursors.entry(consumer.to_string()).or_default();
        *c = (*c).max(seq);
        Ok(())
    }
}
