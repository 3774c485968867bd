//! Pusher mode: the same scenarios over Pusher Channels protocol 7, against Roster
//! (`/app/{key}`, an app of a generated config) or any Pusher-compatible server
//! (Sockudo, started by the bench with a generated config, or one already running).
//!
//! A client connects to `ws://HOST:PORT/app/{key}?protocol=7&…`, waits for
//! `pusher:connection_established` (its `socket_id`), and subscribes to a
//! `presence-…` channel with `auth` = `key:HMAC-SHA256(secret,
//! "socket_id:channel:channel_data")`, hex, and `channel_data` =
//! `{"user_id": "u<i>", "user_info": {"name": "u<i>"}}` (one user per connection).
//! Client events are `client-…` events on that channel.
//!
//! Frames that do not look like Pusher's are counted, not worked around: Pusher's
//! own events (`pusher:…`, `pusher_internal:…`) carry their `data` as a JSON
//! *string*; a server sending an object there is counted in `data_not_string`.
//!
//! The scenarios: `joinstorm` (a presence channel filled at a fixed offered rate),
//! `fanout` (client events in a presence channel, latency to the last member, server
//! CPU per delivery) and `idle` (memory per idle connection).

pub mod fanout;
pub mod idle;
pub mod joinstorm;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream as StdTcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::MaybeTlsStream;

use crate::server::Server;
use crate::wire::{lean_config, Ws};
use crate::{parse_key_value, Target};

/// Which Pusher server to measure.
#[derive(Args, Clone, Debug)]
pub struct PusherTarget {
    /// `roster`: start the roster binary (--server-bin) with a generated config
    /// holding one Pusher app; `sockudo`: start --sockudo-bin with a generated
    /// config holding one app; or the `ws://HOST:PORT` of a running Pusher-protocol
    /// server (its app's --key and --secret; --server-pid for CPU and memory).
    #[arg(long, default_value = "roster")]
    pub target: String,
    /// The roster binary for `--target roster` (default: `roster` next to this
    /// binary, i.e. target/<profile>/roster).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// The sockudo binary for `--target sockudo` (looked up on PATH unless a path).
    #[arg(long, default_value = "sockudo")]
    pub sockudo_bin: PathBuf,
    /// App key (the path `/app/{key}`).
    #[arg(long, default_value = "roster-bench-key")]
    pub key: String,
    /// App secret (signs the presence subscriptions).
    #[arg(long, default_value = "roster-bench-pusher-secret")]
    pub secret: String,
    /// App id (written into a generated config).
    #[arg(long, default_value = "roster-bench")]
    pub app_id: String,
    /// PID of the server at a `ws://` --target (for its CPU and RSS figures).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Extra KEY=VALUE environment for a started server (repeatable).
    #[arg(long = "server-env", value_parser = parse_key_value)]
    pub server_env: Vec<(String, String)>,
    /// Where a started server's log goes (default: discarded).
    #[arg(long)]
    pub server_log: Option<PathBuf>,
}

/// The server under test, stopped (if the bench started it) when dropped.
pub struct PusherServer {
    /// `roster`, `sockudo` or `external`.
    pub kind: String,
    /// `ws://HOST:PORT`
    pub base: String,
    pub key: String,
    pub secret: String,
    pub pid: Option<u32>,
    /// The generated configuration file (or what is known of an external server).
    pub config: Value,
    _roster: Option<Server>,
    child: Option<Child>,
    scratch: Option<PathBuf>,
}

impl Drop for PusherServer {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = &self.scratch {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl PusherServer {
    /// The WebSocket URL a Pusher client (pusher-js 8) opens.
    pub fn app_url(&self) -> String {
        format!(
            "{}/app/{}?protocol=7&client=roster-bench&version=0.1.0&flash=false",
            self.base, self.key
        )
    }

    pub fn report(&self) -> Value {
        json!({
            "target": self.kind,
            "url": self.app_url(),
            "pid": self.pid,
            "config": self.config,
        })
    }

    /// The server's CPU (user, system) seconds so far, if its PID is known.
    pub fn cpu(&self) -> Option<(f64, f64)> {
        self.pid.and_then(crate::measure::process_cpu)
    }

    pub fn rss(&self) -> Option<u64> {
        self.pid.and_then(crate::measure::rss_bytes)
    }

