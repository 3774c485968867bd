//! The presence event stream (SPEC §7): the node's transitions
//! (`core::transition`) as public events, each with the tenant's next sequence
//! number (one sequence per tenant across every node, without gaps), a unique
//! id and a time, in that order, to every consumer (webhooks, the Kafka sink:
//! [`EventConsumer`]s). It is a [`TransitionSink`]: protocols know nothing of it.
//!
//! The events go through the tenant's log in the engine (`EventLog`): appended
//! (and so numbered) by the node that performed the transition, delivered by the
//! node holding the tenant's lease from each queue's cursor, cursors moved on as
//! consumers acknowledge. docs/EVENTS.md "The log, and several nodes". With the
//! memory engine the log is in the process and the sequence starts again at 1
//! when it does; each event's `id` stays unique, so a receiver deduplicates by
//! `id`. A tenant's transitions while no consumer takes its events are not
//! events: its sequence goes on from its last event when one does.

pub mod kafka;
pub mod webhooks;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::clock::iso;
use crate::core::transition::Transition;
use crate::core::types::Status;
use crate::engine::Engine;
use crate::ids::TenantId;
use crate::node::transitions::TransitionSink;

/// The kinds the stream carries, as `type` spells them: every transition
/// kind but `user_status` (a status move of a user who stays online).
/// `room_event` (an `EMIT`, or a Pusher client event) is opt-in: it enters a
/// tenant's log only while one of its consumers asks for it by name.
pub fn kinds() -> impl Iterator<Item = &'static str> {
    Transition::KINDS
        .into_iter()
        .filter(|k| *k != "user_status")
}

/// The kinds a consumer gets unless it names its own: all but
/// `member_updated` (state changes, frequent) and `room_event` (opt-in).
pub fn default_kind(kind: &str) -> bool {
    !matches!(kind, "member_updated" | "room_event")
}

/// One event of the stream, as webhooks and Kafka carry it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PresenceEvent {
    /// Unique; receivers deduplicate by it (delivery is at least once).
    pub id: String,
    /// The tenant's sequence: one more than the tenant's event before.
    pub seq: u64,
    pub tenant_id: String,
    /// One of `member_added`, `member_removed`, `member_updated`, `room_event` (opt-in),
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
    /// `room_event`: its name (`EMIT.event`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// `room_event`: its data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
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
            event: None,
            data: None,
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
            Transition::RoomEvent {
                room,
                from,
                event,
                data,
                ..
            } => {
                e.room = Some(room.key.to_string());
                if let Some(f) = from {
                    e.user_id = Some(f.user.to_string());
                    e.session_id = Some(f.session.to_string());
                }
                e.event = Some(event.clone());
                e.data = Some(data.clone());
            }
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

/// A consumer of numbered events: it has one or more queues per tenant
/// (webhooks: one per endpoint; Kafka: one), each with a cursor in the log.
/// Its methods are called from the delivery task and must not block.
pub trait EventConsumer: Send + Sync + 'static {
    /// Whether it takes events of this tenant now (webhooks: the tenant has an
    /// endpoint). A tenant nobody takes costs no event at all.
    fn wants(&self, _tenant: &TenantId) -> bool {
        true
    }
    /// Whether it takes the tenant's events of an opt-in kind (`room_event`):
    /// none is logged while no consumer of the tenant does.
    fn wants_opt_in(&self, _tenant: &TenantId, _kind: &str) -> bool {
        false
    }
    /// Its queues for the tenant, by a name unique in the tenant.
    fn queues(&self, tenant: &TenantId) -> Vec<String>;
    /// Offers the queue its next event (in sequence order); `false`: it is
    /// full, offer it again later. The consumer acknowledges through `acks`
    /// once the event is delivered (or given up on).
    fn offer(&self, tenant: &TenantId, queue: &str, e: &Arc<PresenceEvent>, acks: &Acks) -> bool;
    /// This node no longer delivers the tenant's events (another node took
    /// the lease over): drop what is queued for it, unacknowledged.
    fn reset(&self, _tenant: &TenantId) {}
    /// Whether the queue would take an event now (a full one is not read for).
    fn ready(&self, _tenant: &TenantId, _queue: &str) -> bool {
        true
    }
    /// `n` events were trimmed from the log before the queue took them.
    fn lost(&self, _tenant: &TenantId, _queue: &str, _n: u64) {}
}

