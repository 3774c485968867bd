//! Webhook endpoints of the event stream (SPEC §7). Each endpoint (a tenant's
//! URL, secret and event filter, managed over REST) has its own bounded queue
//! and its own delivery task, so a slow or dead endpoint never holds up
//! presence, another endpoint or another tenant:
//!
//! * Events are POSTed in batches, in sequence order: `{"webhookId", "events":
//!   [...]}`, at most `webhooks.batch_size` per POST.
//! * Each POST is signed: `X-Roster-Timestamp` (Unix seconds) and
//!   `X-Roster-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
//! * A batch that fails (a network error, a timeout, or an answer other than
//!   2xx) is tried again with exponential back-off for `webhooks.retry_for`;
//!   then it is recorded as failed (listed over REST) and the endpoint goes on
//!   with the next events.
//! * While the endpoint is behind, at most `webhooks.queue_size` events wait;
//!   further ones are dropped and counted.

use std::collections::{BTreeSet, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use serde::Serialize;
use sha2::Sha256;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Acks, EventConsumer, PresenceEvent};
use crate::clock::iso;
use crate::config::WebhooksConfig;
use crate::ids::TenantId;
use crate::metrics as m;

/// After the first event of a quiet spell, how long the task waits for more to
/// go in the same POST.
const LINGER: Duration = Duration::from_millis(20);
/// One POST's time bound.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The first retry's delay; it doubles up to [`BACKOFF_MAX`].
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Failed batches remembered per endpoint (the newest).
const FAILURES_KEPT: usize = 50;

/// An endpoint as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSpec {
    pub id: String,
    pub tenant: TenantId,
    pub url: String,
    pub secret: String,
    /// The kinds it wants; `None`: every kind but `member_updated` and `room_event`.
    pub events: Option<BTreeSet<String>>,
    pub created_at: i64,
    /// A Pusher app's webhook (docs/PUSHER.md): Pusher's body and headers
    /// (`X-Pusher-Key` is this key), instead of Roster's.
    pub pusher_key: Option<String>,
}

impl WebhookSpec {
    fn wants(&self, kind: &str) -> bool {
        match &self.events {
            Some(k) => k.contains(kind),
            None => super::default_kind(kind),
        }
    }
}

/// The body of a webhook POST.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookBatch<'a> {
    #[schema(value_type = String)]
    pub webhook_id: &'a str,
    /// In the tenant's sequence order.
    #[schema(value_type = Vec<PresenceEvent>)]
    pub events: &'a [Arc<PresenceEvent>],
}

/// A batch given up on after `webhooks.retry_for`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryFailure {
    /// When it was given up on (ISO-8601).
    pub at: String,
    pub first_seq: u64,
    pub last_seq: u64,
    pub events: usize,
    pub attempts: u32,
    /// The last attempt's error: the status answered, or why no answer came.
    pub error: String,
}

/// What an endpoint did so far (since this process started).
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryStats {
    /// Events waiting.
    pub queued: usize,
    pub delivered: u64,
    /// Events of batches given up on.
    pub failed: u64,
    /// Events dropped because the queue was full.
    pub dropped: u64,
    /// The last attempt's error, if it failed.
    pub last_error: Option<String>,
    /// The newest failed batches, newest last.
    pub failures: Vec<DeliveryFailure>,
}

struct Endpoint {
    spec: WebhookSpec,
    queue: Mutex<VecDeque<Arc<PresenceEvent>>>,
    wake: Notify,
    closed: AtomicBool,
    delivered: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    last_error: Mutex<Option<String>>,
    failures: Mutex<VecDeque<DeliveryFailure>>,
    /// Where this endpoint's cursor is acknowledged (the stream's, set at
    /// the first offer).
    acks: Mutex<Option<Acks>>,
    /// The newest event skipped by the filter while others were queued: the
    /// cursor moves past it once the queue is empty.
    skipped_to: AtomicU64,
    /// A Pusher webhook's sessions per (channel, user), to tell a user's
    /// first join and last leave (Pusher's members are users).
    members: Mutex<std::collections::HashMap<(String, String), u32>>,
}

