//! Model-based conformance of the engines (issue 11): random sequences of
//! operations from several sessions and users, run against a small reference
//! model and against every engine (memory, and Redis at `ROSTER_TEST_REDIS`, which
//! `scripts/test.sh` also points at a Redis Cluster). Checked: every reply is the
//! model's; every diff a member receives applies cleanly to what it holds (no join
//! of a session it holds, no leave or update of one it does not), with no `seq`
//! gap; after the last flush each member's snapshot plus diffs is exactly the
//! engine's roster (sessions and states); at most one lock owner per field; a
//! user is online or away iff it has a live session, with the merged status.
//!
//! Seeded, not shrinking: a failure prints the seed and the operations; run one
//! with `ROSTER_MODEL_SEED=<n>`, more with `ROSTER_MODEL_CASES=<n>` (default 12 per
//! engine here; `ROSTER_MODEL_CASES=2000 cargo nextest run -p roster --test
//! engine_model` for a long run). A seed that fails becomes a named regression
//! test here. Not covered yet: timeouts and resume (node-level, in the behaviour
//! tests), private rooms and closing a room (they evict members: node-level).
//! Lock expiry is generated: the sweeper's call, at a time before or past the TTL.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU8;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use roster::clock::Clock;
use roster::core::room::{Actor, LockOutcome, Member, RoomSettings, RoomStatus};
use roster::core::room_type::seeded;
use roster::core::session::SessionMeta;
use roster::core::types::{DeviceInfo, LeaveReason, Role, Status, SubMode};
use roster::engine::memory::MemoryEngine;
use roster::engine::redis::RedisEngine;
use roster::engine::{Engine, Outbox, Outgoing, RoomPatch};
use roster::ids::{RoomId, RoomKey, SessionId, TenantId, UserId, UserRef};
use serde_json::{json, Value};
use tokio::time::Instant;

const ROOMS: [&str; 2] = ["Order:a", "Order:b"];
/// Room `Order:a` holds at most this many sessions, so `room_full` comes up.
const SMALL_CAPACITY: u32 = 3;
const SESSIONS: usize = 6;
const FIELDS: [&str; 2] = ["total", "note"];
const OPS: usize = 80;
const LIST_LIMIT: usize = 1000;
/// Longer than any case runs, so only `ExpireLock(.., true)` expires a lock.
const LOCK_TTL: Duration = Duration::from_secs(60);

/// Every message an engine delivered, per recipient, as JSON.
#[derive(Default)]
struct Recorder(Mutex<Vec<(SessionId, Value)>>);

