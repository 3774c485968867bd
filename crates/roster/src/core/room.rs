//! One room's ephemeral state and every transition on it: join (capacity, status,
//! roles), leave, member state, field locks, entity lifecycle, and the coalescing of
//! changes into numbered diffs. Pure: takes `now`, returns what happened; never
//! sleeps, sends or stores. Engines hold rooms and call these under their own lock
//! (memory) or mirror them in scripts (Redis), so the rules live here once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;

use super::diff::{plan, Op, Window};
use super::error::CoreError;
use super::room_type::{RoomTiming, RoomType, Visibility};
use super::session::SessionMeta;
use super::types::{LeaveReason, Role, Status};
use crate::clock::{iso, Clock};
use crate::ids::{RoomId, SessionId, UserId};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, Default, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum RoomStatus {
    #[default]
    Active,
    Maintenance,
    Closed,
}

/// What a room is (as opposed to who is in it): set at creation, changed by REST.
#[derive(Debug, Clone)]
pub struct RoomSettings {
    pub room_type: String,
    pub capacity: u32,
    pub idle_ttl: Duration,
    pub visibility: Visibility,
    pub status: RoomStatus,
    pub participants: BTreeMap<UserId, Role>,
    pub tags: Vec<String>,
    pub attributes: serde_json::Map<String, Value>,
    /// Declared through REST: kept when empty (until deleted), not just ad hoc.
    pub declared: bool,
    pub created_at: SystemTime,
    /// Its room type's timing overrides, taken when the room was made (or its
    /// type changed).
    pub timing: RoomTiming,
}

impl RoomSettings {
    pub fn from_type(
        t: &RoomType,
        visibility: Option<Visibility>,
        declared: bool,
        now: SystemTime,
    ) -> Self {
        Self {
            room_type: t.code.0.clone(),
            capacity: t.capacity,
            idle_ttl: t.idle_ttl,
            visibility: visibility.unwrap_or(t.visibility),
            status: RoomStatus::Active,
            participants: BTreeMap::new(),
            tags: vec![],
            attributes: Default::default(),
            declared,
            created_at: now,
            timing: t.timing,
        }
    }
}

/// Who asks to act in a room, as far as roles go.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    pub user: &'a UserId,
    /// Role the token grants in open rooms.
    pub open_role: Role,
    pub is_admin: bool,
}

#[derive(Debug)]
pub struct Member {
    pub meta: Arc<SessionMeta>,
    pub joined_at: SystemTime,
    pub state: Value,
    pub count_mode: bool,
    /// The role in effect here; set by [`Room::join`] and participant changes.
    role: Role,
    /// What the token alone grants (open rooms), and whether it is an admin's:
    /// where the role falls back to when a participant entry is removed.
    token_role: Role,
    admin: bool,
}

impl Member {
    pub fn new(
        meta: Arc<SessionMeta>,
        joined_at: SystemTime,
        state: Value,
        count_mode: bool,
    ) -> Self {
        Self {
            meta,
            joined_at,
            state,
            count_mode,
            role: Role::Viewer,
            token_role: Role::Viewer,
            admin: false,
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }
}

/// What a participant or visibility change did to members already inside.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AccessChange {
    /// Sessions that may no longer be in the room: the caller kicks them.
    pub evicted: Vec<SessionId>,
    /// Locks released because their holder's role fell below `operator`.
    pub released_locks: Vec<ReleasedLock>,
}

/// A lock let go by a change of access, with who held it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleasedLock {
    pub field: String,
    pub session: SessionId,
    pub user: UserId,
}

#[derive(Debug, Clone)]
pub struct FieldLock {
    pub session: SessionId,
    pub user: UserId,
    pub expires_at: Instant,
}

#[derive(Debug, Clone, Default)]
pub struct EntityState {
    pub stale: bool,
    pub busy_by: Option<UserId>,
    pub version: u64,
    pub stale_until: Option<Instant>,
    /// The time (unix ms) of the last lifecycle event applied with one, and
    /// whether it was a `MUTATED`: an older event is superseded.
    pub last_at: u64,
    pub last_mutated: bool,
}

impl EntityState {
    /// Whether a lifecycle event of time `at` came after the last one applied
    /// (and records it). `MUTATING` and `MUTATED` arrive on two topics, so a
    /// record's `MUTATED` can be read before its `MUTATING`: the older one is
    /// then ignored. At the same millisecond a `MUTATED` wins.
    pub fn newer(&mut self, at: Option<u64>, mutated: bool) -> bool {
        let Some(at) = at else { return true };
        let older = at < self.last_at || (at == self.last_at && self.last_mutated && !mutated);
        if !older {
            self.last_at = at;
            self.last_mutated = mutated;
        }
        !older
    }
}