    pub fn start(t: &PusherTarget) -> Result<PusherServer, String> {
        match t.target.as_str() {
            "roster" => Self::start_roster(t),
            "sockudo" => Self::start_sockudo(t),
            url if url.starts_with("ws://") || url.starts_with("wss://") => {
                let base = url.trim_end_matches('/');
                let base = base.split("/app/").next().unwrap_or(base).to_owned();
                Ok(PusherServer {
                    kind: "external".into(),
                    base,
                    key: t.key.clone(),
                    secret: t.secret.clone(),
                    pid: t.server_pid,
                    config: json!({"started_by_bench": false}),
                    _roster: None,
                    child: None,
                    scratch: None,
                })
            }
            other => Err(format!(
                "--target {other:?}: expected roster, sockudo or ws://HOST:PORT"
            )),
        }
    }

    fn start_roster(t: &PusherTarget) -> Result<PusherServer, String> {
        let bin = match &t.server_bin {
            Some(b) => b.clone(),
            None => next_to_me("roster")?,
        };
        let config = roster_config(t);
        let target = Target {
            url: None,
            server_bin: Some(bin),
            listen: "127.0.0.1:0".into(),
            server_pid: None,
            token_secret: "roster-bench-secret".into(),
            tenant: "bench".into(),
            diff_window: None,
            server_env: t.server_env.clone(),
            server_log: t.server_log.clone(),
        };
        let server = Server::start_with_config(
            target.server_bin.as_ref().expect("set above"),
            &target,
            &config,
        )?;
        let base = server.http_base.replacen("http://", "ws://", 1);
        let mut described = server.config.clone();
        described["config_file"] = json!(config);
        Ok(PusherServer {
            kind: "roster".into(),
            base,
            key: t.key.clone(),
            secret: t.secret.clone(),
            pid: server.pid,
            config: described,
            _roster: Some(server),
            child: None,
            scratch: None,
        })
    }

    fn start_sockudo(t: &PusherTarget) -> Result<PusherServer, String> {
        let port = free_port()?;
        let scratch =
            std::env::temp_dir().join(format!("roster-bench-sockudo-{}", std::process::id()));
        std::fs::create_dir_all(&scratch)
            .map_err(|e| format!("cannot create {}: {e}", scratch.display()))?;
        let config = sockudo_config(t, port);
        let path = scratch.join("sockudo.toml");
        std::fs::write(&path, &config)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        let mut cmd = Command::new(&t.sockudo_bin);
        // Sockudo overrides its file with environment variables (PORT, HOST,
        // DEBUG, …): it gets none of the bench's, only PATH and HOME, and --server-env.
        cmd.arg("--config")
            .arg(&path)
            .current_dir(&scratch)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for k in ["PATH", "HOME"] {
            if let Some(v) = std::env::var_os(k) {
                cmd.env(k, v);
            }
        }
        let mut env = serde_json::Map::new();
        for (k, v) in &t.server_env {
            cmd.env(k, v);
            env.insert(k.clone(), json!(v));
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", t.sockudo_bin.display()))?;
        let pid = child.id();
        let tail = drain_log(&mut child, t.server_log.as_deref())?;
        let mut server = PusherServer {
            kind: "sockudo".into(),
            base: format!("ws://127.0.0.1:{port}"),
            key: t.key.clone(),
            secret: t.secret.clone(),
            pid: Some(pid),
            config: json!({
                "started_by_bench": true,
                "binary": t.sockudo_bin.display().to_string(),
                "version": sockudo_version(&t.sockudo_bin),
                "env": env,
                "config_file": config,
            }),
            _roster: None,
            child: None,
            scratch: Some(scratch),
        };
        // Sockudo keeps its defaults (port 6001) when the file does not load, so
        // waiting for *our* port also checks that the configuration was taken.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if StdTcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "sockudo exited ({status}) before listening on 127.0.0.1:{port}:\n{}",
                    tail_text(&tail)
                ));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "sockudo did not listen on 127.0.0.1:{port} within 60 s (its config not taken?):\n{}",
                    tail_text(&tail)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        server.child = Some(child);
        Ok(server)
    }
}

type LogTail = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

fn tail_text(tail: &LogTail) -> String {
    tail.lock().map(|t| t.join("\n")).unwrap_or_default()
}

/// Drains the child's stdout and stderr (a full pipe would stall it) into `log` or
/// nowhere, keeping the last 30 lines for error messages.
fn drain_log(child: &mut Child, log: Option<&Path>) -> Result<LogTail, String> {
    let tail: LogTail = Default::default();
    let sink: std::sync::Arc<std::sync::Mutex<Box<dyn Write + Send>>> =
        std::sync::Arc::new(std::sync::Mutex::new(match log {
            Some(p) => Box::new(
                std::fs::File::create(p)
                    .map_err(|e| format!("cannot create {}: {e}", p.display()))?,
            ),
            None => Box::new(std::io::sink()),
        }));
    let streams: Vec<Box<dyn Read + Send>> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .collect();
    for stream in streams {
        let (tail, sink) = (tail.clone(), sink.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if let Ok(mut s) = sink.lock() {
                    let _ = writeln!(s, "{line}");
                }
                if let Ok(mut t) = tail.lock() {
                    t.push(line);
                    if t.len() > 30 {
                        t.remove(0);
                    }
                }
            }
        });
    }
    Ok(tail)
}

