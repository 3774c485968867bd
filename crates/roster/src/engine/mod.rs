//! Where shared presence state lives. The node talks to it only through
//! [`Engine`], five small traits ([`Rooms`], [`Presence`], [`Locks`], [`Users`],
//! [`Cluster`]); every method is one atomic transition (in memory: under the
//! room's lock; on Redis: one Lua script), so racing sessions on any node see one
//! order. A fallible answer is an [`EngineError`]: refused by a rule, or the
//! shared state unreachable. Changes that members must see are handed to an [`Outbox`] *inside* that
//! transition, which is what keeps a joiner's `PRESENCE` ahead of the first diff
//! that follows it.

pub mod memory;
pub mod redis;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU8;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde_json::Value;
use tokio::time::Instant;

use crate::core::error::CoreError;
pub use crate::core::outgoing::Outgoing;
use crate::core::room::{
    AccessChange, Actor, EntityView, FieldLock, Joined, Left, LockOutcome, LockOwnerView, Member,
    NeedsFlush, PresenceSnapshot, RoomSettings, RoomStatus,
};
use crate::core::room_type::{RoomTiming, Visibility};
use crate::core::session::SessionInfoView;
use crate::core::transition::Transition;
pub use crate::core::types::SubMode;
use crate::core::types::{Role, Status};
use crate::ids::{RoomId, SessionId, TenantId, UserId, UserRef};

/// Why an engine operation did not happen. Every fallible answer of the engine
/// says which of the two it was, so "absent" never stands for "unreachable".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// A rule of presence refused it (the caller's error: not subscribed, room
    /// full, no such room, …).
    #[error(transparent)]
    Refused(#[from] CoreError),
    /// The shared state could not be reached: nothing was done; try again.
    #[error("the presence engine (Redis) is unavailable; try again")]
    Unavailable,
}

impl From<EngineError> for CoreError {
    /// For a client of the wire protocol, an unreachable engine is `internal`
    /// (PROTOCOL §5); REST answers it `503 unavailable` (`http/api`).
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Refused(e) => e,
            EngineError::Unavailable => CoreError::new(
                crate::core::error::ErrorCode::Internal,
                EngineError::Unavailable.to_string(),
            ),
        }
    }
}

pub trait Outbox: Send + Sync {
    fn deliver(&self, to: &mut dyn Iterator<Item = &SessionId>, msg: Outgoing<'_>);
}

#[derive(Debug, Default, Clone)]
pub struct RoomPatch {
    pub room_type: Option<String>,
    pub capacity: Option<u32>,
    pub idle_ttl: Option<Duration>,
    pub visibility: Option<Visibility>,
    pub status: Option<RoomStatus>,
    pub tags: Option<Vec<String>>,
    pub attributes: Option<serde_json::Map<String, Value>>,
    /// With a new `room_type`: that type's timing overrides.
    pub timing: Option<RoomTiming>,
}

impl RoomPatch {
    /// Applies the fields that are set; marks the room declared.
    pub fn apply(&self, s: &mut RoomSettings) {
        if let Some(v) = &self.room_type {
            s.room_type = v.clone();
        }
        if let Some(v) = self.capacity {
            s.capacity = v;
        }
        if let Some(v) = self.idle_ttl {
            s.idle_ttl = v;
        }
        if let Some(v) = self.visibility {
            s.visibility = v;
        }
        if let Some(v) = self.status {
            s.status = v;
        }
        if let Some(v) = &self.tags {
            s.tags = v.clone();
        }
        if let Some(v) = &self.attributes {
            s.attributes = v.clone();
        }
        if let Some(v) = self.timing {
            s.timing = v;
        }
        s.declared = true;
    }
}

#[derive(Debug, Clone)]
pub struct RoomSummary {
    pub id: RoomId,
    pub settings: RoomSettings,
    pub sessions: usize,
    pub seq: u64,
    pub entity: EntityView,
}

/// A user's status went from `before` to `after` (possibly equal).
#[derive(Debug, Clone, Copy)]
pub struct UserChange {
    pub before: Status,
    pub after: Status,
}

impl UserChange {
    /// No change known: what the node assumes when the engine could not say.
    pub fn none(status: Status) -> Self {
        Self {
            before: status,
            after: status,
        }
    }
}

#[derive(Debug, Clone)]
pub struct UserRecord {
    pub status: Status,
    pub last_seen: Option<SystemTime>,
    pub sessions: Vec<SessionId>,
    /// Distinct device kinds of the live sessions, sorted.
    pub devices: Vec<String>,
}

/// What another node did that this node must act on (shared engines only).
#[derive(Debug, Clone)]
pub enum EngineEvent {
    /// A user's sessions or status changed elsewhere: tell local watchers.
    UserChanged(UserRef),
    /// Close a local session (kicked from another node).
    Kick(SessionId, u16),
    /// The shared state is reachable again after an outage: the node writes its
    /// sessions back (Redis may have lost them) and then calls [`Cluster::resync`].
    Recovered,
    /// A local session was resumed on another node: drop it here, silently.
    TakenOver(SessionId),
    /// Another node asks for this node's sessions: answer with
    /// [`Cluster::answer_sessions`].
    SessionsAsked(SessionsAsked),
}

/// A question about sessions from one node to the others (`GET /sessions` and
/// `GET /users/{id}/presence` answer for the whole cluster).
#[derive(Debug, Clone)]
pub struct SessionsAsked {
    pub id: String,
    pub tenant: TenantId,
    /// Only this user's sessions.
    pub user: Option<UserId>,
}

/// A session found dead by the liveness sweep (its node stopped refreshing it).
#[derive(Debug, Clone)]
pub struct DeadSession {
    pub id: SessionId,
    pub user: UserRef,
    pub rooms: Vec<RoomId>,
    /// Handed over by its node's shutdown ([`Cluster::hand_over_at_shutdown`]):
    /// nobody resumed it within its leave grace, so it is `disconnected`.
    pub handed_over: bool,
}

/// Rooms as things (settings, participants; REST and the sweeper).
#[async_trait]
pub trait Rooms: Send + Sync + 'static {
    async fn create_room(&self, id: RoomId, settings: RoomSettings) -> Result<(), EngineError>;

