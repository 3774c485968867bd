//! A database outage never blocks presence: PostgreSQL sits behind a TCP proxy
//! this test starts and stops; presence keeps working, rows wait in the bounded
//! queue, and when the database is back every row is written (none lost below
//! the queue bound). Above the bound, rows are dropped and counted, never waited on.

mod common;
use common::proxy::Proxy;
use common::*;
use serde_json::json;
use sqlx::Connection;
use std::time::Duration;

const PG: &str = "postgres://postgres@127.0.0.1:5432/test";

async fn fresh_schema() -> String {
    let schema = format!("roster_outage_{}_{}", std::process::id(), rand_suffix());
    let mut c = sqlx::PgConnection::connect(PG)
        .await
        .expect("PostgreSQL at 127.0.0.1:5432 (scripts/ensure-postgres.sh starts it)");
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut c)
        .await
        .unwrap();
    schema
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
}

async fn count(schema: &str, kind: &str) -> i64 {
    let mut c = sqlx::PgConnection::connect(PG).await.unwrap();
    sqlx::query_scalar::<_, i64>(&format!(
        "SELECT count(*) FROM {schema}.activity WHERE kind = $1"
    ))
    .bind(kind)
    .fetch_one(&mut c)
    .await
    .unwrap()
}

async fn drop_schema(schema: &str) {
    if let Ok(mut c) = sqlx::PgConnection::connect(PG).await {
        let _ = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(&mut c)
            .await;
    }
}

