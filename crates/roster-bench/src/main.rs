//! `roster-bench`: the load generator behind docs/BENCHMARKS.md.
//!
//! It drives an already running Roster server (`--url`), or starts one itself
//! (`--server-bin`), over the native WebSocket protocol, and prints one JSON report per
//! run with the exact command line and its own CPU time, so a saturated client is
//! never read as a slow server. Latencies are measured open-loop from the *intended*
//! send time into HdrHistograms. It never changes the server's state beyond the
//! sessions, rooms and locks it creates in its own tenant (and, for `churn`, the
//! activity it causes the server to journal; for `lifecycle`, the entity state of
//! its rooms, on a server it started).
//!
//! The `pusher-*` scenarios speak Pusher Channels protocol 7 instead, to Roster
//! (`/app/{key}`, started with a generated config) or to any Pusher-compatible
//! server, Sockudo included (`--target`; see `pusher/mod.rs`).

mod churn;
mod connect;
mod events;
mod fanout;
mod http;
mod lifecycle;
mod locks;
mod measure;
mod openings;
mod prom;
mod pusher;
mod redis_info;
mod server;
mod token;
mod wire;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "roster-bench",
    version,
    about = "Load generator for the Roster presence server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Open many idle sessions; report connect rate and server memory per connection.
    Connect(connect::ConnectArgs),
    /// Internal: one worker process of `connect` (talks JSON lines on stdout, waits on stdin).
    #[command(hide = true)]
    ConnectWorker(connect::WorkerArgs),
    /// Many members in one room, optionally spread over the nodes of a cluster; join
    /// rate, then open-loop STATE updates and their delivery latency percentiles.
    Fanout(fanout::FanoutArgs),
    /// Sessions of one room race LOCK on one field each round; lock latency and exclusivity.
    Locks(locks::LocksArgs),
    /// Sessions join and leave random rooms open-loop while the server journals to its
    /// database; presence latency and journal throughput, backlog, drops and errors.
    Churn(churn::ChurnArgs),
    /// A flood of connections that never finish their opening (idle or dribbling)
    /// from one address while real clients from another must still get WELCOME.
    Openings(openings::OpeningsArgs),
    /// The presence event stream: a webhook receiver's events/s, lag and seq
    /// completeness, and join latency with no webhook, a fast one and a hung one.
    Events(events::EventsArgs),
    /// The entity lifecycle from Kafka (librdkafka's mock cluster in the bench):
    /// produce → ENTITY at the subscribed clients, events/s applied, latency, every
    /// message's ENTITY checked.
    Lifecycle(lifecycle::LifecycleArgs),
    /// Pusher protocol 7: clients join one presence channel at a fixed offered rate;
    /// achieved rate, time until every client's member list is complete, duplicate
    /// member_added (Roster, Sockudo or any Pusher server: --target).
    PusherJoinstorm(pusher::joinstorm::JoinStormArgs),
    /// Pusher protocol 7: client events in a presence channel; latency to the last
    /// member, server CPU per delivery.
    PusherFanout(pusher::fanout::PusherFanoutArgs),
    /// Pusher protocol 7: idle connections in presence channels; server memory per
    /// connection.
    PusherIdle(pusher::idle::PusherIdleArgs),
}

/// Which server to measure, and how to authenticate against it.
#[derive(Args, Clone, Debug)]
pub struct Target {
    /// WebSocket URL of a running server, e.g. ws://127.0.0.1:7400/ws (this,
    /// --server-bin, or for `fanout` --nodes).
    #[arg(long, conflicts_with = "server_bin")]
    pub url: Option<String>,
    /// Start this `roster` binary (`serve --listen <LISTEN>`) and stop it afterwards.
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// Listen address for a server started with --server-bin.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// PID of the running server given by --url (for RSS and CPU figures).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// HS256 secret the server checks tokens with (`ROSTER_AUTH_JWT_SECRET`).
    #[arg(
        long,
        env = "ROSTER_BENCH_TOKEN_SECRET",
        default_value = "roster-bench-secret"
    )]
    pub token_secret: String,
    /// Tenant claim of the minted tokens.
    #[arg(long, default_value = "bench")]
    pub tenant: String,
    /// Sets ROSTER_TIMING_DIFF_WINDOW for a started server (e.g. 0ms); recorded in the report.
    #[arg(long)]
    pub diff_window: Option<String>,
    /// Extra KEY=VALUE environment for a started server (repeatable).
    #[arg(long = "server-env", value_parser = parse_key_value)]
    pub server_env: Vec<(String, String)>,
    /// Where a started server's log goes (default: discarded).
    #[arg(long)]
    pub server_log: Option<PathBuf>,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// Parses `250ms`, `3s`, `2m`, `1h` (or a bare number of seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 500ms, 20s, 2m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration unit in {s:?}: use ms, s, m or h")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("invalid duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("roster-bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Connect(a) => connect::run(a).await,
            Command::ConnectWorker(a) => connect::run_worker(a).await,
            Command::Fanout(a) => fanout::run(a).await,
            Command::Locks(a) => locks::run(a).await,
            Command::Churn(a) => churn::run(a).await,
            Command::Openings(a) => openings::run(a).await,
            Command::Events(a) => events::run(a).await,
            Command::Lifecycle(a) => lifecycle::run(a).await,
            Command::PusherJoinstorm(a) => pusher::joinstorm::run(a).await,
            Command::PusherFanout(a) => pusher::fanout::run(a).await,
            Command::PusherIdle(a) => pusher::idle::run(a).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("roster-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("0ms"), Ok(Duration::ZERO));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
