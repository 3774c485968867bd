//! What Redis did during a phase of a run: `INFO commandstats cpu stats` sampled at
//! the phase's ends over a minimal RESP connection (plain TCP, no auth, loopback),
//! turned into calls per presence operation by command and Redis's CPU share.
//!
//! Two things to know when reading the figures. Redis 7 counts the commands a Lua
//! script runs (`redis.call`) in `commandstats` as well, under their own names: the
//! `evalsha` count is the number of script invocations (round trips of that kind),
//! and e.g. `hset` includes the ones made inside scripts. And every figure is
//! Redis-wide: the bench's own `INFO` calls are left out, but anything else talking to
//! the same Redis is in (use a Redis of your own for clean figures).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::measure::round3;

/// Where to sample: `host:port` of a `redis://host:port[/db]` URL.
#[derive(Clone, Debug)]
pub struct RedisInfo {
    addr: String,
}

/// Counters at one moment.
#[derive(Clone, Debug)]
pub struct Sample {
    at: Instant,
    /// command → (calls, usec)
    commands: BTreeMap<String, (u64, u64)>,
    /// used_cpu_user + used_cpu_sys, seconds.
    cpu_s: f64,
    net_in: u64,
    net_out: u64,
    /// `total_reads_processed`: socket reads, about one per request or pipeline.
    reads: u64,
}

impl RedisInfo {
    pub fn new(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("redis://")
            .ok_or_else(|| format!("--redis wants redis://HOST:PORT, got {url:?}"))?;
        let hostport = rest.split(['/', '?']).next().unwrap_or(rest);
        if hostport.contains('@') {
            return Err("--redis: credentials are not supported (loopback Redis only)".into());
        }
        let addr = if hostport.contains(':') {
            hostport.to_owned()
        } else {
            format!("{hostport}:6379")
        };
        Ok(Self { addr })
    }

    /// One `INFO commandstats cpu stats`.
    pub async fn sample(&self) -> Result<Sample, String> {
        let text = tokio::time::timeout(Duration::from_secs(5), self.info())
            .await
            .map_err(|_| format!("redis {}: no INFO answer within 5 s", self.addr))??;
        Ok(parse(&text, Instant::now()))
    }

    async fn info(&self) -> Result<String, String> {
        let tcp = TcpStream::connect(&self.addr)
            .await
            .map_err(|e| format!("redis {}: {e}", self.addr))?;
        let mut io = BufReader::new(tcp);
        let req = resp_command(&["INFO", "commandstats", "cpu", "stats"]);
        io.get_mut()
            .write_all(req.as_bytes())
            .await
            .map_err(|e| format!("redis {}: {e}", self.addr))?;
        let mut head = String::new();
        io.read_line(&mut head)
            .await
            .map_err(|e| format!("redis {}: {e}", self.addr))?;
        let head = head.trim_end();
        let len: usize = match head.strip_prefix('$') {
            Some(n) => n
                .parse()
                .map_err(|_| format!("redis {}: bad reply {head:?}", self.addr))?,
            None => return Err(format!("redis {}: INFO answered {head:?}", self.addr)),
        };
        let mut body = vec![0u8; len + 2];
        io.read_exact(&mut body)
            .await
            .map_err(|e| format!("redis {}: {e}", self.addr))?;
        body.truncate(len);
        Ok(String::from_utf8_lossy(&body).into_owned())
    }
}

