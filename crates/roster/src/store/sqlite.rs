//! The embedded backend: one SQLite file next to the server (the default,
//! `sqlite://roster.db`). WAL mode lets readers run while the batch writer writes;
//! the busy timeout makes a second writer wait instead of failing at once.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{Row as _, TypeInfo as _, ValueRef as _};

use super::sql::{map_error, map_migrate_error, Arg, Driver, Query, Row, Step, Val};
use super::StoreError;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

pub(super) struct Sqlite {
    pool: SqlitePool,
}

/// SQLITE_BUSY, SQLITE_LOCKED, SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN (primary
/// codes; sqlx reports extended ones).
fn transient(code: &str) -> bool {
    code.parse::<i32>()
        .is_ok_and(|c| matches!(c & 0xff, 5 | 6 | 10 | 13 | 14))
}

fn err(e: sqlx::Error) -> StoreError {
    map_error(e, transient)
}

impl Sqlite {
    pub(super) async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Other(format!("bad sqlite url: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        // An in-memory database lives as long as its one connection.
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let pool = SqlitePoolOptions::new()
            .max_connections(if in_memory { 1 } else { 4 })
            .min_connections(if in_memory { 1 } else { 0 })
            .idle_timeout((!in_memory).then_some(Duration::from_secs(600)))
            .max_lifetime((!in_memory).then_some(Duration::from_secs(1800)))
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(err)?;
        Ok(Self { pool })
    }
}

fn bound<'q>(query: &'q Query) -> sqlx::query::Query<'q, sqlx::Sqlite, SqliteArguments<'q>> {
    let mut q = sqlx::query(&query.sql);
    for a in &query.args {
        q = match a {
            Arg::Int(v) => q.bind(*v),
            Arg::Text(v) => q.bind(v.as_deref()),
        };
    }
    q
}

fn decode(row: &SqliteRow) -> Result<Row, StoreError> {
    let mut out = Vec::with_capacity(row.len());
    for i in 0..row.len() {
        let raw = row.try_get_raw(i).map_err(err)?;
        let v = if raw.is_null() {
            Val::Null
        } else {
            match raw.type_info().name() {
                "INTEGER" => Val::Int(row.try_get(i).map_err(err)?),
                "REAL" => Val::Real(row.try_get(i).map_err(err)?),
                "TEXT" => Val::Text(row.try_get(i).map_err(err)?),
                other => {
                    return Err(StoreError::Other(format!(
                        "column {i}: unexpected SQLite type {other}"
                    )))
                }
            }
        };
        out.push(v);
    }
    Ok(Row(out))
}

#[async_trait]
impl Driver for Sqlite {
    async fn close(&self) {
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await
        {
            tracing::warn!("sqlite checkpoint at close failed: {e}");
        }
        self.pool.close().await;
    }

    fn name(&self) -> &'static str {
        "sqlite"
    }
    async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| map_migrate_error(e, transient))
    }
    async fn execute(&self, query: Query) -> Result<u64, StoreError> {
        let done = bound(&query).execute(&self.pool).await.map_err(err)?;
        Ok(done.rows_affected())
    }
    async fn fetch(&self, query: Query) -> Result<Vec<Row>, StoreError> {
        let rows = bound(&query).fetch_all(&self.pool).await.map_err(err)?;
        rows.iter().map(decode).collect()
    }
    async fn transaction(&self, steps: Vec<Step>) -> Result<Vec<u64>, StoreError> {
        // Dropping `tx` on an early return rolls it back.
        let mut tx = self.pool.begin().await.map_err(err)?;
        let mut changed = Vec::with_capacity(steps.len());
        for step in &steps {
            let n = bound(&step.query)
                .execute(&mut *tx)
                .await
                .map_err(err)?
                .rows_affected();
            if step.must_change && n == 0 {
                return Err(StoreError::NotFound);
            }
            changed.push(n);
        }
        tx.commit().await.map_err(err)?;
        Ok(changed)
    }
}
