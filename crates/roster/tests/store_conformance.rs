//! The store conformance suite: every case is written once against `dyn Store` and
//! runs on both backends — `sqlite::<case>` on a fresh temporary file,
//! `postgres::<case>` in a fresh schema of database `test` at 127.0.0.1:5432
//! (`ROSTER_TEST_POSTGRES_URL` overrides the server). PostgreSQL being down is a
//! failure, not a skip.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;

use futures_util::TryStreamExt;
use roster::store::{
    self, ActivityFilter, ActivityRow, AlertFilter, Bucket, Participant, RoomFilter, SessionCursor,
    SessionFilter, SessionRecord, StatSample, Store, StoreError, StoredAlert, StoredAlertRule,
    StoredRoom, StoredRoomType, StoredWebhook, WriteOp,
};
use serde_json::json;
use sqlx::Connection;

// ---------------------------------------------------------------------------------
// Harness

async fn run_sqlite<F, Fut>(case: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("sqlite://{}", dir.path().join("roster.db").display());
    let store = store::connect(&url).await.expect("open SQLite");
    store.migrate().await.expect("migrate SQLite");
    assert_eq!(store.backend(), "sqlite");
    case(store).await;
}

fn postgres_candidates() -> Vec<String> {
    match std::env::var("ROSTER_TEST_POSTGRES_URL") {
        Ok(url) => vec![url],
        Err(_) => vec![
            "postgres://postgres@127.0.0.1:5432/test".into(),
            "postgres://root@127.0.0.1:5432/test".into(),
        ],
    }
}

async fn postgres_admin() -> (sqlx::PgConnection, String) {
    let mut failures = Vec::new();
    for url in postgres_candidates() {
        match sqlx::PgConnection::connect(&url).await {
            Ok(conn) => return (conn, url),
            Err(e) => failures.push(format!("{url}: {e}")),
        }
    }
    panic!(
        "PostgreSQL is required by the store conformance suite and is not reachable \
         (start it, e.g. `pg_ctlcluster 15 main start`, or set ROSTER_TEST_POSTGRES_URL):\n{}",
        failures.join("\n")
    );
}

/// Each case gets its own schema: the store connects with `search_path` set to it,
/// so its tables and its migration history land there and nowhere else.
async fn run_postgres<F, Fut>(case: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (mut admin, base) = postgres_admin().await;
    let schema = format!("roster_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut admin)
        .await
        .expect("create schema");
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
    let store = store::connect(&url).await.expect("open PostgreSQL");
    store.migrate().await.expect("migrate PostgreSQL");
    assert_eq!(store.backend(), "postgres");
    let (tables,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM information_schema.tables \
         WHERE table_schema = $1 AND table_name IN ('rooms', 'activity', '_sqlx_migrations')",
    )
    .bind(&schema)
    .fetch_one(&mut admin)
    .await
    .expect("count tables");
    assert_eq!(tables, 3, "migrations must land in the test's own schema");

    let outcome = tokio::spawn(case(store)).await;
    let _ = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&mut admin)
        .await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                super::run_sqlite(super::$case).await
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                super::run_postgres(super::$case).await
            })*
        }
    };
}

conformance!(
    migrations_are_idempotent,
    room_crud_conflict_and_not_found,
    room_list_filters_and_keyset_pages,
    room_types_upsert_list_delete,
    webhooks_upsert_list_delete,
    alert_rules_upsert_list_delete,
    an_alert_fires_once_resolves_once_and_keeps_its_first_ack,
    alert_pages_newest_first_by_state_and_rule,
    a_lease_has_one_holder_until_it_expires,
    lifecycle_event_ids_per_tenant_until_purged,
    participants_upsert_list_delete,
    write_batch_is_all_or_nothing,
    session_history_start_end_filters_and_pages,
    last_seen_keeps_the_latest,
    activity_filters,
    activity_keyset_pages_have_no_gaps_or_duplicates,
    activity_stream_returns_every_row_in_order,
    activity_stats_by_type_and_hour,
    purge_activity_deletes_old_rows_only,
    purge_sessions_deletes_old_ended_sessions_only,
    room_audit_time_spent_locks_and_timeline,
    room_stats_minutes_rollup_and_purge,
    stats_overview_breakdowns,
    tenants_never_see_each_other,
    hostile_input_is_data_not_sql,
);

// ---------------------------------------------------------------------------------
// Builders

/// A day boundary (UTC), so minute/hour/day buckets line up in the cases.
const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 86_400_000;

fn room(tenant: &str, key: &str) -> StoredRoom {
    StoredRoom {
        tenant: tenant.into(),
        key: key.into(),
        room_type: "GENERIC".into(),
        capacity: 100,
        idle_ttl_ms: 3_600_000,
        visibility: "open".into(),
        status: "active".into(),
        tags: vec![],
        attributes: serde_json::Map::new(),
        created_at: T0,
        updated_at: T0,
    }
}

fn act(tenant: &str, at: i64, kind: &str) -> ActivityRow {
    ActivityRow {
        id: 0,
        tenant: tenant.into(),
        at,
        kind: kind.into(),
        actor: None,
        user: None,
        room: None,
        session: None,
        details: json!({}),
    }
}

fn member(tenant: &str, at: i64, kind: &str, user: &str, room: &str, session: &str) -> ActivityRow {
    ActivityRow {
        user: Some(user.into()),
        room: Some(room.into()),
        session: Some(session.into()),
        ..act(tenant, at, kind)
    }
}

fn session(tenant: &str, id: &str, user: &str, started_at: i64) -> SessionRecord {
    SessionRecord {
        tenant: tenant.into(),
        session_id: id.into(),
        user: user.into(),
        device: "web".into(),
        os: None,
        app_version: None,
        client_id: None,
        ip: None,
        user_agent: None,
        started_at,
        ended_at: None,
        end_reason: None,
        rooms: vec![],
    }
}

fn all_of(tenant: &str) -> ActivityFilter {
    ActivityFilter {
        tenant: tenant.into(),
        limit: 1000,
        ..ActivityFilter::default()
    }
}

async fn write(store: &Arc<dyn Store>, ops: Vec<WriteOp>) {
    store.write_batch(&ops).await.expect("write batch");
}

async fn write_activity(store: &Arc<dyn Store>, rows: Vec<ActivityRow>) {
    for chunk in rows.chunks(500) {
        write(
            store,
            chunk.iter().cloned().map(WriteOp::Activity).collect(),
        )
        .await;
    }
}

// ---------------------------------------------------------------------------------
// Cases

async fn migrations_are_idempotent(store: Arc<dyn Store>) {
    store.insert_room(&room("t", "kept")).await.expect("insert");
    store.migrate().await.expect("second migrate");
    store.migrate().await.expect("third migrate");
    store.ping().await.expect("ping");
    assert!(store.get_room("t", "kept").await.expect("get").is_some());
}

