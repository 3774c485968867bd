//! The alert evaluator: every `alerts.eval_interval`, on the one node holding
//! the `alerts` lease in the database, each tenant's enabled rules are checked
//! against what every node sees (rooms and sessions from the engine, timeouts
//! from the activity log). A breach without a firing alert fires one; a firing
//! alert whose breach is gone (or whose rule was disabled or deleted) resolves.
//! The database's one-firing-row rule backs the lease up: during a hand-over
//! two nodes may evaluate once each, and still one row fires.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::notify::Notifier;
use super::{
    evaluate, AlertView, Histories, Kind, Observation, RoomObs, Rule, SessionObs, TimeoutObs,
};
use crate::ids::{RoomId, RoomKey, TenantId};
use crate::metrics as m;
use crate::node::Node;
use crate::store::{
    unix_ms, ActivityFilter, AlertFilter, StoreError, StoredAlert, StoredAlertRule, UnixMs,
    MAX_PAGE,
};

/// The lease's name in the `leases` table.
const LEASE: &str = "alerts";

/// Runs until `stop`; `holder` names this node in the lease.
pub async fn run(
    node: Arc<Node>,
    notifier: Arc<Notifier>,
    holder: String,
    stop: CancellationToken,
) {
    let every = node.config.alerts.eval_interval.0;
    // Another node takes over after three missed renewals.
    let ttl = (every * 3).max(Duration::from_secs(1));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut histories = Histories::new();
    let mut held = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => break,
        }
        let now = unix_ms(node.clock.wall_now());
        held = match node
            .store
            .hold_lease(LEASE, &holder, now, now + ttl.as_millis() as i64)
            .await
        {
            Ok(h) => h,
            Err(e) => {
                tracing::debug!("alert lease not renewed (will retry): {e}");
                false
            }
        };
        if !held {
            // Samples of another holder's time would be stale here.
            histories.clear();
            continue;
        }
        if let Err(e) = evaluate_all(&node, &notifier, &mut histories, now).await {
            tracing::warn!("alert evaluation failed (will retry): {e}");
        }
    }
    if held {
        let _ = node.store.release_lease(LEASE, &holder).await;
    }
}

/// One evaluation of every tenant's rules.
pub async fn evaluate_all(
    node: &Node,
    notifier: &Arc<Notifier>,
    histories: &mut Histories,
    now: UnixMs,
) -> Result<(), StoreError> {
    metrics::counter!(m::ALERT_EVALUATIONS).increment(1);
    let mut by_tenant: BTreeMap<String, Vec<StoredAlertRule>> = BTreeMap::new();
    for r in node.store.alert_rules(None).await? {
        by_tenant.entry(r.tenant.clone()).or_default().push(r);
    }
    // (A deleted rule's alerts resolve when it is deleted: node/alerts.rs.)
    let mut firing_total = 0usize;
    let mut live = std::collections::HashSet::new();
    for (tenant, rules) in by_tenant {
        let Ok(tid) = TenantId::parse(&tenant) else {
            continue;
        };
        let firing = node
            .store
            .list_alerts(AlertFilter {
                tenant: tenant.clone(),
                state: Some("firing".into()),
                limit: MAX_PAGE,
                ..Default::default()
            })
            .await?;
        let enabled: Vec<(&StoredAlertRule, Rule)> = rules
            .iter()
            .filter(|r| r.enabled)
            .filter_map(|r| Some((r, Rule::from_stored(r)?)))
            .collect();
        let obs = match observe(node, &tid, &enabled, now).await {
            Ok(o) => o,
            Err(e) => {
                tracing::debug!(%tenant, "alert rules not evaluated: presence engine unavailable: {e:?}");
                firing_total += firing.len();
                continue;
            }
        };
        let mut still_firing = firing.len();
        for (stored, rule) in &enabled {
            live.insert((tenant.clone(), rule.id.clone()));
            let h = histories
                .entry((tenant.clone(), rule.id.clone()))
                .or_default();
            let breaches = evaluate(rule, &obs, h);
            for b in &breaches {
                if firing
                    .iter()
                    .any(|f| f.rule_id == rule.id && f.subject == b.subject)
                {
                    continue;
                }
                let alert = StoredAlert {
                    tenant: tenant.clone(),
                    id: format!("al_{}", uuid::Uuid::new_v4().simple()),
                    rule_id: rule.id.clone(),
                    rule_name: stored.name.clone(),
                    kind: stored.kind.clone(),
                    severity: stored.severity.clone(),
                    scope: stored.scope.clone(),
                    target: stored.target.clone(),
                    subject: b.subject.clone(),
                    state: "firing".into(),
                    value: b.value.round() as i64,
                    threshold: stored.threshold,
                    message: b.message.clone(),
                    fired_at: now,
                    resolved_at: None,
                    acked_at: None,
                    acked_by: None,
                };
                if node.store.fire_alert(&alert).await? {
                    still_firing += 1;
                    tracing::warn!(%tenant, rule = %rule.id, severity = %stored.severity, "alert fired: {}", b.message);
                    metrics::counter!(m::ALERTS_FIRED, "severity" => severity_label(&stored.severity)).increment(1);
                    notify(notifier, stored, "alert_fired", &alert);
                }
            }
            for f in firing.iter().filter(|f| f.rule_id == rule.id) {
                if breaches.iter().any(|b| b.subject == f.subject) {
                    continue;
                }
                if resolve(node, notifier, Some(stored), f, now).await? {
                    still_firing -= 1;
                }
            }
        }
        // Alerts of rules that were disabled or deleted.
        for f in &firing {
            if !enabled.iter().any(|(_, r)| r.id == f.rule_id)
                && resolve(
                    node,
                    notifier,
                    rules.iter().find(|r| r.id == f.rule_id),
                    f,
                    now,
                )
                .await?
            {
                still_firing -= 1;
            }
        }
        firing_total += still_firing;
    }
    histories.retain(|k, _| live.contains(k));
    metrics::gauge!(m::ALERTS_FIRING).set(firing_total as f64);
    Ok(())
}

