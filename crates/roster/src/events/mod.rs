//! The presence event stream (SPEC §7): the node's transitions
//! (`core::transition`) as public events, each with the tenant's next sequence
//! number (one sequence per tenant, without gaps), a unique id and a time, in
//! that order, to every consumer (webhooks here; Kafka is one more
//! [`EventConsumer`]). It is a [`TransitionSink`]: engines and protocols know
//! nothing of it.
//!
//! On one node (memory engine) the sequence lives in this process and starts
//! again at 1 when the process does; each event's `id` stays unique, so a
//! receiver deduplicates by `id`. A tenant's transitions while no consumer
//! takes its events (no webhook endpoint) are not events: its sequence goes on
//! from its last event when one does.

pub mod webhooks;

use std::sync::Arc;
use std::time::SystemTime;

use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};
use serde::Serialize;

use crate::clock::iso;
use crate::core::transition::Transition;
use crate::core::types::Status;
use crate::ids::TenantId;
use crate::node::transitions::TransitionSink;

/// The kinds the stream carries, as `type` spells them: every transition
/// kind but `user_status` (a status move of a user who stays online).
pub fn kinds() -> impl Iterator<Item = &'static str> {
    Transition::KINDS
        .into_iter()
        .filter(|k| *k != "user_status")
}

/// One event of the stream, as webhooks and Kafka carry it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PresenceEvent {
    /// Unique; receivers deduplicate by it (delivery is at least once).
    pub id: String,
    /// The tenant's sequence: one more than the tenant's event before.
    pub seq: u64,
    pub tenant_id: String,
    /// One of `member_added`, `member_removed`, `member_updated`,
    /// `room_occupied`, `room_vacated`, `user_online`, `user_offline`,
    /// `lock_acquired`, `lock_released`, `entity_stale`, `entity_fresh`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When it happened (ISO-8601, ms).
    pub at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// `member_removed`: `left`, `disconnected`, `timeout` or `kicked`;
    /// `lock_released`: `unlocked`, `left`, `disconnected`, `timeout`,
    /// `kicked`, `access_lost`, `expired` or `force_released`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The locked field (`lock_*`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// `lock_acquired`: when the lock expires unless refreshed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// `user_online`: `online` or `away`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// `entity_*`: who mutates the record (null when fresh).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub busy_by: Option<String>,
    /// `entity_*`: the record's version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

impl PresenceEvent {
    /// The event of a transition (seq 0 until the stream numbers it), or
    /// `None` for a transition the stream does not carry.
    pub fn of(t: &Transition, at: SystemTime) -> Option<Self> {
        let mut e = PresenceEvent {
            id: format!("evt_{}", uuid::Uuid::new_v4().simple()),
            seq: 0,
            tenant_id: t.tenant().to_string(),
            kind: t.kind().to_string(),
            at: iso(at),
            room: None,
            user_id: None,
            session_id: None,
            reason: None,
            field: None,
            expires_at: None,
            status: None,
            busy_by: None,
            version: None,
        };
        match t {
            Transition::MemberAdded {
                room,
                user,
                session,
            }
            | Transition::MemberUpdated {
                room,
                user,
                session,
            } => {
                e.room = Some(room.key.to_string());
                e.user_id = Some(user.to_string());
                e.session_id = Some(session.to_string());
            }
            Transition::MemberRemoved {
                room,
                user,
                session,
                reason,
            } => {
                e.room = Some(room.key.to_string());
                e.user_id = Some(user.to_string());
                e.session_id = Some(session.to_string());
                e.reason = Some(reason.as_str().to_string());
            }
            Transition::RoomOccupied { room } | Transition::RoomVacated { room } => {
                e.room = Some(room.key.to_string());
            }
            Transition::UserOnline { user, status } => {
                e.user_id = Some(user.user.to_string());
                e.status = Some(*status);
            }
            Transition::UserOffline { user } => {
                e.user_id = Some(user.user.to_string());
            }
            Transition::UserStatus { .. } => return None,
            Transition::LockAcquired {
                room,
                field,
                user,
                session,
                expires_at,
            } => {
                e.room = Some(room.key.to_string());
                e.field = Some(field.clone());
                e.user_id = Some(user.to_string());
                e.session_id = Some(session.to_string());
                e.expires_at = Some(iso(*expires_at));
            }
            Transition::LockReleased {
                room,
                field,
                user,
                session,
                reason,
            } => {
                e.room = Some(room.key.to_string());
                e.field = Some(field.clone());
                e.user_id = Some(user.to_string());
                e.session_id = Some(session.to_string());
                e.reason = Some(reason.as_str().to_string());
            }
            Transition::Entity {
                room,
                busy_by,
                version,
                ..
            } => {
                e.room = Some(room.key.to_string());
                e.busy_by = busy_by.as_ref().map(|u| u.to_string());
                e.version = Some(*version);
            }
        }
        Some(e)
    }
}

/// A consumer of numbered events. Called with the tenant's events in their
/// order, on the emitting task: it must not block (queue the work).
pub trait EventConsumer: Send + Sync + 'static {
    /// Whether it takes events of this tenant now (webhooks: the tenant has an
    /// endpoint). A tenant nobody takes costs no event at all.
    fn wants(&self, _tenant: &TenantId) -> bool {
        true
    }
    fn event(&self, tenant: &TenantId, e: &Arc<PresenceEvent>);
}

/// Numbers each transition's event in its tenant's sequence and hands it to
/// every consumer, under the tenant's lock, so each consumer sees a tenant's
/// events in sequence order.
#[derive(Default)]
pub struct EventStream {
    /// The last sequence number given, per tenant.
    seqs: DashMap<TenantId, Arc<Mutex<u64>>>,
    consumers: RwLock<Vec<Arc<dyn EventConsumer>>>,
}

impl EventStream {
    pub fn add_consumer(&self, c: Arc<dyn EventConsumer>) {
        self.consumers.write().push(c);
    }
}

impl TransitionSink for EventStream {
    fn transition(&self, t: &Transition, at: SystemTime) {
        let tenant = t.tenant();
        let consumers = self.consumers.read();
        // On every join and leave: nothing is built for a tenant nobody takes.
        if !consumers.iter().any(|c| c.wants(tenant)) {
            return;
        }
        let Some(mut e) = PresenceEvent::of(t, at) else {
            return;
        };
        let seq = self.seqs.entry(tenant.clone()).or_default().clone();
        let mut last = seq.lock();
        *last += 1;
        e.seq = *last;
        let e = Arc::new(e);
        for c in consumers.iter().filter(|c| c.wants(tenant)) {
            c.event(tenant, &e);
        }
    }
}