async fn room_crud_conflict_and_not_found(store: Arc<dyn Store>) {
    let mut r = room("t", "Order:123");
    r.tags = vec!["sales".into(), "eu".into(), "sales".into()];
    r.attributes
        .insert("owner".into(), json!({"name": "Alice", "n": 3}));
    store.insert_room(&r).await.expect("insert");

    let got = store
        .get_room("t", "Order:123")
        .await
        .expect("get")
        .expect("present");
    assert_eq!(
        got.tags,
        vec!["sales".to_string(), "eu".to_string()],
        "duplicate tags fold"
    );
    assert_eq!(got.attributes, r.attributes);
    assert_eq!((got.capacity, got.idle_ttl_ms), (100, 3_600_000));

    assert!(matches!(
        store.insert_room(&r).await,
        Err(StoreError::Conflict)
    ));

    let mut changed = got.clone();
    changed.status = "maintenance".into();
    changed.capacity = 7;
    changed.tags = vec!["us".into()];
    changed.attributes = serde_json::Map::new();
    changed.updated_at = T0 + 5;
    changed.created_at = T0 + 999; // ignored: creation time never changes
    store.update_room(&changed).await.expect("update");
    let got = store
        .get_room("t", "Order:123")
        .await
        .expect("get")
        .expect("present");
    assert_eq!(got.status, "maintenance");
    assert_eq!(got.capacity, 7);
    assert_eq!(got.tags, vec!["us".to_string()]);
    assert!(got.attributes.is_empty());
    assert_eq!((got.created_at, got.updated_at), (T0, T0 + 5));
    let by_old_tag = store
        .list_rooms(
            "t",
            RoomFilter {
                tag: Some("sales".into()),
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .expect("list");
    assert!(by_old_tag.is_empty(), "replaced tags no longer match");

    assert!(matches!(
        store.update_room(&room("t", "missing")).await,
        Err(StoreError::NotFound)
    ));

    let mut bad = room("t", "bad-status");
    bad.status = "exploded".into();
    assert!(matches!(
        store.insert_room(&bad).await,
        Err(StoreError::Other(_))
    ));

    store
        .set_participant(&Participant {
            tenant: "t".into(),
            room: "Order:123".into(),
            user: "alice".into(),
            role: "owner".into(),
        })
        .await
        .expect("participant");
    assert!(store.delete_room("t", "Order:123").await.expect("delete"));
    assert!(!store
        .delete_room("t", "Order:123")
        .await
        .expect("delete again"));
    assert!(store
        .get_room("t", "Order:123")
        .await
        .expect("get")
        .is_none());
    assert!(
        store
            .list_participants("t", "Order:123")
            .await
            .expect("participants")
            .is_empty(),
        "deleting a room deletes its participants"
    );
    // The key is free again.
    store.insert_room(&r).await.expect("re-insert");
}

async fn room_list_filters_and_keyset_pages(store: Arc<dyn Store>) {
    for i in 0..25 {
        let mut r = room("t", &format!("room-{i:02}"));
        r.room_type = if i % 2 == 0 { "CHAT" } else { "GENERIC" }.into();
        r.status = if i % 5 == 0 { "closed" } else { "active" }.into();
        r.tags = if i % 3 == 0 {
            vec!["vip".into(), "eu".into()]
        } else {
            vec!["eu".into()]
        };
        store.insert_room(&r).await.expect("insert");
    }
    store
        .insert_room(&room("other", "room-00"))
        .await
        .expect("other tenant");

    let keys = |rooms: Vec<StoredRoom>| rooms.into_iter().map(|r| r.key).collect::<Vec<_>>();
    let list = |f: RoomFilter| {
        let store = store.clone();
        async move { store.list_rooms("t", f).await.expect("list") }
    };

    let chat = keys(
        list(RoomFilter {
            room_type: Some("CHAT".into()),
            limit: 100,
            ..Default::default()
        })
        .await,
    );
    assert_eq!(chat.len(), 13);
    assert!(chat.windows(2).all(|w| w[0] < w[1]), "ordered by key");
    let vip = keys(
        list(RoomFilter {
            tag: Some("vip".into()),
            limit: 100,
            ..Default::default()
        })
        .await,
    );
    assert_eq!(
        vip,
        [
            "room-00", "room-03", "room-06", "room-09", "room-12", "room-15", "room-18", "room-21",
            "room-24"
        ]
    );
    let closed = keys(
        list(RoomFilter {
            status: Some("closed".into()),
            limit: 100,
            ..Default::default()
        })
        .await,
    );
    assert_eq!(
        closed,
        ["room-00", "room-05", "room-10", "room-15", "room-20"]
    );
    let combined = keys(
        list(RoomFilter {
            room_type: Some("CHAT".into()),
            tag: Some("vip".into()),
            status: Some("closed".into()),
            limit: 100,
            ..Default::default()
        })
        .await,
    );
    assert_eq!(combined, ["room-00"]);

    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = keys(
            list(RoomFilter {
                after_key: after.clone(),
                limit: 10,
                ..Default::default()
            })
            .await,
        );
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 10);
        after = page.last().cloned();
        seen.extend(page);
    }
    let expected: Vec<String> = (0..25).map(|i| format!("room-{i:02}")).collect();
    assert_eq!(seen, expected, "pages cover every room once, in order");

    assert_eq!(
        list(RoomFilter {
            limit: 0,
            ..Default::default()
        })
        .await
        .len(),
        1,
        "limit 0 means 1"
    );
    assert_eq!(
        list(RoomFilter {
            limit: usize::MAX,
            ..Default::default()
        })
        .await
        .len(),
        25
    );

    let all = store.all_rooms().await.expect("all rooms");
    assert_eq!(all.len(), 26);
    assert!(all.iter().any(|r| r.tenant == "other"));
}

async fn room_types_upsert_list_delete(store: Arc<dyn Store>) {
    let t = |tenant: &str, code: &str, capacity: u32, created_at: i64| StoredRoomType {
        tenant: tenant.into(),
        code: code.into(),
        capacity,
        idle_ttl_ms: 60_000,
        visibility: "private".into(),
        created_at,
        heartbeat_interval_ms: None,
        session_timeout_ms: None,
    };
    store
        .upsert_room_type(&t("t", "WORKSHOP", 30, T0))
        .await
        .expect("upsert");
    store
        .upsert_room_type(&t("t", "CLINIC", 4, T0))
        .await
        .expect("upsert");
    store
        .upsert_room_type(&t("u", "CLINIC", 9, T0))
        .await
        .expect("upsert");
    // Timing overrides are kept, replaced and cleared like the rest.
    store
        .upsert_room_type(&StoredRoomType {
            heartbeat_interval_ms: Some(5_000),
            session_timeout_ms: Some(20_000),
            ..t("t", "WORKSHOP", 35, T0 + 5)
        })
        .await
        .expect("replace with timing");
    let workshop = store.list_room_types("t").await.expect("list")[1].clone();
    assert_eq!(
        (workshop.heartbeat_interval_ms, workshop.session_timeout_ms),
        (Some(5_000), Some(20_000))
    );
    store
        .upsert_room_type(&t("t", "WORKSHOP", 40, T0 + 10))
        .await
        .expect("replace");

    let listed = store.list_room_types("t").await.expect("list");
    assert_eq!(
        listed.iter().map(|t| t.code.as_str()).collect::<Vec<_>>(),
        ["CLINIC", "WORKSHOP"]
    );
    let workshop = &listed[1];
    assert_eq!(workshop.capacity, 40);
    assert_eq!(workshop.created_at, T0, "first creation time is kept");
    assert_eq!(workshop.visibility, "private");
    assert_eq!(
        (workshop.heartbeat_interval_ms, workshop.session_timeout_ms),
        (None, None),
        "cleared by the replace"
    );

    assert_eq!(store.all_room_types().await.expect("all").len(), 3);
    assert!(store.delete_room_type("t", "CLINIC").await.expect("delete"));
    assert!(!store
        .delete_room_type("t", "CLINIC")
        .await
        .expect("delete again"));
    assert_eq!(store.list_room_types("t").await.expect("list").len(), 1);
    assert_eq!(store.list_room_types("u").await.expect("list").len(), 1);
}

async fn webhooks_upsert_list_delete(store: Arc<dyn Store>) {
    let w = |tenant: &str, id: &str, url: &str, events: Option<Vec<&str>>| StoredWebhook {
        tenant: tenant.into(),
        id: id.into(),
        url: url.into(),
        secret: "0123456789abcdef".into(),
        events: events.map(|e| e.into_iter().map(String::from).collect()),
        created_at: T0,
    };
    store
        .upsert_webhook(&w("t", "wh_b", "https://b.example/h", None))
        .await
        .expect("upsert");
    store
        .upsert_webhook(&w(
            "t",
            "wh_a",
            "https://a.example/h",
            Some(vec!["room_vacated"]),
        ))
        .await
        .expect("upsert");
    store
        .upsert_webhook(&w("u", "wh_a", "https://u.example/h", None))
        .await
        .expect("same id, other tenant");
    // Replace: url, secret and filter change; created_at is kept.
    store
        .upsert_webhook(&StoredWebhook {
            secret: "fedcba9876543210".into(),
            created_at: T0 + 99,
            ..w(
                "t",
                "wh_b",
                "https://b2.example/h",
                Some(vec!["member_added", "user_online"]),
            )
        })
        .await
        .expect("replace");
    let all = store.all_webhooks().await.expect("all");
    assert_eq!(
        all.iter()
            .map(|w| (w.tenant.as_str(), w.id.as_str()))
            .collect::<Vec<_>>(),
        [("t", "wh_a"), ("t", "wh_b"), ("u", "wh_a")]
    );
    let b = &all[1];
    assert_eq!(
        (b.url.as_str(), b.secret.as_str(), b.created_at),
        ("https://b2.example/h", "fedcba9876543210", T0)
    );
    assert_eq!(
        b.events.as_deref(),
        Some(&["member_added".to_string(), "user_online".to_string()][..])
    );
    assert_eq!(all[2].events, None);
    assert!(store.delete_webhook("t", "wh_a").await.expect("delete"));
    assert!(!store.delete_webhook("t", "wh_a").await.expect("again"));
    assert_eq!(store.all_webhooks().await.expect("all").len(), 2);
}