fn resp_command(args: &[&str]) -> String {
    let mut s = format!("*{}\r\n", args.len());
    for a in args {
        s.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s
}

fn parse(text: &str, at: Instant) -> Sample {
    let mut s = Sample {
        at,
        commands: BTreeMap::new(),
        cpu_s: 0.0,
        net_in: 0,
        net_out: 0,
        reads: 0,
    };
    for line in text.lines() {
        let Some((key, value)) = line.trim().split_once(':') else {
            continue;
        };
        if let Some(cmd) = key.strip_prefix("cmdstat_") {
            let field = |name: &str| {
                value
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            s.commands
                .insert(cmd.to_owned(), (field("calls"), field("usec")));
            continue;
        }
        match key {
            "used_cpu_user" | "used_cpu_sys" => s.cpu_s += value.parse::<f64>().unwrap_or(0.0),
            "total_net_input_bytes" => s.net_in = value.parse().unwrap_or(0),
            "total_net_output_bytes" => s.net_out = value.parse().unwrap_or(0),
            "total_reads_processed" => s.reads = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    s
}

/// What Redis did between `a` and `b`, per operation when `ops` > 0 (`op` names it),
/// per second otherwise. The bench's own `INFO` calls are left out.
pub fn delta(a: &Sample, b: &Sample, ops: u64, op: &str) -> Value {
    let wall = b.at.saturating_duration_since(a.at).as_secs_f64().max(1e-9);
    let cpu = (b.cpu_s - a.cpu_s).max(0.0);
    let (div, per) = if ops > 0 {
        (ops as f64, format!("per_{op}"))
    } else {
        (wall, "per_s".to_owned())
    };
    let r4 = |x: f64| (x * 10_000.0).round() / 10_000.0;
    let mut by_command = Map::new();
    let mut rows: Vec<(String, u64, u64)> = b
        .commands
        .iter()
        .filter(|(cmd, _)| cmd.as_str() != "info")
        .filter_map(|(cmd, &(calls, usec))| {
            let (c0, u0) = a.commands.get(cmd).copied().unwrap_or((0, 0));
            let dc = calls.saturating_sub(c0);
            (dc > 0).then(|| (cmd.clone(), dc, usec.saturating_sub(u0)))
        })
        .collect();
    rows.sort_by(|x, y| y.1.cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
    let mut total = 0u64;
    for (cmd, calls, usec) in &rows {
        total += calls;
        by_command.insert(
            cmd.clone(),
            json!({
                "calls": calls,
                per.clone(): r4(*calls as f64 / div),
                "usec_per_call": round3(*usec as f64 / *calls as f64),
            }),
        );
    }
    let evalsha = rows
        .iter()
        .filter(|(c, _, _)| c == "evalsha" || c == "eval")
        .map(|(_, n, _)| *n)
        .sum::<u64>();
    json!({
        "wall_s": round3(wall),
        "ops": ops,
        "cpu_s": round3(cpu),
        "cpu_cores": round3(cpu / wall),
        format!("cpu_ms_{per}"): r4(cpu * 1000.0 / div),
        format!("calls_{per}"): r4(total as f64 / div),
        format!("script_calls_{per}"): r4(evalsha as f64 / div),
        format!("socket_reads_{per}"): r4(b.reads.saturating_sub(a.reads) as f64 / div),
        format!("net_in_bytes_{per}"): (b.net_in.saturating_sub(a.net_in) as f64 / div).round(),
        format!("net_out_bytes_{per}"): (b.net_out.saturating_sub(a.net_out) as f64 / div).round(),
        "by_command": by_command,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO_A: &str = "# Commandstats\r\n\
        cmdstat_evalsha:calls=10,usec=100,usec_per_call=10.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_info:calls=3,usec=30,usec_per_call=10.00,rejected_calls=0,failed_calls=0\r\n\
        \r\n# CPU\r\nused_cpu_sys:1.000000\r\nused_cpu_user:2.000000\r\n\
        used_cpu_sys_children:9.0\r\n\
        # Stats\r\ntotal_net_input_bytes:1000\r\ntotal_net_output_bytes:5000\r\n\
        total_reads_processed:40\r\n";
    const INFO_B: &str = "# Commandstats\r\n\
        cmdstat_evalsha:calls=30,usec=500,usec_per_call=16.67,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_publish:calls=10,usec=50,usec_per_call=5.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_info:calls=4,usec=40,usec_per_call=10.00,rejected_calls=0,failed_calls=0\r\n\
        \r\n# CPU\r\nused_cpu_sys:1.500000\r\nused_cpu_user:2.500000\r\n\
        # Stats\r\ntotal_net_input_bytes:3000\r\ntotal_net_output_bytes:9000\r\n\
        total_reads_processed:60\r\n";

    #[test]
    fn info_deltas_are_per_operation() {
        let t0 = Instant::now();
        let a = parse(INFO_A, t0);
        let b = parse(INFO_B, t0 + Duration::from_secs(2));
        assert_eq!(a.commands["evalsha"], (10, 100));
        assert!(
            (a.cpu_s - 3.0).abs() < 1e-9,
            "children's CPU is not Redis's own"
        );
        let d = delta(&a, &b, 10, "update");
        assert_eq!(d["calls_per_update"], 3.0);
        assert_eq!(d["script_calls_per_update"], 2.0);
        assert_eq!(d["by_command"]["evalsha"]["calls"], 20);
        assert_eq!(d["by_command"]["evalsha"]["per_update"], 2.0);
        assert_eq!(d["by_command"]["evalsha"]["usec_per_call"], 20.0);
        assert_eq!(d["by_command"]["publish"]["per_update"], 1.0);
        assert!(d["by_command"].get("info").is_none());
        assert_eq!(d["cpu_s"], 1.0);
        assert_eq!(d["cpu_cores"], 0.5);
        assert_eq!(d["cpu_ms_per_update"], 100.0);
        assert_eq!(d["socket_reads_per_update"], 2.0);
        assert_eq!(d["net_in_bytes_per_update"], 200.0);
        let idle = delta(&a, &b, 0, "");
        assert_eq!(idle["calls_per_s"], 15.0);
    }

    #[test]
    fn urls_give_the_address() {
        assert_eq!(
            RedisInfo::new("redis://127.0.0.1:6380/0").unwrap().addr,
            "127.0.0.1:6380"
        );
        assert_eq!(
            RedisInfo::new("redis://localhost").unwrap().addr,
            "localhost:6379"
        );
        assert!(RedisInfo::new("http://x").is_err());
        assert!(RedisInfo::new("redis://:pw@127.0.0.1:6379").is_err());
        assert_eq!(
            resp_command(&["INFO", "cpu"]),
            "*2\r\n$4\r\nINFO\r\n$3\r\ncpu\r\n"
        );
    }
}
