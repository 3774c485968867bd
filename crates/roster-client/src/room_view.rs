//! [`RoomView`]: a pure, local model of one room's roster, built from a `PRESENCE`
//! snapshot and kept current with `PRESENCE_DIFF`s, as a client SDK would.
//!
//! It exists so tests and the benchmark can check convergence (every member ends up
//! seeing the same sessions as the server) and catch `seq` gaps. It does no I/O.
//! Changes the view cannot explain (an update of an unknown session, a leave of a
//! session it never saw, a duplicate join) are applied leniently but recorded in
//! [`RoomView::anomalies`], so a test can assert there were none.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// Why a message could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ViewError {
    /// A diff's `seq` skipped ahead: the client must re-`SUB` for a fresh snapshot.
    #[error("seq gap in room {room}: expected {expected}, got {got}")]
    Gap {
        room: String,
        expected: u64,
        got: u64,
    },
    /// A diff arrived before any snapshot.
    #[error("PRESENCE_DIFF for room {room} before any PRESENCE snapshot")]
    NoSnapshot { room: String },
    /// A required field is missing or has the wrong type.
    #[error("malformed {ty}: {what}")]
    Malformed { ty: String, what: String },
}

/// The name the task brief used; same type.
pub type GapError = ViewError;

/// One session present in the room.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub user_id: String,
    /// The session object as the server sent it (`sessionId`, `device`, `state`, …).
    pub session: Value,
}

impl Member {
    /// The member's `state` (cursor, activity…), `Null` when absent.
    pub fn state(&self) -> &Value {
        self.session.get("state").unwrap_or(&Value::Null)
    }
}

/// A room's roster as seen by one client.
#[derive(Debug, Clone, Default)]
pub struct RoomView {
    room: String,
    /// `None` before the snapshot, or when the snapshot carried no `seq`.
    seq: Option<u64>,
    has_snapshot: bool,
    /// By `sessionId`.
    members: BTreeMap<String, Member>,
    /// Merged status by `userId`, for users with at least one session here.
    statuses: BTreeMap<String, String>,
    anomalies: Vec<String>,
}

impl RoomView {
    /// An empty view of `room`; messages for other rooms are ignored.
    pub fn new(room: impl Into<String>) -> Self {
        Self {
            room: room.into(),
            ..Self::default()
        }
    }

    pub fn room(&self) -> &str {
        &self.room
    }

    /// The `seq` of the last snapshot or diff applied.
    pub fn seq(&self) -> Option<u64> {
        self.seq
    }

    pub fn has_snapshot(&self) -> bool {
        self.has_snapshot
    }

    /// Session ids present.
    pub fn sessions(&self) -> BTreeSet<String> {
        self.members.keys().cloned().collect()
    }

    /// User ids with at least one session present.
    pub fn users(&self) -> BTreeSet<String> {
        self.members.values().map(|m| m.user_id.clone()).collect()
    }

    /// Number of sessions present.
    pub fn count(&self) -> usize {
        self.members.len()
    }

    pub fn member(&self, session_id: &str) -> Option<&Member> {
        self.members.get(session_id)
    }

    /// The merged status the server last reported for `user_id`.
    pub fn user_status(&self, user_id: &str) -> Option<&str> {
        self.statuses.get(user_id).map(String::as_str)
    }

    /// Changes that did not fit the view (see the module docs); empty when converged cleanly.
    pub fn anomalies(&self) -> &[String] {
        &self.anomalies
    }

