//! Reads for REST and the ops endpoints: a room as the engine holds it (settings,
//! roster snapshot, locks), a tenant's rooms, whether a user is online, the live
//! totals of a tenant, the room count and health of the engine, and the durable
//! record read through the store (activity, audit, statistics, session history). Reads only: nothing here changes live state or
//! writes a row. Who may see what is the caller's business (`http/api`), not
//! decided here.

use std::collections::BTreeMap;

use futures_util::stream::BoxStream;

use super::{Node, SessionInfoView, UserStatusView};
use crate::core::room::{LockOwnerView, PresenceSnapshot};
use crate::core::types::Status;
use crate::engine::EngineError;
use crate::engine::RoomSummary;
use crate::ids::{RoomId, TenantId, UserRef};
use crate::store::{
    ActivityFilter, ActivityRow, ActivityStats, Bucket, RoomAudit, SessionFilter, SessionRecord,
    StatBucket, StatsOverview, StoreError, UnixMs,
};

/// What is live in a tenant right now, on every node.
pub struct LiveTotals {
    /// Distinct users with a live session.
    pub users: usize,
    pub sessions: usize,
    /// Rooms with at least one member.
    pub rooms: usize,
}

/// Who a live session is, where, and its measured round trip: what the
/// dashboard's stream and the alert rules count, without the session's full
/// view.
pub struct SessionFacts {
    pub user: String,
    /// Room keys.
    pub rooms: Vec<String>,
    pub latency_ms: Option<u32>,
}

/// One user's presence on every node.
pub struct UserPresence {
    /// Merged status, `lastSeen` (looked up in the store if need be), devices.
    pub status: UserStatusView,
    /// Live sessions, by id.
    pub sessions: Vec<SessionInfoView>,
    /// Rooms of those sessions, by key, each once.
    pub rooms: Vec<String>,
}

impl Node {
    // ---- live state (the engine) ----

    /// Rooms of every tenant (the `roster_rooms` gauge).
    pub async fn room_count(&self) -> usize {
        self.engine.room_count().await
    }

    /// Whether the engine answers (memory: always; Redis: its health check).
    pub fn live_state_healthy(&self) -> bool {
        self.engine.healthy()
    }

    /// The room as the engine holds it (settings, counts, entity state).
    pub async fn room(&self, id: &RoomId) -> Result<Option<RoomSummary>, EngineError> {
        self.engine.room(id).await
    }

    /// The tenant's rooms, declared and ad hoc, by key.
    pub async fn rooms(&self, tenant: &TenantId) -> Result<Vec<RoomSummary>, EngineError> {
        self.engine.list_rooms(tenant).await
    }

    /// The room's `PRESENCE` snapshot, as a subscriber would get it.
    pub async fn room_presence(
        &self,
        id: &RoomId,
    ) -> Result<Option<PresenceSnapshot>, EngineError> {
        self.engine.snapshot(id).await
    }

    /// The room's field locks by field; `None` if the room is gone.
    pub async fn room_locks(
        &self,
        id: &RoomId,
    ) -> Result<Option<BTreeMap<String, LockOwnerView>>, EngineError> {
        self.engine.locks(id).await
    }

    /// Whether the user has a live session anywhere; never asks the store.
    pub async fn is_online(&self, user: &UserRef) -> Result<bool, EngineError> {
        Ok(self.engine.user(user).await?.status != Status::Offline)
    }

    /// The user's status, live sessions and their rooms.
    pub async fn user_presence(&self, user: &UserRef) -> Result<UserPresence, EngineError> {
        let status = self.user_status(user).await?;
        let sessions = self.sessions(&user.tenant, Some(&user.user)).await?;
        let mut rooms: Vec<String> = sessions
            .iter()
            .flat_map(|s| s.rooms.iter().cloned())
            .collect();
        rooms.sort();
        rooms.dedup();
        Ok(UserPresence {
            status,
            sessions,
            rooms,
        })
    }

    /// Live sessions (every node), the distinct users among them, and the rooms
    /// with members, of one tenant.
    pub async fn live_totals(&self, tenant: &TenantId) -> Result<LiveTotals, EngineError> {
        Ok(self.live_overview(tenant).await?.0)
    }

