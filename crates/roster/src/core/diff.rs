//! The changes of one room inside one `diff_window`, and the diff each member needs
//! from them. Pure data: both engines keep the same log (the memory engine in
//! [`Window`], the Redis engine in the room's `p` list, one op per entry) and both
//! turn it into diffs with [`plan`], so the rule lives here once.
//!
//! Why a log and not one coalesced diff: a member that got its `PRESENCE` snapshot
//! inside the window already sees every change made before that snapshot. Its diff
//! must start where its snapshot ended (SPEC §3: every diff applies cleanly to the
//! snapshot it follows — no join for a session already in it, no leave for one never
//! in it, no update for one not in it). A [`Op::Cut`] marks where a member's
//! snapshot was taken; members without one saw the room as it was before the window.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::room::{LeaveView, MemberView, PresenceDiff};
use crate::ids::SessionId;

/// One change, or the point where a member's snapshot was taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    Join(SessionId),
    Update(SessionId),
    Leave(LeaveView),
    /// The member named was served a snapshot here: its diff starts after this.
    Cut(SessionId),
}

impl Op {
    fn session(&self) -> &SessionId {
        match self {
            Op::Join(s) | Op::Update(s) | Op::Cut(s) => s,
            Op::Leave(l) => &l.session_id,
        }
    }
}

/// The pending log of one room: appended by transitions, taken by the flush.
#[derive(Debug, Default)]
pub struct Window {
    ops: Vec<Op>,
    /// Index just after the last cut: an update already recorded at or after it
    /// reaches every recipient, so a second one adds nothing.
    last_cut: usize,
}

impl Window {
    /// Records a change. `true` when the window was empty: the caller schedules a
    /// flush after `diff_window`.
    pub fn push(&mut self, op: Op) -> bool {
        let was_empty = self.ops.is_empty();
        match &op {
            Op::Update(s) => {
                if self.ops[self.last_cut..]
                    .iter()
                    .any(|o| matches!(o, Op::Join(x) | Op::Update(x) if x == s))
                {
                    return false;
                }
            }
            Op::Cut(_) => {
                // A snapshot taken while nothing is pending sees what everyone
                // else saw before the window: no cut needed.
                if was_empty {
                    return false;
                }
                self.ops.push(op);
                self.last_cut = self.ops.len();
                return false;
            }
            Op::Join(_) | Op::Leave(_) => {}
        }
        self.ops.push(op);
        was_empty
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn take(&mut self) -> Vec<Op> {
        self.last_cut = 0;
        std::mem::take(&mut self.ops)
    }
}

/// What one recipient is told: session ids to render from the room as it is now,
/// and leaves as they were recorded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetChange {
    pub joins: Vec<SessionId>,
    pub leaves: Vec<LeaveView>,
    pub updates: Vec<SessionId>,
}

impl NetChange {
    pub fn is_empty(&self) -> bool {
        self.joins.is_empty() && self.leaves.is_empty() && self.updates.is_empty()
    }

    /// The wire diff, with member views looked up in the room as it is now. A
    /// session the lookup no longer finds is left out (it cannot be: a join or
    /// update is only planned for a session whose last op was not a leave).
    pub fn render(
        &self,
        room: &str,
        seq: u64,
        view: &dyn Fn(&SessionId) -> Option<MemberView>,
    ) -> PresenceDiff {
        PresenceDiff {
            room: room.to_string(),
            seq,
            joins: self.joins.iter().filter_map(view).collect(),
            leaves: self.leaves.clone(),
            updates: self.updates.iter().filter_map(view).collect(),
        }
    }
}

/// The diffs of one flush: `base` for members whose snapshot predates the window,
/// and one variant per cut position for members served a snapshot inside it. As
/// planned (`NetChange`), then as rendered for the wire (`PresenceDiff`).
#[derive(Debug, Default)]
pub struct Plan<T = NetChange> {
    pub base: T,
    pub variants: Vec<T>,
    /// Member → index in `variants` (its latest cut).
    pub cut_of: HashMap<SessionId, usize>,
}

impl<T> Plan<T> {
    /// What a member is told.
    pub fn for_member(&self, s: &SessionId) -> &T {
        self.cut_of
            .get(s)
            .map(|&i| &self.variants[i])
            .unwrap_or(&self.base)
    }
}

impl Plan {
    /// Every diff of the plan rendered once (same `seq`); see [`NetChange::render`].
    pub fn render(
        self,
        room: &str,
        seq: u64,
        view: &dyn Fn(&SessionId) -> Option<MemberView>,
    ) -> Plan<PresenceDiff> {
        Plan {
            base: self.base.render(room, seq, view),
            variants: self
                .variants
                .iter()
                .map(|v| v.render(room, seq, view))
                .collect(),
            cut_of: self.cut_of,
        }
    }
}

