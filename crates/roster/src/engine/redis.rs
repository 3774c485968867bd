//! The shared engine: presence state in Redis, so several nodes serve one truth
//! (SPEC §6). Every transition is one Lua script (`redis.lua`), atomic across
//! nodes; what members must see is published by the script itself on the room's
//! channel, so every node receives a room's diffs in `seq` order and delivers
//! them to its own members. Nothing is read, changed and written back from here.
//!
//! Key layout: `docs/ARCHITECTURE.md` §13 and the header of `redis.lua`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use dashmap::DashMap;
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{PushInfo, PushKind, Script, Value as RValue};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{
    Cluster, DeadSession, EngineError, EngineEvent, EventLog, Locks, Outbox, Outgoing, Presence,
    RoomPatch, RoomSummary, Rooms, SessionsAsked, SubMode, UserChange, UserRecord, Users,
};
use crate::clock::Clock;
use crate::core::diff::{plan, Op, Plan};
use crate::core::error::CoreError;
use crate::core::room::{
    AccessChange, Actor, EntityView, FieldLock, Joined, Left, LockOutcome, LockOwnerView, Member,
    MemberView, NeedsFlush, PresenceDiff, PresenceSnapshot, ReleasedLock, RoomSettings, RoomStatus,
    UserEntry,
};
use crate::core::room_type::{RoomTiming, Visibility};
use crate::core::session::SessionInfoView;
use crate::core::transition::Transition;
use crate::core::types::{LeaveReason, Role, Status};
use crate::ids::{RoomId, RoomKey, SessionId, TenantId, UserId, UserRef};

const SCRIPTS: &str = include_str!("redis.lua");

/// One Redis (`redis://`, a `ConnectionManager`) or a Redis Cluster
/// (`redis-cluster://`, routed by key slot). Scripts, commands and same-slot
/// pipelines go through either; room channels are sharded on a cluster.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, RValue> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }
    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<RValue>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }
    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

impl Conn {
    fn sharded(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }
    /// A room channel: sharded pub/sub on a cluster (the channel has the room's
    /// hash tag, so it lives on the room's shard).
    async fn subscribe_room(&mut self, ch: &str) -> redis::RedisResult<()> {
        match self {
            Conn::Single(c) => c.subscribe(ch).await,
            Conn::Cluster(c) => c.ssubscribe(ch).await,
        }
    }
    async fn unsubscribe_room(&mut self, ch: &str) -> redis::RedisResult<()> {
        match self {
            Conn::Single(c) => c.unsubscribe(ch).await,
            Conn::Cluster(c) => c.sunsubscribe(ch).await,
        }
    }
    async fn subscribe(&mut self, ch: &str) -> redis::RedisResult<()> {
        match self {
            Conn::Single(c) => c.subscribe(ch).await,
            Conn::Cluster(c) => c.subscribe(ch).await,
        }
    }
}

/// `redis-cluster://[:password@]host:port[,host:port…]` → one `redis://` URL per
/// seed node (RESP3).
fn cluster_nodes(url: &str) -> Result<Vec<String>, String> {
    let rest = url
        .strip_prefix("redis-cluster://")
        .ok_or("expected redis-cluster://host:port[,host:port…]")?;
    let (creds, hosts) = match rest.rsplit_once('@') {
        Some((c, h)) => (format!("{c}@"), h),
        None => (String::new(), rest),
    };
    let hosts = hosts.trim_end_matches('/');
    let nodes: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|h| format!("redis://{creds}{h}/?protocol=resp3"))
        .collect();
    if nodes.is_empty() {
        return Err("no seed node in the URL".into());
    }
    Ok(nodes)
}

/// How long after a `clientId` take-over a liveness claim keeps off the session:
/// the new node writes its liveness right after the take-over, so a claim inside
/// this window raced that write (a deadline due at the very end of a grace).
const TAKE_OVER_SETTLE: Duration = Duration::from_secs(5);

/// The scripts of `redis.lua`, each with the prelude in front.
struct Scripts(HashMap<&'static str, Script>);

impl Scripts {
    fn load() -> Self {
        let mut parts = SCRIPTS.split("\n--@@ ");
        let prelude = parts.next().unwrap_or_default();
        let mut map = HashMap::new();
        for part in parts {
            let (name, body) = part.split_once('\n').unwrap_or((part, ""));
            map.insert(name.trim(), Script::new(&format!("{prelude}\n{body}")));
        }
        Self(map)
    }
    fn get(&self, name: &str) -> &Script {
        // Names are literals of this module; a unit test checks each exists.
        &self.0[name]
    }
}

/// One node's view of a room it has members in: who they are and what each has
/// been sent, so a diff reaches each exactly once and after its snapshot.
#[derive(Default)]
struct LocalRoom {
    members: Mutex<HashMap<SessionId, LocalMember>>,
    /// Whether this node is subscribed to the room's channel. Held across the
    /// (un)subscribe so a join never races an unsubscribe.
    subscribed: Arc<tokio::sync::Mutex<bool>>,
    removed: AtomicBool,
}

struct LocalMember {
    count_mode: bool,
    /// The `seq` of the last diff or snapshot this member was sent.
    last_seq: u64,
    /// The count this member was last told (count mode): a count is sent only
    /// when it differs.
    last_count: usize,
    /// Messages that arrived while this member's snapshot was being taken.
    buffer: Option<Vec<Arc<RoomMsg>>>,
}

enum RoomMsg {
    Diff(RoomDiff),
    Event(Transition),
}

/// A flush as this node received it: the window's log planned by
/// `core::diff::plan` and rendered once per recipient group, here.
struct RoomDiff {
    hdr: DiffHeader,
    diffs: Plan<PresenceDiff>,
}

/// What the flush script publishes (see `--@@ flush` in redis.lua).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DiffHeader {
    seq: u64,
    count: usize,
    over: bool,
    back_under: bool,
    count_changed: bool,
}

#[derive(Deserialize)]
struct Published {
    #[serde(flatten)]
    hdr: DiffHeader,
    ops: Vec<String>,
    views: HashMap<SessionId, MemberView>,
}

/// One entry of the room's `p` list (see redis.lua) as a `core::diff::Op`.
fn parse_op(s: &str) -> Option<Op> {
    let (kind, rest) = s.split_at_checked(2)?;
    match kind {
        "J:" => SessionId::parse(rest).ok().map(Op::Join),
        "U:" => SessionId::parse(rest).ok().map(Op::Update),
        "C:" => SessionId::parse(rest).ok().map(Op::Cut),
        "L:" => serde_json::from_str(rest).ok().map(Op::Leave),
        _ => None,
    }
}

impl RoomDiff {
    fn parse(room: &RoomId, payload: &str) -> Result<Self, String> {
        let p: Published = serde_json::from_str(payload).map_err(|e| e.to_string())?;
        let ops = p
            .ops
            .iter()
            .map(|o| parse_op(o).ok_or_else(|| format!("bad op {o:?}")))
            .collect::<Result<Vec<_>, _>>()?;
        let plan = plan(&ops);
        let view = |s: &SessionId| p.views.get(s).cloned();
        let key = room.key.as_str();
        Ok(RoomDiff {
            diffs: plan.render(key, p.hdr.seq, &view),
            hdr: p.hdr,
        })
    }
}

struct Inner {
    conn: Conn,
    sub: Conn,
    prefix: String,
    node_id: String,
    scripts: Scripts,
    outbox: Arc<dyn Outbox>,
    clock: Clock,
    local: DashMap<RoomId, Arc<LocalRoom>>,
    channels: DashMap<String, RoomId>,
    events: mpsc::UnboundedSender<EngineEvent>,
    healthy: AtomicBool,
    user_cells: DashMap<UserRef, Arc<AtomicU8>>,
    /// Questions this node asked the others (`remote_sessions`), by id: where
    /// their answers go.
    surveys: DashMap<String, mpsc::UnboundedSender<Vec<SessionInfoView>>>,
}

/// How long a node waits for the others' answers about their sessions. A node
/// that died stays listed (`P:nodes`) until its sessions' deadline passes; until
/// then a question waits this long for it and answers without it.
const SURVEY_TIMEOUT: Duration = Duration::from_millis(500);

pub struct RedisEngine {
    inner: Arc<Inner>,
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn unavailable(e: redis::RedisError) -> EngineError {
    tracing::warn!("redis: {e}");
    EngineError::Unavailable
}

// ---- reading script replies -------------------------------------------------

fn is_none(v: &RValue) -> bool {
    matches!(v, RValue::Nil | RValue::Boolean(false))
}
fn text(v: &RValue) -> String {
    match v {
        RValue::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        RValue::SimpleString(s) => s.clone(),
        RValue::VerbatimString { text, .. } => text.clone(),
        RValue::Int(i) => i.to_string(),
        RValue::Double(d) => d.to_string(),
        RValue::Okay => "OK".into(),
        _ => String::new(),
    }
}
fn int(v: &RValue) -> i64 {
    match v {
        RValue::Int(i) => *i,
        RValue::Boolean(b) => *b as i64,
        other => text(other).parse().unwrap_or(0),
    }
}
fn arr(v: &RValue) -> &[RValue] {
    match v {
        RValue::Array(a) | RValue::Set(a) => a,
        _ => &[],
    }
}
fn texts(v: &RValue) -> Vec<String> {
    arr(v).iter().map(text).collect()
}
/// A flat `[k, v, k, v…]` array (or a RESP3 map) as pairs.
fn pairs(v: &RValue) -> Vec<(String, String)> {
    match v {
        RValue::Map(m) => m.iter().map(|(k, v)| (text(k), text(v))).collect(),
        _ => arr(v)
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| (text(&c[0]), text(&c[1])))
            .collect(),
    }
}

fn vis_str(v: Visibility) -> &'static str {
    match v {
        Visibility::Open => "open",
        Visibility::Private => "private",
    }
}
fn status_str(s: RoomStatus) -> &'static str {
    match s {
        RoomStatus::Active => "active",
        RoomStatus::Maintenance => "maintenance",
        RoomStatus::Closed => "closed",
    }
}
fn role_digit(r: Role) -> u8 {
    r as u8
}
fn role_from(d: &str) -> Role {
    match d {
        "3" => Role::Owner,
        "2" => Role::Operator,
        "1" => Role::Commenter,
        _ => Role::Viewer,
    }
}

