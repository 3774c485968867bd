//! Runs every bench scenario, small, against the real `roster` binary started through
//! `--server-bin`, and checks the JSON report: every session opens, nothing fails,
//! every update reaches every member in seq order, exactly one lock winner per
//! round, every event reaches a webhook receiver without a seq gap, every lifecycle
//! message from (mock) Kafka comes back as its room's `ENTITY`, and over the Pusher
//! protocol every member list completes without a duplicate `member_added` and every
//! client event reaches every other member. Sizes are small
//! so a debug build runs the whole file in seconds; this proves the bench's plumbing
//! against the real server, not Roster's performance.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use serde_json::Value;

/// `target/<profile>/roster`, next to this test binary's profile directory
/// (`target/<profile>/deps/<this test>`). When it is missing it is built first,
/// with the test's profile, from the workspace root.
fn roster_server() -> PathBuf {
    static BUILT: OnceLock<Mutex<()>> = OnceLock::new();
    let me = std::env::current_exe().expect("test binary path");
    let profile_dir = me
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_path_buf();
    let bin = profile_dir.join(format!("roster{}", std::env::consts::EXE_SUFFIX));
    // One build at a time within this process (tests run on parallel threads).
    let _guard = BUILT
        .get_or_init(|| Mutex::new(()))
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if !bin.exists() {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut cargo = Command::new(env!("CARGO"));
        cargo
            .current_dir(&workspace)
            .args(["build", "-p", "roster", "--bin", "roster"]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cargo.arg("--release");
        }
        let status = cargo
            .status()
            .unwrap_or_else(|e| panic!("cannot run cargo to build roster: {e}"));
        assert!(status.success(), "`cargo build -p roster` failed: {status}");
        assert!(
            bin.exists(),
            "{} still missing after `cargo build -p roster --bin roster` in {} \
             (a CARGO_TARGET_DIR elsewhere?)",
            bin.display(),
            workspace.display()
        );
    }
    bin
}

