//! One typed configuration: defaults < TOML file (`--config`) < `ROSTER_*`
//! environment variables < command-line flags (SPEC §12).
//!
//! The layers are merged as TOML tables and deserialised once into [`Config`], so a
//! bad value anywhere fails at start-up with the dotted key, the value and what was
//! expected. Nothing else in the server reads the environment.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::core::room_type::Visibility;

/// A duration written with a unit (`"250ms"`, `"2s"`, `"5m"`, `"1h"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a duration string with a unit, like \"250ms\", \"2s\", \"5m\", \"1h\"")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Dur, E> {
                parse_duration(s).map(Dur).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(t).map_err(|e| {
        format!("invalid duration {s:?} ({e}); expected a number with a unit, like \"250ms\", \"2s\", \"5m\", \"1h\"")
    })
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub listen: String,
    pub auth: AuthConfig,
    pub timing: TimingConfig,
    pub limits: LimitsConfig,
    pub database: DatabaseConfig,
    pub engine: EngineConfig,
    pub kafka: KafkaConfig,
    pub log: LogConfig,
    pub rooms: RoomsConfig,
    pub http: HttpConfig,
    pub webhooks: WebhooksConfig,
    pub pusher: PusherConfig,
    pub alerts: AlertsConfig,
    pub dashboard: DashboardConfig,
}

/// Alert rules (SPEC §8; rules are managed over REST, `/api/v1/alert-rules`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// How often every tenant's rules are evaluated.
    pub eval_interval: Dur,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            eval_interval: Dur(Duration::from_secs(10)),
        }
    }
}

/// The operator dashboard (`/dashboard`) and the live stream it reads
/// (`/api/v1/stream`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DashboardConfig {
    /// How often the live stream looks for changes (totals, rooms, activity,
    /// alerts) and pushes them.
    pub update_interval: Dur,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        Self {
            update_interval: Dur(Duration::from_secs(1)),
        }
    }
}

/// The Pusher Channels protocol (`/app/{key}`, docs/PUSHER.md): off unless
/// an app is configured.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PusherConfig {
    /// `[[pusher.apps]]`: one Pusher app per tenant (file only).
    pub apps: Vec<PusherAppConfig>,
}

/// One Pusher app: its tenant, and the id, key and secret its clients and
/// back end use.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PusherAppConfig {
    pub tenant: String,
    pub app_id: String,
    pub key: String,
    pub secret: String,
    /// Where Pusher webhooks go (`channel_occupied`, `channel_vacated`,
    /// `member_added`, `member_removed`), signed with the secret.
    #[serde(default)]
    pub webhook_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub jwt_secret: Option<String>,
    pub jwt_public_key: Option<PathBuf>,
    pub admin_key: Option<String>,
    pub leeway: Option<Dur>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimingConfig {
    pub heartbeat_interval: Dur,
    pub session_timeout: Dur,
    pub away_after: Dur,
    pub lock_ttl: Dur,
    pub stale_ttl: Dur,
    pub diff_window: Dur,
    pub leave_grace: Dur,
    pub hello_timeout: Dur,
    pub sweep_interval: Dur,
}

impl Default for TimingConfig {
    fn default() -> Self {
        let s = |n| Dur(Duration::from_secs(n));
        Self {
            heartbeat_interval: s(15),
            session_timeout: s(45),
            away_after: s(120),
            lock_ttl: s(120),
            stale_ttl: s(300),
            diff_window: Dur(Duration::from_millis(50)),
            leave_grace: s(5),
            hello_timeout: s(10),
            sweep_interval: s(1),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_body_bytes: usize,
    pub max_frame_bytes: usize,
    pub max_state_bytes: usize,
    pub max_rooms_per_session: usize,
    pub max_watch: usize,
    pub send_queue: usize,
    pub messages_per_second: u32,
    pub messages_burst: u32,
    pub errors_per_minute: u32,
    pub presence_list_limit: usize,
    pub rest_requests_per_second: u32,
    /// Connections in their opening (accepted, no `WELCOME` yet) per client address;
    /// above it a new connection from that address is closed at once.
    pub max_openings_per_ip: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1_048_576,
            max_frame_bytes: 65_536,
            max_state_bytes: 2048,
            max_rooms_per_session: 100,
            max_watch: 1000,
            send_queue: 1024,
            messages_per_second: 50,
            messages_burst: 100,
            errors_per_minute: 30,
            presence_list_limit: 5000,
            rest_requests_per_second: 200,
            max_openings_per_ip: 256,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: String,
    /// Rows waiting for the database, at most; beyond that they are dropped (counted).
    pub queue_size: usize,
    /// A batch is written when it has this many rows…
    pub batch_size: usize,
    /// …or when this much time has passed while it filled.
    pub batch_interval: Dur,
    /// A batch write slower than this is abandoned (rolled back) and retried.
    pub write_timeout: Dur,
    /// Activity rows (and the history of sessions that ended) older than this are purged.
    pub activity_retention: Dur,
    /// Statistics buckets older than this are purged, per resolution.
    pub stats_retention_1m: Dur,
    pub stats_retention_1h: Dur,
    pub stats_retention_1d: Dur,
    /// How often room occupancy and latency are sampled into the statistics.
    pub stats_sample_interval: Dur,
    /// Write the activity log (joins, leaves, locks, …). Session history, last
    /// seen and statistics are written either way.
    pub log_activity: bool,
}
impl Default for DatabaseConfig {
    fn default() -> Self {
        let days = |n: u64| Dur(Duration::from_secs(n * 86_400));
        Self {
            url: "sqlite://roster.db".into(),
            queue_size: 100_000,
            batch_size: 100,
            batch_interval: Dur(Duration::from_secs(1)),
            write_timeout: Dur(Duration::from_secs(10)),
            activity_retention: days(30),
            stats_retention_1m: days(7),
            stats_retention_1h: days(90),
            stats_retention_1d: days(730),
            stats_sample_interval: Dur(Duration::from_secs(10)),
            log_activity: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    pub url: String,
    pub prefix: String,
}
impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            url: "memory".into(),
            prefix: "roster".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Origins (`scheme://host[:port]`, or `*`) whose pages may open a WebSocket
    /// and read REST answers (CORS). None: any origin.
    pub allowed_origins: Option<Vec<String>>,
}

/// The presence event stream's webhooks (SPEC §7; endpoints are managed over
/// REST, `/api/v1/webhooks`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// How long a failing batch is retried (exponential back-off) before it is
    /// recorded as failed and the endpoint moves on.
    pub retry_for: Dur,
    /// Allow endpoint URLs on loopback, private and link-local addresses.
    pub allow_private: bool,
    /// Events held per endpoint while it is slow or down; above, new events are
    /// dropped (and counted).
    pub queue_size: usize,
    /// Most events in one POST.
    pub batch_size: usize,
    /// Endpoints defined here rather than over REST (file only): started at
    /// start-up, read-only over REST.
    pub endpoints: Vec<WebhookEndpointConfig>,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            retry_for: Dur(Duration::from_secs(300)),
            allow_private: false,
            queue_size: 10_000,
            batch_size: 100,
            endpoints: Vec::new(),
        }
    }
}