/// The settings as `cfg` hash fields, in script argument order.
fn cfg_args(s: &RoomSettings) -> Vec<String> {
    vec![
        "type".into(),
        s.room_type.clone(),
        "cap".into(),
        s.capacity.to_string(),
        "idle".into(),
        (s.idle_ttl.as_millis() as u64).to_string(),
        "vis".into(),
        vis_str(s.visibility).into(),
        "status".into(),
        status_str(s.status).into(),
        "tags".into(),
        serde_json::to_string(&s.tags).unwrap_or_else(|_| "[]".into()),
        "attrs".into(),
        serde_json::to_string(&s.attributes).unwrap_or_else(|_| "{}".into()),
        "decl".into(),
        if s.declared { "1" } else { "0" }.into(),
        "created".into(),
        ms(s.created_at).to_string(),
        "hb".into(),
        opt_ms(s.timing.heartbeat_interval),
        "to".into(),
        opt_ms(s.timing.session_timeout),
    ]
}

/// A timing override in a room's settings: milliseconds, or '' for none.
fn opt_ms(d: Option<Duration>) -> String {
    d.map(|d| (d.as_millis() as u64).to_string())
        .unwrap_or_default()
}

fn opt_duration(v: Option<&str>) -> Option<Duration> {
    v.and_then(|v| v.parse().ok()).map(Duration::from_millis)
}

fn patch_args(p: &RoomPatch) -> Vec<String> {
    let mut a = vec![];
    let mut put = |k: &str, v: String| {
        a.push(k.to_string());
        a.push(v);
    };
    if let Some(v) = &p.room_type {
        put("type", v.clone());
    }
    if let Some(v) = p.capacity {
        put("cap", v.to_string());
    }
    if let Some(v) = p.idle_ttl {
        put("idle", (v.as_millis() as u64).to_string());
    }
    if let Some(v) = p.visibility {
        put("vis", vis_str(v).into());
    }
    if let Some(v) = p.status {
        put("status", status_str(v).into());
    }
    if let Some(t) = p.timing {
        put("hb", opt_ms(t.heartbeat_interval));
        put("to", opt_ms(t.session_timeout));
    }
    if let Some(v) = &p.tags {
        put(
            "tags",
            serde_json::to_string(v).unwrap_or_else(|_| "[]".into()),
        );
    }
    if let Some(v) = &p.attributes {
        put(
            "attrs",
            serde_json::to_string(v).unwrap_or_else(|_| "{}".into()),
        );
    }
    a
}

fn settings_from(cfg: &[(String, String)], parts: &[(String, String)]) -> Option<RoomSettings> {
    let get = |k: &str| cfg.iter().find(|(f, _)| f == k).map(|(_, v)| v.as_str());
    Some(RoomSettings {
        room_type: get("type")?.to_string(),
        capacity: get("cap")?.parse().ok()?,
        idle_ttl: Duration::from_millis(get("idle")?.parse().ok()?),
        visibility: if get("vis") == Some("private") {
            Visibility::Private
        } else {
            Visibility::Open
        },
        status: match get("status") {
            Some("maintenance") => RoomStatus::Maintenance,
            Some("closed") => RoomStatus::Closed,
            _ => RoomStatus::Active,
        },
        participants: parts
            .iter()
            .filter_map(|(u, r)| Some((UserId::parse(u).ok()?, role_from(r))))
            .collect(),
        tags: get("tags")
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default(),
        attributes: get("attrs")
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default(),
        declared: get("decl") == Some("1"),
        created_at: UNIX_EPOCH + Duration::from_millis(get("created")?.parse().ok()?),
        timing: RoomTiming {
            heartbeat_interval: opt_duration(get("hb")),
            session_timeout: opt_duration(get("to")),
        },
    })
}

/// `{"userId":…,"name":…,"info":…` — a member view's head, left open.
fn member_head(m: &Member) -> String {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Head<'a> {
        user_id: &'a UserId,
        #[serde(skip_serializing_if = "Option::is_none")]
        name: &'a Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        info: &'a Option<Value>,
    }
    let s = serde_json::to_string(&Head {
        user_id: &m.meta.user,
        name: &m.meta.name,
        info: &m.meta.info,
    })
    .unwrap_or_else(|_| "{}".into());
    s[..s.len() - 1].to_string()
}

/// `{"sessionId":…,"joinedAt":…` — a session view without its state, left open.
fn session_head(m: &Member) -> String {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Head<'a> {
        session_id: &'a SessionId,
        device: &'a str,
        os: &'a Option<String>,
        app_version: &'a Option<String>,
        latency_ms: Option<u32>,
        joined_at: String,
    }
    let s = serde_json::to_string(&Head {
        session_id: &m.meta.id,
        device: &m.meta.device.device,
        os: &m.meta.device.os,
        app_version: &m.meta.device.app_version,
        latency_ms: m.meta.latency_ms(),
        joined_at: crate::clock::iso(m.joined_at),
    })
    .unwrap_or_else(|_| "{}".into());
    s[..s.len() - 1].to_string()
}

impl RedisEngine {
    /// Connects (failing fast when Redis is not there) and starts the task that
    /// receives this node's subscriptions.
    pub async fn connect(
        url: &str,
        prefix: &str,
        outbox: Arc<dyn Outbox>,
        clock: Clock,
        events: mpsc::UnboundedSender<EngineEvent>,
        health_every: Duration,
    ) -> Result<Self, String> {
        let (tx, rx) = mpsc::unbounded_channel::<PushInfo>();
        let timeout = Duration::from_secs(2);
        let (conn, sub) = if url.starts_with("redis-cluster://") {
            let nodes = cluster_nodes(url)?;
            let builder = || {
                redis::cluster::ClusterClientBuilder::new(nodes.clone())
                    .use_protocol(redis::ProtocolVersion::RESP3)
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(2)
            };
            let conn = builder()
                .build()
                .map_err(|e| e.to_string())?
                .get_async_connection()
                .await
                .map_err(|e| e.to_string())?;
            let sub = builder()
                .push_sender(tx)
                .build()
                .map_err(|e| e.to_string())?
                .get_async_connection()
                .await
                .map_err(|e| e.to_string())?;
            (Conn::Cluster(conn), Conn::Cluster(sub))
        } else {
            let url3 = if url.contains('?') {
                format!("{url}&protocol=resp3")
            } else {
                format!("{url}?protocol=resp3")
            };
            let client = redis::Client::open(url3.as_str()).map_err(|e| e.to_string())?;
            let base = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_millis(500));
            let conn = client
                .get_connection_manager_with_config(base.clone())
                .await
                .map_err(|e| e.to_string())?;
            let sub = client
                .get_connection_manager_with_config(
                    base.set_push_sender(tx).set_automatic_resubscription(),
                )
                .await
                .map_err(|e| e.to_string())?;
            (Conn::Single(conn), Conn::Single(sub))
        };
        let inner = Arc::new(Inner {
            conn,
            sub,
            prefix: prefix.to_string(),
            node_id: SessionId::new_random().to_string(),
            scripts: Scripts::load(),
            outbox,
            clock,
            local: DashMap::new(),
            channels: DashMap::new(),
            events,
            healthy: AtomicBool::new(true),
            user_cells: DashMap::new(),
            surveys: DashMap::new(),
        });
        let ctl = inner.ctl_channel();
        inner
            .sub
            .clone()
            .subscribe(&ctl)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(inner.clone().pump(rx));
        tokio::spawn(Arc::downgrade(&inner).health_loop(health_every));
        Ok(Self { inner })
    }

    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }
}

trait WeakHealth {
    fn health_loop(self, every: Duration) -> impl std::future::Future<Output = ()> + Send;
}

impl WeakHealth for std::sync::Weak<Inner> {
    /// Pings Redis every `every` (the sweep interval): `/readyz` follows (down
    /// after three missed pings in a row, up at the first answer), and after an
    /// outage the node writes its sessions back and re-syncs.
    async fn health_loop(self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        let mut misses = 0u32;
        loop {
            tick.tick().await;
            let Some(inner) = self.upgrade() else { return };
            // Both connections: the subscriber one reconnects (and resubscribes)
            // only when it is used.
            let (mut conn, mut sub) = (inner.conn.clone(), inner.sub.clone());
            let cmd = redis::cmd("PING");
            let pings = async {
                cmd.query_async::<RValue>(&mut conn).await?;
                cmd.query_async::<RValue>(&mut sub).await
            };
            let ok = matches!(
                tokio::time::timeout(every.max(Duration::from_millis(200)), pings).await,
                Ok(Ok(_))
            );
            // One slow answer is not an outage: a burst of big joins can hold
            // the connection past one interval. Down after `MISSES` in a row.
            const MISSES: u32 = 3;
            misses = if ok { 0 } else { misses + 1 };
            if !ok && misses < MISSES {
                continue;
            }
            let was = inner.healthy.swap(ok, Ordering::SeqCst);
            if ok && !was {
                tracing::info!("redis is back: writing this node's sessions back and re-syncing");
                let _ = inner.events.send(EngineEvent::Recovered);
            } else if !ok && was {
                tracing::warn!("redis unreachable");
            }
        }
    }
}