impl Endpoint {
    /// `false`: the queue is full (the event stays in the log for later).
    fn offer(&self, e: &Arc<PresenceEvent>, cap: usize, acks: &Acks) -> bool {
        if self.acks.lock().is_none() {
            *self.acks.lock() = Some(acks.clone());
        }
        let mut q = self.queue.lock();
        if !self.spec.wants(&e.kind) {
            if q.is_empty() {
                acks.ack(&self.spec.tenant, &self.spec.id, e.seq);
            } else {
                self.skipped_to.fetch_max(e.seq, Ordering::Relaxed);
            }
            return true;
        }
        if q.len() >= cap {
            return false;
        }
        q.push_back(e.clone());
        drop(q);
        self.wake.notify_one();
        true
    }

    /// The batch ending at `last` is done (delivered or given up on).
    fn done(&self, last: u64) {
        let empty = self.queue.lock().is_empty();
        let upto = if empty {
            last.max(self.skipped_to.load(Ordering::Relaxed))
        } else {
            last
        };
        if let Some(a) = &*self.acks.lock() {
            a.ack(&self.spec.tenant, &self.spec.id, upto);
        }
    }

    /// The body of a POST of `batch`: Roster's, or Pusher's (`None`: no
    /// Pusher event among them).
    fn render(&self, batch: &[Arc<PresenceEvent>]) -> Option<Vec<u8>> {
        if self.spec.pusher_key.is_none() {
            return Some(
                serde_json::to_vec(&WebhookBatch {
                    webhook_id: &self.spec.id,
                    events: batch,
                })
                .unwrap_or_default(),
            );
        }
        let mut members = self.members.lock();
        let events: Vec<serde_json::Value> = batch
            .iter()
            .filter_map(|e| pusher_event(&mut members, e))
            .collect();
        if events.is_empty() {
            return None;
        }
        let time_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        serde_json::to_vec(&serde_json::json!({"time_ms": time_ms, "events": events})).ok()
    }

    fn stats(&self) -> DeliveryStats {
        DeliveryStats {
            queued: self.queue.lock().len(),
            delivered: self.delivered.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            last_error: self.last_error.lock().clone(),
            failures: self.failures.lock().iter().cloned().collect(),
        }
    }
}

/// Pusher's webhook event of a presence event, if it has one:
/// `channel_occupied`/`channel_vacated` for every room; `member_added` at a
/// user's first session in a presence channel, `member_removed` at its last.
/// `members` counts sessions per (channel, user); a count unknown (a restart,
/// another node took the delivery over) is taken as none, so a user's second
/// session may then be reported as added once more.
fn pusher_event(
    members: &mut std::collections::HashMap<(String, String), u32>,
    e: &PresenceEvent,
) -> Option<serde_json::Value> {
    use serde_json::json;
    let room = e.room.clone()?;
    match e.kind.as_str() {
        "room_occupied" => Some(json!({"name": "channel_occupied", "channel": room})),
        "room_vacated" => {
            members.retain(|(r, _), _| *r != room);
            Some(json!({"name": "channel_vacated", "channel": room}))
        }
        // A client's `client-*` event on a private or presence channel; its
        // data as the string Pusher sends.
        "room_event" => {
            let event = e.event.clone()?;
            let user = e.user_id.clone()?;
            if !event.starts_with("client-")
                || !(room.starts_with("private-") || room.starts_with("presence-"))
            {
                return None;
            }
            let data = match &e.data {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
                None => String::new(),
            };
            let mut v =
                json!({"name": "client_event", "channel": room, "event": event, "data": data});
            if room.starts_with("presence-") {
                v["user_id"] = json!(user);
            }
            Some(v)
        }
        "member_added" | "member_removed" if room.starts_with("presence-") => {
            let user = e.user_id.clone()?;
            let key = (room.clone(), user.clone());
            if e.kind == "member_added" {
                let n = members.entry(key).or_insert(0);
                *n += 1;
                (*n == 1).then(|| json!({"name": "member_added", "channel": room, "user_id": user}))
            } else {
                let n = members.get(&key).copied().unwrap_or(1).saturating_sub(1);
                if n == 0 {
                    members.remove(&key);
                    Some(json!({"name": "member_removed", "channel": room, "user_id": user}))
                } else {
                    members.insert(key, n);
                    None
                }
            }
        }
        _ => None,
    }
}

