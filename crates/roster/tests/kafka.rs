//! Kafka, against librdkafka's mock cluster (a real Kafka protocol broker run
//! inside this test process, on a 127.0.0.1 port): the server binary consumes
//! lifecycle events from it, dead-letters what it cannot apply, and produces
//! the presence event stream to it.

mod common;
use common::proxy::Proxy;
use common::*;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{json, Value};

const MUTATING: &str = "core.entities.lifecycle.mutating";
const MUTATED: &str = "core.entities.lifecycle.mutated";

struct Kafka {
    mock: MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    producer: FutureProducer,
}

impl Kafka {
    fn start() -> Kafka {
        let mock = MockCluster::new(1).expect("mock cluster");
        // The dead-letter topics too: a reader that starts before a topic
        // exists would not see it appear.
        for t in [MUTATING, MUTATED] {
            mock.create_topic(t, 1, 1).unwrap();
            mock.create_topic(&format!("{t}.dlt"), 1, 1).unwrap();
        }
        let producer = ClientConfig::new()
            .set("bootstrap.servers", mock.bootstrap_servers())
            .create()
            .unwrap();
        Kafka { mock, producer }
    }

    fn brokers(&self) -> String {
        self.mock.bootstrap_servers()
    }

    async fn produce(&self, topic: &str, key: &str, payload: &[u8]) {
        self.producer
            .send(
                FutureRecord::to(topic).key(key).payload(payload),
                Duration::from_secs(5),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("produce");
    }

    async fn lifecycle(&self, topic: &str, tenant: &str, id: u64, user: &str, event: Option<&str>) {
        let mut body = json!({"tenantId": tenant, "entity": "Order", "id": id, "userId": user,
            "timestamp": next_timestamp()});
        if let Some(e) = event {
            body["eventId"] = json!(e);
        }
        self.produce(
            topic,
            &format!("{tenant}:Order:{id}"),
            body.to_string().as_bytes(),
        )
        .await;
    }

    /// Every message of partition 0 of `topic` until `n` have arrived (or 20 s).
    fn read(&self, topic: &str, n: usize) -> Vec<rdkafka::message::OwnedMessage> {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .set("group.id", format!("test-reader-{}", rand_suffix()))
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Beginning)
            .unwrap();
        c.assign(&tpl).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut out = Vec::new();
        while out.len() < n && Instant::now() < deadline {
            match c.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => out.push(m.detach()),
                // `usize::MAX`: everything there is now, then stop at the end.
                None if n == usize::MAX && !out.is_empty() => break,
                _ => {}
            }
        }
        out
    }
}

/// A time for each message, later than the one before (as a pipeline's
/// events are): an older one than a record's last would be superseded.
fn next_timestamp() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    LAST.fetch_max(now, Ordering::SeqCst);
    LAST.fetch_add(1, Ordering::SeqCst) + 1
}

fn rand_suffix() -> String {
    format!("{}{}", std::process::id(), unique_prefix().replace(':', ""))
}