impl Inner {
    /// How a room channel is published to (sharded on a cluster).
    fn publish_cmd(&self) -> &'static str {
        if self.conn.sharded() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    fn room_key(&self, id: &RoomId) -> String {
        format!("{}:r:{{{}|{}}}", self.prefix, id.tenant, id.key)
    }
    fn channel(&self, id: &RoomId) -> String {
        format!("{}:ch", self.room_key(id))
    }
    fn user_key(&self, u: &UserRef) -> String {
        format!("{}:u:{{{}|{}}}", self.prefix, u.tenant, u.user)
    }
    fn session_key(&self, sid: &SessionId) -> String {
        format!("{}:s:{{{}}}", self.prefix, sid)
    }
    fn live_key(&self) -> String {
        format!("{}:live", self.prefix)
    }
    fn rooms_index(&self, t: &TenantId) -> String {
        format!("{}:rooms:{}", self.prefix, t)
    }
    fn tenants_key(&self) -> String {
        format!("{}:tenants", self.prefix)
    }
    fn client_key(&self, u: &UserRef, client_id: &str) -> String {
        format!(
            "{}:c:{{{}|{}|{}}}",
            self.prefix, u.tenant, u.user, client_id
        )
    }
    fn ctl_channel(&self) -> String {
        format!("{}:ctl", self.prefix)
    }
    /// A tenant's event log: the stream itself; `:seq` its last number,
    /// `:cur` consumer → cursor, `:lease` the delivering node (one slot).
    fn events_key(&self, t: &TenantId) -> String {
        format!("{}:ev:{{{}}}", self.prefix, t)
    }
    fn event_tenants_key(&self) -> String {
        format!("{}:evtenants", self.prefix)
    }
    /// node id → the deadline (ms) its sessions were last kept alive until.
    fn nodes_key(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    /// Fails fast while the health check says Redis is unreachable, instead of
    /// making every presence call wait for its response timeout.
    fn up(&self) -> redis::RedisResult<()> {
        if self.healthy.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "redis unreachable (health check failing)",
            )))
        }
    }

    async fn script(&self, name: &str, key: &str, args: &[String]) -> redis::RedisResult<RValue> {
        self.up()?;
        let mut inv = self.scripts.get(name).prepare_invoke();
        inv.key(key);
        for a in args {
            inv.arg(a);
        }
        inv.invoke_async(&mut self.conn.clone()).await
    }

    async fn pipe<T: redis::FromRedisValue>(&self, p: &redis::Pipeline) -> redis::RedisResult<T> {
        self.up()?;
        p.query_async(&mut self.conn.clone()).await
    }

    async fn cmd<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        self.up()?;
        cmd.query_async(&mut self.conn.clone()).await
    }

    /// Two keys in two slots: two commands, not a pipeline (Cluster).
    async fn index_room(&self, id: &RoomId) {
        let _: redis::RedisResult<()> = self
            .cmd(
                redis::cmd("SADD")
                    .arg(self.tenants_key())
                    .arg(id.tenant.as_str()),
            )
            .await;
        let _: redis::RedisResult<()> = self
            .cmd(
                redis::cmd("SADD")
                    .arg(self.rooms_index(&id.tenant))
                    .arg(id.key.as_str()),
            )
            .await;
    }

    async fn unindex_room(&self, id: &RoomId) {
        let _: redis::RedisResult<()> = self
            .cmd(
                redis::cmd("SREM")
                    .arg(self.rooms_index(&id.tenant))
                    .arg(id.key.as_str()),
            )
            .await;
    }

    fn lock_from(&self, s: &str, u: &str, e: &str) -> Option<FieldLock> {
        let at = UNIX_EPOCH + Duration::from_millis(e.parse().ok()?);
        Some(FieldLock {
            session: SessionId::parse(s).ok()?,
            user: UserId::parse(u).ok()?,
            expires_at: self.clock.from_wall(at),
        })
    }

    fn lock_at(&self, v: &RValue, from: usize) -> Option<FieldLock> {
        let a = arr(v);
        self.lock_from(
            &text(a.get(from)?),
            &text(a.get(from + 1)?),
            &text(a.get(from + 2)?),
        )
    }

    /// A `['list', seq, count, users, stale, busy, ver, locks, hb]` reply (`hb`: the
    /// room's own heartbeat interval in ms, '' for the server's).
    fn snapshot_from(&self, id: &RoomId, a: &[RValue]) -> Option<PresenceSnapshot> {
        let users: Vec<UserEntry> = serde_json::from_str(&text(a.get(3)?))
            .map_err(|e| tracing::error!("redis snapshot of {}: {e}", id.key))
            .ok()?;
        let mut locks = BTreeMap::new();
        for (field, v) in pairs(a.get(7)?) {
            let mut it = v.split('\u{1f}');
            if let (Some(s), Some(u), Some(e)) = (it.next(), it.next(), it.next()) {
                if let Some(l) = self.lock_from(s, u, e) {
                    locks.insert(field, LockOwnerView::new(&l, &self.clock));
                }
            }
        }
        let busy = text(a.get(5)?);
        Some(PresenceSnapshot {
            room: id.key.as_str().to_string(),
            seq: int(a.get(1)?) as u64,
            count: int(a.get(2)?) as usize,
            users,
            stale: text(a.get(4)?) == "1",
            busy_by: UserId::parse(&busy).ok(),
            version: int(a.get(6)?) as u64,
            locks,
            heartbeat_interval_ms: a.get(8).and_then(|v| text(v).parse().ok()),
        })
    }

    fn entity_from(id: &RoomId, stale: &RValue, busy: &RValue, ver: &RValue) -> EntityView {
        EntityView {
            room: id.key.as_str().to_string(),
            stale: text(stale) == "1",
            busy_by: UserId::parse(&text(busy)).ok(),
            version: int(ver) as u64,
        }
    }

    async fn summary(&self, id: &RoomId) -> redis::RedisResult<Option<RoomSummary>> {
        let k = self.room_key(id);
        let mut p = redis::pipe();
        p.hgetall(format!("{k}:cfg"))
            .hgetall(format!("{k}:parts"))
            .hlen(format!("{k}:m"))
            .get(format!("{k}:seq"))
            .cmd("HMGET")
            .arg(format!("{k}:e"))
            .arg("stale")
            .arg("busy")
            .arg("ver");
        let r: Vec<RValue> = self.pipe(&p).await?;
        let (cfg, parts) = (pairs(&r[0]), pairs(&r[1]));
        let Some(settings) = settings_from(&cfg, &parts) else {
            return Ok(None);
        };
        let e = arr(&r[4]);
        let nil = RValue::Nil;
        Ok(Some(RoomSummary {
            id: id.clone(),
            settings,
            sessions: int(&r[2]) as usize,
            seq: int(&r[3]) as u64,
            entity: Self::entity_from(
                id,
                e.first().unwrap_or(&nil),
                e.get(1).unwrap_or(&nil),
                e.get(2).unwrap_or(&nil),
            ),
        }))
    }

    // ---- local delivery ------------------------------------------------------

    /// The local room, subscribed, with its subscription guard held: the caller
    /// registers its member before letting go, so no unsubscribe slips between.
    async fn local_room(
        &self,
        id: &RoomId,
    ) -> Result<(Arc<LocalRoom>, tokio::sync::OwnedMutexGuard<bool>), CoreError> {
        loop {
            let lr = self.local.entry(id.clone()).or_default().value().clone();
            let guard = lr.subscribed.clone().lock_owned().await;
            if lr.removed.load(Ordering::SeqCst) {
                continue;
            }
            let mut guard = guard;
            if !*guard {
                let ch = self.channel(id);
                self.channels.insert(ch.clone(), id.clone());
                self.sub
                    .clone()
                    .subscribe_room(&ch)
                    .await
                    .map_err(unavailable)?;
                *guard = true;
            }
            return Ok((lr, guard));
        }
    }

    /// Drops the local room (and its subscription) once no local member is left.
    async fn release_local(&self, id: &RoomId) {
        let Some(lr) = self.local.get(id).map(|e| e.value().clone()) else {
            return;
        };
        if !lr.members.lock().is_empty() {
            return;
        }
        let mut guard = lr.subscribed.clone().lock_owned().await;
        if !lr.members.lock().is_empty() || lr.removed.swap(true, Ordering::SeqCst) {
            return;
        }
        self.local.remove_if(id, |_, v| Arc::ptr_eq(v, &lr));
        if *guard {
            let ch = self.channel(id);
            self.channels.remove(&ch);
            let _ = self.sub.clone().unsubscribe_room(&ch).await;
            *guard = false;
        }
    }

    async fn pump(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<PushInfo>) {
        let ctl = self.ctl_channel();
        while let Some(push) = rx.recv().await {
            match push.kind {
                PushKind::Message | PushKind::SMessage => {
                    let (Some(ch), Some(payload)) = (push.data.first(), push.data.get(1)) else {
                        continue;
                    };
                    let ch = text(ch);
                    let payload = text(payload);
                    if ch == ctl {
                        self.control(&payload);
                    } else if let Some(room) = self.channels.get(&ch).map(|r| r.value().clone()) {
                        self.room_message(&room, &payload);
                    }
                }
                PushKind::Disconnection => {
                    self.healthy.store(false, Ordering::SeqCst);
                }
                _ => {}
            }
        }
    }

    fn control(&self, payload: &str) {
        let mut it = payload.splitn(3, ' ');
        match (it.next(), it.next(), it.next()) {
            (Some("K"), Some(sid), Some(code)) => {
                if let (Ok(sid), Ok(code)) = (SessionId::parse(sid), code.parse()) {
                    let _ = self.events.send(EngineEvent::Kick(sid, code));
                }
            }
            (Some("H"), Some(sid), Some(node)) if node != self.node_id => {
                if let Ok(sid) = SessionId::parse(sid) {
                    let _ = self.events.send(EngineEvent::TakenOver(sid));
                }
            }
            (Some("Q"), Some(id), Some(rest)) => {
                let mut f = rest.split('\u{1f}');
                let (Some(origin), Some(t), Some(u)) = (f.next(), f.next(), f.next()) else {
                    return;
                };
                if origin == self.node_id {
                    return;
                }
                if let Ok(tenant) = TenantId::parse(t) {
                    let user = (!u.is_empty()).then(|| UserId::parse(u).ok()).flatten();
                    let _ = self.events.send(EngineEvent::SessionsAsked(SessionsAsked {
                        id: id.to_string(),
                        tenant,
                        user,
                    }));
                }
            }
            (Some("A"), Some(id), Some(json)) => {
                if let Some(tx) = self.surveys.get(id) {
                    match serde_json::from_str::<Vec<SessionInfoView>>(json) {
                        Ok(v) => {
                            let _ = tx.send(v);
                        }
                        Err(e) => tracing::error!("bad sessions answer from redis: {e}"),
                    }
                }
            }
            (Some("U"), Some(node), Some(user)) if node != self.node_id => {
                if let Some((t, u)) = user.split_once('\u{1f}') {
                    if let (Ok(tenant), Ok(user)) = (TenantId::parse(t), UserId::parse(u)) {
                        let _ = self
                            .events
                            .send(EngineEvent::UserChanged(UserRef { tenant, user }));
                    }
                }
            }
            _ => {}
        }
    }

    fn room_message(self: &Arc<Self>, room: &RoomId, payload: &str) {
        let msg = match payload.as_bytes().first() {
            Some(b'D') => match RoomDiff::parse(room, &payload[1..]) {
                Ok(d) => RoomMsg::Diff(d),
                Err(e) => {
                    tracing::error!("bad diff from redis for {}: {e}", room.key);
                    return;
                }
            },
            Some(b'E') => match serde_json::from_str(&payload[1..]) {
                Ok(t) => RoomMsg::Event(t),
                Err(e) => {
                    tracing::warn!(room = %room.key, error = %e, "unreadable room event from Redis");
                    return;
                }
            },
            _ => return,
        };
        let Some(lr) = self.local.get(room).map(|e| e.value().clone()) else {
            return;
        };
        let msg = Arc::new(msg);
        let mut members = lr.members.lock();
        let mut list: Vec<SessionId> = vec![];
        let mut need_snapshot: Vec<SessionId> = vec![];
        for (sid, m) in members.iter_mut() {
            if let Some(buf) = &mut m.buffer {
                buf.push(msg.clone());
                continue;
            }
            match &*msg {
                RoomMsg::Diff(d) => {
                    let hdr = &d.hdr;
                    if hdr.seq <= m.last_seq {
                        continue;
                    }
                    m.last_seq = hdr.seq;
                    if m.count_mode || hdr.over || d.diffs.cut_of.contains_key(sid) {
                        self.deliver_one(room, sid, m, &msg);
                    } else if hdr.back_under {
                        need_snapshot.push(sid.clone());
                    } else {
                        list.push(sid.clone());
                    }
                }
                RoomMsg::Event(_) => list.push(sid.clone()),
            }
        }
        drop(members);
        match &*msg {
            RoomMsg::Diff(d) if !list.is_empty() => self
                .outbox
                .deliver(&mut list.iter(), Outgoing::Diff(&d.diffs.base)),
            RoomMsg::Event(t) if !list.is_empty() => {
                self.outbox.deliver(&mut list.iter(), Outgoing::Event(t))
            }
            _ => {}
        }
        if !need_snapshot.is_empty() {
            let inner = self.clone();
            let room = room.clone();
            tokio::spawn(async move {
                inner.send_snapshots(&room, need_snapshot).await;
            });
        }
    }

    /// Ends a member's buffering: what arrived meanwhile goes out, skipping what
    /// its snapshot (`last_seq`) already covers.
    fn drain_buffer(&self, room: &RoomId, sid: &SessionId, m: &mut LocalMember) {
        for msg in m.buffer.take().unwrap_or_default() {
            if let RoomMsg::Diff(RoomDiff { hdr, .. }) = &*msg {
                if hdr.seq <= m.last_seq {
                    continue;
                }
                m.last_seq = hdr.seq;
            }
            self.deliver_one(room, sid, m, &msg);
        }
    }

    /// Delivers one message to one member that needs its own version: a count,
    /// its own join taken out, or an event.
    fn deliver_one(&self, room: &RoomId, sid: &SessionId, m: &mut LocalMember, msg: &RoomMsg) {
        let count_mode = m.count_mode;
        let to = [sid.clone()];
        match msg {
            RoomMsg::Event(t) => self.outbox.deliver(&mut to.iter(), Outgoing::Event(t)),
            RoomMsg::Diff(d) => {
                let hdr = &d.hdr;
                if count_mode || hdr.over {
                    if hdr.count_changed && hdr.count != m.last_count {
                        m.last_count = hdr.count;
                        self.outbox.deliver(
                            &mut to.iter(),
                            Outgoing::PresenceCount {
                                room: room.key.as_str(),
                                count: hdr.count,
                                seq: hdr.seq,
                                reply_ref: None,
                            },
                        );
                    }
                } else if d.diffs.cut_of.contains_key(sid) || !hdr.back_under {
                    self.outbox
                        .deliver(&mut to.iter(), Outgoing::Diff(d.diffs.for_member(sid)));
                }
            }
        }
    }

    /// Fresh snapshots for local members (after the room fell back under the list
    /// limit, or after an outage in which diffs may have been lost).
    /// Sends local members a fresh snapshot (a resync, or a room back under the
    /// list limit). As at a join: each member's deliveries are buffered first,
    /// the snapshot script logs a cut for each (so the next diff starts where
    /// its snapshot ends, `core::diff`), the snapshot goes out, and the buffer
    /// is drained past the snapshot's `seq`. A member already buffering (its
    /// join is under way) is left to its join.
    async fn send_snapshots(&self, room: &RoomId, sessions: Vec<SessionId>) {
        let Some(lr) = self.local.get(room).map(|e| e.value().clone()) else {
            return;
        };
        let targets: Vec<SessionId> = {
            let mut members = lr.members.lock();
            sessions
                .into_iter()
                .filter(|sid| match members.get_mut(sid) {
                    Some(m) if m.buffer.is_none() => {
                        m.buffer = Some(vec![]);
                        true
                    }
                    _ => false,
                })
                .collect()
        };
        if targets.is_empty() {
            return;
        }
        let args: Vec<String> = targets.iter().map(|s| s.to_string()).collect();
        let snap = match self.script("snapshot", &self.room_key(room), &args).await {
            Ok(v) if !is_none(&v) => self.snapshot_from(room, arr(&v)),
            _ => None,
        };
        let mut members = lr.members.lock();
        if let Some(snap) = &snap {
            let (mut to, mut counted) = (vec![], vec![]);
            for sid in &targets {
                if let Some(m) = members.get_mut(sid) {
                    m.last_seq = snap.seq;
                    m.last_count = snap.count;
                    if m.count_mode {
                        counted.push(sid.clone());
                    } else {
                        to.push(sid.clone());
                    }
                }
            }
            self.outbox.deliver(
                &mut to.iter(),
                Outgoing::Presence {
                    snapshot: snap,
                    reply_ref: None,
                },
            );
            self.outbox.deliver(
                &mut counted.iter(),
                Outgoing::PresenceCount {
                    room: room.key.as_str(),
                    count: snap.count,
                    seq: snap.seq,
                    reply_ref: None,
                },
            );
        }
        // Without a snapshot (Redis unreachable again, the room gone) the
        // buffered deliveries go out as they came.
        for sid in &targets {
            if let Some(m) = members.get_mut(sid) {
                self.drain_buffer(room, sid, m);
            }
        }
    }

    async fn resync_all(&self) {
        let rooms: Vec<(RoomId, Vec<SessionId>)> = self
            .local
            .iter()
            .map(|e| {
                (
                    e.key().clone(),
                    e.value().members.lock().keys().cloned().collect(),
                )
            })
            .collect();
        for (room, sessions) in rooms {
            // Any seq is accepted again: the snapshot sets it.
            if let Some(lr) = self.local.get(&room).map(|e| e.value().clone()) {
                for m in lr.members.lock().values_mut() {
                    m.last_seq = 0;
                }
            }
            self.send_snapshots(&room, sessions).await;
        }
    }

    fn cell(&self, user: &UserRef, status: i64) -> Arc<AtomicU8> {
        let cell = self
            .user_cells
            .entry(user.clone())
            .or_insert_with(|| Arc::new(AtomicU8::new(0)))
            .value()
            .clone();
        cell.store(status as u8, Ordering::Relaxed);
        cell
    }

    async fn user_op(
        &self,
        user: &UserRef,
        op: &str,
        sid: &str,
        status: Status,
        device: &str,
        at: SystemTime,
    ) -> Result<UserChange, EngineError> {
        let args = [
            op.to_string(),
            sid.to_string(),
            status.as_u8().to_string(),
            device.to_string(),
            ms(at).to_string(),
        ];
        let v = self
            .script("user_change", &self.user_key(user), &args)
            .await
            .map_err(unavailable)?;
        let a = arr(&v);
        let before = a.first().map(int).unwrap_or(0);
        let after = a.get(1).map(int).unwrap_or(0);
        self.cell(user, after);
        Ok(UserChange {
            before: Status::from_u8(before as u8),
            after: Status::from_u8(after as u8),
        })
    }
}