fn alert_rule(tenant: &str, id: &str) -> StoredAlertRule {
    StoredAlertRule {
        tenant: tenant.into(),
        id: id.into(),
        name: "full".into(),
        kind: "capacity".into(),
        threshold: 90,
        window_ms: 60_000,
        scope: "room".into(),
        target: Some("Order:1".into()),
        severity: "critical".into(),
        enabled: true,
        webhook_url: Some("https://ops.example/h".into()),
        webhook_secret: Some("0123456789abcdef".into()),
        created_at: T0,
        updated_at: T0,
    }
}

fn alert(tenant: &str, id: &str, rule: &str, subject: &str, at: i64) -> StoredAlert {
    StoredAlert {
        tenant: tenant.into(),
        id: id.into(),
        rule_id: rule.into(),
        rule_name: "full".into(),
        kind: "capacity".into(),
        severity: "critical".into(),
        scope: "tenant".into(),
        target: None,
        subject: subject.into(),
        state: "firing".into(),
        value: 95,
        threshold: 90,
        message: "room Order:1 is 95% full".into(),
        fired_at: at,
        resolved_at: None,
        acked_at: None,
        acked_by: None,
    }
}

async fn alert_rules_upsert_list_delete(store: Arc<dyn Store>) {
    store
        .upsert_alert_rule(&alert_rule("t", "ar_b"))
        .await
        .expect("upsert");
    store
        .upsert_alert_rule(&alert_rule("t", "ar_a"))
        .await
        .expect("upsert");
    store
        .upsert_alert_rule(&alert_rule("u", "ar_a"))
        .await
        .expect("same id, other tenant");
    // Replace: every field but created_at.
    let changed = StoredAlertRule {
        name: "late".into(),
        kind: "latency".into(),
        threshold: 250,
        window_ms: 5_000,
        scope: "tenant".into(),
        target: None,
        severity: "info".into(),
        enabled: false,
        webhook_url: None,
        webhook_secret: None,
        created_at: T0 + 5,
        updated_at: T0 + 9,
        ..alert_rule("t", "ar_b")
    };
    store.upsert_alert_rule(&changed).await.expect("replace");
    let t = store.alert_rules(Some("t")).await.expect("list");
    assert_eq!(
        t.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["ar_a", "ar_b"]
    );
    assert_eq!(
        t[1],
        StoredAlertRule {
            created_at: T0,
            ..changed
        }
    );
    assert_eq!(t[0], alert_rule("t", "ar_a"));
    assert_eq!(store.alert_rules(None).await.expect("all").len(), 3);
    assert!(store.delete_alert_rule("t", "ar_a").await.expect("delete"));
    assert!(!store.delete_alert_rule("t", "ar_a").await.expect("again"));
    assert_eq!(store.alert_rules(Some("u")).await.expect("u").len(), 1);
}

async fn an_alert_fires_once_resolves_once_and_keeps_its_first_ack(store: Arc<dyn Store>) {
    assert!(store
        .fire_alert(&alert("t", "al_1", "r", "Order:1", T0))
        .await
        .expect("fire"));
    // A second node firing the same rule and subject: no second row.
    assert!(!store
        .fire_alert(&alert("t", "al_2", "r", "Order:1", T0 + 1))
        .await
        .expect("again"));
    // Another subject, rule or tenant fires on its own.
    assert!(store
        .fire_alert(&alert("t", "al_3", "r", "Order:2", T0 + 2))
        .await
        .expect("subject"));
    assert!(store
        .fire_alert(&alert("t", "al_4", "r2", "Order:1", T0 + 3))
        .await
        .expect("rule"));
    assert!(store
        .fire_alert(&alert("u", "al_5", "r", "Order:1", T0 + 4))
        .await
        .expect("tenant"));
    let got = store
        .get_alert("t", "al_1")
        .await
        .expect("get")
        .expect("there");
    assert_eq!(got, alert("t", "al_1", "r", "Order:1", T0));
    assert_eq!(
        store.get_alert("u", "al_1").await.expect("other tenant"),
        None
    );
    let acked = store
        .ack_alert("t", "al_1", T0 + 10, "olga")
        .await
        .expect("ack")
        .expect("there");
    assert_eq!(
        (acked.acked_at, acked.acked_by.as_deref()),
        (Some(T0 + 10), Some("olga"))
    );
    let again = store
        .ack_alert("t", "al_1", T0 + 20, "root")
        .await
        .expect("ack")
        .expect("there");
    assert_eq!(
        (again.acked_at, again.acked_by.as_deref()),
        (Some(T0 + 10), Some("olga"))
    );
    assert_eq!(
        store
            .ack_alert("u", "al_1", T0, "x")
            .await
            .expect("other tenant"),
        None
    );
    let done = store
        .resolve_alert("t", "al_1", T0 + 30)
        .await
        .expect("resolve")
        .expect("was firing");
    assert_eq!(
        (done.state.as_str(), done.resolved_at),
        ("resolved", Some(T0 + 30))
    );
    assert_eq!(
        store
            .resolve_alert("t", "al_1", T0 + 40)
            .await
            .expect("twice"),
        None
    );
    // Resolved, the rule may fire again for the subject.
    assert!(store
        .fire_alert(&alert("t", "al_6", "r", "Order:1", T0 + 50))
        .await
        .expect("refire"));
}

