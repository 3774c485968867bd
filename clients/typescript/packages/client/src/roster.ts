/**
 * The local roster of one room, kept exactly in sync from `PRESENCE` snapshots and
 * `PRESENCE_DIFF`s (docs/PROTOCOL.md §9). Pure bookkeeping: no I/O, no timers.
 *
 * Every change, from a diff or from a fresh snapshot, is reported as the *net*
 * difference between the roster before and after it, per session. A session that
 * leaves and re-joins inside one diff, a duplicate join, or a re-sent change
 * already contained in the snapshot therefore produce no spurious events; a
 * snapshot taken after a reconnect or a gap yields exactly the changes that
 * happened meanwhile.
 *
 * After a reconnect that could not resume (a server restart), a snapshot may be
 * applied with `hold`: sessions missing from it stay in the roster as *held*
 * (they may be reconnecting themselves), and a new session of the same user takes
 * the place of a held one as an `update`, not a leave and a join. The owner calls
 * {@link RosterState.expireHeld} when the leave grace is over.
 */
import type {
  Json,
  LeaveReason,
  PresenceDiffMessage,
  PresenceMessage,
  PresenceState,
  UserStatus,
  WireMember,
  WireSession,
} from "./protocol.js";
import { jsonEqual } from "./util.js";

/** One session of a member. */
export interface Session<S extends PresenceState = PresenceState> {
  sessionId: string;
  userId: string;
  device: string;
  os: string | null;
  appVersion: string | null;
  latencyMs: number | null;
  joinedAt: string;
  state: S;
}

/** A user in the room with their sessions (a user with no session is not a member). */
export interface Member<S extends PresenceState = PresenceState> {
  userId: string;
  name?: string;
  info?: Json;
  status: UserStatus;
  sessions: readonly Session<S>[];
}

export interface JoinChange<S extends PresenceState = PresenceState> {
  type: "join";
  userId: string;
  session: Session<S>;
  /** The member after the change. */
  member: Member<S>;
  /** The user had no session in the room before: the user joined, not just a device. */
  userJoined: boolean;
}

export interface LeaveChange<S extends PresenceState = PresenceState> {
  type: "leave";
  userId: string;
  sessionId: string;
  /** The session as last known. */
  session: Session<S>;
  /** From the diff; `null` when the leave was inferred from a fresh snapshot. */
  reason: LeaveReason | null;
  /** The member after the change, or `null` when the user has no session left. */
  member: Member<S> | null;
  /** The user's last session left: the user left, not just a device. */
  userLeft: boolean;
}

export interface UpdateChange<S extends PresenceState = PresenceState> {
  type: "update";
  userId: string;
  session: Session<S>;
  previous: Session<S>;
  member: Member<S>;
  /** The user's status before the change (equal to `member.status` if unchanged). */
  previousStatus: UserStatus;
}

export type RosterChange<S extends PresenceState = PresenceState> =
  | JoinChange<S>
  | LeaveChange<S>
  | UpdateChange<S>;

/** What {@link RosterState.applyDiff} did with a diff. */
export type DiffOutcome<S extends PresenceState = PresenceState> =
  | { kind: "applied"; changes: RosterChange<S>[] }
  /** No snapshot yet (or one is awaited): the diff is ignored. */
  | { kind: "ignored"; why: "no_snapshot" | "awaiting_snapshot" | "stale" }
  /** `seq > S + 1`: the caller must re-`SUB`; diffs are ignored until the next snapshot. */
  | { kind: "gap"; expected: number; got: number };

interface UserEntry {
  userId: string;
  name?: string;
  info?: Json;
  status: UserStatus;
  sessionIds: string[];
}

interface View<S extends PresenceState> {
  session: Session<S>;
  status: UserStatus;
  name?: string;
  info?: Json;
}

export class RosterState<S extends PresenceState = PresenceState> {
  private users = new Map<string, UserEntry>();
  private sessions = new Map<string, Session<S>>();
  private _seq: number | null = null;
  private awaiting = false;
  /** Sessions kept after a snapshot that no longer listed them (see `hold`). */
  private held = new Set<string>();
  private cache: readonly Member<S>[] | null = null;
  /**
   * The last member object built per user: handed out again while the user is
   * unchanged, so that a change of one member leaves the others' objects (and
   * their sessions) identical and UIs can skip them.
   */
  private memberCache = new Map<string, Member<S>>();

  /** Seq of the last snapshot or applied diff; `null` before the first snapshot. */
  get seq(): number | null {
    return this._seq;
  }

