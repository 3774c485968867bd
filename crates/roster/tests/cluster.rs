//! Several `roster` processes on one Redis (SPEC §6): one roster, one `seq`, one
//! lock winner, and a node killed without a word leaves no ghost. Runs against
//! the Redis at `ROSTER_TEST_REDIS` (default 127.0.0.1:6379; `scripts/test.sh`
//! starts it if it is down), each test under its own key prefix.

mod common;
use common::*;
use roster_client::{Client, ConnectOptions, Hello, Incoming};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

fn redis_url() -> String {
    std::env::var("ROSTER_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// `n` nodes sharing one Redis prefix, with a short liveness sweep.
async fn nodes(n: usize) -> Vec<Server> {
    let prefix = unique_prefix();
    let url = redis_url();
    let env = [
        ("ROSTER_ENGINE_URL", url.as_str()),
        ("ROSTER_ENGINE_PREFIX", prefix.as_str()),
        ("ROSTER_TIMING_SWEEP_INTERVAL", "300ms"),
    ];
    let mut out = vec![];
    for _ in 0..n {
        out.push(Server::start_with(&env).await);
    }
    out
}

fn kill9(s: &Server) {
    let ok = std::process::Command::new("kill")
        .args(["-9", &s.pid().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok);
}

fn users_of(presence: &Value) -> BTreeSet<String> {
    presence["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["userId"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_show_one_roster_and_one_seq() {
    let ns = nodes(3).await;
    let mut clients: Vec<Client> = vec![];
    for (i, n) in ns.iter().enumerate() {
        for j in 0..2 {
            let mut c = n.client(&format!("u{i}{j}")).await;
            c.sub("Order:7", Some(json!({"node": i}))).await.unwrap();
            clients.push(c);
        }
    }
    // Everyone converges on the same six members, wherever they connected.
    let all: BTreeSet<String> = (0..3)
        .flat_map(|i| (0..2).map(move |j| format!("u{i}{j}")))
        .collect();
    for n in &ns {
        let (code, p) = n
            .rest("GET", "/api/v1/rooms/Order:7/presence", &n.token("x"), None)
            .await;
        assert_eq!(code, 200, "{p}");
        assert_eq!(
            users_of(&p),
            all,
            "every node answers for the whole cluster"
        );
    }
    let mut a = ns[0].client("late").await;
    let snap = a.sub("Order:7", None).await.unwrap();
    assert_eq!(users_of(&snap).len(), 7);
    // A STATE update on node 0 reaches members on nodes 1 and 2 as the same diff.
    clients[0]
        .send(json!({"type":"STATE","room":"Order:7","state":{"field":"total"}}))
        .await
        .unwrap();
    let mut seqs = BTreeSet::new();
    for c in clients.iter_mut().skip(1) {
        let u = next_change(c, "Order:7", "updates", "u00").await;
        assert_eq!(u["session"]["state"]["field"], "total");
        seqs.insert(u["seq"].as_u64().unwrap());
    }
    let u = next_change(&mut a, "Order:7", "updates", "u00").await;
    seqs.insert(u["seq"].as_u64().unwrap());
    assert_eq!(
        seqs.len(),
        1,
        "one seq for one diff on every node: {seqs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_sessions_on_three_nodes_race_for_one_lock() {
    let ns = nodes(3).await;
    let mut clients = vec![];
    for i in 0..50 {
        let mut c = ns[i % 3].client(&format!("u{i}")).await;
        c.sub("Doc:1", None).await.unwrap();
        clients.push(c);
    }
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let ack = c
                    .request(
                        json!({"type":"LOCK","room":"Doc:1","field":"title"}),
                        "LOCK_ACK",
                        T,
                    )
                    .await
                    .unwrap();
                (ack, c)
            })
        })
        .collect();
    let mut winners = vec![];
    let mut holders = BTreeSet::new();
    let mut keep = vec![];
    for t in tasks {
        let (ack, c) = t.await.unwrap();
        if ack["success"] == true {
            winners.push(ack["owner"]["sessionId"].as_str().unwrap().to_string());
        } else {
            holders.insert(ack["owner"]["sessionId"].as_str().unwrap().to_string());
        }
        keep.push(c);
    }
    assert_eq!(winners.len(), 1, "exactly one winner across nodes");
    assert_eq!(holders.len(), 1);
    assert_eq!(holders.into_iter().next().unwrap(), winners[0]);
}

/// Drains PRESENCE_DIFFs of `room` until `done` says enough or `within` passes;
/// returns every leave seen (user, session, reason).
async fn collect_leaves(
    c: &mut Client,
    room: &str,
    within: Duration,
    mut done: impl FnMut(&[(String, String, String)]) -> bool,
) -> Vec<(String, String, String)> {
    let end = tokio::time::Instant::now() + within;
    let mut leaves = vec![];
    while !done(&leaves) {
        let left = end.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            break;
        }
        match c.recv(left).await {
            Ok(Incoming::Message(m)) if m["type"] == "PRESENCE_DIFF" && m["room"] == room => {
                for l in m["leaves"].as_array().unwrap() {
                    leaves.push((
                        l["userId"].as_str().unwrap().to_string(),
                        l["sessionId"].as_str().unwrap().to_string(),
                        l["reason"].as_str().unwrap().to_string(),
                    ));
                }
            }
            Ok(Incoming::Message(_)) => {}
            Ok(Incoming::Closed { code, reason }) => panic!("closed {code:?} {reason}"),
            Err(_) => break,
        }
    }
    leaves
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_times_out_each_session_exactly_once() {
    let ns = nodes(3).await;
    // GENERIC rooms hold 100 sessions; this one holds the 100 and the survivors.
    let (code, body) = ns[1]
        .rest(
            "POST",
            "/api/v1/rooms",
            &ns[1].admin_token("acme"),
            Some(json!({"key": "Big:1", "type": "BROADCAST"})),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    // 100 sessions on node 0, each holding a lock in the shared room.
    let mut doomed = vec![];
    let mut doomed_ids = BTreeSet::new();
    for i in 0..100 {
        let mut c = ns[0].client(&format!("k{i}")).await;
        c.sub("Big:1", None).await.unwrap();
        let ack = c
            .request(
                json!({"type":"LOCK","room":"Big:1","field":format!("f{i}")}),
                "LOCK_ACK",
                T,
            )
            .await
            .unwrap();
        assert_eq!(ack["success"], true, "{ack}");
        doomed_ids.insert(c.session_id().unwrap().to_string());
        doomed.push(c);
    }
    // Survivors on nodes 1 and 2: members of the room, and a watcher.
    let mut m1 = ns[1].client("s1").await;
    m1.sub("Big:1", None).await.unwrap();
    let mut m2 = ns[2].client("s2").await;
    m2.sub("Big:1", None).await.unwrap();
    let mut w = ns[2].client("watcher").await;
    let snap = w
        .request(
            json!({"type":"WATCH","users":["k0","k1"]}),
            "STATUS_SNAPSHOT",
            T,
        )
        .await
        .unwrap();
    assert_eq!(snap["users"]["k0"]["status"], "online");
    kill9(&ns[0]);
    let killed_at = tokio::time::Instant::now();
    // session_timeout 2 s + sweep 300 ms (+ slack for a loaded 2-core box).
    let within = Duration::from_secs(8);
    let all = |l: &[(String, String, String)]| l.len() >= 100;
    let l1 = collect_leaves(&mut m1, "Big:1", within, all).await;
    let detected = killed_at.elapsed();
    let l2 = collect_leaves(&mut m2, "Big:1", within, all).await;
    for leaves in [&l1, &l2] {
        let mut per_session: BTreeMap<&str, usize> = BTreeMap::new();
        for (_, sid, reason) in leaves.iter() {
            assert_eq!(reason, "timeout");
            *per_session.entry(sid).or_default() += 1;
        }
        assert!(per_session.values().all(|n| *n == 1), "a duplicate leave");
        let seen: BTreeSet<String> = per_session.keys().map(|s| s.to_string()).collect();
        assert_eq!(
            seen, doomed_ids,
            "one leave per killed session, none missing"
        );
    }
    assert!(
        detected < Duration::from_secs(6),
        "all 100 gone after {detected:?}"
    );
    // No further leave comes (nobody announces them twice).
    let extra = collect_leaves(&mut m1, "Big:1", Duration::from_millis(1500), |_| false).await;
    assert!(extra.is_empty(), "{extra:?}");
    // Their locks are free: a survivor takes one.
    let ack = m1
        .request(
            json!({"type":"LOCK","room":"Big:1","field":"f7"}),
            "LOCK_ACK",
            T,
        )
        .await
        .unwrap();
    assert_eq!(ack["success"], true, "{ack}");
    // Watchers hear that they went offline.
    let mut offline = BTreeSet::new();
    let end = tokio::time::Instant::now() + T;
    while offline.len() < 2 && tokio::time::Instant::now() < end {
        let st = next(&mut w, "STATUS").await;
        if st["status"] == "offline" {
            offline.insert(st["userId"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(offline.len(), 2, "{offline:?}");
    // The room as every surviving node sees it: the two survivors.
    let (_, p) = ns[1]
        .rest(
            "GET",
            "/api/v1/rooms/Big:1/presence",
            &ns[1].token("x"),
            None,
        )
        .await;
    assert_eq!(
        users_of(&p),
        ["s1", "s2"].iter().map(|s| s.to_string()).collect()
    );
    drop(doomed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_on_two_nodes_stays_online_when_one_dies() {
    let ns = nodes(3).await;
    let mut phone = ns[0].client("alice").await;
    phone.sub("Team", None).await.unwrap();
    let mut laptop = ns[1].client("alice").await;
    laptop.sub("Team", None).await.unwrap();
    let mut bob = ns[2].client("bob").await;
    bob.sub("Team", None).await.unwrap();
    let snap = bob
        .request(
            json!({"type":"WATCH","users":["alice"]}),
            "STATUS_SNAPSHOT",
            T,
        )
        .await
        .unwrap();
    assert_eq!(snap["users"]["alice"]["status"], "online");
    let phone_id = phone.session_id().unwrap().to_string();
    kill9(&ns[0]);
    let leaves = collect_leaves(&mut bob, "Team", Duration::from_secs(8), |l| !l.is_empty()).await;
    assert_eq!(leaves.len(), 1, "{leaves:?}");
    assert_eq!(leaves[0].1, phone_id);
    assert_eq!(leaves[0].2, "timeout");
    let (code, st) = ns[2]
        .rest(
            "GET",
            "/api/v1/users/alice/presence",
            &ns[2].token("x"),
            None,
        )
        .await;
    assert_eq!(code, 200, "{st}");
    assert_eq!(st["status"], "online", "the laptop is still there: {st}");
    // A STATUS may have come for the device change, but never `offline`.
    let end = tokio::time::Instant::now() + Duration::from_millis(800);
    while let Ok(Incoming::Message(m)) = bob
        .recv(end.saturating_duration_since(tokio::time::Instant::now()))
        .await
    {
        if m["type"] == "STATUS" {
            assert_ne!(m["status"], "offline", "{m}");
        }
    }
    drop(laptop);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_deleted_on_one_node_kicks_its_members_on_another() {
    let ns = nodes(2).await;
    let admin = ns[0].admin_token("acme");
    let (code, body) = ns[0]
        .rest(
            "POST",
            "/api/v1/rooms",
            &admin,
            Some(json!({"key":"Gone:1"})),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let mut c = ns[1].client("carol").await;
    c.sub("Gone:1", None).await.unwrap();
    let (code, _) = ns[0]
        .rest("DELETE", "/api/v1/rooms/Gone:1", &admin, None)
        .await;
    assert_eq!(code, 204);
    assert_eq!(c.expect_close(T).await.unwrap(), Some(4011));
}

/// A private `redis-server` on a free port, so a test can stop it without
/// disturbing the others.
struct PrivateRedis {
    child: std::process::Child,
    port: u16,
}

impl PrivateRedis {
    fn free_port() -> u16 {
        // Ports 32768–60999 only; ask the kernel for one that is free now.
        loop {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let p = l.local_addr().unwrap().port();
            if (32768..=60999).contains(&p) {
                return p;
            }
        }
    }
    fn start_on(port: u16) -> Self {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port }
    }
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
    fn signal(&self, sig: &str) {
        std::process::Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
    }
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.signal("-CONT");
        self.kill();
    }
}

async fn ready(s: &Server) -> u16 {
    reqwest::get(s.url("/readyz"))
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

async fn wait_ready(ns: &[Server], want: u16) {
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    for n in ns {
        while ready(n).await != want {
            assert!(
                tokio::time::Instant::now() < end,
                "readyz never became {want}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn sessions_in(s: &Server, room: &str) -> BTreeSet<String> {
    let (_, p) = s
        .rest(
            "GET",
            &format!("/api/v1/rooms/{room}/presence"),
            &s.token("x"),
            None,
        )
        .await;
    session_ids(&p).into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_lost_and_back_the_nodes_recover_without_ghosts() {
    let port = PrivateRedis::free_port();
    let mut redis = PrivateRedis::start_on(port);
    let prefix = unique_prefix();
    let url = redis.url();
    let env = [
        ("ROSTER_ENGINE_URL", url.as_str()),
        ("ROSTER_ENGINE_PREFIX", prefix.as_str()),
        ("ROSTER_TIMING_SWEEP_INTERVAL", "300ms"),
    ];
    let ns = vec![
        Server::start_with(&env).await,
        Server::start_with(&env).await,
    ];
    let mut a = ns[0].client("alice").await;
    a.sub("Doc:9", None).await.unwrap();
    let mut b = ns[1].client("bob").await;
    b.sub("Doc:9", None).await.unwrap();
    let mut c = ns[1].client("carol").await;
    c.sub("Doc:9", None).await.unwrap();
    a.sub("Side:1", None).await.unwrap();
    b.sub("Side:1", None).await.unwrap();
    let (sa, sb) = (
        a.session_id().unwrap().to_string(),
        b.session_id().unwrap().to_string(),
    );

    // 1. Redis hangs (SIGSTOP: it keeps its data). Readiness drops; presence
    // calls get a clear error; carol leaves meanwhile; nothing crashes.
    redis.signal("-STOP");
    wait_ready(&ns, 503).await;
    let err = expect_error(
        &mut a,
        json!({"type":"STATE","room":"Doc:9","state":{"x":1}}),
    )
    .await;
    assert_eq!(err["code"], "internal", "{err}");
    assert!(err["message"].as_str().unwrap().contains("Redis"), "{err}");
    c.bye().await.unwrap();
    a.send(json!({"type":"UNSUB","room":"Side:1"}))
        .await
        .unwrap();
    let (code, _) = ns[0].rest("GET", "/healthz", "", None).await;
    assert_eq!(code, 200);
    redis.signal("-CONT");
    wait_ready(&ns, 200).await;
    // Carol's leave could not be written; the liveness sweep finds her session
    // (no node refreshes it any more) and times it out: no ghost.
    let want: BTreeSet<String> = [sa.clone(), sb.clone()].into_iter().collect();
    let end = tokio::time::Instant::now() + Duration::from_secs(8);
    while sessions_in(&ns[0], "Doc:9").await != want {
        assert!(tokio::time::Instant::now() < end, "carol stays a ghost");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Alice's UNSUB could not be written either: her node leaves it on recovery.
    let only_bob: BTreeSet<String> = [sb.clone()].into_iter().collect();
    while sessions_in(&ns[1], "Side:1").await != only_bob {
        assert!(
            tokio::time::Instant::now() < end,
            "alice stays a ghost in Side:1"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // 2. Redis dies and comes back empty: the nodes write their sessions back.
    redis.kill();
    wait_ready(&ns, 503).await;
    let _redis = PrivateRedis::start_on(port);
    wait_ready(&ns, 200).await;
    for n in &ns {
        let end = tokio::time::Instant::now() + Duration::from_secs(8);
        while sessions_in(n, "Doc:9").await != want {
            assert!(tokio::time::Instant::now() < end, "rosters never converged");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // And presence works across the nodes again. (Written back inside the
    // diff window, alice's state can come as the repeat of her join: a join of a
    // member the snapshot already showed is an update, docs/PROTOCOL.md §9.)
    a.send(json!({"type":"STATE","room":"Doc:9","state":{"x":2}}))
        .await
        .unwrap();
    let end = tokio::time::Instant::now() + T;
    loop {
        let left = end.saturating_duration_since(tokio::time::Instant::now());
        match b.recv(left).await {
            Ok(Incoming::Message(m)) if m["type"] == "PRESENCE_DIFF" => {
                let seen = ["joins", "updates"].iter().any(|k| {
                    m[*k]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|u| u["userId"] == "alice" && u["session"]["state"]["x"] == 2)
                });
                if seen {
                    break;
                }
            }
            Ok(Incoming::Message(_)) => {}
            other => panic!("no update after recovery: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_id_resumes_on_another_node_without_leave_or_join() {
    let ns = nodes(2).await;
    let mut alice = ns[1].client("alice").await;
    alice.sub("Order:5", None).await.unwrap();
    let hello = || Hello {
        client_id: Some("tab-1".into()),
        ..Default::default()
    };
    let mut bob = ns[0].client_in("bob", "acme", hello()).await;
    let first = bob.session_id().unwrap().to_string();
    bob.sub("Order:5", None).await.unwrap();
    bob.request(
        json!({"type":"LOCK","room":"Order:5","field":"f"}),
        "LOCK_ACK",
        T,
    )
    .await
    .unwrap();
    next_change(&mut alice, "Order:5", "joins", "bob").await;
    drop(bob); // the load balancer sends the reload to the other node
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = Client::connect(ConnectOptions::new(ns[1].ws_url()))
        .await
        .unwrap();
    let w = again
        .hello(Hello {
            token: Some(ns[1].token("bob")),
            ..hello()
        })
        .await
        .unwrap();
    assert_eq!(w["resumed"], true, "{w}");
    assert_eq!(w["sessionId"], first.as_str());
    assert_eq!(w["rooms"], json!(["Order:5"]));
    // Past the grace (1 s) and a sweep: nobody sees a leave or a join.
    expect_none(&mut alice, "PRESENCE_DIFF", Duration::from_millis(2500)).await;
    let (_, locks) = ns[0]
        .rest(
            "GET",
            "/api/v1/rooms/Order:5/locks",
            &ns[0].token("x"),
            None,
        )
        .await;
    assert_eq!(locks["items"][0]["sessionId"], first.as_str(), "{locks}");
    // The session lives on node 1 now: its changes and its diffs flow there.
    again
        .send(json!({"type":"STATE","room":"Order:5","state":{"back":true}}))
        .await
        .unwrap();
    let u = next_change(&mut alice, "Order:5", "updates", "bob").await;
    assert_eq!(u["session"]["sessionId"], first.as_str());
    alice
        .send(json!({"type":"STATE","room":"Order:5","state":{"hi":1}}))
        .await
        .unwrap();
    let u = next_change(&mut again, "Order:5", "updates", "alice").await;
    assert_eq!(u["session"]["state"]["hi"], 1);
    // And it ends once, from its new node.
    again.bye().await.unwrap();
    let l = next_change(&mut alice, "Order:5", "leaves", "bob").await;
    assert_eq!(l["reason"], "left");
    expect_none(&mut alice, "PRESENCE_DIFF", Duration::from_millis(2500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_kicks_a_session_of_another_node_over_rest() {
    let ns = nodes(2).await;
    let mut alice = ns[0].client("alice").await;
    alice.sub("Room:1", None).await.unwrap();
    let mut bob = ns[1].client("bob").await;
    bob.sub("Room:1", None).await.unwrap();
    let sid = bob.session_id().unwrap().to_string();
    // Another tenant's admin does not see it.
    let (code, _) = ns[0]
        .rest(
            "DELETE",
            &format!("/api/v1/sessions/{sid}"),
            &ns[0].admin_token("other"),
            None,
        )
        .await;
    assert_eq!(code, 404);
    let (code, body) = ns[0]
        .rest(
            "DELETE",
            &format!("/api/v1/sessions/{sid}"),
            &ns[0].admin_token("acme"),
            None,
        )
        .await;
    assert_eq!(code, 204, "{body}");
    assert_eq!(bob.expect_close(T).await.unwrap(), Some(4011));
    let l = next_change(&mut alice, "Room:1", "leaves", "bob").await;
    assert_eq!(l["reason"], "kicked");
    // Gone everywhere: a second kick finds nothing.
    let (code, _) = ns[0]
        .rest(
            "DELETE",
            &format!("/api/v1/sessions/{sid}"),
            &ns[0].admin_token("acme"),
            None,
        )
        .await;
    assert_eq!(code, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_health_gauge_follows_a_hung_redis() {
    let redis = PrivateRedis::start_on(PrivateRedis::free_port());
    let prefix = unique_prefix();
    let url = redis.url();
    let s = Server::start_with(&[
        ("ROSTER_ENGINE_URL", url.as_str()),
        ("ROSTER_ENGINE_PREFIX", prefix.as_str()),
    ])
    .await;
    assert_eq!(metric(&s.metrics().await, "roster_redis_up"), 1.0);
    redis.signal("-STOP");
    wait_ready(std::slice::from_ref(&s), 503).await;
    let m = s.metrics().await;
    assert_eq!(metric(&m, "roster_redis_up"), 0.0, "{m}");
    redis.signal("-CONT");
    wait_ready(std::slice::from_ref(&s), 200).await;
    assert_eq!(metric(&s.metrics().await, "roster_redis_up"), 1.0);
}
