//! Test harness: starts the real `roster` binary on 127.0.0.1:0 with short
//! timings (given as `ROSTER_*` variables, as a user would), mints tokens with the
//! same secret, and talks to it with `roster-client` and plain HTTP.
#![allow(dead_code)]

pub mod proxy;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use roster::auth::{expiry_in, Authenticator, Claims};
use roster::config::Config;
use roster_client::{Client, ConnectOptions, Hello, Incoming};
use serde_json::{json, Value};

pub const T: Duration = Duration::from_secs(5);

/// Short timings so behaviour tests run in seconds, not minutes.
pub const FAST: &[(&str, &str)] = &[
    ("ROSTER_TIMING_HEARTBEAT_INTERVAL", "500ms"),
    ("ROSTER_TIMING_SESSION_TIMEOUT", "2s"),
    ("ROSTER_TIMING_LEAVE_GRACE", "1s"),
    ("ROSTER_TIMING_DIFF_WINDOW", "20ms"),
    ("ROSTER_TIMING_AWAY_AFTER", "1s"),
    ("ROSTER_TIMING_LOCK_TTL", "3s"),
    ("ROSTER_TIMING_STALE_TTL", "2s"),
    ("ROSTER_TIMING_HELLO_TIMEOUT", "1s"),
];

pub const ADMIN_KEY: &str = "test-admin-key-0123456789";

pub struct Server {
    child: Child,
    /// Holds this server's database file (unless the test gave its own URL).
    pub dir: std::path::PathBuf,
    pub addr: String,
    secret: String,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    pub async fn start() -> Server {
        Self::start_with(&[]).await
    }

    /// Starts the binary with FAST timings overridden by `env`.
    pub async fn start_with(env: &[(&str, &str)]) -> Server {
        Self::start_args(&[], env).await
    }