  /** True until the first snapshot, and after a gap or {@link expectSnapshot} until the next one. */
  get awaitingSnapshot(): boolean {
    return this._seq === null || this.awaiting;
  }

  /** Number of sessions listed. */
  get sessionCount(): number {
    return this.sessions.size;
  }

  /** Members in a stable order (first seen first); a new array after every change. */
  get members(): readonly Member<S>[] {
    if (!this.cache) {
      this.cache = Object.freeze([...this.users.values()].map((u) => this.member(u)));
    }
    return this.cache;
  }

  /** Number of sessions held while their users may be reconnecting. */
  get heldCount(): number {
    return this.held.size;
  }

  session(sessionId: string): Session<S> | undefined {
    return this.sessions.get(sessionId);
  }

  memberOf(userId: string): Member<S> | undefined {
    const u = this.users.get(userId);
    return u ? this.member(u) : undefined;
  }

  /**
   * Ignore diffs until the next snapshot (the caller re-`SUB`s after a reconnect).
   * The current roster is kept so the next snapshot can be compared with it.
   */
  expectSnapshot(): void {
    this.awaiting = true;
  }

  /** Forgets everything (no events). */
  clear(): void {
    this.users.clear();
    this.sessions.clear();
    this._seq = null;
    this.awaiting = false;
    this.held.clear();
    this.cache = null;
    this.memberCache.clear();
  }

  /**
   * Rule 1: replace the roster, remember `seq`, report the net changes.
   *
   * With `hold` (after a reconnect that could not resume), sessions of the old
   * roster missing from the snapshot are kept as held instead of leaving.
   * Sessions already held stay held either way. A session of the snapshot that is
   * new for a user with held sessions replaces one of them (same device first):
   * reported as an `update` whose `previous` is the held session.
   */
  applySnapshot(msg: Pick<PresenceMessage, "seq" | "users">, hold = false): RosterChange<S>[] {
    const before = this.views();
    const cache = this.cache;
    const incoming = new Map<string, UserEntry>();
    const incomingSessions = new Map<string, Session<S>>();
    for (const u of msg.users) {
      const entry: UserEntry = {
        userId: u.userId,
        status: u.status,
        sessionIds: [],
        ...(u.name !== undefined ? { name: u.name } : {}),
        ...(u.info !== undefined ? { info: u.info } : {}),
      };
      for (const s of u.sessions) {
        if (incomingSessions.has(s.sessionId)) continue;
        incomingSessions.set(s.sessionId, this.reuse(toSession<S>(u.userId, s)));
        entry.sessionIds.push(s.sessionId);
      }
      if (entry.sessionIds.length > 0) incoming.set(u.userId, entry);
    }
    // Missing sessions that stay: held already, or newly held.
    const carried = new Map<string, View<S>>();
    for (const [sid, v] of before) {
      if (!incomingSessions.has(sid) && (hold || this.held.has(sid))) carried.set(sid, v);
    }
    // A user's new sessions take the places of their carried ones.
    const replaced = new Map<string, string>();
    for (const [sid, s] of incomingSessions) {
      if (before.has(sid)) continue;
      const old = pickHeld(carried, s);
      if (old !== undefined) {
        carried.delete(old);
        replaced.set(sid, old);
      }
    }
    for (const [sid, v] of carried) {
      incomingSessions.set(sid, v.session);
      let u = incoming.get(v.session.userId);
      if (!u) {
        u = {
          userId: v.session.userId,
          status: v.status,
          sessionIds: [],
          ...(v.name !== undefined ? { name: v.name } : {}),
          ...(v.info !== undefined ? { info: v.info } : {}),
        };
        incoming.set(v.session.userId, u);
      }
      u.sessionIds.push(sid);
    }
    const order = this.order(replaced);
    this.users = incoming;
    this.sessions = incomingSessions;
    this.held = new Set(carried.keys());
    this.restoreOrder(order);
    this._seq = msg.seq;
    this.awaiting = false;
    this.cache = null;
    for (const id of [...this.memberCache.keys()]) if (!this.users.has(id)) this.memberCache.delete(id);
    const touched = new Set<string>([...before.keys(), ...incomingSessions.keys()]);
    const changes = this.changes(before, touched, new Map(), replaced);
    if (changes.length === 0) this.cache = cache;
    return changes;
  }

  /**
   * The leave grace is over: the sessions still held leave (reason `null`, as for
   * any leave inferred from a snapshot).
   */
  expireHeld(): RosterChange<S>[] {
    if (this.held.size === 0) return [];
    const touched = new Set(this.held);
    const before = this.views(touched);
    for (const sid of touched) this.remove(sid);
    this.held.clear();
    return this.changes(before, touched, new Map());
  }