/// Turns a window's log into the diff of every recipient.
pub fn plan(ops: &[Op]) -> Plan {
    let mut plan = Plan {
        base: net(ops),
        ..Plan::default()
    };
    // Each member's latest cut; one variant per distinct position.
    let mut latest: HashMap<&SessionId, usize> = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        if let Op::Cut(s) = op {
            latest.insert(s, i + 1);
        }
    }
    let mut by_pos: HashMap<usize, usize> = HashMap::new();
    let mut positions: Vec<(&SessionId, usize)> = latest.into_iter().collect();
    positions.sort_by_key(|(_, p)| *p);
    for (s, p) in positions {
        let idx = *by_pos.entry(p).or_insert_with(|| {
            plan.variants.push(net(&ops[p..]));
            plan.variants.len() - 1
        });
        plan.cut_of.insert(s.clone(), idx);
    }
    plan
}

/// The net change over `ops` of every session they touch, judged by its first and
/// last change: first a join → it was absent before; last a leave → it is absent
/// now. Absent → present is a join, present → absent a leave, present → present
/// with anything in between an update, absent → absent nothing.
fn net(ops: &[Op]) -> NetChange {
    let mut order: Vec<&SessionId> = vec![];
    let mut span: HashMap<&SessionId, (&Op, &Op)> = HashMap::new();
    for op in ops {
        if matches!(op, Op::Cut(_)) {
            continue;
        }
        let s = op.session();
        match span.get_mut(s) {
            Some(e) => e.1 = op,
            None => {
                order.push(s);
                span.insert(s, (op, op));
            }
        }
    }
    let mut out = NetChange::default();
    for s in order {
        let (first, last) = span[s];
        let was_in = !matches!(first, Op::Join(_));
        match (was_in, last) {
            (true, Op::Leave(l)) => out.leaves.push(l.clone()),
            (false, Op::Leave(_)) => {}
            (false, _) => out.joins.push(s.clone()),
            (true, _) => out.updates.push(s.clone()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::types::LeaveReason;
    use crate::ids::UserId;

    fn sid(s: &str) -> SessionId {
        SessionId::parse(s).unwrap()
    }
    fn leave(s: &str) -> Op {
        Op::Leave(LeaveView {
            user_id: UserId::parse("u").unwrap(),
            session_id: sid(s),
            reason: LeaveReason::Left,
        })
    }
    fn ids(v: &[SessionId]) -> Vec<&str> {
        v.iter().map(SessionId::as_str).collect()
    }

    #[test]
    fn a_join_seen_in_a_snapshot_is_not_joined_again() {
        // a joins; b joins and is served a snapshot (showing a); a changes state.
        let mut w = Window::default();
        assert!(w.push(Op::Join(sid("a"))));
        assert!(!w.push(Op::Join(sid("b"))));
        w.push(Op::Cut(sid("b")));
        w.push(Op::Update(sid("a")));
        let p = plan(&w.take());
        assert_eq!(ids(&p.base.joins), ["a", "b"]);
        assert!(
            p.base.updates.is_empty(),
            "a join already carries the update"
        );
        let b = p.for_member(&sid("b"));
        assert!(b.joins.is_empty(), "b's snapshot showed a and b");
        assert_eq!(ids(&b.updates), ["a"]);
    }

    #[test]
    fn a_join_and_leave_inside_the_window_is_nothing_to_those_who_never_saw_it() {
        let mut w = Window::default();
        w.push(Op::Join(sid("c")));
        w.push(Op::Join(sid("b")));
        w.push(Op::Cut(sid("b")));
        w.push(leave("c"));
        let p = plan(&w.take());
        assert!(p.base.leaves.is_empty() && ids(&p.base.joins) == ["b"]);
        let b = p.for_member(&sid("b"));
        assert_eq!(
            b.leaves.len(),
            1,
            "b's snapshot showed c, so b is told it left"
        );
        assert!(b.joins.is_empty());
    }

    #[test]
    fn leaving_and_coming_back_is_an_update() {
        let mut w = Window::default();
        w.push(leave("a"));
        w.push(Op::Join(sid("a")));
        let p = plan(&w.take());
        assert!(p.base.joins.is_empty() && p.base.leaves.is_empty());
        assert_eq!(ids(&p.base.updates), ["a"]);
    }

    #[test]
    fn updates_coalesce_but_not_across_a_cut() {
        let mut w = Window::default();
        assert!(w.push(Op::Update(sid("a"))));
        assert!(!w.push(Op::Update(sid("a"))));
        w.push(Op::Join(sid("b")));
        w.push(Op::Cut(sid("b")));
        w.push(Op::Update(sid("a")));
        let ops = w.take();
        assert_eq!(ops.len(), 4, "the update after b's snapshot is kept for b");
        let p = plan(&ops);
        assert_eq!(ids(&p.for_member(&sid("b")).updates), ["a"]);
        assert!(w.is_empty());
    }

    #[test]
    fn a_cut_alone_schedules_nothing_and_plans_nothing() {
        let mut w = Window::default();
        assert!(!w.push(Op::Cut(sid("a"))));
        assert!(w.is_empty());
        assert!(w.push(Op::Update(sid("b"))));
        assert_eq!(ids(&plan(&w.take()).base.updates), ["b"]);
        // A join and leave that nobody saw: nothing to tell.
        let p = plan(&[Op::Join(sid("c")), leave("c")]);
        assert!(p.base.is_empty() && p.variants.is_empty());
    }
}