fn sockudo_version(bin: &Path) -> Option<String> {
    let out = Command::new(bin).arg("--version").output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `name` in the directory of this binary (target/<profile>/).
fn next_to_me(name: &str) -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| format!("cannot find my own binary: {e}"))?;
    let bin = me
        .parent()
        .map(|d| d.join(format!("{name}{}", std::env::consts::EXE_SUFFIX)))
        .ok_or("my own binary has no directory")?;
    if !bin.exists() {
        return Err(format!(
            "{} does not exist: build it (cargo build --release -p roster) or give --server-bin",
            bin.display()
        ));
    }
    Ok(bin)
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// Roster's configuration: one Pusher app in tenant `bench`; the bench's channels
/// (`presence-bench…`) are ad hoc rooms of type NOTIFICATION (capacity 10,000), as a
/// GENERIC room's capacity of 100 would refuse the 101st member. Everything else is
/// Roster's default (diff_window 50 ms, leave grace 5 s, 10 client events/s per
/// connection).
fn roster_config(t: &PusherTarget) -> String {
    format!(
        "[[rooms.rules]]\nprefix = \"presence-bench\"\ntype = \"NOTIFICATION\"\n\n\
         [[pusher.apps]]\ntenant = \"bench\"\napp_id = {}\nkey = {}\nsecret = {}\n",
        toml_str(&t.app_id),
        toml_str(&t.key),
        toml_str(&t.secret)
    )
}

/// Sockudo's configuration: one app on 127.0.0.1:PORT, client events on at 10/s per
/// connection (Pusher's and Roster's limit), presence channels up to 10,000
/// members (the default is 100), no connection rate limit (the default allows 20
/// WebSocket connections per minute per address), no metrics listener (its fixed
/// port would collide between runs), no queue (it only carries webhooks, which
/// are not configured; the default driver is Redis). Everything else is Sockudo's
/// default (local adapter, memory app manager and cache).
fn sockudo_config(t: &PusherTarget, port: u16) -> String {
    format!(
        "host = \"127.0.0.1\"\nport = {port}\ndebug = false\n\n\
         [app_manager]\ndriver = \"memory\"\n\n\
         [[app_manager.array.apps]]\nid = {}\nkey = {}\nsecret = {}\nenabled = true\n\
         enable_client_messages = true\nmax_connections = 0\n\
         max_client_events_per_second = 10\nmax_presence_members_per_channel = 10000\n\n\
         [presence]\nmax_members_per_channel = 10000\n\n\
         [rate_limiter]\nenabled = false\n\n\
         [queue]\ndriver = \"none\"\n\n\
         [metrics]\nenabled = false\n",
        toml_str(&t.app_id),
        toml_str(&t.key),
        toml_str(&t.secret)
    )
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// HMAC-SHA256 of `text` with `secret`, lower-case hex (Pusher's signature).
pub fn sign(secret: &str, text: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(text.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The `pusher:subscribe` of user `user_id` to presence channel `channel`.
pub fn presence_subscribe(
    channel: &str,
    socket_id: &str,
    user_id: &str,
    key: &str,
    secret: &str,
) -> String {
    let channel_data = json!({"user_id": user_id, "user_info": {"name": user_id}}).to_string();
    let auth = format!(
        "{key}:{}",
        sign(secret, &format!("{socket_id}:{channel}:{channel_data}"))
    );
    json!({
        "event": "pusher:subscribe",
        "data": {"channel": channel, "auth": auth, "channel_data": channel_data},
    })
    .to_string()
}

pub const PONG: &str = r#"{"event":"pusher:pong","data":{}}"#;

/// A connection after `pusher:connection_established`.
pub struct Conn {
    pub ws: Ws,
    pub socket_id: String,
    /// `data` came as an object, not a JSON string.
    pub data_not_string: bool,
}

/// The local address of client `i` when clients are spread over `n` loopback
/// addresses (127.0.0.1 … 127.0.0.n); `None` (the system's choice) for n ≤ 1.
pub fn source_addr(i: usize, n: usize) -> Option<IpAddr> {
    (n > 1).then(|| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i % n.min(254)) as u8)))
}

