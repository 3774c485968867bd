//! `GET /api/v1/stream`: the live stream the dashboard reads, as Server-Sent
//! Events, open to any `monitor` or `admin` script. Every
//! `dashboard.update_interval` the tenant's live state (every node's, through
//! the engine) and the durable record (activity rows, alerts: the database
//! every node writes) are compared with what this stream last sent, and only
//! what changed goes out:
//!
//! * `hello` `{tenant, intervalMs}` — once, first;
//! * `totals` `{users, sessions, rooms, at}` — first, then on change;
//! * `rooms` `{full, rooms: [{key, type, capacity, sessions, users, stale,
//!   status}], removed: [key]}` — first every room (`full: true`), then the
//!   changed and removed ones;
//! * `activity` — each new activity row (the `GET /activity` item), oldest
//!   first;
//! * `alert` — an alert (the `GET /alerts` item) that fired, resolved or was
//!   acknowledged.
//!
//! The streams of one tenant on one node share one feed: one task reads and
//! compares for all of them (so ten open dashboards cost what one does), and
//! a stream that joins later starts from the feed's current totals and rooms.
//! The feed's task ends with its last stream. A client too slow to take the
//! updates (64 behind) has its stream ended; it reconnects.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::{Stream, StreamExt};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::broadcast;

use super::activity::ActivityItem;
use super::{ApiResult, Caller};
use crate::alerts::AlertView;
use crate::http::AppState;
use crate::ids::TenantId;
use crate::node::Node;
use crate::store::{ActivityFilter, AlertFilter, StoredAlert};

/// A comment line this often keeps proxies from closing a quiet stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Newest activity rows and alerts looked at per update.
const RECENT: usize = 200;
/// Updates a stream may fall behind before it is ended.
const BACKLOG: usize = 64;

/// A room as the stream shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoomLive {
    pub key: String,
    #[serde(rename = "type")]
    pub room_type: String,
    pub capacity: u32,
    pub sessions: usize,
    /// Distinct users among the sessions.
    pub users: usize,
    pub stale: bool,
    /// `active` | `maintenance` | `closed`
    pub status: crate::core::room::RoomStatus,
}

/// One event, encoded once for every stream: its name and JSON data.
type Item = (&'static str, Arc<str>);

fn item(name: &'static str, data: &impl Serialize) -> Item {
    (name, serde_json::to_string(data).unwrap_or_default().into())
}

/// The feeds of this node, one per tenant with an open stream.
#[derive(Default)]
pub struct Feeds(Mutex<HashMap<TenantId, Arc<Feed>>>);

pub struct Feed {
    /// Each update's events, to every stream of the tenant.
    tx: broadcast::Sender<Arc<Vec<Item>>>,
    /// What the streams were sent: the base of the next comparison, and where
    /// a new stream starts.
    sent: Mutex<Sent>,
}

impl Feeds {
    /// Joins (or starts) the tenant's feed: the current totals and rooms, and
    /// the updates from now on.
    fn join(
        self: &Arc<Self>,
        node: &Arc<Node>,
        tenant: &TenantId,
    ) -> (Vec<Item>, broadcast::Receiver<Arc<Vec<Item>>>) {
        let mut map = self.0.lock();
        let feed = map
            .entry(tenant.clone())
            .or_insert_with(|| {
                let feed = Arc::new(Feed {
                    tx: broadcast::channel(BACKLOG).0,
                    sent: Mutex::new(Sent::default()),
                });
                tokio::spawn(run(
                    self.clone(),
                    node.clone(),
                    tenant.clone(),
                    feed.clone(),
                ));
                feed
            })
            .clone();
        // Under the feed's lock: the snapshot and the subscription are one
        // moment, so no update is missed or seen twice.
        let sent = feed.sent.lock();
        (sent.snapshot(), feed.tx.subscribe())
    }
}

/// Opens the live stream (`text/event-stream`; see the module text for the
/// events). Use a client that can send the `Authorization` header (e.g.
/// `fetch` with a streamed body; `EventSource` cannot).
#[utoipa::path(get, path = "/api/v1/stream", operation_id = "openStream", tag = "stream",
    responses((status = 200, description = "Server-Sent Events: `hello`, `totals`, `rooms` (RoomLive items), `activity` (ActivityItem), `alert` (AlertView)", content_type = "text/event-stream", body = String)))]