/// Where consumers acknowledge delivered events: the cursor of a queue moves
/// forward (written to the log in the background, coalesced).
#[derive(Clone)]
pub struct Acks(mpsc::UnboundedSender<(TenantId, String, u64)>);

impl Acks {
    pub fn ack(&self, tenant: &TenantId, queue: &str, seq: u64) {
        let _ = self.0.send((tenant.clone(), queue.to_string(), seq));
    }
}

/// How often the delivery task looks for events other nodes appended, and
/// renews its leases.
const POLL: Duration = Duration::from_millis(100);
/// A delivery lease lives this long unless renewed: a node that dies holding
/// one delays its tenants' events by at most this.
const LEASE_TTL: Duration = Duration::from_secs(3);
/// Events read from the log at a time.
const READ_BATCH: usize = 500;
/// How often acknowledged cursors are written.
const ACK_FLUSH: Duration = Duration::from_millis(50);

/// The presence event stream: a [`TransitionSink`] that appends each
/// transition's event to the tenant's log in the engine (`EventLog`: one
/// sequence per tenant across every node), and the tasks that deliver the log
/// to the consumers — on the node holding the tenant's lease, from each
/// queue's cursor, so a node that dies mid-delivery leaves the rest to the
/// next holder. On one node (memory engine) the same code runs over the
/// engine's in-process log.
pub struct EventStream {
    consumers: RwLock<Vec<Arc<dyn EventConsumer>>>,
    appends: mpsc::UnboundedSender<PresenceEvent>,
    appends_rx: Mutex<Option<mpsc::UnboundedReceiver<PresenceEvent>>>,
    /// Events handed to the appender and not yet in the log.
    pending: AtomicUsize,
    appended: Notify,
    /// Events kept per tenant in the log (`webhooks.queue_size`).
    limit: usize,
}

impl EventStream {
    pub fn new(limit: usize) -> Self {
        let (appends, rx) = mpsc::unbounded_channel();
        Self {
            consumers: RwLock::new(Vec::new()),
            appends,
            appends_rx: Mutex::new(Some(rx)),
            pending: AtomicUsize::new(0),
            appended: Notify::new(),
            limit,
        }
    }

    pub fn add_consumer(&self, c: Arc<dyn EventConsumer>) {
        self.consumers.write().push(c);
    }

    fn wanted(&self, tenant: &TenantId) -> bool {
        self.consumers.read().iter().any(|c| c.wants(tenant))
    }

    /// Starts appending and delivering; `holder` names this node in leases.
    /// Returns the task, which ends after `stop` (cursors written, leases
    /// given up).
    pub fn start(
        self: &Arc<Self>,
        engine: Arc<dyn Engine>,
        holder: String,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let rx = self.appends_rx.lock().take();
        let (acks_tx, acks_rx) = mpsc::unbounded_channel();
        let acks = Acks(acks_tx);
        let appender =
            rx.map(|rx| tokio::spawn(self.clone().append(engine.clone(), rx, stop.clone())));
        let me = self.clone();
        tokio::spawn(async move {
            let cursors_stop = CancellationToken::new();
            let cursors =
                tokio::spawn(write_cursors(engine.clone(), acks_rx, cursors_stop.clone()));
            let held = me.deliver(engine.clone(), &holder, acks, stop).await;
            if let Some(a) = appender {
                let _ = a.await;
            }
            // The last acknowledgements, then the leases go: the next holder
            // starts where this node's deliveries ended.
            cursors_stop.cancel();
            let _ = cursors.await;
            for tenant in held {
                let _ = engine.release_event_lease(&tenant, &holder).await;
            }
        })
    }