    async fn room(&self, id: &RoomId) -> Result<Option<RoomSummary>, EngineError>;

    /// Changes settings; a visibility change re-checks members' access.
    async fn update_room(
        &self,
        id: &RoomId,
        patch: RoomPatch,
    ) -> Result<(RoomSummary, AccessChange), EngineError>;

    /// Removes the room; returns the sessions that were in it (to be kicked).
    async fn delete_room(&self, id: &RoomId) -> Result<Option<Vec<SessionId>>, EngineError>;

    /// Sets or removes a participant role and applies it to members already in
    /// the room; says who must be kicked and which locks were released.
    async fn set_participant(
        &self,
        id: &RoomId,
        user: UserId,
        role: Option<Role>,
    ) -> Result<AccessChange, EngineError>;

    async fn list_rooms(&self, tenant: &TenantId) -> Result<Vec<RoomSummary>, EngineError>;

    async fn room_count(&self) -> usize;

    /// Every room of every tenant (statistics sampling).
    async fn all_rooms(&self) -> Result<Vec<RoomSummary>, EngineError>;
}

/// Membership of rooms, member state, and the room's diffs and events.
#[async_trait]
pub trait Presence: Send + Sync + 'static {
    /// Joins (creating the room with `create` if absent) and delivers the joiner's
    /// `PRESENCE`/`PRESENCE_COUNT` in the same transition.
    #[allow(clippy::too_many_arguments)]
    async fn join(
        &self,
        id: &RoomId,
        create: RoomSettings,
        member: Member,
        actor: Actor<'_>,
        mode: SubMode,
        list_limit: usize,
        reply_ref: Option<&Value>,
    ) -> Result<Joined, EngineError>;

    async fn leave(
        &self,
        id: &RoomId,
        session: &SessionId,
        reason: crate::core::types::LeaveReason,
        now: Instant,
    ) -> Result<Option<Left>, EngineError>;

    async fn set_state(
        &self,
        id: &RoomId,
        session: &SessionId,
        state: Value,
    ) -> Result<Option<NeedsFlush>, EngineError>;

    /// Something shown in the member's entry changed; `status` is the user's
    /// merged status now.
    async fn touch(
        &self,
        id: &RoomId,
        session: &SessionId,
        status: Status,
    ) -> Result<NeedsFlush, EngineError>;

    /// Flushes the pending diff to members (one `seq`). Returns the number of
    /// deliveries made.
    async fn flush(&self, id: &RoomId, list_limit: usize) -> Result<usize, EngineError>;

    async fn snapshot(&self, id: &RoomId) -> Result<Option<PresenceSnapshot>, EngineError>;

    async fn members(&self, id: &RoomId) -> Result<Vec<SessionId>, EngineError>;

    /// Tells every member (of every node) of a lock or entity transition.
    /// Returns the local deliveries made (0 where delivery is asynchronous).
    async fn broadcast(&self, id: &RoomId, t: &Transition) -> Result<usize, EngineError>;

    /// Drops an ad-hoc room that has stayed empty for its idle TTL.
    async fn remove_if_idle(&self, id: &RoomId, now: Instant) -> Result<bool, EngineError>;
}