#[derive(Debug)]
pub struct Room {
    pub id: RoomId,
    pub settings: RoomSettings,
    members: BTreeMap<SessionId, Member>,
    locks: BTreeMap<String, FieldLock>,
    entity: EntityState,
    seq: u64,
    pending: Window,
    /// Whether the last flush served count mode to everyone (above the list limit).
    over_limit: bool,
    last_count: usize,
    pub empty_since: Option<Instant>,
    /// Set when the engine dropped this room from its map: a transition that
    /// still holds it must look the room up again.
    pub removed: bool,
}

/// `true` when this change made the pending diff non-empty: the caller schedules a
/// flush after `diff_window`.
pub type NeedsFlush = bool;

#[derive(Debug)]
pub struct Joined {
    pub already_member: bool,
    pub needs_flush: NeedsFlush,
    /// The room was empty before this join (`room_occupied`).
    pub occupied: bool,
    /// The room's own session timeout, if its type sets one.
    pub session_timeout: Option<Duration>,
}

#[derive(Debug)]
pub struct Left {
    pub released_locks: Vec<String>,
    pub needs_flush: NeedsFlush,
    pub now_empty: bool,
}

#[derive(Debug, Clone)]
pub enum LockOutcome {
    Acquired(FieldLock),
    /// Acquired over another session's expired lock (its owner's node had
    /// not expired it yet, or is gone): that lock ended first.
    TakenOver(FieldLock, FieldLock),
    /// Held by someone else.
    Held(FieldLock),
}

impl Room {
    /// A new room is empty since `now` (idle rooms expire from then on).
    pub fn new(id: RoomId, settings: RoomSettings, now: Instant) -> Self {
        Self {
            id,
            settings,
            members: BTreeMap::new(),
            locks: BTreeMap::new(),
            entity: EntityState::default(),
            seq: 0,
            pending: Window::default(),
            over_limit: false,
            last_count: 0,
            empty_since: Some(now),
            removed: false,
        }
    }

    /// Sets (or removes) a participant role and applies it to the user's members
    /// here: a removed participant falls back to what the token grants (or is
    /// evicted from a private room), and a member whose role falls below
    /// `operator` loses the locks it holds.
    pub fn set_participant(&mut self, user: UserId, role: Option<Role>) -> AccessChange {
        match role {
            Some(r) => {
                self.settings.participants.insert(user.clone(), r);
            }
            None => {
                self.settings.participants.remove(&user);
            }
        }
        self.reapply_roles()
    }

    /// Recomputes every member's role from the settings (after a participant or
    /// visibility change).
    pub fn reapply_roles(&mut self) -> AccessChange {
        let mut change = AccessChange::default();
        let private = self.settings.visibility == Visibility::Private;
        for (sid, m) in self.members.iter_mut() {
            let role = if m.admin {
                Some(Role::Owner)
            } else {
                match (self.settings.participants.get(&m.meta.user), private) {
                    (Some(r), _) => Some(*r),
                    (None, false) => Some(m.token_role),
                    (None, true) => None,
                }
            };
            match role {
                Some(r) => m.role = r,
                None => change.evicted.push(sid.clone()),
            }
        }
        let members = &self.members;
        let lost: Vec<ReleasedLock> = self
            .locks
            .iter()
            .filter(|(_, l)| {
                members
                    .get(&l.session)
                    .is_none_or(|m| m.role < Role::Operator)
            })
            .map(|(f, l)| ReleasedLock {
                field: f.clone(),
                session: l.session.clone(),
                user: l.user.clone(),
            })
            .collect();
        for l in &lost {
            self.locks.remove(&l.field);
        }
        change.released_locks = lost;
        change
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
    pub fn seq(&self) -> u64 {
        self.seq
    }
    pub fn entity(&self) -> &EntityState {
        &self.entity
    }
    pub fn is_member(&self, s: &SessionId) -> bool {
        self.members.contains_key(s)
    }
    pub fn member_ids(&self) -> impl Iterator<Item = &SessionId> {
        self.members.keys()
    }
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }
    pub fn locks(&self) -> &BTreeMap<String, FieldLock> {
        &self.locks
    }

    /// The role an actor has here, or `forbidden` for a private room it is no
    /// participant of. Admins are owners everywhere in their tenant.
    pub fn role_of(&self, actor: Actor<'_>) -> Result<Role, CoreError> {
        if actor.is_admin {
            return Ok(Role::Owner);
        }
        match self.settings.visibility {
            Visibility::Open => Ok(self
                .settings
                .participants
                .get(actor.user)
                .copied()
                .unwrap_or(actor.open_role)),
            Visibility::Private => self
                .settings
                .participants
                .get(actor.user)
                .copied()
                .ok_or_else(|| CoreError::not_participant(&self.id.key)),
        }
    }