/// Every client joins and leaves `room` `rounds` times; the other members must
/// see each change (presence works whatever the database does). Each leave waits
/// until the watcher saw the join: a join and leave inside one diff window are
/// nothing to a member that never saw them.
async fn churn(
    s: &Server,
    watcher: &mut roster_client::Client,
    clients: &mut [roster_client::Client],
    room: &str,
    rounds: usize,
) {
    for _ in 0..rounds {
        for c in clients.iter_mut() {
            c.sub(room, None).await.expect("SUB works");
            let me = c.session_id().unwrap().to_string();
            // (A leave and a re-join inside one window reach it as an update.)
            'seen: loop {
                let d = next_diff(watcher, room).await;
                for j in d["joins"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .chain(d["updates"].as_array().unwrap())
                {
                    if j["session"]["sessionId"] == me.as_str() {
                        break 'seen;
                    }
                }
            }
            c.request(json!({"type": "UNSUB", "room": room}), "UNSUB_ACK", T)
                .await
                .expect("UNSUB works");
        }
    }
    // The watcher saw the last leave.
    let last = clients.last().unwrap().session_id().unwrap().to_string();
    let end = tokio::time::Instant::now() + T;
    'outer: loop {
        let d = next_diff(watcher, room).await;
        for l in d["leaves"].as_array().unwrap() {
            if l["sessionId"] == last.as_str() {
                break 'outer;
            }
        }
        assert!(tokio::time::Instant::now() < end);
    }
    let _ = s;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_keeps_working_while_postgres_is_down_and_no_row_is_lost() {
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let schema = fresh_schema().await;
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/test?options=-c%20search_path%3D{schema}",
        proxy.port
    );
    let s = Server::start_with(&[
        ("ROSTER_DATABASE_URL", url.as_str()),
        ("ROSTER_DATABASE_BATCH_INTERVAL", "100ms"),
        ("ROSTER_DATABASE_BATCH_SIZE", "10"),
    ])
    .await;
    let mut watcher = s.client("watcher").await;
    watcher.sub("Busy", None).await.unwrap();
    let mut clients = vec![];
    for i in 0..5 {
        clients.push(s.client(&format!("u{i}")).await);
    }
    churn(&s, &mut watcher, &mut clients, "Busy", 3).await; // 15 joins, 15 leaves
                                                            // Cut the database while the writer is idle. (A cut that lands between a
                                                            // COMMIT and its acknowledgement leaves the writer unsure, and it retries:
                                                            // that batch can be written twice — a known limit until rows carry an
                                                            // idempotency key; see docs/OPERATIONS.md.)
    let mut last = -1.0;
    loop {
        let m = s.metrics().await;
        let written = metric(&m, "roster_journal_rows_written_total");
        if metric(&m, "roster_journal_queue_depth") == 0.0 && written == last {
            break;
        }
        last = written;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    proxy.unplug();
    churn(&s, &mut watcher, &mut clients, "Busy", 3).await; // 15 more of each, database down
    assert_eq!(
        reqwest::get(s.url("/readyz"))
            .await
            .unwrap()
            .status()
            .as_u16(),
        200,
        "presence is ready"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let m = s.metrics().await;
    assert!(
        metric(&m, "roster_journal_write_errors_total") >= 1.0,
        "writes failed while down:\n{m}"
    );
    assert_eq!(metric(&m, "roster_journal_dropped_total"), 0.0);

    proxy.plug();
    let end = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (joins, leaves) = (count(&schema, "join").await, count(&schema, "leave").await);
        // 31 joins: the watcher's own plus 30.
        if joins == 31 && leaves == 30 {
            break;
        }
        assert!(
            joins <= 31 && leaves <= 30,
            "rows written twice: {joins} joins, {leaves} leaves"
        );
        assert!(
            tokio::time::Instant::now() < end,
            "rows missing after the database came back: {joins} joins, {leaves} leaves"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(s);
    drop_schema(&schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn above_the_queue_bound_rows_are_dropped_and_counted_never_waited_on() {
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let schema = fresh_schema().await;
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/test?options=-c%20search_path%3D{schema}",
        proxy.port
    );
    let s = Server::start_with(&[
        ("ROSTER_DATABASE_URL", url.as_str()),
        ("ROSTER_DATABASE_BATCH_INTERVAL", "100ms"),
        ("ROSTER_DATABASE_BATCH_SIZE", "5"),
        ("ROSTER_DATABASE_QUEUE_SIZE", "10"),
    ])
    .await;
    let mut watcher = s.client("watcher").await;
    watcher.sub("Busy", None).await.unwrap();
    let mut clients = vec![s.client("a").await, s.client("b").await];
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.unplug();
    let started = std::time::Instant::now();
    churn(&s, &mut watcher, &mut clients, "Busy", 20).await; // 80 rows, queue holds 10
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "presence never waited on the database"
    );
    let m = s.metrics().await;
    assert!(
        metric(&m, "roster_journal_dropped_total") > 0.0,
        "drops are counted:\n{m}"
    );
    assert!(
        s.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("journal queue full")),
        "and logged"
    );
    proxy.plug();
    drop(s);
    drop_schema(&schema).await;
}

/// PostgreSQL over TLS: `sslmode=require` encrypts (when the server has TLS on,
/// as Debian's cluster does) or fails at start-up with a clear error.
#[tokio::test]
async fn sslmode_require_uses_tls_to_postgres() {
    let schema = fresh_schema().await;
    let mut c = sqlx::PgConnection::connect(PG).await.unwrap();
    let ssl: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(&mut c)
        .await
        .unwrap();
    let url = format!("postgres://postgres@127.0.0.1:5432/test?sslmode=require&options=-c%20search_path%3D{schema}");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_roster"))
        .args(["migrate", "--database-url", &url])
        .env_clear()
        .output()
        .await
        .unwrap();
    if ssl == "on" {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tables: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1",
        )
        .bind(&schema)
        .fetch_one(&mut c)
        .await
        .unwrap();
        assert!(tables >= 5, "migrated over TLS into {schema}");
    } else {
        assert_eq!(
            out.status.code(),
            Some(2),
            "no TLS on the server: a clear start-up error"
        );
    }
    drop_schema(&schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_stuck_on_a_lock_times_out_is_counted_and_retried() {
    let schema = fresh_schema().await;
    let url =
        format!("postgres://postgres@127.0.0.1:5432/test?options=-c%20search_path%3D{schema}");
    let s = Server::start_with(&[
        ("ROSTER_DATABASE_URL", url.as_str()),
        ("ROSTER_DATABASE_BATCH_INTERVAL", "100ms"),
        ("ROSTER_DATABASE_WRITE_TIMEOUT", "300ms"),
    ])
    .await;
    let mut watcher = s.client("watcher").await;
    watcher.sub("Busy", None).await.unwrap();
    let mut clients = vec![s.client("a").await];
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Hold the activity table locked for a while, as a long migration or a
    // stuck transaction would.
    let mut locker = sqlx::PgConnection::connect(PG).await.unwrap();
    let mut tx = sqlx::Connection::begin(&mut locker).await.unwrap();
    sqlx::query(&format!(
        "LOCK TABLE {schema}.activity IN ACCESS EXCLUSIVE MODE"
    ))
    .execute(&mut *tx)
    .await
    .unwrap();
    churn(&s, &mut watcher, &mut clients, "Busy", 5).await; // 10 rows
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let m = s.metrics().await;
    assert!(
        metric(&m, "roster_journal_write_errors_total") >= 1.0,
        "the stuck write timed out:\n{m}"
    );
    assert!(
        metric(&m, "roster_journal_queue_depth") >= 10.0,
        "the waiting rows show as queue depth:\n{m}"
    );
    tx.rollback().await.unwrap();
    let end = tokio::time::Instant::now() + Duration::from_secs(15);
    while count(&schema, "join").await < 6 || count(&schema, "leave").await < 5 {
        assert!(
            tokio::time::Instant::now() < end,
            "rows never written after the lock went"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        (count(&schema, "join").await, count(&schema, "leave").await),
        (6, 5),
        "each row once"
    );
    drop(s);
    drop_schema(&schema).await;
}

#[tokio::test]
async fn journal_metrics_are_exported_from_the_start() {
    let s = Server::start().await;
    let m = s.metrics().await;
    for name in [
        "roster_journal_queue_depth",
        "roster_journal_dropped_total",
        "roster_journal_write_errors_total",
        "roster_journal_rows_written_total",
        "roster_session_timeouts_total",
    ] {
        assert!(
            m.lines().any(|l| l.starts_with(name)),
            "{name} missing:\n{m}"
        );
    }
}

/// Scrapes until `name` reads `want`, for at most `within`.
async fn await_metric(s: &Server, name: &str, want: f64, within: Duration) {
    let end = tokio::time::Instant::now() + within;
    loop {
        let m = s.metrics().await;
        if metric(&m, name) == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "{name} never became {want}:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_health_gauge_follows_an_outage() {
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let schema = fresh_schema().await;
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/test?options=-c%20search_path%3D{schema}",
        proxy.port
    );
    let s = Server::start_with(&[
        ("ROSTER_DATABASE_URL", url.as_str()),
        ("ROSTER_DATABASE_STATS_SAMPLE_INTERVAL", "200ms"),
    ])
    .await;
    // Up from the start, and still up after a few samples.
    await_metric(&s, "roster_database_up", 1.0, Duration::from_millis(100)).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    await_metric(&s, "roster_database_up", 1.0, Duration::from_millis(100)).await;
    proxy.unplug();
    await_metric(&s, "roster_database_up", 0.0, Duration::from_secs(10)).await;
    // Presence does not depend on it.
    assert_eq!(
        reqwest::get(s.url("/readyz"))
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    proxy.plug();
    await_metric(&s, "roster_database_up", 1.0, Duration::from_secs(15)).await;
    drop(s);
    drop_schema(&schema).await;
}
