//! The server under test: either attached to (`--url`, optional `--server-pid`) or
//! started from `--server-bin` on a free loopback port, in a scratch directory (so its
//! SQLite file lands there), with the bench's token secret and no `ROSTER_*`
//! variable of the bench's own environment (only those of `--server-env`). A started
//! server is killed when the run ends. Its log is drained continuously (a full stderr
//! pipe would stall it) to `--server-log` or nowhere.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::Target;

pub struct Server {
    /// ws://HOST:PORT/ws
    pub ws_url: String,
    /// http://HOST:PORT
    pub http_base: String,
    pub pid: Option<u32>,
    /// What the report says about the server's configuration.
    pub config: Value,
    child: Option<Child>,
    scratch: Option<PathBuf>,
}

impl Drop for Server {
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

impl Server {
    pub fn attach_or_start(t: &Target) -> Result<Server, String> {
        match (&t.url, &t.server_bin) {
            (Some(url), _) => Ok(Self::attach(url, t)),
            (None, Some(bin)) => Self::start(bin, t),
            (None, None) => {
                Err("give --url of a running server or --server-bin to start one".into())
            }
        }
    }

    /// The nodes a scenario drives: `nodes` (running servers of one cluster, with
    /// their `pids` if known), or `count` servers started from `--server-bin` with the
    /// same environment (one cluster when that names a shared engine), or the one
    /// server of `--url` / `--server-bin`.
    pub fn cluster(
        t: &Target,
        nodes: &[String],
        pids: &[u32],
        count: usize,
    ) -> Result<Vec<Server>, String> {
        if !nodes.is_empty() {
            if !pids.is_empty() && pids.len() != nodes.len() {
                return Err(format!(
                    "--server-pids names {} process(es) for {} node(s)",
                    pids.len(),
                    nodes.len()
                ));
            }
            return Ok(nodes
                .iter()
                .enumerate()
                .map(|(i, url)| Self::attach_pid(&ws_url_of(url), pids.get(i).copied(), t))
                .collect());
        }
        if count > 1 {
            let Some(bin) = &t.server_bin else {
                return Err("--node-count starts servers: it needs --server-bin".into());
            };
            if !t.listen.ends_with(":0") {
                return Err(format!(
                    "--node-count {count} needs --listen with port 0 (got {})",
                    t.listen
                ));
            }
            return (0..count)
                .map(|i| Self::start_nth(bin, t, i, None))
                .collect();
        }
        Ok(vec![Self::attach_or_start(t)?])
    }

    fn attach(url: &str, t: &Target) -> Server {
        Self::attach_pid(url, t.server_pid, t)
    }

    fn attach_pid(url: &str, pid: Option<u32>, t: &Target) -> Server {
        let http_base = http_base_of(url);
        Server {
            ws_url: url.to_owned(),
            http_base,
            pid,
            config: json!({
                "started_by_bench": false,
                "diff_window": t.diff_window.clone().map(|d| format!("{d} (as declared by --diff-window)"))
                    .unwrap_or_else(|| "unknown (external server)".into()),
            }),
            child: None,
            scratch: None,
        }
    }

    fn start(bin: &PathBuf, t: &Target) -> Result<Server, String> {
        Self::start_nth(bin, t, 0, None)
    }

    /// Starts one server as `serve --config roster.toml --listen <LISTEN>`, with
    /// `config` (TOML) written to `roster.toml` in its scratch directory.
    pub fn start_with_config(bin: &PathBuf, t: &Target, config: &str) -> Result<Server, String> {
        Self::start_nth(bin, t, 0, Some(config))
    }