pub async fn stream(
    State(app): State<AppState>,
    caller: Caller,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    caller.require_monitor()?;
    let every = app.node.config.dashboard.update_interval.0;
    let hello = item(
        "hello",
        &serde_json::json!({"tenant": caller.tenant.as_str(), "intervalMs": every.as_millis() as u64}),
    );
    let (now, rx) = app.feeds.join(&app.node, &caller.tenant);
    let first = futures_util::stream::iter(std::iter::once(hello).chain(now).collect::<Vec<_>>());
    let updates = futures_util::stream::unfold(rx, |mut rx| async move {
        // Lagged or closed: the stream ends and the client reconnects.
        let batch = rx.recv().await.ok()?;
        Some((futures_util::stream::iter(batch.to_vec()), rx))
    })
    .flatten();
    let events = first
        .chain(updates)
        .map(|(name, data)| Ok(Event::default().event(name).data(&*data)));
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// What the streams were last sent.
#[derive(Default)]
struct Sent {
    totals: Option<((usize, usize, usize), Item)>,
    rooms: Option<HashMap<String, RoomLive>>,
    activity_id: Option<i64>,
    /// Alert id → (state, acknowledged).
    alerts: Option<HashMap<String, (String, bool)>>,
}

impl Sent {
    /// A new stream's start: the totals and every room.
    fn snapshot(&self) -> Vec<Item> {
        let mut out = Vec::new();
        if let Some((_, t)) = &self.totals {
            out.push(t.clone());
        }
        if let Some(rooms) = &self.rooms {
            let mut all: Vec<&RoomLive> = rooms.values().collect();
            all.sort_by(|a, b| a.key.cmp(&b.key));
            out.push(item(
                "rooms",
                &serde_json::json!({"full": true, "rooms": all, "removed": []}),
            ));
        }
        out
    }
}

/// The feed's task: every `dashboard.update_interval` until its last stream
/// is gone.
async fn run(feeds: Arc<Feeds>, node: Arc<Node>, tenant: TenantId, feed: Arc<Feed>) {
    let mut tick = tokio::time::interval(node.config.dashboard.update_interval.0);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        {
            let mut map = feeds.0.lock();
            if feed.tx.receiver_count() == 0 {
                if map.get(&tenant).is_some_and(|f| Arc::ptr_eq(f, &feed)) {
                    map.remove(&tenant);
                }
                return;
            }
        }
        // Read outside the lock (each read skipped while its backend is down)…
        let live = node.live_overview(&tenant).await.ok();
        let activity = node
            .activity(ActivityFilter {
                tenant: tenant.to_string(),
                limit: RECENT,
                ..Default::default()
            })
            .await
            .ok();
        let filter = |state: Option<&str>| AlertFilter {
            tenant: tenant.to_string(),
            state: state.map(str::to_string),
            limit: RECENT,
            ..Default::default()
        };
        let alerts = match (
            node.alerts(filter(Some("firing"))).await,
            node.alerts(filter(None)).await,
        ) {
            (Ok(f), Ok(r)) => Some((f, r)),
            _ => None,
        };
        // …then compare and send under it.
        let mut sent = feed.sent.lock();
        let mut out = Vec::new();
        if let Some((totals, rooms)) = live {
            let at = crate::clock::iso(node.clock.wall_now());
            live_changes(&mut sent, totals, rooms, at, &mut out);
        }
        if let Some(rows) = activity {
            activity_changes(&mut sent, &rows, &mut out);
        }
        if let Some((firing, recent)) = alerts {
            alert_changes(&mut sent, &firing, &recent, &mut out);
        }
        if !out.is_empty() {
            let _ = feed.tx.send(Arc::new(out));
        }
    }
}