  /** Rules 2 and 3. */
  applyDiff(msg: Pick<PresenceDiffMessage, "seq" | "joins" | "leaves" | "updates">): DiffOutcome<S> {
    if (this._seq === null) return { kind: "ignored", why: "no_snapshot" };
    if (this.awaiting) return { kind: "ignored", why: "awaiting_snapshot" };
    if (msg.seq <= this._seq) return { kind: "ignored", why: "stale" };
    if (msg.seq > this._seq + 1) {
      this.awaiting = true;
      return { kind: "gap", expected: this._seq + 1, got: msg.seq };
    }
    const touched = new Set<string>();
    for (const l of msg.leaves) touched.add(l.sessionId);
    for (const m of msg.joins) touched.add(m.session.sessionId);
    for (const m of msg.updates) touched.add(m.session.sessionId);
    // A held session back under its own id is simply no longer held; a new
    // session of a user with held ones takes the place of one of them.
    const replaced = new Map<string, string>();
    if (this.held.size > 0) {
      const candidates = this.views(this.held);
      for (const m of msg.joins) {
        const sid = m.session.sessionId;
        if (this.held.delete(sid)) {
          candidates.delete(sid);
          continue;
        }
        if (this.sessions.has(sid)) continue;
        const old = pickHeld(candidates, toSession<S>(m.userId, m.session));
        if (old === undefined) continue;
        candidates.delete(old);
        this.held.delete(old);
        replaced.set(sid, old);
        touched.add(old);
      }
      for (const l of msg.leaves) this.held.delete(l.sessionId);
    }
    const before = this.views(touched);
    const order = this.order(replaced);
    const cache = this.cache;
    const reasons = new Map<string, LeaveReason>();
    for (const old of replaced.values()) this.remove(old);
    // Leaves first: "remove this session if present".
    for (const l of msg.leaves) {
      reasons.set(l.sessionId, l.reason);
      this.remove(l.sessionId);
    }
    // Then joins, then updates: "upsert this session".
    for (const m of msg.joins) this.upsert(m);
    for (const m of msg.updates) this.upsert(m);
    this.restoreOrder(order);
    this._seq = msg.seq;
    const changes = this.changes(before, touched, reasons, replaced);
    // Nothing changed (duplicates, re-sent changes, leave + re-join): keep the
    // same members array so that observers comparing by identity see no change.
    this.cache = changes.length > 0 ? null : cache;
    return { kind: "applied", changes };
  }

  private upsert(m: WireMember): void {
    const sid = m.session.sessionId;
    const existing = this.sessions.get(sid);
    if (existing && existing.userId !== m.userId) this.remove(sid);
    this.sessions.set(sid, this.reuse(toSession<S>(m.userId, m.session)));
    let u = this.users.get(m.userId);
    if (!u) {
      u = { userId: m.userId, status: m.status, sessionIds: [] };
      this.users.set(m.userId, u);
    }
    // The user's status, name and info are those of the latest member view.
    u.status = m.status;
    if (m.name !== undefined) u.name = m.name;
    else delete u.name;
    if (m.info !== undefined) u.info = m.info;
    else delete u.info;
    if (!u.sessionIds.includes(sid)) u.sessionIds.push(sid);
    this.cache = null;
  }

  private remove(sid: string): void {
    const s = this.sessions.get(sid);
    if (!s) return;
    this.sessions.delete(sid);
    const u = this.users.get(s.userId);
    if (u) {
      u.sessionIds = u.sessionIds.filter((x) => x !== sid);
      if (u.sessionIds.length === 0) {
        this.users.delete(s.userId);
        this.memberCache.delete(s.userId);
      }
    }
    this.cache = null;
  }

  /**
   * Current order of users and of each user's sessions; a session replacing a
   * held one (`replaced`: new → old) takes its place.
   */
  private order(replaced: Map<string, string> = new Map()): Map<string, string[]> {
    const byOld = new Map<string, string>();
    for (const [n, o] of replaced) byOld.set(o, n);
    const o = new Map<string, string[]>();
    for (const [id, u] of this.users) o.set(id, u.sessionIds.map((sid) => byOld.get(sid) ?? sid));
    return o;
  }