/// Field locks and the entity lifecycle of a room.
#[async_trait]
pub trait Locks: Send + Sync + 'static {
    async fn lock(
        &self,
        id: &RoomId,
        field: &str,
        session: &SessionId,
        now: Instant,
        ttl: Duration,
    ) -> Result<LockOutcome, EngineError>;

    async fn unlock(
        &self,
        id: &RoomId,
        field: &str,
        session: &SessionId,
    ) -> Result<Option<FieldLock>, EngineError>;

    /// A heartbeat of a member: its locks last until `until`; its measured
    /// latency (shown in its entry) is `latency_ms`.
    async fn refresh_locks(
        &self,
        id: &RoomId,
        session: &SessionId,
        until: Instant,
        latency_ms: Option<u32>,
    ) -> Result<Vec<String>, EngineError>;

    async fn expire_lock(
        &self,
        id: &RoomId,
        field: &str,
        now: Instant,
    ) -> Result<Option<FieldLock>, EngineError>;

    async fn force_unlock(
        &self,
        id: &RoomId,
        field: &str,
    ) -> Result<Option<FieldLock>, EngineError>;

    async fn locks(
        &self,
        id: &RoomId,
    ) -> Result<Option<BTreeMap<String, LockOwnerView>>, EngineError>;

    async fn require_role(
        &self,
        id: &RoomId,
        session: &SessionId,
        role: Role,
        action: &str,
    ) -> Result<(), EngineError>;

    /// `at`: the event's own time (unix ms), if it has one; an event older
    /// than the last one applied to the room is superseded: `None`, nothing
    /// changed.
    async fn mutating(
        &self,
        id: &RoomId,
        create: RoomSettings,
        by: UserId,
        now: Instant,
        stale_ttl: Duration,
        at: Option<u64>,
    ) -> Result<Option<EntityView>, EngineError>;

    async fn mutated(
        &self,
        id: &RoomId,
        create: RoomSettings,
        at: Option<u64>,
    ) -> Result<Option<EntityView>, EngineError>;

    async fn expire_stale(
        &self,
        id: &RoomId,
        now: Instant,
    ) -> Result<Option<EntityView>, EngineError>;
}

/// Users' merged status over their live sessions.
#[async_trait]
pub trait Users: Send + Sync + 'static {
    /// A session of the user went live; returns the user's status change.
    async fn user_attach(
        &self,
        user: &UserRef,
        session: &SessionId,
        status: Status,
        device: &str,
    ) -> Result<UserChange, EngineError>;

    /// The cell, kept in this process, that mirrors a user's merged status as
    /// this engine last saw it (member records read it). Asked after
    /// [`Users::user_attach`], whatever that answered.
    fn status_cell(&self, user: &UserRef) -> Arc<AtomicU8>;

    async fn user_detach(
        &self,
        user: &UserRef,
        session: &SessionId,
        now: SystemTime,
    ) -> Result<UserChange, EngineError>;

    async fn user_set_status(
        &self,
        user: &UserRef,
        session: &SessionId,
        status: Status,
    ) -> Result<UserChange, EngineError>;

    async fn user(&self, user: &UserRef) -> Result<UserRecord, EngineError>;

    /// Remembers an earlier `last_seen` (from the store) for a user with none.
    async fn user_seen(&self, user: &UserRef, at: SystemTime) -> Result<(), EngineError>;
}