async fn alert_pages_newest_first_by_state_and_rule(store: Arc<dyn Store>) {
    for i in 0..5 {
        let a = alert(
            "t",
            &format!("al_{i}"),
            if i % 2 == 0 { "even" } else { "odd" },
            &format!("s{i}"),
            T0 + i,
        );
        assert!(store.fire_alert(&a).await.expect("fire"));
    }
    store
        .resolve_alert("t", "al_0", T0 + 9)
        .await
        .expect("resolve");
    let f =
        |state: Option<&str>, rule: Option<&str>, before: Option<(i64, &str)>, limit| AlertFilter {
            tenant: "t".into(),
            state: state.map(String::from),
            rule_id: rule.map(String::from),
            before: before.map(|(a, b)| (a, b.to_string())),
            limit,
        };
    let ids = |v: Vec<StoredAlert>| v.into_iter().map(|a| a.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.list_alerts(f(None, None, None, 10)).await.unwrap()),
        ["al_4", "al_3", "al_2", "al_1", "al_0"]
    );
    assert_eq!(
        ids(store.list_alerts(f(None, None, None, 2)).await.unwrap()),
        ["al_4", "al_3"]
    );
    assert_eq!(
        ids(store
            .list_alerts(f(None, None, Some((T0 + 3, "al_3")), 2))
            .await
            .unwrap()),
        ["al_2", "al_1"]
    );
    assert_eq!(
        ids(store
            .list_alerts(f(Some("firing"), Some("even"), None, 10))
            .await
            .unwrap()),
        ["al_4", "al_2"]
    );
    assert_eq!(
        ids(store
            .list_alerts(f(Some("resolved"), None, None, 10))
            .await
            .unwrap()),
        ["al_0"]
    );
    assert!(store
        .list_alerts(AlertFilter {
            tenant: "u".into(),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .is_empty());
}

async fn a_lease_has_one_holder_until_it_expires(store: Arc<dyn Store>) {
    assert!(store
        .hold_lease("alerts", "n1", T0, T0 + 3_000)
        .await
        .expect("take"));
    assert!(!store
        .hold_lease("alerts", "n2", T0 + 1_000, T0 + 4_000)
        .await
        .expect("held"));
    assert!(store
        .hold_lease("alerts", "n1", T0 + 2_000, T0 + 5_000)
        .await
        .expect("renew"));
    assert!(store
        .hold_lease("other", "n2", T0, T0 + 3_000)
        .await
        .expect("another lease"));
    // Expired: the next node takes it, and the old holder cannot renew.
    assert!(store
        .hold_lease("alerts", "n2", T0 + 5_001, T0 + 8_000)
        .await
        .expect("take over"));
    assert!(!store
        .hold_lease("alerts", "n1", T0 + 5_002, T0 + 8_000)
        .await
        .expect("lost"));
    // Given up: free at once.
    store
        .release_lease("alerts", "n1")
        .await
        .expect("not the holder: no-op");
    assert!(!store
        .hold_lease("alerts", "n3", T0 + 6_000, T0 + 9_000)
        .await
        .expect("still n2"));
    store.release_lease("alerts", "n2").await.expect("release");
    assert!(store
        .hold_lease("alerts", "n3", T0 + 6_000, T0 + 9_000)
        .await
        .expect("free"));
}

async fn lifecycle_event_ids_per_tenant_until_purged(store: Arc<dyn Store>) {
    assert!(!store.lifecycle_applied("t", "e1").await.unwrap());
    assert!(store
        .mark_lifecycle_applied("t", "e1", 1_000)
        .await
        .unwrap());
    assert!(
        !store
            .mark_lifecycle_applied("t", "e1", 2_000)
            .await
            .unwrap(),
        "once"
    );
    assert!(store.lifecycle_applied("t", "e1").await.unwrap());
    assert!(
        !store.lifecycle_applied("u", "e1").await.unwrap(),
        "per tenant"
    );
    assert!(store
        .mark_lifecycle_applied("u", "e1", 5_000)
        .await
        .unwrap());
    assert!(store
        .mark_lifecycle_applied("t", "it's; DROP TABLE x--", 5_000)
        .await
        .unwrap());
    assert_eq!(
        store.purge_lifecycle_events(2_000).await.unwrap(),
        1,
        "the first mark's time"
    );
    assert!(!store.lifecycle_applied("t", "e1").await.unwrap());
    assert!(store.lifecycle_applied("u", "e1").await.unwrap());
    assert!(store
        .lifecycle_applied("t", "it's; DROP TABLE x--")
        .await
        .unwrap());
}

async fn participants_upsert_list_delete(store: Arc<dyn Store>) {
    let p = |room: &str, user: &str, role: &str| Participant {
        tenant: "t".into(),
        room: room.into(),
        user: user.into(),
        role: role.into(),
    };
    store
        .set_participant(&p("r1", "bob", "viewer"))
        .await
        .expect("set");
    store
        .set_participant(&p("r1", "alice", "owner"))
        .await
        .expect("set");
    store
        .set_participant(&p("r2", "carol", "commenter"))
        .await
        .expect("set");
    store
        .set_participant(&p("r1", "bob", "operator"))
        .await
        .expect("change role");

    assert_eq!(
        store.list_participants("t", "r1").await.expect("list"),
        vec![p("r1", "alice", "owner"), p("r1", "bob", "operator")]
    );
    assert!(matches!(
        store.set_participant(&p("r1", "eve", "god")).await,
        Err(StoreError::Other(_))
    ));
    assert_eq!(store.all_participants().await.expect("all").len(), 3);
    assert!(store
        .delete_participant("t", "r1", "bob")
        .await
        .expect("delete"));
    assert!(!store
        .delete_participant("t", "r1", "bob")
        .await
        .expect("delete again"));
    assert_eq!(
        store
            .list_participants("t", "r1")
            .await
            .expect("list")
            .len(),
        1
    );
}

async fn write_batch_is_all_or_nothing(store: Arc<dyn Store>) {
    let mut started = session("t", "s1", "alice", T0);
    started.rooms = vec!["r1".into()];
    let good = vec![
        WriteOp::Activity(member("t", T0, "join", "alice", "r1", "s1")),
        WriteOp::SessionStarted(started),
        WriteOp::LastSeen {
            tenant: "t".into(),
            user: "alice".into(),
            at: T0,
        },
        WriteOp::RoomStat(StatSample {
            tenant: "t".into(),
            room: "r1".into(),
            minute: T0,
            online_sessions_peak: 1,
            online_sessions_sum: 1,
            samples: 1,
            joins: 1,
            unique_users: vec!["alice".into()],
            ..Default::default()
        }),
    ];
    // A tenant longer than the column allows (64) violates a constraint in the
    // middle of the transaction.
    let mut poisoned = good.clone();
    poisoned.insert(2, WriteOp::Activity(act(&"x".repeat(65), T0, "join")));
    let err = store
        .write_batch(&poisoned)
        .await
        .expect_err("constraint violation");
    assert!(
        !err.is_retryable(),
        "bad data is not a transient failure: {err}"
    );

    assert!(store
        .activity(all_of("t"))
        .await
        .expect("activity")
        .is_empty());
    assert!(store
        .list_session_history(
            "t",
            SessionFilter {
                limit: 10,
                ..Default::default()
            }
        )
        .await
        .expect("history")
        .is_empty());
    assert_eq!(
        store.last_seen("t", "alice").await.expect("last seen"),
        None
    );
    assert!(store
        .room_stats("t", "r1", Bucket::Minute, T0 - DAY, T0 + DAY)
        .await
        .expect("stats")
        .is_empty());

    // An end reason outside the closed set is rejected the same way.
    let mut bad_reason = good.clone();
    bad_reason.push(WriteOp::SessionEnded {
        tenant: "t".into(),
        session_id: "s1".into(),
        ended_at: T0 + 1,
        reason: "vanished".into(),
        rooms: vec![],
    });
    assert!(store.write_batch(&bad_reason).await.is_err());
    assert!(store
        .activity(all_of("t"))
        .await
        .expect("activity")
        .is_empty());

    store.write_batch(&good).await.expect("the good batch");
    store.write_batch(&[]).await.expect("an empty batch");
    assert_eq!(
        store.activity(all_of("t")).await.expect("activity").len(),
        1
    );
    assert_eq!(
        store.last_seen("t", "alice").await.expect("last seen"),
        Some(T0)
    );
}

async fn session_history_start_end_filters_and_pages(store: Arc<dyn Store>) {
    let mut ops = Vec::new();
    for i in 0..7 {
        let mut s = session(
            "t",
            &format!("s{i}"),
            if i % 2 == 0 { "alice" } else { "bob" },
            T0 + i * 1000,
        );
        s.os = Some("linux".into());
        s.client_id = Some(format!("c{i}"));
        ops.push(WriteOp::SessionStarted(s));
    }
    // Two sessions started in the same millisecond: the id breaks the tie.
    ops.push(WriteOp::SessionStarted(session(
        "t",
        "s7a",
        "carol",
        T0 + 6000,
    )));
    write(&store, ops).await;
    write(
        &store,
        vec![
            WriteOp::SessionEnded {
                tenant: "t".into(),
                session_id: "s1".into(),
                ended_at: T0 + 50_000,
                reason: "timeout".into(),
                rooms: vec!["lobby".into(), "Order:1".into()],
            },
            WriteOp::SessionEnded {
                tenant: "t".into(),
                session_id: "s4".into(),
                ended_at: T0 + 60_000,
                reason: "left".into(),
                rooms: vec!["lobby".into()],
            },
            // Unknown session: ignored, the batch still succeeds.
            WriteOp::SessionEnded {
                tenant: "t".into(),
                session_id: "never-started".into(),
                ended_at: T0,
                reason: "left".into(),
                rooms: vec!["lobby".into()],
            },
            // A repeated start changes nothing.
            WriteOp::SessionStarted(session("t", "s1", "mallory", T0)),
        ],
    )
    .await;

    let list = |f: SessionFilter| {
        let store = store.clone();
        async move { store.list_session_history("t", f).await.expect("history") }
    };
    let ids = |v: &[SessionRecord]| v.iter().map(|s| s.session_id.clone()).collect::<Vec<_>>();

    let all = list(SessionFilter {
        limit: 100,
        ..Default::default()
    })
    .await;
    assert_eq!(
        ids(&all),
        ["s7a", "s6", "s5", "s4", "s3", "s2", "s1", "s0"],
        "newest first"
    );
    let s1 = all.iter().find(|s| s.session_id == "s1").expect("s1");
    assert_eq!(s1.user, "bob");
    assert_eq!(s1.ended_at, Some(T0 + 50_000));
    assert_eq!(s1.end_reason.as_deref(), Some("timeout"));
    assert_eq!(s1.rooms, vec!["lobby".to_string(), "Order:1".to_string()]);
    assert_eq!(s1.os.as_deref(), Some("linux"));
    assert_eq!(s1.client_id.as_deref(), Some("c1"));
    assert!(all
        .iter()
        .find(|s| s.session_id == "s0")
        .expect("s0")
        .ended_at
        .is_none());

    let bob = list(SessionFilter {
        user: Some("bob".into()),
        limit: 100,
        ..Default::default()
    })
    .await;
    assert_eq!(ids(&bob), ["s5", "s3", "s1"]);
    let lobby = list(SessionFilter {
        room: Some("lobby".into()),
        limit: 100,
        ..Default::default()
    })
    .await;
    assert_eq!(ids(&lobby), ["s4", "s1"]);
    let order = list(SessionFilter {
        room: Some("Order:1".into()),
        user: Some("bob".into()),
        limit: 100,
        ..Default::default()
    })
    .await;
    assert_eq!(ids(&order), ["s1"]);
    let window = list(SessionFilter {
        from: Some(T0 + 2000),
        to: Some(T0 + 5000),
        limit: 100,
        ..Default::default()
    })
    .await;
    assert_eq!(ids(&window), ["s4", "s3", "s2"]);

    // Keyset pages of 3, with and without the room filter.
    for filter in [
        SessionFilter::default(),
        SessionFilter {
            room: Some("lobby".into()),
            ..Default::default()
        },
    ] {
        let mut seen = Vec::new();
        let mut after: Option<SessionCursor> = None;
        loop {
            let page = list(SessionFilter {
                after: after.clone(),
                limit: 3,
                ..filter.clone()
            })
            .await;
            if page.is_empty() {
                break;
            }
            after = page.last().map(SessionCursor::after);
            seen.extend(ids(&page));
        }
        let expected = ids(&list(SessionFilter {
            limit: 100,
            ..filter.clone()
        })
        .await);
        assert_eq!(seen, expected);
    }
}

async fn last_seen_keeps_the_latest(store: Arc<dyn Store>) {
    let seen = |user: &str, at: i64| WriteOp::LastSeen {
        tenant: "t".into(),
        user: user.into(),
        at,
    };
    write(&store, vec![seen("alice", T0 + 100)]).await;
    write(
        &store,
        vec![seen("alice", T0 + 300), seen("alice", T0 + 200)],
    )
    .await;
    write(&store, vec![seen("alice", T0 + 250)]).await;
    assert_eq!(
        store.last_seen("t", "alice").await.expect("last seen"),
        Some(T0 + 300)
    );
    assert_eq!(
        store.last_seen("t", "nobody").await.expect("last seen"),
        None
    );
}

async fn activity_filters(store: Arc<dyn Store>) {
    let mut rows = Vec::new();
    for i in 0..40i64 {
        let user = ["alice", "bob", "carol", "dave"][(i % 4) as usize];
        let room = ["r1", "r2"][(i % 2) as usize];
        let kind = ["join", "leave", "status", "lock_acquired", "join"][(i % 5) as usize];
        let mut row = member("t", T0 + i * MIN, kind, user, room, &format!("s{}", i % 4));
        row.actor = Some(user.into());
        row.details = json!({"i": i, "reason": "left"});
        rows.push(row);
    }
    let mut roomless = act("t", T0 + 45 * MIN, "admin_kick");
    roomless.actor = Some("admin".into());
    rows.push(roomless);
    write_activity(&store, rows).await;

    let get = |f: ActivityFilter| {
        let store = store.clone();
        async move { store.activity(f).await.expect("activity") }
    };
    let all = get(all_of("t")).await;
    assert_eq!(all.len(), 41);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    assert_eq!(all[0].kind, "admin_kick");
    assert_eq!(all[0].room, None);
    let first = all.last().expect("rows");
    assert_eq!(first.details, json!({"i": 0, "reason": "left"}));
    assert_eq!(first.actor.as_deref(), Some("alice"));
    assert_eq!(first.session.as_deref(), Some("s0"));
    assert_eq!(first.at, T0);

    let r1 = get(ActivityFilter {
        room: Some("r1".into()),
        ..all_of("t")
    })
    .await;
    assert_eq!(r1.len(), 20);
    assert!(r1.iter().all(|r| r.room.as_deref() == Some("r1")));
    let bob = get(ActivityFilter {
        user: Some("bob".into()),
        ..all_of("t")
    })
    .await;
    assert_eq!(bob.len(), 10);
    let joins = get(ActivityFilter {
        kind: Some("join".into()),
        ..all_of("t")
    })
    .await;
    assert_eq!(joins.len(), 16);
    let window = get(ActivityFilter {
        from: Some(T0 + 10 * MIN),
        to: Some(T0 + 20 * MIN),
        ..all_of("t")
    })
    .await;
    assert_eq!(window.len(), 10, "from is inclusive, to exclusive");
    assert!(window
        .iter()
        .all(|r| r.at >= T0 + 10 * MIN && r.at < T0 + 20 * MIN));
    let combined = get(ActivityFilter {
        room: Some("r2".into()),
        user: Some("bob".into()),
        kind: Some("join".into()),
        from: Some(T0),
        to: Some(T0 + 40 * MIN),
        ..all_of("t")
    })
    .await;
    assert!(combined
        .iter()
        .all(|r| r.user.as_deref() == Some("bob") && r.kind == "join"));
    assert_eq!(
        combined.len(),
        4,
        "bob is always in r2 and joins at i = 5, 9, 25, 29"
    );
    assert!(get(ActivityFilter {
        kind: Some("nothing".into()),
        ..all_of("t")
    })
    .await
    .is_empty());
    assert_eq!(
        get(ActivityFilter {
            limit: 0,
            ..all_of("t")
        })
        .await
        .len(),
        1,
        "limit 0 means 1"
    );
}

async fn activity_keyset_pages_have_no_gaps_or_duplicates(store: Arc<dyn Store>) {
    let rows = (0..250)
        .map(|i| member("t", T0 + i, "join", "u", "r", "s"))
        .collect();
    write_activity(&store, rows).await;
    let mut ids = Vec::new();
    let mut after_id = None;
    let mut pages = Vec::new();
    loop {
        let page = store
            .activity(ActivityFilter {
                after_id,
                limit: 100,
                ..all_of("t")
            })
            .await
            .expect("page");
        if page.is_empty() {
            break;
        }
        pages.push(page.len());
        after_id = page.last().map(|r| r.id);
        ids.extend(page.iter().map(|r| r.id));
    }
    assert_eq!(pages, [100, 100, 50]);
    assert!(
        ids.windows(2).all(|w| w[0] > w[1]),
        "strictly descending, so no duplicates"
    );
    let mut all: Vec<i64> = store
        .activity(ActivityFilter {
            limit: 1000,
            ..all_of("t")
        })
        .await
        .expect("all")
        .iter()
        .map(|r| r.id)
        .collect();
    all.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(ids, all, "no gaps");
}

async fn activity_stream_returns_every_row_in_order(store: Arc<dyn Store>) {
    let rows = (0..5000i64)
        .map(|i| {
            member(
                "t",
                T0 + i,
                if i % 10 == 0 { "leave" } else { "join" },
                "u",
                "r",
                "s",
            )
        })
        .collect();
    write_activity(&store, rows).await;
    write_activity(&store, vec![member("other", T0, "join", "u", "r", "s")]).await;

    let streamed: Vec<ActivityRow> = store
        .activity_stream(ActivityFilter {
            limit: 1,
            ..all_of("t")
        })
        .try_collect()
        .await
        .expect("stream");
    assert_eq!(
        streamed.len(),
        5000,
        "the limit does not apply to the export"
    );
    assert!(
        streamed.windows(2).all(|w| w[0].id < w[1].id),
        "oldest first"
    );
    assert_eq!(streamed.first().map(|r| r.at), Some(T0));
    assert_eq!(streamed.last().map(|r| r.at), Some(T0 + 4999));
    assert!(streamed.iter().all(|r| r.tenant == "t"));

    let leaves: Vec<ActivityRow> = store
        .activity_stream(ActivityFilter {
            kind: Some("leave".into()),
            ..all_of("t")
        })
        .try_collect()
        .await
        .expect("stream");
    assert_eq!(leaves.len(), 500);
    let below = streamed[1234].id;
    let bounded: Vec<ActivityRow> = store
        .activity_stream(ActivityFilter {
            after_id: Some(below),
            ..all_of("t")
        })
        .try_collect()
        .await
        .expect("stream");
    assert_eq!(bounded.len(), 1234, "after_id bounds the export from above");
    let none: Vec<ActivityRow> = store
        .activity_stream(all_of("nobody"))
        .try_collect()
        .await
        .expect("stream");
    assert!(none.is_empty());
}

async fn activity_stats_by_type_and_hour(store: Arc<dyn Store>) {
    let mut rows = Vec::new();
    for i in 0..6 {
        rows.push(act("t", T0 + i * 10 * MIN, "join")); // hour 0: 6 joins
    }
    for i in 0..3 {
        rows.push(act("t", T0 + HOUR + i * MIN, "leave")); // hour 1: 3 leaves
    }
    rows.push(act("t", T0 + 3 * HOUR, "timeout")); // hour 3
    rows.push(act("t", T0 + 5 * HOUR, "timeout")); // outside the window
    write_activity(&store, rows).await;

    let stats = store
        .activity_stats("t", T0, T0 + 4 * HOUR)
        .await
        .expect("stats");
    assert_eq!(
        stats.by_type,
        BTreeMap::from([
            ("join".into(), 6),
            ("leave".into(), 3),
            ("timeout".into(), 1)
        ])
    );
    assert_eq!(
        stats.by_hour,
        vec![(T0, 6), (T0 + HOUR, 3), (T0 + 3 * HOUR, 1)]
    );
    let empty = store
        .activity_stats("t", T0 + 10 * HOUR, T0 + 11 * HOUR)
        .await
        .expect("stats");
    assert!(empty.by_type.is_empty() && empty.by_hour.is_empty());
}

async fn purge_activity_deletes_old_rows_only(store: Arc<dyn Store>) {
    let rows = (0..30)
        .map(|i| act(if i % 2 == 0 { "t" } else { "u" }, T0 + i * DAY, "join"))
        .collect();
    write_activity(&store, rows).await;
    let purged = store.purge_activity(T0 + 10 * DAY).await.expect("purge");
    assert_eq!(purged, 10, "every tenant's rows older than the bound");
    let left = store.activity(all_of("t")).await.expect("activity");
    assert_eq!(left.len(), 10);
    assert!(left.iter().all(|r| r.at >= T0 + 10 * DAY));
    assert_eq!(
        store
            .purge_activity(T0 + 10 * DAY)
            .await
            .expect("purge again"),
        0
    );
    assert_eq!(store.purge_activity(i64::MAX).await.expect("purge all"), 20);
}

async fn room_audit_time_spent_locks_and_timeline(store: Arc<dyn Store>) {
    let from = T0;
    let to = T0 + 60_000;
    let mut rows = vec![
        // Alice: two overlapping sessions, 0–10 s and 5–20 s: 20 s in the room.
        member("t", T0, "join", "alice", "r", "a1"),
        member("t", T0 + 5_000, "join", "alice", "r", "a2"),
        member("t", T0 + 10_000, "leave", "alice", "r", "a1"),
        member("t", T0 + 20_000, "timeout", "alice", "r", "a2"),
        // Bob joined at 30 s and is still there: counts up to `to`.
        member("t", T0 + 30_000, "join", "bob", "r", "b1"),
        // Carol was already in before the window and left at 2 s.
        member("t", T0 + 2_000, "leave", "carol", "r", "c1"),
        // Dave: elsewhere, and before the window.
        member("t", T0 + 1_000, "join", "dave", "elsewhere", "d1"),
        member("t", T0 - 50_000, "join", "dave", "r", "d0"),
        member("t", T0 - 40_000, "leave", "dave", "r", "d0"),
    ];
    for (i, kind) in [
        "lock_acquired",
        "lock_released",
        "lock_expired",
        "lock_force_released",
    ]
    .into_iter()
    .enumerate()
    {
        let mut lock = member("t", T0 + 40_000 + i as i64, kind, "bob", "r", "b1");
        lock.details = json!({"field": "totalAmount"});
        rows.push(lock);
    }
    for i in 0..600 {
        rows.push(member("t", T0 + 50_000 + i, "status", "bob", "r", "b1"));
    }
    write_activity(&store, rows).await;

    let audit = store.room_audit("t", "r", from, to).await.expect("audit");
    let summary: Vec<(&str, u32, u64, i64, i64)> = audit
        .participants
        .iter()
        .map(|p| {
            (
                p.user.as_str(),
                p.sessions,
                p.time_spent_ms,
                p.first_seen,
                p.last_seen,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("bob", 1, 30_000, T0 + 30_000, to),
            ("alice", 2, 20_000, T0, T0 + 20_000),
            ("carol", 1, 2_000, from, T0 + 2_000),
        ]
    );
    assert_eq!(
        audit
            .locks
            .iter()
            .map(|r| r.kind.as_str())
            .collect::<Vec<_>>(),
        [
            "lock_force_released",
            "lock_expired",
            "lock_released",
            "lock_acquired"
        ]
    );
    assert_eq!(audit.locks[0].details, json!({"field": "totalAmount"}));
    assert_eq!(audit.timeline.len(), 500, "the latest 500 rows");
    assert!(audit.timeline.windows(2).all(|w| w[0].id > w[1].id));
    assert_eq!(audit.timeline[0].at, T0 + 50_599);
    assert!(audit
        .timeline
        .iter()
        .all(|r| r.room.as_deref() == Some("r")));

    let empty = store
        .room_audit("t", "nowhere", from, to)
        .await
        .expect("audit");
    assert!(empty.participants.is_empty() && empty.locks.is_empty() && empty.timeline.is_empty());
}

fn sample(room: &str, minute: i64, peak: u32, users: &[&str], latency: &[u32]) -> StatSample {
    StatSample {
        tenant: "t".into(),
        room: room.into(),
        minute,
        online_sessions_peak: peak,
        online_sessions_sum: u64::from(peak) * 2,
        samples: 2,
        online_users_peak: peak / 2,
        joins: 3,
        leaves: 1,
        timeouts: 1,
        unique_users: users.iter().map(|u| u.to_string()).collect(),
        latency_ms: latency.to_vec(),
    }
}

async fn room_stats_minutes_rollup_and_purge(store: Arc<dyn Store>) {
    // Minute 0 gets two samples (e.g. from two nodes) that merge.
    write(
        &store,
        vec![
            WriteOp::RoomStat(sample("r", T0 + 15_000, 10, &["a", "b"], &[4, 8, 12])),
            WriteOp::RoomStat(sample("r", T0, 6, &["b", "c"], &[30])),
            WriteOp::RoomStat(sample("r", T0 + MIN, 4, &["a"], &[])),
            WriteOp::RoomStat(sample("r", T0 + HOUR + 5 * MIN, 20, &["d"], &[100; 20])),
            WriteOp::RoomStat(sample("other-room", T0, 99, &["z"], &[])),
        ],
    )
    .await;

    let minutes = store
        .room_stats("t", "r", Bucket::Minute, T0, T0 + DAY)
        .await
        .expect("minutes");
    assert_eq!(
        minutes.iter().map(|b| b.start).collect::<Vec<_>>(),
        [T0, T0 + MIN, T0 + HOUR + 5 * MIN]
    );
    let m0 = &minutes[0];
    assert_eq!(m0.online_sessions_peak, 10, "peaks take the maximum");
    assert_eq!(m0.online_sessions_avg, 8.0, "(20 + 12) / 4 samples");
    assert_eq!(m0.online_users_peak, 5);
    assert_eq!(
        (m0.joins, m0.leaves, m0.timeouts),
        (6, 2, 2),
        "counters add"
    );
    assert_eq!(m0.unique_users, 3, "a, b, c");
    assert_eq!(m0.latency_avg_ms, Some(13.5));
    let p95 = m0.latency_p95_ms.expect("p95");
    assert!(
        (20.0..=30.0).contains(&p95),
        "p95 {p95} lies in the slowest sample's bin"
    );
    assert_eq!(minutes[1].latency_avg_ms, None);
    assert_eq!(minutes[1].latency_p95_ms, None);
    let p95 = minutes[2].latency_p95_ms.expect("p95");
    assert!(
        p95 > 75.0 && p95 <= 100.0,
        "p95 {p95} of twenty 100 ms samples stays in (75, 100]"
    );

    // Nothing is rolled up before its minutes are complete.
    assert_eq!(store.rollup(T0).await.expect("rollup"), 0);
    // Two hours and a bit later: hour 0 and hour 1 exist, day 0 from both hours.
    let now = T0 + 2 * HOUR + 30_000;
    assert!(store.rollup(now).await.expect("rollup") > 0);
    let hours = store
        .room_stats("t", "r", Bucket::Hour, T0, T0 + DAY)
        .await
        .expect("hours");
    assert_eq!(
        hours.iter().map(|b| b.start).collect::<Vec<_>>(),
        [T0, T0 + HOUR]
    );
    let h0 = &hours[0];
    assert_eq!(h0.online_sessions_peak, 10);
    assert_eq!(h0.online_sessions_avg, (20.0 + 12.0 + 8.0) / 6.0);
    assert_eq!((h0.joins, h0.leaves, h0.timeouts), (9, 3, 3));
    assert_eq!(h0.unique_users, 3);
    assert_eq!(h0.latency_avg_ms, Some(13.5));
    let days = store
        .room_stats("t", "r", Bucket::Day, T0, T0 + DAY)
        .await
        .expect("days");
    assert_eq!(days.len(), 1);
    let d0 = &days[0];
    assert_eq!(d0.start, T0);
    assert_eq!(d0.online_sessions_peak, 20);
    assert_eq!((d0.joins, d0.leaves, d0.timeouts), (12, 4, 4));
    assert_eq!(d0.unique_users, 4, "a, b, c, d");
    assert_eq!(
        d0.latency_avg_ms,
        Some((4.0 + 8.0 + 12.0 + 30.0 + 2000.0) / 24.0)
    );

    // Idempotent: a second rollup at the same time changes nothing.
    store.rollup(now).await.expect("rollup again");
    assert_eq!(
        store
            .room_stats("t", "r", Bucket::Hour, T0, T0 + DAY)
            .await
            .expect("hours"),
        hours
    );
    assert_eq!(
        store
            .room_stats("t", "r", Bucket::Day, T0, T0 + DAY)
            .await
            .expect("days"),
        days
    );

    // A late sample for an hour that was already final is picked up next time.
    write(
        &store,
        vec![WriteOp::RoomStat(sample(
            "r",
            T0 + 30 * MIN,
            50,
            &["e"],
            &[],
        ))],
    )
    .await;
    store
        .rollup(now + MIN)
        .await
        .expect("rollup after a late sample");
    let hours = store
        .room_stats("t", "r", Bucket::Hour, T0, T0 + DAY)
        .await
        .expect("hours");
    assert_eq!(hours[0].online_sessions_peak, 50);
    assert_eq!(hours[0].unique_users, 4);
    let days = store
        .room_stats("t", "r", Bucket::Day, T0, T0 + DAY)
        .await
        .expect("days");
    assert_eq!(days[0].online_sessions_peak, 50);
    assert_eq!(days[0].joins, 15);

    // Other rooms roll up separately.
    let other = store
        .room_stats("t", "other-room", Bucket::Hour, T0, T0 + DAY)
        .await
        .expect("other");
    assert_eq!(other.len(), 1);
    assert_eq!(other[0].online_sessions_peak, 99);

    // Purge: minutes before hour 1, no hours, no days.
    let purged = store.purge_stats(T0 + HOUR, T0, T0).await.expect("purge");
    assert_eq!(purged, 4, "r: minutes 0, 1, 30; other-room: minute 0");
    let minutes = store
        .room_stats("t", "r", Bucket::Minute, T0, T0 + DAY)
        .await
        .expect("minutes");
    assert_eq!(minutes.len(), 1);
    assert_eq!(
        store
            .room_stats("t", "r", Bucket::Hour, T0, T0 + DAY)
            .await
            .expect("hours")
            .len(),
        2
    );
    let purged = store
        .purge_stats(i64::MAX, i64::MAX, i64::MAX)
        .await
        .expect("purge all");
    assert_eq!(purged, 1 + 3 + 2, "one minute, three hours, two days");
    assert!(store
        .room_stats("t", "r", Bucket::Day, T0, T0 + DAY)
        .await
        .expect("days")
        .is_empty());
}

async fn stats_overview_breakdowns(store: Arc<dyn Store>) {
    let mut ops = Vec::new();
    let specs = [
        ("s1", "alice", "web", Some("linux"), Some("1.0")),
        ("s2", "alice", "mobile", Some("ios"), Some("1.1")),
        ("s3", "bob", "mobile", Some("android"), Some("1.1")),
        ("s4", "carol", "desktop", None, None),
    ];
    for (i, (id, user, device, os, app)) in specs.into_iter().enumerate() {
        let mut s = session("t", id, user, T0 + i as i64 * 1000);
        s.device = device.into();
        s.os = os.map(Into::into);
        s.app_version = app.map(Into::into);
        ops.push(WriteOp::SessionStarted(s));
    }
    ops.push(WriteOp::SessionStarted(session(
        "t",
        "late",
        "dave",
        T0 + 2 * DAY,
    )));
    for (room, peak) in [("quiet", 2), ("busy", 40), ("middle", 9)] {
        ops.push(WriteOp::RoomStat(sample(room, T0, peak, &[], &[])));
    }
    write(&store, ops).await;

    let o = store
        .stats_overview("t", T0, T0 + DAY)
        .await
        .expect("overview");
    assert_eq!(o.sessions_started, 4);
    assert_eq!(o.unique_users, 3);
    assert_eq!(
        o.busiest_rooms,
        vec![
            ("busy".to_string(), 40),
            ("middle".to_string(), 9),
            ("quiet".to_string(), 2)
        ]
    );
    assert_eq!(
        o.by_device,
        BTreeMap::from([
            ("desktop".into(), 1),
            ("mobile".into(), 2),
            ("web".into(), 1)
        ])
    );
    assert_eq!(
        o.by_os,
        BTreeMap::from([
            ("android".into(), 1),
            ("ios".into(), 1),
            ("linux".into(), 1),
            ("unknown".into(), 1)
        ])
    );
    assert_eq!(
        o.by_app_version,
        BTreeMap::from([("1.0".into(), 1), ("1.1".into(), 2), ("unknown".into(), 1)])
    );
}

async fn tenants_never_see_each_other(store: Arc<dyn Store>) {
    let a = "tenant-a";
    let b = "tenant-b";
    // Tenant A has one of everything, under names tenant B will ask for.
    let mut r = room(a, "shared-key");
    r.tags = vec!["tag".into()];
    store.insert_room(&r).await.expect("room");
    store
        .upsert_room_type(&StoredRoomType {
            tenant: a.into(),
            code: "CUSTOM".into(),
            capacity: 5,
            idle_ttl_ms: 1000,
            visibility: "open".into(),
            created_at: T0,
            heartbeat_interval_ms: None,
            session_timeout_ms: None,
        })
        .await
        .expect("room type");
    store
        .set_participant(&Participant {
            tenant: a.into(),
            room: "shared-key".into(),
            user: "alice".into(),
            role: "owner".into(),
        })
        .await
        .expect("participant");
    let mut s = session(a, "sess", "alice", T0);
    s.rooms = vec!["shared-key".into()];
    let mut ops = vec![
        WriteOp::SessionStarted(s),
        WriteOp::LastSeen {
            tenant: a.into(),
            user: "alice".into(),
            at: T0,
        },
        WriteOp::RoomStat(sample("shared-key", T0, 3, &["alice"], &[10])),
        WriteOp::Activity(member(a, T0, "join", "alice", "shared-key", "sess")),
        WriteOp::Activity(member(
            a,
            T0 + 1,
            "lock_acquired",
            "alice",
            "shared-key",
            "sess",
        )),
    ];
    if let WriteOp::RoomStat(stat) = &mut ops[2] {
        stat.tenant = a.into();
    }
    write(&store, ops).await;
    store.rollup(T0 + DAY + HOUR).await.expect("rollup");

    for (tenant, visible) in [(a, true), (b, false)] {
        let check = |what: &str, found: bool| {
            assert_eq!(
                found,
                visible,
                "{tenant} {} see {what}",
                if visible { "must" } else { "must not" }
            );
        };
        check(
            "the room",
            store
                .get_room(tenant, "shared-key")
                .await
                .expect("get")
                .is_some(),
        );
        check(
            "the room in lists",
            !store
                .list_rooms(
                    tenant,
                    RoomFilter {
                        tag: Some("tag".into()),
                        limit: 10,
                        ..Default::default()
                    },
                )
                .await
                .expect("list")
                .is_empty(),
        );
        check(
            "the room type",
            !store
                .list_room_types(tenant)
                .await
                .expect("types")
                .is_empty(),
        );
        check(
            "the participants",
            !store
                .list_participants(tenant, "shared-key")
                .await
                .expect("participants")
                .is_empty(),
        );
        for filter in [
            SessionFilter {
                limit: 10,
                ..Default::default()
            },
            SessionFilter {
                room: Some("shared-key".into()),
                limit: 10,
                ..Default::default()
            },
            SessionFilter {
                user: Some("alice".into()),
                limit: 10,
                ..Default::default()
            },
        ] {
            check(
                "the session history",
                !store
                    .list_session_history(tenant, filter)
                    .await
                    .expect("history")
                    .is_empty(),
            );
        }
        check(
            "last seen",
            store
                .last_seen(tenant, "alice")
                .await
                .expect("last seen")
                .is_some(),
        );
        check(
            "activity",
            !store
                .activity(all_of(tenant))
                .await
                .expect("activity")
                .is_empty(),
        );
        check(
            "activity of the room",
            !store
                .activity(ActivityFilter {
                    room: Some("shared-key".into()),
                    ..all_of(tenant)
                })
                .await
                .expect("activity")
                .is_empty(),
        );
        let streamed: Vec<ActivityRow> = store
            .activity_stream(all_of(tenant))
            .try_collect()
            .await
            .expect("stream");
        check("the export", !streamed.is_empty());
        check(
            "activity stats",
            !store
                .activity_stats(tenant, T0, T0 + DAY)
                .await
                .expect("stats")
                .by_type
                .is_empty(),
        );
        let audit = store
            .room_audit(tenant, "shared-key", T0, T0 + DAY)
            .await
            .expect("audit");
        check("the audit participants", !audit.participants.is_empty());
        check("the audit locks", !audit.locks.is_empty());
        check("the audit timeline", !audit.timeline.is_empty());
        for bucket in [Bucket::Minute, Bucket::Hour, Bucket::Day] {
            check(
                "room stats",
                !store
                    .room_stats(tenant, "shared-key", bucket, T0, T0 + DAY)
                    .await
                    .expect("stats")
                    .is_empty(),
            );
        }
        let overview = store
            .stats_overview(tenant, T0, T0 + DAY)
            .await
            .expect("overview");
        check(
            "the overview totals",
            overview.sessions_started > 0 && overview.unique_users > 0,
        );
        check("the busiest rooms", !overview.busiest_rooms.is_empty());
        check("the device breakdown", !overview.by_device.is_empty());
    }
    // Tenant B may use the same keys without touching A's rows.
    store
        .insert_room(&room(b, "shared-key"))
        .await
        .expect("same key, other tenant");
    assert!(store.delete_room(b, "shared-key").await.expect("delete"));
    assert!(store
        .get_room(a, "shared-key")
        .await
        .expect("get")
        .is_some());
    assert!(!store
        .delete_participant(b, "shared-key", "alice")
        .await
        .expect("delete"));
    assert!(!store.delete_room_type(b, "CUSTOM").await.expect("delete"));
    assert_eq!(
        store
            .list_participants(a, "shared-key")
            .await
            .expect("list")
            .len(),
        1
    );
    assert_eq!(store.list_room_types(a).await.expect("types").len(), 1);
}

async fn hostile_input_is_data_not_sql(store: Arc<dyn Store>) {
    let nasty = "x'); DROP TABLE rooms; -- \"ünïcødé\" 😀 $1 ? :name";
    let mut r = room("t", nasty);
    r.tags = vec![nasty.into()];
    r.attributes.insert(nasty.into(), json!(nasty));
    store.insert_room(&r).await.expect("insert");
    let got = store
        .get_room("t", nasty)
        .await
        .expect("get")
        .expect("present");
    assert_eq!(got, r);
    let tagged = store
        .list_rooms(
            "t",
            RoomFilter {
                tag: Some(nasty.into()),
                after_key: Some("".into()),
                limit: 5,
                ..Default::default()
            },
        )
        .await
        .expect("list");
    assert_eq!(tagged.len(), 1);

    let mut row = member("t", T0, nasty, nasty, nasty, nasty);
    row.details = json!({"text": nasty, "nested": [1, {"a": null}]});
    write_activity(&store, vec![row.clone()]).await;
    let got = store
        .activity(ActivityFilter {
            user: Some(nasty.into()),
            kind: Some(nasty.into()),
            ..all_of("t")
        })
        .await
        .expect("activity");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].details, row.details);

    // Odd numbers are answered, not panicked on.
    assert!(store
        .activity(ActivityFilter {
            from: Some(T0 + 10),
            to: Some(T0),
            after_id: Some(i64::MIN),
            ..all_of("t")
        })
        .await
        .expect("inverted window")
        .is_empty());
    assert!(store
        .room_stats("t", nasty, Bucket::Day, i64::MAX, i64::MIN)
        .await
        .expect("stats")
        .is_empty());
    store
        .activity_stats("t", i64::MIN, i64::MAX)
        .await
        .expect("stats");
    store
        .room_audit("t", nasty, i64::MIN, i64::MAX)
        .await
        .expect("audit");
    store
        .stats_overview("t", i64::MIN, i64::MAX)
        .await
        .expect("overview");
    store.rollup(i64::MIN).await.expect("rollup in the past");
    store
        .write_batch(&[WriteOp::RoomStat(StatSample {
            tenant: "t".into(),
            room: nasty.into(),
            minute: -1,
            online_sessions_peak: u32::MAX,
            online_sessions_sum: u64::MAX,
            samples: u32::MAX,
            latency_ms: vec![u32::MAX, 0],
            unique_users: (0..450).map(|i| format!("user-{i}")).collect(),
            ..Default::default()
        })])
        .await
        .expect("extreme sample");
    let stats = store
        .room_stats("t", nasty, Bucket::Minute, -DAY, DAY)
        .await
        .expect("stats");
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].start, -MIN, "minutes floor towards the past");
    assert_eq!(stats[0].unique_users, 450);
    assert_eq!(stats[0].online_sessions_peak, u32::MAX);

    let users: BTreeSet<String> = store
        .list_session_history(
            "t",
            SessionFilter {
                user: Some(nasty.into()),
                limit: usize::MAX,
                ..Default::default()
            },
        )
        .await
        .expect("history")
        .into_iter()
        .map(|s| s.user)
        .collect();
    assert!(users.is_empty());
    // The table is still there.
    assert_eq!(store.all_rooms().await.expect("rooms").len(), 1);
}