    pub fn require_role(
        &self,
        session: &SessionId,
        needed: Role,
        action: &str,
    ) -> Result<(), CoreError> {
        let m = self.member(session)?;
        if m.role >= needed {
            Ok(())
        } else {
            Err(CoreError::role_needed(&self.id.key, action, needed, m.role))
        }
    }

    fn member(&self, session: &SessionId) -> Result<&Member, CoreError> {
        self.members
            .get(session)
            .ok_or_else(|| CoreError::not_subscribed(&self.id.key))
    }

    pub fn join(&mut self, member: Member, actor: Actor<'_>) -> Result<Joined, CoreError> {
        if self.members.contains_key(&member.meta.id) {
            return Ok(Joined {
                already_member: true,
                needs_flush: false,
                occupied: false,
                session_timeout: self.settings.timing.session_timeout,
            });
        }
        match self.settings.status {
            RoomStatus::Active => {}
            s => {
                return Err(CoreError::room_closed(
                    &self.id.key,
                    s == RoomStatus::Closed,
                ))
            }
        }
        let role = self.role_of(actor)?;
        if role < Role::Commenter && member.state.as_object().is_some_and(|o| !o.is_empty()) {
            return Err(CoreError::role_needed(
                &self.id.key,
                "publishing member state",
                Role::Commenter,
                role,
            ));
        }
        if self.members.len() >= self.settings.capacity as usize {
            return Err(CoreError::room_full(&self.id.key, self.settings.capacity));
        }
        let id = member.meta.id.clone();
        let member = Member {
            role,
            token_role: actor.open_role,
            admin: actor.is_admin,
            ..member
        };
        self.members.insert(id.clone(), member);
        self.empty_since = None;
        Ok(Joined {
            already_member: false,
            needs_flush: self.pending.push(Op::Join(id)),
            occupied: self.members.len() == 1,
            session_timeout: self.settings.timing.session_timeout,
        })
    }

    pub fn leave(
        &mut self,
        session: &SessionId,
        reason: LeaveReason,
        now: Instant,
    ) -> Option<Left> {
        let m = self.members.remove(session)?;
        let released_locks: Vec<String> = self
            .locks
            .iter()
            .filter(|(_, l)| &l.session == session)
            .map(|(f, _)| f.clone())
            .collect();
        for f in &released_locks {
            self.locks.remove(f);
        }
        let needs_flush = self.pending.push(Op::Leave(LeaveView {
            user_id: m.meta.user.clone(),
            session_id: session.clone(),
            reason,
        }));
        if self.members.is_empty() {
            self.empty_since = Some(now);
        }
        Some(Left {
            released_locks,
            needs_flush,
            now_empty: self.members.is_empty(),
        })
    }

    /// `None`: the member's state already was `state` (nothing changed, so
    /// nothing to forbid either).
    pub fn set_state(
        &mut self,
        session: &SessionId,
        state: Value,
    ) -> Result<Option<NeedsFlush>, CoreError> {
        if self.member(session)?.state == state {
            return Ok(None);
        }
        self.require_role(session, Role::Commenter, "publishing member state")?;
        // Just checked membership.
        let m = self.members.get_mut(session).expect("member");
        m.state = state;
        Ok(Some(self.pending.push(Op::Update(session.clone()))))
    }

    /// Something shown in the member's entry changed (status): an update.
    pub fn touch(&mut self, session: &SessionId) -> NeedsFlush {
        if self.members.contains_key(session) {
            self.pending.push(Op::Update(session.clone()))
        } else {
            false
        }
    }

    /// Atomic acquisition: the first session to ask holds the field until it
    /// unlocks, leaves, or the TTL passes without a refresh. Re-locking one's own
    /// field refreshes it.
    pub fn lock(
        &mut self,
        field: &str,
        session: &SessionId,
        now: Instant,
        ttl: Duration,
    ) -> Result<LockOutcome, CoreError> {
        self.require_role(session, Role::Operator, "locking a field")?;
        let user = self.members[session].meta.user.clone();
        let expired = match self.locks.get(field) {
            Some(l) if &l.session != session && l.expires_at > now => {
                return Ok(LockOutcome::Held(l.clone()));
            }
            Some(l) if &l.session != session => Some(l.clone()),
            _ => None,
        };
        let lock = FieldLock {
            session: session.clone(),
            user,
            expires_at: now + ttl,
        };
        self.locks.insert(field.to_string(), lock.clone());
        Ok(match expired {
            Some(old) => LockOutcome::TakenOver(lock, old),
            None => LockOutcome::Acquired(lock),
        })
    }