    /// The tenant's totals and every room (declared or with members) with the
    /// number of distinct users in it, from every node: what the dashboard's
    /// stream shows.
    pub async fn live_overview(
        &self,
        tenant: &TenantId,
    ) -> Result<(LiveTotals, Vec<(RoomSummary, usize)>), EngineError> {
        let live = self.session_facts(tenant).await?;
        let mut users: Vec<&str> = live.iter().map(|s| s.user.as_str()).collect();
        users.sort_unstable();
        users.dedup();
        let mut in_room: std::collections::HashMap<&str, Vec<&str>> = Default::default();
        for s in &live {
            for r in &s.rooms {
                in_room.entry(r.as_str()).or_default().push(s.user.as_str());
            }
        }
        let rooms: Vec<(RoomSummary, usize)> = self
            .engine
            .list_rooms(tenant)
            .await?
            .into_iter()
            .map(|r| {
                let n = in_room.get_mut(r.id.key.as_str()).map_or(0, |u| {
                    u.sort_unstable();
                    u.dedup();
                    u.len()
                });
                (r, n)
            })
            .collect();
        let totals = LiveTotals {
            users: users.len(),
            sessions: live.len(),
            rooms: rooms.iter().filter(|(r, _)| r.sessions > 0).count(),
        };
        Ok((totals, rooms))
    }

    /// [`SessionFacts`] of every live session of the tenant, on every node
    /// (this node's read from its sessions directly).
    pub async fn session_facts(&self, tenant: &TenantId) -> Result<Vec<SessionFacts>, EngineError> {
        let local = self.local_handles(tenant, None);
        let mut seen: std::collections::HashSet<crate::ids::SessionId> =
            local.iter().map(|s| s.meta.id.clone()).collect();
        let mut out: Vec<SessionFacts> = local
            .iter()
            .map(|s| SessionFacts {
                user: s.meta.user.to_string(),
                rooms: s.rooms.lock().iter().map(|r| r.key.to_string()).collect(),
                latency_ms: s.meta.latency_ms(),
            })
            .collect();
        for r in self.engine.remote_sessions(tenant, None).await? {
            if seen.insert(r.session_id.clone()) {
                out.push(SessionFacts {
                    user: r.user_id.to_string(),
                    rooms: r.rooms,
                    latency_ms: r.latency_ms,
                });
            }
        }
        Ok(out)
    }

    // ---- the durable record (the store, awaited) ----

    /// Activity rows, newest first (see [`crate::store::Store::activity`]).
    pub async fn activity(&self, filter: ActivityFilter) -> Result<Vec<ActivityRow>, StoreError> {
        self.store.activity(filter).await
    }

    /// Every matching activity row, oldest first, read in pages.
    pub fn activity_stream(
        &self,
        filter: ActivityFilter,
    ) -> BoxStream<'static, Result<ActivityRow, StoreError>> {
        self.store.activity_stream(filter)
    }

    /// Activity rows of the tenant in `[from, to)`, by type and by hour.
    pub async fn activity_stats(
        &self,
        tenant: &TenantId,
        from: UnixMs,
        to: UnixMs,
    ) -> Result<ActivityStats, StoreError> {
        self.store.activity_stats(tenant.as_str(), from, to).await
    }

    /// Who was in the room and for how long, its lock history and timeline.
    pub async fn room_audit(
        &self,
        id: &RoomId,
        from: UnixMs,
        to: UnixMs,
    ) -> Result<RoomAudit, StoreError> {
        self.store
            .room_audit(id.tenant.as_str(), id.key.as_str(), from, to)
            .await
    }

    /// The room's statistics buckets starting in `[from, to)`.
    pub async fn room_stats(
        &self,
        id: &RoomId,
        bucket: Bucket,
        from: UnixMs,
        to: UnixMs,
    ) -> Result<Vec<StatBucket>, StoreError> {
        self.store
            .room_stats(id.tenant.as_str(), id.key.as_str(), bucket, from, to)
            .await
    }

    /// The tenant's stored totals over `[from, to)`.
    pub async fn stats_overview(
        &self,
        tenant: &TenantId,
        from: UnixMs,
        to: UnixMs,
    ) -> Result<StatsOverview, StoreError> {
        self.store.stats_overview(tenant.as_str(), from, to).await
    }

    /// Session history of the tenant, newest first.
    pub async fn session_history(
        &self,
        tenant: &TenantId,
        filter: SessionFilter,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        self.store
            .list_session_history(tenant.as_str(), filter)
            .await
    }
}
