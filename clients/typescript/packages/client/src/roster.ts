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
  private cache: readonly Member<S>[] | null = null;

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
    this.cache = null;
  }

  /** Rule 1: replace the roster, remember `seq`, report the net changes. */
  applySnapshot(msg: Pick<PresenceMessage, "seq" | "users">): RosterChange<S>[] {
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
        incomingSessions.set(s.sessionId, toSession<S>(u.userId, s));
        entry.sessionIds.push(s.sessionId);
      }
      if (entry.sessionIds.length > 0) incoming.set(u.userId, entry);
    }
    const order = this.order();
    this.users = incoming;
    this.sessions = incomingSessions;
    this.restoreOrder(order);
    this._seq = msg.seq;
    this.awaiting = false;
    this.cache = null;
    const touched = new Set<string>([...before.keys(), ...incomingSessions.keys()]);
    const changes = this.changes(before, touched, new Map());
    if (changes.length === 0) this.cache = cache;
    return changes;
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
    const before = this.views(touched);
    const order = this.order();
    const cache = this.cache;
    const reasons = new Map<string, LeaveReason>();
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
    const changes = this.changes(before, touched, reasons);
    // Nothing changed (duplicates, re-sent changes, leave + re-join): keep the
    // same members array so that observers comparing by identity see no change.
    this.cache = changes.length > 0 ? null : cache;
    return { kind: "applied", changes };
  }

  private upsert(m: WireMember): void {
    const sid = m.session.sessionId;
    const existing = this.sessions.get(sid);
    if (existing && existing.userId !== m.userId) this.remove(sid);
    this.sessions.set(sid, toSession<S>(m.userId, m.session));
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
      if (u.sessionIds.length === 0) this.users.delete(s.userId);
    }
    this.cache = null;
  }

  /** Current order of users and of each user's sessions. */
  private order(): Map<string, string[]> {
    const o = new Map<string, string[]>();
    for (const [id, u] of this.users) o.set(id, [...u.sessionIds]);
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
  ): RosterChange<S>[] {
    const after = this.views(touched);
    const usersBefore = new Set<string>();
    for (const v of before.values()) usersBefore.add(v.session.userId);
    const leaves: RosterChange<S>[] = [];
    const joins: RosterChange<S>[] = [];
    const updates: RosterChange<S>[] = [];
    for (const sid of touched) {
      const b = before.get(sid);
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

  private member(u: UserEntry): Member<S> {
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
