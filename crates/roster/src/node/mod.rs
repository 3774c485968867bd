//! The node: where a presence change is decided. Protocol adapters and REST call
//! its methods; it checks limits and roles, runs the transition on the [`Engine`],
//! schedules the deadlines that follow, emits the transitions (`transitions.rs`)
//! and tells watchers. One sweeper task ([`Node::run_sweeper`]) drains every
//! deadline of the node.
//!
//! This file holds the `Node` itself, its configuration lookups (room types,
//! ad hoc settings), scheduling and the activity rows. Each concern is a file
//! of `impl Node`: `sessions.rs`, `rooms.rs` (membership, diffs, access),
//! `status.rs` (status and watch), `locks.rs`, `lifecycle.rs`, `sweeper.rs`
//! (deadlines, sampling, shutdown), `queries.rs` and `admin.rs` (REST).

pub mod admin;
mod alerts;
pub mod gauges;
pub mod hub;
pub mod lifecycle;
mod locks;
pub mod queries;
pub mod records;
mod rooms;
mod sessions;
pub mod stats;
mod status;
mod sweeper;
pub mod transitions;
mod webhooks;

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
use crate::engine::{Engine, EngineError, SubMode};
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
    /// The presence event stream's webhook endpoints (`webhooks.rs`).
    pub(crate) webhooks: Arc<crate::events::webhooks::Webhooks>,
    /// The presence event stream: its consumers are the webhooks and, where
    /// configured, the Kafka sink (`server.rs` adds it).
    pub(crate) events: Arc<crate::events::EventStream>,
    /// Whether the Kafka brokers answer (`/readyz`, `/metrics`); never asked
    /// when Kafka is off.
    pub kafka: Arc<crate::kafka::KafkaHealth>,
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
        let config_webhooks = config.webhooks.clone();
        let log_limit = config.webhooks.queue_size;
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
            webhooks: crate::events::webhooks::Webhooks::new(config_webhooks),
            events: Arc::new(crate::events::EventStream::new(log_limit)),
            kafka: Default::default(),
        });
        // The event stream: every transition numbered per tenant, to webhooks.
        node.events.add_consumer(node.webhooks.clone());
        node.add_sink(node.events.clone());
        node.schedule(
            clock.now() + node.timing().heartbeat_interval.0,
            Deadline::PingAll,
        );
        if node.engine.shared() {
            node.schedule(clock.now(), Deadline::Liveness);
        }
        node
    }

    /// A deadline whose engine call failed (Redis unreachable) is tried again
    /// one `timing.sweep_interval` later, until it succeeds.
    fn retry_later(&self, d: Deadline) {
        self.schedule(self.clock.now() + self.timing().sweep_interval.0, d);
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
}
