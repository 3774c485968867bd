//! Kafka end to end against a real Kafka-protocol broker in its own process:
//! tansu 0.6.0 (`scripts/ensure-tansu.sh` installs it; `scripts/test.sh` passes
//! its path in `TANSU_BIN`), on a free 127.0.0.1 port, in-memory storage. The
//! fast cases run against librdkafka's mock cluster (`tests/kafka.rs`); these
//! check that nothing there depends on the mock.

mod common;
use common::*;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{json, Value};

const MUTATING: &str = "core.entities.lifecycle.mutating";
const MUTATED: &str = "core.entities.lifecycle.mutated";
const EVENTS: &str = "roster.presence.events";

/// A tansu broker, stopped when dropped.
struct Tansu {
    child: Child,
    brokers: String,
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tansu_bin() -> String {
    if let Ok(b) = std::env::var("TANSU_BIN") {
        return b;
    }
    let home = std::env::var("CARGO_HOME")
        .unwrap_or_else(|_| format!("{}/.cargo", std::env::var("HOME").unwrap_or_default()));
    let b = format!("{home}/bin/tansu");
    assert!(
        std::path::Path::new(&b).exists(),
        "no tansu broker: run scripts/ensure-tansu.sh (scripts/test.sh does) or set TANSU_BIN"
    );
    b
}

async fn start_tansu() -> Tansu {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(tansu_bin())
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            "memory://tansu/",
        ])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tansu");
    let brokers = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&brokers).is_err() {
        assert!(
            Instant::now() < deadline,
            "tansu did not listen on {brokers}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let t = Tansu { child, brokers };
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &t.brokers)
        .create()
        .unwrap();
    let names = [
        MUTATING.to_string(),
        MUTATED.to_string(),
        format!("{MUTATING}.dlt"),
        format!("{MUTATED}.dlt"),
        EVENTS.to_string(),
    ];
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|n| NewTopic::new(n, 1, TopicReplication::Fixed(1)))
        .collect();
    admin
        .create_topics(&topics, &AdminOptions::new())
        .await
        .expect("create topics");
    t
}

fn read(brokers: &str, topic: &str, n: usize) -> Vec<OwnedMessage> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("reader-{}", unique_prefix()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = vec![];
    while out.len() < n && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            out.push(m.detach());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_in_dead_letters_and_events_out_on_a_real_broker() {
    let t = start_tansu().await;
    let s = Server::start_with(&[
        ("ROSTER_KAFKA_BROKERS", t.brokers.as_str()),
        ("ROSTER_KAFKA_SESSION_TIMEOUT", "6s"),
        ("ROSTER_KAFKA_STATUS_TOPIC", ""),
    ])
    .await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &t.brokers)
        .create()
        .unwrap();
    let send = |topic: &'static str, payload: String| {
        let producer = producer.clone();
        async move {
            producer
                .send(
                    FutureRecord::to(topic)
                        .key("acme:Order:7")
                        .payload(&payload),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(e, _)| e)
                .expect("produce");
        }
    };
    let mut a = s.client_in("alice", "acme", Default::default()).await;
    a.sub("Order:7", None).await.unwrap();
    send(
        MUTATING,
        json!({"tenantId": "acme", "entity": "Order", "id": 7, "userId": "etl", "eventId": "t-1"})
            .to_string(),
    )
    .await;
    let e = a
        .recv_type("ENTITY", Duration::from_secs(30))
        .await
        .expect("ENTITY from the real broker");
    assert_eq!(
        (e["stale"].clone(), e["busyBy"].clone()),
        (json!(true), json!("etl"))
    );
    send(MUTATED, "{\"tenantId\": \"acme\"".into()).await;
    let dlt = read(&t.brokers, &format!("{MUTATED}.dlt"), 1);
    assert_eq!(dlt.len(), 1, "dead-lettered");
    let reason = dlt[0]
        .headers()
        .and_then(|h| {
            h.iter()
                .find(|h| h.key == "roster-dlt-reason")
                .and_then(|h| h.value)
        })
        .map(|v| String::from_utf8_lossy(v).into_owned());
    assert_eq!(reason.as_deref(), Some("malformed"));
    // The stream out: alice's joining, then the record going stale.
    let out = read(&t.brokers, EVENTS, 3);
    let kinds: Vec<Value> = out
        .iter()
        .map(|m| serde_json::from_slice::<Value>(m.payload().unwrap()).unwrap()["type"].clone())
        .collect();
    assert_eq!(
        kinds,
        [
            json!("user_online"),
            json!("room_occupied"),
            json!("member_added")
        ],
        "in order"
    );
    let stale = read(&t.brokers, EVENTS, 4);
    let last: Value = serde_json::from_slice(stale.last().unwrap().payload().unwrap()).unwrap();
    assert_eq!(
        (last["type"].clone(), last["seq"].clone()),
        (json!("entity_stale"), json!(4))
    );
}