/// Every endpoint of every tenant, and their delivery tasks.
pub struct Webhooks {
    cfg: WebhooksConfig,
    client: reqwest::Client,
    /// By tenant and id: ids are the tenant's own (two tenants may both
    /// have a `crm`).
    endpoints: DashMap<(TenantId, String), Arc<Endpoint>>,
    /// The endpoints of each tenant (what an event is offered to).
    by_tenant: DashMap<TenantId, Vec<Arc<Endpoint>>>,
}

impl Webhooks {
    pub fn new(cfg: WebhooksConfig) -> Arc<Self> {
        let client = http_client(&cfg);
        Arc::new(Self {
            cfg,
            client,
            endpoints: DashMap::new(),
            by_tenant: DashMap::new(),
        })
    }

    /// Starts (or replaces, keeping the events waiting) an endpoint.
    pub fn upsert(self: &Arc<Self>, spec: WebhookSpec) {
        let ep = Arc::new(Endpoint {
            spec: spec.clone(),
            queue: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            last_error: Mutex::new(None),
            failures: Mutex::new(VecDeque::new()),
            acks: Mutex::new(None),
            skipped_to: AtomicU64::new(0),
            members: Mutex::default(),
        });
        // Tenant list first, then the old endpoint's queue: an event offered in
        // between goes to one of the two and is moved over with the rest.
        self.set_tenant_endpoint(&spec.tenant, Some(&ep), &spec.id);
        if let Some(old) = self
            .endpoints
            .insert((spec.tenant.clone(), spec.id.clone()), ep.clone())
        {
            old.closed.store(true, Ordering::SeqCst);
            old.wake.notify_one();
            let waiting: Vec<_> = old.queue.lock().drain(..).collect();
            ep.queue.lock().extend(waiting);
            for (n, f) in [
                (&ep.delivered, &old.delivered),
                (&ep.failed, &old.failed),
                (&ep.dropped, &old.dropped),
            ] {
                n.store(f.load(Ordering::Relaxed), Ordering::Relaxed);
            }
            *ep.failures.lock() = old.failures.lock().clone();
        }
        tokio::spawn(self.clone().deliver(ep));
    }

    /// Stops an endpoint; its waiting events are dropped.
    pub fn remove(&self, tenant: &TenantId, id: &str) -> bool {
        let Some((_, ep)) = self.endpoints.remove(&(tenant.clone(), id.to_string())) else {
            return false;
        };
        ep.closed.store(true, Ordering::SeqCst);
        ep.wake.notify_one();
        self.set_tenant_endpoint(tenant, None, id);
        true
    }

    fn set_tenant_endpoint(&self, tenant: &TenantId, ep: Option<&Arc<Endpoint>>, id: &str) {
        let mut list = self.by_tenant.entry(tenant.clone()).or_default();
        list.retain(|e| e.spec.id != id);
        if let Some(ep) = ep {
            list.push(ep.clone());
        }
    }