/// `[[webhooks.endpoints]]`: one endpoint of a tenant.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WebhookEndpointConfig {
    /// `[A-Za-z0-9_-]{1,64}`, unique in the tenant.
    pub id: String,
    pub tenant: String,
    pub url: String,
    /// 16-256 characters.
    pub secret: String,
    /// The kinds to send; absent: every kind but `member_updated`.
    #[serde(default)]
    pub events: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma-separated `host:port`; `None`: Kafka off.
    pub brokers: Option<String>,
    pub group_id: String,
    pub mutating_topic: String,
    pub mutated_topic: String,
    /// The waits before each retry of a failing lifecycle event; after the
    /// last, the event goes to `<topic>.dlt`.
    pub retry_backoff: DurList,
    /// The presence event stream out; empty: off.
    pub events_topic: String,
    /// User online/offline out (seed 004's `OnlineStatusEvent`); empty: off.
    pub status_topic: String,
    /// How long an applied lifecycle `eventId` is remembered (duplicates
    /// within it apply once, across restarts too).
    pub dedup_window: Dur,
    /// How long the group waits for a silent node before its partitions go to
    /// another (librdkafka's `session.timeout.ms`).
    pub session_timeout: Dur,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: None,
            group_id: "roster".into(),
            mutating_topic: "core.entities.lifecycle.mutating".into(),
            mutated_topic: "core.entities.lifecycle.mutated".into(),
            retry_backoff: DurList([1, 3, 9].map(Duration::from_secs).to_vec()),
            events_topic: "roster.presence.events".into(),
            status_topic: "user.presence.status".into(),
            dedup_window: Dur(Duration::from_secs(24 * 3600)),
            session_timeout: Dur(Duration::from_secs(45)),
        }
    }
}

impl KafkaConfig {
    /// The bootstrap servers when Kafka is on.
    pub fn brokers(&self) -> Option<&str> {
        self.brokers.as_deref().filter(|b| !b.trim().is_empty())
    }
}

/// A list of durations: `"1s,3s,9s"` (also how the environment writes it) or
/// a TOML array `["1s", "3s", "9s"]`; `""` or `[]` is no retry at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DurList(pub Vec<Duration>);

impl<'de> Deserialize<'de> for DurList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            List(Vec<String>),
        }
        let items: Vec<String> = match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "expected durations like \"1s,3s,9s\" or [\"1s\", \"3s\", \"9s\"]",
            )
        })? {
            Raw::Text(t) => t
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(String::from)
                .collect(),
            Raw::List(l) => l,
        };
        items
            .iter()
            .map(|i| parse_duration(i))
            .collect::<Result<Vec<_>, _>>()
            .map(DurList)
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// `tracing` filter, e.g. `info` or `roster=debug`.
    pub level: String,
}
impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// Room creation rules: a room created ad hoc whose key starts with `prefix` gets
/// room type `type` (first match wins); otherwise `GENERIC`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RoomsConfig {
    pub rules: Vec<PrefixRule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefixRule {
    pub prefix: String,
    #[serde(rename = "type")]
    pub room_type: String,
    pub visibility: Option<Visibility>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7400".into(),
            auth: AuthConfig::default(),
            timing: TimingConfig::default(),
            limits: LimitsConfig::default(),
            database: DatabaseConfig::default(),
            engine: EngineConfig::default(),
            kafka: KafkaConfig::default(),
            log: LogConfig::default(),
            rooms: RoomsConfig::default(),
            http: HttpConfig::default(),
            webhooks: WebhooksConfig::default(),
            pusher: PusherConfig::default(),
            alerts: AlertsConfig::default(),
            dashboard: DashboardConfig::default(),
        }
    }
}

/// How an environment value is turned into a TOML value.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    Bool,
    /// Comma-separated in the environment, a TOML array of strings in the file.
    List,
}