// ---------------------------------------------------------------------------------
// Connecting (not per backend)

#[tokio::test]
async fn unreachable_databases_are_unavailable_and_bad_urls_are_rejected() {
    let outcome = |r: Result<Arc<dyn Store>, StoreError>| r.err().map(|e| (e.is_retryable(), e));

    let started = std::time::Instant::now();
    let (retryable, e) = outcome(store::connect("postgres://postgres@127.0.0.1:1/test").await)
        .expect("nothing listens on port 1");
    assert!(retryable, "a refused connection is worth retrying: {e}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));

    let (retryable, e) = outcome(store::connect("sqlite:///no-such-directory/x/roster.db").await)
        .expect("the directory does not exist");
    assert!(
        retryable,
        "a file that cannot be opened is unavailable: {e}"
    );

    let (retryable, e) =
        outcome(store::connect("mysql://localhost/x").await).expect("unsupported scheme");
    assert!(!retryable && matches!(e, StoreError::Other(_)), "{e}");
}

#[tokio::test]
async fn sqlite_urls_without_slashes_and_in_memory_work() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("plain.db");
    let url = format!("sqlite:{}", path.display());
    let s = store::connect(&url).await.expect("sqlite:path");
    s.migrate().await.expect("migrate");
    assert!(path.exists(), "created if missing");

    let memory = store::connect("sqlite::memory:").await.expect("in memory");
    memory.migrate().await.expect("migrate");
    memory.insert_room(&room("t", "r")).await.expect("insert");
    assert!(memory.get_room("t", "r").await.expect("get").is_some());
}

