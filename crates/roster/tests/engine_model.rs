//! Model-based conformance of the engines (issue 11): random sequences of
//! operations from several sessions and users, run against a small reference
//! model and against every engine (memory, and Redis at `ROSTER_TEST_REDIS`, which
//! `scripts/test.sh` also points at a Redis Cluster). Checked: every reply is the
//! model's, and each reply carries what the node builds its transitions from
//! (`core::transition`: a join that occupied the room, a leave that vacated it
//! and the locks it released, a state that changed or did not, lock owners,
//! user status moves, access changes with who lost which lock), so the
//! engines yield the same transitions; every diff a member receives applies cleanly to what it holds (no join
//! of a session it holds, no leave or update of one it does not), with no `seq`
//! gap; after the last flush each member's snapshot plus diffs is exactly the
//! engine's roster (sessions and states); at most one lock owner per field; a
//! user is online or away iff it has a live session, with the merged status;
//! after every operation each room exists iff the model says so, with the
//! model's status, visibility, participants and entity state (`Engine::room`),
//! members and locks; a joiner's `PRESENCE` shows the model's entity state,
//! locks, count and roster; on the memory engine (which delivers inside the
//! call), everything an operation sent went to members of the room.
//!
//! Generated: joins (capacity, state, roles; one session has a commenter token,
//! one an admin's), leaves, member state, touches, locks (lock, unlock, force,
//! a late lock taking over an expired one,
//! the sweeper's expiry before or past the TTL), flushes, users' sessions and
//! status, participant roles, maintenance; private
//! rooms (`update_room` with a visibility: the `AccessChange` answered, evicted
//! members and released locks, later joins refused `forbidden`), closing
//! (`status: closed`: later joins refused `room_closed` until reopened) and
//! deleting a room (`delete_room`: its members answered, the room gone with its
//! roles, locks and entity state); the entity lifecycle (`mutating`, `mutated`,
//! the sweeper's stale expiry before or past the TTL) with the `EntityView`
//! answered. The engines leave kicking to the node: the driver does what the node
//! does (`access_changed`/`kick_sessions` -> `end_session`: the kicked session
//! leaves every room it joined with reason `kicked`, then its user loses it), and
//! the model the same.
//!
//! A timeout is generated as the node carries it out (`end_session` with reason
//! `timeout`: a leave of every room joined, then the user's detach).
//!
//! A resume by `clientId` is generated as the node carries it out: on Redis
//! two engines (two nodes on one key prefix) and the session moves to the
//! other (`take_over`, which answers its rooms; `forget_local` on the old
//! node, `adopt_local` on the new), on memory on the same node; then the
//! client's re-`SUB` of each room. No one sees a leave or a join, and every
//! diff the session gets after the move applies to what it holds (none twice).
//!
//! Not covered: the timer itself, the liveness sweep, idle
//! room expiry, count mode and the list limit, `refresh_locks`, declared
//! rooms (`create_room`), the node's events (LOCK/ENTITY frames) — node-level, in
//! the behaviour tests.
//!
//! Seeded and shrinking: a failing case is shrunk (chunks, then single ops
//! removed while it still fails, each run on fresh engine state: a fresh tenant
//! and Redis key prefix), and the failure prints the seed, the first error and
//! the smallest failing op list (pastes into a regression test). Run one seed
//! with `ROSTER_MODEL_SEED=<n>`, more with `ROSTER_MODEL_CASES=<n>` (default 12
//! per engine here); a long run:
//! `ROSTER_MODEL_CASES=2000 cargo nextest run -p roster --test engine_model`
//! (the Redis tests use `ROSTER_TEST_REDIS`, else `redis://127.0.0.1:6379`;
//! 2000 Redis cases take some 13 minutes). A failure becomes a named
//! regression test here.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use roster::clock::Clock;
use roster::core::room::{
    AccessChange, Actor, EntityView, LockOutcome, Member, RoomSettings, RoomStatus,
};
use roster::core::room_type::{seeded, Visibility};
use roster::core::session::SessionMeta;
use roster::core::types::{LeaveReason, Role, Status, SubMode};
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
/// Likewise for `MUTATING`: only `ExpireStale(.., true)` clears `stale`.
const STALE_TTL: Duration = Duration::from_secs(60);

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
    /// A `LOCK` past the TTL of every lock taken by [`Op::Lock`], before the
    /// sweeper expired them: another session's lock is taken over (and named,
    /// so that the node announces its end first).
    LateLock(usize, usize, usize),
    Flush(usize),
    /// A session goes live (`true` = online, else away) / ends / sets its status.
    Attach(usize, bool),
    Detach(usize),
    /// The node ends a silent session (`session_timeout`): it leaves every room
    /// it joined with reason `timeout`, then its user loses it.
    Timeout(usize),
    SetStatus(usize, bool),
    /// A participant role for user `u` in the room (`None` removes it).
    Participant(usize, usize, Option<Role>),
    /// The room put in maintenance (`true`) or back to active.
    Maintenance(usize, bool),
    /// The room made private (`true`) or open (`update_room` with a visibility):
    /// the driver then kicks whoever the engine evicted, as the node does.
    Visibility(usize, bool),
    /// `status: closed`: the driver then kicks every member, as the node does.
    Close(usize),
    /// `delete_room`: the driver then kicks every member it answered.
    Delete(usize),
    /// Entity lifecycle: `MUTATING` by user `u`, `MUTATED`, and the sweeper's
    /// stale expiry, now (`false`: nothing is due) or past every stale TTL.
    Mutating(usize, usize),
    Mutated(usize),
    ExpireStale(usize, bool),
    /// The session's connection drops and a `HELLO` with its `clientId`
    /// resumes it inside the grace: on Redis on the other node (`take_over`;
    /// the old node forgets it, the new one adopts it), on memory on the same
    /// node (the engine is not asked). The client then `SUB`s each room again
    /// (PROTOCOL §6). Answered: the rooms it resumed with, and each re-`SUB`.
    Resume(usize),
}