fn run_bench(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_roster-bench"))
        .args(args)
        .arg("--server-bin")
        .arg(roster_server())
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

fn is_empty_array(v: &Value) -> bool {
    v.as_array().is_some_and(Vec::is_empty)
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
    assert_eq!(r["sessions_opened"], 300, "{r}");
    assert_eq!(r["sessions_failed"], 0, "{r}");
    assert!(is_empty_array(&r["first_errors"]), "{r}");
    assert_eq!(r["procs"], 1);
    assert!(r["connect"]["sessions_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(r["connect"]["open_latency_ms"]["count"], 300);
    assert_eq!(r["server"]["config"]["started_by_bench"], true);
    assert!(r["server"]["pid"].as_u64().unwrap() > 0);
    // The real server holds 300 idle sessions: its RSS is the real process's.
    assert!(r["idle"]["server_rss_after_bytes"].as_u64().unwrap() > 1 << 20);
    assert!(r["idle"]["server_rss_bytes_per_connection"].is_number());
    assert_eq!(r["idle"]["dropped_while_idle"], 0, "{r}");
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
    assert_eq!(r["sessions_opened"], 300, "{r}");
    assert_eq!(r["sessions_failed"], 0, "{r}");
    assert_eq!(r["connect"]["open_latency_ms"]["count"], 300);
    assert_eq!(r["worker_cpu"].as_array().unwrap().len(), 3);
    assert_eq!(r["idle"]["dropped_while_idle"], 0, "{r}");
}

#[test]
fn fanout_delivers_every_update_to_every_member_in_seq_order() {
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
    // The room was declared through REST (admin token, BROADCAST, capacity).
    assert_eq!(r["room_setup"]["status"], 201, "{r}");
    let sent = r["updates_sent_in_window"].as_u64().unwrap();
    assert!((38..=42).contains(&sent), "sent {sent}");
    assert_eq!(r["deliveries_expected"], sent * 50);
    assert_eq!(r["deliveries"], r["deliveries_expected"], "{r}");
    assert_eq!(r["delivery_ratio"], 1.0, "{r}");
    assert_eq!(r["latency_ms"]["count"].as_u64().unwrap(), sent * 50);
    assert!(r["latency_ms"]["p99"].as_f64().unwrap() < 1000.0, "{r}");
    assert_eq!(r["seq_gaps"], 0, "{r}");
    assert_eq!(r["members_disconnected"], 0, "{r}");
    assert!(is_empty_array(&r["send_errors"]), "{r}");
    assert_eq!(r["server"]["config"]["diff_window"], "0ms");
    assert_eq!(
        r["server"]["config"]["env"]["ROSTER_TIMING_DIFF_WINDOW"],
        "0ms"
    );
    // The join phase: every SUB answered by its PRESENCE, no diff before it.
    assert_eq!(r["join_phase"]["join_latency_ms"]["count"], 50, "{r}");
    assert!(
        r["join_phase"]["joins_per_s"].as_f64().unwrap() > 0.0,
        "{r}"
    );
    assert_eq!(r["open_phase"]["hello_latency_ms"]["count"], 50, "{r}");
    assert_eq!(r["diffs_before_snapshot"], 0, "{r}");
    assert_eq!(r["seq_regressions"], 0, "{r}");
    assert_eq!(r["nodes"].as_array().unwrap().len(), 1, "{r}");
    assert!(r["redis"].is_null(), "{r}");
}

/// The Redis the multi-node run uses: `ROSTER_TEST_REDIS` (default 127.0.0.1:6379,
/// which `scripts/test.sh` starts when it is down), as the server's cluster tests.
fn redis_url() -> String {
    std::env::var("ROSTER_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

#[test]
fn fanout_spreads_one_room_over_three_nodes_on_redis() {
    let redis = redis_url();
    let prefix = format!(
        "rbench-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    );
    let r = run_bench(&[
        "fanout",
        "--node-count",
        "3",
        "--server-env",
        &format!("ROSTER_ENGINE_URL={redis}"),
        "--server-env",
        &format!("ROSTER_ENGINE_PREFIX={prefix}"),
        "--redis",
        &redis,
        "--members",
        "30",
        "--senders",
        "2",
        "--updates-per-sec",
        "10",
        "--duration",
        "2s",
        "--warmup",
        "500ms",
        "--drain",
        "500ms",
        "--settle",
        "500ms",
        "--diff-window",
        "0ms",
    ]);
    // Best effort: the run's keys go (redis-cli may be missing; the prefix is unique).
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "redis-cli -u {redis} --scan --pattern '{prefix}:*' | xargs -r redis-cli -u {redis} del"
        ))
        .output();
    // Round-robin; the two senders (members 0 and 3) are on node 0.
    let nodes = r["nodes"].as_array().unwrap();
    let members: Vec<u64> = nodes
        .iter()
        .map(|n| n["members"].as_u64().unwrap())
        .collect();
    assert_eq!(members, [10, 10, 10], "{r}");
    assert_eq!(nodes[0]["senders"], 2);
    // Every update reached every member on every node, once, in seq order.
    let sent = r["updates_sent_in_window"].as_u64().unwrap();
    assert!((18..=22).contains(&sent), "sent {sent}");
    assert_eq!(r["deliveries"], sent * 30, "{r}");
    for n in nodes {
        assert_eq!(n["deliveries"], n["deliveries_expected"], "{r}");
        assert!(n["latency_ms"]["count"].as_u64().unwrap() > 0, "{r}");
    }
    assert_eq!(r["seq_gaps"], 0, "{r}");
    assert_eq!(r["seq_regressions"], 0, "{r}");
    assert_eq!(r["diffs_before_snapshot"], 0, "{r}");
    // Each update came in a diff of the same seq on every node.
    assert_eq!(r["update_seq_mismatches"], 0, "{r}");
    assert_eq!(r["members_disconnected"], 0, "{r}");
    assert_eq!(r["join_phase"]["join_latency_ms"]["count"], 30, "{r}");
    assert!(
        r["latency_ms_other_nodes"]["count"].as_u64().unwrap() > 0,
        "{r}"
    );
    // Redis was sampled per phase: every update ran at least one script.
    let updates = &r["redis"]["updates"];
    assert_eq!(updates["ops"], r["updates_sent_total"], "{r}");
    assert!(
        updates["script_calls_per_update"].as_f64().unwrap() >= 1.0,
        "{r}"
    );
    assert!(
        updates["by_command"]["evalsha"]["calls"].as_u64().unwrap() > 0,
        "{r}"
    );
    assert!(
        r["redis"]["join"]["calls_per_join"].as_f64().unwrap() > 0.0,
        "{r}"
    );
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
        "25ms",
    ]);
    assert_eq!(r["rounds_with_exactly_one_winner"], 20, "{r}");
    assert!(r["violations"].as_array().unwrap().is_empty(), "{r}");
    assert!(r["errors"].as_array().unwrap().is_empty(), "{r}");
    assert_eq!(r["lock_latency_ms"]["count"], 200);
    assert_eq!(r["unlock_latency_ms"]["count"], 20);
}

#[test]
fn openings_flood_does_not_keep_a_real_client_out() {
    let r = run_bench(&[
        "openings",
        "--flood",
        "60",
        "--clients",
        "3",
        "--wait",
        "10s",
        "--server-env",
        "ROSTER_TIMING_HELLO_TIMEOUT=1s",
        "--server-env",
        "ROSTER_LIMITS_MAX_OPENINGS_PER_IP=40",
    ]);
    assert_eq!(r["clients"]["welcomed"], 3, "{r}");
    // 20 above the cap are closed at accept ("at once" unless the machine is slow
    // to accept), the 40 counted ones at hello_timeout.
    let (at_once, later) = (
        r["flood"]["closed_at_once"].as_u64().unwrap(),
        r["flood"]["closed_later"].as_u64().unwrap(),
    );
    assert_eq!(at_once + later, 60, "{r}");
    assert!(at_once <= 20 && later >= 40, "{r}");
    assert_eq!(r["flood"]["still_open_after_wait"], 0, "{r}");
}

#[test]
fn churn_journals_every_join_and_leave_to_sqlite() {
    let r = run_bench(&[
        "churn",
        "--sessions",
        "20",
        "--rooms",
        "4",
        "--joins-per-sec",
        "20",
        "--hold",
        "200ms",
        "--duration",
        "2s",
        "--warmup",
        "500ms",
        "--drain",
        "500ms",
    ]);
    // Every SUB and UNSUB of the window was answered, in time, without an error.
    let joins = r["joins_sent_in_window"].as_u64().unwrap();
    assert!((38..=42).contains(&joins), "joins {joins}");
    assert_eq!(r["join_latency_ms"]["count"], joins, "{r}");
    assert_eq!(r["leave_latency_ms"]["count"], r["leaves_sent_in_window"]);
    assert!(
        r["join_latency_ms"]["p99"].as_f64().unwrap() < 1000.0,
        "{r}"
    );
    assert_eq!(r["replies_missing"], 0, "{r}");
    assert_eq!(r["sessions_disconnected"], 0, "{r}");
    assert!(is_empty_array(&r["first_errors"]), "{r}");
    assert!(is_empty_array(&r["send_errors"]), "{r}");
    assert!(is_empty_array(&r["metrics_scrape_errors"]), "{r}");
    // The journal wrote rows to the default SQLite database, dropped none, failed none.
    let j = &r["journal"];
    assert_eq!(j["exported"], true, "{r}");
    assert!(j["rows_written_in_window"].as_f64().unwrap() > 0.0, "{r}");
    assert!(j["rows_per_s"].as_f64().unwrap() > 0.0, "{r}");
    assert_eq!(j["dropped_in_window"], 0.0, "{r}");
    assert_eq!(j["write_errors_in_window"], 0.0, "{r}");
    assert_eq!(j["after_run"]["dropped_total"], 0.0, "{r}");
    assert_eq!(j["after_run"]["write_errors_total"], 0.0, "{r}");
    // At least a join row and a leave row for every operation answered.
    let ops = r["join_latency_ms"]["count"].as_u64().unwrap()
        + r["leave_latency_ms"]["count"].as_u64().unwrap();
    assert!(
        j["after_run"]["rows_written_total"].as_f64().unwrap() >= ops as f64,
        "{r}"
    );
    assert_eq!(r["database"]["log_activity"], "default (true)");
    assert!(r["server_cpu_in_window"]["cores"].is_number(), "{r}");
}

#[test]
fn events_reach_a_webhook_receiver_without_gaps() {
    let r = run_bench(&[
        "events",
        "--sessions",
        "20",
        "--rooms",
        "10",
        "--joins",
        "100",
        "--joins-per-sec",
        "100",
        "--hold",
        "50ms",
        "--warmup",
        "200ms",
        "--drain",
        "300ms",
        "--stream-wait",
        "20s",
    ]);
    let variants = r["variants"].as_array().unwrap();
    let names: Vec<&str> = variants
        .iter()
        .map(|v| v["variant"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["none", "fast", "hung"], "{r}");
    for v in variants {
        // Every SUB and UNSUB answered, no error, whatever the webhook does.
        let w = &v["workload"];
        assert_eq!(w["joins_sent"], 100, "{v}");
        assert_eq!(w["replies_missing"], 0, "{v}");
        assert_eq!(w["sessions_disconnected"], 0, "{v}");
        assert!(is_empty_array(&w["first_errors"]), "{v}");
        assert!(w["join_latency_ms"]["count"].as_u64().unwrap() > 0, "{v}");
        assert_eq!(
            v["server"]["config"]["env"]["ROSTER_WEBHOOKS_ALLOW_PRIVATE"],
            "true"
        );
    }
    // No webhook: no receiver, no stream.
    assert!(variants[0]["stream"].is_null(), "{r}");
    assert!(is_empty_array(&variants[0]["webhooks"]), "{r}");
    // The fast receiver got every seq from 1 to the marker, in order, once each
    // (a redelivery would be a duplicate, allowed but not expected here).
    let fast = &variants[1];
    assert_eq!(fast["webhooks"][0]["receiver"], "fast", "{fast}");
    assert_eq!(fast["marker"]["received"], true, "{fast}");
    let s = &fast["stream"];
    // 20 user_online, 100 joins and 100 leaves (2-4 events each), the marker's 3.
    let received = s["events_received"].as_u64().unwrap();
    assert!((223..=423).contains(&received), "{s}");
    assert_eq!(s["seq"]["expected_from"], 1, "{s}");
    assert_eq!(s["seq"]["expected_to"], fast["marker"]["seq"], "{s}");
    assert_eq!(s["seq"]["missing"], 0, "{s}");
    assert_eq!(s["seq"]["conflicts"], 0, "{s}");
    assert_eq!(s["seq"]["out_of_order"], 0, "{s}");
    assert_eq!(s["parse_errors"], 0, "{s}");
    assert_eq!(s["complete"], true, "{s}");
    assert_eq!(s["member_added"]["received"], 101, "{s}");
    assert_eq!(s["member_added"]["expected"], 101, "{s}");
    assert_eq!(s["by_type"]["member_removed"], 100, "{s}");
    assert_eq!(s["by_type"]["user_online"], 21, "{s}");
    assert!(
        s["workload"]["received_per_s"].as_f64().unwrap() > 0.0,
        "{s}"
    );
    assert!(s["lag_ms"]["p99"].as_f64().unwrap() < 5000.0, "{s}");
    // The server counts them delivered too (read just after the marker arrived:
    // the last POST may not be counted yet).
    let delivered = fast["webhooks"][0]["after_run"]["delivery"]["delivered"]
        .as_u64()
        .unwrap();
    assert!(delivered > 0 && delivered <= received, "{fast}");
    // The hung receiver held the server's connection; the workload did not notice.
    let hung = &variants[2];
    assert!(hung["stream"].is_null(), "{hung}");
    assert!(
        hung["hung_receiver"]["connections_accepted"]
            .as_u64()
            .unwrap()
            >= 1,
        "{hung}"
    );
    assert_eq!(
        hung["webhooks"][0]["after_run"]["delivery"]["delivered"], 0,
        "{hung}"
    );
    assert_eq!(r["summary"].as_array().unwrap().len(), 3, "{r}");
}

#[test]
fn lifecycle_messages_from_kafka_reach_their_rooms_as_entity() {
    // 100 rooms, two messages each (MUTATING, then MUTATED 4 s later): far enough
    // apart that the consumer never fetches a room's two together (the two topics
    // are not ordered together; docs/BENCHMARKS.md "Lifecycle from Kafka").
    let r = run_bench(&[
        "lifecycle",
        "--rooms",
        "100",
        "--events",
        "200",
        "--events-per-sec",
        "25",
        "--warmup",
        "1s",
        "--wait",
        "20s",
        "--lag-wait",
        "1s",
    ]);
    assert_eq!(
        r["server"]["config"]["env"]["ROSTER_KAFKA_SESSION_TIMEOUT"], "6s",
        "{r}"
    );
    assert!(
        r["server"]["config"]["env"]["ROSTER_KAFKA_BROKERS"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{r}"
    );
    // The probe came back before anything was timed.
    assert!(
        r["probe"]["first_entity_after_ms"].as_f64().unwrap() > 0.0,
        "{r}"
    );
    // Every message was delivered, applied and came back as its room's ENTITY, once,
    // with the state it leaves.
    let p = &r["kafka"]["producer"];
    assert_eq!(p["handed_over"], 200, "{r}");
    assert_eq!(p["delivered"], 202, "{r}"); // and the probe's two
    assert_eq!(p["failed"], 0, "{r}");
    let e = &r["entity"];
    assert_eq!(e["received"], 200, "{e}");
    assert_eq!(e["missing"], 0, "{e}");
    assert_eq!(e["mismatches"], 0, "{e}");
    assert_eq!(e["unexpected"], 0, "{e}");
    assert_eq!(e["errors"], 0, "{e}");
    assert_eq!(e["rooms_left_in_wrong_state"], 0, "{e}");
    assert_eq!(e["sessions_disconnected"], 0, "{e}");
    // 25 messages in the 1 s warm-up are not timed.
    assert_eq!(e["timed"], 175, "{e}");
    assert_eq!(e["latency_ms"]["count"], 175, "{e}");
    assert!(e["applied_per_s"].as_f64().unwrap() > 0.0, "{e}");
    // The server counts them applied (with the probe's), none dead-lettered.
    let outcomes = &r["server_kafka"]["after_run"]["lifecycle_events_total"];
    assert_eq!(outcomes["outcome=\"applied\""], 202.0, "{r}");
    assert_eq!(outcomes["outcome=\"dead_lettered\""], 0.0, "{r}");
    assert!(r["server_cpu_in_run"]["cores"].is_number(), "{r}");
    assert!(r["bench_cpu_in_run"]["by_thread_s"].is_array(), "{r}");
}

// Pusher mode (`--target roster`, the default: the bench writes the config with
// its Pusher app and starts the binary of --server-bin).

#[test]
fn pusher_joinstorm_completes_every_view_without_duplicates() {
    let r = run_bench(&[
        "pusher-joinstorm",
        "--clients",
        "20",
        "--rate",
        "100",
        "--wait",
        "10s",
    ]);
    assert_eq!(r["server"]["target"], "roster", "{r}");
    assert!(
        r["server"]["config"]["config_file"]
            .as_str()
            .unwrap()
            .contains("[[pusher.apps]]"),
        "{r}"
    );
    assert_eq!(r["connected"], 20, "{r}");
    assert_eq!(r["subscribed"], 20, "{r}");
    assert!(is_empty_array(&r["first_errors"]), "{r}");
    assert!(
        r["achieved"]["subscriptions_per_s"].as_f64().unwrap() > 0.0,
        "{r}"
    );
    let v = &r["views"];
    assert_eq!(v["all_complete"], true, "{r}");
    assert_eq!(v["complete"], 20, "{r}");
    assert!(v["all_complete_after_s"].as_f64().unwrap() > 0.0, "{r}");
    assert_eq!(v["sizes_at_end"]["not_all"], 0, "{r}");
    // Every client learns of the ones after it: at least 20·19/2 member_added.
    let m = &r["member_added"];
    assert!(m["received"].as_u64().unwrap() >= 190, "{r}");
    assert_eq!(m["duplicates"], 0, "{r}");
    assert_eq!(m["own_user"], 0, "{r}");
    assert_eq!(r["member_removed"]["received"], 0, "{r}");
    assert_eq!(v["members_missing_at_end"], 0, "{r}");
    // Spread over loopback addresses by default (127.0.0.1 … 127.0.0.16).
    assert_eq!(r["source_addrs"], 16, "{r}");
    assert_eq!(r["snapshots_inconsistent"], 0, "{r}");
    assert_eq!(r["data_not_string"], 0, "{r}");
    assert_eq!(r["pusher_errors"], 0, "{r}");
    assert!(r["server_cpu_during_storm"]["user_s"].is_number(), "{r}");
}

#[test]
fn pusher_fanout_delivers_every_client_event_to_every_other_member() {
    let r = run_bench(&[
        "pusher-fanout",
        "--members",
        "20",
        "--senders",
        "2",
        "--events-per-sec",
        "10",
        "--duration",
        "2s",
        "--warmup",
        "500ms",
        "--drain",
        "500ms",
        "--settle",
        "1s",
    ]);
    // 10/s for 2 s; each to the 19 members other than its sender.
    assert_eq!(r["events_in_window"], 20, "{r}");
    assert_eq!(r["events_sent_in_window"], 20, "{r}");
    assert_eq!(r["events_complete"], 20, "{r}");
    assert_eq!(r["deliveries"], 380, "{r}");
    assert_eq!(r["deliveries_expected"], 380, "{r}");
    assert_eq!(r["deliveries_missing"], 0, "{r}");
    assert_eq!(r["deliveries_duplicated"], 0, "{r}");
    assert_eq!(r["echoes_to_sender"], 0, "{r}");
    assert_eq!(r["pusher_errors"], 0, "{r}");
    assert_eq!(r["members_disconnected"], 0, "{r}");
    assert!(is_empty_array(&r["send_errors"]), "{r}");
    assert_eq!(r["latency_to_last_member_ms"]["count"], 20, "{r}");
    assert!(
        r["latency_to_last_member_ms"]["p99"].as_f64().unwrap() > 0.0,
        "{r}"
    );
    assert!(r["server_cpu_in_window"]["cores"].is_number(), "{r}");
}

#[test]
fn pusher_idle_connections_report_memory_per_connection() {
    let r = run_bench(&[
        "pusher-idle",
        "--connections",
        "40",
        "--group",
        "10",
        "--settle",
        "300ms",
    ]);
    assert_eq!(r["opened"], 40, "{r}");
    assert_eq!(r["failed"], 0, "{r}");
    assert_eq!(r["channels"], 4, "{r}");
    assert_eq!(r["dropped_while_idle"], 0, "{r}");
    assert!(r["server_bytes_per_connection"].is_number(), "{r}");
    assert!(r["server_rss_mb"]["after"].as_f64().unwrap() > 0.0, "{r}");
}