    /// Waits until every endpoint's queue is empty, or `within` has passed;
    /// answers how many events are still waiting (shutdown).
    pub async fn flush(&self, within: Duration) -> usize {
        let end = Instant::now() + within;
        loop {
            let waiting: usize = self.endpoints.iter().map(|e| e.queue.lock().len()).sum();
            if waiting == 0 || Instant::now() >= end {
                return waiting;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every running endpoint, as (tenant, id).
    pub fn all_ids(&self) -> Vec<(TenantId, String)> {
        self.endpoints
            .iter()
            .map(|e| (e.spec.tenant.clone(), e.spec.id.clone()))
            .collect()
    }

    /// An endpoint of `tenant` with what it did so far.
    pub fn get(&self, tenant: &TenantId, id: &str) -> Option<(WebhookSpec, DeliveryStats)> {
        self.endpoints
            .get(&(tenant.clone(), id.to_string()))
            .map(|ep| (ep.spec.clone(), ep.stats()))
    }

    /// The endpoints of `tenant`, by id.
    pub fn list(&self, tenant: &TenantId) -> Vec<(WebhookSpec, DeliveryStats)> {
        let mut out: Vec<_> = self
            .by_tenant
            .get(tenant)
            .map(|l| l.iter().map(|ep| (ep.spec.clone(), ep.stats())).collect())
            .unwrap_or_default();
        out.sort_by(|a: &(WebhookSpec, _), b| a.0.id.cmp(&b.0.id));
        out
    }

    /// The delivery task of one endpoint: batches in order, each retried until
    /// it is delivered or `webhooks.retry_for` has passed.
    async fn deliver(self: Arc<Self>, ep: Arc<Endpoint>) {
        loop {
            loop {
                if ep.closed.load(Ordering::SeqCst) {
                    return;
                }
                if !ep.queue.lock().is_empty() {
                    break;
                }
                ep.wake.notified().await;
            }
            // Linger for a fuller batch only when there is not one already
            // (otherwise one endpoint tops out at batch_size per LINGER).
            if ep.queue.lock().len() < self.cfg.batch_size {
                tokio::time::sleep(LINGER).await;
            }
            let batch: Vec<Arc<PresenceEvent>> = ep
                .queue
                .lock()
                .iter()
                .take(self.cfg.batch_size)
                .cloned()
                .collect();
            if batch.is_empty() {
                continue;
            }
            let Some(body) = ep.render(&batch) else {
                // Nothing for a Pusher webhook in these events.
                let n = batch.len().min(ep.queue.lock().len());
                ep.queue.lock().drain(..n);
                ep.done(batch.last().map(|e| e.seq).unwrap_or(0));
                continue;
            };
            let started = Instant::now();
            let mut attempts = 0u32;
            let result = loop {
                attempts += 1;
                match self.post(&ep.spec, &body).await {
                    Ok(()) => break Ok(()),
                    Err(e) => {
                        *ep.last_error.lock() = Some(e.clone());
                        let waited = started.elapsed();
                        if ep.closed.load(Ordering::SeqCst) {
                            return;
                        }
                        if waited >= self.cfg.retry_for.0 {
                            break Err(e);
                        }
                        metrics::counter!(m::WEBHOOK_RETRIES).increment(1);
                        let pause = backoff(attempts).min(self.cfg.retry_for.0 - waited);
                        tokio::time::sleep(pause).await;
                    }
                }
            };
            {
                let mut q = ep.queue.lock();
                let n = batch.len().min(q.len());
                q.drain(..n);
            }
            ep.done(batch.last().map(|e| e.seq).unwrap_or(0));
            let n = batch.len() as u64;
            match result {
                Ok(()) => {
                    *ep.last_error.lock() = None;
                    ep.delivered.fetch_add(n, Ordering::Relaxed);
                    metrics::counter!(m::WEBHOOK_EVENTS, "outcome" => "delivered").increment(n);
                }
                Err(error) => {
                    tracing::warn!(webhook = %ep.spec.id, tenant = %ep.spec.tenant, events = n, attempts, "webhook batch given up: {error}");
                    ep.failed.fetch_add(n, Ordering::Relaxed);
                    metrics::counter!(m::WEBHOOK_EVENTS, "outcome" => "failed").increment(n);
                    let mut f = ep.failures.lock();
                    f.push_back(DeliveryFailure {
                        at: iso(std::time::SystemTime::now()),
                        first_seq: batch.first().map(|e| e.seq).unwrap_or(0),
                        last_seq: batch.last().map(|e| e.seq).unwrap_or(0),
                        events: batch.len(),
                        attempts,
                        error,
                    });
                    while f.len() > FAILURES_KEPT {
                        f.pop_front();
                    }
                }
            }
        }
    }

    async fn post(&self, spec: &WebhookSpec, body: &[u8]) -> Result<(), String> {
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            .to_string();
        let req = self
            .client
            .post(&spec.url)
            .header("content-type", "application/json");
        let req = match &spec.pusher_key {
            Some(key) => req.header("x-pusher-key", key).header(
                "x-pusher-signature",
                crate::protocol::pusher::sign_bytes(&spec.secret, body),
            ),
            None => req
                .header("x-roster-webhook-id", &spec.id)
                .header("x-roster-timestamp", &ts)
                .header("x-roster-signature", signature(&spec.secret, &ts, body)),
        };
        let r = req.body(body.to_vec()).send().await.map_err(|e| {
            if e.is_timeout() {
                format!(
                    "no answer within {}s (timed out)",
                    REQUEST_TIMEOUT.as_secs()
                )
            } else {
                format!("no answer: {e}")
            }
        })?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(format!("answered {}", r.status().as_u16()))
        }
    }
}

impl EventConsumer for Webhooks {
    fn wants(&self, tenant: &TenantId) -> bool {
        self.by_tenant.get(tenant).is_some_and(|l| !l.is_empty())
    }

    fn wants_opt_in(&self, tenant: &TenantId, kind: &str) -> bool {
        self.by_tenant.get(tenant).is_some_and(|l| {
            l.iter()
                .any(|ep| ep.spec.events.as_ref().is_some_and(|k| k.contains(kind)))
        })
    }

    fn queues(&self, tenant: &TenantId) -> Vec<String> {
        self.by_tenant
            .get(tenant)
            .map(|l| l.iter().map(|ep| ep.spec.id.clone()).collect())
            .unwrap_or_default()
    }

    fn offer(&self, tenant: &TenantId, queue: &str, e: &Arc<PresenceEvent>, acks: &Acks) -> bool {
        match self.endpoints.get(&(tenant.clone(), queue.to_string())) {
            Some(ep) => ep.offer(e, self.cfg.queue_size, acks),
            None => true, // removed meanwhile
        }
    }

    fn ready(&self, tenant: &TenantId, queue: &str) -> bool {
        self.endpoints
            .get(&(tenant.clone(), queue.to_string()))
            .is_none_or(|ep| ep.queue.lock().len() < self.cfg.queue_size)
    }

    fn lost(&self, tenant: &TenantId, queue: &str, n: u64) {
        if let Some(ep) = self.endpoints.get(&(tenant.clone(), queue.to_string())) {
            ep.dropped.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn reset(&self, tenant: &TenantId) {
        if let Some(list) = self.by_tenant.get(tenant) {
            for ep in list.iter() {
                ep.queue.lock().clear();
            }
        }
    }
}

/// `v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`: what a receiver
/// recomputes to check a POST (and it refuses timestamps older than 5 minutes).
pub fn signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The HTTP client of every outgoing webhook (event stream, alerts): a time
/// bound per POST, no redirects, and unless `webhooks.allow_private`, names
/// resolved to public addresses only.
pub fn http_client(cfg: &WebhooksConfig) -> reqwest::Client {
    let mut client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("roster/", env!("CARGO_PKG_VERSION")));
    if !cfg.allow_private {
        client = client.dns_resolver(PublicOnly);
    }
    client.build().unwrap_or_default()
}

/// The pause before retry `attempt` (1, 2, …): doubling from 250 ms up to 30 s.
pub fn backoff(attempt: u32) -> Duration {
    BACKOFF_FIRST
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(BACKOFF_MAX)
}

/// Checks an endpoint URL: `http` or `https` with a host, and unless
/// `webhooks.allow_private`, a host that is not (and resolves to no) loopback,
/// private, link-local or unspecified address.
pub async fn check_url(url: &str, allow_private: bool) -> Result<String, String> {
    let u = reqwest::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err("must be http:// or https://".into());
    }
    let host = u
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or("needs a host")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if allow_private {
        return Ok(u.to_string());
    }
    let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) if host == "localhost" || host.ends_with(".localhost") => {
            return Err(format!(
                "{host} is a loopback address (webhooks.allow_private is off)"
            ))
        }
        Err(_) => resolve(&host).await?,
    };
    if let Some(ip) = addrs.iter().find(|ip| is_private(**ip)) {
        return Err(format!(
            "{host} is a private or loopback address ({ip}; webhooks.allow_private is off)"
        ));
    }
    Ok(u.to_string())
}