    /// Waits until every event handed over so far is in the log and the
    /// delivery task has had its turn to queue it, or until `until`.
    pub async fn settle(&self, until: tokio::time::Instant) {
        while self.pending.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(
            (POLL * 2).min(until.saturating_duration_since(tokio::time::Instant::now())),
        )
        .await;
    }

    /// Appends events to their tenants' logs in the order they happened.
    async fn append(
        self: Arc<Self>,
        engine: Arc<dyn Engine>,
        mut rx: mpsc::UnboundedReceiver<PresenceEvent>,
        stop: CancellationToken,
    ) {
        loop {
            let first = tokio::select! {
                e = rx.recv() => match e { Some(e) => e, None => return },
                _ = stop.cancelled() => {
                    // What happened before the stop still goes in.
                    match rx.try_recv() { Ok(e) => e, Err(_) => return }
                }
            };
            let mut batch = vec![first];
            while batch.len() < READ_BATCH {
                match rx.try_recv() {
                    Ok(e) => batch.push(e),
                    Err(_) => break,
                }
            }
            let n = batch.len();
            // Per tenant, in order (tenants are independent).
            let mut by_tenant: Vec<(TenantId, Vec<String>)> = Vec::new();
            for e in batch {
                let Ok(t) = TenantId::parse(&e.tenant_id) else {
                    continue;
                };
                let json = serde_json::to_string(&e).unwrap_or_default();
                match by_tenant.iter_mut().find(|(x, _)| *x == t) {
                    Some((_, v)) => v.push(json),
                    None => by_tenant.push((t, vec![json])),
                }
            }
            for (tenant, events) in by_tenant {
                let mut wait = POLL;
                while let Err(e) = engine.append_events(&tenant, &events, self.limit).await {
                    // Redis unreachable: the events wait here, in order.
                    tracing::debug!("event log append failed (retrying): {e}");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
            }
            self.pending.fetch_sub(n, Ordering::Relaxed);
            self.appended.notify_one();
        }
    }

    /// Delivers every tenant whose lease this node holds, from the log, until
    /// `stop`; answers the tenants it held.
    async fn deliver(
        &self,
        engine: Arc<dyn Engine>,
        holder: &str,
        acks: Acks,
        stop: CancellationToken,
    ) -> Vec<TenantId> {
        let mut held: HashMap<TenantId, HashMap<String, u64>> = HashMap::new();
        // Tenants another node delivers: asked again at the next renewal only.
        let mut elsewhere: std::collections::HashSet<TenantId> = Default::default();
        let mut renewed = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = self.appended.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = stop.cancelled() => break,
            }
            let renew = renewed.elapsed() >= LEASE_TTL / 3;
            if renew {
                elsewhere.clear();
            }
            let Ok(tenants) = engine.event_tenants().await else {
                continue;
            };
            for tenant in tenants {
                if !self.wanted(&tenant) || elsewhere.contains(&tenant) {
                    continue;
                }
                if renew || !held.contains_key(&tenant) {
                    match engine.hold_event_lease(&tenant, holder, LEASE_TTL).await {
                        Ok(true) => {}
                        Ok(false) | Err(_) => {
                            elsewhere.insert(tenant.clone());
                            if held.remove(&tenant).is_some() {
                                for c in self.consumers.read().iter() {
                                    c.reset(&tenant);
                                }
                            }
                            continue;
                        }
                    }
                }
                let positions = held.entry(tenant.clone()).or_default();
                if let Err(e) = self.feed(&*engine, &tenant, positions, &acks).await {
                    tracing::debug!(%tenant, "event delivery paused: {e}");
                }
            }
            if renew {
                renewed = tokio::time::Instant::now();
            }
        }
        held.into_keys().collect()
    }

    /// Hands each of the tenant's queues the events past its position.
    async fn feed(
        &self,
        engine: &dyn Engine,
        tenant: &TenantId,
        positions: &mut HashMap<String, u64>,
        acks: &Acks,
    ) -> Result<(), crate::engine::EngineError> {
        let consumers: Vec<_> = self.consumers.read().clone();
        let mut queues = Vec::new();
        for c in consumers.iter().filter(|c| c.wants(tenant)) {
            for q in c.queues(tenant) {
                let at = match positions.get(&q) {
                    Some(p) => *p,
                    None => engine.event_cursor(tenant, &q).await?,
                };
                positions.insert(q.clone(), at);
                queues.push((c.clone(), q, at));
            }
        }
        positions.retain(|q, _| queues.iter().any(|(_, x, _)| x == q));
        if queues.is_empty() {
            return Ok(());
        }
        let head = engine.event_head(tenant).await?;
        // Each queue reads from its own position, so a slow or hung endpoint
        // (a full queue: not `ready`) holds back nobody else, and costs no
        // read while it stays full. Events are parsed once per call.
        let mut parsed: HashMap<u64, Arc<PresenceEvent>> = HashMap::new();
        for (c, q, mut at) in queues {
            if at >= head || !c.ready(tenant, &q) {
                continue;
            }
            for (seq, json) in engine.read_events(tenant, at, READ_BATCH).await? {
                let e = match parsed.get(&seq) {
                    Some(e) => e.clone(),
                    None => {
                        let Ok(mut e) = serde_json::from_str::<PresenceEvent>(&json) else {
                            at = seq; // not an event of this build: skipped
                            continue;
                        };
                        e.seq = seq;
                        let e = Arc::new(e);
                        parsed.insert(seq, e.clone());
                        e
                    }
                };
                if seq > at + 1 {
                    // The log kept only its newest `limit` events: the ones
                    // between were trimmed before this queue took them. Counted
                    // once: the position moves past them.
                    let lost = seq - at - 1;
                    metrics::counter!(crate::metrics::WEBHOOK_EVENTS, "outcome" => "dropped")
                        .increment(lost);
                    c.lost(tenant, &q, lost);
                    tracing::warn!(%tenant, queue = %q, lost, "events trimmed from the log before delivery");
                    at = seq - 1;
                }
                if !c.offer(tenant, &q, &e, acks) {
                    break;
                }
                at = seq;
            }
            positions.insert(q, at);
        }
        Ok(())
    }
}