impl Op {
    /// The session whose node carries the operation out, if any.
    fn session(&self) -> Option<usize> {
        match *self {
            Op::Join(s, ..)
            | Op::Leave(s, _)
            | Op::State(s, ..)
            | Op::Touch(s, _)
            | Op::Lock(s, ..)
            | Op::LateLock(s, ..)
            | Op::Unlock(s, ..)
            | Op::Attach(s, _)
            | Op::Detach(s)
            | Op::Timeout(s)
            | Op::SetStatus(s, _)
            | Op::Resume(s) => Some(s),
            _ => None,
        }
    }
}

/// What each session's token grants in open rooms, and whether it is an
/// admin's: session 4 (user u1) has a commenter token, so that a participant
/// entry removed falls back to below operator; session 5 (user u2) an admin's,
/// owner everywhere and never evicted. The others: operator.
fn token(s: usize) -> (Role, bool) {
    match s {
        4 => (Role::Commenter, false),
        5 => (Role::Operator, true),
        _ => (Role::Operator, false),
    }
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
            match rng.random_range(0..119) {
                0..=29 => Op::Join(s, r, rng.random_bool(0.3).then(|| rng.random_range(0..5))),
                30..=44 => Op::Leave(s, r),
                45..=59 => Op::State(s, r, rng.random_range(0..5)),
                60..=64 => Op::Touch(s, r),
                65..=74 => Op::Lock(s, r, f),
                75..=79 => Op::Unlock(s, r, f),
                80..=82 => Op::ForceUnlock(r, f),
                83..=86 => Op::Attach(s, rng.random_bool(0.7)),
                87..=88 => Op::Detach(s),
                89 => Op::Timeout(s),
                90..=92 => Op::SetStatus(s, rng.random_bool(0.5)),
                // More often than the rest of room admin, so that private rooms
                // get participants in and out again.
                93..=95 | 110..=113 => Op::Participant(
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
                97 => {
                    if rng.random_bool(0.5) {
                        Op::ExpireLock(r, f, rng.random_bool(0.7))
                    } else {
                        Op::LateLock(s, r, f)
                    }
                }
                98..=99 => Op::Flush(r),
                100..=102 => Op::Visibility(r, rng.random_bool(0.5)),
                103 => Op::Close(r),
                104 => Op::Delete(r),
                105..=106 => Op::Mutating(r, rng.random_range(0..3)),
                107..=108 => Op::Mutated(r),
                109 => Op::ExpireStale(r, rng.random_bool(0.7)),
                // Reopens a closed room (or one in maintenance).
                114..=115 => Op::Maintenance(r, false),
                _ => Op::Resume(s),
            }
        })
        .collect()
}

/// A room's entity state (`MUTATING`/`MUTATED`), as the model sees it.
#[derive(Default, Clone, Copy)]
struct Entity {
    stale: bool,
    busy: Option<usize>,
    version: u64,
}

/// How both sides print an `EntityView`.
fn entity_str(room: &str, stale: bool, busy: Option<&str>, version: u64) -> String {
    format!("entity {room} stale={stale} busy={busy:?} v={version}")
}

/// The reference model: what each room holds, who holds each lock, and each
/// user's live sessions with their status (user of session `s` = `s % 3`).
#[derive(Default)]
struct Model {
    rooms: BTreeMap<usize, BTreeMap<usize, Value>>,
    locks: BTreeMap<(usize, usize), usize>,
    live: BTreeMap<usize, Status>,
    /// Rooms that exist (created by a join or a lifecycle call), their status
    /// (absent: active), the private ones, participant roles, entity state.
    exists: BTreeSet<usize>,
    status: BTreeMap<usize, RoomStatus>,
    private: BTreeSet<usize>,
    roles: BTreeMap<(usize, usize), Role>,
    entity: BTreeMap<usize, Entity>,
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

    /// A session's role in a room: owner for an admin's token, else its user's
    /// participant role, else what the token grants in an open room, else none
    /// (private room: no entry).
    fn role(&self, r: usize, s: usize) -> Option<Role> {
        let (open_role, admin) = token(s);
        if admin {
            return Some(Role::Owner);
        }
        match self.roles.get(&(r, s % 3)) {
            Some(&x) => Some(x),
            None if self.private.contains(&r) => None,
            None => Some(open_role),
        }
    }

    /// A member's role (members always have one: the others were kicked).
    fn member_role(&self, r: usize, s: usize) -> Role {
        self.role(r, s).unwrap_or(Role::Viewer)
    }

    fn is_member(&self, r: usize, s: usize) -> bool {
        self.rooms.get(&r).is_some_and(|m| m.contains_key(&s))
    }

    fn members(&self, r: usize) -> Vec<usize> {
        self.rooms
            .get(&r)
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default()
    }

    fn room_status(&self, r: usize) -> RoomStatus {
        self.status.get(&r).copied().unwrap_or(RoomStatus::Active)
    }

    /// What `Engine::room` shows of the room: status, visibility, entity.
    /// What `Engine::room` shows of the room (status, visibility, participants,
    /// entity) with its members (slots) and locks (field=slot).
    fn room_view(&self, r: usize) -> String {
        if !self.exists.contains(&r) {
            return "none".into();
        }
        let parts: Vec<String> = self
            .roles
            .iter()
            .filter(|((rr, _), _)| *rr == r)
            .map(|((_, u), role)| format!("u{u}={role:?}"))
            .collect();
        let mut locks: Vec<String> = self
            .locks
            .iter()
            .filter(|((rr, _), _)| *rr == r)
            .map(|((_, f), s)| format!("{}={s}", FIELDS[*f]))
            .collect();
        locks.sort();
        format!(
            "{:?} {:?} {parts:?} {} members {:?} locks {locks:?}",
            self.room_status(r),
            if self.private.contains(&r) {
                Visibility::Private
            } else {
                Visibility::Open
            },
            self.entity_reply(r),
            self.members(r)
        )
    }