fn header(m: &rdkafka::message::OwnedMessage, key: &str) -> Option<String> {
    m.headers()?
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

async fn start_server(kafka: &Kafka, extra: &[(&str, &str)]) -> Server {
    let brokers = kafka.brokers();
    let mut env = vec![
        ("ROSTER_KAFKA_BROKERS", brokers.as_str()),
        ("ROSTER_KAFKA_RETRY_BACKOFF", "100ms,200ms,300ms"),
        ("ROSTER_KAFKA_SESSION_TIMEOUT", "6s"),
    ];
    env.extend_from_slice(extra);
    Server::start_with(&env).await
}

/// The next `ENTITY` (a consumer group's first join on the mock takes ~3 s).
async fn entity(a: &mut roster_client::Client, s: &Server) -> Value {
    a.recv_type("ENTITY", Duration::from_secs(20))
        .await
        .unwrap_or_else(|e| {
            let log = s.log.lock().map(|l| l.join("\n")).unwrap_or_default();
            panic!("waiting for ENTITY: {e}; server log:\n{log}")
        })
}

async fn wait_metric(s: &Server, name: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = metric(&s.metrics().await, name);
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{name} = {got}, want {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_events_from_kafka_reach_subscribers() {
    let kafka = Kafka::start();
    let s = start_server(&kafka, &[]).await;
    let mut a = s.client_in("alice", "acme", Default::default()).await;
    a.sub("Order:123", None).await.unwrap();
    kafka.lifecycle(MUTATING, "acme", 123, "etl", None).await;
    let e = entity(&mut a, &s).await;
    assert_eq!(
        e,
        json!({"type": "ENTITY", "room": "Order:123", "stale": true, "busyBy": "etl", "version": 0})
    );
    kafka.lifecycle(MUTATED, "acme", 123, "etl", None).await;
    let e = entity(&mut a, &s).await;
    assert_eq!(
        (e["stale"].clone(), e["version"].clone()),
        (json!(false), json!(1))
    );
    // Another tenant's record of the same key is another room: alice sees nothing.
    kafka.lifecycle(MUTATING, "other", 123, "etl", None).await;
    wait_metric(
        &s,
        "roster_kafka_lifecycle_events_total{outcome=\"applied\"}",
        3.0,
    )
    .await;
    expect_none(&mut a, "ENTITY", Duration::from_millis(300)).await;
    let (code, body) = s
        .rest(
            "GET",
            "/api/v1/rooms/Order:123/presence",
            &s.admin_token("other"),
            None,
        )
        .await;
    assert_eq!((code, body["stale"].clone()), (200, json!(true)), "{body}");
    assert_eq!(metric(&s.metrics().await, "roster_kafka_up"), 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_events_go_to_the_dead_letter_topic_at_once() {
    let kafka = Kafka::start();
    let s = start_server(&kafka, &[]).await;
    let bad: &[(&[u8], &str)] = &[
        (b"not json", "bad JSON"),
        (br#"{"tenantId":"acme","entity":"Order","id":1}"#, "userId"),
        (
            br#"{"tenantId":"no such tenant!","entity":"Order","id":1,"userId":"etl"}"#,
            "tenantId",
        ),
        (
            br#"{"tenantId":"acme","entity":"Order","id":{"x":1},"userId":"etl"}"#,
            "field `id`",
        ),
    ];
    for (payload, _) in bad {
        kafka.produce(MUTATING, "acme:Order:1", payload).await;
    }
    // Consumption goes on behind them.
    kafka.lifecycle(MUTATING, "acme", 2, "etl", None).await;
    let dlt = kafka.read(&format!("{MUTATING}.dlt"), bad.len());
    assert_eq!(dlt.len(), bad.len());
    for (i, (m, (payload, why))) in dlt.iter().zip(bad).enumerate() {
        assert_eq!(m.payload(), Some(*payload), "payload kept");
        assert_eq!(m.key(), Some(&b"acme:Order:1"[..]), "key kept");
        assert_eq!(header(m, "roster-dlt-reason").as_deref(), Some("malformed"));
        assert_eq!(header(m, "roster-dlt-attempts").as_deref(), Some("1"));
        assert_eq!(
            header(m, "roster-dlt-original-topic").as_deref(),
            Some(MUTATING)
        );
        assert_eq!(
            header(m, "roster-dlt-original-partition").as_deref(),
            Some("0")
        );
        assert_eq!(header(m, "roster-dlt-original-offset"), Some(i.to_string()));
        let error = header(m, "roster-dlt-error").unwrap();
        assert!(error.contains(why), "{error} should name {why}");
    }
    wait_metric(
        &s,
        "roster_kafka_lifecycle_events_total{outcome=\"applied\"}",
        1.0,
    )
    .await;
    let m = s.metrics().await;
    assert_eq!(
        metric(
            &m,
            "roster_kafka_lifecycle_events_total{outcome=\"dead_lettered\"}"
        ),
        4.0
    );
    assert_eq!(
        metric(&m, "roster_kafka_lifecycle_retries_total"),
        0.0,
        "no retry of a malformed event"
    );
}

/// PostgreSQL (where applied eventIds are kept) behind a proxy this test
/// unplugs: the apply fails, is tried again after each back-off, then
/// dead-lettered with its attempts; once the database is back, the next
/// event is applied.
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_apply_is_retried_then_dead_lettered() {
    let kafka = Kafka::start();
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let db = format!("postgres://postgres@127.0.0.1:{}/test", proxy.port);
    let s = start_server(&kafka, &[("ROSTER_DATABASE_URL", &db)]).await;
    let ev = format!("ev-{}", rand_suffix());
    proxy.unplug();
    let started = Instant::now();
    kafka.lifecycle(MUTATED, "acme", 9, "etl", Some(&ev)).await;
    let dlt = kafka.read(&format!("{MUTATED}.dlt"), 1);
    assert_eq!(dlt.len(), 1, "dead-lettered: {:?}", s.log.lock().unwrap());
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "after the three waits (100+200+300 ms): {:?}",
        started.elapsed()
    );
    let m = &dlt[0];
    assert_eq!(header(m, "roster-dlt-reason").as_deref(), Some("failed"));
    assert_eq!(header(m, "roster-dlt-attempts").as_deref(), Some("4"));
    assert!(
        header(m, "roster-dlt-error").unwrap().contains("database"),
        "{:?}",
        header(m, "roster-dlt-error")
    );
    let metrics = s.metrics().await;
    assert_eq!(
        metric(&metrics, "roster_kafka_lifecycle_retries_total"),
        3.0
    );
    assert_eq!(
        metric(
            &metrics,
            "roster_kafka_lifecycle_events_total{outcome=\"dead_lettered\"}"
        ),
        1.0
    );
    proxy.plug();
    kafka
        .lifecycle(MUTATED, "acme", 9, "etl", Some(&format!("{ev}-2")))
        .await;
    wait_metric(
        &s,
        "roster_kafka_lifecycle_events_total{outcome=\"applied\"}",
        1.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_event_id_applies_once_also_after_a_restart() {
    let kafka = Kafka::start();
    let dir = temp_dir("kafka-dedup");
    let db = format!("sqlite://{}", dir.join("roster.db").display());
    let env = [("ROSTER_DATABASE_URL", db.as_str())];
    let s = start_server(&kafka, &env).await;
    let mut a = s.client_in("alice", "acme", Default::default()).await;
    a.sub("Order:5", None).await.unwrap();
    kafka
        .lifecycle(MUTATED, "acme", 5, "etl", Some("e-1"))
        .await;
    kafka
        .lifecycle(MUTATED, "acme", 5, "etl", Some("e-1"))
        .await;
    kafka
        .lifecycle(MUTATED, "acme", 5, "etl", Some("e-2"))
        .await;
    assert_eq!(entity(&mut a, &s).await["version"], 1);
    assert_eq!(entity(&mut a, &s).await["version"], 2, "e-1 applied once");
    wait_metric(
        &s,
        "roster_kafka_lifecycle_events_total{outcome=\"duplicate\"}",
        1.0,
    )
    .await;
    // The same id in another tenant is another event.
    kafka
        .lifecycle(MUTATED, "other", 5, "etl", Some("e-1"))
        .await;
    wait_metric(
        &s,
        "roster_kafka_lifecycle_events_total{outcome=\"applied\"}",
        3.0,
    )
    .await;
    // REST shares the window: e-2 again is answered 200 with the state now.
    let svc = s.token_full("etl", "acme", &["service"], None);
    let (code, body) = s
        .rest("POST", "/api/v1/lifecycle", &svc,
            Some(json!({"type": "MUTATED", "entity": "Order", "id": 5, "userId": "etl", "eventId": "e-2"})))
        .await;
    assert_eq!((code, body["version"].clone()), (200, json!(2)), "{body}");
    let (code, _) = s
        .rest("POST", "/api/v1/lifecycle", &svc,
            Some(json!({"type": "MUTATED", "entity": "Order", "id": 5, "userId": "etl", "eventId": "rest-1"})))
        .await;
    assert_eq!(code, 202);
    assert_eq!(entity(&mut a, &s).await["version"], 3);
    drop(a);
    s.stop();

    // A restart (same database): e-1 and rest-1 are still known. (Whatever
    // the group re-reads of the messages before the restart is a duplicate too.)
    let s = start_server(&kafka, &env).await;
    let mut a = s.client_in("alice", "acme", Default::default()).await;
    a.sub("Order:5", None).await.unwrap();
    kafka
        .lifecycle(MUTATED, "acme", 5, "etl", Some("e-1"))
        .await;
    kafka
        .lifecycle(MUTATED, "acme", 5, "etl", Some("rest-1"))
        .await;
    kafka
        .lifecycle(MUTATING, "acme", 5, "etl", Some("e-3"))
        .await;
    let e = entity(&mut a, &s).await;
    assert_eq!(
        e["stale"], true,
        "the first event after the restart is e-3: {e}"
    );
    let m = s.metrics().await;
    assert!(
        metric(
            &m,
            "roster_kafka_lifecycle_events_total{outcome=\"duplicate\"}"
        ) >= 2.0
    );
    assert_eq!(
        metric(
            &m,
            "roster_kafka_lifecycle_events_total{outcome=\"applied\"}"
        ),
        1.0,
        "nothing applied twice: only e-3 is new"
    );
}

/// Waits for `/readyz` to say `want`; it answers 200 all along.
async fn readyz(url: &str, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = reqwest::get(url).await.unwrap();
        let (code, body) = (r.status().as_u16(), r.text().await.unwrap());
        assert_eq!(code, 200, "presence keeps serving: {body}");
        if body == want || want != "ready" && body.contains(want) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "readyz never said {want:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn brokers_down_are_reported_by_readyz_and_consumption_resumes() {
    let kafka = Kafka::start();
    let s = start_server(&kafka, &[]).await;
    let url = s.url("/readyz");
    assert_eq!(readyz(&url, "ready").await, "ready");
    kafka.mock.broker_down(1).unwrap();
    let body = readyz(&url, "kafka").await;
    assert!(body.contains("kafka.brokers"), "names the key: {body}");
    assert_eq!(metric(&s.metrics().await, "roster_kafka_up"), 0.0);
    // Presence is unaffected.
    let mut a = s.client_in("alice", "acme", Default::default()).await;
    a.sub("Order:1", None).await.unwrap();
    kafka.mock.broker_up(1).unwrap();
    while readyz(&url, "ready").await != "ready" {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    kafka.lifecycle(MUTATING, "acme", 1, "etl", None).await;
    assert_eq!(entity(&mut a, &s).await["stale"], true);
}

/// 10,000 transitions of one tenant reach the events topic complete and in
/// order (one partition: `seq` 1, 2, 3, … without a gap); user online/offline
/// also reach the status topic in seed 004's shape.
#[tokio::test(flavor = "multi_thread")]
async fn the_event_stream_reaches_kafka_complete_and_in_order() {
    let kafka = Kafka::start();
    kafka
        .mock
        .create_topic("roster.presence.events", 1, 1)
        .unwrap();
    kafka
        .mock
        .create_topic("user.presence.status", 1, 1)
        .unwrap();
    let s = start_server(
        &kafka,
        &[
            ("ROSTER_LIMITS_MESSAGES_PER_SECOND", "100000"),
            ("ROSTER_LIMITS_MESSAGES_BURST", "100000"),
        ],
    )
    .await;
    let mut a = s.client_in("alice", "acme", Default::default()).await;
    // user_online, then 2,500 × (member_added, room_occupied, member_removed, room_vacated)
    const CYCLES: usize = 2_500;
    for i in 0..CYCLES {
        let room = format!("chat-{}", i % 7);
        a.sub(&room, None).await.unwrap();
        a.request(
            json!({"type": "UNSUB", "room": room}),
            "UNSUB_ACK",
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    }
    drop(a); // user_offline after the grace
    let want = 1 + 4 * CYCLES + 1;
    let msgs = kafka.read("roster.presence.events", want);
    assert_eq!(msgs.len(), want, "every event");
    let events: Vec<Value> = msgs
        .iter()
        .map(|m| serde_json::from_slice(m.payload().unwrap()).unwrap())
        .collect();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"], (i + 1) as u64, "in order, no gap: {e}");
        assert_eq!(e["tenantId"], "acme");
    }
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for e in &events {
        *kinds
            .entry(e["type"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(kinds["member_added"], CYCLES);
    assert_eq!(kinds["room_vacated"], CYCLES);
    assert_eq!((kinds["user_online"], kinds["user_offline"]), (1, 1));
    let first = &msgs[1];
    assert_eq!(
        first.key(),
        Some(&b"acme:chat-0"[..]),
        "keyed by tenant and room"
    );
    let status = kafka.read("user.presence.status", 2);
    assert_eq!(status.len(), 2);
    let on: Value = serde_json::from_slice(status[0].payload().unwrap()).unwrap();
    let off: Value = serde_json::from_slice(status[1].payload().unwrap()).unwrap();
    assert_eq!(status[0].key(), Some(&b"acme:alice"[..]));
    assert_eq!(
        (
            on["userId"].clone(),
            on["online"].clone(),
            on["status"].clone(),
            on["tenantId"].clone()
        ),
        (json!("alice"), json!(true), json!("online"), json!("acme"))
    );
    assert_eq!(
        (off["online"].clone(), off["status"].clone()),
        (json!(false), json!("offline"))
    );
    assert!(on["timestamp"].as_i64().unwrap() > 1_700_000_000_000);
    assert_eq!(on["eventId"], events[0]["id"]);
    wait_metric(
        &s,
        "roster_kafka_events_produced_total{stream=\"events\",outcome=\"delivered\"}",
        want as f64,
    )
    .await;
}

/// Brokers nobody answers at: the server starts and serves presence, and
/// `/readyz` says which key to check.
#[tokio::test(flavor = "multi_thread")]
async fn unreachable_brokers_are_named_by_readyz() {
    let s = Server::start_with(&[("ROSTER_KAFKA_BROKERS", "127.0.0.1:1")]).await;
    let body = readyz(&s.url("/readyz"), "kafka.brokers = 127.0.0.1:1").await;
    assert!(
        body.starts_with("ready; kafka: brokers unreachable"),
        "{body}"
    );
    let mut a = s.client("alice").await;
    a.sub("Order:1", None).await.unwrap();
}

/// Three nodes on one Redis produce one tenant sequence to the events topic;
/// two are killed mid-stream and the third produces the rest from the log's
/// cursor: read back and repeats removed (by `id`), every `seq` from 1 on is
/// there once, and every join of every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_produce_one_sequence_and_a_killed_node_loses_nothing() {
    let kafka = Kafka::start();
    kafka
        .mock
        .create_topic("roster.presence.events", 1, 1)
        .unwrap();
    let prefix = unique_prefix();
    let redis =
        std::env::var("ROSTER_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let env = [
        ("ROSTER_ENGINE_URL", redis.as_str()),
        ("ROSTER_ENGINE_PREFIX", prefix.as_str()),
        ("ROSTER_TIMING_SWEEP_INTERVAL", "300ms"),
        ("ROSTER_KAFKA_STATUS_TOPIC", ""),
        ("ROSTER_LIMITS_MESSAGES_PER_SECOND", "100000"),
        ("ROSTER_LIMITS_MESSAGES_BURST", "100000"),
    ];
    let mut ns = vec![];
    for _ in 0..3 {
        ns.push(start_server(&kafka, &env).await);
    }
    let mut joins = 0usize;
    let mut clients = vec![];
    for (i, n) in ns.iter().enumerate() {
        let mut c = n
            .client_in(&format!("u{i}"), "acme", Default::default())
            .await;
        for k in 0..200 {
            let room = format!("R-{}", k % 9);
            c.sub(&room, None).await.unwrap();
            joins += 1;
            c.request(
                json!({"type": "UNSUB", "room": room}),
                "UNSUB_ACK",
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        }
        clients.push(c);
    }
    let survivor = ns.pop().unwrap();
    for n in &ns {
        let _ = std::process::Command::new("kill")
            .args(["-9", &n.pid().to_string()])
            .status();
    }
    let mut c = survivor.client_in("late", "acme", Default::default()).await;
    for k in 0..20 {
        c.sub(&format!("L-{k}"), None).await.unwrap();
        joins += 1;
    }
    let end = Instant::now() + Duration::from_secs(40);
    loop {
        let msgs = kafka.read("roster.presence.events", usize::MAX);
        let events: Vec<Value> = msgs
            .iter()
            .map(|m| serde_json::from_slice(m.payload().unwrap()).unwrap())
            .collect();
        let (complete, n, added) = one_sequence(&events);
        if complete && added == joins {
            eprintln!("{n} events, {} repeats after the kill", msgs.len() - n);
            break;
        }
        assert!(
            Instant::now() < end,
            "{added} of {joins} joins, {n} events, without a gap: {complete}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(clients);
    drop(c);
    survivor.stop();
}

/// Two nodes in one consumer group split the lifecycle partitions: every
/// event is applied once, by one of them, and both take a share. (A rebalance
/// commits what was applied first; an event being applied at that instant can
/// reach the partition's next owner too, and its `eventId` makes it a
/// duplicate there.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_in_one_group_split_the_partitions() {
    let mock = MockCluster::new(1).expect("mock cluster");
    mock.create_topic(MUTATED, 4, 1).unwrap();
    mock.create_topic(MUTATING, 4, 1).unwrap();
    let kafka = Kafka {
        producer: ClientConfig::new()
            .set("bootstrap.servers", mock.bootstrap_servers())
            .create()
            .unwrap(),
        mock,
    };
    let prefix = unique_prefix();
    let redis =
        std::env::var("ROSTER_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    // One database: the eventId window is the cluster's.
    let (db, schema) = pg_schema().await;
    let env = [
        ("ROSTER_ENGINE_URL", redis.as_str()),
        ("ROSTER_ENGINE_PREFIX", prefix.as_str()),
        ("ROSTER_DATABASE_URL", db.as_str()),
    ];
    let a = start_server(&kafka, &env).await;
    let b = start_server(&kafka, &env).await;
    let applied = |text: &str| {
        metric(
            text,
            "roster_kafka_lifecycle_events_total{outcome=\"applied\"}",
        )
    };
    // Until both are in the group, one may hold every partition: produce in
    // rounds until each node has applied some.
    let mut sent = 0u64;
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        for id in 0..40 {
            let n = sent * 1000 + id;
            kafka
                .lifecycle(MUTATED, "acme", n, "etl", Some(&format!("split-{n}")))
                .await;
        }
        sent += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (x, y) = (applied(&a.metrics().await), applied(&b.metrics().await));
        if x > 0.0 && y > 0.0 {
            break;
        }
        assert!(
            Instant::now() < end,
            "one node never got a partition: {x} and {y}"
        );
    }
    let want = (sent * 40) as f64;
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let (x, y) = (applied(&a.metrics().await), applied(&b.metrics().await));
        if x + y == want {
            break;
        }
        if x + y > want {
            let (ma, mb) = (a.metrics().await, b.metrics().await);
            let k = |t: &str| {
                t.lines()
                    .filter(|l| l.starts_with("roster_kafka"))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            panic!(
                "applied twice: {x} + {y} of {want}\nA:\n{}\nB:\n{}",
                k(&ma),
                k(&mb)
            );
        }
        assert!(Instant::now() < end, "{x} + {y} of {want}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop_pg_schema(&schema).await;
}

/// MUTATING and MUTATED come on two topics: a record's MUTATED read before
/// its MUTATING (by their `timestamp`) supersedes it, so the record is not
/// left stale; a later MUTATING applies.
#[tokio::test(flavor = "multi_thread")]
async fn a_mutating_older_than_the_mutated_already_applied_is_superseded() {
    let kafka = Kafka::start();
    let s = start_server(&kafka, &[]).await;
    let mut a = s.client_in("alice", "acme", Default::default()).await;
    a.sub("Order:31", None).await.unwrap();
    let send = |topic: &'static str, at: Value| {
        let body = json!({"tenantId": "acme", "entity": "Order", "id": 31, "userId": "etl", "timestamp": at});
        let kafka = &kafka;
        async move {
            kafka
                .produce(topic, "acme:Order:31", body.to_string().as_bytes())
                .await
        }
    };
    send(MUTATED, json!("2026-12-06T10:00:00.200Z")).await;
    let e = entity(&mut a, &s).await;
    assert_eq!(
        (e["stale"].clone(), e["version"].clone()),
        (json!(false), json!(1))
    );
    send(MUTATING, json!(1_796_551_200_100u64)).await; // 100 ms before that MUTATED
    wait_metric(
        &s,
        "roster_kafka_lifecycle_events_total{outcome=\"superseded\"}",
        1.0,
    )
    .await;
    expect_none(&mut a, "ENTITY", Duration::from_millis(300)).await;
    let (_, p) = s
        .rest(
            "GET",
            "/api/v1/rooms/Order:31/presence",
            &s.admin_token("acme"),
            None,
        )
        .await;
    assert_eq!(p["stale"], false, "not left stale: {p}");
    send(MUTATING, json!(1_796_551_200_300u64)).await;
    assert_eq!(entity(&mut a, &s).await["stale"], true);
}
