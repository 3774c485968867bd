//! `locks`: N sessions in one room race `LOCK` on the same field every round; the
//! winner `UNLOCK`s. Measures LOCK→LOCK_ACK and UNLOCK→UNLOCK_ACK latency and checks
//! the spec's exclusivity: exactly one `success:true` per round, and every loser's
//! `owner.sessionId` names the winner. Rounds start on a fixed timetable
//! (`--round-interval`), paced under the per-connection rate limit.

use std::time::Duration;

use clap::Args;
use futures_util::future::join_all;
use roster_client::{Client, Hello};
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::measure::{self, micros_histogram, summary_ms};
use crate::server::Server;
use crate::token::TokenMinter;
use crate::{parse_duration, Target};

#[derive(Args, Debug)]
pub struct LocksArgs {
    #[command(flatten)]
    pub target: Target,
    /// Sessions racing for the lock.
    #[arg(long, default_value_t = 50)]
    pub sessions: usize,
    #[arg(long, default_value_t = 200)]
    pub rounds: usize,
    /// Time between round starts (each session sends ≤ 2 messages per round; the
    /// server allows 50/s per connection).
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    pub round_interval: Duration,
    #[arg(long, default_value = "bench:locks")]
    pub room: String,
    #[arg(long, default_value = "totalAmount")]
    pub field: String,
}

pub async fn run(a: LocksArgs) -> Result<(), String> {
    if a.sessions == 0 {
        return Err("--sessions must be at least 1".into());
    }
    let server = Server::attach_or_start(&a.target)?;
    let minter = TokenMinter::new(&a.target.token_secret, &a.target.tenant);
    let reply = Duration::from_secs(10);

    let mut clients = Vec::with_capacity(a.sessions);
    for i in 0..a.sessions {
        let token = minter.mint(&format!("bench-l{i}"), &[])?;
        let mut c = Client::connect_url(&server.ws_url)
            .await
            .map_err(|e| format!("session {i}: {e}"))?;
        c.hello(Hello {
            client_id: Some(format!("lock-{i}")),
            ..Hello::with_token(token)
        })
        .await
        .map_err(|e| format!("session {i} HELLO: {e}"))?;
        c.sub(&a.room, None)
            .await
            .map_err(|e| format!("session {i} SUB: {e}"))?;
        clients.push(c);
    }
    let session_ids: Vec<String> = clients
        .iter()
        .map(|c| c.session_id().unwrap_or("").to_owned())
        .collect();
    // Drop the join diffs.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for c in &mut clients {
        let _ = c.take_buffered();
    }

    let server_cpu_before = server.pid.and_then(measure::process_cpu);
    let bench_cpu_before = measure::self_cpu();
    let mut lock_latency = micros_histogram();
    let mut unlock_latency = micros_histogram();
    let (mut clean_rounds, mut violations, mut errors) =
        (0usize, Vec::<String>::new(), Vec::<String>::new());
    let base = Instant::now();
    for round in 0..a.rounds {
        tokio::time::sleep_until(base + a.round_interval * round as u32).await;
        let lock = json!({"type": "LOCK", "room": a.room, "field": a.field});
        let acks = join_all(clients.iter_mut().map(|c| {
            let lock = lock.clone();
            async move {
                let t0 = Instant::now();
                let r = c.request(lock, "LOCK_ACK", reply).await;
                (t0.elapsed(), r)
            }
        }))
        .await;
        let mut winners = Vec::new();
        let mut owners_named = Vec::new();
        for (i, (took, r)) in acks.into_iter().enumerate() {
            match r {
                Ok(ack) => {
                    measure::record(&mut lock_latency, took.as_micros() as u64);
                    if ack.get("success").and_then(Value::as_bool) == Some(true) {
                        winners.push(i);
                    } else {
                        owners_named.push(
                            ack.pointer("/owner/sessionId")
                                .and_then(Value::as_str)
                                .map(str::to_owned),
                        );
                    }
                }
                Err(e) => note(&mut errors, format!("round {round} session {i} LOCK: {e}")),
            }
        }
        let ok = match winners.as_slice() {
            [w] => {
                let wrong = owners_named
                    .iter()
                    .filter(|o| o.as_deref() != Some(session_ids[*w].as_str()))
                    .count();
                if wrong > 0 {
                    violations.push(format!(
                        "round {round}: {wrong} loser(s) were told another owner"
                    ));
                }
                wrong == 0
            }
            many => {
                violations.push(format!("round {round}: {} winners", many.len()));
                false
            }
        };
        clean_rounds += usize::from(ok);
        for &w in &winners {
            let unlock = json!({"type": "UNLOCK", "room": a.room, "field": a.field});
            let t0 = Instant::now();
            match clients[w].request(unlock, "UNLOCK_ACK", reply).await {
                Ok(ack) if ack.get("success").and_then(Value::as_bool) == Some(true) => {
                    measure::record(&mut unlock_latency, t0.elapsed().as_micros() as u64)
                }
                Ok(ack) => violations.push(format!("round {round}: winner's UNLOCK failed: {ack}")),
                Err(e) => note(&mut errors, format!("round {round} UNLOCK: {e}")),
            }
        }
        for c in &mut clients {
            let _ = c.take_buffered(); // LOCK events of this round
        }
        if errors.iter().any(|e| e.contains("closed")) {
            break;
        }
    }
    let elapsed = base.elapsed().as_secs_f64();
    let server_cpu_after = server.pid.and_then(measure::process_cpu);
    for c in clients {
        c.close().await;
    }
    let report = json!({
        "scenario": "locks",
        "command": measure::command_line(),
        "server": {"url": server.ws_url, "pid": server.pid, "config": server.config},
        "sessions": a.sessions,
        "rounds": a.rounds,
        "round_interval_ms": a.round_interval.as_millis() as u64,
        "elapsed_s": measure::round3(elapsed),
        "rounds_with_exactly_one_winner": clean_rounds,
        "violations": violations,
        "errors": errors,
        "lock_latency_ms": summary_ms(&lock_latency),
        "unlock_latency_ms": summary_ms(&unlock_latency),
        "server_cpu_during_run": measure::cpu_delta(server_cpu_before, server_cpu_after),
        "bench_cpu_during_run": measure::cpu_delta(bench_cpu_before, measure::self_cpu()),
        "bench_cpu": measure::own_cpu(),
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    if !violations.is_empty() || clean_rounds != a.rounds {
        return Err(format!(
            "{} of {} rounds were not clean",
            a.rounds - clean_rounds,
            a.rounds
        ));
    }
    Ok(())
}

/// Keeps the first 20 errors verbatim (enough to diagnose, never unbounded).
fn note(errors: &mut Vec<String>, e: String) {
    if errors.len() < 20 {
        errors.push(e);
    }
}