    /// What a `PRESENCE` of the room shows (as `World::presence`).
    fn presence(&self, r: usize) -> String {
        let e = self.entity.get(&r).copied().unwrap_or_default();
        let mut locks: Vec<String> = self
            .locks
            .iter()
            .filter(|((rr, _), _)| *rr == r)
            .map(|((_, f), s)| format!("{}={s}", FIELDS[*f]))
            .collect();
        locks.sort();
        let sessions: Vec<String> = self
            .rooms
            .get(&r)
            .into_iter()
            .flatten()
            .map(|(s, st)| format!("{s}={st}"))
            .collect();
        format!(
            "stale={} busy={:?} v={} count={} locks {locks:?} sessions {sessions:?}",
            e.stale,
            e.busy.map(|u| format!("u{u}")),
            e.version,
            sessions.len()
        )
    }

    fn entity_reply(&self, r: usize) -> String {
        let e = self.entity.get(&r).copied().unwrap_or_default();
        let busy = e.busy.map(|u| format!("u{u}"));
        entity_str(ROOMS[r], e.stale, busy.as_deref(), e.version)
    }

    /// The node's kick (`close_and_end`): the session leaves every room it is
    /// in and its user loses it.
    fn kick(&mut self, s: usize) -> String {
        let mut left = vec![];
        for (r, m) in self.rooms.iter_mut() {
            if m.remove(&s).is_some() {
                left.push(*r);
            }
        }
        self.locks.retain(|_, o| *o != s);
        let change = self.status_change(s, |l| {
            l.remove(&s);
        });
        format!("; kick {s}: left {left:?} {change}")
    }

    /// After a participant or visibility change (`reapply_roles`): members with
    /// no role any more are evicted (and kicked), locks of the others now below
    /// operator are released. An evicted member keeps its (operator) role until
    /// its kick, so its locks go with its leave.
    fn access_changed(&mut self, r: usize) -> String {
        let evicted: Vec<usize> = self
            .members(r)
            .into_iter()
            .filter(|&s| self.role(r, s).is_none())
            .collect();
        let gone: Vec<(usize, usize)> = self
            .locks
            .iter()
            .filter(|((rr, _), o)| {
                *rr == r
                    && !evicted.contains(o)
                    && self.role(r, **o).is_some_and(|x| x < Role::Operator)
            })
            .map(|(k, _)| *k)
            .collect();
        let mut lost: Vec<String> = gone.iter().map(|(_, f)| FIELDS[*f].to_string()).collect();
        for k in &gone {
            self.locks.remove(k);
        }
        lost.sort();
        let mut out = format!("released {lost:?} evicted {evicted:?}");
        for s in evicted {
            out += &self.kick(s);
        }
        out
    }

    /// The room is dropped with everything it held.
    fn drop_room(&mut self, r: usize) {
        self.rooms.remove(&r);
        self.exists.remove(&r);
        self.status.remove(&r);
        self.private.remove(&r);
        self.roles.retain(|(rr, _), _| *rr != r);
        self.locks.retain(|(rr, _), _| *rr != r);
        self.entity.remove(&r);
    }

