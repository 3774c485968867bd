//! The server process itself: graceful shutdown, slow consumers, the command line.

mod common;
use common::*;
use serde_json::json;
use std::process::Command;
use std::time::Duration;

#[tokio::test]
async fn sigterm_closes_1001_without_announcing_any_leave_and_exits() {
    // SPEC §3, close code 1001: a deploy is not a leave. The sessions enter their
    // grace like dropped connections; nobody is told that anyone left.
    let mut s = Server::start_with(&[("ROSTER_TIMING_LEAVE_GRACE", "30s")]).await;
    let mut a = s.client("alice").await;
    a.sub("R", None).await.unwrap();
    let mut b = s.client("bob").await;
    b.sub("R", None).await.unwrap();
    let mut c = s.client("carol").await;
    c.sub("R", None).await.unwrap();
    next_change(&mut a, "R", "joins", "carol").await;
    next_change(&mut b, "R", "joins", "carol").await;
    s.sigterm();
    let mut codes = vec![];
    for (who, cl) in [("alice", &mut a), ("bob", &mut b), ("carol", &mut c)] {
        loop {
            match cl.recv(T).await.unwrap() {
                roster_client::Incoming::Message(m) if m["type"] == "PRESENCE_DIFF" => {
                    assert_eq!(m["leaves"], json!([]), "{who} was told of a leave: {m}");
                }
                roster_client::Incoming::Message(m) if m["type"] == "STATUS" => {
                    panic!("{who} was told of a status change: {m}");
                }
                roster_client::Incoming::Message(_) => {}
                roster_client::Incoming::Closed { code, .. } => {
                    codes.push(code);
                    break;
                }
            }
        }
    }
    assert_eq!(codes, vec![Some(1001); 3]);
    let status = s.wait_exit(Duration::from_secs(10)).expect("process exits");
    assert!(status.success(), "{status:?}");
    // On a shared engine the sessions live on in the cluster for their grace
    // (tests/cluster.rs); here the roster died with the process, and the history
    // says why the sessions ended (the journal was flushed at the stop).
    if test_engine().is_some() {
        return;
    }
    let url = format!("sqlite://{}", s.dir.join("roster.db").display());
    let s2 = Server::start_with(&[("ROSTER_DATABASE_URL", url.as_str())]).await;
    let (code, h) = s2
        .rest(
            "GET",
            "/api/v1/sessions/history",
            &s2.token_full("mon", "acme", &["monitor"], None),
            None,
        )
        .await;
    assert_eq!(code, 200, "{h}");
    let items = h["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "{h}");
    for i in items {
        assert_eq!(i["endReason"], "shutdown", "{h}");
    }
    drop(s2);
    drop(s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_closed_and_the_server_carries_on() {
    let s = Server::start_with(&[
        ("ROSTER_LIMITS_SEND_QUEUE", "8"),
        ("ROSTER_LIMITS_MAX_STATE_BYTES", "60000"),
        ("ROSTER_LIMITS_MESSAGES_PER_SECOND", "5000"),
        ("ROSTER_LIMITS_MESSAGES_BURST", "5000"),
        ("ROSTER_TIMING_DIFF_WINDOW", "0ms"),
        ("ROSTER_TIMING_SESSION_TIMEOUT", "30s"),
    ])
    .await;
    let mut slow = s.client("slow").await;
    slow.sub("Firehose", None).await.unwrap();
    // The sender counts (count mode), so its own updates don't flood its queue.
    let mut fast = s.client("fast").await;
    fast.request(
        json!({"type": "SUB", "room": "Firehose", "mode": "count"}),
        "PRESENCE_COUNT",
        T,
    )
    .await
    .unwrap();
    slow.freeze(); // stops reading: its socket buffers fill, then its queue
    let blob = "x".repeat(50_000);
    let mut closed = false;
    for i in 0..2000 {
        fast.send(json!({"type": "STATE", "room": "Firehose", "state": {"i": i, "blob": blob}}))
            .await
            .unwrap();
        if i % 50 == 49 && metric(&s.metrics().await, "roster_send_queue_drops_total") > 0.0 {
            closed = true;
            break;
        }
    }
    assert!(closed, "the slow consumer's queue overflowed");
    // The slow member leaves (after the grace); the sender keeps working.
    loop {
        let c = next(&mut fast, "PRESENCE_COUNT").await;
        if c["count"] == 1 {
            break;
        }
    }
    let ack = fast
        .request(json!({"type": "HB", "t": 1}), "HB_ACK", T)
        .await
        .unwrap();
    assert_eq!(ack["t"], 1);
    let (_, p) = s
        .rest(
            "GET",
            "/api/v1/rooms/Firehose/presence",
            &s.token("x"),
            None,
        )
        .await;
    assert_eq!(p["users"][0]["userId"], "fast");
    let mut other = s.client("other").await;
    other.sub("Firehose", None).await.unwrap();
}

fn roster(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_roster"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn bad_configuration_stops_start_up_with_a_message_naming_key_value_and_expectation() {
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: &[Case] = &[
        (
            &["serve"],
            &[("ROSTER_TIMING_SESSION_TIMEOUT", "forever")],
            &["timing.session_timeout", "forever", "unit"],
        ),
        (
            &["serve"],
            &[("ROSTER_LIMITS_SEND_QUEUE", "-1")],
            &["limits.send_queue"],
        ),
        (
            &["serve"],
            &[("ROSTER_LIMITS_MAX_WATCH", "0")],
            &["limits.max_watch", "above zero"],
        ),
        (
            &["serve"],
            &[("ROSTER_TIMINGS", "x")],
            &["ROSTER_TIMINGS", "unknown"],
        ),
        (
            &["serve"],
            &[("ROSTER_ENGINE_URL", "mongodb://127.0.0.1")],
            &["engine.url", "mongodb://127.0.0.1", "redis://"],
        ),
        (
            &["serve"],
            &[("ROSTER_ENGINE_PREFIX", "a b")],
            &["engine.prefix", "a b"],
        ),
        (
            // Nothing listens on port 1: a clear error, not a hang.
            &["serve", "--engine", "redis://127.0.0.1:1"],
            &[
                ("ROSTER_AUTH_JWT_SECRET", "x"),
                ("ROSTER_LISTEN", "127.0.0.1:0"),
            ],
            &["engine redis://127.0.0.1:1"],
        ),
        (
            &["serve", "--engine", "redis-cluster://"],
            &[
                ("ROSTER_AUTH_JWT_SECRET", "x"),
                ("ROSTER_LISTEN", "127.0.0.1:0"),
            ],
            &["engine redis-cluster://", "no seed node"],
        ),
        (&["serve"], &[("ROSTER_LOG_FORMAT", "xml")], &["log.format"]),
        (
            &["serve"],
            &[("ROSTER_KAFKA_BROKERS", "kafka.internal")],
            &["kafka.brokers", "kafka.internal", "host:port"],
        ),
        (
            &["serve"],
            &[("ROSTER_KAFKA_MUTATING_TOPIC", "orders changing!")],
            &["kafka.mutating_topic", "orders changing!", "topic name"],
        ),
        (
            &["serve"],
            &[("ROSTER_KAFKA_EVENTS_TOPIC", "a/b")],
            &["kafka.events_topic", "a/b"],
        ),
        (
            &["serve"],
            &[("ROSTER_KAFKA_RETRY_BACKOFF", "1s,soon")],
            &["kafka.retry_backoff", "soon"],
        ),
        (
            &["serve", "--listen", "nowhere:port"],
            &[],
            &["listen", "nowhere:port"],
        ),
        (
            &["serve", "--config", "/nonexistent/roster.toml"],
            &[],
            &["/nonexistent/roster.toml"],
        ),
        (
            &["serve"],
            &[("ROSTER_AUTH_JWT_PUBLIC_KEY", "/nonexistent.pem")],
            &["auth.jwt_public_key"],
        ),
    ];
    for (args, env, expect) in cases {
        let (code, _, err) = roster(args, env);
        assert_eq!(code, 2, "{args:?} {env:?}: {err}");
        for e in *expect {
            assert!(
                err.contains(e),
                "{args:?} {env:?}: message should mention {e:?}: {err}"
            );
        }
    }
    let dir = std::env::temp_dir().join(format!("roster-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("bad.toml");
    std::fs::write(&f, "[timing]\nsesion_timeout = \"2s\"\n").unwrap();
    let (code, _, err) = roster(&["--config", f.to_str().unwrap()], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("sesion_timeout"), "{err}");
    std::fs::write(
        &f,
        "[[rooms.rules]]\nprefix = \"Chat:\"\ntype = \"CHATT\"\n",
    )
    .unwrap();
    let (code, _, err) = roster(&["--config", f.to_str().unwrap()], &[]);
    assert_eq!(code, 2);
    assert!(
        err.contains("rooms.rules[0].type") && err.contains("CHATT"),
        "{err}"
    );
    // A webhook URL that is no URL, and one on a private address (checked at
    // start-up, unless webhooks.allow_private).
    let hook = |url: &str| {
        format!("[[webhooks.endpoints]]\nid = \"crm\"\ntenant = \"acme\"\nurl = \"{url}\"\nsecret = \"0123456789abcdef\"\n")
    };
    std::fs::write(&f, hook("crm.example/hook")).unwrap();
    let (code, _, err) = roster(&["--config", f.to_str().unwrap()], &[]);
    assert_eq!(code, 2);
    assert!(
        err.contains("webhooks.endpoints[0].url") && err.contains("crm.example/hook"),
        "{err}"
    );
    std::fs::write(&f, hook("http://127.0.0.1:9/hook")).unwrap();
    let (code, _, err) = roster(
        &["serve", "--config", f.to_str().unwrap()],
        &[
            ("ROSTER_LISTEN", "127.0.0.1:0"),
            ("ROSTER_AUTH_JWT_SECRET", "x"),
            (
                "ROSTER_DATABASE_URL",
                &format!("sqlite://{}", dir.join("hook.db").display()),
            ),
        ],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("webhooks.endpoints[0].url") && err.contains("private"),
        "{err}"
    );
}

#[tokio::test]
async fn a_port_in_use_is_a_clear_error() {
    let s = Server::start().await;
    let (code, _, err) = roster(
        &["serve", "--listen", &s.addr],
        &[("ROSTER_AUTH_JWT_SECRET", "x")],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains(&s.addr) && err.to_lowercase().contains("in use"),
        "{err}"
    );
}

#[tokio::test]
async fn token_subcommand_mints_what_the_server_accepts() {
    let s = Server::start().await;
    let (code, out, err) = roster(
        &[
            "token",
            "--user",
            "alice",
            "--tenant",
            "acme",
            "--roles",
            "admin,monitor",
        ],
        &[("ROSTER_AUTH_JWT_SECRET", "nope")],
    );
    assert_eq!(code, 0, "{err}");
    let (status, _) = s.rest("GET", "/api/v1/sessions", out.trim(), None).await;
    assert_eq!(status, 401, "a token from another secret is refused");
    let secret = format!("secret-{}", std::process::id());
    let (code, out, _) = roster(
        &[
            "token",
            "--user",
            "alice",
            "--tenant",
            "acme",
            "--roles",
            "admin,monitor",
            "--ttl",
            "1h",
        ],
        &[("ROSTER_AUTH_JWT_SECRET", &secret)],
    );
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 1, "prints only the token");
    let (status, _) = s.rest("GET", "/api/v1/sessions", out.trim(), None).await;
    assert_eq!(status, 200);
    let (code, _, err) = roster(&["token", "--user", "alice"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("auth.jwt_secret"), "{err}");
    let (code, _, err) = roster(
        &["token", "--user", "alice", "--ttl", "later"],
        &[("ROSTER_AUTH_JWT_SECRET", "x")],
    );
    assert_eq!(code, 2);
    assert!(err.contains("--ttl"), "{err}");
}

#[test]
fn help_explains_configuration() {
    let (code, out, _) = roster(&["--help"], &[]);
    assert_eq!(code, 0);
    for s in [
        "serve",
        "token",
        "ROSTER_TIMING_SESSION_TIMEOUT",
        "timing.session_timeout",
        "--config",
    ] {
        assert!(out.contains(s), "--help lacks {s}: {out}");
    }
    let (code, out, _) = roster(&["--version"], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("roster"));
}

#[tokio::test]
async fn with_no_configuration_at_all_a_dev_secret_is_printed_and_works() {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_roster"));
    cmd.args(["--listen", "127.0.0.1:0"])
        .env_clear()
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let (mut secret, mut addr) = (None, None);
    while let Ok(Some(line)) = tokio::time::timeout(T, lines.next_line()).await.unwrap() {
        if let Some(s) = line.split("dev secret for this run: ").nth(1) {
            secret = Some(s.trim().to_string());
        }
        if let Some(a) = line.strip_prefix("roster listening on http://") {
            addr = Some(a.to_string());
            break;
        }
    }
    let (secret, addr) = (secret.expect("dev secret printed"), addr.unwrap());
    let (code, token, _) = roster(
        &["token", "--user", "alice"],
        &[("ROSTER_AUTH_JWT_SECRET", &secret)],
    );
    assert_eq!(code, 0);
    let mut c = roster_client::Client::connect(roster_client::ConnectOptions::new(format!(
        "ws://{addr}/ws"
    )))
    .await
    .unwrap();
    let w = c
        .hello(roster_client::Hello::with_token(token.trim()))
        .await
        .unwrap();
    assert_eq!(
        (w["tenantId"].clone(), w["heartbeatIntervalMs"].clone()),
        (json!("default"), json!(15000))
    );
}