/// Connects (from `from`, if given) and waits for `pusher:connection_established`;
/// a `pusher:error` or a close before it is an error naming the code.
pub async fn connect(url: &str, from: Option<IpAddr>) -> Result<Conn, String> {
    let mut ws = match from {
        None => {
            tokio_tungstenite::connect_async_with_config(url, Some(lean_config()), true)
                .await
                .map_err(|e| format!("connect: {e}"))?
                .0
        }
        Some(ip) => {
            let hostport = url
                .strip_prefix("ws://")
                .and_then(|r| r.split('/').next())
                .ok_or_else(|| format!("{url}: a source address needs a ws:// URL"))?;
            let to = tokio::net::lookup_host(hostport)
                .await
                .map_err(|e| format!("{hostport}: {e}"))?
                .find(|a| a.is_ipv4() == ip.is_ipv4())
                .ok_or_else(|| format!("{hostport}: no address of the family of {ip}"))?;
            let sock = if ip.is_ipv4() {
                TcpSocket::new_v4()
            } else {
                TcpSocket::new_v6()
            }
            .map_err(|e| format!("socket: {e}"))?;
            sock.bind(SocketAddr::new(ip, 0))
                .map_err(|e| format!("bind {ip}: {e}"))?;
            let tcp = sock
                .connect(to)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let _ = tcp.set_nodelay(true);
            tokio_tungstenite::client_async_with_config(
                url,
                MaybeTlsStream::Plain(tcp),
                Some(lean_config()),
            )
            .await
            .map_err(|e| format!("connect: {e}"))?
            .0
        }
    };
    loop {
        let text = match ws.next().await {
            None => return Err("connection ended before connection_established".into()),
            Some(Err(e)) => return Err(format!("before connection_established: {e}")),
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(f))) => {
                return Err(format!(
                    "closed {:?} before connection_established",
                    f.map(|f| (u16::from(f.code), f.reason.to_string()))
                ))
            }
            Some(Ok(_)) => continue,
        };
        let v: Value = serde_json::from_str(text.as_str())
            .map_err(|e| format!("server sent non-JSON: {e}: {text}"))?;
        let (data, as_string) = data_of(&v);
        match v.get("event").and_then(Value::as_str) {
            Some("pusher:connection_established") => {
                let socket_id = data
                    .get("socket_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("connection_established without socket_id: {text}"))?
                    .to_owned();
                return Ok(Conn {
                    ws,
                    socket_id,
                    data_not_string: !as_string,
                });
            }
            Some("pusher:error") => return Err(format!("pusher:error {data}")),
            _ => {}
        }
    }
}

/// Connects, subscribes as `user`, and waits for `subscription_succeeded`.
pub async fn join_presence(
    url: &str,
    from: Option<IpAddr>,
    channel: &str,
    user: &str,
    key: &str,
    secret: &str,
) -> Result<Ws, String> {
    let mut conn = connect(url, from).await?;
    let sub = presence_subscribe(channel, &conn.socket_id, user, key, secret);
    send_text(&mut conn.ws, sub).await?;
    loop {
        let text = match conn.ws.next().await {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(f))) => {
                return Err(format!(
                    "closed {:?} before subscription_succeeded",
                    f.map(|f| (u16::from(f.code), f.reason.to_string()))
                ))
            }
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("connection ended before subscription_succeeded".into()),
            Some(Ok(_)) => continue,
        };
        let v: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
        match v.get("event").and_then(Value::as_str) {
            Some("pusher_internal:subscription_succeeded") => return Ok(conn.ws),
            Some(e @ ("pusher:subscription_error" | "pusher:error")) => {
                return Err(format!("{e} {}", data_of(&v).0))
            }
            _ => {}
        }
    }
}