/// Every scalar key, for the `ROSTER_*` mapping. A unit test proves each one is a
/// real key of [`Config`].
const KEYS: &[(&str, Kind)] = &[
    ("listen", Kind::Str),
    ("auth.jwt_secret", Kind::Str),
    ("auth.jwt_public_key", Kind::Str),
    ("auth.admin_key", Kind::Str),
    ("auth.leeway", Kind::Str),
    ("timing.heartbeat_interval", Kind::Str),
    ("timing.session_timeout", Kind::Str),
    ("timing.away_after", Kind::Str),
    ("timing.lock_ttl", Kind::Str),
    ("timing.stale_ttl", Kind::Str),
    ("timing.diff_window", Kind::Str),
    ("timing.leave_grace", Kind::Str),
    ("timing.hello_timeout", Kind::Str),
    ("timing.sweep_interval", Kind::Str),
    ("limits.max_body_bytes", Kind::Int),
    ("limits.max_frame_bytes", Kind::Int),
    ("limits.max_state_bytes", Kind::Int),
    ("limits.max_rooms_per_session", Kind::Int),
    ("limits.max_watch", Kind::Int),
    ("limits.send_queue", Kind::Int),
    ("limits.messages_per_second", Kind::Int),
    ("limits.messages_burst", Kind::Int),
    ("limits.errors_per_minute", Kind::Int),
    ("limits.presence_list_limit", Kind::Int),
    ("limits.rest_requests_per_second", Kind::Int),
    ("limits.max_openings_per_ip", Kind::Int),
    ("database.url", Kind::Str),
    ("database.queue_size", Kind::Int),
    ("database.batch_size", Kind::Int),
    ("database.batch_interval", Kind::Str),
    ("database.write_timeout", Kind::Str),
    ("database.activity_retention", Kind::Str),
    ("database.stats_retention_1m", Kind::Str),
    ("database.stats_retention_1h", Kind::Str),
    ("database.stats_retention_1d", Kind::Str),
    ("database.stats_sample_interval", Kind::Str),
    ("database.log_activity", Kind::Bool),
    ("engine.url", Kind::Str),
    ("engine.prefix", Kind::Str),
    ("kafka.brokers", Kind::Str),
    ("kafka.group_id", Kind::Str),
    ("kafka.mutating_topic", Kind::Str),
    ("kafka.mutated_topic", Kind::Str),
    ("kafka.retry_backoff", Kind::Str),
    ("kafka.events_topic", Kind::Str),
    ("kafka.status_topic", Kind::Str),
    ("kafka.dedup_window", Kind::Str),
    ("kafka.session_timeout", Kind::Str),
    ("log.format", Kind::Str),
    ("log.level", Kind::Str),
    ("http.allowed_origins", Kind::List),
    ("webhooks.retry_for", Kind::Str),
    ("webhooks.allow_private", Kind::Bool),
    ("webhooks.queue_size", Kind::Int),
    ("webhooks.batch_size", Kind::Int),
    ("alerts.eval_interval", Kind::Str),
    ("dashboard.update_interval", Kind::Str),
];

/// `timing.session_timeout` → `ROSTER_TIMING_SESSION_TIMEOUT`.
pub fn env_name(key: &str) -> String {
    format!("ROSTER_{}", key.replace('.', "_").to_ascii_uppercase())
}

/// Values given on the command line, as dotted keys (highest precedence).
pub type Overrides = Vec<(String, String)>;