async fn purge_sessions_deletes_old_ended_sessions_only(store: Arc<dyn Store>) {
    let mut ops = vec![];
    for (i, started) in [T0, T0 + DAY, T0 + 2 * DAY].iter().enumerate() {
        let mut rec = session("t1", &format!("s{i}"), "u", *started);
        rec.rooms = vec!["R".into()];
        ops.push(WriteOp::SessionStarted(rec));
    }
    // s0 ended long ago, s1 ended recently, s2 is live.
    for (id, end) in [("s0", T0 + 1000), ("s1", T0 + 20 * DAY)] {
        ops.push(WriteOp::SessionEnded {
            tenant: "t1".into(),
            session_id: id.into(),
            ended_at: end,
            reason: "left".into(),
            rooms: vec!["R".into()],
        });
    }
    store.write_batch(&ops).await.expect("write");
    let purged = store.purge_sessions(T0 + 10 * DAY).await.expect("purge");
    assert_eq!(purged, 1);
    let left = store
        .list_session_history(
            "t1",
            SessionFilter {
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .expect("history");
    let mut ids: Vec<_> = left.iter().map(|r| r.session_id.clone()).collect();
    ids.sort();
    assert_eq!(ids, vec!["s1".to_string(), "s2".to_string()]);
    let by_room = store
        .list_session_history(
            "t1",
            SessionFilter {
                room: Some("R".into()),
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .expect("history by room");
    assert_eq!(by_room.len(), 2, "the room index went with the session");
}