/// Several nodes sharing the state: liveness, hand-over, take-over, questions
/// between nodes. No-ops for an engine that lives in one process.
#[async_trait]
pub trait Cluster: Send + Sync + 'static {
    /// Whether other nodes share this state (then the node runs the liveness sweep).
    fn shared(&self) -> bool {
        false
    }

    /// Whether the shared state is reachable (`/readyz`).
    fn healthy(&self) -> bool {
        true
    }

    /// The rooms a session (possibly of another node) is in.
    async fn session_rooms(&self, _session: &SessionId) -> Result<Vec<RoomId>, EngineError> {
        Ok(vec![])
    }

    /// A session of this node started: registered for the liveness sweep.
    async fn session_opened(
        &self,
        _session: &SessionId,
        _user: &UserRef,
        _client_id: Option<&str>,
    ) -> Result<(), EngineError> {
        Ok(())
    }

    /// A session of this node ended normally.
    async fn session_closed(&self, _session: &SessionId) -> Result<(), EngineError> {
        Ok(())
    }

    /// This node's sessions are alive until `until` (called every sweep interval).
    async fn sessions_alive(
        &self,
        _sessions: &[SessionId],
        _until: SystemTime,
    ) -> Result<(), EngineError> {
        Ok(())
    }

    /// The node is shutting down: each of its sessions stays in the shared
    /// state until its deadline (the end of its leave grace), may be taken over
    /// by a `clientId` resume on any node, and is claimed by another node's
    /// sweep as [`DeadSession::handed_over`] if nobody resumes it.
    /// An error if some could not be handed over: those time out instead, as
    /// if the node had died.
    async fn hand_over_at_shutdown(
        &self,
        _sessions: &[(SessionId, SystemTime)],
    ) -> Result<(), EngineError> {
        Ok(())
    }

    /// Claims sessions whose node stopped refreshing them; each is claimed by
    /// exactly one caller cluster-wide.
    async fn claim_dead(&self, _now: SystemTime) -> Result<Vec<DeadSession>, EngineError> {
        Ok(vec![])
    }

    /// The user of a live session of any node (shared engines; `None` here).
    async fn session_user(&self, _session: &SessionId) -> Result<Option<UserRef>, EngineError> {
        Ok(None)
    }

    /// Closes a session that may live on another node.
    async fn kick_remote(&self, _session: &SessionId, _code: u16) -> Result<(), EngineError> {
        Ok(())
    }

    /// The sessions that the other nodes hold of `tenant` (of `user` only, if
    /// given), each as its node sees it now. Nothing on one node.
    async fn remote_sessions(
        &self,
        _tenant: &TenantId,
        _user: Option<&UserId>,
    ) -> Result<Vec<SessionInfoView>, EngineError> {
        Ok(vec![])
    }

    /// This node's answer to [`EngineEvent::SessionsAsked`].
    async fn answer_sessions(
        &self,
        _ask: SessionsAsked,
        _sessions: Vec<SessionInfoView>,
    ) -> Result<(), EngineError> {
        Ok(())
    }

    /// Tells other nodes that a user's status or sessions changed.
    async fn announce_user(&self, _user: &UserRef) -> Result<(), EngineError> {
        Ok(())
    }

    /// Sends every local member a fresh snapshot (diffs may have been missed).
    async fn resync(&self) {}

    /// A `clientId` resume of a session held by another node: moves it to this
    /// node (atomically; the other node is told) and returns it with its rooms.
    async fn take_over(
        &self,
        _user: &UserRef,
        _client_id: &str,
    ) -> Result<Option<(SessionId, Vec<RoomId>)>, EngineError> {
        Ok(None)
    }

    /// Delivers to a taken-over session what its rooms publish from now on.
    async fn adopt_local(&self, _session: &SessionId, _rooms: &[RoomId]) {}

    /// Stops delivering to a session that moved to another node.
    async fn forget_local(&self, _session: &SessionId, _rooms: &[RoomId]) {}

    /// Before a session's leaves: `false` if another node has taken it over
    /// (then it must not leave anything). Atomic with [`Cluster::take_over`].
    async fn release_session(&self, _session: &SessionId) -> Result<bool, EngineError> {
        Ok(true)
    }
}

/// The presence event stream's log (SPEC §7, `events/`): per tenant, one
/// sequence without gaps across every node, the events in it (the newest
/// `limit`), each consumer's cursor, and a lease that lets one node at a time
/// deliver a tenant's events. Events are opaque JSON here.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Appends the tenant's events in order, numbering them; returns the
    /// first number given (the others follow it). Keeps the newest `limit`.
    async fn append_events(
        &self,
        tenant: &TenantId,
        events: &[String],
        limit: usize,
    ) -> Result<u64, EngineError>;
    /// Up to `max` events numbered above `after`, in order.
    async fn read_events(
        &self,
        tenant: &TenantId,
        after: u64,
        max: usize,
    ) -> Result<Vec<(u64, String)>, EngineError>;
    /// The number of the tenant's newest event (0: none yet).
    async fn event_head(&self, tenant: &TenantId) -> Result<u64, EngineError>;
    /// Every tenant with a log.
    async fn event_tenants(&self) -> Result<Vec<TenantId>, EngineError>;
    /// Takes the tenant's delivery lease for `holder`, or keeps it if it holds
    /// it, for `ttl`; `false` if another holder has it.
    async fn hold_event_lease(
        &self,
        tenant: &TenantId,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, EngineError>;
    /// Gives the lease up, if `holder` has it.
    async fn release_event_lease(&self, tenant: &TenantId, holder: &str)
        -> Result<(), EngineError>;
    /// The last event a consumer took (0: none).
    async fn event_cursor(&self, tenant: &TenantId, consumer: &str) -> Result<u64, EngineError>;
    /// Moves the consumer's cursor forward to `seq` (never back).
    async fn set_event_cursor(
        &self,
        tenant: &TenantId,
        consumer: &str,
        seq: u64,
    ) -> Result<(), EngineError>;
}

/// The whole engine, as the node holds it (`Arc<dyn Engine>`): every small
/// trait above. Implemented for whatever implements them all.
pub trait Engine: Rooms + Presence + Locks + Users + Cluster + EventLog {}

impl<T: Rooms + Presence + Locks + Users + Cluster + EventLog> Engine for T {}
