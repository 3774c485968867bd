//! Runs every bench scenario, small, against `examples/fake_roster` started through
//! `--server-bin`, and checks the JSON report's shape and sanity. This proves the
//! bench's plumbing (server start, address parsing, workers, timetables, reports),
//! not Roster's performance.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn fake_server() -> PathBuf {
    // target/<profile>/deps/<this test> → target/<profile>/examples/fake_roster
    let me = std::env::current_exe().expect("test binary path");
    let profile_dir = me
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>");
    let fake = profile_dir.join("examples").join("fake_roster");
    assert!(
        fake.exists(),
        "{} missing: `cargo test` builds examples",
        fake.display()
    );
    fake
}

fn run_bench(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_roster-bench"))
        .args(args)
        .arg("--server-bin")
        .arg(fake_server())
        .output()
        .expect("run roster-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("report is not JSON ({e}): {stdout}"))
}

#[test]
fn connect_opens_every_session_and_reports_memory() {
    let r = run_bench(&[
        "connect",
        "--sessions",
        "300",
        "--rooms",
        "10",
        "--settle",
        "200ms",
    ]);
    assert_eq!(r["sessions_opened"], 300);
    assert_eq!(r["sessions_failed"], 0);
    assert_eq!(r["procs"], 1);
    assert!(r["connect"]["sessions_per_s"].as_f64().unwrap() > 0.0);
    assert!(r["idle"]["server_rss_after_bytes"].as_u64().unwrap() > 0);
    assert!(r["idle"]["server_rss_bytes_per_connection"].is_number());
    assert_eq!(r["idle"]["dropped_while_idle"], 0);
    assert!(r["command"].as_str().unwrap().contains("connect"));
}

#[test]
fn connect_spreads_sessions_over_worker_processes() {
    let r = run_bench(&[
        "connect",
        "--sessions",
        "300",
        "--rooms",
        "3",
        "--max-per-proc",
        "100",
        "--settle",
        "200ms",
    ]);
    assert_eq!(r["procs"], 3);
    assert_eq!(r["sessions_opened"], 300);
    assert_eq!(r["worker_cpu"].as_array().unwrap().len(), 3);
    assert_eq!(r["idle"]["dropped_while_idle"], 0);
}

#[test]
fn fanout_times_every_delivery() {
    let r = run_bench(&[
        "fanout",
        "--members",
        "50",
        "--senders",
        "2",
        "--updates-per-sec",
        "20",
        "--duration",
        "2s",
        "--warmup",
        "500ms",
        "--drain",
        "500ms",
        "--diff-window",
        "0ms",
    ]);
    let sent = r["updates_sent_in_window"].as_u64().unwrap();
    assert!((38..=42).contains(&sent), "sent {sent}");
    assert_eq!(r["deliveries"], r["deliveries_expected"]);
    assert_eq!(r["latency_ms"]["count"].as_u64().unwrap(), sent * 50);
    assert!(r["latency_ms"]["p99"].as_f64().unwrap() < 1000.0);
    assert_eq!(r["seq_gaps"], 0);
    assert_eq!(r["server"]["config"]["diff_window"], "0ms");
}

#[test]
fn locks_have_exactly_one_winner_per_round() {
    let r = run_bench(&[
        "locks",
        "--sessions",
        "10",
        "--rounds",
        "20",
        "--round-interval",
        "10ms",
    ]);
    assert_eq!(r["rounds_with_exactly_one_winner"], 20);
    assert_eq!(r["lock_latency_ms"]["count"], 200);
    assert_eq!(r["unlock_latency_ms"]["count"], 20);
    assert!(r["violations"].as_array().unwrap().is_empty());
}