    /// Starts node `n` (its own scratch directory; its log, with `--server-log FILE`,
    /// in `FILE` for node 0 and `FILE.<n>` for the others), with `config` (TOML) as
    /// its `--config` file if given.
    fn start_nth(
        bin: &PathBuf,
        t: &Target,
        n: usize,
        config: Option<&str>,
    ) -> Result<Server, String> {
        let name = match n {
            0 => format!("roster-bench-{}", std::process::id()),
            n => format!("roster-bench-{}-{n}", std::process::id()),
        };
        let scratch = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&scratch)
            .map_err(|e| format!("cannot create {}: {e}", scratch.display()))?;
        let bin = std::fs::canonicalize(bin)
            .map_err(|e| format!("server binary {}: {e}", bin.display()))?;
        let mut cmd = Command::new(&bin);
        cmd.arg("serve");
        if let Some(toml) = config {
            let path = scratch.join("roster.toml");
            std::fs::write(&path, toml)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            cmd.arg("--config").arg(&path);
        }
        cmd.arg("--listen")
            .arg(&t.listen)
            .current_dir(&scratch)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // The server refuses a `ROSTER_*` variable it does not know (`ROSTER_BIN`,
        // `ROSTER_BENCH_TOKEN_SECRET`, `ROSTER_TEST_REDIS`, …), and one it knows would
        // change what is measured unseen: none is inherited; `--server-env` sets them.
        let mut not_passed = Vec::new();
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ROSTER_") {
                cmd.env_remove(&k);
                not_passed.push(k.to_string_lossy().into_owned());
            }
        }
        not_passed.sort();
        cmd.env("ROSTER_AUTH_JWT_SECRET", &t.token_secret);
        let mut env = serde_json::Map::new();
        if let Some(w) = &t.diff_window {
            cmd.env("ROSTER_TIMING_DIFF_WINDOW", w);
            env.insert("ROSTER_TIMING_DIFF_WINDOW".into(), json!(w));
        }
        for (k, v) in &t.server_env {
            cmd.env(k, v);
            env.insert(k.clone(), json!(v));
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let pid = child.id();
        let stderr = child
            .stderr
            .take()
            .ok_or("the server's stderr was not captured")?;
        let log_path = t.server_log.as_ref().map(|p| match n {
            0 => p.clone(),
            n => PathBuf::from(format!("{}.{n}", p.display())),
        });
        let mut log: Box<dyn Write + Send> = match &log_path {
            Some(path) => Box::new(
                std::fs::File::create(path)
                    .map_err(|e| format!("cannot create {}: {e}", path.display()))?,
            ),
            None => Box::new(std::io::sink()),
        };
        let (tx, rx) = mpsc::channel::<Result<String, String>>();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            let mut tail = Vec::new();
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(log, "{line}");
                if let Some(sender) = &tx {
                    if let Some(addr) = listening_address(&line) {
                        let _ = sender.send(Ok(addr));
                        tx = None;
                    } else {
                        tail.push(line);
                        if tail.len() > 20 {
                            tail.remove(0);
                        }
                    }
                }
            }
            if let Some(sender) = tx {
                let _ = sender.send(Err(format!(
                    "server log ended before it said where it listens:\n{}",
                    tail.join("\n")
                )));
            }
        });
        let diff_window = t
            .diff_window
            .clone()
            .unwrap_or_else(|| "default (50ms per SPEC §2)".into());
        let mut server = Server {
            ws_url: String::new(),
            http_base: String::new(),
            pid: Some(pid),
            config: json!({
                "started_by_bench": true,
                "binary": bin.display().to_string(),
                "diff_window": diff_window,
                "env": env,
                "inherited_env_not_passed": not_passed,
            }),
            child: Some(child),
            scratch: Some(scratch),
        };
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(addr)) => {
                server.ws_url = format!("ws://{addr}/ws");
                server.http_base = format!("http://{addr}");
                Ok(server)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err("the server did not log `listening on …` within 30 s".into()),
        }
    }
}

/// The WebSocket URL of a node given as `ws://HOST:PORT/PATH` (kept as it is),
/// `http://HOST:PORT[/…]` or `HOST:PORT` (both: `ws://HOST:PORT/ws`).
pub fn ws_url_of(s: &str) -> String {
    let s = s.trim();
    if s.starts_with("ws://") || s.starts_with("wss://") {
        return s.to_owned();
    }
    let rest = s.strip_prefix("http://").unwrap_or(s);
    let host = rest.split(['/', '?']).next().unwrap_or(rest);
    format!("ws://{host}/ws")
}

/// `http://host:port` of a `ws://host:port/path` URL.
fn http_base_of(ws_url: &str) -> String {
    let rest = ws_url.strip_prefix("ws://").unwrap_or(ws_url);
    let host = rest.split(['/', '?']).next().unwrap_or(rest);
    format!("http://{host}")
}

/// The `HOST:PORT` in a log line saying `listening on [http://]HOST:PORT` (escape
/// sequences and JSON quoting tolerated).
fn listening_address(line: &str) -> Option<String> {
    let clean = strip_ansi(line);
    let at = clean.find("listening on ")? + "listening on ".len();
    let rest = &clean[at..];
    let rest = rest.strip_prefix("http://").unwrap_or(rest);
    let addr: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']'))
        .collect();
    let port_ok = addr
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok_and(|p| p != 0));
    port_ok.then_some(addr)
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip to the end of a CSI sequence (a letter).
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listening_line_gives_the_address() {
        assert_eq!(
            listening_address("roster listening on http://127.0.0.1:41234").as_deref(),
            Some("127.0.0.1:41234")
        );
        assert_eq!(
            listening_address(
                "\u{1b}[2m2026\u{1b}[0m INFO roster: listening on 127.0.0.1:5000 tenants=1"
            )
            .as_deref(),
            Some("127.0.0.1:5000")
        );
        assert_eq!(
            listening_address(
                r#"{"fields":{"message":"roster listening on http://127.0.0.1:7400"}}"#
            )
            .as_deref(),
            Some("127.0.0.1:7400")
        );
        assert_eq!(listening_address("listening on 127.0.0.1:0"), None);
        assert_eq!(listening_address("starting"), None);
    }

    #[test]
    fn node_urls_become_websocket_urls() {
        assert_eq!(
            ws_url_of("ws://127.0.0.1:7400/ws"),
            "ws://127.0.0.1:7400/ws"
        );
        assert_eq!(ws_url_of("http://127.0.0.1:7400"), "ws://127.0.0.1:7400/ws");
        assert_eq!(
            ws_url_of("http://127.0.0.1:7400/readyz"),
            "ws://127.0.0.1:7400/ws"
        );
        assert_eq!(ws_url_of(" 127.0.0.1:7401 "), "ws://127.0.0.1:7401/ws");
    }

    #[test]
    fn http_base_comes_from_the_ws_url() {
        assert_eq!(
            http_base_of("ws://127.0.0.1:7400/ws"),
            "http://127.0.0.1:7400"
        );
        assert_eq!(
            http_base_of("ws://127.0.0.1:7400/ws?x=1"),
            "http://127.0.0.1:7400"
        );
    }
}