/// Totals on change; every room first, then the changed and removed ones.
fn live_changes(
    sent: &mut Sent,
    totals: crate::node::queries::LiveTotals,
    rooms: Vec<(crate::engine::RoomSummary, usize)>,
    at: String,
    out: &mut Vec<Item>,
) {
    let t = (totals.users, totals.sessions, totals.rooms);
    if sent.totals.as_ref().map(|(k, _)| *k) != Some(t) {
        let e = item(
            "totals",
            &serde_json::json!({"users": t.0, "sessions": t.1, "rooms": t.2, "at": at}),
        );
        out.push(e.clone());
        sent.totals = Some((t, e));
    }
    let now: HashMap<String, RoomLive> = rooms
        .into_iter()
        .map(|(r, users)| {
            let key = r.id.key.to_string();
            let v = RoomLive {
                key: key.clone(),
                room_type: r.settings.room_type,
                capacity: r.settings.capacity,
                sessions: r.sessions,
                users,
                stale: r.entity.stale,
                status: r.settings.status,
            };
            (key, v)
        })
        .collect();
    let (full, mut changed, removed): (bool, Vec<&RoomLive>, Vec<&String>) = match &sent.rooms {
        None => (true, now.values().collect(), Vec::new()),
        Some(before) => (
            false,
            now.values()
                .filter(|r| before.get(&r.key) != Some(*r))
                .collect(),
            before.keys().filter(|k| !now.contains_key(*k)).collect(),
        ),
    };
    if full || !changed.is_empty() || !removed.is_empty() {
        changed.sort_by(|a, b| a.key.cmp(&b.key));
        out.push(item(
            "rooms",
            &serde_json::json!({"full": full, "rooms": changed, "removed": removed}),
        ));
    }
    sent.rooms = Some(now);
}

/// New activity rows, oldest first (the first update only notes the newest).
fn activity_changes(sent: &mut Sent, rows: &[crate::store::ActivityRow], out: &mut Vec<Item>) {
    let newest = rows.first().map(|r| r.id).unwrap_or(0);
    if let Some(last) = sent.activity_id {
        for r in rows.iter().rev().filter(|r| r.id > last) {
            out.push(item("activity", &ActivityItem::from(r)));
        }
    }
    sent.activity_id = Some(newest.max(sent.activity_id.unwrap_or(0)));
}

/// Alerts that fired, resolved or were acknowledged since the last update:
/// every firing one and the newest others are compared (the first update
/// only notes them).
fn alert_changes(
    sent: &mut Sent,
    firing: &[StoredAlert],
    recent: &[StoredAlert],
    out: &mut Vec<Item>,
) {
    let first = sent.alerts.is_none();
    let known = sent.alerts.get_or_insert_with(HashMap::new);
    let mut seen: Vec<&StoredAlert> = firing.iter().chain(recent.iter()).collect();
    seen.sort_by(|a, b| (a.fired_at, &a.id).cmp(&(b.fired_at, &b.id)));
    seen.dedup_by(|a, b| a.id == b.id);
    for a in seen {
        let now = (a.state.clone(), a.acked_at.is_some());
        if known.get(&a.id) != Some(&now) {
            if !first {
                out.push(item("alert", &AlertView::from(a)));
            }
            known.insert(a.id.clone(), now);
        }
    }
    // Forget alerts long gone from both lists (bounded memory).
    if known.len() > RECENT * 4 {
        let keep: std::collections::HashSet<&str> = firing
            .iter()
            .chain(recent.iter())
            .map(|a| a.id.as_str())
            .collect();
        known.retain(|id, _| keep.contains(id.as_str()));
    }
}