async fn resolve(
    node: &Node,
    notifier: &Arc<Notifier>,
    rule: Option<&StoredAlertRule>,
    f: &StoredAlert,
    now: UnixMs,
) -> Result<bool, StoreError> {
    let Some(done) = node.store.resolve_alert(&f.tenant, &f.id, now).await? else {
        return Ok(false);
    };
    tracing::info!(tenant = %f.tenant, rule = %f.rule_id, "alert resolved: {}", f.message);
    metrics::counter!(m::ALERTS_RESOLVED, "severity" => severity_label(&f.severity)).increment(1);
    if let Some(rule) = rule {
        notify(notifier, rule, "alert_resolved", &done);
    }
    Ok(true)
}

fn notify(
    notifier: &Arc<Notifier>,
    rule: &StoredAlertRule,
    kind: &'static str,
    alert: &StoredAlert,
) {
    if let (Some(url), Some(secret)) = (&rule.webhook_url, &rule.webhook_secret) {
        notifier.send(url.clone(), secret.clone(), kind, AlertView::from(alert));
    }
}

/// A bounded label: the three severities, anything else as `other`.
fn severity_label(s: &str) -> &'static str {
    match s {
        "info" => "info",
        "warning" => "warning",
        "critical" => "critical",
        _ => "other",
    }
}

/// What the tenant's rules need to see now, from every node.
async fn observe(
    node: &Node,
    tenant: &TenantId,
    rules: &[(&StoredAlertRule, Rule)],
    now: UnixMs,
) -> Result<Observation, crate::engine::EngineError> {
    let rooms: Vec<RoomObs> = node
        .rooms(tenant)
        .await?
        .into_iter()
        .map(|r| RoomObs {
            key: r.id.key.to_string(),
            room_type: r.settings.room_type,
            capacity: r.settings.capacity,
            sessions: r.sessions,
        })
        .collect();
    let needs_sessions = rules
        .iter()
        .any(|(_, r)| matches!(r.kind, Kind::Latency | Kind::OnlineDrop));
    let sessions = if needs_sessions {
        node.session_facts(tenant)
            .await?
            .into_iter()
            .map(|s| SessionObs {
                user: s.user,
                rooms: s.rooms,
                latency_ms: s.latency_ms,
            })
            .collect()
    } else {
        Vec::new()
    };
    let longest = rules
        .iter()
        .filter(|(_, r)| r.kind == Kind::HeartbeatMissed)
        .map(|(_, r)| r.window)
        .max();
    let mut timeouts = Vec::new();
    if let Some(w) = longest {
        let types: HashMap<&str, &str> = rooms
            .iter()
            .map(|r| (r.key.as_str(), r.room_type.as_str()))
            .collect();
        let rows = node
            .activity(ActivityFilter {
                tenant: tenant.to_string(),
                kind: Some("timeout".into()),
                from: Some(now - w.as_millis() as i64),
                limit: MAX_PAGE,
                ..Default::default()
            })
            .await;
        match rows {
            Ok(rows) => {
                for row in rows {
                    let (Some(room), Some(session)) = (row.room, row.session) else {
                        continue;
                    };
                    let room_type = match types.get(room.as_str()) {
                        Some(t) => t.to_string(),
                        None => match RoomKey::parse(&room) {
                            Ok(key) => {
                                node.ad_hoc_settings(&RoomId {
                                    tenant: tenant.clone(),
                                    key,
                                })
                                .room_type
                            }
                            Err(_) => String::new(),
                        },
                    };
                    timeouts.push(TimeoutObs {
                        at: row.at,
                        room,
                        room_type,
                        session,
                    });
                }
            }
            Err(e) => tracing::debug!(%tenant, "timeouts not read for alert rules: {e}"),
        }
    }
    Ok(Observation {
        at: now,
        rooms,
        sessions,
        timeouts,
    })
}