/// Writes acknowledged cursors, the newest per queue, every [`ACK_FLUSH`];
/// after `stop`, writes what it has and ends.
async fn write_cursors(
    engine: Arc<dyn Engine>,
    mut rx: mpsc::UnboundedReceiver<(TenantId, String, u64)>,
    stop: CancellationToken,
) {
    let mut due: HashMap<(TenantId, String), u64> = HashMap::new();
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(ACK_FLUSH) => false,
            _ = stop.cancelled() => true,
        };
        while let Ok((t, q, seq)) = rx.try_recv() {
            let s = due.entry((t, q)).or_default();
            *s = (*s).max(seq);
        }
        for ((t, q), seq) in due.drain() {
            if let Err(e) = engine.set_event_cursor(&t, &q, seq).await {
                tracing::warn!(tenant = %t, queue = %q, "event cursor not written: {e}");
            }
        }
        if stopping {
            return;
        }
    }
}

impl TransitionSink for EventStream {
    fn transition(&self, t: &Transition, at: SystemTime) {
        // On every join and leave: nothing is built for a tenant nobody takes.
        if !self.wanted(t.tenant()) {
            return;
        }
        if t.kind() == "room_event"
            && !self
                .consumers
                .read()
                .iter()
                .any(|c| c.wants_opt_in(t.tenant(), t.kind()))
        {
            return;
        }
        let Some(e) = PresenceEvent::of(t, at) else {
            return;
        };
        // While the engine takes no appends (Redis unreachable), events wait
        // in order, up to the log's own bound; beyond it they are dropped.
        if self.pending.load(Ordering::Relaxed) >= self.limit {
            metrics::counter!(crate::metrics::WEBHOOK_EVENTS, "outcome" => "dropped").increment(1);
            return;
        }
        self.pending.fetch_add(1, Ordering::Relaxed);
        let _ = self.appends.send(e);
    }
}