  /**
   * Users and sessions keep the order they were first seen in, also when a
   * snapshot lists them differently or a session left and re-joined; newcomers
   * go last, in the order they came.
   */
  private restoreOrder(old: Map<string, string[]>): void {
    const users = new Map<string, UserEntry>();
    for (const [id, oldSessions] of old) {
      const u = this.users.get(id);
      if (!u) continue;
      const kept = oldSessions.filter((sid) => u.sessionIds.includes(sid));
      const added = u.sessionIds.filter((sid) => !kept.includes(sid));
      u.sessionIds = [...kept, ...added];
      users.set(id, u);
    }
    for (const [id, u] of this.users) if (!users.has(id)) users.set(id, u);
    this.users = users;
  }

  private views(only?: Set<string>): Map<string, View<S>> {
    const out = new Map<string, View<S>>();
    const ids = only ?? this.sessions.keys();
    for (const sid of ids) {
      const s = this.sessions.get(sid);
      if (!s) continue;
      const u = this.users.get(s.userId)!;
      out.set(sid, {
        session: s,
        status: u.status,
        ...(u.name !== undefined ? { name: u.name } : {}),
        ...(u.info !== undefined ? { info: u.info } : {}),
      });
    }
    return out;
  }

  private changes(
    before: Map<string, View<S>>,
    touched: Set<string>,
    reasons: Map<string, LeaveReason>,
    replaced: Map<string, string> = new Map(),
  ): RosterChange<S>[] {
    const after = this.views(touched);
    const replacedOld = new Set(replaced.values());
    const usersBefore = new Set<string>();
    for (const v of before.values()) usersBefore.add(v.session.userId);
    const leaves: RosterChange<S>[] = [];
    const joins: RosterChange<S>[] = [];
    const updates: RosterChange<S>[] = [];
    for (const sid of touched) {
      if (replacedOld.has(sid)) continue;
      const old = replaced.get(sid);
      const b = old !== undefined ? before.get(old) : before.get(sid);
      const a = after.get(sid);
      if (b && !a) {
        const member = this.memberOf(b.session.userId) ?? null;
        leaves.push({
          type: "leave",
          userId: b.session.userId,
          sessionId: sid,
          session: b.session,
          reason: reasons.get(sid) ?? null,
          member,
          userLeft: member === null,
        });
      } else if (!b && a) {
        const hadUser =
          usersBefore.has(a.session.userId) ||
          this.users.get(a.session.userId)!.sessionIds.some((x) => x !== sid && !touched.has(x));
        joins.push({
          type: "join",
          userId: a.session.userId,
          session: a.session,
          member: this.memberOf(a.session.userId)!,
          userJoined: !hadUser,
        });
      } else if (b && a && !jsonEqual(b, a)) {
        updates.push({
          type: "update",
          userId: a.session.userId,
          session: a.session,
          previous: b.session,
          member: this.memberOf(a.session.userId)!,
          previousStatus: b.status,
        });
      }
    }
    return [...leaves, ...joins, ...updates];
  }

  /** `s`, or the equal session object already held (identity kept for unchanged sessions). */
  private reuse(s: Session<S>): Session<S> {
    const old = this.sessions.get(s.sessionId);
    return old && jsonEqual(old, s) ? old : s;
  }

  private member(u: UserEntry): Member<S> {
    const old = this.memberCache.get(u.userId);
    if (
      old &&
      old.status === u.status &&
      old.name === u.name &&
      jsonEqual(old.info, u.info) &&
      old.sessions.length === u.sessionIds.length &&
      old.sessions.every((s, i) => s === this.sessions.get(u.sessionIds[i]!))
    ) {
      return old;
    }
    const m = this.buildMember(u);
    this.memberCache.set(u.userId, m);
    return m;
  }

  private buildMember(u: UserEntry): Member<S> {
    return Object.freeze({
      userId: u.userId,
      ...(u.name !== undefined ? { name: u.name } : {}),
      ...(u.info !== undefined ? { info: u.info } : {}),
      status: u.status,
      sessions: Object.freeze(u.sessionIds.map((sid) => this.sessions.get(sid)!)),
    });
  }
}

function toSession<S extends PresenceState>(userId: string, s: WireSession): Session<S> {
  return Object.freeze({
    sessionId: s.sessionId,
    userId,
    device: s.device,
    os: s.os ?? null,
    appVersion: s.appVersion ?? null,
    latencyMs: s.latencyMs ?? null,
    joinedAt: s.joinedAt,
    state: (s.state ?? {}) as S,
  });
}

/** The held session that `s` replaces: one of its user's, on the same device if any. */
function pickHeld<S extends PresenceState>(held: Map<string, View<S>>, s: Session<S>): string | undefined {
  let first: string | undefined;
  for (const [sid, v] of held) {
    if (v.session.userId !== s.userId) continue;
    if (v.session.device === s.device) return sid;
    first ??= sid;
  }
  return first;
}