impl Outbox for Recorder {
    fn deliver(&self, to: &mut dyn Iterator<Item = &SessionId>, msg: Outgoing<'_>) {
        let v = match msg {
            Outgoing::Presence { snapshot, .. } => {
                let mut v = serde_json::to_value(snapshot).unwrap();
                v["type"] = json!("PRESENCE");
                v
            }
            Outgoing::PresenceCount {
                room, count, seq, ..
            } => {
                json!({"type": "PRESENCE_COUNT", "room": room, "count": count, "seq": seq})
            }
            Outgoing::Diff(d) => {
                let mut v = serde_json::to_value(d).unwrap();
                v["type"] = json!("PRESENCE_DIFF");
                v
            }
            Outgoing::Event(t) => json!({"type": "EVENT", "transition": t}),
        };
        let mut out = self.0.lock().unwrap();
        for s in to {
            out.push((s.clone(), v.clone()));
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Join(usize, usize, Option<i64>),
    Leave(usize, usize),
    State(usize, usize, i64),
    Touch(usize, usize),
    Lock(usize, usize, usize),
    Unlock(usize, usize, usize),
    ForceUnlock(usize, usize),
    /// The sweeper's lock expiry, now (`false`: no lock is due) or past every
    /// lock's TTL (`true`).
    ExpireLock(usize, usize, bool),
    Flush(usize),
    /// A session goes live (`true` = online, else away) / ends / sets its status.
    Attach(usize, bool),
    Detach(usize),
    SetStatus(usize, bool),
    /// A participant role for user `u` in the room (`None` removes it).
    Participant(usize, usize, Option<Role>),
    /// The room put in maintenance (`true`) or back to active.
    Maintenance(usize, bool),
}

fn status(online: bool) -> Status {
    if online {
        Status::Online
    } else {
        Status::Away
    }
}

fn gen(rng: &mut StdRng) -> Vec<Op> {
    (0..OPS)
        .map(|_| {
            let (s, r) = (
                rng.random_range(0..SESSIONS),
                rng.random_range(0..ROOMS.len()),
            );
            let f = rng.random_range(0..FIELDS.len());
            match rng.random_range(0..100) {
                0..=29 => Op::Join(s, r, rng.random_bool(0.3).then(|| rng.random_range(0..5))),
                30..=44 => Op::Leave(s, r),
                45..=59 => Op::State(s, r, rng.random_range(0..5)),
                60..=64 => Op::Touch(s, r),
                65..=74 => Op::Lock(s, r, f),
                75..=79 => Op::Unlock(s, r, f),
                80..=82 => Op::ForceUnlock(r, f),
                83..=86 => Op::Attach(s, rng.random_bool(0.7)),
                87..=89 => Op::Detach(s),
                90..=92 => Op::SetStatus(s, rng.random_bool(0.5)),
                93..=95 => Op::Participant(
                    r,
                    rng.random_range(0..3),
                    [
                        None,
                        Some(Role::Viewer),
                        Some(Role::Commenter),
                        Some(Role::Operator),
                    ][rng.random_range(0..4)],
                ),
                96 => Op::Maintenance(r, rng.random_bool(0.6)),
                97 => Op::ExpireLock(r, f, rng.random_bool(0.7)),
                _ => Op::Flush(r),
            }
        })
        .collect()
}

/// The reference model: what each room holds, who holds each lock, and each
/// user's live sessions with their status (user of session `s` = `s % 3`).
#[derive(Default)]
struct Model {
    rooms: BTreeMap<usize, BTreeMap<usize, Value>>,
    locks: BTreeMap<(usize, usize), usize>,
    live: BTreeMap<usize, Status>,
    /// Rooms that exist (created by a join), in maintenance, participant roles.
    exists: std::collections::BTreeSet<usize>,
    maintenance: std::collections::BTreeSet<usize>,
    roles: BTreeMap<(usize, usize), Role>,
}

impl Model {
    /// The user's status merged over its live sessions (SPEC §2): online beats
    /// away beats offline.
    fn user_status(&self, user: usize) -> Status {
        let mine = self.live.iter().filter(|(s, _)| **s % 3 == user);
        mine.fold(Status::Offline, |acc, (_, st)| match (acc, *st) {
            (Status::Online, _) | (_, Status::Online) => Status::Online,
            (Status::Away, _) | (_, Status::Away) => Status::Away,
            _ => Status::Offline,
        })
    }

    fn status_change(&mut self, s: usize, f: impl FnOnce(&mut BTreeMap<usize, Status>)) -> String {
        let before = self.user_status(s % 3);
        f(&mut self.live);
        format!("{:?}->{:?}", before, self.user_status(s % 3))
    }

    /// A session's role in an open room: its user's participant role, else what
    /// the token grants (operator here).
    fn role(&self, r: usize, s: usize) -> Role {
        self.roles
            .get(&(r, s % 3))
            .copied()
            .unwrap_or(Role::Operator)
    }

    fn is_member(&self, r: usize, s: usize) -> bool {
        self.rooms.get(&r).is_some_and(|m| m.contains_key(&s))
    }

    /// The reply the engines must give, as a short string.
    fn apply(&mut self, op: &Op) -> String {
        match *op {
            Op::Join(s, r, st) => {
                let role = self.role(r, s);
                let closed = self.maintenance.contains(&r);
                let room = self.rooms.entry(r).or_default();
                if room.contains_key(&s) {
                    "already".into()
                } else if closed {
                    "err room_closed".into()
                } else if st.is_some() && role < Role::Commenter {
                    "err forbidden".into()
                } else if r == 0 && room.len() >= SMALL_CAPACITY as usize {
                    "err room_full".into()
                } else {
                    room.insert(s, st.map(|v| json!({"v": v})).unwrap_or(json!({})));
                    self.exists.insert(r);
                    "joined".into()
                }
            }
            Op::Leave(s, r) => {
                let left = self.rooms.entry(r).or_default().remove(&s).is_some();
                if left {
                    self.locks.retain(|(rr, _), o| !(*rr == r && *o == s));
                }
                format!("left {left}")
            }
            Op::State(s, r, v) => {
                let role = self.role(r, s);
                match self.rooms.entry(r).or_default().get_mut(&s) {
                    None => "err not_subscribed".into(),
                    Some(st) if *st == json!({"v": v}) => "ok".into(),
                    Some(_) if role < Role::Commenter => "err forbidden".into(),
                    Some(st) => {
                        *st = json!({"v": v});
                        "ok".into()
                    }
                }
            }
            Op::Touch(..) | Op::Flush(_) => "-".into(),
            Op::Lock(s, r, f) => {
                if !self.is_member(r, s) {
                    return "err not_subscribed".into();
                }
                if self.role(r, s) < Role::Operator {
                    return "err forbidden".into();
                }
                match self.locks.get(&(r, f)) {
                    Some(&o) if o != s => format!("held by {o}"),
                    _ => {
                        self.locks.insert((r, f), s);
                        "acquired".into()
                    }
                }
            }
            Op::Unlock(s, r, f) => {
                if !self.rooms.entry(r).or_default().contains_key(&s) {
                    return "err not_subscribed".into();
                }
                match self.locks.get(&(r, f)) {
                    None => "unlocked false".into(),
                    Some(&o) if o != s => "err not_lock_owner".into(),
                    Some(_) => {
                        self.locks.remove(&(r, f));
                        "unlocked true".into()
                    }
                }
            }
            Op::ForceUnlock(r, f) => format!("forced {}", self.locks.remove(&(r, f)).is_some()),
            Op::ExpireLock(r, f, late) => {
                format!("expired {}", late && self.locks.remove(&(r, f)).is_some())
            }
            Op::Attach(s, on) => self.status_change(s, |l| {
                l.insert(s, status(on));
            }),
            Op::Detach(s) => self.status_change(s, |l| {
                l.remove(&s);
            }),
            Op::SetStatus(s, on) => self.status_change(s, |l| {
                if let Some(st) = l.get_mut(&s) {
                    *st = status(on);
                }
            }),
            Op::Participant(r, u, role) => {
                if !self.exists.contains(&r) {
                    return "err not_found".into();
                }
                match role {
                    Some(x) => self.roles.insert((r, u), x),
                    None => self.roles.remove(&(r, u)),
                };
                // Locks of members now below operator are released.
                let gone: Vec<(usize, usize)> = self
                    .locks
                    .iter()
                    .filter(|((rr, _), o)| *rr == r && self.role(r, **o) < Role::Operator)
                    .map(|(k, _)| *k)
                    .collect();
                let mut lost: Vec<String> =
                    gone.iter().map(|(_, f)| FIELDS[*f].to_string()).collect();
                for k in &gone {
                    self.locks.remove(k);
                }
                lost.sort();
                format!("released {lost:?}")
            }
            Op::Maintenance(r, on) => {
                if !self.exists.contains(&r) {
                    return "err not_found".into();
                }
                if on {
                    self.maintenance.insert(r);
                } else {
                    self.maintenance.remove(&r);
                }
                "ok".into()
            }
        }
    }
}

struct World {
    engine: Arc<dyn Engine>,
    recorder: Arc<Recorder>,
    tenant: TenantId,
    sessions: Vec<(SessionId, UserId)>,
}

impl World {
    fn room(&self, r: usize) -> RoomId {
        RoomId {
            tenant: self.tenant.clone(),
            key: RoomKey::parse(ROOMS[r]).unwrap(),
        }
    }

    fn user(&self, s: usize) -> UserRef {
        UserRef {
            tenant: self.tenant.clone(),
            user: self.sessions[s].1.clone(),
        }
    }

    fn settings(r: usize) -> RoomSettings {
        let t = seeded()
            .into_iter()
            .find(|t| t.code.0 == "GENERIC")
            .unwrap();
        let mut s = RoomSettings::from_type(&t, None, false, SystemTime::now());
        if r == 0 {
            s.capacity = SMALL_CAPACITY;
        }
        s
    }

    fn member(&self, s: usize, state: Value) -> Member {
        let (id, user) = &self.sessions[s];
        let meta = SessionMeta::new(
            id.clone(),
            self.tenant.clone(),
            user.clone(),
            None,
            None,
            DeviceInfo::default(),
            None,
            None,
            None,
            SystemTime::now(),
            Arc::new(AtomicU8::new(Status::Online.as_u8())),
        );
        Member::new(Arc::new(meta), SystemTime::now(), state, false)
    }

    async fn run(&self, op: &Op) -> String {
        let e = &self.engine;
        let code = |e: roster::engine::EngineError| {
            let e = roster::core::error::CoreError::from(e);
            format!("err {}\u{1f}{}", e.code.as_str(), e.message)
        };
        match *op {
            Op::Join(s, r, st) => {
                let user = self.sessions[s].1.clone();
                let actor = Actor {
                    user: &user,
                    open_role: Role::Operator,
                    is_admin: false,
                };
                let state = st.map(|v| json!({"v": v})).unwrap_or(json!({}));
                match e
                    .join(
                        &self.room(r),
                        Self::settings(r),
                        self.member(s, state),
                        actor,
                        SubMode::List,
                        LIST_LIMIT,
                        None,
                    )
                    .await
                {
                    Ok(j) if j.already_member => "already".into(),
                    Ok(_) => "joined".into(),
                    Err(err) => code(err),
                }
            }
            Op::Leave(s, r) => {
                let left = e
                    .leave(
                        &self.room(r),
                        &self.sessions[s].0,
                        LeaveReason::Left,
                        Instant::now(),
                    )
                    .await
                    .unwrap();
                format!("left {}", left.is_some())
            }
            Op::State(s, r, v) => match e
                .set_state(&self.room(r), &self.sessions[s].0, json!({"v": v}))
                .await
            {
                Ok(_) => "ok".into(),
                Err(err) => code(err),
            },
            Op::Touch(s, r) => {
                e.touch(&self.room(r), &self.sessions[s].0, Status::Online)
                    .await
                    .unwrap();
                "-".into()
            }
            Op::Lock(s, r, f) => {
                match e
                    .lock(
                        &self.room(r),
                        FIELDS[f],
                        &self.sessions[s].0,
                        Instant::now(),
                        LOCK_TTL,
                    )
                    .await
                {
                    Ok(LockOutcome::Acquired(_)) => "acquired".into(),
                    Ok(LockOutcome::Held(l)) => {
                        let o = self.sessions.iter().position(|(id, _)| id == &l.session);
                        format!("held by {}", o.unwrap())
                    }
                    Err(err) => code(err),
                }
            }
            Op::Unlock(s, r, f) => {
                match e
                    .unlock(&self.room(r), FIELDS[f], &self.sessions[s].0)
                    .await
                {
                    Ok(l) => format!("unlocked {}", l.is_some()),
                    Err(err) => code(err),
                }
            }
            Op::ForceUnlock(r, f) => {
                let l = e.force_unlock(&self.room(r), FIELDS[f]).await.unwrap();
                format!("forced {}", l.is_some())
            }
            Op::ExpireLock(r, f, late) => {
                let now = if late {
                    Instant::now() + LOCK_TTL * 2
                } else {
                    Instant::now()
                };
                let l = e.expire_lock(&self.room(r), FIELDS[f], now).await.unwrap();
                format!("expired {}", l.is_some())
            }
            Op::Flush(r) => {
                e.flush(&self.room(r), LIST_LIMIT).await.unwrap();
                "-".into()
            }
            Op::Attach(s, on) => {
                let (c, _) = e
                    .user_attach(&self.user(s), &self.sessions[s].0, status(on), "web")
                    .await;
                format!("{:?}->{:?}", c.before, c.after)
            }
            Op::Detach(s) => {
                let c = e
                    .user_detach(&self.user(s), &self.sessions[s].0, SystemTime::now())
                    .await;
                format!("{:?}->{:?}", c.before, c.after)
            }
            Op::SetStatus(s, on) => {
                let c = e
                    .user_set_status(&self.user(s), &self.sessions[s].0, status(on))
                    .await;
                format!("{:?}->{:?}", c.before, c.after)
            }
            Op::Participant(r, u, role) => {
                let user = UserId::parse(&format!("u{u}")).unwrap();
                match e.set_participant(&self.room(r), user, role).await {
                    Ok(c) => {
                        let mut lost: Vec<String> =
                            c.released_locks.into_iter().map(|l| l.field).collect();
                        lost.sort();
                        format!("released {lost:?}")
                    }
                    Err(err) => code(err),
                }
            }
            Op::Maintenance(r, on) => {
                let patch = RoomPatch {
                    status: Some(if on {
                        RoomStatus::Maintenance
                    } else {
                        RoomStatus::Active
                    }),
                    ..RoomPatch::default()
                };
                match e.update_room(&self.room(r), patch).await {
                    Ok(_) => "ok".into(),
                    Err(err) => code(err),
                }
            }
        }
    }
}

/// What one member holds of one room, rebuilt from what it was sent.
#[derive(Debug, Default)]
struct Held {
    seq: u64,
    sessions: BTreeMap<String, Value>,
}

/// Replays the recorder for (session, room): every diff must apply cleanly.
fn rebuild(
    frames: &[(SessionId, Value)],
    s: &SessionId,
    room: &str,
) -> Result<Option<Held>, String> {
    let mut held: Option<Held> = None;
    for (to, m) in frames {
        if to != s || m["room"] != room {
            continue;
        }
        match m["type"].as_str().unwrap() {
            "PRESENCE" => {
                let mut h = Held {
                    seq: m["seq"].as_u64().unwrap(),
                    ..Held::default()
                };
                for u in m["users"].as_array().unwrap() {
                    for x in u["sessions"].as_array().unwrap() {
                        h.sessions
                            .insert(x["sessionId"].as_str().unwrap().into(), x["state"].clone());
                    }
                }
                held = Some(h);
            }
            "PRESENCE_DIFF" => {
                let Some(h) = held.as_mut() else { continue };
                let seq = m["seq"].as_u64().unwrap();
                if seq != h.seq + 1 {
                    return Err(format!("seq {seq} after {}: {m}", h.seq));
                }
                h.seq = seq;
                for l in m["leaves"].as_array().unwrap() {
                    let id = l["sessionId"].as_str().unwrap();
                    if h.sessions.remove(id).is_none() {
                        return Err(format!("leave of {id}, never held: {m}"));
                    }
                }
                for j in m["joins"].as_array().unwrap() {
                    let id = j["session"]["sessionId"].as_str().unwrap();
                    if h.sessions
                        .insert(id.into(), j["session"]["state"].clone())
                        .is_some()
                    {
                        return Err(format!("join of {id}, already held: {m}"));
                    }
                }
                for u in m["updates"].as_array().unwrap() {
                    let id = u["session"]["sessionId"].as_str().unwrap();
                    match h.sessions.get_mut(id) {
                        Some(st) => *st = u["session"]["state"].clone(),
                        None => return Err(format!("update of {id}, not held: {m}")),
                    }
                }
            }
            _ => {}
        }
    }
    Ok(held)
}

async fn engine(kind: &str, recorder: Arc<Recorder>) -> Arc<dyn Engine> {
    let clock = Clock::new();
    if kind == "memory" {
        return Arc::new(MemoryEngine::new(recorder, clock));
    }
    let url =
        std::env::var("ROSTER_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!(
        "model{}x{}",
        std::process::id(),
        rand::rng().random::<u32>()
    );
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    // The receiver is dropped: no node reacts to engine events in this test.
    Arc::new(
        RedisEngine::connect(&url, &prefix, recorder, clock, tx, Duration::from_secs(1))
            .await
            .unwrap_or_else(|e| panic!("redis at {url}: {e}")),
    )
}

/// Runs one case; answers every reply in full (error messages included).
async fn run_case(kind: &str, seed: u64) -> Result<Vec<String>, String> {
    let ops = gen(&mut StdRng::seed_from_u64(seed));
    let recorder = Arc::new(Recorder::default());
    let w = World {
        engine: engine(kind, recorder.clone()).await,
        recorder,
        tenant: TenantId::parse(&format!("m{seed}")).unwrap(),
        sessions: (0..SESSIONS)
            .map(|i| {
                (
                    SessionId::new_random(),
                    UserId::parse(&format!("u{}", i % 3)).unwrap(),
                )
            })
            .collect(),
    };
    let mut model = Model::default();
    let mut replies = vec![];
    for (n, op) in ops.iter().enumerate() {
        let want = model.apply(op);
        let got = w.run(op).await;
        // The model knows codes; the engines must also agree on the wording.
        let code = got.split('\u{1f}').next().unwrap_or_default();
        if code != want {
            return Err(format!("op {n} {op:?}: engine {got:?}, model {want:?}"));
        }
        replies.push(got);
        // A user is online (or away) iff it has a live session.
        for u in 0..3 {
            let rec = w.engine.user(&w.user(u)).await.unwrap();
            let live: Vec<&SessionId> = model
                .live
                .keys()
                .filter(|s| **s % 3 == u)
                .map(|&s| &w.sessions[s].0)
                .collect();
            let mut held: Vec<&SessionId> = rec.sessions.iter().collect();
            held.sort();
            let mut want = live.clone();
            want.sort();
            if rec.status != model.user_status(u) || held != want {
                return Err(format!(
                    "after op {n} {op:?}: user u{u} is {:?} with {held:?}, model {:?} with {want:?}",
                    rec.status,
                    model.user_status(u)
                ));
            }
        }
    }
    for r in 0..ROOMS.len() {
        let id = w.room(r);
        w.engine.flush(&id, LIST_LIMIT).await.unwrap();
    }
    // Redis delivers through pub/sub: wait until every member caught up.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut behind = None;
        for (r, room_key) in ROOMS.iter().enumerate() {
            let Some(snap) = w.engine.snapshot(&w.room(r)).await.unwrap() else {
                continue;
            };
            let frames = w.recorder.0.lock().unwrap().clone();
            let mut engine_roster: BTreeMap<String, Value> = BTreeMap::new();
            for u in &snap.users {
                for x in &u.sessions {
                    engine_roster.insert(x.session_id.to_string(), x.state.clone());
                }
            }
            let model_ids: Vec<String> = model
                .rooms
                .get(&r)
                .map(|m| m.keys().map(|&s| w.sessions[s].0.to_string()).collect())
                .unwrap_or_default();
            let mut engine_ids: Vec<String> = engine_roster.keys().cloned().collect();
            let mut sorted_model = model_ids.clone();
            sorted_model.sort();
            engine_ids.sort();
            if engine_ids != sorted_model {
                return Err(format!(
                    "room {r}: engine holds {engine_ids:?}, model {sorted_model:?}"
                ));
            }
            let locks = w
                .engine
                .locks(&w.room(r))
                .await
                .unwrap()
                .unwrap_or_default();
            for (f, o) in &locks {
                let fi = FIELDS.iter().position(|x| x == f).unwrap();
                let want = model.locks.get(&(r, fi)).map(|&s| w.sessions[s].0.clone());
                if want.as_ref() != Some(&o.session_id) {
                    return Err(format!(
                        "lock {f} in room {r}: engine {o:?}, model {want:?}"
                    ));
                }
            }
            for id in &model_ids {
                let sid = SessionId::parse(id).unwrap();
                let held = rebuild(&frames, &sid, room_key)
                    .map_err(|e| format!("member {id} of room {r}: {e}"))?
                    .ok_or_else(|| format!("member {id} of room {r} got no snapshot"))?;
                if held.seq != snap.seq || held.sessions != engine_roster {
                    behind = Some(format!(
                        "member {id} of room {r} holds seq {} {:?}, engine seq {} {:?}",
                        held.seq, held.sessions, snap.seq, engine_roster
                    ));
                }
            }
        }
        match behind {
            None => return Ok(replies),
            Some(e) if Instant::now() > deadline => return Err(e),
            Some(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

async fn run_engine(kind: &str) {
    let cases: u64 = std::env::var("ROSTER_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let seeds: Vec<u64> = match std::env::var("ROSTER_MODEL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(s) => vec![s],
        None => {
            let base: u64 = rand::rng().random_range(0..1_000_000);
            (base..base + cases).collect()
        }
    };
    for seed in seeds {
        let fail = |e: String| -> ! {
            panic!(
                "{kind} engine, seed {seed} (ROSTER_MODEL_SEED={seed}): {e}\nops: {:?}",
                gen(&mut StdRng::seed_from_u64(seed))
            )
        };
        let replies = run_case(kind, seed).await.unwrap_or_else(|e| fail(e));
        if kind != "memory" {
            // Twins: the same operations get the same replies, word for word.
            let memory = run_case("memory", seed).await.unwrap_or_else(|e| fail(e));
            for (n, (a, b)) in replies.iter().zip(&memory).enumerate() {
                if a != b {
                    fail(format!("op {n}: {kind} replied {a:?}, memory {b:?}"));
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_engine_follows_the_model() {
    run_engine("memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_engine_follows_the_model() {
    run_engine("redis").await;
}
