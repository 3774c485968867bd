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
//! Each stream has its own task, which ends when the client goes away.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Serialize;
use tokio::sync::mpsc;

use super::activity::ActivityItem;
use super::{ApiResult, Caller};
use crate::alerts::AlertView;
use crate::http::AppState;
use crate::ids::TenantId;
use crate::node::Node;
use crate::store::{ActivityFilter, AlertFilter};

/// A comment line this often keeps proxies from closing a quiet stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Newest activity rows and alerts looked at per update.
const RECENT: usize = 200;
/// Events buffered for a slow client before updates wait for it.
const BUFFER: usize = 256;

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
    let (tx, rx) = mpsc::channel(BUFFER);
    tokio::spawn(feed(app.node.clone(), caller.tenant.clone(), tx));
    let events =
        futures_util::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) },
        );
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

fn event(name: &str, data: &impl Serialize) -> Event {
    Event::default()
        .event(name)
        .json_data(data)
        .unwrap_or_else(|_| Event::default().comment("unencodable"))
}

/// What this stream last sent.
#[derive(Default)]
struct Sent {
    totals: Option<(usize, usize, usize)>,
    rooms: Option<HashMap<String, RoomLive>>,
    activity_id: Option<i64>,
    /// Alert id → (state, acknowledged).
    alerts: Option<HashMap<String, (String, bool)>>,
}

async fn feed(node: Arc<Node>, tenant: TenantId, tx: mpsc::Sender<Event>) {
    let every = node.config.dashboard.update_interval.0;
    let hello =
        serde_json::json!({"tenant": tenant.as_str(), "intervalMs": every.as_millis() as u64});
    if tx.send(event("hello", &hello)).await.is_err() {
        return;
    }
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sent = Sent::default();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tx.closed() => return,
        }
        let mut out = Vec::new();
        live(&node, &tenant, &mut sent, &mut out).await;
        activity(&node, &tenant, &mut sent, &mut out).await;
        alerts(&node, &tenant, &mut sent, &mut out).await;
        for e in out {
            if tx.send(e).await.is_err() {
                return;
            }
        }
    }
}

/// Totals and rooms (skipped while the engine is unreachable).
async fn live(node: &Node, tenant: &TenantId, sent: &mut Sent, out: &mut Vec<Event>) {
    let Ok((totals, rooms)) = node.live_overview(tenant).await else {
        return;
    };
    let t = (totals.users, totals.sessions, totals.rooms);
    if sent.totals != Some(t) {
        sent.totals = Some(t);
        let at = crate::clock::iso(node.clock.wall_now());
        out.push(event(
            "totals",
            &serde_json::json!({"users": t.0, "sessions": t.1, "rooms": t.2, "at": at}),
        ));
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
    let (full, changed, removed): (bool, Vec<&RoomLive>, Vec<&String>) = match &sent.rooms {
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
        let mut changed = changed;
        changed.sort_by(|a, b| a.key.cmp(&b.key));
        out.push(event(
            "rooms",
            &serde_json::json!({"full": full, "rooms": changed, "removed": removed}),
        ));
    }
    sent.rooms = Some(now);
}

/// New activity rows, oldest first (the first update only notes the newest).
async fn activity(node: &Node, tenant: &TenantId, sent: &mut Sent, out: &mut Vec<Event>) {
    let Ok(rows) = node
        .activity(ActivityFilter {
            tenant: tenant.to_string(),
            limit: RECENT,
            ..Default::default()
        })
        .await
    else {
        return;
    };
    let newest = rows.first().map(|r| r.id).unwrap_or(0);
    if let Some(last) = sent.activity_id {
        for r in rows.iter().rev().filter(|r| r.id > last) {
            out.push(event("activity", &ActivityItem::from(r)));
        }
    }
    sent.activity_id = Some(newest.max(sent.activity_id.unwrap_or(0)));
}

/// Alerts that fired, resolved or were acknowledged since the last update:
/// every firing one and the newest others are compared.
async fn alerts(node: &Node, tenant: &TenantId, sent: &mut Sent, out: &mut Vec<Event>) {
    let filter = |state: Option<&str>| AlertFilter {
        tenant: tenant.to_string(),
        state: state.map(str::to_string),
        limit: RECENT,
        ..Default::default()
    };
    let (Ok(firing), Ok(recent)) = (
        node.alerts(filter(Some("firing"))).await,
        node.alerts(filter(None)).await,
    ) else {
        return;
    };
    let first = sent.alerts.is_none();
    let known = sent.alerts.get_or_insert_with(HashMap::new);
    let mut seen: Vec<_> = firing.iter().chain(recent.iter()).collect();
    seen.sort_by(|a, b| (a.fired_at, &a.id).cmp(&(b.fired_at, &b.id)));
    seen.dedup_by(|a, b| a.id == b.id);
    for a in seen {
        let now = (a.state.clone(), a.acked_at.is_some());
        if known.get(&a.id) != Some(&now) {
            if !first {
                out.push(event("alert", &AlertView::from(a)));
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