/// A script's refusal (`{'err', code, detail}`) as the core words it.
fn core_err(code: &str, id: &RoomId, detail: &str) -> EngineError {
    let room = &id.key;
    match code {
        "room_closed" => CoreError::room_closed(room, detail == "closed"),
        "forbidden" if detail == "private" => CoreError::not_participant(room),
        "forbidden" if detail == "state" => CoreError::role_needed(
            room,
            "publishing member state",
            Role::Commenter,
            Role::Viewer,
        ),
        "room_full" => CoreError::room_full(room, detail.parse().unwrap_or_default()),
        "not_lock_owner" => CoreError::not_lock_owner(room, detail),
        _ => CoreError::not_subscribed(room),
    }
    .into()
}

fn no_room(id: &RoomId) -> EngineError {
    CoreError::no_room(&id.key).into()
}

fn role_err(id: &RoomId, action: &str, needed: Role, have: Role) -> EngineError {
    CoreError::role_needed(&id.key, action, needed, have).into()
}

#[async_trait]
impl Rooms for RedisEngine {
    async fn create_room(&self, id: RoomId, settings: RoomSettings) -> Result<(), EngineError> {
        let i = &self.inner;
        let cfg = cfg_args(&settings);
        let mut args = vec![ms(SystemTime::now()).to_string(), cfg.len().to_string()];
        args.extend(cfg);
        for (u, r) in &settings.participants {
            args.push(u.to_string());
            args.push(role_digit(*r).to_string());
        }
        let created = i
            .script("create_room", &i.room_key(&id), &args)
            .await
            .map_err(unavailable)?;
        i.index_room(&id).await;
        if int(&created) == 0 {
            return Err(CoreError::room_exists(&id.key).into());
        }
        Ok(())
    }

    async fn room(&self, id: &RoomId) -> Result<Option<RoomSummary>, EngineError> {
        self.inner.summary(id).await.map_err(unavailable)
    }