    /// Starts the binary with command-line `args` and FAST timings overridden by `env`.
    pub async fn start_args(args: &[&str], env: &[(&str, &str)]) -> Server {
        tls();
        let secret = format!("secret-{}", std::process::id());
        let dir = temp_dir("server");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_roster"));
        cmd.args(args);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("ROSTER_LISTEN", "127.0.0.1:0")
            .env("ROSTER_AUTH_JWT_SECRET", &secret)
            .env("ROSTER_AUTH_ADMIN_KEY", ADMIN_KEY)
            .env("ROSTER_LOG_LEVEL", "warn")
            .env(
                "ROSTER_DATABASE_URL",
                format!("sqlite://{}", dir.join("roster.db").display()),
            )
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // The conformance run: the same tests against the Redis engine, each
        // server in its own key prefix (a test may set a shared one).
        if let Some(url) = test_engine() {
            cmd.env("ROSTER_ENGINE_URL", url)
                .env("ROSTER_ENGINE_PREFIX", unique_prefix());
        }
        for (k, v) in FAST.iter().chain(env.iter()) {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start roster");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(a) = line.strip_prefix("roster listening on http://") {
                    let _ = tx.send(a.to_string());
                }
                log2.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| {
                panic!("server did not start: {:?}", log.lock().unwrap());
            });
        Server {
            child,
            dir,
            addr,
            secret,
            log,
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn token_full(&self, user: &str, tenant: &str, roles: &[&str], exp: Option<u64>) -> String {
        let mut c = Config::default();
        c.auth.jwt_secret = Some(self.secret.clone());
        let (auth, _) = Authenticator::from_config(&c).unwrap();
        auth.mint(&Claims {
            sub: user.into(),
            tenant: Some(tenant.into()),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            name: Some(format!("{user} name")),
            info: None,
            exp: Some(exp.unwrap_or_else(|| expiry_in(Duration::from_secs(3600)))),
        })
        .unwrap()
    }

    pub fn token(&self, user: &str) -> String {
        self.token_full(user, "acme", &[], None)
    }

    pub fn admin_token(&self, tenant: &str) -> String {
        self.token_full("root", tenant, &["admin"], None)
    }

    /// Connected and welcomed, in tenant `acme`.
    pub async fn client(&self, user: &str) -> Client {
        self.client_in(user, "acme", Hello::default()).await
    }

    pub async fn client_in(&self, user: &str, tenant: &str, mut hello: Hello) -> Client {
        let mut c = Client::connect(ConnectOptions::new(self.ws_url()))
            .await
            .expect("connect");
        hello.token = Some(self.token_full(user, tenant, &[], None));
        c.hello(hello).await.expect("welcome");
        c
    }

    pub async fn raw(&self) -> Client {
        Client::connect(ConnectOptions::new(self.ws_url()))
            .await
            .expect("connect")
    }

    pub fn sigterm(&self) {
        unsafe_kill(self.child.id(), "TERM");
    }

    /// SIGTERM and wait for the process to exit cleanly (everything flushed).
    pub fn stop(mut self) {
        self.sigterm();
        let status = self
            .wait_exit(Duration::from_secs(15))
            .expect("server exits after SIGTERM");
        assert!(status.success(), "{status:?}");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let end = std::time::Instant::now() + within;
        while std::time::Instant::now() < end {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub async fn rest(
        &self,
        method: &str,
        path: &str,
        bearer: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        rest_as(&self.url(path), method, Some(bearer), &[], body).await
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(self.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

fn unsafe_kill(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fresh directory for one test's files.
/// `ROSTER_TEST_ENGINE`: the engine URL the behaviour tests run against
/// (unset: the memory engine).
pub fn test_engine() -> Option<String> {
    std::env::var("ROSTER_TEST_ENGINE")
        .ok()
        .filter(|v| !v.is_empty() && v != "memory")
}

/// A Redis key prefix no other test uses.
pub fn unique_prefix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "rt{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    )
}

pub fn temp_dir(what: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "roster-{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub async fn rest_as(
    url: &str,
    method: &str,
    bearer: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut req = client.request(method.parse().unwrap(), url);
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("http");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Next message of type `ty` (others are skipped).
pub async fn next(c: &mut Client, ty: &str) -> Value {
    c.recv_type(ty, T)
        .await
        .unwrap_or_else(|e| panic!("waiting for {ty}: {e}"))
}

/// Next PRESENCE_DIFF for `room`.
pub async fn next_diff(c: &mut Client, room: &str) -> Value {
    loop {
        let d = next(c, "PRESENCE_DIFF").await;
        if d["room"] == room {
            return d;
        }
    }
}

/// Next PRESENCE_DIFF for `room` whose `key` list (`joins`/`leaves`/`updates`)
/// has an entry of `user`; returns that entry. Joins of one's own session (the
/// diff that follows a snapshot repeats pending changes) are skipped this way too.
pub async fn next_change(c: &mut Client, room: &str, key: &str, user: &str) -> Value {
    loop {
        let d = next_diff(c, room).await;
        if let Some(e) = d[key]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["userId"] == user)
        {
            let mut e = e.clone();
            e["seq"] = d["seq"].clone();
            return e;
        }
    }
}

/// Sends `msg` with a ref and returns the ERROR answering it.
pub async fn expect_error(c: &mut Client, mut msg: Value) -> Value {
    msg["ref"] = json!("err-ref");
    c.send(msg).await.unwrap();
    loop {
        match c.recv(T).await.expect("reply") {
            Incoming::Message(m) if m["type"] == "ERROR" => {
                assert_eq!(m["ref"], "err-ref", "ERROR echoes ref: {m}");
                return m;
            }
            Incoming::Message(_) => continue,
            Incoming::Closed { code, reason } => {
                panic!("closed {code:?} {reason} while waiting for ERROR")
            }
        }
    }
}

/// Asserts that nothing of type `ty` arrives within `d`.
pub async fn expect_none(c: &mut Client, ty: &str, d: Duration) {
    let end = tokio::time::Instant::now() + d;
    loop {
        let left = end.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return;
        }
        match c.recv(left).await {
            Ok(Incoming::Message(m)) => assert_ne!(m["type"], ty, "unexpected {ty}: {m}"),
            Ok(Incoming::Closed { .. }) => return,
            Err(_) => return,
        }
    }
}

pub fn session_ids(presence: &Value) -> Vec<String> {
    let mut out: Vec<String> = presence["users"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|u| {
            u["sessions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["sessionId"].as_str().unwrap().to_string())
        })
        .collect();
    out.sort();
    out
}

/// The value of an unlabelled metric in a Prometheus text page (0 if absent).
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// `roster_transitions_total` by `kind`, from a Prometheus text page; kinds at 0
/// are left out.
pub fn transitions(text: &str) -> std::collections::BTreeMap<String, u64> {
    let name = "roster_transitions_total{";
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| {
            let kind = l.split("kind=\"").nth(1)?.split('"').next()?;
            let n: f64 = l.rsplit(' ').next()?.parse().ok()?;
            (n > 0.0).then(|| (kind.to_string(), n as u64))
        })
        .collect()
}

/// reqwest in this build has no built-in TLS provider (the server installs
/// ring's at start-up); a test process installs it before its first client.
pub fn tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A fresh schema in the test PostgreSQL, for nodes that share one database:
/// its URL (with the schema as search path) and its name (drop it after).
pub async fn pg_schema() -> (String, String) {
    use sqlx::Connection;
    const PG: &str = "postgres://postgres@127.0.0.1:5432/test";
    let schema = format!("roster_t_{}", unique_prefix().replace('-', "_"));
    let mut pg = sqlx::PgConnection::connect(PG)
        .await
        .expect("PostgreSQL at 127.0.0.1:5432 (scripts/ensure-postgres.sh starts it)");
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut pg)
        .await
        .unwrap();
    (format!("{PG}?options=-c%20search_path%3D{schema}"), schema)
}

pub async fn drop_pg_schema(schema: &str) {
    use sqlx::Connection;
    if let Ok(mut pg) = sqlx::PgConnection::connect("postgres://postgres@127.0.0.1:5432/test").await
    {
        let _ = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(&mut pg)
            .await;
    }
}

/// Received presence events with repeats (same `id`) removed: whether their
/// `seq`s are 1, 2, 3, … without a gap, how many there are and how many are
/// `member_added`. Panics on two different events with one `seq`.
pub fn one_sequence<'a>(events: impl IntoIterator<Item = &'a Value>) -> (bool, usize, usize) {
    let mut by_seq = std::collections::BTreeMap::new();
    let mut ids = std::collections::HashSet::new();
    let mut added = 0;
    for e in events {
        let id = e["id"].as_str().unwrap().to_string();
        if ids.insert(id.clone()) {
            added += usize::from(e["type"] == "member_added");
            let prev = by_seq.insert(e["seq"].as_u64().unwrap(), id);
            assert!(prev.is_none(), "two events with seq {}: {e}", e["seq"]);
        }
    }
    let n = by_seq.len();
    (by_seq.keys().copied().eq(1..=n as u64), n, added)
}