    /// `Ok(Some)` released, `Ok(None)` nothing was locked, `not_lock_owner` when
    /// another session holds it.
    pub fn unlock(
        &mut self,
        field: &str,
        session: &SessionId,
    ) -> Result<Option<FieldLock>, CoreError> {
        self.member(session)?;
        match self.locks.get(field) {
            None => Ok(None),
            Some(l) if &l.session != session => Err(CoreError::not_lock_owner(&self.id.key, field)),
            Some(_) => Ok(self.locks.remove(field)),
        }
    }

    pub fn refresh_locks(&mut self, session: &SessionId, until: Instant) -> Vec<String> {
        let mut refreshed = vec![];
        for (f, l) in self.locks.iter_mut() {
            if &l.session == session {
                l.expires_at = until;
                refreshed.push(f.clone());
            }
        }
        refreshed
    }

    /// Removes the lock if its TTL has passed (it may have been refreshed since the
    /// deadline was scheduled).
    pub fn expire_lock(&mut self, field: &str, now: Instant) -> Option<FieldLock> {
        match self.locks.get(field) {
            Some(l) if l.expires_at <= now => self.locks.remove(field),
            _ => None,
        }
    }

    pub fn force_unlock(&mut self, field: &str) -> Option<FieldLock> {
        self.locks.remove(field)
    }

    /// `None`: superseded (older than the last lifecycle event applied).
    pub fn mutating(
        &mut self,
        by: UserId,
        now: Instant,
        stale_ttl: Duration,
        at: Option<u64>,
    ) -> Option<&EntityState> {
        if !self.entity.newer(at, false) {
            return None;
        }
        self.entity.stale = true;
        self.entity.busy_by = Some(by);
        self.entity.stale_until = Some(now + stale_ttl);
        Some(&self.entity)
    }

    /// `None`: superseded (older than the last lifecycle event applied).
    pub fn mutated(&mut self, at: Option<u64>) -> Option<&EntityState> {
        if !self.entity.newer(at, true) {
            return None;
        }
        self.entity.stale = false;
        self.entity.busy_by = None;
        self.entity.stale_until = None;
        self.entity.version += 1;
        Some(&self.entity)
    }