#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Loads and validates. `env` is passed in (not read here) so tests can supply it.
    pub fn load(
        file: Option<&Path>,
        env: &BTreeMap<String, String>,
        flags: &Overrides,
    ) -> Result<Config, ConfigError> {
        let mut table = toml::Table::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError(format!("cannot read config file {}: {e}", path.display()))
            })?;
            table = text.parse::<toml::Table>().map_err(|e| {
                ConfigError(format!(
                    "config file {} is not valid TOML: {e}",
                    path.display()
                ))
            })?;
        }
        for (name, value) in env {
            if !name.starts_with("ROSTER_") {
                continue;
            }
            let Some((key, kind)) = KEYS.iter().find(|(k, _)| env_name(k) == *name) else {
                return Err(ConfigError(format!(
                    "unknown environment variable {name}: no such setting (see `roster --help`)"
                )));
            };
            set_key(&mut table, key, typed(key, *kind, value, name)?);
        }
        for (key, value) in flags {
            let kind = KEYS
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, k)| *k)
                .unwrap_or(Kind::Str);
            set_key(&mut table, key, typed(key, kind, value, key)?);
        }
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let path = e.path().to_string();
                ConfigError(format!("`{path}`: {}", e.into_inner().message()))
            })?;
        config.validate()?;
        Ok(config)
    }

    fn validate_webhook_endpoints(&self) -> Result<(), ConfigError> {
        let bad = |key: String, value: &str, expected: &str| {
            Err(ConfigError(format!(
                "`{key}` = {value:?}: expected {expected}"
            )))
        };
        let mut seen = std::collections::HashSet::new();
        for (i, e) in self.webhooks.endpoints.iter().enumerate() {
            let key = |f: &str| format!("webhooks.endpoints[{i}].{f}");
            let id_ok = (1..=64).contains(&e.id.len())
                && e.id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b));
            if !id_ok {
                return bad(key("id"), &e.id, "[A-Za-z0-9_-]{1,64}");
            }
            if crate::ids::TenantId::parse(&e.tenant).is_err() {
                return bad(key("tenant"), &e.tenant, "a tenant id, [A-Za-z0-9_-]{1,64}");
            }
            if !seen.insert((e.tenant.clone(), e.id.clone())) {
                return bad(key("id"), &e.id, "an id not used before in the tenant");
            }
            let url_ok = reqwest::Url::parse(&e.url)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if !url_ok {
                return bad(key("url"), &e.url, "an http:// or https:// URL");
            }
            if !(16..=256).contains(&e.secret.len()) {
                return bad(key("secret"), "<hidden>", "16-256 characters");
            }
            if let Some(events) = &e.events {
                let kinds: Vec<&str> = crate::events::kinds().collect();
                if let Some(k) = events.iter().find(|k| !kinds.contains(&k.as_str())) {
                    return bad(
                        key("events"),
                        k,
                        &format!("kinds among {}", kinds.join(", ")),
                    );
                }
                if events.is_empty() {
                    return bad(key("events"), "[]", "at least one kind (or leave it out)");
                }
            }
        }
        Ok(())
    }

    fn validate_pusher_apps(&self) -> Result<(), ConfigError> {
        let bad = |key: String, value: &str, expected: &str| {
            Err(ConfigError(format!(
                "`{key}` = {value:?}: expected {expected}"
            )))
        };
        let token = |s: &str| {
            (1..=64).contains(&s.len())
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        };
        let (mut tenants, mut ids, mut keys) = (
            std::collections::HashSet::new(),
            std::collections::HashSet::new(),
            std::collections::HashSet::new(),
        );
        for (i, a) in self.pusher.apps.iter().enumerate() {
            let key = |f: &str| format!("pusher.apps[{i}].{f}");
            if crate::ids::TenantId::parse(&a.tenant).is_err() {
                return bad(key("tenant"), &a.tenant, "a tenant id, [A-Za-z0-9_-]{1,64}");
            }
            if !tenants.insert(a.tenant.clone()) {
                return bad(key("tenant"), &a.tenant, "one app per tenant");
            }
            if !token(&a.app_id) || !ids.insert(a.app_id.clone()) {
                return bad(key("app_id"), &a.app_id, "a unique [A-Za-z0-9_.-]{1,64}");
            }
            if !token(&a.key) || !keys.insert(a.key.clone()) {
                return bad(key("key"), &a.key, "a unique [A-Za-z0-9_.-]{1,64}");
            }
            if !(8..=256).contains(&a.secret.len()) || a.secret.chars().any(char::is_control) {
                return bad(
                    key("secret"),
                    "<hidden>",
                    "8-256 characters, no control characters",
                );
            }
            if let Some(url) = &a.webhook_url {
                let ok = reqwest::Url::parse(url)
                    .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
                if !ok {
                    return bad(key("webhook_url"), url, "an http:// or https:// URL");
                }
            }
            let taken = self
                .webhooks
                .endpoints
                .iter()
                .any(|e| e.tenant == a.tenant && e.id == "pusher");
            if a.webhook_url.is_some() && taken {
                return bad(
                    key("webhook_url"),
                    "pusher",
                    "no [[webhooks.endpoints]] of the tenant with id \"pusher\" (the id of the app's webhook)",
                );
            }
        }
        Ok(())
    }

    fn validate_kafka(&self) -> Result<(), ConfigError> {
        let k = &self.kafka;
        let bad = |key: &str, value: &str, expected: &str| {
            Err(ConfigError(format!(
                "`{key}` = {value:?}: expected {expected}"
            )))
        };
        if let Some(brokers) = &k.brokers {
            let ok = brokers.split(',').all(|b| {
                let b = b.trim();
                matches!(b.rsplit_once(':'), Some((host, port))
                    if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0))
            });
            if !ok {
                return bad(
                    "kafka.brokers",
                    brokers,
                    "bootstrap servers as host:port[,host:port…]",
                );
            }
        }
        // Kafka's own rule for topic names (the `.dlt` suffix must still fit).
        let topic_ok = |t: &str| {
            !t.is_empty()
                && t.len() <= 249 - ".dlt".len()
                && t != "."
                && t != ".."
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        };
        for (key, t, may_be_empty) in [
            ("kafka.mutating_topic", &k.mutating_topic, false),
            ("kafka.mutated_topic", &k.mutated_topic, false),
            ("kafka.events_topic", &k.events_topic, true),
            ("kafka.status_topic", &k.status_topic, true),
        ] {
            if !(topic_ok(t) || may_be_empty && t.is_empty()) {
                return bad(
                    key,
                    t,
                    "a Kafka topic name: 1-245 characters of [A-Za-z0-9._-]",
                );
            }
        }
        if k.mutating_topic == k.mutated_topic {
            return bad(
                "kafka.mutated_topic",
                &k.mutated_topic,
                "a topic other than kafka.mutating_topic",
            );
        }
        if k.group_id.trim().is_empty() || k.group_id.len() > 255 {
            return bad(
                "kafka.group_id",
                &k.group_id,
                "a non-empty consumer group id",
            );
        }
        let session = k.session_timeout.0;
        if session < Duration::from_secs(1) || session > Duration::from_secs(3600) {
            return bad(
                "kafka.session_timeout",
                &format!("{session:?}"),
                "a duration from 1s to 1h",
            );
        }
        if k.retry_backoff.0.len() > 10 {
            return bad(
                "kafka.retry_backoff",
                &format!("{:?}", k.retry_backoff.0),
                "at most 10 retries",
            );
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, value: &dyn std::fmt::Debug, expected: &str| {
            Err(ConfigError(format!(
                "`{key}` = {value:?}: expected {expected}"
            )))
        };
        if self.listen_addr().is_err() {
            return bad(
                "listen",
                &self.listen,
                "an address like 127.0.0.1:7400 (port 0 = any free port)",
            );
        }
        let t = &self.timing;
        for (key, d) in [
            ("timing.heartbeat_interval", t.heartbeat_interval),
            ("timing.session_timeout", t.session_timeout),
            ("timing.away_after", t.away_after),
            ("timing.lock_ttl", t.lock_ttl),
            ("timing.stale_ttl", t.stale_ttl),
            ("timing.hello_timeout", t.hello_timeout),
            ("timing.sweep_interval", t.sweep_interval),
            ("database.batch_interval", self.database.batch_interval),
            ("database.write_timeout", self.database.write_timeout),
            (
                "database.activity_retention",
                self.database.activity_retention,
            ),
            (
                "database.stats_retention_1m",
                self.database.stats_retention_1m,
            ),
            (
                "database.stats_retention_1h",
                self.database.stats_retention_1h,
            ),
            (
                "database.stats_retention_1d",
                self.database.stats_retention_1d,
            ),
            (
                "database.stats_sample_interval",
                self.database.stats_sample_interval,
            ),
            ("webhooks.retry_for", self.webhooks.retry_for),
            ("kafka.dedup_window", self.kafka.dedup_window),
            ("alerts.eval_interval", self.alerts.eval_interval),
            ("dashboard.update_interval", self.dashboard.update_interval),
        ] {
            if d.0.is_zero() {
                return bad(key, &d.0, "a duration above zero");
            }
        }
        if t.session_timeout.0 <= t.heartbeat_interval.0 {
            return bad(
                "timing.session_timeout",
                &t.session_timeout.0,
                "a duration longer than timing.heartbeat_interval",
            );
        }
        let l = &self.limits;
        for (key, v) in [
            ("limits.max_body_bytes", l.max_body_bytes),
            ("limits.max_frame_bytes", l.max_frame_bytes),
            ("limits.max_state_bytes", l.max_state_bytes),
            ("limits.max_rooms_per_session", l.max_rooms_per_session),
            ("limits.max_watch", l.max_watch),
            ("limits.send_queue", l.send_queue),
            ("limits.messages_per_second", l.messages_per_second as usize),
            ("limits.messages_burst", l.messages_burst as usize),
            ("limits.errors_per_minute", l.errors_per_minute as usize),
            ("limits.presence_list_limit", l.presence_list_limit),
            (
                "limits.rest_requests_per_second",
                l.rest_requests_per_second as usize,
            ),
            ("limits.max_openings_per_ip", l.max_openings_per_ip),
            ("database.queue_size", self.database.queue_size),
            ("database.batch_size", self.database.batch_size),
            ("webhooks.queue_size", self.webhooks.queue_size),
            ("webhooks.batch_size", self.webhooks.batch_size),
        ] {
            if v == 0 {
                return bad(key, &v, "a number above zero");
            }
        }
        if l.max_frame_bytes < 1024 {
            return bad(
                "limits.max_frame_bytes",
                &l.max_frame_bytes,
                "at least 1024",
            );
        }
        let e = &self.engine.url;
        if !(e == "memory"
            || e.starts_with("redis://")
            || e.starts_with("rediss://")
            || e.starts_with("redis-cluster://"))
        {
            return bad(
                "engine.url",
                e,
                "\"memory\", redis://[:password@]host:port[/db] or redis-cluster://host:port[,host:port…]",
            );
        }
        if self.engine.prefix.is_empty()
            || !self
                .engine
                .prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b))
        {
            return bad(
                "engine.prefix",
                &self.engine.prefix,
                "a non-empty key prefix of [A-Za-z0-9_.:-]",
            );
        }
        self.validate_kafka()?;
        let db = &self.database.url;
        if !(db.starts_with("sqlite:")
            || db.starts_with("postgres://")
            || db.starts_with("postgresql://"))
        {
            return bad("database.url", db, "sqlite://FILE or postgres://…");
        }
        if let Some(secret) = &self.auth.jwt_secret {
            if secret.is_empty() {
                return bad("auth.jwt_secret", secret, "a non-empty secret");
            }
        }
        if let Some(key) = &self.auth.admin_key {
            if key.len() < 16 {
                return bad("auth.admin_key", &"<hidden>", "at least 16 characters");
            }
        }
        if let Some(path) = &self.auth.jwt_public_key {
            if let Err(e) = std::fs::read(path) {
                return bad(
                    "auth.jwt_public_key",
                    path,
                    &format!("a readable PEM file ({e})"),
                );
            }
        }
        for (i, rule) in self.rooms.rules.iter().enumerate() {
            let known: Vec<String> = crate::core::room_type::seeded()
                .into_iter()
                .map(|t| t.code.0)
                .collect();
            if !known.contains(&rule.room_type) {
                return bad(
                    &format!("rooms.rules[{i}].type"),
                    &rule.room_type,
                    &format!("one of {}", known.join(", ")),
                );
            }
            if rule.prefix.is_empty() {
                return bad(
                    &format!("rooms.rules[{i}].prefix"),
                    &rule.prefix,
                    "a non-empty room key prefix",
                );
            }
        }
        self.validate_webhook_endpoints()?;
        self.validate_pusher_apps()?;
        for origin in self.http.allowed_origins.iter().flatten() {
            if let Err(why) = check_origin(origin) {
                return bad(
                    "http.allowed_origins",
                    origin,
                    &format!("`*` or an origin scheme://host[:port] with no path ({why})"),
                );
            }
        }
        tracing_filter_ok(&self.log.level).map_err(|e| {
            ConfigError(format!(
                "`log.level` = {:?}: expected a tracing filter like \"info\" ({e})",
                self.log.level
            ))
        })?;
        Ok(())
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, std::net::AddrParseError> {
        let s = self
            .listen
            .strip_prefix(':')
            .map(|p| format!("0.0.0.0:{p}"));
        s.as_deref().unwrap_or(&self.listen).parse()
    }
}

