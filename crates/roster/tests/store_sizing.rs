//! Sizing: bytes per activity row on each backend (docs/OPERATIONS.md quotes it).
//! Ignored by default — a measurement, not a behaviour. Run with
//! `cargo nextest run -p roster --test store_sizing --run-ignored all --no-capture`.
//!
//! Inserts 10,000 typical rows (a join: tenant, user, room, 16-character session
//! id, small details) through `write_batch` in batches of 100 and compares the
//! database size before and after: the SQLite file after a WAL checkpoint, and
//! `pg_total_relation_size` (table + indexes + TOAST) of `activity` on PostgreSQL.

use std::time::Instant;

use roster::store::{self, ActivityRow, Store, WriteOp};
use serde_json::json;
use sqlx::Connection;

const ROWS: usize = 10_000;

fn rows() -> Vec<ActivityRow> {
    (0..ROWS)
        .map(|i| ActivityRow {
            id: 0,
            tenant: "acme".into(),
            at: 1_767_225_600_000 + i as i64 * 37,
            kind: if i % 2 == 0 { "join" } else { "leave" }.into(),
            actor: None,
            user: Some(format!("user-{:05}", i % 2000)),
            room: Some(format!("Order:{}", 100_000 + i % 500)),
            session: Some(format!("Zk3x9Qw{:09}", i % 4000)),
            details: if i % 2 == 0 {
                json!({"device": "web"})
            } else {
                json!({"reason": "left"})
            },
        })
        .collect()
}

async fn fill(store: &dyn Store) -> f64 {
    let started = Instant::now();
    for chunk in rows().chunks(100) {
        let ops: Vec<WriteOp> = chunk.iter().cloned().map(WriteOp::Activity).collect();
        store.write_batch(&ops).await.expect("write batch");
    }
    ROWS as f64 / started.elapsed().as_secs_f64()
}

/// The file's size once the WAL is folded back into it.
async fn sqlite_size(side: &mut sqlx::SqliteConnection, path: &std::path::Path) -> u64 {
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut *side)
        .await
        .expect("checkpoint");
    std::fs::metadata(path).expect("file").len()
}

#[tokio::test]
#[ignore = "a measurement; run explicitly"]
async fn bytes_per_activity_row_sqlite() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("roster.db");
    let url = format!("sqlite://{}", path.display());
    let store = store::connect(&url).await.expect("open");
    store.migrate().await.expect("migrate");
    let mut side = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("side connection");
    let before = sqlite_size(&mut side, &path).await;
    let rate = fill(&*store).await;
    let after = sqlite_size(&mut side, &path).await;
    println!(
        "sqlite: {} bytes before, {} after: {:.0} bytes per activity row; {rate:.0} rows/s in batches of 100",
        before,
        after,
        (after - before) as f64 / ROWS as f64
    );
}

#[tokio::test]
#[ignore = "a measurement; run explicitly"]
async fn bytes_per_activity_row_postgres() {
    let base = std::env::var("ROSTER_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let mut admin = sqlx::PgConnection::connect(&base)
        .await
        .expect("PostgreSQL");
    let schema = format!("roster_size_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut admin)
        .await
        .expect("schema");
    let store = store::connect(&format!("{base}?options=-c%20search_path%3D{schema}"))
        .await
        .expect("open");
    store.migrate().await.expect("migrate");
    let size_sql = format!("SELECT pg_total_relation_size('{schema}.activity')");
    let before: i64 = sqlx::query_scalar(&size_sql)
        .fetch_one(&mut admin)
        .await
        .expect("size");
    let rate = fill(&*store).await;
    let after: i64 = sqlx::query_scalar(&size_sql)
        .fetch_one(&mut admin)
        .await
        .expect("size");
    let (table, indexes): (i64, i64) = sqlx::query_as(&format!(
        "SELECT pg_relation_size('{schema}.activity'), pg_indexes_size('{schema}.activity')"
    ))
    .fetch_one(&mut admin)
    .await
    .expect("split");
    println!("postgres: of which heap {table} bytes, indexes {indexes} bytes");
    println!(
        "postgres: {before} bytes before, {after} after: {:.0} bytes per activity row; {rate:.0} rows/s in batches of 100",
        (after - before) as f64 / ROWS as f64
    );
    let _ = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&mut admin)
        .await;
}
