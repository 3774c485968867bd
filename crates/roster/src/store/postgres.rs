//! The clustered backend: PostgreSQL, shared by every node (`postgres://…`). A
//! small pool is enough: presence never waits on it, only the batch writer and
//! REST reads do. A test or deployment picks its schema with
//! `?options=-c%20search_path%3D<schema>` in the URL.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Column as _, Row as _, TypeInfo as _};

use super::sql::{map_error, map_migrate_error, Arg, Driver, Query, Row, Step, Val};
use super::StoreError;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

pub(super) struct Postgres {
    pool: PgPool,
}

/// Connection exceptions (08), insufficient resources (53), operator intervention
/// such as a shutdown (57P0x), serialization failures and deadlocks (40001, 40P01),
/// lock timeouts (55P03).
fn transient(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57P0")
        || matches!(code, "40001" | "40P01" | "55P03")
}

fn err(e: sqlx::Error) -> StoreError {
    map_error(e, transient)
}

impl Postgres {
    pub(super) async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Other(format!("bad postgres url: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(5))
            .idle_timeout(Some(Duration::from_secs(300)))
            .connect_with(options)
            .await
            .map_err(err)?;
        Ok(Self { pool })
    }
}

fn bound<'q>(query: &'q Query) -> sqlx::query::Query<'q, sqlx::Postgres, PgArguments> {
    let mut q = sqlx::query(&query.sql);
    for a in &query.args {
        q = match a {
            Arg::Int(v) => q.bind(*v),
            Arg::Text(v) => q.bind(v.as_deref()),
        };
    }
    q
}

fn decode(row: &PgRow) -> Result<Row, StoreError> {
    let mut out = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let v = match column.type_info().name() {
            "INT8" => row.try_get::<Option<i64>, _>(i).map_err(err)?.map(Val::Int),
            "INT4" => row
                .try_get::<Option<i32>, _>(i)
                .map_err(err)?
                .map(|v| Val::Int(v.into())),
            "INT2" => row
                .try_get::<Option<i16>, _>(i)
                .map_err(err)?
                .map(|v| Val::Int(v.into())),
            "FLOAT8" => row
                .try_get::<Option<f64>, _>(i)
                .map_err(err)?
                .map(Val::Real),
            "FLOAT4" => row
                .try_get::<Option<f32>, _>(i)
                .map_err(err)?
                .map(|v| Val::Real(v.into())),
            "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" => row
                .try_get::<Option<String>, _>(i)
                .map_err(err)?
                .map(Val::Text),
            "BOOL" => row
                .try_get::<Option<bool>, _>(i)
                .map_err(err)?
                .map(|v| Val::Int(v.into())),
            other => {
                return Err(StoreError::Other(format!(
                    "column {i}: unexpected PostgreSQL type {other}"
                )))
            }
        };
        out.push(v.unwrap_or(Val::Null));
    }
    Ok(Row(out))
}

#[async_trait]
impl Driver for Postgres {
    async fn close(&self) {
        self.pool.close().await;
    }

    fn name(&self) -> &'static str {
        "postgres"
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