/// Resolves endpoint host names at each connection and keeps only public
/// addresses: a name that was public when its endpoint was created cannot be
/// pointed at the server's own network later (DNS rebinding). IP literals are
/// checked once, by [`check_url`].
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs = public_addrs(&host).await?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// A host name's addresses (when the endpoint is saved, and at each
/// connection).
async fn resolve(host: &str) -> Result<Vec<IpAddr>, String> {
    Ok(tokio::net::lookup_host((host, 0))
        .await
        .map_err(|e| format!("{host} does not resolve: {e}"))?
        .map(|a| a.ip())
        .collect())
}

/// Its public addresses (the port is the URL's: the connector sets it).
async fn public_addrs(host: &str) -> Result<Vec<std::net::SocketAddr>, String> {
    let all = resolve(host).await?;
    let public: Vec<_> = all
        .iter()
        .filter(|ip| !is_private(**ip))
        .map(|ip| std::net::SocketAddr::new(*ip, 0))
        .collect();
    if public.is_empty() {
        return Err(format!(
            "{host} resolves to no public address ({}; webhooks.allow_private is off)",
            all.iter()
                .map(|ip| ip.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(public)
}

fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                // 100.64.0.0/10, shared address space (carrier-grade NAT).
                || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_over_timestamp_dot_body() {
        // Known answer, from Python: hmac.new(b"secret", b"1700000000.{}",
        // hashlib.sha256).hexdigest().
        assert_eq!(
            signature("secret", "1700000000", b"{}"),
            "v1=b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163"
        );
    }

    #[tokio::test]
    async fn at_delivery_a_name_that_resolves_privately_is_refused() {
        let e = public_addrs("localhost").await.unwrap_err();
        assert!(e.contains("no public address"), "{e}");
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        assert_eq!(backoff(1), Duration::from_millis(250));
        assert_eq!(backoff(2), Duration::from_millis(500));
        assert_eq!(backoff(4), Duration::from_secs(2));
        assert_eq!(backoff(40), BACKOFF_MAX);
    }

    #[tokio::test]
    async fn private_and_malformed_urls_are_refused_unless_allowed() {
        for bad in [
            "http://127.0.0.1:9000/hook",
            "http://localhost/hook",
            "http://10.1.2.3/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/hook",
            "http://[fd00::1]/hook",
            "http://[::ffff:192.168.1.1]/hook",
        ] {
            let e = check_url(bad, false).await.unwrap_err();
            assert!(
                e.contains("private") || e.contains("loopback"),
                "{bad}: {e}"
            );
        }
        assert!(check_url("http://127.0.0.1:9000/hook", true).await.is_ok());
        assert!(check_url("http://93.184.215.14/hook", false).await.is_ok());
        for bad in ["no url", "ftp://example.com/x", "http://"] {
            assert!(check_url(bad, true).await.is_err(), "{bad}");
        }
    }
}