/// Checks one `http.allowed_origins` entry: `*`, or `scheme://host[:port]` with no
/// path, query, fragment or user info. The reason when it is not.
pub fn check_origin(entry: &str) -> Result<(), &'static str> {
    if entry == "*" {
        return Ok(());
    }
    let Some((scheme, rest)) = entry.split_once("://") else {
        return Err("no scheme://");
    };
    let mut chars = scheme.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        || !chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        return Err("bad scheme");
    }
    if rest.contains(['/', '?', '#']) {
        return Err("a path, query or fragment");
    }
    if rest.contains('@') {
        return Err("user info");
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return Err("unclosed [");
        };
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("bad IPv6 address");
        }
        (addr, after.strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    if host.is_empty() {
        return Err("no host");
    }
    if !rest.starts_with('[')
        && !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
    {
        return Err("bad host");
    }
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.parse::<u16>().is_err() {
            return Err("bad port");
        }
    }
    Ok(())
}

fn tracing_filter_ok(s: &str) -> Result<(), String> {
    tracing_subscriber::EnvFilter::try_new(s)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn typed(key: &str, kind: Kind, value: &str, source: &str) -> Result<toml::Value, ConfigError> {
    match kind {
        Kind::Str => Ok(toml::Value::String(value.to_string())),
        Kind::Bool => match value.trim() {
            "true" | "1" | "yes" => Ok(toml::Value::Boolean(true)),
            "false" | "0" | "no" => Ok(toml::Value::Boolean(false)),
            _ => Err(ConfigError(format!(
                "`{key}` = {value:?} (from {source}): expected true or false"
            ))),
        },
        Kind::List => Ok(toml::Value::Array(
            value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        )),
        Kind::Int => value
            .trim()
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| {
                ConfigError(format!(
                    "`{key}` = {value:?} (from {source}): expected a whole number"
                ))
            }),
    }
}