/// A message's `data`: parsed if it is a JSON string (Pusher's own events), as it
/// is otherwise; and whether it was a string.
pub fn data_of(v: &Value) -> (Value, bool) {
    match v.get("data") {
        Some(Value::String(s)) => (
            serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.clone())),
            true,
        ),
        Some(other) => (other.clone(), false),
        None => (Value::Null, false),
    }
}

/// What a `pusher_internal:subscription_succeeded` says of a presence channel:
/// its ids, and whether `ids`, `hash` and `count` agree (ids unique, the hash's keys
/// the same ids, count their number).
pub struct Snapshot {
    pub ids: Vec<String>,
    pub consistent: bool,
}

pub fn snapshot_of(data: &Value) -> Snapshot {
    let p = &data["presence"];
    let ids: Vec<String> = p["ids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let unique: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
    let hash_ok = p["hash"]
        .as_object()
        .is_some_and(|h| h.len() == ids.len() && ids.iter().all(|id| h.contains_key(id)));
    let count_ok = p["count"].as_u64() == Some(ids.len() as u64);
    Snapshot {
        consistent: unique.len() == ids.len() && hash_ok && count_ok,
        ids,
    }
}

/// Sends one text frame.
pub async fn send_text(ws: &mut Ws, text: String) -> Result<(), String> {
    ws.send(Message::text(text))
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_pushers_documented_example() {
        // Pusher's docs (private channel auth): secret 7ad3773142a6692b25b8,
        // "1234.1234:private-foobar" signs to 58df8b0c….
        assert_eq!(
            sign("7ad3773142a6692b25b8", "1234.1234:private-foobar"),
            "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
        );
    }

    #[test]
    fn a_presence_subscription_signs_socket_channel_and_data() {
        let msg: Value = serde_json::from_str(&presence_subscribe(
            "presence-x",
            "1.2",
            "u1",
            "k",
            "s3cr3t-s3cr3t",
        ))
        .unwrap();
        let d = &msg["data"];
        let cd = d["channel_data"].as_str().unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(cd).unwrap(),
            json!({"user_id": "u1", "user_info": {"name": "u1"}})
        );
        let expected = format!(
            "k:{}",
            sign("s3cr3t-s3cr3t", &format!("1.2:presence-x:{cd}"))
        );
        assert_eq!(d["auth"], json!(expected));
        assert_eq!(msg["event"], "pusher:subscribe");
    }

    #[test]
    fn snapshots_are_checked_for_agreement() {
        let good =
            json!({"presence": {"ids": ["a", "b"], "hash": {"a": null, "b": {}}, "count": 2}});
        let s = snapshot_of(&good);
        assert!(s.consistent);
        assert_eq!(s.ids, ["a", "b"]);
        let dup = json!({"presence": {"ids": ["a", "a"], "hash": {"a": null}, "count": 2}});
        assert!(!snapshot_of(&dup).consistent);
        let count = json!({"presence": {"ids": ["a"], "hash": {"a": null}, "count": 3}});
        assert!(!snapshot_of(&count).consistent);
    }

    #[test]
    fn clients_are_spread_over_loopback_addresses() {
        assert_eq!(source_addr(5, 1), None);
        assert_eq!(source_addr(0, 4), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(source_addr(5, 4), Some("127.0.0.2".parse().unwrap()));
    }

    #[test]
    fn string_data_is_parsed_and_noted() {
        let v = json!({"event": "e", "data": "{\"a\":1}"});
        assert_eq!(data_of(&v), (json!({"a": 1}), true));
        let v = json!({"event": "e", "data": {"a": 1}});
        assert_eq!(data_of(&v), (json!({"a": 1}), false));
    }

    #[test]
    fn generated_configs_quote_their_strings() {
        let t = PusherTarget {
            target: "roster".into(),
            server_bin: None,
            sockudo_bin: "sockudo".into(),
            key: "k\"ey".into(),
            secret: "secret-secret".into(),
            app_id: "1".into(),
            server_pid: None,
            server_env: vec![],
            server_log: None,
        };
        assert!(roster_config(&t).contains("key = \"k\\\"ey\""));
        assert!(sockudo_config(&t, 7).contains("port = 7\n"));
    }
}