    /// Applies `PRESENCE` or `PRESENCE_DIFF` of this room; any other message (or
    /// another room's) is ignored. A diff with `seq` at or below the current one is
    /// stale (already in the snapshot) and ignored; one that skips ahead is a
    /// [`ViewError::Gap`] and leaves the view unchanged.
    pub fn apply(&mut self, msg: &Value) -> Result<(), ViewError> {
        let ty = msg.get("type").and_then(Value::as_str).unwrap_or("");
        if !matches!(ty, "PRESENCE" | "PRESENCE_DIFF") {
            return Ok(());
        }
        let room = msg.get("room").and_then(Value::as_str);
        if self.room.is_empty() {
            // A default view adopts the room of the first message.
            self.room = room.unwrap_or("").to_owned();
        } else if room != Some(self.room.as_str()) {
            return Ok(());
        }
        if ty == "PRESENCE" {
            self.apply_snapshot(msg)
        } else {
            self.apply_diff(msg)
        }
    }

    fn apply_snapshot(&mut self, msg: &Value) -> Result<(), ViewError> {
        let bad = |what: &str| ViewError::Malformed {
            ty: "PRESENCE".into(),
            what: what.into(),
        };
        let users = msg
            .get("users")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("users is not an array"))?;
        let mut members = BTreeMap::new();
        let mut statuses = BTreeMap::new();
        for user in users {
            let user_id = str_field(user, "userId").ok_or_else(|| bad("users[].userId missing"))?;
            let sessions = user
                .get("sessions")
                .and_then(Value::as_array)
                .ok_or_else(|| bad("users[].sessions is not an array"))?;
            for session in sessions {
                let sid = str_field(session, "sessionId")
                    .ok_or_else(|| bad("sessions[].sessionId missing"))?;
                members.insert(
                    sid.to_owned(),
                    Member {
                        user_id: user_id.to_owned(),
                        session: session.clone(),
                    },
                );
            }
            if let Some(status) = str_field(user, "status") {
                statuses.insert(user_id.to_owned(), status.to_owned());
            }
        }
        if let Some(count) = msg.get("count").and_then(Value::as_u64) {
            if count != members.len() as u64 {
                self.anomalies.push(format!(
                    "PRESENCE count {count} but {} sessions listed",
                    members.len()
                ));
            }
        }
        self.members = members;
        self.statuses = statuses;
        self.seq = msg.get("seq").and_then(Value::as_u64);
        self.has_snapshot = true;
        Ok(())
    }

    fn apply_diff(&mut self, msg: &Value) -> Result<(), ViewError> {
        let bad = |what: &str| ViewError::Malformed {
            ty: "PRESENCE_DIFF".into(),
            what: what.into(),
        };
        if !self.has_snapshot {
            return Err(ViewError::NoSnapshot {
                room: self.room.clone(),
            });
        }
        let seq = msg
            .get("seq")
            .and_then(Value::as_u64)
            .ok_or_else(|| bad("seq missing"))?;
        match self.seq {
            Some(cur) if seq <= cur => return Ok(()),
            Some(cur) if seq != cur + 1 => {
                return Err(ViewError::Gap {
                    room: self.room.clone(),
                    expected: cur + 1,
                    got: seq,
                })
            }
            _ => {}
        }
        // Validate everything before changing anything, so an error leaves the view intact.
        let list = |key: &str| -> Result<&[Value], ViewError> {
            match msg.get(key) {
                None | Some(Value::Null) => Ok(&[]),
                Some(Value::Array(a)) => Ok(a.as_slice()),
                Some(_) => Err(bad(&format!("{key} is not an array"))),
            }
        };
        let (joins, leaves, updates) = (list("joins")?, list("leaves")?, list("updates")?);
        let parse_member =
            |m: &Value| -> Result<(String, String, Option<String>, Value), ViewError> {
                let user_id = str_field(m, "userId").ok_or_else(|| bad("member userId missing"))?;
                let session = m
                    .get("session")
                    .ok_or_else(|| bad("member session missing"))?;
                let sid = str_field(session, "sessionId")
                    .ok_or_else(|| bad("session.sessionId missing"))?;
                let status = str_field(m, "status").map(str::to_owned);
                Ok((sid.to_owned(), user_id.to_owned(), status, session.clone()))
            };
        let joins = joins
            .iter()
            .map(parse_member)
            .collect::<Result<Vec<_>, _>>()?;
        let updates = updates
            .iter()
            .map(parse_member)
            .collect::<Result<Vec<_>, _>>()?;
        let leaves = leaves
            .iter()
            .map(|l| {
                let sid =
                    str_field(l, "sessionId").ok_or_else(|| bad("leaves[].sessionId missing"))?;
                Ok(sid.to_owned())
            })
            .collect::<Result<Vec<_>, ViewError>>()?;

        // Leaves apply first, then joins, then updates. A session can be in both
        // `leaves` and `joins` of one diff when it UNSUBs and re-SUBs inside one diff
        // window: the leave is the older change, so it must not undo the join. A
        // diff may also have every list empty (a joiner's copy of the diff that
        // carried its own join): it only advances `seq`.
        for sid in leaves {
            match self.members.remove(&sid) {
                None => self
                    .anomalies
                    .push(format!("seq {seq}: leave of absent session {sid}")),
                Some(gone) => {
                    if !self.members.values().any(|m| m.user_id == gone.user_id) {
                        self.statuses.remove(&gone.user_id);
                    }
                }
            }
        }
        for (sid, user_id, status, session) in joins {
            if self.members.contains_key(&sid) {
                self.anomalies
                    .push(format!("seq {seq}: join of present session {sid}"));
            }
            self.upsert(sid, user_id, status, session);
        }
        for (sid, user_id, status, session) in updates {
            if !self.members.contains_key(&sid) {
                self.anomalies
                    .push(format!("seq {seq}: update of absent session {sid}"));
            }
            self.upsert(sid, user_id, status, session);
        }
        self.seq = Some(seq);
        Ok(())
    }

    fn upsert(&mut self, sid: String, user_id: String, status: Option<String>, session: Value) {
        if let Some(status) = status {
            self.statuses.insert(user_id.clone(), status);
        }
        self.members.insert(sid, Member { user_id, session });
    }
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn snapshot(seq: u64) -> Value {
        json!({
            "type": "PRESENCE", "room": "Order:1", "seq": seq, "count": 3,
            "users": [
                {"userId": "alice", "status": "online", "sessions": [
                    {"sessionId": "s1", "device": "web", "state": {"x": 1}},
                    {"sessionId": "s2", "device": "mobile", "state": null}]},
                {"userId": "bob", "status": "away", "sessions": [{"sessionId": "s3"}]}
            ]
        })
    }

    fn member(user: &str, status: &str, sid: &str, state: Value) -> Value {
        json!({"userId": user, "status": status, "session": {"sessionId": sid, "state": state}})
    }

    fn diff(seq: u64, joins: Vec<Value>, leaves: Vec<Value>, updates: Vec<Value>) -> Value {
        json!({"type": "PRESENCE_DIFF", "room": "Order:1", "seq": seq,
               "joins": joins, "leaves": leaves, "updates": updates})
    }

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn snapshot_lists_every_session_grouped_by_user() {
        let mut v = RoomView::new("Order:1");
        v.apply(&snapshot(7)).unwrap();
        assert_eq!(v.sessions(), set(&["s1", "s2", "s3"]));
        assert_eq!(v.users(), set(&["alice", "bob"]));
        assert_eq!(v.seq(), Some(7));
        assert_eq!(v.user_status("bob"), Some("away"));
        assert_eq!(v.member("s1").unwrap().state(), &json!({"x": 1}));
        assert!(v.anomalies().is_empty());
    }

    #[test]
    fn diffs_apply_joins_updates_and_leaves_in_seq_order() {
        let mut v = RoomView::new("Order:1");
        v.apply(&snapshot(7)).unwrap();
        v.apply(&diff(
            8,
            vec![member("carol", "online", "s4", json!({}))],
            vec![],
            vec![],
        ))
        .unwrap();
        v.apply(&diff(
            9,
            vec![],
            vec![json!({"userId": "bob", "sessionId": "s3", "reason": "timeout"})],
            vec![member("alice", "away", "s1", json!({"x": 2}))],
        ))
        .unwrap();
        assert_eq!(v.sessions(), set(&["s1", "s2", "s4"]));
        assert_eq!(v.users(), set(&["alice", "carol"]));
        assert_eq!(v.user_status("alice"), Some("away"));
        assert_eq!(v.user_status("bob"), None);
        assert_eq!(v.member("s1").unwrap().state(), &json!({"x": 2}));
        assert_eq!(v.seq(), Some(9));
        assert!(v.anomalies().is_empty());
    }

    #[test]
    fn a_user_stays_while_any_session_remains() {
        let mut v = RoomView::new("Order:1");
        v.apply(&snapshot(1)).unwrap();
        v.apply(&diff(
            2,
            vec![],
            vec![json!({"userId": "alice", "sessionId": "s1", "reason": "left"})],
            vec![],
        ))
        .unwrap();
        assert_eq!(v.users(), set(&["alice", "bob"]));
        assert_eq!(v.user_status("alice"), Some("online"));
    }

    #[test]
    fn a_seq_gap_is_an_error_and_changes_nothing() {
        let mut v = RoomView::new("Order:1");
        v.apply(&snapshot(7)).unwrap();
        let err = v.apply(&diff(
            9,
            vec![member("carol", "online", "s4", json!({}))],
            vec![],
            vec![],
        ));
        assert_eq!(
            err,
            Err(ViewError::Gap {
                room: "Order:1".into(),
                expected: 8,
                got: 9
            })
        );
        assert_eq!(v.sessions(), set(&["s1", "s2", "s3"]));
        assert_eq!(v.seq(), Some(7));
    }

    #[test]
    fn a_fresh_snapshot_recovers_from_a_gap() {
        let mut v = RoomView::new("Order:1");
        v.apply(&snapshot(7)).unwrap();
        assert!(v.apply(&diff(9, vec![], vec![], vec![])).is_err());
        v.apply(&snapshot(9)).unwrap();
        v.apply(&diff(
            10,
            vec![member("carol", "online", "s4", json!({}))],
            vec![],
            vec![],
        ))
        .unwrap();
        assert_eq!(v.count(), 4);
    }

    #[test]
    fn diffs_already_in_the_snapshot_are_ignored() {
        let mut v = RoomView::new("Order:1");
        v.apply(&snapshot(7)).unwrap();
        v.apply(&diff(
            7,
            vec![member("carol", "online", "s4", json!({}))],
            vec![],
            vec![],
        ))
        .unwrap();
        assert_eq!(v.count(), 3);
        assert_eq!(v.seq(), Some(7));
    }

    #[test]
    fn a_session_that_left_and_rejoined_within_one_diff_is_present() {
        // UNSUB then SUB again inside one diff window: the server sends the session
        // in both `leaves` and `joins` of one diff. Leaves apply first.
        let mut v = RoomView::new("Order:1");
        v.apply(&snapshot(7)).unwrap();
        v.apply(&diff(
            8,
            vec![
                member("alice", "online", "s1", json!({"x": 5})),
                member("bob", "online", "s3", json!({"y": 1})),
            ],
            vec![
                json!({"userId": "alice", "sessionId": "s1", "reason": "left"}),
                json!({"userId": "bob", "sessionId": "s3", "reason": "left"}),
            ],
            vec![],
        ))
        .unwrap();
        assert_eq!(v.sessions(), set(&["s1", "s2", "s3"]));
        assert_eq!(v.users(), set(&["alice", "bob"]));
        assert_eq!(v.member("s1").unwrap().state(), &json!({"x": 5}));
        assert_eq!(v.member("s3").unwrap().state(), &json!({"y": 1}));
        // Bob's only session left and came back: his status is the re-join's.
        assert_eq!(v.user_status("bob"), Some("online"));
        assert_eq!(v.seq(), Some(8));
        assert!(v.anomalies().is_empty(), "{:?}", v.anomalies());
    }

    #[test]
    fn an_empty_diff_only_advances_seq() {
        // A joiner's copy of the diff that carried its own join has that join left
        // out, so it can have every list empty (or no lists at all).
        let mut v = RoomView::new("Order:1");
        v.apply(&snapshot(7)).unwrap();
        v.apply(&diff(8, vec![], vec![], vec![])).unwrap();
        assert_eq!(v.seq(), Some(8));
        v.apply(&json!({"type": "PRESENCE_DIFF", "room": "Order:1", "seq": 9}))
            .unwrap();
        assert_eq!(v.seq(), Some(9));
        assert_eq!(v.sessions(), set(&["s1", "s2", "s3"]));
        assert_eq!(v.user_status("bob"), Some("away"));
        // The next diff follows on without a gap.
        v.apply(&diff(
            10,
            vec![member("carol", "online", "s4", json!({}))],
            vec![],
            vec![],
        ))
        .unwrap();
        assert_eq!(v.count(), 4);
        assert_eq!(v.seq(), Some(10));
        assert!(v.anomalies().is_empty(), "{:?}", v.anomalies());
    }

    #[test]
    fn a_diff_before_the_snapshot_is_an_error() {
        let mut v = RoomView::new("Order:1");
        assert_eq!(
            v.apply(&diff(1, vec![], vec![], vec![])),
            Err(ViewError::NoSnapshot {
                room: "Order:1".into()
            })
        );
    }

    #[test]
    fn other_rooms_and_other_types_are_ignored() {
        let mut v = RoomView::new("Order:1");
        v.apply(&snapshot(1)).unwrap();
        let mut other = diff(
            5,
            vec![member("zed", "online", "s9", json!({}))],
            vec![],
            vec![],
        );
        other["room"] = json!("Order:2");
        v.apply(&other).unwrap();
        v.apply(&json!({"type": "LOCK", "room": "Order:1", "field": "f", "owner": null}))
            .unwrap();
        assert_eq!(v.count(), 3);
        assert_eq!(v.seq(), Some(1));
    }

    #[test]
    fn unexplained_changes_are_recorded_as_anomalies() {
        let mut v = RoomView::new("Order:1");
        v.apply(&snapshot(1)).unwrap();
        v.apply(&diff(
            2,
            vec![member("alice", "online", "s1", json!({}))],
            vec![json!({"userId": "x", "sessionId": "nope", "reason": "left"})],
            vec![member("dan", "online", "s5", json!({}))],
        ))
        .unwrap();
        assert_eq!(v.anomalies().len(), 3);
        assert!(v.sessions().contains("s5"));
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        let mut v = RoomView::new("Order:1");
        assert!(matches!(
            v.apply(&json!({"type": "PRESENCE", "room": "Order:1", "users": 3})),
            Err(ViewError::Malformed { .. })
        ));
        v.apply(&snapshot(1)).unwrap();
        assert!(matches!(
            v.apply(&json!({"type": "PRESENCE_DIFF", "room": "Order:1", "seq": 2, "joins": [{"userId": "a"}]})),
            Err(ViewError::Malformed { .. })
        ));
        assert!(matches!(
            v.apply(&json!({"type": "PRESENCE_DIFF", "room": "Order:1"})),
            Err(ViewError::Malformed { .. })
        ));
        assert_eq!(v.count(), 3);
    }

    #[test]
    fn count_mismatch_in_a_snapshot_is_an_anomaly() {
        let mut v = RoomView::new("Order:1");
        let mut s = snapshot(1);
        s["count"] = json!(5);
        v.apply(&s).unwrap();
        assert_eq!(v.anomalies().len(), 1);
    }

    #[test]
    fn a_default_view_adopts_the_first_room() {
        let mut v = RoomView::default();
        v.apply(&snapshot(1)).unwrap();
        assert_eq!(v.room(), "Order:1");
    }
}