fn set_key(table: &mut toml::Table, dotted: &str, value: toml::Value) {
    let mut parts: Vec<&str> = dotted.split('.').collect();
    let last = parts.pop().unwrap_or(dotted);
    let mut cur = table;
    for p in parts {
        let entry = cur
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        // Just made sure it is a table.
        cur = entry.as_table_mut().expect("table");
    }
    cur.insert(last.to_string(), value);
}

/// The `--help` text on configuration.
pub fn help_text() -> String {
    let mut s = String::from(
        "Configuration: defaults < TOML file (--config) < ROSTER_* environment < flags.\n\
         Durations take a unit: \"250ms\", \"2s\", \"5m\", \"1h\". Keys and their variables:\n",
    );
    for (k, kind) in KEYS {
        let note = match kind {
            Kind::List => " (comma-separated; a TOML array in the file)",
            _ => "",
        };
        s.push_str(&format!("  {k:<34} {}{note}\n", env_name(k)));
    }
    s.push_str("  [[rooms.rules]] prefix=\"Chat:\" type=\"CHAT\"   (file only)\n");
    s.push_str("  [[webhooks.endpoints]] id tenant url secret events   (file only)\n");
    s.push_str("  [[pusher.apps]] tenant app_id key secret             (file only)\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn defaults_load() {
        let c = Config::load(None, &BTreeMap::new(), &vec![]).unwrap();
        assert_eq!(c.listen, "127.0.0.1:7400");
        assert_eq!(c.timing.session_timeout.0, Duration::from_secs(45));
        assert_eq!(c.limits.send_queue, 1024);
    }

    #[test]
    fn every_env_key_is_a_real_key() {
        for (k, kind) in KEYS {
            let v = match kind {
                Kind::Bool => "false",
                Kind::List => "https://a.example, http://localhost:3000",
                Kind::Int => "4096",
                Kind::Str
                    if k.starts_with("timing")
                        || *k == "auth.leeway"
                        || *k == "webhooks.retry_for"
                        || *k == "alerts.eval_interval"
                        || *k == "dashboard.update_interval"
                        || matches!(
                            *k,
                            "kafka.retry_backoff" | "kafka.dedup_window" | "kafka.session_timeout"
                        )
                        || (k.starts_with("database.") && *k != "database.url") =>
                {
                    "3s"
                }
                Kind::Str if *k == "listen" => "127.0.0.1:0",
                Kind::Str if *k == "engine.url" => "memory",
                Kind::Str if *k == "database.url" => "sqlite://x.db",
                Kind::Str if *k == "kafka.brokers" => "127.0.0.1:9092,kafka-2:9092",
                Kind::Str if *k == "log.format" => "json",
                Kind::Str if *k == "log.level" => "debug",
                Kind::Str if *k == "auth.jwt_public_key" => "Cargo.toml",
                Kind::Str if *k == "auth.admin_key" => "0123456789abcdef",
                Kind::Str => "x",
            };
            let mut e = env(&[(&env_name(k), v)]);
            if k.starts_with("timing.") {
                e.insert("ROSTER_TIMING_SESSION_TIMEOUT".into(), "10s".into());
                e.insert("ROSTER_TIMING_HEARTBEAT_INTERVAL".into(), "2s".into());
            }
            if let Err(err) = Config::load(None, &e, &vec![]) {
                panic!("{k}: {err}");
            }
        }
    }

    #[test]
    fn env_overrides_and_names_the_key_on_error() {
        let c = Config::load(
            None,
            &env(&[
                ("ROSTER_TIMING_SESSION_TIMEOUT", "2s"),
                ("ROSTER_TIMING_HEARTBEAT_INTERVAL", "500ms"),
            ]),
            &vec![],
        )
        .unwrap();
        assert_eq!(c.timing.session_timeout.0, Duration::from_secs(2));
        assert_eq!(c.timing.heartbeat_interval.0, Duration::from_millis(500));
        let e =
            Config::load(None, &env(&[("ROSTER_TIMING_LOCK_TTL", "soon")]), &vec![]).unwrap_err();
        assert!(
            e.0.contains("timing.lock_ttl") && e.0.contains("soon"),
            "{e}"
        );
        let e =
            Config::load(None, &env(&[("ROSTER_LIMITS_SEND_QUEUE", "lots")]), &vec![]).unwrap_err();
        assert!(e.0.contains("limits.send_queue"), "{e}");
        let e = Config::load(None, &env(&[("ROSTER_NOPE", "1")]), &vec![]).unwrap_err();
        assert!(e.0.contains("ROSTER_NOPE"), "{e}");
        for (var, value, key) in [
            ("ROSTER_WEBHOOKS_RETRY_FOR", "0s", "webhooks.retry_for"),
            ("ROSTER_WEBHOOKS_RETRY_FOR", "a while", "webhooks.retry_for"),
            (
                "ROSTER_WEBHOOKS_ALLOW_PRIVATE",
                "maybe",
                "webhooks.allow_private",
            ),
            ("ROSTER_WEBHOOKS_QUEUE_SIZE", "0", "webhooks.queue_size"),
            ("ROSTER_WEBHOOKS_BATCH_SIZE", "-1", "webhooks.batch_size"),
            ("ROSTER_ALERTS_EVAL_INTERVAL", "0s", "alerts.eval_interval"),
            (
                "ROSTER_ALERTS_EVAL_INTERVAL",
                "often",
                "alerts.eval_interval",
            ),
            (
                "ROSTER_DASHBOARD_UPDATE_INTERVAL",
                "0ms",
                "dashboard.update_interval",
            ),
            ("ROSTER_KAFKA_BROKERS", "127.0.0.1", "kafka.brokers"),
            ("ROSTER_KAFKA_BROKERS", "127.0.0.1:0", "kafka.brokers"),
            ("ROSTER_KAFKA_MUTATED_TOPIC", "", "kafka.mutated_topic"),
            (
                "ROSTER_KAFKA_MUTATED_TOPIC",
                "core.entities.lifecycle.mutating",
                "kafka.mutated_topic",
            ),
            ("ROSTER_KAFKA_STATUS_TOPIC", "..", "kafka.status_topic"),
            ("ROSTER_KAFKA_GROUP_ID", " ", "kafka.group_id"),
            ("ROSTER_KAFKA_RETRY_BACKOFF", "1s,x", "kafka.retry_backoff"),
            ("ROSTER_KAFKA_DEDUP_WINDOW", "0s", "kafka.dedup_window"),
            (
                "ROSTER_KAFKA_SESSION_TIMEOUT",
                "100ms",
                "kafka.session_timeout",
            ),
        ] {
            let e = Config::load(None, &env(&[(var, value)]), &vec![]).unwrap_err();
            assert!(e.0.contains(key), "{var}={value}: {e}");
        }
        let c = Config::load(None, &env(&[("ROSTER_KAFKA_RETRY_BACKOFF", "")]), &vec![]).unwrap();
        assert!(c.kafka.retry_backoff.0.is_empty(), "no retry at all");
        let c = Config::load(None, &BTreeMap::new(), &vec![]).unwrap();
        assert_eq!(c.kafka.retry_backoff.0, [1, 3, 9].map(Duration::from_secs));
        assert_eq!(c.kafka.events_topic, "roster.presence.events");
        assert!(c.kafka.brokers().is_none(), "Kafka is off by default");
        let c = Config::load(None, &env(&[("ROSTER_WEBHOOKS_RETRY_FOR", "30s")]), &vec![]).unwrap();
        assert_eq!(c.webhooks.retry_for.0, Duration::from_secs(30));
        assert!(!c.webhooks.allow_private);
    }

    #[test]
    fn pusher_apps_are_checked_and_name_the_key() {
        let dir = std::env::temp_dir().join(format!("roster-pusher-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("p.toml");
        let app = |tenant: &str, id: &str, key: &str, secret: &str| {
            format!("[[pusher.apps]]\ntenant = \"{tenant}\"\napp_id = \"{id}\"\nkey = \"{key}\"\nsecret = \"{secret}\"\n")
        };
        std::fs::write(&p, app("acme", "1", "acme-key", "acme-secret")).unwrap();
        let c = Config::load(Some(&p), &BTreeMap::new(), &vec![]).unwrap();
        assert_eq!(c.pusher.apps[0].key, "acme-key");
        assert!(Config::default().pusher.apps.is_empty(), "off by default");
        for (text, key) in [
            (
                app("bad tenant", "1", "k", "secret-1"),
                "pusher.apps[0].tenant",
            ),
            (app("acme", "", "k", "secret-1"), "pusher.apps[0].app_id"),
            (app("acme", "1", "a key", "secret-1"), "pusher.apps[0].key"),
            (app("acme", "1", "k", "short"), "pusher.apps[0].secret"),
            (
                app("acme", "1", "k", "secret-1") + &app("acme", "2", "k2", "secret-2"),
                "pusher.apps[1].tenant",
            ),
            (
                app("acme", "1", "k", "secret-1") + &app("globex", "2", "k", "secret-2"),
                "pusher.apps[1].key",
            ),
            (
                app("acme", "1", "k", "secret-1") + &app("globex", "1", "k2", "secret-2"),
                "pusher.apps[1].app_id",
            ),
        ] {
            std::fs::write(&p, &text).unwrap();
            let e = Config::load(Some(&p), &BTreeMap::new(), &vec![]).unwrap_err();
            assert!(e.0.contains(key), "{text}: {e}");
            assert!(!e.0.contains("secret-"), "secrets are never echoed: {e}");
        }
        std::fs::write(
            &p,
            app("acme", "1", "k", "secret-1") + "webhook_url = \"not a url\"\n",
        )
        .unwrap();
        let e = Config::load(Some(&p), &BTreeMap::new(), &vec![]).unwrap_err();
        assert!(e.0.contains("pusher.apps[0].webhook_url"), "{e}");
        std::fs::write(
            &p,
            "[[pusher.apps]]\ntenant = \"acme\"\nkey = \"k\"\nsecret = \"secret-1\"\n",
        )
        .unwrap();
        let e = Config::load(Some(&p), &BTreeMap::new(), &vec![]).unwrap_err();
        assert!(e.0.contains("app_id"), "{e}");
    }

    #[test]
    fn file_unknown_key_and_bad_values_are_refused() {
        let dir = std::env::temp_dir().join(format!("roster-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.toml");
        std::fs::write(&p, "[timing]\nsesion_timeout = \"2s\"\n").unwrap();
        let e = Config::load(Some(&p), &BTreeMap::new(), &vec![]).unwrap_err();
        assert!(e.0.contains("sesion_timeout"), "{e}");
        std::fs::write(&p, "[timing]\nsession_timeout = 5\n").unwrap();
        let e = Config::load(Some(&p), &BTreeMap::new(), &vec![]).unwrap_err();
        assert!(e.0.contains("timing.session_timeout"), "{e}");
        std::fs::write(
            &p,
            "[timing]\nsession_timeout = \"1s\"\nheartbeat_interval = \"2s\"\n",
        )
        .unwrap();
        let e = Config::load(Some(&p), &BTreeMap::new(), &vec![]).unwrap_err();
        assert!(e.0.contains("longer than"), "{e}");
        std::fs::write(&p, "listen = \"nowhere\"\n").unwrap();
        let e = Config::load(Some(&p), &BTreeMap::new(), &vec![]).unwrap_err();
        assert!(e.0.contains("listen"), "{e}");
        std::fs::write(&p, "[[rooms.rules]]\nprefix = \"Chat:\"\ntype = \"CHAT\"\n").unwrap();
        let c = Config::load(Some(&p), &BTreeMap::new(), &vec![]).unwrap();
        assert_eq!(c.rooms.rules[0].room_type, "CHAT");
        let endpoint = |extra: &str| {
            format!(
                "[[webhooks.endpoints]]\nid = \"crm\"\ntenant = \"acme\"\nsecret = \"0123456789abcdef\"\n{extra}\n"
            )
        };
        std::fs::write(&p, endpoint("url = \"https://crm.example/hook\"")).unwrap();
        let c = Config::load(Some(&p), &BTreeMap::new(), &vec![]).unwrap();
        assert_eq!(c.webhooks.endpoints[0].url, "https://crm.example/hook");
        for (extra, key) in [
            ("url = \"not a url\"", "webhooks.endpoints[0].url"),
            ("url = \"ftp://crm.example/x\"", "webhooks.endpoints[0].url"),
            (
                "url = \"https://a.example\"\nevents = [\"joined\"]",
                "webhooks.endpoints[0].events",
            ),
            ("url = \"https://a.example\"\nnope = 1", "nope"),
        ] {
            std::fs::write(&p, endpoint(extra)).unwrap();
            let e = Config::load(Some(&p), &BTreeMap::new(), &vec![]).unwrap_err();
            assert!(e.0.contains(key), "{extra}: {e}");
        }
        std::fs::write(&p, "[[webhooks.endpoints]]\nid = \"a b\"\ntenant = \"acme\"\nurl = \"https://a.example\"\nsecret = \"0123456789abcdef\"\n").unwrap();
        let e = Config::load(Some(&p), &BTreeMap::new(), &vec![]).unwrap_err();
        assert!(e.0.contains("webhooks.endpoints[0].id"), "{e}");
        std::fs::write(&p, "[[webhooks.endpoints]]\nid = \"a\"\ntenant = \"acme\"\nurl = \"https://a.example\"\nsecret = \"short\"\n").unwrap();
        let e = Config::load(Some(&p), &BTreeMap::new(), &vec![]).unwrap_err();
        assert!(
            e.0.contains("webhooks.endpoints[0].secret") && !e.0.contains("short"),
            "{e}"
        );
        std::fs::write(&p, "[kafka]\nretry_backoff = [\"500ms\", \"2s\"]\n").unwrap();
        let c = Config::load(Some(&p), &BTreeMap::new(), &vec![]).unwrap();
        assert_eq!(
            c.kafka.retry_backoff.0,
            [Duration::from_millis(500), Duration::from_secs(2)]
        );
        std::fs::write(&p, "[kafka]\nretry_backoff = 3\n").unwrap();
        let e = Config::load(Some(&p), &BTreeMap::new(), &vec![]).unwrap_err();
        assert!(e.0.contains("kafka.retry_backoff"), "{e}");
    }

    #[test]
    fn origin_entries() {
        for ok in [
            "*",
            "https://app.example.com",
            "http://localhost:3000",
            "http://127.0.0.1:8080",
            "https://[::1]:8443",
            "app://x",
        ] {
            assert_eq!(check_origin(ok), Ok(()), "{ok}");
        }
        for bad in [
            "app.example.com",
            "https://app.example.com/",
            "https://app.example.com/path",
            "https://a?x=1",
            "https://user@a",
            "https://",
            "https://a:",
            "https://a:99999",
            "https://a b",
            "1http://a",
            "https://[::1",
        ] {
            assert!(check_origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn allowed_origins_from_env_and_file() {
        let c = Config::load(
            None,
            &env(&[(
                "ROSTER_HTTP_ALLOWED_ORIGINS",
                "https://a.example, http://localhost:3000",
            )]),
            &vec![],
        )
        .unwrap();
        assert_eq!(
            c.http.allowed_origins.unwrap(),
            vec!["https://a.example", "http://localhost:3000"]
        );
        assert!(Config::load(None, &BTreeMap::new(), &vec![])
            .unwrap()
            .http
            .allowed_origins
            .is_none());
        let e = Config::load(
            None,
            &env(&[("ROSTER_HTTP_ALLOWED_ORIGINS", "https://a.example/app")]),
            &vec![],
        )
        .unwrap_err();
        assert!(
            e.0.contains("http.allowed_origins") && e.0.contains("https://a.example/app"),
            "{e}"
        );
        let dir = std::env::temp_dir().join(format!("roster-cfg-o-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("o.toml");
        std::fs::write(&p, "[http]\nallowed_origins = [\"*\"]\n").unwrap();
        let c = Config::load(Some(&p), &BTreeMap::new(), &vec![]).unwrap();
        assert_eq!(c.http.allowed_origins.unwrap(), vec!["*"]);
    }

    #[test]
    fn flags_beat_env() {
        let c = Config::load(
            None,
            &env(&[("ROSTER_LISTEN", "127.0.0.1:1")]),
            &vec![("listen".into(), "127.0.0.1:0".into())],
        )
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:0");
    }
}