    /// Clears `stale` if `MUTATED` never came within `stale_ttl`.
    pub fn expire_stale(&mut self, now: Instant) -> Option<&EntityState> {
        match self.entity.stale_until {
            Some(t) if t <= now => {
                self.entity.stale = false;
                self.entity.busy_by = None;
                self.entity.stale_until = None;
                Some(&self.entity)
            }
            _ => None,
        }
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The snapshot served to a member (a joiner, or a re-`SUB`): its next diff
    /// starts where this snapshot ends.
    pub fn snapshot_for(&mut self, session: &SessionId, clock: &Clock) -> PresenceSnapshot {
        self.pending.push(Op::Cut(session.clone()));
        self.snapshot(clock)
    }

    fn member_view(&self, m: &Member, clock: &Clock) -> MemberView {
        let _ = clock;
        MemberView {
            user_id: m.meta.user.clone(),
            name: m.meta.name.clone(),
            info: m.meta.info.clone(),
            status: m.meta.user_status(),
            session: session_view(m),
        }
    }

    /// Turns what is pending into one numbered diff per snapshot point (bumping
    /// `seq` once), or `None` when nothing is pending. Also says who gets which
    /// list and who gets only a count. A diff may be empty for some (a join and
    /// leave they never saw); it still goes out so that `seq` has no gap — the
    /// Redis engine numbers the window the same way without planning it.
    pub fn take_diff(&mut self, clock: &Clock, list_limit: usize) -> Option<Flush> {
        if self.pending.is_empty() {
            return None;
        }
        let plan = plan(&self.pending.take());
        self.seq += 1;
        let count = self.members.len();
        let over = count > list_limit;
        let back_under = self.over_limit && !over;
        self.over_limit = over;
        let count_changed = count != self.last_count;
        self.last_count = count;
        let key = self.id.key.as_str();
        let view = |s: &SessionId| self.members.get(s).map(|m| self.member_view(m, clock));
        let rendered = plan.render(key, self.seq, &view);
        let mut variants: Vec<(PresenceDiff, Vec<SessionId>)> =
            rendered.variants.into_iter().map(|d| (d, vec![])).collect();
        let (mut list, mut counted) = (vec![], vec![]);
        for (id, m) in &self.members {
            if m.count_mode || over {
                counted.push(id.clone());
            } else if let Some(&i) = rendered.cut_of.get(id) {
                variants[i].1.push(id.clone());
            } else {
                list.push(id.clone());
            }
        }
        variants.retain(|(_, to)| !to.is_empty());
        Some(Flush {
            diff: rendered.base,
            variants,
            count,
            list_recipients: list,
            count_recipients: counted,
            count_changed,
            snapshot_for_list: back_under,
        })
    }

    pub fn snapshot(&self, clock: &Clock) -> PresenceSnapshot {
        let mut users: BTreeMap<&UserId, UserEntry> = BTreeMap::new();
        for m in self.members.values() {
            let e = users.entry(&m.meta.user).or_insert_with(|| UserEntry {
                user_id: m.meta.user.clone(),
                name: m.meta.name.clone(),
                info: m.meta.info.clone(),
                status: m.meta.user_status(),
                sessions: vec![],
            });
            e.sessions.push(session_view(m));
        }
        PresenceSnapshot {
            room: self.id.key.as_str().to_string(),
            seq: self.seq,
            count: self.members.len(),
            users: users.into_values().collect(),
            stale: self.entity.stale,
            busy_by: self.entity.busy_by.clone(),
            version: self.entity.version,
            locks: self
                .locks
                .iter()
                .map(|(f, l)| (f.clone(), LockOwnerView::new(l, clock)))
                .collect(),
            heartbeat_interval_ms: self
                .settings
                .timing
                .heartbeat_interval
                .map(|d| d.as_millis() as u64),
        }
    }

    pub fn entity_view(&self) -> EntityView {
        EntityView {
            room: self.id.key.as_str().to_string(),
            stale: self.entity.stale,
            busy_by: self.entity.busy_by.clone(),
            version: self.entity.version,
        }
    }

    pub fn over_limit(&self, list_limit: usize) -> bool {
        self.members.len() > list_limit
    }
}

fn session_view(m: &Member) -> SessionView {
    SessionView {
        session_id: m.meta.id.clone(),
        device: m.meta.device.device.clone(),
        os: m.meta.device.os.clone(),
        app_version: m.meta.device.app_version.clone(),
        latency_ms: m.meta.latency_ms(),
        joined_at: iso(m.joined_at),
        state: m.state.clone(),
    }
}

/// The result of a flush: the diffs, each encoded once by the caller, and their
/// audiences.
#[derive(Debug)]
pub struct Flush {
    /// The diff of members whose snapshot predates the window.
    pub diff: PresenceDiff,
    /// Same `seq`, for members served a snapshot inside the window: each starts
    /// where that snapshot ended (see `core::diff`).
    pub variants: Vec<(PresenceDiff, Vec<SessionId>)>,
    pub count: usize,
    pub list_recipients: Vec<SessionId>,
    pub count_recipients: Vec<SessionId>,
    pub count_changed: bool,
    /// The room fell back under `presence_list_limit`: list members need a full
    /// snapshot instead of this diff.
    pub snapshot_for_list: bool,
}

// ---- wire views (SPEC §3 shapes, camelCase) ----

#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionView {
    pub session_id: SessionId,
    pub device: String,
    pub os: Option<String>,
    pub app_version: Option<String>,
    pub latency_ms: Option<u32>,
    pub joined_at: String,
    pub state: Value,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberView {
    pub user_id: UserId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<Value>,
    pub status: Status,
    pub session: SessionView,
}

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaveView {
    pub user_id: UserId,
    pub session_id: SessionId,
    pub reason: LeaveReason,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PresenceDiff {
    pub room: String,
    pub seq: u64,
    pub joins: Vec<MemberView>,
    pub leaves: Vec<LeaveView>,
    pub updates: Vec<MemberView>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserEntry {
    pub user_id: UserId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<Value>,
    pub status: Status,
    pub sessions: Vec<SessionView>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LockOwnerView {
    pub user_id: UserId,
    pub session_id: SessionId,
    pub expires_at: String,
}

impl LockOwnerView {
    pub fn new(l: &FieldLock, clock: &Clock) -> Self {
        Self {
            user_id: l.user.clone(),
            session_id: l.session.clone(),
            expires_at: iso(clock.wall(l.expires_at)),
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PresenceSnapshot {
    pub room: String,
    pub seq: u64,
    pub count: usize,
    pub users: Vec<UserEntry>,
    pub stale: bool,
    pub busy_by: Option<UserId>,
    pub version: u64,
    pub locks: BTreeMap<String, LockOwnerView>,
    /// The room's own heartbeat interval, if its type sets one (absent: the
    /// `heartbeatIntervalMs` of `WELCOME`). Clients heartbeat at the smallest
    /// of their rooms'.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval_ms: Option<u64>,
}

impl PresenceSnapshot {
    /// A room nobody is in and nothing was declared or recorded for: a valid
    /// key is simply empty.
    pub fn empty(room: &str) -> Self {
        Self {
            room: room.to_string(),
            seq: 0,
            count: 0,
            users: vec![],
            stale: false,
            busy_by: None,
            version: 0,
            locks: BTreeMap::new(),
            heartbeat_interval_ms: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EntityView {
    pub room: String,
    pub stale: bool,
    pub busy_by: Option<UserId>,
    pub version: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::error::ErrorCode;
    use crate::core::room_type::seeded;
    use crate::core::types::DeviceInfo;
    use crate::ids::{RoomKey, TenantId};
    use std::sync::atomic::AtomicU8;

    fn room(code: &str) -> Room {
        let t = seeded().into_iter().find(|t| t.code.0 == code).unwrap();
        Room::new(
            RoomId {
                tenant: TenantId::default_tenant(),
                key: RoomKey::parse("Order:1").unwrap(),
            },
            RoomSettings::from_type(&t, None, false, SystemTime::now()),
            Instant::now(),
        )
    }

    fn member(user: &str) -> Member {
        Member::new(
            Arc::new(SessionMeta::new(
                SessionId::new_random(),
                TenantId::default_tenant(),
                UserId::parse(user).unwrap(),
                None,
                None,
                DeviceInfo {
                    device: "web".into(),
                    ..Default::default()
                },
                None,
                None,
                None,
                SystemTime::now(),
                Arc::new(AtomicU8::new(Status::Online.as_u8())),
            )),
            SystemTime::now(),
            Value::Null,
            false,
        )
    }

    fn actor(u: &UserId) -> Actor<'_> {
        Actor {
            user: u,
            open_role: Role::Operator,
            is_admin: false,
        }
    }

    #[test]
    fn a_joiner_diff_starts_where_its_snapshot_ended() {
        let clock = Clock::new();
        let mut r = room("GENERIC");
        let a = member("alice");
        let (aid, au) = (a.meta.id.clone(), a.meta.user.clone());
        assert!(r.join(a, actor(&au)).unwrap().needs_flush);
        r.snapshot_for(&aid, &clock);
        assert_eq!(
            r.set_state(&aid, serde_json::json!({"x":1})).unwrap(),
            Some(false)
        );
        // bob joins inside the same window and is served a snapshot showing alice.
        let b = member("bob");
        let (bid, bu) = (b.meta.id.clone(), b.meta.user.clone());
        assert!(!r.join(b, actor(&bu)).unwrap().needs_flush);
        let snap = r.snapshot_for(&bid, &clock);
        assert_eq!(snap.count, 2, "a snapshot shows the pending joins");
        let f = r.take_diff(&clock, 10).unwrap();
        assert_eq!(f.diff.seq, 1);
        assert!(f.list_recipients.is_empty(), "both were served snapshots");
        let of = |s: &SessionId| {
            f.variants
                .iter()
                .find(|(_, to)| to.contains(s))
                .map(|(d, _)| d.clone())
                .unwrap()
        };
        let own = of(&aid);
        assert_eq!(own.seq, 1, "same seq for every copy");
        assert!(own.leaves.is_empty());
        assert_eq!(own.updates.len(), 1, "its change after its snapshot");
        assert_eq!(own.joins.len(), 1, "bob joined after alice's snapshot");
        let bobs = of(&bid);
        assert!(
            bobs.joins.is_empty() && bobs.updates.is_empty(),
            "bob's snapshot already showed alice with her state: {bobs:?}"
        );
    }

    #[test]
    fn a_join_and_leave_nobody_saw_is_an_empty_diff() {
        let clock = Clock::new();
        let mut r = room("GENERIC");
        let a = member("alice");
        let (aid, au) = (a.meta.id.clone(), a.meta.user.clone());
        r.join(a, actor(&au)).unwrap();
        r.take_diff(&clock, 10).unwrap();
        let b = member("bob");
        let (bid, bu) = (b.meta.id.clone(), b.meta.user.clone());
        r.join(b, actor(&bu)).unwrap();
        r.leave(&bid, LeaveReason::Left, Instant::now()).unwrap();
        let f = r.take_diff(&clock, 10).unwrap();
        assert_eq!(f.diff.seq, 2, "seq moves on every engine");
        assert!(
            f.diff.joins.is_empty() && f.diff.leaves.is_empty(),
            "alice never saw bob: {:?}",
            f.diff
        );
        // Seen in a snapshot: the leave is told to whoever saw it.
        let c = member("carol");
        let (cid, cu) = (c.meta.id.clone(), c.meta.user.clone());
        r.join(c, actor(&cu)).unwrap();
        let d = member("dave");
        let (did, du) = (d.meta.id.clone(), d.meta.user.clone());
        r.join(d, actor(&du)).unwrap();
        r.snapshot_for(&did, &clock);
        r.leave(&cid, LeaveReason::Left, Instant::now()).unwrap();
        let f = r.take_diff(&clock, 10).unwrap();
        assert_eq!(f.list_recipients, vec![aid.clone()]);
        assert_eq!(
            (f.diff.joins.len(), f.diff.leaves.len()),
            (1, 0),
            "alice: dave joined"
        );
        let (dd, to) = &f.variants[0];
        assert_eq!(to, &vec![did.clone()]);
        assert_eq!(
            (dd.joins.len(), dd.leaves.len()),
            (0, 1),
            "dave: carol left"
        );
    }

    #[test]
    fn leaving_and_rejoining_in_one_window_is_an_update() {
        let clock = Clock::new();
        let mut r = room("GENERIC");
        let a = member("alice");
        let (aid, au) = (a.meta.id.clone(), a.meta.user.clone());
        r.join(a, actor(&au)).unwrap();
        r.take_diff(&clock, 10).unwrap();
        r.leave(&aid, LeaveReason::Left, Instant::now()).unwrap();
        let again = Member::new(r_meta(&aid, &au), SystemTime::now(), Value::Null, false);
        r.join(again, actor(&au)).unwrap();
        r.snapshot_for(&aid, &clock);
        let o = member("other");
        let (oid, ou) = (o.meta.id.clone(), o.meta.user.clone());
        r.join(o, actor(&ou)).unwrap();
        r.snapshot_for(&oid, &clock);
        r.take_diff(&clock, 10).unwrap();
        r.leave(&aid, LeaveReason::Left, Instant::now()).unwrap();
        let again = Member::new(r_meta(&aid, &au), SystemTime::now(), Value::Null, false);
        r.join(again, actor(&au)).unwrap();
        let f = r.take_diff(&clock, 10).unwrap();
        assert_eq!(
            (
                f.diff.leaves.len(),
                f.diff.joins.len(),
                f.diff.updates.len()
            ),
            (0, 0, 1),
            "others see one update, never a join of a session they hold"
        );
    }

    fn r_meta(id: &SessionId, user: &UserId) -> Arc<SessionMeta> {
        Arc::new(SessionMeta::bare(
            id.clone(),
            TenantId::default_tenant(),
            user.clone(),
            Arc::new(AtomicU8::new(Status::Online.as_u8())),
        ))
    }

    #[test]
    fn participant_and_visibility_changes_apply_to_members_inside() {
        let mut r = room("GENERIC");
        let a = member("alice");
        let (aid, au) = (a.meta.id.clone(), a.meta.user.clone());
        r.join(
            a,
            Actor {
                user: &au,
                open_role: Role::Commenter,
                is_admin: false,
            },
        )
        .unwrap();
        let boss = member("boss");
        let (bid, bu) = (boss.meta.id.clone(), boss.meta.user.clone());
        r.join(
            boss,
            Actor {
                user: &bu,
                open_role: Role::Operator,
                is_admin: true,
            },
        )
        .unwrap();
        r.set_participant(au.clone(), Some(Role::Operator));
        let now = Instant::now();
        r.lock("f", &aid, now, Duration::from_secs(9)).unwrap();
        // Removed from an open room: back to what the token grants (commenter),
        // which can't hold locks.
        let change = r.set_participant(au.clone(), None);
        assert_eq!(
            change.released_locks,
            vec![ReleasedLock {
                field: "f".into(),
                session: aid.clone(),
                user: au.clone()
            }]
        );
        assert!(change.evicted.is_empty());
        assert_eq!(
            r.lock("f", &aid, now, Duration::from_secs(9))
                .unwrap_err()
                .code,
            ErrorCode::Forbidden
        );
        // Made private: non-participants go, admins stay.
        r.settings.visibility = Visibility::Private;
        let change = r.reapply_roles();
        assert_eq!(change.evicted, vec![aid.clone()]);
        let _ = bid;
    }

    #[test]
    fn capacity_and_closed_rooms() {
        let mut r = room("GAMING");
        for _ in 0..16 {
            let m = member("p");
            let u = m.meta.user.clone();
            r.join(m, actor(&u)).unwrap();
        }
        let m = member("late");
        let u = m.meta.user.clone();
        assert_eq!(r.join(m, actor(&u)).unwrap_err().code, ErrorCode::RoomFull);
        let mut r = room("GENERIC");
        r.settings.status = RoomStatus::Maintenance;
        let m = member("x");
        let u = m.meta.user.clone();
        assert_eq!(
            r.join(m, actor(&u)).unwrap_err().code,
            ErrorCode::RoomClosed
        );
    }

    #[test]
    fn private_rooms_need_a_participant_role() {
        let mut r = room("GENERIC");
        r.settings.visibility = Visibility::Private;
        let v = member("viewer");
        let (vid, vu) = (v.meta.id.clone(), v.meta.user.clone());
        let o = member("stranger");
        let ou = o.meta.user.clone();
        assert_eq!(
            r.join(o, actor(&ou)).unwrap_err().code,
            ErrorCode::Forbidden
        );
        r.settings.participants.insert(vu.clone(), Role::Viewer);
        let mut with_state = member("viewer");
        with_state.state = serde_json::json!({"typing": true});
        assert_eq!(
            r.join(with_state, actor(&vu)).unwrap_err().code,
            ErrorCode::Forbidden,
            "viewers join without state"
        );
        r.join(v, actor(&vu)).unwrap();
        assert_eq!(
            r.set_state(&vid, serde_json::json!({})).unwrap_err().code,
            ErrorCode::Forbidden
        );
        assert_eq!(
            r.lock("f", &vid, Instant::now(), Duration::from_secs(1))
                .unwrap_err()
                .code,
            ErrorCode::Forbidden
        );
    }

    #[test]
    fn locks_have_one_owner_and_expire() {
        let mut r = room("GENERIC");
        let a = member("a");
        let b = member("b");
        let (aid, bid) = (a.meta.id.clone(), b.meta.id.clone());
        let (au, bu) = (a.meta.user.clone(), b.meta.user.clone());
        r.join(a, actor(&au)).unwrap();
        r.join(b, actor(&bu)).unwrap();
        let now = Instant::now();
        let ttl = Duration::from_secs(10);
        assert!(matches!(
            r.lock("f", &aid, now, ttl).unwrap(),
            LockOutcome::Acquired(_)
        ));
        assert!(matches!(
            r.lock("f", &bid, now, ttl).unwrap(),
            LockOutcome::Held(_)
        ));
        assert_eq!(
            r.unlock("f", &bid).unwrap_err().code,
            ErrorCode::NotLockOwner
        );
        assert!(r.expire_lock("f", now).is_none());
        r.refresh_locks(&aid, now + Duration::from_secs(20));
        assert!(r.expire_lock("f", now + ttl).is_none(), "refreshed");
        assert!(r.expire_lock("f", now + Duration::from_secs(20)).is_some());
        r.lock("g", &aid, now, ttl).unwrap();
        // Past its TTL and not expired yet: b takes it over, naming a.
        match r.lock("g", &bid, now + ttl * 2, ttl).unwrap() {
            LockOutcome::TakenOver(new, old) => {
                assert_eq!((new.session, old.session), (bid.clone(), aid.clone()));
            }
            other => panic!("{other:?}"),
        }
        r.lock("h", &aid, now, ttl).unwrap();
        let left = r.leave(&aid, LeaveReason::Timeout, now).unwrap();
        assert_eq!(left.released_locks, vec!["h".to_string()]);
    }

    #[test]
    fn entity_lifecycle() {
        let mut r = room("GENERIC");
        let now = Instant::now();
        let etl = || UserId::parse("etl").unwrap();
        let ttl = Duration::from_secs(5);
        r.mutating(etl(), now, ttl, None);
        assert!(r.entity().stale);
        assert!(r.expire_stale(now).is_none());
        assert!(r.expire_stale(now + Duration::from_secs(5)).is_some());
        assert!(!r.entity().stale);
        r.mutating(etl(), now, ttl, None);
        let e = r.mutated(None).unwrap();
        assert_eq!((e.stale, e.version), (false, 1));
        // A MUTATED read before its MUTATING (two topics): the older MUTATING
        // is superseded, also at the same millisecond; a newer one applies.
        assert!(r.mutated(Some(2_000)).is_some());
        assert!(r.mutating(etl(), now, ttl, Some(1_000)).is_none());
        assert!(r.mutating(etl(), now, ttl, Some(2_000)).is_none());
        assert!(!r.entity().stale);
        assert_eq!(r.entity().version, 2);
        assert!(r.mutating(etl(), now, ttl, Some(2_001)).is_some());
        assert!(r.mutated(Some(2_001)).is_some(), "MUTATED wins a tie");
        assert!(
            r.mutating(etl(), now, ttl, None).is_some(),
            "no time: applied"
        );
    }

    #[test]
    fn count_mode_and_list_limit() {
        let clock = Clock::new();
        let mut r = room("GENERIC");
        for i in 0..3 {
            let mut m = member(&format!("u{i}"));
            m.count_mode = i == 0;
            let u = m.meta.user.clone();
            r.join(m, actor(&u)).unwrap();
        }
        let f = r.take_diff(&clock, 10).unwrap();
        assert_eq!((f.list_recipients.len(), f.count_recipients.len()), (2, 1));
        let m = member("u9");
        let u = m.meta.user.clone();
        r.join(m, actor(&u)).unwrap();
        let f = r.take_diff(&clock, 2).unwrap();
        assert_eq!(
            f.count_recipients.len(),
            4,
            "above the limit everyone gets counts"
        );
    }
}