    /// The reply the engines must give, as a short string.
    fn apply(&mut self, op: &Op) -> String {
        match *op {
            Op::Join(s, r, st) => {
                let role = self.role(r, s);
                let closed = self.room_status(r) != RoomStatus::Active;
                let room = self.rooms.entry(r).or_default();
                if room.contains_key(&s) {
                    "already".into()
                } else if closed {
                    "err room_closed".into()
                } else if role.is_none_or(|x| st.is_some() && x < Role::Commenter) {
                    "err forbidden".into()
                } else if r == 0 && room.len() >= SMALL_CAPACITY as usize {
                    "err room_full".into()
                } else {
                    let occupied = room.is_empty();
                    room.insert(s, st.map(|v| json!({"v": v})).unwrap_or(json!({})));
                    self.exists.insert(r);
                    format!("joined occupied={occupied}")
                }
            }
            Op::Leave(s, r) => {
                let room = self.rooms.entry(r).or_default();
                if room.remove(&s).is_none() {
                    return "left false".into();
                }
                let vacated = room.is_empty();
                let mut released: Vec<&str> = self
                    .locks
                    .iter()
                    .filter(|((rr, _), o)| *rr == r && **o == s)
                    .map(|((_, f), _)| FIELDS[*f])
                    .collect();
                released.sort();
                self.locks.retain(|(rr, _), o| !(*rr == r && *o == s));
                format!("left true vacated={vacated} released {released:?}")
            }
            Op::State(s, r, v) => {
                let role = self.member_role(r, s);
                match self.rooms.entry(r).or_default().get_mut(&s) {
                    None => "err not_subscribed".into(),
                    Some(st) if *st == json!({"v": v}) => "ok unchanged".into(),
                    Some(_) if role < Role::Commenter => "err forbidden".into(),
                    Some(st) => {
                        *st = json!({"v": v});
                        "ok changed".into()
                    }
                }
            }
            Op::Touch(..) | Op::Flush(_) => "-".into(),
            Op::Lock(s, r, f) => {
                if !self.is_member(r, s) {
                    return "err not_subscribed".into();
                }
                if self.member_role(r, s) < Role::Operator {
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
            Op::LateLock(s, r, f) => {
                if !self.is_member(r, s) {
                    return "err not_subscribed".into();
                }
                if self.member_role(r, s) < Role::Operator {
                    return "err forbidden".into();
                }
                match self.locks.insert((r, f), s) {
                    Some(o) if o != s => format!("took over from {o}"),
                    _ => "acquired".into(),
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
            Op::Timeout(s) => format!("timed out{}", self.kick(s)),
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
                self.access_changed(r)
            }
            Op::Maintenance(r, on) => {
                if !self.exists.contains(&r) {
                    return "err not_found".into();
                }
                let st = if on {
                    RoomStatus::Maintenance
                } else {
                    RoomStatus::Active
                };
                self.status.insert(r, st);
                "ok".into()
            }
            Op::Visibility(r, private) => {
                if !self.exists.contains(&r) {
                    return "err not_found".into();
                }
                if private {
                    self.private.insert(r);
                } else {
                    self.private.remove(&r);
                }
                self.access_changed(r)
            }
            Op::Close(r) => {
                if !self.exists.contains(&r) {
                    return "err not_found".into();
                }
                self.status.insert(r, RoomStatus::Closed);
                let mut out = "closed".to_string();
                for s in self.members(r) {
                    out += &self.kick(s);
                }
                out
            }
            Op::Delete(r) => {
                if !self.exists.contains(&r) {
                    return "deleted none".into();
                }
                let members = self.members(r);
                self.drop_room(r);
                let mut out = format!("deleted {members:?}");
                for s in members {
                    out += &self.kick(s);
                }
                out
            }
            Op::Mutating(r, u) => {
                self.exists.insert(r);
                let e = self.entity.entry(r).or_default();
                e.stale = true;
                e.busy = Some(u);
                self.entity_reply(r)
            }
            Op::Mutated(r) => {
                self.exists.insert(r);
                let e = self.entity.entry(r).or_default();
                e.stale = false;
                e.busy = None;
                e.version += 1;
                self.entity_reply(r)
            }
            Op::ExpireStale(r, late) => {
                let due = self.exists.contains(&r)
                    && late
                    && self.entity.get(&r).is_some_and(|e| e.stale);
                if !due {
                    return "unchanged".into();
                }
                let e = self.entity.entry(r).or_default();
                e.stale = false;
                e.busy = None;
                self.entity_reply(r)
            }
            Op::Resume(s) => {
                let rooms: Vec<usize> =
                    (0..ROOMS.len()).filter(|&r| self.is_member(r, s)).collect();
                let subs: Vec<String> = rooms
                    .iter()
                    .map(|&r| self.apply(&Op::Join(s, r, None)))
                    .collect();
                format!("resumed {rooms:?} {subs:?}")
            }
        }
    }
}

struct World {
    /// Node 0's engine: room-level operations go there.
    engine: Arc<dyn Engine>,
    /// One engine per node: two on Redis (one prefix), one on memory.
    engines: Vec<Arc<dyn Engine>>,
    /// The node each session is on (a resume on Redis moves it).
    node: Vec<usize>,
    recorder: Arc<Recorder>,
    tenant: TenantId,
    sessions: Vec<(SessionId, UserId)>,
    /// The rooms each session joined, as the node's session handle keeps them:
    /// a kick leaves all of them.
    joined: Vec<BTreeSet<usize>>,
}

impl World {
    /// The engine of the node session `s` is on.
    fn at(&self, s: usize) -> Arc<dyn Engine> {
        self.engines[self.node[s]].clone()
    }

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
        let meta = SessionMeta::bare(
            id.clone(),
            self.tenant.clone(),
            user.clone(),
            Arc::new(AtomicU8::new(Status::Online.as_u8())),
        );
        Member::new(Arc::new(meta), SystemTime::now(), state, false)
    }

    fn slot(&self, id: &SessionId) -> usize {
        self.sessions.iter().position(|(s, _)| s == id).unwrap()
    }

    fn entity(v: &EntityView) -> String {
        entity_str(
            &v.room,
            v.stale,
            v.busy_by.as_ref().map(|u| u.as_str()),
            v.version,
        )
    }

    /// What a `PRESENCE` frame shows (as `Model::presence`).
    fn presence(&self, m: &Value) -> String {
        let slot = |v: &Value| self.slot(&SessionId::parse(v.as_str().unwrap()).unwrap());
        let locks: Vec<String> = m["locks"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(f, o)| format!("{f}={}", slot(&o["sessionId"])))
            .collect();
        let mut sessions: Vec<(usize, String)> = m["users"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|u| u["sessions"].as_array().unwrap())
            .map(|x| (slot(&x["sessionId"]), x["state"].to_string()))
            .collect();
        sessions.sort();
        let sessions: Vec<String> = sessions.iter().map(|(s, st)| format!("{s}={st}")).collect();
        format!(
            "stale={} busy={:?} v={} count={} locks {locks:?} sessions {sessions:?}",
            m["stale"].as_bool().unwrap(),
            m["busyBy"].as_str().map(String::from),
            m["version"],
            m["count"]
        )
    }

    /// What `Engine::room` shows of the room (as `Model::room_view`).
    async fn room_view(&self, r: usize) -> String {
        let id = self.room(r);
        let Some(s) = self.engine.room(&id).await.unwrap() else {
            return "none".into();
        };
        let parts: Vec<String> = s
            .settings
            .participants
            .iter()
            .map(|(u, role)| format!("{}={role:?}", u.as_str()))
            .collect();
        let mut members: Vec<usize> = self
            .engine
            .members(&id)
            .await
            .unwrap()
            .iter()
            .map(|m| self.slot(m))
            .collect();
        members.sort();
        let locks: Vec<String> = self
            .engine
            .locks(&id)
            .await
            .unwrap()
            .unwrap_or_default()
            .iter()
            .map(|(f, o)| format!("{f}={}", self.slot(&o.session_id)))
            .collect();
        format!(
            "{:?} {:?} {parts:?} {} members {members:?} locks {locks:?}",
            s.settings.status,
            s.settings.visibility,
            Self::entity(&s.entity)
        )
    }

    /// The node's kick (`kick_sessions` -> `close_and_end` -> `end_session`):
    /// the session leaves every room it joined (reason `kicked`), then its user
    /// loses it.
    async fn kick(&mut self, s: usize) -> String {
        self.end(s, LeaveReason::Kicked).await
    }

    /// The node's `end_session` for `reason` (a kick, a timeout).
    async fn end(&mut self, s: usize, reason: LeaveReason) -> String {
        let sid = self.sessions[s].0.clone();
        let mut left = vec![];
        for r in std::mem::take(&mut self.joined[s]) {
            let l = self
                .at(s)
                .leave(&self.room(r), &sid, reason, Instant::now())
                .await
                .unwrap();
            if l.is_some() {
                left.push(r);
            }
        }
        let c = self
            .engine
            .user_detach(&self.user(s), &sid, SystemTime::now())
            .await
            .unwrap();
        format!("; kick {s}: left {left:?} {:?}->{:?}", c.before, c.after)
    }

    /// The node's `access_changed`: evicted sessions are kicked (in slot order,
    /// as the model does; the node goes in the engine's order).
    async fn access_changed(&mut self, c: AccessChange) -> String {
        let mut lost: Vec<String> = c.released_locks.into_iter().map(|l| l.field).collect();
        lost.sort();
        let mut evicted: Vec<usize> = c.evicted.iter().map(|id| self.slot(id)).collect();
        evicted.sort();
        let mut out = format!("released {lost:?} evicted {evicted:?}");
        for s in evicted {
            out += &self.kick(s).await;
        }
        out
    }

    /// A `SUB` of session `s` (with state `st`), through its node.
    async fn join(&mut self, s: usize, r: usize, st: Option<i64>) -> String {
        let user = self.sessions[s].1.clone();
        let (open_role, is_admin) = token(s);
        let actor = Actor {
            user: &user,
            open_role,
            is_admin,
        };
        let state = st.map(|v| json!({"v": v})).unwrap_or(json!({}));
        match self
            .at(s)
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
            Ok(j) => {
                self.joined[s].insert(r);
                format!("joined occupied={}", j.occupied)
            }
            Err(err) => code(err),
        }
    }

    /// The node's resume by `clientId` (`open_session`), then the client's
    /// re-`SUB` of each room.
    async fn resume(&mut self, s: usize) -> String {
        let sid = self.sessions[s].0.clone();
        let mut rooms: Vec<usize> = if self.engines.len() > 1 {
            let (from, to) = (self.node[s], 1 - self.node[s]);
            let taken = self.engines[to]
                .take_over(&self.user(s), &format!("c{s}"))
                .await
                .unwrap();
            let Some((id, rooms)) = taken else {
                return "no session to take over".into();
            };
            if id != sid {
                return format!("took over {id}, not {sid}");
            }
            self.engines[from].forget_local(&sid, &rooms).await;
            self.engines[to].adopt_local(&sid, &rooms).await;
            self.node[s] = to;
            rooms
                .iter()
                .map(|r| ROOMS.iter().position(|k| *k == r.key.as_str()).unwrap())
                .collect()
        } else {
            self.joined[s].iter().copied().collect()
        };
        rooms.sort();
        let mut subs = vec![];
        for &r in &rooms {
            subs.push(self.join(s, r, None).await);
        }
        format!("resumed {rooms:?} {subs:?}")
    }

    async fn run(&mut self, op: &Op) -> String {
        let e = op
            .session()
            .map_or_else(|| self.engine.clone(), |s| self.at(s));
        match *op {
            Op::Join(s, r, st) => self.join(s, r, st).await,
            Op::Leave(s, r) => {
                self.joined[s].remove(&r);
                let left = e
                    .leave(
                        &self.room(r),
                        &self.sessions[s].0,
                        LeaveReason::Left,
                        Instant::now(),
                    )
                    .await
                    .unwrap();
                match left {
                    None => "left false".into(),
                    Some(l) => {
                        let mut released = l.released_locks;
                        released.sort();
                        format!("left true vacated={} released {released:?}", l.now_empty)
                    }
                }
            }
            Op::State(s, r, v) => match e
                .set_state(&self.room(r), &self.sessions[s].0, json!({"v": v}))
                .await
            {
                Ok(None) => "ok unchanged".into(),
                Ok(Some(_)) => "ok changed".into(),
                Err(err) => code(err),
            },
            Op::Touch(s, r) => {
                e.touch(&self.room(r), &self.sessions[s].0, Status::Online)
                    .await
                    .unwrap();
                "-".into()
            }
            Op::Lock(s, r, f) | Op::LateLock(s, r, f) => {
                let now = if matches!(op, Op::LateLock(..)) {
                    Instant::now() + LOCK_TTL * 2
                } else {
                    Instant::now()
                };
                match e
                    .lock(&self.room(r), FIELDS[f], &self.sessions[s].0, now, LOCK_TTL)
                    .await
                {
                    Ok(LockOutcome::Acquired(_)) => "acquired".into(),
                    Ok(LockOutcome::TakenOver(_, old)) => {
                        format!("took over from {}", self.slot(&old.session))
                    }
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
                // Past every lock's TTL, also those of `LateLock`.
                let now = if late {
                    Instant::now() + LOCK_TTL * 10
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
                let c = e
                    .user_attach(&self.user(s), &self.sessions[s].0, status(on), "web")
                    .await
                    .unwrap();
                format!("{:?}->{:?}", c.before, c.after)
            }
            Op::Timeout(s) => format!("timed out{}", self.end(s, LeaveReason::Timeout).await),
            Op::Detach(s) => {
                let c = e
                    .user_detach(&self.user(s), &self.sessions[s].0, SystemTime::now())
                    .await
                    .unwrap();
                format!("{:?}->{:?}", c.before, c.after)
            }
            Op::SetStatus(s, on) => {
                let c = e
                    .user_set_status(&self.user(s), &self.sessions[s].0, status(on))
                    .await
                    .unwrap();
                format!("{:?}->{:?}", c.before, c.after)
            }
            Op::Participant(r, u, role) => {
                let user = UserId::parse(&format!("u{u}")).unwrap();
                match e.set_participant(&self.room(r), user, role).await {
                    Ok(c) => self.access_changed(c).await,
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
            Op::Visibility(r, private) => {
                let patch = RoomPatch {
                    visibility: Some(if private {
                        Visibility::Private
                    } else {
                        Visibility::Open
                    }),
                    ..RoomPatch::default()
                };
                match e.update_room(&self.room(r), patch).await {
                    Ok((_, c)) => self.access_changed(c).await,
                    Err(err) => code(err),
                }
            }
            Op::Close(r) => {
                let patch = RoomPatch {
                    status: Some(RoomStatus::Closed),
                    ..RoomPatch::default()
                };
                match e.update_room(&self.room(r), patch).await {
                    Ok((_, c)) => {
                        // No visibility in the patch: nothing to reapply.
                        assert_eq!(c, AccessChange::default());
                        let mut members: Vec<usize> = e
                            .members(&self.room(r))
                            .await
                            .unwrap()
                            .iter()
                            .map(|id| self.slot(id))
                            .collect();
                        members.sort();
                        let mut out = "closed".to_string();
                        for s in members {
                            out += &self.kick(s).await;
                        }
                        out
                    }
                    Err(err) => code(err),
                }
            }
            Op::Delete(r) => match e.delete_room(&self.room(r)).await.unwrap() {
                None => "deleted none".into(),
                Some(ids) => {
                    let mut members: Vec<usize> = ids.iter().map(|id| self.slot(id)).collect();
                    members.sort();
                    let mut out = format!("deleted {members:?}");
                    for s in members {
                        out += &self.kick(s).await;
                    }
                    out
                }
            },
            Op::Mutating(r, u) => {
                let by = UserId::parse(&format!("u{u}")).unwrap();
                let v = e
                    .mutating(
                        &self.room(r),
                        Self::settings(r),
                        by,
                        Instant::now(),
                        STALE_TTL,
                        None,
                    )
                    .await
                    .unwrap()
                    .expect("an event without a time is never superseded");
                Self::entity(&v)
            }
            Op::Mutated(r) => Self::entity(
                &e.mutated(&self.room(r), Self::settings(r), None)
                    .await
                    .unwrap()
                    .expect("an event without a time is never superseded"),
            ),
            Op::ExpireStale(r, late) => {
                let now = if late {
                    Instant::now() + STALE_TTL * 2
                } else {
                    Instant::now()
                };
                match e.expire_stale(&self.room(r), now).await.unwrap() {
                    Some(v) => Self::entity(&v),
                    None => "unchanged".into(),
                }
            }
            Op::Resume(s) => self.resume(s).await,
        }
    }
}

/// An engine's refusal as a reply: code and message.
fn code(e: roster::engine::EngineError) -> String {
    let e = roster::core::error::CoreError::from(e);
    format!("err {}\u{1f}{}", e.code.as_str(), e.message)
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

/// The nodes' engines: one on memory; two on Redis, sharing a key prefix (and
/// the recorder, so what either delivers is seen).
async fn engines(kind: &str, recorder: Arc<Recorder>) -> Vec<Arc<dyn Engine>> {
    let clock = Clock::new();
    if kind == "memory" {
        return vec![Arc::new(MemoryEngine::new(recorder, clock))];
    }
    let url =
        std::env::var("ROSTER_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!(
        "model{}x{}",
        std::process::id(),
        rand::rng().random::<u32>()
    );
    let mut out: Vec<Arc<dyn Engine>> = vec![];
    for _ in 0..2 {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        // The receiver is dropped: the driver does what a node does on an
        // engine event (a take-over: `forget_local` on the old node).
        out.push(Arc::new(
            RedisEngine::connect(
                &url,
                &prefix,
                recorder.clone(),
                clock,
                tx,
                Duration::from_secs(1),
            )
            .await
            .unwrap_or_else(|e| panic!("redis at {url}: {e}")),
        ));
    }
    out
}

/// Distinguishes the runs of one process (shrinking reruns a case many times).
static RUN: AtomicU64 = AtomicU64::new(0);

/// Runs one case on fresh engine state (a fresh tenant, and for Redis a fresh
/// key prefix); answers every reply in full (error messages included).
async fn run_case(kind: &str, ops: &[Op]) -> Result<Vec<String>, String> {
    let recorder = Arc::new(Recorder::default());
    let tenant = format!(
        "m{}r{}n{}",
        std::process::id(),
        rand::rng().random::<u32>(),
        RUN.fetch_add(1, Ordering::Relaxed)
    );
    let engines = engines(kind, recorder.clone()).await;
    let mut w = World {
        engine: engines[0].clone(),
        engines,
        node: vec![0; SESSIONS],
        recorder,
        tenant: TenantId::parse(&tenant).unwrap(),
        sessions: (0..SESSIONS)
            .map(|i| {
                (
                    SessionId::new_random(),
                    UserId::parse(&format!("u{}", i % 3)).unwrap(),
                )
            })
            .collect(),
        joined: vec![BTreeSet::new(); SESSIONS],
    };
    // Each session said `HELLO` with a `clientId` on node 0 (`open_session`).
    for s in 0..SESSIONS {
        w.engine
            .session_opened(&w.sessions[s].0, &w.user(s), Some(&format!("c{s}")))
            .await
            .unwrap();
    }
    let mut model = Model::default();
    let mut replies = vec![];
    for (n, op) in ops.iter().enumerate() {
        let want = model.apply(op);
        let sent_before = w.recorder.0.lock().unwrap().len();
        let got = w.run(op).await;
        // The memory engine delivers inside the call: whatever this op sent went
        // to members of the room (never to a session evicted, kicked or gone).
        if kind == "memory" {
            let sent = w.recorder.0.lock().unwrap()[sent_before..].to_vec();
            for (to, m) in sent {
                let r = ROOMS.iter().position(|k| m["room"] == *k).unwrap();
                let s = w.slot(&to);
                if !model.is_member(r, s) {
                    return Err(format!(
                        "op {n} {op:?}: session {s}, no member of room {r}, was sent {m}"
                    ));
                }
            }
        }
        // The model knows codes; the engines must also agree on the wording.
        let code = got.split('\u{1f}').next().unwrap_or_default();
        if code != want {
            return Err(format!("op {n} {op:?}: engine {got:?}, model {want:?}"));
        }
        // A member's SUB is answered (inside the call) with a PRESENCE that shows
        // the room as the model holds it.
        let answered = code == "already" || code.starts_with("joined ");
        if let (Op::Join(s, r, _), true) = (op, answered) {
            let sid = &w.sessions[*s].0;
            let sent = w.recorder.0.lock().unwrap()[sent_before..].to_vec();
            let snap = sent
                .iter()
                .rev()
                .find(|(to, m)| to == sid && m["type"] == "PRESENCE" && m["room"] == ROOMS[*r])
                .map(|(_, m)| w.presence(m))
                .ok_or_else(|| format!("op {n} {op:?}: no PRESENCE sent"))?;
            let want = model.presence(*r);
            if snap != want {
                return Err(format!("op {n} {op:?}: PRESENCE {snap:?}, model {want:?}"));
            }
        }
        replies.push(got);
        // The room's status, visibility, participants, entity state, members
        // and locks are the model's.
        for r in 0..ROOMS.len() {
            let (got, want) = (w.room_view(r).await, model.room_view(r));
            if got != want {
                return Err(format!(
                    "after op {n} {op:?}: room {r} is {got:?}, model {want:?}"
                ));
            }
        }
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

/// One case against one engine: the model's replies, and for an engine other
/// than memory the same replies as memory, word for word. A panic counts as a
/// failure (so shrinking goes on past one).
async fn check(kind: &'static str, ops: Vec<Op>) -> Result<(), String> {
    let run = tokio::spawn(async move {
        let replies = run_case(kind, &ops).await?;
        if kind != "memory" {
            // Twins: the same operations get the same replies, word for word.
            let memory = run_case("memory", &ops).await?;
            for (n, (a, b)) in replies.iter().zip(&memory).enumerate() {
                if a != b {
                    return Err(format!("op {n}: {kind} replied {a:?}, memory {b:?}"));
                }
            }
        }
        Ok(())
    });
    run.await.unwrap_or_else(|e| Err(format!("panicked: {e}")))
}

/// Shrinks a failing op list: removes chunks of halving size (down to single
/// ops) while the case still fails, each try on fresh engine state. Bounded in
/// runs and time; answers the smallest failing list found and its failure.
async fn shrink(kind: &'static str, mut ops: Vec<Op>, mut err: String) -> (Vec<Op>, String) {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut runs = 0;
    let mut chunk = ops.len().div_ceil(2);
    while chunk > 0 && runs < 1000 && Instant::now() < deadline {
        let mut removed = false;
        let mut i = 0;
        while i < ops.len() && runs < 1000 && Instant::now() < deadline {
            let mut fewer = ops.clone();
            fewer.drain(i..(i + chunk).min(ops.len()));
            runs += 1;
            match check(kind, fewer.clone()).await {
                Err(e) => {
                    (ops, err) = (fewer, e);
                    removed = true;
                }
                Ok(()) => i += chunk,
            }
        }
        if !removed {
            chunk /= 2;
        }
    }
    (ops, err)
}

/// Runs `ops` on `kind`; on failure shrinks them and panics with the seed (if
/// any) and the smallest failing list, printed so that it pastes into a
/// regression test (`use Op::*; use Role::*;`).
async fn run_ops(kind: &'static str, seed: Option<u64>, ops: Vec<Op>) {
    let Err(e) = check(kind, ops.clone()).await else {
        return;
    };
    let n = ops.len();
    let (small, small_err) = shrink(kind, ops, e.clone()).await;
    let seed = match seed {
        Some(s) => format!("seed {s} (ROSTER_MODEL_SEED={s})"),
        None => "explicit ops".into(),
    };
    panic!(
        "{kind} engine, {seed}: {e}\nshrunk from {n} to {} ops: {small_err}\nops: vec!{small:?}",
        small.len()
    )
}

async fn run_engine(kind: &'static str) {
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
        run_ops(kind, Some(seed), gen(&mut StdRng::seed_from_u64(seed))).await;
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

/// The new room-admin and lifecycle operations, once each in a known order
/// (random cases reach some only rarely): a private room evicts the
/// non-participants and refuses their joins; a participant removed from it is
/// kicked with its locks; closing kicks everyone and refuses joins until
/// reopened; a deleted room comes back fresh (open, no roles, version 0).
fn admin_and_lifecycle_ops() -> Vec<Op> {
    use Op::*;
    use Role::*;
    vec![
        Attach(0, true),
        Attach(1, false),
        Join(0, 1, Some(1)),
        Join(1, 1, None),
        Join(2, 1, None),
        Participant(1, 0, Some(Operator)),
        Lock(0, 1, 0),
        Lock(2, 1, 1),
        Mutating(1, 2),
        Visibility(1, true),
        Join(1, 1, None),
        Join(3, 1, None),
        State(0, 1, 2),
        Participant(1, 1, Some(Viewer)),
        Join(1, 1, Some(3)),
        Join(1, 1, None),
        Lock(1, 1, 1),
        ExpireStale(1, false),
        ExpireStale(1, true),
        Mutating(1, 0),
        Mutated(1),
        Participant(1, 0, None),
        Visibility(1, false),
        Join(4, 1, None),
        Close(1),
        Join(4, 1, None),
        Maintenance(1, false),
        Join(4, 1, None),
        Mutated(1),
        Delete(1),
        Delete(1),
        ExpireStale(1, true),
        Participant(1, 0, Some(Viewer)),
        Join(0, 1, Some(1)),
        Mutating(0, 1),
        Flush(1),
        Flush(0),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_admin_and_lifecycle_on_memory() {
    run_ops("memory", None, admin_and_lifecycle_ops()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_admin_and_lifecycle_on_redis() {
    run_ops("redis", None, admin_and_lifecycle_ops()).await;
}

/// A lock past its TTL that no sweeper expired yet (its owner's node is slow
/// or gone) is taken over by the next `LOCK`, which names the previous owner:
/// the node announces that lock's end before the new one (event stream: no
/// `lock_acquired` without the `lock_released` before it).
fn late_lock_ops() -> Vec<Op> {
    use Op::*;
    vec![
        Join(0, 0, None),
        Join(1, 0, None),
        Lock(0, 0, 0),
        Lock(1, 0, 0),
        LateLock(1, 0, 0),
        Lock(0, 0, 0),
        LateLock(1, 0, 0),
        ExpireLock(0, 0, true),
        LateLock(0, 0, 1),
        Leave(0, 0),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lock_is_taken_over_naming_its_owner_on_memory() {
    run_ops("memory", None, late_lock_ops()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lock_is_taken_over_naming_its_owner_on_redis() {
    run_ops("redis", None, late_lock_ops()).await;
}

/// The event log's answers to one script of calls, as text: the twins must
/// give the same (numbering across two engines of one cluster, trimming to the
/// limit, forward-only cursors, one lease holder at a time).
async fn event_log_script(kind: &str) -> Vec<String> {
    let recorder = Arc::new(Recorder::default());
    let es = engines(kind, recorder).await;
    let (a, b) = (es[0].clone(), es[es.len() - 1].clone());
    let t = TenantId::parse(&format!(
        "ev{}x{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ))
    .unwrap();
    let other = TenantId::parse(&format!("{t}o")).unwrap();
    let ev = |s: &str| s.to_string();
    let mut out = vec![];
    out.push(format!("head {}", a.event_head(&t).await.unwrap()));
    out.push(format!(
        "first {}",
        a.append_events(&t, &[ev("a1"), ev("a2")], 100)
            .await
            .unwrap()
    ));
    out.push(format!(
        "first {}",
        b.append_events(&t, &[ev("b3")], 100).await.unwrap()
    ));
    out.push(format!(
        "first {}",
        b.append_events(&other, &[ev("o1")], 100).await.unwrap()
    ));
    out.push(format!(
        "read {:?}",
        a.read_events(&t, 0, 10).await.unwrap()
    ));
    out.push(format!("read {:?}", b.read_events(&t, 1, 1).await.unwrap()));
    out.push(format!("head {}", b.event_head(&t).await.unwrap()));
    // (Named by role: each run has its own tenants.)
    let mut tenants: Vec<&str> = a
        .event_tenants()
        .await
        .unwrap()
        .iter()
        .filter_map(|x| {
            (x == &t)
                .then_some("t")
                .or((x == &other).then_some("other"))
        })
        .collect();
    tenants.sort();
    out.push(format!("tenants {tenants:?}"));
    // Redis trims approximately (`MAXLEN ~`): ask for a clear excess.
    let many: Vec<String> = (0..300).map(|i| format!("m{i}")).collect();
    a.append_events(&t, &many, 5).await.unwrap();
    let kept = a.read_events(&t, 0, 1000).await.unwrap();
    out.push(format!(
        "trimmed {} last {:?}",
        kept.len() < 303,
        kept.last()
    ));
    out.push(format!("cursor {}", a.event_cursor(&t, "q").await.unwrap()));
    a.set_event_cursor(&t, "q", 7).await.unwrap();
    b.set_event_cursor(&t, "q", 3).await.unwrap();
    out.push(format!("cursor {}", b.event_cursor(&t, "q").await.unwrap()));
    let ttl = Duration::from_secs(30);
    out.push(format!(
        "lease a {}",
        a.hold_event_lease(&t, "A", ttl).await.unwrap()
    ));
    out.push(format!(
        "lease b {}",
        b.hold_event_lease(&t, "B", ttl).await.unwrap()
    ));
    out.push(format!(
        "lease a again {}",
        a.hold_event_lease(&t, "A", ttl).await.unwrap()
    ));
    b.release_event_lease(&t, "B").await.unwrap();
    out.push(format!(
        "lease b after b's release {}",
        b.hold_event_lease(&t, "B", ttl).await.unwrap()
    ));
    a.release_event_lease(&t, "A").await.unwrap();
    out.push(format!(
        "lease b after a's release {}",
        b.hold_event_lease(&t, "B", ttl).await.unwrap()
    ));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_log_twins_answer_alike() {
    let memory = event_log_script("memory").await;
    assert_eq!(memory[1], "first 1");
    assert_eq!(
        memory[2], "first 3",
        "one sequence across the cluster's engines"
    );
    assert!(memory.iter().any(|l| l == "cursor 7"), "{memory:?}");
    assert_eq!(memory, event_log_script("redis").await);
}

/// Lifecycle events with their own time: the twins supersede the same ones
/// (a MUTATED read before its MUTATING; a tie goes to MUTATED).
async fn lifecycle_order_script(kind: &str) -> Vec<String> {
    let es = engines(kind, Arc::new(Recorder::default())).await;
    let (a, b) = (es[0].clone(), es[es.len() - 1].clone());
    let t = TenantId::parse(&format!(
        "lo{}x{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ))
    .unwrap();
    let room = RoomId {
        tenant: t,
        key: RoomKey::parse("Order:1").unwrap(),
    };
    let settings = || {
        let t = seeded()
            .into_iter()
            .find(|t| t.code.0 == "GENERIC")
            .unwrap();
        RoomSettings::from_type(&t, None, false, SystemTime::now())
    };
    let by = || UserId::parse("etl").unwrap();
    let now = Instant::now();
    let show = |v: Option<EntityView>| match v {
        Some(v) => format!(
            "{} {:?} {}",
            v.stale,
            v.busy_by.map(|u| u.to_string()),
            v.version
        ),
        None => "superseded".into(),
    };
    vec![
        show(a.mutated(&room, settings(), Some(2_000)).await.unwrap()),
        show(
            b.mutating(&room, settings(), by(), now, STALE_TTL, Some(1_000))
                .await
                .unwrap(),
        ),
        show(
            a.mutating(&room, settings(), by(), now, STALE_TTL, Some(2_000))
                .await
                .unwrap(),
        ),
        show(
            b.mutating(&room, settings(), by(), now, STALE_TTL, Some(2_001))
                .await
                .unwrap(),
        ),
        show(a.mutated(&room, settings(), Some(2_001)).await.unwrap()),
        show(b.mutated(&room, settings(), Some(1_500)).await.unwrap()),
        show(
            a.mutating(&room, settings(), by(), now, STALE_TTL, None)
                .await
                .unwrap(),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn superseded_lifecycle_events_are_the_same_on_both_engines() {
    let memory = lifecycle_order_script("memory").await;
    assert_eq!(
        memory,
        [
            "false None 1",
            "superseded",
            "superseded",
            "true Some(\"etl\") 1",
            "false None 2",
            "superseded",
            "true Some(\"etl\") 2"
        ]
    );
    assert_eq!(memory, lifecycle_order_script("redis").await);
}