    async fn update_room(
        &self,
        id: &RoomId,
        p: RoomPatch,
    ) -> Result<(RoomSummary, AccessChange), EngineError> {
        let i = &self.inner;
        let mut args = vec![if p.visibility.is_some() { "1" } else { "0" }.to_string()];
        args.extend(patch_args(&p));
        let v = i
            .script("update_room", &i.room_key(id), &args)
            .await
            .map_err(unavailable)?;
        if is_none(&v) {
            return Err(no_room(id));
        }
        let change = access_change(&v);
        let summary = i
            .summary(id)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| no_room(id))?;
        Ok((summary, change))
    }

    async fn delete_room(&self, id: &RoomId) -> Result<Option<Vec<SessionId>>, EngineError> {
        let i = &self.inner;
        let v = i
            .script("delete_room", &i.room_key(id), &[])
            .await
            .map_err(unavailable)?;
        i.unindex_room(id).await;
        if is_none(&v) {
            return Ok(None);
        }
        Ok(Some(
            arr(&v)
                .first()
                .map(texts)
                .unwrap_or_default()
                .iter()
                .filter_map(|s| SessionId::parse(s).ok())
                .collect(),
        ))
    }

    async fn set_participant(
        &self,
        id: &RoomId,
        user: UserId,
        role: Option<Role>,
    ) -> Result<AccessChange, EngineError> {
        let i = &self.inner;
        let args = [
            user.to_string(),
            role.map(|r| role_digit(r).to_string()).unwrap_or_default(),
        ];
        let v = i
            .script("set_participant", &i.room_key(id), &args)
            .await
            .map_err(unavailable)?;
        if is_none(&v) {
            return Err(no_room(id));
        }
        Ok(access_change(&v))
    }

    async fn list_rooms(&self, tenant: &TenantId) -> Result<Vec<RoomSummary>, EngineError> {
        let i = &self.inner;
        let keys: Vec<String> = i
            .cmd(redis::cmd("SMEMBERS").arg(i.rooms_index(tenant)))
            .await
            .map_err(unavailable)?;
        let mut out = vec![];
        for k in keys {
            let Ok(key) = RoomKey::parse(&k) else {
                continue;
            };
            let id = RoomId {
                tenant: tenant.clone(),
                key,
            };
            match i.summary(&id).await.map_err(unavailable)? {
                Some(s) => out.push(s),
                None => i.unindex_room(&id).await,
            }
        }
        out.sort_by(|a, b| a.id.key.cmp(&b.id.key));
        Ok(out)
    }

    async fn room_count(&self) -> usize {
        let i = &self.inner;
        let tenants: Vec<String> = i
            .cmd(redis::cmd("SMEMBERS").arg(i.tenants_key()))
            .await
            .unwrap_or_default();
        let mut n = 0;
        for t in tenants {
            if let Ok(t) = TenantId::parse(&t) {
                n += i
                    .cmd::<usize>(redis::cmd("SCARD").arg(i.rooms_index(&t)))
                    .await
                    .unwrap_or(0);
            }
        }
        n
    }

    async fn all_rooms(&self) -> Result<Vec<RoomSummary>, EngineError> {
        let i = &self.inner;
        let tenants: Vec<String> = i
            .cmd(redis::cmd("SMEMBERS").arg(i.tenants_key()))
            .await
            .map_err(unavailable)?;
        let mut out = vec![];
        for t in tenants {
            if let Ok(t) = TenantId::parse(&t) {
                out.extend(self.list_rooms(&t).await?);
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Presence for RedisEngine {
    async fn join(
        &self,
        id: &RoomId,
        create: RoomSettings,
        member: Member,
        actor: Actor<'_>,
        mode: SubMode,
        list_limit: usize,
        reply_ref: Option<&Value>,
    ) -> Result<Joined, EngineError> {
        let i = &self.inner;
        let sid = member.meta.id.clone();
        let count_mode = mode == SubMode::Count;
        let state = serde_json::to_string(&member.state).unwrap_or_else(|_| "{}".into());
        let has_state = member.state.as_object().is_some_and(|o| !o.is_empty());
        let mut args = vec![
            sid.to_string(),
            member.meta.user.to_string(),
            ms(SystemTime::now()).to_string(),
            member_head(&member),
            session_head(&member),
            state,
            role_digit(actor.open_role).to_string(),
            if actor.is_admin { "1" } else { "0" }.into(),
            if count_mode { "1" } else { "0" }.into(),
            member.meta.user_status().as_u8().to_string(),
            list_limit.to_string(),
            if has_state { "1" } else { "0" }.into(),
        ];
        args.extend(cfg_args(&create));
        let (lr, guard) = i.local_room(id).await?;
        let existed = {
            let mut members = lr.members.lock();
            let existed = members.contains_key(&sid);
            members
                .entry(sid.clone())
                .and_modify(|m| {
                    m.buffer.get_or_insert_with(Vec::new);
                })
                .or_insert(LocalMember {
                    count_mode,
                    last_seq: 0,
                    last_count: 0,
                    buffer: Some(vec![]),
                });
            existed
        };
        drop(guard);
        // A refused or failed SUB leaves things as they were: a member that was
        // already here keeps receiving (its buffer is handed back).
        let undo = || async {
            if existed {
                if let Some(m) = lr.members.lock().get_mut(&sid) {
                    i.drain_buffer(id, &sid, m);
                }
            } else {
                lr.members.lock().remove(&sid);
                i.release_local(id).await;
            }
        };
        let reply = i.script("join", &i.room_key(id), &args).await;
        let v = match reply {
            Ok(v) => v,
            Err(e) => {
                undo().await;
                return Err(unavailable(e));
            }
        };
        let a = arr(&v);
        if a.first().map(text).as_deref() != Some("ok") {
            undo().await;
            let code = a.get(1).map(text).unwrap_or_default();
            let detail = a.get(2).map(text).unwrap_or_default();
            return Err(core_err(&code, id, &detail));
        }
        let already = a.get(1).map(int) == Some(1);
        let needs_flush = a.get(2).map(int) == Some(1);
        if a.get(3).map(int) == Some(1) {
            i.index_room(id).await;
        }
        let answer = a.get(4).map(arr).unwrap_or_default();
        let kind = answer.first().map(text).unwrap_or_default();
        let to = [sid.clone()];
        {
            let mut members = lr.members.lock();
            let seq = answer.get(1).map(int).unwrap_or(0) as u64;
            if kind == "list" {
                if let Some(snapshot) = i.snapshot_from(id, answer) {
                    i.outbox.deliver(
                        &mut to.iter(),
                        Outgoing::Presence {
                            snapshot: &snapshot,
                            reply_ref,
                        },
                    );
                }
            } else {
                i.outbox.deliver(
                    &mut to.iter(),
                    Outgoing::PresenceCount {
                        room: id.key.as_str(),
                        count: answer.get(2).map(int).unwrap_or(0) as usize,
                        seq,
                        reply_ref,
                    },
                );
            }
            if let Some(m) = members.get_mut(&sid) {
                m.count_mode = count_mode;
                m.last_seq = seq;
                m.last_count = answer.get(2).map(int).unwrap_or(0) as usize;
                i.drain_buffer(id, &sid, m);
            }
        }
        // Also when already a member: the re-`SUB` of recovery writes back an
        // index entry that an outage lost.
        let _: redis::RedisResult<()> = i
            .cmd(
                redis::cmd("SADD")
                    .arg(format!("{}:r", i.session_key(&sid)))
                    .arg(format!("{}|{}", id.tenant, id.key)),
            )
            .await;
        Ok(Joined {
            already_member: already,
            needs_flush,
            occupied: a.get(5).map(int) == Some(1),
            session_timeout: opt_duration(a.get(6).map(text).as_deref()),
        })
    }

    async fn leave(
        &self,
        id: &RoomId,
        session: &SessionId,
        reason: LeaveReason,
        now: Instant,
    ) -> Result<Option<Left>, EngineError> {
        let i = &self.inner;
        let args = [
            session.to_string(),
            reason.as_str().to_string(),
            ms(i.clock.wall(now)).to_string(),
        ];
        let reply = i.script("leave", &i.room_key(id), &args).await;
        if let Some(lr) = i.local.get(id).map(|e| e.value().clone()) {
            if lr.members.lock().remove(session).is_some() {
                i.release_local(id).await;
            }
        }
        // The session's room index forgets the room only once the leave is
        // written: after an outage, recovery finds the rooms whose leave failed
        // there (if Redis came back between the two commands, an index without
        // the room would leave a ghost in it).
        let v = reply.map_err(unavailable)?;
        let _: redis::RedisResult<()> = i
            .cmd(
                redis::cmd("SREM")
                    .arg(format!("{}:r", i.session_key(session)))
                    .arg(format!("{}|{}", id.tenant, id.key)),
            )
            .await;
        if is_none(&v) {
            return Ok(None);
        }
        let a = arr(&v);
        Ok(Some(Left {
            needs_flush: a.first().map(int) == Some(1),
            now_empty: a.get(1).map(int) == Some(1),
            released_locks: a.get(2).map(texts).unwrap_or_default(),
        }))
    }

    async fn set_state(
        &self,
        id: &RoomId,
        session: &SessionId,
        state: Value,
    ) -> Result<Option<NeedsFlush>, EngineError> {
        let i = &self.inner;
        let args = [
            session.to_string(),
            serde_json::to_string(&state).unwrap_or_else(|_| "{}".into()),
        ];
        let v = i
            .script("set_state", &i.room_key(id), &args)
            .await
            .map_err(unavailable)?;
        let a = arr(&v);
        match a.first().map(text).as_deref() {
            Some("ok") if a.get(2).map(int) == Some(1) => Ok(Some(a.get(1).map(int) == Some(1))),
            Some("ok") => Ok(None),
            _ if a.get(1).map(text).as_deref() == Some("forbidden") => Err(role_err(
                id,
                "publishing member state",
                Role::Commenter,
                role_from(&a.get(2).map(text).unwrap_or_default()),
            )),
            _ => Err(core_err("not_subscribed", id, "")),
        }
    }

    async fn touch(
        &self,
        id: &RoomId,
        session: &SessionId,
        status: Status,
    ) -> Result<NeedsFlush, EngineError> {
        let i = &self.inner;
        let args = [session.to_string(), status.as_u8().to_string()];
        i.script("touch", &i.room_key(id), &args)
            .await
            .map(|v| int(&v) == 1)
            .map_err(unavailable)
    }

    async fn flush(&self, id: &RoomId, list_limit: usize) -> Result<usize, EngineError> {
        let i = &self.inner;
        let args = [list_limit.to_string(), i.publish_cmd().to_string()];
        i.script("flush", &i.room_key(id), &args)
            .await
            .map(|v| int(&v) as usize)
            .map_err(unavailable)
    }

    async fn snapshot(&self, id: &RoomId) -> Result<Option<PresenceSnapshot>, EngineError> {
        let i = &self.inner;
        let v = i
            .script("snapshot", &i.room_key(id), &[])
            .await
            .map_err(unavailable)?;
        if is_none(&v) {
            return Ok(None);
        }
        Ok(i.snapshot_from(id, arr(&v)))
    }

    async fn members(&self, id: &RoomId) -> Result<Vec<SessionId>, EngineError> {
        let i = &self.inner;
        let keys: Vec<String> = i
            .cmd(redis::cmd("HKEYS").arg(format!("{}:m", i.room_key(id))))
            .await
            .map_err(unavailable)?;
        Ok(keys
            .iter()
            .filter_map(|s| SessionId::parse(s).ok())
            .collect())
    }

    async fn broadcast(&self, id: &RoomId, t: &Transition) -> Result<usize, EngineError> {
        let i = &self.inner;
        // A transition is plain data: serializing it cannot fail.
        let data = serde_json::to_string(t).unwrap_or_default();
        let _: i64 = i
            .cmd(
                redis::cmd(i.publish_cmd())
                    .arg(i.channel(id))
                    .arg(format!("E{data}")),
            )
            .await
            .map_err(unavailable)?;
        // Delivered asynchronously, by every node's subscription.
        Ok(0)
    }

    async fn remove_if_idle(&self, id: &RoomId, now: Instant) -> Result<bool, EngineError> {
        let i = &self.inner;
        let args = [ms(i.clock.wall(now)).to_string()];
        let removed = i
            .script("remove_if_idle", &i.room_key(id), &args)
            .await
            .map(|v| int(&v) == 1)
            .map_err(unavailable)?;
        if removed {
            i.unindex_room(id).await;
        }
        Ok(removed)
    }
}

#[async_trait]
impl Locks for RedisEngine {
    async fn lock(
        &self,
        id: &RoomId,
        field: &str,
        session: &SessionId,
        now: Instant,
        ttl: Duration,
    ) -> Result<LockOutcome, EngineError> {
        let i = &self.inner;
        let args = [
            session.to_string(),
            field.to_string(),
            ms(i.clock.wall(now)).to_string(),
            (ttl.as_millis() as u64).to_string(),
        ];
        let v = i
            .script("lock", &i.room_key(id), &args)
            .await
            .map_err(unavailable)?;
        let a = arr(&v);
        let lock = i.lock_at(&v, 1);
        match (a.first().map(text).as_deref(), lock) {
            (Some("acquired"), Some(l)) => Ok(match i.lock_at(&v, 4) {
                Some(old) => LockOutcome::TakenOver(l, old),
                None => LockOutcome::Acquired(l),
            }),
            (Some("held"), Some(l)) => Ok(LockOutcome::Held(l)),
            _ if a.get(1).map(text).as_deref() == Some("forbidden") => Err(role_err(
                id,
                "locking a field",
                Role::Operator,
                role_from(&a.get(2).map(text).unwrap_or_default()),
            )),
            _ => Err(core_err("not_subscribed", id, "")),
        }
    }

    async fn unlock(
        &self,
        id: &RoomId,
        field: &str,
        session: &SessionId,
    ) -> Result<Option<FieldLock>, EngineError> {
        let i = &self.inner;
        let args = [session.to_string(), field.to_string()];
        let v = i
            .script("unlock", &i.room_key(id), &args)
            .await
            .map_err(unavailable)?;
        let a = arr(&v);
        match a.first().map(text).as_deref() {
            Some("released") => Ok(i.lock_at(&v, 1)),
            Some("none") => Ok(None),
            _ => match a.get(1).map(text).as_deref() {
                Some("not_lock_owner") => Err(CoreError::not_lock_owner(&id.key, field).into()),
                _ => Err(core_err("not_subscribed", id, "")),
            },
        }
    }

    async fn refresh_locks(
        &self,
        id: &RoomId,
        session: &SessionId,
        until: Instant,
        latency_ms: Option<u32>,
    ) -> Result<Vec<String>, EngineError> {
        let i = &self.inner;
        let args = [
            session.to_string(),
            ms(i.clock.wall(until)).to_string(),
            latency_ms.map(|l| l.to_string()).unwrap_or_default(),
        ];
        i.script("refresh_locks", &i.room_key(id), &args)
            .await
            .map(|v| texts(&v))
            .map_err(unavailable)
    }

    async fn expire_lock(
        &self,
        id: &RoomId,
        field: &str,
        now: Instant,
    ) -> Result<Option<FieldLock>, EngineError> {
        let i = &self.inner;
        let args = [field.to_string(), ms(i.clock.wall(now)).to_string()];
        let v = i
            .script("expire_lock", &i.room_key(id), &args)
            .await
            .map_err(unavailable)?;
        Ok(i.lock_at(&v, 0))
    }

    async fn force_unlock(
        &self,
        id: &RoomId,
        field: &str,
    ) -> Result<Option<FieldLock>, EngineError> {
        let i = &self.inner;
        let args = [field.to_string(), String::new()];
        let v = i
            .script("expire_lock", &i.room_key(id), &args)
            .await
            .map_err(unavailable)?;
        Ok(i.lock_at(&v, 0))
    }

    async fn locks(
        &self,
        id: &RoomId,
    ) -> Result<Option<BTreeMap<String, LockOwnerView>>, EngineError> {
        let i = &self.inner;
        let k = i.room_key(id);
        let exists: bool = i
            .cmd(redis::cmd("EXISTS").arg(format!("{k}:cfg")))
            .await
            .map_err(unavailable)?;
        if !exists {
            return Ok(None);
        }
        let v: RValue = i
            .cmd(redis::cmd("HGETALL").arg(format!("{k}:l")))
            .await
            .map_err(unavailable)?;
        let mut out = BTreeMap::new();
        for (field, val) in pairs(&v) {
            let mut it = val.split('\u{1f}');
            if let (Some(s), Some(u), Some(e)) = (it.next(), it.next(), it.next()) {
                if let Some(l) = i.lock_from(s, u, e) {
                    out.insert(field, LockOwnerView::new(&l, &i.clock));
                }
            }
        }
        Ok(Some(out))
    }

    async fn require_role(
        &self,
        id: &RoomId,
        session: &SessionId,
        role: Role,
        action: &str,
    ) -> Result<(), EngineError> {
        let i = &self.inner;
        let x: Option<String> = i
            .cmd(
                redis::cmd("HGET")
                    .arg(format!("{}:x", i.room_key(id)))
                    .arg(session.as_str()),
            )
            .await
            .map_err(unavailable)?;
        let Some(x) = x else {
            return Err(core_err("not_subscribed", id, ""));
        };
        let have = role_from(&x[..1.min(x.len())]);
        if have >= role {
            Ok(())
        } else {
            Err(role_err(id, action, role, have))
        }
    }

    async fn mutating(
        &self,
        id: &RoomId,
        create: RoomSettings,
        by: UserId,
        now: Instant,
        stale_ttl: Duration,
        at: Option<u64>,
    ) -> Result<Option<EntityView>, EngineError> {
        self.lifecycle(id, create, Some(by.as_str()), now, stale_ttl, at)
            .await
    }

    async fn mutated(
        &self,
        id: &RoomId,
        create: RoomSettings,
        at: Option<u64>,
    ) -> Result<Option<EntityView>, EngineError> {
        let now = self.inner.clock.now();
        self.lifecycle(id, create, None, now, Duration::ZERO, at)
            .await
    }

    async fn expire_stale(
        &self,
        id: &RoomId,
        now: Instant,
    ) -> Result<Option<EntityView>, EngineError> {
        let i = &self.inner;
        let args = [ms(i.clock.wall(now)).to_string()];
        let v = i
            .script("expire_stale", &i.room_key(id), &args)
            .await
            .map_err(unavailable)?;
        if is_none(&v) {
            return Ok(None);
        }
        let a = arr(&v);
        Ok(match (a.first(), a.get(1), a.get(2)) {
            (Some(s), Some(b), Some(n)) => Some(Inner::entity_from(id, s, b, n)),
            _ => None,
        })
    }
}

#[async_trait]
impl Users for RedisEngine {
    async fn user_attach(
        &self,
        user: &UserRef,
        session: &SessionId,
        status: Status,
        device: &str,
    ) -> Result<UserChange, EngineError> {
        self.inner
            .user_op(
                user,
                "attach",
                session.as_str(),
                status,
                device,
                SystemTime::now(),
            )
            .await
    }

    fn status_cell(&self, user: &UserRef) -> Arc<AtomicU8> {
        self.inner
            .user_cells
            .entry(user.clone())
            .or_insert_with(|| Arc::new(AtomicU8::new(0)))
            .value()
            .clone()
    }

    async fn user_detach(
        &self,
        user: &UserRef,
        session: &SessionId,
        now: SystemTime,
    ) -> Result<UserChange, EngineError> {
        self.inner
            .user_op(user, "detach", session.as_str(), Status::Offline, "", now)
            .await
    }

    async fn user_set_status(
        &self,
        user: &UserRef,
        session: &SessionId,
        status: Status,
    ) -> Result<UserChange, EngineError> {
        self.inner
            .user_op(
                user,
                "status",
                session.as_str(),
                status,
                "",
                SystemTime::now(),
            )
            .await
    }

    async fn user(&self, user: &UserRef) -> Result<UserRecord, EngineError> {
        let i = &self.inner;
        let v: RValue = i
            .cmd(redis::cmd("HGETALL").arg(i.user_key(user)))
            .await
            .map_err(unavailable)?;
        let mut best = 0u8;
        let mut sessions = vec![];
        let mut devices = vec![];
        let mut last_seen = None;
        for (f, val) in pairs(&v) {
            if f == "_seen" {
                last_seen = val
                    .parse::<u64>()
                    .ok()
                    .map(|m| UNIX_EPOCH + Duration::from_millis(m));
                continue;
            }
            let st = val[..1.min(val.len())].parse::<u8>().unwrap_or(0);
            best = best.max(st);
            if let Ok(sid) = SessionId::parse(&f) {
                sessions.push(sid);
            }
            devices.push(val.get(1..).unwrap_or_default().to_string());
        }
        devices.sort();
        devices.dedup();
        sessions.sort();
        i.cell(user, best as i64);
        Ok(UserRecord {
            status: Status::from_u8(best),
            last_seen,
            sessions,
            devices,
        })
    }

    async fn user_seen(&self, user: &UserRef, at: SystemTime) -> Result<(), EngineError> {
        self.inner
            .user_op(user, "seen", "", Status::Offline, "", at)
            .await
            .map(drop)
    }
}

#[async_trait]
impl EventLog for RedisEngine {
    async fn append_events(
        &self,
        tenant: &TenantId,
        events: &[String],
        limit: usize,
    ) -> Result<u64, EngineError> {
        let i = &self.inner;
        let mut args = vec![limit.max(1).to_string()];
        args.extend(events.iter().cloned());
        let first = i
            .script("append_events", &i.events_key(tenant), &args)
            .await
            .map_err(unavailable)?;
        // Another slot than the log's: a second command (Cluster).
        let _: () = i
            .cmd(
                redis::cmd("SADD")
                    .arg(i.event_tenants_key())
                    .arg(tenant.as_str()),
            )
            .await
            .map_err(unavailable)?;
        Ok(int(&first) as u64)
    }

    async fn read_events(
        &self,
        tenant: &TenantId,
        after: u64,
        max: usize,
    ) -> Result<Vec<(u64, String)>, EngineError> {
        let i = &self.inner;
        let entries: Vec<(String, Vec<(String, String)>)> = i
            .cmd(
                redis::cmd("XRANGE")
                    .arg(i.events_key(tenant))
                    .arg(format!("{}-0", after + 1))
                    .arg("+")
                    .arg("COUNT")
                    .arg(max),
            )
            .await
            .map_err(unavailable)?;
        Ok(entries
            .into_iter()
            .filter_map(|(id, fields)| {
                let n = id.split('-').next()?.parse().ok()?;
                let e = fields.into_iter().find(|(k, _)| k == "e")?.1;
                Some((n, e))
            })
            .collect())
    }

    async fn event_head(&self, tenant: &TenantId) -> Result<u64, EngineError> {
        let i = &self.inner;
        let v: Option<u64> = i
            .cmd(redis::cmd("GET").arg(format!("{}:seq", i.events_key(tenant))))
            .await
            .map_err(unavailable)?;
        Ok(v.unwrap_or(0))
    }

    async fn event_tenants(&self) -> Result<Vec<TenantId>, EngineError> {
        let i = &self.inner;
        let v: Vec<String> = i
            .cmd(redis::cmd("SMEMBERS").arg(i.event_tenants_key()))
            .await
            .map_err(unavailable)?;
        Ok(v.iter().filter_map(|t| TenantId::parse(t).ok()).collect())
    }

    async fn hold_event_lease(
        &self,
        tenant: &TenantId,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, EngineError> {
        let i = &self.inner;
        let ms = ttl.as_millis().max(1).to_string();
        let v = i
            .script(
                "hold_lease",
                &i.events_key(tenant),
                &[holder.to_string(), ms],
            )
            .await
            .map_err(unavailable)?;
        Ok(int(&v) == 1)
    }

    async fn release_event_lease(
        &self,
        tenant: &TenantId,
        holder: &str,
    ) -> Result<(), EngineError> {
        let i = &self.inner;
        i.script(
            "release_lease",
            &i.events_key(tenant),
            &[holder.to_string()],
        )
        .await
        .map(drop)
        .map_err(unavailable)
    }

    async fn event_cursor(&self, tenant: &TenantId, consumer: &str) -> Result<u64, EngineError> {
        let i = &self.inner;
        let v: Option<u64> = i
            .cmd(
                redis::cmd("HGET")
                    .arg(format!("{}:cur", i.events_key(tenant)))
                    .arg(consumer),
            )
            .await
            .map_err(unavailable)?;
        Ok(v.unwrap_or(0))
    }

    async fn set_event_cursor(
        &self,
        tenant: &TenantId,
        consumer: &str,
        seq: u64,
    ) -> Result<(), EngineError> {
        let i = &self.inner;
        i.script(
            "set_cursor",
            &i.events_key(tenant),
            &[consumer.to_string(), seq.to_string()],
        )
        .await
        .map(drop)
        .map_err(unavailable)
    }
}

#[async_trait]
impl Cluster for RedisEngine {
    fn healthy(&self) -> bool {
        self.inner.healthy.load(Ordering::SeqCst)
    }

    async fn session_rooms(&self, session: &SessionId) -> Result<Vec<RoomId>, EngineError> {
        let i = &self.inner;
        let v: Vec<String> = i
            .cmd(redis::cmd("SMEMBERS").arg(format!("{}:r", i.session_key(session))))
            .await
            .map_err(unavailable)?;
        Ok(v.iter().filter_map(|s| parse_room(s)).collect())
    }

    async fn session_opened(
        &self,
        session: &SessionId,
        user: &UserRef,
        client_id: Option<&str>,
    ) -> Result<(), EngineError> {
        let i = &self.inner;
        let mut p = redis::pipe();
        p.hset_multiple(
            i.session_key(session),
            &[
                ("t", user.tenant.as_str()),
                ("u", user.user.as_str()),
                ("n", i.node_id.as_str()),
                ("c", client_id.unwrap_or_default()),
            ],
        )
        .ignore();
        i.pipe::<()>(&p).await.map_err(unavailable)?;
        if let Some(cid) = client_id {
            // Where a `clientId` resume on another node finds the session; kept
            // a day (a stale entry points at a record that is gone). Another
            // slot than the record: a command of its own.
            i.cmd::<()>(
                redis::cmd("SET")
                    .arg(i.client_key(user, cid))
                    .arg(session.as_str())
                    .arg("EX")
                    .arg(86_400),
            )
            .await
            .map_err(unavailable)?;
        }
        Ok(())
    }

    async fn session_closed(&self, session: &SessionId) -> Result<(), EngineError> {
        let i = &self.inner;
        let k = i.session_key(session);
        let mut p = redis::pipe();
        p.del(&k).ignore().del(format!("{k}:r")).ignore();
        let record = i.pipe::<()>(&p).await;
        // Both are tried: a liveness entry left behind is claimed by a sweep,
        // which finds no record and lets it go.
        i.cmd::<()>(redis::cmd("ZREM").arg(i.live_key()).arg(session.as_str()))
            .await
            .and(record)
            .map_err(unavailable)
    }

    async fn sessions_alive(
        &self,
        sessions: &[SessionId],
        until: SystemTime,
    ) -> Result<(), EngineError> {
        let i = &self.inner;
        let score = ms(until);
        i.cmd::<i64>(
            redis::cmd("ZADD")
                .arg(i.nodes_key())
                .arg(score)
                .arg(&i.node_id),
        )
        .await
        .map_err(unavailable)?;
        for chunk in sessions.chunks(1000) {
            let mut c = redis::cmd("ZADD");
            c.arg(i.live_key());
            for sid in chunk {
                c.arg(score).arg(sid.as_str());
            }
            i.cmd::<i64>(&c).await.map_err(unavailable)?;
        }
        Ok(())
    }

    async fn hand_over_at_shutdown(
        &self,
        sessions: &[(SessionId, SystemTime)],
    ) -> Result<(), EngineError> {
        let i = &self.inner;
        // Marked first, deadline second: a claim never sees a due session of
        // ours without its mark. One script per record (each its own slot),
        // many in flight.
        let mut ours = vec![];
        let mut failed: Option<(usize, redis::RedisError)> = None;
        for chunk in sessions.chunks(256) {
            let marks = futures_util::future::join_all(chunk.iter().map(|(sid, _)| async move {
                i.script(
                    "hand_over",
                    &i.session_key(sid),
                    std::slice::from_ref(&i.node_id),
                )
                .await
            }))
            .await;
            for ((sid, until), mark) in chunk.iter().zip(marks) {
                match mark {
                    Ok(v) if int(&v) == 1 => ours.push((sid, *until)),
                    Ok(_) => {}
                    // Its liveness entry stays as it was: another node times it
                    // out after `session_timeout` (as if this node died).
                    Err(e) => match &mut failed {
                        Some((n, _)) => *n += 1,
                        None => failed = Some((1, e)),
                    },
                }
            }
        }
        if let Some((n, e)) = &failed {
            tracing::warn!(
                sessions = n,
                "hand-over at shutdown failed; they will time out instead: {e}"
            );
        }
        let mut deadlines = Ok(());
        for chunk in ours.chunks(1000) {
            // XX: a session claimed meanwhile is not brought back.
            let mut c = redis::cmd("ZADD");
            c.arg(i.live_key()).arg("XX");
            for (sid, until) in chunk {
                c.arg(ms(*until)).arg(sid.as_str());
            }
            if let Err(e) = i.cmd::<i64>(&c).await {
                tracing::warn!("hand-over at shutdown: liveness deadlines not written: {e}");
                deadlines = Err(e);
            }
        }
        match failed {
            Some((_, e)) => Err(unavailable(e)),
            None => deadlines.map_err(unavailable),
        }
    }

    async fn claim_dead(&self, now: SystemTime) -> Result<Vec<DeadSession>, EngineError> {
        let i = &self.inner;
        let args = [ms(now).to_string(), "500".to_string()];
        let v = i
            .script("claim_expired", &i.live_key(), &args)
            .await
            .map_err(unavailable)?;
        let mut out = vec![];
        let window = TAKE_OVER_SETTLE.as_millis().to_string();
        for sid in texts(&v) {
            let Ok(id) = SessionId::parse(&sid) else {
                continue;
            };
            let Ok(v) = i
                .script(
                    "claim_record",
                    &i.session_key(&id),
                    std::slice::from_ref(&window),
                )
                .await
            else {
                continue;
            };
            if is_none(&v) {
                continue; // ended normally meanwhile
            }
            if let RValue::Int(_) = v {
                // Just taken over by a node whose liveness write is on its way:
                // not dead. A deadline goes back (GT: never shortening the one
                // that node wrote) in case that node dies too.
                let until = ms(now + TAKE_OVER_SETTLE);
                let _: redis::RedisResult<i64> = i
                    .cmd(
                        redis::cmd("ZADD")
                            .arg(i.live_key())
                            .arg("GT")
                            .arg(until)
                            .arg(id.as_str()),
                    )
                    .await;
                continue;
            }
            let a = arr(&v);
            let rec = a.first().map(pairs).unwrap_or_default();
            let rooms = a.get(1).map(texts).unwrap_or_default();
            let get = |f: &str| {
                rec.iter()
                    .find(|(k, _)| k == f)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            let (Ok(tenant), Ok(user)) = (TenantId::parse(&get("t")), UserId::parse(&get("u")))
            else {
                continue;
            };
            out.push(DeadSession {
                id,
                user: UserRef { tenant, user },
                rooms: rooms.iter().filter_map(|r| parse_room(r)).collect(),
                handed_over: get("g") == "1",
            });
        }
        Ok(out)
    }

    async fn session_user(&self, session: &SessionId) -> Result<Option<UserRef>, EngineError> {
        let i = &self.inner;
        let (t, u): (Option<String>, Option<String>) = i
            .cmd(
                redis::cmd("HMGET")
                    .arg(i.session_key(session))
                    .arg("t")
                    .arg("u"),
            )
            .await
            .map_err(unavailable)?;
        Ok((|| {
            Some(UserRef {
                tenant: TenantId::parse(&t?).ok()?,
                user: UserId::parse(&u?).ok()?,
            })
        })())
    }

    async fn kick_remote(&self, session: &SessionId, code: u16) -> Result<(), EngineError> {
        let i = &self.inner;
        let _: i64 = i
            .cmd(
                redis::cmd("PUBLISH")
                    .arg(i.ctl_channel())
                    .arg(format!("K {session} {code}")),
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn remote_sessions(
        &self,
        tenant: &TenantId,
        user: Option<&UserId>,
    ) -> Result<Vec<SessionInfoView>, EngineError> {
        let i = &self.inner;
        i.up().map_err(unavailable)?;
        let now = ms(i.clock.wall_now());
        // Nodes whose sessions are still kept alive; dead ones leave the list.
        let _: redis::RedisResult<i64> = i
            .cmd(
                redis::cmd("ZREMRANGEBYSCORE")
                    .arg(i.nodes_key())
                    .arg("-inf")
                    .arg(format!("({now}")),
            )
            .await;
        let nodes: Vec<String> = i
            .cmd(
                redis::cmd("ZRANGEBYSCORE")
                    .arg(i.nodes_key())
                    .arg(now)
                    .arg("+inf"),
            )
            .await
            .map_err(unavailable)?;
        let expected = nodes.iter().filter(|n| **n != i.node_id).count();
        if expected == 0 {
            return Ok(vec![]);
        }
        let id = SessionId::new_random().to_string();
        let (tx, mut rx) = mpsc::unbounded_channel();
        i.surveys.insert(id.clone(), tx);
        let ask = format!(
            "Q {id} {}\u{1f}{tenant}\u{1f}{}",
            i.node_id,
            user.map(UserId::as_str).unwrap_or_default()
        );
        let sent: redis::RedisResult<i64> = i
            .cmd(redis::cmd("PUBLISH").arg(i.ctl_channel()).arg(ask))
            .await;
        let mut out = vec![];
        if sent.is_ok() {
            let _ = tokio::time::timeout(SURVEY_TIMEOUT, async {
                for _ in 0..expected {
                    match rx.recv().await {
                        Some(v) => out.extend(v),
                        None => break,
                    }
                }
            })
            .await;
        }
        i.surveys.remove(&id);
        sent.map_err(unavailable)?;
        // Only what this tenant (and user) may see, whatever a node sent.
        out.retain(|s| &s.tenant_id == tenant && user.is_none_or(|u| &s.user_id == u));
        Ok(out)
    }

    async fn answer_sessions(
        &self,
        ask: SessionsAsked,
        sessions: Vec<SessionInfoView>,
    ) -> Result<(), EngineError> {
        let i = &self.inner;
        // Plain data (strings and numbers): serializing cannot fail.
        let json = serde_json::to_string(&sessions).unwrap_or_else(|_| "[]".into());
        i.cmd::<i64>(
            redis::cmd("PUBLISH")
                .arg(i.ctl_channel())
                .arg(format!("A {} {json}", ask.id)),
        )
        .await
        .map(drop)
        .map_err(unavailable)
    }

    async fn resync(&self) {
        self.inner.resync_all().await;
    }

    async fn take_over(
        &self,
        user: &UserRef,
        client_id: &str,
    ) -> Result<Option<(SessionId, Vec<RoomId>)>, EngineError> {
        let i = &self.inner;
        let sid: Option<String> = i
            .cmd(redis::cmd("GET").arg(i.client_key(user, client_id)))
            .await
            .map_err(unavailable)?;
        let Some(Ok(sid)) = sid.as_deref().map(SessionId::parse) else {
            return Ok(None);
        };
        let args = [
            user.tenant.to_string(),
            user.user.to_string(),
            i.node_id.clone(),
        ];
        let v = i
            .script("take_over", &i.session_key(&sid), &args)
            .await
            .map_err(unavailable)?;
        if is_none(&v) {
            return Ok(None);
        }
        let a = arr(&v);
        let rooms = a
            .get(1)
            .map(texts)
            .unwrap_or_default()
            .iter()
            .filter_map(|r| parse_room(r))
            .collect();
        // The session is ours now (the script moved it). Should this word
        // not reach the old node, that node's `release_session` still finds
        // the session gone and leaves nothing.
        if let Err(e) = i
            .cmd::<i64>(
                redis::cmd("PUBLISH")
                    .arg(i.ctl_channel())
                    .arg(format!("H {sid} {}", i.node_id)),
            )
            .await
        {
            tracing::warn!(session = %sid, "take-over not announced to the old node: {e}");
        }
        Ok(Some((sid, rooms)))
    }

    async fn adopt_local(&self, session: &SessionId, rooms: &[RoomId]) {
        let i = &self.inner;
        for room in rooms {
            if let Ok((lr, _guard)) = i.local_room(room).await {
                // Subscribed first, then the room's `seq` read: a diff the old
                // node may already have sent (or that the client's re-`SUB`
                // snapshot covers) is not sent twice; every later one is sent.
                let seq: Option<u64> = i
                    .cmd(redis::cmd("GET").arg(format!("{}:seq", i.room_key(room))))
                    .await
                    .unwrap_or_default();
                lr.members
                    .lock()
                    .entry(session.clone())
                    .or_insert(LocalMember {
                        count_mode: false,
                        last_seq: seq.unwrap_or(0),
                        last_count: 0,
                        buffer: None,
                    });
            }
        }
    }

    async fn forget_local(&self, session: &SessionId, rooms: &[RoomId]) {
        let i = &self.inner;
        for room in rooms {
            if let Some(lr) = i.local.get(room).map(|e| e.value().clone()) {
                if lr.members.lock().remove(session).is_some() {
                    i.release_local(room).await;
                }
            }
        }
    }

    async fn release_session(&self, session: &SessionId) -> Result<bool, EngineError> {
        let i = &self.inner;
        let v = i
            .script(
                "release",
                &i.session_key(session),
                std::slice::from_ref(&i.node_id),
            )
            .await
            .map_err(unavailable)?;
        Ok(int(&v) == 1)
    }

    async fn announce_user(&self, user: &UserRef) -> Result<(), EngineError> {
        let i = &self.inner;
        i.cmd::<i64>(redis::cmd("PUBLISH").arg(i.ctl_channel()).arg(format!(
            "U {} {}\u{1f}{}",
            i.node_id, user.tenant, user.user
        )))
        .await
        .map(drop)
        .map_err(unavailable)
    }

    fn shared(&self) -> bool {
        true
    }
}

impl RedisEngine {
    async fn lifecycle(
        &self,
        id: &RoomId,
        create: RoomSettings,
        // `Some(by)`: MUTATING by that user; `None`: MUTATED.
        mutating_by: Option<&str>,
        now: Instant,
        ttl: Duration,
        at: Option<u64>,
    ) -> Result<Option<EntityView>, EngineError> {
        let i = &self.inner;
        let mode = if mutating_by.is_some() {
            "mutating"
        } else {
            "mutated"
        };
        let mut args = vec![
            mode.to_string(),
            mutating_by.unwrap_or_default().to_string(),
            ms(i.clock.wall(now)).to_string(),
            (ttl.as_millis() as u64).to_string(),
            at.map(|a| a.to_string()).unwrap_or_default(),
        ];
        args.extend(cfg_args(&create));
        let v = i
            .script("lifecycle", &i.room_key(id), &args)
            .await
            .map_err(unavailable)?;
        let a = arr(&v);
        if a.first().map(int) == Some(1) {
            i.index_room(id).await;
        }
        if a.get(4).map(int) == Some(1) {
            return Ok(None); // superseded: older than the last event applied
        }
        let nil = RValue::Nil;
        Ok(Some(Inner::entity_from(
            id,
            a.get(1).unwrap_or(&nil),
            a.get(2).unwrap_or(&nil),
            a.get(3).unwrap_or(&nil),
        )))
    }
}

fn parse_room(s: &str) -> Option<RoomId> {
    let (t, k) = s.split_once('|')?;
    Some(RoomId {
        tenant: TenantId::parse(t).ok()?,
        key: RoomKey::parse(k).ok()?,
    })
}

fn access_change(v: &RValue) -> AccessChange {
    let a = arr(v);
    AccessChange {
        evicted: a
            .first()
            .map(texts)
            .unwrap_or_default()
            .iter()
            .filter_map(|s| SessionId::parse(s).ok())
            .collect(),
        released_locks: a
            .get(1)
            .map(arr)
            .unwrap_or_default()
            .iter()
            .filter_map(|l| {
                let l = texts(l);
                Some(ReleasedLock {
                    field: l.first()?.clone(),
                    session: SessionId::parse(l.get(1)?).ok()?,
                    user: UserId::parse(l.get(2)?).ok()?,
                })
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_is_there() {
        let s = Scripts::load();
        for name in [
            "join",
            "append_events",
            "hold_lease",
            "release_lease",
            "set_cursor",
            "leave",
            "set_state",
            "touch",
            "flush",
            "snapshot",
            "lock",
            "unlock",
            "refresh_locks",
            "expire_lock",
            "lifecycle",
            "expire_stale",
            "remove_if_idle",
            "create_room",
            "update_room",
            "delete_room",
            "set_participant",
            "user_change",
            "claim_expired",
            "take_over",
            "release",
            "hand_over",
            "claim_record",
        ] {
            assert!(s.0.contains_key(name), "{name}");
        }
        assert_eq!(s.0.len(), 27);
    }

    #[test]
    fn published_log_is_planned_per_cut() {
        let room = RoomId {
            tenant: TenantId::default_tenant(),
            key: crate::ids::RoomKey::parse("r").unwrap(),
        };
        let view = |u: &str, s: &str| {
            format!(
                r#""{s}":{{"userId":"{u}","status":"online","session":{{"sessionId":"{s}","device":"web","os":null,"appVersion":null,"latencyMs":null,"joinedAt":"x","state":{{}}}}}}"#
            )
        };
        let payload = format!(
            r#"{{"seq":3,"count":2,"over":false,"backUnder":false,"countChanged":true,"ops":["J:s1","J:s2","C:s2","L:{{\"userId\":\"c\",\"sessionId\":\"s3\",\"reason\":\"left\"}}"],"views":{{{},{}}}}}"#,
            view("a", "s1"),
            view("b", "s2")
        );
        let d = RoomDiff::parse(&room, &payload).unwrap();
        assert_eq!(d.diffs.base.joins.len(), 2);
        assert_eq!(d.diffs.base.leaves.len(), 1);
        let s2 = d.diffs.for_member(&SessionId::parse("s2").unwrap());
        assert!(s2.joins.is_empty(), "its snapshot showed s1 and s2");
        assert_eq!(s2.leaves.len(), 1, "s3 left after its snapshot");
        assert!(RoomDiff::parse(&room, r#"{"seq":1,"count":0,"over":false,"backUnder":false,"countChanged":false,"ops":["Q:x"],"views":{}}"#).is_err());
    }
}
